"""Gradient clipping over modules, as ``torch.nn.utils.clip_grad_norm_`` /
``clip_grad_value_``.

Gradients are found as the optimizers find them (``module.named_parameters()``,
``module.grads[name]``; frozen modules list none) and changed in place, so
clip between ``backward`` and ``optimizer.step()``.  Norms are accumulated in
double by one kernel call per gradient array.
"""

import math
import numbers

from .. import _threads
from .._kernels import _optim
from .optimizers import _kernels, live_parameters, resolve_modules

__all__ = ["clip_grad_norm", "clip_grad_value"]

_NORM_SQUARES, _NORM_ABS, _NORM_MAX, _NORM_POWER = 0, 1, 2, 3
_reduce = _kernels(_optim.norm_reduce)
_scale = _kernels(_optim.scale)
_clamp = _kernels(_optim.clamp)


def _norm_type(value):
    if isinstance(value, str) and value.lower() == "inf":
        return math.inf
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or math.isnan(value) or value <= 0 or value == -math.inf:
        raise ValueError(f"clip_grad_norm: norm_type must be a number > 0 or inf, "
                         f"got {value!r}")
    return float(value)


def _grads(modules, owner):
    modules = resolve_modules(modules, owner)
    return [grad.reshape(-1) for _, _, _, grad in
            live_parameters(modules, owner, writeable_grads=True)]


def clip_grad_norm(modules, max_norm, norm_type=2.0):
    """Rescale all gradients together so their joint norm is at most ``max_norm``.

    The total norm is the ``norm_type``-norm of all gradient elements of all
    modules taken as one vector.  When ``max_norm / (total + 1e-6) < 1`` every
    gradient is multiplied by that factor, exactly as
    ``torch.nn.utils.clip_grad_norm_``.  A non-finite total (a NaN or infinite
    gradient) is returned and nothing is scaled (torch would multiply by NaN);
    check the returned value to skip such a step.

    Args:
        modules: a Module, a list/tuple of Modules, or an object with ``modules()``.
        max_norm: the largest allowed total norm (>= 0; inf only measures).
        norm_type: p of the p-norm (> 0), or ``inf`` / ``"inf"`` for the max |g|.

    Returns:
        The total norm before clipping, as a float.
    """
    if isinstance(max_norm, bool) or not isinstance(max_norm, numbers.Real) \
            or math.isnan(max_norm) or max_norm < 0:
        raise ValueError(f"clip_grad_norm: max_norm must be a number >= 0, got {max_norm!r}")
    p = _norm_type(norm_type)
    grads = _grads(modules, "clip_grad_norm")
    threads = _threads.get_num_threads()
    if p == math.inf:
        total = 0.0
        for grad in grads:
            value = _reduce[grad.dtype](grad, _NORM_MAX, 0.0, threads)
            if value > total or value != value:    # a NaN wins and stays
                total = value
    elif p == 2.0:
        total = math.sqrt(sum(_reduce[g.dtype](g, _NORM_SQUARES, 2.0, threads) for g in grads))
    elif p == 1.0:
        total = sum(_reduce[g.dtype](g, _NORM_ABS, 1.0, threads) for g in grads)
    else:
        total = sum(_reduce[g.dtype](g, _NORM_POWER, p, threads) for g in grads) ** (1.0 / p)
    total = float(total)
    if not math.isfinite(total):
        return total
    coef = float(max_norm) / (total + 1e-6)
    if coef < 1.0:
        for grad in grads:
            _scale[grad.dtype](grad, coef, threads)
    return total


def clip_grad_value(modules, clip_value):
    """Clamp every gradient element into ``[-clip_value, clip_value]`` in place,
    as ``torch.nn.utils.clip_grad_value_`` (NaN stays NaN).

    Args:
        modules: a Module, a list/tuple of Modules, or an object with ``modules()``.
        clip_value: the bound (a number >= 0).
    """
    if isinstance(clip_value, bool) or not isinstance(clip_value, numbers.Real) \
            or math.isnan(clip_value) or clip_value < 0:
        raise ValueError(f"clip_grad_value: clip_value must be a number >= 0, "
                         f"got {clip_value!r}")
    grads = _grads(modules, "clip_grad_value")
    threads = _threads.get_num_threads()
    for grad in grads:
        _clamp[grad.dtype](grad, float(clip_value), threads)
