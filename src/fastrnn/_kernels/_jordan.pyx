"""Whole-sequence forward and backward kernels for one Jordan network layer.

A Jordan layer feeds back its *output*, not its hidden state::

    a_t = W_ih x_t + W_yh y_{t-1} + b_h,   h_t = f(a_t)     (f = tanh or ReLU)
    z_t = W_hy h_t + b_y,                  y_t = g(z_t)     (g = identity, tanh,
                                                             sigmoid or softmax)

so the output product sits inside the recurrence.  The skeleton is the one of
``_recurrent.pyx``: rows are split into contiguous chunks, one per OpenMP
thread; each thread runs the whole time loop on its rows with the packed
micro-kernel (weights packed once per call), rows sorted longest first within
a chunk so the running rows are a prefix.  After the backward sweep the weight
gradients are big products over all timesteps.

Buffers (T, B, .): ``out`` holds y (zero past a row's length), ``h_hist`` the
hidden activations (training; one (1, B, H) slab in inference), and in
backward ``dz`` / ``da`` the pre-activation gradients of the output and the
hidden layer.
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport exp, expf
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset

from fastrnn._kernels._blas cimport parallel_gemm, parallel_gemm_tn
from fastrnn._kernels._packed cimport pack_weights, packed_gemm
from fastrnn._kernels._runtime cimport blas_get_threads, blas_set_threads
from fastrnn._kernels._rows cimport sigmoid_row, tanh_row
from fastrnn._kernels._views cimport const_ptr1, ptr1, ptr3

cpdef enum Hidden:
    TANH = 0
    RELU = 1

cpdef enum Output:
    IDENTITY = 0
    OUT_TANH = 1
    SIGMOID = 2
    SOFTMAX = 3


cdef struct Dims:
    int T, B, E, H, O
    int hidden          # Hidden
    int output          # Output
    bint state_grad     # backward: dL/dy_0 wanted (else its product is skipped)


cdef inline floating exp_of(floating v) noexcept nogil:
    if floating is float:
        return expf(v)
    else:
        return exp(v)


# --------------------------------------------------------------------------
# Activations, one row at a time (in place).
# --------------------------------------------------------------------------

cdef inline void hidden_forward(int kind, floating *a, int n) noexcept nogil:
    cdef int j
    if kind == TANH:
        tanh_row(a, a, n)
    else:
        for j in range(n):
            a[j] = a[j] if a[j] > 0 else 0


cdef inline void hidden_backward(int kind, const floating *h, floating *d,
                                 int n) noexcept nogil:
    """d (dL/dh) -> dL/da, given h = f(a)."""
    cdef int j
    cdef floating one = 1
    if kind == TANH:
        for j in range(n):
            d[j] = d[j] * (one - h[j] * h[j])
    else:
        for j in range(n):
            d[j] = d[j] if h[j] > 0 else 0


cdef inline void output_forward(int kind, floating *z, int n) noexcept nogil:
    cdef int j
    cdef floating top, total
    if kind == OUT_TANH:
        tanh_row(z, z, n)
    elif kind == SIGMOID:
        sigmoid_row(z, z, n)
    elif kind == SOFTMAX:
        top = z[0]
        for j in range(1, n):
            if z[j] > top:
                top = z[j]
        total = 0
        for j in range(n):
            z[j] = exp_of(z[j] - top)
            total = total + z[j]
        for j in range(n):
            z[j] = z[j] / total


cdef inline void output_backward(int kind, const floating *y, const floating *dy,
                                 floating *dz, int n) noexcept nogil:
    """dz = dL/dz from dy = dL/dy, given y = g(z)."""
    cdef int j
    cdef floating one = 1
    cdef floating dot
    if kind == IDENTITY:
        memcpy(dz, dy, n * sizeof(floating))
    elif kind == OUT_TANH:
        for j in range(n):
            dz[j] = dy[j] * (one - y[j] * y[j])
    elif kind == SIGMOID:
        for j in range(n):
            dz[j] = dy[j] * y[j] * (one - y[j])
    else:
        dot = 0
        for j in range(n):
            dot = dot + dy[j] * y[j]
        for j in range(n):
            dz[j] = y[j] * (dy[j] - dot)


cdef inline void fill_rows(floating *dst, const floating *row, int rows,
                           int width) noexcept nogil:
    """Every one of ``rows`` rows of ``dst`` = ``row`` (zeros when NULL)."""
    cdef int i
    for i in range(rows):
        if row != NULL:
            memcpy(dst + <size_t>i * width, row, width * sizeof(floating))
        else:
            memset(dst + <size_t>i * width, 0, width * sizeof(floating))


# --------------------------------------------------------------------------
# The time loops for one chunk of rows.
# --------------------------------------------------------------------------

cdef void forward_chunk(const Dims *dm, int r0, int r1, const int *lengths,
                        const floating *x, const floating *b_h, const floating *b_y,
                        const floating *w_ih_p, const floating *w_yh_p,
                        const floating *w_hy_p, floating *y, floating *h_hist,
                        size_t hist_stride, floating *out) noexcept nogil:
    """Rows r0..r1 through the sequence; ``y`` (B, O) holds y_0 on entry and
    each row's last valid output on exit.  With ``hist_stride`` 0 (inference)
    ``h_hist`` is one reused slab; otherwise padded rows are zeroed in it so
    that the weight-gradient products never read stale memory."""
    cdef int T = dm.T, B = dm.B, E = dm.E, H = dm.H, O = dm.O
    cdef int rows = r1 - r0
    cdef int n = rows
    cdef int t, i
    cdef floating *hrow
    cdef floating *yrow
    for t in range(T):
        while n > 0 and lengths[r0 + n - 1] <= t:
            n -= 1
        hrow = h_hist + t * hist_stride + <size_t>r0 * H
        if hist_stride != 0 and n < rows:
            memset(hrow + <size_t>n * H, 0, <size_t>(rows - n) * H * sizeof(floating))
        if n == 0:
            continue
        fill_rows(hrow, b_h, n, H)
        packed_gemm(n, H, E, x + (<size_t>t * B + r0) * E, E, w_ih_p, hrow, H)
        packed_gemm(n, H, O, y + <size_t>r0 * O, O, w_yh_p, hrow, H)
        yrow = out + (<size_t>t * B + r0) * O
        fill_rows(yrow, b_y, n, O)
        for i in range(n):
            hidden_forward(dm.hidden, hrow + <size_t>i * H, H)
        packed_gemm(n, O, H, hrow, H, w_hy_p, yrow, O)
        for i in range(n):
            output_forward(dm.output, yrow + <size_t>i * O, O)
        memcpy(y + <size_t>r0 * O, yrow, <size_t>n * O * sizeof(floating))


cdef void backward_chunk(const Dims *dm, int r0, int r1, const int *lengths,
                         const floating *w_hy_p, const floating *w_yh_p,
                         const floating *h_hist, const floating *out,
                         const floating *d_out, floating *dy, floating *dz,
                         floating *da, floating *bias_acc) noexcept nogil:
    """The reverse sweep for rows r0..r1.  ``dy`` (B, O) holds dL/dy_T on
    entry and dL/dy_0 on exit (left meaningless without ``dm.state_grad``: the
    first step's product into it is skipped); ``dz`` / ``da`` (T, B, O) / (T, B, H) receive
    the pre-activation gradients (zero at padded steps); ``bias_acc`` (H + O)
    collects their column sums while the rows are in cache."""
    cdef int T = dm.T, B = dm.B, H = dm.H, O = dm.O
    cdef int rows = r1 - r0
    cdef int n = 0
    cdef int step, t, i, j
    cdef size_t at
    cdef floating *dz_t
    cdef floating *da_t
    cdef floating *dy_row
    cdef const floating *d_row
    for step in range(T):
        t = T - 1 - step
        while n < rows and lengths[r0 + n] > t:
            n += 1
        at = <size_t>t * B + r0
        dz_t = dz + at * O
        da_t = da + at * H
        memset(dz_t + <size_t>n * O, 0, <size_t>(rows - n) * O * sizeof(floating))
        memset(da_t, 0, <size_t>rows * H * sizeof(floating))
        if n == 0:
            continue
        for i in range(n):
            dy_row = dy + <size_t>(r0 + i) * O
            d_row = d_out + (at + i) * O
            for j in range(O):
                dy_row[j] = dy_row[j] + d_row[j]
            output_backward(dm.output, out + (at + i) * O, dy_row, dz_t + <size_t>i * O, O)
        packed_gemm(n, H, O, dz_t, O, w_hy_p, da_t, H)          # dh = dz W_hy
        for i in range(n):
            hidden_backward(dm.hidden, h_hist + (at + i) * H, da_t + <size_t>i * H, H)
            if bias_acc != NULL:
                for j in range(H):
                    bias_acc[j] += da_t[<size_t>i * H + j]
                for j in range(O):
                    bias_acc[H + j] += dz_t[<size_t>i * O + j]
        if t > 0 or dm.state_grad:
            memset(dy + <size_t>r0 * O, 0, <size_t>n * O * sizeof(floating))
            packed_gemm(n, O, H, da_t, H, w_yh_p, dy + <size_t>r0 * O, O)  # dy_{t-1} = da W_yh


cdef void weight_gradients(const Dims *dm, const floating *x, const floating *w_ih,
                           const floating *h_hist, const floating *out,
                           const floating *y0, const floating *dz, const floating *da,
                           floating *d_x, floating *dw_ih, floating *dw_yh,
                           floating *dw_hy, int num_threads) noexcept nogil:
    """Products over all T * B rows after the sweep (padded rows hold zero
    gradients, so they add nothing)."""
    cdef int T = dm.T, B = dm.B, E = dm.E, H = dm.H, O = dm.O
    cdef int rows = T * B
    parallel_gemm_tn(H, E, rows, da, H, x, E, dw_ih, E, num_threads)
    parallel_gemm_tn(O, H, rows, dz, O, h_hist, H, dw_hy, H, num_threads)
    if T > 1:   # y_{t-1} is the previous output row
        parallel_gemm_tn(H, O, (T - 1) * B, da + <size_t>B * H, H, out, O, dw_yh, O,
                         num_threads)
    if y0 != NULL:
        parallel_gemm_tn(H, O, B, da, H, y0, O, dw_yh, O, num_threads)
    if d_x != NULL:
        parallel_gemm(False, False, rows, E, H, da, H, w_ih, E, <floating>0, d_x, E,
                      num_threads)


# --------------------------------------------------------------------------
# Python entry points (validated by fastrnn.layers.jordan; never call directly).
# --------------------------------------------------------------------------

cdef void fill_dims(Dims *dm, int hidden, int output, int T, int B, int E, int H,
                    int O) noexcept nogil:
    dm.T = T
    dm.B = B
    dm.E = E
    dm.H = H
    dm.O = O
    dm.hidden = hidden
    dm.output = output
    dm.state_grad = True


def forward(int hidden, int output,
            const floating[:, :, ::1] x,
            const floating[:, ::1] w_ih,
            const floating[:, ::1] w_yh,
            const floating[::1] b_h,
            const floating[:, ::1] w_hy,
            const floating[::1] b_y,
            const int[::1] lengths,
            const int[::1] chunks,
            floating[:, ::1] y,
            floating[:, :, ::1] out,
            floating[:, :, ::1] h_hist,
            int num_threads):
    """One layer over the whole sequence in one parallel region.

    ``y`` (B, O): y_0 on entry, the final output of every row on exit.
    ``out`` (T, B, O) receives y_t (rows past their length are untouched).
    ``h_hist``: (T, B, H) keeps the hidden activations for ``backward``, or
    (1, B, H) workspace in inference.  ``b_h`` / ``b_y`` are empty without bias.
    """
    cdef Dims dm
    cdef int nchunks = chunks.shape[0] - 1
    cdef int k
    cdef size_t stride = (<size_t>x.shape[1] * w_ih.shape[0]
                          if h_hist.shape[0] == x.shape[0] else 0)
    cdef floating *w_ih_p
    cdef floating *w_yh_p
    cdef floating *w_hy_p
    cdef bint ok
    fill_dims(&dm, hidden, output, x.shape[0], x.shape[1], x.shape[2], w_ih.shape[0],
              w_hy.shape[0])
    with nogil:
        w_ih_p = pack_weights(&w_ih[0, 0], dm.H, dm.E, True)
        w_yh_p = pack_weights(&w_yh[0, 0], dm.H, dm.O, True)
        w_hy_p = pack_weights(&w_hy[0, 0], dm.O, dm.H, True)
        ok = w_ih_p != NULL and w_yh_p != NULL and w_hy_p != NULL
        if ok:
            for k in prange(nchunks, num_threads=num_threads, schedule="static",
                            chunksize=1):
                forward_chunk(&dm, chunks[k], chunks[k + 1], &lengths[0], &x[0, 0, 0],
                              const_ptr1(b_h), const_ptr1(b_y), w_ih_p, w_yh_p, w_hy_p, &y[0, 0],
                              &h_hist[0, 0, 0], stride, &out[0, 0, 0])
        free(w_ih_p)
        free(w_yh_p)
        free(w_hy_p)
    if not ok:
        raise MemoryError("fastrnn: no memory to pack the Jordan layer weights")


cdef void sweep_backward(const Dims *dm, const int *chunks, int nchunks, int num_threads,
                         const int *lengths, const floating *w_hy_p,
                         const floating *w_yh_p, const floating *h_hist,
                         const floating *out, const floating *d_out, floating *dy,
                         floating *dz, floating *da, floating *bias_acc,
                         floating *db_h, floating *db_y) noexcept nogil:
    """``backward_chunk`` on every chunk in parallel; then the chunks' bias
    sums (``bias_acc``, H + O per chunk, zeroed; NULL without bias) added to
    db_h, db_y in chunk order: the same sums with any thread count."""
    cdef int k, j
    cdef size_t stride = dm.H + dm.O
    for k in prange(nchunks, num_threads=num_threads, schedule="static", chunksize=1):
        backward_chunk(dm, chunks[k], chunks[k + 1], lengths, w_hy_p, w_yh_p, h_hist, out,
                       d_out, dy, dz, da, bias_acc + k * stride if bias_acc != NULL else NULL)
    if bias_acc == NULL:
        return
    for k in range(nchunks):
        for j in range(dm.H):
            db_h[j] += bias_acc[k * stride + j]
        for j in range(dm.O):
            db_y[j] += bias_acc[k * stride + dm.H + j]


def backward(int hidden, int output, const floating[:, :, ::1] x,
             const floating[:, ::1] w_ih, const floating[:, ::1] w_yh,
             const floating[:, ::1] w_hy, const int[::1] lengths,
             const int[::1] chunks, const floating[:, ::1] y0, bint has_y0,
             const floating[:, :, ::1] out, const floating[:, :, ::1] h_hist,
             const floating[:, :, ::1] d_out, floating[:, ::1] dy,
             floating[:, :, ::1] dz, floating[:, :, ::1] da, floating[:, :, ::1] d_x,
             floating[:, ::1] dw_ih, floating[:, ::1] dw_yh, floating[::1] db_h,
             floating[:, ::1] dw_hy, floating[::1] db_y, int num_threads,
             bint state_grad=True):
    """Backpropagate through one layer (after ``forward`` with a (T, B, H) history).

    ``dy`` holds dL/dy_T (the final state) on entry and dL/dy_0 on exit
    (without ``state_grad``, which skips the product that only feeds it: a
    meaningless value).
    ``dz`` (T, B, O) and ``da`` (T, B, H) are workspace.  ``d_x`` (may be
    empty) is overwritten; weight and bias gradients are accumulated (+=).
    """
    cdef Dims dm
    cdef int nchunks = chunks.shape[0] - 1
    cdef int prev_threads
    cdef floating *w_hy_p
    cdef floating *w_yh_p
    cdef floating *bias_acc = NULL
    cdef bint with_bias = db_h.shape[0] > 0
    cdef bint ok
    fill_dims(&dm, hidden, output, x.shape[0], x.shape[1], x.shape[2], w_ih.shape[0],
              w_hy.shape[0])
    dm.state_grad = state_grad
    with nogil:
        w_hy_p = pack_weights(&w_hy[0, 0], dm.O, dm.H, False)
        w_yh_p = pack_weights(&w_yh[0, 0], dm.H, dm.O, False)
        ok = w_hy_p != NULL and w_yh_p != NULL
        if with_bias:
            bias_acc = <floating *>calloc(<size_t>nchunks * (dm.H + dm.O), sizeof(floating))
            ok = ok and bias_acc != NULL
        if ok:
            prev_threads = blas_get_threads()
            blas_set_threads(1)
            sweep_backward(&dm, &chunks[0], nchunks, num_threads, &lengths[0], w_hy_p,
                           w_yh_p, &h_hist[0, 0, 0], &out[0, 0, 0], &d_out[0, 0, 0],
                           &dy[0, 0], &dz[0, 0, 0], &da[0, 0, 0], bias_acc,
                           ptr1(db_h), ptr1(db_y))
            weight_gradients(&dm, &x[0, 0, 0], &w_ih[0, 0], &h_hist[0, 0, 0],
                             &out[0, 0, 0], &y0[0, 0] if has_y0 else NULL,
                             &dz[0, 0, 0], &da[0, 0, 0],
                             ptr3(d_x),
                             &dw_ih[0, 0], &dw_yh[0, 0], &dw_hy[0, 0], num_threads)
            if prev_threads > 1:
                blas_set_threads(prev_threads)
        free(w_hy_p)
        free(w_yh_p)
        free(bias_acc)
    if not ok:
        raise MemoryError("fastrnn: no memory to pack the Jordan layer weights")
