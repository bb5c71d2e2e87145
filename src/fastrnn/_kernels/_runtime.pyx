"""Build facts, the CPU probe, BLAS thread control, the thread-split rule
and the ``all_finite`` check for the kernels.

The kernels call scipy's BLAS (``scipy.linalg.cython_blas``) from their own
OpenMP threads, so that BLAS must run single-threaded while they do.
``fastrnn._threads`` finds scipy's BLAS with threadpoolctl and hands its
``set/get_num_threads`` entry points here, so the kernels can switch it
without the GIL and without a Python call.
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memcpy

cdef extern from "fr_math.h" nogil:
    int fr_openmp_enabled()
    int fr_all_finite_f(const float *x, long n)
    int fr_all_finite_d(const double *x, long n)

cdef extern from "fr_cpu.h" nogil:
    int fr_cpu_has_x86_64_v3()
    int fr_cpu_has_x86_64_v4()

ctypedef void (*set_threads_fn)(int) noexcept nogil
ctypedef int (*get_threads_fn)() noexcept nogil

cdef set_threads_fn _set_threads = NULL
cdef get_threads_fn _get_threads = NULL


def bind_blas_threads(size_t set_address, size_t get_address):
    """Use the C functions at these addresses to set/get BLAS threads (0 = none)."""
    global _set_threads, _get_threads
    _set_threads = <set_threads_fn>set_address
    _get_threads = <get_threads_fn>get_address


cdef void blas_set_threads(int n) noexcept nogil:
    if _set_threads != NULL:
        _set_threads(n)


cdef int blas_get_threads() noexcept nogil:
    if _get_threads != NULL:
        return _get_threads()
    return 0


# The start-up cost of a parallel region, in multiply-adds: waking and
# joining each extra thread costs about a microsecond on a quiet machine and
# far more on a loaded one (a thread that has gone to sleep, a core another
# process holds).  ``split_threads`` charges it per extra thread.
cdef double _parallel_min_work = 1 << 19


cdef double parallel_min_work() noexcept nogil:
    return _parallel_min_work


def get_parallel_min_work():
    return _parallel_min_work


# The thread-split rule, the one place every kernel (and, through
# ``threads_for``, Python) decides how many threads share a piece of work.
cdef int split_threads(double work, int num_threads) noexcept nogil:
    """Threads to split ``work`` multiply-adds over (at most ``num_threads``
    and MAX_SPLIT; 1 = serial).  n threads cost about work / n plus the
    start-up cost S (``parallel_min_work``) for each of the n - 1 extra
    threads, so the n-th thread is added only while it saves more than it
    costs: work / n - work / (n - 1) + S < 0, i.e. work >= S * n * (n - 1).
    Two threads need work >= 2 S: small work never pays for a region, and
    the choice is never expected to be slower than one thread.  Elementwise
    kernels weigh an element as some multiply-adds (their cost)."""
    cdef int n = 1
    cdef int cap = num_threads if num_threads < MAX_SPLIT else MAX_SPLIT
    while n < cap and work >= _parallel_min_work * (n + 1) * n:
        n += 1
    return n


cdef Py_ssize_t chunk_start(Py_ssize_t n, int chunks, int c,
                            Py_ssize_t align) noexcept nogil:
    """Where chunk ``c`` of ``chunks`` starts in [0, n) (c == chunks: n).
    Chunk c is [chunk_start(c), chunk_start(c + 1)): contiguous, its size
    rounded up to a multiple of ``align`` (so the last chunks may be short
    or empty).  Depends only on (n, chunks, c, align): a result summed per
    chunk depends only on the chunk count."""
    cdef Py_ssize_t size = (n + chunks - 1) // chunks
    size = ((size + align - 1) // align) * align
    return min(n, c * size)


def threads_for(double work, int num_threads):
    """``split_threads`` for Python callers: how many of ``num_threads``
    threads a job of ``work`` multiply-adds gets (1 = run serially)."""
    return split_threads(work, num_threads)


def set_parallel_min_work(double work):
    """Tests set 0 to exercise the parallel paths on small problems."""
    global _parallel_min_work
    _parallel_min_work = work


def cpu_levels():
    """The kernel levels this CPU can run, lowest first (fr_cpu.h): always
    "baseline", then "avx2" (x86-64-v3) and "avx512" (x86-64-v4)."""
    levels = ["baseline"]
    if fr_cpu_has_x86_64_v3():
        levels.append("avx2")
    if fr_cpu_has_x86_64_v4():
        levels.append("avx512")
    return tuple(levels)


def openmp_enabled():
    """True when the kernels were compiled with OpenMP."""
    return bool(fr_openmp_enabled())


cdef inline bint _finite(const floating *x, long n) noexcept nogil:
    if floating is float:
        return fr_all_finite_f(x, n)
    else:
        return fr_all_finite_d(x, n)


cdef inline int pass_chunks(Py_ssize_t n, int num_threads) noexcept nogil:
    """Threads for one memory pass over n values (the finiteness scan, the
    copy): each value weighs 2 multiply-adds (the scan's multiply and add).
    Chunk edges fall on 16 values (``chunk_start``)."""
    return split_threads(2.0 * n, num_threads)


def all_finite(const floating[::1] values, int num_threads):
    """True when no value is NaN or infinite: one pass, split over threads
    for large arrays (a validation of every batch must not cost a step)."""
    cdef Py_ssize_t n = values.shape[0], lo, hi
    cdef int chunks, c, bad = 0
    if n == 0:
        return True
    chunks = pass_chunks(n, num_threads)
    with nogil:
        if chunks == 1:
            bad = not _finite(&values[0], n)
        else:
            for c in prange(chunks, num_threads=chunks, schedule="static", chunksize=1):
                lo = chunk_start(n, chunks, c, 16)
                hi = chunk_start(n, chunks, c + 1, 16)
                if lo < hi:
                    bad += not _finite(&values[lo], hi - lo)
    return bad == 0


def copy_values(const floating[::1] source, floating[::1] target, int num_threads):
    """target[:] = source (same length), split over threads for large arrays
    as the finiteness scan is: a training input's private copy (see
    _validation.private_input) was a serial pass, 7% of an RNN(256) forward
    at (100, 64) on 2 threads."""
    cdef Py_ssize_t n = source.shape[0], lo, hi
    cdef int chunks, c
    if target.shape[0] != n:
        raise ValueError(f"copy_values: source has {n} values, target {target.shape[0]}")
    if n == 0:
        return
    chunks = pass_chunks(n, num_threads)
    with nogil:
        if chunks == 1:
            memcpy(&target[0], &source[0], n * sizeof(floating))
        else:
            for c in prange(chunks, num_threads=chunks, schedule="static", chunksize=1):
                lo = chunk_start(n, chunks, c, 16)
                hi = chunk_start(n, chunks, c + 1, 16)
                if lo < hi:
                    memcpy(&target[lo], &source[lo], (hi - lo) * sizeof(floating))


# Largest size one BLAS call takes: sgemm/dgemm count rows, columns and
# leading dimensions in a C int, so _blas.gemm splits larger products into
# calls of at most this size.  Only tests lower it, to run the splitting on
# arrays of normal size (2**31 rows need 8 GB or more).
cdef Py_ssize_t _blas_int_limit = 2147483647


cdef Py_ssize_t blas_int_limit() noexcept nogil:
    return _blas_int_limit


def get_blas_int_limit():
    return _blas_int_limit


def set_blas_int_limit(Py_ssize_t limit):
    """Tests only: split BLAS calls at ``limit`` (1 .. 2**31 - 1) instead of 2**31 - 1."""
    global _blas_int_limit
    if not 1 <= limit <= 2147483647:
        raise ValueError(f"limit must lie in 1..2**31-1, got {limit}")
    _blas_int_limit = limit
