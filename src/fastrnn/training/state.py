"""What the fit loop accumulates within an epoch, and its checkpoint form.

``batch_result`` checks what a model's ``train_batch`` / ``evaluate_batch``
returned; ``MetricSums`` adds those results up over an epoch; an unfinished
epoch (its starting learning rate and its sums) goes into checkpoints as
plain JSON and comes back through ``parse_partial_state``.  The trainer, the
checkpoint code and the distributed runner all read these; none of them
imports another for it.
"""

import math

from .._validation import Real, is_int, is_real

_BATCH_WEIGHT = Real(low=0)


def batch_result(name, result):
    """Validate ``(metrics, weight)`` from train_batch/evaluate_batch."""
    if not isinstance(result, tuple) or len(result) != 2:
        raise TypeError(f"model.{name}(batch) must return a tuple (metrics dict, weight), "
                        f"got {type(result).__name__}")
    metrics, weight = result
    if not isinstance(metrics, dict) or "loss" not in metrics:
        got = sorted(metrics) if isinstance(metrics, dict) else type(metrics).__name__
        raise TypeError(f"model.{name}(batch) must return metrics as a dict with at least "
                        f"'loss', got {got}")
    values = {}
    for key, value in metrics.items():
        try:
            values[key] = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"model.{name}(batch) metric {key!r} must be a number, "
                            f"got {type(value).__name__}") from None
    return values, _BATCH_WEIGHT(f"model.{name}(batch) weight", weight)


class MetricSums:
    """Weighted sums of batch metrics (plain floats: JSON-exact for resume)."""

    def __init__(self, state=None):
        state = _check_sums_state(state)
        self.sums = dict(state.get("sums", {}))
        self.weights = dict(state.get("weights", {}))
        self.batches = int(state.get("batches", 0))

    def add(self, metrics, weight):
        for name, value in metrics.items():
            self.sums[name] = self.sums.get(name, 0.0) + value * weight
            self.weights[name] = self.weights.get(name, 0.0) + weight
        self.batches += 1

    def mean(self, name):
        weight = self.weights.get(name, 0.0)
        return self.sums[name] / weight if weight > 0 else math.nan

    def averages(self, source):
        if self.batches == 0:
            raise ValueError(f"{source} produced no batches")
        if self.weights.get("loss", 0.0) <= 0:
            raise ValueError(f"{source}: every batch had weight 0; weights must sum to > 0")
        return {name: self.mean(name) for name in self.sums}

    def state_dict(self):
        return {"sums": dict(self.sums), "weights": dict(self.weights), "batches": self.batches}


def _is_number(value):
    return is_real(value)


def _check_sums_state(state):
    """``state`` (None or an ``MetricSums.state_dict()``) or a ValueError."""
    if state is None:
        return {}
    ok = (isinstance(state, dict) and set(state) == {"sums", "weights", "batches"}
          and isinstance(state["sums"], dict) and isinstance(state["weights"], dict)
          and set(state["sums"]) == set(state["weights"])
          and all(_is_number(v) for v in state["sums"].values())
          and all(_is_number(v) for v in state["weights"].values())
          and is_int(state["batches"])
          and state["batches"] >= 0)
    if not ok:
        raise ValueError(f"the unfinished epoch's metric sums must be a dict with 'sums' and "
                         f"'weights' (dicts of the same names to numbers) and 'batches' (an "
                         f"int >= 0), got {state!r}")
    return state


def parse_partial_state(state):
    """The trainer's unfinished-epoch record from its checkpoint form
    (``Trainer.unfinished_epoch_state()``), checked; None stays None."""
    if state is None:
        return None
    if not isinstance(state, dict) or set(state) != {"lr", "train"} \
            or not _is_number(state["lr"]) or not state["lr"] >= 0:
        raise ValueError(f"the unfinished epoch's state must be a dict with 'lr' (a number "
                         f">= 0) and 'train' (its metric sums), got {state!r}")
    return {"lr": float(state["lr"]), "train": MetricSums(state["train"])}
