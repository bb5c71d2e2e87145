"""What ``Trainer(..., distributed=True)`` does around its loop.

The trainer stays a single-process loop; this module gives it the rank's
part of the data, makes the ranks agree before the first step (same model,
optimizer, data sizes; rank 0's parameters everywhere), reduces evaluation
metrics, and makes stop decisions collective.  The per-step gradient
reduction is :class:`fastrnn.distributed.reducer.GradientReducer`.
"""

from ..training.state import batch_result
from .context import DistributedError
from .reducer import GradientReducer

__all__ = ["rank_source", "together", "DistributedRun"]


def together(context, what, function, *args):
    """``function(*args)`` on every rank; if it raised on any rank, raise on
    every rank (the error itself where it happened, DistributedError
    elsewhere) instead of leaving the others waiting in the next collective."""
    try:
        result, failed = function(*args), None
    except Exception as exc:
        result, failed = None, exc
    ranks = [rank for rank, bad in enumerate(context.allgather_json(failed is not None))
             if bad]
    if failed is not None:
        raise failed
    if ranks:
        raise DistributedError(f"{what} failed on rank(s) {ranks}; see their error")
    return result


def rank_source(data, context):
    """This rank's batches of ``data``: a source holding the full data
    (``for_rank``) yields the rank's part of each global batch; a sharded
    BatchLoader or any other source is taken as this rank's already."""
    if data is None or getattr(data, "shard", None) is not None:
        return data
    for_rank = getattr(data, "for_rank", None)
    return for_rank(context.rank, context.size) if callable(for_rank) else data


def _model_signature(model, modules):
    return [type(model).__name__] + [
        [type(module).__name__] + [[name, list(value.shape), value.dtype.str]
                                   for name, value in module.named_parameters()]
        for module in modules]


def _size(data):
    try:
        return len(data)
    except TypeError:
        return None


def _data_signature(data, validation=False):
    """What every rank's data must agree on.  Full data: its size.  A shard:
    training needs as many batches per epoch on every rank (each global step
    is one batch of every rank); a validation shard may be of any size (an
    evaluation sums over the batches, then reduces once)."""
    if data is None:
        return None
    if getattr(data, "shard", None) is not None:
        return {"sharded": True, "batches": None if validation else _size(data)}
    return {"sharded": False, "batches": _size(data),
            "examples": getattr(data, "num_examples", None)}


class DistributedRun:
    """One distributed ``fit``: set up by :meth:`start`, ended by :meth:`close`."""

    def __init__(self, trainer, context):
        self.trainer = trainer
        self.context = context
        self.reducer = None

    def start(self, train_data, validation_data, epochs, resuming):
        """Check the ranks agree, give every rank rank 0's weights (or check
        a restored checkpoint gave them the same) and hook the reducer."""
        trainer, context = self.trainer, self.context
        context.agree("the model (modules, parameter names, shapes and dtypes)",
                      _model_signature(trainer.model, trainer.modules))
        context.agree("the optimizer and fit settings",
                      [type(trainer.optimizer).__name__, float(trainer.optimizer.lr),
                       trainer.clip_norm, trainer.clip_value, epochs, resuming,
                       trainer.epoch, trainer.step_in_epoch, trainer.global_step])
        context.agree("the training data (batches per epoch, examples)",
                      _data_signature(train_data))
        context.agree("the validation data (batches, examples)",
                      _data_signature(validation_data, validation=True))
        parameters = [p for module in trainer.modules for p in module.parameters()]
        if resuming:
            context.check_same_arrays("the weights restored from the checkpoint "
                                      "(every rank must read the same file)", parameters)
        else:
            context.broadcast_arrays(parameters)
        if context.size > 1:        # one rank: the plain step, bit for bit
            self.reducer = GradientReducer(context, trainer.modules, context.bucket_bytes)
            self.reducer.attach()

    def close(self):
        if self.reducer is not None:
            self.trainer.reduction_stats = self.reducer.stats()
            self.reducer.detach()
            self.reducer = None

    # -- per step ------------------------------------------------------------------
    def train_batch(self, batch):
        """The model's step on this rank's part (None: no rows here), then the
        reduction: returns the global (metrics, weight)."""
        model, reducer = self.trainer.model, self.reducer
        if reducer is None:
            return batch_result("train_batch", model.train_batch(batch))
        weight_of = getattr(model, "batch_weight", None)
        reducer.begin(weight_of(batch) if batch is not None and callable(weight_of)
                      else (0.0 if batch is None else None))
        if batch is None:
            metrics, weight = None, 0.0
        else:
            metrics, weight = batch_result("train_batch", model.train_batch(batch))
        return reducer.finish(metrics, weight)

    def agree_to_stop(self):
        """Make ``stop_training`` and a Ctrl-C request collective: if any
        rank wants to stop, every rank stops at the same step."""
        trainer = self.trainer
        flags = self.context.sum([trainer.stop_training, trainer._interrupt_requested])
        trainer.stop_training = bool(flags[0] > 0)
        trainer._interrupt_requested = bool(flags[1] > 0)

    def check_weights(self, epoch):
        """DistributedError on every rank if the ranks' weights differ."""
        parameters = [p for module in self.trainer.modules for p in module.parameters()]
        self.context.check_same_arrays(f"the weights after epoch {epoch + 1} (the ranks "
                                       f"diverged)", parameters)


def reduce_sums(context, accumulator):
    """Sum an evaluation's weighted metric sums over the ranks, in place."""
    names = []
    for local in context.allgather_json(list(accumulator.sums)):
        names += [name for name in local if name not in names]
    local = [accumulator.batches]
    for name in names:
        local += [accumulator.sums.get(name, 0.0), accumulator.weights.get(name, 0.0)]
    totals = context.sum(local)
    accumulator.batches = int(totals[0])
    accumulator.sums = {name: float(totals[1 + 2 * k]) for k, name in enumerate(names)}
    accumulator.weights = {name: float(totals[2 + 2 * k]) for k, name in enumerate(names)}
    return accumulator
