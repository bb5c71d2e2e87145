"""Scale-out: data-parallel training on MPI, batch prediction on Dask.

Training (``pip install "fastrnn[mpi]"``)::

    import fastrnn as fr
    ctx = fr.distributed.init()          # ctx.rank, ctx.size (1 without mpiexec)
    trainer = fr.Trainer(model, optimizer, distributed=True)
    trainer.fit(fr.data.BatchLoader(X, y, batch_size=64, seed=0), epochs=5)

started as ``mpiexec -n 4 python train.py``.  ``batch_size`` is the global
batch; each rank runs its slice of every global batch, the gradients are
summed across ranks in a few large non-blocking reductions overlapping the
backward pass, and every rank applies the same update, so N ranks give the
weights of one process up to floating-point summation order.  Task models
take ``fit(..., distributed=True)`` (every rank given the full data; rank 0
builds the vocabulary and label set and sends them) or ``fit(X_part, y_part,
distributed="sharded")`` (every rank given only its part; the vocabulary and
labels come from all parts, see :mod:`fastrnn.distributed.shared` and
:func:`shard_rows`); the CLI ``fastrnn train ... --distributed``.

Prediction (``pip install "fastrnn[dask]"``): :func:`dask_predict` runs a
fitted model's ``predict`` over the partitions of a Dask bag, array or
dataframe column, the model sent to the workers once in the safe npz+JSON
format.
"""

from .context import Context, DistributedError, init
from .dask import dask_predict
from .shared import shard_rows

__all__ = ["init", "Context", "DistributedError", "dask_predict", "shard_rows"]
