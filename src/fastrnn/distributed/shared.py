"""What a task model's ``fit(..., distributed=...)`` shares across ranks.

``distributed=True``: every rank is given the full data.  Rank 0 alone builds
the vocabulary and the label set and sends them to the others; each rank
then encodes its copy of the data with them and trains on its rows of every
global batch.

``distributed="sharded"``: every rank is given only its own part of the data.
Each rank counts its part (token counts in order of first appearance, its
distinct labels, its input kind and width); rank 0 merges the counts in rank
order and builds the one vocabulary and label set, as one process would
from the concatenation part 0 + part 1 + ...; every rank receives them.
The loaders then hold ``shard=(rank, size)``: each rank forms its batches of
``len(range(rank, batch_size, size))`` rows from its part alone, and a
global batch is the union of the ranks' batches.

Everything sent is plain JSON (``Vocab.to_dict``, label lists, counts):
no pickled objects travel between ranks.  Each step runs under
:func:`~fastrnn.distributed.training.together`, so a failure on one rank
raises on every rank instead of leaving the others waiting.
"""

from .context import init, resolve
from .training import together

import numpy as np

__all__ = ["SHARDED", "FitPlan", "fit_plan", "fit_inputs", "shard_rows"]

SHARDED = "sharded"


def fit_plan(distributed):
    """None for ``distributed=False``; else the :class:`FitPlan` of the run.

    ``distributed``: False, True (every rank holds the full data),
    ``"sharded"`` (every rank holds only its part) or a Context (full data).
    """
    if isinstance(distributed, str):
        if distributed != SHARDED:
            raise ValueError(f"distributed must be True, False, {SHARDED!r} or a "
                             f"fastrnn.distributed Context, got {distributed!r}")
        return FitPlan(init(), sharded=True)
    context = resolve(distributed)
    return None if context is None else FitPlan(context, sharded=False)


class FitPlan:
    """One distributed fit: the Context and whether the data is sharded."""

    def __init__(self, context, sharded):
        self.context = context
        self.sharded = sharded

    @property
    def shard(self):
        """``(rank, size)`` for the loaders of sharded data, else None."""
        return (self.context.rank, self.context.size) if self.sharded else None

    def check_same(self, what, arrays):
        """Full data: DistributedError on every rank unless every rank's
        encoded ``arrays`` equal rank 0's (the ranks were given the same
        data).  Sharded data differs by design: no check."""
        if not self.sharded:
            self.context.check_same_arrays(f"{what} (every rank must be given the same "
                                           f"data, or pass distributed='sharded')", arrays)

    def run(self, what, function, *args):
        """``function(*args)``; a failure on any rank raises on every rank."""
        return together(self.context, what, function, *args)

    def share(self, what, build, part, merge):
        """The JSON state every rank uses, made once on rank 0.

        Full data: ``build()`` on rank 0.  Sharded: ``part()`` on every rank
        (JSON), then ``merge(parts)`` of all of them, in rank order, on rank 0.
        """
        context = self.context
        if self.sharded:
            parts = context.gather_json(self.run(what, part))
            state = self.run(what, lambda: merge(parts) if context.is_root else None)
        else:
            state = self.run(what, lambda: build() if context.is_root else None)
        return context.broadcast_json(state)

    def labels(self, labels, describe, what="labels"):
        """The label set of ``labels`` (this rank's, a flat list) over all ranks.

        ``describe(labels)``: the sorted distinct labels with the model's
        checks (at least two, none NaN, hashable).  Only plain labels (str,
        int, float, bool) can be sent between ranks.
        """
        from ..tasks.base import json_labels
        return self.share(f"building the {what}",
                          lambda: json_labels(describe(labels), what),
                          lambda: json_labels(_local_labels(labels, describe), what),
                          lambda parts: json_labels(describe([v for p in parts for v in p]),
                                                    what))

    def vocab(self, corpus, tokenizer, min_freq, max_size, check):
        """The :class:`~fastrnn.text.Vocab` of ``corpus`` (token lists) over
        all ranks; ``check(vocab)`` applies the model's limits on rank 0."""
        from ..text import Vocab

        def build():
            return check(Vocab.build(corpus, tokenizer=tokenizer, min_freq=min_freq,
                                     max_size=max_size)).to_dict()

        def part():
            return list(Vocab.count(corpus, tokenizer)[0].items())

        def merge(parts):
            counts = {}
            for pairs in parts:
                for token, count in pairs:
                    counts[token] = counts.get(token, 0) + count
            return check(Vocab.from_counts(counts, tokenizer, min_freq, max_size)).to_dict()

        vocab = Vocab.from_dict(self.share("building the vocabulary", build, part, merge))
        vocab.tokenizer = tokenizer
        return vocab

    def common_stream(self, stream, batch_size):
        """This rank's token ``stream`` (sharded language-model data) cut so
        its ``len(range(rank, batch_size, size))`` columns have as many steps
        as the shortest rank's: every rank runs the same chunks per epoch."""
        rank, size = self.context.rank, self.context.size
        columns = len(range(rank, batch_size, size))
        steps = self.context.allgather_json((len(stream) - 1) // max(columns, 1))
        if columns < 1 or min(steps) < 1:
            raise ValueError(f"distributed='sharded' with batch_size={batch_size} on {size} "
                             f"ranks: every rank needs at least one stream and, for each, "
                             f"more tokens than its streams; steps per stream by rank: "
                             f"{steps}")
        return stream[:columns * min(steps) + 1]


def _local_labels(labels, describe):
    """This rank's distinct labels; one part may hold a single label."""
    try:
        distinct = list(dict.fromkeys(labels))
    except TypeError:
        distinct = None
    return describe(labels) if distinct is None or len(distinct) > 1 else distinct


def fit_inputs(plan, encoder, X, name="X", transform=True):
    """Fit the task model's InputEncoder on ``X`` once for all ranks, and
    return ``encoder.transform(X)`` (or the encoder, ``transform=False``)."""
    if plan is None:
        return encoder.fit_transform(X, name) if transform else encoder.fit(X, name)
    from ..tasks.inputs import as_sequences
    X = plan.run(f"reading {name}", as_sequences, X)
    state = plan.share(f"building the inputs of {name}",
                       lambda: encoder.fit(X, name).to_dict(),
                       lambda: encoder.counts(X, name),
                       lambda parts: encoder.fit_counts(parts, name).to_dict())
    dtype = encoder.dtype
    encoder.__dict__.update(type(encoder).from_dict(state).__dict__)
    encoder.dtype = dtype
    if not transform:
        return encoder
    sequences = plan.run(f"encoding {name}", encoder.transform, X, name)
    plan.check_same(f"the encoded {name}", sequences)
    return sequences


def shard_rows(num_examples, batch_size, rank, size):
    """The rows (int64 indices into the full data) to give ``rank`` of
    ``size`` so that sharded training without shuffling equals one process
    on the full data in its order: the rank's rows ``rank::size`` of every
    global batch of ``batch_size``.  (Every rank must then have a row in the
    last global batch: ``num_examples % batch_size`` is 0 or >= ``size``.)"""
    rows = np.arange(num_examples, dtype=np.int64)
    return rows[(rows % batch_size) % size == rank]
