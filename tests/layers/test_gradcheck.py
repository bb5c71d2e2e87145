"""Central finite differences in float64 against fastrnn's backward.

loss = sum(out * R) + sum(h_n * S) (+ sum(c_n * S_c) for the LSTM), with random
R and S.  Checked: d_x (every entry, or a random subset for bigger inputs),
d_h0 / d_c0, and a random subset of the entries of every parameter, drawn
from every gate block so that each gate's gradient is exercised.
"""

import numpy as np
import pytest

from helpers import (CELLS, central_differences, loss_value, make_inputs, make_layer,
                     run_fastrnn)

EPS = 1e-6
RTOL = 1e-6
ATOL = 1e-8     # round-off floor of a central difference on an O(10) loss

# (num_layers, bidirectional, lengths, hx, batch_first, bias)
OPTIONS = [
    (1, False, False, False, False, True),
    (1, True, True, True, False, False),
    (2, True, True, True, False, True),
    (2, False, True, False, True, False),
    (3, True, False, True, True, True),
    (3, False, True, True, False, True),
    (2, True, True, False, True, True),
]


def _options_id(options):
    layers, bi, lengths, hx, bf, bias = options
    parts = [f"L{layers}"]
    parts += [tag for flag, tag in ((bi, "bi"), (lengths, "len"), (hx, "hx"),
                                    (bf, "bf")) if flag]
    if not bias:
        parts.append("nobias")
    return "-".join(parts)


def _subset(rng, size, limit):
    """All flat indices when ``size <= limit``, else ``limit`` random ones."""
    if size <= limit:
        return np.arange(size)
    return rng.choice(size, size=limit, replace=False)


def _param_indices(rng, layer, name, shape):
    """Flat indices of a parameter: a few rows from each gate block (every
    entry of a peephole or projection matrix: they have no gate blocks)."""
    if "peephole" in name or "weight_hr" in name:
        return np.arange(int(np.prod(shape)))
    H = layer.hidden_size
    gates = shape[0] // H
    per_block = max(2, 6 // gates)
    indices = []
    for g in range(gates):
        rows = rng.integers(g * H, (g + 1) * H, size=per_block)
        if len(shape) == 1:
            indices += list(rows)
        else:
            cols = rng.integers(0, shape[1], size=per_block)
            indices += list(np.ravel_multi_index((rows, cols), shape))
    return np.unique(indices)


def _numeric(array, indices, loss):
    return central_differences(array, loss, EPS, indices)


def _check(analytic, numeric, what):
    np.testing.assert_allclose(analytic, numeric, rtol=RTOL, atol=ATOL, err_msg=what)


def gradcheck(layer, inputs, rng, x_limit=60, state_limit=40, before_forward=None):
    """Compare the analytic gradients of ``layer`` with central differences.

    ``before_forward`` runs before every forward (used to replay dropout masks).
    """
    R = inputs["d_out"]
    S = inputs["d_hn"]
    x = np.array(inputs["x"])
    hx = inputs["hx"]
    if hx is not None:
        hx = tuple(np.array(v) for v in hx) if isinstance(hx, tuple) else np.array(hx)
    lengths = inputs["lengths"]

    if before_forward:
        before_forward()
    analytic = run_fastrnn(layer, x, hx=hx, lengths=lengths, d_out=R, d_hn=S)
    # the loss of the stored forward agrees with a recomputation
    def loss():
        if before_forward:
            before_forward()
        return loss_value(run_fastrnn(layer, x, hx=hx, lengths=lengths, backward=False),
                          R, S)

    assert np.isclose(loss(), loss_value(analytic, R, S), rtol=1e-13, atol=1e-13)

    idx = _subset(rng, x.size, x_limit)
    _check(analytic["d_x"].reshape(-1)[idx], _numeric(x, idx, loss), "d_x")

    if hx is not None:
        states = hx if isinstance(hx, tuple) else (hx,)
        for state, key in zip(states, ("d_h0", "d_c0")):
            idx = _subset(rng, state.size, state_limit)
            _check(analytic[key].reshape(-1)[idx], _numeric(state, idx, loss), key)

    for name, param in layer.named_parameters():
        idx = _param_indices(rng, layer, name, param.shape)
        _check(analytic["grad:" + name].reshape(-1)[idx], _numeric(param, idx, loss),
               f"grad {name}")
    return analytic


@pytest.mark.parametrize("options", OPTIONS, ids=_options_id)
@pytest.mark.parametrize("cell", CELLS)
def test_gradcheck(cell, options, rng):
    layers, bi, lengths, hx, bf, bias = options
    layer = make_layer(cell, 3, 5, num_layers=layers, bidirectional=bi, bias=bias,
                       batch_first=bf, dtype="float64", seed=int(rng.integers(2 ** 31)))
    inputs = make_inputs(layer, rng, 5, 3, with_hx=hx, with_lengths=lengths)
    gradcheck(layer, inputs, rng)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("hidden_size", [33, 70])
def test_gradcheck_blas_path(cell, hidden_size, rng):
    """Hidden sizes that take the BLAS path for the recurrent product."""
    layer = make_layer(cell, 4, hidden_size, num_layers=2, bidirectional=True,
                       dtype="float64", seed=int(rng.integers(2 ** 31)))
    inputs = make_inputs(layer, rng, 4, 3, with_hx=True, with_lengths=True)
    gradcheck(layer, inputs, rng, x_limit=30, state_limit=20)


@pytest.mark.parametrize("cell", CELLS)
def test_gradcheck_single_step_and_single_row(cell, rng):
    layer = make_layer(cell, 2, 4, num_layers=2, bidirectional=True, dtype="float64",
                       seed=int(rng.integers(2 ** 31)))
    inputs = make_inputs(layer, rng, 1, 1, with_hx=True)
    gradcheck(layer, inputs, rng)


@pytest.mark.parametrize("cell", CELLS)
def test_gradcheck_all_rows_shorter_than_T(cell, rng):
    """Every row ends before T (no row uses the last step)."""
    layer = make_layer(cell, 3, 4, num_layers=2, bidirectional=True, dtype="float64",
                       seed=int(rng.integers(2 ** 31)))
    inputs = make_inputs(layer, rng, 6, 4, with_hx=True)
    inputs["lengths"] = np.array([3, 1, 5, 2])
    gradcheck(layer, inputs, rng)


@pytest.mark.parametrize("cell", CELLS)
def test_gradcheck_lstm_partial_hx_and_d_hn(cell, rng):
    """d_hn=None for all cells; for the LSTM also hx=(h0, c0) with d_hn=(None, d_cn)."""
    layer = make_layer(cell, 3, 4, num_layers=2, bidirectional=True, dtype="float64",
                       seed=int(rng.integers(2 ** 31)))
    inputs = make_inputs(layer, rng, 4, 3, with_hx=True, with_lengths=True,
                         with_d_hn=False)
    gradcheck(layer, inputs, rng)
    if cell == "lstm":
        inputs = make_inputs(layer, rng, 4, 3, with_hx=True, with_lengths=True)
        inputs["d_hn"] = (None, inputs["d_hn"][1])
        gradcheck(layer, inputs, rng)


@pytest.mark.parametrize("cell", CELLS)
def test_gradcheck_with_dropout_mask_replayed(cell, rng):
    """Train-mode dropout between layers: the backward pass applies the same mask.

    White-box: the mask comes from the layer's generator, whose state is
    restored before every forward so all forwards draw the same mask.
    """
    layer = make_layer(cell, 3, 5, num_layers=3, dropout=0.5, bidirectional=True,
                       dtype="float64", seed=int(rng.integers(2 ** 31)))
    generator = getattr(layer, "_rng", None)
    assert generator is not None, "test relies on layer._rng (the dropout generator)"
    state = generator.bit_generator.state

    def replay():
        generator.bit_generator.state = state

    inputs = make_inputs(layer, rng, 4, 3, with_hx=True, with_lengths=True)
    gradcheck(layer, inputs, rng, before_forward=replay)
