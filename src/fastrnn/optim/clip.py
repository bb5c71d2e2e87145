"""Gradient clipping over modules, as ``torch.nn.utils.clip_grad_norm_`` /
``clip_grad_value_``.

Gradients are found as the optimizers find them (``module.named_parameters()``,
``module.grads[name]``; frozen modules list none) and changed in place, so
clip between ``backward`` and ``optimizer.step()``.  Norms are accumulated in
double by one kernel call per gradient array.

``grad_norm``, ``scale_to_norm`` and ``clamp`` work on already checked flat
gradient views (a :class:`~fastrnn.optim.optimizers.ParameterSet`'s
``flat_grads()``); the Trainer uses them to measure the norm once per batch
and reuse it for the NaN check and the clipping.
"""

import math

from .. import _threads
from .._kernels._dispatch import _optim
from .._validation import Real
from .optimizers import _flat, _kernels, check_parameters, resolve_modules

__all__ = ["clip_grad_norm", "clip_grad_value"]

_NORM_SQUARES, _NORM_ABS, _NORM_MAX, _NORM_POWER = 0, 1, 2, 3
_reduce = _kernels(_optim.norm_reduce)
_scale = _kernels(_optim.scale)
_clamp = _kernels(_optim.clamp)


_NORM_TYPE = Real(low=0, low_open=True, finite=False)
_BOUND = Real(low=0, finite=False)


def _norm_type(value):
    if isinstance(value, str) and value.lower() == "inf":
        return math.inf
    return _NORM_TYPE("norm_type", value, "clip_grad_norm")


def _bound(owner, name, value):
    """A number >= 0 (inf allowed), or a ValueError naming it."""
    return _BOUND(name, value, owner)


def _grads(modules, owner):
    """The checked, writeable flat gradients of ``modules`` (one-off check)."""
    checked = check_parameters(resolve_modules(modules, owner), owner, writeable_grads=True)
    return [_flat(grad) for _, _, listed in checked for _, _, _, grad in listed]


# -- on checked flat gradients ---------------------------------------------------

def grad_norm(grads, p, threads):
    """The ``p``-norm of all elements of the flat ``grads`` together, as a
    float (NaN/inf when an element is; inf when ``p`` is inf: the max |g|)."""
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
    return float(total)


def scale_to_norm(grads, max_norm, total, threads):
    """Scale ``grads`` by ``max_norm / (total + 1e-6)`` when that is < 1
    (torch's rule); ``total`` is their norm and must be finite."""
    coef = max_norm / (total + 1e-6)
    if coef < 1.0:
        for grad in grads:
            _scale[grad.dtype](grad, coef, threads)


def clamp(grads, clip_value, threads):
    """Clamp every element of ``grads`` into ``[-clip_value, clip_value]``."""
    for grad in grads:
        _clamp[grad.dtype](grad, clip_value, threads)


# -- public ----------------------------------------------------------------------------

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
    max_norm = _bound("clip_grad_norm", "max_norm", max_norm)
    p = _norm_type(norm_type)
    grads = _grads(modules, "clip_grad_norm")
    threads = _threads.get_num_threads()
    total = grad_norm(grads, p, threads)
    if math.isfinite(total):
        scale_to_norm(grads, max_norm, total, threads)
    return total


def clip_grad_value(modules, clip_value):
    """Clamp every gradient element into ``[-clip_value, clip_value]`` in place,
    as ``torch.nn.utils.clip_grad_value_`` (NaN stays NaN).

    Args:
        modules: a Module, a list/tuple of Modules, or an object with ``modules()``.
        clip_value: the bound (a number >= 0).
    """
    clip_value = _bound("clip_grad_value", "clip_value", clip_value)
    clamp(_grads(modules, "clip_grad_value"), clip_value, _threads.get_num_threads())
