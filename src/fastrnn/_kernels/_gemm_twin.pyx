"""Test twin of fr_gemm.h: its pack routine and packed micro-kernel on numpy
arrays, compiled once per instruction-set level like the kernels that use it.

Used only by tests/kernels/test_kernels_dispatch.py, which compares it with numpy at
every level the machine can run.  No validation beyond what keeps memory
safe: the tests pass well-formed arrays.
"""

import numpy as np

from cython cimport floating

cdef extern from "fr_gemm.h" nogil:
    int FR_MR
    int FR_VECTOR_BYTES
    int FR_KC
    size_t fr_packed_size_f(int k, int n)
    size_t fr_packed_size_d(int k, int n)
    void fr_pack_f(int k, int n, const float *src, size_t s_p, size_t s_j, float *packed)
    void fr_pack_d(int k, int n, const double *src, size_t s_p, size_t s_j, double *packed)
    void fr_packed_gemm_f(int m, int n, int k, const float *A, int lda,
                          const float *packed, float *C, int ldc)
    void fr_packed_gemm_d(int m, int n, int k, const double *A, int lda,
                          const double *packed, double *C, int ldc)


def tile_shape():
    """(MR, vector bytes, K block) this level's micro-kernel was compiled with."""
    return FR_MR, FR_VECTOR_BYTES, FR_KC


cpdef pack(const floating[:, ::1] b, bint transposed=False):
    """B (k x n) packed into column panels; with ``transposed`` the argument
    is B^T (n x k), read in place as the recurrent kernels read W_hh."""
    cdef int k = b.shape[1] if transposed else b.shape[0]
    cdef int n = b.shape[0] if transposed else b.shape[1]
    cdef size_t ld = b.shape[1]
    cdef size_t s_p = 1 if transposed else ld
    cdef size_t s_j = ld if transposed else 1
    cdef floating[::1] out
    if floating is float:
        out = np.empty(fr_packed_size_f(k, n), dtype=np.float32)
        if out.shape[0]:
            fr_pack_f(k, n, &b[0, 0], s_p, s_j, &out[0])
    else:
        out = np.empty(fr_packed_size_d(k, n), dtype=np.float64)
        if out.shape[0]:
            fr_pack_d(k, n, &b[0, 0], s_p, s_j, &out[0])
    return np.asarray(out)


cpdef void packed_gemm(const floating[:, ::1] a, const floating[::1] packed,
                       floating[:, ::1] c):
    """C (m x n, in/out) += A (m x k, in) @ B, B packed by ``pack`` (k x n)."""
    cdef int m = a.shape[0], k = a.shape[1], n = c.shape[1]
    cdef size_t need = (fr_packed_size_f(k, n) if floating is float
                        else fr_packed_size_d(k, n))
    if c.shape[0] != m or <size_t>packed.shape[0] != need:
        raise ValueError(f"packed_gemm: A {a.shape[0]}x{a.shape[1]}, C "
                         f"{c.shape[0]}x{c.shape[1]} and {packed.shape[0]} packed "
                         f"values (expected {need}) do not fit")
    if m == 0 or n == 0 or k == 0:   # nothing to add
        return
    if floating is float:
        fr_packed_gemm_f(m, n, k, &a[0, 0], k, &packed[0], &c[0, 0], n)
    else:
        fr_packed_gemm_d(m, n, k, &a[0, 0], k, &packed[0], &c[0, 0], n)
