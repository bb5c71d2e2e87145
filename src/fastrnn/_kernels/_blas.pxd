# Row-major GEMM over scipy's Fortran BLAS, for float32 and float64.
from cython cimport floating
from cython.parallel cimport prange
from scipy.linalg.cython_blas cimport sgemm, dgemm

from fastrnn._kernels._runtime cimport parallel_min_work

cdef inline void gemm(bint trans_a, bint trans_b, int m, int n, int k,
                      floating alpha, const floating *a, int lda,
                      const floating *b, int ldb, floating beta,
                      floating *c, int ldc) noexcept nogil:
    """C (m x n) = alpha op(A) op(B) + beta C, all row-major.

    Row-major C is column-major C^T = op(B)^T op(A)^T, so the operands swap.
    """
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if m <= 0 or n <= 0:
        return
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float *>b, &ldb, <float *>a, &lda,
              &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double *>b, &ldb, <double *>a, &lda,
              &beta, c, &ldc)


cdef inline void parallel_gemm(bint trans_a, bint trans_b, int m, int n, int k,
                               const floating *a, int lda, const floating *b,
                               int ldb, floating beta, floating *c, int ldc,
                               int num_threads) noexcept nogil:
    """C (m x n) = op(A) op(B) + beta C with the rows of C split over threads.

    All fastrnn parallelism is its own OpenMP and the BLAS stays
    single-threaded, so no BLAS worker threads spin against ours.
    """
    cdef int blocks = num_threads if <double>m * n * k >= parallel_min_work() else 1
    cdef int blk, r0, r1
    if blocks <= 1:
        gemm(trans_a, trans_b, m, n, k, <floating>1, a, lda, b, ldb, beta, c, ldc)
        return
    for blk in prange(blocks, num_threads=blocks, schedule="static", chunksize=1):
        r0 = <int>(<long>blk * m // blocks)
        r1 = <int>(<long>(blk + 1) * m // blocks)
        gemm(trans_a, trans_b, r1 - r0, n, k, <floating>1,
             a + (r0 if trans_a else <size_t>r0 * lda), lda, b, ldb, beta,
             c + <size_t>r0 * ldc, ldc)
