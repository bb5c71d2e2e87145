"""``fr.Trainer``: the fit loop (Keras-like ``fit`` / ``evaluate``).

The loop is plain Python per *batch* (the kernels do all per-timestep work):
zero the gradients, let the model run forward + loss + backward, check the
loss and the gradient norm are finite, clip, step the optimizer, step a
per-batch schedule, call the callbacks.  Around it: epochs, validation,
weight-averaged epoch metrics, history, progress display, early stop on
NaN/inf, Ctrl-C handling and exact checkpoint/resume.

The model protocol
------------------
The trainer drives any object with these methods (the task models
implement them; so can a user's own stack of layers):

``model.modules() -> list[Module]``
    Every fastrnn Module with parameters or a random generator, in a stable
    order (checkpoints store them by position).
``model.train_batch(batch) -> (metrics, weight)``
    Training step without the update: forward, loss, backward.  Parameter
    gradients accumulate into the modules' ``grads`` (the trainer zeroes
    them before the call, then checks, clips and steps the optimizer).
    ``metrics`` is a dict ``name -> float`` with at least ``"loss"``;
    ``weight`` is a number >= 0 (e.g. rows or tokens in the batch): epoch
    metrics are the weight-averaged batch metrics.
``model.evaluate_batch(batch) -> (metrics, weight)``
    The same in eval mode, without gradients.
``model.epoch_metrics(metrics) -> dict`` (optional)
    Called with the averaged metrics of each epoch and evaluation pass; may
    add metrics that are not averages of batch values, such as a language
    model's perplexity, exp(mean loss).
``model.on_epoch_begin(epoch, training)`` (optional)
    Called before each training epoch (``training=True``) and each
    evaluation pass (``False``), e.g. to reset a hidden state carried
    between the chunks of a language model.  Not called again when a run
    resumes in the middle of an epoch: the carried state comes from the
    checkpoint's extra state.
``model.batch_weight(batch) -> number`` (optional, distributed training)
    What the loss of ``batch`` is divided by (rows or tokens, as a rule
    the ``weight`` ``train_batch`` returns; with per-example weights, the
    sum of those weights), known before the backward pass.  Each rank's
    gradient and "loss" metric are scaled by it, so that the ranks sum to
    the gradient and loss of the global batch even when the examples are
    weighted, and its gradient buckets are reduced while the backward of the
    layers below still runs (see ``fastrnn.distributed``).
``model.extra_state() -> dict`` and ``model.load_extra_state(state)`` (optional)
    Whatever else a checkpoint must keep to resume exactly (a carried
    hidden state, counters): arrays, numbers, strings, lists, tuples, dicts.

The trainer switches the modules between ``train()`` and ``eval()`` itself
and puts back the modes they had when ``fit`` returns.  Batches are opaque
to it; they come from any re-iterable source: a list of batches, a
``fastrnn.data.BatchLoader`` or ``StreamBatcher``, or your own object.  If
the source has ``set_epoch(epoch)`` it is called before every epoch (a
BatchLoader's order is a function of its seed and the epoch, which is what
makes resuming exact), and ``len()`` sizes the progress bar.

Example: an LSTM regressor from layers, with a numpy loss::

    import numpy as np
    import fastrnn as fr

    class LastStepRegressor:
        def __init__(self, features, hidden, seed=0):
            self.lstm = fr.LSTM(features, hidden, seed=seed)
            self.head = fr.Linear(hidden, 1, seed=seed + 1)

        def modules(self):
            return [self.lstm, self.head]

        def _forward(self, batch):
            out, _ = self.lstm(batch.inputs, lengths=batch.lengths)
            rows = np.arange(len(batch.lengths))
            last = out[batch.lengths - 1, rows]           # (B, hidden)
            return out, rows, self.head(last)[:, 0]        # (B,)

        def train_batch(self, batch):
            out, rows, pred = self._forward(batch)
            err = pred - batch.targets
            d_pred = (2.0 / len(err)) * err                # d mean(err**2)
            d_last = self.head.backward(d_pred[:, None].astype(out.dtype))
            d_out = np.zeros_like(out)
            d_out[batch.lengths - 1, rows] = d_last
            self.lstm.backward(d_out, input_grad=False, state_grad=False)
            return {"loss": float(np.mean(err ** 2))}, len(err)

        def evaluate_batch(self, batch):
            _, _, pred = self._forward(batch)
            return {"loss": float(np.mean((pred - batch.targets) ** 2))}, len(pred)

    model = LastStepRegressor(features=3, hidden=16)
    loader = fr.data.BatchLoader(sequences, targets, batch_size=32, seed=0)
    trainer = fr.Trainer(model, fr.optim.Adam(model.modules(), lr=1e-2), clip_norm=1.0)
    history = trainer.fit(loader, epochs=10, validation_split=0.2)
    history.history["val_loss"]

Stopping
--------
* A callback sets ``trainer.stop_training = True`` (EarlyStopping does).
* NaN/inf: if a batch's loss or the gradient norm is not finite, that
  update is skipped, training stops with a ``RuntimeWarning`` and
  ``history.stop_reason == "non_finite"`` (it does not raise: the model
  keeps the weights after the last good batch and stays usable).
* Ctrl-C (SIGINT, when ``fit`` runs in the main thread): training stops at
  the next batch boundary, never inside an optimizer step; ``fit`` prints
  that it was interrupted, sets ``history.stop_reason == "interrupted"``
  and returns normally.  A second Ctrl-C raises KeyboardInterrupt at once.
  The previous SIGINT handler is restored when ``fit`` returns.

An epoch cut short is not recorded in the history; the trainer keeps its
position (``epoch``, ``step_in_epoch``) so ``trainer.save_checkpoint(path)``
followed by ``fit(..., resume_from=path)`` (with new objects, even in a new
process) finishes it exactly as if the run had not stopped.
"""

import contextlib
import math
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator

from .. import _threads
from ..optim.clip import clamp, grad_norm, scale_to_norm
from ..optim.optimizers import Optimizer, ParameterSet
from .._validation import FRACTION, Integer, Modules, Optional, Options, Real
from ._schedule import INTERVALS, check_schedule, step_schedule
from ._warnings import warn_from_caller
from .callbacks import Callback
from .checkpoint import restore_checkpoint, save_checkpoint
from .history import History
from .state import MetricSums, batch_result, parse_partial_state

__all__ = ["Trainer"]


# -- argument checks ----------------------------------------------------------------------

_EPOCHS = Integer(low=1)
_INITIAL_EPOCH = Integer(low=0)
_CLIP = Optional(Real(low=0, low_open=True, finite=False))
_VERBOSE = Options((0, 1, 2))


def _check_model(model):
    missing = [name for name in ("modules", "train_batch", "evaluate_batch")
               if not callable(getattr(model, name, None))]
    if missing:
        raise TypeError(f"model must implement the trainer protocol: modules(), "
                        f"train_batch(batch) and evaluate_batch(batch); "
                        f"{type(model).__name__} lacks {', '.join(m + '()' for m in missing)}")
    return Modules().resolve("model", model)


def _epoch_range(epochs, initial_epoch, resume_from):
    """fit's checked ``(epochs, initial_epoch)``."""
    epochs = _EPOCHS("epochs", epochs)
    initial_epoch = _INITIAL_EPOCH("initial_epoch", initial_epoch)
    if initial_epoch >= epochs:
        raise ValueError(f"initial_epoch must be < epochs ({epochs}), got {initial_epoch}")
    if resume_from is not None and initial_epoch != 0:
        raise ValueError("pass either initial_epoch or resume_from, not both: a "
                         "checkpoint knows its epoch")
    return epochs, initial_epoch


def _check_optimizer(optimizer, modules):
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a fastrnn.optim optimizer (SGD, Adam, AdamW, "
                        f"RMSprop, Adagrad) built on model.modules(), "
                        f"got {type(optimizer).__name__}")
    owned_ids = {id(module) for module in optimizer.modules}
    strays = [index for index, module in enumerate(modules) if id(module) not in owned_ids]
    if strays:
        raise ValueError(f"optimizer does not update model.modules() {strays}: build it "
                         f"on model.modules()")
    return optimizer


def _check_source(name, data):
    if data is None or isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
        raise TypeError(f"{name} must be a re-iterable source of batches (a list of batches, "
                        f"a fastrnn.data.BatchLoader or StreamBatcher), "
                        f"got {type(data).__name__}")
    if isinstance(data, tuple) and data and all(hasattr(item, "shape") for item in data):
        raise TypeError(f"{name} must be a source of batches, got a tuple of arrays; wrap "
                        f"them in a batch source, e.g. fastrnn.data.BatchLoader(inputs, "
                        f"targets)")
    if isinstance(data, Iterator):
        raise TypeError(f"{name} must be re-iterable (it is read once per epoch), got a "
                        f"one-shot iterator ({type(data).__name__}); pass a list of batches "
                        f"or a BatchLoader")
    if hasattr(data, "__len__") and len(data) == 0:
        raise ValueError(f"{name} is empty: it has no batches")
    return data


def _sources(train_data, validation_data, validation_split):
    """The checked (train, validation) sources, split off a BatchLoader when
    ``validation_split`` > 0."""
    validation_split = FRACTION("validation_split", validation_split)
    _check_source("train_data", train_data)
    if validation_split > 0:
        if validation_data is not None:
            raise ValueError("pass either validation_data or validation_split, not both")
        if not callable(getattr(train_data, "split", None)):
            raise TypeError(f"validation_split needs a train_data with split(fraction) "
                            f"(a fastrnn.data.BatchLoader), got "
                            f"{type(train_data).__name__}; pass validation_data instead")
        train_data, validation_data = train_data.split(validation_split)
    if validation_data is not None:
        _check_source("validation_data", validation_data)
    return train_data, validation_data


def _size(data):
    try:
        return len(data)
    except TypeError:
        return None


def _set_epoch(data, epoch):
    set_epoch = getattr(data, "set_epoch", None)
    if callable(set_epoch):
        set_epoch(epoch)


# -- progress -----------------------------------------------------------------------------------

def _format_logs(logs):
    parts = []
    for name, value in logs.items():
        parts.append(f"{name}: {value:.4g}" if name == "lr" else f"{name}: {value:.4f}")
    return " - ".join(parts)


class _Progress:
    """verbose=1: a tqdm bar per epoch on a terminal (stderr isatty), else
    lines; verbose=2: lines; verbose=0: nothing.  Everything goes to stderr.

    Lines: one per epoch, plus one at every tenth of an epoch whose length is
    known when the run has a single epoch or the last line is over
    ``LONG_EPOCH_SECONDS`` old (a long epoch off a terminal still shows
    progress).  The running figure is bits per character when the model
    reports ``bits_per_char`` (language models), else the loss."""

    LONG_EPOCH_SECONDS = 10.0

    def __init__(self, verbose, epochs):
        self.epochs = epochs
        self.mode = None
        if verbose == 1 and _isatty(sys.stderr):
            try:
                from tqdm import tqdm  # lazy: only a terminal run needs it
                self.mode, self._tqdm = "bar", tqdm
            except ImportError:  # pragma: no cover - tqdm is a dependency
                self.mode = "line"
        elif verbose in (1, 2):
            self.mode = "line"
        self.bar = None

    @property
    def wants_batches(self):
        return self.mode is not None

    def begin_epoch(self, epoch, total, done):
        self.start = self.last_line = time.perf_counter()
        self.epoch, self.total, self.done_before = epoch, total, done
        self.next_tenth = 1 if not total else (10 * done) // total + 1
        if self.mode == "bar":
            self.bar = self._tqdm(total=total, initial=done, unit="batch", file=sys.stderr,
                                  desc=f"Epoch {epoch + 1}/{self.epochs}", leave=True,
                                  dynamic_ncols=True, mininterval=0.1)

    def batch(self, done, running):
        """After a batch: ``done`` batches of this epoch so far; ``running``
        the running means ({"loss": ..., maybe "bits_per_char": ...})."""
        if self.bar is not None:
            self.bar.set_postfix_str(_running(running), refresh=False)
            self.bar.update(1)
        elif self.mode == "line" and self.total and done * 10 >= self.next_tenth * self.total:
            self.next_tenth = (10 * done) // self.total + 1
            now = time.perf_counter()
            if self.epochs == 1 or now - self.last_line >= self.LONG_EPOCH_SECONDS:
                self.last_line = now
                print(f"Epoch {self.epoch + 1}/{self.epochs} - {done}/{self.total} batches "
                      f"({100 * done // self.total}%), {now - self.start:.1f}s - "
                      f"{_running(running)}", file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def end_epoch(self, epoch, logs, batches):
        seconds = time.perf_counter() - self.start
        ran = batches - self.done_before
        rate = f"{ran / seconds:.1f} batch/s" if seconds > 0 else "- batch/s"
        if self.mode == "bar":
            self.bar.set_postfix_str(_format_logs(logs), refresh=False)
            self.close()
        elif self.mode == "line":
            print(f"Epoch {epoch + 1}/{self.epochs} - {batches} batches, {seconds:.2f}s "
                  f"({rate}) - {_format_logs(logs)}", file=sys.stderr, flush=True)


def _running(running):
    """The progress figure: bits per character for language models, else the loss."""
    if "bits_per_char" in running:
        return f"bpc={running['bits_per_char']:.4f}"
    return f"loss={running['loss']:.4f}"


def _isatty(stream):
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _distributed_context(distributed):
    if distributed is False or distributed is None:
        return None
    from ..distributed.context import resolve
    return resolve(distributed)


# -- the trainer ---------------------------------------------------------------------------------

class Trainer:
    """Fit loop for a model that follows the trainer protocol (module docstring).

    Args:
        model: the model (``modules()``, ``train_batch``, ``evaluate_batch``;
            optional ``on_epoch_begin``, ``extra_state`` / ``load_extra_state``).
        optimizer: a fastrnn.optim optimizer built on ``model.modules()``.
        clip_norm: clip the global gradient norm to this (None: no clipping).
        clip_value: clip every gradient entry to ``[-clip_value, clip_value]``
            (applied before ``clip_norm`` when both are given).
        callbacks: list of :class:`Callback`.
        verbose: 0 silent; 1 a progress bar on a terminal (one line per
            epoch otherwise); 2 one line per epoch.
        schedule: an fr.optim learning-rate schedule on ``optimizer``,
            stepped after every epoch (ReduceLROnPlateau gets ``val_loss``,
            or ``loss`` without validation) or, with
            ``schedule_interval="batch"``, after every optimizer step.
        schedule_interval: ``"epoch"`` or ``"batch"``.
        distributed: True to train data-parallel over the ranks of an
            ``mpiexec`` run (``fastrnn[mpi]``; see ``fastrnn.distributed``),
            or a ``fr.distributed.init()`` context.  The batch size of the
            data stays the global batch; only rank 0 prints and writes
            checkpoints.

    Attributes: ``history`` (the last fit's :class:`History`), ``epoch`` (the
    next epoch to run), ``step_in_epoch`` (its batches already done, > 0 after
    a stop mid-epoch), ``global_step`` (optimizer steps so far),
    ``stop_training`` (set by callbacks), ``modules``; after a distributed
    fit on several ranks, ``reduction_stats`` (buckets, steps, buckets
    launched during the backward pass).
    """

    def __init__(self, model, optimizer, clip_norm=None, clip_value=None, callbacks=None,
                 verbose=1, schedule=None, schedule_interval="epoch", distributed=False):
        self.modules = _check_model(model)
        self.distributed = _distributed_context(distributed)
        self.model = model
        self.optimizer = _check_optimizer(optimizer, self.modules)
        self.clip_norm = _CLIP("clip_norm", clip_norm)
        self.clip_value = _CLIP("clip_value", clip_value)
        verbose = _VERBOSE("verbose", verbose)
        self.verbose = verbose if self.writes_files else 0
        self.schedule_interval = INTERVALS("schedule_interval", schedule_interval)
        if schedule is not None:
            check_schedule("schedule", schedule, schedule_interval)
            owner = getattr(schedule, "optimizer", None)
            if owner is not None and owner is not optimizer:
                raise ValueError("schedule was built on another optimizer than the trainer's")
        self.schedule = schedule
        if callbacks is None:
            callbacks = []
        if isinstance(callbacks, Callback) or not isinstance(callbacks, (list, tuple)):
            raise TypeError(f"callbacks must be a list of Callback objects, "
                            f"got {type(callbacks).__name__}")
        for index, callback in enumerate(callbacks):
            if not isinstance(callback, Callback):
                raise TypeError(f"callbacks[{index}] must be a fastrnn.training.Callback, "
                                f"got {type(callback).__name__}")
        self.callbacks = list(callbacks)
        if schedule is not None and any(getattr(cb, "schedule", None) is schedule
                                        for cb in self.callbacks):
            raise ValueError("schedule is also wrapped by a LearningRateScheduler callback; "
                             "pass it once (it would be stepped twice)")
        for callback in self.callbacks:
            callback.set_trainer(self)
        self.history = History()
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.stop_training = False
        # The unfinished epoch: {"lr": its starting lr, "train": MetricSums}, or None.
        self._partial = None
        self._interrupt_requested = False
        self._run_state = None      # the DistributedRun of a distributed fit
        # The gradients, checked once and re-checked only when the arrays change.
        clipping = self.clip_norm is not None or self.clip_value is not None
        self._gradients = ParameterSet(self.modules, "Trainer", writes_grads=clipping)

    # -- public API ---------------------------------------------------------------------------
    def fit(self, train_data, epochs=1, validation_data=None, validation_split=0.0,
            initial_epoch=0, resume_from=None):
        """Train for ``epochs`` epochs (counted from 0, so ``initial_epoch`` or a
        resumed checkpoint continue up to the same total).

        Args:
            train_data: re-iterable source of batches.
            epochs: the epoch count to reach (int >= 1).
            validation_data: source of validation batches, evaluated after
                every epoch (metrics logged as ``val_<name>``).
            validation_split: fraction in [0, 1) of a BatchLoader
                ``train_data`` to hold out (``BatchLoader.split``, seeded).
            initial_epoch: first epoch index (to continue a run by hand).
            resume_from: checkpoint path (or :class:`Checkpoint`): restores
                the weights, optimizer, schedule, random generators,
                callback states, history and position, then continues,
                exactly as if the run had not stopped.
        Returns:
            the :class:`History` (with the checkpoint's earlier epochs when
            resuming).
        """
        epochs, initial_epoch = _epoch_range(epochs, initial_epoch, resume_from)
        train_data, validation_data = self._rank_sources(
            *_sources(train_data, validation_data, validation_split))
        steps = _size(train_data)
        self._begin_fit(epochs, initial_epoch, resume_from)
        history = self.history
        history.stop_reason = history.stop_message = None
        history.params = {"epochs": epochs, "steps": steps, "initial_epoch": self.epoch,
                          "verbose": self.verbose, "validation": validation_data is not None}
        progress = _Progress(self.verbose, epochs)
        try:
            with self._modes_kept(), self._sigint_guard(), \
                    self._distributed_run(train_data, validation_data, epochs, resume_from):
                self._run(train_data, validation_data, epochs, steps, progress)
        finally:
            progress.close()
        self._call("on_train_end", {"stop_reason": history.stop_reason})
        return history

    def _rank_sources(self, train_data, validation_data):
        """This rank's share of the sources in a distributed run; else the sources."""
        if self.distributed is None:
            return train_data, validation_data
        from ..distributed.training import rank_source
        return (rank_source(train_data, self.distributed),
                rank_source(validation_data, self.distributed))

    def _begin_fit(self, epochs, initial_epoch, resume_from):
        """Reset the run flags, start a new history at ``initial_epoch`` or restore
        the checkpoint ``resume_from``; callbacks get ``on_train_begin``."""
        self.stop_training = False
        self._interrupt_requested = False
        for callback in self.callbacks:
            callback.set_trainer(self)
        if resume_from is None:
            self.history = History()
            self.epoch, self.step_in_epoch, self._partial = initial_epoch, 0, None
        self._call("on_train_begin", {"epochs": epochs, "resume": resume_from is not None})
        if resume_from is not None:
            checkpoint = self._restore_checkpoint(resume_from)
            if checkpoint.epoch >= epochs:
                warn_from_caller(f"checkpoint {checkpoint.path!r} is at epoch "
                                 f"{checkpoint.epoch}; fit(epochs={epochs}) has nothing left "
                                 f"to do", UserWarning)

    def evaluate(self, data):
        """Weight-averaged metrics of the model over ``data`` (eval mode, no
        gradients): a dict ``name -> float`` with at least ``"loss"``."""
        _check_source("data", data)
        if self.distributed is not None:
            from ..distributed.training import rank_source
            data = rank_source(data, self.distributed)
        with self._modes_kept():
            return self._evaluate(data, self.epoch, "data", interruptible=False)

    @property
    def writes_files(self):
        """False on the ranks other than 0 of a distributed run: they neither
        print progress nor write checkpoints."""
        return self.distributed is None or self.distributed.is_root

    def save_checkpoint(self, path):
        """Write the complete training state to ``path`` (see ``save_checkpoint``;
        in a distributed run only rank 0 writes, the others return ``path``)."""
        return save_checkpoint(path, self)

    def _restore_checkpoint(self, resume_from):
        if self.distributed is None:
            return restore_checkpoint(resume_from, self)
        from ..distributed.training import together
        return together(self.distributed, f"restoring checkpoint {resume_from!r}",
                        restore_checkpoint, resume_from, self)

    def load_checkpoint(self, path):
        """Restore a checkpoint without training (``fit(resume_from=...)`` also does)."""
        return restore_checkpoint(path, self)

    # -- the loop -----------------------------------------------------------------------------
    def _run(self, train_data, validation_data, epochs, steps, progress):
        while self.epoch < epochs:
            epoch = self.epoch
            resumed = self._partial is not None
            if not resumed:
                self.step_in_epoch = 0
                self._partial = {"lr": float(self.optimizer.lr), "train": MetricSums()}
            for module in self.modules:
                module.train()
            _set_epoch(train_data, epoch)
            if not resumed and callable(getattr(self.model, "on_epoch_begin", None)):
                self.model.on_epoch_begin(epoch, True)
            self._call("on_epoch_begin", epoch, {})
            progress.begin_epoch(epoch, steps, self.step_in_epoch)
            if not self._train_epoch(train_data, epoch, progress):
                return
            logs = self._epoch_metrics(self._partial["train"], "train_data")
            if validation_data is not None:
                val = self._evaluate(validation_data, epoch, "validation_data",
                                     interruptible=True)
                if val is None:
                    self._stop_interrupted(epoch, progress, during="validation")
                    return
                logs.update({"val_" + name: value for name, value in val.items()})
            logs["lr"] = self._partial["lr"]
            batches = self.step_in_epoch
            # The epoch is complete: advance the position before anything that
            # might write a checkpoint.
            self.epoch, self.step_in_epoch, self._partial = epoch + 1, 0, None
            if self.schedule is not None and self.schedule_interval == "epoch":
                step_schedule(self.schedule, logs)
            self.history._append(epoch, logs)
            progress.end_epoch(epoch, logs, batches)
            self._call("on_epoch_end", epoch, dict(logs))
            self._call("on_epoch_complete", epoch, dict(logs))
            if self._run_state is not None:
                self._run_state.check_weights(epoch)
                self._run_state.agree_to_stop()
            if self._interrupt_requested:
                self._stop_interrupted(epoch + 1, progress, during=None)
                return
            if self.stop_training:
                self.history._stop("callback", f"stopped by a callback after epoch "
                                               f"{epoch + 1}")
                return

    def _train_epoch(self, train_data, epoch, progress):
        """Run the epoch's remaining batches; False when training must stop."""
        skip = self.step_in_epoch
        batches = 0
        for index, batch in enumerate(train_data):
            batches = index + 1
            if index < skip:        # done before the checkpoint: same batches, same order
                continue
            if not self._train_batch(index, batch, epoch, progress):
                return False
        if batches == 0:
            raise ValueError(f"train_data produced no batches in epoch {epoch}")
        if batches < skip:
            raise ValueError(f"train_data produced {batches} batches in epoch {epoch}, but "
                             f"{skip} of them were done before the checkpoint; resume with "
                             f"the data the checkpoint was written with")
        return True

    def _train_batch(self, index, batch, epoch, progress):
        """One optimizer step on ``batch``; False when training must stop."""
        callbacks = self.callbacks
        if callbacks:
            self._call("on_batch_begin", index, {})
        for module in self.modules:
            module.zero_grad()
        if self._run_state is not None:
            metrics, weight = self._run_state.train_batch(batch)
        else:
            metrics, weight = batch_result("train_batch", self.model.train_batch(batch))
        loss = metrics["loss"]
        if not math.isfinite(loss):
            self._stop_non_finite(epoch, index, f"the loss is {loss}", progress)
            return False
        norm = self._clip_gradients()
        if not math.isfinite(norm):
            self._stop_non_finite(epoch, index, f"the gradient norm is {norm}", progress)
            return False
        self.optimizer.step()
        self.global_step += 1
        self.step_in_epoch = index + 1
        sums = self._partial["train"]
        sums.add(metrics, weight)
        if self.schedule is not None and self.schedule_interval == "batch":
            self.schedule.step()
        if progress.wants_batches:
            progress.batch(index + 1, {name: sums.mean(name) for name in
                                       ("loss", "bits_per_char") if name in metrics})
        if callbacks:
            logs = dict(metrics, weight=weight, lr=float(self.optimizer.lr))
            self._call("on_batch_end", index, logs)
        if self._run_state is not None:
            self._run_state.agree_to_stop(after_batch=True)
        if self._interrupt_requested:
            self._stop_interrupted(epoch, progress, during="training")
            return False
        if self.stop_training:
            progress.close()
            self.history._stop("callback", f"stopped by a callback at epoch {epoch + 1}, "
                                           f"batch {index + 1} (epoch left unfinished)")
            return False
        return True

    def _clip_gradients(self):
        """The global 2-norm of the gradients before clipping, measured once
        for the NaN/inf check and the clipping.  Not finite: nothing is
        clipped (the step will be skipped).  Clipping by value comes first;
        the norm is then measured again for clipping by norm."""
        grads = self._gradients.flat_grads()
        threads = _threads.get_num_threads()
        norm = grad_norm(grads, 2.0, threads)
        if not math.isfinite(norm):
            return norm
        if self.clip_value is not None:
            clamp(grads, self.clip_value, threads)
            if self.clip_norm is not None:
                scale_to_norm(grads, self.clip_norm, grad_norm(grads, 2.0, threads), threads)
        elif self.clip_norm is not None:
            scale_to_norm(grads, self.clip_norm, norm, threads)
        return norm

    def unfinished_epoch_state(self):
        """The unfinished epoch as JSON-able data for checkpoints (None between
        epochs); :meth:`restore_position` takes it back."""
        if self._partial is None:
            return None
        return {"lr": self._partial["lr"], "train": self._partial["train"].state_dict()}

    def restore_position(self, epoch, step_in_epoch, global_step, unfinished_epoch):
        """Where training stands, as a checkpoint restores it: the position and
        the unfinished epoch in the form :meth:`unfinished_epoch_state` gives
        (checked first: a ValueError leaves the trainer unchanged)."""
        partial = parse_partial_state(unfinished_epoch)
        self.epoch, self.step_in_epoch, self.global_step = epoch, step_in_epoch, global_step
        self._partial = partial

    def _evaluate(self, data, epoch, source, interruptible):
        for module in self.modules:
            module.eval()
        _set_epoch(data, epoch)
        if callable(getattr(self.model, "on_epoch_begin", None)):
            self.model.on_epoch_begin(epoch, False)
        sums = MetricSums()
        for batch in data:
            if batch is None and self.distributed is not None:
                continue            # this rank has no rows of the global batch
            metrics, weight = batch_result("evaluate_batch", self.model.evaluate_batch(batch))
            sums.add(metrics, weight)
            if interruptible and self._interrupt_requested and self.distributed is None:
                return None
        if self.distributed is not None:
            from ..distributed.training import reduce_sums
            reduce_sums(self.distributed, sums)
            if interruptible and self.distributed.any(self._interrupt_requested):
                return None
        return self._epoch_metrics(sums, source)

    def _epoch_metrics(self, sums, source):
        """Weight-averaged batch metrics, plus those the model derives from them."""
        metrics = sums.averages(source)
        derive = getattr(self.model, "epoch_metrics", None)
        return dict(derive(metrics)) if callable(derive) else metrics

    # -- stopping -----------------------------------------------------------------------------
    def _stop_non_finite(self, epoch, index, what, progress):
        progress.close()
        message = (f"training stopped at epoch {epoch + 1}, batch {index + 1}: {what}. The "
                   f"update was skipped, so the weights are those after the last good batch "
                   f"(global step {self.global_step}). Lower the learning rate or clip the "
                   f"gradients (clip_norm=...).")
        self.history._stop("non_finite", message)
        warn_from_caller(message, RuntimeWarning)

    def _stop_interrupted(self, epoch, progress, during):
        progress.close()
        if during is None:
            where = f"after epoch {epoch}"
        else:
            where = (f"at epoch {epoch + 1}, batch {self.step_in_epoch} "
                     f"(during {during}; epoch left unfinished)")
        # A model that hides its trainer (the task models) says how its users resume.
        hint = getattr(self.model, "resume_hint", None) or (
            "to continue later: trainer.save_checkpoint(path), then "
            "fit(..., resume_from=path).")
        message = f"Training interrupted {where}. The model is usable; {hint}"
        self.history._stop("interrupted", message)
        print(message, file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def _modes_kept(self):
        """Put every module back in the train/eval mode it had on entry."""
        modes = [module.training for module in self.modules]
        try:
            yield
        finally:
            for module, mode in zip(self.modules, modes):
                module.train(mode)

    @contextlib.contextmanager
    def _distributed_run(self, train_data, validation_data, epochs, resume_from):
        """Around a distributed fit: the ranks agree and the gradient reducer
        is hooked in; an error on one rank aborts every rank (the others
        would wait for it forever in the next collective)."""
        if self.distributed is None:
            yield
            return
        from ..distributed.context import DistributedError
        from ..distributed.training import DistributedRun
        run = DistributedRun(self, self.distributed)
        try:
            run.start(train_data, validation_data, epochs, resume_from is not None)
            self._run_state = run
            yield
        except DistributedError:
            raise                   # raised alike on every rank after a collective check
        except BaseException as exc:
            if self.distributed.size == 1:
                raise
            self.distributed.abort(exc)
        finally:
            self._run_state = None
            run.close()

    @contextlib.contextmanager
    def _sigint_guard(self):
        """SIGINT sets a flag (checked between batches); a second one raises."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.getsignal(signal.SIGINT)
        if previous is None:      # a handler not installed from Python: leave it alone
            yield
            return

        def handler(signum, frame):
            if self._interrupt_requested:
                raise KeyboardInterrupt
            self._interrupt_requested = True

        signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _call(self, hook, *args):
        for callback in self.callbacks:
            getattr(callback, hook)(*args)

    def __repr__(self):
        return (f"Trainer(model={type(self.model).__name__}, "
                f"optimizer={type(self.optimizer).__name__}, epoch={self.epoch}, "
                f"global_step={self.global_step})")
