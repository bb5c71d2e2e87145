"""Output arrays reused across calls, once nothing outside can reach them.

A layer's output or gradient of a few megabytes, allocated fresh on every
call, costs page faults on first touch: glibc hands big freed blocks back to
the kernel, so each new one is faulted in and zeroed page by page (about
2,800 faults per step of the char-LSTM loop in ``bench/train_loop.py``).
A :class:`Recycler` keeps the arrays it handed out and gives one back only
when no reference to it is left outside the recycler: every variable, view
(``reshape``, a read-only view), tensor (``torch.from_numpy``) or
memoryview made from an array holds a reference to it, so a caller who
keeps a previous output or gradient is given a new array, never an
overwritten one.  Reuse is therefore invisible except through ``id``s and
memory: each key keeps at most ``KEEP`` arrays of at most ``MAX_BYTES``
alive between calls.
"""

import sys
import threading

import numpy as np

KEEP = 2                    # a loop variable still holds the last output at the next call
MAX_BYTES = 64 << 20        # larger arrays are not kept (memory held between calls)


def _references(arrays, i):
    """sys.getrefcount of ``arrays[i]`` as read here."""
    return sys.getrefcount(arrays[i])


# The count of an array only the list holds, measured through the same
# function rather than assumed: what a temporary adds differs between
# interpreter versions (3.14 borrows some references), and anything that
# holds the array outside the list adds at least one more.
_IDLE = _references([np.empty(0)], 0)


class Recycler:
    """Arrays by key (one key per output of a layer); see the module doc."""

    def __init__(self):
        self._arrays = {}
        self._lock = threading.Lock()   # two threads never take the same idle array

    def empty(self, key, shape, dtype):
        """An uninitialised C-contiguous array of ``shape`` and ``dtype``:
        an idle one of the same shape kept under ``key``, else a new one
        (kept when small enough)."""
        shape, dtype = tuple(shape), np.dtype(dtype)
        with self._lock:
            arrays = self._arrays.setdefault(key, [])
            for i in range(len(arrays)):
                if _references(arrays, i) == _IDLE:
                    if arrays[i].shape == shape and arrays[i].dtype == dtype:
                        return arrays[i]
                    del arrays[i]            # idle but of another shape: let it go
                    break
            array = np.empty(shape, dtype=dtype)
            if array.nbytes <= MAX_BYTES:
                arrays.append(array)
                if len(arrays) > KEEP:
                    del arrays[0]            # still in use by its holder, who keeps it
            return array

    def clear(self):
        """Forget every kept array (their holders, if any, keep them)."""
        with self._lock:
            self._arrays.clear()

    # Pickled and copied objects start empty: kept arrays are a cache.
    def __getstate__(self):
        return {}

    def __setstate__(self, state):
        self.__init__()
