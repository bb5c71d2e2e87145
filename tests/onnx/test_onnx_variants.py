"""ONNX export and import of the cell variants: GRU ``reset_after=False``
(``linear_before_reset=0``), LSTM ``peepholes`` (input ``P``), ``cell_clip``
(``clip``) and ``input_forget``; checked by ONNX Runtime, by round trips, and
by the errors for what does not fit (and ``proj_size``, which ONNX lacks)."""

import numpy as np
import pytest

import fastrnn as fr
from test_onnx import _close, _session
from task_data import LABELS, TEXTS

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

VARIANTS = {
    "gru_reset_before": lambda **kw: fr.GRU(3, 5, reset_after=False, **kw),
    "lstm_peepholes": lambda **kw: fr.LSTM(3, 5, peepholes=True, **kw),
    "lstm_clip": lambda **kw: fr.LSTM(3, 5, cell_clip=0.7, **kw),
    "lstm_input_forget": lambda **kw: fr.LSTM(3, 5, input_forget=True, **kw),
    "lstm_all": lambda **kw: fr.LSTM(3, 5, peepholes=True, cell_clip=1.5, input_forget=True,
                                     **kw),
}


def _scaled(layer, factor=3.0):
    """Weights scaled up so clipping and the peepholes matter."""
    layer.load_state_dict({k: v * factor for k, v in layer.state_dict().items()})
    return layer


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("kind", VARIANTS)
def test_variant_export_matches_onnx_runtime(kind, bidirectional, layers, rng):
    layer = _scaled(VARIANTS[kind](num_layers=layers, bidirectional=bidirectional,
                                   seed=3).eval())
    lstm = isinstance(layer, fr.LSTM)
    x = rng.standard_normal((7, 4, 3)).astype(np.float32)
    lengths = np.array([7, 2, 5, 1])
    h0 = rng.standard_normal((layers * (2 if bidirectional else 1), 4, 5)).astype(np.float32)
    c0 = rng.standard_normal(h0.shape).astype(np.float32)
    session = _session(fr.onnx.export(layer, lengths=True, initial_state=True))
    feeds = {"input": x, "lengths": lengths, "h0": h0, **({"c0": c0} if lstm else {})}
    out, state = layer(x, hx=(h0, c0) if lstm else h0, lengths=lengths)
    expected = [out] + (list(state) if lstm else [state])
    for got, want in zip(session.run(None, feeds), expected):
        _close(got, want)
    assert np.abs(out).max() > 0.1
    out, state = layer(x)
    _close(_session(fr.onnx.export(layer)).run(None, {"input": x})[0], out)


def test_the_variant_changes_the_onnx_output(rng):
    """The attributes and P really reach ONNX Runtime: the default cell's graph
    gives a different output from the variant's, with the same weights."""
    x = rng.standard_normal((6, 2, 3)).astype(np.float32)
    for kind in VARIANTS:
        variant = _scaled(VARIANTS[kind](seed=4))
        plain_cls = type(variant)
        plain = plain_cls(3, 5, seed=4)
        plain.load_state_dict({k: v for k, v in variant.state_dict().items()
                               if "peephole" not in k})
        ours = _session(fr.onnx.export(variant)).run(None, {"input": x})[0]
        theirs = _session(fr.onnx.export(plain)).run(None, {"input": x})[0]
        assert np.abs(ours - theirs).max() > 1e-3, kind


def _node(model, op):
    return next(n for n in model.graph.node if n.op_type == op)


def test_variant_attributes_and_p_input():
    attributes = lambda node: {a.name: onnx.helper.get_attribute_value(a)
                               for a in node.attribute}
    gru = _node(fr.onnx.export(fr.GRU(3, 5, reset_after=False)), "GRU")
    assert attributes(gru)["linear_before_reset"] == 0 and "clip" not in attributes(gru)
    lstm = _node(fr.onnx.export(VARIANTS["lstm_all"]()), "LSTM")
    assert attributes(lstm)["input_forget"] == 1
    assert attributes(lstm)["clip"] == pytest.approx(1.5)
    assert len(lstm.input) == 8 and lstm.input[7]
    plain = _node(fr.onnx.export(fr.LSTM(3, 5)), "LSTM")
    assert len(plain.input) < 8 and "clip" not in attributes(plain)
    assert "input_forget" not in attributes(plain) or attributes(plain)["input_forget"] == 0


@pytest.mark.parametrize("kind", VARIANTS)
def test_variant_round_trip(kind, tmp_path):
    source = VARIANTS[kind](num_layers=2, bidirectional=True, seed=1)
    path = tmp_path / "layer.onnx"
    fr.onnx.export(source, path)
    target = VARIANTS[kind](num_layers=2, bidirectional=True, seed=2)
    assert fr.onnx.load_weights(path, target) is target
    assert set(target.state_dict()) == set(source.state_dict())
    for name, value in source.state_dict().items():
        np.testing.assert_array_equal(target.state_dict()[name], value, err_msg=name)


def test_proj_size_is_refused():
    layer = fr.LSTM(3, 6, proj_size=2)
    with pytest.raises(ValueError, match="proj_size=2.*no ONNX equivalent"):
        fr.onnx.export(layer)
    with pytest.raises(ValueError, match="proj_size=2"):
        fr.onnx.load_weights(fr.onnx.export(fr.LSTM(3, 6)), layer)


MISMATCHES = [
    (lambda: fr.GRU(3, 5, reset_after=False), lambda: fr.GRU(3, 5),
     "linear_before_reset=0; the GRU was built with reset_after=True, which needs "
     "linear_before_reset=1"),
    (lambda: fr.GRU(3, 5), lambda: fr.GRU(3, 5, reset_after=False),
     "linear_before_reset=1; the GRU was built with reset_after=False, which needs "
     "linear_before_reset=0"),
    (lambda: fr.LSTM(3, 5, peepholes=True), lambda: fr.LSTM(3, 5),
     "has peephole input P but the LSTM was built with peepholes=False"),
    (lambda: fr.LSTM(3, 5), lambda: fr.LSTM(3, 5, peepholes=True),
     "has no peephole input P but the LSTM was built with peepholes=True"),
    (lambda: fr.LSTM(3, 5, cell_clip=2.0), lambda: fr.LSTM(3, 5),
     "clip=2.0; the LSTM was built with cell_clip=None, which needs clip=None"),
    (lambda: fr.LSTM(3, 5), lambda: fr.LSTM(3, 5, cell_clip=2.0),
     "clip=None; the LSTM was built with cell_clip=2.0, which needs clip=2.0"),
    (lambda: fr.LSTM(3, 5, cell_clip=2.0), lambda: fr.LSTM(3, 5, cell_clip=3.0),
     "clip=2.0; the LSTM was built with cell_clip=3.0"),
    (lambda: fr.LSTM(3, 5, input_forget=True), lambda: fr.LSTM(3, 5),
     "input_forget=1; the LSTM was built with input_forget=False, which needs "
     "input_forget=0"),
    (lambda: fr.LSTM(3, 5), lambda: fr.LSTM(3, 5, input_forget=True),
     "input_forget=0; the LSTM was built with input_forget=True, which needs "
     "input_forget=1"),
]


@pytest.mark.parametrize("source, target, message", MISMATCHES,
                         ids=[m[2][:40] for m in MISMATCHES])
def test_load_weights_refuses_a_variant_mismatch(source, target, message):
    layer = target()
    before = layer.state_dict()
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        fr.onnx.load_weights(fr.onnx.export(source()), layer)
    for name, value in before.items():                   # nothing changed
        np.testing.assert_array_equal(layer.state_dict()[name], value)


def test_clip_on_a_gru_node_is_refused():
    model = fr.onnx.export(fr.GRU(3, 5))
    _node(model, "GRU").attribute.append(onnx.helper.make_attribute("clip", 1.0))
    with pytest.raises(ValueError, match="clip=1.0; fastrnn's GRU has no cell_clip option"):
        fr.onnx.load_weights(model, fr.GRU(3, 5))


def test_malformed_p_input_is_a_clear_error():
    model = fr.onnx.export(fr.LSTM(3, 5, peepholes=True))
    p_name = _node(model, "LSTM").input[7]
    initializer = next(t for t in model.graph.initializer if t.name == p_name)
    initializer.CopyFrom(onnx.numpy_helper.from_array(np.zeros((1, 7), np.float32), p_name))
    with pytest.raises(ValueError, match=r"input P has shape \(1, 7\).*\(1, 15\)"):
        fr.onnx.load_weights(model, fr.LSTM(3, 5, peepholes=True))


@pytest.mark.parametrize("cell, options", [("gru", {"reset_after": False}),
                                           ("lstm", {"peepholes": True, "cell_clip": 2.0})])
def test_task_model_with_cell_options_to_onnx(cell, options):
    clf = fr.SequenceClassifier(hidden_size=6, embedding_dim=4, epochs=2, verbose=0, seed=0,
                                cell=cell, cell_options=options, bidirectional=True,
                                pooling="mean").fit(TEXTS, LABELS)
    X = ["good film a", "bad", "a good plot one", "unseen words here"]
    ids, lengths = clf.to_ids(X)
    graph = clf.to_onnx()
    probabilities = _session(graph).run(None, {"ids": ids, "lengths": lengths})[0]
    _close(probabilities, clf.predict_proba(X))
    node = _node(graph, cell.upper())
    names = {a.name for a in node.attribute}
    assert ("linear_before_reset" in names) if cell == "gru" else ("clip" in names)
