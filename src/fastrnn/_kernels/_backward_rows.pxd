# Backward-sweep row loops of the recurrent kernel (fr_backward.h): one
# float/double dispatch each, for the fused code of _recurrent.pyx.  The
# pointers must not overlap (they are `restrict` in C).
from cython cimport floating

cdef extern from "fr_backward.h" nogil:
    void fr_lstm_backward_row_f(int H, float *g, float *dh, float *dc,
                                const float *c_prev, const float *tc)
    void fr_lstm_backward_row_d(int H, double *g, double *dh, double *dc,
                                const double *c_prev, const double *tc)
    void fr_gru_backward_row_f(int H, float *g, float *dh, const float *h_prev)
    void fr_gru_backward_row_d(int H, double *g, double *dh, const double *h_prev)
    void fr_add_column_sums_f(const float *g, int n, int w, float *acc)
    void fr_add_column_sums_d(const double *g, int n, int w, double *acc)


cdef inline void lstm_backward_gates(int H, floating *g, floating *dh, floating *dc,
                                     const floating *c_prev,
                                     const floating *tc) noexcept nogil:
    if floating is float:
        fr_lstm_backward_row_f(H, g, dh, dc, c_prev, tc)
    else:
        fr_lstm_backward_row_d(H, g, dh, dc, c_prev, tc)


cdef inline void gru_backward_gates(int H, floating *g, floating *dh,
                                    const floating *h_prev) noexcept nogil:
    if floating is float:
        fr_gru_backward_row_f(H, g, dh, h_prev)
    else:
        fr_gru_backward_row_d(H, g, dh, h_prev)


cdef inline void column_sums_into(const floating *g, int n, int w,
                                  floating *acc) noexcept nogil:
    if floating is float:
        fr_add_column_sums_f(g, n, w, acc)
    else:
        fr_add_column_sums_d(g, n, w, acc)
