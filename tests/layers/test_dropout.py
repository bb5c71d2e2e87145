"""fr.Dropout: mask statistics, scaling, reproducibility, eval identity, gradient."""

import json

import numpy as np
import pytest

from fastrnn.layers.dropout import Dropout


def mask_of(layer, shape, dtype=np.float32):
    """The scaled mask of one training forward (x = ones)."""
    return layer(np.ones(shape, dtype=dtype))


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_mask_statistics_and_scale(p):
    layer = Dropout(p, seed=0)
    mask = mask_of(layer, (1000, 400))
    kept = mask != 0
    n = mask.size
    assert abs(kept.mean() - (1 - p)) < 5 * np.sqrt(p * (1 - p) / n)
    np.testing.assert_allclose(mask[kept], 1 / (1 - p), rtol=1e-7)    # inverted dropout
    assert abs(mask.mean() - 1.0) < 5 * np.sqrt(p / (1 - p) / n)      # expectation kept
    # independent elements: rows and columns alike
    assert abs(kept.mean(axis=0).std() - np.sqrt(p * (1 - p) / 1000)) < 0.01


@pytest.mark.torch
def test_scaling_matches_torch(torch):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, 60)).astype(np.float32)
    layer = Dropout(0.3, seed=2)
    y = layer(x)
    keep = y != 0
    # torch's kept values: x * 1/(1-p), computed on our kept positions
    mask_t = torch.from_numpy(keep.astype(np.float32))
    y_t = torch.from_numpy(x) * mask_t / (1 - 0.3)
    np.testing.assert_allclose(y, y_t.numpy(), rtol=1e-6, atol=0)
    ref = torch.nn.Dropout(0.3).eval()
    layer.eval()
    np.testing.assert_array_equal(layer(x), ref(torch.from_numpy(x)).numpy())


def test_same_seed_same_mask_and_rng_state_round_trip():
    a, b = Dropout(0.4, seed=7), Dropout(0.4, seed=7)
    np.testing.assert_array_equal(mask_of(a, (30, 20)), mask_of(b, (30, 20)))
    assert not np.array_equal(mask_of(Dropout(0.4, seed=8), (30, 20)),
                              mask_of(Dropout(0.4, seed=7), (30, 20)))
    state = json.loads(json.dumps(a.rng_state()))    # checkpoints store it as JSON
    first = mask_of(a, (30, 20))
    second = mask_of(a, (30, 20))
    assert not np.array_equal(first, second)
    a.set_rng_state(state)
    np.testing.assert_array_equal(mask_of(a, (30, 20)), first)
    fresh = Dropout(0.4, seed=123)
    fresh.set_rng_state(state)
    np.testing.assert_array_equal(mask_of(fresh, (30, 20)), first)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gradient_is_mask(dtype):
    rng = np.random.default_rng(3)
    layer = Dropout(0.25, seed=4, dtype=dtype)
    x = rng.standard_normal((5, 6, 7))    # float64 in, converted to dtype
    d_y = rng.standard_normal((5, 6, 7))
    y = layer(x)
    assert y.dtype == np.dtype(dtype)
    mask = np.where(y != 0, np.asarray(1 / 0.75, dtype=dtype), 0).astype(dtype)
    np.testing.assert_allclose(y, x.astype(dtype) * mask, rtol=1e-6)
    d_x = layer.backward(d_y)
    assert d_x.dtype == np.dtype(dtype)
    np.testing.assert_allclose(d_x, d_y.astype(dtype) * mask, rtol=1e-6)
    assert np.array_equal(d_x == 0, y == 0)


def test_eval_identity_and_backward_refused():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    layer = Dropout(0.9, seed=0).eval()
    assert layer(x) is x    # like torch: the input itself
    np.testing.assert_array_equal(layer(x.astype(np.float64)), x)
    with pytest.raises(RuntimeError, match="eval mode"):
        layer.backward(np.ones((3, 4), np.float32))
    layer.train()
    layer(x)
    layer.eval()
    with pytest.raises(RuntimeError):
        layer.backward(np.ones((3, 4), np.float32))


def test_p_zero_is_identity_in_training():
    x = np.random.default_rng(5).standard_normal((4, 3)).astype(np.float32)
    layer = Dropout(0.0, seed=0)
    state = layer.rng_state()
    np.testing.assert_array_equal(layer(x), x)
    d = np.ones((4, 3), np.float32)
    np.testing.assert_array_equal(layer.backward(d), d)
    assert layer.rng_state() == state    # no random numbers drawn


def test_backward_misuse():
    layer = Dropout(0.5, seed=0)
    with pytest.raises(RuntimeError, match="forward"):
        layer.backward(np.ones(3, np.float32))
    layer(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"d_y must have shape \(2, 3\), got \(3, 2\)"):
        layer.backward(np.ones((3, 2), np.float32))
    with pytest.raises(TypeError, match="d_y must hold float"):
        layer.backward(np.ones((2, 3), np.int32))
    layer.backward(np.ones((2, 3), np.float32))
    with pytest.raises(RuntimeError, match="forward"):
        layer.backward(np.ones((2, 3), np.float32))


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5, "0.5", True, None, float("nan")])
def test_bad_p(p):
    with pytest.raises(ValueError, match=r"p \(the drop probability\) must be a number in \[0, 1\)"):
        Dropout(p)


def test_bad_input_and_no_parameters():
    layer = Dropout(0.5)
    with pytest.raises(TypeError, match="x must hold float"):
        layer(np.ones(3, dtype=np.int64))
    with pytest.raises(TypeError, match="dtype"):
        Dropout(0.5, dtype="int32")
    assert layer.parameters() == [] and layer.state_dict() == {} and layer.grads == {}
    assert "p=0.5" in repr(layer)
