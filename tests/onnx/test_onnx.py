"""ONNX export checked by ONNX Runtime (an independent implementation of the
RNN/LSTM/GRU operators), task models' to_onnx / to_ids, the metadata, the
``fastrnn export`` command and weight import (fr.onnx.load_weights)."""

import io
import json

import numpy as np
import pytest

import fastrnn as fr
from fastrnn.cli.main import main as cli_main
from fastrnn._onnx_layout import GATES, from_fastrnn
from task_data import LABELS, TEXTS

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

RTOL, ATOL = 1e-5, 1e-6      # float32, relative (ATOL for values near 0)

LAYER_KINDS = {
    "rnn_tanh": lambda **kw: fr.RNN(3, 5, **kw),
    "rnn_relu": lambda **kw: fr.RNN(3, 5, nonlinearity="relu", **kw),
    "lstm": lambda **kw: fr.LSTM(3, 5, **kw),
    "gru": lambda **kw: fr.GRU(3, 5, **kw),
}


def _session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _close(actual, expected):
    assert np.asarray(actual).shape == np.asarray(expected).shape
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_layer_export_matches_onnx_runtime(kind, bidirectional, layers, rng):
    layer = LAYER_KINDS[kind](num_layers=layers, bidirectional=bidirectional, seed=3).eval()
    x = rng.standard_normal((7, 4, 3)).astype(np.float32)
    lengths = np.array([7, 2, 5, 1])
    directions = 2 if bidirectional else 1
    h0 = rng.standard_normal((layers * directions, 4, 5)).astype(np.float32)
    c0 = rng.standard_normal(h0.shape).astype(np.float32)
    lstm = kind == "lstm"
    hx = (h0, c0) if lstm else h0
    # All inputs: lengths and initial states.
    session = _session(fr.onnx.export(layer, lengths=True, initial_state=True))
    feeds = {"input": x, "lengths": lengths, "h0": h0, **({"c0": c0} if lstm else {})}
    got = session.run(None, feeds)
    out, state = layer(x, hx=hx, lengths=lengths)
    expected = [out] + (list(state) if lstm else [state])
    assert [o.name for o in session.get_outputs()] == ["output", "h_n"] + (["c_n"] if lstm
                                                                           else [])
    for a, b in zip(got, expected):
        _close(a, b)
    assert np.abs(out).max() > 0.1 and not out[3:, 1].any()     # padded steps are 0
    # Input only: zero initial state, every row full length.
    session = _session(fr.onnx.export(layer))
    assert [i.name for i in session.get_inputs()] == ["input"]
    out, state = layer(x)
    got = session.run(None, {"input": x})
    _close(got[0], out)
    _close(got[1], state[0] if lstm else state)


def test_batch_first_float64_and_biasless_layers(rng):
    layer = fr.GRU(3, 4, batch_first=True, bias=False, dtype="float64", seed=0).eval()
    x = rng.standard_normal((2, 6, 3))
    model = fr.onnx.export(layer, lengths=True)
    got = _session(model).run(None, {"input": x.astype(np.float32),
                                     "lengths": np.array([6, 4])})
    out, h_n = layer(x, lengths=[6, 4])
    _close(got[0], out)
    _close(got[1], h_n)
    assert json.loads(model.metadata_props[0].value)["config"]["batch_first"] is True


def test_export_writes_paths_and_file_objects(tmp_path):
    layer = fr.LSTM(2, 3, seed=0)
    path = tmp_path / "lstm.onnx"
    model = fr.onnx.export(layer, path)
    assert onnx.load(path) == model
    stream = io.BytesIO()
    fr.onnx.export(layer, stream)
    assert stream.getvalue() == model.SerializeToString()
    with pytest.raises(TypeError, match="layer must be an fr.RNN, fr.LSTM or fr.GRU"):
        fr.onnx.export(fr.Linear(2, 3), path)


def test_gate_order_tables():
    """LSTM i f g o -> ONNX i o f c; GRU r z n -> ONNX z r h (export uses the
    one table in _onnx_layout)."""
    for op, hidden, expected in (("LSTM", 2, [0, 3, 1, 2]), ("GRU", 2, [1, 0, 2])):
        gates = GATES[op][0]
        blocks = np.arange(gates).repeat(hidden).astype(float)
        state = {"weight_ih_l0": blocks[:, None], "weight_hh_l0": blocks[:, None]}
        w = from_fastrnn(op, state, 0, 1, hidden)[0]
        np.testing.assert_array_equal(w[0, ::hidden, 0], expected)
    model = fr.onnx.export(fr.GRU(2, 3))
    node = next(n for n in model.graph.node if n.op_type == "GRU")
    assert {a.name: a.i for a in node.attribute}["linear_before_reset"] == 1


# -- task models ------------------------------------------------------------------------------

def _run(model, X):
    inputs, lengths = model.to_ids(X)
    graph = model.to_onnx()
    name = "features" if inputs.dtype == np.float32 else "ids"
    assert [i.name for i in graph.graph.input] == [name, "lengths"]
    assert inputs.dtype in (np.int64, np.float32) and lengths.dtype == np.int64
    return _session(graph).run(None, {name: inputs, "lengths": lengths})[0], lengths


CLASSIFIERS = [
    dict(),
    dict(cell="gru", bidirectional=True, pooling="mean"),
    dict(cell="rnn", num_layers=2, input="onehot", pooling="max"),
    dict(output="sigmoid", dtype="float64", bidirectional=True, num_layers=2),
]


@pytest.mark.parametrize("params", CLASSIFIERS, ids=lambda p: "-".join(map(str, p.values()))
                         or "default")
def test_classifier_to_onnx(params):
    clf = fr.SequenceClassifier(hidden_size=6, embedding_dim=4, epochs=2, verbose=0, seed=0,
                                **params).fit(TEXTS, LABELS)
    X = ["good film a", "bad", "a good plot one", "unseen words here"]
    probabilities, _ = _run(clf, X)
    _close(probabilities, clf.predict_proba(X))
    metadata = {p.key: json.loads(p.value) for p in clf.to_onnx().metadata_props}
    assert metadata["fastrnn.labels"] == ["neg", "pos"]
    assert metadata["fastrnn.vocabulary"] == list(clf.inputs_.vocab.tokens)
    assert metadata["fastrnn.config"]["class"] == "SequenceClassifier"
    assert metadata["fastrnn.config"]["params"]["hidden_size"] == 6
    ids, lengths = clf.to_ids(["good film", "bad"])
    np.testing.assert_array_equal(lengths, [2, 1])
    assert ids[1, 1] == 0 and ids[0, 0] == clf.inputs_.vocab.encode(["good"])[0]


def test_numeric_classifier_and_regressors_to_onnx(rng):
    X = [rng.standard_normal((n, 2)) for n in (5, 3, 7, 2)]
    clf = fr.SequenceClassifier(hidden_size=5, epochs=2, verbose=0, seed=0, pooling="max")
    clf.fit(X * 3, [0, 1, 0, 1] * 3)
    _close(_run(clf, X)[0], clf.predict_proba(X))
    reg = fr.SequenceRegressor(hidden_size=5, epochs=2, verbose=0, seed=0, cell="gru")
    reg.fit(X, np.array([[1.0, 0], [2, 1], [3, 0], [0, 1]]))
    _close(_run(reg, X)[0], reg.predict(X))                 # (N, 2)
    reg = fr.SequenceRegressor(hidden_size=5, epochs=2, verbose=0, seed=0, per_step=True,
                               bidirectional=True)
    reg.fit(X, [x.sum(axis=1) for x in X])
    values, lengths = _run(reg, X)
    for row, expected in enumerate(reg.predict(X)):
        _close(values[row, :lengths[row]], expected)
    assert values.shape == (4, 7)


def test_tagger_and_language_model_to_onnx():
    sentences = [["Anna", "lives", "here"], ["Ben", "left"], ["we", "saw", "Clara"]] * 4
    tags = [["B-PER", "O", "O"], ["B-PER", "O"], ["O", "O", "B-PER"]] * 4
    tagger = fr.SequenceTagger(hidden_size=5, embedding_dim=4, epochs=2, verbose=0, seed=0)
    tagger.fit(sentences, tags)
    probabilities, lengths = _run(tagger, sentences[:3])
    for row, expected in enumerate(tagger.predict_proba(sentences[:3])):
        _close(probabilities[row, :lengths[row]], expected)
    lm = fr.LanguageModel(hidden_size=8, embedding_dim=4, epochs=1, verbose=0, seed=0)
    lm.fit("the cat sat on the mat. " * 6)
    texts = ["the cat", "mat"]
    probabilities, lengths = _run(lm, texts)
    ids, _ = lm.to_ids(texts)
    assert ids[0, 0] == 3 and list(lengths) == [8, 4]          # <eos> starts each text
    for row in range(2):
        with fr.tasks.base.eval_mode(lm.modules()):
            out, _ = lm.network_.forward(ids[row, :lengths[row], None])
            logits = lm.head_(out)[:, 0].astype(np.float64)
        expected = np.exp(logits - logits.max(axis=1, keepdims=True))
        _close(probabilities[row, :lengths[row]], expected / expected.sum(axis=1,
                                                                          keepdims=True))


def test_seq2seq_is_refused_with_the_reason():
    model = fr.Seq2Seq(hidden_size=4, epochs=1, verbose=0).fit(["ab", "ba"], ["ba", "ab"])
    with pytest.raises(NotImplementedError, match="decoded one token at a time"):
        model.to_onnx()
    with pytest.raises(fr.NotFittedError):
        fr.SequenceClassifier().to_onnx()


def test_cli_export(tmp_path, capsys):
    clf = fr.SequenceClassifier(hidden_size=4, epochs=1, verbose=0, seed=0).fit(TEXTS, LABELS)
    saved = clf.save(tmp_path / "clf.npz")
    target = tmp_path / "clf.onnx"
    assert cli_main(["export", str(saved), "-o", str(target)]) == 0
    assert "Wrote" in capsys.readouterr().out
    graph = onnx.load(target)
    ids, lengths = clf.to_ids(TEXTS[:3])
    _close(_session(graph).run(None, {"ids": ids, "lengths": lengths})[0],
           clf.predict_proba(TEXTS[:3]))
    s2s = fr.Seq2Seq(hidden_size=4, epochs=1, verbose=0).fit(["ab", "ba"], ["ba", "ab"])
    s2s.save(tmp_path / "s2s.npz")
    assert cli_main(["export", str(tmp_path / "s2s.npz"), "-o", str(target)]) == 2
    assert "Seq2Seq cannot be exported" in capsys.readouterr().err


# -- weight import ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_load_weights_round_trip(kind, tmp_path, rng):
    source = LAYER_KINDS[kind](num_layers=2, bidirectional=True, seed=1)
    path = tmp_path / "layer.onnx"
    fr.onnx.export(source, path)
    for given in (path, str(path), path.read_bytes(), onnx.load(path)):
        target = LAYER_KINDS[kind](num_layers=2, bidirectional=True, seed=2)
        assert fr.onnx.load_weights(given, target) is target
        for name, value in source.state_dict().items():
            np.testing.assert_array_equal(target.state_dict()[name], value, err_msg=name)


def _single_gru_node(linear_before_reset=1, direction="forward", hidden=3):
    helper, rng = onnx.helper, np.random.default_rng(0)
    w = rng.standard_normal((1, 3 * hidden, 2)).astype(np.float32)
    r = rng.standard_normal((1, 3 * hidden, hidden)).astype(np.float32)
    b = rng.standard_normal((1, 6 * hidden)).astype(np.float32)
    node = helper.make_node("GRU", ["x", "W", "R", "B"], ["y", "y_h"], hidden_size=hidden,
                            linear_before_reset=linear_before_reset, direction=direction)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", 1, ["T", "B", 2])],
        [helper.make_tensor_value_info("y", 1, None),
         helper.make_tensor_value_info("y_h", 1, None)],
        [onnx.numpy_helper.from_array(a, n) for a, n in ((w, "W"), (r, "R"), (b, "B"))])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_load_weights_from_a_foreign_graph_matches_onnx_runtime(rng):
    """A GRU node written by hand (not by fastrnn): ORT's output equals the
    fastrnn layer's once the weights are imported."""
    model = _single_gru_node()
    layer = fr.onnx.load_weights(model, fr.GRU(2, 3)).eval()
    x = rng.standard_normal((5, 2, 2)).astype(np.float32)
    y, y_h = _session(model).run(None, {"x": x})
    out, h_n = layer(x)
    _close(y[:, 0], out)
    _close(y_h, h_n)


def test_load_weights_refuses_what_does_not_fit(tmp_path):
    with pytest.raises(ValueError, match="linear_before_reset=0; the GRU was built with "
                                         "reset_after=True, which needs linear_before_reset=1"):
        fr.onnx.load_weights(_single_gru_node(linear_before_reset=0), fr.GRU(2, 3))
    with pytest.raises(ValueError, match="direction='forward'; the layer needs "
                                         "'bidirectional'"):
        fr.onnx.load_weights(_single_gru_node(), fr.GRU(2, 3, bidirectional=True))
    with pytest.raises(ValueError, match="1 GRU node.*num_layers=2"):
        fr.onnx.load_weights(_single_gru_node(), fr.GRU(2, 3, num_layers=2))
    with pytest.raises(ValueError, match="0 LSTM node.*found: \\['GRU'\\]"):
        fr.onnx.load_weights(_single_gru_node(), fr.LSTM(2, 3))
    with pytest.raises(ValueError, match="must have shape"):
        fr.onnx.load_weights(_single_gru_node(hidden=4), fr.GRU(2, 3))
    with pytest.raises(ValueError, match="has bias B but the layer was built with bias=False"):
        fr.onnx.load_weights(_single_gru_node(), fr.GRU(2, 3, bias=False))
    layer = fr.GRU(2, 3, seed=0)
    before = layer.state_dict()
    with pytest.raises(ValueError):
        fr.onnx.load_weights(_single_gru_node(hidden=4), layer)
    for name, value in before.items():                   # nothing changed
        np.testing.assert_array_equal(layer.state_dict()[name], value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        fr.onnx.load_weights(tmp_path / "missing.onnx", layer)
    (tmp_path / "bad.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="is not an ONNX model"):
        fr.onnx.load_weights(tmp_path / "bad.onnx", layer)


def test_missing_onnx_package_is_a_clear_error(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r"pip install fastrnn\[onnx\]"):
        fr.onnx.export(fr.GRU(2, 3))
