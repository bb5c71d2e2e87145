/* Elementwise math and a small matrix product for the fastrnn kernels.
 *
 * float32 nonlinearities are written branch-free from +, *, / and a float
 * to int conversion so that GCC vectorises whole rows of them (libm's
 * tanhf/expf calls would stay scalar).  Accuracy is a few ulp, well inside
 * float32 training noise.  float64 uses libm: it is the precision used for
 * gradient checks, where exactness matters more than speed.
 */
#ifndef FASTRNN_FR_MATH_H
#define FASTRNN_FR_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
static inline int fr_openmp_enabled(void) { return 1; }
static inline int fr_omp_max_threads(void) { return omp_get_max_threads(); }
#else
static inline int fr_openmp_enabled(void) { return 0; }
static inline int fr_omp_max_threads(void) { return 1; }
#endif

/* exp(x) for float: 2^k * p(r), x = k ln2 + r, |r| <= ln2/2, p = Taylor
 * polynomial of degree 7 (truncation error < 6e-9 relative). */
static inline float fr_expf(float x)
{
    const float lo = -87.0f, hi = 88.0f;
    x = x < lo ? lo : x;
    x = x > hi ? hi : x;
    float kf = floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - kf * 0.693359375f;          /* ln2 split in two parts so   */
    r = r - kf * (-2.12194440e-4f);           /* k*ln2_hi is exact            */
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits = ((int32_t)kf + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static inline float fr_sigmoidf(float x)
{
    return 1.0f / (1.0f + fr_expf(-x));
}

/* tanh for float: odd Taylor series up to x^15 for |x| < 0.5 (error below
 * float epsilon there), 1 - 2/(exp(2|x|)+1) beyond; both are computed and
 * one selected so the loop stays branch-free. */
static inline float fr_tanhf(float x)
{
    float ax = x < 0.0f ? -x : x;
    float x2 = x * x;
    float s = -929569.0f / 638512875.0f;
    s = s * x2 + 21844.0f / 6081075.0f;
    s = s * x2 - 1382.0f / 155925.0f;
    s = s * x2 + 62.0f / 2835.0f;
    s = s * x2 - 17.0f / 315.0f;
    s = s * x2 + 2.0f / 15.0f;
    s = s * x2 - 1.0f / 3.0f;
    float small = x + x * x2 * s;
    float cl = ax > 9.0f ? 9.0f : ax;
    float big = 1.0f - 2.0f / (fr_expf(2.0f * cl) + 1.0f);
    big = x < 0.0f ? -big : big;
    return ax < 0.5f ? small : big;
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


#endif
