"""Gradient all-reduce in a few large buffers, overlapping the backward pass.

Every rank computes the gradient ``g_r`` of its loss over its slice of the
global batch, a sum over the slice divided by the loss weight ``w_r`` (the
model's ``batch_weight``: rows, tokens, or with per-example weights the sum
of those weights).  The gradient of the global loss is ``sum_r w_r g_r / W``
with ``W = sum_r w_r``.  Each rank packs ``w_r g_r`` into buckets of a few
megabytes and sums them with non-blocking ``Iallreduce``; ``W``, the
weighted metric sums and the ranks' stop requests travel in one small final
reduction, and unpacking divides by ``W``.  Every rank receives the same
sums, so every rank applies the same update and takes the same decision.

Buckets follow the modules in reverse order, the order backward runs in.
When the model can say its batch weight before the backward pass
(``model.batch_weight(batch)``), a bucket is launched as soon as the
backward of its last module returns, so its reduction overlaps the backward
of the layers below.  MPI libraries progress non-blocking collectives inside
MPI calls, so each backward hook also tests the requests in flight.  Without
``batch_weight`` the buckets are launched together after ``train_batch``
returns (still a few large non-blocking reductions, no per-array calls).

The launch order is always bucket 0, 1, 2, ... then the metadata, on every
rank, whatever each rank's data: MPI matches collectives by order.  A module
whose backward runs again after its bucket left (a model that calls a
layer's backward twice in one step) is noticed; the step is then reduced
again without early launches, and early launches stay off for the run.
"""

import numpy as np

__all__ = ["GradientReducer"]

DEFAULT_BUCKET_BYTES = 4 << 20


class _Bucket:
    def __init__(self, dtype, entries):
        self.entries = entries                       # [(module index, grad array)]
        self.modules = {index for index, _ in entries}
        self.sizes = [grad.size for _, grad in entries]
        self.buffer = np.empty(sum(self.sizes), dtype=dtype)
        self.request = None

    def pack(self, scale):
        start = 0
        for (_, grad), size in zip(self.entries, self.sizes):
            np.multiply(grad.reshape(-1), scale, out=self.buffer[start:start + size])
            start += size

    def unpack(self, scale):
        start = 0
        for (_, grad), size in zip(self.entries, self.sizes):
            np.multiply(self.buffer[start:start + size], scale, out=grad.reshape(-1))
            start += size


def _plan(modules, bucket_bytes):
    """Buckets of at most ~bucket_bytes, one dtype each, modules in reverse.

    A bucket also closes at the end of a module once it holds a quarter of
    ``bucket_bytes``: the last layers' gradients then leave while the first
    layers run their backward, instead of waiting for them to fill a bucket
    (a 0.8M-parameter model is 2 buckets, not 1)."""
    buckets, entries, size, dtype = [], [], 0, None
    for index in reversed(range(len(modules))):
        module = modules[index]
        if entries and size >= bucket_bytes // 4:
            buckets.append(_Bucket(dtype, entries))
            entries, size = [], 0
        for name, _ in module.named_parameters():
            grad = module.grads[name]
            if entries and (grad.dtype != dtype or size + grad.nbytes > bucket_bytes):
                buckets.append(_Bucket(dtype, entries))
                entries, size = [], 0
            entries.append((index, grad))
            size += grad.nbytes
            dtype = grad.dtype
    if entries:
        buckets.append(_Bucket(dtype, entries))
    return buckets


class GradientReducer:
    """Sums the ranks' weighted gradients and batch metrics every step.

    Use: :meth:`attach` once, then per step :meth:`begin` (before
    ``train_batch``), :meth:`finish` (after it), and :meth:`detach` at the
    end.  ``bucket_bytes`` caps a bucket's size.
    """

    def __init__(self, context, modules, bucket_bytes=DEFAULT_BUCKET_BYTES):
        self.context = context
        self.modules = list(modules)
        self.buckets = _plan(self.modules, bucket_bytes)
        self._grads = [(module, name, module.grads[name]) for module in self.modules
                       for name, _ in module.named_parameters()]
        self.metric_names = None
        self.early = True
        self.steps = 0
        self.early_launches = 0     # buckets launched during a backward pass
        self._originals = []
        self._reset(None)

    # -- hooks -------------------------------------------------------------------
    def attach(self):
        """Wrap each module's ``backward`` (an instance attribute shadowing the
        method) to learn when its gradients are complete."""
        for index, module in enumerate(self.modules):
            original = module.backward
            self._originals.append((module, "backward" in module.__dict__, original))
            module.backward = self._hooked(index, original)

    def detach(self):
        for module, had_own, original in self._originals:
            if had_own:
                module.backward = original
            else:
                del module.backward
        self._originals = []

    def _hooked(self, index, original):
        def backward(*args, **kwargs):
            result = original(*args, **kwargs)
            self._module_done(index)
            return result
        backward.__wrapped__ = original
        return backward

    # -- one step ---------------------------------------------------------------------
    def _reset(self, scale):
        self._scale = scale            # w_r, when known before the backward pass
        self._calls = [0] * len(self.modules)
        self._launched = 0
        self._late = False

    def begin(self, batch_weight=None):
        """Start a step; ``batch_weight`` (this rank's weight, if known before
        the backward pass) allows launching buckets during it."""
        for module, name, grad in self._grads:
            if module.grads.get(name) is not grad:
                raise ValueError(f"{type(module).__name__}.grads[{name!r}] was replaced "
                                 f"during distributed training; gradients must be "
                                 f"accumulated in place")
        self._reset(float(batch_weight) if batch_weight is not None and self.early else None)

    def _module_done(self, index):
        self._calls[index] += 1
        if any(index in bucket.modules for bucket in self.buckets[:self._launched]):
            self._late = True
        if self._scale is None:
            return
        while self._launched < len(self.buckets):
            bucket = self.buckets[self._launched]
            if not all(self._calls[i] for i in bucket.modules):
                break
            self._launch(bucket, self._scale)
            self._launched += 1
            self.early_launches += 1
        self._progress()

    def _launch(self, bucket, scale):
        bucket.pack(scale)
        comm, MPI = self.context.comm, self.context.MPI
        bucket.request = comm.Iallreduce(MPI.IN_PLACE, bucket.buffer, op=MPI.SUM)

    def _progress(self):
        requests = [b.request for b in self.buckets[:self._launched] if b.request is not None]
        if requests:
            self.context.MPI.Request.Testall(requests)

    def finish(self, metrics, weight, loss_weight=None, flags=()):
        """Complete the step and return the global ``(metrics, weight, flags)``.

        ``metrics``: this rank's dict (None for a rank without rows);
        ``weight``: the weight of its metrics; ``loss_weight``: the
        normaliser of its loss (``model.batch_weight``; default ``weight``),
        which scales its gradient and its "loss" metric, so that the sums
        are the gradient and the loss of the global batch; ``flags``: numbers
        summed over the ranks in the same reduction (the stop requests).
        The gradients now hold the gradient of the global loss on every rank.
        """
        scale = float(weight if loss_weight is None else loss_weight)
        if self._scale is not None and self._launched and scale != self._scale:
            raise ValueError(f"model.batch_weight(batch) said {self._scale} before the "
                             f"backward pass but {scale} after it; it must not change "
                             f"during train_batch")
        for bucket in self.buckets[self._launched:]:
            self._launch(bucket, scale)
        self._launched = len(self.buckets)
        names = self._names(metrics)
        meta = np.array(self._meta(names, metrics or {}, float(weight), scale, flags),
                        dtype=np.float64)
        totals = np.empty_like(meta)
        comm, MPI = self.context.comm, self.context.MPI
        meta_request = comm.Iallreduce(meta, totals, op=MPI.SUM)
        self.context.wait([b.request for b in self.buckets] + [meta_request],
                          arrival=meta_request)
        if totals[-1] > 0:          # some rank ran a module's backward after its bucket left
            self.early = False
            for bucket in self.buckets:
                self._launch(bucket, scale)
            self.context.wait([b.request for b in self.buckets])
        self.steps += 1
        inverse = 1.0 / totals[0] if totals[0] > 0 else 0.0
        for bucket in self.buckets:
            bucket.unpack(inverse)
            bucket.request = None
        flag_sums = [float(v) for v in totals[-1 - len(flags):-1]]
        return self._means(names, totals), float(totals[1]), flag_sums

    def stats(self):
        """What the reduction did: buckets, steps, buckets launched during
        backward, and whether early launches are still on."""
        return {"buckets": len(self.buckets), "steps": self.steps,
                "early_launches": self.early_launches, "early": self.early}

    # -- metrics --------------------------------------------------------------------
    def _names(self, metrics):
        """The metric names of the run, the same on every rank: the union over
        ranks at the first step with rows anywhere."""
        local = list(metrics) if metrics else []
        if self.metric_names is None:
            union = []
            for names in self.context.allgather_json(local):
                union += [name for name in names if name not in union]
            if union:
                self.metric_names = union
            return union
        unknown = [name for name in local if name not in self.metric_names]
        if unknown:
            raise ValueError(f"train_batch returned metrics {unknown} not returned at the "
                             f"first step ({self.metric_names}); in distributed training "
                             f"every step must return the same metric names")
        return self.metric_names

    def _meta(self, names, metrics, weight, loss_weight, flags):
        """[loss weight, weight, sum m*w and w for each metric..., flags...,
        late flag] of this rank; the "loss" metric is weighted by the loss
        weight, the others by the weight."""
        meta = [loss_weight, weight]
        for name in names:
            if name in metrics:
                w = loss_weight if name == "loss" else weight
                meta += [metrics[name] * w, w]
            else:
                meta += [0.0, 0.0]
        meta += [float(flag) for flag in flags]
        meta.append(1.0 if self._late else 0.0)
        return meta

    @staticmethod
    def _means(names, totals):
        means = {}
        for k, name in enumerate(names):
            total, weight = totals[2 + 2 * k], totals[3 + 2 * k]
            if weight > 0:
                means[name] = total / weight
            else:   # nothing weighted anywhere: a loss of 0, as one process reports
                means[name] = 0.0 if name == "loss" else float("nan")
        return means
