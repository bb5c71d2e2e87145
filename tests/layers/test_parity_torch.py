"""Parity with torch.nn.RNN / LSTM / GRU.

Each case builds a fastrnn layer, loads its state_dict into the matching torch
layer and compares out, h_n (c_n), d_x, d_h0 (d_c0) and every parameter
gradient for loss = sum(out * d_out) + sum(h_n * d_hn) (+ sum(c_n * d_cn)).

Lengths go through pack_padded_sequence(enforce_sorted=False) and
pad_packed_sequence(total_length=T) on the torch side.

These tests are marked ``torch``: without torch they skip locally and fail
when CI is set (see conftest.py / helpers.require_torch).
"""

import itertools
import random
import sys

import numpy as np
import pytest

import helpers
from helpers import (CELLS, assert_results_close, make_inputs, make_layer,
                     make_torch_layer, run_fastrnn, run_torch)

def _case_id(case):
    parts = [case["cell"], f"H{case['H']}", f"L{case['layers']}", case["dtype"][-2:]]
    for flag, tag in (("bidirectional", "bi"), ("lengths", "len"), ("hx", "hx"),
                      ("batch_first", "bf")):
        if case[flag]:
            parts.append(tag)
    if not case["bias"]:
        parts.append("nobias")
    parts.append(f"T{case['T']}B{case['B']}E{case['E']}")
    return "-".join(parts)


def _finish(case, rnd):
    case.setdefault("T", rnd.choice([1, 2, 3, 5, 8]))
    case.setdefault("B", rnd.choice([1, 2, 3, 5, 7]))
    case.setdefault("E", rnd.choice([1, 3, 6, 11]))
    case["seed"] = rnd.randrange(2 ** 31)
    return case


def _exhaustive_grid():
    """Every combination of the structural options, float64, small hidden sizes."""
    rnd = random.Random(20240601)
    cases = []
    for cell, layers, bi, lengths, hx, bf, bias in itertools.product(
            CELLS, (1, 2, 3), (False, True), (False, True), (False, True),
            (False, True), (True, False)):
        cases.append(_finish(dict(cell=cell, H=rnd.choice([4, 16]), layers=layers,
                                  bidirectional=bi, lengths=lengths, hx=hx,
                                  batch_first=bf, bias=bias, dtype="float64"), rnd))
    return cases


def _random_grid():
    """Each cell x hidden size (in-house and BLAS paths) x dtype, options drawn at random."""
    rnd = random.Random(777)
    cases = []
    for cell, H, dtype in itertools.product(CELLS, (4, 16, 70, 130),
                                            ("float32", "float64")):
        for _ in range(2):
            cases.append(_finish(dict(
                cell=cell, H=H, dtype=dtype, layers=rnd.choice([1, 2, 3]),
                bidirectional=rnd.random() < 0.5, lengths=rnd.random() < 0.6,
                hx=rnd.random() < 0.5, batch_first=rnd.random() < 0.4,
                bias=rnd.random() < 0.8), rnd))
    return cases


def _boundary_grid():
    """Hidden sizes on both sides of the in-house / BLAS switch (G*H*H <= 64*64)."""
    rnd = random.Random(99)
    limits = {"rnn_tanh": 64, "rnn_relu": 64, "lstm": 32, "gru": 36}
    cases = []
    for cell, limit in limits.items():
        for H, dtype in itertools.product((limit, limit + 1), ("float32", "float64")):
            cases.append(_finish(dict(cell=cell, H=H, dtype=dtype, layers=2,
                                      bidirectional=True, lengths=True, hx=True,
                                      batch_first=rnd.random() < 0.5, bias=True,
                                      T=6, B=5), rnd))
    return cases


EXHAUSTIVE = _exhaustive_grid()
RANDOM = _random_grid()
BOUNDARY = _boundary_grid()


def _check_case(torch, case, input_scale=1.0):
    rng = np.random.default_rng(case["seed"])
    layer = make_layer(case["cell"], case["E"], case["H"], num_layers=case["layers"],
                       bias=case["bias"], batch_first=case["batch_first"],
                       bidirectional=case["bidirectional"], dtype=case["dtype"],
                       seed=case["seed"])
    module = make_torch_layer(torch, layer)
    inputs = make_inputs(layer, rng, case["T"], case["B"], with_hx=case["hx"],
                         with_lengths=case["lengths"], scale=input_scale)
    ours = run_fastrnn(layer, **inputs)
    theirs = run_torch(torch, module, **inputs)
    assert_results_close(ours, theirs, layer.dtype, context=_case_id(case))


@pytest.mark.torch
@pytest.mark.parametrize("case", EXHAUSTIVE, ids=_case_id)
def test_parity_all_option_combinations(torch, case):
    _check_case(torch, case)


@pytest.mark.torch
@pytest.mark.parametrize("case", RANDOM, ids=_case_id)
def test_parity_random_grid(torch, case):
    _check_case(torch, case)


@pytest.mark.torch
@pytest.mark.parametrize("case", BOUNDARY, ids=_case_id)
def test_parity_small_blas_boundary(torch, case):
    _check_case(torch, case)


@pytest.mark.torch
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_parity_large_inputs_saturating(torch, cell, dtype):
    """Inputs large enough to saturate tanh/sigmoid (exercises the float32 math)."""
    case = _finish(dict(cell=cell, H=24, dtype=dtype, layers=2, bidirectional=True,
                        lengths=True, hx=True, batch_first=False, bias=True,
                        T=7, B=4, E=5), random.Random(5))
    _check_case(torch, case, input_scale=8.0)


@pytest.mark.torch
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_parity_wide_hidden(torch, cell, dtype):
    """H above 256: the recurrent product's K dimension is blocked in the kernel."""
    case = _finish(dict(cell=cell, H=300, dtype=dtype, layers=1, bidirectional=True,
                        lengths=True, hx=True, batch_first=False, bias=True,
                        T=4, B=13, E=9), random.Random(13))
    _check_case(torch, case)


@pytest.mark.torch
@pytest.mark.parametrize("cell", CELLS)
def test_parity_long_sequence_many_rows(torch, cell):
    """A longer sequence and a larger batch than the grids use (float32, lengths)."""
    case = _finish(dict(cell=cell, H=48, dtype="float32", layers=2, bidirectional=True,
                        lengths=True, hx=True, batch_first=True, bias=True,
                        T=40, B=19, E=20), random.Random(11))
    _check_case(torch, case)


@pytest.mark.torch
@pytest.mark.parametrize("cell", CELLS)
def test_parity_without_d_hn(torch, cell):
    """d_hn=None (only d_out drives the loss) matches torch."""
    rng = np.random.default_rng(3)
    layer = make_layer(cell, 4, 9, num_layers=2, bidirectional=True, dtype="float64",
                       seed=3)
    module = make_torch_layer(torch, layer)
    inputs = make_inputs(layer, rng, 5, 3, with_hx=True, with_lengths=True,
                         with_d_hn=False)
    assert_results_close(run_fastrnn(layer, **inputs), run_torch(torch, module, **inputs),
                         layer.dtype, context=cell)


@pytest.mark.torch
def test_parity_lstm_only_cell_state_gradient(torch):
    """LSTM with d_hn = (None, d_cn): only the cell state feeds the loss."""
    rng = np.random.default_rng(4)
    layer = make_layer("lstm", 3, 7, num_layers=2, bidirectional=True, dtype="float64",
                       seed=4)
    module = make_torch_layer(torch, layer)
    inputs = make_inputs(layer, rng, 6, 4, with_hx=True, with_lengths=True)
    inputs["d_out"] = np.zeros_like(inputs["d_out"])
    inputs["d_hn"] = (None, inputs["d_hn"][1])
    assert_results_close(run_fastrnn(layer, **inputs), run_torch(torch, module, **inputs),
                         layer.dtype, context="lstm d_cn only")


@pytest.mark.torch
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dropout_eval_matches_torch_and_no_dropout(torch, cell, dtype):
    """With dropout > 0, eval mode is exactly the no-dropout computation."""
    rng = np.random.default_rng(8)
    layer = make_layer(cell, 5, 12, num_layers=3, dropout=0.4, bidirectional=True,
                       dtype=dtype, seed=8)
    plain = make_layer(cell, 5, 12, num_layers=3, dropout=0.0, bidirectional=True,
                       dtype=dtype, seed=1)
    plain.load_state_dict(layer.state_dict())
    inputs = make_inputs(layer, rng, 6, 4, with_hx=True, with_lengths=True)

    # Train mode with dropout differs from the deterministic result...
    train_out = run_fastrnn(layer, **inputs)["out"]
    plain_result = run_fastrnn(plain, **inputs)
    assert not np.allclose(train_out, plain_result["out"])

    # ... eval mode is bit-identical to a dropout-free layer,
    layer.eval()
    eval_result = run_fastrnn(layer, backward=False, **inputs)
    for key in ("out", "h_n") + (("c_n",) if cell == "lstm" else ()):
        np.testing.assert_array_equal(eval_result[key], plain_result[key], err_msg=key)

    # ... and matches torch in eval mode (where torch's dropout is off too).
    module = make_torch_layer(torch, layer)
    assert not module.training
    theirs = run_torch(torch, module, backward=False, **inputs)
    assert_results_close(eval_result, theirs, layer.dtype, context="dropout eval")


@pytest.mark.torch
@pytest.mark.parametrize("cell", CELLS)
def test_torch_tensors_accepted_as_inputs(torch, cell):
    """x, hx, lengths and d_out may be torch tensors; same result as numpy."""
    rng = np.random.default_rng(12)
    layer = make_layer(cell, 3, 6, num_layers=2, bidirectional=True, dtype="float64", seed=2)
    inputs = make_inputs(layer, rng, 5, 3, with_hx=True, with_lengths=True)
    expected = run_fastrnn(layer, **inputs)

    def tensor(value):
        if value is None:
            return None
        if isinstance(value, tuple):
            return tuple(tensor(v) for v in value)
        return torch.from_numpy(np.array(value))

    got = run_fastrnn(layer, **{k: tensor(v) for k, v in inputs.items()})
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


# -- the CI rule itself (not marked torch: they must run everywhere) ---------------

@pytest.mark.parametrize("ci_value", ["true", "1"])
def test_require_torch_fails_under_ci_when_missing(monkeypatch, ci_value):
    monkeypatch.setitem(sys.modules, "torch", None)   # makes `import torch` fail
    monkeypatch.setenv("CI", ci_value)
    with pytest.raises(pytest.fail.Exception, match="torch"):
        helpers.require_torch()


def test_require_torch_skips_without_ci_when_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="torch"):
        helpers.require_torch()

