"""The compiled per-(layer, direction) kernel object owns the cell layout,
variants included: widths, parameter shapes, its pooled workspace, and clear
errors for options a cell does not have or variant weights left out."""

import numpy as np
import pytest

import fastrnn as fr
from fastrnn._kernels._dispatch import _recurrent as kernels

Cell = kernels.Cell


def kernel(cell, hidden=6, **options):
    return kernels.DirectionKernel(cell, False, 5, hidden, 1, np.float64, **options)


@pytest.mark.parametrize("cell, options, width, gate_rows, state, shapes", [
    (Cell.RNN_TANH, {}, 6, 6, 6, {}),
    (Cell.GRU, {}, 24, 18, 6, {}),
    (Cell.GRU, dict(reset_before=True), 24, 18, 6, {}),
    (Cell.LSTM, {}, 24, 24, 6, {}),
    (Cell.LSTM, dict(peepholes=True), 24, 24, 6, {"weight_peephole": (3, 6)}),
    # projected: gate columns [i, f, g, o, m, dh] = 5 C + H
    (Cell.LSTM, dict(proj_size=4), 34, 24, 4, {"weight_hr": (4, 6)}),
])
def test_layout_and_parameter_shapes(cell, options, width, gate_rows, state, shapes):
    k = kernel(cell, **options)
    assert (k.width, k.gate_rows, k.state_size, k.hidden_size) == (width, gate_rows, state, 6)
    expected = {"weight_ih": (gate_rows, 5), "weight_hh": (gate_rows, state),
                "bias_ih": (gate_rows,), "bias_hh": (gate_rows,), **shapes}
    assert k.parameter_shapes(True) == expected
    assert list(k.parameter_shapes(True)) == [r for r in (
        "weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr", "weight_peephole")
        if r in expected]
    assert "bias_ih" not in k.parameter_shapes(False)


def test_layer_parameters_come_from_the_kernels():
    layer = fr.LSTM(5, 6, num_layers=2, bidirectional=True, proj_size=4, peepholes=True,
                    dtype="float64")
    for k, name in [(0, "l0"), (3, "l1_reverse")]:
        shapes = layer._kernels[k].parameter_shapes(True)
        for role, shape in shapes.items():
            assert layer.state_dict()[f"{role}_{name}"].shape == shape
    assert layer._kernels[2].input_size == 2 * 4      # D * proj_size below
    assert layer._kernels[3].out_offset == 4


@pytest.mark.parametrize("cell, options, word", [
    (Cell.GRU, dict(proj_size=2), "proj_size"),
    (Cell.RNN_TANH, dict(peepholes=True), "peepholes"),
    (Cell.GRU, dict(clip=1.0), "clip"),
    (Cell.RNN_RELU, dict(input_forget=True), "input_forget"),
    (Cell.LSTM, dict(reset_before=True), "reset_before"),
    (Cell.LSTM, dict(proj_size=6), "proj_size"),
    (Cell.LSTM, dict(clip=-1.0), "clip"),
])
def test_options_a_cell_lacks_are_refused(cell, options, word):
    with pytest.raises(ValueError, match=word):
        kernel(cell, **options)


def _inputs(k, steps=3, batch=4, rng=np.random.default_rng(0)):
    x = rng.standard_normal((steps, batch, 5))
    w_ih = rng.standard_normal((k.gate_rows, 5)) * 0.3
    w_hh = rng.standard_normal((k.gate_rows, k.state_size)) * 0.3
    lengths = np.full(batch, steps, np.intc)
    chunks = np.array([0, batch], np.intc)
    h = np.zeros((batch, k.state_size))
    c = np.zeros((batch, k.hidden_size))
    out = np.zeros((steps, batch, k.out_width))
    return x, w_ih, w_hh, lengths, chunks, h, c, out


def test_missing_variant_weights_are_a_clear_error():
    k = kernel(Cell.LSTM, proj_size=4, peepholes=True)
    x, w_ih, w_hh, lengths, chunks, h, c, out = _inputs(k)
    peep = np.zeros((3, 6))
    with pytest.raises(ValueError, match="w2"):
        k.forward(x, w_ih, w_hh, None, None, lengths, chunks, h, c, out, None, 1, peep=peep)
    with pytest.raises(ValueError, match="peep"):
        k.forward(x, w_ih, w_hh, None, None, lengths, chunks, h, c, out, None, 1,
                  w2=np.zeros((4, 6)))


@pytest.mark.parametrize("cell, options", [
    (Cell.GRU, dict(reset_before=True)),
    (Cell.LSTM, dict(proj_size=4, peepholes=True, clip=2.0)),
])
def test_workspace_is_reused_and_results_repeat(cell, options):
    """The packed second product, the per-row pointers, the peephole sums and
    the rest of the workspace are the kernel's, reused across calls; reusing
    them changes no result."""
    k = kernel(cell, **options)
    x, w_ih, w_hh, lengths, chunks, h, c, out = _inputs(k)
    rng = np.random.default_rng(1)
    w2 = rng.standard_normal((4, 6)) * 0.3 if k.proj_size else None
    peep = rng.standard_normal((3, 6)) * 0.3 if k.peepholes else None
    results, pools = [], []
    for _ in range(2):
        h_run, c_run, out_run = h.copy(), c.copy(), out.copy()
        tape = k.take_tape(x.shape[0], x.shape[1], h_run, c_run)
        k.forward(x, w_ih, w_hh, None, None, lengths, chunks, h_run, c_run, out_run,
                  tape, 1, w2=w2, peep=peep)
        dw_ih, dw_hh = np.zeros_like(w_ih), np.zeros_like(w_hh)
        dw2 = np.zeros_like(w2) if w2 is not None else None
        dpeep = np.zeros_like(peep) if peep is not None else None
        dh, dc = np.ones_like(h), np.ones_like(c)
        k.backward(tape, x, w_ih, w_hh, lengths, chunks, False, out_run,
                   np.ones_like(out_run), dh, dc, None, False, dw_ih, dw_hh, None, None, 1,
                   w2=w2, peep=peep, dw2=dw2, dpeep=dpeep)
        k.recycle(tape)
        pools.append((k._packed, dict(k._workspace)))
        results.append([out_run, dw_ih, dw_hh, dh] + [a for a in (dw2, dpeep) if a is not None])
    (packed, work), (packed_again, work_again) = pools
    assert packed_again is packed and len(packed[4]) > 0 and len(packed[5]) > 0
    assert "h_prevs" in work and ("peep_acc" in work) == bool(k.peepholes)
    assert all(work_again[name] is array for name, array in work.items())
    for first, second in zip(*results):
        np.testing.assert_array_equal(first, second)
