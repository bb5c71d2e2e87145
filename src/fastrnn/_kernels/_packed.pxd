# The packed-weight micro-kernel (fr_gemm.h) for float32 and float64.
from cython cimport floating
from cython.parallel cimport prange
from libc.stdlib cimport calloc, free, malloc

from fastrnn._kernels._runtime cimport blas_int_limit, chunk_start, split_threads

cdef extern from "fr_gemm.h" nogil:
    size_t fr_packed_size_f(int k, int n)
    size_t fr_packed_size_d(int k, int n)
    void fr_pack_f(int k, int n, const float *src, size_t s_p, size_t s_j, float *packed)
    void fr_pack_d(int k, int n, const double *src, size_t s_p, size_t s_j, double *packed)
    void fr_packed_gemm_f(int m, int n, int k, const float *A, int lda,
                          const float *packed, const float *bias, float *C, int ldc)
    void fr_packed_gemm_d(int m, int n, int k, const double *A, int lda,
                          const double *packed, const double *bias, double *C, int ldc)
    size_t fr_gemm_tn_work_f(int m, int n)
    size_t fr_gemm_tn_work_d(int m, int n)
    void fr_gemm_tn_f(int m, int n, long long k, const float *A, int lda, const float *B,
                      int ldb, float *C, int ldc, float *work)
    void fr_gemm_tn_d(int m, int n, long long k, const double *A, int lda, const double *B,
                      int ldb, double *C, int ldc, double *work)
    void fr_gemm_tn_pair_f(int m, long long k, const float *A, int lda, int n1,
                           const float *B1, int ldb1, float *C1, int ldc1, int n2,
                           const float *B2, int ldb2, float *C2, int ldc2, float *work)
    void fr_gemm_tn_pair_d(int m, long long k, const double *A, int lda, int n1,
                           const double *B1, int ldb1, double *C1, int ldc1, int n2,
                           const double *B2, int ldb2, double *C2, int ldc2, double *work)
    enum:
        FR_NR_f
        FR_NR_d


cdef inline void packed_gemm(int m, int n, int k, const floating *a, int lda,
                             const floating *packed, floating *c,
                             int ldc) noexcept nogil:
    """C (m x n) += A (m x k) @ B, B packed by ``pack_weights`` (fr_gemm.h)."""
    packed_gemm_bias(m, n, k, a, lda, packed, NULL, c, ldc)


cdef inline void packed_gemm_bias(int m, int n, int k, const floating *a, int lda,
                                  const floating *packed, const floating *bias,
                                  floating *c, int ldc) noexcept nogil:
    """C (m x n) = bias + A (m x k) @ B: the sums of copying the bias row (n
    values) into C and calling ``packed_gemm``, without the copy (a NULL
    ``bias`` is ``packed_gemm``)."""
    if floating is float:
        fr_packed_gemm_f(m, n, k, a, lda, packed, bias, c, ldc)
    else:
        fr_packed_gemm_d(m, n, k, a, lda, packed, bias, c, ldc)


cdef inline size_t packed_size(int rows, int cols, bint transpose,
                               bint is_float) noexcept nogil:
    """Elements ``pack_weights_into`` writes for a (rows x cols) matrix."""
    cdef int k = cols if transpose else rows
    cdef int n = rows if transpose else cols
    return fr_packed_size_f(k, n) if is_float else fr_packed_size_d(k, n)


cdef inline void pack_weights_into(const floating *w, int rows, int cols,
                                   bint transpose, floating *packed) noexcept nogil:
    """A weight matrix (rows x cols, row-major), or its transpose, packed as
    the B operand of ``packed_gemm`` into ``packed`` (``packed_size`` elements)."""
    cdef int k = cols if transpose else rows
    cdef int n = rows if transpose else cols
    cdef size_t s_p = 1 if transpose else cols
    cdef size_t s_j = cols if transpose else 1
    if floating is float:
        fr_pack_f(k, n, w, s_p, s_j, packed)
    else:
        fr_pack_d(k, n, w, s_p, s_j, packed)


cdef inline floating *pack_weights(const floating *w, int rows, int cols,
                                   bint transpose) noexcept nogil:
    """``pack_weights_into`` a new buffer.  Returns NULL when out of memory;
    the caller frees."""
    cdef floating *packed = <floating *>malloc(
        packed_size(rows, cols, transpose, floating is float) * sizeof(floating))
    if packed != NULL:
        pack_weights_into(w, rows, cols, transpose, packed)
    return packed


cdef inline void parallel_packed_gemm(int m, int n, int k, const floating *a,
                                      int lda, const floating *packed,
                                      const floating *bias, floating *c, int ldc,
                                      int num_threads) noexcept nogil:
    """C (m x n) += A (m x k) @ B (packed), or with a ``bias`` row (NULL:
    none) C = bias + A @ B (``packed_gemm_bias``); the rows of C split over
    threads."""
    cdef int blocks = split_threads(<double>m * n * k, num_threads)
    cdef int blk, r0, r1
    if blocks <= 1:
        packed_gemm_bias(m, n, k, a, lda, packed, bias, c, ldc)
        return
    for blk in prange(blocks, num_threads=blocks, schedule="static", chunksize=1):
        r0 = <int>chunk_start(m, blocks, blk, 1)
        r1 = <int>chunk_start(m, blocks, blk + 1, 1)
        packed_gemm_bias(r1 - r0, n, k, a + <size_t>r0 * lda, lda, packed, bias,
                         c + <size_t>r0 * ldc, ldc)


cdef inline bint parallel_gemm_packing_b(Py_ssize_t m, int n, int k, const floating *a, int lda,
                                         const floating *b, bint accumulate,
                                         floating *c, int ldc,
                                         int num_threads) noexcept nogil:
    """C (m x n) = A (m x k) @ B, or C += with ``accumulate``, B a row-major
    (k x n) block packed here first: ``parallel_packed_gemm`` for a one-off
    product over many rows (the input gradient d_x = dG W_ih).  Without
    ``accumulate`` the product starts from a zero bias row, so C is never
    read (BLAS zeroes it first: 0.8% of an RNN(256) training step).  Returns
    False, having done nothing, when m exceeds a C int or without memory."""
    cdef floating *packed
    cdef floating *zeros = NULL
    if m > blas_int_limit():
        return False
    packed = pack_weights(b, k, n, False)
    if packed == NULL:
        return False
    if not accumulate:
        zeros = <floating *>calloc(n, sizeof(floating))
        if zeros == NULL:
            free(packed)
            return False
    parallel_packed_gemm(<int>m, n, k, a, lda, packed, zeros, c, ldc, num_threads)
    free(zeros)
    free(packed)
    return True


cdef inline bint packed_gemm_tn(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                                const floating *a, Py_ssize_t lda, const floating *b,
                                Py_ssize_t ldb, floating *c, Py_ssize_t ldc) noexcept nogil:
    """C (m x n) += A^T B, A (k x m), B (k x n): ``packed_gemm_tn_pair`` with
    one product."""
    return packed_gemm_tn_pair(m, k, a, lda, n, b, ldb, c, ldc, 0, NULL, 1, NULL, 1)


# Largest C (m x n values) fr_gemm_tn takes: past it OpenBLAS is faster.
# Measured on Zen 3 (1 thread, scipy's OpenBLAS 0.3.30 Haswell sgemm, k =
# 3168-6400), time ours / OpenBLAS: 0.76 at 64 x 64, 0.85 at 128 x 128, 0.92
# at 256 x 256, 0.97 at 512 x 512, 1.00 at 1024 x 256 and 2048 x 256, 1.04 at
# 1024 x 512 and 2048 x 512, 1.05 at 512 x 1024, 1.17-1.22 at 1024 x 1024 and
# 4096 x 1024: a B block of FR_KC_TN x 512 fills the 512 KB L2 by itself.
cdef enum:
    TN_MAX_VALUES = 1 << 18


cdef inline bint _tn_fits(int panel, Py_ssize_t m, Py_ssize_t n, Py_ssize_t lda,
                          Py_ssize_t ldb, Py_ssize_t ldc) noexcept nogil:
    """Whether fr_gemm_tn is the faster product for C (m x n) += A^T B: C at
    least one panel (``panel`` = NR columns) wide (narrower, the panel is
    mostly padding and OpenBLAS wins: 0.15-0.9x for n < 16), at most
    TN_MAX_VALUES values, and every size but k within a C int."""
    cdef Py_ssize_t limit = blas_int_limit()
    return (n >= panel and m * n <= TN_MAX_VALUES and m <= limit and n <= limit
            and lda <= limit and ldb <= limit and ldc <= limit)


cdef inline bint packed_gemm_tn_pair(Py_ssize_t m, Py_ssize_t k, const floating *a,
                                     Py_ssize_t lda, Py_ssize_t n1, const floating *b1,
                                     Py_ssize_t ldb1, floating *c1, Py_ssize_t ldc1,
                                     Py_ssize_t n2, const floating *b2, Py_ssize_t ldb2,
                                     floating *c2, Py_ssize_t ldc2) noexcept nogil:
    """C1 (m x n1) += A^T B1 and C2 (m x n2) += A^T B2 (n2 = 0: C1 only), A
    (k x m), by fr_gemm_tn_pair (one block of A packed once for both) or
    fr_gemm_tn, when it is the faster product for each (``_tn_fits``).
    Returns False, having done nothing, otherwise or without memory for its
    work buffer: the caller then uses BLAS."""
    cdef size_t work_size
    cdef floating *work
    cdef int panel = FR_NR_d
    if floating is float:
        panel = FR_NR_f
    if not _tn_fits(panel, m, n1, lda, ldb1, ldc1) or (
            n2 > 0 and not _tn_fits(panel, m, n2, lda, ldb2, ldc2)):
        return False
    if m == 0 or k == 0:
        return True
    if floating is float:
        work_size = fr_gemm_tn_work_f(<int>m, <int>max(n1, n2))
    else:
        work_size = fr_gemm_tn_work_d(<int>m, <int>max(n1, n2))
    work = <floating *>malloc(work_size * sizeof(floating))
    if work == NULL:
        return False
    if floating is float:
        if n2 == 0:
            fr_gemm_tn_f(<int>m, <int>n1, k, a, <int>lda, b1, <int>ldb1, c1, <int>ldc1, work)
        else:
            fr_gemm_tn_pair_f(<int>m, k, a, <int>lda, <int>n1, b1, <int>ldb1, c1, <int>ldc1,
                              <int>n2, b2, <int>ldb2, c2, <int>ldc2, work)
    else:
        if n2 == 0:
            fr_gemm_tn_d(<int>m, <int>n1, k, a, <int>lda, b1, <int>ldb1, c1, <int>ldc1, work)
        else:
            fr_gemm_tn_pair_d(<int>m, k, a, <int>lda, <int>n1, b1, <int>ldb1, c1, <int>ldc1,
                              <int>n2, b2, <int>ldb2, c2, <int>ldc2, work)
    free(work)
    return True
