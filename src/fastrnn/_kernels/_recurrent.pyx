"""Whole-sequence forward and backward kernels for one recurrent layer direction.

One skeleton serves every cell (vanilla RNN, LSTM, GRU); a cell contributes
only its elementwise gate math (``cell_forward_row`` / ``cell_backward_row``).

The gate buffer ``gates`` has shape (T, B, W) and plays three roles:

1. forward staging: the folded biases plus the input projection of every
   timestep, written by one big GEMM before the time loop;
2. forward storage: the time loop adds the recurrent product and replaces the
   pre-activations in place by what the backward pass needs (activations);
3. backward: the sweep replaces the activations by the pre-activation
   gradients, from which the weight gradients are big GEMMs after the sweep.

Columns of ``gates`` ("blocks"), with H the hidden size:

* RNN:  [a]                      W = H,  recurrent product into [0, H)
* LSTM: [i, f, g, o]             W = 4H, recurrent product into [0, 4H)
* GRU:  [r, z, hn, n]            W = 4H, recurrent product into [0, 3H)

For the GRU, ``hn = W_hn h + b_hn`` is kept apart from the input part of the
candidate ``n`` because the reset gate multiplies only ``hn``.  In backward the
GRU's ``hn`` block holds the hidden-side gradient of ``n`` (``dn * r``) and the
``n`` block its input-side gradient (``dn``), so the recurrent product always
reads columns [0, GH) and the input side reads ``input_blocks``.

Cell variants (issue 16), flags in ``Dims``:

* GRU ``reset_before`` (ONNX linear_before_reset=0, Keras reset_after=False):
  n = tanh(W_in x + b_in + W_hn (r * h) + b_hn).  The recurrent product is
  split: W_rz h into [r, z] (GH = 2H), then W_hn (r * h) into the n block.
  The ``hn`` block stores r * h_prev (forward and backward), from which dW_hn
  is one product after the sweep; b_hn is folded into the n block.
* LSTM ``peepholes``: i, f see c_{t-1} and o sees c_t through diagonal weights
  ``peep`` (3, C) in the order i, f, o.
* LSTM ``clip``: gate pre-activations clipped to [-clip, clip] (ONNX ``clip``
  as ONNX Runtime applies it: inputs of the gate activations, after the
  peepholes; the cell state itself is not clipped).
* LSTM ``input_forget`` (ONNX): f = 1 - i; the forget pre-activation is
  ignored (its weights get zero gradients).
* LSTM ``proj``: h = W_hr (o * tanh(c)) (PyTorch proj_size).  Here ``C`` is
  the cell width (hidden_size) and ``H`` the state width (proj_size); gate
  columns are [i, f, g, o, m, dh] with m = o * tanh(c) (C wide) and dh (H
  wide, backward only) kept for dW_hr.  Without projection C == H.

Rows of the batch are split into contiguous chunks, one per OpenMP thread;
each thread runs the whole time loop on its rows (rows never interact, so
there is no barrier per timestep).  Within a chunk rows are sorted by length,
longest first, so the rows still running at a timestep are a prefix of the
chunk and padded steps cost nothing.
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memcpy, memset

from libc.stdlib cimport calloc, free, malloc

from fastrnn._kernels._blas cimport gemm, parallel_gemm, parallel_gemm_tn
from fastrnn._kernels._packed cimport pack_weights, packed_gemm
from fastrnn._kernels._runtime cimport blas_get_threads, blas_set_threads, parallel_min_work

cdef extern from "fr_math.h" nogil:
    void fr_tanh_row_f(const float *x, float *y, int n)
    void fr_tanh_row_d(const double *x, double *y, int n)
    void fr_sigmoid_row_f(const float *x, float *y, int n)
    void fr_sigmoid_row_d(const double *x, double *y, int n)

cpdef enum Cell:
    RNN_TANH = 0
    RNN_RELU = 1
    LSTM = 2
    GRU = 3


cdef struct Dims:
    int T, B, E, H
    int W               # width of the gate buffer
    int GH              # rows of W_hh (gate columns fed by the recurrent product)
    int cell
    bint reverse
    int out_ld          # row stride of ``out`` (D * H)
    int out_off         # first column of this direction in ``out``
    # Cell variants (see the module docstring); defaults 0.
    int C               # cell width (== H unless the LSTM is projected)
    bint reset_before   # GRU: reset gate applied before W_hn
    bint peepholes      # LSTM peephole weights
    bint proj           # LSTM projection h = W_hr m
    double clip         # LSTM gate pre-activation clip; 0 = off
    bint input_forget   # LSTM coupled gates: f = 1 - i (ONNX input_forget)


cdef inline int gate_width(int cell, int H) noexcept nogil:
    return H if cell == RNN_TANH or cell == RNN_RELU else 4 * H


cdef inline int gate_rows(int cell, int H) noexcept nogil:
    if cell == LSTM:
        return 4 * H
    if cell == GRU:
        return 3 * H
    return H


cdef inline int buffer_cols(int cell, int C, int H) noexcept nogil:
    """Columns of the gate buffer for a cell of width C and state width H
    (H < C only for the projected LSTM: [i, f, g, o, m, dh])."""
    if cell == LSTM and H != C:
        return 5 * C + H
    return gate_width(cell, C)


def buffer_width(int cell, int C, int H):
    """``buffer_cols`` for the layers (the width of their gate buffers)."""
    return buffer_cols(cell, C, H)


cdef inline void tanh_row(const floating *x, floating *y, int n) noexcept nogil:
    if floating is float:
        fr_tanh_row_f(x, y, n)
    else:
        fr_tanh_row_d(x, y, n)


cdef inline void sigmoid_row(const floating *x, floating *y, int n) noexcept nogil:
    if floating is float:
        fr_sigmoid_row_f(x, y, n)
    else:
        fr_sigmoid_row_d(x, y, n)


# --------------------------------------------------------------------------
# Cell gate math, one batch row at a time.
# --------------------------------------------------------------------------

cdef inline void clip_row(floating *x, int n, double limit) noexcept nogil:
    cdef int j
    cdef floating hi = <floating>limit
    cdef floating lo = -hi
    for j in range(n):
        x[j] = hi if x[j] > hi else (lo if x[j] < lo else x[j])


cdef inline void lstm_forward_variant_row(const Dims *dm, floating *g, floating *c,
                                          floating *m, const floating *peep) noexcept nogil:
    """LSTM gate math with peepholes and/or clipping; ``m`` = o * tanh(c)."""
    cdef int j, C = dm.C
    cdef floating *gi = g
    cdef floating *gf = g + C
    cdef floating *gg = g + 2 * C
    cdef floating *go = g + 3 * C
    if dm.peepholes:
        for j in range(C):
            gi[j] = gi[j] + peep[j] * c[j]
            gf[j] = gf[j] + peep[C + j] * c[j]
    if dm.clip > 0:
        clip_row(g, 3 * C, dm.clip)
    sigmoid_row(g, g, 2 * C)
    if dm.input_forget:
        for j in range(C):
            gf[j] = 1 - gi[j]
    tanh_row(gg, gg, C)
    for j in range(C):
        c[j] = gf[j] * c[j] + gi[j] * gg[j]
    if dm.peepholes:
        for j in range(C):
            go[j] = go[j] + peep[2 * C + j] * c[j]
    if dm.clip > 0:
        clip_row(go, C, dm.clip)
    sigmoid_row(go, go, C)
    tanh_row(c, m, C)
    for j in range(C):
        m[j] = go[j] * m[j]


cdef inline void cell_forward_row(const Dims *dm, floating *g, floating *h,
                                  floating *c, floating *out_row,
                                  const floating *peep) noexcept nogil:
    """Pre-activations ``g`` -> stored activations; update state ``h`` (and ``c``).

    ``out_row`` receives the new hidden state, except for the projected LSTM
    (the caller projects m = o * tanh(c), stored in the gate buffer).  For the
    reset-before GRU, r and z arrive activated (``gru_reset_rows``).
    """
    cdef int j, H = dm.H, cell = dm.cell
    cdef floating one = 1     # a typed 1: Cython writes a literal 1 as 1.0 (double)
    cdef floating *gi
    cdef floating *gf
    cdef floating *gg
    cdef floating *go
    if cell == RNN_TANH:
        tanh_row(g, h, H)
    elif cell == RNN_RELU:
        for j in range(H):
            h[j] = g[j] if g[j] > 0 else 0
    elif cell == LSTM and (dm.peepholes or dm.clip > 0 or dm.proj or dm.input_forget):
        lstm_forward_variant_row(dm, g, c, g + 4 * dm.C if dm.proj else h, peep)
        if dm.proj:
            return
    elif cell == LSTM:
        gi = g
        gf = g + H
        gg = g + 2 * H
        go = g + 3 * H
        sigmoid_row(g, g, 2 * H)
        tanh_row(gg, gg, H)
        sigmoid_row(go, go, H)
        for j in range(H):
            c[j] = gf[j] * c[j] + gi[j] * gg[j]
        tanh_row(c, h, H)
        for j in range(H):
            h[j] = go[j] * h[j]
    elif dm.reset_before:  # GRU: g = [r, z, r * h, n] with r, z activated
        tanh_row(g + 3 * H, g + 3 * H, H)
        for j in range(H):
            h[j] = (one - g[H + j]) * g[3 * H + j] + g[H + j] * h[j]
    else:  # GRU: g = [r, z, hn, n_x] -> [r, z, hn, n]
        sigmoid_row(g, g, 2 * H)
        for j in range(H):
            g[3 * H + j] = g[3 * H + j] + g[j] * g[2 * H + j]
        tanh_row(g + 3 * H, g + 3 * H, H)
        for j in range(H):
            h[j] = (one - g[H + j]) * g[3 * H + j] + g[H + j] * h[j]
    memcpy(out_row, h, H * sizeof(floating))


cdef inline void gru_reset_rows(int n, int H, int W, floating *g,
                                const floating *h) noexcept nogil:
    """Reset-before GRU, between the two recurrent products: activate r, z and
    store r * h in the ``hn`` block (the operand of W_hn)."""
    cdef int i, j
    cdef floating *row
    for i in range(n):
        row = g + <size_t>i * W
        sigmoid_row(row, row, 2 * H)
        for j in range(H):
            row[2 * H + j] = row[j] * h[<size_t>i * H + j]


cdef inline floating clip_pass(floating a, floating lo, floating hi) noexcept nogil:
    """1 where the activation ``a`` came from an unclipped pre-activation."""
    return 1 if lo < a < hi else 0


cdef inline void lstm_backward_variant_row(const Dims *dm, floating *g, floating *dh,
                                           floating *dc, const floating *c,
                                           const floating *c_prev, floating *tc,
                                           const floating *peep, const floating *limits,
                                           floating *peep_acc) noexcept nogil:
    """``lstm`` backward with peepholes and/or clipping.

    A clipped pre-activation has zero derivative; it is recognised from its
    stored activation, which equals the activation of the bound (``limits``:
    sigmoid(-clip), sigmoid(clip), tanh(-clip), tanh(clip))."""
    cdef int j, C = dm.C
    cdef floating one = 1
    cdef floating d, i_, f_, g_, o_, t, dcj, d_i, d_f, d_g, d_o
    cdef floating mi = 1, mf = 1, mg = 1, mo = 1
    tanh_row(c, tc, C)
    for j in range(C):
        i_ = g[j]
        f_ = g[C + j]
        g_ = g[2 * C + j]
        o_ = g[3 * C + j]
        t = tc[j]
        d = dh[j]
        if limits != NULL:
            mi = clip_pass(i_, limits[0], limits[1])
            mf = clip_pass(f_, limits[0], limits[1])
            mg = clip_pass(g_, limits[2], limits[3])
            mo = clip_pass(o_, limits[0], limits[1])
        d_o = d * t * o_ * (one - o_) * mo
        dcj = dc[j] + d * o_ * (one - t * t)
        if dm.peepholes:
            dcj = dcj + d_o * peep[2 * C + j]
        d_g = dcj * i_ * (one - g_ * g_) * mg
        if dm.input_forget:    # c = (1 - i) c_prev + i g
            d_i = dcj * (g_ - c_prev[j]) * i_ * (one - i_) * mi
            d_f = 0
        else:
            d_i = dcj * g_ * i_ * (one - i_) * mi
            d_f = dcj * c_prev[j] * f_ * (one - f_) * mf
        dc[j] = dcj * f_
        if dm.peepholes:
            dc[j] = dc[j] + d_i * peep[j] + d_f * peep[C + j]
            peep_acc[j] += d_i * c_prev[j]
            peep_acc[C + j] += d_f * c_prev[j]
            peep_acc[2 * C + j] += d_o * c[j]
        g[j] = d_i
        g[C + j] = d_f
        g[2 * C + j] = d_g
        g[3 * C + j] = d_o
        dh[j] = 0


cdef inline void cell_backward_row(const Dims *dm, floating *g, floating *dh,
                                   floating *dc, const floating *h,
                                   const floating *h_prev, const floating *c,
                                   const floating *c_prev, floating *scratch,
                                   const floating *peep, const floating *limits,
                                   floating *peep_acc) noexcept nogil:
    """Stored activations ``g`` -> pre-activation gradients, in place.

    ``dh`` comes in as dL/dh_t and leaves as the part of dL/dh_{t-1} that does
    not pass through W_hh (the recurrent product is added by the caller); for
    the projected LSTM it is dL/dm (C wide).
    ``dc`` (LSTM) comes in as dL/dc_t from later steps and leaves as dL/dc_{t-1}.
    The reset-before GRU leaves r in place for ``gru_reset_backward_rows``.
    """
    cdef int j, H = dm.H, cell = dm.cell
    cdef floating one = 1
    cdef floating d, a, i_, f_, g_, o_, tc, dcj, r_, z_, hn, n_, dn
    if cell == RNN_TANH:
        for j in range(H):
            g[j] = dh[j] * (one - h[j] * h[j])
            dh[j] = 0
    elif cell == RNN_RELU:
        for j in range(H):
            g[j] = dh[j] if h[j] > 0 else 0
            dh[j] = 0
    elif cell == LSTM and (dm.peepholes or limits != NULL or dm.proj or dm.input_forget):
        lstm_backward_variant_row(dm, g, dh, dc, c, c_prev, scratch, peep, limits,
                                  peep_acc)
    elif cell == LSTM:
        tanh_row(c, scratch, H)
        for j in range(H):
            i_ = g[j]
            f_ = g[H + j]
            g_ = g[2 * H + j]
            o_ = g[3 * H + j]
            tc = scratch[j]
            d = dh[j]
            dcj = dc[j] + d * o_ * (one - tc * tc)
            g[j] = dcj * g_ * i_ * (one - i_)
            g[H + j] = dcj * c_prev[j] * f_ * (one - f_)
            g[2 * H + j] = dcj * i_ * (one - g_ * g_)
            g[3 * H + j] = d * tc * o_ * (one - o_)
            dc[j] = dcj * f_
            dh[j] = 0
    elif dm.reset_before:  # GRU [r, z, r * h_prev, n]: z and n here, r later
        for j in range(H):
            z_ = g[H + j]
            n_ = g[3 * H + j]
            d = dh[j]
            g[H + j] = d * (h_prev[j] - n_) * z_ * (one - z_)
            g[3 * H + j] = d * (one - z_) * (one - n_ * n_)
            dh[j] = d * z_
    else:  # GRU
        for j in range(H):
            r_ = g[j]
            z_ = g[H + j]
            hn = g[2 * H + j]
            n_ = g[3 * H + j]
            d = dh[j]
            dn = d * (one - z_) * (one - n_ * n_)
            g[j] = dn * hn * r_ * (one - r_)
            g[H + j] = d * (h_prev[j] - n_) * z_ * (one - z_)
            g[2 * H + j] = dn * r_
            g[3 * H + j] = dn
            dh[j] = d * z_


# --------------------------------------------------------------------------
# The skeleton: one chunk of rows through the whole time loop.
# --------------------------------------------------------------------------

cdef void forward_chunk(const Dims *dm, int r0, int r1, const int *lengths,
                        const floating *x, const floating *bias_row,
                        const floating **w_ih_packed, const floating *w_hh_packed,
                        floating *gates, size_t gates_t_stride, floating *h,
                        floating *c, floating *out, floating *c_hist,
                        const floating *w2_packed, const floating *peep) noexcept nogil:
    """Rows r0..r1 through the whole sequence.

    Per timestep: folded biases + the input product (one packed W_ih^T per
    input block) + the recurrent product (packed W_hh^T), then the cell's gate
    math.  ``gates_t_stride`` is B * W when every step is kept for backward,
    0 in inference (one slab of B rows reused).  ``c`` and ``c_hist`` are NULL
    except for the LSTM (``c_hist`` only when training).  ``w2_packed`` is the
    second recurrent product of a variant (W_hn^T reset-before, W_hr^T
    projection), ``peep`` the LSTM peepholes (NULL otherwise).
    """
    cdef int T = dm.T, B = dm.B, E = dm.E, H = dm.H, W = dm.W, GH = dm.GH, C = dm.C
    cdef int rows = r1 - r0
    cdef int n = 0 if dm.reverse else rows     # rows still running
    cdef int step, t, i, b, k, col, wrow, size
    cdef floating *g
    for step in range(T):
        t = T - 1 - step if dm.reverse else step
        if dm.reverse:
            while n < rows and lengths[r0 + n] > t:
                n += 1
            if n == 0:
                continue
        else:
            while n > 0 and lengths[r0 + n - 1] <= t:
                n -= 1
            if n == 0:
                break
        g = gates + t * gates_t_stride + <size_t>r0 * W
        for i in range(n):
            memcpy(g + <size_t>i * W, bias_row, W * sizeof(floating))
        for k in range(block_count(dm.cell)):
            input_block(dm.cell, C, k, &col, &wrow, &size)
            packed_gemm(n, size, E, x + (<size_t>t * B + r0) * E, E, w_ih_packed[k],
                        g + col, W)
        packed_gemm(n, GH, H, h + <size_t>r0 * H, H, w_hh_packed, g, W)
        if dm.reset_before:
            gru_reset_rows(n, H, W, g, h + <size_t>r0 * H)
            packed_gemm(n, H, H, g + 2 * H, W, w2_packed, g + 3 * H, W)
        for i in range(n):
            b = r0 + i
            cell_forward_row(dm, g + <size_t>i * W, h + <size_t>b * H,
                             c + <size_t>b * C if c != NULL else NULL,
                             out + (<size_t>t * B + b) * dm.out_ld + dm.out_off, peep)
            if c_hist != NULL:
                memcpy(c_hist + (<size_t>t * B + b) * C, c + <size_t>b * C,
                       C * sizeof(floating))
        if dm.proj:
            project_rows(dm, n, g, w2_packed, h + <size_t>r0 * H,
                         out + (<size_t>t * B + r0) * dm.out_ld + dm.out_off)


cdef inline void project_rows(const Dims *dm, int n, const floating *g,
                              const floating *w_hr_packed, floating *h,
                              floating *out) noexcept nogil:
    """Projected LSTM: h = m W_hr^T for n rows (m in the gate buffer); copy to out."""
    cdef int i, H = dm.H
    memset(h, 0, <size_t>n * H * sizeof(floating))
    packed_gemm(n, H, dm.C, g + 4 * dm.C, dm.W, w_hr_packed, h, H)
    for i in range(n):
        memcpy(out + <size_t>i * dm.out_ld, h + <size_t>i * H, H * sizeof(floating))


cdef inline void project_back_rows(const Dims *dm, int n, floating *g,
                                   const floating *w_hr_packed, floating *dh,
                                   floating *dm_rows, int dm_ld) noexcept nogil:
    """Projected LSTM backward: keep dL/dh_t in the gate buffer (for dW_hr),
    dL/dm = dL/dh_t W_hr into ``dm_rows``; ``dh`` is left at zero."""
    cdef int i, H = dm.H, W = dm.W, C = dm.C
    for i in range(n):
        memcpy(g + <size_t>i * W + 5 * C, dh + <size_t>i * H, H * sizeof(floating))
        memset(dh + <size_t>i * H, 0, H * sizeof(floating))
        memset(dm_rows + <size_t>i * dm_ld, 0, C * sizeof(floating))
    packed_gemm(n, C, H, g + 5 * C, W, w_hr_packed, dm_rows, dm_ld)


cdef inline void gru_reset_backward_rows(const Dims *dm, int n, floating *g,
                                         const floating *w_hn_packed,
                                         const floating **h_prev, floating *dh,
                                         floating *d_rh) noexcept nogil:
    """Reset-before GRU backward, after the cell rows: dL/d(r * h) = dn W_hn,
    which gives the r gradient and the part of dL/dh_{t-1} through r * h."""
    cdef int i, j, H = dm.H, W = dm.W
    cdef floating one = 1
    cdef floating r_, d
    cdef floating *row
    memset(d_rh, 0, <size_t>n * H * sizeof(floating))
    packed_gemm(n, H, H, g + 3 * H, W, w_hn_packed, d_rh, H)
    for i in range(n):
        row = g + <size_t>i * W
        for j in range(H):
            r_ = row[j]
            d = d_rh[<size_t>i * H + j]
            row[j] = d * h_prev[i][j] * r_ * (one - r_)
            dh[<size_t>i * H + j] += d * r_


cdef void backward_chunk(const Dims *dm, int r0, int r1, const int *lengths,
                         floating *gates, const floating *w_hh_packed,
                         const floating *h0, const floating *c0,
                         const floating *out, const floating *c_hist,
                         const floating *d_out, floating *dh, floating *dc,
                         floating *scratch, floating *bias_acc,
                         const floating *w2_packed, const floating *peep,
                         floating *peep_acc, const floating **h_prevs) noexcept nogil:
    """Rows r0..r1 backwards through the sequence (see ``forward_chunk``).

    ``scratch`` has 2 * C columns per row ([tanh(c) | dL/dm] for the LSTM,
    dL/d(r * h) for the reset-before GRU); ``h_prevs`` holds one pointer per
    row of the chunk; ``peep_acc`` (3 * C) the chunk's peephole gradients."""
    cdef int T = dm.T, B = dm.B, H = dm.H, W = dm.W, GH = dm.GH, C = dm.C
    cdef int rows = r1 - r0
    cdef int n = rows if dm.reverse else 0     # rows with a step at t
    cdef int step, t, i, b, j, t_prev
    cdef bint has_prev
    cdef floating limit_store[4]
    cdef floating *limits = clip_limits(dm, limit_store)
    cdef floating *g
    cdef floating *scratch_row
    cdef const floating *c_prev
    cdef const floating *c_t
    cdef size_t o_ld = dm.out_ld
    for step in range(T):
        # The sweep runs against the direction of the forward pass.
        t = step if dm.reverse else T - 1 - step
        if dm.reverse:
            while n > 0 and lengths[r0 + n - 1] <= t:
                n -= 1
        else:
            while n < rows and lengths[r0 + n] > t:
                n += 1
        g = gates + (<size_t>t * B + r0) * W
        # Padded steps must not reach the weight gradients.
        if n < rows:
            memset(g + <size_t>n * W, 0, <size_t>(rows - n) * W * sizeof(floating))
        if n == 0:
            continue
        t_prev = t + 1 if dm.reverse else t - 1
        start_step_rows(dm, r0, n, t, lengths, d_out, out, h0, dh, h_prevs)
        if dm.proj:
            project_back_rows(dm, n, g, w2_packed, dh + <size_t>r0 * H,
                              scratch + <size_t>r0 * 2 * C + C, 2 * C)
        for i in range(n):
            b = r0 + i
            has_prev = t_prev < lengths[b] if dm.reverse else t_prev >= 0
            c_t = NULL
            c_prev = NULL
            if c_hist != NULL:
                c_t = c_hist + (<size_t>t * B + b) * C
                c_prev = (c_hist + (<size_t>t_prev * B + b) * C if has_prev
                          else c0 + <size_t>b * C)
            scratch_row = scratch + <size_t>b * 2 * C
            cell_backward_row(dm, g + <size_t>i * W,
                              scratch_row + C if dm.proj else dh + <size_t>b * H,
                              dc + <size_t>b * C if dc != NULL else NULL,
                              out + (<size_t>t * B + b) * o_ld + dm.out_off,
                              h_prevs[i], c_t, c_prev, scratch_row, peep, limits,
                              peep_acc)
        if dm.reset_before:
            gru_reset_backward_rows(dm, n, g, w2_packed, h_prevs, dh + <size_t>r0 * H,
                                    scratch + <size_t>r0 * 2 * C)
        if bias_acc != NULL:   # bias gradients while the rows are in cache
            for i in range(n):
                for j in range(W):
                    bias_acc[j] += g[<size_t>i * W + j]
        packed_gemm(n, H, GH, g, W, w_hh_packed, dh + <size_t>r0 * H, H)


cdef inline floating *clip_limits(const Dims *dm, floating *store) noexcept nogil:
    """The activations of the clip bounds, [sigmoid(-clip), sigmoid(clip),
    tanh(-clip), tanh(clip)], in ``store`` (see lstm_backward_variant_row);
    NULL without clipping."""
    if dm.clip <= 0:
        return NULL
    store[0] = <floating>(-dm.clip)
    store[1] = <floating>dm.clip
    store[2] = <floating>(-dm.clip)
    store[3] = <floating>dm.clip
    sigmoid_row(store, store, 2)
    tanh_row(store + 2, store + 2, 2)
    return store


cdef inline void start_step_rows(const Dims *dm, int r0, int n, int t, const int *lengths,
                                 const floating *d_out, const floating *out,
                                 const floating *h0, floating *dh,
                                 const floating **h_prevs) noexcept nogil:
    """Backward at step t for rows r0..r0+n: dh += dL/d(out_t); the previous
    state of every row (its neighbouring output, or h0 at its first step)."""
    cdef int i, j, b, H = dm.H
    cdef int t_prev = t + 1 if dm.reverse else t - 1
    cdef size_t o_ld = dm.out_ld
    cdef bint has_prev
    cdef floating *dh_row
    cdef const floating *d_row
    for i in range(n):
        b = r0 + i
        dh_row = dh + <size_t>b * H
        d_row = d_out + (<size_t>t * dm.B + b) * o_ld + dm.out_off
        for j in range(H):
            dh_row[j] = dh_row[j] + d_row[j]
        has_prev = t_prev < lengths[b] if dm.reverse else t_prev >= 0
        if has_prev:
            h_prevs[i] = out + (<size_t>t_prev * dm.B + b) * o_ld + dm.out_off
        else:
            h_prevs[i] = h0 + <size_t>b * H


# --------------------------------------------------------------------------
# Whole-sequence pieces after the sweep (products split over the threads).
# --------------------------------------------------------------------------

cdef inline int block_count(int cell) noexcept nogil:
    return 2 if cell == GRU else 1


cdef inline void input_block(int cell, int H, int which, int *col, int *wrow,
                             int *size) noexcept nogil:
    """Column block of the gate buffer fed by rows of W_ih (input side)."""
    if cell == GRU:
        if which == 0:
            col[0] = 0
            wrow[0] = 0
            size[0] = 2 * H
        else:
            col[0] = 3 * H
            wrow[0] = 2 * H
            size[0] = H
    else:
        col[0] = 0
        wrow[0] = 0
        size[0] = gate_rows(cell, H)


cdef void add_bias_gradients(const Dims *dm, const floating *bias_acc, int nchunks,
                             floating *db_ih, floating *db_hh) noexcept nogil:
    """Sum the chunks' gate-gradient column sums (in chunk order) into the
    bias gradients: input blocks feed b_ih, columns [0, GH) feed b_hh."""
    cdef int k, j, blk, col, wrow, size
    cdef const floating *acc
    for k in range(nchunks):
        acc = bias_acc + <size_t>k * dm.W
        for blk in range(block_count(dm.cell)):
            input_block(dm.cell, dm.C, blk, &col, &wrow, &size)
            for j in range(size):
                db_ih[wrow + j] += acc[col + j]
        for j in range(dm.GH):
            db_hh[j] += acc[j]
        if dm.reset_before:   # b_hn is added to n's pre-activation
            for j in range(dm.H):
                db_hh[2 * dm.H + j] += acc[3 * dm.H + j]


cdef void fold_bias(const Dims *dm, const floating *b_ih, const floating *b_hh,
                    floating *row) noexcept nogil:
    """The gate-buffer row before any product: the biases, summed where they meet.

    The GRU keeps b_hn with hn (the reset gate multiplies W_hn h + b_hn); the
    reset-before GRU adds b_hn to n's pre-activation (its hn block is r * h).
    """
    cdef int j, H = dm.H
    memset(row, 0, dm.W * sizeof(floating))
    if b_ih == NULL:
        return
    if dm.cell == GRU and dm.reset_before:
        for j in range(2 * H):
            row[j] = b_ih[j] + b_hh[j]
        for j in range(H):
            row[3 * H + j] = b_ih[2 * H + j] + b_hh[2 * H + j]
    elif dm.cell == GRU:
        for j in range(2 * H):
            row[j] = b_ih[j] + b_hh[j]
        for j in range(H):
            row[2 * H + j] = b_hh[2 * H + j]
            row[3 * H + j] = b_ih[2 * H + j]
    else:
        for j in range(dm.GH):
            row[j] = b_ih[j] + b_hh[j]


cdef void weight_gradients(const Dims *dm, const int *lengths, const floating *x,
                           const floating *w_ih, const floating *gates,
                           const floating *out, const floating *h0,
                           floating *last_rows, floating *d_x, bint add_to_d_x,
                           floating *dw_ih, floating *dw_hh, floating *dw2,
                           int num_threads) noexcept nogil:
    """The weight and input gradients: big products of the pre-activation
    gradients in ``gates`` with the layer input and the hidden states.

    ``d_x`` is overwritten (padded rows get 0: their gradients are 0), or
    added to with ``add_to_d_x`` (the second direction of a layer).  ``dw2``:
    dW_hr of the projected LSTM (NULL otherwise)."""
    cdef int T = dm.T, B = dm.B, E = dm.E, H = dm.H, W = dm.W, GH = dm.GH
    cdef int rows = T * B
    cdef int k, col, wrow, size, b
    cdef const floating *h_shift = out + dm.out_off
    for k in range(block_count(dm.cell)):
        input_block(dm.cell, dm.C, k, &col, &wrow, &size)
        parallel_gemm_tn(size, E, rows, gates + col, W, x, E,
                         dw_ih + <size_t>wrow * E, E, num_threads)
        if d_x != NULL:
            parallel_gemm(False, False, rows, E, size, gates + col, W,
                          w_ih + <size_t>wrow * E, E,
                          <floating>(1 if add_to_d_x or k > 0 else 0), d_x, E, num_threads)
    if T > 1:
        # dW_hh += sum_t dG_t^T h_prev(t) where h_prev is the neighbouring
        # output; padded outputs are zero and padded gradients are zero.
        if dm.reverse:
            parallel_gemm_tn(GH, H, (T - 1) * B, gates, W,
                             h_shift + <size_t>B * dm.out_ld, dm.out_ld, dw_hh, H,
                             num_threads)
        else:
            parallel_gemm_tn(GH, H, (T - 1) * B, gates + <size_t>B * W, W,
                             h_shift, dm.out_ld, dw_hh, H, num_threads)
    if h0 != NULL:
        # The step that started from h0: t = 0 forward, t = len - 1 reverse.
        if dm.reverse:
            for b in range(B):
                memcpy(last_rows + <size_t>b * GH,
                       gates + (<size_t>(lengths[b] - 1) * B + b) * W,
                       GH * sizeof(floating))
            parallel_gemm_tn(GH, H, B, last_rows, GH, h0, H, dw_hh, H, num_threads)
        else:
            parallel_gemm_tn(GH, H, B, gates, W, h0, H, dw_hh, H, num_threads)
    if dm.reset_before:   # dW_hn = sum dn^T (r * h_prev), both kept in gates
        parallel_gemm_tn(H, H, rows, gates + 3 * H, W, gates + 2 * H, W,
                         dw_hh + <size_t>2 * H * H, H, num_threads)
    if dm.proj:           # dW_hr = sum dh^T m
        parallel_gemm_tn(H, dm.C, rows, gates + 5 * dm.C, W, gates + 4 * dm.C, W,
                         dw2, dm.C, num_threads)


# --------------------------------------------------------------------------
# Python entry points (validated by fastrnn.layers; never call directly).
# --------------------------------------------------------------------------

cdef void fill_dims(Dims *dm, int cell, bint reverse, int T, int B, int E,
                    int H, int out_ld, int out_off) noexcept nogil:
    dm.T = T
    dm.B = B
    dm.E = E
    dm.H = H
    dm.cell = cell
    dm.reverse = reverse
    dm.W = gate_width(cell, H)
    dm.GH = gate_rows(cell, H)
    dm.out_ld = out_ld
    dm.out_off = out_off
    dm.C = H
    dm.reset_before = False
    dm.peepholes = False
    dm.proj = False
    dm.clip = 0
    dm.input_forget = False


cdef void fill_variant(Dims *dm, bint reset_before, double clip, int C,
                       bint peepholes, bint input_forget) noexcept nogil:
    """The cell-variant fields (after ``fill_dims``); C = the LSTM's cell
    width (w_hh rows / 4), which differs from H only with a projection."""
    if dm.cell == GRU and reset_before:
        dm.reset_before = True
        dm.GH = 2 * dm.H            # W_rz h; W_hn (r * h) is the second product
    if dm.cell == LSTM:
        dm.C = C
        dm.proj = C != dm.H
        dm.peepholes = peepholes
        dm.clip = clip
        dm.input_forget = input_forget
        dm.W = buffer_cols(LSTM, C, dm.H)
        dm.GH = 4 * C


cdef floating *second_product(const Dims *dm, const floating *w_hh,
                              const floating *w_hr, bint transpose) noexcept nogil:
    """The packed second recurrent product of a variant: W_hn (rows 2H..3H of
    W_hh) for the reset-before GRU, W_hr (H x C) for the projected LSTM."""
    if dm.reset_before:
        return pack_weights(w_hh + <size_t>2 * dm.H * dm.H, dm.H, dm.H, transpose)
    return pack_weights(w_hr, dm.H, dm.C, transpose)


cdef void add_chunk_sums(const floating *acc, int nchunks, int n,
                         floating *total) noexcept nogil:
    """total += the chunks' partial sums, in chunk order (reproducible)."""
    cdef int k, j
    for k in range(nchunks):
        for j in range(n):
            total[j] += acc[<size_t>k * n + j]


cdef inline floating *ptr1(floating[::1] a) noexcept nogil:
    return &a[0] if a.shape[0] > 0 else NULL


cdef inline const floating *const_ptr1(const floating[::1] a) noexcept nogil:
    return &a[0] if a.shape[0] > 0 else NULL


cdef inline const floating *const_ptr2(const floating[:, ::1] a) noexcept nogil:
    return &a[0, 0] if a is not None and a.shape[0] > 0 and a.shape[1] > 0 else NULL


cdef inline floating *ptr2(floating[:, ::1] a) noexcept nogil:
    return &a[0, 0] if a.shape[0] > 0 and a.shape[1] > 0 else NULL


cdef inline floating *ptr3(floating[:, :, ::1] a) noexcept nogil:
    return &a[0, 0, 0] if a.shape[0] > 0 and a.shape[1] > 0 and a.shape[2] > 0 else NULL


def forward(int cell, bint reverse,
            const floating[:, :, ::1] x,
            const floating[:, ::1] w_ih,
            const floating[:, ::1] w_hh,
            const floating[::1] b_ih,
            const floating[::1] b_hh,
            const int[::1] lengths,
            const int[::1] chunks,
            floating[:, ::1] h,
            floating[:, ::1] c,
            floating[:, :, ::1] out,
            int out_off,
            floating[:, :, ::1] gates,
            floating[:, :, ::1] c_hist,
            int num_threads,
            bint reset_before=False,
            double clip=0.0,
            const floating[:, ::1] w2=None,
            const floating[::1] peep=None,
            bint input_forget=False):
    """Run one layer direction over the whole sequence in one parallel region.

    ``h`` (and ``c`` for the LSTM) hold the initial state on entry and the final
    state of every row on exit.  ``out[..., out_off:out_off + H]`` receives the
    hidden states (rows past their length are left untouched, i.e. zero).
    ``gates`` is (T, B, W) to keep what ``backward`` needs, or (1, B, W) as
    workspace for inference; ``c_hist`` (T, B, H) the LSTM cell states when
    training (empty otherwise).  ``b_ih``/``b_hh`` are empty without bias.
    Cell variants: ``reset_before`` (GRU), ``clip`` > 0 (LSTM), ``w2`` = W_hr
    (LSTM projection), ``peep`` (3 * C LSTM peepholes), empty when unused, and
    ``input_forget`` (LSTM f = 1 - i).
    """
    cdef Dims dm
    cdef int nchunks = chunks.shape[0] - 1
    cdef int k, col, wrow, size
    cdef bint ok
    cdef size_t gates_t_stride = 0 if gates.shape[0] == 1 else <size_t>x.shape[1] * gates.shape[2]
    cdef floating *c_ptr = ptr2(c)
    cdef floating *c_hist_ptr = ptr3(c_hist)
    cdef floating *w_hh_packed
    cdef floating *w_ih_packed[2]
    cdef floating *bias_row
    cdef floating *w2_packed = NULL
    cdef const floating *peep_ptr = const_ptr1(peep) if peep is not None else NULL
    fill_dims(&dm, cell, reverse, x.shape[0], x.shape[1], x.shape[2],
              w_hh.shape[1], out.shape[2], out_off)
    fill_variant(&dm, reset_before, clip, w_hh.shape[0] // 4, peep_ptr != NULL,
                 input_forget)
    with nogil:
        w_ih_packed[0] = NULL
        w_ih_packed[1] = NULL
        w_hh_packed = pack_weights(&w_hh[0, 0], dm.GH, dm.H, True)
        ok = w_hh_packed != NULL
        if dm.reset_before or dm.proj:
            w2_packed = second_product(&dm, &w_hh[0, 0], const_ptr2(w2), True)
            ok = ok and w2_packed != NULL
        for k in range(block_count(cell)):
            input_block(cell, dm.C, k, &col, &wrow, &size)
            w_ih_packed[k] = pack_weights(&w_ih[wrow, 0], size, dm.E, True)
            ok = ok and w_ih_packed[k] != NULL
        bias_row = <floating *>malloc(dm.W * sizeof(floating))
        ok = ok and bias_row != NULL
        if ok:
            fold_bias(&dm, const_ptr1(b_ih), const_ptr1(b_hh), bias_row)
            for k in prange(nchunks, num_threads=num_threads, schedule="static",
                            chunksize=1):
                forward_chunk(&dm, chunks[k], chunks[k + 1], &lengths[0],
                              &x[0, 0, 0], bias_row, <const floating **>w_ih_packed,
                              w_hh_packed, &gates[0, 0, 0], gates_t_stride, &h[0, 0],
                              c_ptr, &out[0, 0, 0], c_hist_ptr, w2_packed, peep_ptr)
        free(w_hh_packed)
        free(w2_packed)
        free(w_ih_packed[0])
        free(w_ih_packed[1])
        free(bias_row)
    if not ok:
        raise MemoryError("fastrnn: no memory to pack the layer weights")


def backward(int cell, bint reverse,
             const floating[:, :, ::1] x,
             const floating[:, ::1] w_ih,
             const floating[:, ::1] w_hh,
             const int[::1] lengths,
             const int[::1] chunks,
             floating[:, ::1] h0,
             floating[:, ::1] c0,
             bint has_h0,
             floating[:, :, ::1] out,
             int out_off,
             floating[:, :, ::1] gates,
             floating[:, :, ::1] c_hist,
             const floating[:, :, ::1] d_out,
             floating[:, ::1] dh,
             floating[:, ::1] dc,
             floating[:, :, ::1] d_x,
             bint add_to_d_x,
             floating[:, ::1] dw_ih,
             floating[:, ::1] dw_hh,
             floating[::1] db_ih,
             floating[::1] db_hh,
             floating[:, ::1] scratch,
             int num_threads,
             bint reset_before=False,
             double clip=0.0,
             const floating[:, ::1] w2=None,
             const floating[::1] peep=None,
             floating[:, ::1] dw2=None,
             floating[::1] dpeep=None,
             bint input_forget=False):
    """Backpropagate through one layer direction (after ``forward`` with storage).

    ``dh`` (and ``dc``) hold dL/d(final state) on entry and dL/d(initial state)
    on exit.  ``d_x`` (may be empty: not needed) is written, or added to with
    ``add_to_d_x``; the weight and bias gradients are accumulated (+=).
    ``gates`` is overwritten with the pre-activation gradients.  ``scratch`` is
    workspace (B, max(GH, 2 * C)).  Variants as in ``forward``; ``dw2`` and
    ``dpeep`` (accumulated) are the gradients of ``w2`` and ``peep``.
    """
    cdef Dims dm
    cdef int nchunks = chunks.shape[0] - 1
    cdef int k, prev_threads
    cdef floating *dc_ptr = ptr2(dc)
    cdef floating *c_hist_ptr = ptr3(c_hist)
    cdef floating *c0_ptr = ptr2(c0)
    cdef floating *d_x_ptr = ptr3(d_x)
    cdef floating *db_ih_ptr = ptr1(db_ih)
    cdef floating *db_hh_ptr = ptr1(db_hh)
    cdef floating *packed
    cdef floating *bias_acc = NULL
    cdef floating *w2_packed = NULL
    cdef floating *peep_acc = NULL
    cdef const floating **h_prevs = NULL
    cdef const floating *peep_ptr = const_ptr1(peep) if peep is not None else NULL
    cdef floating *dw2_ptr = ptr2(dw2) if dw2 is not None else NULL
    cdef floating *dpeep_ptr = ptr1(dpeep) if dpeep is not None else NULL
    cdef bint ok
    fill_dims(&dm, cell, reverse, x.shape[0], x.shape[1], x.shape[2],
              w_hh.shape[1], out.shape[2], out_off)
    fill_variant(&dm, reset_before, clip, w_hh.shape[0] // 4, peep_ptr != NULL,
                 input_forget)
    with nogil:
        packed = pack_weights(&w_hh[0, 0], dm.GH, dm.H, False)
        ok = packed != NULL
        h_prevs = <const floating **>malloc(<size_t>dm.B * sizeof(floating *))
        ok = ok and h_prevs != NULL
        if dm.reset_before or dm.proj:
            w2_packed = second_product(&dm, &w_hh[0, 0], const_ptr2(w2), False)
            ok = ok and w2_packed != NULL
        if dm.peepholes:
            peep_acc = <floating *>calloc(<size_t>nchunks * 3 * dm.C, sizeof(floating))
            ok = ok and peep_acc != NULL
        if db_ih_ptr != NULL:
            bias_acc = <floating *>calloc(<size_t>nchunks * dm.W, sizeof(floating))
            ok = ok and bias_acc != NULL
        if ok:
            prev_threads = blas_get_threads()
            blas_set_threads(1)
            for k in prange(nchunks, num_threads=num_threads, schedule="static",
                            chunksize=1):
                backward_chunk(&dm, chunks[k], chunks[k + 1], &lengths[0],
                               &gates[0, 0, 0], packed, &h0[0, 0], c0_ptr,
                               &out[0, 0, 0], c_hist_ptr, &d_out[0, 0, 0],
                               &dh[0, 0], dc_ptr, &scratch[0, 0],
                               bias_acc + <size_t>k * dm.W if bias_acc != NULL else NULL,
                               w2_packed, peep_ptr,
                               peep_acc + <size_t>k * 3 * dm.C if peep_acc != NULL else NULL,
                               h_prevs + chunks[k])
            if bias_acc != NULL:
                add_bias_gradients(&dm, bias_acc, nchunks, db_ih_ptr, db_hh_ptr)
            if peep_acc != NULL:
                add_chunk_sums(peep_acc, nchunks, 3 * dm.C, dpeep_ptr)
            weight_gradients(&dm, &lengths[0], &x[0, 0, 0], &w_ih[0, 0],
                             &gates[0, 0, 0], &out[0, 0, 0],
                             &h0[0, 0] if has_h0 else NULL, &scratch[0, 0],
                             d_x_ptr, add_to_d_x, &dw_ih[0, 0], &dw_hh[0, 0], dw2_ptr,
                             num_threads)
            if prev_threads > 1:
                blas_set_threads(prev_threads)
        free(packed)
        free(bias_acc)
        free(w2_packed)
        free(peep_acc)
        free(<void *>h_prevs)
    if not ok:
        raise MemoryError("fastrnn: no memory to pack the recurrent weights")
