"""Optimizers: SGD, Adam, AdamW, RMSprop, Adagrad with fused update kernels.

Hyperparameters, defaults and update rules are those of ``torch.optim`` (the
single-tensor path, one parameter group), so the same gradients give the same
parameters.  Each parameter array is updated in place by one compiled call
that does the whole update in one pass over memory; bias corrections and
decayed learning rates are computed here once per step, as PyTorch does.

Two additions to PyTorch:

* ``l1``: an L1 penalty.  ``l1 * sign(p)`` is added to the gradient before
  everything else (before ``weight_decay``'s ``weight_decay * p``), so the
  optimizer minimises ``loss + l1 * sum(|p|)``.  ``sign(0) = 0``.
* Parameters are found through modules: ``module.named_parameters()`` at each
  step (a frozen module lists none and is skipped; its state is kept) and the
  gradient of ``name`` in ``module.grads[name]``.  The arrays are fully
  checked when first seen and again whenever the listing changes (see
  :class:`ParameterSet`), not at every step.

State is per parameter, created at its first update, as in PyTorch: a
parameter's ``step`` counts its own updates, so one that was frozen for a
while gets the bias corrections of the updates it actually had.
"""

from collections.abc import Mapping

import numpy as np

from .. import _threads
from .._io import archive_bytes, read_archive
from .._kernels._dispatch import _optim
from .._validation import Boolean, Integer, Modules, Real, to_numpy

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad"]

OPTIMIZER_FORMAT = "fastrnn.optimizer"
OPTIMIZER_VERSION = 1

_PRECISION = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}


def _flat(array):
    """1-D view of a C-contiguous array (what the kernels take)."""
    return array.reshape(-1)


def _kernels(function):
    """The float32 / float64 specialisations of a fused kernel, by dtype
    (indexing once avoids the fused-type dispatch on every call)."""
    return {dtype: function[name] for dtype, name in _PRECISION.items()}


# -- modules ----------------------------------------------------------------------

_MODULES = Modules()


def resolve_modules(modules, owner):
    """The list of modules from one module, a list/tuple of them, or an object
    with a ``modules()`` method (a task model), resolved once (the one rule of
    :class:`fastrnn._validation.Modules`).  The order fixes the module index
    ``k`` used in state-dict keys."""
    return _MODULES.resolve("modules", modules, owner)


class _Slot:
    """One checked parameter: its place (module index ``k``, ``name``), its
    arrays, and the flat views of them that the kernels take."""

    __slots__ = ("k", "name", "param", "grad", "shape", "dtype", "grad_dtype", "flat_param",
                 "flat_grad")

    def __init__(self, k, name, param, grad):
        self.k, self.name, self.param, self.grad = k, name, param, grad
        self.shape, self.dtype, self.grad_dtype = param.shape, param.dtype, grad.dtype
        self.flat_param, self.flat_grad = _flat(param), _flat(grad)


class ParameterSet:
    """The checked (parameter, gradient) pairs of some modules, kept between steps.

    Listing and checking every array costs about a microsecond per parameter,
    as much as a small parameter's whole update, so the checked list is kept
    while nothing changes.  Each :meth:`slots` call still asks every module
    for ``named_parameters()`` (a frozen module lists none) and compares the
    listing with the kept one: the same names, the same parameter objects,
    the same ``grads[name]`` objects, and for the arrays the user of the set
    works on, the same shape and dtype and, when it writes them, still
    writeable.  Any difference (a module frozen or unfrozen, an array
    replaced, reshaped or made read-only) runs the full check again, which
    raises on a bad array.  Not noticed: strides set in place on a live array
    (deprecated by numpy) and ``resize(refcheck=False)``, which numpy itself
    documents as unsafe.

    Args:
        modules: the list of modules (from :func:`resolve_modules`).
        owner: the name that starts error messages ("Adam", "Trainer").
        writes_params: the user updates the parameters (an optimizer):
            parameters must be writeable, and their shapes and dtypes are
            watched too (optimizer state is tied to them).
        writes_grads: the user changes the gradients (clipping): they must
            be writeable.
    """

    def __init__(self, modules, owner, writes_params=False, writes_grads=False):
        self.modules = modules
        self.owner = owner
        self.writes_params = writes_params
        self.writes_grads = writes_grads
        self.version = 0        # counts rebuilds: users of the slots re-derive on change
        self._slots = None
        self._by_module = ()    # (module, its grads mapping, its slots) per module
        self._flat_grads, self._flat_grads_version = None, -1

    def slots(self):
        """The list of :class:`_Slot`, checked (rebuilt if anything changed)."""
        if self._slots is None or not self._unchanged():
            self._slots = None
            self._slots = self._check()
            self.version += 1
        return self._slots

    def flat_grads(self):
        """The flat gradient views, in slot order (checked as :meth:`slots`)."""
        slots = self.slots()
        if self._flat_grads_version != self.version:
            self._flat_grads = [slot.flat_grad for slot in slots]
            self._flat_grads_version = self.version
        return self._flat_grads

    def _unchanged(self):
        """True when every module lists what was checked last time."""
        writes_params, writes_grads = self.writes_params, self.writes_grads
        for module, grads, slots in self._by_module:
            if module.grads is not grads:
                return False
            named = module.named_parameters()
            if len(named) != len(slots):
                return False
            for (name, param), slot in zip(named, slots):
                grad = grads.get(name)
                if (param is not slot.param or grad is not slot.grad or name != slot.name
                        or grad.shape != slot.shape or grad.dtype is not slot.grad_dtype
                        or (writes_grads and not grad.flags.writeable)):
                    return False
                if writes_params and (param.shape != slot.shape
                                      or param.dtype is not slot.dtype
                                      or not param.flags.writeable):
                    return False
        return True

    def _check(self):
        by_module, found = [], []
        for module, grads, listed in check_parameters(self.modules, self.owner,
                                                      self.writes_params, self.writes_grads):
            slots = [_Slot(k, name, param, grad) for k, name, param, grad in listed]
            found.extend(slots)
            by_module.append((module, grads, slots))
        self._by_module = tuple(by_module)
        return found


def check_parameters(modules, owner, writeable_params=False, writeable_grads=False):
    """Every parameter the modules list now, checked: a float32/float64 numpy
    array, C-contiguous, listed once, its gradient of the same shape and dtype
    and C-contiguous (and writeable when asked).

    Returns ``[(module, module.grads, [(k, name, param, grad), ...]), ...]``,
    one entry per module.
    """
    checked = []
    seen = {}
    for k, module in enumerate(modules):
        grads = module.grads
        listed = []
        for name, param in module.named_parameters():
            where = f"{owner}: modules[{k}] parameter {name!r}"
            if id(param) in seen:
                raise ValueError(f"{where} is the same array as {seen[id(param)]}; shared "
                                 f"(tied) parameters would be updated once per listing")
            seen[id(param)] = f"modules[{k}] parameter {name!r}"
            if not isinstance(param, np.ndarray) or param.dtype not in _PRECISION:
                raise TypeError(f"{where} must be a float32 or float64 numpy array, got "
                                f"{getattr(param, 'dtype', type(param).__name__)}")
            if not param.flags.c_contiguous:
                raise ValueError(f"{where} must be C-contiguous")
            if writeable_params and not param.flags.writeable:
                raise ValueError(f"{where} is read-only")
            grad = grads.get(name)
            if not isinstance(grad, np.ndarray):
                raise TypeError(f"{where}: grads[{name!r}] must be a numpy array, got "
                                f"{type(grad).__name__}")
            if grad.shape != param.shape or grad.dtype != param.dtype:
                raise ValueError(f"{where}: the gradient must have the parameter's shape "
                                 f"{param.shape} and dtype {param.dtype}, got {grad.shape} "
                                 f"{grad.dtype}")
            if not grad.flags.c_contiguous:
                raise ValueError(f"{where}: its gradient must be C-contiguous")
            if writeable_grads and not grad.flags.writeable:
                raise ValueError(f"{where}: its gradient array is read-only")
            listed.append((k, name, param, grad))
        checked.append((module, grads, listed))
    return checked


def all_parameters(module):
    """Every parameter of a module by name, frozen or not: what its
    ``state_dict`` holds, so what loaded optimizer state and checkpoints are
    checked against."""
    params = getattr(module, "_params", None)
    if isinstance(params, Mapping):
        return params
    return dict(module.named_parameters())


# -- hyperparameter checks ------------------------------------------------------------

_AT_LEAST_0 = Real(low=0.0)
_ABOVE_0 = Real(low=0.0, low_open=True)
_IN_0_1 = Real(0.0, 1.0)
_IN_0_1_OPEN = Real(0.0, 1.0, high_open=True)
_FLAG = Boolean()
_STEP = Integer(low=0)


def _betas(owner, value):
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise ValueError(f"{owner}: betas must be a pair (beta1, beta2), got {value!r}")
    return [_IN_0_1_OPEN(f"betas[{i}]", beta, owner)
            for i, beta in enumerate(value)]


# -- base class ---------------------------------------------------------------------

class _Entry:
    """A parameter's slot with its optimizer state and the state's flat buffers."""

    __slots__ = ("slot", "key", "state", "buffers", "fresh")

    def __init__(self, slot, state, buffers):
        self.slot, self.key = slot, (slot.k, slot.name)
        self.state, self.buffers = state, buffers
        # True from the state's creation until an optimizer that must know
        # clears it (SGD: a new momentum buffer is set, not decayed).
        self.fresh = False


class Optimizer:
    """Base class: module resolution, the step loop, zero_grad, state dicts.

    Subclasses define ``_check(hp)`` (validated, JSON-able copy of the
    hyperparameters), ``_buffer_names(hp)`` (the state arrays kept per
    parameter), ``_kernel_buffers`` (the state arrays the kernel takes, in
    its order; absent ones are passed empty), ``_counts_steps`` (keep a
    per-parameter ``step``) and ``_apply(entries, threads)``, which updates
    every parameter (incrementing ``state["step"]`` first when counted).
    """

    _counts_steps = True
    _kernel_buffers = ()

    def __init__(self, modules, **hyperparameters):
        name = type(self).__name__
        self._modules = resolve_modules(modules, name)
        self._hp = self._check(hyperparameters)
        self._step = 0
        self._state = {}    # (k, name) -> {"step": int, buffer name: array}
        self._empty = {dtype: np.empty(0, dtype=dtype) for dtype in _PRECISION}
        self._parameters = ParameterSet(self._modules, name, writes_params=True)
        self._entries, self._entries_version = None, -1

    # -- hyperparameters ------------------------------------------------------------
    @property
    def lr(self):
        """The learning rate (schedules set it between steps)."""
        return self._hp["lr"]

    @lr.setter
    def lr(self, value):
        self._hp["lr"] = _AT_LEAST_0("lr", value, type(self).__name__)

    @property
    def hyperparameters(self):
        """A copy of the hyperparameters (JSON-able)."""
        return {key: list(value) if isinstance(value, list) else value
                for key, value in self._hp.items()}

    @property
    def modules(self):
        """The modules whose parameters this optimizer updates (index = ``k``)."""
        return list(self._modules)

    @property
    def step_count(self):
        """How many times ``step()`` has run."""
        return self._step

    # -- the update -------------------------------------------------------------------
    def step(self):
        """Update every parameter the modules list from its gradient, in place.

        Everything is checked before the first parameter changes, so a bad
        array leaves all parameters as they were.  The checks are repeated
        only when the modules' arrays change (see :class:`ParameterSet`).
        """
        entries = self._current_entries()
        for entry in entries:
            if entry.state is None:
                self._start_state(entry)
        self._apply(entries, _threads.get_num_threads())
        self._step += 1

    def _current_entries(self):
        """The checked parameters with their state (rebuilt when they changed)."""
        slots = self._parameters.slots()
        if self._entries_version != self._parameters.version:
            self._entries = None
            self._entries = [self._entry(slot) for slot in slots]
            self._entries_version = self._parameters.version
        return self._entries

    def _entry(self, slot):
        state = self._state.get((slot.k, slot.name))
        if state is None:
            return _Entry(slot, None, None)
        for key, buffer in state.items():
            if key != "step" and (buffer.shape != slot.shape or buffer.dtype != slot.dtype):
                raise ValueError(
                    f"{type(self).__name__}: modules[{slot.k}] parameter {slot.name!r} is now "
                    f"{slot.shape} {slot.dtype}, but its optimizer state is {buffer.shape} "
                    f"{buffer.dtype}: the parameter was replaced")
        return _Entry(slot, state, self._flat_buffers(state, slot.dtype))

    def _start_state(self, entry):
        """Create a parameter's state at its first update (as PyTorch does)."""
        state = {"step": 0} if self._counts_steps else {}
        state.update(self._new_buffers(entry.slot.param))
        self._state[entry.key] = entry.state = state
        entry.buffers = self._flat_buffers(state, entry.slot.dtype)
        entry.fresh = True

    def _new_buffers(self, param):
        return {name: np.zeros_like(param) for name in self._buffer_names(self._hp)}

    def _flat_buffers(self, state, dtype):
        empty = self._empty[dtype]
        return tuple(_flat(state[name]) if name in state else empty
                     for name in self._kernel_buffers)

    def zero_grad(self):
        """Set every module's gradients to zero (gradients accumulate)."""
        for module in self._modules:
            module.zero_grad()

    # -- state ------------------------------------------------------------------------
    def state_dict(self):
        """The optimizer state as numpy arrays and JSON-able values.

        ``{"type": "Adam", "hyperparameters": {...}, "step": steps taken,
        "buffers": {"<k>.<name>.<buffer>": array}}`` where ``k`` is the
        module's index and ``<buffer>`` is e.g. ``exp_avg``; a parameter's own
        update count is the 0-d int64 array ``"<k>.<name>.step"``.  Only
        parameters updated at least once have entries.  Arrays are copies.
        """
        buffers = {}
        for (k, pname), state in self._state.items():
            for key, value in state.items():
                if key == "step":
                    buffers[f"{k}.{pname}.step"] = np.array(value, dtype=np.int64)
                else:
                    buffers[f"{k}.{pname}.{key}"] = value.copy()
        return {"type": type(self).__name__, "hyperparameters": self.hyperparameters,
                "step": self._step, "buffers": buffers}

    def load_state_dict(self, state):
        """Restore a ``state_dict()``: hyperparameters (``lr`` included), step
        count and buffers.  All of it is checked (type, keys, shapes, values)
        before anything changes; parameters without entries start fresh."""
        name = type(self).__name__
        if not isinstance(state, Mapping):
            raise TypeError(f"{name}.load_state_dict: state must be a mapping (from "
                            f"state_dict()), got {type(state).__name__}")
        expected = {"type", "hyperparameters", "step", "buffers"}
        if set(state) != expected:
            raise ValueError(f"{name}.load_state_dict: state keys must be "
                             f"{sorted(expected)}, missing {sorted(expected - set(state))}, "
                             f"unexpected {sorted(set(state) - expected, key=str)}")
        if state["type"] != name:
            raise ValueError(f"{name}.load_state_dict: the state is for a "
                             f"{state['type']!r} optimizer, not {name!r}")
        hp = state["hyperparameters"]
        if not isinstance(hp, Mapping):
            raise TypeError(f"{name}.load_state_dict: hyperparameters must be a mapping, "
                            f"got {type(hp).__name__}")
        if set(hp) != set(self._hp):
            raise ValueError(f"{name}.load_state_dict: hyperparameters must be "
                             f"{sorted(self._hp)}, missing {sorted(set(self._hp) - set(hp))}, "
                             f"unexpected {sorted(set(hp) - set(self._hp), key=str)}")
        hp = self._check(dict(hp))
        steps = state["step"]
        _STEP("step", steps, f"{name}.load_state_dict")
        buffers = state["buffers"]
        if not isinstance(buffers, Mapping):
            raise TypeError(f"{name}.load_state_dict: buffers must be a mapping of names "
                            f"to arrays, got {type(buffers).__name__}")
        staged = self._stage_buffers(buffers, hp)
        self._hp = hp
        self._step = int(steps)
        self._state = staged
        self._entries, self._entries_version = None, -1

    def _stage_buffers(self, buffers, hp):
        """Checked copies of the buffers, as per-parameter state."""
        name = type(self).__name__
        wanted = set(self._buffer_names(hp)) | ({"step"} if self._counts_steps else set())
        grouped = {}
        for key, value in buffers.items():
            parts = key.split(".") if isinstance(key, str) else []
            if len(parts) < 3 or not parts[0].isdigit():
                raise ValueError(f"{name}.load_state_dict: buffer key {key!r} is not "
                                 f"'<module index>.<parameter>.<buffer>'")
            k, pname, buffer = int(parts[0]), ".".join(parts[1:-1]), parts[-1]
            if k >= len(self._modules):
                raise ValueError(f"{name}.load_state_dict: buffer {key!r} names module {k}, "
                                 f"but there are {len(self._modules)} modules")
            params = all_parameters(self._modules[k])
            if pname not in params:
                raise ValueError(f"{name}.load_state_dict: buffer {key!r}: modules[{k}] "
                                 f"({type(self._modules[k]).__name__}) has no parameter "
                                 f"{pname!r}; it has {sorted(params)}")
            if buffer not in wanted:
                raise ValueError(f"{name}.load_state_dict: buffer {key!r}: {name} with "
                                 f"these hyperparameters keeps {sorted(wanted)}, not "
                                 f"{buffer!r}")
            grouped.setdefault((k, pname), {})[buffer] = value
        staged = {}
        for (k, pname), entries in grouped.items():
            missing = wanted - set(entries)
            if missing:
                raise ValueError(f"{name}.load_state_dict: parameter '{k}.{pname}' is "
                                 f"missing buffers {sorted(missing)}")
            param = all_parameters(self._modules[k])[pname]
            state = {}
            for buffer in sorted(entries):
                key = f"{k}.{pname}.{buffer}"
                array = to_numpy(entries[buffer])
                if buffer == "step":
                    if array.shape != () or array.dtype.kind not in "iu" or array < 1:
                        raise ValueError(f"{name}.load_state_dict: buffer {key!r} must be "
                                         f"a positive integer, got {entries[buffer]!r}")
                    state["step"] = int(array)
                    continue
                if array.shape != param.shape:
                    raise ValueError(f"{name}.load_state_dict: buffer {key!r} must have "
                                     f"the parameter's shape {param.shape}, got "
                                     f"{array.shape}")
                if array.dtype.kind != "f":
                    raise TypeError(f"{name}.load_state_dict: buffer {key!r} must hold "
                                    f"floats, got {array.dtype}")
                if not np.isfinite(array).all():
                    raise ValueError(f"{name}.load_state_dict: buffer {key!r} contains "
                                     f"NaN or infinite values")
                state[buffer] = np.array(array, dtype=param.dtype, order="C", copy=True)
            staged[(k, pname)] = state
        return staged

    def __reduce_ex__(self, protocol):
        """Pickle as (class, modules, state): the modules pickle as layers do
        (through the archive format, so a pickle holding both the modules and
        the optimizer keeps them shared) and the state through the archive
        too; the compiled update kernels are found again on unpickling."""
        state = self.state_dict()
        meta = {"format": OPTIMIZER_FORMAT, "version": OPTIMIZER_VERSION,
                "type": state["type"], "hyperparameters": state["hyperparameters"],
                "step": state["step"]}
        return _unpickle_optimizer, (type(self), list(self._modules),
                                     archive_bytes(state["buffers"], meta))

    def __repr__(self):
        args = ", ".join(f"{key}={tuple(value) if isinstance(value, list) else value!r}"
                         for key, value in self._hp.items())
        return f"{type(self).__name__}({args})"


def _unpickle_optimizer(cls, modules, data):
    """The optimizer pickled by ``Optimizer.__reduce_ex__``."""
    buffers, meta = read_archive(data, OPTIMIZER_FORMAT, OPTIMIZER_VERSION, "optimizer")
    hyperparameters = meta["hyperparameters"]
    optimizer = cls(modules, **{key: tuple(value) if isinstance(value, list) else value
                                for key, value in hyperparameters.items()})
    optimizer.load_state_dict({"type": meta["type"], "hyperparameters": hyperparameters,
                               "step": meta["step"], "buffers": buffers})
    return optimizer


# -- the optimizers -------------------------------------------------------------------

class SGD(Optimizer):
    """Stochastic gradient descent with momentum, as ``torch.optim.SGD``.

    d = g + l1 sign(p) + weight_decay p; with momentum, buf = d at the first
    step and buf = momentum buf + (1 - dampening) d after; d = d + momentum buf
    (Nesterov) or buf; p -= lr d.

    Args:
        modules: a Module, a list/tuple of Modules, or an object with ``modules()``.
        lr: learning rate (>= 0; torch's default 1e-3).
        momentum: momentum factor (>= 0).
        dampening: dampening of the momentum (in [0, 1]).
        weight_decay: L2 penalty coefficient (>= 0), added to the gradient.
        nesterov: Nesterov momentum (needs momentum > 0 and dampening 0).
        l1: L1 penalty coefficient (>= 0): l1 * sign(p) is added to the gradient.
    """

    _counts_steps = False
    _kernel_buffers = ("momentum_buffer",)

    def __init__(self, modules, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, l1=0.0):
        super().__init__(modules, lr=lr, momentum=momentum, dampening=dampening,
                         weight_decay=weight_decay, nesterov=nesterov, l1=l1)
        self._kernel = _kernels(_optim.sgd_step)

    @classmethod
    def _check(cls, hp):
        owner = cls.__name__
        out = {"lr": _AT_LEAST_0("lr", hp["lr"], owner),
               "momentum": _AT_LEAST_0("momentum", hp["momentum"], owner),
               "dampening": _IN_0_1("dampening", hp["dampening"], owner),
               "weight_decay": _AT_LEAST_0("weight_decay", hp["weight_decay"], owner),
               "nesterov": _FLAG("nesterov", hp["nesterov"], owner),
               "l1": _AT_LEAST_0("l1", hp["l1"], owner)}
        if out["nesterov"] and (out["momentum"] <= 0 or out["dampening"] != 0):
            raise ValueError(f"{owner}: nesterov=True needs momentum > 0 and dampening 0, "
                             f"got momentum={out['momentum']} dampening={out['dampening']}")
        return out

    @staticmethod
    def _buffer_names(hp):
        return ("momentum_buffer",) if hp["momentum"] != 0 else ()

    def _apply(self, entries, threads):
        hp = self._hp
        lr, wd, l1 = hp["lr"], hp["weight_decay"], hp["l1"]
        momentum, dampening, nesterov = hp["momentum"], hp["dampening"], hp["nesterov"]
        kernel = self._kernel
        for entry in entries:
            slot = entry.slot
            # A new momentum buffer is set to the first step's gradient, not decayed.
            first, entry.fresh = entry.fresh, False
            kernel[slot.dtype](slot.flat_param, slot.flat_grad, entry.buffers[0], lr, wd, l1,
                               momentum, dampening, nesterov, first, threads)


class Adam(Optimizer):
    """Adam, as ``torch.optim.Adam`` (weight_decay is an L2 term in the gradient).

    d = g + l1 sign(p) + weight_decay p; m = beta1 m + (1 - beta1) d;
    v = beta2 v + (1 - beta2) d^2 (AMSGrad: v_max = max(v_max, v) is used);
    p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps), where t
    counts the parameter's updates.

    Args:
        modules: a Module, a list/tuple of Modules, or an object with ``modules()``.
        lr: learning rate (>= 0).
        betas: (beta1, beta2), each in [0, 1).
        eps: added to the denominator (> 0).
        weight_decay: L2 penalty coefficient (>= 0).
        amsgrad: use the maximum of past second moments (AMSGrad).
        l1: L1 penalty coefficient (>= 0): l1 * sign(p) is added to the gradient.
    """

    _decoupled = False
    _kernel_buffers = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    def __init__(self, modules, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, l1=0.0):
        super().__init__(modules, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, l1=l1)
        self._kernel = _kernels(_optim.adam_step)

    @classmethod
    def _check(cls, hp):
        owner = cls.__name__
        return {"lr": _AT_LEAST_0("lr", hp["lr"], owner),
                "betas": _betas(owner, hp["betas"]),
                "eps": _ABOVE_0("eps", hp["eps"], owner),
                "weight_decay": _AT_LEAST_0("weight_decay", hp["weight_decay"], owner),
                "amsgrad": _FLAG("amsgrad", hp["amsgrad"], owner),
                "l1": _AT_LEAST_0("l1", hp["l1"], owner)}

    @staticmethod
    def _buffer_names(hp):
        return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if hp["amsgrad"] else ())

    def _apply(self, entries, threads):
        hp = self._hp
        lr, wd, l1, eps = hp["lr"], hp["weight_decay"], hp["l1"], hp["eps"]
        beta1, beta2 = hp["betas"]
        decay, coupled = (1 - lr * wd, 0.0) if self._decoupled else (1.0, wd)
        kernel = self._kernel
        t_done = None
        for entry in entries:
            state, slot = entry.state, entry.slot
            t = state["step"] = state["step"] + 1
            if t != t_done:     # the parameters usually share their step count
                step_size = lr / (1 - beta1 ** t)
                bias_correction2_sqrt = (1 - beta2 ** t) ** 0.5
                t_done = t
            exp_avg, exp_avg_sq, max_exp_avg_sq = entry.buffers
            kernel[slot.dtype](slot.flat_param, slot.flat_grad, exp_avg, exp_avg_sq,
                               max_exp_avg_sq, decay, coupled, l1, beta1, beta2, step_size,
                               bias_correction2_sqrt, eps, threads)


class AdamW(Adam):
    """AdamW, as ``torch.optim.AdamW``: Adam with decoupled weight decay.

    Before the Adam update, p *= 1 - lr * weight_decay (the decay is not part
    of the gradient, so the moments do not see it).  ``l1`` still enters the
    gradient.  Arguments as ``Adam``; ``weight_decay`` defaults to 1e-2.
    """

    _decoupled = True

    def __init__(self, modules, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, l1=0.0):
        super().__init__(modules, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, l1=l1)


class RMSprop(Optimizer):
    """RMSprop, as ``torch.optim.RMSprop``.

    d = g + l1 sign(p) + weight_decay p; s = alpha s + (1 - alpha) d^2;
    centered: a = alpha a + (1 - alpha) d and avg = sqrt(s - a^2) + eps, else
    avg = sqrt(s) + eps; with momentum buf = momentum buf + d / avg and
    p -= lr buf, else p -= lr d / avg.

    Args:
        modules: a Module, a list/tuple of Modules, or an object with ``modules()``.
        lr: learning rate (>= 0).
        alpha: smoothing constant of the squared-gradient average, in [0, 1).
        eps: added to the denominator (> 0).
        weight_decay: L2 penalty coefficient (>= 0).
        momentum: momentum factor (>= 0).
        centered: normalise by the estimated variance of the gradient.
        l1: L1 penalty coefficient (>= 0): l1 * sign(p) is added to the gradient.
    """

    _kernel_buffers = ("square_avg", "grad_avg", "momentum_buffer")

    def __init__(self, modules, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0,
                 momentum=0.0, centered=False, l1=0.0):
        super().__init__(modules, lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                         momentum=momentum, centered=centered, l1=l1)
        self._kernel = _kernels(_optim.rmsprop_step)

    @classmethod
    def _check(cls, hp):
        owner = cls.__name__
        return {"lr": _AT_LEAST_0("lr", hp["lr"], owner),
                "alpha": _IN_0_1_OPEN("alpha", hp["alpha"], owner),
                "eps": _ABOVE_0("eps", hp["eps"], owner),
                "weight_decay": _AT_LEAST_0("weight_decay", hp["weight_decay"], owner),
                "momentum": _AT_LEAST_0("momentum", hp["momentum"], owner),
                "centered": _FLAG("centered", hp["centered"], owner),
                "l1": _AT_LEAST_0("l1", hp["l1"], owner)}

    @staticmethod
    def _buffer_names(hp):
        return (("square_avg",) + (("momentum_buffer",) if hp["momentum"] > 0 else ())
                + (("grad_avg",) if hp["centered"] else ()))

    def _apply(self, entries, threads):
        hp = self._hp
        lr, alpha, eps = hp["lr"], hp["alpha"], hp["eps"]
        wd, l1, momentum = hp["weight_decay"], hp["l1"], hp["momentum"]
        kernel = self._kernel
        for entry in entries:
            state, slot = entry.state, entry.slot
            state["step"] += 1
            square_avg, grad_avg, momentum_buffer = entry.buffers
            kernel[slot.dtype](slot.flat_param, slot.flat_grad, square_avg, grad_avg,
                               momentum_buffer, lr, alpha, eps, wd, l1, momentum, threads)


class Adagrad(Optimizer):
    """Adagrad, as ``torch.optim.Adagrad``.

    d = g + l1 sign(p) + weight_decay p; sum += d^2;
    p -= lr / (1 + (t - 1) lr_decay) * d / (sqrt(sum) + eps), where t counts
    the parameter's updates and ``sum`` starts at initial_accumulator_value.

    Args:
        modules: a Module, a list/tuple of Modules, or an object with ``modules()``.
        lr: learning rate (>= 0).
        lr_decay: learning-rate decay per update (>= 0).
        weight_decay: L2 penalty coefficient (>= 0).
        initial_accumulator_value: start of the squared-gradient sum (>= 0).
        eps: added to the denominator (> 0).
        l1: L1 penalty coefficient (>= 0): l1 * sign(p) is added to the gradient.
    """

    _kernel_buffers = ("sum",)

    def __init__(self, modules, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
                 initial_accumulator_value=0.0, eps=1e-10, l1=0.0):
        super().__init__(modules, lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                         initial_accumulator_value=initial_accumulator_value, eps=eps,
                         l1=l1)
        self._kernel = _kernels(_optim.adagrad_step)

    @classmethod
    def _check(cls, hp):
        owner = cls.__name__
        return {"lr": _AT_LEAST_0("lr", hp["lr"], owner),
                "lr_decay": _AT_LEAST_0("lr_decay", hp["lr_decay"], owner),
                "weight_decay": _AT_LEAST_0("weight_decay", hp["weight_decay"], owner),
                "initial_accumulator_value": _AT_LEAST_0(
                    "initial_accumulator_value", hp["initial_accumulator_value"], owner),
                "eps": _ABOVE_0("eps", hp["eps"], owner),
                "l1": _AT_LEAST_0("l1", hp["l1"], owner)}

    @staticmethod
    def _buffer_names(hp):
        return ("sum",)

    def _new_buffers(self, param):
        return {"sum": np.full_like(param, self._hp["initial_accumulator_value"])}

    def _apply(self, entries, threads):
        hp = self._hp
        lr, lr_decay, eps, wd, l1 = (hp["lr"], hp["lr_decay"], hp["eps"], hp["weight_decay"],
                                     hp["l1"])
        kernel = self._kernel
        for entry in entries:
            state, slot = entry.state, entry.slot
            t = state["step"] = state["step"] + 1
            clr = lr / (1 + (t - 1) * lr_decay)
            kernel[slot.dtype](slot.flat_param, slot.flat_grad, entry.buffers[0], clr, eps,
                               wd, l1, threads)
