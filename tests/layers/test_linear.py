"""fr.Linear: PyTorch parity, finite differences, bad input."""

import numpy as np
import pytest

import fastrnn as fr
from helpers import central_differences, require_torch


@pytest.mark.torch
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(7, 5), (4, 3, 5), (1, 5)])
@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 1e-5)])
def test_matches_torch(bias, shape, dtype, tol):
    torch = require_torch()
    rng = np.random.default_rng(0)
    layer = fr.Linear(5, 6, bias=bias, dtype=dtype, seed=1)
    ref = torch.nn.Linear(5, 6, bias=bias).to(getattr(torch, dtype))
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    x = rng.standard_normal(shape).astype(dtype)
    d_y = rng.standard_normal(shape[:-1] + (6,)).astype(dtype)
    y = layer(x)
    d_x = layer.backward(d_y)
    xt = torch.from_numpy(x.copy()).requires_grad_()
    yt = ref(xt)
    (yt * torch.from_numpy(d_y)).sum().backward()
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(d_x, xt.grad.numpy(), rtol=tol, atol=tol)
    for name, param in ref.named_parameters():
        np.testing.assert_allclose(layer.grads[name], param.grad.numpy(), rtol=tol, atol=tol)


@pytest.mark.parametrize("bias", [True, False])
def test_finite_differences(bias):
    rng = np.random.default_rng(2)
    layer = fr.Linear(4, 3, bias=bias, dtype="float64", seed=0)
    x = rng.standard_normal((2, 5, 4))
    r = rng.standard_normal((2, 5, 3))

    def loss():
        return float((layer(x) * r).sum())

    layer(x)
    d_x = layer.backward(r)
    for name, param in layer.named_parameters():
        numeric = central_differences(param, loss, 1e-6).reshape(param.shape)
        np.testing.assert_allclose(layer.grads[name], numeric, rtol=1e-6, atol=1e-8)
    numeric = central_differences(x, loss, 1e-6).reshape(x.shape)
    np.testing.assert_allclose(d_x, numeric, rtol=1e-6, atol=1e-8)


def test_threads_agree_and_input_grad_flag():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((300, 64, 40))
    d_y = rng.standard_normal((300, 64, 50))
    results = []
    for threads in (1, 2):
        fr.set_num_threads(threads)
        layer = fr.Linear(40, 50, dtype="float64", seed=4)
        y = layer(x)
        layer.backward(d_y, input_grad=False)
        results.append((y, layer.grads["weight"].copy(), layer.grads["bias"].copy()))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-10)


def test_backward_reads_a_private_copy_of_x():
    rng = np.random.default_rng(5)
    layer = fr.Linear(3, 2, dtype="float64", seed=0)
    x = rng.standard_normal((4, 3))
    d_y = np.ones((4, 2))
    layer(x.copy())
    layer.backward(d_y)
    expected = layer.grads["weight"].copy()
    layer.zero_grad()
    layer(x)
    x[:] = 0.0
    layer.backward(d_y)
    np.testing.assert_array_equal(layer.grads["weight"], expected)


@pytest.mark.parametrize("bad,error,match", [
    (np.ones((2, 4), np.float32), ValueError, "in_features"),
    (np.ones((2, 3), np.int64), TypeError, "x must hold float"),
    (np.ones((2, 3), np.float16), TypeError, "float16"),
    (np.full((2, 3), np.nan), ValueError, "NaN"),
    (np.ones((0, 3)), ValueError, "empty"),
])
def test_bad_input(bad, error, match):
    layer = fr.Linear(3, 2)
    with pytest.raises(error, match=match):
        layer(bad)


def test_bad_construction_and_backward_misuse():
    with pytest.raises(ValueError, match="in_features"):
        fr.Linear(0, 2)
    with pytest.raises(ValueError, match="out_features"):
        fr.Linear(2, -1)
    layer = fr.Linear(3, 2)
    with pytest.raises(RuntimeError, match="forward"):
        layer.backward(np.ones((1, 2), np.float32))
    layer(np.ones((4, 3), np.float32))
    with pytest.raises(ValueError, match="d_y"):
        layer.backward(np.ones((4, 3), np.float32))
    layer.eval()
    layer(np.ones((4, 3), np.float32))
    with pytest.raises(RuntimeError):
        layer.backward(np.ones((4, 2), np.float32))
