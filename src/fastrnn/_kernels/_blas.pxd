# Row-major GEMM over scipy's Fortran BLAS, for float32 and float64.
from cython cimport floating
from cython.parallel cimport prange
from libc.stdlib cimport free, malloc
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


cdef inline void parallel_gemm_tn(int m, int n, int k, const floating *a, int lda,
                                  const floating *b, int ldb, floating *c, int ldc,
                                  int num_threads) noexcept nogil:
    """C (m x n) += A^T B, A (k x m), B (k x n), for weight gradients.

    Their output is small and k (timesteps x batch rows) long, so k is split
    over the threads: each reads its own share of A and B (a split of the
    output rows would make every thread stream all of B), and the partial
    products are added to C in thread order.
    """
    cdef int blocks = num_threads if <double>m * n * k >= parallel_min_work() else 1
    cdef int blk, k0, k1, i, j
    cdef size_t tile = <size_t>m * n
    cdef floating *partial = NULL
    cdef floating *p
    if blocks > 1:
        partial = <floating *>malloc(blocks * tile * sizeof(floating))
    if partial == NULL:
        gemm(True, False, m, n, k, <floating>1, a, lda, b, ldb, <floating>1, c, ldc)
        return
    for blk in prange(blocks, num_threads=blocks, schedule="static", chunksize=1):
        k0 = <int>(<long>blk * k // blocks)
        k1 = <int>(<long>(blk + 1) * k // blocks)
        gemm(True, False, m, n, k1 - k0, <floating>1, a + <size_t>k0 * lda, lda,
             b + <size_t>k0 * ldb, ldb, <floating>0, partial + blk * tile, n)
    for blk in range(blocks):
        p = partial + blk * tile
        for i in range(m):
            for j in range(n):
                c[<size_t>i * ldc + j] += p[<size_t>i * n + j]
    free(partial)
