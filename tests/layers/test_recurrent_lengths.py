"""The recurrent layers' inputs: layouts and initial states, lengths
semantics, dropout, and calls that differ in shape or keep their arrays."""

import itertools

import numpy as np
import pytest

from helpers import CELLS, is_lstm, make_inputs, make_layer, pad_mask, run_fastrnn
from recurrent_cases import _assert_results_equal


# -- layouts and states -----------------------------------------------------------

@pytest.mark.parametrize("cell", CELLS)
def test_batch_first_equals_time_major(cell):
    rng = np.random.default_rng(7)
    tm = make_layer(cell, 3, 6, num_layers=2, bidirectional=True, dtype="float64", seed=1)
    bf = make_layer(cell, 3, 6, num_layers=2, bidirectional=True, dtype="float64",
                    batch_first=True, seed=1)
    inputs = make_inputs(tm, rng, 5, 4, with_hx=True, with_lengths=True)
    ref = run_fastrnn(tm, **inputs)
    swapped = dict(inputs, x=inputs["x"].transpose(1, 0, 2).copy(),
                   d_out=inputs["d_out"].transpose(1, 0, 2).copy())
    got = run_fastrnn(bf, **swapped)
    for key in ("out", "d_x"):
        got[key] = got[key].transpose(1, 0, 2)
    for key in ref:
        np.testing.assert_allclose(got[key], ref[key], rtol=1e-13, atol=1e-14, err_msg=key)


@pytest.mark.parametrize("cell", CELLS)
def test_hx_none_equals_zero_state(cell):
    rng = np.random.default_rng(8)
    layer = make_layer(cell, 3, 6, num_layers=2, bidirectional=True, dtype="float64", seed=1)
    inputs = make_inputs(layer, rng, 5, 4, with_lengths=True)
    ref = run_fastrnn(layer, **inputs)
    zeros = np.zeros((4, 4, 6))
    hx = (zeros, zeros.copy()) if is_lstm(layer) else zeros
    got = run_fastrnn(layer, **dict(inputs, hx=hx))
    for key in ref:
        np.testing.assert_allclose(got[key], ref[key], rtol=1e-13, atol=1e-14, err_msg=key)
    if is_lstm(layer):
        # a partial LSTM state: missing parts are zeros
        h0 = rng.standard_normal((4, 4, 6))
        full = run_fastrnn(layer, **dict(inputs, hx=(h0, zeros)))
        part = run_fastrnn(layer, **dict(inputs, hx=(h0, None)))
        for key in full:
            np.testing.assert_allclose(part[key], full[key], rtol=1e-13, atol=1e-14,
                                       err_msg=key)


@pytest.mark.parametrize("cell", CELLS)
def test_final_state_is_last_output(cell):
    """Unidirectional: h_n of the last layer is out at each row's last valid step;
    bidirectional: the reverse half of h_n is out at step 0."""
    rng = np.random.default_rng(9)
    layer = make_layer(cell, 3, 5, num_layers=2, bidirectional=True, dtype="float64", seed=2)
    inputs = make_inputs(layer, rng, 6, 5, with_hx=True, with_lengths=True)
    res = run_fastrnn(layer, **inputs, backward=False)
    out, h_n, lengths = res["out"], res["h_n"], inputs["lengths"]
    for b, n in enumerate(lengths):
        np.testing.assert_array_equal(h_n[2, b], out[n - 1, b, :5])
        np.testing.assert_array_equal(h_n[3, b], out[0, b, 5:])


# -- lengths semantics ------------------------------------------------------------

LENGTH_OPTIONS = list(itertools.product(CELLS, (1, 3), (False, True), (False, True)))


def _lengths_id(options):
    cell, layers, bi, bf = options
    return f"{cell}-L{layers}" + ("-bi" if bi else "") + ("-bf" if bf else "")


@pytest.mark.parametrize("options", LENGTH_OPTIONS, ids=_lengths_id)
def test_outputs_past_length_are_zero_and_padded_d_out_ignored(options):
    cell, layers, bi, bf = options
    rng = np.random.default_rng(10)
    layer = make_layer(cell, 3, 5, num_layers=layers, bidirectional=bi, batch_first=bf,
                       dtype="float64", seed=3)
    inputs = make_inputs(layer, rng, 7, 6, with_hx=True, with_lengths=True)
    lengths = inputs["lengths"]
    mask = pad_mask(layer, lengths, 7, 6)
    assert mask.any() and not mask.all()
    ref = run_fastrnn(layer, **inputs)
    assert np.all(ref["out"][mask] == 0.0)
    if cell != "rnn_relu":     # ReLU units are legitimately zero at valid steps
        assert np.all(ref["out"][~mask] != 0.0)
    assert np.all(ref["d_x"][mask] == 0.0)
    # garbage in d_out at padded positions changes no gradient at all
    noisy = inputs["d_out"].copy()
    noisy[mask] = 1e3 * rng.standard_normal(noisy[mask].shape)
    got = run_fastrnn(layer, **dict(inputs, d_out=noisy))
    _assert_results_equal(got, ref)
    # ... and neither does x at padded positions (forward and backward)
    x = inputs["x"].copy()
    x[mask] = rng.standard_normal(x[mask].shape)
    got = run_fastrnn(layer, **dict(inputs, x=x))
    for key in ref:
        if not key.startswith("grad:weight_ih_l0"):   # dW_ih of layer 0 sees x only
            np.testing.assert_allclose(got[key], ref[key], rtol=1e-13, atol=1e-14,
                                       err_msg=key)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_lengths_match_running_each_row_alone(cell, bidirectional):
    rng = np.random.default_rng(11)
    layer = make_layer(cell, 3, 5, num_layers=2, bidirectional=bidirectional,
                       dtype="float64", seed=4)
    T, B = 6, 5
    inputs = make_inputs(layer, rng, T, B, with_hx=True, with_lengths=True)
    ref = run_fastrnn(layer, **inputs)
    lengths = inputs["lengths"]
    for b, n in enumerate(lengths):
        def row_state(state):
            if state is None:
                return None
            if isinstance(state, tuple):
                return tuple(s[:, b:b + 1] for s in state)
            return state[:, b:b + 1]
        single = run_fastrnn(layer, inputs["x"][:n, b:b + 1],
                             hx=row_state(inputs["hx"]),
                             d_out=inputs["d_out"][:n, b:b + 1],
                             d_hn=row_state(inputs["d_hn"]))
        np.testing.assert_allclose(ref["out"][:n, b], single["out"][:, 0], rtol=1e-12,
                                   atol=1e-13)
        np.testing.assert_allclose(ref["d_x"][:n, b], single["d_x"][:, 0], rtol=1e-12,
                                   atol=1e-13)
        for key in ("h_n", "c_n", "d_h0", "d_c0"):
            if key in ref:
                np.testing.assert_allclose(ref[key][:, b], single[key][:, 0],
                                           rtol=1e-12, atol=1e-13, err_msg=key)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_parameter_grads_with_lengths_are_sum_of_rows(cell, bidirectional):
    rng = np.random.default_rng(12)
    layer = make_layer(cell, 3, 5, num_layers=2, bidirectional=bidirectional,
                       dtype="float64", seed=5)
    inputs = make_inputs(layer, rng, 6, 4, with_hx=True, with_lengths=True)
    ref = run_fastrnn(layer, **inputs)
    total = {k: 0.0 for k in ref if k.startswith("grad:")}
    for b, n in enumerate(inputs["lengths"]):
        hx = inputs["hx"]
        d_hn = inputs["d_hn"]
        pick = (lambda s: tuple(p[:, b:b + 1] for p in s)) if is_lstm(layer) else \
            (lambda s: s[:, b:b + 1])
        single = run_fastrnn(layer, inputs["x"][:n, b:b + 1], hx=pick(hx),
                             d_out=inputs["d_out"][:n, b:b + 1], d_hn=pick(d_hn))
        for k in total:
            total[k] = total[k] + single[k]
    for k in total:
        np.testing.assert_allclose(ref[k], total[k], rtol=1e-11, atol=1e-12, err_msg=k)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("batch_first", [False, True])
def test_lengths_all_full_equals_none(cell, batch_first):
    rng = np.random.default_rng(13)
    layer = make_layer(cell, 3, 5, num_layers=2, bidirectional=True,
                       batch_first=batch_first, dtype="float64", seed=6)
    inputs = make_inputs(layer, rng, 5, 4, with_hx=True)
    ref = run_fastrnn(layer, **inputs)
    for lengths in (np.full(4, 5), [5, 5, 5, 5], np.full(4, 5, dtype=np.int32)):
        _assert_results_equal(run_fastrnn(layer, **dict(inputs, lengths=lengths)), ref)


@pytest.mark.parametrize("cell", CELLS)
def test_lengths_row_order_does_not_matter(cell):
    """Permuting the batch permutes every per-row result (lengths sorted or not)."""
    rng = np.random.default_rng(14)
    layer = make_layer(cell, 3, 5, num_layers=2, bidirectional=True, dtype="float64", seed=7)
    inputs = make_inputs(layer, rng, 6, 5, with_hx=True, with_lengths=True)
    ref = run_fastrnn(layer, **inputs)
    perm = rng.permutation(5)

    def permute(value, axis):
        if value is None:
            return None
        if isinstance(value, tuple):
            return tuple(permute(v, axis) for v in value)
        return np.take(value, perm, axis=axis)

    got = run_fastrnn(layer, x=permute(inputs["x"], 1), hx=permute(inputs["hx"], 1),
                      lengths=inputs["lengths"][perm], d_out=permute(inputs["d_out"], 1),
                      d_hn=permute(inputs["d_hn"], 1))
    for key in ("out", "d_x", "h_n", "d_h0") + (("c_n", "d_c0") if is_lstm(layer) else ()):
        np.testing.assert_allclose(got[key], permute(ref[key], 1), rtol=1e-12,
                                   atol=1e-13, err_msg=key)
    for key in ref:
        if key.startswith("grad:"):
            np.testing.assert_allclose(got[key], ref[key], rtol=1e-12, atol=1e-13,
                                       err_msg=key)


# -- dropout (no torch needed) ----------------------------------------------------

@pytest.mark.parametrize("cell", CELLS)
def test_dropout_only_between_layers_and_only_in_training(cell):
    rng = np.random.default_rng(15)
    single = make_layer(cell, 3, 5, num_layers=1, dropout=0.5, dtype="float64", seed=8)
    plain = make_layer(cell, 3, 5, num_layers=1, dtype="float64", seed=8)
    inputs = make_inputs(single, rng, 5, 4, with_hx=True)
    # one layer: no layer to drop between, train mode is deterministic
    _assert_results_equal(run_fastrnn(single, **inputs), run_fastrnn(plain, **inputs))

    deep = make_layer(cell, 3, 5, num_layers=2, dropout=0.5, dtype="float64", seed=8)
    deep_plain = make_layer(cell, 3, 5, num_layers=2, dtype="float64", seed=8)
    inputs = make_inputs(deep, rng, 5, 4, with_hx=True)
    a = run_fastrnn(deep, **inputs)
    b = run_fastrnn(deep, **inputs)
    ref = run_fastrnn(deep_plain, **inputs)
    assert not np.array_equal(a["out"], b["out"]), "masks must be redrawn every forward"
    assert not np.allclose(a["out"], ref["out"])
    # the first layer's final state is before any dropout
    np.testing.assert_array_equal(a["h_n"][0], ref["h_n"][0])
    deep.eval()
    _assert_results_equal(run_fastrnn(deep, **inputs, backward=False),
                          run_fastrnn(deep_plain, **inputs, backward=False))


# -- calls that differ in shape, and arrays the caller keeps -----------------------

@pytest.mark.parametrize("cell", CELLS)
def test_varying_shapes_between_calls(cell):
    """One layer serving many (T, B, lengths) combinations, in any order, gives the
    same results as a fresh layer for each (nothing stale is reused)."""
    rng = np.random.default_rng(16)
    layer = make_layer(cell, 3, 7, num_layers=2, bidirectional=True, dtype="float64", seed=9)
    shapes = [(5, 3), (2, 7), (1, 1), (9, 2), (5, 3), (3, 20)] + [(k + 1, 2) for k in range(18)]
    batches = [make_inputs(layer, rng, T, B, with_hx=bool(k % 2), with_lengths=bool(k % 3))
               for k, (T, B) in enumerate(shapes)]
    expected = []
    for inputs in batches:
        fresh = make_layer(cell, 3, 7, num_layers=2, bidirectional=True, dtype="float64",
                           seed=9)
        expected.append(run_fastrnn(fresh, **inputs))
    for k in list(range(len(batches))) + [0, 3, 1]:
        _assert_results_equal(run_fastrnn(layer, **batches[k]), expected[k])


def _assert_gradients_of_forward_or_refused(layer, inputs, ref):
    """backward either gives the gradients of the forward that ran (``ref``)
    or refuses; silently different gradients fail."""
    try:
        d_x, _ = layer.backward(inputs["d_out"], inputs["d_hn"])
    except (RuntimeError, ValueError):
        return
    np.testing.assert_allclose(d_x, ref["d_x"], rtol=1e-12, atol=1e-13)
    for name, grad in layer.grads.items():
        np.testing.assert_allclose(grad, ref["grad:" + name], rtol=1e-12, atol=1e-13,
                                   err_msg=name)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layout", ["time_major", "batch_first"])
def test_input_modified_between_forward_and_backward(cell, layout):
    """Reusing the input buffer for the next batch before backward (common in data
    loaders) must not silently change the gradients: either backward gives the
    gradients of the forward that ran, or it refuses."""
    rng = np.random.default_rng(17)
    layer = make_layer(cell, 3, 5, num_layers=2, bidirectional=True, dtype="float64",
                       batch_first=layout == "batch_first", seed=10)
    inputs = make_inputs(layer, rng, 4, 3, with_hx=True)
    ref = run_fastrnn(layer, **inputs)
    x = inputs["x"].copy()
    hx = (tuple(np.copy(s) for s in inputs["hx"]) if is_lstm(layer)
          else inputs["hx"].copy())
    layer.zero_grad()
    layer.forward(x, hx=hx)
    x[...] = rng.standard_normal(x.shape)         # caller reuses its buffers
    for state in (hx if isinstance(hx, tuple) else (hx,)):
        state[...] = 0.0
    _assert_gradients_of_forward_or_refused(layer, inputs, ref)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layout", ["time_major", "batch_first"])
def test_output_modified_in_place_before_backward(cell, layout):
    """The returned out is read-only in training mode (backward reads it), so
    ``out += skip`` fails loudly; changing h_n (a copy) must not change the
    gradients.  In eval mode nothing is kept and out is writable."""
    rng = np.random.default_rng(18)
    layer = make_layer(cell, 3, 5, num_layers=2, bidirectional=True, dtype="float64",
                       batch_first=layout == "batch_first", seed=11)
    inputs = make_inputs(layer, rng, 4, 3, with_hx=True)
    ref = run_fastrnn(layer, **inputs)
    layer.zero_grad()
    out, state = layer.forward(inputs["x"], hx=inputs["hx"])
    with pytest.raises(ValueError, match="read-only"):
        out += 1.0
    for s in (state if isinstance(state, tuple) else (state,)):
        s *= 2.0
    _assert_gradients_of_forward_or_refused(layer, inputs, ref)
    layer.eval()
    out, _ = layer.forward(inputs["x"], hx=inputs["hx"])
    out += 1.0


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_read_only_input_is_kept_without_a_copy(cell):
    """A read-only input (a fastrnn layer's training-mode output) cannot change
    before backward, so the layer keeps it as it is; gradients are unchanged."""
    rng = np.random.default_rng(19)
    layer = make_layer(cell, 3, 5, dtype="float64", seed=12)
    inputs = make_inputs(layer, rng, 4, 3)
    ref = run_fastrnn(layer, **inputs)
    x = inputs["x"].copy()
    x.flags.writeable = False
    layer.zero_grad()
    layer.forward(x)
    kept = layer._cache.layers[0].input     # the first layer's input, as backward reads it
    assert np.shares_memory(kept, x)
    d_x, _ = layer.backward(inputs["d_out"], inputs["d_hn"])
    np.testing.assert_allclose(d_x, ref["d_x"], rtol=1e-12, atol=1e-13)
