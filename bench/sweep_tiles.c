/* fr_sweep_gemm (fr_backward.h, balanced row tiles) against fr_packed_gemm
 * (fr_gemm.h) on the recurrent products' shapes, one thread, interleaved,
 * best of 300 calls each (issue 18):
 *
 *   gcc -O3 -march=x86-64-v3 -fno-math-errno -fno-trapping-math \
 *       -I src/fastrnn/_kernels bench/sweep_tiles.c -o /tmp/sweep_tiles && /tmp/sweep_tiles
 *
 * m = 32 is a 64-row batch on 2 threads (or a 32-row batch on 1); n x k is
 * H x G*H for the backward product and G*H x H for the forward one.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "fr_backward.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

int main(void)
{
    static const int shapes[][3] = {{32, 256, 1024}, {64, 256, 1024}, {32, 512, 2048},
                                    {16, 512, 2048}, {32, 1024, 256}, {32, 256, 256}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
        float *a = malloc(sizeof(float) * m * k), *b = malloc(sizeof(float) * k * n);
        float *c = calloc((size_t)m * n, sizeof(float));
        float *packed = malloc(sizeof(float) * fr_packed_size_f(k, n));
        for (long i = 0; i < (long)m * k; i++) a[i] = (float)(i % 7) * 0.1f;
        for (long i = 0; i < (long)k * n; i++) b[i] = (float)(i % 5) * 0.1f;
        fr_pack_f(k, n, b, (size_t)n, 1, packed);
        double plain = 1e9, balanced = 1e9;
        for (int r = 0; r < 300; r++) {
            double t0 = now();
            fr_packed_gemm_f(m, n, k, a, k, packed, c, n);
            double t1 = now();
            fr_sweep_gemm_f(m, n, k, a, k, packed, c, n);
            double t2 = now();
            plain = t1 - t0 < plain ? t1 - t0 : plain;
            balanced = t2 - t1 < balanced ? t2 - t1 : balanced;
        }
        double flops = 2.0 * m * n * k;
        printf("m=%2d n=%4d k=%4d: fr_packed_gemm %5.1f GFLOP/s, fr_sweep_gemm %5.1f "
               "GFLOP/s (time x%.3f)\n", m, n, k, flops / plain / 1e9,
               flops / balanced / 1e9, balanced / plain);
        free(a); free(b); free(c); free(packed);
    }
    return 0;
}
