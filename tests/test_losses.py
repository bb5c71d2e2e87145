"""Fused losses: PyTorch parity, finite differences, stability, masks, threads, bad input."""

import math

import numpy as np
import pytest

import fastrnn as fr
from fastrnn._kernels import _losses
from fastrnn.losses import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from helpers import central_differences

TOL = {"float64": 1e-12, "float32": 2e-5}


def assert_close(actual, expected, dtype, what=""):
    tol = TOL[np.dtype(dtype).name]
    scale = max(1.0, float(np.max(np.abs(expected))) if np.size(expected) else 1.0)
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale, err_msg=what)


def random_mask(rng, shape):
    """Random bool mask of ``shape`` with at least one True and (if possible) one False."""
    mask = rng.random(shape) < 0.6
    flat = mask.reshape(-1)
    flat[0] = True
    if flat.size > 1:
        flat[-1] = False
    return mask


def check_fd(criterion, x, *args, **kwargs):
    """The criterion's gradient against central differences of its loss (float64)."""
    loss, grad = criterion(x, *args, **kwargs)
    assert grad.shape == x.shape and grad.dtype == np.float64
    probe = x.copy()
    numeric = central_differences(probe, lambda: criterion(probe, *args, **kwargs)[0], 1e-6)
    # Central differences lose about |loss| * 1e-16 / 1e-6 to rounding: a summed
    # loss of ~10 is only good to ~1e-9 absolute, so atol scales with the loss.
    atol = 1e-9 * max(1.0, abs(float(np.sum(loss))))
    np.testing.assert_allclose(grad.reshape(-1), numeric, rtol=1e-6, atol=atol)
    return loss, grad


# -- cross-entropy -------------------------------------------------------------------

def torch_cross_entropy(torch, x, t, mask, ignore_index, eps, reduction):
    """PyTorch's loss and d_logits; masked positions become ignore_index."""
    C = x.shape[-1]
    xt = torch.tensor(x, requires_grad=True)
    tt = torch.tensor(np.asarray(t, dtype=np.int64))
    if mask is not None:
        tt = torch.where(torch.tensor(mask), tt, torch.tensor(ignore_index))
    loss = torch.nn.functional.cross_entropy(xt.reshape(-1, C), tt.reshape(-1),
                                             ignore_index=ignore_index,
                                             label_smoothing=eps, reduction=reduction)
    loss.backward()
    return loss.item(), xt.grad.numpy()


def ce_inputs(rng, shape, dtype, variant):
    """logits, targets, mask, ignore_index for a CE variant."""
    C = shape[-1]
    x = (2 * rng.standard_normal(shape)).astype(dtype)
    t = rng.integers(0, C, size=shape[:-1])
    ignore_index, mask = -100, None
    if variant in ("ignore", "ignore_inside"):
        ignore_index = -100 if variant == "ignore" else 2
        drop = rng.random(t.shape) < 0.3
        t = np.where(drop, ignore_index, t)
        t.reshape(-1)[0] = 0 if ignore_index != 0 else 1     # at least one counted
    if variant in ("mask", "ignore_inside"):
        mask = random_mask(rng, t.shape)
    return x, t, mask, ignore_index


@pytest.mark.torch
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("eps", [0.0, 0.2])
@pytest.mark.parametrize("shape,variant", [
    (shape, variant) for shape in [(7, 5), (4, 3, 6)]
    for variant in ["plain", "ignore", "mask", "ignore_inside"]] + [((6,), "plain")])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cross_entropy_matches_torch(torch, rng, dtype, shape, eps, reduction, variant):
    x, t, mask, ignore_index = ce_inputs(rng, shape, dtype, variant)
    criterion = CrossEntropyLoss(ignore_index=ignore_index, label_smoothing=eps,
                                 reduction=reduction)
    loss, grad = criterion(x, t, mask=mask)
    ref_loss, ref_grad = torch_cross_entropy(torch, x, t, mask, ignore_index, eps, reduction)
    assert isinstance(loss, float)
    assert grad.dtype == np.dtype(dtype) and grad.shape == x.shape
    assert_close(loss, ref_loss, dtype, "loss")
    assert_close(grad, ref_grad.reshape(x.shape), dtype, "d_logits")


@pytest.mark.torch
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cross_entropy_large_vocabulary_matches_torch(torch, rng, dtype):
    x = (3 * rng.standard_normal((5, 4, 1000))).astype(dtype)
    t = rng.integers(0, 1000, size=(5, 4))
    mask = random_mask(rng, (5, 4))
    loss, grad = CrossEntropyLoss(label_smoothing=0.1)(x, t, mask=mask)
    ref_loss, ref_grad = torch_cross_entropy(torch, x, t, mask, -100, 0.1, "mean")
    assert_close(loss, ref_loss, dtype, "loss")
    assert_close(grad, ref_grad.reshape(x.shape), dtype, "d_logits")


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("eps", [0.0, 0.3])
def test_cross_entropy_finite_differences(rng, reduction, eps):
    x = rng.standard_normal((3, 4, 5))
    t = rng.integers(0, 5, size=(3, 4))
    t[0, 1] = -100
    t[2, 3] = 3
    mask = random_mask(rng, (3, 4))
    mask[2, 3] = True
    criterion = CrossEntropyLoss(label_smoothing=eps, reduction=reduction)
    _, grad = check_fd(criterion, x, t, mask=mask)
    assert np.all(grad[~mask] == 0) and np.all(grad[0, 1] == 0)
    # ignore_index inside the class range
    t[0, 1] = 1
    check_fd(CrossEntropyLoss(ignore_index=3, label_smoothing=eps, reduction=reduction), x, t)


def test_cross_entropy_formula_without_torch(rng):
    """Independent numpy formula: mean over counted rows of -log softmax[target]."""
    x = rng.standard_normal((10, 7))
    t = rng.integers(0, 7, size=10)
    mask = random_mask(rng, 10)
    logp = x - x.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    nll = -logp[np.arange(10), t]
    loss, grad = CrossEntropyLoss()(x, t, mask=mask)
    assert loss == pytest.approx(nll[mask].mean(), rel=1e-13)
    expected = np.exp(logp)
    expected[np.arange(10), t] -= 1
    expected[~mask] = 0
    np.testing.assert_allclose(grad, expected / mask.sum(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_cross_entropy_extreme_logits(dtype, eps):
    x = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 5e3], [1e4, 1e4, -1e4]], dtype=dtype)
    t = np.array([0, 0, 2])
    loss, grad = CrossEntropyLoss(label_smoothing=eps, reduction="sum")(x, t)
    assert np.isfinite(loss) and np.isfinite(grad).all()
    # exact values: log-softmax is x - max (- log 2 in row 3)
    logp = np.array([[0, -2e4, -1e4], [-2e4, 0, -5e3],
                     [-math.log(2), -math.log(2), -2e4 - math.log(2)]])
    onehot = np.eye(3)[t]
    target = (1 - eps) * onehot + eps / 3
    expected_loss = -(target * logp).sum()
    expected_grad = np.exp(logp) - target
    assert loss == pytest.approx(expected_loss, rel=1e-6 if dtype == "float32" else 1e-12)
    np.testing.assert_allclose(grad, expected_grad, atol=1e-6 if dtype == "float32" else 1e-12)


# -- binary cross-entropy --------------------------------------------------------------

BCE_CASES = [
    # (shape, mask shape or None, pos_weight shape or None)
    ((6, 4), None, None),
    ((6, 4), None, (4,)),
    ((3, 5, 4), (3, 5), (4,)),
    ((3, 5, 4), (3,), None),
    ((3, 5, 4), (3, 5, 4), (4,)),       # element mask with per-label weights
    ((3, 5, 4), (3, 5, 4), ()),         # element mask, one weight for all
    ((7,), (7,), (1,)),
    ((7,), None, ()),
    ((5, 1), (5,), None),
]


def bce_inputs(rng, shape, mask_shape, pw_shape, dtype):
    x = (3 * rng.standard_normal(shape)).astype(dtype)
    y = rng.random(shape)
    y[rng.random(shape) < 0.4] = 0.0
    y[rng.random(shape) < 0.3] = 1.0
    mask = None if mask_shape is None else random_mask(rng, mask_shape)
    pw = None if pw_shape is None else rng.uniform(0.3, 3.0, size=pw_shape)
    return x, y.astype(dtype), mask, pw


def torch_bce(torch, x, y, mask, pw, reduction):
    xt = torch.tensor(x, requires_grad=True)
    pw_t = None if pw is None else torch.tensor(np.asarray(pw, dtype=x.dtype))
    per = torch.nn.functional.binary_cross_entropy_with_logits(
        xt, torch.tensor(y), pos_weight=pw_t, reduction="none")
    if mask is not None:
        m = np.broadcast_to(mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim)), x.shape)
        per = per * torch.tensor(m.astype(x.dtype))
        count = m.sum()
    else:
        count = x.size
    loss = per.sum() / count if reduction == "mean" else per.sum()
    loss.backward()
    return loss.item(), xt.grad.numpy()


@pytest.mark.torch
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("shape,mask_shape,pw_shape", BCE_CASES)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_bce_matches_torch(torch, rng, dtype, shape, mask_shape, pw_shape, reduction):
    x, y, mask, pw = bce_inputs(rng, shape, mask_shape, pw_shape, dtype)
    loss, grad = BCEWithLogitsLoss(reduction=reduction, pos_weight=pw)(x, y, mask=mask)
    ref_loss, ref_grad = torch_bce(torch, x, y, mask, pw, reduction)
    assert isinstance(loss, float)
    assert grad.dtype == np.dtype(dtype) and grad.shape == x.shape
    assert_close(loss, ref_loss, dtype, "loss")
    assert_close(grad, ref_grad, dtype, "d_logits")


@pytest.mark.torch
def test_bce_without_mask_matches_torch_mean(torch, rng):
    """The plain torch call (its own mean), no masking on the reference side."""
    x, y, _, pw = bce_inputs(rng, (8, 3), None, (3,), "float64")
    xt = torch.tensor(x, requires_grad=True)
    ref = torch.nn.functional.binary_cross_entropy_with_logits(
        xt, torch.tensor(y), pos_weight=torch.tensor(pw))
    ref.backward()
    loss, grad = BCEWithLogitsLoss(pos_weight=pw)(x, y)
    assert loss == pytest.approx(ref.item(), rel=1e-13)
    np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("shape,mask_shape,pw_shape", [
    ((3, 4, 5), (3, 4), (5,)), ((3, 4, 5), (3, 4, 5), (5,)), ((3, 4, 5), (3,), ()),
    ((9,), None, None)])
def test_bce_finite_differences(rng, shape, mask_shape, pw_shape, reduction):
    x, y, mask, pw = bce_inputs(rng, shape, mask_shape, pw_shape, "float64")
    _, grad = check_fd(BCEWithLogitsLoss(reduction=reduction, pos_weight=pw), x, y, mask=mask)
    if mask is not None:
        full = np.broadcast_to(mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim)), x.shape)
        assert np.all(grad[~full] == 0)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_bce_extreme_logits(dtype):
    x = np.array([1e4, -1e4, 1e4, -1e4, 1e4, -1e4, 100.0, -100.0, 30.0, -30.0], dtype=dtype)
    y = np.array([0.0, 0.0, 1.0, 1.0, 0.5, 0.5, 1.0, 0.0, 0.0, 1.0], dtype=dtype)
    loss, grad = BCEWithLogitsLoss(reduction="sum")(x, y)
    xd, yd = x.astype(np.float64), y.astype(np.float64)
    per = np.maximum(xd, 0) - xd * yd + np.log1p(np.exp(-np.abs(xd)))
    sigmoid = np.where(xd >= 0, 1 / (1 + np.exp(-np.abs(xd))),
                       np.exp(-np.abs(xd)) / (1 + np.exp(-np.abs(xd))))
    assert np.isfinite(loss) and np.isfinite(grad).all()
    assert loss == pytest.approx(per.sum(), rel=1e-6 if dtype == "float32" else 1e-13)
    np.testing.assert_allclose(grad, sigmoid - yd, atol=1e-7 if dtype == "float32" else 1e-15)


def test_bce_float32_accuracy_over_a_range():
    """float32 uses its own exp and log1p: compare with float64 on a wide range."""
    x = np.linspace(-40, 40, 4001)
    y = np.linspace(0, 1, 4001)[::-1].copy()
    pw = 1.7
    loss, grad = BCEWithLogitsLoss(pos_weight=pw, reduction="sum")(x.astype(np.float32),
                                                                    y.astype(np.float32))
    # inputs are rounded to float32, so compare against float64 on the rounded inputs
    ref_loss, ref_grad = BCEWithLogitsLoss(pos_weight=pw, reduction="sum")(
        x.astype(np.float32).astype(np.float64), y.astype(np.float32).astype(np.float64))
    assert loss == pytest.approx(ref_loss, rel=1e-6)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-7)


def test_log1p_series():
    e = np.linspace(0, 1, 2001, dtype=np.float32)
    got = np.array([_losses.log1p_unit_float(v) for v in e])
    ref = np.log1p(e.astype(np.float64))
    np.testing.assert_allclose(got, ref, rtol=4e-7, atol=0)


# -- mean squared error ------------------------------------------------------------------

MSE_CASES = [((6, 4), None), ((3, 5, 4), (3, 5)), ((3, 5, 4), (3,)), ((7,), (7,)),
             ((7,), None), ((), None), ((2, 3), (2, 3))]


def torch_mse(torch, p, y, mask, reduction):
    pt = torch.tensor(p, requires_grad=True)
    if mask is None:
        loss = torch.nn.functional.mse_loss(pt, torch.tensor(y), reduction=reduction)
    else:
        per = torch.nn.functional.mse_loss(pt, torch.tensor(y), reduction="none")
        m = np.broadcast_to(mask.reshape(mask.shape + (1,) * (p.ndim - mask.ndim)), p.shape)
        per = per * torch.tensor(m.astype(p.dtype))
        loss = per.sum() / m.sum() if reduction == "mean" else per.sum()
    loss.backward()
    return loss.item(), pt.grad.numpy()


@pytest.mark.torch
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("shape,mask_shape", MSE_CASES)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_mse_matches_torch(torch, rng, dtype, shape, mask_shape, reduction):
    p = rng.standard_normal(shape).astype(dtype)
    y = rng.standard_normal(shape).astype(dtype)
    mask = None if mask_shape is None else random_mask(rng, mask_shape)
    loss, grad = MSELoss(reduction=reduction)(p, y, mask=mask)
    ref_loss, ref_grad = torch_mse(torch, p, y, mask, reduction)
    assert isinstance(loss, float)
    assert grad.dtype == np.dtype(dtype) and grad.shape == p.shape
    assert_close(loss, ref_loss, dtype, "loss")
    assert_close(grad, ref_grad, dtype, "d_predictions")


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("mask_shape", [None, (3, 4), (3,)])
def test_mse_finite_differences(rng, reduction, mask_shape):
    p = rng.standard_normal((3, 4, 2))
    y = rng.standard_normal((3, 4, 2))
    mask = None if mask_shape is None else random_mask(rng, mask_shape)
    loss, _ = check_fd(MSELoss(reduction=reduction), p, y, mask=mask)
    m = np.ones((3, 4, 2), bool) if mask is None else np.broadcast_to(
        mask.reshape(mask.shape + (1,) * (3 - mask.ndim)), (3, 4, 2))
    sq = ((p - y) ** 2)[m]
    assert loss == pytest.approx(sq.mean() if reduction == "mean" else sq.sum(), rel=1e-13)


# -- masks, nothing counted, threads ----------------------------------------------------

def test_masked_positions_are_never_read(rng):
    """Garbage (NaN) at padded positions: zero gradient there, same loss as without them."""
    x = rng.standard_normal((5, 4, 6))
    t = rng.integers(0, 6, size=(5, 4))
    mask = random_mask(rng, (5, 4))
    garbage = x.copy()
    garbage[~mask] = np.nan
    bad_t = t.copy()
    bad_t[~mask] = 999                     # out of range, but padded: not checked
    loss, grad = CrossEntropyLoss()(garbage, bad_t, mask=mask)
    ref_loss, ref_grad = CrossEntropyLoss()(x[mask], t[mask])
    assert loss == pytest.approx(ref_loss, rel=1e-13)
    assert np.all(grad[~mask] == 0)
    np.testing.assert_allclose(grad[mask], ref_grad, rtol=1e-12)

    y = rng.random((5, 4, 6))
    bad_y = y.copy()
    bad_y[~mask] = np.nan
    for criterion in (BCEWithLogitsLoss(), BCEWithLogitsLoss(pos_weight=np.arange(1.0, 7.0)),
                      MSELoss()):
        loss, grad = criterion(garbage, bad_y, mask=mask)
        ref_loss, ref_grad = criterion(x[mask], y[mask])
        assert loss == pytest.approx(ref_loss, rel=1e-13), criterion
        assert np.all(grad[~mask] == 0), criterion
        np.testing.assert_allclose(grad[mask], ref_grad, rtol=1e-12)
    # element mask (per-label weights take the (rows, K) path)
    emask = rng.random((5, 4, 6)) < 0.5
    emask.reshape(-1)[0] = True
    bad_x = x.copy()
    bad_x[~emask] = np.nan
    pw = np.arange(1.0, 7.0)
    loss, grad = BCEWithLogitsLoss(pos_weight=pw)(bad_x, y, mask=emask)
    per_label = np.broadcast_to(pw, x.shape)[emask]
    xs, ys = x[emask], y[emask]
    per = (1 - ys) * xs + (1 + (per_label - 1) * ys) * (np.log1p(np.exp(-np.abs(xs)))
                                                        + np.maximum(-xs, 0))
    assert loss == pytest.approx(per.mean(), rel=1e-12)
    assert np.all(grad[~emask] == 0)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_nothing_counted_gives_zero(reduction):
    x = np.ones((3, 2, 4), np.float32)
    none = np.zeros((3, 2), bool)
    for loss, grad in [
        CrossEntropyLoss(reduction=reduction)(x, np.zeros((3, 2), int), mask=none),
        CrossEntropyLoss(reduction=reduction)(x, np.full((3, 2), -100)),
        BCEWithLogitsLoss(reduction=reduction)(x, np.zeros_like(x), mask=none),
        BCEWithLogitsLoss(reduction=reduction, pos_weight=np.ones(4))(x, np.zeros_like(x),
                                                                       mask=none),
        MSELoss(reduction=reduction)(x, np.zeros_like(x), mask=none),
    ]:
        assert loss == 0.0 and isinstance(loss, float)
        assert grad.shape == x.shape and grad.dtype == np.float32 and not grad.any()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_thread_counts_agree_bit_for_bit(rng, dtype):
    x = rng.standard_normal((40, 30, 50)).astype(dtype)       # 1200 rows, several blocks
    t = rng.integers(0, 50, size=(40, 30))
    mask = random_mask(rng, (40, 30))
    y = rng.random(x.shape).astype(dtype)
    emask = rng.random(x.shape) < 0.7
    calls = [
        lambda: CrossEntropyLoss(label_smoothing=0.1)(x, t, mask=mask),
        lambda: BCEWithLogitsLoss(pos_weight=np.linspace(0.5, 2, 50))(x, y, mask=mask),
        lambda: BCEWithLogitsLoss(pos_weight=np.linspace(0.5, 2, 50))(x, y, mask=emask),
        lambda: BCEWithLogitsLoss()(x.reshape(-1), y.reshape(-1)),
        lambda: MSELoss(reduction="sum")(x, y, mask=mask),
    ]
    for call in calls:
        results = []
        for threads in (1, 2):
            fr.set_num_threads(threads)
            results.append(call())
        (loss1, grad1), (loss2, grad2) = results
        assert loss1 == loss2
        np.testing.assert_array_equal(grad1, grad2)


def test_accepts_tensors_views_and_read_only_arrays(torch, rng):
    x = rng.standard_normal((6, 5))
    t = rng.integers(0, 5, size=6)
    ref_loss, ref_grad = CrossEntropyLoss()(x, t)
    loss, grad = CrossEntropyLoss()(torch.tensor(x), torch.tensor(t))
    assert loss == ref_loss
    np.testing.assert_array_equal(grad, ref_grad)
    xf = np.asfortranarray(x)
    xf.flags.writeable = False
    loss, grad = CrossEntropyLoss()(xf, t)
    assert loss == ref_loss and grad.flags.c_contiguous
    # float64 targets with float32 logits: the gradient keeps the logits' dtype
    y = rng.random((6, 5))
    _, grad = BCEWithLogitsLoss()(x.astype(np.float32), y)
    assert grad.dtype == np.float32
    mask01 = np.array([1, 0, 1, 1, 0, 1])
    assert (CrossEntropyLoss()(x, t, mask=mask01)[0]
            == CrossEntropyLoss()(x, t, mask=mask01.astype(bool))[0])


# -- bad input ----------------------------------------------------------------------------

X = np.zeros((4, 3), np.float32)
T = np.zeros(4, np.int64)


@pytest.mark.parametrize("call,error,match", [
    (lambda: CrossEntropyLoss()(X.astype(int), T), TypeError, "logits must hold float"),
    (lambda: CrossEntropyLoss()(X.astype(np.float16), T), TypeError, "float16"),
    (lambda: CrossEntropyLoss()(None, T), TypeError, "logits must be an array"),
    (lambda: CrossEntropyLoss()(X, T.astype(float)), TypeError, "targets must be integer"),
    (lambda: CrossEntropyLoss()(X, T.astype(bool)), TypeError, "targets must be integer"),
    (lambda: CrossEntropyLoss()(X, np.zeros(3, int)), ValueError,
     r"logits.shape\[:-1\] = \(4,\) \(logits shape \(4, 3\)\), got \(3,\)"),
    (lambda: CrossEntropyLoss()(X, np.array([0, 1, 3, 0])), ValueError,
     r"\[0, 3\).*got 3 at index \(2,\)"),
    (lambda: CrossEntropyLoss()(X, np.array([0, -1, 0, 0])), ValueError,
     r"ignore_index=-100, got -1"),
    (lambda: CrossEntropyLoss()(np.zeros((0, 3)), np.zeros(0, int)), ValueError, "empty"),
    (lambda: CrossEntropyLoss()(np.zeros((4, 0)), T), ValueError, "empty"),
    (lambda: CrossEntropyLoss()(np.float64(1.0), T), ValueError, "class axis"),
    (lambda: CrossEntropyLoss()(X, T, mask=np.ones(3, bool)), ValueError,
     r"mask must have the shape of targets.*\(4,\), got \(3,\)"),
    (lambda: CrossEntropyLoss()(X, T, mask=np.array([0, 1, 2, 1])), ValueError, "0/1"),
    (lambda: CrossEntropyLoss()(X, T, mask=np.array(["a"] * 4)), TypeError, "mask must be"),
    (lambda: CrossEntropyLoss()(np.array([[0, np.nan, 0]] * 4), T), ValueError,
     "logits contain NaN"),
    (lambda: CrossEntropyLoss()(np.array([[0, np.inf, 0]] * 4), T), ValueError,
     "logits contain NaN or infinite"),
    (lambda: CrossEntropyLoss(reduction="avg"), ValueError,
     "reduction must be one of 'mean', 'sum', 'none', got 'avg'"),
    (lambda: CrossEntropyLoss(weight=[1.0, -1.0, 1.0]), ValueError,
     "weight must be finite and >= 0"),
    (lambda: CrossEntropyLoss(weight=np.ones((3, 1))), ValueError, "weight must be a 1-D"),
    (lambda: CrossEntropyLoss(weight=np.ones(2))(X, T), ValueError,
     "weight has 2 class weights but the logits have 3 classes"),
    (lambda: CrossEntropyLoss()(X, T, sample_weight=np.ones(3)), ValueError,
     r"sample_weight of shape \(3,\) does not broadcast to the input shape \(4,\)"),
    (lambda: CrossEntropyLoss()(X, T, sample_weight=["a"] * 4), TypeError,
     "sample_weight must hold numbers"),
    (lambda: MSELoss(weight=np.ones(2))(X, X), ValueError, "does not broadcast"),
    (lambda: BCEWithLogitsLoss(weight=[np.inf]), ValueError, "weight must be finite"),
    (lambda: CrossEntropyLoss(label_smoothing=1.0), ValueError, r"label_smoothing.*\[0, 1\)"),
    (lambda: CrossEntropyLoss(label_smoothing=-0.1), ValueError, "label_smoothing"),
    (lambda: CrossEntropyLoss(ignore_index=1.5), TypeError, "ignore_index must be an int"),
    (lambda: BCEWithLogitsLoss()(X, T), TypeError, "targets must hold float"),
    (lambda: BCEWithLogitsLoss()(X, np.zeros((3, 4))), ValueError,
     r"targets must have the shape of logits \(4, 3\), got \(3, 4\)"),
    (lambda: BCEWithLogitsLoss()(X, np.full((4, 3), np.nan)), ValueError, "targets contain NaN"),
    (lambda: BCEWithLogitsLoss()(X, np.full((4, 3), 1.5)), ValueError, r"\[0, 1\].*1.5"),
    (lambda: BCEWithLogitsLoss()(X, np.full((4, 3), -0.5)), ValueError, r"\[0, 1\]"),
    (lambda: BCEWithLogitsLoss()(X, np.zeros((4, 3)), mask=np.ones(3, bool)), ValueError,
     r"leading part of the logits shape \(4, 3\).*got \(3,\)"),
    (lambda: BCEWithLogitsLoss()(np.full((4, 3), np.nan), np.zeros((4, 3))), ValueError,
     "logits contain NaN"),
    (lambda: BCEWithLogitsLoss(pos_weight=np.ones(2))(X, np.zeros((4, 3))), ValueError,
     r"pos_weight has 2 weights.*\(4, 3\)"),
    (lambda: BCEWithLogitsLoss(pos_weight=[1.0, -1.0]), ValueError, "pos_weight must be finite"),
    (lambda: BCEWithLogitsLoss(pos_weight=[np.nan]), ValueError, "pos_weight must be finite"),
    (lambda: BCEWithLogitsLoss(pos_weight=np.ones((2, 2))), ValueError, "pos_weight must be"),
    (lambda: BCEWithLogitsLoss(pos_weight=["a"]), TypeError, "pos_weight must hold"),
    (lambda: BCEWithLogitsLoss(reduction="avg"), ValueError, "reduction must be"),
    (lambda: MSELoss()(X, np.zeros((4, 2))), ValueError,
     r"targets must have the shape of predictions \(4, 3\), got \(4, 2\)"),
    (lambda: MSELoss()(X, np.full((4, 3), np.nan)), ValueError, "targets contain NaN"),
    (lambda: MSELoss()(np.full((4, 3), np.inf), np.zeros((4, 3))), ValueError,
     "predictions contain NaN or infinite"),
    (lambda: MSELoss()(np.zeros((2, 0)), np.zeros((2, 0))), ValueError, "empty"),
    (lambda: MSELoss()(X.astype(np.int32), X), TypeError, "predictions must hold float"),
    (lambda: MSELoss()(X, X, mask=np.ones((4, 3, 1), bool)), ValueError, "leading part"),
    (lambda: MSELoss(reduction=None), ValueError, "reduction must be"),
])
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_kernels_refuse_inconsistent_shapes():
    x = np.zeros((4, 3))
    with pytest.raises(ValueError, match="inconsistent shapes"):
        _losses.cross_entropy(x, np.zeros(3, np.intp), np.zeros((4, 3)), np.zeros(1), 8,
                              0.0, 1.0, 1)
    with pytest.raises(ValueError, match="partial"):
        _losses.mse(x, x, np.zeros((0, 0), np.uint8), np.zeros((4, 3)), np.zeros(5), 8,
                    1.0, 1)


# -- weights and reduction="none" ---------------------------------------------------------

def _torch_grad_of_sum(torch, function, x, *args, **kwargs):
    xt = torch.tensor(x, requires_grad=True)
    loss = function(xt, *args, **kwargs)
    loss.sum().backward()
    return loss.detach().numpy(), xt.grad.numpy()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_weighted_losses_match_torch(torch, rng, dtype, reduction):
    F = torch.nn.functional
    x = rng.standard_normal((5, 3, 4)).astype(dtype)
    t = rng.integers(0, 4, (5, 3))
    t[0, 0] = -100                                             # ignored
    class_weight = rng.random(4) + 0.1
    loss, grad = CrossEntropyLoss(weight=class_weight, reduction=reduction)(x, t)
    expected = _torch_grad_of_sum(torch, lambda v: F.cross_entropy(
        v.permute(0, 2, 1), torch.tensor(t), weight=torch.tensor(class_weight, dtype=v.dtype),
        reduction=reduction), x)
    assert_close(loss, expected[0], dtype)
    assert_close(grad, expected[1], dtype)
    y = rng.random((5, 3, 4)).astype(dtype)
    weight = rng.random((3, 4))
    pos_weight = np.array([1.0, 2.0, 0.5, 3.0])
    loss, grad = BCEWithLogitsLoss(weight=weight, pos_weight=pos_weight,
                                   reduction=reduction)(x, y)
    expected = _torch_grad_of_sum(torch, lambda v: F.binary_cross_entropy_with_logits(
        v, torch.tensor(y), weight=torch.tensor(weight, dtype=v.dtype),
        pos_weight=torch.tensor(pos_weight, dtype=v.dtype), reduction=reduction), x)
    assert_close(loss, expected[0], dtype)
    assert_close(grad, expected[1], dtype)
    loss, grad = MSELoss(reduction=reduction)(x, y)
    expected = _torch_grad_of_sum(torch, lambda v: F.mse_loss(v, torch.tensor(y),
                                                              reduction=reduction), x)
    assert_close(loss, expected[0], dtype)
    assert_close(grad, expected[1], dtype)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_weighted_losses_finite_differences(rng, reduction):
    x = rng.standard_normal((4, 3, 5))
    t = rng.integers(0, 5, (4, 3))
    mask = random_mask(rng, (4, 3))
    sample_weight = rng.random((4, 3))
    criterion = CrossEntropyLoss(weight=rng.random(5) + 0.1, label_smoothing=0.1,
                                 reduction=reduction)
    check_fd(criterion, x.copy(), t, mask=mask, sample_weight=sample_weight)
    y = rng.random((4, 3, 5))
    check_fd(BCEWithLogitsLoss(weight=rng.random(5), pos_weight=rng.random(5) + 0.5,
                               reduction=reduction), x.copy(), y, mask=mask)
    check_fd(MSELoss(weight=rng.random((3, 1)), reduction=reduction), x.copy(), y,
             mask=mask[:, :, None].repeat(5, axis=2))


def test_reduction_none_gradient_is_that_of_the_sum(rng):
    """FD of sum(losses) for reduction="none", and the sum equals "sum"."""
    x = rng.standard_normal((6, 4))
    t = rng.integers(0, 4, 6)
    y = rng.random((6, 4))
    cases = [(CrossEntropyLoss, (t,), {"sample_weight": rng.random(6)}),
             (BCEWithLogitsLoss, (y,), {"mask": np.array([1, 0, 1, 1, 0, 1], bool)}),
             (MSELoss, (y,), {})]
    for cls, args, kwargs in cases:
        none = cls(reduction="none")
        losses, grad = none(x, *args, **kwargs)
        assert losses.shape == (x.shape[:-1] if cls is CrossEntropyLoss else x.shape)
        total, total_grad = cls(reduction="sum")(x, *args, **kwargs)
        assert math.isclose(losses.sum(), total, rel_tol=1e-12)
        np.testing.assert_allclose(grad, total_grad, rtol=1e-12)
        probe = x.copy()
        numeric = central_differences(probe, lambda: none(probe, *args, **kwargs)[0].sum(),
                                      1e-6)
        np.testing.assert_allclose(grad.reshape(-1), numeric, rtol=1e-6, atol=1e-9)
    losses, _ = BCEWithLogitsLoss(reduction="none")(x, y, mask=np.array([1, 0, 1, 1, 0, 1]))
    assert not losses[[1, 4]].any() and losses[0].all()     # masked rows are 0


def test_sample_weights_scale_positions_and_mean_divides_by_their_sum(rng):
    x = rng.standard_normal((4, 3))
    t = np.array([0, 1, 2, 1])
    per_position, _ = CrossEntropyLoss(reduction="none")(x, t)
    weights = np.array([2.0, 0.0, 1.0, 0.5])
    loss, grad = CrossEntropyLoss()(x, t, sample_weight=weights)
    assert math.isclose(loss, (per_position * weights).sum() / weights.sum(), rel_tol=1e-12)
    assert not grad[1].any()                                    # weight 0: no gradient
    loss, _ = CrossEntropyLoss()(x, t, sample_weight=np.zeros(4))
    assert loss == 0.0
