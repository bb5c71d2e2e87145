"""Recurrent layers: RNN, LSTM and GRU with PyTorch's semantics and layout.

All three share ``_Recurrent``: validation, the batch plan (row order and
OpenMP chunks), the loop over layers and directions, dropout between layers,
and the state dict.  The per-timestep work is one kernel call per layer and
direction: each owns a ``DirectionKernel`` (``fastrnn._kernels._recurrent``,
at the instruction-set level chosen at import), which holds the cell's
layout (gate widths, cell state), packed weights and training buffers.
"""

import math

import numpy as np

from .. import _threads
from .._kernels import _runtime
from .._kernels._dispatch import _recurrent as kernels
from .._validation import (FRACTION, Boolean, Integer, Optional, Real, all_finite,
                           check_finite, check_shape, float_array, lengths_array,
                           positive_int, private_input, produced, read_only, resolve_dtype,
                           sequence_input, time_major)
from .embedding import Embedding, TokenGradient, _id_array
from .module import ForwardCache, Module, check_parameter_budget
from .stream import Stream

_FLAG = Boolean()

__all__ = ["RNN", "LSTM", "GRU"]

_MAX_SIZE = (2 ** 31 - 1) // 4      # gate rows (up to 4 * hidden_size) are C ints
# A token input's table of input products is kept between inference calls
# up to this size (a big vocabulary's table can outweigh the model).
_KEPT_TABLE_BYTES = 64 << 20


class _BatchPlan:
    """Row order and thread chunks for one batch.

    Without ``lengths`` rows keep their order and are split into equal
    contiguous chunks.  With lengths, rows are dealt longest-first round-robin
    to the chunks, so every chunk is sorted by length (its running rows are a
    prefix: padded steps cost nothing) and the chunks carry similar work.
    """

    def __init__(self, lengths, batch, steps, num_threads):
        nchunks = max(1, min(num_threads if _threads.openmp_enabled() else 1, batch))
        if lengths is None or (lengths == steps).all():
            self.perm = None
            self.inverse = None
            self.lengths = np.full(batch, steps, dtype=np.intc)
            sizes = [batch // nchunks + (c < batch % nchunks) for c in range(nchunks)]
        else:
            order = np.argsort(-lengths, kind="stable")
            dealt = [order[c::nchunks] for c in range(nchunks)]
            self.perm = np.concatenate(dealt)
            self.inverse = np.argsort(self.perm)
            self.lengths = np.ascontiguousarray(lengths[self.perm], dtype=np.intc)
            sizes = [len(rows) for rows in dealt]
        self.chunks = np.concatenate([[0], np.cumsum(sizes)]).astype(np.intc)

    def to_kernel(self, array, axis=1, copy=False):
        """Rows of a user array in kernel order (C-contiguous; a new array when
        ``copy``, as for states the kernels overwrite)."""
        if self.perm is not None:
            return np.take(array, self.perm, axis=axis)   # always a new array
        return np.array(array, order="C", copy=True) if copy else np.ascontiguousarray(array)

    def to_user(self, array, axis=1):
        if self.perm is None:
            return array
        return np.take(array, self.inverse, axis=axis)


class _TokenInput:
    """The first layer's input as token ids of an :class:`Embedding`
    (``forward(ids, embedding=...)``), in kernel row order.

    ``fused``: the kernels read the ids through a table of each vocabulary
    row's input product (products with V rows instead of T * B in forward and
    backward; see ``_Recurrent._input_table`` for when, and ``table_key``).
    Otherwise ``dense`` holds the gathered embedding rows and the layer runs
    as on any input.  Either way backward hands the embedding a
    ``TokenGradient`` (``pass_gradient``).
    """

    def __init__(self, ids, embedding, plan, fused, table_key):
        self.embedding = embedding
        steps, batch = ids.shape
        kernel_ids = np.array(plan.to_kernel(ids), dtype=np.intp, order="C")   # a private copy
        self.ids = kernel_ids.reshape(-1)
        self.fused, self.table_key = fused, table_key
        self.dense = None if fused else np.take(embedding._rows(), kernel_ids, axis=0)
        self.shape = (steps, batch, embedding.embedding_dim)
        # As the layer checks x: the embedding rows it reads (once each when
        # fused; a kept table's were all checked when it was made).
        if table_key is None:
            rows = self.dense if not fused else embedding._rows()[
                np.bincount(self.ids, minlength=embedding.num_embeddings) > 0]
            check_finite("x (the embedding rows it selects)", rows)
        self._sums = []     # fused backward: (kernel, per-id gate gradient sums, W_ih)

    def kernel_inputs(self):
        """forward's (x, keywords) for this input."""
        if self.fused:
            return None, {"ids": self.ids, "emb": self.embedding._rows(),
                          "table_key": self.table_key}
        return self.dense, {}

    def gradient_inputs(self, kernel, w_ih):
        """backward's keywords for one direction of a fused input; the per-id
        sums it fills are kept for the embedding's gradient."""
        sums = np.empty((self.embedding.num_embeddings, kernel.width), self.embedding.dtype)
        self._sums.append((kernel, sums, w_ih))
        return {"ids": self.ids, "emb": self.embedding._rows(), "token_sums": sums}

    def pass_gradient(self, d_x, num_threads):
        """The embedding's backward, with the table's gradient: from the kept
        sums (fused), or d_x (T, B, E) in kernel order scattered by id."""
        parts, self._sums = self._sums, []
        if self.fused:
            def add_to(d_table, padding, threads):
                for kernel, sums, w_ih in parts:
                    kernel.add_table_gradient(sums, w_ih, d_table, padding, threads)
        else:
            scatter = self.embedding._scatter_add
            def add_to(d_table, padding, threads):
                if d_x is not None:         # None: the table is frozen
                    scatter(self.ids.astype(np.int64, copy=False),
                            d_x.reshape(-1, self.shape[2]), d_table, padding, threads)
        self.embedding.backward(TokenGradient(add_to))


class _Recurrent(Module):
    """Shared implementation; use RNN, LSTM or GRU."""

    # Cell variants (issue 16); the subclasses set them before __init__ and the
    # kernels own what follows from them (layout, parameter shapes).
    proj_size = 0
    _reset_before = False  # GRU reset_after=False
    _peepholes = False     # LSTM peepholes
    _clip = 0.0            # LSTM cell_clip (0 = off)
    _input_forget = False  # LSTM coupled input-forget gate

    def __init__(self, cell, input_size, hidden_size, num_layers=1, bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False,
                 dtype="float32", seed=None):
        super().__init__(resolve_dtype(dtype))
        self.input_size = positive_int("input_size", input_size)
        self.hidden_size = positive_int("hidden_size", hidden_size)
        self.num_layers = positive_int("num_layers", num_layers)
        self.dropout = FRACTION("dropout", dropout)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.bidirectional = bool(bidirectional)
        self.seed = seed
        self._directions = 2 if self.bidirectional else 1
        self._rng = np.random.default_rng(seed)
        # Sizes from a file are checked against the load budget before any
        # kernel is built (W_hh alone holds hidden_size^2 values); the kernels
        # index gate rows (4 * hidden_size) with C ints.
        check_parameter_budget(self.hidden_size ** 2, f"hidden_size={self.hidden_size}")
        for name in ("input_size", "hidden_size"):
            if getattr(self, name) > _MAX_SIZE:
                raise ValueError(f"{name} must be at most {_MAX_SIZE}, got "
                                 f"{getattr(self, name)}")
        self._kernels = self._build_kernels(cell)
        self._init_parameters()
        self._slots = [self._layer_parameters(layer, direction)
                       for layer in range(self.num_layers)
                       for direction in range(self._directions)]
        self._plans = {}
        self._table_seen = None     # see _input_table
        self._count_own_references()    # see Module._unchanged_version

    def _build_kernels(self, cell):
        """One compiled kernel per (layer, direction), in state-dict order; a
        layer's input is the output of the one below (D * state width)."""
        options = dict(proj_size=self.proj_size, reset_before=self._reset_before,
                       peepholes=self._peepholes, clip=self._clip,
                       input_forget=self._input_forget)
        result, layer_input = [], self.input_size
        for _ in range(self.num_layers):
            for direction in range(self._directions):
                result.append(kernels.DirectionKernel(
                    cell, direction == 1, layer_input, self.hidden_size,
                    self._directions, self.dtype, **options))
            layer_input = result[-1].out_width
        return result

    @property
    def _has_cell_state(self):
        return self._kernels[0].has_cell_state

    @property
    def _state_size(self):
        """Width of h per direction (proj_size when projected)."""
        return self._kernels[0].state_size

    def _config(self):
        config = {"input_size": self.input_size, "hidden_size": self.hidden_size,
                  "num_layers": self.num_layers, "bias": self.bias,
                  "batch_first": self.batch_first, "dropout": self.dropout,
                  "bidirectional": self.bidirectional, "dtype": self.dtype.name}
        if isinstance(self, RNN):
            config["nonlinearity"] = self.nonlinearity
        config.update(self._variant_options())
        return config

    # -- parameters -----------------------------------------------------------
    # Parameter roles in state-dict (PyTorch) order; a layer has those its
    # kernels' layout asks for (``DirectionKernel.parameter_shapes``).
    _ROLES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr",
              "weight_peephole")

    def _names(self, layer, direction):
        """State-dict names of every role for one layer direction."""
        suffix = f"l{layer}" + ("_reverse" if direction else "")
        return tuple(f"{role}_{suffix}" for role in self._ROLES)

    def _init_parameters(self):
        """U(-1/sqrt(H), 1/sqrt(H)) like PyTorch, drawn in state-dict order
        (PyTorch's: W_hr after the biases, then the peepholes); each charged to
        the load budget before it is drawn (see Module._new_parameter)."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for k, kernel in enumerate(self._kernels):
            names = dict(zip(self._ROLES, self._names(*divmod(k, self._directions))))
            for role, shape in kernel.parameter_shapes(self.bias).items():
                self._new_parameter(names[role], shape,
                                    lambda s: self._rng.uniform(-bound, bound, s))

    def _layer_parameters(self, layer, direction):
        """Live (w_ih, w_hh, b_ih, b_hh, w_hr, peephole) and their gradient
        arrays, in ``_ROLES`` order; None for those the layer does not have."""
        names = self._names(layer, direction)
        params = tuple(self._params.get(name) for name in names)
        grads = tuple(self.grads.get(name) for name in names)
        return params, grads

    # -- validation -----------------------------------------------------------
    def _time_major(self, array):
        return time_major(array, self.batch_first)

    def _check_input(self, x):
        return sequence_input(x, self.dtype, self.input_size, self.batch_first)

    def _check_tokens(self, ids, embedding):
        """Token ids (T, B) time-major, checked against ``embedding``."""
        if not isinstance(embedding, Embedding):
            raise TypeError(f"embedding must be a fastrnn Embedding, got "
                            f"{type(embedding).__name__}")
        if embedding.embedding_dim != self.input_size or embedding.dtype != self.dtype:
            raise ValueError(f"embedding must give {self.input_size}-wide {self.dtype.name} "
                             f"rows (input_size, dtype), got {embedding!r}")
        ids = _id_array(ids, embedding.num_embeddings)
        if ids.ndim != 2 or 0 in ids.shape:
            layout = "B, T" if self.batch_first else "T, B"
            raise ValueError(f"x must be a 2-D array of token ids ({layout}) when an "
                             f"embedding is given, got shape {ids.shape}")
        return ids.T if self.batch_first else ids

    def _state_shape(self, batch, cell=False):
        """Shape of h (proj_size wide when projected), or of the LSTM's c."""
        size = self.hidden_size if cell else self._state_size
        return (self.num_layers * self._directions, batch, size)

    def _check_state(self, name, value, batch, cell=False):
        if value is None:
            return None
        value = float_array(name, value, self.dtype)
        check_shape(name, value, self._state_shape(batch, cell))
        check_finite(name, value)
        return value

    def _split_states(self, name, value, batch):
        """(h, c) for the LSTM, (h, None) otherwise; each validated or None."""
        if not self._has_cell_state:
            return self._check_state(name, value, batch), None
        if value is None:
            return None, None
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            raise TypeError(f"{name} must be a tuple (h, c) for an LSTM, "
                            f"got {type(value).__name__}")
        return (self._check_state(f"{name}[0]", value[0], batch),
                self._check_state(f"{name}[1]", value[1], batch, cell=True))

    # -- forward --------------------------------------------------------------
    def forward(self, x, hx=None, lengths=None, embedding=None):
        """Run the whole sequence.

        x: (T, B, input_size), or (B, T, input_size) with ``batch_first``;
            with ``embedding``, integer token ids (T, B) (or (B, T)).
        hx: initial state (num_layers * D, B, H_out), zeros when None; a tuple
            (h0, c0) for the LSTM, c0 (num_layers * D, B, hidden_size).
        lengths: one int per row in 1..T; rows end early (PyTorch packed
            sequence semantics: zero outputs past the end, final state at the
            last valid step, the reverse direction starts there).
        Returns ``out`` (T, B, D * H_out) (batch-first if so built) and the
        final state ``h_n`` (num_layers * D, B, H_out), or ``(h_n, c_n)`` for
        the LSTM.  D is 2 for a bidirectional layer, else 1; H_out is
        ``proj_size`` for a projected LSTM, else ``hidden_size``.
        embedding: an :class:`Embedding` whose rows are the input (the same
            as ``layer(embedding(ids))``, with equal outputs bit for bit).
            When its vocabulary is smaller than the batch's T * B tokens, the
            input product is made once per vocabulary row instead of once
            per token, in forward and in backward, which then adds to the
            embedding's gradient (unless frozen) and returns d_x None.
        """
        x_given = x
        if embedding is None:
            x = self._check_input(x)
            steps, batch, _ = x.shape
        else:
            x = self._check_tokens(x, embedding)
            steps, batch = x.shape
        h0, c0 = self._split_states("hx", hx, batch)
        if lengths is not None:
            lengths = lengths_array(lengths, batch, steps)
        num_threads = _threads.get_num_threads()
        plan = self._plan(lengths, batch, steps, num_threads)
        h_n, c_n = self._kernel_states(plan, h0, c0, batch)
        pack_key = self._unchanged_version()
        if embedding is not None:
            layer_input = _TokenInput(x, embedding, plan, *self._input_table(
                embedding, steps, batch, pack_key))
        else:
            layer_input = plan.to_kernel(x)
            if self.training:
                layer_input = private_input(layer_input, x_given, self._buffers)    # backward reads it again
        layers = []
        with _threads.blas_region():
            for layer in range(self.num_layers):
                out, tapes = self._forward_layer(layer, layer_input, plan, h_n, c_n,
                                                 num_threads, pack_key)
                mask = self._mask_above(layer, out.shape)
                if self.training:
                    layers.append(ForwardCache(input=layer_input, out=out, tapes=tapes,
                                               mask=mask))
                layer_input = out * mask if mask is not None else out
        self._keep_for_backward(plan=plan, layers=layers, had_h0=h0 is not None)
        return self._user_outputs(plan, layer_input, h_n, c_n)

    def _kernel_states(self, plan, h, c, batch):
        """Kernel-order copies of the states ``h`` and ``c`` (zeros for None;
        c None without a cell state): the kernels update them in place."""
        h = plan.to_kernel(h, copy=True) if h is not None else self._zero_state(batch)
        if not self._has_cell_state:
            return h, None
        c = plan.to_kernel(c, copy=True) if c is not None else self._zero_state(batch, cell=True)
        return h, c

    def _forward_layer(self, layer, layer_input, plan, h_n, c_n, num_threads, pack_key):
        """Both directions of one layer over the whole sequence: ``(out
        (T, B, D * H_out), tapes)``, the tapes (one per direction) holding what
        backward needs (None in eval mode).  h_n / c_n become final states."""
        steps, batch = layer_input.shape[:2]
        x, token_keywords = layer_input.kernel_inputs() \
            if isinstance(layer_input, _TokenInput) else (layer_input, {})
        D = self._directions
        shape = (steps, batch, self._kernels[layer * D].out_width)
        out = self._buffers.empty(("out", layer), shape, self.dtype)
        if plan.perm is not None:
            out.fill(0)                                              # padding stays 0
        tapes = []
        for direction in range(D):
            k = layer * D + direction
            kernel = self._kernels[k]
            c_k = c_n[k] if self._has_cell_state else None
            tape = kernel.take_tape(steps, batch, h_n[k], c_k) if self.training else None
            tapes.append(tape)
            (w_ih, w_hh, b_ih, b_hh, w_hr, peep), _ = self._slots[k]
            kernel.forward(x, w_ih, w_hh, b_ih, b_hh, plan.lengths, plan.chunks,
                           h_n[k], c_k, out, tape, num_threads, w2=w_hr, peep=peep,
                           pack_key=pack_key, **token_keywords)
        return out, tapes

    def _input_table(self, embedding, steps, batch, pack_key):
        """``(fused, table_key)`` of a token input (``_TokenInput``).

        The table of each vocabulary row's input product pays for itself
        when the vocabulary has fewer rows than the call has tokens.  In
        inference the first layer's kernels keep it between calls under
        ``table_key`` (None: not kept; see ``_table_key``), and a call that
        finds it kept makes no input product at all: LSTM(64) over (200, 1)
        tokens of a 1,000-row vocabulary, 241 -> 179 us (1 thread, Zen 4).
        A table that is worth keeping but bigger than the call is made at
        the second call with the same key, so one-off calls do not pay for
        it.  Its rows are checked for NaN/inf once, all of them, when it is
        made."""
        by_size = embedding.num_embeddings < steps * batch
        key = self._table_key(embedding, pack_key)
        if key is None:
            return by_size, None
        if all(kernel.kept_table_key == key for kernel in self._kernels[:self._directions]):
            return True, key
        if not by_size and self._table_seen != key:
            self._table_seen = key
            return False, None
        if not all_finite(embedding._rows()):
            return by_size, None
        return True, key

    def _table_key(self, embedding, pack_key):
        """The key of the input table kept for ``embedding`` between inference
        calls: the versions of the layer's weights and of the embedding's
        (``Module._unchanged_version``), or None (training, a version not
        known, a table over ``_KEPT_TABLE_BYTES``)."""
        size = embedding.num_embeddings * self._kernels[0].width * self.dtype.itemsize
        if self.training or pack_key is None or size > _KEPT_TABLE_BYTES:
            return None
        rows_key = embedding._unchanged_version()
        return None if rows_key is None else (pack_key, embedding._serial, rows_key)

    def _mask_above(self, layer, shape):
        """The dropout mask applied to ``layer``'s output (training mode, below
        the top layer, dropout > 0), else None."""
        if not (self.training and self.dropout > 0 and layer < self.num_layers - 1):
            return None
        return self._dropout_mask(shape, self.dropout)

    def _user_outputs(self, plan, top, h_n, c_n):
        """``(out, h_n)`` or ``(out, (h_n, c_n))`` in the caller's row order and layout."""
        out = plan.to_user(top)
        if self.training and out is top:
            out = read_only(out)     # backward reads it
        if self.batch_first:
            out = out.transpose(1, 0, 2)
        produced(out)       # handed to the next module, it is not scanned again
        h_n = plan.to_user(h_n)
        if self._has_cell_state:
            return out, (h_n, plan.to_user(c_n))
        return out, h_n

    def stream(self, batch_size=1, hx=None):
        """A :class:`~fastrnn.layers.stream.Stream` that runs this layer one
        timestep at a time: ``y = stream.step(x_t)`` with x_t (B, input_size)
        and y (B, hidden_size; proj_size when projected), the state carried
        (``stream.state``, ``stream.reset(hx)``).  Stepping through x gives ``layer(x)`` exactly.
        Bidirectional layers cannot stream (ValueError)."""
        return Stream(self, batch_size, hx)

    def _plan(self, lengths, batch, steps, num_threads):
        """The batch plan; plans without lengths are reused (they are immutable)."""
        num_threads = _runtime.threads_for(steps * batch * self.hidden_size
                                           * self._kernels[0].width, num_threads)
        if lengths is not None:
            return _BatchPlan(lengths, batch, steps, num_threads)
        key = (batch, steps, num_threads)
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) > 16:
                self._plans.clear()
            plan = self._plans[key] = _BatchPlan(None, batch, steps, num_threads)
        return plan

    def _release_cache(self):
        """Drop the activations of the last forward; recycle its buffers."""
        cache, self._cache = self._cache, None
        if cache is not None:
            self._recycle(cache)

    def _recycle(self, cache):
        """Tapes go back to their kernels for the next step (fresh
        multi-megabyte buffers cost page faults: 7% of an LSTM training step
        measured at (100, 64, 256)).  A tape is out of its kernel while a
        forward/backward pair uses it, so two Python threads never share one."""
        for layer, saved in enumerate(cache.layers):
            for direction, tape in enumerate(saved.tapes):
                self._kernels[layer * self._directions + direction].recycle(tape)

    def train(self, mode=True):
        if not mode:
            self._release_cache()
            for kernel in self._kernels:
                kernel.release_spares()
        return super().train(mode)

    def _zero_state(self, batch, cell=False):
        return np.zeros(self._state_shape(batch, cell), dtype=self.dtype)

    # -- backward -------------------------------------------------------------
    def backward(self, d_out, d_hn=None, input_grad=True, state_grad=True):
        """Gradients of the last ``forward`` (training mode), once per forward.

        d_out: dL/d(out), shaped like ``out``; gradients at padded positions
            have no effect.
        d_hn: dL/d(h_n), or None; for the LSTM a tuple (d_hn, d_cn) whose parts
            may be None.
        input_grad: False skips computing dL/dx (returned as None) when the
            input needs no gradient, e.g. a first layer fed by data.
        state_grad: False skips computing dL/d(initial state) (returned as
            None) when the initial state needs none: zeros (no ``hx``), or a
            state carried over from the previous batch.  That saves the
            recurrent product of each row's first step (1/T of them).
        Returns ``(d_x, d_hx)`` (``d_hx`` = (d_h0, d_c0) for the LSTM).
        Parameter gradients are added to ``self.grads``; after a forward with
        ``embedding``, its gradient to the embedding's (unless frozen), and
        d_x is None.
        """
        cache = self._forward_cache()
        top = cache.layers[-1].out
        batch = top.shape[1]
        d_out = self._time_major(float_array("d_out", d_out, self.dtype, ndim=3))
        check_shape("d_out" + (" (time-major after batch_first)" if self.batch_first else ""),
                    d_out, top.shape)
        check_finite("d_out", d_out)
        d_h, d_c = self._split_states("d_hn", d_hn, batch)
        self._consume_cache()
        # The kernels turn dL/d(final state) into dL/d(initial state) in place.
        d_h0, d_c0 = self._kernel_states(cache.plan, d_h, d_c, batch)
        d_layer = cache.plan.to_kernel(d_out)
        num_threads = _threads.get_num_threads()
        with _threads.blas_region():
            for layer in reversed(range(self.num_layers)):
                d_input = self._backward_layer(cache, layer, d_layer, d_h0, d_c0,
                                               layer > 0 or input_grad, state_grad,
                                               num_threads)
                if layer > 0:
                    below_mask = cache.layers[layer - 1].mask
                    d_layer = d_input * below_mask if below_mask is not None else d_input
        self._recycle(cache)
        first_input = cache.layers[0].input
        if isinstance(first_input, _TokenInput):
            first_input.pass_gradient(d_input, num_threads)
            input_grad = False
        return self._user_gradients(cache.plan, d_input if input_grad else None,
                                    (d_h0, d_c0) if state_grad else None)

    def _backward_layer(self, cache, layer, d_out, d_h0, d_c0, need_d_input, state_grad,
                        num_threads):
        """Both directions of one layer: parameter gradients added to
        ``grads``, d_h0 / d_c0 turned into the initial states' gradients, and
        dL/d(the layer's input) returned (None when not needed; the first
        direction writes it, the second adds)."""
        saved, plan = cache.layers[layer], cache.plan
        x, tokens = saved.input, None
        if isinstance(x, _TokenInput):
            tokens, x = (x, None) if x.fused else (None, x.dense)
            need_d_input = not (tokens or saved.input.embedding.freeze)
        d_input = self._buffers.empty(("d_input", layer), saved.input.shape, self.dtype) \
            if need_d_input else None
        for direction in range(self._directions):
            k = layer * self._directions + direction
            (w_ih, w_hh, _, _, w_hr, peep), grads = self._slots[k]
            dw_ih, dw_hh, db_ih, db_hh, dw_hr, dpeep = grads
            token_keywords = tokens.gradient_inputs(self._kernels[k], w_ih) if tokens else {}
            self._kernels[k].backward(
                saved.tapes[direction], x, w_ih, w_hh, plan.lengths,
                plan.chunks, cache.had_h0, saved.out, d_out, d_h0[k],
                d_c0[k] if self._has_cell_state else None, d_input,
                direction == 1, dw_ih, dw_hh, db_ih, db_hh, num_threads,
                w2=w_hr, peep=peep, dw2=dw_hr, dpeep=dpeep, state_grad=state_grad,
                **token_keywords)
        return d_input

    def _user_gradients(self, plan, d_input, d_states):
        """``(d_x, d_h0)`` or ``(d_x, (d_h0, d_c0))`` in the caller's row order
        and layout from ``d_states`` = (d_h0, d_c0); d_x None when not
        computed, d_h0 None when ``d_states`` is."""
        d_x = None
        if d_input is not None:
            d_x = plan.to_user(d_input)
            if self.batch_first:
                d_x = d_x.transpose(1, 0, 2)
            produced(d_x)
        if d_states is None:
            return d_x, None
        d_h0, d_c0 = d_states
        d_h0 = plan.to_user(d_h0)
        if self._has_cell_state:
            return d_x, (d_h0, plan.to_user(d_c0))
        return d_x, d_h0

    def load_state_dict(self, state_dict):
        """Copy parameters in by name (see ``Module.load_state_dict``).

        PyTorch tensors are refused for a cell variant PyTorch does not have
        (same names and shapes, different function): see ``_torch_mismatch``.
        """
        mismatch = self._torch_mismatch()
        if mismatch and hasattr(state_dict, "values") and any(
                type(v).__module__.startswith("torch") for v in state_dict.values()):
            raise ValueError(f"state_dict holds PyTorch tensors, but this "
                             f"{type(self).__name__} has {mismatch}, which PyTorch has no "
                             f"equivalent for: torch weights would compute a different "
                             f"function (build the layer without that option)")
        super().load_state_dict(state_dict)

    def _torch_mismatch(self):
        """The options PyTorch has no equivalent for, as text ('' if none)."""
        kernel, options = self._kernels[0], []
        if kernel.reset_before:
            options.append("reset_after=False")
        if kernel.peepholes:
            options.append("peepholes=True")
        if kernel.clip:
            options.append(f"cell_clip={kernel.clip}")
        if kernel.input_forget:
            options.append("input_forget=True")
        return " and ".join(options)

    def _variant_options(self):
        """The cell-variant constructor arguments that differ from their
        defaults (for the repr and ``_config``, so pickling keeps them)."""
        return {}

    def __repr__(self):
        extra = f", nonlinearity={self.nonlinearity!r}" if isinstance(self, RNN) else ""
        variants = "".join(f", {name}={value!r}"
                           for name, value in self._variant_options().items())
        return (f"{type(self).__name__}({self.input_size}, {self.hidden_size}, "
                f"num_layers={self.num_layers}{extra}, bias={self.bias}, "
                f"batch_first={self.batch_first}, dropout={self.dropout}, "
                f"bidirectional={self.bidirectional}{variants}, "
                f"dtype={self.dtype.name!r})")


class RNN(_Recurrent):
    """Elman RNN: h_t = g(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), g = tanh or ReLU.

    Same arguments, parameter names and shapes as ``torch.nn.RNN``; see
    ``_Recurrent.forward`` / ``backward`` for the call contract.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh",
                 bias=True, batch_first=False, dropout=0.0, bidirectional=False,
                 dtype="float32", seed=None):
        cells = {"tanh": kernels.Cell.RNN_TANH, "relu": kernels.Cell.RNN_RELU}
        if nonlinearity not in cells:
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(cells[nonlinearity], input_size, hidden_size, num_layers, bias,
                         batch_first, dropout, bidirectional, dtype, seed)


class LSTM(_Recurrent):
    """LSTM with PyTorch's gates (i, f, g, o), names and shapes (``torch.nn.LSTM``).

    ``hx`` is a tuple (h0, c0); ``forward`` returns ``out, (h_n, c_n)``;
    ``backward(d_out, (d_hn, d_cn))`` returns ``d_x, (d_h0, d_c0)``.

    Variants:

    * ``proj_size`` > 0 (PyTorch's): h_t = W_hr (o_t * tanh(c_t)); h, h_n and
      ``out`` are proj_size wide (D * proj_size), c stays hidden_size wide;
      ``weight_hr_l{k}[_reverse]`` has shape (proj_size, hidden_size) and
      ``weight_hh`` (4 * hidden_size, proj_size).
    * ``peepholes=True`` (ONNX's ``P``, TensorFlow's ``use_peepholes``):
      i = sigmoid(... + p_i * c_{t-1}), f = sigmoid(... + p_f * c_{t-1}),
      o = sigmoid(... + p_o * c_t); ``weight_peephole_l{k}[_reverse]`` of shape
      (3, hidden_size), rows p_i, p_f, p_o (ONNX orders P as i, o, f).
    * ``cell_clip`` = a positive float (ONNX's ``clip``): every gate
      pre-activation (i, f, g, o, after the peepholes) is clipped to
      [-cell_clip, cell_clip] before its activation, as ONNX Runtime does; the
      cell state itself is not clipped (unlike TensorFlow 1's ``cell_clip``).
      The gradient is 0 where a value was clipped.
    * ``input_forget=True`` (ONNX's): coupled gates, f = 1 - i; the forget
      block of the weights is unused (its gradients are 0).
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False,
                 dtype="float32", seed=None, proj_size=0, peepholes=False, cell_clip=None,
                 input_forget=False):
        hidden_size = positive_int("hidden_size", hidden_size)
        self.proj_size = _proj_size(proj_size, hidden_size)
        self.peepholes = self._peepholes = _FLAG("peepholes", peepholes)
        self.input_forget = self._input_forget = _FLAG("input_forget", input_forget)
        self.cell_clip = _cell_clip(cell_clip)
        self._clip = self.cell_clip or 0.0
        super().__init__(kernels.Cell.LSTM, input_size, hidden_size, num_layers, bias,
                         batch_first, dropout, bidirectional, dtype, seed)

    def _variant_options(self):
        chosen = {"proj_size": self.proj_size, "peepholes": self.peepholes,
                  "cell_clip": self.cell_clip, "input_forget": self.input_forget}
        defaults = {"proj_size": 0, "peepholes": False, "cell_clip": None,
                    "input_forget": False}
        return {name: value for name, value in chosen.items() if value != defaults[name]}


class GRU(_Recurrent):
    """GRU with PyTorch's gates (r, z, n), n = tanh(W_in x + b_in + r * (W_hn h + b_hn)).

    Same arguments, names and shapes as ``torch.nn.GRU``.

    ``reset_after=False`` is the GRU of Cho et al. (2014), Keras's
    ``GRU(reset_after=False)`` and ONNX's default ``linear_before_reset=0``:
    the reset gate multiplies the previous state before the product,
    n = tanh(W_in x + b_in + W_hn (r * h) + b_hn).  Same parameter names and
    shapes; b_hn is simply added to n's pre-activation (it is not reset).
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False,
                 dtype="float32", seed=None, reset_after=True):
        self.reset_after = _FLAG("reset_after", reset_after)
        self._reset_before = not self.reset_after
        super().__init__(kernels.Cell.GRU, input_size, hidden_size, num_layers, bias,
                         batch_first, dropout, bidirectional, dtype, seed)

    def _variant_options(self):
        return {} if self.reset_after else {"reset_after": False}


def _proj_size(value, hidden_size):
    """proj_size: 0 (no projection) or an int in 1..hidden_size - 1."""
    value = Integer(low=0)("proj_size", value)
    if value >= hidden_size:
        raise ValueError(f"proj_size must be 0 (no projection) or between 1 and "
                         f"hidden_size - 1 = {hidden_size - 1}, got {value}")
    return int(value)


def _cell_clip(value):
    """cell_clip: None (no clipping) or a positive finite float."""
    return Optional(Real(low=0, low_open=True))("cell_clip", value)
