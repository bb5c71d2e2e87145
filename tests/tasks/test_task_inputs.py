"""The task models' input side (fastrnn.tasks.inputs / stack / pooling): input kind
detection, the input encoder, the sequence encoder stack and pooling."""

import json

import numpy as np
import pytest

import fastrnn as fr
from fastrnn._validation import Integer, layer_seeds
from fastrnn.tasks.inputs import InputEncoder, detect_kind
from fastrnn.tasks.pooling import Pooling
from fastrnn.tasks.stack import RecurrentStack
from fastrnn.text import UNK
from task_data import FAST, numeric


# -- inputs.py ------------------------------------------------------------------------------

def test_detect_kind():
    assert detect_kind(["a b", "c"]) == "text"
    assert detect_kind([["a", "b"], ("c",)]) == "tokens"
    assert detect_kind(np.zeros((2, 3))) == "numeric"
    assert detect_kind(np.zeros((2, 3, 4), dtype=np.int32)) == "numeric"
    assert detect_kind([np.zeros((3, 2)), [[1, 2]]]) == "numeric"
    assert detect_kind(x for x in ["a"]) == "text"                     # any iterable
    with pytest.raises(TypeError, match="X must be a list of sequences .for one text, "
                                        "pass \\[text\\]"):
        detect_kind("abc")
    with pytest.raises(TypeError, match="X must be a list of sequences, got int"):
        detect_kind(5)
    # A set has no order: its texts would be paired with the wrong labels.
    with pytest.raises(TypeError, match="X must be an ordered collection of sequences .*, "
                                        "got a set"):
        detect_kind({"a b", "c"})
    # Arrays of strings (a pandas column's .values) are texts or token lists.
    assert detect_kind(np.array(["a b", "c"])) == "text"
    assert detect_kind(np.array(["a b", "c"], dtype=object)) == "text"
    assert detect_kind(np.array([["a", "b"]])) == "tokens"
    assert detect_kind([np.array(["a", "b"]), ["c"]]) == "tokens"
    with pytest.raises(ValueError, match="X: Complex data not supported"):
        detect_kind(np.zeros((2, 3), dtype=complex))
    with pytest.raises(TypeError, match="must hold numbers when given as an array, got "
                                        "dtype bool"):
        detect_kind(np.zeros((2, 3), dtype=bool))
    with pytest.raises(ValueError, match=r"shape \(N, T\) or \(N, T, F\) with N >= 1, got "
                                         r"\(3,\)"):
        detect_kind(np.zeros(3))
    with pytest.raises(ValueError, match=r"got \(0, 3\)"):
        detect_kind(np.zeros((0, 3)))
    with pytest.raises(TypeError, match=r"Xv\[1\] must be a string like Xv\[0\], got list"):
        detect_kind(["a", ["b"]], "Xv")
    with pytest.raises(TypeError, match=r"X\[1\] must be a list of token strings like "
                                        r"X\[0\], got str"):
        detect_kind([["a"], "b"])
    with pytest.raises(TypeError, match=r"X\[1\] must be a list of token strings"):
        detect_kind([["a"], ["b", 3]])


def test_input_encoder_text_tokens_numeric():
    words = InputEncoder("word", lower=True).fit(["Good film", "good plot"])
    assert words.kind == "text" and words.size == len(words.vocab) == 4 + 3
    ids = words.transform(["GOOD unseen film"])
    assert ids[0].dtype == np.int64
    assert ids[0].tolist() == [words.vocab["good"], UNK, words.vocab["film"]]
    chars = InputEncoder("char").fit(["ab", "ba"])
    assert chars.transform(["abc"])[0].tolist() == [chars.vocab["a"], chars.vocab["b"], UNK]
    limited = InputEncoder("word", min_freq=2).fit(["a a b", "a c"])
    assert limited.vocab.tokens[4:] == ["a"]
    tokens = InputEncoder().fit([["x", "y"], ["y"]])
    assert tokens.kind == "tokens"
    assert tokens.transform([("y", "x")])[0].tolist() == [tokens.vocab["y"], tokens.vocab["x"]]
    series = InputEncoder().fit(np.arange(6).reshape(2, 3))
    assert series.kind == "numeric" and series.size == series.num_features == 1
    out = series.transform([np.array([1, 2]), [3.5]])
    assert [o.shape for o in out] == [(2, 1), (1, 1)] and out[0].dtype == np.float64
    with pytest.raises(TypeError, match=r"X\[0\] must hold numbers, got dtype bool"):
        series.transform([np.array([True])])
    for encoder in (words, chars, tokens, series):
        data = json.loads(json.dumps(encoder.to_dict()))
        copy = InputEncoder.from_dict(data)
        assert copy.kind == encoder.kind and copy.size == encoder.size
        sample = [[1.0, 2.0]] if encoder.kind == "numeric" else (
            [["x", "q"]] if encoder.kind == "tokens" else ["good abc film"])
        for a, b in zip(copy.transform(sample), encoder.transform(sample)):
            np.testing.assert_array_equal(a, b)


def test_check_count():
    check_count = Integer(low=1)
    assert check_count("n", 3) == 3 and check_count("n", np.int64(2)) == 2
    for bad in (0, -1, 1.5, True, "3", None):
        with pytest.raises(ValueError, match="n must be an int >= 1, got"):
            check_count("n", bad)


# -- stack.py ---------------------------------------------------------------------------

def test_sequence_encoder_layers_and_shapes(rng):
    encoder = RecurrentStack("gru", "embedding", 10, 4, num_layers=2, bidirectional=True,
                              dropout=0.1, embedding_dim=3, dtype="float64", seed=0)
    embedding, rnn, dropout = encoder.modules()
    assert isinstance(embedding, fr.Embedding) and isinstance(rnn, fr.GRU)
    assert isinstance(dropout, fr.Dropout) and rnn.dropout == 0.1
    assert embedding.padding_idx == 0 and encoder.output_size == 8
    ids = rng.integers(1, 10, size=(5, 3))
    lengths = np.array([5, 2, 3])
    out, h_n = encoder.forward(ids, lengths)
    assert out.shape == (5, 3, 8) and h_n.shape == (4, 3, 4) and out.dtype == np.float64
    assert not out[2:, 1].any()                             # padded steps emit zeros
    d_hx = encoder.backward(None, np.ones_like(h_n))       # only through the final state
    assert d_hx.shape == h_n.shape and embedding.grads["weight"].any()
    single = RecurrentStack("rnn", "numeric", 2, 3, dropout=0.5, seed=0)
    assert single.rnn.dropout == 0.0 and isinstance(single.modules()[-1], fr.Dropout)
    onehot = RecurrentStack("lstm", "onehot", 6, 3, seed=0)
    assert onehot.modules() == [onehot.rnn] and onehot.rnn.input_size == 6
    with pytest.raises(ValueError,
                       match="cell must be one of 'rnn', 'lstm', 'gru', 'jordan', got 'x'"):
        RecurrentStack("x", "numeric", 2, 3)
    with pytest.raises(ValueError, match="input must be one of 'embedding', 'onehot', "
                                         "'numeric', got 'y'"):
        RecurrentStack("gru", "y", 2, 3)
    with pytest.raises(ValueError, match="pretrained vectors must have 5 rows"):
        RecurrentStack("gru", "embedding", 5, 3, pretrained=np.zeros((4, 2)))


def test_same_seed_same_model_and_layer_seeds(rng):
    assert layer_seeds(3, 4) == layer_seeds(3, 4)
    assert len(set(layer_seeds(3, 4))) == 4 and layer_seeds(3, 2) != layer_seeds(4, 2)
    assert layer_seeds(None, 2) != layer_seeds(None, 2)
    X, y = numeric(rng)
    runs = []
    for _ in range(2):
        model = fr.SequenceClassifier(hidden_size=4, dropout=0.3, seed=11)
        model.fit(X, y, epochs=2, **FAST)
        runs.append(model.predict_proba(X))
    np.testing.assert_array_equal(runs[0], runs[1])


def test_pooling_last_gradient_goes_to_the_top_layer_only():
    h = np.arange(4 * 2 * 3, dtype=np.float64).reshape(4, 2, 3)   # 2 layers x 2 directions
    pool = Pooling("last", bidirectional=True)
    top = pool.forward(np.zeros((3, 2, 6)), (h, h + 100), np.array([3, 1]))
    np.testing.assert_array_equal(top, np.concatenate([h[2], h[3]], axis=1))
    d_out, (d_h, d_c) = pool.backward(np.arange(12.0).reshape(2, 6))
    assert d_out is None and d_c is None
    assert not d_h[:2].any()
    np.testing.assert_array_equal(d_h[2], [[0, 1, 2], [6, 7, 8]])
    np.testing.assert_array_equal(d_h[3], [[3, 4, 5], [9, 10, 11]])
