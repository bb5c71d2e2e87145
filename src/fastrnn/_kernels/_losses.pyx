"""Fused loss kernels: the loss and its gradient in one pass over the rows.

Every kernel sees a 2-D (rows, cols) view prepared by ``fastrnn.losses``,
which has already checked shapes, dtypes and target ranges.  Rows are cut
into blocks of a fixed size chosen from ``cols`` alone; each block's loss is
summed in double into its own slot of ``partial`` and the caller adds the
slots in order, so the loss does not depend on the thread count (bit for
bit).  The gradient is written for every element (zeros where a row or
element is not counted), already multiplied by ``scale`` (1/count for a
mean).

float32 rows use fastrnn's vectorisable exp (fr_math.h) and a series for
log1p on [0, 1]; float64 rows use libm.  Reductions over a row are declared
``omp simd`` so that GCC vectorises them without -ffast-math.
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memset

from fastrnn._kernels._runtime cimport split_threads

cdef extern from *:
    """
    #include <math.h>
    #include "fr_math.h"

    /* log(1 + e) for e in [0, 1]: 2 atanh(z), z = e / (2 + e) in [0, 1/3],
     * by its odd series to z^15 (next term below 2e-9 relative).  No
     * exponent split is needed on this range, so the loop vectorises. */
    static inline float fr_log1p_unit_f(float e)
    {
        float z = e / (2.0f + e), z2 = z * z;
        float p = 1.0f / 15.0f;
        p = p * z2 + 1.0f / 13.0f;
        p = p * z2 + 1.0f / 11.0f;
        p = p * z2 + 1.0f / 9.0f;
        p = p * z2 + 1.0f / 7.0f;
        p = p * z2 + 1.0f / 5.0f;
        p = p * z2 + 1.0f / 3.0f;
        p = p * z2 + 1.0f;
        return 2.0f * z * p;
    }

    /* One softmax cross-entropy row: returns lse(x) - (1-eps) x[t] - eps mean(x)
     * (the label-smoothed loss) and writes g = scale (softmax(x) - (1-eps) onehot(t)
     * - eps / C).  The max is subtracted before exp, so nothing overflows and
     * the sum of exps is at least 1 (no log(0)). */
    #define FR_CE_ROW(NAME, T, EXP)                                              \
    static double NAME(const T *x, T *g, Py_ssize_t C, Py_ssize_t t,             \
                       double eps, double scale)                                 \
    {                                                                            \
        T m = x[0];                                                              \
        _Pragma("omp simd reduction(max:m)")                                     \
        for (Py_ssize_t c = 0; c < C; c++) m = x[c] > m ? x[c] : m;              \
        double s = 0.0;                                                          \
        _Pragma("omp simd reduction(+:s)")                                       \
        for (Py_ssize_t c = 0; c < C; c++) {                                     \
            T e = EXP(x[c] - m);                                                 \
            g[c] = e;                                                            \
            s += (double)e;                                                      \
        }                                                                        \
        double loss = (double)m + log(s) - (1.0 - eps) * (double)x[t];           \
        if (eps > 0.0) {                                                         \
            double sx = 0.0;                                                     \
            _Pragma("omp simd reduction(+:sx)")                                  \
            for (Py_ssize_t c = 0; c < C; c++) sx += (double)x[c];               \
            loss -= eps * sx / (double)C;                                        \
        }                                                                        \
        T a = (T)(scale / s), b = (T)(scale * eps / (double)C);                  \
        _Pragma("omp simd")                                                      \
        for (Py_ssize_t c = 0; c < C; c++) g[c] = g[c] * a - b;                  \
        g[t] -= (T)(scale * (1.0 - eps));                                        \
        return loss;                                                             \
    }
    FR_CE_ROW(fr_ce_row_f, float, fr_expf)
    FR_CE_ROW(fr_ce_row_d, double, exp)

    /* Binary cross-entropy with logits, torch's form with a positive weight:
     *   loss = (1 - y) x + lw (max(-x, 0) + log1p(exp(-|x|))),  lw = 1 + (pw - 1) y
     *   dloss/dx = lw sigmoid(x) - pw y
     * exp(-|x|) is in (0, 1], so neither term overflows for any finite x.
     * KEEP(k) selects the counted elements (masked ones give 0 and g = 0,
     * whatever their values). */
    #define FR_BCE_BODY(T, EXP, LOG1P, KEEP)                                     \
        _Pragma("omp simd reduction(+:acc)")                                     \
        for (Py_ssize_t k = 0; k < K; k++) {                                     \
            T xv = x[k], yv = y[k], w = pw[k];                                   \
            T e = EXP(-(xv < 0 ? -xv : xv));                                     \
            T sig = (xv >= 0 ? (T)1 : e) / ((T)1 + e);                           \
            T lw = (T)1 + (w - (T)1) * yv;                                       \
            double l = (1.0 - (double)yv) * (double)xv                           \
                       + (double)lw * ((double)(xv < 0 ? -xv : (T)0)             \
                                       + (double)LOG1P(e));                      \
            T gv = fs * (lw * sig - w * yv);                                     \
            acc += KEEP ? l : 0.0;                                               \
            g[k] = KEEP ? gv : (T)0;                                             \
        }
    #define FR_BCE_ROW(NAME, T, EXP, LOG1P)                                      \
    static double NAME(const T *x, const T *y, const T *pw,                      \
                       const unsigned char *keep, T *g, Py_ssize_t K,            \
                       double scale)                                             \
    {                                                                            \
        double acc = 0.0;                                                        \
        T fs = (T)scale;                                                         \
        if (keep == NULL) { FR_BCE_BODY(T, EXP, LOG1P, 1) }                      \
        else { FR_BCE_BODY(T, EXP, LOG1P, keep[k]) }                             \
        return acc;                                                              \
    }
    FR_BCE_ROW(fr_bce_row_f, float, fr_expf, fr_log1p_unit_f)
    FR_BCE_ROW(fr_bce_row_d, double, exp, log1p)

    /* Squared error: loss = sum (p - t)^2, g = 2 scale (p - t). */
    #define FR_MSE_ROW(NAME, T)                                                  \
    static double NAME(const T *p, const T *t, T *g, Py_ssize_t K, double scale) \
    {                                                                            \
        double acc = 0.0;                                                        \
        T fs = (T)(2.0 * scale);                                                 \
        _Pragma("omp simd reduction(+:acc)")                                     \
        for (Py_ssize_t k = 0; k < K; k++) {                                     \
            double d = (double)p[k] - (double)t[k];                              \
            acc += d * d;                                                        \
            g[k] = fs * (p[k] - t[k]);                                           \
        }                                                                        \
        return acc;                                                              \
    }
    FR_MSE_ROW(fr_mse_row_f, float)
    FR_MSE_ROW(fr_mse_row_d, double)
    """
    double fr_ce_row_f(const float *x, float *g, Py_ssize_t C, Py_ssize_t t,
                       double eps, double scale) noexcept nogil
    double fr_ce_row_d(const double *x, double *g, Py_ssize_t C, Py_ssize_t t,
                       double eps, double scale) noexcept nogil
    double fr_bce_row_f(const float *x, const float *y, const float *pw,
                        const unsigned char *keep, float *g, Py_ssize_t K,
                        double scale) noexcept nogil
    double fr_bce_row_d(const double *x, const double *y, const double *pw,
                        const unsigned char *keep, double *g, Py_ssize_t K,
                        double scale) noexcept nogil
    double fr_mse_row_f(const float *p, const float *t, float *g, Py_ssize_t K,
                        double scale) noexcept nogil
    double fr_mse_row_d(const double *p, const double *t, double *g, Py_ssize_t K,
                        double scale) noexcept nogil
    float fr_log1p_unit_f(float e) noexcept nogil

# Elementwise work is weighed as this many multiply-adds per element by the
# runtime's thread rule (an exp and a few reductions per element).
cdef double WORK_PER_ELEMENT = 16.0


# -- the chunked-dispatch skeleton -------------------------------------------------
#
# Every loss is a ``*_block`` function over rows [r0, r1) reading one argument
# struct (arrays as untyped pointers); ``_run_blocks`` is the one driver: it
# hands blocks of ``block_rows`` rows to the threads (or runs them serially)
# and stores each block's summed loss in its slot of ``partial``.

cdef enum Loss:
    CROSS_ENTROPY = 0
    BCE = 1
    MSE = 2


cdef struct LossArgs:
    const void *x               # logits / predictions (rows, cols)
    const void *y               # targets (rows, cols): BCE, MSE
    const Py_ssize_t *classes   # class ids (rows,): cross-entropy
    const void *pw              # BCE positive weights
    const unsigned char *mask   # NULL, or (rows, mask_cols) flags
    Py_ssize_t mask_cols, cols
    double eps, scale           # label smoothing (cross-entropy); gradient scale
    bint pw_per_row
    const double *weight        # per-row weights, or NULL
    double *out                 # per-row losses out, or NULL


cdef inline double _block(Loss loss, floating *g, const LossArgs *a, Py_ssize_t r0,
                          Py_ssize_t r1) noexcept nogil:
    if loss == CROSS_ENTROPY:
        return _ce_block(g, a, r0, r1)
    if loss == BCE:
        return _bce_block(g, a, r0, r1)
    return _mse_block(g, a, r0, r1)


cdef void _run_blocks(Loss loss, floating *g, const LossArgs *a, Py_ssize_t rows,
                      Py_ssize_t block_rows, double *partial,
                      int num_threads) noexcept nogil:
    """partial[b] = the loss of rows b*block_rows.., block b written by one thread."""
    cdef Py_ssize_t nblocks = (rows + block_rows - 1) // block_rows, b, r0
    cdef int threads = (split_threads(<double>rows * a.cols * WORK_PER_ELEMENT, num_threads)
                        if nblocks > 1 else 1)
    if threads > 1:
        for b in prange(nblocks, num_threads=threads, schedule="static"):
            r0 = b * block_rows
            partial[b] = _block(loss, g, a, r0, min(r0 + block_rows, rows))
    else:
        for b in range(nblocks):
            r0 = b * block_rows
            partial[b] = _block(loss, g, a, r0, min(r0 + block_rows, rows))


cdef Py_ssize_t _check_blocks(Py_ssize_t rows, Py_ssize_t block_rows,
                              Py_ssize_t nparts) except -1:
    """Blocks of ``block_rows`` rows, one ``partial`` slot each."""
    if block_rows < 1:
        raise ValueError(f"block_rows must be positive, got {block_rows}")
    cdef Py_ssize_t nblocks = (rows + block_rows - 1) // block_rows
    if nparts != nblocks:
        raise ValueError(f"partial must have {nblocks} slots, got {nparts}")
    return nblocks


cdef const double *_row_pointer(const double[::1] array, Py_ssize_t rows,
                                str name) except? NULL:
    """NULL for a missing per-row array, else its data (checked: one per row)."""
    if array is None:
        return NULL
    if array.shape[0] != rows:
        raise ValueError(f"{name} must have one value per row ({rows}), got "
                         f"{array.shape[0]}")
    if rows == 0:
        return NULL
    return &array[0]


# -- cross-entropy ---------------------------------------------------------------

cdef double _ce_block(floating *g, const LossArgs *a, Py_ssize_t r0,
                      Py_ssize_t r1) noexcept nogil:
    cdef const floating *x = <const floating *>a.x
    cdef const Py_ssize_t *t = a.classes
    cdef Py_ssize_t C = a.cols, i, target
    cdef double eps = a.eps, scale = a.scale
    cdef const double *weight = a.weight
    cdef double *out = a.out
    cdef double acc = 0.0, w = 1.0, loss
    for i in range(r0, r1):
        target = t[i]
        if target < 0 or target >= C:        # not counted (mask / ignore_index)
            memset(g + i * C, 0, C * sizeof(floating))
            loss = 0.0
        else:
            if weight != NULL:
                w = weight[i]
            if floating is float:
                loss = w * fr_ce_row_f(x + i * C, g + i * C, C, target, eps, scale * w)
            else:
                loss = w * fr_ce_row_d(x + i * C, g + i * C, C, target, eps, scale * w)
        acc += loss
        if out != NULL:
            out[i] = loss
    return acc


def cross_entropy(const floating[:, ::1] logits, const Py_ssize_t[::1] targets,
                  floating[:, ::1] grad, double[::1] partial, Py_ssize_t block_rows,
                  double label_smoothing, double scale, int num_threads,
                  const double[::1] row_weight=None, double[::1] row_loss=None):
    """Softmax cross-entropy of (rows, C) ``logits`` against class ids.

    ``targets[i]`` is the class of row i, or -1 for a row that is not counted
    (its gradient row is zeroed).  ``partial[b]`` receives the summed loss of
    block b (rows b*block_rows ...); ``grad`` the gradient times ``scale``.
    ``row_weight`` (rows,): row i's loss and gradient are multiplied by it.
    ``row_loss`` (rows,): receives each row's (weighted) loss, 0 if not counted.
    """
    cdef Py_ssize_t rows = logits.shape[0], C = logits.shape[1]
    if C < 1 or targets.shape[0] != rows or grad.shape[0] != rows or grad.shape[1] != C:
        raise ValueError("cross_entropy: inconsistent shapes")
    cdef const double *weight = _row_pointer(row_weight, rows, "row_weight")
    cdef double *out = <double *>_row_pointer(row_loss, rows, "row_loss")
    _check_blocks(rows, block_rows, partial.shape[0])
    if rows == 0:
        return
    cdef LossArgs a = LossArgs(x=&logits[0, 0], y=NULL, classes=&targets[0], pw=NULL,
                               mask=NULL, mask_cols=0, cols=C, eps=label_smoothing,
                               scale=scale, pw_per_row=False, weight=weight, out=out)
    with nogil:
        _run_blocks(CROSS_ENTROPY, &grad[0, 0], &a, rows, block_rows, &partial[0],
                    num_threads)


# -- binary cross-entropy with logits ----------------------------------------------

cdef double _bce_block(floating *g, const LossArgs *a, Py_ssize_t r0,
                       Py_ssize_t r1) noexcept nogil:
    cdef const floating *x = <const floating *>a.x
    cdef const floating *y = <const floating *>a.y
    cdef const floating *pw = <const floating *>a.pw
    cdef const unsigned char *mask = a.mask
    cdef Py_ssize_t mask_cols = a.mask_cols, K = a.cols, i
    cdef double scale = a.scale
    cdef bint pw_per_row = a.pw_per_row
    cdef const double *weight = a.weight
    cdef double *out = a.out
    cdef double acc = 0.0, w = 1.0, loss
    cdef const unsigned char *keep
    cdef const floating *row_pw
    for i in range(r0, r1):
        keep = NULL
        loss = 0.0
        if mask_cols == 1 and not mask[i]:
            memset(g + i * K, 0, K * sizeof(floating))
        else:
            if mask_cols > 1:
                keep = mask + i * K
            if weight != NULL:
                w = weight[i]
            row_pw = pw + i if pw_per_row else pw
            if floating is float:
                loss = w * fr_bce_row_f(x + i * K, y + i * K, row_pw, keep, g + i * K, K,
                                        scale * w)
            else:
                loss = w * fr_bce_row_d(x + i * K, y + i * K, row_pw, keep, g + i * K, K,
                                        scale * w)
        acc += loss
        if out != NULL:
            out[i] = loss
    return acc


def bce_with_logits(const floating[:, ::1] logits, const floating[:, ::1] targets,
                    const unsigned char[:, ::1] mask, const floating[::1] pos_weight,
                    floating[:, ::1] grad, double[::1] partial, Py_ssize_t block_rows,
                    double scale, int num_threads, const double[::1] row_weight=None,
                    double[::1] row_loss=None):
    """Sigmoid binary cross-entropy of (rows, K) logits against targets in [0, 1].

    ``mask`` is (0, 0) (all counted), (rows, 1) (one flag per row) or
    (rows, K) (one per element); ``pos_weight`` (K,) weighs the positive
    term of each column (ones for plain BCE), or with K == 1 it may be
    (rows,), one per row.  ``row_weight`` / ``row_loss``: as in
    :func:`cross_entropy`.
    """
    cdef Py_ssize_t rows = logits.shape[0], K = logits.shape[1]
    cdef Py_ssize_t mask_cols = mask.shape[1]
    cdef bint pw_per_row = K == 1 and pos_weight.shape[0] == rows and rows != 1
    if (targets.shape[0] != rows or targets.shape[1] != K or grad.shape[0] != rows
            or grad.shape[1] != K or (pos_weight.shape[0] != K and not pw_per_row)
            or K < 1):
        raise ValueError("bce_with_logits: inconsistent shapes")
    cdef const double *weight = _row_pointer(row_weight, rows, "row_weight")
    cdef double *out = <double *>_row_pointer(row_loss, rows, "row_loss")
    if not ((mask.shape[0] == 0 and mask_cols == 0) or
            (mask.shape[0] == rows and (mask_cols == 1 or mask_cols == K))):
        raise ValueError("bce_with_logits: mask must be (0, 0), (rows, 1) or (rows, K)")
    _check_blocks(rows, block_rows, partial.shape[0])
    if rows == 0:
        return
    cdef const unsigned char *mask_ptr = &mask[0, 0] if mask_cols > 0 else NULL
    cdef LossArgs a = LossArgs(x=&logits[0, 0], y=&targets[0, 0], classes=NULL,
                               pw=&pos_weight[0], mask=mask_ptr,
                               mask_cols=mask_cols, cols=K, eps=0, scale=scale,
                               pw_per_row=pw_per_row, weight=weight, out=out)
    with nogil:
        _run_blocks(BCE, &grad[0, 0], &a, rows, block_rows, &partial[0], num_threads)


# -- mean squared error ------------------------------------------------------------

cdef double _mse_block(floating *g, const LossArgs *a, Py_ssize_t r0,
                       Py_ssize_t r1) noexcept nogil:
    cdef const floating *p = <const floating *>a.x
    cdef const floating *t = <const floating *>a.y
    cdef const unsigned char *mask = a.mask
    cdef Py_ssize_t K = a.cols, i
    cdef double scale = a.scale
    cdef const double *weight = a.weight
    cdef double *out = a.out
    cdef double acc = 0.0, w = 1.0, loss
    for i in range(r0, r1):
        loss = 0.0
        if mask != NULL and not mask[i]:
            memset(g + i * K, 0, K * sizeof(floating))
        else:
            if weight != NULL:
                w = weight[i]
            if floating is float:
                loss = w * fr_mse_row_f(p + i * K, t + i * K, g + i * K, K, scale * w)
            else:
                loss = w * fr_mse_row_d(p + i * K, t + i * K, g + i * K, K, scale * w)
        acc += loss
        if out != NULL:
            out[i] = loss
    return acc


def mse(const floating[:, ::1] predictions, const floating[:, ::1] targets,
        const unsigned char[:, ::1] mask, floating[:, ::1] grad, double[::1] partial,
        Py_ssize_t block_rows, double scale, int num_threads,
        const double[::1] row_weight=None, double[::1] row_loss=None):
    """Squared error of (rows, K) predictions; ``mask`` (0, 0) or (rows, 1);
    ``row_weight`` / ``row_loss``: as in :func:`cross_entropy`."""
    cdef Py_ssize_t rows = predictions.shape[0], K = predictions.shape[1]
    if (targets.shape[0] != rows or targets.shape[1] != K or grad.shape[0] != rows
            or grad.shape[1] != K or K < 1):
        raise ValueError("mse: inconsistent shapes")
    cdef const double *weight = _row_pointer(row_weight, rows, "row_weight")
    cdef double *out = <double *>_row_pointer(row_loss, rows, "row_loss")
    if not ((mask.shape[0] == 0 and mask.shape[1] == 0) or
            (mask.shape[0] == rows and mask.shape[1] == 1)):
        raise ValueError("mse: mask must be (0, 0) or (rows, 1)")
    _check_blocks(rows, block_rows, partial.shape[0])
    if rows == 0:
        return
    cdef const unsigned char *mask_ptr = &mask[0, 0] if mask.shape[1] > 0 else NULL
    cdef LossArgs a = LossArgs(x=&predictions[0, 0], y=&targets[0, 0], classes=NULL,
                               pw=NULL, mask=mask_ptr,
                               mask_cols=mask.shape[1], cols=K, eps=0, scale=scale,
                               pw_per_row=False, weight=weight, out=out)
    with nogil:
        _run_blocks(MSE, &grad[0, 0], &a, rows, block_rows, &partial[0], num_threads)


def log1p_unit_float(float e):
    """The float32 log1p series used by the BCE kernel (exposed for tests)."""
    return fr_log1p_unit_f(e)
