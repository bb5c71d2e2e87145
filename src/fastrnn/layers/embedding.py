"""Embedding layer: a trainable lookup table from token ids to vectors.

Pretrained vectors in text form (GloVe, word2vec) load through
``Embedding.from_pretrained``; see its docstring for the file format.
"""

import os

import numpy as np

from .. import _threads
from .._kernels._dispatch import _embedding
from .._validation import (Boolean, Integer, Optional, check_finite, check_shape, float_array,
                           positive_int, private_input, produced, read_only, resolve_dtype,
                           to_numpy)
from ..vectors import pretrained_array, read_vectors_for_vocab, vocab_tokens
from .module import Module, reserve_parameter

__all__ = ["Embedding"]


class TokenGradient:
    """What a recurrent layer that read token ids through an embedding
    (``layer(ids, embedding=emb)``) passes to ``emb.backward``: the table's
    gradient, which ``add_to(d_table, padding, num_threads)`` adds to
    ``d_table`` except the ``padding`` row (-1: none).  The layer knows how:
    per-id sums of its gate gradients times W_ih, or its input gradient
    scattered by id."""

    def __init__(self, add_to):
        self.add_to = add_to


class Embedding(Module):
    """``torch.nn.Embedding`` semantics: parameter ``weight`` (V, D).

    Args:
        num_embeddings: vocabulary size V.
        embedding_dim: vector size D.
        padding_idx: id whose row starts at zero and never receives a
            gradient (for padding tokens); negative values count from the end
            as in PyTorch (-1 is V - 1).  None: no padding row.
        freeze: keep the weight fixed: it stays in ``state_dict`` /
            ``load_state_dict`` but ``parameters()`` and ``named_parameters()``
            are empty (optimizers skip it), no gradient array is kept and
            ``backward`` does no work.  Settable later (``layer.freeze = False``).
        dtype: "float32" (default) or "float64".
        seed: seed for the N(0, 1) initialisation (``np.random.default_rng``).

    ``forward(ids)`` takes integer ids of any shape, for example (T, B)
    time-major or (B,), and returns ``ids.shape + (D,)``.  ``backward(d_out)``
    accumulates into ``grads["weight"]`` and returns None (ids have no
    gradient).  Gather and scatter run on fastrnn's threads; the gradient is
    bit-identical for any thread count.
    """

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, freeze=False,
                 dtype="float32", seed=None):
        num_embeddings = positive_int("num_embeddings", num_embeddings)
        embedding_dim = positive_int("embedding_dim", embedding_dim)
        rng = np.random.default_rng(seed)
        reserve_parameter((num_embeddings, embedding_dim))
        weight = rng.standard_normal((num_embeddings, embedding_dim))
        self._setup(weight, padding_idx, freeze, dtype, zero_padding_row=True)

    def _setup(self, weight, padding_idx, freeze, dtype, zero_padding_row):
        """Shared by ``__init__`` and ``from_pretrained`` (which skips the random init)."""
        super().__init__(resolve_dtype(dtype))
        self.num_embeddings, self.embedding_dim = weight.shape
        self.padding_idx = _normalise_padding_idx(padding_idx, self.num_embeddings)
        self._add_parameter("weight", weight)
        if zero_padding_row and self.padding_idx is not None:
            self._params["weight"][self.padding_idx] = 0
        self._gather = self._kernel(_embedding.gather)
        self._scatter_add = self._kernel(_embedding.scatter_add)
        self._frozen = False
        self.freeze = freeze
        self._count_own_references()    # see Module._unchanged_version

    # -- freezing -------------------------------------------------------------
    @property
    def freeze(self):
        """True: the weight is not trainable (see the class docstring)."""
        return self._frozen

    @freeze.setter
    def freeze(self, value):
        value = Boolean()("freeze", value)
        if value:
            self.grads.pop("weight", None)    # a frozen table may be large
        elif "weight" not in self.grads:
            self.grads["weight"] = np.zeros_like(self._params["weight"])
        self._frozen = value

    def parameters(self):
        return [] if self._frozen else super().parameters()

    def named_parameters(self):
        return [] if self._frozen else super().named_parameters()

    @property
    def weight(self):
        """The live (V, D) weight array (also ``state_dict()["weight"]``, as a
        copy).  It may be written through, so handing it out counts as a
        change (see ``Module._unchanged_version``)."""
        self._weights_version += 1
        return self._params["weight"]

    def _rows(self):
        """The live weight for fastrnn's own readers, which do not write it:
        unlike ``weight``, no change is counted."""
        return self._params["weight"]

    # -- forward / backward -----------------------------------------------------
    def _config(self):
        return {"num_embeddings": self.num_embeddings, "embedding_dim": self.embedding_dim,
                "padding_idx": self.padding_idx, "freeze": self._frozen,
                "dtype": self.dtype.name}

    def forward(self, ids):
        ids_given = ids
        ids = _id_array(ids, self.num_embeddings)
        flat = np.ascontiguousarray(ids.reshape(-1), dtype=np.int64)
        out = self._buffers.empty("out", (flat.shape[0], self.embedding_dim), self.dtype)
        self._gather(flat, self._params["weight"], out, _threads.get_num_threads())
        out = out.reshape(ids.shape + (self.embedding_dim,))
        if not self.training:
            self._release_cache()
            return produced(out)       # the next module does not scan it again
        kept = private_input(flat, ids_given, self._buffers)     # backward reads them
        self._keep_for_backward(ids=kept, ids_shape=ids.shape)
        return read_only(out)

    def backward(self, d_out):
        """Accumulate the weight gradient of the last training-mode forward.

        The ``padding_idx`` row gets nothing.  Returns None: integer ids have
        no gradient.  A recurrent layer that read ids through this table
        calls this itself with a :class:`TokenGradient` (no forward of this
        layer precedes it).
        """
        if isinstance(d_out, TokenGradient):
            if not self._frozen:
                d_out.add_to(self.grads["weight"], self._padding_row(),
                             _threads.get_num_threads())
            return None
        cache = self._forward_cache()
        expected = cache.ids_shape + (self.embedding_dim,)
        if self._frozen:
            shape = np.shape(to_numpy(d_out))
            if shape != expected:
                raise ValueError(f"d_out must have shape {expected}, got {shape}")
            self._consume_cache()
            return None
        d_out = float_array("d_out", d_out, self.dtype)
        check_shape("d_out", d_out, expected)
        check_finite("d_out", d_out)
        self._consume_cache()
        self._scatter_add(cache.ids, d_out.reshape(-1, self.embedding_dim), self.grads["weight"],
                          self._padding_row(), _threads.get_num_threads())
        return None

    def _padding_row(self):
        """The row that gets no gradient, as the kernels take it (-1: none)."""
        return -1 if self.padding_idx is None else self.padding_idx

    # -- pretrained vectors -------------------------------------------------------
    @classmethod
    def from_pretrained(cls, source, vocab=None, freeze=False, padding_idx=None,
                        dtype="float32", seed=None):
        """An Embedding initialised from pretrained vectors.

        Args:
            source: a (V, D) float array (numpy or tensor), or a path (str or
                os.PathLike) to a GloVe or word2vec *text* file.
            vocab: the token of every id.  Optional with an array (its length
                must then be V); required with a path.  One of: an object
                with a ``tokens`` attribute (tokens in id order, like
                ``fr.Vocab``), a sequence of token strings in id order, or a
                mapping token -> id with ids 0..V-1.
            freeze: see the class docstring (default False: fine-tune).
            padding_idx: as in the constructor.  With a file its row is zero;
                with an array the given row is kept as is (as PyTorch does).
            dtype: "float32" or "float64".
            seed: seed for the random rows of vocab words missing from a file.

        File format (UTF-8 text, one vector per line, fields separated by
        spaces)::

            word v1 v2 ... vD          # GloVe
            the 0.418 0.24968 -0.41242 ...

        word2vec text files are the same with a first header line
        ``count dim`` (two integers), which is detected and skipped.  D comes
        from the header, else from the first line.  The file is streamed:
        only lines whose word is in the vocab are parsed and kept, so a large
        file costs memory for the vocab only (and a line that is not needed is
        never checked).  A word may contain spaces (glove.840B has a few): the
        last D fields are the numbers.  If a word appears twice the first line
        wins.  Vocab words missing from the file get random rows drawn from
        N(0, s) with s the standard deviation of the loaded values, reported
        in one UserWarning; the padding row is zero.

        The reader (``fastrnn.vectors``) opens regular files only, caps each
        line at the ``max_line_bytes`` limit and checks a word2vec header
        against the file's size before allocating (``fr.set_load_limits``);
        its errors are ValueErrors naming the file and line.
        """
        if isinstance(source, (str, os.PathLike)):
            tokens = vocab_tokens(vocab, required_for=source)
            index = _normalise_padding_idx(padding_idx, len(tokens))
            weight = read_vectors_for_vocab(source, tokens, index, seed)
        else:
            weight = pretrained_array(source, vocab)
        zero_padding_row = isinstance(source, (str, os.PathLike))
        layer = cls.__new__(cls)
        layer._setup(weight, padding_idx, freeze, dtype, zero_padding_row)
        return layer

    def __repr__(self):
        extra = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        return (f"Embedding({self.num_embeddings}, {self.embedding_dim}{extra}, "
                f"freeze={self._frozen}, dtype={self.dtype.name!r})")


# -- helpers ----------------------------------------------------------------------

def _normalise_padding_idx(padding_idx, num_embeddings):
    """padding_idx in [0, V), or None; negative values count from the end (PyTorch)."""
    padding_idx = Optional(Integer())("padding_idx", padding_idx)
    if padding_idx is None:
        return None
    if not -num_embeddings <= padding_idx < num_embeddings:
        raise ValueError(f"padding_idx must lie in [-{num_embeddings}, {num_embeddings}) "
                         f"(num_embeddings={num_embeddings}), got {padding_idx}")
    return padding_idx % num_embeddings


def _id_array(ids, num_embeddings):
    """``ids`` as a numpy integer array after type and range checks (not yet int64:
    the range is checked on the original values so huge uint64 cannot wrap)."""
    if ids is None:
        raise TypeError("ids must be an array of integer token ids, got None")
    array = to_numpy(ids, "ids")
    kind = array.dtype.kind
    if kind not in "iu":
        what = {"b": "booleans", "f": f"floats ({array.dtype})", "c": "complex numbers",
                "U": "strings", "S": "bytes", "O": "Python objects"}.get(kind, str(array.dtype))
        raise TypeError(f"ids must be integer token ids, got {what}")
    if array.size and (array.min() < 0 or array.max() >= num_embeddings):
        raise ValueError(f"ids must lie in [0, {num_embeddings}) (num_embeddings="
                         f"{num_embeddings}), got values from {array.min()} to {array.max()}")
    return array


