"""Loss functions that return the loss and its gradient in one fused pass.

There is no autograd tape in fastrnn, so a loss is not a layer with a
backward: calling a criterion gives ``(loss, d_input)`` directly, the
gradient already scaled by the reduction, ready for the head's ``backward``::

    criterion = CrossEntropyLoss(ignore_index=0)
    loss, d_logits = criterion(head(out), targets, mask=mask)   # (T, B, C), (T, B)
    d_out = head.backward(d_logits)

Semantics follow ``torch.nn.functional`` (cross_entropy,
binary_cross_entropy_with_logits, mse_loss), with the class / label axis
LAST (PyTorch puts classes on axis 1) and an optional ``mask`` of padded
positions (False = padded: it adds nothing to the loss, its gradient is 0
and it does not count towards a mean).  The loss is a Python float summed in
double; the gradient has the input's dtype (float32 or float64) and shape.

When nothing is counted (everything masked or ignored) the loss is 0.0 and
the gradient is zero, where PyTorch's mean gives nan: a batch made only of
padding should not poison a training run.

Weights: ``CrossEntropyLoss(weight=)`` weighs classes (PyTorch's rule: the
mean divides by the summed weights of the counted targets) and its
``forward(..., sample_weight=)`` weighs positions the same way;
``BCEWithLogitsLoss(weight=)`` and ``MSELoss(weight=)`` weigh elements
(broadcast to the input; the mean still divides by the element count, as
PyTorch's BCE does).  ``reduction="none"`` returns the per-position
(cross-entropy: targets' shape) or per-element loss array, 0 where not
counted, and the gradient of its sum.

Values at masked (or ignored) positions never reach the loss or the
gradient, so they may hold anything, NaN included (padding); inputs at
counted positions must be finite (a NaN there raises ValueError).
"""

import math

import numpy as np

from . import _threads
from ._buffers import Recycler
from ._kernels._dispatch import _losses
from ._validation import FRACTION, Integer, Options, float_array, produced, to_numpy

__all__ = ["CrossEntropyLoss", "BCEWithLogitsLoss", "MSELoss"]

_REDUCTION = Options(("mean", "sum", "none"))
# Rows per block are chosen so a block holds about this many elements.  The
# blocks depend on the row width only, never on the thread count, so the
# loss is the same bit for bit with any number of threads.
_BLOCK_ELEMENTS = 8192


# -- checks ----------------------------------------------------------------------

def _check_reduction(reduction):
    return _REDUCTION("reduction", reduction)


def _weight_array(name, value, ndim=None):
    """Finite weights >= 0 as float64 (None stays None); ``ndim`` 1 for a
    per-class vector."""
    if value is None:
        return None
    array = to_numpy(value)
    if array.dtype.kind not in "iuf" or array.dtype == np.float16:
        raise TypeError(f"{name} must hold numbers (float or int), got dtype {array.dtype}")
    array = np.asarray(array, dtype=np.float64)
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array, got shape {array.shape}")
    if not np.isfinite(array).all() or (array < 0).any():
        raise ValueError(f"{name} must be finite and >= 0")
    return array


def _broadcast_weight(name, weight, shape):
    """``weight`` broadcast to ``shape``, flat and contiguous (float64)."""
    try:
        return np.ascontiguousarray(np.broadcast_to(weight, shape), dtype=np.float64).ravel()
    except ValueError:
        raise ValueError(f"{name} of shape {weight.shape} does not broadcast to the input "
                         f"shape {tuple(shape)}") from None


def _reduced(reduction, row_loss, shape, total, count, input_name):
    """The loss the criterion returns: the per-position array for "none",
    else the sum or the mean over ``count``."""
    if not math.isfinite(total):
        raise ValueError(f"{input_name} contain NaN or infinite values (at counted positions)")
    if reduction == "none":
        return row_loss.reshape(shape)
    return float(total / count if reduction == "mean" else total)


def _input_array(name, value):
    """``value`` as a C-contiguous float32/float64 array of its own dtype, non-empty."""
    if value is None:
        raise TypeError(f"{name} must be an array, got None")
    array = to_numpy(value, name)
    dtype = array.dtype if array.dtype in (np.float32, np.float64) else np.float64
    # float_array refuses ints, bools and float16; it makes 0-d arrays 1-d,
    # so the shape is put back.
    array = float_array(name, array, dtype).reshape(array.shape)
    if array.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {array.shape}")
    return array


def _mask_array(mask, shape, owner, exact=False):
    """A bool array from ``mask`` (bool, or numbers that are all 0 or 1).

    ``exact``: the mask must have exactly ``shape``; otherwise it must be a
    leading part of it, ``shape[:mask.ndim]``.
    """
    array = to_numpy(mask, "mask")
    if array.dtype.kind not in "biuf":
        raise TypeError(f"mask must be a bool or 0/1 array, got dtype {array.dtype}")
    if array.dtype.kind != "b":
        ok = (array == 0) | (array == 1)
        if not ok.all():
            bad = array[~ok].reshape(-1)[0]
            raise ValueError(f"mask must hold only 0/1 or True/False, got the value {bad!r}")
        array = array != 0
    if exact:
        if array.shape != tuple(shape):
            raise ValueError(f"mask must have the shape of targets, {owner}.shape[:-1] = "
                             f"{tuple(shape)}, got {array.shape}")
    elif array.ndim > len(shape) or array.shape != tuple(shape[:array.ndim]):
        raise ValueError(f"mask must have a leading part of the {owner} shape {tuple(shape)} "
                         f"({owner}.shape[:mask.ndim]), got {array.shape}")
    return np.ascontiguousarray(array)


def _float_targets(targets, shape, dtype, owner):
    """Float targets of exactly ``shape`` in ``dtype``."""
    array = to_numpy(targets, "targets") if targets is not None else None
    if array is not None and array.dtype.kind in "iub":
        raise TypeError(f"targets must hold float values (like {owner}), got dtype "
                        f"{array.dtype}; convert them with .astype({np.dtype(dtype).name!r})")
    array = float_array("targets", array, dtype).reshape(array.shape)
    if array.shape != tuple(shape):
        raise ValueError(f"targets must have the shape of {owner} {tuple(shape)}, "
                         f"got {array.shape}")
    return array


def _counted(array, mask):
    """The entries of ``array`` at counted positions (all without a mask)."""
    return array if mask is None else array[mask]


def _check_finite_targets(targets, mask):
    values = _counted(targets, mask)
    if not np.isfinite(values).all():
        raise ValueError("targets contain NaN or infinite values (at counted positions)")
    return values


def _block_rows(cols):
    return max(1, _BLOCK_ELEMENTS // max(int(cols), 1))


def _partials(rows, cols):
    block = _block_rows(cols)
    return block, np.zeros((rows + block - 1) // block, dtype=np.float64)


def _finish(total, count, reduction, input_name):
    if not math.isfinite(total):
        raise ValueError(f"{input_name} contain NaN or infinite values (at counted positions)")
    return total / count if reduction == "mean" else total


def _layout(shape, lead_ndim):
    """(rows, cols) of the 2-D view with one row per position of ``shape[:lead_ndim]``."""
    rows = math.prod(shape[:lead_ndim])
    return rows, math.prod(shape) // rows


_NO_MASK = np.zeros((0, 0), dtype=np.uint8)


def _plain_layout(shape, mask):
    """(rows, cols, kernel mask) for an elementwise loss with a row mask.

    With a mask, one row per mask position; without, rows of the last axis
    (or single elements for 0-d and 1-D inputs), so the rows split over
    threads.
    """
    if mask is not None:
        rows, cols = _layout(shape, mask.ndim)
        return rows, cols, mask.reshape(rows, 1)
    if len(shape) <= 1:
        return math.prod(shape), 1, _NO_MASK
    rows, cols = _layout(shape, len(shape) - 1)
    return rows, cols, _NO_MASK


# -- criteria ----------------------------------------------------------------------

class _Loss:
    """Shared parts: a criterion holds options only and is called as a function."""

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def _new_grad(self, like):
        """An uninitialised gradient array shaped like ``like``: the one of an
        earlier call once its caller has dropped it (see fastrnn._buffers)."""
        recycler = self.__dict__.get("_recycler")
        if recycler is None:
            recycler = self._recycler = Recycler()
        return recycler.empty("grad", like.shape, like.dtype)

    def forward(self, *args, **kwargs):
        raise NotImplementedError


class CrossEntropyLoss(_Loss):
    """Softmax cross-entropy over the LAST axis, as ``torch.nn.functional.cross_entropy``.

    Args:
        ignore_index: targets equal to it are not counted (gradient 0), as in
            PyTorch; it may lie inside [0, C).
        label_smoothing: eps in [0, 1): the target distribution is
            (1 - eps) one-hot + eps / C.
        reduction: "mean" (divide by the number of counted positions, or by
            their summed weights), "sum" or "none" (the loss of every
            position, an array of the targets' shape).
        weight: None or one weight >= 0 per class, (C,): a position's loss
            is multiplied by the weight of its target class.

    ``criterion(logits, targets, mask=None, sample_weight=None) -> (loss,
    d_logits)``: logits (..., C) float32/float64, for example (T, B, C) from
    a Linear head; targets integer class ids of shape (...) =
    logits.shape[:-1]; mask bool/0-1 of that shape, False at padded
    positions; sample_weight numbers >= 0 broadcastable to that shape,
    multiplying each position's loss (with class weights too).  Only
    counted positions (mask True, target != ignore_index) are range-checked.
    """

    def __init__(self, ignore_index=-100, label_smoothing=0.0, reduction="mean", weight=None):
        self.weight = _weight_array("weight", weight, ndim=1)
        self.ignore_index = Integer()("ignore_index", ignore_index)
        self.label_smoothing = FRACTION("label_smoothing", label_smoothing)
        self.reduction = _check_reduction(reduction)

    def forward(self, logits, targets, mask=None, sample_weight=None):
        x = _input_array("logits", logits)
        if x.ndim < 1:
            raise ValueError(f"logits must have a class axis (last), got shape {x.shape}")
        C = x.shape[-1]
        t = to_numpy(targets, "targets") if targets is not None else None
        if t is None or t.dtype.kind not in "iu":
            what = "None" if t is None else f"dtype {t.dtype}"
            raise TypeError(f"targets must be integer class ids, got {what}")
        if t.shape != x.shape[:-1]:
            raise ValueError(f"targets must have shape logits.shape[:-1] = {x.shape[:-1]} "
                             f"(logits shape {x.shape}), got {t.shape}")
        t = t.reshape(-1)
        counted = t != self.ignore_index
        if mask is not None:
            counted &= _mask_array(mask, x.shape[:-1], "logits", exact=True).reshape(-1)
        bad = counted & ((t < 0) | (t >= C))
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            where = np.unravel_index(first, x.shape[:-1]) if x.ndim > 1 else ()
            raise ValueError(f"targets must be class ids in [0, {C}) (logits have {C} "
                             f"classes) or ignore_index={self.ignore_index}, got {t[first]} "
                             f"at index {tuple(int(i) for i in where)}")
        if self.weight is not None and self.weight.size != C:
            raise ValueError(f"weight has {self.weight.size} class weights but the logits "
                             f"have {C} classes")
        kernel_targets = t.astype(np.intp)
        kernel_targets[~counted] = -1
        weights = self._row_weights(kernel_targets, sample_weight, x.shape[:-1])
        count = (int(np.count_nonzero(counted)) if weights is None
                 else float(weights[counted].sum()))
        none = self.reduction == "none"
        if count == 0:
            return (np.zeros(x.shape[:-1]) if none else 0.0), np.zeros_like(x)
        rows = t.size
        block, partial = _partials(rows, C)
        grad = self._new_grad(x)
        row_loss = np.empty(rows) if none else None
        scale = 1.0 / count if self.reduction == "mean" else 1.0
        _losses.cross_entropy(x.reshape(rows, C), kernel_targets, grad.reshape(rows, C),
                              partial, block, self.label_smoothing, scale,
                              _threads.get_num_threads(), weights, row_loss)
        loss = _reduced(self.reduction, row_loss, x.shape[:-1], float(partial.sum()), count,
                        "logits")
        return loss, produced(grad)

    def _row_weights(self, kernel_targets, sample_weight, shape):
        """Per-position weights (class weight of the target x sample weight),
        flat float64, or None when there are none."""
        sample = _weight_array("sample_weight", sample_weight)
        if self.weight is None and sample is None:
            return None
        weights = np.ones(kernel_targets.size)
        if self.weight is not None:
            counted = kernel_targets >= 0
            weights[counted] = self.weight[kernel_targets[counted]]
        if sample is not None:
            weights *= _broadcast_weight("sample_weight", sample, shape)
        return weights

    def __repr__(self):
        weight = "" if self.weight is None else f", weight={self.weight.tolist()}"
        return (f"CrossEntropyLoss(ignore_index={self.ignore_index}, "
                f"label_smoothing={self.label_smoothing}, reduction={self.reduction!r}"
                f"{weight})")


class BCEWithLogitsLoss(_Loss):
    """Sigmoid binary cross-entropy, as ``torch.nn.functional.binary_cross_entropy_with_logits``.

    Args:
        reduction: "mean" (over counted elements), "sum" or "none" (the
            loss of every element, an array of the logits' shape).
        pos_weight: optional weight of the positive term, a number or an
            array of shape (K,) (one per label on the last axis of the
            logits) or (1,); finite and >= 0.
        weight: None or weights >= 0 broadcastable to the logits' shape,
            multiplying each element's loss (PyTorch's ``weight``).

    ``criterion(logits, targets, mask=None) -> (loss, d_logits)``: logits
    (..., K) multi-label or (...) single-label, float32/float64; targets
    floats in [0, 1] of the same shape; mask bool/0-1 of a leading part of
    the shape, ``logits.shape[:mask.ndim]`` (for example (T, B) for (T, B, K)).
    """

    def __init__(self, reduction="mean", pos_weight=None, weight=None):
        self.reduction = _check_reduction(reduction)
        self.weight = _weight_array("weight", weight)
        self.pos_weight = None
        if pos_weight is not None:
            pw = to_numpy(pos_weight)
            if pw.dtype.kind not in "iuf" or pw.dtype == np.float16:
                raise TypeError(f"pos_weight must hold float32/float64 or integer values, "
                                f"got dtype {pw.dtype}")
            if pw.ndim > 1 or pw.size == 0:
                raise ValueError(f"pos_weight must be a number or a 1-D array of one "
                                 f"weight per label, got shape {pw.shape}")
            pw = pw.astype(np.float64).reshape(-1)
            if not np.isfinite(pw).all() or (pw < 0).any():
                raise ValueError(f"pos_weight must be finite and >= 0, got {pw}")
            self.pos_weight = pw

    def forward(self, logits, targets, mask=None):
        x = _input_array("logits", logits)
        y = _float_targets(targets, x.shape, x.dtype, "logits")
        m = None if mask is None else _mask_array(mask, x.shape, "logits")
        values = _check_finite_targets(y, m)
        if ((values < 0) | (values > 1)).any():
            bad = values[(values < 0) | (values > 1)][0]
            raise ValueError(f"targets must lie in [0, 1] (probabilities of the positive "
                             f"label), got {bad}")
        pw = self.pos_weight
        per_label = pw is not None and pw.size > 1
        if per_label and (x.ndim < 1 or x.shape[-1] != pw.size):
            raise ValueError(f"pos_weight has {pw.size} weights, one per label, but the "
                             f"logits have shape {x.shape} ({x.shape[-1] if x.ndim else 0} "
                             f"labels on the last axis)")
        if self.weight is not None or self.reduction == "none":
            return self._elementwise(x, y, m, pw, per_label)
        if per_label:
            # Rows of K labels, so that column k takes pos_weight[k].
            rows, cols = _layout(x.shape, x.ndim - 1)
            if m is None:
                kmask = _NO_MASK
            elif m.ndim < x.ndim:
                lead = m.reshape(m.shape + (1,) * (x.ndim - 1 - m.ndim))
                kmask = np.ascontiguousarray(np.broadcast_to(lead, x.shape[:-1]))
                kmask = kmask.reshape(rows, 1)
            else:
                kmask = m.reshape(rows, cols)
            weights = pw.astype(x.dtype)
        else:
            rows, cols, kmask = _plain_layout(x.shape, m)
            weights = np.full(cols, 1.0 if pw is None else pw[0], dtype=x.dtype)
        count = x.size if m is None else int(np.count_nonzero(m)) * (x.size // m.size)
        if count == 0:
            return 0.0, np.zeros_like(x)
        block, partial = _partials(rows, cols)
        grad = self._new_grad(x)
        scale = 1.0 / count if self.reduction == "mean" else 1.0
        _losses.bce_with_logits(x.reshape(rows, cols), y.reshape(rows, cols),
                                kmask.view(np.uint8), weights, grad.reshape(rows, cols),
                                partial, block, scale, _threads.get_num_threads())
        loss = _finish(float(partial.sum()), count, self.reduction, "logits")
        return float(loss), produced(grad)

    def _elementwise(self, x, y, m, pw, per_label):
        """One kernel row per element: element weights and per-element losses."""
        if per_label:
            row_pw = np.ascontiguousarray(np.broadcast_to(pw, x.shape), dtype=x.dtype).ravel()
        else:
            row_pw = np.full(1, 1.0 if pw is None else pw[0], dtype=x.dtype)
        return _elementwise_loss(_losses.bce_with_logits, "logits", x, y, m, self.weight,
                                 self.reduction, pos_weight=row_pw)

    def __repr__(self):
        pw = None if self.pos_weight is None else self.pos_weight.tolist()
        weight = "" if self.weight is None else f", weight={self.weight.tolist()}"
        return f"BCEWithLogitsLoss(reduction={self.reduction!r}, pos_weight={pw}{weight})"


class MSELoss(_Loss):
    """Mean squared error, as ``torch.nn.functional.mse_loss``.

    Args:
        reduction: "mean" (over counted elements), "sum" or "none" (the
            squared error of every element, an array of the input's shape).
        weight: None or weights >= 0 broadcastable to the predictions'
            shape, multiplying each element's squared error.

    ``criterion(predictions, targets, mask=None) -> (loss, d_predictions)``:
    predictions and targets of the same shape, float32/float64; mask
    bool/0-1 of a leading part of the shape, ``predictions.shape[:mask.ndim]``.
    """

    def __init__(self, reduction="mean", weight=None):
        self.reduction = _check_reduction(reduction)
        self.weight = _weight_array("weight", weight)

    def forward(self, predictions, targets, mask=None):
        p = _input_array("predictions", predictions)
        y = _float_targets(targets, p.shape, p.dtype, "predictions")
        m = None if mask is None else _mask_array(mask, p.shape, "predictions")
        _check_finite_targets(y, m)
        if self.weight is not None or self.reduction == "none":
            return _elementwise_loss(_losses.mse, "predictions", p, y, m, self.weight,
                                     self.reduction)
        rows, cols, kmask = _plain_layout(p.shape, m)
        count = p.size if m is None else int(np.count_nonzero(m)) * cols
        if count == 0:
            return 0.0, np.zeros_like(p)
        block, partial = _partials(rows, cols)
        grad = self._new_grad(p)
        scale = 1.0 / count if self.reduction == "mean" else 1.0
        _losses.mse(p.reshape(rows, cols), y.reshape(rows, cols), kmask.view(np.uint8),
                    grad.reshape(rows, cols), partial, block, scale,
                    _threads.get_num_threads())
        loss = _finish(float(partial.sum()), count, self.reduction, "predictions")
        return float(loss), produced(grad)

    def __repr__(self):
        weight = "" if self.weight is None else f", weight={self.weight.tolist()}"
        return f"MSELoss(reduction={self.reduction!r}{weight})"


def _elementwise_loss(kernel, input_name, x, y, m, weight, reduction, **options):
    """BCE / MSE with one kernel row per element: element weights (``weight``
    broadcast to ``x``) and, for reduction "none", per-element losses."""
    rows = x.size
    if m is None:
        kmask, count = _NO_MASK, rows
    else:
        lead = m.reshape(m.shape + (1,) * (x.ndim - m.ndim))
        full = np.broadcast_to(lead, x.shape)
        kmask, count = np.ascontiguousarray(full).reshape(rows, 1), int(np.count_nonzero(full))
    if count == 0:
        return (np.zeros(x.shape) if reduction == "none" else 0.0), np.zeros_like(x)
    weights = None if weight is None else _broadcast_weight("weight", weight, x.shape)
    row_loss = np.empty(rows) if reduction == "none" else None
    block, partial = _partials(rows, 1)
    grad = np.empty_like(x)
    scale = 1.0 / count if reduction == "mean" else 1.0
    args = [x.reshape(rows, 1), y.reshape(rows, 1), kmask.view(np.uint8)]
    if "pos_weight" in options:
        args.append(options["pos_weight"])
    kernel(*args, grad.reshape(rows, 1), partial, block, scale, _threads.get_num_threads(),
           weights, row_loss)
    loss = _reduced(reduction, row_loss, x.shape, float(partial.sum()), count, input_name)
    return loss, produced(grad)
