# Small-batch products over packed weights, the column-split barrier and
# the pipeline's hand-off (fr_gemv.h), for float32 and float64.
from cython cimport floating

cdef extern from "fr_gemv.h" nogil:
    void fr_small_gemm_f(int m, int n, int k, const float *A, int lda,
                         const float *packed, const float *bias, float *C, int ldc)
    void fr_small_gemm_d(int m, int n, int k, const double *A, int lda,
                         const double *packed, const double *bias, double *C, int ldc)
    void fr_team_barrier()
    ctypedef struct fr_pipe:
        int next
        int done
        int made[2]
        int reading
    void fr_pipe_publish(int *count, int value)
    int fr_pipe_read(const int *count)
    void fr_pipe_wait(const int *count, int value)
    bint fr_pipe_claim(fr_pipe *pipe, int j)
    int fr_thread_num()
    int fr_team_size()


cdef inline void step_gemm(int m, int n, int k, const floating *a, int lda,
                           const floating *packed, floating *c,
                           int ldc) noexcept nogil:
    """``packed_gemm`` (C += A @ B, B packed) with the same bits, faster for
    m = 1, 2 rows (several weight panels per pass, fr_gemv.h)."""
    step_gemm_bias(m, n, k, a, lda, packed, NULL, c, ldc)


cdef inline void step_gemm_bias(int m, int n, int k, const floating *a, int lda,
                                const floating *packed, const floating *bias,
                                floating *c, int ldc) noexcept nogil:
    """``packed_gemm_bias`` (C = bias + A @ B; a NULL bias: C += A @ B) with
    the same bits, faster for m = 1, 2 rows."""
    if floating is float:
        fr_small_gemm_f(m, n, k, a, lda, packed, bias, c, ldc)
    else:
        fr_small_gemm_d(m, n, k, a, lda, packed, bias, c, ldc)
