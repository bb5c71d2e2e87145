/* Elementwise math for the fastrnn kernels (the matrix products are in
 * fr_gemm.h and scipy's BLAS).
 *
 * float32 nonlinearities are written branch-free from +, *, / and a float
 * to int conversion so that GCC vectorises whole rows of them (libm's
 * tanhf/expf calls would stay scalar).  Accuracy is a few ulp, well inside
 * float32 training noise (tests compare with PyTorch).  float64 uses libm: it is the precision used for
 * gradient checks, where exactness matters more than speed.
 */
#ifndef FASTRNN_FR_MATH_H
#define FASTRNN_FR_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#ifdef _OPENMP
static inline int fr_openmp_enabled(void) { return 1; }
#else
static inline int fr_openmp_enabled(void) { return 0; }
#endif

/* 1 when all n values are finite.  x * 0 is 0 for a finite x and NaN for
 * an infinite or NaN one, so a single vectorised pass (no branch, no
 * temporary array) answers it; NaN is the only value not equal to itself. */
#define FR_ALL_FINITE(NAME, T)                                                 \
static inline int NAME(const T *x, long n)                                     \
{                                                                              \
    T acc = 0;                                                                 \
    _Pragma("omp simd reduction(+:acc)")                                       \
    for (long i = 0; i < n; ++i)                                               \
        acc += x[i] * (T)0;                                                    \
    return acc == acc;                                                         \
}
FR_ALL_FINITE(fr_all_finite_f, float)
FR_ALL_FINITE(fr_all_finite_d, double)

/* 2^k and the reduced argument r of x = k ln2 + r, |r| <= ln2/2.  x is
 * clamped to [-87, 88] so 2^k stays a normal float.  ln2 is split in two
 * parts so that k * ln2_hi is exact. */
static inline float fr_reduce_ln2f(float x, float *r)
{
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    float t = x * 1.44269504088896341f + 0.5f;
#if defined(__SSE4_1__) || !defined(__x86_64__)
    float kf = floorf(t);       /* one vroundps / frintm */
#else
    /* x86-64 baseline (SSE2): floorf is a libm call there and kept rows
     * scalar (2.7x slower); floor by truncation is exact here (|t| < 2^7). */
    int32_t ki = (int32_t)t;
    ki -= t < (float)ki;
    float kf = (float)ki;
#endif
    float rr = x - kf * 0.693359375f;
    *r = rr - kf * (-2.12194440e-4f);
    int32_t bits = ((int32_t)kf + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return scale;
}

/* exp(r) - 1 for |r| <= ln2/2: Taylor polynomial to r^7 (truncation error
 * below 6e-9 relative), with no constant term so it stays accurate near 0. */
static inline float fr_expm1_reducedf(float r)
{
    float q = 1.0f / 5040.0f;
    q = q * r + 1.0f / 720.0f;
    q = q * r + 1.0f / 120.0f;
    q = q * r + 1.0f / 24.0f;
    q = q * r + 1.0f / 6.0f;
    q = q * r + 0.5f;
    return q * r * r + r;
}

static inline float fr_expf(float x)
{
    float r;
    float scale = fr_reduce_ln2f(x, &r);
    return scale * fr_expm1_reducedf(r) + scale;
}

static inline float fr_sigmoidf(float x)
{
    return 1.0f / (1.0f + fr_expf(-x));
}

/* tanh(|x|) = -m / (2 + m) with m = expm1(-2|x|), which keeps full relative
 * accuracy near 0 (at most 2.5 ulp over the float range, checked against
 * double tanh).  |x| is capped at 9, where tanh is 1 in float. */
static inline float fr_tanhf(float x)
{
    float ax = x < 0.0f ? -x : x;
    ax = ax > 9.0f ? 9.0f : ax;
    float r;
    float scale = fr_reduce_ln2f(-2.0f * ax, &r);
    float m = scale * fr_expm1_reducedf(r) + (scale - 1.0f);
    float t = -m / (2.0f + m);
    return x < 0.0f ? -t : t;
}

static inline double fr_sigmoidd(double x) { return 1.0 / (1.0 + exp(-x)); }
static inline double fr_tanhd(double x) { return tanh(x); }

/* Row-wise helpers: y[i] = f(x[i]) for i < n (x may alias y). */
#define FR_ROW_MAP(NAME, T, F)                                   \
    static inline void NAME(const T *x, T *y, int n)             \
    {                                                            \
        for (int i = 0; i < n; i++) y[i] = F(x[i]);              \
    }
FR_ROW_MAP(fr_tanh_row_f, float, fr_tanhf)
FR_ROW_MAP(fr_tanh_row_d, double, fr_tanhd)
FR_ROW_MAP(fr_sigmoid_row_f, float, fr_sigmoidf)
FR_ROW_MAP(fr_sigmoid_row_d, double, fr_sigmoidd)
#undef FR_ROW_MAP

/* Whole-row gate math of the GRU in one pass (each gate read once,
 * the state updated while the gates are in registers, instead of a pass per
 * activation: 2-4% faster GRU inference at H = 64; the same fusion for
 * the LSTM, with five activations per element, measured 5% slower).
 * Every element gets exactly the arithmetic of the separate
 * passes: the same activation functions and the same expressions.
 *
 * GRU (reset after, linear_before_reset): g = [r, z, hn, n_x] ->
 *   [r, z, hn, n] with n = tanh(n_x + r * hn);  h = (1 - z) * n + z * h. */
#define FR_GRU_ROWS(SUF, T, SIG, TANH)                                        \
/* Separate restrict pointers per gate block: with one pointer the compiler  \
 * must check at run time that the blocks do not overlap, and that check     \
 * sent the row down the scalar loop. */                                    \
static inline void fr_gru_gates_##SUF(T *restrict gr, T *restrict gz,          \
                                      const T *restrict ghn, T *restrict gn,   \
                                      T *restrict h, int n)                    \
{                                                                              \
    for (int j = 0; j < n; j++) {                                              \
        T r_ = SIG(gr[j]), z_ = SIG(gz[j]);                                    \
        T n_ = TANH(gn[j] + r_ * ghn[j]);                                      \
        gr[j] = r_;                                                            \
        gz[j] = z_;                                                            \
        gn[j] = n_;                                                            \
        h[j] = ((T)1 - z_) * n_ + z_ * h[j];                                   \
    }                                                                          \
}                                                                              \
static inline void fr_gru_row_##SUF(T *g, T *h, int n)                         \
{                                                                              \
    fr_gru_gates_##SUF(g, g + n, g + 2 * n, g + 3 * n, h, n);                  \
}
FR_GRU_ROWS(f, float, fr_sigmoidf, fr_tanhf)
FR_GRU_ROWS(d, double, fr_sigmoidd, fr_tanhd)
#undef FR_GRU_ROWS


#endif
