"""Test twin of fr_gemm.h: its pack routine and packed micro-kernel on numpy
arrays, compiled once per instruction-set level like the kernels that use it.

Used only by tests/kernels/test_kernels_dispatch.py, which compares it with numpy at
every level the machine can run.  No validation beyond what keeps memory
safe: the tests pass well-formed arrays.
"""

import numpy as np

from cython cimport floating

from fastrnn._kernels._packed cimport pack_weights_into, packed_size
from fastrnn._kernels._packed cimport packed_gemm as _packed_gemm

cdef extern from "fr_gemm.h" nogil:
    int FR_MR
    int FR_VECTOR_BYTES
    int FR_KC


def tile_shape():
    """(MR, vector bytes, K block) this level's micro-kernel was compiled with."""
    return FR_MR, FR_VECTOR_BYTES, FR_KC


cpdef pack(const floating[:, ::1] b, bint transposed=False):
    """B (k x n) packed into column panels; with ``transposed`` the argument
    is B^T (n x k), read in place as the recurrent kernels read W_hh."""
    cdef int rows = b.shape[0], cols = b.shape[1]
    cdef floating[::1] out = np.empty(packed_size(rows, cols, transposed, floating is float),
                                      dtype=np.float32 if floating is float else np.float64)
    if out.shape[0]:
        pack_weights_into(&b[0, 0], rows, cols, transposed, &out[0])
    return np.asarray(out)


cpdef void packed_gemm(const floating[:, ::1] a, const floating[::1] packed,
                       floating[:, ::1] c):
    """C (m x n, in/out) += A (m x k, in) @ B, B packed by ``pack`` (k x n)."""
    cdef int m = a.shape[0], k = a.shape[1], n = c.shape[1]
    cdef size_t need = packed_size(k, n, False, floating is float)
    if c.shape[0] != m or <size_t>packed.shape[0] != need:
        raise ValueError(f"packed_gemm: A {a.shape[0]}x{a.shape[1]}, C "
                         f"{c.shape[0]}x{c.shape[1]} and {packed.shape[0]} packed "
                         f"values (expected {need}) do not fit")
    if m == 0 or n == 0 or k == 0:   # nothing to add
        return
    _packed_gemm(m, n, k, &a[0, 0], k, &packed[0], &c[0, 0], n)
