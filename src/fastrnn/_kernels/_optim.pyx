"""Fused optimizer updates and gradient-clipping reductions.

One call per parameter array does the whole update (penalties, moment
buffers, parameter) in a single pass over memory, where PyTorch's
single-tensor path makes several passes with temporaries.  The update is
memory bound, so a pass saved is time saved.

Callers (``fastrnn.optim``) validate everything first: every array is
C-contiguous, 1-D (flat views of the parameter), of the parameter's length
and dtype; buffers that the options do not use may be empty and are then
never touched.  Scalars (learning rate, bias corrections...) are computed in
Python once per step, as PyTorch does, and arrive here as plain numbers.

Large arrays are split into one contiguous chunk per thread; small ones run
serially (entering an OpenMP region costs more than it saves there).  Each
element is updated by exactly one thread, so results do not depend on the
thread count.  The arithmetic follows PyTorch's order of operations (its
``lerp`` formula included) so float64 results agree to rounding.
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport fabs, pow, sqrt, sqrtf

from fastrnn._kernels._runtime cimport MAX_SPLIT, chunk_start, split_threads
from fastrnn._kernels._views cimport ptr1

cdef enum:
    # Weight of one element of an update against a multiply-add of a product
    # when deciding to split (the thread rule's work is in multiply-adds).
    ELEMENT_WORK = 64
    # Chunks start on multiples of this many elements (a 64-byte line in float32).
    ALIGN = 16
    # Independent partial sums per chunk in the reductions: they break the
    # addition dependency chain and let the compiler use vector registers.
    LANES = 8


cdef inline floating _sqrt(floating x) noexcept nogil:
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)


cdef inline floating _sign(floating x) noexcept nogil:
    return <floating>(x > 0) - <floating>(x < 0)


cdef inline floating _lerp(floating a, floating b, floating w, bint high) noexcept nogil:
    """a + w (b - a), computed as PyTorch's lerp does (two formulas split at w = 0.5)."""
    if high:
        return b - (b - a) * (1 - w)
    return a + w * (b - a)


cdef inline int _lengths_ok(Py_ssize_t n, Py_ssize_t a, Py_ssize_t b,
                            Py_ssize_t c) noexcept nogil:
    """Each of a, b, c is n, or 0 for an unused buffer (b and c only)."""
    return a == n and (b == n or b == 0) and (c == n or c == 0)


def _length_error(name):
    raise ValueError(f"fastrnn._kernels._optim.{name}: the arrays must all have the "
                     f"parameter's length (unused buffers: empty)")


# -- the chunked-dispatch skeleton -------------------------------------------------
#
# Every elementwise kernel is a ``*_range`` function that updates the elements
# [lo, hi) of one parameter from an argument struct (the arrays as untyped
# pointers, the scalars in double, converted once per range).  ``_run`` is
# the one driver: serial for small arrays, else one contiguous chunk per
# thread (``split_threads`` / ``chunk_start``, the runtime's thread rule).
# Each element is written by exactly one thread, so results do not depend on
# the thread count.

cdef enum Kernel:
    SGD = 0
    ADAM = 1
    RMSPROP = 2
    ADAGRAD = 3
    SCALE = 4
    CLAMP = 5


cdef struct SgdArgs:
    const void *g
    void *buf           # momentum buffer, NULL without momentum
    double lr, wd, l1, momentum, keep     # keep = 1 - dampening
    bint nesterov, first


cdef struct AdamArgs:
    const void *g
    void *m
    void *v
    void *vmax          # AMSGrad's running max, NULL without
    double decay, wd, l1, c1, beta2, one_minus_beta2, step_size, inv_bc2_sqrt, eps
    bint c1_from_d


cdef struct RmspropArgs:
    const void *g
    void *sq
    void *gavg          # centered: running mean of d, else NULL
    void *buf           # momentum buffer, else NULL
    double lr, alpha, one_minus_alpha, eps, wd, l1, momentum
    bint w_high


cdef struct AdagradArgs:
    const void *g
    void *acc
    double clr, eps, wd, l1


cdef inline void _range(Kernel kernel, floating *p, const void *args, Py_ssize_t lo,
                        Py_ssize_t hi) noexcept nogil:
    if kernel == SGD:
        _sgd_range(p, <const SgdArgs *>args, lo, hi)
    elif kernel == ADAM:
        _adam_range(p, <const AdamArgs *>args, lo, hi)
    elif kernel == RMSPROP:
        _rmsprop_range(p, <const RmspropArgs *>args, lo, hi)
    elif kernel == ADAGRAD:
        _adagrad_range(p, <const AdagradArgs *>args, lo, hi)
    else:
        _in_place_range(p, lo, hi, <floating>(<const double *>args)[0], kernel)


cdef void _run(Kernel kernel, floating *p, const void *args, Py_ssize_t n,
               double element_work, int num_threads) noexcept nogil:
    """``kernel`` over p[0:n]: serially, or one contiguous chunk per thread."""
    cdef int chunks = split_threads(n * element_work, num_threads), c
    cdef Py_ssize_t lo, hi
    if n == 0:
        return
    if chunks == 1:
        _range(kernel, p, args, 0, n)
        return
    for c in prange(chunks, num_threads=chunks, schedule="static", chunksize=1):
        lo = chunk_start(n, chunks, c, ALIGN)
        hi = chunk_start(n, chunks, c + 1, ALIGN)
        if lo < hi:
            _range(kernel, p, args, lo, hi)


# -- SGD ------------------------------------------------------------------------

cdef void _sgd_range(floating *p, const SgdArgs *a, Py_ssize_t lo,
                     Py_ssize_t hi) noexcept nogil:
    cdef const floating *g = <const floating *>a.g
    cdef floating *buf = <floating *>a.buf
    cdef floating lr = <floating>a.lr, wd = <floating>a.wd, l1 = <floating>a.l1
    cdef floating momentum = <floating>a.momentum, keep = <floating>a.keep
    cdef bint nesterov = a.nesterov
    cdef Py_ssize_t i
    cdef floating d
    if buf == NULL:
        for i in range(lo, hi):
            d = g[i] + l1 * _sign(p[i])
            d = d + wd * p[i]
            p[i] = p[i] - lr * d
    elif a.first:
        for i in range(lo, hi):
            d = g[i] + l1 * _sign(p[i])
            d = d + wd * p[i]
            buf[i] = d
            if nesterov:
                d = d + momentum * d
            p[i] = p[i] - lr * d
    else:
        for i in range(lo, hi):
            d = g[i] + l1 * _sign(p[i])
            d = d + wd * p[i]
            buf[i] = buf[i] * momentum + keep * d
            if nesterov:
                d = d + momentum * buf[i]
            else:
                d = buf[i]
            p[i] = p[i] - lr * d


def sgd_step(floating[::1] p, const floating[::1] g, floating[::1] buf, double lr,
             double weight_decay, double l1, double momentum, double dampening,
             bint nesterov, bint first, int num_threads):
    """SGD as torch.optim.SGD: d = g + l1 sign(p) + wd p; with a momentum
    buffer (``buf`` not empty) buf = d on the first step, else
    buf = momentum buf + (1 - dampening) d; d = d + momentum buf (Nesterov)
    or buf; p -= lr d."""
    cdef Py_ssize_t n = p.shape[0]
    if not _lengths_ok(n, g.shape[0], buf.shape[0], 0):
        _length_error('sgd_step')
    if n == 0:
        return
    cdef SgdArgs a = SgdArgs(g=&g[0], buf=ptr1(buf), lr=lr, wd=weight_decay, l1=l1,
                             momentum=momentum, keep=1 - dampening, nesterov=nesterov,
                             first=first)
    with nogil:
        _run(SGD, &p[0], &a, n, 0.5 * ELEMENT_WORK, num_threads)


# -- Adam / AdamW -----------------------------------------------------------------

cdef inline void _adam_element(Py_ssize_t i, floating *p, const floating *g, floating *m,
                               floating *v, floating *vmax, floating decay, floating wd,
                               floating l1, floating c1, bint c1_from_d, floating beta2,
                               floating one_minus_beta2, floating step_size,
                               floating inv_bc2_sqrt, floating eps,
                               bint amsgrad) noexcept nogil:
    cdef floating d, second
    d = g[i] + l1 * _sign(p[i])
    d = d + wd * p[i]
    p[i] = p[i] * decay
    # lerp(m, d, w) = base + c1 (d - m): base m, c1 = w (w < 0.5) or base d,
    # c1 = -(1 - w) (w >= 0.5), PyTorch's two formulas
    m[i] = (d if c1_from_d else m[i]) + c1 * (d - m[i])
    v[i] = v[i] * beta2 + one_minus_beta2 * d * d
    second = v[i]
    if amsgrad:
        second = vmax[i] if vmax[i] > second else second
        vmax[i] = second
    p[i] = p[i] + (-step_size) * (m[i] / (_sqrt(second) * inv_bc2_sqrt + eps))


cdef void _adam_range(floating *p, const AdamArgs *a, Py_ssize_t lo,
                      Py_ssize_t hi) noexcept nogil:
    # One loop per option with the option a constant: a single loop with a
    # run-time test is if-converted and pays for both branches (a square
    # root and a division each, the costly part of the update).
    cdef const floating *g = <const floating *>a.g
    cdef floating *m = <floating *>a.m
    cdef floating *v = <floating *>a.v
    cdef floating *vmax = <floating *>a.vmax
    cdef floating decay = <floating>a.decay, wd = <floating>a.wd, l1 = <floating>a.l1
    cdef floating c1 = <floating>a.c1, beta2 = <floating>a.beta2
    cdef floating one_minus_beta2 = <floating>a.one_minus_beta2
    cdef floating step_size = <floating>a.step_size
    cdef floating inv_bc2_sqrt = <floating>a.inv_bc2_sqrt, eps = <floating>a.eps
    cdef bint c1_from_d = a.c1_from_d
    cdef Py_ssize_t i
    if vmax != NULL:
        for i in range(lo, hi):
            _adam_element(i, p, g, m, v, vmax, decay, wd, l1, c1, c1_from_d, beta2,
                          one_minus_beta2, step_size, inv_bc2_sqrt, eps, True)
    else:
        for i in range(lo, hi):
            _adam_element(i, p, g, m, v, vmax, decay, wd, l1, c1, c1_from_d, beta2,
                          one_minus_beta2, step_size, inv_bc2_sqrt, eps, False)


def adam_step(floating[::1] p, const floating[::1] g, floating[::1] exp_avg,
              floating[::1] exp_avg_sq, floating[::1] max_exp_avg_sq, double decay,
              double weight_decay, double l1, double beta1, double beta2,
              double step_size, double bias_correction2_sqrt, double eps,
              int num_threads):
    """Adam/AdamW as torch.optim.Adam (single-tensor path):
    d = g + l1 sign(p) + weight_decay p (coupled L2, 0 for AdamW);
    p *= decay (AdamW's 1 - lr wd, else 1); m = lerp(m, d, 1 - beta1);
    v = beta2 v + (1 - beta2) d^2; vmax = max(vmax, v) when ``max_exp_avg_sq``
    is not empty (AMSGrad); p -= step_size m / (sqrt(v or vmax) / bc2_sqrt + eps)
    (the division by bc2_sqrt is a product with its reciprocal: one rounding
    apart from PyTorch, and one division fewer per element)."""
    cdef Py_ssize_t n = p.shape[0]
    cdef double w1 = 1 - beta1
    if not (_lengths_ok(n, g.shape[0], max_exp_avg_sq.shape[0], 0)
            and _lengths_ok(n, exp_avg.shape[0], exp_avg_sq.shape[0], 0)
            and exp_avg_sq.shape[0] == n):
        _length_error('adam_step')
    if n == 0:
        return
    cdef AdamArgs a = AdamArgs(
        g=&g[0], m=&exp_avg[0], v=&exp_avg_sq[0], vmax=ptr1(max_exp_avg_sq),
        decay=decay, wd=weight_decay, l1=l1, c1=w1 if w1 < 0.5 else -(1 - w1),
        beta2=beta2, one_minus_beta2=1 - beta2, step_size=step_size,
        inv_bc2_sqrt=1 / bias_correction2_sqrt, eps=eps, c1_from_d=w1 >= 0.5)
    with nogil:
        _run(ADAM, &p[0], &a, n, ELEMENT_WORK, num_threads)


# -- RMSprop ----------------------------------------------------------------------

cdef inline void _rmsprop_element(Py_ssize_t i, floating *p, const floating *g,
                                  floating *sq, floating *gavg, floating *buf, floating lr,
                                  floating alpha, floating one_minus_alpha, bint w_high,
                                  floating eps, floating wd, floating l1, floating momentum,
                                  bint centered, bint with_momentum) noexcept nogil:
    cdef floating d, avg
    d = g[i] + l1 * _sign(p[i])
    d = d + wd * p[i]
    sq[i] = sq[i] * alpha + one_minus_alpha * d * d
    if centered:
        gavg[i] = _lerp(gavg[i], d, one_minus_alpha, w_high)
        avg = _sqrt(sq[i] + (-1) * gavg[i] * gavg[i])
    else:
        avg = _sqrt(sq[i])
    avg = avg + eps
    if with_momentum:
        buf[i] = buf[i] * momentum + d / avg
        p[i] = p[i] + (-lr) * buf[i]
    else:
        p[i] = p[i] + (-lr) * (d / avg)


cdef void _rmsprop_range(floating *p, const RmspropArgs *a, Py_ssize_t lo,
                         Py_ssize_t hi) noexcept nogil:
    # one loop per combination of options, each a constant (see _adam_range)
    cdef const floating *g = <const floating *>a.g
    cdef floating *sq = <floating *>a.sq
    cdef floating *gavg = <floating *>a.gavg
    cdef floating *buf = <floating *>a.buf
    cdef floating lr = <floating>a.lr, alpha = <floating>a.alpha
    cdef floating one_minus_alpha = <floating>a.one_minus_alpha, eps = <floating>a.eps
    cdef floating wd = <floating>a.wd, l1 = <floating>a.l1
    cdef floating momentum = <floating>a.momentum
    cdef bint w_high = a.w_high
    cdef Py_ssize_t i
    if gavg != NULL and buf != NULL:
        for i in range(lo, hi):
            _rmsprop_element(i, p, g, sq, gavg, buf, lr, alpha, one_minus_alpha, w_high,
                             eps, wd, l1, momentum, True, True)
    elif gavg != NULL:
        for i in range(lo, hi):
            _rmsprop_element(i, p, g, sq, gavg, buf, lr, alpha, one_minus_alpha, w_high,
                             eps, wd, l1, momentum, True, False)
    elif buf != NULL:
        for i in range(lo, hi):
            _rmsprop_element(i, p, g, sq, gavg, buf, lr, alpha, one_minus_alpha, w_high,
                             eps, wd, l1, momentum, False, True)
    else:
        for i in range(lo, hi):
            _rmsprop_element(i, p, g, sq, gavg, buf, lr, alpha, one_minus_alpha, w_high,
                             eps, wd, l1, momentum, False, False)


def rmsprop_step(floating[::1] p, const floating[::1] g, floating[::1] square_avg,
                 floating[::1] grad_avg, floating[::1] momentum_buffer, double lr,
                 double alpha, double eps, double weight_decay, double l1,
                 double momentum, int num_threads):
    """RMSprop as torch.optim.RMSprop: d = g + l1 sign(p) + wd p;
    s = alpha s + (1 - alpha) d^2; centered (``grad_avg`` not empty):
    a = lerp(a, d, 1 - alpha), avg = sqrt(s - a^2) + eps, else sqrt(s) + eps;
    with momentum (buffer not empty) buf = momentum buf + d / avg, p -= lr buf,
    else p -= lr d / avg."""
    cdef Py_ssize_t n = p.shape[0]
    if not (g.shape[0] == n and _lengths_ok(n, square_avg.shape[0], grad_avg.shape[0],
                                             momentum_buffer.shape[0])):
        _length_error('rmsprop_step')
    if n == 0:
        return
    cdef RmspropArgs a = RmspropArgs(
        g=&g[0], sq=&square_avg[0], gavg=ptr1(grad_avg), buf=ptr1(momentum_buffer),
        lr=lr, alpha=alpha, one_minus_alpha=1 - alpha, eps=eps, wd=weight_decay, l1=l1,
        momentum=momentum, w_high=1 - alpha >= 0.5)
    with nogil:
        _run(RMSPROP, &p[0], &a, n, ELEMENT_WORK, num_threads)


# -- Adagrad ----------------------------------------------------------------------

cdef void _adagrad_range(floating *p, const AdagradArgs *a, Py_ssize_t lo,
                         Py_ssize_t hi) noexcept nogil:
    cdef const floating *g = <const floating *>a.g
    cdef floating *acc = <floating *>a.acc
    cdef floating clr = <floating>a.clr, eps = <floating>a.eps
    cdef floating wd = <floating>a.wd, l1 = <floating>a.l1
    cdef Py_ssize_t i
    cdef floating d
    for i in range(lo, hi):
        d = g[i] + l1 * _sign(p[i])
        d = d + wd * p[i]
        acc[i] = acc[i] + d * d
        p[i] = p[i] + (-clr) * (d / (_sqrt(acc[i]) + eps))


def adagrad_step(floating[::1] p, const floating[::1] g, floating[::1] state_sum, double clr,
                 double eps, double weight_decay, double l1, int num_threads):
    """Adagrad as torch.optim.Adagrad: d = g + l1 sign(p) + wd p; sum += d^2;
    p -= clr d / (sqrt(sum) + eps), clr = lr / (1 + (step - 1) lr_decay)."""
    cdef Py_ssize_t n = p.shape[0]
    if not (g.shape[0] == n and state_sum.shape[0] == n):
        _length_error('adagrad_step')
    if n == 0:
        return
    cdef AdagradArgs a = AdagradArgs(g=&g[0], acc=&state_sum[0], clr=clr, eps=eps,
                                     wd=weight_decay, l1=l1)
    with nogil:
        _run(ADAGRAD, &p[0], &a, n, ELEMENT_WORK, num_threads)


# -- clipping -----------------------------------------------------------------------

cdef enum:
    NORM_SQUARES = 0    # sum of x^2
    NORM_ABS = 1        # sum of |x|
    NORM_MAX = 2        # max of |x|
    NORM_POWER = 3      # sum of |x|^p


cdef double _reduce_range(const floating *x, Py_ssize_t lo, Py_ssize_t hi, int kind,
                          double power) noexcept nogil:
    """The reduction ``kind`` over x[lo:hi], accumulated in double."""
    cdef double acc[LANES]
    cdef double a, total
    cdef Py_ssize_t b, i, j, blocks = (hi - lo) // LANES
    cdef Py_ssize_t end = lo + blocks * LANES
    for j in range(LANES):
        acc[j] = 0
    if kind == NORM_SQUARES:
        for b in range(blocks):
            i = lo + b * LANES
            for j in range(LANES):
                acc[j] += <double>x[i + j] * <double>x[i + j]
        for i in range(end, hi):
            acc[0] += <double>x[i] * <double>x[i]
    elif kind == NORM_ABS:
        for b in range(blocks):
            i = lo + b * LANES
            for j in range(LANES):
                acc[j] += fabs(<double>x[i + j])
        for i in range(end, hi):
            acc[0] += fabs(<double>x[i])
    elif kind == NORM_MAX:
        for b in range(blocks):
            i = lo + b * LANES
            for j in range(LANES):
                a = fabs(<double>x[i + j])
                # a NaN wins and then stays (as in torch's max)
                if a > acc[j] or a != a:
                    acc[j] = a
        for i in range(end, hi):
            a = fabs(<double>x[i])
            if a > acc[0] or a != a:
                acc[0] = a
    else:
        for i in range(lo, hi):
            acc[0] += pow(fabs(<double>x[i]), power)
    total = acc[0]
    for j in range(1, LANES):
        if kind == NORM_MAX:
            if acc[j] > total or acc[j] != acc[j]:
                total = acc[j]
        else:
            total += acc[j]
    return total


def norm_reduce(const floating[::1] x, int kind, double power, int num_threads):
    """Sum of squares (kind 0), sum of |x| (1), max |x| (2) or sum |x|^power (3)
    of ``x``, in double.  Chunk partials are combined in a fixed order, so the
    result depends only on the thread count."""
    cdef Py_ssize_t n = x.shape[0], lo, hi
    cdef int chunks, c
    cdef double partial[MAX_SPLIT]
    cdef double total
    if n == 0:
        return 0.0
    with nogil:
        chunks = split_threads(n * (0.25 * ELEMENT_WORK if kind != NORM_POWER
                                    else 2 * ELEMENT_WORK), num_threads)
        if chunks == 1:
            total = _reduce_range(&x[0], 0, n, kind, power)
        else:
            for c in prange(chunks, num_threads=chunks, schedule="static", chunksize=1):
                lo = chunk_start(n, chunks, c, ALIGN)
                hi = chunk_start(n, chunks, c + 1, ALIGN)
                partial[c] = _reduce_range(&x[0], lo, hi, kind, power) if lo < hi else 0
            total = partial[0]
            for c in range(1, chunks):
                if kind == NORM_MAX:
                    if partial[c] > total or partial[c] != partial[c]:
                        total = partial[c]
                else:
                    total += partial[c]
    return total


cdef void _in_place_range(floating *x, Py_ssize_t lo, Py_ssize_t hi, floating value,
                          Kernel op) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating v
    if op == SCALE:
        for i in range(lo, hi):
            x[i] = x[i] * value
    else:
        for i in range(lo, hi):
            v = x[i]
            # NaN compares false both ways and stays NaN, as in torch.clamp
            v = value if v > value else v
            v = -value if v < -value else v
            x[i] = v


def scale(floating[::1] x, double coef, int num_threads):
    """x *= coef in place."""
    if x.shape[0] > 0:
        with nogil:
            _run(SCALE, &x[0], &coef, x.shape[0], 0.25 * ELEMENT_WORK, num_threads)


def clamp(floating[::1] x, double bound, int num_threads):
    """x = min(max(x, -bound), bound) in place (NaN stays NaN)."""
    if x.shape[0] > 0:
        with nogil:
            _run(CLAMP, &x[0], &bound, x.shape[0], 0.25 * ELEMENT_WORK, num_threads)
