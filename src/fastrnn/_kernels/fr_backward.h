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
/* C[m x n] += A[m x k] @ B, B packed by fr_pack (k x n): fr_packed_gemm     \
 * with the rows cut so that no tile is much shorter than the others.  The    \
 * sweep's products have m = 32 or 64 rows (a batch chunk per thread), which  \
 * fr_packed_gemm cuts into FR_MR-row tiles and a short last one (32 = 5 x 6  \
 * + 2 on AVX2): a 2-row tile keeps only 4 accumulators, too few to cover the \
 * FMA latency, and runs at about half speed.  Here the last two tiles share  \
 * the remainder (32 = 4 x 6 + 4 + 4).  Each element is still its k-block's  \
 * dot product in k order added to C, so the bits are fr_packed_gemm's. */    \
static inline void fr_sweep_gemm_##SUF(int m, int n, int k, const T *A,        \
                                       int lda, const T *packed, T *C,         \
                                       int ldc)                                \
{                                                                              \
    const int nr = FR_NR_##SUF;                                                \
    for (int q = 0; q * nr < n; q++) {                                         \
        const T *panel = packed + (size_t)q * k * nr;                          \
        int cols = n - q * nr < nr ? n - q * nr : nr;                          \
        for (int k0 = 0; k0 < k; k0 += FR_KC) {                                \
            int kc = k - k0 < FR_KC ? k - k0 : FR_KC;                          \
            for (int i0 = 0, mr; i0 < m; i0 += mr) {                           \
                int left = m - i0;                                             \
                mr = left <= FR_MR ? left                                      \
                   : left < 2 * FR_MR ? (left + 1) / 2 : FR_MR;                \
                fr_tile_dispatch_##SUF(mr, kc, A + (size_t)i0 * lda + k0, lda, \
                                       panel + (size_t)k0 * nr,                \
                                       C + (size_t)i0 * ldc + q * nr, ldc,     \
                                       cols);                                  \
            }                                                                  \
        }                                                                      \
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
#include "fr_gemm.h"    /* the packed panels and their micro-tile */

FR_DEFINE_BACKWARD_ROWS(f, float)
FR_DEFINE_BACKWARD_ROWS(d, double)

#undef FR_DEFINE_BACKWARD_ROWS

#endif
