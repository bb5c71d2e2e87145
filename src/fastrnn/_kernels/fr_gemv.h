/* Small-batch products with the packed weights of fr_gemm.h, the barrier
 * of the column-split recurrence and the hand-off of the pipelined one.
 *
 * With one or two rows, fr_gemm.h's micro-tile keeps only 2 or 4
 * accumulator chains: each waits for the previous fused multiply-add (4
 * cycles on Zen 3), so the tile runs at a quarter of the FMA rate.  Here
 * several panels are walked together (8 chains), which makes the product
 * bound by the weight stream instead; with 3 or 4 rows (AVX-512 only) two
 * panels at a time keep two weight streams in flight.
 *
 * The sums are those of fr_packed_gemm exactly: every column is accumulated
 * over p in the same order, in the same K blocks of FR_KC, starting from the
 * product of step 0, and added to C (or to the bias row) once per block;
 * which panels are walked together does not touch any column's sequence of
 * operations.  So a caller may switch between
 * the two (by row count, by thread split of the columns) and get the same
 * bits.
 */
#ifndef FASTRNN_FR_GEMV_H
#define FASTRNN_FR_GEMV_H

#include "fr_gemm.h"

/* Rows that walk several panels together: 1 row four panels, 2 rows two;
 * with 32 vector registers (AVX-512) also 3 and 4 rows two panels (16
 * accumulators and 4 panel vectors; with 16 registers they would spill). */
#if FR_VECTOR_BYTES >= 64
#define FR_SMALL_ROWS 4
#else
#define FR_SMALL_ROWS 2
#endif

#define FR_DEFINE_GEMV(SUF, T, V, LANES)                                       \
                                                                               \
/* C[mr x (np panels)] = base + A[mr x kc] @ np full panels (np * NR         \
 * columns), kc >= 1; base as in fr_tile (C, or a bias row with stride 0). */ \
static inline __attribute__((always_inline)) void fr_multi_tile_##SUF(        \
    const int mr, const int np, int kc, const T *A, int lda, const T *panel,   \
    size_t panel_stride, const T *base, size_t base_ld, T *C, int ldc)         \
{                                                                              \
    V acc[4][4][2];                                                            \
    for (int q = 0; q < np; q++) {   /* step p = 0 sets the accumulators */    \
        V b0 = fr_load_##SUF(panel + q * panel_stride);                        \
        V b1 = fr_load_##SUF(panel + q * panel_stride + LANES);                \
        for (int i = 0; i < mr; i++) {                                         \
            acc[i][q][0] = A[(size_t)i * lda] * b0;                            \
            acc[i][q][1] = A[(size_t)i * lda] * b1;                            \
        }                                                                      \
    }                                                                          \
    for (int p = 1; p < kc; p++) {                                             \
        for (int q = 0; q < np; q++) {                                         \
            const T *b = panel + q * panel_stride + (size_t)p * 2 * LANES;     \
            V b0 = fr_load_##SUF(b);                                           \
            V b1 = fr_load_##SUF(b + LANES);                                   \
            for (int i = 0; i < mr; i++) {                                     \
                T a = A[(size_t)i * lda + p];                                  \
                acc[i][q][0] += a * b0;                                        \
                acc[i][q][1] += a * b1;                                        \
            }                                                                  \
        }                                                                      \
    }                                                                          \
    for (int i = 0; i < mr; i++)                                               \
        for (int q = 0; q < np; q++) {                                         \
            const T *s = base + i * base_ld + q * 2 * LANES;                   \
            T *c = C + (size_t)i * ldc + q * 2 * LANES;                        \
            fr_store_##SUF(c, fr_load_##SUF(s) + acc[i][q][0]);                \
            fr_store_##SUF(c + LANES, fr_load_##SUF(s + LANES) + acc[i][q][1]); \
        }                                                                      \
}                                                                              \
                                                                               \
/* fr_packed_gemm (bias as there) for m <= FR_SMALL_ROWS rows: 4 (m = 1) or  \
 * 2 full panels at a time, the remaining panels through the ordinary tile.   \
 * Walking two panels with 3 or 4 rows (AVX-512) keeps two weight streams in  \
 * flight: LSTM (200, 3, 128) inference 1.84 -> 1.72 ms, (200, 4, 256) 7.91   \
 * -> 7.81 ms on 1 thread (Zen 4). */                                         \
static inline void fr_small_gemm_##SUF(int m, int n, int k, const T *A,        \
                                       int lda, const T *packed,               \
                                       const T *bias, T *C, int ldc)           \
{                                                                              \
    const int nr = FR_NR_##SUF;                                                \
    const int group = m == 1 ? 4 : 2;                                          \
    const int full = n / nr;                                                   \
    int q = 0;                                                                 \
    if (m > FR_SMALL_ROWS || k <= 0) {                                         \
        fr_packed_gemm_##SUF(m, n, k, A, lda, packed, bias, C, ldc);           \
        return;                                                                \
    }                                                                          \
    for (; q + group <= full; q += group) {                                    \
        const T *panel = packed + (size_t)q * k * nr;                          \
        for (int k0 = 0; k0 < k; k0 += FR_KC) {                               \
            int kc = k - k0 < FR_KC ? k - k0 : FR_KC;                          \
            int from_bias = bias != NULL && k0 == 0;                           \
            const T *base = from_bias ? bias + q * nr : C + q * nr;            \
            size_t base_ld = from_bias ? 0 : (size_t)ldc;                      \
            if (m == 1)                                                        \
                fr_multi_tile_##SUF(1, 4, kc, A + k0, lda, panel + (size_t)k0 * nr, \
                                    (size_t)k * nr, base, base_ld, C + q * nr, ldc); \
            else if (m == 2 || FR_SMALL_ROWS == 2)                             \
                fr_multi_tile_##SUF(2, 2, kc, A + k0, lda, panel + (size_t)k0 * nr, \
                                    (size_t)k * nr, base, base_ld, C + q * nr, ldc); \
            else if (m == 3)                                                   \
                fr_multi_tile_##SUF(3, 2, kc, A + k0, lda, panel + (size_t)k0 * nr, \
                                    (size_t)k * nr, base, base_ld, C + q * nr, ldc); \
            else                                                               \
                fr_multi_tile_##SUF(4, 2, kc, A + k0, lda, panel + (size_t)k0 * nr, \
                                    (size_t)k * nr, base, base_ld, C + q * nr, ldc); \
        }                                                                      \
    }                                                                          \
    if (q * nr < n)                                                            \
        fr_packed_gemm_##SUF(m, n - q * nr, k, A, lda, packed + (size_t)q * k * nr, \
                             bias != NULL ? bias + q * nr : NULL, C + q * nr, ldc); \
}

FR_DEFINE_GEMV(f, float, fr_vf, FR_VECTOR_BYTES / 4)
FR_DEFINE_GEMV(d, double, fr_vd, FR_VECTOR_BYTES / 8)

#undef FR_DEFINE_GEMV

/* The team barrier of the column-split recurrence: called by every thread
 * of the enclosing parallel region (an orphaned barrier binds to it). */
static inline void fr_team_barrier(void)
{
#ifdef _OPENMP
    _Pragma("omp barrier")
#endif
}

/* The hand-off of a pipelined inference (the threads of one parallel
 * region): a helper thread claims blocks of input products ahead and makes
 * block j in its buffer j % 2 while the consumer runs the recurrence over
 * the block before.  The consumer never waits: a block no one has claimed
 * when it gets there (a helper still waking up), or one the helper has
 * claimed but not finished, it makes itself in a third buffer, its own; it
 * never writes the helper's two.  The counts only grow: `next` is the first
 * block not claimed, `done` the blocks the consumer has finished, made[b]
 * one past the last block made in buffer b; release / acquire order a
 * buffer's contents with its count.  `reading` (the consumer's alone) is
 * the buffer of its current block. */
typedef struct { int next; int done; int made[2]; int reading; } fr_pipe;

static inline void fr_pipe_publish(int *count, int value)
{
    __atomic_store_n(count, value, __ATOMIC_RELEASE);
}

static inline int fr_pipe_read(const int *count)
{
    return __atomic_load_n(count, __ATOMIC_ACQUIRE);
}

static inline void fr_pipe_wait(const int *count, int value)
{
    while (fr_pipe_read(count) < value) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();   /* spin politely: frees the core's other thread */
#elif defined(__aarch64__)
        __asm__ __volatile__("yield");
#endif
    }
}

/* 1 if this thread now owns block j (no one had claimed it), else 0. */
static inline int fr_pipe_claim(fr_pipe *pipe, int j)
{
    int expected = j;
    return __atomic_compare_exchange_n(&pipe->next, &expected, j + 1, 0,
                                       __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

#ifdef _OPENMP
#include <omp.h>
static inline int fr_thread_num(void) { return omp_get_thread_num(); }
static inline int fr_team_size(void) { return omp_get_num_threads(); }
#else
static inline int fr_thread_num(void) { return 0; }
static inline int fr_team_size(void) { return 1; }
#endif

#endif
