"""Turning what users pass as ``X`` into the sequences a model runs on.

Three kinds of input, told apart by looking at the data once at ``fit``:

* ``"text"``: a list of strings, tokenized (characters or words) and mapped
  to ids through a vocabulary built from the training texts;
* ``"tokens"``: a list of token lists (already tokenized), vocabulary as above;
* ``"numeric"``: an array (N, T, F) or (N, T), or a list of (T_i, F) / (T_i,)
  arrays: feature vectors per step, no vocabulary.

Later calls (``predict``, validation data) must be of the same kind.
Any iterable works (generators are read once); numpy arrays of strings (a
pandas column's ``.values``) count as lists of texts or token lists.
"""


import numpy as np

from .._validation import Integer, Optional, check_float_range
from ..text import EOS, Vocab, get_tokenizer

KINDS = ("text", "tokens", "numeric")


def _is_token_list(item):
    return isinstance(item, (list, tuple)) and len(item) > 0 and all(
        isinstance(token, str) for token in item)


def _from_table(X):
    """A pandas Series or DataFrame (or anything else numpy can convert,
    ``__array__``) as numpy data: a one-column DataFrame is its column (a
    column of texts is a list of texts), a wider numeric one an (N, T) array."""
    columns = getattr(X, "columns", None)
    if columns is not None and hasattr(X, "iloc"):
        if len(columns) == 1:
            X = X.iloc[:, 0]
        elif any(getattr(X[column].dtype, "kind", "O") not in "iuf" for column in columns):
            raise TypeError(f"X is a DataFrame with {len(columns)} columns "
                            f"({', '.join(map(str, list(columns)[:5]))}); pass the one "
                            f"column of texts, e.g. X['text'] or X[['text']]")
    return np.asarray(X)


def as_sequences(X):
    """``X`` in a form that can be read more than once: a numeric array as it
    is, anything else iterable as a list, with arrays of strings (a whole
    ``X`` or one token list) turned into lists of str.  pandas Series and
    DataFrames go through numpy (see :func:`_from_table`).  Strings and
    non-iterables come back unchanged for :func:`detect_kind` to report."""
    if _is_sparse(X):       # before the dict test: a dok_matrix is a dict
        raise TypeError(f"X is a sparse {type(X).__name__}: sparse input is not "
                        f"supported; pass dense sequences (X.toarray())")
    if isinstance(X, (str, bytes, set, frozenset, dict)):
        return X
    if not isinstance(X, (np.ndarray, list, tuple)) and hasattr(X, "__array__"):
        X = _from_table(X)
    if isinstance(X, np.ndarray):
        return X.tolist() if X.dtype.kind in "UO" and X.ndim else X
    try:
        items = list(X)
    except TypeError:
        return X
    return [item.tolist() if isinstance(item, np.ndarray) and item.dtype.kind in "UO"
            and item.ndim == 1 else item for item in items]


def _is_sparse(X):
    """A scipy.sparse matrix or array (without importing scipy.sparse)."""
    return type(X).__module__.startswith("scipy.sparse") and hasattr(X, "toarray")


def check_nonempty(X, name="X", what="sequence"):
    """ValueError naming the first empty item of ``X`` (an empty text, token
    list or array): checked before the kind is guessed, which an empty first
    item would mislead.  ``what`` names an item ("sentence", "source", ...)."""
    if not isinstance(X, (list, tuple)):
        return
    for index, item in enumerate(X):
        if isinstance(item, np.ndarray):
            empty = item.ndim > 0 and item.size == 0
        else:
            empty = isinstance(item, (list, tuple, str)) and len(item) == 0
        if empty:
            raise ValueError(f"{name}[{index}] is an empty {what}: every {what} needs at "
                             f"least one token or step")


def detect_kind(X, name="X"):
    """The input kind of ``X`` (see module docstring); errors name ``name``."""
    X = as_sequences(X)
    if isinstance(X, (set, frozenset, dict)):
        raise TypeError(f"{name} must be an ordered collection of sequences (list, tuple, "
                        f"array or iterator), got a {type(X).__name__}: its order would not "
                        f"match the targets")
    if isinstance(X, str):
        raise TypeError(f"{name} must be a list of sequences (for one text, pass [text]), "
                        f"got a single string")
    if isinstance(X, np.ndarray):
        if X.dtype.kind == "c":
            raise ValueError(f"{name}: Complex data not supported (dtype {X.dtype})")
        if X.dtype.kind not in "fiu":
            raise TypeError(f"{name} must hold numbers when given as an array, got "
                            f"dtype {X.dtype}")
        if X.ndim not in (2, 3) or X.shape[0] == 0:
            hint = (f". Reshape your data: {name}.reshape(1, -1) is one sequence of "
                    f"{X.shape[0]} steps" if X.ndim == 1 and X.shape[0] else "")
            raise ValueError(f"{name} as an array must have shape (N, T) or (N, T, F) "
                             f"with N >= 1, got {X.shape}{hint}")
        if X.shape[1] == 0:
            raise ValueError(f"{name} has 0 feature(s) (shape={X.shape}) while a minimum "
                             f"of 1 is required: every sequence needs at least one step")
        return "numeric"
    try:
        items = list(X)
    except TypeError:
        raise TypeError(f"{name} must be a list of sequences, got "
                        f"{type(X).__name__}") from None
    if not items:
        raise ValueError(f"{name} is empty: need at least one sequence")
    first = items[0]
    if isinstance(first, str):
        kind = "text"
    elif _is_token_list(first):
        kind = "tokens"
    else:
        kind = "numeric"
    for index, item in enumerate(items):
        if kind == "text" and not isinstance(item, str):
            raise TypeError(f"{name}[{index}] must be a string like {name}[0], got "
                            f"{type(item).__name__}")
        if kind == "tokens" and not (isinstance(item, (list, tuple))
                                     and all(isinstance(t, str) for t in item)):
            raise TypeError(f"{name}[{index}] must be a list of token strings like "
                            f"{name}[0], got {type(item).__name__}")
    return kind


class InputEncoder:
    """Fitted mapping from user inputs to id or feature sequences.

    Args:
        tokenizer, lower: how texts are split ("word" or "char", casefolded
            or not); ignored for token lists and numbers.
        min_freq, max_vocab: vocabulary limits (int >= 1; max_vocab None
            for no limit); tokens outside them become ``<unk>``.
    """

    def __init__(self, tokenizer="word", lower=False, min_freq=1, max_vocab=None):
        self.tokenizer = tokenizer
        self.lower = lower
        self.min_freq = min_freq
        self.max_vocab = max_vocab
        self.kind = None
        self.vocab = None
        self.num_features = None

    # -- fitting ------------------------------------------------------------------
    def fit(self, X, name="X"):
        """Learn the kind of ``X`` and its vocabulary or feature count; returns self."""
        X = as_sequences(X)
        check_nonempty(X, name)
        self.kind = detect_kind(X, name)
        if self.kind == "numeric":
            sequences = self._numeric(X, name, num_features=None)
            self.num_features = sequences[0].shape[1]
        else:
            check_vocab_limits(self.min_freq, self.max_vocab)
            tokens = self._tokens(X, name)
            self.vocab = Vocab.build(tokens, min_freq=self.min_freq, max_size=self.max_vocab)
            check_vocab(self.vocab, name, self.min_freq, self.max_vocab)
        return self

    def counts(self, X, name="X"):
        """What one part of the data says for :meth:`fit_counts` (JSON-able):
        its kind, its feature count or its token counts in order of first
        appearance (distributed training on sharded data)."""
        X = as_sequences(X)
        check_nonempty(X, name)
        kind = detect_kind(X, name)
        part = {"kind": kind, "num_features": None, "counts": None}
        self.kind = kind
        if kind == "numeric":
            part["num_features"] = int(self._numeric(X, name, num_features=None)[0].shape[1])
        else:
            part["counts"] = list(Vocab.count(self._tokens(X, name))[0].items())
        return part

    def fit_counts(self, parts, name="X"):
        """Fit from the :meth:`counts` of the parts of the data, in order, as
        :meth:`fit` would on their concatenation; returns self."""
        kinds = [(part["kind"], part["num_features"]) for part in parts]
        if any(kind != kinds[0] for kind in kinds):
            raise ValueError(f"the parts of {name} hold different inputs (kind, features "
                             f"per step) on different ranks: {kinds}")
        self.kind, self.num_features = kinds[0]
        if self.kind != "numeric":
            check_vocab_limits(self.min_freq, self.max_vocab)
            counts = {}
            for part in parts:
                for token, count in part["counts"]:
                    counts[token] = counts.get(token, 0) + count
            self.vocab = Vocab.from_counts(counts, None, self.min_freq, self.max_vocab)
            check_vocab(self.vocab, name, self.min_freq, self.max_vocab)
        return self

    def fit_transform(self, X, name="X"):
        """``fit(X)`` then ``transform(X)``, reading an iterator ``X`` once."""
        X = as_sequences(X)
        return self.fit(X, name).transform(X, name)

    @property
    def size(self):
        """Input width: vocabulary size (ids) or features per step (numbers)."""
        return len(self.vocab) if self.vocab is not None else self.num_features

    def transform(self, X, name="X"):
        """A list of 1-D int64 id arrays, or of (T_i, F) float64 arrays; ``X``
        must be of the kind seen in fit (TypeError naming ``name`` otherwise)."""
        X = as_sequences(X)
        check_nonempty(X, name)
        kind = detect_kind(X, name)
        if kind != self.kind:
            raise TypeError(f"{name} holds {kind} inputs but the model was fitted on "
                            f"{self.kind} inputs")
        if kind == "numeric":
            return self._numeric(X, name, self.num_features)
        return [self.vocab.encode(tokens) for tokens in self._tokens(X, name)]

    # -- helpers ------------------------------------------------------------------
    def _tokens(self, X, name):
        if self.kind == "text":
            split = get_tokenizer(self.tokenizer, lower=self.lower).tokenize
            sequences = [split(text) for text in X]
        else:
            sequences = [list(tokens) for tokens in X]
        for index, tokens in enumerate(sequences):
            if not tokens:
                raise ValueError(f"{name}[{index}] is empty (no tokens); every sequence "
                                 f"needs at least one")
        return sequences

    # The model's float dtype (set by the task model): numbers beyond its range
    # are refused here, naming the caller's argument.
    dtype = None

    def _numeric(self, X, name, num_features):
        dtype = self.dtype
        sequences = []
        for index, item in enumerate(X):
            array = np.asarray(item)
            if array.dtype == object:   # numbers held as Python objects (pandas)
                try:
                    array = array.astype(np.float64)
                except (TypeError, ValueError) as exc:
                    raise TypeError(f"{name}[{index}] must hold numbers: {exc}") from None
            if array.dtype.kind == "c":
                raise ValueError(f"{name}[{index}]: Complex data not supported")
            if array.dtype.kind not in "fiu" or array.dtype == np.bool_:
                raise TypeError(f"{name}[{index}] must hold numbers, got dtype {array.dtype}")
            if array.ndim == 1:
                array = array[:, None]
            if array.ndim != 2 or array.shape[0] == 0:
                raise ValueError(f"{name}[{index}] must be a non-empty (T, F) or (T,) "
                                 f"sequence, got shape {array.shape}")
            if num_features is not None and array.shape[1] != num_features:
                raise ValueError(f"{name}[{index}] has {array.shape[1]} features per step; "
                                 f"the model expects {num_features}")
            if not np.isfinite(array).all():
                raise ValueError(f"{name}[{index}] contains NaN or infinite values")
            check_float_range(f"{name}[{index}]", array, dtype)
            num_features = array.shape[1]
            sequences.append(np.asarray(array, dtype=np.float64))
        return sequences

    # -- saving -------------------------------------------------------------------
    def to_dict(self):
        """JSON-able state; :meth:`from_dict` rebuilds the fitted encoder."""
        return {"kind": self.kind, "tokenizer": self.tokenizer, "lower": self.lower,
                "min_freq": self.min_freq, "max_vocab": self.max_vocab,
                "num_features": self.num_features,
                "vocab": None if self.vocab is None else self.vocab.to_dict()}

    @classmethod
    def from_dict(cls, data):
        """The encoder saved by :meth:`to_dict`."""
        encoder = cls(data["tokenizer"], data["lower"], data["min_freq"], data["max_vocab"])
        encoder.kind = data["kind"]
        encoder.num_features = data["num_features"]
        if data["vocab"] is not None:
            encoder.vocab = Vocab.from_dict(data["vocab"])
        return encoder


def check_vocab_limits(min_freq, max_vocab):
    """Vocabulary limits as the models name them (``Vocab.build`` says max_size)."""
    Integer(low=1)("min_freq", min_freq)
    Optional(Integer(low=1))("max_vocab", max_vocab)


def check_vocab(vocab, name, min_freq, max_vocab):
    """A vocabulary with nothing but the specials would read every input as
    ``<unk>``: refused, naming the limits that removed the tokens."""
    if len(vocab) <= EOS + 1:
        raise ValueError(f"the vocabulary of {name} has no tokens besides the specials: "
                         f"min_freq={min_freq!r} / max_vocab={max_vocab!r} removed them "
                         f"all")
    return vocab


