"""Sizes beyond a C int: products split into BLAS calls of at most 2**31 - 1.

A real 2**31-row Linear needs 16 GB (input and output), more than CI has, so
the tests lower the split threshold (``_runtime.set_blas_int_limit``, for
tests only) and check that ordinary products computed through many split
calls -- rows of C, columns of C, and the reduction dimension accumulated
with beta = 1 -- and through the plain-loop path (a leading dimension above
the limit) equal numpy's.  Before the fix the row count was a C int: 2**31
rows gave zeros (forward) or a BLAS error (backward); the last test runs
that exact case when FASTRNN_BIG_TESTS=1 and the machine has the memory.
"""

import os

import numpy as np
import pytest

import fastrnn as fr
from fastrnn._kernels import _runtime


@pytest.fixture
def blas_limit():
    """Set the split threshold for one test; the real one comes back after."""
    before = _runtime.get_blas_int_limit()
    yield _runtime.set_blas_int_limit
    _runtime.set_blas_int_limit(before)


def _linear_reference(layer, x, d_y):
    w = layer.state_dict()["weight"].astype(np.float64)
    y = x.astype(np.float64) @ w.T
    if layer.bias:
        y += layer.state_dict()["bias"]
    return y, d_y @ w, d_y.T @ x, d_y.sum(axis=0)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 1e-4)])
@pytest.mark.parametrize("limit,in_features,out_features", [
    (7, 5, 3),      # rows of C and the reduction over rows split into blocks of 7
    (4, 6, 5),      # leading dimensions above the limit: the plain-loop path
    (1, 1, 1),      # every call a single element
])
def test_linear_split_products_equal_numpy(blas_limit, threads, dtype, tol, limit,
                                           in_features, out_features):
    rng = np.random.default_rng(limit)
    fr.set_num_threads(threads)
    layer = fr.Linear(in_features, out_features, dtype=dtype, seed=0)
    x = rng.standard_normal((53, in_features)).astype(dtype)
    d_y = rng.standard_normal((53, out_features)).astype(dtype)
    blas_limit(limit)
    y = layer(x)
    d_x = layer.backward(d_y)
    y_ref, d_x_ref, d_w_ref, d_b_ref = _linear_reference(layer, x, d_y)
    np.testing.assert_allclose(y, y_ref, rtol=tol, atol=tol)
    np.testing.assert_allclose(d_x, d_x_ref, rtol=tol, atol=tol)
    np.testing.assert_allclose(layer.grads["weight"], d_w_ref, rtol=tol, atol=tol)
    np.testing.assert_allclose(layer.grads["bias"], d_b_ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("limit", [5, 3])
def test_recurrent_gradients_through_split_products(blas_limit, cell, limit):
    """The recurrent weight gradients (sum over T*B rows) go through the same
    split gemm: the result must not depend on where the products are cut."""
    rng = np.random.default_rng(3)
    layer = getattr(fr, cell)(4, 3, dtype="float64", seed=1)
    x = rng.standard_normal((6, 5, 4))
    d_out = rng.standard_normal((6, 5, 3))

    def run():
        layer.zero_grad()
        out = layer(x)
        out = out[0] if isinstance(out, tuple) else out
        d_x = layer.backward(d_out)
        d_x = d_x[0] if isinstance(d_x, tuple) else d_x
        return out.copy(), d_x.copy(), {k: v.copy() for k, v in layer.grads.items()}

    expected = run()
    blas_limit(limit)
    got = run()
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-12, atol=1e-12)
    for name in expected[2]:
        np.testing.assert_allclose(got[2][name], expected[2][name], rtol=1e-12, atol=1e-12)


def test_bias_gradient_over_more_rows_than_one_block():
    """The bias gradient sums rows in blocks of 2**20 (its ones vector stays
    small instead of one value per row)."""
    rng = np.random.default_rng(4)
    layer = fr.Linear(1, 2, dtype="float64", seed=0)
    x = rng.standard_normal((2 ** 20 + 37, 1))
    d_y = rng.standard_normal((2 ** 20 + 37, 2))
    layer(x)
    layer.backward(d_y, input_grad=False)
    np.testing.assert_allclose(layer.grads["bias"], d_y.sum(axis=0), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(layer.grads["weight"], d_y.T @ x, rtol=1e-9, atol=1e-9)


def test_limit_setter_refuses_bad_values(blas_limit):
    with pytest.raises(ValueError, match="limit"):
        blas_limit(0)
    with pytest.raises(ValueError, match="limit"):
        blas_limit(2 ** 31)


@pytest.mark.skipif(os.environ.get("FASTRNN_BIG_TESTS") != "1",
                    reason="needs about 9 GB of RAM and a minute; set FASTRNN_BIG_TESTS=1")
def test_linear_on_more_than_2_31_rows():
    """The issue's reproduction at full size.  np.zeros pages that are never
    written cost no memory, so only the arrays the kernels fill (8 GB each,
    one at a time) are real."""
    from fastrnn._kernels import _dense

    rows = 2 ** 31 + 3
    lin = fr.Linear(1, 1)
    lin.load_state_dict({"weight": np.array([[2.0]]), "bias": np.array([1.0])})
    lin.eval()
    x = np.zeros((rows, 1), np.float32)
    x[0], x[-1] = 5, 7
    y = lin(x)
    assert (y[0, 0], y[2 ** 31, 0], y[-1, 0]) == (11, 1, 15)       # was 0.0
    del y
    d_y = np.zeros((rows, 1), np.float32)
    d_y[0], d_y[-1] = 1, 1
    d_x = np.zeros((rows, 1), np.float32)
    d_weight, d_bias = np.zeros((1, 1), np.float32), np.zeros(1, np.float32)
    _dense.linear_backward["float"](x, lin.state_dict()["weight"], d_y, d_x, d_weight,
                                    d_bias, fr.get_num_threads())   # was a BLAS error
    assert d_weight[0, 0] == 12 and d_bias[0] == 2
    assert (d_x[0, 0], d_x[1, 0], d_x[-1, 0]) == (2, 0, 2)
