"""Attention over a memory of encoder outputs (Luong dot / general, Bahdanau additive).

For each query q_t (a decoder output) and each source step s < length:

* "dot":      score = q_t . m_s                       (query_size == memory_size)
* "general":  score = q_t . (W m_s)                   W: ``weight`` (query, memory)
* "additive": score = v . tanh(W_q q_t + W_k m_s + b) ``query_weight`` (A, query),
  ``key_weight`` (A, memory), ``bias`` (A,), ``v`` (A,), A = ``attention_size``

weights = softmax over the row's source steps (steps past its length get
weight 0), context_t = sum_s weights[s] m_s.  The memory is set once per
batch (:meth:`set_memory`: keys are projected there, once), then queried
for a whole decoder sequence (:meth:`forward`, with :meth:`backward`) or one
decoding step at a time (:meth:`step`, inference only).
"""

import math

import numpy as np

from .. import _threads
from .._kernels._dispatch import _attention, _dense
from .._validation import (Options, check_finite, check_shape, float_array, positive_int, produced,
                           resolve_dtype)
from .module import Module

__all__ = ["Attention", "SCORES"]

SCORES = ("dot", "general", "additive")


class Attention(Module):
    """Attention of decoder queries over an encoder memory, masked by source lengths.

    Args:
        query_size: features of a query (the decoder's hidden size).
        memory_size: features of a memory step (the encoder's output size).
        score: "dot", "general" or "additive" (see the module docstring).
        attention_size: A for "additive" (default: query_size).
        dtype, seed: parameter dtype and initialisation seed (weights
            U(-1/sqrt(fan_in), 1/sqrt(fan_in)) as ``Linear``).

    Use::

        att = fr.Attention(64, 64, score="general")
        att.set_memory(encoder_out, source_lengths)   # (S, B, 64), (B,)
        context, weights = att(decoder_out)           # (T, B, 64), (B, T, S)
        d_query, d_memory = att.backward(d_context)
    """

    def __init__(self, query_size, memory_size, score="dot", attention_size=None,
                 dtype="float32", seed=None):
        super().__init__(resolve_dtype(dtype))
        Options(SCORES)("score", score)
        self.query_size = positive_int("query_size", query_size)
        self.memory_size = positive_int("memory_size", memory_size)
        self.score = score
        if score == "dot" and self.query_size != self.memory_size:
            raise ValueError(f"score='dot' needs query_size == memory_size, got "
                             f"{self.query_size} and {self.memory_size} (use 'general' "
                             f"or 'additive')")
        self.attention_size = (self.query_size if attention_size is None
                               else positive_int("attention_size", attention_size))
        self._init_parameters(np.random.default_rng(seed))
        self._attend = self._kernel(_attention.attend)
        self._attend_backward = self._kernel(_attention.attend_backward)
        self._linear = self._kernel(_dense.linear_forward)
        self._linear_backward = self._kernel(_dense.linear_backward)
        self._empty1 = np.zeros(1, dtype=self.dtype)
        self._memory = None

    def _init_parameters(self, rng):
        def uniform(shape, fan_in):
            bound = 1.0 / math.sqrt(fan_in)
            return rng.uniform(-bound, bound, shape)
        Q, M, A = self.query_size, self.memory_size, self.attention_size
        if self.score == "general":
            self._add_parameter("weight", uniform((Q, M), M))
        elif self.score == "additive":
            self._add_parameter("query_weight", uniform((A, Q), Q))
            self._add_parameter("key_weight", uniform((A, M), M))
            self._add_parameter("bias", uniform(A, M))
            self._add_parameter("v", uniform(A, A))

    # -- memory -------------------------------------------------------------------
    def set_memory(self, memory, lengths):
        """Keep ``memory`` (S, B, memory_size) and the source ``lengths`` (B,
        ints in 1..S) for the queries that follow; the keys are projected here."""
        memory = float_array("memory", memory, self.dtype, ndim=3)
        if memory.shape[2] != self.memory_size or memory.shape[0] == 0 or memory.shape[1] == 0:
            raise ValueError(f"memory must have shape (S >= 1, B >= 1, {self.memory_size}) "
                             f"(memory_size features), got {memory.shape}")
        check_finite("memory", memory)
        lengths = _source_lengths(lengths, memory.shape[1], memory.shape[0])
        keys = memory
        if self.score != "dot":
            rows = memory.reshape(-1, self.memory_size)
            name = "weight" if self.score == "general" else "key_weight"
            bias = self._params["bias"] if self.score == "additive" else self._no_bias()
            out = np.empty((rows.shape[0], self._key_size()), dtype=self.dtype)
            self._linear(rows, self._params[name], bias, out, _threads.get_num_threads())
            keys = out.reshape(memory.shape[:2] + (self._key_size(),))
        self._memory = (memory, keys, lengths)
        self._release_cache()

    def repeat_memory(self, k):
        """Every memory row repeated ``k`` times in place (row b becomes rows
        b*k .. b*k + k-1): the beams of beam search share their source."""
        self._require_memory()
        memory, keys, lengths = self._memory
        self._memory = (np.repeat(memory, k, axis=1), np.repeat(keys, k, axis=1),
                        np.repeat(lengths, k))

    def _require_memory(self):
        if self._memory is None:
            raise RuntimeError("set_memory(memory, lengths) must come before queries")

    def _key_size(self):
        return self.attention_size if self.score == "additive" else self.query_size

    def _no_bias(self):
        return np.empty(0, dtype=self.dtype)

    # -- forward ------------------------------------------------------------------
    def forward(self, query):
        """``(context (T, B, memory_size), weights (B, T, S))`` for decoder
        outputs ``query`` (T, B, query_size); rows of ``weights`` sum to 1."""
        self._require_memory()
        memory, keys, lengths = self._memory
        query = float_array("query", query, self.dtype, ndim=3)
        check_shape("query", query, (query.shape[0], memory.shape[1], self.query_size))
        if query.shape[0] == 0:
            raise ValueError(f"query must have at least one step, got shape {query.shape}")
        check_finite("query", query)
        projected = self._project_query(query)
        context, weights = self._run(projected, keys, memory, lengths)
        self._keep_for_backward(query=query, projected=projected, weights=weights)
        return produced(context), weights

    def step(self, query):
        """One decoding step (no backward): ``(context (B, memory_size),
        weights (B, S))`` for ``query`` (B, query_size)."""
        self._require_memory()
        memory, keys, lengths = self._memory
        query = float_array("query", query, self.dtype, ndim=2)
        check_shape("query", query, (memory.shape[1], self.query_size))
        check_finite("query", query)
        projected = self._project_query(query[None])
        context, weights = self._run(projected, keys, memory, lengths)
        return context[0], weights[:, 0]

    def _project_query(self, query):
        if self.score != "additive":
            return query
        rows = query.reshape(-1, self.query_size)
        out = np.empty((rows.shape[0], self.attention_size), dtype=self.dtype)
        self._linear(rows, self._params["query_weight"], self._no_bias(), out,
                     _threads.get_num_threads())
        return out.reshape(query.shape[:2] + (self.attention_size,))

    def _run(self, projected, keys, memory, lengths):
        steps, batch = projected.shape[:2]
        weights = np.empty((batch, steps, memory.shape[0]), dtype=self.dtype)
        context = np.empty((steps, batch, self.memory_size), dtype=self.dtype)
        work = self._workspace(batch, memory.shape[0], projected.shape[2])
        with _threads.blas_region():
            self._attend(self._kind(), projected, keys, memory, self._v(), lengths, weights,
                         context, work, _threads.get_num_threads())
        return context, weights

    def _workspace(self, batch, steps, size):
        """Scratch of the additive score: one (S, size) block per row."""
        if self.score != "additive":
            return np.empty((batch, 1), dtype=self.dtype)
        return np.empty((batch, steps * size), dtype=self.dtype)

    def _kind(self):
        return _attention.ADDITIVE if self.score == "additive" else _attention.DOT

    def _v(self):
        return self._params["v"] if self.score == "additive" else self._empty1

    # -- backward -----------------------------------------------------------------
    def backward(self, d_context):
        """``(d_query (T, B, query_size), d_memory (S, B, memory_size))`` for
        the last training-mode :meth:`forward`; parameter gradients are added
        to ``grads``.  ``d_memory`` is 0 past each row's length."""
        cache = self._forward_cache()
        query, projected, weights = cache.query, cache.projected, cache.weights
        memory, keys, lengths = self._memory
        d_context = float_array("d_context", d_context, self.dtype)
        check_shape("d_context", d_context, (query.shape[0], query.shape[1], self.memory_size))
        check_finite("d_context", d_context)
        self._consume_cache()
        d_projected = np.empty_like(projected)
        d_keys = np.zeros_like(keys)
        d_memory = np.zeros_like(memory)
        d_v_rows = np.zeros((query.shape[1], projected.shape[2]), dtype=self.dtype)
        threads = _threads.get_num_threads()
        with _threads.blas_region():
            self._attend_backward(self._kind(), projected, keys, memory, self._v(), lengths,
                                  weights, d_context, np.empty_like(weights), d_projected,
                                  d_keys, d_memory, d_v_rows,
                                  self._workspace(keys.shape[1], keys.shape[0], projected.shape[2]),
                                  threads)
        d_query = self._projections_backward(query, memory, d_projected, d_keys, d_memory,
                                             d_v_rows, threads)
        return produced(d_query), produced(d_memory)

    def _projections_backward(self, query, memory, d_projected, d_keys, d_memory,
                              d_v_rows, threads):
        """Back through the key (and query) projections; returns d_query and
        adds the key path to ``d_memory``."""
        if self.score == "dot":
            d_memory += d_keys
            return d_projected
        memory_rows = memory.reshape(-1, self.memory_size)
        d_key_rows = d_keys.reshape(-1, d_keys.shape[2])
        d_through_keys = np.empty_like(memory_rows)
        if self.score == "general":
            self._linear_backward(memory_rows, self._params["weight"], d_key_rows,
                                  d_through_keys, self.grads["weight"], self._no_bias(),
                                  threads)
            d_memory += d_through_keys.reshape(d_memory.shape)
            return d_projected
        self._linear_backward(memory_rows, self._params["key_weight"], d_key_rows,
                              d_through_keys, self.grads["key_weight"], self.grads["bias"],
                              threads)
        d_memory += d_through_keys.reshape(d_memory.shape)
        self.grads["v"] += d_v_rows.sum(axis=0)
        query_rows = query.reshape(-1, self.query_size)
        d_query = np.empty_like(query_rows)
        self._linear_backward(query_rows, self._params["query_weight"],
                              d_projected.reshape(-1, self.attention_size), d_query,
                              self.grads["query_weight"], self._no_bias(), threads)
        return d_query.reshape(query.shape)

    def __repr__(self):
        extra = f", attention_size={self.attention_size}" if self.score == "additive" else ""
        return (f"Attention({self.query_size}, {self.memory_size}, score={self.score!r}"
                f"{extra}, dtype={self.dtype.name!r})")


def _source_lengths(lengths, batch, steps):
    """Source lengths as int32 in 1..steps; a length of 0 is refused by name:
    a row with no source steps has nothing to attend to."""
    array = np.asarray(lengths)
    if array.dtype.kind not in "iu":
        raise TypeError(f"lengths must be integers, got dtype {array.dtype}")
    if array.ndim != 1 or array.shape[0] != batch:
        raise ValueError(f"lengths must be a 1-D sequence of {batch} ints (one per memory "
                         f"row), got shape {array.shape}")
    if (array < 1).any():
        row = int(np.argmax(array < 1))
        raise ValueError(f"lengths[{row}] is {array[row]}: attention needs a source of at "
                         f"least 1 step in every row (a source of length 0 has nothing to "
                         f"attend to)")
    if (array > steps).any():
        raise ValueError(f"lengths must be at most {steps} (the memory's steps), got "
                         f"{array.max()}")
    return np.ascontiguousarray(array, dtype=np.intc)
