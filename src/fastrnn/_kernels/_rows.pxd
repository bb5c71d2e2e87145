# Row activations for the kernels' fused float/double code: one dispatch to
# fr_math.h's vectorised float and double rows (y may be x: in place).
from cython cimport floating

cdef extern from "fr_math.h" nogil:
    void fr_tanh_row_f(const float *x, float *y, int n)
    void fr_tanh_row_d(const double *x, double *y, int n)
    void fr_sigmoid_row_f(const float *x, float *y, int n)
    void fr_sigmoid_row_d(const double *x, double *y, int n)
    void fr_gru_row_f(float *g, float *h, int n)
    void fr_gru_row_d(double *g, double *h, int n)


cdef inline void tanh_row(const floating *x, floating *y, int n) noexcept nogil:
    if floating is float:
        fr_tanh_row_f(x, y, n)
    else:
        fr_tanh_row_d(x, y, n)


cdef inline void sigmoid_row(const floating *x, floating *y, int n) noexcept nogil:
    if floating is float:
        fr_sigmoid_row_f(x, y, n)
    else:
        fr_sigmoid_row_d(x, y, n)


cdef inline void gru_row(floating *g, floating *h, int n) noexcept nogil:
    """GRU (reset after) gate math of one row in one pass (fr_math.h): g [r, z,
    hn, n_x] -> [r, z, hn, n], h updated (g and h do not overlap)."""
    if floating is float:
        fr_gru_row_f(g, h, n)
    else:
        fr_gru_row_d(g, h, n)
