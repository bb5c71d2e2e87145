/* The recurrent product with a pre-packed weight matrix.
 *
 * Every timestep multiplies a few batch rows by the same W_hh.  A BLAS call
 * re-packs W_hh on every call (a full pass over the weights per timestep) and
 * pays call overhead that dominates at small sizes; here W_hh is packed once
 * per sequence into column panels and a register-blocked micro-kernel does
 * C[m x N] += A[m x K] @ B[K x N], B being the packed weights.
 *
 * Panels hold NR columns (two vector registers: 32 floats with AVX-512, 16
 * with AVX2, 8 with SSE), K rows each, zero-padded past N.  GCC vector
 * extensions keep the code portable across those instruction sets.  The
 * micro-kernel keeps MR x NR accumulators in registers.
 */
#ifndef FASTRNN_FR_GEMM_H
#define FASTRNN_FR_GEMM_H

#include <stdlib.h>
#include <string.h>

/* Vector width and rows per micro-tile follow the instruction set the
 * kernels are compiled for: MR x 2 vectors of accumulators plus the two B
 * vectors must fit the register file (32 zmm with AVX-512, 16 ymm with AVX2,
 * 16 xmm with SSE).  On AVX-512, MR = 8 measured 160-172 GFLOP/s against
 * 130-158 for MR = 6 at batch chunks of 16-64 rows (a large OpenBLAS GEMM
 * reaches about 170 on that core). */
#if defined(__AVX512F__)
#define FR_VECTOR_BYTES 64
#define FR_MR 8
#elif defined(__AVX__)
#define FR_VECTOR_BYTES 32
#define FR_MR 6
#else
#define FR_VECTOR_BYTES 16
#define FR_MR 6
#endif
#define FR_KC 256       /* K block: a panel slice of KC x NR stays in L1 */
#ifndef FR_KC_TN
#define FR_KC_TN 256    /* K block of fr_gemm_tn */
#endif
#ifndef FR_MC_TN
#define FR_MC_TN 256    /* columns of A per packed block in fr_gemm_tn */
#endif
/* Elements from one of fr_gemm_tn's A panels to the next (fr_pack_tn_a): kc
 * rows of FR_MR values and a skew of 16 elements, so that successive panels
 * do not start in the same L1 sets (kc * FR_MR floats apart is a multiple of
 * 4 KB; in a standalone C copy of fr_gemm_tn at 1024 x 256 over 6336 rows,
 * AVX2, the skew took it from 33.5 to 33.1 ms). */
#define FR_TN_A_PANEL(kc) ((size_t)(kc) * FR_MR + 16)
#ifndef FR_BLOCK_BYTES
#define FR_BLOCK_BYTES (64 * 1024)  /* rows of A per block: see fr_packed_gemm */
#endif
#define FR_ROWS(r) ((r) < FR_MR ? (r) : FR_MR)   /* cases past FR_MR are unreachable */

/* Rows of the next micro-tile when `left` rows remain.  A tile of fewer
 * than 4 rows keeps fewer than 8 accumulator chains, too few to hide the FMA
 * latency (4 cycles, 2 pipes), so a short remainder is not left to the last
 * tile: FR_MR + r rows (r < 4) become two tiles of about half each (32 rows
 * with FR_MR = 6: 6,6,6,6,4,4 instead of 6,6,6,6,6,2).  Each row's sums do
 * not depend on which tile holds it, so the split changes no result. */
static inline int fr_tile_rows(int left)
{
    if (left <= FR_MR) return left;
    if (left < FR_MR + 4) return (left + 1) / 2;
    return FR_MR;
}

/* TILE(rows, ...) with rows a constant in each case, for mr = 1 .. FR_MR. */
#define FR_TILE_SWITCH(TILE, mr, ...)                                          \
    switch (mr) {                                                              \
    case 1: TILE(FR_ROWS(1), __VA_ARGS__); break;                              \
    case 2: TILE(FR_ROWS(2), __VA_ARGS__); break;                              \
    case 3: TILE(FR_ROWS(3), __VA_ARGS__); break;                              \
    case 4: TILE(FR_ROWS(4), __VA_ARGS__); break;                              \
    case 5: TILE(FR_ROWS(5), __VA_ARGS__); break;                              \
    case 6: TILE(FR_ROWS(6), __VA_ARGS__); break;                              \
    case 7: TILE(FR_ROWS(7), __VA_ARGS__); break;                              \
    default: TILE(FR_MR, __VA_ARGS__); break;                                  \
    }

typedef float fr_vf __attribute__((vector_size(FR_VECTOR_BYTES)));
typedef double fr_vd __attribute__((vector_size(FR_VECTOR_BYTES)));

#define FR_DEFINE_PACKED_GEMM(SUF, T, V, LANES)                                \
                                                                               \
enum { FR_NR_##SUF = 2 * LANES };                                              \
                                                                               \
static inline V fr_load_##SUF(const T *p) { V v; memcpy(&v, p, sizeof v); return v; } \
static inline void fr_store_##SUF(T *p, V v) { memcpy(p, &v, sizeof v); }      \
                                                                               \
/* Size (elements) of B[K x N] packed into panels. */                          \
static inline size_t fr_packed_size_##SUF(int k, int n)                        \
{                                                                              \
    size_t panels = (size_t)(n + FR_NR_##SUF - 1) / FR_NR_##SUF;              \
    return panels * (size_t)k * FR_NR_##SUF;                                   \
}                                                                              \
                                                                               \
/* Transpose the LANES x LANES block in rows[] in registers: each round     \
 * interleaves row i with row i + LANES/2 (lo halves into row 2i, hi halves   \
 * into row 2i + 1); after log2(LANES) rounds row p holds column p.  The      \
 * masks fold to constants, so each interleave is one or two shuffles. */     \
static inline __attribute__((always_inline)) void fr_transpose_##SUF(V *rows)  \
{                                                                              \
    typedef __typeof__(rows[0] < rows[0]) M;    /* lane indices */             \
    M lo, hi;                                                                  \
    for (int e = 0; e < LANES; e++) {                                          \
        lo[e] = (e % 2 ? LANES : 0) + e / 2;                                   \
        hi[e] = (e % 2 ? LANES : 0) + LANES / 2 + e / 2;                       \
    }                                                                          \
    for (int round = 1; round < LANES; round *= 2) {                           \
        V next[LANES];                                                         \
        for (int i = 0; i < LANES / 2; i++) {                                  \
            next[2 * i] = __builtin_shuffle(rows[i], rows[i + LANES / 2], lo); \
            next[2 * i + 1] = __builtin_shuffle(rows[i], rows[i + LANES / 2], hi); \
        }                                                                      \
        for (int i = 0; i < LANES; i++) rows[i] = next[i];                     \
    }                                                                          \
}                                                                              \
                                                                               \
/* The full panels of a row-major B (s_j = 1) in one pass along its rows:   \
 * each row is read once, front to back, into the panels' rows.  Panel by     \
 * panel instead, a 1 KB row of the weight gradients' dG was read in eight    \
 * 128-byte pieces, one per pass over all K rows: fr_gemm_tn at 6400 x 1024   \
 * x 256 took 33.3 ms against 32.3 now (Zen 4, 1 thread).  Returns the number \
 * of panels packed. */                                                       \
static inline int fr_pack_rows_##SUF(int k, int n, const T *src, size_t s_p,   \
                                     T *packed)                                \
{                                                                              \
    const int nr = FR_NR_##SUF, full = n / nr;                                 \
    for (int p = 0; p < k; p++)                                                \
        for (int q = 0; q < full; q++)                                         \
            for (int j = 0; j < nr; j++)                                       \
                packed[((size_t)q * k + p) * nr + j] =                         \
                    src[(size_t)p * s_p + (size_t)q * nr + j];                 \
    return full;                                                               \
}                                                                              \
                                                                               \
/* Pack B (K x N) where B[p][j] = src[p * s_p + j * s_j]: row-major B is      \
 * (s_p, s_j) = (ldb, 1); the transpose of a row-major (N x K) matrix is      \
 * (1, ld).  Panel q holds columns [q*NR, q*NR + NR) as K rows of NR, zeros   \
 * past N.  Every layer call packs its weights, transposed: copied element    \
 * by element that was a fifth of an LSTM(64) call on one step; full panels   \
 * now go as row copies (s_j = 1, fr_pack_rows) or blocks transposed in       \
 * registers. */                                                              \
static inline void fr_pack_##SUF(int k, int n, const T *src, size_t s_p,       \
                                 size_t s_j, T *packed)                        \
{                                                                              \
    const int nr = FR_NR_##SUF;                                                \
    int q0 = s_j == 1 ? fr_pack_rows_##SUF(k, n, src, s_p, packed) : 0;        \
    for (int q = q0; q * nr < n; q++) {                                        \
        T *panel = packed + (size_t)q * k * nr;                                \
        const T *from = src + (size_t)q * nr * s_j;                            \
        int cols = n - q * nr < nr ? n - q * nr : nr;                          \
        int p = 0;                                                             \
        if (cols == nr && s_p == 1) {                                          \
            for (; p + LANES <= k; p += LANES)                                 \
                for (int half = 0; half < 2; half++) {                         \
                    V rows[LANES];                                             \
                    for (int j = 0; j < LANES; j++)                            \
                        rows[j] = fr_load_##SUF(from + (size_t)(half * LANES + j) * s_j + p); \
                    fr_transpose_##SUF(rows);                                  \
                    for (int i = 0; i < LANES; i++)                            \
                        fr_store_##SUF(panel + (size_t)(p + i) * nr + half * LANES, rows[i]); \
                }                                                              \
        }                                                                      \
        for (; p < k; p++) {            /* the rest, element by element */    \
            T *row = panel + (size_t)p * nr;                                   \
            for (int j = 0; j < cols; j++)                                     \
                row[j] = from[(size_t)p * s_p + (size_t)j * s_j];              \
            for (int j = cols; j < nr; j++) row[j] = 0;                        \
        }                                                                      \
    }                                                                          \
}                                                                              \
                                                                               \
/* C[mr x cols] = base + A[mr x kc] @ panel[kc x nv vectors], kc >= 1, where \
 * base row i is base + i * base_ld: C itself (base_ld = ldc) or one bias     \
 * row (base_ld = 0).  A(i, p) is A[i * a_row + p * a_step]: (lda, 1) for a   \
 * row of A, (1, NR) for a panel of packed columns (fr_gemm_tn).  mr, nv and  \
 * the strides are constants after inlining, so the accumulators live in     \
 * registers.  Step 0 sets them (a * b is 0 + a * b but for the sign of a     \
 * zero): GCC turned a zeroing loop into a memset of stack copies, 3% of the  \
 * tile's time at kc = 256.  nv = 1 serves a last panel of at most LANES      \
 * columns, whose zero-padded second vector is skipped (a Linear head of 101  \
 * classes: 112 columns of work, not 128); each column's operations are the   \
 * same either way. */                                                        \
static inline __attribute__((always_inline)) void fr_tile_vectors_##SUF(       \
    const int mr, const int nv, int kc, const T *A, size_t a_row,              \
    size_t a_step, const T *panel, const T *base, size_t base_ld, T *C,        \
    int ldc, int cols)                                                         \
{                                                                              \
    V acc[2][FR_MR];                                                           \
    for (int i = 0; i < mr; i++) {   /* step p = 0 sets the accumulators */    \
        T a = A[i * a_row];                                                    \
        for (int v = 0; v < nv; v++)                                           \
            acc[v][i] = a * fr_load_##SUF(panel + v * LANES);                  \
    }                                                                          \
    for (int p = 1; p < kc; p++) {                                             \
        V b[2];                                                                \
        for (int v = 0; v < nv; v++)                                           \
            b[v] = fr_load_##SUF(panel + (size_t)p * 2 * LANES + v * LANES);   \
        for (int i = 0; i < mr; i++) {                                         \
            T a = A[i * a_row + p * a_step];                                   \
            for (int v = 0; v < nv; v++)                                       \
                acc[v][i] += a * b[v];                                         \
        }                                                                      \
    }                                                                          \
    if (cols == nv * LANES) {                                                  \
        for (int i = 0; i < mr; i++)                                           \
            for (int v = 0; v < nv; v++)                                       \
                fr_store_##SUF(C + (size_t)i * ldc + v * LANES,                \
                    fr_load_##SUF(base + i * base_ld + v * LANES) + acc[v][i]); \
    } else {                                                                   \
        T tile[2 * LANES];                                                     \
        for (int i = 0; i < mr; i++) {                                         \
            T *c = C + (size_t)i * ldc;                                        \
            for (int v = 0; v < nv; v++)                                       \
                fr_store_##SUF(tile + v * LANES, acc[v][i]);                   \
            for (int j = 0; j < cols; j++) c[j] = base[i * base_ld + j] + tile[j]; \
        }                                                                      \
    }                                                                          \
}                                                                              \
                                                                               \
/* The tile of one panel: both vectors, or the first alone when the panel's  \
 * used columns fit in it. */                                                 \
static inline __attribute__((always_inline)) void fr_tile_##SUF(               \
    const int mr, int kc, const T *A, size_t a_row, size_t a_step,             \
    const T *panel, const T *base, size_t base_ld, T *C, int ldc, int cols)    \
{                                                                              \
    if (cols <= LANES)                                                         \
        fr_tile_vectors_##SUF(mr, 1, kc, A, a_row, a_step, panel, base,        \
                              base_ld, C, ldc, cols);                          \
    else                                                                       \
        fr_tile_vectors_##SUF(mr, 2, kc, A, a_row, a_step, panel, base,        \
                              base_ld, C, ldc, cols);                          \
}                                                                              \
                                                                               \
/* The tile specialised by row count (mr <= FR_MR): for rows of A, and for  \
 * fr_gemm_tn's packed columns of A (fr_pack_tn_a's panels). */               \
static void fr_tile_dispatch_##SUF(int mr, int kc, const T *A, int lda,        \
                                   const T *panel, const T *base,              \
                                   size_t base_ld, T *C, int ldc, int cols)    \
{                                                                              \
    FR_TILE_SWITCH(fr_tile_##SUF, mr, kc, A, (size_t)lda, 1, panel, base,      \
                   base_ld, C, ldc, cols)                                      \
}                                                                              \
                                                                               \
static void fr_tile_tn_dispatch_##SUF(int mr, int kc, const T *A,              \
                                      const T *panel, T *C, int ldc, int cols) \
{                                                                              \
    FR_TILE_SWITCH(fr_tile_##SUF, mr, kc, A, 1, FR_MR, panel, C,               \
                   (size_t)ldc, C, ldc, cols)                                  \
}                                                                              \
                                                                               \
/* fr_packed_gemm for a block of rows: every panel passes over all of      \
 * them.  k >= 1. */                                                          \
static inline void fr_block_gemm_##SUF(int m, int n, int k, const T *A,        \
                                       int lda, const T *packed,               \
                                       const T *bias, T *C, int ldc)           \
{                                                                              \
    const int nr = FR_NR_##SUF;                                                \
    for (int q = 0; q * nr < n; q++) {                                         \
        const T *panel = packed + (size_t)q * k * nr;                          \
        int cols = n - q * nr < nr ? n - q * nr : nr;                          \
        for (int k0 = 0; k0 < k; k0 += FR_KC) {                                \
            int kc = k - k0 < FR_KC ? k - k0 : FR_KC;                          \
            for (int i0 = 0; i0 < m; ) {                                       \
                int mr = fr_tile_rows(m - i0);                                 \
                T *c = C + (size_t)i0 * ldc + q * nr;                          \
                int from_bias = bias != NULL && k0 == 0;                       \
                fr_tile_dispatch_##SUF(mr, kc, A + (size_t)i0 * lda + k0, lda, \
                                       panel + (size_t)k0 * nr,                \
                                       from_bias ? bias + q * nr : c,          \
                                       from_bias ? 0 : (size_t)ldc, c, ldc,    \
                                       cols);                                  \
                i0 += mr;                                                      \
            }                                                                  \
        }                                                                      \
    }                                                                          \
}                                                                              \
                                                                               \
/* C[m x n] += A[m x k] @ B, B packed by fr_pack (k x n); with a bias row    \
 * (n values), C = bias + A @ B instead (C's old values are not read): the    \
 * same sums as copying the bias into every row first, without that pass.    \
 * The rows go in equal blocks of at most FR_BLOCK_BYTES of A, which stay in  \
 * L2 while every panel passes over them: unblocked, a product over a whole   \
 * sequence's rows re-read A from L3 once per panel.  Each row's sums do not  \
 * depend on its block. */                                                    \
static inline void fr_packed_gemm_##SUF(int m, int n, int k, const T *A,       \
                                        int lda, const T *packed,              \
                                        const T *bias, T *C, int ldc)          \
{                                                                              \
    if (k <= 0) {                                                              \
        for (int i = 0; bias != NULL && i < m; i++)                            \
            memcpy(C + (size_t)i * ldc, bias, (size_t)n * sizeof(T));          \
        return;                                                                \
    }                                                                          \
    size_t fit = FR_BLOCK_BYTES / ((size_t)k * sizeof(T));                     \
    int cap = fit < FR_MR ? FR_MR : (fit > (size_t)m ? m : (int)fit);          \
    int blocks = cap > 0 ? (m + cap - 1) / cap : 0;                            \
    for (int b = 0; b < blocks; b++) {                                         \
        int r0 = (int)((long long)m * b / blocks);                             \
        int r1 = (int)((long long)m * (b + 1) / blocks);                       \
        fr_block_gemm_##SUF(r1 - r0, n, k, A + (size_t)r0 * lda, lda, packed,  \
                            bias, C + (size_t)r0 * ldc, ldc);                  \
    }                                                                          \
}                                                                              \
                                                                               \
/* Elements of the work buffer fr_gemm_tn and fr_gemm_tn_pair need for C of \
 * m x n (the pair: n = the wider of its two products). */                    \
static inline size_t fr_gemm_tn_work_##SUF(int m, int n)                       \
{                                                                              \
    int rows = m < FR_MC_TN ? m : FR_MC_TN;                                    \
    size_t a_panels = (size_t)(rows + FR_MR - 1) / FR_MR;                      \
    return a_panels * FR_TN_A_PANEL(FR_KC_TN) + fr_packed_size_##SUF(FR_KC_TN, n); \
}                                                                              \
                                                                               \
/* fr_gemm_tn's A block, columns [0, mc) of kc rows of A (row stride lda),   \
 * packed as panels of FR_MR columns (FR_TN_A_PANEL(kc) apart), each kc rows  \
 * of FR_MR values, zeros past mc: a tile then reads its A values as one      \
 * contiguous run.  From panels of NR columns, of which a tile read FR_MR, it \
 * took a new cache line at every step: fr_gemm_tn at 1024 x 256 over 6336   \
 * rows (Zen 4, 1 thread) went from 36.1-36.8 to 32.5-32.7 ms at AVX2 and     \
 * from 31.9-32.1 to 31.7-31.9 at AVX-512.  Rows go in pairs, so each panel   \
 * gets two rows' values at once (a full cache line at AVX-512): row by row,  \
 * packing took 2.2-2.8 ms of that product instead of 1.9-2.1. */             \
static inline void fr_pack_tn_a_##SUF(int kc, int mc, const T *src, size_t lda, \
                                      T *panels)                               \
{                                                                              \
    const int full = mc / FR_MR, rest = mc - full * FR_MR;                     \
    const size_t panel = FR_TN_A_PANEL(kc);                                    \
    int p = 0;                                                                 \
    for (; p + 1 < kc; p += 2)                                                 \
        for (int r = 0; r < full; r++) {                                       \
            T *dst = panels + r * panel + (size_t)p * FR_MR;                   \
            const T *from = src + (size_t)p * lda + r * FR_MR;                 \
            memcpy(dst, from, FR_MR * sizeof(T));                              \
            memcpy(dst + FR_MR, from + lda, FR_MR * sizeof(T));                \
        }                                                                      \
    for (; p < kc; p++)                                                        \
        for (int r = 0; r < full; r++)                                         \
            memcpy(panels + r * panel + (size_t)p * FR_MR,                     \
                   src + (size_t)p * lda + r * FR_MR, FR_MR * sizeof(T));      \
    for (p = 0; rest > 0 && p < kc; p++) {                                     \
        T *dst = panels + full * panel + (size_t)p * FR_MR;                    \
        const T *from = src + (size_t)p * lda + full * FR_MR;                  \
        for (int j = 0; j < FR_MR; j++)                                        \
            dst[j] = j < rest ? from[j] : (T)0;                                \
    }                                                                          \
}                                                                              \
                                                                               \
/* C[mc x n] += a_panels^T b_panels for one packed K block: every B panel    \
 * passes over the A panels (fr_pack_tn_a), one tile per A panel: FR_MR rows \
 * of C, the last mc % FR_MR. */                                              \
static inline void fr_tn_block_##SUF(int mc, int n, int kc, const T *a_panels, \
                                     const T *b_panels, T *C, int ldc)         \
{                                                                              \
    const int nr = FR_NR_##SUF;                                                \
    for (int q = 0; q * nr < n; q++) {                                         \
        const T *b_panel = b_panels + (size_t)q * kc * nr;                     \
        int cols = n - q * nr < nr ? n - q * nr : nr;                          \
        for (int r = 0; r * FR_MR < mc; r++) {                                 \
            int mr = mc - r * FR_MR < FR_MR ? mc - r * FR_MR : FR_MR;          \
            fr_tile_tn_dispatch_##SUF(mr, kc, a_panels + r * FR_TN_A_PANEL(kc), \
                b_panel, C + (size_t)r * FR_MR * ldc + q * nr, ldc, cols);     \
        }                                                                      \
    }                                                                          \
}                                                                              \
                                                                               \
/* C[m x n] += A^T B for A (k x m, lda) and B (k x n, ldb), both row-major:  \
 * the weight gradients, k running over every timestep's rows.  Blocks of    \
 * FR_KC_TN rows of B, and of FR_KC_TN x FR_MC_TN of A, are packed into       \
 * panels (row copies), so both stay in L2 while C gets each K block's sums   \
 * in turn.  (OpenBLAS's sgemm copies A transposed, element by element: 6% of \
 * an RNN's training step.) */                                                \
static inline void fr_gemm_tn_##SUF(int m, int n, long long k, const T *A,     \
                                    int lda, const T *B, int ldb, T *C,        \
                                    int ldc, T *work)                          \
{                                                                              \
    T *b_panels = work;                                                        \
    T *a_panels = work + fr_packed_size_##SUF(FR_KC_TN, n);                    \
    for (long long k0 = 0; k0 < k; k0 += FR_KC_TN) {                           \
        int kc = k - k0 < FR_KC_TN ? (int)(k - k0) : FR_KC_TN;                 \
        fr_pack_##SUF(kc, n, B + (size_t)k0 * ldb, (size_t)ldb, 1, b_panels);  \
        for (int m0 = 0; m0 < m; m0 += FR_MC_TN) {                             \
            int mc = m - m0 < FR_MC_TN ? m - m0 : FR_MC_TN;                    \
            fr_pack_tn_a_##SUF(kc, mc, A + (size_t)k0 * lda + m0, (size_t)lda, \
                               a_panels);                                      \
            fr_tn_block_##SUF(mc, n, kc, a_panels, b_panels,                   \
                              C + (size_t)m0 * ldc, ldc);                      \
        }                                                                      \
    }                                                                          \
}                                                                              \
                                                                               \
/* C1[m x n1] += A^T B1 and C2[m x n2] += A^T B2: dW_ih and dW_hh over the    \
 * same gate gradients A.  With A one block wide (m <= FR_MC_TN) each K block \
 * of A is packed once for both, and B1's and B2's blocks take turns in one   \
 * buffer (two resident B blocks overflowed L2: 10% slower at m = 1024).      \
 * Wider A: the two products in turn. */                                      \
static inline void fr_gemm_tn_pair_##SUF(int m, long long k, const T *A,       \
                                         int lda, int n1, const T *B1, int ldb1, \
                                         T *C1, int ldc1, int n2, const T *B2,  \
                                         int ldb2, T *C2, int ldc2, T *work)   \
{                                                                              \
    if (m > FR_MC_TN) {                                                        \
        fr_gemm_tn_##SUF(m, n1, k, A, lda, B1, ldb1, C1, ldc1, work);          \
        fr_gemm_tn_##SUF(m, n2, k, A, lda, B2, ldb2, C2, ldc2, work);          \
        return;                                                                \
    }                                                                          \
    T *b_panels = work;                                                        \
    T *a_panels = work + fr_packed_size_##SUF(FR_KC_TN, n1 > n2 ? n1 : n2);    \
    for (long long k0 = 0; k0 < k; k0 += FR_KC_TN) {                           \
        int kc = k - k0 < FR_KC_TN ? (int)(k - k0) : FR_KC_TN;                 \
        fr_pack_tn_a_##SUF(kc, m, A + (size_t)k0 * lda, (size_t)lda, a_panels); \
        fr_pack_##SUF(kc, n1, B1 + (size_t)k0 * ldb1, (size_t)ldb1, 1, b_panels); \
        fr_tn_block_##SUF(m, n1, kc, a_panels, b_panels, C1, ldc1);            \
        fr_pack_##SUF(kc, n2, B2 + (size_t)k0 * ldb2, (size_t)ldb2, 1, b_panels); \
        fr_tn_block_##SUF(m, n2, kc, a_panels, b_panels, C2, ldc2);            \
    }                                                                          \
}

FR_DEFINE_PACKED_GEMM(f, float, fr_vf, FR_VECTOR_BYTES / 4)
FR_DEFINE_PACKED_GEMM(d, double, fr_vd, FR_VECTOR_BYTES / 8)

#undef FR_DEFINE_PACKED_GEMM

#endif
