"""Process-wide settings for fastrnn's speed, none of which outlives its purpose.

Both exist because a training step is a few large kernel calls: what sits
between them (idle OpenMP threads, the allocator) shows up in every step.

* The OpenMP spin limit is handed to libgomp as it loads (it reads its
  environment once, then); the variable is removed from ``os.environ``
  right after, so subprocesses do not inherit a setting they did not ask for.
* The allocator tuning changes glibc for the whole process and cannot be
  undone, so a library import does not do it: ``FASTRNN_MALLOC_TUNING=1``
  asks for it at import, and the ``fastrnn`` command (a process of its own)
  turns it on.
"""

import contextlib
import ctypes
import ctypes.util
import os
import sys

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MALLOC_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")

# Arrays up to this size come from the heap and are reused, not mmapped per call.
MMAP_THRESHOLD = 32 << 20      # glibc's largest allowed value on 64-bit
# Free memory kept at the top of the heap before it goes back to the system.
TRIM_THRESHOLD = 128 << 20

# Rounds an idle OpenMP thread spins before it sleeps (see limited_openmp_spinning).
SPIN_COUNT = "1000"

malloc_tuned = False
openmp_spin_limited = False


def _libgomp_loaded():
    """Whether GNU OpenMP is mapped in this process (None: cannot tell)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            return "libgomp" in maps.read()
    except OSError:
        return None


@contextlib.contextmanager
def limited_openmp_spinning():
    """Idle OpenMP threads spin before they sleep: GNU OpenMP's default is
    300,000 rounds of a pause instruction, about 20 ms on Skylake-X, during
    which they hold cores another thread pool (numpy's BLAS, a data loader)
    needs.  Measured: an RNN step followed by a numpy matmul took 9.3 ms
    with 2 threads instead of 0.4 ms.  Unless the user chose a wait policy,
    load the kernels (and with them libgomp) inside this block: libgomp
    reads ``GOMP_SPINCOUNT=1000`` at its initialisation, enough to bridge the
    regions of one kernel call, and the variable leaves ``os.environ`` when
    the block ends.  Acts only if fastrnn is the first to load libgomp in
    the process (``openmp_spin_limited`` says whether it did)."""
    global openmp_spin_limited
    chosen = "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ
    if chosen or _libgomp_loaded():
        yield
        return
    os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT
    try:
        yield
    finally:
        del os.environ["GOMP_SPINCOUNT"]
    openmp_spin_limited = bool(_libgomp_loaded())


def keep_freed_arrays_mapped():
    """Every step allocates activations and gradients of the same few sizes
    (3-7 MB at T=100, B=64, H=128-256).  glibc serves arrays that large with
    a fresh mmap and unmaps them when freed, so every step touches them anew:
    about 1,600 page faults per RNN step, 2.3 ms of a 17 ms step measured at
    (100, 64, 128).  Serving them from the heap and keeping up to 128 MB of
    freed memory mapped removes the faults.  The change is for the whole
    process and permanent, so only applications call this (the ``fastrnn``
    command, the benchmarks) or the user asks with FASTRNN_MALLOC_TUNING=1
    (see ``tune_malloc_if_asked``).  Skipped when the user set any MALLOC_*
    tuning variable or FASTRNN_MALLOC_TUNING=0, or off glibc."""
    global malloc_tuned
    if os.environ.get("FASTRNN_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return
    if any(name in os.environ for name in _MALLOC_VARIABLES):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return                                  # not glibc (musl, ...)
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    malloc_tuned = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                        and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def tune_malloc_if_asked():
    """At import: the allocator tuning only when FASTRNN_MALLOC_TUNING=1."""
    if os.environ.get("FASTRNN_MALLOC_TUNING") == "1":
        keep_freed_arrays_mapped()
