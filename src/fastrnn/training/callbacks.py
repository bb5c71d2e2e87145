"""Callbacks: hooks into ``Trainer.fit`` (Keras-style).

A callback subclasses :class:`Callback` and overrides the hooks it needs.
The trainer calls, in this order::

    on_train_begin(logs)
      per epoch:  on_epoch_begin(epoch, logs)
                  per batch: on_batch_begin(step, logs), on_batch_end(step, logs)
                  on_epoch_end(epoch, logs)        # logs: the epoch's metrics
                  on_epoch_complete(epoch, logs)   # every callback's on_epoch_end ran
    on_train_end(logs)

``epoch`` is 0-based, ``step`` is the batch index inside the epoch (the
running total of optimizer steps is ``trainer.global_step``).  A callback
stops training by setting ``self.trainer.stop_training = True``: at the end
of the epoch from ``on_epoch_end``, at the batch boundary from
``on_batch_end`` (that epoch is then left unfinished and unrecorded).

State that a resumed run needs (EarlyStopping's counter and best value, a
schedule's position) goes through ``state_dict()`` / ``load_state_dict()``:
checkpoints store it, matched to the trainer's callbacks by type and order.
Checkpoints are restored after ``on_train_begin``, so a callback may reset
itself there freely.  A state may hold numbers, strings, lists, dicts and
numpy arrays.
"""

import csv
import math
import numbers
import os

import numpy as np

from .._validation import Boolean, Integer, Options, Real, check_callable
from ._schedule import check_schedule, step_schedule
from ._warnings import warn_from_caller
from .checkpoint import save_checkpoint

__all__ = ["Callback", "EarlyStopping", "ModelCheckpoint", "LearningRateScheduler",
           "LambdaCallback"]

class Callback:
    """Base class; every hook does nothing.  ``self.trainer`` is set by the trainer."""

    trainer = None

    def set_trainer(self, trainer):
        self.trainer = trainer

    @property
    def model(self):
        return None if self.trainer is None else self.trainer.model

    def on_train_begin(self, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_epoch_complete(self, epoch, logs=None):
        """After every callback's ``on_epoch_end``: history, schedules and all
        callback states describe the finished epoch, so a checkpoint written
        here resumes exactly (ModelCheckpoint writes here)."""

    def on_batch_begin(self, step, logs=None):
        pass

    def on_batch_end(self, step, logs=None):
        pass

    def state_dict(self):
        """What a checkpoint must keep for an exact resume; None for nothing."""
        return None

    def load_state_dict(self, state):
        pass


# -- monitoring helpers -----------------------------------------------------------

_MAX_WORDS = ("acc", "auc", "f1", "precision", "recall")
_MODES = Options(("auto", "min", "max"))
_FLAG = Boolean()


def _resolve_mode(mode, monitor):
    mode = _MODES("mode", mode)
    if mode == "auto":
        return "max" if any(word in monitor for word in _MAX_WORDS) else "min"
    return mode


def _check_monitor(monitor):
    if not isinstance(monitor, str) or not monitor:
        raise TypeError(f"monitor must be a metric name such as 'val_loss', got {monitor!r}")
    return monitor


class _Monitor:
    """A monitored metric with a best value; falls back from ``val_x`` to ``x``
    (with one warning) when the run has no validation data."""

    def __init__(self, owner, monitor, mode, min_delta=0.0):
        self.owner = owner
        self.requested = _check_monitor(monitor)
        self.monitor = self.requested
        self.mode = _resolve_mode(mode, self.requested)
        self.min_delta = Real(low=0)("min_delta", min_delta)
        self.best = None

    def value(self, logs):
        logs = logs or {}
        if self.monitor not in logs and self.monitor.startswith("val_") \
                and not any(name.startswith("val_") for name in logs) \
                and self.monitor[4:] in logs:
            warn_from_caller(f"{self.owner}: monitor {self.monitor!r} is not available "
                             f"because there is no validation data; monitoring "
                             f"{self.monitor[4:]!r} instead", UserWarning)
            self.monitor = self.monitor[4:]
        if self.monitor not in logs:
            raise ValueError(f"{self.owner}: monitor {self.monitor!r} is not among the "
                             f"epoch metrics {sorted(logs)}")
        return float(logs[self.monitor])

    def improved(self, value):
        if not math.isfinite(value):
            return False
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta


# -- EarlyStopping ------------------------------------------------------------------

class EarlyStopping(Callback):
    """Stop when a monitored metric stops improving.

    Args:
        monitor: epoch metric to watch (default ``"val_loss"``; without
            validation data it falls back to ``"loss"`` with a warning).
        min_delta: an epoch improves only by more than this.
        patience: epochs in a row without improvement after which training
            stops (at the first such epoch when 0 or 1).
        mode: ``"min"``, ``"max"`` or ``"auto"`` (max for accuracy-like
            names, else min).
        restore_best_weights: keep a copy of every module's parameters at
            the best epoch and load it back when training ends (stopped by
            this callback or run to the last epoch; not after Ctrl-C or a
            NaN stop, which leave the trainer resumable where it was).  The
            weights after ``fit`` are then the best epoch's: to continue that
            run exactly later, resume from a ModelCheckpoint file written
            during it rather than from a checkpoint saved after ``fit``.

    Attributes after training: ``best`` (value), ``best_epoch``,
    ``stopped_epoch`` (None unless it stopped the run), ``wait``.
    """

    def __init__(self, monitor="val_loss", min_delta=0.0, patience=0, mode="auto",
                 restore_best_weights=False):
        patience = Integer(low=0)("patience", patience)
        self._monitor = _Monitor("EarlyStopping", monitor, mode, min_delta)
        self.patience = int(patience)
        self.restore_best_weights = _FLAG("restore_best_weights", restore_best_weights,
                                           "EarlyStopping")
        self._reset()

    @property
    def monitor(self):
        return self._monitor.monitor

    @property
    def best(self):
        return self._monitor.best

    def _reset(self):
        self._monitor.best = None
        self._monitor.monitor = self._monitor.requested
        self.wait = 0
        self.best_epoch = None
        self.stopped_epoch = None
        self.best_weights = None

    def on_train_begin(self, logs=None):
        self._reset()

    def on_epoch_end(self, epoch, logs=None):
        value = self._monitor.value(logs)
        if self._monitor.improved(value):
            self._monitor.best = value
            self.best_epoch = int(epoch)
            self.wait = 0
            if self.restore_best_weights:
                self.best_weights = [module.state_dict() for module in self.trainer.modules]
            return
        self.wait += 1
        if self.wait >= max(self.patience, 1):
            self.stopped_epoch = int(epoch)
            self.trainer.stop_training = True

    def on_train_end(self, logs=None):
        reason = (logs or {}).get("stop_reason")
        if reason in ("interrupted", "non_finite"):
            return
        if self.restore_best_weights and self.best_weights is not None:
            last = self.trainer.history.epoch[-1] if self.trainer.history.epoch else None
            if last != self.best_epoch:
                for module, state in zip(self.trainer.modules, self.best_weights):
                    module.load_state_dict(state)

    def state_dict(self):
        return {"best": self._monitor.best, "monitor": self._monitor.monitor,
                "wait": self.wait, "best_epoch": self.best_epoch,
                "stopped_epoch": self.stopped_epoch, "best_weights": self.best_weights}

    def load_state_dict(self, state):
        self._monitor.best = state["best"]
        self._monitor.monitor = state["monitor"]
        self.wait = int(state["wait"])
        self.best_epoch = state["best_epoch"]
        self.stopped_epoch = state["stopped_epoch"]
        weights = state["best_weights"]
        self.best_weights = None if weights is None else [
            {name: np.array(value) for name, value in module.items()} for module in weights]


# -- ModelCheckpoint ------------------------------------------------------------------

class ModelCheckpoint(Callback):
    """Write a full training checkpoint (``save_checkpoint``) after epochs.

    Args:
        path: file to write; may contain ``{epoch}`` (epochs completed, 1-based
            like the progress display) and metric fields, e.g.
            ``"ckpt-{epoch:02d}-{val_loss:.3f}.npz"``.
        monitor: metric deciding "best" for ``save_best_only`` (falls back
            from ``val_x`` to ``x`` without validation data).
        save_best_only: write only when the monitored metric improved
            (otherwise every epoch).
        mode: ``"min"``, ``"max"`` or ``"auto"``.

    Each file is written atomically and resumes exactly with
    ``fit(resume_from=path)``.  ``last_path`` is the last file written.
    """

    def __init__(self, path, monitor="val_loss", save_best_only=False, mode="auto"):
        if not isinstance(path, (str, bytes)) and not hasattr(path, "__fspath__"):
            raise TypeError(f"path must be a file path (str or os.PathLike), "
                            f"got {type(path).__name__}")
        self.path = path
        self.save_best_only = _FLAG("save_best_only", save_best_only, "ModelCheckpoint")
        self._monitor = _Monitor("ModelCheckpoint", monitor, mode)
        self.last_path = None

    @property
    def best(self):
        return self._monitor.best

    def on_train_begin(self, logs=None):
        self._monitor.best = None
        self._monitor.monitor = self._monitor.requested

    def on_epoch_complete(self, epoch, logs=None):
        logs = dict(logs or {})
        if self.save_best_only:
            value = self._monitor.value(logs)
            if not self._monitor.improved(value):
                return
            self._monitor.best = value
        path = self.path
        if isinstance(path, str):
            try:
                path = path.format(epoch=epoch + 1, **logs)
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(f"ModelCheckpoint path {self.path!r} could not be filled "
                                 f"from epoch and metrics {sorted(logs)}: {exc}") from None
        save_checkpoint(path, self.trainer)
        self.last_path = path

    def state_dict(self):
        return {"best": self._monitor.best, "monitor": self._monitor.monitor}

    def load_state_dict(self, state):
        self._monitor.best = state["best"]
        self._monitor.monitor = state["monitor"]


# -- LearningRateScheduler ----------------------------------------------------------

class LearningRateScheduler(Callback):
    """Step an fr.optim schedule from the training loop.

    Args:
        schedule: StepLR, ExponentialLR, CosineAnnealingLR, LinearWarmup or
            ReduceLROnPlateau, built on the trainer's optimizer.
        interval: ``"epoch"`` (step after each epoch) or ``"batch"`` (after
            each optimizer step).
        monitor: the metric ReduceLROnPlateau watches (``val_loss``, or
            ``loss`` when there is no validation data).

    ``Trainer(schedule=...)`` does the same without a callback.
    """

    def __init__(self, schedule, interval="epoch", monitor="val_loss"):
        self.schedule = check_schedule("schedule", schedule, interval)
        self.interval = interval
        self.monitor = _check_monitor(monitor)

    def set_trainer(self, trainer):
        owner = getattr(self.schedule, "optimizer", None)
        if owner is not None and owner is not trainer.optimizer:
            raise ValueError("LearningRateScheduler: the schedule was built on another "
                             "optimizer than the trainer's")
        super().set_trainer(trainer)

    def on_batch_end(self, step, logs=None):
        if self.interval == "batch":
            self.schedule.step()

    def on_epoch_end(self, epoch, logs=None):
        if self.interval == "epoch":
            step_schedule(self.schedule, logs, self.monitor)

    def state_dict(self):
        return {"type": type(self.schedule).__name__, "schedule": self.schedule.state_dict()}

    def load_state_dict(self, state):
        if state["type"] != type(self.schedule).__name__:
            raise ValueError(f"LearningRateScheduler state is for a {state['type']}, "
                             f"this one wraps a {type(self.schedule).__name__}")
        self.schedule.load_state_dict(state["schedule"])


# -- LambdaCallback -----------------------------------------------------------------

class CSVLogger(Callback):
    """Write one CSV row per completed epoch: ``epoch`` (1-based, as the
    progress display counts) then the epoch's metrics (``loss``, ``val_*``,
    ``lr``, ...), as Keras's CSVLogger.

    Args:
        path: the file (str or os.PathLike).
        separator: the field separator (one character).
        append: add to an existing file (its header is kept; use it when
            resuming with ``fit(resume_from=...)``) instead of replacing it.

    The header is fixed by the first epoch written (or the existing file);
    a metric missing in a later epoch is left empty.  Every row is flushed
    as soon as it is written, so the file can be watched during training.
    """

    def __init__(self, path, separator=",", append=False):
        if not isinstance(path, str) and not hasattr(path, "__fspath__"):
            raise TypeError(f"path must be a file path (str or os.PathLike), "
                            f"got {type(path).__name__}")
        if not isinstance(separator, str) or len(separator) != 1:
            raise ValueError(f"separator must be one character, got {separator!r}")
        self.path = os.fspath(path)
        self.separator = separator
        self.append = _FLAG("append", append, "CSVLogger")
        self._fields = None

    def on_train_begin(self, logs=None):
        self._fields = None
        if self.append and os.path.exists(self.path):
            with open(self.path, newline="", encoding="utf-8") as handle:
                header = next(csv.reader(handle, delimiter=self.separator), None)
            self._fields = header[1:] if header else None
        elif not self.append:
            open(self.path, "w", encoding="utf-8").close()     # a new run: a new file

    def on_epoch_complete(self, epoch, logs=None):
        # Opened per row: no handle stays open if training stops with an error.
        logs = dict(logs or {})
        rows = []
        if self._fields is None:
            self._fields = list(logs)
            rows.append(["epoch"] + self._fields)
        rows.append([epoch + 1] + [_csv_value(logs.get(name, "")) for name in self._fields])
        with open(self.path, "a", newline="", encoding="utf-8") as handle:
            csv.writer(handle, delimiter=self.separator).writerows(rows)


def _csv_value(value):
    return repr(float(value)) if isinstance(value, numbers.Real) else value


class LambdaCallback(Callback):
    """A callback from plain functions, e.g.
    ``LambdaCallback(on_epoch_end=lambda epoch, logs: print(epoch, logs))``.

    Each argument is a callable with the signature of the hook of that name
    (``on_train_begin(logs)``, ``on_epoch_end(epoch, logs)``,
    ``on_batch_end(step, logs)``, ...); hooks not given do nothing.
    """

    _HOOKS = ("on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end",
              "on_epoch_complete", "on_batch_begin", "on_batch_end")

    def __init__(self, on_train_begin=None, on_train_end=None, on_epoch_begin=None,
                 on_epoch_end=None, on_batch_begin=None, on_batch_end=None,
                 on_epoch_complete=None):
        given = dict(on_train_begin=on_train_begin, on_train_end=on_train_end,
                     on_epoch_begin=on_epoch_begin, on_epoch_end=on_epoch_end,
                     on_batch_begin=on_batch_begin, on_batch_end=on_batch_end,
                     on_epoch_complete=on_epoch_complete)
        for name, function in given.items():
            if function is None:
                continue
            check_callable(name, function, "LambdaCallback")
            setattr(self, name, function)
