/* C-level tests of fastrnn's kernel headers (fr_gemm.h, fr_math.h).
 *
 * Built and run by tests/test_c_kernels.py: natively, and cross-compiled for
 * aarch64 and run under qemu-aarch64 (no arm64 machine is at hand), so the
 * NEON baseline is tested too.  Prints one line per failure and exits 1 if
 * any check failed.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "fr_gemm.h"
#include "fr_math.h"

static int failures = 0;

#define CHECK(cond, ...)                                         \
    do {                                                         \
        if (!(cond)) {                                           \
            failures++;                                          \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);          \
            printf(__VA_ARGS__);                                 \
            printf("\n");                                        \
        }                                                        \
    } while (0)

static unsigned long long rng_state = 12345;

static double uniform(void)   /* in [-1, 1) */
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(rng_state >> 11) / (double)(1ULL << 52) - 1.0;
}

/* C += A @ B (or, with_bias, C = bias + A @ B: C's old values, NaN here,
 * must not be read) through pack + packed GEMM, against a double-precision
 * loop; B given directly or as B^T (how the recurrent kernels read W_hh). */
#define GEMM_TEST(NAME, SUF, T, TOL)                                          \
static void NAME(int m, int n, int k, int transposed, int with_bias)         \
{                                                                            \
    T *a = malloc(sizeof(T) * m * k + 1), *b = malloc(sizeof(T) * k * n + 1); \
    T *c = malloc(sizeof(T) * m * n), *bias = malloc(sizeof(T) * n);         \
    double *ref = malloc(sizeof(double) * m * n);                            \
    T *packed = malloc(sizeof(T) * fr_packed_size_##SUF(k, n) + 1);          \
    for (int i = 0; i < m * k; i++) a[i] = (T)uniform();                     \
    for (int i = 0; i < k * n; i++) b[i] = (T)uniform();                     \
    for (int j = 0; j < n; j++) bias[j] = (T)uniform();                      \
    for (int i = 0; i < m * n; i++) {                                        \
        c[i] = with_bias ? (T)NAN : (T)uniform();                            \
        ref[i] = with_bias ? bias[i % n] : c[i];                             \
    }                                                                        \
    for (int i = 0; i < m; i++)                                              \
        for (int j = 0; j < n; j++)                                          \
            for (int p = 0; p < k; p++)                                      \
                ref[i * n + j] += (double)a[i * k + p] * b[p * n + j];       \
    if (transposed) {                                                        \
        T *bt = malloc(sizeof(T) * k * n);                                   \
        for (int p = 0; p < k; p++)                                          \
            for (int j = 0; j < n; j++) bt[j * k + p] = b[p * n + j];        \
        fr_pack_##SUF(k, n, bt, 1, (size_t)k, packed);                       \
        free(bt);                                                            \
    } else {                                                                 \
        fr_pack_##SUF(k, n, b, (size_t)n, 1, packed);                        \
    }                                                                        \
    fr_packed_gemm_##SUF(m, n, k, a, k, packed, with_bias ? bias : NULL, c, n); \
    double worst = 0;                                                        \
    for (int i = 0; i < m * n; i++) {                                        \
        double err = fabs(c[i] - ref[i]) / (1.0 + fabs(ref[i]));             \
        worst = err > worst ? err : worst;                                   \
    }                                                                        \
    CHECK(worst < (TOL) * sqrt((double)k + 1), #SUF " gemm m=%d n=%d k=%d t=%d " \
          "bias=%d: error %g", m, n, k, transposed, with_bias, worst);        \
    free(a); free(b); free(c); free(bias); free(ref); free(packed);          \
}
GEMM_TEST(gemm_test_f, f, float, 1e-6)
GEMM_TEST(gemm_test_d, d, double, 1e-14)

/* C1 += A^T B1 through fr_gemm_tn (n2 = 0), or C1 += A^T B1 and C2 += A^T B2
 * through one fr_gemm_tn_pair, A (k x m) and each B read from wider rows
 * (lda = m + 3, ldb = n + 2 or n + 1), and each C's columns past its n left
 * alone. */
#define GEMM_TN_TEST(NAME, SUF, T, TOL)                                       \
static void NAME(int m, int n1, int n2, int k)                               \
{                                                                            \
    int lda = m + 3, sides = n2 > 0 ? 2 : 1;                                 \
    int n[2] = {n1, n2}, ldb[2] = {n1 + 2, n2 + 1}, ldc[2] = {n1 + 1, n2 + 3}; \
    T *a = malloc(sizeof(T) * k * lda + 1), *b[2], *c[2];                    \
    double *ref[2];                                                          \
    T *work = malloc(sizeof(T) * fr_gemm_tn_work_##SUF(m, n1 > n2 ? n1 : n2)); \
    for (int i = 0; i < k * lda; i++) a[i] = (T)uniform();                   \
    for (int s = 0; s < 2; s++) {                                            \
        b[s] = malloc(sizeof(T) * k * ldb[s] + 1);                           \
        c[s] = malloc(sizeof(T) * m * ldc[s] + 1);                           \
        ref[s] = malloc(sizeof(double) * m * ldc[s] + 1);                    \
        for (int i = 0; i < k * ldb[s]; i++) b[s][i] = (T)uniform();         \
        for (int i = 0; i < m * ldc[s]; i++) ref[s][i] = c[s][i] = (T)uniform(); \
        for (int i = 0; i < m; i++)                                          \
            for (int j = 0; j < n[s]; j++)                                   \
                for (int p = 0; p < k && s < sides; p++)                     \
                    ref[s][i * ldc[s] + j] += (double)a[p * lda + i] * b[s][p * ldb[s] + j]; \
    }                                                                        \
    if (n2 > 0)                                                              \
        fr_gemm_tn_pair_##SUF(m, k, a, lda, n1, b[0], ldb[0], c[0], ldc[0],  \
                              n2, b[1], ldb[1], c[1], ldc[1], work);         \
    else                                                                     \
        fr_gemm_tn_##SUF(m, n1, k, a, lda, b[0], ldb[0], c[0], ldc[0], work); \
    for (int s = 0; s < 2; s++) {                                            \
        double worst = 0;                                                    \
        int outside = 0;                                                     \
        for (int i = 0; i < m; i++)                                          \
            for (int j = 0; j < ldc[s]; j++) {                               \
                double want = ref[s][i * ldc[s] + j];                        \
                double err = fabs(c[s][i * ldc[s] + j] - want) / (1.0 + fabs(want)); \
                if (j < n[s]) worst = err > worst ? err : worst;             \
                else outside += c[s][i * ldc[s] + j] != (T)want;             \
            }                                                                \
        CHECK(worst < (TOL) * sqrt((double)k + 1) && outside == 0, #SUF " gemm_tn " \
              "m=%d n1=%d n2=%d k=%d, C%d: error %g, %d values past n changed", \
              m, n1, n2, k, s + 1, worst, outside);                          \
        free(b[s]); free(c[s]); free(ref[s]);                                \
    }                                                                        \
    free(a); free(work);                                                     \
}
GEMM_TN_TEST(gemm_tn_test_f, f, float, 1e-6)
GEMM_TN_TEST(gemm_tn_test_d, d, double, 1e-14)

/* The transposed pack (a weight matrix read as B^T) around the vector
 * width: whole blocks go through the in-register transpose. */
static void test_transposed_pack_layout(void)
{
    const int nr = FR_NR_f;
    for (int k = 1; k <= 2 * nr + 3; k += 3)
        for (int n = 1; n <= 2 * nr + 1; n += nr / 2 + 1) {
            float *w = malloc(sizeof(float) * n * k), *packed =
                malloc(sizeof(float) * fr_packed_size_f(k, n));
            for (int i = 0; i < n * k; i++) w[i] = (float)(i + 1);
            fr_pack_f(k, n, w, 1, (size_t)k, packed);    /* B[p][j] = w[j][p] */
            int wrong = 0;
            for (int q = 0; q * nr < n; q++)
                for (int p = 0; p < k; p++)
                    for (int j = 0; j < nr; j++) {
                        int col = q * nr + j;
                        float want = col < n ? w[col * k + p] : 0.0f;
                        wrong += packed[((size_t)q * k + p) * nr + j] != want;
                    }
            CHECK(wrong == 0, "transposed pack k=%d n=%d: %d values wrong", k, n, wrong);
            free(w); free(packed);
        }
}

static void test_pack_layout(void)
{
    /* Panels of NR columns, K rows each, zero past N. */
    const int k = 3, n = FR_NR_f + 5, nr = FR_NR_f;
    float b[3 * (64 + 5)], packed[3 * 2 * 64];
    for (int i = 0; i < k * n; i++) b[i] = (float)(i + 1);
    CHECK(fr_packed_size_f(k, n) == (size_t)(2 * k * nr), "packed size");
    fr_pack_f(k, n, b, (size_t)n, 1, packed);
    for (int q = 0; q < 2; q++)
        for (int p = 0; p < k; p++)
            for (int j = 0; j < nr; j++) {
                int col = q * nr + j;
                float want = col < n ? b[p * n + col] : 0.0f;
                CHECK(packed[(q * k + p) * nr + j] == want, "pack q=%d p=%d j=%d", q, p, j);
            }
}

static void test_math(void)
{
    /* The float32 nonlinearities within a few ulp of double libm. */
    double worst_tanh = 0, worst_sig = 0, worst_exp = 0;
    for (int i = -200000; i <= 200000; i++) {
        float x = (float)i * 1e-4f;
        double t = tanh((double)x), s = 1.0 / (1.0 + exp(-(double)x));
        double e = exp((double)x);
        double et = fabs(fr_tanhf(x) - t) / (fabs(t) + 1e-30);
        double es = fabs(fr_sigmoidf(x) - s) / s;
        double ee = fabs(fr_expf(x) - e) / e;
        if (x != 0.0f) worst_tanh = et > worst_tanh ? et : worst_tanh;
        worst_sig = es > worst_sig ? es : worst_sig;
        worst_exp = ee > worst_exp ? ee : worst_exp;
    }
    CHECK(worst_tanh < 4e-7, "tanh relative error %g", worst_tanh);
    CHECK(worst_sig < 4e-7, "sigmoid relative error %g", worst_sig);
    CHECK(worst_exp < 4e-7, "exp relative error %g", worst_exp);
    CHECK(fr_tanhf(100.0f) == 1.0f && fr_tanhf(-100.0f) == -1.0f, "tanh saturation");
    CHECK(fr_sigmoidf(-100.0f) >= 0.0f && fr_sigmoidf(100.0f) == 1.0f, "sigmoid saturation");
    float row[5] = {0.5f, -1.0f, 2.0f, 0.0f, 3.0f};
    CHECK(fr_all_finite_f(row, 5) == 1, "all finite");
    row[3] = NAN;
    CHECK(fr_all_finite_f(row, 5) == 0, "NaN found");
    row[3] = INFINITY;
    CHECK(fr_all_finite_f(row, 5) == 0, "inf found");
}

int main(void)
{
    /* {130, 40, 300}: several row blocks of FR_BLOCK_BYTES; k = 0 leaves C
     * (or sets it to the bias). */
    static const int shapes[][3] = {{1, 1, 1}, {5, 17, 3}, {13, 40, 31}, {8, 64, 300},
                                    {7, 33, 257}, {FR_MR + 1, 2 * FR_NR_f + 1, FR_KC + 1},
                                    {130, 40, 300}, {3, 5, 0}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int t = 0; t < 2; t++)
            for (int with_bias = 0; with_bias < 2; with_bias++) {
                gemm_test_f(shapes[s][0], shapes[s][1], shapes[s][2], t, with_bias);
                gemm_test_d(shapes[s][0], shapes[s][1], shapes[s][2], t, with_bias);
            }
    /* A^T B alone and paired: tails of every tile, panel and K block; m past
     * FR_MC_TN; the second product narrower or wider than the first; 1-3
     * rows in the last A panel and an odd row count in the last K block
     * (fr_pack_tn_a packs rows in pairs). */
    static const int tn_shapes[][4] = {{1, 1, 0, 1}, {1, FR_NR_f, 0, 5}, {5, 17, 0, 3},
                                       {3 * FR_MR + 1, 33, 0, 2 * FR_KC_TN + 3},
                                       {2 * FR_MR + 3, 9, 17, 5},
                                       {FR_MC_TN + FR_MR + 2, 40, 0, 7},
                                       {FR_NR_f + 3, 2 * FR_NR_f + 1, 0, FR_KC_TN + 1},
                                       {FR_MC_TN + 20, 40, 0, 300}, {64, 64, 0, 2 * FR_KC_TN},
                                       {3, 5, 0, 0}, {1, 1, 1, 1}, {5, 17, 3, 3},
                                       {FR_NR_f + 3, 2 * FR_NR_f + 1, FR_NR_f - 1, FR_KC_TN + 1},
                                       {FR_MC_TN + 20, 40, 3 * FR_NR_f + 2, 300},
                                       {64, 64, 64, 2 * FR_KC_TN}, {3, 5, 7, 0}};
    for (size_t s = 0; s < sizeof tn_shapes / sizeof tn_shapes[0]; s++) {
        gemm_tn_test_f(tn_shapes[s][0], tn_shapes[s][1], tn_shapes[s][2], tn_shapes[s][3]);
        gemm_tn_test_d(tn_shapes[s][0], tn_shapes[s][1], tn_shapes[s][2], tn_shapes[s][3]);
    }
    test_pack_layout();
    test_transposed_pack_layout();
    test_math();
    printf("fr kernels: vector %d bytes, MR %d, NR %d floats: %s\n", FR_VECTOR_BYTES,
           FR_MR, FR_NR_f, failures ? "FAILED" : "all passed");
    return failures ? 1 : 0;
}
