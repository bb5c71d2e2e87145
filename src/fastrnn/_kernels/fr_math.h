/* Elementwise math for the fastrnn kernels (the matrix products are in
 * fr_gemm.h and scipy's BLAS).
 *
 * float32 nonlinearities are written branch-free from +, *, /, min/max and
 * an integer shift so that GCC vectorises whole rows of them (libm's
 * tanhf/expf calls would stay scalar).  Accuracy: tanh and sigmoid within
 * 2.5 ulp of float64, exp within 1.5 ulp (tests/kernels/test_fr_math_accuracy.py
 * sweeps the float range at every level).  float64 uses libm: it is the precision used for
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
 * temporary array) answers it; NaN is the only value not equal to itself.
 * FR_FINITE_LANES separate sums (several vectors at any width) keep the adds
 * independent: one running sum waits out each add's latency, which made the
 * check of a 50 x 32 x 64 input 3.9x slower at the baseline level (34.5 ->
 * 8.8 us, Zen 3). */
#define FR_FINITE_LANES 32
#define FR_ALL_FINITE(NAME, T)                                                 \
static inline int NAME(const T *x, long n)                                     \
{                                                                              \
    T acc[FR_FINITE_LANES] = {0}, total = 0;                                   \
    long i = 0;                                                                \
    for (; i + FR_FINITE_LANES <= n; i += FR_FINITE_LANES)                     \
        for (int j = 0; j < FR_FINITE_LANES; j++)                              \
            acc[j] += x[i + j] * (T)0;                                         \
    for (; i < n; i++)                                                         \
        total += x[i] * (T)0;                                                  \
    for (int j = 0; j < FR_FINITE_LANES; j++)                                  \
        total += acc[j];                                                       \
    return total == total;                                                     \
}
FR_ALL_FINITE(fr_all_finite_f, float)
FR_ALL_FINITE(fr_all_finite_d, double)

/* Limits of the float32 activations.  Inside the row loops they are passed
 * as run-time values (fr_opaque_f): with a literal limit GCC first duplicates
 * the code after the clamp for the clamped, constant case and then merges the
 * two paths back with compare-and-blend sequences (about 8 instructions per
 * vector and clamp); with an opaque limit the clamp is one vminps/vmaxps.
 * The ternaries below are NaN-preserving (a NaN compares false and is kept);
 * vminps/vmaxps with the limit as first operand do exactly the same. */
#define FR_EXP_LO (-87.0f)       /* e^-87 > FLT_MIN: 2^k stays a normal float */
#define FR_EXP_HI 88.0f          /* e^88 < FLT_MAX */
#define FR_SIGMOID_LIM 87.0f     /* sigmoid(-87) = 1.6e-38 is still normal */
#define FR_TANH_CAP 9.0f         /* tanh(9) rounds to 1 in float */

/* v unchanged, but the compiler cannot see its value (no code is emitted
 * beyond a store and a load before the loop). */
static inline float fr_opaque_f(float v)
{
#if defined(__GNUC__)
    __asm__("" : "+m"(v));
#endif
    return v;
}

static inline float fr_clampf(float v, float lo, float hi)
{
    v = v > hi ? hi : v;
    return v < lo ? lo : v;
}

/* 2^k and the reduced argument r of x = k ln2 + r, |r| <= ln2/2, for x
 * within [-87, 88] (the caller clamps).  k by the magic-number add:
 * x log2(e) + (1.5 * 2^23 + 127) rounds to an integer whose low bits are
 * k + 127 (no floor, no float->int conversion), and those bits shifted into
 * the exponent field are 2^k.  ln2 is split in two so that k ln2_hi is exact. */
static inline float fr_reduce_ln2f(float x, float *r)
{
    const float magic = 12583039.0f;           /* 1.5 * 2^23 + 127 */
    float t = x * 1.44269504088896341f + magic;
    float kf = t - magic;
    float rr = x - kf * 0.693359375f;
    *r = rr - kf * (-2.12194440e-4f);
    uint32_t bits;
    memcpy(&bits, &t, sizeof bits);
    bits <<= 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return scale;
}

/* exp(r) for |r| <= ln2/2: degree-6 polynomial, coefficients fitted in float64
 * for minimum relative error (Lawson's minimax on Chebyshev nodes, then rounded
 * to float): 1.8e-8 relative, against 1.6e-7 for Taylor's degree 6.
 * Refit with tests/kernels/fr_math_fit.py. */
static inline float fr_exp_reducedf(float r)
{
    float q = 1.384337200e-03f;
    q = q * r + 8.374397643e-03f;
    q = q * r + 4.166801646e-02f;
    q = q * r + 1.666642874e-01f;
    q = q * r + 4.999999404e-01f;
    q = q * r + 1.000000000e+00f;
    return q * r + 1.0f;
}

/* exp(r) - 1 for |r| <= ln2/2, relative error 1.7e-8 (same fit), with no
 * constant term so that it stays accurate near 0. */
static inline float fr_expm1_reducedf(float r)
{
    float q = 1.388248522e-03f;
    q = q * r + 8.366713300e-03f;
    q = q * r + 4.166720435e-02f;
    q = q * r + 1.666654199e-01f;
    q = q * r + 4.999999702e-01f;
    return q * r * r + r;
}

static inline float fr_expf(float x)
{
    float r;
    float scale = fr_reduce_ln2f(fr_clampf(x, FR_EXP_LO, FR_EXP_HI), &r);
    return scale * fr_exp_reducedf(r);
}

/* sigmoid(x) = 1 / (1 + e^-x), within 2.4 ulp of float64 (exhaustive check in
 * tests/kernels/test_fr_math_accuracy.py); -x is clamped to [-lim, lim]. */
static inline float fr_sigmoid_limf(float x, float lim)
{
    float r;
    float scale = fr_reduce_ln2f(fr_clampf(-x, -lim, lim), &r);
    return 1.0f / (1.0f + scale * fr_exp_reducedf(r));
}

/* tanh(|x|) = -m / (2 + m) with m = expm1(-2|x|), which keeps full relative
 * accuracy near 0 (within 2.5 ulp of float64 over the float range; exact 0
 * and -0 kept).  |x| is capped at cap = 9, where tanh is 1 in float. */
static inline float fr_tanh_capf(float x, float cap)
{
    float ax = fabsf(x);
    ax = ax > cap ? cap : ax;
    float r;
    float scale = fr_reduce_ln2f(-2.0f * ax, &r);
    float m = scale * fr_expm1_reducedf(r) + (scale - 1.0f);
    return copysignf(-m / (2.0f + m), x);
}

static inline float fr_sigmoidf(float x) { return fr_sigmoid_limf(x, FR_SIGMOID_LIM); }
static inline float fr_tanhf(float x) { return fr_tanh_capf(x, FR_TANH_CAP); }

static inline double fr_sigmoidd(double x) { return 1.0 / (1.0 + exp(-x)); }
static inline double fr_tanhd(double x) { return tanh(x); }
/* The double twin of fr_tanh_capf for the GRU row
 * (libm needs no limit). */
static inline double fr_tanh_capd(double x, double cap) { (void)cap; return fr_tanhd(x); }

/* Row-wise helpers: y[i] = f(x[i]) for i < n (x may alias y).  float32 rows
 * take their limits through fr_opaque_f (see FR_EXP_LO). */
static inline void fr_tanh_row_f(const float *x, float *y, int n)
{
    float cap = fr_opaque_f(FR_TANH_CAP);
    for (int i = 0; i < n; i++) y[i] = fr_tanh_capf(x[i], cap);
}
static inline void fr_sigmoid_row_f(const float *x, float *y, int n)
{
    float lim = fr_opaque_f(FR_SIGMOID_LIM);
    for (int i = 0; i < n; i++) y[i] = fr_sigmoid_limf(x[i], lim);
}
static inline void fr_tanh_row_d(const double *x, double *y, int n)
{
    for (int i = 0; i < n; i++) y[i] = fr_tanhd(x[i]);
}
static inline void fr_sigmoid_row_d(const double *x, double *y, int n)
{
    for (int i = 0; i < n; i++) y[i] = fr_sigmoidd(x[i]);
}

/* Whole-row gate math of the GRU (reset after, linear_before_reset):
 * g = [r, z, hn, n_x] -> [r, z, hn, n] with n = tanh(n_x + r * hn) and
 * h = (1 - z) * n + z * h.  One sigmoid pass over [r, z] (contiguous), then
 * one pass for n and h.  With the cheaper activations this is 1.3x faster
 * than one pass doing all three (which needed more registers than AVX2 has:
 * the constants of two activations were reloaded from the stack); every
 * element gets the same arithmetic either way.  Separate restrict pointers
 * per gate block: with one pointer the compiler checks at run time that the
 * blocks do not overlap, and that check sent the row down the scalar loop. */
#define FR_GRU_ROWS(SUF, T, SIG_ROW, TANH, CAP)                               \
static inline void fr_gru_candidate_##SUF(const T *restrict gr,                \
                                          const T *restrict gz,                \
                                          const T *restrict ghn,               \
                                          T *restrict gn, T *restrict h, int n)\
{                                                                              \
    T cap = CAP;                                                               \
    for (int j = 0; j < n; j++) {                                              \
        T n_ = TANH(gn[j] + gr[j] * ghn[j], cap);                              \
        gn[j] = n_;                                                            \
        h[j] = ((T)1 - gz[j]) * n_ + gz[j] * h[j];                             \
    }                                                                          \
}                                                                              \
static inline void fr_gru_row_##SUF(T *g, T *h, int n)                         \
{                                                                              \
    SIG_ROW(g, g, 2 * n);                                                      \
    fr_gru_candidate_##SUF(g, g + n, g + 2 * n, g + 3 * n, h, n);              \
}
FR_GRU_ROWS(f, float, fr_sigmoid_row_f, fr_tanh_capf, fr_opaque_f(FR_TANH_CAP))
FR_GRU_ROWS(d, double, fr_sigmoid_row_d, fr_tanh_capd, 0.0)
#undef FR_GRU_ROWS


#endif
