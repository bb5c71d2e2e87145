"""Parity with ONNX Runtime's own RNN / GRU / LSTM operators on fastrnn's weights.

The ONNX graph is built here with onnx.helper: one operator per layer (both
directions in one node), chained through Transpose + Reshape ([T, D, B, H] ->
[T, B, D*H]), with ``sequence_lens`` and initial states.  PyTorch's gate order
(fastrnn's) is mapped to ONNX's: LSTM i,f,g,o -> i,o,f,c; GRU r,z,n -> z,r,h
(``linear_before_reset=1`` is PyTorch's GRU).  Outputs and final states are
compared.  Without onnxruntime/onnx these tests skip locally and fail under CI
(the same rule as torch: helpers.require_module).
"""

import numpy as np
import pytest

import fastrnn as fr
from helpers import CELLS, make_layer, require_module

# Gate blocks of fastrnn's weights in ONNX's order.
ONNX_GATES = {"lstm": [0, 3, 1, 2], "gru": [1, 0, 2], "rnn_tanh": [0], "rnn_relu": [0]}
OPS = {"lstm": "LSTM", "gru": "GRU", "rnn_tanh": "RNN", "rnn_relu": "RNN"}


def _onnx_weights(layer, cell, index):
    """W, R, B of one ONNX operator (all directions of layer ``index``)."""
    H = layer.hidden_size
    params = layer.state_dict()
    blocks = ONNX_GATES[cell]

    def reorder(array):
        return np.concatenate([array[g * H:(g + 1) * H] for g in blocks])

    W, R, B = [], [], []
    for direction in range(2 if layer.bidirectional else 1):
        suffix = f"l{index}" + ("_reverse" if direction else "")
        W.append(reorder(params[f"weight_ih_{suffix}"]))
        R.append(reorder(params[f"weight_hh_{suffix}"]))
        if layer.bias:
            B.append(np.concatenate([reorder(params[f"bias_ih_{suffix}"]),
                                     reorder(params[f"bias_hh_{suffix}"])]))
        else:
            B.append(np.zeros(2 * len(blocks) * H, np.float32))
    return [np.stack(part).astype(np.float32) for part in (W, R, B)]


def _graph(layer, cell, steps, batch):
    """An ONNX model: x, sequence_lens, h0 (, c0) -> y, h_n (, c_n)."""
    onnx = require_module("onnx", "the ONNX Runtime parity tests")
    from onnx import TensorProto, helper, numpy_helper

    H, L = layer.hidden_size, layer.num_layers
    D = 2 if layer.bidirectional else 1
    lstm = cell == "lstm"
    f32 = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info("x", f32, [steps, batch, layer.input_size]),
              helper.make_tensor_value_info("lens", TensorProto.INT32, [batch]),
              helper.make_tensor_value_info("h0", f32, [L * D, batch, H])]
    if lstm:
        inputs.append(helper.make_tensor_value_info("c0", f32, [L * D, batch, H]))
    nodes, inits = [], [numpy_helper.from_array(np.array([0, 0, -1], np.int64), "shape3")]
    layer_in, h_outs, c_outs = "x", [], []
    for index in range(L):
        W, R, B = _onnx_weights(layer, cell, index)
        names = [f"W{index}", f"R{index}", f"B{index}"]
        inits += [numpy_helper.from_array(a, n) for a, n in zip((W, R, B), names)]
        for state in ("h", "c") if lstm else ("h",):
            nodes.append(helper.make_node(
                "Slice", [f"{state}0", f"start{index}", f"end{index}"],
                [f"{state}0_{index}"]))
        inits += [numpy_helper.from_array(np.array([index * D], np.int64), f"start{index}"),
                  numpy_helper.from_array(np.array([(index + 1) * D], np.int64),
                                          f"end{index}")]
        attrs = {"hidden_size": H,
                 "direction": "bidirectional" if D == 2 else "forward"}
        if cell == "gru":
            attrs["linear_before_reset"] = 1
        if cell == "rnn_relu":
            attrs["activations"] = ["Relu"] * D
        op_inputs = [layer_in, *names, "lens", f"h0_{index}"]
        outputs = [f"y{index}", f"hn{index}"]
        if lstm:
            op_inputs.append(f"c0_{index}")
            outputs.append(f"cn{index}")
        nodes.append(helper.make_node(OPS[cell], op_inputs, outputs, **attrs))
        # [T, D, B, H] -> [T, B, D, H] -> [T, B, D * H]: the next layer's input.
        nodes.append(helper.make_node("Transpose", [f"y{index}"], [f"yt{index}"],
                                      perm=[0, 2, 1, 3]))
        nodes.append(helper.make_node("Reshape", [f"yt{index}", "shape3"], [f"out{index}"]))
        layer_in = f"out{index}"
        h_outs.append(f"hn{index}")
        c_outs.append(f"cn{index}")
    nodes.append(helper.make_node("Identity", [layer_in], ["y"]))
    nodes.append(helper.make_node("Concat", h_outs, ["h_n"], axis=0))
    state_shape = [L * D, batch, H]
    outputs = [helper.make_tensor_value_info("y", f32, [steps, batch, D * H]),
               helper.make_tensor_value_info("h_n", f32, state_shape)]
    if lstm:
        nodes.append(helper.make_node("Concat", c_outs, ["c_n"], axis=0))
        outputs.append(helper.make_tensor_value_info("c_n", f32, state_shape))
    graph = helper.make_graph(nodes, "fastrnn_parity", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _run_ort(model_bytes, feeds, threads=1):
    ort = require_module("onnxruntime", "the ONNX Runtime parity tests")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("use_lengths", [False, True])
def test_layers_match_onnxruntime_operators(cell, bidirectional, use_lengths):
    rng = np.random.default_rng(7)
    steps, batch, features, hidden, layers = 6, 4, 5, 8, 3
    layer = make_layer(cell, features, hidden, num_layers=layers,
                       bidirectional=bidirectional, seed=3).eval()
    D = 2 if bidirectional else 1
    x = rng.standard_normal((steps, batch, features)).astype(np.float32)
    lengths = np.array([6, 2, 5, 1], np.int32) if use_lengths else np.full(batch, steps,
                                                                          np.int32)
    h0 = rng.standard_normal((layers * D, batch, hidden)).astype(np.float32)
    c0 = rng.standard_normal((layers * D, batch, hidden)).astype(np.float32)
    lstm = cell == "lstm"
    hx = (h0, c0) if lstm else h0
    out, state = layer(x, hx, lengths=lengths if use_lengths else None)
    feeds = {"x": x, "lens": lengths, "h0": h0}
    if lstm:
        feeds["c0"] = c0
    got = _run_ort(_graph(layer, cell, steps, batch), feeds)
    h_n, c_n = state if lstm else (state, None)
    np.testing.assert_allclose(out, got[0], rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(h_n, got[1], rtol=1e-4, atol=2e-5)
    if lstm:
        np.testing.assert_allclose(c_n, got[2], rtol=1e-4, atol=2e-5)
    if use_lengths:   # padded steps are zero on both sides
        assert not out[2:, 1].any() and not got[0][2:, 1].any()


def test_no_bias_layer_matches_onnxruntime():
    rng = np.random.default_rng(0)
    layer = fr.GRU(3, 4, bias=False, seed=1).eval()
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    h0 = np.zeros((1, 2, 4), np.float32)
    out, h_n = layer(x)
    got = _run_ort(_graph(layer, "gru", 5, 2),
                   {"x": x, "lens": np.full(2, 5, np.int32), "h0": h0}, threads=2)
    np.testing.assert_allclose(out, got[0], rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(h_n, got[1], rtol=1e-4, atol=2e-5)
