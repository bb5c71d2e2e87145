"""Text to ids and back: tokenizers, a vocabulary, one-hot encoding.

    import fastrnn as fr
    from fastrnn import text
    vocab = text.Vocab.build(["The cat sat.", "The dog sat!"],
                             tokenizer=text.get_tokenizer("word", lower=True))
    ids = vocab.encode("The cat ran.", add_bos=True, add_eos=True)  # np.int64
    vocab.decode_text(ids)                                          # 'the cat <unk>.'

Every vocabulary starts with the same four special tokens at fixed ids, so a
model's padding and start/end handling never depends on the data:

    ======  =========  ==================================================
    id      token      meaning
    ======  =========  ==================================================
    0       ``<pad>``  padding; losses and masks ignore it (``PAD``)
    1       ``<unk>``  any token not in the vocabulary (``UNK``)
    2       ``<bos>``  beginning of a sequence (``BOS``)
    3       ``<eos>``  end of a sequence (``EOS``)
    ======  =========  ==================================================

Vocabularies are saved as JSON (no pickle: loading never runs code); writes are
atomic, so a crash mid-save leaves the previous file intact.
"""

import itertools
import json
import os
import re
import unicodedata
from collections import Counter

import numpy as np

from ._io import atomic_write, parse_json, read_limited
from ._validation import (Boolean, Integer, Optional, Options, is_int, positive_int,
                          resolve_dtype, to_numpy)

# A surrogate code point on its own (not valid in UTF-8): escaped when saving.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")

__all__ = ["PAD", "UNK", "BOS", "EOS", "PAD_TOKEN", "UNK_TOKEN", "BOS_TOKEN", "EOS_TOKEN",
           "SPECIAL_TOKENS", "Tokenizer", "CharTokenizer", "WordTokenizer", "get_tokenizer",
           "Vocab", "one_hot"]

PAD, UNK, BOS, EOS = 0, 1, 2, 3
PAD_TOKEN, UNK_TOKEN, BOS_TOKEN, EOS_TOKEN = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIAL_TOKENS = (PAD_TOKEN, UNK_TOKEN, BOS_TOKEN, EOS_TOKEN)   # index == id

#: Version of the JSON layout written by ``Vocab.to_dict``; readers refuse newer ones.
FORMAT_VERSION = 1
_FORMAT_NAME = "fastrnn.vocab"


def _describe(value):
    """A short description of a value for error messages."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _check_text(name, text):
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a str, got {_describe(text)}")


def _check_token_list(name, tokens):
    """``tokens`` as a list of non-empty str; a bare str is refused (it would
    silently iterate as characters)."""
    if isinstance(tokens, str):
        raise TypeError(f"{name} must be a list of token strings, got a single str "
                        f"{tokens[:40]!r}; tokenize it first or wrap it in a list")
    if isinstance(tokens, np.ndarray):
        tokens = tokens.tolist()
    try:
        tokens = list(tokens)
    except TypeError:
        raise TypeError(f"{name} must be a list of token strings, "
                        f"got {_describe(tokens)}") from None
    for i, token in enumerate(tokens):
        if not isinstance(token, str):
            raise TypeError(f"{name} must contain only str tokens, got "
                            f"{_describe(token)} at position {i}")
    return tokens


# --------------------------------------------------------------------------- tokenizers

class Tokenizer:
    """Base of the built-in tokenizers: ``tokenize(text) -> list[str]`` and
    ``detokenize(tokens) -> str``.

    ``name`` and ``lower`` identify the tokenizer in a saved vocabulary or
    model config (``to_dict()``; rebuilt by ``get_tokenizer(dict)``).
    ``lower=True`` applies ``str.casefold`` (Unicode case folding: "Straße"
    becomes "strasse") before splitting; that cannot be undone by detokenize.
    """

    name = None

    def __init__(self, lower=False):
        self.lower = Boolean()("lower", lower)

    def tokenize(self, text):
        """The tokens of ``text`` (a str) as a list of str."""
        raise NotImplementedError

    def detokenize(self, tokens):
        """A str from a list of tokens (see each tokenizer for the join rule)."""
        raise NotImplementedError

    def __call__(self, text):
        return self.tokenize(text)

    def to_dict(self):
        """JSON-able description, the inverse of ``get_tokenizer(dict)``."""
        return {"name": self.name, "lower": self.lower}

    def __eq__(self, other):
        return type(self) is type(other) and self.lower == other.lower

    def __hash__(self):
        return hash((type(self), self.lower))

    def __repr__(self):
        return f"{type(self).__name__}(lower={self.lower})"


class CharTokenizer(Tokenizer):
    """Every Unicode code point is a token; whitespace included.

    ``detokenize`` joins with "", so ``detokenize(tokenize(s)) == s`` exactly
    (with ``lower=False``).  A letter with a combining accent written as two
    code points ("e" + U+0301) gives two tokens; normalize to NFC first
    (``unicodedata.normalize("NFC", s)``) if the corpus mixes forms.

    Args:
        lower: casefold the text before splitting (default False).
    """

    name = "char"

    def tokenize(self, text):
        _check_text("text", text)
        return list(text.casefold() if self.lower else text)

    def detokenize(self, tokens):
        return "".join(_check_token_list("tokens", tokens))


def _ranges_class(codepoints):
    """A regex character-class body (no brackets) covering sorted code points."""
    parts = []
    start = prev = None
    for cp in codepoints:
        if prev is not None and cp == prev + 1:
            prev = cp
            continue
        if start is not None:
            parts.append((start, prev))
        start = prev = cp
    if start is not None:
        parts.append((start, prev))
    return "".join(f"\\U{a:08x}" if a == b else f"\\U{a:08x}-\\U{b:08x}" for a, b in parts)


def _mark_codepoints():
    """Combining marks (categories Mn, Mc, Me): Python's ``\\w`` excludes them,
    so without them "हिन्दी" or a decomposed "é" would be cut apart.  Planes
    0-1 and 14 hold every mark in the Unicode database (the CJK planes have
    none); a test checks this against a full scan."""
    spans = (range(0x0, 0x20000), range(0xE0000, 0xE1000))
    return [cp for span in spans for cp in span if unicodedata.category(chr(cp))[0] == "M"]


_WORD_RE = None


def _word_regex():
    """Compiled once, on first use (the mark scan takes ~15 ms)."""
    global _WORD_RE
    if _WORD_RE is None:
        import re
        # Word characters: \w (letters, digits, underscore in any script), the
        # combining marks, and ZWNJ/ZWJ (inside Persian and Indic words).
        word = "[\\w" + _ranges_class(_mark_codepoints()) + "\\u200c\\u200d]"
        apostrophe = "['\u2019]"
        invisible = "\\u200b\\u2060\\ufeff"          # zero-width separators: dropped
        symbol = f"[^\\w\\s{invisible}]"
        pattern = (
            f"{word}+(?:{apostrophe}{word}+)*"               # don't, rock'n'roll, l'été
            "|[\\U0001F1E6-\\U0001F1FF]{2}"                  # a flag: two regional indicators
            f"|{symbol}(?:[\\U0001F3FB-\\U0001F3FF\\ufe0f]|\\u200d{symbol})*"
            # one punctuation mark or symbol, with an emoji's skin tone,
            # variation selector or ZWJ sequence kept on it
        )
        _WORD_RE = re.compile(pattern)
    return _WORD_RE


# Readable join rules for WordTokenizer.detokenize (by Unicode category).
_NEUTRAL_PO = frozenset("\"'#&*@/\\§¶†‡")                   # spaced on both sides
_OPENING_PO = frozenset("¿¡")                                 # attach to the next token
_CJK_PO = frozenset("。、，！？：；．")                        # no space after them either
_HYPHENS = frozenset("-\u2010\u2011")                          # join both sides: well-known
_NUMBER_JOINERS = frozenset(".:")        # 3.14, 10:30 (not ",": "1, 2, 3" is the commoner)


def _no_space_before(token):
    if len(token) != 1:
        return False
    category = unicodedata.category(token)
    return (category in ("Pe", "Pf")
            or (category == "Po" and token not in _NEUTRAL_PO and token not in _OPENING_PO))


def _no_space_after(token):
    if len(token) != 1:
        return False
    return unicodedata.category(token) in ("Ps", "Pi") or token in _OPENING_PO or token in _CJK_PO


class WordTokenizer(Tokenizer):
    """Words and punctuation, in any script.

    A word is a run of letters, digits, underscores and combining marks
    (Python's Unicode ``\\w`` plus marks), with apostrophes (' or ’) allowed
    *inside* it: "don't", "l'été" and "rock'n'roll" are one token each, a
    quote around a word is its own token.  Every other non-space character
    (punctuation, symbols, emoji) is a token by itself, so "state-of-the-art"
    gives five tokens and "3.14" three.  Whitespace is dropped.  Scripts
    written without spaces (Chinese, Japanese) are split at punctuation
    only: use ``CharTokenizer`` for them.

    ``detokenize`` makes readable text, not the exact original: tokens are
    joined with single spaces, except no space before closing punctuation
    (``. , ! ? ; : % ) ] }`` and closing quotes), none after opening
    punctuation (``( [ { ¿ ¡`` and opening quotes) or CJK punctuation, none
    around a hyphen, and none around ``.`` or ``:`` between two numbers
    ("3.14", "10:30").  Tokenizing the result gives the same tokens back.

    Args:
        lower: casefold the text before splitting (default False).
    """

    name = "word"

    def tokenize(self, text):
        _check_text("text", text)
        if self.lower:
            text = text.casefold()
        return _word_regex().findall(text)

    def detokenize(self, tokens):
        tokens = _check_token_list("tokens", tokens)
        pieces = []
        before = prev = None
        for token in tokens:
            if prev is not None and not (
                    _no_space_before(token) or _no_space_after(prev)
                    or token in _HYPHENS or prev in _HYPHENS
                    or (prev in _NUMBER_JOINERS and before is not None
                        and before.isdecimal() and token.isdecimal())):
                pieces.append(" ")
            pieces.append(token)
            before, prev = prev, token
        return "".join(pieces)


_TOKENIZERS = {"char": CharTokenizer, "word": WordTokenizer}


def get_tokenizer(name, lower=False):
    """A built-in tokenizer by name.

    Args:
        name: "char" or "word"; or a dict from ``Tokenizer.to_dict()`` (then
            ``lower`` comes from the dict); or a ``Tokenizer``, returned as is.
        lower: casefold text before splitting.
    """
    if isinstance(name, Tokenizer):
        return name
    if isinstance(name, dict):
        missing = [key for key in ("name", "lower") if key not in name]
        if missing:
            raise ValueError(f"tokenizer config must have keys 'name' and 'lower', "
                             f"missing {missing} in {name!r}")
        name, lower = name["name"], name["lower"]
    Options(sorted(_TOKENIZERS))("tokenizer", name)
    return _TOKENIZERS[name](lower=lower)


def _resolve_tokenizer(tokenizer):
    """None, a name, a config dict, or an object with tokenize/detokenize."""
    if tokenizer is None or isinstance(tokenizer, Tokenizer):
        return tokenizer
    if isinstance(tokenizer, (str, dict)):
        return get_tokenizer(tokenizer)
    if callable(getattr(tokenizer, "tokenize", None)) and callable(
            getattr(tokenizer, "detokenize", None)):
        return tokenizer
    raise TypeError(f"tokenizer must be 'char', 'word', a Tokenizer or an object with "
                    f"tokenize() and detokenize(), got {_describe(tokenizer)}")


# --------------------------------------------------------------------------- corpus

def _peek_corpus(corpus, what):
    """``(holds_texts, items)`` for a corpus of texts or of token lists.

    The first item fixes the kind; ``items`` still yields it (generators are
    read once).
    """
    if isinstance(corpus, str):
        raise TypeError(f"{what} must be an iterable of texts or of token lists, got a "
                        f"single str {corpus[:40]!r}; wrap it in a list: [text]")
    try:
        items = iter(corpus)
    except TypeError:
        raise TypeError(f"{what} must be an iterable of texts or of token lists, "
                        f"got {_describe(corpus)}") from None
    for first in items:
        return isinstance(first, str), itertools.chain((first,), items)
    raise ValueError(f"{what} is empty: it must hold at least one text or token list")


def _token_lists(items, texts, tokenizer, what):
    """One list of tokens per corpus item; every item must be of the first's kind."""
    for i, item in enumerate(items):
        if isinstance(item, str):
            if not texts:
                raise TypeError(f"{what} mixes token lists and texts (item {i} is a str, "
                                f"the first item was a token list)")
            yield tokenizer.tokenize(item)
        elif isinstance(item, (list, tuple, np.ndarray)):
            if texts:
                raise TypeError(f"{what} mixes texts and token lists (item {i} is a "
                                f"{type(item).__name__}, the first item was a str)")
            yield _check_token_list(f"{what}[{i}]", item)
        else:
            raise TypeError(f"{what} items must be texts (str) or token lists, got "
                            f"{_describe(item)} at position {i}")


# --------------------------------------------------------------------------- vocabulary

def _int_id(name, value):
    if not is_int(value):
        raise TypeError(f"{name} must be an int token id, got {_describe(value)}")
    return int(value)


def _check_limits(min_freq, max_size):
    """Vocabulary limits: min_freq an int >= 1, max_size None or an int >= 0."""
    Integer(low=1)("min_freq", min_freq)
    Optional(Integer(low=0))("max_size", max_size)


class Vocab:
    """A fixed token <-> id mapping with the specials at ids 0-3.

    ``Vocab(tokens)`` takes the non-special tokens in id order (the first gets
    id 4); ``Vocab.build(corpus)`` counts a corpus.  ``vocab[token]`` gives the
    id (``UNK`` for unknown tokens), ``vocab.lookup(id)`` the token.

    Args:
        tokens: the non-special tokens, in id order; no duplicates, no specials.
        counts: optional ``{token: corpus count}`` (kept by ``build``).
        tokenizer: optional tokenizer ("char", "word", a Tokenizer, or an
            object with tokenize/detokenize) used when ``encode`` gets a str.
    """

    pad_id, unk_id, bos_id, eos_id = PAD, UNK, BOS, EOS

    def __init__(self, tokens=(), counts=None, tokenizer=None):
        tokens = _check_token_list("tokens", tokens)
        index = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
        for position, token in enumerate(tokens):
            if token == "":
                raise ValueError(f"tokens must be non-empty strings, got '' at position "
                                 f"{position}")
            if token in index:
                if index[token] < len(SPECIAL_TOKENS):
                    raise ValueError(
                        f"tokens must not contain the special token {token!r} (position "
                        f"{position}): specials are always at ids 0-3; list only the others")
                raise ValueError(f"tokens must be unique, got {token!r} at positions "
                                 f"{index[token] - len(SPECIAL_TOKENS)} and {position}")
            index[token] = position + len(SPECIAL_TOKENS)
        self._itos = list(SPECIAL_TOKENS) + tokens
        self._stoi = index
        self._counts = self._check_counts(counts)
        self.tokenizer = tokenizer

    @property
    def tokenizer(self):
        """The tokenizer ``encode(str)`` and ``decode_text`` use (None: tokens only)."""
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, tokenizer):
        self._tokenizer = _resolve_tokenizer(tokenizer)

    def _check_counts(self, counts):
        if counts is None:
            return {}
        if not isinstance(counts, dict):
            raise TypeError(f"counts must be a dict {{token: count}}, got {_describe(counts)}")
        checked = {}
        for token, count in counts.items():
            if token not in self._stoi:
                raise ValueError(f"counts has token {token!r} which is not in the vocabulary")
            if not is_int(count) or count < 0:
                raise ValueError(f"counts must be non-negative ints, got {_describe(count)} "
                                 f"for token {token!r}")
            checked[token] = int(count)
        return checked

    # ------------------------------------------------------------ building

    @classmethod
    def build(cls, corpus, tokenizer=None, min_freq=1, max_size=None):
        """Count a corpus and keep its frequent tokens.

        Tokens are ordered by count, most frequent first; equal counts keep
        the order of first appearance, so the same corpus always gives the
        same ids.  Special tokens found in token lists are not counted (they
        already have their ids).

        Args:
            corpus: an iterable of texts, split with ``tokenizer``, or of token
                lists (lists/tuples of str), used as they are.
            tokenizer: "char", "word", a Tokenizer or None.  None means
                ``WordTokenizer()`` for texts and no tokenizer for token lists.
                It is recorded in the vocabulary (and its saved file) so
                ``encode(str)`` and ``decode_text`` split and join the same way.
            min_freq: keep tokens seen at least this often (int >= 1).
            max_size: keep at most this many non-special tokens (None: all).
        """
        _check_limits(min_freq, max_size)
        counter, resolved = cls.count(corpus, tokenizer)
        return cls.from_counts(counter, resolved, min_freq, max_size)

    @staticmethod
    def count(corpus, tokenizer=None):
        """``(counts, tokenizer)``: the token counts of ``corpus`` (a dict in
        order of first appearance) and the tokenizer ``build`` records; the
        arguments as in :meth:`build`."""
        resolved = _resolve_tokenizer(tokenizer)
        texts, items = _peek_corpus(corpus, "corpus")
        if texts and resolved is None:
            resolved = WordTokenizer()
        counter = Counter()
        for tokens in _token_lists(items, texts, resolved, "corpus"):
            counter.update(tokens)
        return dict(counter), resolved

    @classmethod
    def from_counts(cls, counts, tokenizer=None, min_freq=1, max_size=None):
        """The vocabulary :meth:`build` makes from ``counts`` (``{token:
        count}``, in order of first appearance: it breaks ties), e.g. the
        summed counts of several parts of a corpus."""
        _check_limits(min_freq, max_size)
        counter = Counter(counts)
        if not counter:
            raise ValueError("corpus contains no tokens (every text or token list is empty)")
        if "" in counter:
            raise ValueError("corpus token lists must not contain empty strings ''")
        for special in SPECIAL_TOKENS:
            counter.pop(special, None)
        ordered = sorted(counter.items(), key=lambda item: -item[1])   # stable: ties keep order
        kept = [(token, count) for token, count in ordered if count >= min_freq]
        if max_size is not None:
            kept = kept[:int(max_size)]
        return cls([token for token, _ in kept], counts=dict(kept), tokenizer=tokenizer)

    # ------------------------------------------------------------ mapping

    def __len__(self):
        return len(self._itos)

    def __contains__(self, token):
        return isinstance(token, str) and token in self._stoi

    def __getitem__(self, token):
        """The id of ``token``; ``UNK`` (1) if it is not in the vocabulary."""
        if not isinstance(token, str):
            raise TypeError(f"vocab[...] takes a token str, got {_describe(token)}; "
                            f"use vocab.lookup(id) for id -> token")
        return self._stoi.get(token, UNK)

    @property
    def tokens(self):
        """All tokens in id order, specials first (a copy)."""
        return list(self._itos)

    @property
    def counts(self):
        """``{token: corpus count}`` for the counted tokens (a copy)."""
        return dict(self._counts)

    def freq(self, token):
        """Corpus count of ``token`` when the vocabulary was built (0 if unknown)."""
        return self._counts.get(token, 0)

    def lookup(self, index):
        """The token with id ``index`` (0 <= index < len(vocab))."""
        index = _int_id("index", index)
        if not 0 <= index < len(self._itos):
            raise ValueError(f"index must be a token id in 0..{len(self._itos) - 1}, "
                             f"got {index}")
        return self._itos[index]

    # ------------------------------------------------------------ encode / decode

    def _to_tokens(self, tokens_or_text, name):
        if isinstance(tokens_or_text, str):
            if self.tokenizer is None:
                raise TypeError(
                    f"{name} is a str but this vocabulary has no tokenizer (it was built "
                    f"from token lists); pass a list of tokens, or build/create the "
                    f"vocabulary with tokenizer='word' or 'char'")
            return self.tokenizer.tokenize(tokens_or_text)
        return _check_token_list(name, tokens_or_text)

    def encode(self, tokens_or_text, add_bos=False, add_eos=False):
        """Ids of a token list (or of a text, split with the vocabulary's
        tokenizer) as a 1-D ``np.int64`` array; unknown tokens become ``UNK``.

        Args:
            tokens_or_text: list of str tokens, or a str if there is a tokenizer.
            add_bos: prepend ``BOS``.
            add_eos: append ``EOS``.
        """
        tokens = self._to_tokens(tokens_or_text, "tokens_or_text")
        get = self._stoi.get
        ids = [get(token, UNK) for token in tokens]
        if add_bos:
            ids.insert(0, BOS)
        if add_eos:
            ids.append(EOS)
        return np.array(ids, dtype=np.int64)

    def encode_batch(self, batch, add_bos=False, add_eos=False):
        """``encode`` for each text or token list; a list of 1-D int64 arrays
        (lengths differ: padding is the batching code's job)."""
        if isinstance(batch, str):
            raise TypeError(f"batch must be a list of texts or token lists, got a single "
                            f"str {batch[:40]!r}; use encode() or wrap it in a list")
        try:
            items = list(batch)
        except TypeError:
            raise TypeError(f"batch must be a list of texts or token lists, "
                            f"got {_describe(batch)}") from None
        return [self.encode(item, add_bos=add_bos, add_eos=add_eos) for item in items]

    def _check_ids(self, ids):
        array = to_numpy(ids)
        if array.size == 0 and array.ndim == 1:
            return array.astype(np.int64)
        if array.dtype.kind not in "iu":
            raise TypeError(f"ids must be integer token ids, got dtype {array.dtype}")
        if array.ndim != 1:
            raise ValueError(f"ids must be 1-D (one sequence), got shape {array.shape}; "
                             f"use decode_batch for several sequences")
        low, high = array.min(), array.max()
        if low < 0 or high >= len(self._itos):
            raise ValueError(f"ids must lie in 0..{len(self._itos) - 1} (the vocabulary "
                             f"size is {len(self._itos)}), got values from {low} to {high}")
        return array

    def decode(self, ids, skip_specials=True, stop_at_eos=False):
        """Tokens of a 1-D sequence of ids.

        Args:
            ids: 1-D ints in ``0..len(vocab)-1`` (list, array or tensor).
            skip_specials: drop ``<pad>``, ``<bos>`` and ``<eos>``.  ``<unk>``
                is kept: it stands for a real word that the vocabulary lacks.
            stop_at_eos: cut the sequence at the first ``EOS`` (generated text).
        """
        array = self._check_ids(ids)
        if stop_at_eos:
            hits = np.flatnonzero(array == EOS)
            if hits.size:
                array = array[:hits[0]]
        itos = self._itos
        if skip_specials:
            return [itos[i] for i in array.tolist() if i > EOS or i == UNK]
        return [itos[i] for i in array.tolist()]

    def decode_batch(self, batch, skip_specials=True, stop_at_eos=False):
        """``decode`` for each row of a 2-D array or each sequence of a list."""
        array = to_numpy(batch) if not isinstance(batch, (list, tuple)) else None
        if array is not None:
            if array.ndim != 2:
                raise ValueError(f"batch must be 2-D (sequences x ids) or a list of "
                                 f"sequences, got shape {array.shape}")
            batch = list(array)
        return [self.decode(row, skip_specials=skip_specials, stop_at_eos=stop_at_eos)
                for row in batch]

    def decode_text(self, ids, skip_specials=True, stop_at_eos=False):
        """``decode`` then join with the tokenizer's ``detokenize``."""
        if self.tokenizer is None:
            raise TypeError("decode_text needs a tokenizer to join tokens, but this "
                            "vocabulary has none; use decode() and join the tokens yourself")
        return self.tokenizer.detokenize(
            self.decode(ids, skip_specials=skip_specials, stop_at_eos=stop_at_eos))

    def unk_rate(self, corpus):
        """Fraction of a corpus' tokens that map to ``<unk>`` (0.0 = full coverage).

        ``corpus`` is like in ``build``: texts (split with the vocabulary's
        tokenizer) or token lists.  Useful to choose ``min_freq``/``max_size``
        and to check a vocabulary against held-out data.
        """
        texts, items = _peek_corpus(corpus, "corpus")
        if texts and self.tokenizer is None:
            raise TypeError("corpus holds texts but this vocabulary has no tokenizer to "
                            "split them; pass token lists")
        total = unknown = 0
        stoi = self._stoi
        for tokens in _token_lists(items, texts, self.tokenizer, "corpus"):
            total += len(tokens)
            unknown += sum(1 for token in tokens if token not in stoi)
        if total == 0:
            raise ValueError("corpus contains no tokens (every text or token list is empty)")
        return unknown / total

    # ------------------------------------------------------------ persistence

    def to_dict(self):
        """A JSON-able dict: format version, all tokens in id order (specials
        first), counts and tokenizer ({"name", "lower"} or None)."""
        tokenizer = self.tokenizer
        if tokenizer is not None and not isinstance(tokenizer, (CharTokenizer, WordTokenizer)):
            raise ValueError(
                f"cannot save a vocabulary with a custom tokenizer "
                f"({type(tokenizer).__name__}): only 'char' and 'word' are recorded; set "
                f"vocab.tokenizer = None before saving and pass your tokenizer again "
                f"after loading")
        return {
            "format": _FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "tokens": list(self._itos),
            "counts": dict(self._counts),
            "tokenizer": tokenizer.to_dict() if tokenizer is not None else None,
        }

    @classmethod
    def from_dict(cls, data):
        """Rebuild a vocabulary from ``to_dict()`` output (validated)."""
        if not isinstance(data, dict):
            raise ValueError(f"vocabulary data must be a dict, got {type(data).__name__}")
        if data.get("format", _FORMAT_NAME) != _FORMAT_NAME:
            raise ValueError(f"not a fastrnn vocabulary: format is {data.get('format')!r}, "
                             f"expected {_FORMAT_NAME!r}")
        missing = [key for key in ("format_version", "tokens", "counts", "tokenizer")
                   if key not in data]
        if missing:
            raise ValueError(f"vocabulary data is missing the key(s) {missing}")
        version = data["format_version"]
        Integer(low=1)("vocabulary format_version", version)
        if version > FORMAT_VERSION:
            raise ValueError(f"vocabulary format_version {version} is newer than this "
                             f"fastrnn supports ({FORMAT_VERSION}); upgrade fastrnn to load it")
        tokens = data["tokens"]
        if not isinstance(tokens, list):
            raise ValueError(f"vocabulary 'tokens' must be a list, got "
                             f"{type(tokens).__name__}")
        if tuple(tokens[:len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"vocabulary 'tokens' must start with the specials "
                             f"{list(SPECIAL_TOKENS)}, got {tokens[:len(SPECIAL_TOKENS)]}")
        counts = data["counts"]
        if counts is not None and not isinstance(counts, dict):
            raise ValueError(f"vocabulary 'counts' must be a dict, got {type(counts).__name__}")
        tokenizer = data["tokenizer"]
        if tokenizer is not None:
            if not isinstance(tokenizer, dict):
                raise ValueError(f"vocabulary 'tokenizer' must be a dict or null, "
                                 f"got {type(tokenizer).__name__}")
            tokenizer = get_tokenizer(tokenizer)
        return cls(tokens[len(SPECIAL_TOKENS):], counts=counts, tokenizer=tokenizer)

    def save(self, path):
        """Write the vocabulary as UTF-8 JSON, atomically: the data goes to a
        temporary file in the same directory, is flushed to disk, then renamed
        over ``path``, so ``path`` holds either the old or the new vocabulary,
        never half a file.  Returns ``path``.

        Tokens with lone surrogates (from undecodable bytes) are written as
        JSON ``\\udXXX`` escapes, as ``model.save`` does, and load back equal.
        """
        text = json.dumps(self.to_dict(), ensure_ascii=False, indent=1)
        text = _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
        atomic_write(path, lambda stream: stream.write(text.encode("utf-8")))
        return path

    @classmethod
    def load(cls, path):
        """Read a vocabulary written by ``save``.

        The file must be a regular file within the ``max_json_bytes`` and
        ``max_json_depth`` limits (``fastrnn.set_load_limits``); every error
        names it.
        """
        where = f"vocabulary file {os.fspath(path)!r}"
        data = parse_json(read_limited(path, "vocabulary file", "max_json_bytes"), where)
        try:
            return cls.from_dict(data)
        except (ValueError, TypeError) as error:
            raise type(error)(f"{where}: {error}") from None

    # ------------------------------------------------------------ misc

    def __eq__(self, other):
        if not isinstance(other, Vocab):
            return NotImplemented
        return (self._itos == other._itos and self._counts == other._counts
                and self.tokenizer == other.tokenizer)

    __hash__ = None

    def __repr__(self):
        shown = ", ".join(repr(t) for t in self._itos[len(SPECIAL_TOKENS):][:5])
        more = ", ..." if len(self._itos) > len(SPECIAL_TOKENS) + 5 else ""
        return (f"Vocab(size={len(self)}, tokens=[{shown}{more}], "
                f"tokenizer={self.tokenizer!r})")


def one_hot(ids, num_classes, dtype="float32"):
    """One-hot vectors for integer ids: shape ``ids.shape + (num_classes,)``.

    For small vocabularies (characters) fed to a recurrent layer directly
    instead of through an embedding.

    Args:
        ids: integer array-like (any shape), every value in 0..num_classes-1.
        num_classes: vector length, usually ``len(vocab)``.
        dtype: "float32" (default) or "float64".
    """
    num_classes = positive_int("num_classes", num_classes)
    dtype = resolve_dtype(dtype)
    array = to_numpy(ids)
    if array.dtype.kind not in "iu":
        if array.size == 0 and array.dtype.kind == "f" and not isinstance(ids, np.ndarray):
            array = array.astype(np.int64)       # [] arrives as float64
        else:
            raise TypeError(f"ids must be integers, got dtype {array.dtype}")
    if array.size and (array.min() < 0 or array.max() >= num_classes):
        raise ValueError(f"ids must lie in 0..{num_classes - 1} (num_classes={num_classes}), "
                         f"got values from {array.min()} to {array.max()}")
    out = np.zeros(array.shape + (int(num_classes),), dtype=dtype)
    flat = out.reshape(-1, int(num_classes))
    flat[np.arange(flat.shape[0]), array.reshape(-1)] = 1
    return out
