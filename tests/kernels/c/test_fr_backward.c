/* C-level tests of fr_backward.h (the recurrent backward sweep's loops).
 *
 * Built and run by tests/kernels/test_fr_backward_c.py at each x86-64 level.
 * fr_sweep_gemm promises fr_packed_gemm's bits (only its row tiles differ),
 * so it is compared for exact equality, on every row count up to a few
 * tiles and on operands with leading dimensions wider than the product.
 * Prints one line per failure and exits 1 if any check failed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fr_backward.h"

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

static unsigned long long rng_state = 2024;

static double uniform(void)   /* in [-1, 1) */
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(rng_state >> 11) / (double)(1ULL << 52) - 1.0;
}

/* fr_sweep_gemm == fr_packed_gemm bit for bit; lda, ldc wider than k, n. */
#define SWEEP_TEST(NAME, SUF, T)                                                 \
static void NAME(int m, int n, int k)                                           \
{                                                                               \
    int lda = k + 3, ldc = n + 5;                                               \
    T *a = malloc(sizeof(T) * m * lda), *b = malloc(sizeof(T) * k * n);         \
    T *c1 = malloc(sizeof(T) * m * ldc), *c2 = malloc(sizeof(T) * m * ldc);     \
    T *packed = malloc(sizeof(T) * fr_packed_size_##SUF(k, n));                 \
    for (int i = 0; i < m * lda; i++) a[i] = (T)uniform();                      \
    for (int i = 0; i < k * n; i++) b[i] = (T)uniform();                        \
    for (int i = 0; i < m * ldc; i++) c1[i] = c2[i] = (T)uniform();             \
    fr_pack_##SUF(k, n, b, (size_t)n, 1, packed);                               \
    fr_packed_gemm_##SUF(m, n, k, a, lda, packed, c1, ldc);                     \
    fr_sweep_gemm_##SUF(m, n, k, a, lda, packed, c2, ldc);                      \
    CHECK(memcmp(c1, c2, sizeof(T) * m * ldc) == 0,                             \
          #SUF " sweep gemm m=%d n=%d k=%d differs from fr_packed_gemm", m, n, k); \
    free(a); free(b); free(c1); free(c2); free(packed);                         \
}
SWEEP_TEST(sweep_test_f, f, float)
SWEEP_TEST(sweep_test_d, d, double)

int main(void)
{
    static const int nk[][2] = {{17, 3}, {2 * FR_NR_f + 1, FR_KC + 7}, {64, 40}};
    for (int m = 1; m <= 4 * FR_MR + 3; m++)
        for (size_t s = 0; s < sizeof nk / sizeof nk[0]; s++) {
            sweep_test_f(m, nk[s][0], nk[s][1]);
            sweep_test_d(m, nk[s][0], nk[s][1]);
        }
    sweep_test_f(64, 256, 1024);
    printf("fr backward: vector %d bytes, MR %d: %s\n", FR_VECTOR_BYTES, FR_MR,
           failures ? "FAILED" : "all passed");
    return failures ? 1 : 0;
}
