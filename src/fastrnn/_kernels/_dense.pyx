"""Dense (Linear) layer kernels: products split over fastrnn's own threads.

A Linear head on every timestep is as big a product as the recurrence itself;
running it here, on the same OpenMP threads with a single-threaded BLAS,
keeps a model on one thread pool (numpy's multithreaded BLAS would compete
with the recurrent kernels' threads for the cores).
"""

from cython cimport floating
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from fastrnn._kernels._blas cimport parallel_gemm, parallel_gemm_tn
from fastrnn._kernels._packed cimport pack_weights, parallel_packed_gemm
from fastrnn._kernels._runtime cimport blas_get_threads, blas_int_limit, blas_set_threads

# Sizes are Py_ssize_t: 2**31 rows or more are real inputs (a head on every
# timestep of a big batch).  The packed micro-kernel and BLAS count in C ints,
# so rows go to them in blocks of at most blas_int_limit(); the feature sizes
# are checked to fit an int (a weight row of 2**31 values is not a model).


# Rows per bias-gradient product (the length of its ones vector).
cdef Py_ssize_t _BIAS_ROWS = 1 << 20


cdef int _check_features(Py_ssize_t fan_in, Py_ssize_t fan_out) except -1:
    if fan_in > 2147483647 or fan_out > 2147483647:
        raise ValueError(f"Linear sizes must be below 2**31, got in_features={fan_in}, "
                         f"out_features={fan_out}")
    return 0


# linear_forward's product: chosen by size (-1), or forced (tests, benchmarks).
AUTO, PACKED, BLAS = -1, 0, 1


def linear_forward(const floating[:, ::1] x, const floating[:, ::1] weight,
                   const floating[::1] bias, floating[:, ::1] y, int num_threads,
                   int path=AUTO):
    """y (N, out) = x (N, in) @ weight (out, in)^T + bias (empty: no bias).

    Few rows (a recurrent step, a small batch) or outputs go through the
    packed micro-kernel of the recurrent product, which starts from the bias
    and beats a BLAS call there; many rows into many outputs through BLAS
    (see ``_packed_is_faster``).
    """
    cdef Py_ssize_t rows = x.shape[0], fan_in = x.shape[1], fan_out = weight.shape[0]
    cdef Py_ssize_t i
    cdef floating *packed = NULL
    cdef bint use_blas = path == BLAS or (path == AUTO and
                                          not _packed_is_faster(rows, fan_out))
    _check_features(fan_in, fan_out)
    cdef const floating *bias_row = &bias[0] if bias.shape[0] > 0 else NULL
    # BLAS adds to y; the packed product starts from the bias itself.
    cdef bint fill_y = use_blas or bias_row == NULL
    with nogil:
        for i in range(rows if fill_y else 0):
            if bias_row != NULL:
                memcpy(&y[i, 0], bias_row, fan_out * sizeof(floating))
            else:
                memset(&y[i, 0], 0, fan_out * sizeof(floating))
        if use_blas:
            _blas_forward(x, weight, y, num_threads)
        else:
            packed = pack_weights(&weight[0, 0], <int>fan_out, <int>fan_in, True)
            if packed != NULL:
                _packed_forward(x, packed, bias_row, y, num_threads)
                free(packed)
    if packed == NULL and not use_blas:
        raise MemoryError("fastrnn: no memory to pack the weight")


cdef bint _packed_is_faster(Py_ssize_t rows, Py_ssize_t fan_out) noexcept nogil:
    """Whether the packed micro-kernel beats BLAS for this forward product.
    Measured on Zen 4 (AVX-512, OpenBLAS 0.3.30 SkylakeX kernels, bias
    included), time BLAS / packed at 1 and 2 threads: 1.06-1.24 for 70-128
    outputs at 1,000-6,400 rows (it adds the bias in its product, BLAS after
    a copy of it into every row; 101 outputs is 3.5 panels of 32, the last
    one half-width), 1.03-1.18 at 130-512 rows on 1 thread; on 2 threads at
    256-512 rows and 256-512 inputs BLAS is ahead, 0.88-0.96 (the weights
    are packed once before the rows split, BLAS packs in every thread);
    0.97-1.10 at 200-1,000 outputs, 0.94-0.95 at 10,000; at 128 rows or
    fewer packed wins (Zen 3: the same)."""
    return rows <= 128 or fan_out <= 128


cdef void _packed_forward(const floating[:, ::1] x, const floating *packed,
                          const floating *bias, floating[:, ::1] y,
                          int num_threads) noexcept nogil:
    """y = bias + x @ packed (bias NULL: y += x @ packed), the rows in blocks
    an int can count."""
    cdef Py_ssize_t rows = x.shape[0], fan_in = x.shape[1], fan_out = y.shape[1]
    cdef Py_ssize_t r0 = 0, block
    while r0 < rows:
        block = min(rows - r0, blas_int_limit())
        parallel_packed_gemm(<int>block, <int>fan_out, <int>fan_in, &x[r0, 0],
                             <int>fan_in, packed, bias, &y[r0, 0], <int>fan_out, num_threads)
        r0 += block


cdef void _blas_forward(const floating[:, ::1] x, const floating[:, ::1] weight,
                        floating[:, ::1] y, int num_threads) noexcept nogil:
    """y += x @ weight^T by single-threaded BLAS calls over row blocks on
    fastrnn's threads (parallel_gemm splits the sizes BLAS cannot take)."""
    cdef Py_ssize_t rows = x.shape[0], fan_in = x.shape[1], fan_out = y.shape[1]
    cdef int prev_threads = blas_get_threads()
    blas_set_threads(1)
    parallel_gemm(False, True, rows, fan_out, fan_in, &x[0, 0], fan_in, &weight[0, 0],
                  fan_in, 1, &y[0, 0], fan_out, num_threads)
    if prev_threads > 1:
        blas_set_threads(prev_threads)


def linear_backward(const floating[:, ::1] x, const floating[:, ::1] weight,
                    const floating[:, ::1] d_y, floating[:, ::1] d_x, floating[:, ::1] d_weight,
                    floating[::1] d_bias, int num_threads):
    """d_weight += d_y^T x; d_bias += column sums of d_y (if not empty);
    d_x = d_y @ weight (if not empty)."""
    cdef Py_ssize_t rows = x.shape[0], fan_in = x.shape[1], fan_out = weight.shape[0]
    cdef Py_ssize_t i, r0, block
    cdef int prev_threads
    cdef floating *ones = NULL
    _check_features(fan_in, fan_out)
    with nogil:
        prev_threads = blas_get_threads()
        blas_set_threads(1)
        parallel_gemm_tn(fan_out, fan_in, rows, &d_y[0, 0], fan_out, &x[0, 0], fan_in,
                         &d_weight[0, 0], fan_in, num_threads)
        if d_x.shape[0] > 0:
            parallel_gemm(False, False, rows, fan_in, fan_out, &d_y[0, 0], fan_out,
                          &weight[0, 0], fan_in, 0, &d_x[0, 0], fan_in, num_threads)
        if d_bias.shape[0] > 0:
            # Column sums as d_y^T @ ones, over blocks of rows so the ones
            # vector stays small (not 8 GB for 2**31 rows).
            block = min(rows, _BIAS_ROWS)
            ones = <floating *>malloc(block * sizeof(floating))
            if ones != NULL:
                for i in range(block):
                    ones[i] = 1
                r0 = 0
                while r0 < rows:
                    block = min(rows - r0, _BIAS_ROWS)
                    parallel_gemm_tn(fan_out, 1, block, &d_y[r0, 0], fan_out, ones, 1,
                                     &d_bias[0], 1, num_threads)
                    r0 += block
                free(ones)
        if prev_threads > 1:
            blas_set_threads(prev_threads)
    if d_bias.shape[0] > 0 and ones == NULL:
        raise MemoryError("fastrnn: no memory for the bias gradient")
