"""fr.text: tokenizers, Vocab, persistence, one_hot, bad input."""

import json
import os
import sys
import unicodedata

import numpy as np
import pytest

from fastrnn import text
from fastrnn.text import (BOS, EOS, PAD, UNK, CharTokenizer, Vocab, WordTokenizer,
                          get_tokenizer, one_hot)


# --------------------------------------------------------------------------- specials

def test_special_ids_and_tokens():
    assert (PAD, UNK, BOS, EOS) == (0, 1, 2, 3)
    assert (text.PAD_TOKEN, text.UNK_TOKEN, text.BOS_TOKEN, text.EOS_TOKEN) == \
        ("<pad>", "<unk>", "<bos>", "<eos>")
    for vocab in (Vocab(), Vocab(["a", "b"]), Vocab.build(["x y z"]),
                  Vocab.build([["q"]], max_size=0)):
        assert vocab.tokens[:4] == ["<pad>", "<unk>", "<bos>", "<eos>"]
        for i, token in enumerate(text.SPECIAL_TOKENS):
            assert vocab[token] == i and vocab.lookup(i) == token
    assert len(Vocab()) == 4
    assert (Vocab.pad_id, Vocab.unk_id, Vocab.bos_id, Vocab.eos_id) == (0, 1, 2, 3)


# --------------------------------------------------------------------------- tokenizers

def test_char_tokenizer_code_points():
    tok = CharTokenizer()
    s = "Héllo, 世界! e\u0301 👍"
    assert tok.tokenize(s) == [chr(ord(c)) for c in s]      # one token per code point
    assert tok.detokenize(tok.tokenize(s)) == s
    assert tok.tokenize("") == []
    assert CharTokenizer(lower=True).tokenize("AßÉ") == ["a", "s", "s", "é"]
    assert tok.name == "char" and tok(s) == tok.tokenize(s)


@pytest.mark.parametrize("source,expected", [
    ("Hello, world!", ["Hello", ",", "world", "!"]),
    ("Don't stop.", ["Don't", "stop", "."]),
    ("rock'n'roll it’s", ["rock'n'roll", "it’s"]),
    ("'quoted' word", ["'", "quoted", "'", "word"]),
    ("L'été à Paris", ["L'été", "à", "Paris"]),
    ("naïve café_au_lait x2", ["naïve", "café_au_lait", "x2"]),
    ("cafe\u0301 hi", ["cafe\u0301", "hi"]),                 # combining accent stays in word
    ("हिन्दी भाषा", ["हिन्दी", "भाषा"]),                      # vowel signs / virama (marks)
    ("你好，世界。", ["你好", "，", "世界", "。"]),
    ("state-of-the-art", ["state", "-", "of", "-", "the", "-", "art"]),
    ("a...b?!", ["a", ".", ".", ".", "b", "?", "!"]),
    ("  tabs\tand\nnew\u00a0lines  ", ["tabs", "and", "new", "lines"]),
    ("zero\u200bwidth", ["zero", "width"]),
    ("١٢٣ Ωμέγα", ["١٢٣", "Ωμέγα"]),
    ("👍🏽 🇫🇷!", ["👍🏽", "🇫🇷", "!"]),
    ("", []),
])
def test_word_tokenizer(source, expected):
    assert WordTokenizer().tokenize(source) == expected


def test_word_tokenizer_casefold():
    tok = WordTokenizer(lower=True)
    assert tok.tokenize("Straße ÉCOLE Don'T") == ["strasse", "école", "don't"]
    assert WordTokenizer().tokenize("Straße") == ["Straße"]
    assert tok.name == "word" and tok.lower is True


@pytest.mark.parametrize("source,joined", [
    ("Hello , world !", "Hello, world!"),
    ("He said ( quietly ) : yes .", "He said (quietly): yes."),
    ("¿ Qué tal ?", "¿Qué tal?"),
    ("well - known 3 . 14 10 : 30", "well-known 3.14 10:30"),
    ("你好 ， 世界 。 我们", "你好，世界。我们"),
    ("it ' s", "it ' s"),
])
def test_word_detokenize_readable(source, joined):
    tokens = source.split(" ")
    assert WordTokenizer().detokenize(tokens) == joined


def test_word_detokenize_round_trips_tokens(rng):
    """tokenize(detokenize(tokens)) == tokens for random sequences of atoms,
    including punctuation that attaches to either side."""
    tok = WordTokenizer()
    atoms = ["word", "don't", "Été", "3", "14", "你好", ".", ",", "!", "?", ":", ";", "'",
             "\"", "(", ")", "[", "]", "«", "»", "‘", "’", "“", "”", "-", "—", "¿", "¡",
             "%", "#", "@", "…", "。", "，", "👍🏽", "&", "/"]
    for _ in range(300):
        tokens = [atoms[i] for i in rng.integers(0, len(atoms), rng.integers(0, 12))]
        joined = tok.detokenize(tokens)
        assert tok.tokenize(joined) == tokens, (tokens, joined)


def test_mark_scan_covers_all_planes():
    """The word regex scans planes 0-1 and 14 for combining marks; a full scan
    must find nothing else (guards against a future Unicode database)."""
    partial = set(text._mark_codepoints())
    full = {cp for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp))[0] == "M"}
    assert partial == full


def test_get_tokenizer():
    assert get_tokenizer("char") == CharTokenizer()
    assert get_tokenizer("word", lower=True) == WordTokenizer(lower=True)
    assert get_tokenizer("word") != WordTokenizer(lower=True)
    assert get_tokenizer(WordTokenizer(lower=True).to_dict()) == WordTokenizer(lower=True)
    tok = CharTokenizer()
    assert get_tokenizer(tok) is tok
    with pytest.raises(ValueError, match=r"tokenizer must be one of 'char', 'word', got 'bpe'"):
        get_tokenizer("bpe")
    with pytest.raises(ValueError, match="missing"):
        get_tokenizer({"name": "word"})
    with pytest.raises(TypeError, match="lower must be True or False, got 'yes'"):
        get_tokenizer("word", lower="yes")
    with pytest.raises(TypeError, match="lower must be True or False, got 1"):
        get_tokenizer("word", lower=1)
    # numpy booleans (from a config array, a dataframe) are booleans too
    folded = get_tokenizer("word", lower=np.True_)
    assert folded == WordTokenizer(lower=True) and type(folded.lower) is bool
    assert folded.tokenize("ÉTÉ") == ["été"]


def test_tokenizer_bad_input():
    with pytest.raises(TypeError, match="text must be a str, got bytes"):
        WordTokenizer().tokenize(b"abc")
    with pytest.raises(TypeError, match="text must be a str, got NoneType"):
        CharTokenizer().tokenize(None)
    with pytest.raises(TypeError, match="tokens must be a list of token strings, got a single str"):
        WordTokenizer().detokenize("abc")
    with pytest.raises(TypeError, match="tokens must contain only str tokens, got int 3 at "
                                        "position 1"):
        CharTokenizer().detokenize(["a", 3])


# --------------------------------------------------------------------------- building

def test_build_order_frequency_then_first_appearance():
    corpus = [["e", "c", "a"], ["c", "d", "a"], ["b", "a", "c"]]
    vocab = Vocab.build(corpus)
    # c:3 a:3 e:1 d:1 b:1 -- ties in order of first appearance (not alphabetical)
    assert vocab.tokens[4:] == ["c", "a", "e", "d", "b"]
    assert vocab.counts == {"c": 3, "a": 3, "e": 1, "d": 1, "b": 1}
    assert vocab.freq("a") == 3 and vocab.freq("zzz") == 0 and vocab.freq("<pad>") == 0
    assert vocab["c"] == 4 and vocab["b"] == 8
    # deterministic: the same corpus, or a generator of it, gives the same vocab
    assert Vocab.build(iter(corpus)) == vocab
    assert Vocab.build(tuple(tuple(x) for x in corpus)) == vocab


def test_build_matches_counter_reference(rng):
    words = [f"w{i}" for i in range(30)]
    corpus = [[words[j] for j in rng.zipf(1.5, 20) % 30] for _ in range(50)]
    counts = {}
    for sentence in corpus:
        for w in sentence:
            counts[w] = counts.get(w, 0) + 1
    first = {}
    for sentence in corpus:
        for w in sentence:
            first.setdefault(w, len(first))
    expected = sorted(counts, key=lambda w: (-counts[w], first[w]))
    for min_freq in (1, 2, 5):
        for max_size in (None, 0, 3, 100):
            vocab = Vocab.build(corpus, min_freq=min_freq, max_size=max_size)
            keep = [w for w in expected if counts[w] >= min_freq]
            keep = keep if max_size is None else keep[:max_size]
            assert vocab.tokens[4:] == keep
            assert len(vocab) == 4 + len(keep)
            assert vocab.counts == {w: counts[w] for w in keep}


def test_build_from_texts_records_tokenizer():
    vocab = Vocab.build(["The cat sat.", "the cat ran!"])
    assert vocab.tokenizer == WordTokenizer()
    assert vocab.tokens[4:] == ["cat", "The", "sat", ".", "the", "ran", "!"]
    lower = Vocab.build(["The cat sat.", "the cat ran!"],
                        tokenizer=get_tokenizer("word", lower=True))
    assert lower.tokens[4:7] == ["the", "cat", "sat"] and lower.freq("the") == 2
    chars = Vocab.build(["abba", "cab"], tokenizer="char")
    assert chars.tokens[4:] == ["a", "b", "c"] and chars.tokenizer == CharTokenizer()
    assert chars.encode("cab").tolist() == [6, 4, 5]


def test_build_from_token_lists_has_no_tokenizer_unless_given():
    vocab = Vocab.build([["a", "b"], ["b"]])
    assert vocab.tokenizer is None
    with pytest.raises(TypeError, match="no tokenizer"):
        vocab.encode("a b")
    given = Vocab.build([["a", "b"]], tokenizer="word")
    assert given.tokenizer == WordTokenizer() and given.encode("b a").tolist() == [5, 4]


def test_build_skips_specials_in_token_lists():
    vocab = Vocab.build([["<bos>", "x", "<eos>", "<pad>"], ["x", "<unk>"]])
    assert vocab.tokens == ["<pad>", "<unk>", "<bos>", "<eos>", "x"]
    assert vocab.counts == {"x": 2}


def test_vocab_from_tokens():
    vocab = Vocab(["hello", "world"])
    assert vocab.tokens == ["<pad>", "<unk>", "<bos>", "<eos>", "hello", "world"]
    assert vocab.counts == {} and vocab.tokenizer is None
    assert "hello" in vocab and "nope" not in vocab and 5 not in vocab
    vocab.tokens.append("mutated")                 # a copy: the vocab is unchanged
    assert len(vocab) == 6
    assert "size=6" in repr(vocab)


@pytest.mark.parametrize("tokens,exc,match", [
    (["a", "b", "a"], ValueError, r"tokens must be unique, got 'a' at positions 0 and 2"),
    (["a", "<unk>"], ValueError, r"special token '<unk>' \(position 1\)"),
    (["a", 5], TypeError, r"tokens must contain only str tokens, got int 5 at position 1"),
    (["a", ""], ValueError, r"non-empty strings, got '' at position 1"),
    ("abc", TypeError, r"got a single str 'abc'"),
    (5, TypeError, r"tokens must be a list of token strings, got int 5"),
])
def test_vocab_bad_tokens(tokens, exc, match):
    with pytest.raises(exc, match=match):
        Vocab(tokens)


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"min_freq": 0}, ValueError, r"min_freq must be an int >= 1, got 0"),
    ({"min_freq": 1.5}, TypeError, r"min_freq must be an int >= 1, got 1.5"),
    ({"min_freq": True}, TypeError, r"min_freq must be an int >= 1, got True"),
    ({"max_size": -1}, ValueError, r"max_size must be None or an int >= 0, got -1"),
    ({"max_size": "10"}, TypeError, r"max_size must be None or an int >= 0, got '10'"),
    ({"tokenizer": "bpe"}, ValueError, r"tokenizer must be one of"),
    ({"tokenizer": 3}, TypeError, r"tokenizer must be 'char', 'word', a Tokenizer"),
])
def test_build_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        Vocab.build(["a b"], **kwargs)


@pytest.mark.parametrize("corpus,exc,match", [
    ([], ValueError, r"corpus is empty"),
    (iter([]), ValueError, r"corpus is empty"),
    (["", "  "], ValueError, r"corpus contains no tokens"),
    ([[], []], ValueError, r"corpus contains no tokens"),
    ("a single text", TypeError, r"got a single str 'a single text'; wrap it in a list"),
    (5, TypeError, r"corpus must be an iterable of texts or of token lists, got int 5"),
    (["text", ["tok"]], TypeError, r"corpus mixes texts and token lists \(item 1"),
    ([["tok"], "text"], TypeError, r"corpus mixes token lists and texts \(item 1"),
    ([["a"], ["b", 3]], TypeError, r"corpus\[1\] must contain only str tokens, got int 3 at "
                                   r"position 1"),
    ([["a", ""]], ValueError, r"must not contain empty strings"),
    ([{"a": 1}], TypeError, r"corpus items must be texts \(str\) or token lists, got dict"),
])
def test_build_bad_corpus(corpus, exc, match):
    with pytest.raises(exc, match=match):
        Vocab.build(corpus)


# --------------------------------------------------------------------------- encode/decode

def test_unknown_maps_to_unk():
    vocab = Vocab(["a", "b"])
    assert vocab["zzz"] == UNK and vocab["A"] == UNK
    assert vocab.encode(["a", "zzz", "b"]).tolist() == [4, UNK, 5]
    with pytest.raises(TypeError, match=r"vocab\[...\] takes a token str, got int 4; use "
                                        r"vocab.lookup"):
        vocab[4]


def test_encode_decode_round_trip():
    vocab = Vocab.build(["the cat sat on the mat", "a dog"])
    tokens = ["the", "dog", "sat", "on", "a", "mat"]
    ids = vocab.encode(tokens, add_bos=True, add_eos=True)
    assert ids.dtype == np.int64 and ids.ndim == 1
    assert ids[0] == BOS and ids[-1] == EOS and ids.shape == (8,)
    assert [vocab.lookup(i) for i in ids[1:-1]] == tokens
    assert vocab.decode(ids) == tokens
    assert vocab.decode(ids, skip_specials=False) == ["<bos>"] + tokens + ["<eos>"]
    assert vocab.decode(ids.tolist()) == tokens
    assert vocab.decode_text(ids) == "the dog sat on a mat"
    assert vocab.encode("the dog").tolist() == vocab.encode(["the", "dog"]).tolist()
    assert vocab.encode([]).dtype == np.int64 and vocab.encode([]).shape == (0,)
    assert vocab.encode([], add_bos=True, add_eos=True).tolist() == [BOS, EOS]
    assert vocab.decode([]) == []


def test_decode_keeps_unk_and_drops_pad():
    vocab = Vocab(["x"])
    ids = [BOS, 4, UNK, EOS, PAD, PAD]
    assert vocab.decode(ids) == ["x", "<unk>"]
    assert vocab.decode(np.array([BOS, 4, EOS, 4, PAD]), stop_at_eos=True) == ["x"]
    assert vocab.decode([BOS, 4, EOS, 4], skip_specials=False, stop_at_eos=True) == ["<bos>", "x"]


def test_encode_batch_and_decode_batch():
    vocab = Vocab.build(["a b c", "b c"])
    batch = vocab.encode_batch(["a b", "c zz c"], add_eos=True)
    assert [row.tolist() for row in batch] == [[vocab["a"], vocab["b"], EOS],
                                               [vocab["c"], UNK, vocab["c"], EOS]]
    assert vocab.encode_batch([]) == []
    padded = np.array([[4, 5, PAD], [6, EOS, PAD]])
    assert vocab.decode_batch(padded) == [[vocab.lookup(4), vocab.lookup(5)], [vocab.lookup(6)]]
    assert vocab.decode_batch([[4], [5, 6]]) == [[vocab.lookup(4)],
                                                 [vocab.lookup(5), vocab.lookup(6)]]
    with pytest.raises(TypeError, match="single str"):
        vocab.encode_batch("a b")
    with pytest.raises(ValueError, match=r"batch must be 2-D .* got shape \(3,\)"):
        vocab.decode_batch(np.array([4, 5, 6]))


def test_decode_and_one_hot_accept_tensors():
    """Tensors are duck-typed (detach().cpu().numpy()), so torch need not load here."""
    class FakeTensor:
        def __init__(self, values):
            self.values = np.array(values)

        def detach(self):
            return self

        def cpu(self):
            return self

        def numpy(self):
            return self.values

    vocab = Vocab(["x", "y"])
    assert vocab.decode(FakeTensor([4, 5, EOS])) == ["x", "y"]
    assert one_hot(FakeTensor([1]), 2).tolist() == [[0, 1]]


def test_char_vocab_text_round_trip():
    source = "Ünïcode 世界!"
    vocab = Vocab.build([source], tokenizer="char")
    ids = vocab.encode(source, add_bos=True, add_eos=True)
    assert vocab.decode_text(ids) == source


def test_ids_bad_input():
    vocab = Vocab(["a", "b"])
    with pytest.raises(ValueError, match=r"ids must lie in 0..5 \(the vocabulary size is 6\), "
                                         r"got values from 0 to 6"):
        vocab.decode([0, 6])
    with pytest.raises(ValueError, match=r"got values from -1 to 4"):
        vocab.decode([4, -1])
    with pytest.raises(TypeError, match=r"ids must be integer token ids, got dtype float64"):
        vocab.decode([4.0, 5.0])
    with pytest.raises(ValueError, match=r"ids must be 1-D \(one sequence\), got shape \(1, 2\)"):
        vocab.decode([[4, 5]])
    with pytest.raises(ValueError, match=r"index must be a token id in 0..5, got 6"):
        vocab.lookup(6)
    with pytest.raises(ValueError, match=r"got -1"):
        vocab.lookup(-1)
    with pytest.raises(TypeError, match=r"index must be an int token id, got str 'a'"):
        vocab.lookup("a")
    with pytest.raises(TypeError, match=r"index must be an int token id, got bool"):
        vocab.lookup(True)
    assert vocab.lookup(np.int64(4)) == "a"
    with pytest.raises(TypeError, match=r"tokens_or_text must contain only str tokens, got "
                                        r"int 7 at position 0"):
        vocab.encode([7])
    with pytest.raises(TypeError, match=r"decode_text needs a tokenizer"):
        vocab.decode_text([4])


def test_unk_rate():
    vocab = Vocab.build(["a a b c"], max_size=2)
    assert vocab.tokens[4:] == ["a", "b"]
    assert vocab.unk_rate(["a b c d"]) == pytest.approx(0.5)
    assert vocab.unk_rate([["a", "a"], ["b"]]) == 0.0
    assert vocab.unk_rate([["<eos>", "z"]]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no tokens"):
        vocab.unk_rate([""])
    with pytest.raises(TypeError, match="no tokenizer"):
        Vocab(["a"]).unk_rate(["a b"])


# --------------------------------------------------------------------------- persistence

def _sample_vocab():
    return Vocab.build(["Héllo, wörld! 你好", "héllo again, wörld"],
                       tokenizer=get_tokenizer("word", lower=True), min_freq=1)


def test_save_load_round_trip(tmp_path):
    vocab = _sample_vocab()
    path = tmp_path / "vocab.json"
    assert vocab.save(path) == path
    loaded = Vocab.load(path)
    assert loaded == vocab
    assert loaded.tokens == vocab.tokens
    assert loaded.counts == vocab.counts
    assert loaded.tokenizer == WordTokenizer(lower=True)
    assert loaded.encode("HÉLLO wörld").tolist() == vocab.encode("héllo wörld").tolist()
    data = json.loads(path.read_text(encoding="utf-8"))     # plain, readable JSON
    assert data["format_version"] == text.FORMAT_VERSION
    assert data["tokens"][:4] == list(text.SPECIAL_TOKENS) and "你好" in data["tokens"]
    assert data["tokenizer"] == {"name": "word", "lower": True}
    assert os.listdir(tmp_path) == ["vocab.json"]           # no temp files left
    # str path, no tokenizer, no counts
    plain = Vocab(["x", "y"])
    plain.save(str(tmp_path / "plain.json"))
    again = Vocab.load(str(tmp_path / "plain.json"))
    assert again == plain and again.tokenizer is None and again.counts == {}
    assert Vocab.from_dict(json.loads(json.dumps(vocab.to_dict()))) == vocab


def test_save_overwrites_and_keeps_permissions_from_umask(tmp_path):
    path = tmp_path / "v.json"
    Vocab(["a"]).save(path)
    Vocab(["b"]).save(path)
    assert Vocab.load(path).tokens[4:] == ["b"]
    old = os.umask(0o022)
    os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~old


@pytest.mark.parametrize("target", ["os.replace", "os.fsync"])
def test_failed_save_leaves_existing_file_intact(tmp_path, monkeypatch, target):
    path = tmp_path / "vocab.json"
    Vocab(["old"]).save(path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(target, boom)
    with pytest.raises(OSError, match="disk full"):
        Vocab(["new", "tokens"]).save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert Vocab.load(path).tokens[4:] == ["old"]
    assert os.listdir(tmp_path) == ["vocab.json"]           # temp file removed


def test_failed_write_midway_leaves_no_file(tmp_path, monkeypatch):
    """A write that fails after part of the data went out leaves nothing at path."""
    path = tmp_path / "vocab.json"
    real_fdopen = os.fdopen

    class HalfWriter:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            self.handle.write(data[:10])
            self.handle.flush()
            raise OSError("interrupted")

    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: HalfWriter(real_fdopen(fd, *a, **k)))
    with pytest.raises(OSError, match="interrupted"):
        Vocab(["x"]).save(path)
    monkeypatch.undo()
    assert not path.exists() and os.listdir(tmp_path) == []


def test_save_bad_directory_and_custom_tokenizer(tmp_path):
    with pytest.raises(FileNotFoundError, match="directory .* does not exist"):
        Vocab(["a"]).save(tmp_path / "missing" / "v.json")

    class Spaces:
        def tokenize(self, s):
            return s.split()

        def detokenize(self, tokens):
            return " ".join(tokens)

    vocab = Vocab.build(["a b"], tokenizer=Spaces())
    assert vocab.encode("b a").tolist() == [5, 4]
    with pytest.raises(ValueError, match="cannot save a vocabulary with a custom tokenizer "
                                         r"\(Spaces\)"):
        vocab.save(tmp_path / "v.json")
    assert not (tmp_path / "v.json").exists()


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocabulary file .*nope.json' does not exist"):
        Vocab.load(tmp_path / "nope.json")

    good = Vocab(["a"]).to_dict()
    cases = {
        "truncated.json": (json.dumps(good)[:25], r"is not valid JSON .* line 1"),
        "empty.json": ("", r"is not valid JSON"),
        "list.json": ("[1, 2]", r"vocabulary data must be a dict, got list"),
        "newer.json": (json.dumps({**good, "format_version": 2}),
                       r"format_version 2 is newer than this fastrnn supports \(1\); upgrade"),
        "missing.json": (json.dumps({k: v for k, v in good.items() if k != "tokens"}),
                         r"missing the key\(s\) \['tokens'\]"),
        "other.json": (json.dumps({**good, "format": "something.else"}),
                       r"not a fastrnn vocabulary"),
        "specials.json": (json.dumps({**good, "tokens": ["a", "b"]}),
                          r"'tokens' must start with the specials"),
        "dup.json": (json.dumps({**good, "tokens": good["tokens"] + ["a"]}),
                     r"tokens must be unique"),
        "counts.json": (json.dumps({**good, "counts": {"zz": 3}}),
                        r"counts has token 'zz' which is not in the vocabulary"),
        "negative.json": (json.dumps({**good, "counts": {"a": -3}}),
                          r"counts must be non-negative ints"),
        "tok.json": (json.dumps({**good, "tokenizer": {"name": "bpe", "lower": False}}),
                     r"tokenizer must be one of"),
    }
    for name, (content, match) in cases.items():
        path = tmp_path / name
        path.write_text(content, encoding="utf-8")
        with pytest.raises(ValueError, match=match) as info:
            Vocab.load(path)
        assert name in str(info.value)
    path = tmp_path / "binary.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match="is not UTF-8 text"):
        Vocab.load(path)


# --------------------------------------------------------------------------- one_hot

def test_one_hot_values(rng):
    ids = rng.integers(0, 7, (3, 4))
    out = one_hot(ids, 7)
    assert out.shape == (3, 4, 7) and out.dtype == np.float32
    np.testing.assert_array_equal(out, np.eye(7, dtype=np.float32)[ids])
    assert one_hot([2, 0], 3, dtype="float64").tolist() == [[0, 0, 1], [1, 0, 0]]
    assert one_hot([2, 0], 3, dtype="float64").dtype == np.float64
    assert one_hot(np.uint8(1), 2).tolist() == [0, 1]
    assert one_hot([], 5).shape == (0, 5)
    vocab = Vocab.build(["abc"], tokenizer="char")
    assert one_hot(vocab.encode("cab"), len(vocab)).argmax(-1).tolist() == [6, 4, 5]


def test_one_hot_bad_input():
    with pytest.raises(ValueError, match=r"ids must lie in 0..2 \(num_classes=3\), got values "
                                         r"from 0 to 3"):
        one_hot([0, 3], 3)
    with pytest.raises(ValueError, match=r"got values from -1 to 1"):
        one_hot([-1, 1], 3)
    with pytest.raises(TypeError, match=r"ids must be integers, got dtype float64"):
        one_hot([0.0, 1.0], 3)
    with pytest.raises(TypeError, match=r"ids must be integers, got dtype bool"):
        one_hot([True], 3)
    with pytest.raises(ValueError, match=r"num_classes must be an int >= 1, got 0"):
        one_hot([0], 0)
    with pytest.raises(TypeError, match=r"num_classes must be an int >= 1, got 3.0"):
        one_hot([0], 3.0)
    with pytest.raises(TypeError, match=r"dtype must be 'float32' or 'float64', got int32"):
        one_hot([0], 3, dtype="int32")


def test_tokenizer_attribute_is_resolved():
    vocab = Vocab(["a", "b"])
    vocab.tokenizer = "char"
    assert vocab.tokenizer == CharTokenizer() and vocab.encode("ba").tolist() == [5, 4]
    with pytest.raises(ValueError, match="tokenizer must be one of"):
        vocab.tokenizer = "sentencepiece"
