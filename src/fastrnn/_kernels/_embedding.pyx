"""Embedding kernels: row gather (forward) and deterministic scatter-add (backward).

Callers (``fastrnn.layers.embedding``) validate everything first: ids are
int64, C-contiguous and in ``[0, V)``, shapes agree.  Nothing is checked here.

Backward design.  Several ids may name the same row, so a parallel
scatter-add over ids would race.  Rows are owned instead: thread t handles
exactly the ids whose row hashes to t, walking all ids in their original
order.  A row is only ever written by its owner, so there are no races and
no atomics, and each gradient element receives its contributions in the
same order as the serial loop: the result is bit-identical for any thread
count.  Each thread reads whole, contiguous d_out rows and takes the cache
misses of its own rows only; the inner ``g[j] += d[j]`` vectorises.  No sort
and no scratch memory are needed: skipping a foreign id costs a compare.

Measured on this project's 2-core box for T*B=6400 ids, V=20000, D=128 and
512 float32, uniform and Zipf ids (one thread timing each of 2 threads'
shares, since the shared cores were too busy for clean parallel timings):
the larger share of rows cost 57-75% of the whole serial scatter, a share
of columns (the other race-free split: every thread walks all ids for its
block of D) 64-84%, because with columns every thread still misses on every
gradient row and pays the per-id overhead for fewer columns.  Sorting the ids to give
threads distinct rows costs an argsort of the 6400 ids, ~250 us, as much as
the whole scatter at D=128.  The cost of row ownership is balance: a very
frequent token weighs on one thread; the hash spreads ids so that no id
pattern (all even ids, say) maps to one thread.
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcpy

from fastrnn._kernels._runtime cimport split_threads

# A gathered element weighs this many multiply-adds in the thread rule
# (``split_threads``).  Measured on a 2-core Zen 4, both threads awake, two
# threads against one: 1.15x at 800 x 64 elements, 1.44x at 1,600 x 64,
# 1.6-1.8x at 200,000-1,600,000; at 1 (a multiply-add each) the gather
# stayed serial below 1,048,576 elements.  With 16 two threads start at
# 65,536.  (The scatter-add keeps 1: each of its threads walks every id,
# and two were slower than one below about 800,000 elements.)
cdef double GATHER_WORK_PER_ELEMENT = 16.0


def gather(const int64_t[::1] ids, const floating[:, ::1] weight, floating[:, ::1] out,
           int num_threads):
    """out[i, :] = weight[ids[i], :] for every i (rows split over threads)."""
    cdef Py_ssize_t n = ids.shape[0], i
    cdef Py_ssize_t dim = weight.shape[1]
    cdef size_t row_bytes = dim * sizeof(floating)
    cdef int threads = split_threads(n * dim * GATHER_WORK_PER_ELEMENT, num_threads)
    if n == 0:
        return
    with nogil:
        if threads > 1:
            for i in prange(n, num_threads=threads, schedule="static"):
                memcpy(&out[i, 0], &weight[ids[i], 0], row_bytes)
        else:
            for i in range(n):
                memcpy(&out[i, 0], &weight[ids[i], 0], row_bytes)


cdef inline int _owner(int64_t row, int threads) noexcept nogil:
    """The thread that owns gradient row ``row`` (Fibonacci hashing)."""
    return <int>(((<uint64_t>row * <uint64_t>0x9E3779B97F4A7C15ULL) >> 32) % <uint64_t>threads)


cdef void _scatter_rows(const int64_t *ids, Py_ssize_t n, const floating *d_out,
                        floating *grad, Py_ssize_t dim, int64_t padding_idx,
                        int thread, int threads) noexcept nogil:
    """grad[ids[i]] += d_out[i] in order of i, for the rows ``thread`` owns."""
    cdef Py_ssize_t i, j
    cdef int64_t row
    cdef floating *g
    cdef const floating *d
    for i in range(n):
        row = ids[i]
        if row == padding_idx or (threads > 1 and _owner(row, threads) != thread):
            continue
        g = grad + row * dim
        d = d_out + i * dim
        for j in range(dim):
            g[j] += d[j]


def scatter_add(const int64_t[::1] ids, const floating[:, ::1] d_out,
                floating[:, ::1] grad, int64_t padding_idx, int num_threads):
    """grad[ids[i], :] += d_out[i, :]; rows equal to padding_idx (-1: none) are skipped.

    Rows are owned by threads (see the module docstring): race-free and
    bit-identical for any thread count.
    """
    cdef Py_ssize_t n = ids.shape[0], dim = grad.shape[1]
    cdef int threads = split_threads(<double>n * dim, num_threads), t
    if n == 0:
        return
    with nogil:
        if threads == 1:
            _scatter_rows(&ids[0], n, &d_out[0, 0], &grad[0, 0], dim, padding_idx, 0, 1)
        else:
            for t in prange(threads, num_threads=threads, schedule="static", chunksize=1):
                _scatter_rows(&ids[0], n, &d_out[0, 0], &grad[0, 0], dim, padding_idx,
                              t, threads)
