"""Task models one item at a time, with the recurrent state carried.

``model.stream()`` (SequenceTagger, SequenceClassifier, SequenceRegressor,
LanguageModel) returns one of the classes below.  ``step(item)`` takes one
token (a str, for models fitted on texts or token lists) or one step's
features (numbers, for numeric models) and returns the model's prediction
for the sequence so far, the same as ``predict`` on that prefix.  The work per
step is the layer stream (``fastrnn.layers.stream``) and the model's linear
head, both packed once and re-packed when the weights change; what can be
checked once is checked at ``stream()``.

Streams compute inference (no dropout) and never change the model.  Each
caller should own its stream; many streams may run over one model at once.
Bidirectional models cannot stream: their reverse direction needs the whole
sequence.
"""

import numpy as np

from .._validation import is_int
from ..text import UNK

__all__ = ["TaggerStream", "ClassifierStream", "RegressorStream", "LanguageModelStream"]


class _ModelStream:
    """Input item -> features row -> layer stream -> head logits."""

    def __init__(self, model, vocab=None):
        model._check_fitted()
        network = model.network_
        name = type(model).__name__
        if not hasattr(network.rnn, "stream"):
            raise ValueError(f"{name}(cell={model.cell!r}) cannot stream: only the rnn, "
                             f"lstm and gru cells can; use predict")
        if network.rnn.bidirectional:
            raise ValueError(f"{name}(bidirectional=True) cannot stream: the reverse "
                             f"direction needs the whole sequence; use predict, or fit "
                             f"with bidirectional=False")
        self._model = model
        self._rnn = network.rnn
        self._head = model.head_
        self._dtype = network.dtype
        self._kind = network.input_kind
        self._embedding = network.embedding
        self._vocab = vocab if vocab is not None else getattr(model.inputs_, "vocab", None)
        inputs = getattr(model, "inputs_", None)
        self._lower = bool(inputs is not None and inputs.kind == "text" and inputs.lower)
        self._width = network.input_size
        self._layers = self._rnn.stream(batch_size=1)
        self._kernel = self._layers._kernel
        self._head_version = None
        # Per-step lookups done once: the token -> row table (embedding rows as
        # (1, E) views, one-hot rows built on demand) and the casefold choice.
        self._stoi = self._vocab._stoi if self._vocab is not None else None
        self._rows = {}

    # -- the pieces of a step ---------------------------------------------------------
    def _features(self, item):
        """One input row (1, F) for ``item``, checked."""
        if self._kind == "numeric":
            return self._numeric(item)
        token_id = self._token_id(item)
        if self._kind == "embedding":
            # A view of the live table: a changed embedding is seen at once.
            return self._embedding._rows()[token_id:token_id + 1]
        row = self._rows.get(token_id)
        if row is None:
            row = np.zeros((1, self._width), self._dtype)
            row[0, token_id] = 1
            row.flags.writeable = False
            self._rows[token_id] = row
        return row

    def _token_id(self, item):
        if type(item) is str:       # the common case first: one dict lookup
            return self._stoi.get(item.casefold() if self._lower else item, UNK)
        if is_int(item):
            if not 0 <= item < len(self._vocab):
                raise ValueError(f"item must be a token or a token id in "
                                 f"0..{len(self._vocab) - 1}, got {item}")
            return int(item)
        if not isinstance(item, str):
            raise TypeError(f"item must be one token (a str) for this model, got "
                            f"{type(item).__name__}")
        return self._stoi.get(item.casefold() if self._lower else item, UNK)

    def _numeric(self, item):
        array = np.asarray(item)
        if array.dtype.kind not in "fiu" or array.dtype == np.bool_:
            raise TypeError(f"item must hold numbers (one step's features), got dtype "
                            f"{array.dtype}")
        if array.size != self._width or array.ndim > 1:
            raise ValueError(f"item must be one step of {self._width} feature(s), "
                             f"got shape {array.shape}")
        row = np.ascontiguousarray(array.reshape(1, self._width), dtype=self._dtype)
        if not np.isfinite(row).all():
            raise ValueError("item contains NaN or infinite values")
        return row

    def _hidden(self, item):
        """The top layer's output (1, H) after ``item``."""
        return self._layers.step(self._features(item))

    def _pack_head(self):
        if self._head_version != self._head._weights_version:
            params = self._head._params
            self._kernel.pack_head(params["weight"], params.get("bias"))
            self._head_version = self._head._weights_version

    def _logits(self, hidden):
        """The head's output row for ``hidden`` (1, H), re-packed when changed."""
        self._pack_head()
        return self._kernel.apply_head(hidden)[0]

    def _head_step(self, item, softmax=False):
        """The head on this step's top-layer output, one compiled call: the
        logits row, or with ``softmax`` the float64 probabilities."""
        self._pack_head()
        return self._layers.step_head(self._features(item), softmax)[0]

    # -- public ---------------------------------------------------------------------
    def reset(self):
        """Start a new sequence (zero state)."""
        self._layers.reset()

    @property
    def state(self):
        """The recurrent stack's state, as ``Stream.state`` (a copy)."""
        return self._layers.state

    def __repr__(self):
        return f"{type(self).__name__}({type(self._model).__name__})"


def _softmax(logits):
    """Probabilities in float64, as the models' ``predict_proba`` computes them
    (exp(z - max) / sum), in place in one new array."""
    z = logits.astype(np.float64)
    z -= z.max()
    np.exp(z, out=z)
    z /= z.sum()
    return z


class _Pooled:
    """Running "last" / "mean" / "max" pooling of the top layer's outputs, the
    same sums as :class:`fastrnn.tasks.pooling.Pooling` over the prefix."""

    def __init__(self, mode):
        self.mode = mode
        self.reset()

    def reset(self):
        self.count = 0
        self.acc = None

    def add(self, hidden):
        self.count += 1
        if self.mode == "last":
            return hidden
        if self.acc is None:
            self.acc = hidden.copy()
        elif self.mode == "mean":
            self.acc += hidden
        else:
            np.maximum(self.acc, hidden, out=self.acc)
        if self.mode == "max":
            return self.acc.copy()
        return self.acc * (1.0 / np.array([self.count])).astype(hidden.dtype)


class TaggerStream(_ModelStream):
    """``step(token)`` -> the tag of this token (unidirectional taggers)."""

    def step(self, item):
        return self._model.classes_[int(self._head_step(item).argmax())]

    def step_proba(self, item):
        """Tag probabilities for this token, float64 (n_tags,)."""
        return self._head_step(item, softmax=True)


class ClassifierStream(_ModelStream):
    """``step(item)`` -> class probabilities (float64, ``classes_`` order) of
    the sequence so far, pooled as the model pools."""

    def __init__(self, model):
        super().__init__(model)
        self._pool = _Pooled(model.pool_.mode)

    def reset(self):
        super().reset()
        self._pool.reset()

    def step(self, item):
        if self._pool.mode == "last" and not self._model._sigmoid:
            return self._head_step(item, softmax=True)
        logits = self._logits(self._pool.add(self._hidden(item)))
        if self._model._sigmoid:
            z = np.float64(logits[0])
            return np.exp(-np.logaddexp(0.0, np.array([z, -z])))
        return _softmax(logits)


class RegressorStream(_ModelStream):
    """``step(features)`` -> this step's value (per_step=True), or the value of
    the sequence so far (per_step=False, pooled as the model pools): float64,
    a scalar or (K,) as ``predict`` gives."""

    def __init__(self, model):
        super().__init__(model)
        self._pool = None if model._per_step else _Pooled(model.pool_.mode)

    def reset(self):
        super().reset()
        if self._pool is not None:
            self._pool.reset()

    def step(self, item):
        if self._pool is None:
            value = self._head_step(item)
        else:
            value = self._logits(self._pool.add(self._hidden(item)))
        value = value.astype(np.float64)
        return value if self._model.target_is_vector_ else value[0]


class LanguageModelStream(_ModelStream):
    """``step(token)`` -> next-token probabilities, float64 (vocabulary size,),
    after reading ``token`` (a str of the model's level, or a token id)."""

    def __init__(self, model):
        super().__init__(model, vocab=model.vocab_)
        self._lower = False     # the vocabulary's tokenizer already casefolded

    def logits(self, item):
        """The raw next-token logits (the model's dtype) after ``item``."""
        return self._head_step(item)

    def step(self, item):
        return self._head_step(item, softmax=True)
