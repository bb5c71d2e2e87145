/* Accuracy of fr_math.h's float32 activations, through the row functions the
 * kernels call (the vectorised loops), against float64 libm.
 *
 * Every float bit pattern with |x| below the saturation points is visited with
 * a stride (argv[1]; 1 = exhaustive), both signs; the worst error is reported
 * in units in the last place (ulp) of the correctly rounded result.  Edge
 * values: 0 and -0, NaN, +-inf, subnormal inputs, saturation.  Exit status 1
 * when a bound is exceeded. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fr_math.h"

#if defined(__AVX512F__)
#define VECTOR_BYTES 64
#elif defined(__AVX__)
#define VECTOR_BYTES 32
#else
#define VECTOR_BYTES 16
#endif

#define BLOCK 4096
#define TANH_ULP 3.0
#define SIGMOID_ULP 3.0
#define EXP_ULP 1.5

static int failures = 0;
#define CHECK(cond, ...) do { if (!(cond)) { failures++; printf("FAIL: " __VA_ARGS__); printf("\n"); } } while (0)

/* ulp of the float nearest to t (FLT_MIN's for subnormal results) */
static double ulp_of(double t)
{
    float f = fabsf((float)t);
    if (f < FLT_MIN) f = FLT_MIN;
    return (double)(nextafterf(f, INFINITY) - f);
}

static float from_bits(uint32_t b)
{
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

typedef struct { double worst; float at; } Worst;

static void note(Worst *w, float got, double want, float x)
{
    double e = fabs((double)got - want) / ulp_of(want);
    if (e > w->worst) { w->worst = e; w->at = x; }
}

/* One block of inputs through the three rows. */
static void sweep_block(const float *x, int n, Worst *wt, Worst *ws, Worst *we, int *bad)
{
    float t[BLOCK], s[BLOCK], e[BLOCK];
    fr_tanh_row_f(x, t, n);
    fr_sigmoid_row_f(x, s, n);
    for (int i = 0; i < n; i++) e[i] = fr_expf(x[i]);
    for (int i = 0; i < n; i++) {
        double xd = x[i];
        note(wt, t[i], tanh(xd), x[i]);
        if (xd > -FR_SIGMOID_LIM) note(ws, s[i], 1.0 / (1.0 + exp(-xd)), x[i]);
        if (xd > FR_EXP_LO && xd < FR_EXP_HI) note(we, e[i], exp(xd), x[i]);
        /* in range, and no subnormal output for a normal input */
        if (fabsf(t[i]) > 1.0f || !(s[i] >= 0.0f && s[i] <= 1.0f)) *bad += 1;
        if (fabsf(x[i]) >= FLT_MIN && (s[i] < FLT_MIN || (t[i] != 0.0f && fabsf(t[i]) < FLT_MIN)))
            *bad += 1;
    }
}

static void sweep(uint32_t stride)
{
    Worst wt = {0, 0}, ws = {0, 0}, we = {0, 0};
    int bad = 0, n = 0;
    float x[BLOCK];
    const uint32_t top = 0x42b00000u;   /* 88.0f: everything above saturates */
    for (uint32_t b = 0; b < top; b += stride) {
        x[n++] = from_bits(b);
        x[n++] = from_bits(b | 0x80000000u);
        if (n == BLOCK) { sweep_block(x, n, &wt, &ws, &we, &bad); n = 0; }
    }
    sweep_block(x, n, &wt, &ws, &we, &bad);
    printf("tanh %.2f ulp (x = %g), sigmoid %.2f ulp (x = %g), exp %.2f ulp (x = %g)\n",
           wt.worst, wt.at, ws.worst, ws.at, we.worst, we.at);
    CHECK(wt.worst <= TANH_ULP, "tanh error %.2f ulp at %g", wt.worst, wt.at);
    CHECK(ws.worst <= SIGMOID_ULP, "sigmoid error %.2f ulp at %g", ws.worst, ws.at);
    CHECK(we.worst <= EXP_ULP, "exp error %.2f ulp at %g", we.worst, we.at);
    CHECK(bad == 0, "%d outputs out of range or subnormal", bad);
}

static void edges(void)
{
    float x[10] = {0.0f, -0.0f, NAN, INFINITY, -INFINITY, 100.0f, -100.0f, 1e-40f, -1e-40f, 9.0f};
    float t[10], s[10];
    fr_tanh_row_f(x, t, 10);
    fr_sigmoid_row_f(x, s, 10);
    CHECK(t[0] == 0.0f && !signbit(t[0]) && t[1] == 0.0f && signbit(t[1]), "tanh(+-0) = +-0");
    CHECK(isnan(t[2]) && isnan(s[2]) && isnan(fr_expf(NAN)), "NaN in, NaN out");
    CHECK(t[3] == 1.0f && t[4] == -1.0f && t[5] == 1.0f && t[6] == -1.0f, "tanh saturates at +-1");
    CHECK(s[3] == 1.0f && s[5] == 1.0f, "sigmoid(+big) = 1");
    CHECK(s[4] > 0.0f && s[4] >= FLT_MIN && s[6] == s[4], "sigmoid(-big) held at the smallest normal range");
    CHECK(t[7] == x[7] && t[8] == x[8], "tanh(subnormal) = x");
    CHECK(s[0] == 0.5f && s[1] == 0.5f, "sigmoid(0) = 1/2");
    CHECK(fr_expf(0.0f) == 1.0f && fr_expf(-INFINITY) > 0.0f && isfinite(fr_expf(INFINITY)), "exp edges");
    /* the scalar functions and the rows agree bit for bit */
    for (int i = 0; i < 10; i++)
        CHECK((isnan(t[i]) && isnan(fr_tanhf(x[i]))) || memcmp(&t[i], &(float){fr_tanhf(x[i])}, 4) == 0,
              "row and scalar tanh differ at %g", x[i]);
}

int main(int argc, char **argv)
{
    uint32_t stride = argc > 1 ? (uint32_t)strtoul(argv[1], NULL, 10) : 61;
    edges();
    sweep(stride ? stride : 1);
    printf("fr_math: vector %d bytes: %s\n", VECTOR_BYTES, failures ? "FAILED" : "all passed");
    return failures ? 1 : 0;
}
