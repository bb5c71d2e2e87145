# Row-major GEMM over scipy's Fortran BLAS, for float32 and float64.
#
# Sizes are 64-bit (Py_ssize_t) everywhere; BLAS takes C ints, so a product
# with a dimension beyond blas_int_limit() (2**31 - 1) is split into calls of
# at most that size.  A leading dimension that large (one row of 2**31 values)
# cannot be described to BLAS at all and is computed by plain loops.
# The weight gradients' A^T B (parallel_gemm_tn) go through fr_gemm.h's packed
# product instead where that is faster (_packed.pxd's packed_gemm_tn).
from cython cimport floating
from cython.parallel cimport prange
from libc.stdlib cimport calloc, free
from scipy.linalg.cython_blas cimport sgemm, dgemm

from fastrnn._kernels._packed cimport packed_gemm_tn, packed_gemm_tn_pair
from fastrnn._kernels._runtime cimport blas_int_limit, chunk_start, split_threads


cdef inline void _blas_call(bint trans_a, bint trans_b, int m, int n, int k,
                            floating alpha, const floating *a, int lda,
                            const floating *b, int ldb, floating beta,
                            floating *c, int ldc) noexcept nogil:
    """One BLAS call on sizes that fit an int.

    Row-major C is column-major C^T = op(B)^T op(A)^T, so the operands swap.
    """
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float *>b, &ldb, <float *>a, &lda,
              &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double *>b, &ldb, <double *>a, &lda,
              &beta, c, &ldc)


cdef inline void _loop_gemm(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n,
                            Py_ssize_t k, floating alpha, const floating *a,
                            Py_ssize_t lda, const floating *b, Py_ssize_t ldb,
                            floating beta, floating *c, Py_ssize_t ldc) noexcept nogil:
    """The same product by plain loops, for leading dimensions BLAS cannot take.
    beta == 0 ignores C's old values, as BLAS does."""
    cdef Py_ssize_t i, j, p
    cdef floating total, x, y
    for i in range(m):
        for j in range(n):
            total = 0
            for p in range(k):
                x = a[p * lda + i] if trans_a else a[i * lda + p]
                y = b[j * ldb + p] if trans_b else b[p * ldb + j]
                total = total + x * y
            if beta == 0:
                c[i * ldc + j] = alpha * total
            else:
                c[i * ldc + j] = alpha * total + beta * c[i * ldc + j]


cdef inline void gemm(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n,
                      Py_ssize_t k, floating alpha, const floating *a, Py_ssize_t lda,
                      const floating *b, Py_ssize_t ldb, floating beta,
                      floating *c, Py_ssize_t ldc) noexcept nogil:
    """C (m x n) = alpha op(A) op(B) + beta C, all row-major, any sizes.

    Rows and columns of C are split into blocks of at most blas_int_limit();
    the reduction k is split too, later chunks accumulating with beta = 1.
    """
    cdef Py_ssize_t limit = blas_int_limit()
    cdef Py_ssize_t i0, j0, p0, mi, nj, kp
    cdef floating beta_p
    if m <= 0 or n <= 0:
        return
    if lda > limit or ldb > limit or ldc > limit:
        _loop_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
        return
    i0 = 0
    while i0 < m:
        mi = min(limit, m - i0)
        j0 = 0
        while j0 < n:
            nj = min(limit, n - j0)
            p0 = 0
            beta_p = beta
            while True:             # at least one call: k == 0 still scales C
                kp = min(limit, k - p0) if k > p0 else 0
                _blas_call(trans_a, trans_b, <int>mi, <int>nj, <int>kp, alpha,
                           a + (p0 * lda + i0 if trans_a else i0 * lda + p0), <int>lda,
                           b + (j0 * ldb + p0 if trans_b else p0 * ldb + j0), <int>ldb,
                           beta_p, c + i0 * ldc + j0, <int>ldc)
                beta_p = 1
                p0 += kp
                if p0 >= k:
                    break
            j0 += nj
        i0 += mi


cdef inline void parallel_gemm(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n,
                               Py_ssize_t k, const floating *a, Py_ssize_t lda,
                               const floating *b, Py_ssize_t ldb, floating beta,
                               floating *c, Py_ssize_t ldc,
                               int num_threads) noexcept nogil:
    """C (m x n) = op(A) op(B) + beta C with the rows of C split over threads.

    All fastrnn parallelism is its own OpenMP and the BLAS stays
    single-threaded, so no BLAS worker threads spin against ours.
    """
    cdef int blocks = split_threads(<double>m * n * k, num_threads)
    cdef int blk
    cdef Py_ssize_t r0, r1
    if blocks <= 1:
        gemm(trans_a, trans_b, m, n, k, <floating>1, a, lda, b, ldb, beta, c, ldc)
        return
    for blk in prange(blocks, num_threads=blocks, schedule="static", chunksize=1):
        r0 = chunk_start(m, blocks, blk, 1)
        r1 = chunk_start(m, blocks, blk + 1, 1)
        gemm(trans_a, trans_b, r1 - r0, n, k, <floating>1,
             a + (r0 if trans_a else r0 * lda), lda, b, ldb, beta,
             c + r0 * ldc, ldc)


cdef inline void accumulate_tn(Py_ssize_t m, Py_ssize_t k, const floating *a,
                               Py_ssize_t lda, Py_ssize_t n1, const floating *b1,
                               Py_ssize_t ldb1, floating *c1, Py_ssize_t ldc1,
                               Py_ssize_t n2, const floating *b2, Py_ssize_t ldb2,
                               floating *c2, Py_ssize_t ldc2) noexcept nogil:
    """C1 (m x n1) += A^T B1 and C2 (m x n2) += A^T B2 (n2 = 0: C1 only), A
    (k x m): fr_gemm.h's packed product where it is the faster one
    (``packed_gemm_tn_pair``), else BLAS for each."""
    if packed_gemm_tn_pair(m, k, a, lda, n1, b1, ldb1, c1, ldc1, n2, b2, ldb2, c2, ldc2):
        return
    if not packed_gemm_tn(m, n1, k, a, lda, b1, ldb1, c1, ldc1):
        gemm(True, False, m, n1, k, <floating>1, a, lda, b1, ldb1, <floating>1, c1, ldc1)
    if n2 > 0 and not packed_gemm_tn(m, n2, k, a, lda, b2, ldb2, c2, ldc2):
        gemm(True, False, m, n2, k, <floating>1, a, lda, b2, ldb2, <floating>1, c2, ldc2)


cdef inline void parallel_gemm_tn(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                                  const floating *a, Py_ssize_t lda,
                                  const floating *b, Py_ssize_t ldb, floating *c,
                                  Py_ssize_t ldc, int num_threads) noexcept nogil:
    """C (m x n) += A^T B, A (k x m), B (k x n): ``parallel_gemm_tn_pair``
    with one product."""
    parallel_gemm_tn_pair(m, k, a, lda, n, b, ldb, c, ldc, 0, NULL, 1, NULL, 1, num_threads)


cdef inline void parallel_gemm_tn_pair(Py_ssize_t m, Py_ssize_t k, const floating *a,
                                       Py_ssize_t lda, Py_ssize_t n1, const floating *b1,
                                       Py_ssize_t ldb1, floating *c1, Py_ssize_t ldc1,
                                       Py_ssize_t n2, const floating *b2, Py_ssize_t ldb2,
                                       floating *c2, Py_ssize_t ldc2,
                                       int num_threads) noexcept nogil:
    """C1 (m x n1) += A^T B1 and C2 (m x n2) += A^T B2 (n2 = 0: C1 only), A
    (k x m), for weight gradients: dW_ih and dW_hh share A (the gate
    gradients), which each thread then packs once for both.

    Their output is small and k (timesteps x batch rows) long, so k is split
    over the threads: each reads its own share of A and the Bs (a split of
    the output rows would make every thread stream all of them).  The first
    thread adds its share to C1 and C2, the others to zeroed partial products
    that are then added in thread order.
    """
    cdef int blocks = split_threads(<double>m * (n1 + n2) * k, num_threads)
    cdef int blk
    cdef Py_ssize_t k0, k1
    cdef size_t tile = <size_t>m * (n1 + n2)
    cdef floating *partial = NULL
    cdef floating *p
    if blocks > 1:
        partial = <floating *>calloc((blocks - 1) * tile, sizeof(floating))
    if partial == NULL:
        accumulate_tn(m, k, a, lda, n1, b1, ldb1, c1, ldc1, n2, b2, ldb2, c2, ldc2)
        return
    for blk in prange(blocks, num_threads=blocks, schedule="static", chunksize=1):
        k0 = chunk_start(k, blocks, blk, 1)
        k1 = chunk_start(k, blocks, blk + 1, 1)
        if blk == 0:
            accumulate_tn(m, k1 - k0, a, lda, n1, b1, ldb1, c1, ldc1, n2, b2, ldb2, c2, ldc2)
        else:
            p = partial + (blk - 1) * tile
            accumulate_tn(m, k1 - k0, a + k0 * lda, lda, n1, b1 + k0 * ldb1, ldb1, p, n1,
                          n2, b2 + k0 * ldb2 if n2 > 0 else NULL, ldb2, p + m * n1, n2)
    for blk in range(blocks - 1):
        p = partial + blk * tile
        _add_partial(m, n1, p, c1, ldc1)
        _add_partial(m, n2, p + m * n1, c2, ldc2)
    free(partial)


cdef inline void _add_partial(Py_ssize_t m, Py_ssize_t n, const floating *p, floating *c,
                              Py_ssize_t ldc) noexcept nogil:
    """C (m x n) += P (m x n, contiguous)."""
    cdef Py_ssize_t i, j
    for i in range(m):
        for j in range(n):
            c[i * ldc + j] += p[i * n + j]
