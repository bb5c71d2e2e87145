"""The record of a ``Trainer.fit`` run: per-epoch metrics and how the run ended."""

import math
import numbers

from .._validation import is_real

__all__ = ["History"]

_PLOT_HINT = ("History.plot needs matplotlib, which is not installed: "
              "pip install fastrnn[plot]  (or: pip install matplotlib)")

# How a run ended early (``History.stop_reason``); None when it ran all its epochs.
STOP_REASONS = ("callback", "interrupted", "non_finite")


class History:
    """Metrics per completed epoch, as ``Trainer.fit`` returns them.

    Attributes:
        history: dict ``name -> list`` with one value per completed epoch:
            the training metrics (``"loss"`` and whatever the model reports),
            the validation metrics as ``"val_<name>"``, and ``"lr"`` (the
            learning rate the epoch started with).  Every list has
            ``len(epoch)`` entries; a metric missing in some epoch is NaN there.
        epoch: the indices (0-based) of the completed epochs.
        params: the settings of the run (``epochs``, ``steps`` per epoch when
            known, ``initial_epoch``, ``verbose``, ``validation``).
        stop_reason: None when the run did all its epochs; otherwise
            ``"callback"`` (a callback set ``trainer.stop_training``, e.g.
            EarlyStopping), ``"interrupted"`` (Ctrl-C) or ``"non_finite"`` (a
            NaN/inf loss or gradient norm: the bad update was skipped).
        stop_message: a sentence saying where and why the run stopped.

    An epoch cut short (Ctrl-C, a non-finite loss, a callback stopping in
    the middle of an epoch) is not recorded: its metrics would cover only
    part of the data.  The trainer keeps its position, so
    ``save_checkpoint`` followed by ``fit(resume_from=...)`` finishes it.
    """

    def __init__(self):
        self.history = {}
        self.epoch = []
        self.params = {}
        self.stop_reason = None
        self.stop_message = None

    # -- recording --------------------------------------------------------------
    def _append(self, epoch, logs):
        """Record one completed epoch; keeps all lists the same length."""
        done = len(self.epoch)
        for name, value in logs.items():
            if name not in self.history:
                self.history[name] = [math.nan] * done
            self.history[name].append(float(value))
        for name, values in self.history.items():
            if len(values) == done:
                values.append(math.nan)
        self.epoch.append(int(epoch))

    def _stop(self, reason, message):
        if reason not in STOP_REASONS:
            raise ValueError(f"stop reason must be one of {STOP_REASONS}, got {reason!r}")
        self.stop_reason = reason
        self.stop_message = message

    @property
    def interrupted(self):
        """True when the run was stopped with Ctrl-C."""
        return self.stop_reason == "interrupted"

    @property
    def non_finite(self):
        """True when the run stopped on a NaN/inf loss or gradient norm."""
        return self.stop_reason == "non_finite"

    def __len__(self):
        return len(self.epoch)

    def __repr__(self):
        names = ", ".join(self.history)
        end = f", stop_reason={self.stop_reason!r}" if self.stop_reason else ""
        return f"History(epochs={len(self.epoch)}, metrics=[{names}]{end})"

    # -- checkpoints --------------------------------------------------------------
    def state_dict(self):
        """JSON-able copy (floats round-trip exactly through JSON)."""
        return {"history": {name: list(values) for name, values in self.history.items()},
                "epoch": list(self.epoch), "params": dict(self.params),
                "stop_reason": self.stop_reason, "stop_message": self.stop_message}

    def load_state_dict(self, state):
        _check_state(state)
        self.history = {str(name): [float(v) for v in values]
                        for name, values in state["history"].items()}
        self.epoch = [int(e) for e in state["epoch"]]
        self.params = dict(state.get("params", {}))
        self.stop_reason = state.get("stop_reason")
        self.stop_message = state.get("stop_message")

    @classmethod
    def from_state_dict(cls, state):
        history = cls()
        history.load_state_dict(state)
        return history

    # -- plotting -----------------------------------------------------------------
    def plot(self, path=None, metrics=None):
        """Plot the curves: one panel per quantity, training and validation together.

        Args:
            path: file to save the figure to (format from its extension);
                None returns the figure instead, made with pyplot so that
                ``plt.show()`` shows it.
            metrics: names to plot (without the ``val_`` prefix; ``"lr"`` is
                allowed); default: the distinct quantities, see
                :meth:`plot_metrics`.
        Returns:
            the ``matplotlib.figure.Figure`` when ``path`` is None, else ``path``.
        Raises:
            ImportError naming ``pip install fastrnn[plot]`` when matplotlib
            is missing (it is an optional dependency).
        """
        try:
            from matplotlib.figure import Figure
        except ImportError as exc:
            raise ImportError(_PLOT_HINT) from exc
        bases = self._bases()
        if metrics is None:
            metrics = self.plot_metrics()
        else:
            if isinstance(metrics, str):
                metrics = [metrics]
            metrics = list(metrics)
            unknown = [m for m in metrics if m not in bases]
            if unknown:
                raise ValueError(f"metrics must be names from the history {bases}, "
                                 f"got unknown {unknown}")
        if not metrics or not self.epoch:
            raise ValueError("History.plot: nothing to plot (no completed epoch)")
        size = (4.5 * len(metrics), 3.4)
        if path is None:        # pyplot keeps it, so plt.show() displays it
            from matplotlib import pyplot
            figure = pyplot.figure(figsize=size, layout="constrained")
        else:                   # no global state, no GUI backend needed
            figure = Figure(figsize=size, layout="constrained")
        axes = figure.subplots(1, len(metrics), squeeze=False)[0]
        for ax, name in zip(axes, metrics):
            self._panel(ax, name)
        if path is None:
            return figure
        figure.savefig(path)
        return path

    def _bases(self):
        """Metric names without the ``val_`` prefix, in first-seen order."""
        bases = []
        for name in self.history:
            base = name[4:] if name.startswith("val_") else name
            if base not in bases:
                bases.append(base)
        return bases

    def plot_metrics(self):
        """The quantities :meth:`plot` draws by default: every metric except
        those that only restate another (``loss`` and ``perplexity`` when
        ``bits_per_char`` is recorded; ``perplexity`` next to ``loss``), and
        ``lr`` only when it changed."""
        bases = self._bases()
        hidden = set()
        if "bits_per_char" in bases:
            hidden |= {"loss", "perplexity"}
        elif "loss" in bases:
            hidden.add("perplexity")
        if len(set(self.history.get("lr", []))) <= 1:
            hidden.add("lr")
        return [name for name in bases if name not in hidden]

    def _panel(self, ax, name):
        epochs = [e + 1 for e in self.epoch]
        if name in self.history:
            ax.plot(epochs, self.history[name], marker="o", ms=3,
                    label="train" if name != "lr" else "lr")
        if "val_" + name in self.history:
            ax.plot(epochs, self.history["val_" + name], marker="o", ms=3,
                    label="validation")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        if name == "lr":
            ax.set_yscale("log")
        if len(ax.get_lines()) > 1:
            ax.legend()
        ax.grid(alpha=0.3)


def _check_state(state):
    if not isinstance(state, dict) or "history" not in state or "epoch" not in state:
        raise ValueError("history state must be a dict with 'history' and 'epoch', "
                         f"got {type(state).__name__}")
    epochs = state["epoch"]
    if not isinstance(epochs, list) or not all(isinstance(e, numbers.Integral) for e in epochs):
        raise ValueError("history state 'epoch' must be a list of ints")
    if not isinstance(state["history"], dict):
        raise ValueError("history state 'history' must be a dict of lists")
    for name, values in state["history"].items():
        if not isinstance(values, list) or len(values) != len(epochs) or not all(
                is_real(v) for v in values):
            raise ValueError(f"history state: metric {name!r} must be a list of "
                             f"{len(epochs)} numbers (one per epoch)")
    reason = state.get("stop_reason")
    if reason is not None and reason not in STOP_REASONS:
        raise ValueError(f"history state: stop_reason must be None or one of {STOP_REASONS}, "
                         f"got {reason!r}")
