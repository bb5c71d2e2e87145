"""Training checkpoints: one ``.npz`` file from which a run resumes exactly.

The file holds every array (module parameters, optimizer buffers, arrays of
the model's extra state and of callback states) plus one JSON document
(``fastrnn._io``: a uint8 array under ``__meta__``) with the rest: format name
and version, position (epoch, batches done in it, global step), history,
optimizer type / hyperparameters / step, schedule state, callback states,
the random-generator state of every module and the model's extra JSON state.
Nothing is pickled: ``np.load(path, allow_pickle=False)`` reads it and
loading never executes code.

In the JSON document an array appears as ``{"__ndarray__": key}`` (its
key in the npz) and a tuple as ``{"__tuple__": [...]}``.

Writes are atomic: a temporary file in the target directory, fsynced, then
``os.replace``; a failed write leaves the old file untouched.  Loading
checks the format, the version and that the checkpoint fits the trainer's
model, optimizer, schedule and callbacks before changing anything; if
applying still fails midway, the previous state is put back.
"""

import copy
import os

import numpy as np

from .._io import META_KEY, read_archive, write_archive
from .._validation import Integer
from .._version import __version__
from ..optim.optimizers import all_parameters
from .history import History
from .state import parse_partial_state

__all__ = ["FORMAT", "VERSION", "Checkpoint", "save_checkpoint", "load_checkpoint",
           "restore_checkpoint"]

FORMAT = "fastrnn.checkpoint"
VERSION = 1


# -- nested state <-> JSON + arrays ---------------------------------------------------

def _pack(value, key, arrays):
    """JSON-able copy of ``value`` with arrays moved into ``arrays``."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biufc":
            raise TypeError(f"checkpoint entry {key!r}: arrays must be numeric, "
                            f"got dtype {value.dtype}")
        unique, n = key, 1
        while unique in arrays or unique == META_KEY:
            unique, n = f"{key}~{n}", n + 1
        arrays[unique] = value
        return {"__ndarray__": unique}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (int, float, str)):      # bool is an int
        return value
    if isinstance(value, dict):
        packed = {}
        for name, item in value.items():
            if not isinstance(name, str):
                raise TypeError(f"checkpoint entry {key!r}: dict keys must be strings, "
                                f"got {name!r}")
            packed[name] = _pack(item, f"{key}/{name}", arrays)
        return packed
    if isinstance(value, tuple):
        return {"__tuple__": [_pack(item, f"{key}/{i}", arrays) for i, item in enumerate(value)]}
    if isinstance(value, list):
        return [_pack(item, f"{key}/{i}", arrays) for i, item in enumerate(value)]
    raise TypeError(f"checkpoint entry {key!r}: cannot store a {type(value).__name__} "
                    f"(numbers, strings, None, lists, tuples, dicts and numpy arrays only)")


def _unpack(value, arrays):
    if isinstance(value, dict):
        if len(value) == 1 and "__ndarray__" in value:
            return arrays[value["__ndarray__"]]
        if len(value) == 1 and "__tuple__" in value:
            return tuple(_unpack(item, arrays) for item in value["__tuple__"])
        return {name: _unpack(item, arrays) for name, item in value.items()}
    if isinstance(value, list):
        return [_unpack(item, arrays) for item in value]
    return value


# -- writing ----------------------------------------------------------------------------

def _collect(trainer):
    """The trainer's complete state as one nested structure."""
    model = trainer.model
    modules = []
    for module in trainer.modules:
        modules.append({"type": type(module).__name__, "params": module.state_dict(),
                        "rng": module.rng_state()})
    extra = model.extra_state() if callable(getattr(model, "extra_state", None)) else None
    schedule = None
    if trainer.schedule is not None:
        schedule = {"type": type(trainer.schedule).__name__,
                    "interval": trainer.schedule_interval,
                    "state": trainer.schedule.state_dict()}
    callbacks = []
    for callback in trainer.callbacks:
        state = callback.state_dict()
        if state is not None:
            callbacks.append({"type": type(callback).__name__, "state": state})
    return {
        "format": FORMAT,
        "version": VERSION,
        "fastrnn_version": __version__,
        "position": {"epoch": trainer.epoch, "step_in_epoch": trainer.step_in_epoch,
                     "global_step": trainer.global_step},
        "partial": trainer.unfinished_epoch_state(),
        "history": trainer.history.state_dict(),
        "model": {"type": type(model).__name__, "modules": modules, "extra": extra},
        "optimizer": trainer.optimizer.state_dict(),
        "schedule": schedule,
        "callbacks": callbacks,
        "trainer": {"clip_norm": trainer.clip_norm, "clip_value": trainer.clip_value},
    }


def save_checkpoint(path, trainer):
    """Write the trainer's complete training state to ``path`` (one .npz file).

    Args:
        path: the file to write (replaced atomically if it exists; the name is
            used as given, no extension is added).
        trainer: a :class:`fastrnn.training.Trainer`.

    The position saved is the trainer's: after a finished epoch, the next
    epoch; after Ctrl-C, the batch where it stopped (resuming replays the rest
    of that epoch exactly).  Returns ``path``.  In a distributed run only
    rank 0 writes (``trainer.writes_files``); every rank holds the same state.
    """
    if not getattr(trainer, "writes_files", True):
        return path
    arrays = {}
    packed = {name: _pack(value, name, arrays) for name, value in _collect(trainer).items()}
    return write_archive(path, arrays, packed)


# -- reading ------------------------------------------------------------------------------

class Checkpoint:
    """A checkpoint read from disk (nothing applied): for inspection and resuming.

    Attributes: ``path``, ``state`` (the nested structure with arrays in
    place), and the shortcuts ``epoch``, ``step_in_epoch``, ``global_step``,
    ``version`` and ``history`` (a :class:`History`).
    """

    def __init__(self, path, state):
        self.path = path
        self.state = state

    @property
    def version(self):
        return self.state["version"]

    @property
    def epoch(self):
        return self.state["position"]["epoch"]

    @property
    def step_in_epoch(self):
        return self.state["position"]["step_in_epoch"]

    @property
    def global_step(self):
        return self.state["position"]["global_step"]

    @property
    def history(self):
        return History.from_state_dict(self.state["history"])

    def __repr__(self):
        return (f"Checkpoint({self.path!r}, epoch={self.epoch}, "
                f"step_in_epoch={self.step_in_epoch}, global_step={self.global_step})")


_REQUIRED = ("position", "partial", "history", "model", "optimizer", "schedule", "callbacks")


def load_checkpoint(path):
    """Read and check a checkpoint file without applying it.

    Raises FileNotFoundError when it does not exist, ValueError naming the
    path when it is not a readable fastrnn checkpoint (corrupt, truncated,
    another kind of file) or was written by a newer fastrnn.
    """
    path_str = os.fspath(path)
    arrays, packed = read_archive(path_str, FORMAT, VERSION, "checkpoint")
    missing = [name for name in _REQUIRED if name not in packed]
    if missing:
        raise ValueError(f"checkpoint {path_str!r} is incomplete: missing {missing}")
    try:
        state = _unpack(packed, arrays)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"checkpoint {path_str!r} is corrupt: an array reference "
                         f"{exc} is missing or malformed") from None
    return Checkpoint(path_str, state)


# -- applying -----------------------------------------------------------------------------

_COUNT = Integer(low=0)


def _fail(path, message):
    raise ValueError(f"checkpoint {path!r} does not fit this trainer: {message}")


def _validate(checkpoint, trainer):
    """Every check that can be made without changing anything.  Returns what
    applying needs: the (callback, saved state) pairs."""
    path, state = checkpoint.path, checkpoint.state
    _validate_modules(path, state["model"]["modules"], trainer.modules)
    _validate_extra(path, state["model"]["extra"], trainer.model)
    optimizer = state["optimizer"]
    current = type(trainer.optimizer).__name__
    found = optimizer.get("type") if isinstance(optimizer, dict) else None
    if found != current:
        _fail(path, f"it was written with optimizer {found}, the trainer has {current}")
    _validate_schedule(path, state["schedule"], trainer)
    History.from_state_dict(state["history"])    # raises on a malformed history
    position = state["position"]
    for key in ("epoch", "step_in_epoch", "global_step"):
        value = position.get(key)
        try:
            _COUNT(f"position {key}", value)
        except ValueError as exc:
            _fail(path, str(exc))
    try:
        parse_partial_state(state["partial"])
    except ValueError as exc:
        _fail(path, str(exc))
    return _match_callbacks(path, state["callbacks"], trainer.callbacks)


def _validate_modules(path, saved_modules, modules):
    """Same module count; per module the same parameter names (frozen ones
    included: checkpoints keep every parameter) and shapes, finite values,
    and a random generator on both sides or neither."""
    if len(saved_modules) != len(modules):
        _fail(path, f"it holds {len(saved_modules)} modules "
                    f"({[m['type'] for m in saved_modules]}), the model has {len(modules)} "
                    f"({[type(m).__name__ for m in modules]})")
    for index, (saved, module) in enumerate(zip(saved_modules, modules)):
        params = all_parameters(module)
        saved_params = saved["params"]
        if list(saved_params) != list(params):
            _fail(path, f"module {index} ({type(module).__name__}) has parameters "
                        f"{list(params)}, the checkpoint has {list(saved_params)} "
                        f"(saved from {saved['type']})")
        for name, value in saved_params.items():
            if value.shape != params[name].shape:
                _fail(path, f"module {index} ({type(module).__name__}) parameter {name!r} "
                            f"has shape {params[name].shape}, the checkpoint has {value.shape}")
            if not np.isfinite(value).all():
                _fail(path, f"module {index} parameter {name!r} holds NaN or inf values")
        has_rng = module.rng_state() is not None
        if (saved["rng"] is not None) != has_rng:
            _fail(path, f"module {index} ({type(module).__name__}) "
                        f"{'has' if has_rng else 'has no'} random generator, the checkpoint "
                        f"{'has none' if has_rng else 'has a generator state'}")


def _validate_extra(path, extra, model):
    if extra is not None and not callable(getattr(model, "load_extra_state", None)):
        _fail(path, f"it holds extra model state but {type(model).__name__} has "
                    f"no load_extra_state()")
    if extra is None and callable(getattr(model, "extra_state", None)):
        _fail(path, f"{type(model).__name__} keeps extra state (extra_state()) "
                    f"but the checkpoint has none")


def _validate_schedule(path, schedule, trainer):
    """Same schedule type, stepped at the same interval."""
    saved_type = schedule["type"] if schedule is not None else "none"
    have = type(trainer.schedule).__name__ if trainer.schedule is not None else "none"
    if saved_type != have:
        _fail(path, f"it was written with schedule {saved_type}, the trainer has {have}")
    if schedule is not None and schedule["interval"] != trainer.schedule_interval:
        _fail(path, f"its schedule was stepped every {schedule['interval']}, the trainer "
                    f"steps it every {trainer.schedule_interval} (schedule_interval)")


def _match_callbacks(path, saved, callbacks):
    """Pair saved callback states with the trainer's stateful callbacks by
    type, in order."""
    stateful = [cb for cb in callbacks if cb.state_dict() is not None]
    saved_types = [entry["type"] for entry in saved]
    types = [type(cb).__name__ for cb in stateful]
    if saved_types != types:
        _fail(path, f"it holds states for callbacks {saved_types}, the trainer's callbacks "
                    f"with state are {types} (same types in the same order needed)")
    return list(zip(stateful, [entry["state"] for entry in saved]))


def _snapshot(trainer):
    model = trainer.model
    return {
        "params": [module.state_dict() for module in trainer.modules],
        "rng": [copy.deepcopy(module.rng_state()) for module in trainer.modules],
        "optimizer": copy.deepcopy(trainer.optimizer.state_dict()),
        "schedule": (copy.deepcopy(trainer.schedule.state_dict())
                     if trainer.schedule is not None else None),
        "extra": (copy.deepcopy(model.extra_state())
                  if callable(getattr(model, "extra_state", None)) else None),
        "callbacks": [copy.deepcopy(cb.state_dict()) for cb in trainer.callbacks],
        "position": (trainer.epoch, trainer.step_in_epoch, trainer.global_step,
                     trainer.unfinished_epoch_state()),
        "history": trainer.history,
    }


def _apply(trainer, state, pairs):
    for module, saved in zip(trainer.modules, state["model"]["modules"]):
        module.load_state_dict(saved["params"])
        module.set_rng_state(copy.deepcopy(saved["rng"]))
    trainer.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
    if trainer.schedule is not None:
        trainer.schedule.load_state_dict(copy.deepcopy(state["schedule"]["state"]))
    extra = state["model"]["extra"]
    if extra is not None:
        trainer.model.load_extra_state(copy.deepcopy(extra))
    for callback, saved in pairs:
        callback.load_state_dict(copy.deepcopy(saved))
    position = state["position"]
    trainer.restore_position(position["epoch"], position["step_in_epoch"],
                             position["global_step"], state["partial"])
    trainer.history = History.from_state_dict(state["history"])


def _rollback(trainer, snapshot):
    for module, params, rng in zip(trainer.modules, snapshot["params"], snapshot["rng"]):
        module.load_state_dict(params)
        module.set_rng_state(rng)
    trainer.optimizer.load_state_dict(snapshot["optimizer"])
    if trainer.schedule is not None:
        trainer.schedule.load_state_dict(snapshot["schedule"])
    if snapshot["extra"] is not None:
        trainer.model.load_extra_state(snapshot["extra"])
    for callback, saved in zip(trainer.callbacks, snapshot["callbacks"]):
        if saved is not None:
            callback.load_state_dict(saved)
    trainer.restore_position(*snapshot["position"])
    trainer.history = snapshot["history"]


def restore_checkpoint(checkpoint, trainer):
    """Load a checkpoint (a path or a :class:`Checkpoint`) into ``trainer``.

    Restores module parameters and random-generator states, the optimizer,
    the schedule, the model's extra state, callback states, the history and
    the position.  Mismatches (module count, parameter names or shapes,
    optimizer or schedule type, callbacks) raise ValueError before anything
    changes; a failure while applying puts the previous state back.
    ``fit(resume_from=path)`` calls this.  Returns the :class:`Checkpoint`.
    """
    if not isinstance(checkpoint, Checkpoint):
        checkpoint = load_checkpoint(checkpoint)
    try:
        pairs = _validate(checkpoint, trainer)
    except (KeyError, TypeError, AttributeError, IndexError) as exc:
        # a hand-edited or damaged document: entries missing or of the wrong kind
        raise ValueError(f"checkpoint {checkpoint.path!r} is malformed: "
                         f"{type(exc).__name__}: {exc}") from None
    snapshot = _snapshot(trainer)
    try:
        _apply(trainer, checkpoint.state, pairs)
    except Exception as exc:
        try:
            _rollback(trainer, snapshot)
        except Exception:  # pragma: no cover - best effort; the first error matters
            pass
        raise ValueError(f"checkpoint {checkpoint.path!r} could not be restored "
                         f"(nothing was changed): {type(exc).__name__}: {exc}") from exc
    return checkpoint
