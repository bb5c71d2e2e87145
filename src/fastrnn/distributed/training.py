"""What ``Trainer(..., distributed=True)`` does around its loop.

The trainer stays a single-process loop; this module gives it the rank's
part of the data, makes the ranks agree before the first step (same model,
optimizer, data sizes; rank 0's parameters everywhere), reduces evaluation
metrics, and makes stop decisions collective.  The per-step gradient
reduction is :class:`fastrnn.distributed.reducer.GradientReducer`.
"""

from ..training.state import _BATCH_WEIGHT, batch_result
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
        self._held = (False, False)        # stop requests for the next reduction
        self._agreed = (False, False)      # the requests the last reduction summed
        self._batch_end_callbacks = any(_overrides(callback, "on_batch_end")
                                        for callback in trainer.callbacks)

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
        reduction: returns the global (metrics, weight).  The ranks' stop
        requests travel in the same reduction (see :meth:`agree_to_stop`)."""
        model, reducer = self.trainer.model, self.reducer
        if reducer is None:
            return batch_result("train_batch", model.train_batch(batch))
        weight_of = getattr(model, "batch_weight", None)
        loss_weight = None
        if batch is None:
            loss_weight = 0.0
        elif callable(weight_of):
            loss_weight = _loss_weight(weight_of(batch))
        reducer.begin(loss_weight)
        if batch is None:
            metrics, weight = None, 0.0
        else:
            metrics, weight = batch_result("train_batch", model.train_batch(batch))
        metrics, weight, flags = reducer.finish(metrics, weight, loss_weight,
                                                flags=self._stop_requests())
        self._agreed = (flags[0] > 0, flags[1] > 0)
        self.trainer.stop_training, self.trainer._interrupt_requested = self._agreed
        return metrics, weight

    def _stop_requests(self):
        """This rank's [stop_training, interrupt] requests, with those held
        back from the previous step."""
        trainer, held = self.trainer, self._held
        self._held = (False, False)
        return [float(trainer.stop_training or held[0]),
                float(trainer._interrupt_requested or held[1])]

    def agree_to_stop(self, after_batch=False):
        """Make ``stop_training`` and a Ctrl-C request collective: if any rank
        wants to stop, every rank stops at the same step.

        After a batch the requests made before the gradient reduction were
        summed with it.  Only callbacks with ``on_batch_end`` run after it and
        may stop at this batch, so only then does this reduce again; any
        other request made since (a Ctrl-C during the optimizer step) is
        held back for the next reduction: every rank then stops one batch
        later, together.  Otherwise (at the end of an epoch) the requests
        are reduced now."""
        trainer = self.trainer
        if after_batch and self.reducer is not None and not self._batch_end_callbacks:
            self._held = (trainer.stop_training and not self._agreed[0],
                          trainer._interrupt_requested and not self._agreed[1])
            trainer.stop_training, trainer._interrupt_requested = self._agreed
            return
        flags = self.context.sum(self._stop_requests())
        trainer.stop_training = bool(flags[0] > 0)
        trainer._interrupt_requested = bool(flags[1] > 0)

    def check_weights(self, epoch):
        """DistributedError on every rank if the ranks' weights differ."""
        parameters = [p for module in self.trainer.modules for p in module.parameters()]
        self.context.check_same_arrays(f"the weights after epoch {epoch + 1} (the ranks "
                                       f"diverged)", parameters)


def _overrides(callback, hook):
    """True when ``callback`` does something in ``hook`` (not Callback's no-op)."""
    from ..training.callbacks import Callback
    return getattr(type(callback), hook, None) is not getattr(Callback, hook)


def _loss_weight(value):
    """``model.batch_weight(batch)`` as a number >= 0."""
    return _BATCH_WEIGHT("model.batch_weight(batch)", value)


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
