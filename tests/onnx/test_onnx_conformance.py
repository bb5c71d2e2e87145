"""ONNX's own node conformance cases for RNN, GRU and LSTM, run through fastrnn.

The cases are generated at test time by the installed ``onnx`` package: each
exporter in ``onnx.backend.test.case.node.{rnn,gru,lstm}`` builds a node,
inputs and the expected outputs of ONNX's reference implementation and hands
them to ``expect``; here ``expect`` is replaced by a function that records
them (nothing is copied into this repository).  Each node's weights are mapped
into a fastrnn layer with ``fastrnn._onnx_layout`` and the layer's outputs are
compared with the expected ones.

Every case must pass except those needing activations other than the
defaults (fastrnn's cells have fixed activations), which are reported with
the reason; today there are none.
"""

import importlib

import numpy as np
import pytest

import fastrnn as fr
from fastrnn import _onnx_layout
from helpers import ci_enabled

OPS = {"RNN": "rnn", "GRU": "gru", "LSTM": "lstm"}
DEFAULT_ACTIVATIONS = {"RNN": (["Tanh"], ["Relu"]), "GRU": (["Sigmoid", "Tanh"],),
                       "LSTM": (["Sigmoid", "Tanh", "Tanh"],)}


def _onnx():
    try:
        import onnx  # noqa: F401
        from onnx.backend.test.case import node  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        if ci_enabled():
            pytest.fail(f"onnx is required under CI ({exc})", pytrace=False)
        pytest.skip(f"onnx not installed ({exc})")
    import onnx
    return onnx


def collect_cases():
    """(name, node, inputs, outputs) of every exporter of the three operators."""
    onnx = _onnx()
    from onnx.backend.test.case.base import Base

    cases = []
    for op, module_name in OPS.items():
        module = importlib.import_module(f"onnx.backend.test.case.node.{module_name}")

        def record(node, inputs, outputs, name, **_):
            cases.append((name, node, list(inputs), list(outputs)))

        original = module.expect
        module.expect = record
        try:
            for cls in vars(module).values():
                if isinstance(cls, type) and issubclass(cls, Base) and cls is not Base:
                    for attr in sorted(vars(cls)):
                        if attr.startswith("export"):
                            np.random.seed(0)     # as onnx's own generator does
                            getattr(cls, attr)()
        finally:
            module.expect = original
    assert all(node.op_type in OPS for _, node, _, _ in cases)
    return onnx, cases


def _attributes(onnx, node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def unsupported_reason(op, attrs):
    """Why fastrnn cannot run a node, or None."""
    activations = attrs.get("activations")
    if activations is not None:
        names = [a.decode() if isinstance(a, bytes) else a for a in activations]
        per_direction = len(DEFAULT_ACTIVATIONS[op][0])
        if not any(names[i:i + per_direction] == list(default)
                   for default in DEFAULT_ACTIVATIONS[op]
                   for i in range(0, len(names), per_direction)):
            return f"non-default activations {names}"
    return None


def _reverse_rows(x, lengths):
    """Each row's first ``length`` steps reversed (time-major); padding stays."""
    out = np.zeros_like(x)
    for b, n in enumerate(lengths):
        out[:n, b] = x[:n, b][::-1]
    return out


def run_case(onnx, op, node, inputs):
    """fastrnn's outputs for one node, in ONNX's shapes: {output name: array}."""
    attrs = _attributes(onnx, node)
    present = [name for name in node.input if name]
    positional = ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"]
    values = {}
    it = iter(inputs)
    for slot, name in zip(positional, node.input):
        if name:
            values[slot] = next(it)
    assert len(values) == len(present)
    X, W, R = values["X"], values["W"], values["R"]
    layout = attrs.get("layout", 0)
    direction = attrs.get("direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    h0, c0 = values.get("initial_h"), values.get("initial_c")
    if layout == 1:   # batch-wise: X (B, T, E), states (B, D, H)
        X = X.transpose(1, 0, 2)
        h0 = None if h0 is None else h0.transpose(1, 0, 2)
        c0 = None if c0 is None else c0.transpose(1, 0, 2)
    T, B = X.shape[:2]
    D, H = W.shape[0], attrs["hidden_size"]
    lengths = values.get("sequence_lens")
    lengths = np.full(B, T) if lengths is None else np.asarray(lengths)

    kwargs = dict(bidirectional=direction == "bidirectional", bias="B" in values)
    if op == "RNN":
        acts = attrs.get("activations", [b"Tanh"])
        kwargs["nonlinearity"] = (acts[0].decode() if isinstance(acts[0], bytes)
                                  else acts[0]).lower()
        layer = fr.RNN(X.shape[2], H, **kwargs)
    elif op == "GRU":
        layer = fr.GRU(X.shape[2], H, reset_after=bool(attrs.get("linear_before_reset", 0)),
                       **kwargs)
    else:
        layer = fr.LSTM(X.shape[2], H, peepholes="P" in values, cell_clip=attrs.get("clip"),
                        input_forget=bool(attrs.get("input_forget", 0)), **kwargs)
    layer.load_state_dict(_onnx_layout.to_fastrnn(op, W, R, values.get("B"), values.get("P")))

    hx = h0 if op != "LSTM" else (
        None if h0 is None and c0 is None else
        (np.zeros((D, B, H), np.float32) if h0 is None else h0,
         np.zeros((D, B, H), np.float32) if c0 is None else c0))
    if direction == "reverse":   # a forward layer over each row's reversed steps
        out, state = layer(_reverse_rows(X, lengths), hx=hx, lengths=lengths)
        out = _reverse_rows(out, lengths)
    else:
        out, state = layer(X, hx=hx, lengths=lengths)
    h_n, c_n = state if op == "LSTM" else (state, None)
    Y = out.reshape(T, B, D, H).transpose(0, 2, 1, 3)     # (T, D, B, H)
    if layout == 1:
        Y, h_n = Y.transpose(2, 0, 1, 3), h_n.transpose(1, 0, 2)
        c_n = None if c_n is None else c_n.transpose(1, 0, 2)
    results = dict(zip(["Y", "Y_h", "Y_c"], [Y, h_n, c_n]))
    return {name: results[slot] for slot, name in zip(["Y", "Y_h", "Y_c"], node.output)
            if name}


def test_onnx_conformance_cases_all_pass():
    onnx, cases = collect_cases()
    counts = {op: sum(node.op_type == op for _, node, _, _ in cases) for op in OPS}
    assert all(n >= 6 for n in counts.values()), counts    # 18 with onnx 1.16 - 1.23
    passed, unsupported = [], {}
    for name, node, inputs, outputs in cases:
        op = node.op_type
        reason = unsupported_reason(op, _attributes(onnx, node))
        if reason is not None:
            unsupported[name] = reason
            continue
        actual = run_case(onnx, op, node, inputs)
        expected_names = [n for n in node.output if n]
        assert len(expected_names) == len(outputs), name
        for out_name, expected in zip(expected_names, outputs):
            np.testing.assert_allclose(actual[out_name], expected, rtol=1e-5, atol=1e-6,
                                       err_msg=f"{name}: output {out_name}")
        passed.append(name)
    print(f"\nONNX conformance: {len(passed)}/{len(cases)} passed; unsupported: "
          f"{unsupported or 'none'}")
    # Only non-default activations may be unsupported.
    assert all(r.startswith("non-default activations") for r in unsupported.values()), \
        unsupported
    assert {"test_gru_defaults", "test_lstm_with_peepholes", "test_gru_seq_length",
            "test_lstm_batchwise", "test_rnn_seq_length"} <= set(passed)


def test_conformance_mapping_would_fail_with_a_wrong_gate_order():
    """The comparison is sharp: swapping two LSTM gate blocks breaks a case."""
    onnx, cases = collect_cases()
    name, node, inputs, outputs = next(c for c in cases if c[0] == "test_lstm_with_peepholes")
    order = _onnx_layout.GATES["LSTM"]
    try:
        _onnx_layout.GATES["LSTM"] = (order[0], (2, 0, 3, 1))   # i and f swapped
        W = inputs[1].copy()
        W[0, :3] += 0.5        # the test weights are uniform: make i differ from o
        inputs = [inputs[0], W] + inputs[2:]
        actual = run_case(onnx, "LSTM", node, inputs)
    finally:
        _onnx_layout.GATES["LSTM"] = order
    right = run_case(onnx, "LSTM", node, inputs)
    assert np.abs(actual["Y_h"] - right["Y_h"]).max() > 1e-4


def test_layout_round_trip():
    """from_fastrnn inverts to_fastrnn for every operator, with peepholes."""
    rng = np.random.default_rng(0)
    for op, (gates, _) in _onnx_layout.GATES.items():
        H, E, D = 3, 2, 2
        W, R = rng.normal(size=(D, gates * H, E)), rng.normal(size=(D, gates * H, H))
        B = rng.normal(size=(D, 2 * gates * H))
        P = rng.normal(size=(D, 3 * H)) if op == "LSTM" else None
        state = _onnx_layout.to_fastrnn(op, W, R, B, P, layer=1)
        assert "weight_hh_l1_reverse" in state
        back = _onnx_layout.from_fastrnn(op, state, 1, D, H)
        for a, b in zip(back, (W, R, B, P)):
            if b is None:
                assert a is None
            else:
                np.testing.assert_array_equal(a, b)
