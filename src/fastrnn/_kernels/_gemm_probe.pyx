"""Test entry points for the packed-weight product as the kernels call it:
``_packed.pxd``'s ``packed_size``, ``pack_weights_into``, ``packed_gemm`` and
``parallel_packed_gemm`` (over fr_gemm.h), and the weight-gradient product
``A^T B`` (``packed_gemm_tn``, ``_blas.pxd``'s ``parallel_gemm_tn``, and
their ``_pair`` forms that add A^T B1 and A^T B2 in one pass), on numpy
arrays, compiled once per instruction-set level.

``_gemm_twin`` reaches fr_gemm.h itself; this module goes through the
``_packed.pxd`` layer (and ``_gemv.pxd``'s small-batch product) the recurrent, Jordan and RTRL kernels use: weights
given as (rows x cols) matrices packed plain or transposed, operands with a
leading dimension wider than the product (a block of a bigger buffer), and
the row split over OpenMP threads.  Used only by
tests/kernels/test_gemm_probe.py.  Checks keep memory safe; the tests pass
well-formed arrays otherwise.
"""

import numpy as np

from cython cimport floating

from fastrnn._kernels._blas cimport parallel_gemm_tn, parallel_gemm_tn_pair
from fastrnn._kernels._gemv cimport step_gemm_bias
from fastrnn._kernels._packed cimport (pack_weights_into, packed_gemm, packed_gemm_bias,
                                       packed_gemm_tn, packed_gemm_tn_pair, packed_size,
                                       parallel_packed_gemm)


def pack(const floating[:, ::1] w, bint transpose=False):
    """``pack_weights_into``: w (rows x cols) packed as the B operand of the
    product (k x n = rows x cols, or cols x rows with ``transpose``)."""
    cdef int rows = w.shape[0], cols = w.shape[1]
    cdef size_t size = packed_size(rows, cols, transpose, floating is float)
    cdef floating[::1] out = np.zeros(size, dtype=np.float32 if floating is float
                                      else np.float64)
    if size and rows and cols:
        pack_weights_into(&w[0, 0], rows, cols, transpose, &out[0])
    return np.asarray(out)


def gemm(const floating[:, ::1] a, int k, const floating[::1] packed,
         floating[:, ::1] c, int n, int num_threads=0):
    """C[:, :n] += A[:, :k] @ B, B packed by :func:`pack` (k x n).  A and C
    are read with their full row lengths as leading dimensions (lda, ldc),
    so k and n may be narrower than the arrays.  ``num_threads`` 0 calls
    ``packed_gemm``; >= 1 calls ``parallel_packed_gemm`` with that count."""
    cdef int m = a.shape[0]
    cdef size_t need = packed_size(k, n, False, floating is float)
    if not (0 <= k <= a.shape[1] and 0 <= n <= c.shape[1] and c.shape[0] == m
            and <size_t>packed.shape[0] == need and num_threads >= 0):
        raise ValueError(f"gemm: A {a.shape[0]}x{a.shape[1]} (k={k}), C "
                         f"{c.shape[0]}x{c.shape[1]} (n={n}), {packed.shape[0]} packed "
                         f"values (expected {need}), num_threads={num_threads} do not fit")
    if m == 0 or n == 0 or k == 0:
        return
    cdef int lda = a.shape[1], ldc = c.shape[1]
    with nogil:
        if num_threads == 0:
            packed_gemm(m, n, k, &a[0, 0], lda, &packed[0], &c[0, 0], ldc)
        else:
            parallel_packed_gemm(m, n, k, &a[0, 0], lda, &packed[0], NULL, &c[0, 0], ldc,
                                 num_threads)


def gemm_bias(const floating[:, ::1] a, int k, const floating[::1] packed,
              const floating[::1] bias, floating[:, ::1] c, int n, bint small=False):
    """C[:, :n] = bias + A[:, :k] @ B (C's old values unread): through
    ``packed_gemm_bias``, or with ``small`` through ``step_gemm_bias`` (the
    product the recurrent kernels use per step, several panels at a time for
    1 or 2 rows)."""
    cdef int m = a.shape[0]
    cdef size_t need = packed_size(k, n, False, floating is float)
    if not (0 <= k <= a.shape[1] and 0 <= n <= c.shape[1] and c.shape[0] == m
            and <size_t>packed.shape[0] == need and bias.shape[0] >= n):
        raise ValueError(f"gemm_bias: A {a.shape[0]}x{a.shape[1]} (k={k}), C "
                         f"{c.shape[0]}x{c.shape[1]} (n={n}), {bias.shape[0]} bias values, "
                         f"{packed.shape[0]} packed values (expected {need}) do not fit")
    if m == 0 or n == 0:
        return
    cdef int lda = a.shape[1], ldc = c.shape[1]
    with nogil:
        if small:
            step_gemm_bias(m, n, k, &a[0, 0], lda, &packed[0], &bias[0], &c[0, 0], ldc)
        else:
            packed_gemm_bias(m, n, k, &a[0, 0], lda, &packed[0], &bias[0], &c[0, 0], ldc)


def gemm_tn_pair(const floating[:, ::1] a, int m, const floating[:, ::1] b1, int n1,
                 floating[:, ::1] c1, const floating[:, ::1] b2, int n2,
                 floating[:, ::1] c2, int num_threads=0):
    """C1[:m, :n1] += A[:, :m]^T B1[:, :n1] and C2[:m, :n2] += A[:, :m]^T
    B2[:, :n2] in one pass (the weight gradients dW_ih and dW_hh), k = A's
    row count (k >= 1, m, n1, n2 >= 1).  ``num_threads`` 0 calls
    ``packed_gemm_tn_pair`` and returns whether it took the products (False:
    it declined and both Cs are unchanged); >= 1 calls
    ``parallel_gemm_tn_pair`` and returns True."""
    cdef Py_ssize_t k = a.shape[0]
    cdef bint done = True
    if not (k >= 1 and b1.shape[0] == k and b2.shape[0] == k and 1 <= m <= a.shape[1]
            and 1 <= n1 <= b1.shape[1] and 1 <= n2 <= b2.shape[1] and m <= c1.shape[0]
            and m <= c2.shape[0] and n1 <= c1.shape[1] and n2 <= c2.shape[1]
            and num_threads >= 0):
        raise ValueError(f"gemm_tn_pair: A {a.shape[0]}x{a.shape[1]} (m={m}), B1 "
                         f"{b1.shape[0]}x{b1.shape[1]} (n1={n1}), B2 {b2.shape[0]}x"
                         f"{b2.shape[1]} (n2={n2}), C1 {c1.shape[0]}x{c1.shape[1]}, C2 "
                         f"{c2.shape[0]}x{c2.shape[1]}, num_threads={num_threads} do not fit")
    with nogil:
        if num_threads == 0:
            done = packed_gemm_tn_pair(m, k, &a[0, 0], a.shape[1], n1, &b1[0, 0], b1.shape[1],
                                       &c1[0, 0], c1.shape[1], n2, &b2[0, 0], b2.shape[1],
                                       &c2[0, 0], c2.shape[1])
        else:
            parallel_gemm_tn_pair(m, k, &a[0, 0], a.shape[1], n1, &b1[0, 0], b1.shape[1],
                                  &c1[0, 0], c1.shape[1], n2, &b2[0, 0], b2.shape[1],
                                  &c2[0, 0], c2.shape[1], num_threads)
    return done


def gemm_tn(const floating[:, ::1] a, int m, const floating[:, ::1] b, int n,
            floating[:, ::1] c, int num_threads=0):
    """C[:m, :n] += A[:, :m]^T B[:, :n], k = A's row count, read with the
    arrays' row lengths as leading dimensions.  ``num_threads`` 0 calls
    ``packed_gemm_tn`` and returns whether it took the product (False: it
    declined and C is unchanged); >= 1 calls ``parallel_gemm_tn`` (the route
    it picks, split over that many threads) and returns True."""
    cdef Py_ssize_t k = a.shape[0]
    cdef bint done = True
    if not (b.shape[0] == k and 0 <= m <= a.shape[1] and 0 <= n <= b.shape[1]
            and m <= c.shape[0] and n <= c.shape[1] and num_threads >= 0):
        raise ValueError(f"gemm_tn: A {a.shape[0]}x{a.shape[1]} (m={m}), B "
                         f"{b.shape[0]}x{b.shape[1]} (n={n}), C {c.shape[0]}x{c.shape[1]}, "
                         f"num_threads={num_threads} do not fit")
    if k == 0 or m == 0 or n == 0:      # nothing to read or write: no pointers into the arrays
        if num_threads == 0:
            return packed_gemm_tn(m, n, k, <floating *>NULL, 1, <floating *>NULL, 1,
                                  <floating *>NULL, 1)
        parallel_gemm_tn(m, n, k, <floating *>NULL, 1, <floating *>NULL, 1,
                         <floating *>NULL, 1, num_threads)
        return True
    with nogil:
        if num_threads == 0:
            done = packed_gemm_tn(m, n, k, &a[0, 0], a.shape[1], &b[0, 0], b.shape[1],
                                  &c[0, 0], c.shape[1])
        else:
            parallel_gemm_tn(m, n, k, &a[0, 0], a.shape[1], &b[0, 0], b.shape[1],
                             &c[0, 0], c.shape[1], num_threads)
    return done
