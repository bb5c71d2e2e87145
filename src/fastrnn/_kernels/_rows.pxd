# Row activations for the kernels' fused float/double code: one dispatch to
# fr_math.h's vectorised float and double rows (y may be x: in place).
from cython cimport floating

cdef extern from "fr_math.h" nogil:
    void fr_tanh_row_f(const float *x, float *y, int n)
    void fr_tanh_row_d(const double *x, double *y, int n)
    void fr_sigmoid_row_f(const float *x, float *y, int n)
    void fr_sigmoid_row_d(const double *x, double *y, int n)


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
