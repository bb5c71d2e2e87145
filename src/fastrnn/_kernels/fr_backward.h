/* Row loops of the recurrent backward sweep that GCC leaves scalar when they
 * are written in Cython.
 *
 * The Cython versions of these loops read and write the gate row through
 * several pointers of one type; GCC gave up on vectorising them ("no vectype
 * for stmt") and they ran one element at a time.  Here every pointer is
 * `restrict` (the callers pass disjoint rows: the gate row, the state
 * gradients, the cell states and a scratch row never overlap), so each loop
 * is a plain elementwise loop GCC vectorises at every dispatched level.  The
 * arithmetic is the same expression, element by element, as the Cython code
 * it replaces, so results do not depend on which is used.
 */
#ifndef FASTRNN_FR_BACKWARD_H
#define FASTRNN_FR_BACKWARD_H

#define FR_DEFINE_BACKWARD_ROWS(SUF, T)                                        \
                                                                               \
/* LSTM, g = [i, f, g, o] activated -> pre-activation gradients in place;     \
 * dh: dL/dh_t in, 0 out; dc: dL/dc_t in, dL/dc_{t-1} out; tc = tanh(c_t). */ \
static inline void fr_lstm_backward_row_##SUF(                                 \
    int H, T *restrict g, T *restrict dh, T *restrict dc,                      \
    const T *restrict c_prev, const T *restrict tc)                            \
{                                                                              \
    T *restrict gi = g, *restrict gf = g + H;                                  \
    T *restrict gg = g + 2 * H, *restrict go = g + 3 * H;                      \
    for (int j = 0; j < H; j++) {                                              \
        T i_ = gi[j], f_ = gf[j], g_ = gg[j], o_ = go[j];                      \
        T t = tc[j], d = dh[j];                                                \
        T dcj = dc[j] + d * o_ * ((T)1 - t * t);                               \
        gi[j] = dcj * g_ * i_ * ((T)1 - i_);                                   \
        gf[j] = dcj * c_prev[j] * f_ * ((T)1 - f_);                            \
        gg[j] = dcj * i_ * ((T)1 - g_ * g_);                                   \
        go[j] = d * t * o_ * ((T)1 - o_);                                      \
        dc[j] = dcj * f_;                                                      \
        dh[j] = 0;                                                             \
    }                                                                          \
}                                                                              \
                                                                               \
/* GRU (reset after W_hn), g = [r, z, hn, n] -> [dr, dz, dn * r, dn];         \
 * dh: dL/dh_t in, the part of dL/dh_{t-1} through z out. */                   \
static inline void fr_gru_backward_row_##SUF(                                  \
    int H, T *restrict g, T *restrict dh, const T *restrict h_prev)            \
{                                                                              \
    T *restrict gr = g, *restrict gz = g + H;                                  \
    T *restrict ghn = g + 2 * H, *restrict gn = g + 3 * H;                     \
    for (int j = 0; j < H; j++) {                                              \
        T r_ = gr[j], z_ = gz[j], hn = ghn[j], n_ = gn[j], d = dh[j];          \
        T dn = d * ((T)1 - z_) * ((T)1 - n_ * n_);                             \
        gr[j] = dn * hn * r_ * ((T)1 - r_);                                    \
        gz[j] = d * (h_prev[j] - n_) * z_ * ((T)1 - z_);                       \
        ghn[j] = dn * r_;                                                      \
        gn[j] = dn;                                                            \
        dh[j] = d * z_;                                                        \
    }                                                                          \
}                                                                              \
                                                                               \
/* acc[j] += sum of the n rows' column j, rows in order (reproducible). */    \
static inline void fr_add_column_sums_##SUF(                                   \
    const T *restrict g, int n, int w, T *restrict acc)                        \
{                                                                              \
    for (int i = 0; i < n; i++) {                                              \
        const T *restrict row = g + (size_t)i * w;                             \
        for (int j = 0; j < w; j++)                                            \
            acc[j] += row[j];                                                  \
    }                                                                          \
}

#include <stddef.h>

FR_DEFINE_BACKWARD_ROWS(f, float)
FR_DEFINE_BACKWARD_ROWS(d, double)

#undef FR_DEFINE_BACKWARD_ROWS

#endif
