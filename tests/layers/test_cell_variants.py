"""Cell variants: GRU(reset_after=False), LSTM(peepholes, cell_clip, proj_size).

Each variant is checked two ways: central finite differences in float64 for
every gradient, and an independent implementation for the forward pass
(ONNX Runtime's GRU/LSTM nodes built with onnx.helper, Keras's GRU written out
in numpy, ONNX's LSTM with clip in numpy, torch.nn.LSTM(proj_size) with
gradients).  Plus the options' validation, names, repr and the refusal of
PyTorch weights where PyTorch has no equivalent.
"""

import numpy as np
import pytest

import fastrnn as fr
from fastrnn import _onnx_layout
from helpers import (assert_results_close, ci_enabled, make_inputs, make_torch_layer,
                     run_fastrnn, run_torch)
from test_gradcheck import gradcheck

VARIANTS = {
    "gru_reset_before": (fr.GRU, dict(reset_after=False)),
    "lstm_peepholes": (fr.LSTM, dict(peepholes=True)),
    "lstm_clip": (fr.LSTM, dict(cell_clip=0.6)),
    "lstm_peepholes_clip": (fr.LSTM, dict(peepholes=True, cell_clip=0.8)),
    "lstm_proj": (fr.LSTM, dict(proj_size=3)),
    "lstm_proj_peepholes_clip": (fr.LSTM, dict(proj_size=2, peepholes=True, cell_clip=0.7)),
    "lstm_input_forget_peepholes": (fr.LSTM, dict(input_forget=True, peepholes=True)),
}

# (num_layers, bidirectional, lengths, hx, batch_first, bias)
OPTIONS = [
    (1, False, False, False, False, True),
    (1, True, True, True, False, False),
    (2, True, True, True, False, True),
    (3, False, True, True, True, True),
]


def require_onnxruntime():
    """(onnx, onnxruntime); skip locally / fail under CI when missing."""
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - depends on the environment
        if ci_enabled():
            pytest.fail(f"onnx and onnxruntime are required under CI ({exc})", pytrace=False)
        pytest.skip(f"onnx/onnxruntime not installed ({exc})")
    return onnx, onnxruntime


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# -- finite differences -------------------------------------------------------------

@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "L{}{}{}{}{}{}".format(
    o[0], "-bi" * o[1], "-len" * o[2], "-hx" * o[3], "-bf" * o[4], "-nobias" * (not o[5])))
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_gradcheck_variants(variant, options, rng):
    cls, extra = VARIANTS[variant]
    layers, bi, lengths, hx, bf, bias = options
    layer = cls(3, 5, num_layers=layers, bidirectional=bi, bias=bias, batch_first=bf,
                dtype="float64", seed=int(rng.integers(2 ** 31)), **extra)
    inputs = make_inputs(layer, rng, 5, 4, with_hx=hx, with_lengths=lengths, scale=1.5)
    gradcheck(layer, inputs, rng)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_gradcheck_variants_wide(variant, rng):
    """Hidden sizes past the micro-kernel's tile widths, several rows per thread."""
    cls, extra = VARIANTS[variant]
    extra = dict(extra, proj_size=17) if "proj_size" in extra else extra
    layer = cls(4, 37, num_layers=2, bidirectional=True, dtype="float64",
                seed=int(rng.integers(2 ** 31)), **extra)
    inputs = make_inputs(layer, rng, 4, 7, with_hx=True, with_lengths=True)
    gradcheck(layer, inputs, rng, x_limit=30, state_limit=20)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_threads_give_the_same_result(variant, rng):
    """Per-chunk partial sums (biases, peepholes) and split products agree."""
    cls, extra = VARIANTS[variant]
    layer = cls(3, 6, num_layers=2, bidirectional=True, dtype="float64", seed=3, **extra)
    inputs = make_inputs(layer, rng, 6, 9, with_hx=True, with_lengths=True)
    results = []
    for threads in (1, 3):
        fr.set_num_threads(threads)
        results.append(run_fastrnn(layer, inputs["x"], inputs["hx"], inputs["lengths"],
                                   inputs["d_out"], inputs["d_hn"]))
    for key in results[0]:
        np.testing.assert_allclose(results[1][key], results[0][key], rtol=1e-12,
                                   atol=1e-13, err_msg=key)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_inference_mode_matches_training_mode(variant, rng):
    """Eval mode reuses one timestep of gate buffer; same outputs as training."""
    cls, extra = VARIANTS[variant]
    layer = cls(3, 9, num_layers=2, bidirectional=True, dtype="float64", seed=5, **extra)
    inputs = make_inputs(layer, rng, 6, 5, with_hx=True, with_lengths=True)
    trained = run_fastrnn(layer, inputs["x"], inputs["hx"], inputs["lengths"], backward=False)
    layer.eval()
    inferred = run_fastrnn(layer, inputs["x"], inputs["hx"], inputs["lengths"], backward=False)
    for key in trained:
        np.testing.assert_array_equal(inferred[key], trained[key], err_msg=key)


# -- GRU reset_after=False: Keras's definition and ONNX Runtime -------------------

def keras_gru_reset_before(x, kernel, recurrent_kernel, bias, h0):
    """Keras GRU(reset_after=False) for one sequence batch (T, B, E), written
    from its definition: gate order z, r, h; kernel (E, 3H); one bias (3H,)."""
    H = recurrent_kernel.shape[0]
    h, outs = h0, []
    for x_t in x:
        xz, xr, xh = np.split(x_t @ kernel + bias, 3, axis=-1)
        z = sigmoid(xz + h @ recurrent_kernel[:, :H])
        r = sigmoid(xr + h @ recurrent_kernel[:, H:2 * H])
        hh = np.tanh(xh + (r * h) @ recurrent_kernel[:, 2 * H:])
        h = z * h + (1 - z) * hh
        outs.append(h)
    return np.stack(outs), h


def test_gru_reset_before_matches_keras_definition(rng):
    T, B, E, H = 6, 4, 3, 5
    kernel = rng.normal(size=(E, 3 * H))
    recurrent = rng.normal(size=(H, 3 * H)) * 0.5
    bias = rng.normal(size=3 * H)
    x, h0 = rng.normal(size=(T, B, E)), rng.normal(size=(B, H))
    expected_out, expected_h = keras_gru_reset_before(x, kernel, recurrent, bias, h0)

    # Keras [z, r, h] columns -> fastrnn [r, z, n] rows; Keras has one bias.
    order = [1, 0, 2]
    layer = fr.GRU(E, H, reset_after=False, dtype="float64")
    layer.load_state_dict({
        "weight_ih_l0": _onnx_layout._reorder(kernel.T, order, H),
        "weight_hh_l0": _onnx_layout._reorder(recurrent.T, order, H),
        "bias_ih_l0": _onnx_layout._reorder(bias, order, H),
        "bias_hh_l0": np.zeros(3 * H)})
    out, h_n = layer(x, hx=h0[None])
    np.testing.assert_allclose(out, expected_out, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(h_n[0], expected_h, rtol=1e-12, atol=1e-12)
    # The default (reset after the product) computes something else.
    default = fr.GRU(E, H, dtype="float64")
    default.load_state_dict(layer.state_dict())
    assert np.abs(default(x, hx=h0[None])[0] - out).max() > 1e-3


def ort_recurrent(op, attributes, X, W, R, B=None, seq_lens=None, init_h=None,
                  init_c=None, P=None):
    """Outputs (Y, Y_h[, Y_c]) of one ONNX RNN/GRU/LSTM node run by ONNX Runtime."""
    onnx, ort = require_onnxruntime()
    from onnx import TensorProto, helper

    names = ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"]
    values = [X, W, R, B, seq_lens, init_h, init_c, P][:8 if op == "LSTM" else 6]
    inputs, feeds = [], {}
    for name, value in zip(names, values):
        if value is None:
            inputs.append("")
            continue
        inputs.append(name)
        feeds[name] = value
    outputs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
    node = helper.make_node(op, inputs, outputs, **attributes)
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(n, TensorProto.INT32 if n == "sequence_lens"
                                       else TensorProto.FLOAT, v.shape)
         for n, v in feeds.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _onnx_inputs(op, rng, T, B, E, H, D, peepholes=False):
    gates = _onnx_layout.GATES[op][0]
    f32 = np.float32
    X = rng.normal(size=(T, B, E)).astype(f32)
    W = (rng.normal(size=(D, gates * H, E)) * 0.6).astype(f32)
    R = (rng.normal(size=(D, gates * H, H)) * 0.6).astype(f32)
    Bias = rng.normal(size=(D, 2 * gates * H)).astype(f32)
    P = rng.normal(size=(D, 3 * H)).astype(f32) if peepholes else None
    lengths = rng.integers(1, T + 1, size=B).astype(np.int32)
    lengths[0] = T
    h0 = (rng.normal(size=(D, B, H)) * 0.5).astype(f32)
    c0 = (rng.normal(size=(D, B, H)) * 0.5).astype(f32)
    return X, W, R, Bias, P, lengths, h0, c0


@pytest.mark.parametrize("bidirectional", [False, True])
def test_gru_reset_before_matches_onnxruntime(bidirectional, rng):
    T, B, E, H, D = 7, 5, 4, 6, 1 + bidirectional
    X, W, R, Bias, _, lengths, h0, _ = _onnx_inputs("GRU", rng, T, B, E, H, D)
    attributes = dict(hidden_size=H, linear_before_reset=0,
                      direction="bidirectional" if bidirectional else "forward")
    Y, Y_h = ort_recurrent("GRU", attributes, X, W, R, Bias, lengths, h0)
    layer = fr.GRU(E, H, bidirectional=bidirectional, reset_after=False)
    layer.load_state_dict(_onnx_layout.to_fastrnn("GRU", W, R, Bias))
    out, h_n = layer(X, hx=h0, lengths=lengths)
    # ONNX Y is (T, D, B, H); fastrnn's out (T, B, D * H).
    np.testing.assert_allclose(out, Y.transpose(0, 2, 1, 3).reshape(T, B, D * H),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(h_n, Y_h, rtol=1e-5, atol=1e-5)
    # linear_before_reset=1 is the default fastrnn GRU.
    Y1, _ = ort_recurrent("GRU", dict(attributes, linear_before_reset=1), X, W, R, Bias,
                          lengths, h0)
    default = fr.GRU(E, H, bidirectional=bidirectional)
    default.load_state_dict(layer.state_dict())
    np.testing.assert_allclose(default(X, hx=h0, lengths=lengths)[0],
                               Y1.transpose(0, 2, 1, 3).reshape(T, B, D * H),
                               rtol=1e-5, atol=1e-5)


# -- LSTM peepholes and clip: ONNX Runtime and ONNX's definition ------------------

@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("peepholes, clip, input_forget", [
    (True, None, False), (False, 0.9, False), (True, 0.9, False), (False, None, True),
    (True, 0.9, True)])
def test_lstm_peepholes_clip_match_onnxruntime(peepholes, clip, input_forget,
                                               bidirectional, rng):
    T, B, E, H, D = 6, 5, 4, 7, 1 + bidirectional
    X, W, R, Bias, P, lengths, h0, c0 = _onnx_inputs("LSTM", rng, T, B, E, H, D, peepholes)
    X *= 2   # drive pre-activations past the clip
    attributes = dict(hidden_size=H,
                      direction="bidirectional" if bidirectional else "forward")
    if clip is not None:
        attributes["clip"] = clip
    if input_forget:
        attributes["input_forget"] = 1
    Y, Y_h, Y_c = ort_recurrent("LSTM", attributes, X, W, R, Bias, lengths, h0, c0, P)
    layer = fr.LSTM(E, H, bidirectional=bidirectional, peepholes=peepholes, cell_clip=clip,
                    input_forget=input_forget)
    layer.load_state_dict(_onnx_layout.to_fastrnn("LSTM", W, R, Bias, P))
    out, (h_n, c_n) = layer(X, hx=(h0, c0), lengths=lengths)
    np.testing.assert_allclose(out, Y.transpose(0, 2, 1, 3).reshape(T, B, D * H),
                               rtol=1e-5, atol=2e-5)
    np.testing.assert_allclose(h_n, Y_h, rtol=1e-5, atol=2e-5)
    np.testing.assert_allclose(c_n, Y_c, rtol=1e-5, atol=2e-5)


def onnx_lstm_reference(x, W, R, Bias, P, h, c, clip):
    """ONNX's LSTM equations (gate order i, o, f, c; P = [p_i, p_o, p_f]) with
    ``clip`` applied to every gate pre-activation, one direction, float64."""
    p_i, p_o, p_f = np.split(P, 3)
    wb, rb = np.split(Bias, 2)
    cl = (lambda v: np.clip(v, -clip, clip)) if clip else (lambda v: v)
    outs = []
    for x_t in x:
        i, o, f, g = np.split(x_t @ W.T + h @ R.T + wb + rb, 4, axis=-1)
        i = sigmoid(cl(i + p_i * c))
        f = sigmoid(cl(f + p_f * c))
        c = f * c + i * np.tanh(cl(g))
        o = sigmoid(cl(o + p_o * c))
        h = o * np.tanh(c)
        outs.append(h)
    return np.stack(outs), h, c


def test_lstm_peepholes_clip_match_numpy_definition(rng):
    T, B, E, H = 5, 3, 4, 6
    W, R = rng.normal(size=(4 * H, E)), rng.normal(size=(4 * H, H))
    Bias, P = rng.normal(size=8 * H), rng.normal(size=3 * H)
    x, h0, c0 = rng.normal(size=(T, B, E)) * 2, rng.normal(size=(B, H)), rng.normal(size=(B, H))
    clip = 0.5
    exp_out, exp_h, exp_c = onnx_lstm_reference(x, W, R, Bias, P, h0, c0, clip)
    layer = fr.LSTM(E, H, peepholes=True, cell_clip=clip, dtype="float64")
    layer.load_state_dict(_onnx_layout.to_fastrnn("LSTM", W[None], R[None], Bias[None],
                                                  P[None]))
    out, (h_n, c_n) = layer(x, hx=(h0[None], c0[None]))
    np.testing.assert_allclose(out, exp_out, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(c_n[0], exp_c, rtol=1e-12, atol=1e-12)
    # clipping is active here: without it the result differs
    unclipped = onnx_lstm_reference(x, W, R, Bias, P, h0, c0, None)[0]
    assert np.abs(unclipped - exp_out).max() > 1e-2


def test_peephole_rows_are_input_forget_output():
    """Row 0 acts on i, row 1 on f, row 2 on o: a large peephole on one row
    saturates exactly that gate.  All weights 0, c_{t-1} = 1, g = tanh(1)."""
    layer = fr.LSTM(1, 1, peepholes=True, dtype="float64")
    state = {name: np.zeros_like(v) for name, v in layer.state_dict().items()}
    state["bias_ih_l0"][2] = 1.0
    x, hx = np.zeros((1, 1, 1)), (np.zeros((1, 1, 1)), np.ones((1, 1, 1)))
    g = np.tanh(1.0)
    expected = {0: (1.0, 0.5 + g), 1: (1.0, 1.0 + 0.5 * g), 2: (2.0, 0.5 + 0.5 * g)}
    for row, (o_factor, c_expected) in expected.items():
        state["weight_peephole_l0"] = np.zeros((3, 1))
        state["weight_peephole_l0"][row] = 60.0
        layer.load_state_dict(state)
        _, (h, c) = layer(x, hx=hx)
        assert c[0, 0, 0] == pytest.approx(c_expected, abs=1e-12), row
        # h = o * tanh(c) with o = 0.5, or 1 when row 2 saturates it
        assert h[0, 0, 0] == pytest.approx(0.5 * o_factor * np.tanh(c_expected),
                                           abs=1e-12), row


# -- LSTM proj_size: PyTorch parity ---------------------------------------------------

PROJ_CASES = [
    dict(layers=1, bi=False, lengths=False, dtype="float64"),
    dict(layers=2, bi=True, lengths=True, dtype="float64"),
    dict(layers=3, bi=False, lengths=True, dtype="float64", batch_first=True),
    dict(layers=2, bi=True, lengths=True, dtype="float32"),
    dict(layers=1, bi=True, lengths=False, dtype="float32", bias=False),
]


@pytest.mark.torch
@pytest.mark.parametrize("case", PROJ_CASES, ids=lambda c: "-".join(
    f"{k}{v}" for k, v in c.items()))
@pytest.mark.parametrize("sizes", [(7, 3), (40, 13)], ids=["H7P3", "H40P13"])
def test_proj_size_matches_torch(torch, case, sizes, rng):
    H, P = sizes
    layer = fr.LSTM(5, H, num_layers=case["layers"], bidirectional=case["bi"],
                    proj_size=P, dtype=case["dtype"], bias=case.get("bias", True),
                    batch_first=case.get("batch_first", False), seed=int(rng.integers(99)))
    module = make_torch_layer(torch, layer)
    assert module.proj_size == P
    inputs = make_inputs(layer, rng, 6, 5, with_hx=True, with_lengths=case["lengths"])
    args = (inputs["x"], inputs["hx"], inputs["lengths"], inputs["d_out"], inputs["d_hn"])
    ours = run_fastrnn(layer, *args)
    assert ours["out"].shape[-1] == P * (2 if case["bi"] else 1)
    assert ours["h_n"].shape[-1] == P and ours["c_n"].shape[-1] == H
    assert_results_close(ours, run_torch(torch, module, *args), case["dtype"], str(case))


@pytest.mark.torch
def test_proj_size_loads_torch_state_dict(torch):
    module = torch.nn.LSTM(4, 9, num_layers=2, proj_size=5, bidirectional=True).double()
    state = module.state_dict()
    assert "weight_hr_l1_reverse" in state
    layer = fr.LSTM(4, 9, num_layers=2, proj_size=5, bidirectional=True, dtype="float64")
    assert list(layer.state_dict()) == list(state)     # same names, same order
    layer.load_state_dict(state)
    x = np.random.default_rng(0).normal(size=(3, 2, 4))
    expected = module(torch.from_numpy(x))[0].detach().numpy()
    np.testing.assert_allclose(layer(x)[0], expected, rtol=1e-12, atol=1e-12)


# -- options: validation, names, repr, torch refusal ----------------------------------

def test_parameter_names_and_shapes():
    lstm = fr.LSTM(3, 6, num_layers=2, bidirectional=True, proj_size=4, peepholes=True)
    shapes = {name: p.shape for name, p in lstm.named_parameters()}
    assert shapes["weight_hr_l0"] == (4, 6)
    assert shapes["weight_hr_l1_reverse"] == (4, 6)
    assert shapes["weight_hh_l1"] == (24, 4)
    assert shapes["weight_ih_l1"] == (24, 8)        # D * proj_size inputs
    assert shapes["weight_peephole_l0"] == (3, 6)
    assert shapes["weight_peephole_l1_reverse"] == (3, 6)
    gru = fr.GRU(3, 6, reset_after=False)
    assert {n: p.shape for n, p in gru.named_parameters()} == \
        {n: p.shape for n, p in fr.GRU(3, 6).named_parameters()}


def test_repr_shows_variants():
    assert "reset_after=False" in repr(fr.GRU(2, 3, reset_after=False))
    assert "reset_after" not in repr(fr.GRU(2, 3))
    text = repr(fr.LSTM(2, 5, proj_size=2, peepholes=True, cell_clip=3))
    assert "proj_size=2" in text and "peepholes=True" in text and "cell_clip=3.0" in text


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(proj_size=6), ValueError, "proj_size"),
    (dict(proj_size=7), ValueError, "hidden_size - 1 = 5"),
    (dict(proj_size=-1), ValueError, "proj_size"),
    (dict(proj_size=2.0), TypeError, "proj_size"),
    (dict(proj_size=True), TypeError, "proj_size"),
    (dict(cell_clip=0), ValueError, "cell_clip"),
    (dict(cell_clip=-1.0), ValueError, "cell_clip"),
    (dict(cell_clip=float("nan")), ValueError, "cell_clip"),
    (dict(cell_clip="1"), TypeError, "cell_clip"),
    (dict(peepholes=1), TypeError, "peepholes"),
    (dict(input_forget=None), TypeError, "input_forget"),
])
def test_lstm_bad_options(kwargs, error, words):
    with pytest.raises(error, match=words):
        fr.LSTM(3, 6, **kwargs)


def test_gru_bad_reset_after():
    with pytest.raises(TypeError, match="reset_after"):
        fr.GRU(3, 4, reset_after="no")


def test_proj_state_shapes_checked():
    layer = fr.LSTM(3, 6, proj_size=2)
    x = np.zeros((2, 1, 3), np.float32)
    with pytest.raises(ValueError, match=r"hx\[0\]"):
        layer(x, hx=(np.zeros((1, 1, 6)), np.zeros((1, 1, 6))))
    with pytest.raises(ValueError, match=r"hx\[1\]"):
        layer(x, hx=(np.zeros((1, 1, 2)), np.zeros((1, 1, 2))))
    out, (h, c) = layer(x, hx=(np.zeros((1, 1, 2)), np.zeros((1, 1, 6))))
    assert out.shape == (2, 1, 2) and h.shape == (1, 1, 2) and c.shape == (1, 1, 6)


@pytest.mark.torch
@pytest.mark.parametrize("make", [
    lambda torch: (torch.nn.GRU(3, 4), fr.GRU(3, 4, reset_after=False), "reset_after=False"),
    lambda torch: (torch.nn.LSTM(3, 4), fr.LSTM(3, 4, cell_clip=2.0), "cell_clip"),
])
def test_torch_weights_refused_where_torch_has_no_equivalent(torch, make):
    module, layer, words = make(torch)
    before = layer.state_dict()
    with pytest.raises(ValueError, match=words):
        layer.load_state_dict(module.state_dict())
    for name, value in layer.state_dict().items():
        np.testing.assert_array_equal(value, before[name])   # nothing changed
    # numpy arrays with the same names load (e.g. converted Keras/ONNX weights)
    layer.load_state_dict({k: v.numpy() for k, v in module.state_dict().items()})


@pytest.mark.torch
def test_torch_lstm_into_peephole_lstm_names_the_option(torch):
    layer = fr.LSTM(3, 4, peepholes=True)
    with pytest.raises(ValueError, match="peepholes=True"):
        layer.load_state_dict(torch.nn.LSTM(3, 4).state_dict())


# -- task models ------------------------------------------------------------------------

@pytest.mark.parametrize("cell, options", [
    ("gru", {"reset_after": False}),
    ("lstm", {"peepholes": True, "cell_clip": 3.0, "proj_size": 5}),
])
def test_task_models_take_cell_options(cell, options, tmp_path):
    """A classifier learns with the variant; saving and loading keeps it."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(240, 6, 2)).astype(np.float32)
    y = (X[:, :, 0].sum(axis=1) > 0).astype(int)
    model = fr.SequenceClassifier(cell=cell, hidden_size=12, seed=0, cell_options=options)
    model.fit(X, y, epochs=8, batch_size=16, lr=0.02, verbose=0)
    layers = [m for m in model.modules() if isinstance(m, (fr.GRU, fr.LSTM))]
    assert len(layers) == 1
    for name, value in options.items():
        assert getattr(layers[0], name) == value
    assert (model.predict(X) == y).mean() > 0.85
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = fr.load(path)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def test_task_model_bad_cell_option():
    X = np.zeros((8, 3, 2), np.float32)
    model = fr.SequenceClassifier(cell="gru", hidden_size=4, cell_options={"peepholes": True})
    with pytest.raises(TypeError, match="cell_options.*peepholes"):
        model.fit(X, np.arange(8) % 2, epochs=1, verbose=0)
