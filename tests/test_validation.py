"""Bad input is refused with ValueError/TypeError naming the argument; odd but
valid input (non-contiguous, Fortran order, other float width, lists) is
converted and gives exactly the result of the plain equivalent."""

import re

import numpy as np
import pytest

import fastrnn as fr
from helpers import CELLS, is_lstm, make_inputs, make_layer, run_fastrnn

T, B, E, H = 5, 3, 4, 6


def _layer(cell="gru", **options):
    options.setdefault("seed", 0)
    return make_layer(cell, E, H, **options)


def _x(dtype=np.float32, shape=(T, B, E)):
    return np.random.default_rng(0).standard_normal(shape).astype(dtype)


def _state(layer, batch=B, dtype=None):
    D = 2 if layer.bidirectional else 1
    shape = (layer.num_layers * D, batch, layer.hidden_size)
    h = np.random.default_rng(1).standard_normal(shape).astype(dtype or layer.dtype)
    return (h, h.copy()) if is_lstm(layer) else h


def _name(name):
    """Regex matching the argument name as a word (``x`` must not match ``max``)."""
    return rf"(?<![A-Za-z_]){re.escape(name)}(?![A-Za-z_])"


# -- constructor --------------------------------------------------------------------

@pytest.mark.parametrize("cls", [fr.RNN, fr.LSTM, fr.GRU])
@pytest.mark.parametrize("arg", ["input_size", "hidden_size", "num_layers"])
@pytest.mark.parametrize("value", [0, -1, 2.5, True, "3", None])
def test_non_positive_or_non_int_sizes(cls, arg, value):
    kwargs = {"input_size": 3, "hidden_size": 4, "num_layers": 1}
    kwargs[arg] = value
    with pytest.raises(ValueError, match=_name(arg)):
        cls(**kwargs)


@pytest.mark.parametrize("value", ["sigmoid", "Tanh", "", None, 1])
def test_unknown_nonlinearity(value):
    with pytest.raises(ValueError, match="nonlinearity"):
        fr.RNN(3, 4, nonlinearity=value)


@pytest.mark.parametrize("cls", [fr.RNN, fr.LSTM, fr.GRU])
@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5, float("nan"), "0.5", None, True])
def test_dropout_outside_unit_interval(cls, value):
    with pytest.raises(ValueError, match="dropout"):
        cls(3, 4, num_layers=2, dropout=value)


@pytest.mark.parametrize("value", [0.0, 0, 0.5, 0.999])
def test_dropout_inside_unit_interval_is_accepted(value):
    layer = fr.GRU(3, 4, num_layers=2, dropout=value)
    assert layer.dropout == value


@pytest.mark.parametrize("cls", [fr.RNN, fr.LSTM, fr.GRU])
@pytest.mark.parametrize("dtype", ["float16", "int32", "complex64", "nonsense", "half",
                                   np.float16, np.int64, "float128"])
def test_unsupported_layer_dtype(cls, dtype):
    with pytest.raises((TypeError, ValueError), match="dtype"):
        cls(3, 4, dtype=dtype)


@pytest.mark.parametrize("dtype,expected", [("float32", np.float32), ("float64", np.float64),
                                            (np.float32, np.float32),
                                            (np.dtype("float64"), np.float64)])
def test_supported_layer_dtypes(dtype, expected):
    layer = fr.LSTM(3, 4, dtype=dtype)
    assert layer.dtype == expected
    assert all(p.dtype == expected for p in layer.parameters())
    out, (h, c) = layer(_x(expected, (2, 1, 3)))
    assert out.dtype == expected and h.dtype == expected and c.dtype == expected


# -- x ----------------------------------------------------------------------------

@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("shape", [(T, E), (E,), (1, T, B, E)])
def test_x_wrong_ndim(cell, shape):
    with pytest.raises(ValueError, match=_name("x")):
        _layer(cell)(np.zeros(shape, np.float32))


def test_x_scalar():
    with pytest.raises(ValueError, match=_name("x")):
        _layer()(np.float32(1.0))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("features", [E - 1, E + 1, 1])
def test_x_wrong_feature_size(cell, batch_first, features):
    layer = _layer(cell, batch_first=batch_first)
    with pytest.raises(ValueError, match=_name("x")) as info:
        layer(np.zeros((T, B, features), np.float32))
    assert "input_size" in str(info.value) or str(E) in str(info.value)


@pytest.mark.parametrize("shape", [(0, B, E), (T, 0, E)])
def test_x_empty(shape):
    with pytest.raises(ValueError, match=_name("x")):
        _layer()(np.zeros(shape, np.float32))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_x_not_finite(cell, bad, dtype):
    x = _x(dtype)
    x[2, 1, 3] = bad
    with pytest.raises(ValueError, match=_name("x")):
        _layer(cell)(x)


@pytest.mark.parametrize("cell", CELLS)
def test_x_float16_is_type_error(cell):
    with pytest.raises(TypeError, match=_name("x")) as info:
        _layer(cell)(_x(np.float16))
    assert "float16" in str(info.value)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.bool_, np.complex64])
def test_x_non_float_is_type_error(dtype):
    with pytest.raises(TypeError, match=_name("x")):
        _layer()(np.ones((T, B, E), dtype=dtype))


def test_x_none_or_strings_are_type_errors():
    layer = _layer()
    with pytest.raises(TypeError, match=_name("x")):
        layer(None)
    with pytest.raises(TypeError, match=_name("x")):
        layer(np.full((T, B, E), "a"))


# -- hx ---------------------------------------------------------------------------

@pytest.mark.parametrize("cell", ["rnn_tanh", "gru"])
@pytest.mark.parametrize("delta", [(1, 0, 0), (0, 1, 0), (0, 0, 1), (-1, 0, 0)])
def test_hx_wrong_shape(cell, delta):
    layer = _layer(cell, num_layers=2, bidirectional=True)
    h = _state(layer)
    shape = tuple(s + d for s, d in zip(h.shape, delta))
    with pytest.raises(ValueError, match=_name("hx")):
        layer(_x(), hx=np.zeros(shape, np.float32))


def test_hx_wrong_ndim():
    layer = _layer()
    with pytest.raises(ValueError, match=_name("hx")):
        layer(_x(), hx=np.zeros((B, H), np.float32))


@pytest.mark.parametrize("which", [0, 1])
@pytest.mark.parametrize("delta", [(1, 0, 0), (0, 1, 0), (0, 0, -1)])
def test_lstm_hx_part_wrong_shape(which, delta):
    layer = _layer("lstm", num_layers=2)
    h0, c0 = _state(layer)
    parts = [h0, c0]
    parts[which] = np.zeros(tuple(s + d for s, d in zip(h0.shape, delta)), np.float32)
    with pytest.raises(ValueError, match=r"hx\[" + str(which) + r"\]"):
        layer(_x(), hx=tuple(parts))


@pytest.mark.parametrize("value", ["array", "triple", "single"])
def test_lstm_hx_must_be_pair(value):
    layer = _layer("lstm")
    h0, c0 = _state(layer)
    hx = {"array": h0, "triple": (h0, c0, c0), "single": (h0,)}[value]
    with pytest.raises(TypeError, match=_name("hx")):
        layer(_x(), hx=hx)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_hx_not_finite(cell, bad):
    layer = _layer(cell)
    hx = _state(layer)
    target = hx[1] if is_lstm(layer) else hx
    target[0, 1, 2] = bad
    with pytest.raises(ValueError, match=r"hx(\[1\])?"):
        layer(_x(), hx=hx)


@pytest.mark.parametrize("cell", CELLS)
def test_hx_float16_and_int_are_type_errors(cell):
    layer = _layer(cell)
    for dtype in (np.float16, np.int32):
        hx = _state(layer, dtype=dtype)
        with pytest.raises(TypeError, match=_name("hx")):
            layer(_x(), hx=hx)


# -- lengths ----------------------------------------------------------------------

@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("lengths", [[0, 2, 3], [1, 2, T + 1], [-1, 2, 3], [T, T, 100]])
def test_lengths_out_of_range(cell, lengths):
    with pytest.raises(ValueError, match="lengths"):
        _layer(cell)(_x(), lengths=np.array(lengths))


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("lengths", [[1, 2], [1, 2, 3, 4], [[1, 2, 3]], 3])
def test_lengths_wrong_count_or_shape(batch_first, lengths):
    layer = _layer(batch_first=batch_first)
    x = _x(shape=(B, T, E) if batch_first else (T, B, E))
    with pytest.raises(ValueError, match="lengths"):
        layer(x, lengths=np.array(lengths))


@pytest.mark.parametrize("lengths", [np.array([1.0, 2.0, 3.0]), [1.5, 2, 3],
                                     np.array([True, True, True]), ["1", "2", "3"]])
def test_lengths_non_integer_dtype(lengths):
    with pytest.raises(TypeError, match="lengths"):
        _layer()(_x(), lengths=lengths)


def test_lengths_batch_first_counts_rows():
    """With batch_first, lengths count along dim 1 of x (the time axis) per row."""
    layer = _layer(batch_first=True)
    x = _x(shape=(B, T, E))
    layer(x, lengths=[T, 1, 2])      # fine: B entries in 1..T
    with pytest.raises(ValueError, match="lengths"):
        layer(x, lengths=[T + 1, 1, 2])


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8,
                                   np.uint64])
def test_lengths_any_integer_dtype(dtype):
    layer = _layer(dtype="float64")
    x = _x(np.float64)
    lengths = np.array([T, 2, 1])
    expected, _ = layer(x, lengths=lengths)
    got, _ = layer(x, lengths=lengths.astype(dtype))
    np.testing.assert_array_equal(got, expected)
    got, _ = layer(x, lengths=list(map(int, lengths)))
    np.testing.assert_array_equal(got, expected)
    strided = np.zeros(2 * B, dtype=dtype)
    strided[::2] = lengths
    got, _ = layer(x, lengths=strided[::2])
    np.testing.assert_array_equal(got, expected)


# -- backward ---------------------------------------------------------------------

def _trained(cell, **options):
    layer = _layer(cell, **options)
    x = _x(layer.dtype, (B, T, E) if layer.batch_first else (T, B, E))
    out, _ = layer(x)
    return layer, out


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_backward_wrong_d_out_shape(cell, batch_first, bidirectional):
    layer, out = _trained(cell, batch_first=batch_first, bidirectional=bidirectional)
    for delta in [(1, 0, 0), (0, 1, 0), (0, 0, 1), (0, 0, -1)]:
        shape = tuple(s + d for s, d in zip(out.shape, delta))
        with pytest.raises(ValueError, match="d_out"):
            layer.backward(np.ones(shape, out.dtype))
    with pytest.raises(ValueError, match="d_out"):
        layer.backward(np.ones(out.shape[1:], out.dtype))
    # a refused call does not consume the stored forward pass
    d_x, _ = layer.backward(np.ones(out.shape, out.dtype))
    assert d_x.shape[:2] == out.shape[:2]


def test_backward_d_out_shape_message_is_coherent_for_batch_first():
    """batch_first: the message reports the expected and received shapes either as
    the caller lays them out (B, T, D*H), or as time-major shapes while saying so."""
    layer, out = _trained("gru", batch_first=True, bidirectional=True)
    assert out.shape == (B, T, 2 * H)
    bad = np.ones((B, T - 1, 2 * H), np.float32)
    with pytest.raises(ValueError, match="d_out") as info:
        layer.backward(bad)
    message = str(info.value)
    callers = str((B, T, 2 * H)) in message and str(bad.shape) in message
    time_major = (str((T, B, 2 * H)) in message and str((T - 1, B, 2 * H)) in message
                  and "time-major" in message)
    assert callers or time_major, message


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_backward_d_out_not_finite(cell, bad):
    layer, out = _trained(cell)
    d_out = np.ones(out.shape, out.dtype)
    d_out[1, 2, 3] = bad
    with pytest.raises(ValueError, match="d_out"):
        layer.backward(d_out)


@pytest.mark.parametrize("cell", CELLS)
def test_backward_d_out_type_errors(cell):
    layer, out = _trained(cell)
    with pytest.raises(TypeError, match="d_out"):
        layer.backward(np.ones(out.shape, np.float16))
    with pytest.raises(TypeError, match="d_out"):
        layer.backward(np.ones(out.shape, np.int32))
    with pytest.raises(TypeError, match="d_out"):
        layer.backward(None)


@pytest.mark.parametrize("cell", CELLS)
def test_backward_d_hn_wrong_shape_or_not_finite(cell):
    layer, out = _trained(cell, num_layers=2)
    good = _state(layer)
    bad_shape = np.zeros((2, B + 1, H), np.float32)
    not_finite = (good[0] if is_lstm(layer) else good).copy()
    not_finite[1, 0, 0] = np.nan
    if is_lstm(layer):
        cases = [(bad_shape, good[1]), (good[0], bad_shape), (not_finite, good[1]),
                 (good[0], not_finite)]
    else:
        cases = [bad_shape, not_finite]
    for d_hn in cases:
        with pytest.raises(ValueError, match="d_hn"):
            layer.backward(np.ones(out.shape, out.dtype), d_hn)
    if is_lstm(layer):
        with pytest.raises(TypeError, match="d_hn"):
            layer.backward(np.ones(out.shape, out.dtype), good[0])


@pytest.mark.parametrize("cell", CELLS)
def test_backward_without_forward(cell):
    layer = _layer(cell)
    with pytest.raises(RuntimeError, match="forward"):
        layer.backward(np.ones((T, B, H), np.float32))


# -- conversions that must work ---------------------------------------------------

def _assert_same(a, b):
    assert set(a) == set(b)
    for key in a:
        if a[key] is None:
            assert b[key] is None, key
        else:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _variants(array, kind):
    """An array with the same values as ``array`` but a different memory layout."""
    if kind == "strided":
        wide = np.zeros(array.shape[:-1] + (2 * array.shape[-1],), array.dtype)
        wide[..., ::2] = array
        view = wide[..., ::2]
    elif kind == "fortran":
        view = np.asfortranarray(array)
    elif kind == "transposed":
        view = np.ascontiguousarray(np.swapaxes(array, 0, 1)).swapaxes(0, 1)
    elif kind == "reversed":
        view = np.ascontiguousarray(array[::-1])[::-1]
    assert np.array_equal(view, array)
    if kind != "fortran" or array.ndim > 1:
        assert not view.flags.c_contiguous or array.size <= 1
    return view


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("kind", ["strided", "fortran", "transposed", "reversed"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_non_contiguous_inputs_match_contiguous(cell, kind, batch_first):
    layer = _layer(cell, num_layers=2, bidirectional=True, batch_first=batch_first)
    rng = np.random.default_rng(5)
    inputs = make_inputs(layer, rng, T, B, with_hx=True, with_lengths=True)
    expected = run_fastrnn(layer, **inputs)

    def convert(value):
        if isinstance(value, tuple):
            return tuple(convert(v) for v in value)
        if value is None or value.ndim < 2:
            return value
        return _variants(value, kind)

    strided = {k: (v if k == "lengths" else convert(v)) for k, v in inputs.items()}
    _assert_same(run_fastrnn(layer, **strided), expected)


def test_x_strided_slice_of_wider_array():
    """x[:, ::2] of a wider batch gives the result of the compacted batch."""
    layer = _layer("lstm", dtype="float64")
    wide = _x(np.float64, (T, 2 * B, E))
    expected = run_fastrnn(layer, np.ascontiguousarray(wide[:, ::2]), backward=False)
    _assert_same(run_fastrnn(layer, wide[:, ::2], backward=False), expected)


@pytest.mark.parametrize("cell", CELLS)
def test_float64_inputs_to_float32_layer(cell):
    layer = _layer(cell, num_layers=2, bidirectional=True, dtype="float32")
    rng = np.random.default_rng(6)
    inputs = make_inputs(layer, rng, T, B, with_hx=True, with_lengths=True)

    def widen(value):
        if isinstance(value, tuple):
            return tuple(widen(v) for v in value)
        if value is None or value.dtype.kind != "f":
            return value
        return value.astype(np.float64)

    expected = run_fastrnn(layer, **inputs)
    got = run_fastrnn(layer, **{k: widen(v) for k, v in inputs.items()})
    _assert_same(got, expected)
    assert got["out"].dtype == np.float32 and got["d_x"].dtype == np.float32


@pytest.mark.parametrize("cell", CELLS)
def test_float32_inputs_to_float64_layer(cell):
    layer = _layer(cell, dtype="float64")
    x32 = _x(np.float32)
    expected = run_fastrnn(layer, x32.astype(np.float64), backward=False)
    got = run_fastrnn(layer, x32, backward=False)
    _assert_same(got, expected)
    assert got["out"].dtype == np.float64


def test_nested_lists_are_accepted():
    layer = _layer("rnn_tanh", dtype="float64")
    x = _x(np.float64)
    expected = run_fastrnn(layer, x, backward=False)
    _assert_same(run_fastrnn(layer, x.tolist(), backward=False), expected)


def test_inputs_are_not_modified():
    layer = _layer("lstm", num_layers=2, bidirectional=True, dtype="float64")
    rng = np.random.default_rng(9)
    inputs = make_inputs(layer, rng, T, B, with_hx=True, with_lengths=True)
    copies = {k: (tuple(np.copy(v) for v in val) if isinstance(val, tuple)
                  else (None if val is None else np.copy(val)))
              for k, val in ((k, inputs[k]) for k in inputs)}
    run_fastrnn(layer, **inputs)
    for key, value in inputs.items():
        if isinstance(value, tuple):
            for a, b in zip(value, copies[key]):
                np.testing.assert_array_equal(a, b, err_msg=key)
        elif value is not None:
            np.testing.assert_array_equal(value, copies[key], err_msg=key)
