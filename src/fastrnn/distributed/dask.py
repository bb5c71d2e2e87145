"""Batch prediction over the partitions of a Dask collection.

The model goes to the cluster once, as the bytes of its saved file (the
npz+JSON format: no pickled code), as one graph key every partition task
depends on; each worker loads it once per worker thread (the layers keep
scratch buffers, so threads do not share a model) and keeps it while the
same bytes come back.  On a ``dask.distributed`` worker the kernels run on
``threads`` OpenMP threads (default 1): with one task per Dask worker thread
the cores are not oversubscribed.  Local schedulers run the tasks in the
calling process, whose thread setting is left alone.
"""

import hashlib
import threading

import numpy as np

from .._validation import Integer

__all__ = ["dask_predict"]

_METHODS = ("predict", "predict_proba", "score_samples", "transform", "decision_function")
_models = {}            # (digest, thread id) -> model, on each worker
_models_lock = threading.Lock()


def _worker_model(blob, digest):
    key = (digest, threading.get_ident())
    with _models_lock:
        model = _models.get(key)
    if model is None:
        from ..tasks import from_bytes      # on the worker: the safe model format
        model = from_bytes(blob)
        with _models_lock:
            stale = [k for k in _models if k[0] != digest]
            for k in stale:
                del _models[k]
            _models[key] = model
    return model


def _on_dask_worker():
    try:
        from distributed import get_worker
        get_worker()
    except (ImportError, ValueError):
        return False
    return True


def _run(blob, digest, method, threads, items, options):
    from .. import _threads
    if _on_dask_worker():       # a worker process is ours to configure; a local
        _threads.set_num_threads(threads)   # scheduler runs in the user's process
    model = _worker_model(blob, digest)
    if len(items) == 0:
        return None
    return getattr(model, method)(items, **options)


def _check(model, method, threads):
    if not callable(getattr(model, "to_bytes", None)):
        raise TypeError(f"model must be a fitted fastrnn task model (with to_bytes()), "
                        f"got {type(model).__name__}")
    if not isinstance(method, str) or method not in _METHODS:
        raise ValueError(f"method must be one of {', '.join(_METHODS)}, got {method!r}")
    if not callable(getattr(model, method, None)):
        raise TypeError(f"{type(model).__name__} has no {method}() method")
    Integer(low=1)("threads", threads)


def dask_predict(model, data, method="predict", threads=1, **options):
    """``model.<method>`` over every partition of ``data``, lazily.

    Args:
        model: a fitted fastrnn task model.
        data: a ``dask.bag.Bag`` (each item one input sequence), a
            ``dask.array.Array`` of numeric sequences ``(N, T[, F])`` (split
            along the first axis only), or a ``dask.dataframe.Series`` of
            inputs (texts, token lists).
        method: "predict", "predict_proba", or another per-row method of
            the model.
        threads: kernel threads per task (1: one per Dask worker thread).
        **options: passed to the method (e.g. ``batch_size=256``).

    Returns a lazy collection of the results in data order: a Bag for a
    Bag, an Array for an Array (rows along the first axis), a Series for a
    Series (1-D results only; same index).  ``.compute()`` equals
    ``model.<method>(all data)``.
    """
    _check(model, method, threads)
    try:
        import dask
        import dask.array as da
        import dask.bag as db
    except ImportError as exc:
        raise ImportError(f"dask_predict needs dask: pip install \"fastrnn[dask]\" "
                          f"({exc})") from None
    blob = model.to_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    shared = dask.delayed(blob, pure=True)          # one key: sent once per worker
    args = (shared, digest, method, threads)
    if isinstance(data, db.Bag):
        return data.map_partitions(_bag_partition, *args, options)
    if isinstance(data, da.Array):
        return _array(model, data, args, options, da, dask)
    series = _series_type()
    if series is not None and isinstance(data, series):
        return _series(model, data, args, options)
    raise TypeError(f"data must be a dask Bag, Array or dataframe Series, "
                    f"got {type(data).__name__}")


def _bag_partition(items, blob, digest, method, threads, options):
    items = list(items)
    result = _run(blob, digest, method, threads, items, options)
    return [] if result is None else list(result)


def _array(model, data, args, options, da, dask):
    if data.ndim < 2:
        raise ValueError(f"a dask array of sequences must have shape (N, T) or (N, T, F), "
                         f"got {data.ndim} dimension(s)")
    data = data.rechunk({axis: -1 for axis in range(1, data.ndim)})
    # One row predicted here gives the result's trailing shape and dtype.
    probe = np.asarray(getattr(model, args[2])(np.asarray(data[:1].compute()), **options))
    blocks = []
    for block, rows in zip(data.to_delayed().ravel(), data.chunks[0]):
        if rows == 0:
            continue
        result = dask.delayed(_run, pure=True)(*args, block, options)
        blocks.append(da.from_delayed(result, shape=(rows,) + probe.shape[1:],
                                      dtype=probe.dtype))
    return da.concatenate(blocks, axis=0)


def _series_type():
    try:
        import dask.dataframe as dd
    except ImportError:
        return None
    return dd.Series


def _series(model, data, args, options):
    import pandas as pd

    head = data.head(1, npartitions=-1)
    probe = np.asarray(getattr(model, args[2])(list(head), **options))
    if probe.ndim != 1:
        raise ValueError(f"{args[2]} gives {probe.ndim}-D results per row; a dask Series "
                         f"can hold 1-D results only: use data.to_bag() instead")

    def partition(part, blob, digest, method, threads):
        result = _run(blob, digest, method, threads, list(part), options)
        values = [] if result is None else result
        return pd.Series(values, index=part.index, name=method, dtype=probe.dtype)

    meta = pd.Series([], dtype=probe.dtype, name=args[2])
    return data.map_partitions(partition, *args, meta=meta)
