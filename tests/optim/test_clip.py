"""fr.optim.clip_grad_norm / clip_grad_value: parity with torch.nn.utils, bad input."""

import math

import numpy as np
import pytest

import fastrnn as fr
from fastrnn import optim

TOL = {"float64": dict(rtol=1e-12, atol=1e-14), "float32": dict(rtol=1e-5, atol=1e-7)}


class FrozenLinear(fr.Linear):
    def named_parameters(self):
        return []


def modules_with_grads(dtype, rng, scale=1.0):
    modules = [fr.LSTM(4, 6, num_layers=2, dtype=dtype, seed=0),
               fr.Linear(6, 3, dtype=dtype, seed=1)]
    for m in modules:
        for g in m.grads.values():
            g[...] = scale * rng.standard_normal(g.shape)
    return modules


def grads_of(modules):
    return [g.copy() for m in modules for _, g in
            ((name, m.grads[name]) for name, _ in m.named_parameters())]


def torch_grads(torch, arrays):
    tensors = []
    for a in arrays:
        t = torch.zeros(a.shape, dtype=torch.float64 if a.dtype == np.float64
                        else torch.float32, requires_grad=True)
        t.grad = torch.from_numpy(a.copy())
        tensors.append(t)
    return tensors


@pytest.mark.torch
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf, "inf", 3.0])
@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clip_grad_norm_matches_torch(torch, rng, dtype, norm_type, max_norm):
    modules = modules_with_grads(dtype, rng)
    before = grads_of(modules)
    tensors = torch_grads(torch, before)
    total = optim.clip_grad_norm(modules, max_norm, norm_type=norm_type)
    expected = torch.nn.utils.clip_grad_norm_(tensors, max_norm, norm_type=norm_type)
    assert isinstance(total, float)
    np.testing.assert_allclose(total, float(expected), **TOL[dtype])
    for ours, t in zip(grads_of(modules), tensors):
        np.testing.assert_allclose(ours, t.grad.numpy(), **TOL[dtype])
    changed = any(not np.array_equal(a, b) for a, b in zip(grads_of(modules), before))
    assert changed == (max_norm < total)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf, 3.0])
def test_clip_grad_norm_numpy_formula(rng, norm_type):
    modules = modules_with_grads("float64", rng)
    flat = np.concatenate([g.ravel() for g in grads_of(modules)])
    expected = (np.abs(flat).max() if norm_type == math.inf
                else (np.abs(flat) ** norm_type).sum() ** (1 / norm_type))
    total = optim.clip_grad_norm(modules, 1.0, norm_type)
    np.testing.assert_allclose(total, expected, rtol=1e-12)
    flat_after = np.concatenate([g.ravel() for g in grads_of(modules)])
    np.testing.assert_allclose(flat_after, flat / (expected + 1e-6), rtol=1e-12)
    after = (np.abs(flat_after).max() if norm_type == math.inf
             else (np.abs(flat_after) ** norm_type).sum() ** (1 / norm_type))
    assert after <= 1.0


def test_clip_grad_norm_threads_agree():
    results = []
    for threads in (1, 2, 3):
        fr.set_num_threads(threads)
        rng = np.random.default_rng(0)
        layer = fr.Linear(300, 200, dtype="float32", seed=0)
        layer.grads["weight"][...] = rng.standard_normal((200, 300))
        total = optim.clip_grad_norm(layer, 1.0)
        results.append((total, layer.grads["weight"].copy()))
    for total, grad in results[1:]:
        np.testing.assert_allclose(total, results[0][0], rtol=1e-13)
        np.testing.assert_allclose(grad, results[0][1], rtol=1e-6)


@pytest.mark.parametrize("where", [(1, "bias", (1,)), (0, "weight_hh_l0", (3, 2))])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("norm_type", [2.0, math.inf, 1.0])
def test_non_finite_total_is_returned_and_nothing_scaled(rng, bad, norm_type, where):
    modules = modules_with_grads("float64", rng)
    k, name, index = where
    modules[k].grads[name][index] = bad    # finite values follow it in the array
    before = grads_of(modules)
    total = optim.clip_grad_norm(modules, 0.1, norm_type)
    assert math.isnan(total) if np.isnan(bad) else total == math.inf
    for a, b in zip(grads_of(modules), before):
        np.testing.assert_array_equal(a, b)


def test_frozen_modules_are_skipped_and_empty_is_zero(rng):
    frozen = FrozenLinear(3, 2, dtype="float64")
    frozen.grads["weight"][...] = 100.0
    live = fr.Linear(3, 2, dtype="float64", seed=0)
    live.grads["weight"][...] = 1.0
    total = optim.clip_grad_norm([frozen, live], 1.0)
    assert total == pytest.approx(math.sqrt(6.0), rel=1e-12)
    assert (frozen.grads["weight"] == 100.0).all()
    optim.clip_grad_value([frozen, live], 0.5)
    assert (frozen.grads["weight"] == 100.0).all()
    assert optim.clip_grad_norm(frozen, 1.0) == 0.0
    assert optim.clip_grad_norm([fr.Module(np.dtype(np.float32))], 1.0) == 0.0


@pytest.mark.torch
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("clip_value", [0.3, 0.0, 10.0])
def test_clip_grad_value_matches_torch(torch, rng, dtype, clip_value):
    modules = modules_with_grads(dtype, rng)
    modules[1].grads["bias"][0] = np.nan
    tensors = torch_grads(torch, grads_of(modules))
    assert optim.clip_grad_value(modules, clip_value) is None
    torch.nn.utils.clip_grad_value_(tensors, clip_value)
    for ours, t in zip(grads_of(modules), tensors):
        np.testing.assert_array_equal(ours, t.grad.numpy())
    assert np.isnan(modules[1].grads["bias"][0])


@pytest.mark.parametrize("call,error,match", [
    (lambda m: optim.clip_grad_norm(m, -1.0), ValueError,
     "clip_grad_norm: max_norm must be a number >= 0, got -1.0"),
    (lambda m: optim.clip_grad_norm(m, "1"), ValueError, "max_norm must be a number"),
    (lambda m: optim.clip_grad_norm(m, float("nan")), ValueError, "max_norm"),
    (lambda m: optim.clip_grad_norm(m, 1.0, norm_type=0), ValueError,
     "norm_type must be a number > 0, got 0"),
    (lambda m: optim.clip_grad_norm(m, 1.0, norm_type="fro"), ValueError, "norm_type"),
    (lambda m: optim.clip_grad_norm(m, 1.0, norm_type=-math.inf), ValueError, "norm_type"),
    (lambda m: optim.clip_grad_value(m, -0.5), ValueError,
     "clip_grad_value: clip_value must be a number >= 0, got -0.5"),
    (lambda m: optim.clip_grad_value(m, None), ValueError, "clip_value"),
    (lambda m: optim.clip_grad_norm("model", 1.0), TypeError,
     "clip_grad_norm: modules must be a Module"),
    (lambda m: optim.clip_grad_value([], 1.0), ValueError, "modules must not be empty"),
])
def test_bad_arguments(call, error, match):
    layer = fr.Linear(2, 2)
    with pytest.raises(error, match=match):
        call(layer)


def test_bad_gradient_arrays():
    layer = fr.Linear(2, 2, dtype="float64")
    layer.grads["weight"] = np.ones((2, 2), dtype=np.float32)
    with pytest.raises(ValueError, match=r"clip_grad_norm: modules\[0\] parameter 'weight'"):
        optim.clip_grad_norm(layer, 1.0)
    grad = np.ones((2, 2))
    grad.flags.writeable = False
    layer.grads["weight"] = grad
    with pytest.raises(ValueError, match="gradient array is read-only"):
        optim.clip_grad_value(layer, 1.0)
