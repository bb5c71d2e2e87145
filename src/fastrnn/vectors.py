"""Reading pretrained word vectors from GloVe / word2vec text files.

Used by ``fr.Embedding.from_pretrained``.  The file is streamed line by
line (each line at most the ``max_line_bytes`` limit of
``fastrnn.set_load_limits``), only lines whose word is in the vocabulary are
parsed, and a word2vec header ``count dim`` is checked against the file's
size before the (vocab, dim) table is allocated: a header claiming a
billion dimensions in a small file is an error, not a MemoryError.
"""

import collections.abc
import os
import warnings

import numpy as np

from ._io import get_load_limits, open_regular
from ._validation import check_finite, is_int, to_numpy

__all__ = ["read_text_vectors", "read_vectors_for_vocab", "vocab_tokens", "pretrained_array"]

_BOM = b"\xef\xbb\xbf"


class _Reader:
    """State of one pass over a vectors file: the vocab index, the table."""

    def __init__(self, path, tokens):
        self.path = path
        self.tokens = tokens
        self.index = {token.encode("utf-8"): i for i, token in enumerate(tokens)}
        # tokens with spaces: their first word is what a line starts with
        self.spaced = {key.split(b" ", 1)[0] for key in self.index if b" " in key}
        self.found = np.zeros(len(tokens), dtype=bool)
        self.weight = None
        self.dim = None

    def fail(self, lineno, message):
        raise ValueError(f"vectors file {self.path!r}, line {lineno}: {message}")

    def start(self, lineno, line, file_size):
        """Read the dimension from the first non-blank line (a word2vec header
        or the first vector); returns True when the line was a header."""
        fields = line.split()
        if len(fields) == 2 and _is_int(fields[0]) and _is_int(fields[1]):
            count, dim = int(fields[0]), int(fields[1])     # word2vec "count dim"
            if dim < 1 or count < 0:
                self.fail(lineno, f"word2vec header gives dimension {dim} and count "
                                  f"{count}; expected >= 1 and >= 0")
            # every value takes at least 2 bytes ("0 "): the file must hold them
            if 2 * dim > file_size or 2 * dim * count > file_size:
                self.fail(lineno, f"word2vec header declares {count} vectors of {dim} "
                                  f"values, more than the file's {file_size} bytes can "
                                  f"hold (a damaged or wrong header)")
            self._allocate(dim)
            return True
        if len(fields) < 2:
            self.fail(lineno, "expected a word followed by its vector values, got one field")
        self._allocate(len(fields) - 1)
        return False

    def _allocate(self, dim):
        self.dim = dim
        self.weight = np.zeros((len(self.tokens), dim))

    def take(self, lineno, line):
        """Keep the vector on ``line`` if its word is a vocab word not seen yet."""
        space = line.find(b" ")
        parts = None
        if space <= 0:    # blank, a word with no values, or a leading space
            stripped = line.strip()
            if not stripped:
                return
            parts = stripped.rsplit(None, self.dim)
            word = parts[0]
        else:
            word = line[:space]
            if word not in self.index:
                if word not in self.spaced:
                    return
                parts = line.rsplit(None, self.dim)
                word = parts[0]
        i = self.index.get(word)
        if i is None or self.found[i]:
            return    # not a vocab word, or a duplicate (first line wins)
        fields = line[space + 1:].split() if parts is None else parts[1:]
        self.weight[i] = self.parse(lineno, self.tokens[i], fields)
        self.found[i] = True

    def parse(self, lineno, word, fields):
        if len(fields) != self.dim:
            self.fail(lineno, f"expected {self.dim} values after the word {word!r}, got "
                              f"{len(fields)} (inconsistent dimensions)")
        try:
            values = np.array(fields, dtype=np.float64)
        except ValueError:
            bad = next(f for f in fields if not _is_float(f))
            self.fail(lineno, f"value {bad.decode('utf-8', 'replace')!r} for the word "
                              f"{word!r} is not a number")
        if not np.isfinite(values).all():
            self.fail(lineno, f"the vector of {word!r} contains NaN or infinite values")
        return values


def _lines(path, handle):
    """(line number, bytes) of every line, each at most max_line_bytes."""
    limit = get_load_limits()["max_line_bytes"]
    lineno = 0
    while True:
        line = handle.readline(limit + 1)
        if not line:
            return
        lineno += 1
        if len(line) > limit and not (len(line) == limit + 1 and line.endswith(b"\n")):
            raise ValueError(f"vectors file {path!r}, line {lineno}: longer than the "
                             f"max_line_bytes limit of {limit} bytes (raise it with "
                             f"fastrnn.set_load_limits if the file is right)")
        if lineno == 1 and line.startswith(_BOM):
            line = line[len(_BOM):]
        yield lineno, line


def read_text_vectors(path, tokens, padding_idx, seed):
    """Stream a GloVe / word2vec text file; keep the rows of vocab words.

    Returns (weight (V, D) float64, ids missing from the file (padding
    excluded), std used for their random rows).  Words are matched as UTF-8
    bytes, so lines that are not needed are neither decoded nor parsed.
    Errors are ValueErrors naming the file (and the line).
    """
    path = os.fspath(path)
    reader = _Reader(path, tokens)
    with open_regular(path, "vectors file") as handle:
        file_size = os.fstat(handle.fileno()).st_size
        for lineno, line in _lines(path, handle):
            if reader.dim is None:
                if not line.strip() or reader.start(lineno, line, file_size):
                    continue    # blank lines before the first vector, or the header
            reader.take(lineno, line)
    return _finish(reader, padding_idx, seed)


def read_vectors_for_vocab(path, tokens, padding_idx, seed):
    """:func:`read_text_vectors`'s (V, D) table, with one UserWarning listing
    the vocab words the file lacks (they got random rows)."""
    weight, missing, std = read_text_vectors(path, tokens, padding_idx, seed)
    if missing:
        examples = ", ".join(repr(tokens[i]) for i in missing[:5])
        more = ", ..." if len(missing) > 5 else ""
        warnings.warn(
            f"{len(missing)} of {len(tokens)} vocab words are not in "
            f"{os.fspath(path)!r} and got random vectors (normal, std "
            f"{std:.4g}, seed {seed!r}): {examples}{more}",
            UserWarning, stacklevel=3)   # the caller of Embedding.from_pretrained
    return weight


def _finish(reader, padding_idx, seed):
    """Zero the padding row and draw random rows for missing words."""
    weight, found, path = reader.weight, reader.found, reader.path
    if weight is None:
        raise ValueError(f"vectors file {path!r} contains no vectors (the file is empty)")
    if not found.any():
        raise ValueError(f"none of the {len(found)} vocab words was found in {path!r} "
                         f"(vocab starts {reader.tokens[:5]!r}); check the file and the "
                         f"tokenization (case, special tokens)")
    std = float(weight[found].std())
    if padding_idx is not None:
        weight[padding_idx] = 0
        found[padding_idx] = True    # zero, not random
    missing = np.flatnonzero(~found)
    if missing.size:
        rng = np.random.default_rng(seed)
        weight[missing] = rng.normal(0.0, std, (missing.size, reader.dim))
    return weight, missing.tolist(), std


def _is_int(field):
    try:
        int(field)
    except ValueError:
        return False
    return True


def _is_float(field):
    try:
        float(field)
    except ValueError:
        return False
    return True


# -- what the vectors belong to: the vocabulary, or an array source -------------

def vocab_tokens(vocab, required_for=None):
    """The list of token strings in id order, from any accepted vocab form
    (see ``Embedding.from_pretrained``).  ``required_for``: the vectors file
    that needs the vocab (None: an array, where it is optional)."""
    if vocab is None and required_for is not None:
        raise ValueError("vocab is required when source is a file path: the "
                         "token of every id decides which vectors are read")
    if hasattr(vocab, "tokens"):
        tokens = vocab.tokens
        tokens = list(tokens() if callable(tokens) else tokens)
    elif isinstance(vocab, collections.abc.Mapping):
        ids = list(vocab.values())
        if not all(is_int(i) for i in ids):
            raise TypeError("vocab mapping must map tokens to int ids")
        if sorted(int(i) for i in ids) != list(range(len(ids))):
            raise ValueError(f"vocab mapping must use each id 0..{len(ids) - 1} exactly "
                             f"once, got ids from {min(ids, default=None)} to "
                             f"{max(ids, default=None)} for {len(ids)} tokens")
        tokens = [None] * len(ids)
        for token, i in vocab.items():
            tokens[int(i)] = token
    elif isinstance(vocab, (str, bytes)) or not isinstance(vocab, collections.abc.Iterable):
        raise TypeError(f"vocab must have a 'tokens' attribute, or be a sequence of "
                        f"tokens or a mapping token -> id, got {type(vocab).__name__}")
    else:
        tokens = list(vocab)
    if not tokens:
        raise ValueError("vocab must hold at least one token, got none")
    seen = {}
    for i, token in enumerate(tokens):
        if not isinstance(token, str):
            raise TypeError(f"vocab tokens must be str, got {type(token).__name__} "
                            f"{token!r} for id {i}")
        if token in seen:
            raise ValueError(f"vocab token {token!r} appears twice (ids {seen[token]} and {i})")
        seen[token] = i
    return tokens


def pretrained_array(source, vocab=None):
    """A (V, D) float64 copy of an array source, checked (and its row count
    against ``vocab``, when given)."""
    array = to_numpy(source)
    if array.dtype.kind != "f":
        raise TypeError(f"source must be a (V, D) float array or a file path, got an "
                        f"array of dtype {array.dtype}")
    if array.ndim != 2 or 0 in array.shape:
        raise ValueError(f"source must be a (V, D) array with V, D >= 1, got shape "
                         f"{array.shape}")
    check_finite("source", array)
    if vocab is not None:
        tokens = vocab_tokens(vocab)
        if len(tokens) != array.shape[0]:
            raise ValueError(f"vocab has {len(tokens)} tokens but source has "
                             f"{array.shape[0]} rows; they must be equal")
    return np.array(array, dtype=np.float64)
