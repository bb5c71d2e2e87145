"""Learning-rate schedules with ``torch.optim.lr_scheduler`` semantics.

A schedule sets ``optimizer.lr``.  Call ``step()`` once per epoch or once per
batch, as you decide, after ``optimizer.step()``.  As in PyTorch:

* constructing a schedule performs its first step (``last_epoch`` becomes 0;
  ``LinearWarmup`` multiplies the learning rate by ``start_factor`` there),
  and the schedule's starting learning rate ``base_lr`` is the optimizer's
  at construction;
* each step updates the *current* learning rate (the recursive "chainable"
  formulas), so schedules compose with each other and with manual changes;
* ``state_dict()`` does not include the learning rate itself, which lives in
  the optimizer's state: to resume, build the optimizer and the schedule,
  then load both state dicts (the optimizer's restores ``lr``).

fastrnn optimizers have one parameter group, so ``get_last_lr()`` returns a
float (PyTorch returns a list with one entry per group).
"""

import math
from collections.abc import Mapping


from .._validation import Integer, Options, Real, is_bool
from .optimizers import Optimizer

__all__ = ["StepLR", "ExponentialLR", "CosineAnnealingLR", "LinearWarmup",
           "ReduceLROnPlateau"]


_POSITIVE_INT = Integer(low=1)
_COUNT = Integer(low=0)
_AT_LEAST_0 = Real(low=0)
_ABOVE_0 = Real(low=0, low_open=True)
_BEST = Real(finite=False)         # "inf" / "-inf" are decoded before the check


def _check_optimizer(owner, optimizer):
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"{owner}: optimizer must be a fastrnn optimizer "
                        f"(fr.optim.SGD, Adam...), got {type(optimizer).__name__}")
    return optimizer


class _Schedule:
    """Base class: the initial step, ``step()``, ``get_last_lr()``, state dicts.

    Subclasses list their settings in ``_settings`` (validated by
    ``_check_settings``) and define ``_next_lr(lr)`` from the current lr and
    ``self.last_epoch`` (already advanced).
    """

    _settings = ()
    _counters = ("last_epoch", "base_lr", "last_lr")

    def __init__(self, optimizer):
        self.optimizer = _check_optimizer(type(self).__name__, optimizer)
        self.base_lr = float(optimizer.lr)
        self.last_epoch = -1
        self._initial = True
        self.step()
        self._initial = False

    def step(self):
        """Advance one epoch (or batch) and set the optimizer's learning rate."""
        self.last_epoch += 1
        self.optimizer.lr = self._next_lr(float(self.optimizer.lr))
        self.last_lr = float(self.optimizer.lr)

    def get_last_lr(self):
        """The learning rate set by the last ``step()`` (a float)."""
        return self.last_lr

    def state_dict(self):
        """Settings and counters (JSON-able)."""
        state = {"type": type(self).__name__}
        state.update({name: getattr(self, name) for name in self._settings + self._counters})
        return state

    def load_state_dict(self, state):
        """Restore a ``state_dict()``: type and keys must match; values are
        checked before anything changes.  The optimizer's lr is not touched."""
        owner = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state, Mapping):
            raise TypeError(f"{owner}: state must be a mapping (from state_dict()), "
                            f"got {type(state).__name__}")
        expected = {"type"} | set(self._settings) | set(self._counters)
        if set(state) != expected:
            raise ValueError(f"{owner}: state keys must be {sorted(expected)}, missing "
                             f"{sorted(expected - set(state))}, unexpected "
                             f"{sorted(set(state) - expected, key=str)}")
        if state["type"] != type(self).__name__:
            raise ValueError(f"{owner}: the state is for a {state['type']!r} schedule, "
                             f"not {type(self).__name__!r}")
        settings = self._check_settings(owner, {name: state[name] for name in self._settings})
        counters = self._check_counters(owner, state)
        for name, value in {**settings, **counters}.items():
            setattr(self, name, value)

    def _check_counters(self, owner, state):
        return {"last_epoch": _COUNT("last_epoch", state["last_epoch"], owner),
                "base_lr": _AT_LEAST_0("base_lr", state["base_lr"], owner),
                "last_lr": _AT_LEAST_0("last_lr", state["last_lr"], owner)}

    def __repr__(self):
        args = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._settings)
        return f"{type(self).__name__}({args})"


class StepLR(_Schedule):
    """Multiply the learning rate by ``gamma`` every ``step_size`` steps
    (``torch.optim.lr_scheduler.StepLR``).

    Args:
        optimizer: a fastrnn optimizer.
        step_size: steps between decays (positive int).
        gamma: the factor (> 0).
    """

    _settings = ("step_size", "gamma")

    def __init__(self, optimizer, step_size, gamma=0.1):
        settings = self._check_settings(type(self).__name__,
                                        {"step_size": step_size, "gamma": gamma})
        self.step_size, self.gamma = settings["step_size"], settings["gamma"]
        super().__init__(optimizer)

    @staticmethod
    def _check_settings(owner, s):
        return {"step_size": _POSITIVE_INT("step_size", s["step_size"], owner),
                "gamma": _ABOVE_0("gamma", s["gamma"], owner)}

    def _next_lr(self, lr):
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return lr
        return lr * self.gamma


class ExponentialLR(_Schedule):
    """Multiply the learning rate by ``gamma`` at every step
    (``torch.optim.lr_scheduler.ExponentialLR``).

    Args:
        optimizer: a fastrnn optimizer.
        gamma: the factor (> 0).
    """

    _settings = ("gamma",)

    def __init__(self, optimizer, gamma):
        self.gamma = self._check_settings(type(self).__name__, {"gamma": gamma})["gamma"]
        super().__init__(optimizer)

    @staticmethod
    def _check_settings(owner, s):
        return {"gamma": _ABOVE_0("gamma", s["gamma"], owner)}

    def _next_lr(self, lr):
        if self._initial:
            return lr
        return lr * self.gamma


class CosineAnnealingLR(_Schedule):
    """Cosine annealing from ``base_lr`` to ``eta_min`` over ``T_max`` steps
    (``torch.optim.lr_scheduler.CosineAnnealingLR``, without restarts: past
    ``T_max`` the learning rate rises again along the cosine, as in PyTorch).

    Args:
        optimizer: a fastrnn optimizer.
        T_max: steps of the half period (positive int).
        eta_min: the smallest learning rate (>= 0).
    """

    _settings = ("T_max", "eta_min")

    def __init__(self, optimizer, T_max, eta_min=0.0):
        settings = self._check_settings(type(self).__name__,
                                        {"T_max": T_max, "eta_min": eta_min})
        self.T_max, self.eta_min = settings["T_max"], settings["eta_min"]
        super().__init__(optimizer)

    @staticmethod
    def _check_settings(owner, s):
        return {"T_max": _POSITIVE_INT("T_max", s["T_max"], owner),
                "eta_min": _AT_LEAST_0("eta_min", s["eta_min"], owner)}

    def _next_lr(self, lr):
        e, T, low = self.last_epoch, self.T_max, self.eta_min
        if self._initial:
            return lr
        if (e - 1 - T) % (2 * T) == 0:
            return lr + (self.base_lr - low) * (1 - math.cos(math.pi / T)) / 2
        return ((1 + math.cos(math.pi * e / T)) / (1 + math.cos(math.pi * (e - 1) / T))
                * (lr - low) + low)


class LinearWarmup(_Schedule):
    """Raise the learning rate linearly from ``start_factor * lr`` to ``lr``
    over ``warmup_steps`` steps, then leave it (PyTorch's
    ``LinearLR(start_factor, end_factor=1.0, total_iters=warmup_steps)``).

    Args:
        optimizer: a fastrnn optimizer.
        warmup_steps: steps until the full learning rate (positive int).
        start_factor: the first step's fraction of the learning rate, in (0, 1].
    """

    _settings = ("warmup_steps", "start_factor")

    def __init__(self, optimizer, warmup_steps, start_factor=1.0 / 3):
        settings = self._check_settings(type(self).__name__,
                                        {"warmup_steps": warmup_steps,
                                         "start_factor": start_factor})
        self.warmup_steps = settings["warmup_steps"]
        self.start_factor = settings["start_factor"]
        super().__init__(optimizer)

    @staticmethod
    def _check_settings(owner, s):
        return {"warmup_steps": _POSITIVE_INT("warmup_steps", s["warmup_steps"], owner),
                "start_factor": Real(0, 1, low_open=True)(
                    "start_factor", s["start_factor"], owner)}

    def _next_lr(self, lr):
        start, end, total, e = self.start_factor, 1.0, self.warmup_steps, self.last_epoch
        if e == 0:
            return lr * start
        if self._initial or e > total:
            return lr
        return lr * (1.0 + (end - start) / (total * start + (e - 1) * (end - start)))


def _encode(value):
    """A float as JSON-able: infinities become the strings 'inf' / '-inf'."""
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def _decode(owner, name, value):
    if value in ("inf", "-inf"):
        return float(value)
    return _BEST(name, value, owner)


class ReduceLROnPlateau(_Schedule):
    """Divide the learning rate when a metric stops improving
    (``torch.optim.lr_scheduler.ReduceLROnPlateau``); ``step(metric)``.

    The metric improves when it beats the best so far by more than
    ``threshold`` (relative: best * (1 -/+ threshold); absolute: best -/+
    threshold).  After more than ``patience`` steps without improvement the
    learning rate becomes max(lr * factor, min_lr) (unless that changes it by
    no more than ``eps``), then ``cooldown`` steps are not counted.  The
    learning rate is not changed at construction.

    Args:
        optimizer: a fastrnn optimizer.
        mode: "min" (a loss) or "max" (an accuracy).
        factor: the multiplier, in (0, 1).
        patience: steps without improvement tolerated (int >= 0).
        threshold: the least improvement that counts (>= 0).
        threshold_mode: "rel" or "abs".
        cooldown: steps to wait after a reduction (int >= 0).
        min_lr: the learning rate's lower bound (>= 0).
        eps: the smallest change of the learning rate that is applied (>= 0).
    """

    _settings = ("mode", "factor", "patience", "threshold", "threshold_mode", "cooldown",
                 "min_lr", "eps")
    _counters = ("last_epoch", "best", "num_bad_epochs", "cooldown_counter", "last_lr")

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4,
                 threshold_mode="rel", cooldown=0, min_lr=0.0, eps=1e-8):
        _check_optimizer(type(self).__name__, optimizer)
        settings = self._check_settings(type(self).__name__, dict(
            mode=mode, factor=factor, patience=patience, threshold=threshold,
            threshold_mode=threshold_mode, cooldown=cooldown, min_lr=min_lr, eps=eps))
        for name, value in settings.items():
            setattr(self, name, value)
        self.optimizer = optimizer
        self.last_epoch = 0
        self.last_lr = float(optimizer.lr)
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0

    @staticmethod
    def _check_settings(owner, s):
        def at_least_zero(name):
            return _AT_LEAST_0(name, s[name], owner)
        return {"mode": Options(("min", "max"))("mode", s["mode"], owner),
                "factor": Real(0, 1, True, True)("factor", s["factor"], owner),
                "patience": _COUNT("patience", s["patience"], owner),
                "threshold": at_least_zero("threshold"),
                "threshold_mode": Options(("rel", "abs"))(
                    "threshold_mode", s["threshold_mode"], owner),
                "cooldown": _COUNT("cooldown", s["cooldown"], owner),
                "min_lr": at_least_zero("min_lr"),
                "eps": at_least_zero("eps")}

    def _is_better(self, value):
        if self.mode == "min":
            if self.threshold_mode == "rel":
                return value < self.best * (1.0 - self.threshold)
            return value < self.best - self.threshold
        if self.threshold_mode == "rel":
            return value > self.best * (self.threshold + 1.0)
        return value > self.best + self.threshold

    def step(self, metric):
        """Record this epoch's ``metric`` (a number; NaN counts as no
        improvement) and reduce the learning rate if it has plateaued."""
        current = None
        if not isinstance(metric, (str, bytes)) and not is_bool(metric):
            try:
                current = float(metric)
            except (TypeError, ValueError):
                pass
        if current is None:
            raise TypeError(f"ReduceLROnPlateau.step: metric must be a number, "
                            f"got {type(metric).__name__} {metric!r}")
        self.last_epoch += 1
        if self._is_better(current):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            old_lr = float(self.optimizer.lr)
            new_lr = max(old_lr * self.factor, self.min_lr)
            if old_lr - new_lr > self.eps:
                self.optimizer.lr = new_lr
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self.last_lr = float(self.optimizer.lr)

    def state_dict(self):
        state = super().state_dict()
        state["best"] = _encode(self.best)
        return state

    def _check_counters(self, owner, state):
        return {"last_epoch": _COUNT("last_epoch", state["last_epoch"], owner),
                "best": _decode(owner, "best", state["best"]),
                "num_bad_epochs": _COUNT("num_bad_epochs", state["num_bad_epochs"], owner),
                "cooldown_counter": _COUNT("cooldown_counter", state["cooldown_counter"], owner),
                "last_lr": _AT_LEAST_0("last_lr", state["last_lr"], owner)}
