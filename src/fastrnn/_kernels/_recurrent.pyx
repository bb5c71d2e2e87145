"""Whole-sequence forward and backward kernels for one recurrent layer direction.

One skeleton serves every cell (vanilla RNN, LSTM, GRU); a cell contributes
only its elementwise gate math (``cell_forward_row`` / ``cell_backward_row``).

The gate buffer ``gates`` has shape (T, B, W) and plays three roles:

1. forward staging: the folded biases plus the input projection of every
   timestep, written by one big GEMM before the time loop; for token ids
   (``DirectionKernel.forward(ids=...)``) a row of the input table instead,
   which holds that sum once per vocabulary row;
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

Cell variants (issue 16), fixed when a ``DirectionKernel`` is built and kept
in its layout (``Dims``, filled once by ``fill_layout``):

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

import numpy as np

from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.stdlib cimport calloc, free, malloc
from libc.math cimport exp
from libc.string cimport memcpy, memset


from fastrnn._kernels._backward_rows cimport (column_sums_into, gru_backward_gates,
                                             lstm_backward_gates)
from fastrnn._kernels._blas cimport parallel_gemm, parallel_gemm_tn, parallel_gemm_tn_pair
from fastrnn._kernels._packed cimport (pack_weights_into, packed_gemm, packed_size,
                                       parallel_gemm_packing_b)
from fastrnn._kernels._gemv cimport (fr_pipe, fr_pipe_claim, fr_pipe_publish, fr_pipe_read,
                                     fr_pipe_wait, fr_team_barrier, fr_team_size,
                                     fr_thread_num, step_gemm, step_gemm_bias)
from fastrnn._kernels._runtime cimport (blas_get_threads, blas_set_threads, chunk_start,
                                       split_threads)
from fastrnn._kernels._rows cimport gru_row, sigmoid_row, tanh_row
from fastrnn._kernels._views cimport const_ptr1, const_ptr2, const_ptr3, ptr1, ptr2, ptr3

cdef extern from "fr_math.h" nogil:
    int fr_all_finite_f(const float *x, long n)
    int fr_all_finite_d(const double *x, long n)
    int fr_openmp_enabled()

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
    # Token input (set per call, NULL otherwise): the input row of (t, b) is
    # row ids[t * B + b] of an embedding, and ``table`` (V, W, of the call's
    # floating type) holds each vocabulary row's biases plus input product.
    const Py_ssize_t *ids
    const void *table
    # Set per call: every step's biases and input products are already in the
    # gate tape (``make_input_rows``).
    bint inputs_made
    # Set per backward call: dL/d(initial state) is wanted (else the recurrent
    # products that only feed it are skipped, ``recurrent_rows``).
    bint state_grad


cdef struct Sweep:
    # What one chunk of rows reads and writes going backwards through the
    # sequence (``backward_chunk``): the pointers are of the call's floating
    # type, as ``Dims.table`` is.  NULL where a layer has no such array (h0,
    # c0 and c_hist without an LSTM or initial state, w2_packed without a
    # variant's second product, peep and peep_acc without peepholes,
    # bias_acc without bias gradients, token_acc without token input).
    const int *lengths
    const void *w_hh_packed
    const void *w2_packed
    const void *h0
    const void *c0
    const void *out
    const void *c_hist
    const void *d_out
    const void *peep
    void *dh
    void *dc
    void *scratch
    void *bias_acc      # this chunk's bias sums (W)
    void *peep_acc      # this chunk's peephole sums (3 * C)
    void *token_acc     # this chunk's per-id sums (V, W)
    const void **h_prevs    # one pointer per row of this chunk


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


cdef inline bint plain_lstm(const Dims *dm) noexcept nogil:
    """An LSTM without any variant (peepholes, clipping, projection, coupled
    gates): its rows take the short paths of the gate math."""
    return (dm.cell == LSTM and not (dm.peepholes or dm.clip > 0 or dm.proj
                                     or dm.input_forget))


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
    elif cell == LSTM and not plain_lstm(dm):
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
        gru_row(g, h, H)
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
    if cell == RNN_TANH:
        for j in range(H):
            g[j] = dh[j] * (one - h[j] * h[j])
            dh[j] = 0
    elif cell == RNN_RELU:
        for j in range(H):
            g[j] = dh[j] if h[j] > 0 else 0
            dh[j] = 0
    elif cell == LSTM and not plain_lstm(dm):
        lstm_backward_variant_row(dm, g, dh, dc, c, c_prev, scratch, peep, limits,
                                  peep_acc)
    elif cell == LSTM:
        lstm_backward_row(H, g, dh, dc, c, c_prev, scratch)
    else:
        gru_backward_row(H, dm.reset_before, g, dh, h_prev)


cdef inline void lstm_backward_row(int H, floating *g, floating *dh, floating *dc,
                                   const floating *c, const floating *c_prev,
                                   floating *tc) noexcept nogil:
    """``cell_backward_row`` of the plain LSTM, g = [i, f, g, o] activated;
    ``tc`` (H) receives tanh(c).  The gate loop is fr_backward.h's (GCC
    vectorises it there, not here)."""
    tanh_row(c, tc, H)
    lstm_backward_gates(H, g, dh, dc, c_prev, tc)


cdef inline void gru_backward_row(int H, bint reset_before, floating *g, floating *dh,
                                  const floating *h_prev) noexcept nogil:
    """``cell_backward_row`` of the GRU: g = [r, z, hn, n], or for the
    reset-before GRU [r, z, r * h_prev, n] with only z and n done here (r
    later, in ``gru_reset_backward_rows``)."""
    cdef int j
    cdef floating one = 1
    cdef floating d, z_, n_
    if reset_before:
        for j in range(H):
            z_ = g[H + j]
            n_ = g[3 * H + j]
            d = dh[j]
            g[H + j] = d * (h_prev[j] - n_) * z_ * (one - z_)
            g[3 * H + j] = d * (one - z_) * (one - n_ * n_)
            dh[j] = d * z_
        return
    gru_backward_gates(H, g, dh, h_prev)     # fr_backward.h: vectorised


# --------------------------------------------------------------------------
# The skeleton: one chunk of rows through the whole time loop.
# --------------------------------------------------------------------------

cdef void forward_chunk(const Dims *dm, int r0, int r1, const int *lengths,
                        const floating *x, const floating *bias_row,
                        const floating **w_ih_packed, const floating *w_hh_packed,
                        floating *gates, size_t gates_t_stride, floating *h,
                        floating *c, floating *out, floating *c_hist,
                        const floating *w2_packed, const floating *peep,
                        int tb=0, floating *xs=NULL, fr_pipe *pipe=NULL) noexcept nogil:
    """Rows r0..r1 through the whole sequence.

    Per timestep: folded biases + the input product (one packed W_ih^T per
    input block) + the recurrent product (packed W_hh^T), then the cell's gate
    math.  ``gates_t_stride`` is B * W when every step is kept for backward,
    0 in inference (one slab of B rows reused).  ``tb`` > 0 (inference, no
    padding): the input products of ``tb`` steps at a time are one larger
    product (``input_block_rows``; ``gates`` then holds tb * B rows and ``xs``
    tb * B input rows; with ``pipe`` in buffers shared with a helper thread:
    ``pipelined_forward``).  ``c`` and ``c_hist`` are NULL
    except for the LSTM (``c_hist`` only when training).  ``w2_packed`` is the
    second recurrent product of a variant (W_hn^T reset-before, W_hr^T
    projection), ``peep`` the LSTM peepholes (NULL otherwise).
    """
    cdef int T = dm.T, B = dm.B, H = dm.H, W = dm.W, GH = dm.GH, C = dm.C
    cdef int rows = r1 - r0
    cdef int n = 0 if dm.reverse else rows     # rows still running
    cdef int step, t, i, b
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
        g = step_input_products(dm, step, t, r0, n, x, bias_row, w_ih_packed, gates,
                                gates_t_stride, tb, xs, pipe)
        # A zero initial state (no hx) adds nothing: 1/T of the recurrent products.
        if step > 0 or not all_zero(h + <size_t>r0 * H, <size_t>n * H):
            step_gemm(n, GH, H, h + <size_t>r0 * H, H, w_hh_packed, g, W)
        if dm.reset_before:
            gru_reset_rows(n, H, W, g, h + <size_t>r0 * H)
            step_gemm(n, H, H, g + 2 * H, W, w2_packed, g + 3 * H, W)
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


cdef inline bint all_zero(const floating *a, size_t n) noexcept nogil:
    cdef size_t i
    for i in range(n):
        if a[i] != 0:
            return False
    return True


cdef inline floating *step_input_products(const Dims *dm, int step, int t, int r0, int n,
                                          const floating *x, const floating *bias_row,
                                          const floating **w_ih_packed, floating *gates,
                                          size_t gates_t_stride, int tb,
                                          floating *xs, fr_pipe *pipe) noexcept nogil:
    """The gate rows of step ``t`` for rows r0..r0+n, holding the folded
    biases plus the input product: computed here per step, or (``tb`` > 0)
    read from the block of ``tb`` steps whose products are made at its first
    step (``input_block_rows``), or in the pipeline (``pipe``)."""
    cdef int W = dm.W, E = dm.E
    cdef floating *g
    if pipe != NULL:
        return pipelined_block_rows(dm, step, tb, x, bias_row, w_ih_packed, gates, xs, pipe)
    if tb > 0:
        g = gates + <size_t>r0 * tb * W
        if step % tb == 0:
            input_block_rows(dm, step, min(tb, dm.T - step), r0, n, x, bias_row,
                             w_ih_packed, g, xs + <size_t>r0 * tb * E)
        return g + <size_t>(step % tb) * n * W
    g = gates + t * gates_t_stride + <size_t>r0 * W
    if dm.inputs_made:
        return g
    if dm.ids != NULL:
        table_rows(dm, n, dm.ids + <size_t>t * dm.B + r0, g)
    else:
        input_gate_rows(dm, n, x + (<size_t>t * dm.B + r0) * E, bias_row, w_ih_packed, g)
    return g


cdef floating *pipelined_block_rows(const Dims *dm, int step, int tb, const floating *x,
                                    const floating *bias_row,
                                    const floating **w_ih_packed, floating *gates,
                                    floating *xs, fr_pipe *pipe) noexcept nogil:
    """The consumer's gate rows of ``step`` in the pipeline (one chunk of
    all B rows).  Starting block j = step // tb frees block j - 1's buffer.
    Block j is read from the helper's buffer once made there; a block no one
    has claimed, or one the helper is still at (descheduled, say), is made
    here in the consumer's own buffer: the consumer never waits, and never
    writes a buffer the helper may still be writing."""
    cdef int j = step // tb
    if step % tb == 0:
        fr_pipe_publish(&pipe.done, j)
        if not fr_pipe_claim(pipe, j) and fr_pipe_read(&pipe.made[j % 2]) > j:
            pipe.reading = j % 2
        else:
            pipe.reading = PIPE_SPARE
            make_input_block(dm, j, tb, PIPE_SPARE, x, bias_row, w_ih_packed, gates, xs)
    return gates + (<size_t>pipe.reading * tb + step % tb) * dm.B * dm.W


cdef void make_input_block(const Dims *dm, int j, int tb, int buffer, const floating *x,
                           const floating *bias_row, const floating **w_ih_packed,
                           floating *gates, floating *xs) noexcept nogil:
    """Block j's biases and input products into ``buffer`` (its gate rows and
    gathered inputs)."""
    input_block_rows(dm, j * tb, min(tb, dm.T - j * tb), 0, dm.B, x, bias_row, w_ih_packed,
                     gates + <size_t>buffer * tb * dm.B * dm.W,
                     xs + <size_t>buffer * tb * dm.B * dm.E)


cdef void help_make_input_blocks(const Dims *dm, int tb, const floating *x,
                                 const floating *bias_row, const floating **w_ih_packed,
                                 floating *gates, floating *xs,
                                 fr_pipe *pipe) noexcept nogil:
    """The helper thread of the pipeline: claims and makes the next block
    once its buffer is free (the consumer has started the block before)."""
    cdef int j, blocks = (dm.T + tb - 1) // tb
    while True:
        j = fr_pipe_read(&pipe.next)
        if j >= blocks:
            return
        fr_pipe_wait(&pipe.done, j - 1)
        if fr_pipe_claim(pipe, j):
            if _pipe_late_helper:
                fr_pipe_wait(&pipe.done, min(j + 2, blocks - 1))
            make_input_block(dm, j, tb, j % 2, x, bias_row, w_ih_packed, gates, xs)
            fr_pipe_publish(&pipe.made[j % 2], j + 1)


cdef void pipelined_forward(const Dims *dm, int tb, const int *lengths, const floating *x,
                            const floating *bias_row, const floating **w_ih_packed,
                            const floating *w_hh_packed, floating *gates, floating *h,
                            floating *c, floating *out, const floating *w2_packed,
                            const floating *peep, floating *xs) noexcept nogil:
    """Inference of one chunk (all B rows, no padding) with a helper thread
    making the input products of tb steps ahead while thread 0 runs the
    recurrence (``gates``: PIPE_BUFFERS buffers of tb * B rows; ``xs`` as
    many of tb * B inputs).  Each product is the one a single thread makes,
    so the results are the same bits; with no helper (a team of one) thread
    0 makes them all."""
    cdef fr_pipe pipe
    pipe.next = pipe.done = pipe.made[0] = pipe.made[1] = pipe.reading = 0
    with parallel(num_threads=2):
        if fr_thread_num() == 0:
            forward_chunk(dm, 0, dm.B, lengths, x, bias_row, w_ih_packed, w_hh_packed,
                          gates, 0, h, c, out, NULL, w2_packed, peep, tb, xs, &pipe)
        else:
            help_make_input_blocks(dm, tb, x, bias_row, w_ih_packed, gates, xs, &pipe)


cdef void make_input_rows(const Dims *dm, int num_threads, const floating *x,
                          const floating *bias_row, const floating **w_ih_packed,
                          floating *gates) noexcept nogil:
    """Every step's biases and input products into the gate tape before the
    recurrence (T * B rows, row t * B + b of x and of the tape), the rows
    split over threads.  Each row's sums are those of the per-step product,
    so the bits are the same."""
    cdef Py_ssize_t rows = <Py_ssize_t>dm.T * dm.B
    cdef int c, team = split_threads(<double>rows * dm.E * dm.W, num_threads)
    if team == 1:
        input_rows_range(dm, 0, rows, x, bias_row, w_ih_packed, gates)
        return
    for c in prange(team, num_threads=team, schedule="static", chunksize=1):
        input_rows_range(dm, chunk_start(rows, team, c, 1), chunk_start(rows, team, c + 1, 1),
                         x, bias_row, w_ih_packed, gates)


cdef void input_rows_range(const Dims *dm, Py_ssize_t r0, Py_ssize_t r1, const floating *x,
                           const floating *bias_row, const floating **w_ih_packed,
                           floating *gates) noexcept nogil:
    """``input_gate_rows`` for rows r0..r1, in blocks an int can count."""
    cdef int n
    while r0 < r1:
        n = <int>min(r1 - r0, 1 << 16)
        input_gate_rows(dm, n, x + r0 * dm.E, bias_row, w_ih_packed, gates + r0 * dm.W)
        r0 += n


cdef inline void input_gate_rows(const Dims *dm, int n, const floating *a,
                                 const floating *bias_row, const floating **w_ih_packed,
                                 floating *g) noexcept nogil:
    """Gate rows ``g`` (n rows, stride W) = the folded biases plus the input
    product of the n input rows ``a`` (stride E).  Each input block's product
    starts from its bias columns (``step_gemm_bias``: the sums of copying the
    biases first, without the copy); the columns no input block feeds (GRU's
    hn, the projected LSTM's m and dh) get the bias row's values."""
    cdef int k, col, wrow, size, done = 0
    for k in range(block_count(dm.cell)):
        input_block(dm.cell, dm.C, k, &col, &wrow, &size)
        copy_bias_columns(dm, n, bias_row, done, col, g)
        step_gemm_bias(n, size, dm.E, a, dm.E, w_ih_packed[k], bias_row + col, g + col, dm.W)
        done = col + size
    copy_bias_columns(dm, n, bias_row, done, dm.W, g)


cdef inline void copy_bias_columns(const Dims *dm, int n, const floating *bias_row,
                                   int c0, int c1, floating *g) noexcept nogil:
    """Columns c0..c1 of the bias row into n gate rows (stride W)."""
    cdef int i
    if c1 > c0:
        for i in range(n):
            memcpy(g + <size_t>i * dm.W + c0, bias_row + c0, (c1 - c0) * sizeof(floating))


cdef void input_block_rows(const Dims *dm, int step, int steps, int r0, int n,
                           const floating *x, const floating *bias_row,
                           const floating **w_ih_packed, floating *g,
                           floating *xs) noexcept nogil:
    """Biases + input products of ``steps`` timesteps from ``step`` on (in
    processing order) for rows r0..r0+n, as one product of steps * n rows:
    row (s, i) of ``g`` (stride W) and of ``xs`` (the gathered inputs).  Each
    row's sums are those of the per-step product (fr_gemm.h)."""
    cdef int s, t, E = dm.E, W = dm.W
    if dm.ids != NULL:
        for s in range(steps):
            t = dm.T - 1 - (step + s) if dm.reverse else step + s
            table_rows(dm, n, dm.ids + <size_t>t * dm.B + r0, g + <size_t>s * n * W)
        return
    for s in range(steps):
        t = dm.T - 1 - (step + s) if dm.reverse else step + s
        memcpy(xs + <size_t>s * n * E, x + (<size_t>t * dm.B + r0) * E,
               <size_t>n * E * sizeof(floating))
    input_gate_rows(dm, steps * n, xs, bias_row, w_ih_packed, g)


cdef inline void table_rows(const Dims *dm, int n, const Py_ssize_t *ids,
                            floating *g) noexcept nogil:
    """The gate rows (biases + input product) of n token inputs: their rows
    of the input table, made once per vocabulary row (``input_table_rows``)."""
    cdef int i
    cdef const floating *table = <const floating *>dm.table
    for i in range(n):
        memcpy(g + <size_t>i * dm.W, table + <size_t>ids[i] * dm.W, dm.W * sizeof(floating))


cdef void input_table_rows(const Dims *dm, int v0, int v1, const floating *emb,
                           const floating *bias_row, const floating **w_ih_packed,
                           floating *table) noexcept nogil:
    """Rows v0..v1 of the input table (V, W): the biases plus the input
    product of embedding rows v0..v1.  Each row's sums are those of the
    per-step product of that row (fr_gemm.h), so a token's gate row is bit
    for bit what the embedded input would give."""
    input_gate_rows(dm, v1 - v0, emb + <size_t>v0 * dm.E, bias_row, w_ih_packed,
                    table + <size_t>v0 * dm.W)


cdef void input_table(const Dims *dm, int team, int V, const floating *emb,
                      const floating *bias_row, const floating **w_ih_packed,
                      floating *table) noexcept nogil:
    """The whole input table (V, W), its rows split over ``team`` threads."""
    cdef int part
    for part in prange(team, num_threads=team, schedule="static", chunksize=1):
        input_table_rows(dm, chunk_start(V, team, part, 1), chunk_start(V, team, part + 1, 1),
                         emb, bias_row, w_ih_packed, table)


cdef inline void add_token_rows(const Dims *dm, int t, int r0, int n, const floating *g,
                                floating *acc) noexcept nogil:
    """acc[id] += the gate-gradient row of each token of rows r0..r0+n at step
    t: the per-id sums of a token input, made while the rows are in cache."""
    cdef int i
    cdef const Py_ssize_t *ids = dm.ids + <size_t>t * dm.B + r0
    for i in range(n):
        column_sums_into(g + <size_t>i * dm.W, 1, dm.W, acc + <size_t>ids[i] * dm.W)


cdef void merge_token_sums(const Dims *dm, int V, int nchunks, const floating *extra,
                           floating *sums, floating *bias_acc) noexcept nogil:
    """``sums`` (chunk 0's per-id sums) += the other chunks' (``extra``, (nchunks
    - 1) * V rows), in chunk order; with ``bias_acc`` (W), the column sums of
    the result: every token's gate gradients, the biases' gradient."""
    cdef int k, v
    for k in range(nchunks - 1):
        for v in range(V):
            column_sums_into(extra + (<size_t>k * V + v) * dm.W, 1, dm.W,
                             sums + <size_t>v * dm.W)
    if bias_acc != NULL:
        memset(bias_acc, 0, dm.W * sizeof(floating))
        column_sums_into(sums, V, dm.W, bias_acc)


cdef void token_gradients(const Dims *dm, int V, const floating *emb, const floating *sums,
                          floating *dw_ih, int num_threads) noexcept nogil:
    """dW_ih of a token input: dW_ih += sums^T emb, a product with V rows
    instead of T * B (``sums`` (V, W): the tokens' gate gradients summed per
    vocabulary id in the sweep, kept for ``table_gradient``)."""
    cdef int k, col, wrow, size
    for k in range(block_count(dm.cell)):
        input_block(dm.cell, dm.C, k, &col, &wrow, &size)
        parallel_gemm_tn(size, dm.E, V, sums + col, dm.W, emb, dm.E,
                         dw_ih + <size_t>wrow * dm.E, dm.E, num_threads)


cdef void table_gradient(const Dims *dm, int V, const floating *w_ih, floating *sums,
                         floating *d_emb, Py_ssize_t padding, int num_threads) noexcept nogil:
    """d_emb (V, E) += sums W_ih: the embedding's gradient from the per-id
    gate gradient sums of ``token_gradients``; its ``padding`` row (-1: none)
    gets nothing (that row of ``sums`` is zeroed)."""
    cdef int k, col, wrow, size
    if padding >= 0:
        memset(sums + <size_t>padding * dm.W, 0, dm.W * sizeof(floating))
    for k in range(block_count(dm.cell)):
        input_block(dm.cell, dm.C, k, &col, &wrow, &size)
        parallel_gemm(False, False, V, dm.E, size, sums + col, dm.W,
                      w_ih + <size_t>wrow * dm.E, dm.E, 1, d_emb, dm.E, num_threads)


cdef inline void project_rows(const Dims *dm, int n, const floating *g,
                              const floating *w_hr_packed, floating *h,
                              floating *out) noexcept nogil:
    """Projected LSTM: h = m W_hr^T for n rows (m in the gate buffer); copy to out."""
    cdef int i, H = dm.H
    memset(h, 0, <size_t>n * H * sizeof(floating))
    step_gemm(n, H, dm.C, g + 4 * dm.C, dm.W, w_hr_packed, h, H)
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


cdef void backward_chunk(const Dims *dm, const Sweep *sw, int r0, int r1,
                         floating *gates) noexcept nogil:
    """Rows r0..r1 backwards through the sequence (see ``forward_chunk``),
    their gate rows in ``gates`` turning into the pre-activation gradients.

    ``sw.scratch`` has 2 * C columns per row ([tanh(c) | dL/dm] for the LSTM,
    dL/d(r * h) for the reset-before GRU); a token input's per-id sums
    (``sw.token_acc``) replace the bias sums (they follow from them,
    ``merge_token_sums``)."""
    cdef int T = dm.T, B = dm.B, H = dm.H, W = dm.W, GH = dm.GH
    cdef int rows = r1 - r0
    cdef int n = rows if dm.reverse else 0     # rows with a step at t
    cdef int step, t, i, m
    cdef const int *lengths = sw.lengths
    cdef const floating *w_hh_packed = <const floating *>sw.w_hh_packed
    cdef floating *dh = <floating *>sw.dh
    cdef const floating **h_prevs = <const floating **>sw.h_prevs
    cdef floating limit_store[4]
    cdef floating *limits = clip_limits(dm, limit_store)
    cdef floating *g
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
        if dm.proj or dm.reset_before:
            # A product over the step's rows sits between their passes (dL/dm
            # before the gate math, dL/d(r * h) after it): each pass takes them all.
            backward_step_rows(dm, sw, r0, n, t, g, limits, h_prevs)
        else:
            # One row at a time through all of them, while it is in L1 (each
            # pass over the whole step read its rows back from L2: the
            # char-LSTM loop's LSTM(256) backward, 100 x 64 tokens, Zen 4, 1
            # thread, median 67.1 -> 66.4 ms; GRU(256) 100.2 -> 99.5).
            for i in range(n):
                backward_step_rows(dm, sw, r0 + i, 1, t, g + <size_t>i * W, limits,
                                   h_prevs + i)
        m = recurrent_rows(dm, r0, n, t, lengths)
        if m > 0:
            packed_gemm(m, H, GH, g, W, w_hh_packed, dh + <size_t>r0 * H, H)


cdef inline int recurrent_rows(const Dims *dm, int r0, int n, int t,
                               const int *lengths) noexcept nogil:
    """How many of the n rows running at step t (from r0) need the step's
    recurrent product, dL/dh_{t-1} += dG_t W_hh: all of them, or without
    ``dm.state_grad`` those with a previous step.  A row at its first step
    would only get dL/d(initial state) from it: the whole first step of a
    forward direction (1/T of the products), a reverse direction's rows at
    their last one.  Rows run longest first, so those rows are the last."""
    cdef int t_prev = previous_step(dm, t)
    if dm.state_grad:
        return n
    while n > 0 and not has_previous(dm, lengths, r0 + n - 1, t_prev):
        n -= 1
    return n


cdef inline void backward_step_rows(const Dims *dm, const Sweep *sw, int r0, int n, int t,
                                    floating *g, const floating *limits,
                                    const floating **h_prevs) noexcept nogil:
    """Rows r0..r0+n of step t (their gate rows at ``g``, their previous
    states' pointers in ``h_prevs``) through the passes before the step's
    recurrent product: dh += dL/d(out_t), the gate math, and the bias (or
    token) sums of the gate gradients."""
    cdef int H = dm.H, C = dm.C
    cdef const floating *w2_packed = <const floating *>sw.w2_packed
    cdef const floating *out = <const floating *>sw.out
    cdef floating *dh = <floating *>sw.dh
    cdef floating *scratch = <floating *>sw.scratch
    start_step_rows(dm, r0, n, t, sw.lengths, <const floating *>sw.d_out, out,
                    <const floating *>sw.h0, dh, h_prevs)
    if dm.proj:
        project_back_rows(dm, n, g, w2_packed, dh + <size_t>r0 * H,
                          scratch + <size_t>r0 * 2 * C + C, 2 * C)
    cell_backward_rows(dm, r0, n, t, sw.lengths, g, out, <const floating *>sw.c_hist,
                       <const floating *>sw.c0, dh, <floating *>sw.dc, scratch,
                       <const floating *>sw.peep, limits, <floating *>sw.peep_acc, h_prevs)
    if dm.reset_before:
        gru_reset_backward_rows(dm, n, g, w2_packed, h_prevs, dh + <size_t>r0 * H,
                                scratch + <size_t>r0 * 2 * C)
    if sw.token_acc != NULL:
        add_token_rows(dm, t, r0, n, g, <floating *>sw.token_acc)
    elif sw.bias_acc != NULL:
        add_column_sums(g, n, dm.W, <floating *>sw.bias_acc)


cdef inline int previous_step(const Dims *dm, int t) noexcept nogil:
    """The step before t in the forward pass's direction."""
    return t + 1 if dm.reverse else t - 1


cdef inline bint has_previous(const Dims *dm, const int *lengths, int b,
                              int t_prev) noexcept nogil:
    """Whether row b runs at step t_prev (``previous_step``); if not, its
    previous state is the initial one."""
    return t_prev < lengths[b] if dm.reverse else t_prev >= 0


cdef inline void cell_backward_rows(const Dims *dm, int r0, int n, int t,
                                    const int *lengths, floating *g,
                                    const floating *out, const floating *c_hist,
                                    const floating *c0, floating *dh, floating *dc,
                                    floating *scratch, const floating *peep,
                                    const floating *limits, floating *peep_acc,
                                    const floating **h_prevs) noexcept nogil:
    """``cell_backward_row`` for rows r0..r0+n at step t: finds each row's
    cell states c_t and c_{t-1} (c0 at its first step) and its scratch."""
    cdef int i, b, C = dm.C
    cdef int t_prev = previous_step(dm, t)
    cdef bint has_prev
    cdef floating *scratch_row
    cdef const floating *c_prev
    cdef const floating *c_t
    for i in range(n):
        b = r0 + i
        has_prev = has_previous(dm, lengths, b, t_prev)
        c_t = NULL
        c_prev = NULL
        if c_hist != NULL:
            c_t = c_hist + (<size_t>t * dm.B + b) * C
            c_prev = (c_hist + (<size_t>t_prev * dm.B + b) * C if has_prev
                      else c0 + <size_t>b * C)
        scratch_row = scratch + <size_t>b * 2 * C
        cell_backward_row(dm, g + <size_t>i * dm.W,
                          scratch_row + C if dm.proj else dh + <size_t>b * dm.H,
                          dc + <size_t>b * C if dc != NULL else NULL,
                          out + (<size_t>t * dm.B + b) * dm.out_ld + dm.out_off,
                          h_prevs[i], c_t, c_prev, scratch_row, peep, limits,
                          peep_acc)


cdef inline void add_column_sums(const floating *g, int n, int W,
                                 floating *acc) noexcept nogil:
    """acc[j] += sum of the n rows' column j (row order: reproducible)."""
    column_sums_into(g, n, W, acc)          # fr_backward.h: vectorised


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
    cdef int t_prev = previous_step(dm, t)
    cdef size_t o_ld = dm.out_ld
    cdef floating *dh_row
    cdef const floating *d_row
    for i in range(n):
        b = r0 + i
        dh_row = dh + <size_t>b * H
        d_row = d_out + (<size_t>t * dm.B + b) * o_ld + dm.out_off
        for j in range(H):
            dh_row[j] = dh_row[j] + d_row[j]
        if has_previous(dm, lengths, b, t_prev):
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


cdef inline bint shares_gate_rows(const Dims *dm) noexcept nogil:
    """Whether dW_ih and dW_hh are products of the same gate-gradient rows:
    one input block over all GH columns (RNN, LSTM), a float input and more
    than one step (``linked_weight_gradients`` then makes both)."""
    cdef int col, wrow, size
    input_block(dm.cell, dm.C, 0, &col, &wrow, &size)
    return (dm.T > 1 and dm.ids == NULL and block_count(dm.cell) == 1 and col == 0
            and size == dm.GH)


cdef void linked_weight_gradients(const Dims *dm, bint paired, const floating *x,
                                  const floating *gates, const floating *out,
                                  floating *dw_ih, floating *dw_hh,
                                  int num_threads) noexcept nogil:
    """dW_hh += sum_t dG_t^T h_prev(t) over the steps that have a previous
    output, the neighbouring one (t >= 1 forward, t <= T - 2 reverse; padded
    outputs and gradients are zero).  ``paired`` (``shares_gate_rows``):
    dW_ih's product over the same gate rows runs with it, its gate-gradient
    blocks packed once for both (fr_gemm_tn_pair), and the step left over
    adds its dW_ih rows alone."""
    cdef int B = dm.B, E = dm.E, H = dm.H, W = dm.W, GH = dm.GH
    cdef Py_ssize_t linked = <Py_ssize_t>(dm.T - 1) * B
    cdef Py_ssize_t first = 0 if dm.reverse else B, alone = linked if dm.reverse else 0
    cdef const floating *h_prev = out + dm.out_off + (<size_t>B * dm.out_ld if dm.reverse
                                                      else 0)
    if not paired:
        parallel_gemm_tn(GH, H, linked, gates + first * W, W, h_prev, dm.out_ld, dw_hh, H,
                         num_threads)
        return
    parallel_gemm_tn_pair(GH, linked, gates + first * W, W, E, x + first * E, E, dw_ih, E,
                          H, h_prev, dm.out_ld, dw_hh, H, num_threads)
    parallel_gemm_tn(GH, E, B, gates + alone * W, W, x + alone * E, E, dw_ih, E,
                     num_threads)


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
    dW_hr of the projected LSTM (NULL otherwise).  A token input's dW_ih is
    ``token_gradients``' (``x`` and ``d_x`` are then not used)."""
    cdef int T = dm.T, B = dm.B, E = dm.E, H = dm.H, W = dm.W, GH = dm.GH
    cdef Py_ssize_t rows = <Py_ssize_t>T * B
    cdef int k, col, wrow, size, b
    cdef bint paired = shares_gate_rows(dm)
    if T > 1:
        linked_weight_gradients(dm, paired, x, gates, out, dw_ih, dw_hh, num_threads)
    for k in range(block_count(dm.cell) if dm.ids == NULL else 0):
        input_block(dm.cell, dm.C, k, &col, &wrow, &size)
        if not paired:
            parallel_gemm_tn(size, E, rows, gates + col, W, x, E,
                             dw_ih + <size_t>wrow * E, E, num_threads)
        if d_x != NULL and not parallel_gemm_packing_b(
                rows, E, size, gates + col, W, w_ih + <size_t>wrow * E,
                add_to_d_x or k > 0, d_x, E, num_threads):
            parallel_gemm(False, False, rows, E, size, gates + col, W,
                          w_ih + <size_t>wrow * E, E,
                          <floating>(1 if add_to_d_x or k > 0 else 0), d_x, E, num_threads)
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
# Small batches on every core: the gate columns split over the threads.
# --------------------------------------------------------------------------
#
# With B <= COLSPLIT_MAX_BATCH rows the batch cannot give every thread a
# chunk, so the hidden units are split instead: slice s owns units
# [s * per, (s + 1) * per) of every gate block, its own packed slice of W_hh
# and W_ih (packed inside the parallel region, by the thread that uses it)
# and its part of the gate math.  One parallel region runs the whole
# sequence; the new state goes to the other half of a double buffer, so one
# barrier per step suffices.  Each output element is the same dot products
# and gate math as in the one-thread path (columns are never split, the
# small-batch product keeps fr_gemm.h's sums), so results do not depend on
# the thread count.

cdef int widest_chunk(int T, const int[::1] lengths, const int[::1] chunks):
    """Rows of the widest batch chunk when no row is padded (every length
    is T), else 0."""
    cdef int k, rows = 0
    for k in range(lengths.shape[0]):
        if lengths[k] != T:
            return 0
    for k in range(chunks.shape[0] - 1):
        rows = max(rows, chunks[k + 1] - chunks[k])
    return rows


cdef bint _pipe_late_helper = False


def set_pipeline_late_helper(bint late):
    """Tests: the pipeline's helper starts each block it claims only once
    the consumer has moved two blocks on (as when the helper is descheduled):
    the consumer makes those blocks again, and writes its own blocks while
    the helper writes a shared buffer."""
    global _pipe_late_helper
    _pipe_late_helper = late


cdef int _colsplit_max_batch = 4
# Hidden sizes below this do not split (a step is then too short to pay for a
# barrier; one row is pipelined instead); measured on a 2-core Zen 3.  Tests
# lower it.
cdef int _colsplit_min_hidden = 128
cdef enum:
    COLSPLIT_ALIGN = 32      # units per slice: whole panels and vectors
    # A chunk of at most this many rows gives the micro-kernel short tiles:
    # its input products are made for many steps at once (inference: blocks
    # of steps; training: the whole sequence into the tape, before the
    # recurrence and on every thread).
    FEW_ROWS = 8
    # Rows of a pipelined input block: short, so that the consumer's first
    # block, and any block made twice when the helper falls behind, cost little
    # (LSTM / GRU (200, 1, 64), 2-core Zen 4, measured before the consumer
    # could make blocks: 4-16 rows within 2% of each other, 64 rows 12-15% slower).
    PIPE_BLOCK_ROWS = 8
    PIPE_SPARE = 2           # the consumer's own buffer, after the helper's two
    PIPE_BUFFERS = 3


def get_column_split_min_hidden():
    return _colsplit_min_hidden


def set_column_split_min_hidden(int hidden):
    """Tests lower it to run the column split on small layers (>= 1)."""
    global _colsplit_min_hidden
    if hidden < 1:
        raise ValueError(f"hidden must be >= 1, got {hidden}")
    _colsplit_min_hidden = hidden


cdef inline bint colsplit_applies(const Dims *dm, int num_threads) noexcept nogil:
    """The column split serves plain cells (and LSTM clip / input_forget):
    their gate math is elementwise within a unit."""
    return (num_threads > 1 and fr_openmp_enabled() and dm.B <= _colsplit_max_batch
            and dm.C >= _colsplit_min_hidden and not dm.proj and not dm.peepholes
            and not dm.reset_before)


cdef inline int colsplit_per(int H, int slices) noexcept nogil:
    cdef int per = (H + slices - 1) // slices
    return (per + COLSPLIT_ALIGN - 1) // COLSPLIT_ALIGN * COLSPLIT_ALIGN


cdef inline int input_gate_count(int cell) noexcept nogil:
    return 3 if cell == GRU else gate_width(cell, 1)


cdef inline int input_gate_col(int cell, int blk) noexcept nogil:
    """Gate block of the buffer fed by W_ih rows blk * H.. (GRU: r, z, n)."""
    return 3 if cell == GRU and blk == 2 else blk


cdef void colsplit_offsets(const Dims *dm, int per, int tb, bint is_float,
                           size_t *off) noexcept nogil:
    """One slice's workspace: packed W_hh blocks, packed W_ih blocks, bias
    row, gate rows (max(tb, 1) * B), gathered inputs; ``off`` gets the 5 ends."""
    cdef int steps = tb if tb > 0 else 1
    cdef int nw = dm.W // dm.H
    off[0] = <size_t>(dm.GH // dm.H) * packed_size(per, dm.H, True, is_float)
    off[1] = off[0] + <size_t>input_gate_count(dm.cell) * packed_size(per, dm.E, True, is_float)
    off[2] = off[1] + <size_t>nw * per
    off[3] = off[2] + <size_t>steps * dm.B * nw * per
    off[4] = off[3] + <size_t>steps * dm.B * dm.E


cdef void colsplit_pack(const Dims *dm, int u0, int hs, int per, const floating *w_ih,
                        const floating *w_hh, const floating *bias_row,
                        floating *work, const size_t *off, bint packed_ready) noexcept nogil:
    """A slice's packed weights (unless ``packed_ready``) and bias row (units
    u0..u0+hs)."""
    cdef int blk, H = dm.H, E = dm.E
    cdef bint is_float = floating is float
    cdef size_t sz_hh = packed_size(per, H, True, is_float)
    cdef size_t sz_ih = packed_size(per, E, True, is_float)
    for blk in range(0 if packed_ready else dm.GH // H):
        pack_weights_into(w_hh + (<size_t>blk * H + u0) * H, hs, H, True,
                          work + blk * sz_hh)
    for blk in range(0 if packed_ready else input_gate_count(dm.cell)):
        pack_weights_into(w_ih + (<size_t>blk * H + u0) * E, hs, E, True,
                          work + off[0] + blk * sz_ih)
    for blk in range(dm.W // H):
        memcpy(work + off[1] + <size_t>blk * hs, bias_row + <size_t>blk * H + u0,
               hs * sizeof(floating))


cdef floating *colsplit_input(const Dims *dm, const Dims *ld, int u0, int step, int tb,
                              const floating *x, floating *work, int per,
                              const size_t *off) noexcept nogil:
    """A slice's gate rows for ``step``: bias + input products, computed for
    tb steps at a time when tb > 0 (no padding), else for this step; with a
    token input, the slice's columns of the ids' table rows."""
    cdef int s, t, i, blk, B = dm.B, E = dm.E, W = ld.W, hs = ld.H
    cdef int first = step - step % tb if tb > 0 else step
    cdef int steps = min(tb, dm.T - first) if tb > 0 else 1
    cdef size_t sz_ih = packed_size(per, E, True, floating is float)
    cdef floating *g = work + off[2]
    cdef floating *xs = work + off[3]
    cdef const floating *row
    if dm.ids != NULL:
        t = dm.T - 1 - step if dm.reverse else step
        for i in range(B):
            row = <const floating *>dm.table + <size_t>dm.ids[<size_t>t * B + i] * dm.W + u0
            for blk in range(W // hs):
                memcpy(g + <size_t>i * W + blk * hs, row + blk * dm.H, hs * sizeof(floating))
        return g
    if first == step:
        for s in range(steps):
            t = dm.T - 1 - (first + s) if dm.reverse else first + s
            memcpy(xs + <size_t>s * B * E, x + <size_t>t * B * E,
                   <size_t>B * E * sizeof(floating))
        for i in range(steps * B):
            memcpy(g + <size_t>i * W, work + off[1], W * sizeof(floating))
        for blk in range(input_gate_count(dm.cell)):
            step_gemm(steps * B, hs, E, xs, E, work + off[0] + blk * sz_ih,
                      g + input_gate_col(dm.cell, blk) * hs, W)
    return g + <size_t>(step - first) * B * W


cdef void colsplit_step(const Dims *dm, const Dims *ld, int u0, int step, int tb,
                        const int *lengths, const floating *x, const floating *h_cur,
                        floating *h_next, floating *c, floating *out, floating *work,
                        int per, const size_t *off) noexcept nogil:
    """One step of one slice: its gate columns, then its units' state."""
    cdef int b, blk, H = dm.H, hs = ld.H
    cdef int t = dm.T - 1 - step if dm.reverse else step
    cdef size_t sz_hh = packed_size(per, H, True, floating is float)
    cdef floating *g = colsplit_input(dm, ld, u0, step, tb, x, work, per, off)
    for blk in range(dm.GH // H):
        step_gemm(dm.B, hs, H, h_cur, H, work + blk * sz_hh, g + blk * hs, ld.W)
    for b in range(dm.B):
        memcpy(h_next + <size_t>b * H + u0, h_cur + <size_t>b * H + u0,
               hs * sizeof(floating))
        if t < lengths[b]:
            cell_forward_row(ld, g + <size_t>b * ld.W, h_next + <size_t>b * H + u0,
                             c + <size_t>b * dm.C + u0 if c != NULL else NULL,
                             out + (<size_t>t * dm.B + b) * dm.out_ld + dm.out_off + u0,
                             NULL)


cdef void colsplit_thread(const Dims *dm, int slices, int tb, const int *lengths,
                          const floating *x, const floating *w_ih, const floating *w_hh,
                          const floating *bias_row, floating *h_buf, floating *c,
                          floating *out, floating *work, bint packed_ready) noexcept nogil:
    """This thread's slices (tid, tid + team, ...) through the whole
    sequence; h_buf (2, B, H) holds the state at step parity 0 / 1.
    ``packed_ready``: ``work`` already holds the slices' packed weights."""
    cdef int tid = fr_thread_num(), team = fr_team_size()
    cdef int per = colsplit_per(dm.H, slices)
    cdef int s, step, u0, nw = dm.W // dm.H
    cdef size_t off[5]
    cdef Dims ld
    cdef floating *h_cur
    colsplit_offsets(dm, per, tb, floating is float, off)
    s = tid
    while s < slices:
        u0 = min(dm.H, s * per)
        colsplit_pack(dm, u0, min(dm.H, u0 + per) - u0, per, w_ih, w_hh, bias_row,
                      work + s * off[4], off, packed_ready)
        s += team
    for step in range(dm.T):
        h_cur = h_buf + <size_t>(step % 2) * dm.B * dm.H
        s = tid - team
        while s + team < slices:
            s += team
            u0 = min(dm.H, s * per)
            ld = dm[0]
            ld.H = ld.C = min(dm.H, u0 + per) - u0
            ld.W = nw * ld.H
            ld.GH = (dm.GH // dm.H) * ld.H
            if ld.H > 0:
                colsplit_step(dm, &ld, u0, step, tb, lengths, x, h_cur,
                              h_buf + <size_t>((step + 1) % 2) * dm.B * dm.H, c, out,
                              work + s * off[4], per, off)
        fr_team_barrier()


cdef size_t colsplit_workspace(const Dims *layout, int B, int slices, int tb,
                               bint is_float) noexcept nogil:
    """Elements of the column split's workspace for a batch of B rows."""
    cdef size_t off[5]
    cdef Dims dm = layout[0]
    dm.B = B
    colsplit_offsets(&dm, colsplit_per(dm.H, slices), tb, is_float, off)
    return off[4] * slices


# --------------------------------------------------------------------------
# The kernel object: one per (layer, direction), built by fastrnn.layers.
# --------------------------------------------------------------------------

cdef void fill_layout(Dims *dm, int cell, bint reverse, int E, int C, int H,
                      int directions, bint reset_before, double clip,
                      bint peepholes, bint input_forget) noexcept nogil:
    """A direction's fixed layout, variants included (T and B are set per
    call).  C is the cell width (hidden_size), H the state width (proj_size
    for the projected LSTM, else C)."""
    cdef bint lstm = cell == LSTM
    dm.T = 0
    dm.B = 0
    dm.ids = NULL
    dm.table = NULL
    dm.inputs_made = False
    dm.state_grad = True
    dm.E = E
    dm.H = H
    dm.C = C
    dm.cell = cell
    dm.reverse = reverse
    dm.out_ld = directions * H
    dm.out_off = H if reverse else 0
    dm.reset_before = cell == GRU and reset_before
    dm.proj = lstm and C != H
    dm.peepholes = lstm and peepholes
    dm.clip = clip if lstm else 0
    dm.input_forget = lstm and input_forget
    dm.W = buffer_cols(cell, C, H)
    # Rows of W_hh in the first recurrent product: the reset-before GRU does
    # W_rz h there and W_hn (r * h) as its second product.
    dm.GH = 2 * H if dm.reset_before else gate_rows(cell, C)


cdef inline bint has_second_product(const Dims *dm) noexcept nogil:
    return dm.reset_before or dm.proj


cdef void pack_second_product(const Dims *dm, const floating *w_hh, const floating *w_hr,
                              bint transpose, floating *packed) noexcept nogil:
    """Pack a variant's second recurrent product: W_hn (rows 2H..3H of W_hh,
    H x H) for the reset-before GRU, W_hr (H x C) for the projected LSTM."""
    if dm.reset_before:
        pack_weights_into(w_hh + <size_t>2 * dm.H * dm.H, dm.H, dm.H, transpose, packed)
    elif dm.proj:
        pack_weights_into(w_hr, dm.H, dm.C, transpose, packed)


cdef void add_chunk_sums(const floating *acc, int nchunks, int n,
                         floating *total) noexcept nogil:
    """total += the chunks' partial sums, in chunk order (reproducible)."""
    cdef int k, j
    for k in range(nchunks):
        for j in range(n):
            total[j] += acc[<size_t>k * n + j]


cdef class Tape:
    """What a training ``forward`` keeps for ``backward`` (one layer direction).

    gates  (T, B, width): the activations, overwritten by backward with the
           pre-activation gradients;
    c_hist (T, B, hidden_size): the LSTM's cell states (empty for other cells);
    h0 (B, state_size), c0 (B, hidden_size): copies of the initial state (c0
           empty without a cell state).
    """
    cdef readonly object gates, c_hist, h0, c0

    def __cinit__(self, gates, c_hist, h0, c0):
        self.gates = gates
        self.c_hist = c_hist
        self.h0 = h0
        self.c0 = c0


cdef inline bint batch_packs_used(int slices, bint table_to_make) noexcept:
    """Whether a forward uses the batch path's packed weights: the column
    split packs its slices itself, and needs these only to make a token
    input's table."""
    return slices == 0 or table_to_make


def _keep_keys(dict work, **keys):
    """Mark what a call made in ``work`` as made under these keys (None:
    nothing kept); a call takes its keys out while it uses the buffers."""
    work.update({name: key for name, key in keys.items() if key is not None})


cdef object _buffer(dict work, str name, tuple shape, dtype):
    """The workspace array ``name`` of this shape, reused when it fits."""
    array = work.get(name)
    if array is None or array.shape != shape:
        array = work[name] = np.empty(shape, dtype)
    return array


# Index, in DirectionKernel's list of packed buffers, of the key its forward
# packs (W_hh^T, W_ih^T blocks, the variant's second product) were made for.
cdef int FORWARD_PACK_KEY = 6


cdef class DirectionKernel:
    """One direction of one recurrent layer: its cell layout (variants
    included), its packed weights and workspace, and the whole-sequence
    forward and backward.

    The layout lives here and nowhere else: the gate-buffer width ``width``,
    the rows of W_ih / W_hh ``gate_rows``, the cell width ``hidden_size`` and
    state width ``state_size`` (proj_size when projected), whether the cell
    has a cell state, and the parameter shapes (``parameter_shapes``).
    ``forward`` / ``backward`` trust their arguments (shapes, dtypes, C
    order): fastrnn.layers validates user input before calling them.  Arrays
    marked "in" are only read, "out" only written, "in/out" both.
    """
    cdef readonly int cell, input_size, hidden_size, state_size, proj_size
    cdef readonly int width, gate_rows, out_width, out_offset
    cdef readonly bint reverse, has_cell_state, reset_before, peepholes, input_forget
    cdef readonly double clip
    cdef readonly object dtype
    cdef Dims _layout
    cdef object _forward, _backward, _table_gradient
    # When idle: packed W_hh^T, the two input blocks of W_ih^T (the second
    # empty unless the GRU), W_hh (for backward), and the variant's second
    # product packed for forward and for backward (empty without one).
    cdef readonly object _packed
    # When idle: per-call workspace by name (gate slab, scratch, sums), kept
    # while the batch size and chunk count stay the same.
    cdef readonly object _workspace
    cdef list _spare_tapes
    cdef object _empty1, _empty2, _empty3, _empty_ids

    def __init__(self, int cell, bint reverse, int input_size, int hidden_size,
                 int directions, dtype, *, int proj_size=0, bint reset_before=False,
                 bint peepholes=False, double clip=0.0, bint input_forget=False):
        """``directions`` (1 or 2) fixes the layer output's width D * state_size;
        this direction writes its columns second when ``reverse``.

        Variants (set once, see the module docstring): ``proj_size`` (LSTM,
        0 = none, else 1..hidden_size - 1), ``peepholes``, ``clip`` (LSTM gate
        pre-activations, 0 = off), ``input_forget`` (LSTM), ``reset_before``
        (GRU)."""
        if cell != LSTM:
            for name, value in (("proj_size", proj_size), ("peepholes", peepholes),
                                ("clip", clip), ("input_forget", input_forget)):
                if value:
                    raise ValueError(f"DirectionKernel: {name}={value!r} applies "
                                     f"only to the LSTM cell, got cell {cell}")
        if reset_before and cell != GRU:
            raise ValueError(f"DirectionKernel: reset_before applies only to the GRU "
                             f"cell, got cell {cell}")
        if not 0 <= proj_size < hidden_size:
            raise ValueError(f"DirectionKernel: proj_size must be 0 or in 1.."
                             f"{hidden_size - 1}, got {proj_size}")
        if not clip >= 0:
            raise ValueError(f"DirectionKernel: clip must be >= 0, got {clip}")
        self.cell = cell
        self.reverse = reverse
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.proj_size = proj_size
        self.state_size = proj_size or hidden_size
        self.reset_before = reset_before
        self.peepholes = peepholes
        self.clip = clip
        self.input_forget = input_forget
        fill_layout(&self._layout, cell, reverse, input_size, hidden_size,
                    self.state_size, directions, reset_before, clip, peepholes,
                    input_forget)
        self.width = self._layout.W
        self.gate_rows = gate_rows(cell, hidden_size)
        self.has_cell_state = cell == LSTM
        self.out_width = self._layout.out_ld
        self.out_offset = self._layout.out_off
        self.dtype = np.dtype(dtype)
        precision = "float" if self.dtype == np.float32 else "double"
        self._forward = _forward[precision]
        self._backward = _backward[precision]
        self._table_gradient = _table_gradient[precision]
        self._packed = None
        self._workspace = None
        self._spare_tapes = []
        self._empty1 = np.empty(0, self.dtype)
        self._empty2 = np.empty((0, 0), self.dtype)
        self._empty3 = np.empty((0, 0, 0), self.dtype)
        self._empty_ids = np.empty(0, np.intp)

    def parameter_shapes(self, bint bias):
        """This direction's parameters by role, in state-dict (PyTorch) order:
        weight_ih, weight_hh, bias_ih, bias_hh (with ``bias``), weight_hr
        (projected LSTM), weight_peephole (rows: input, forget, output)."""
        shapes = {"weight_ih": (self.gate_rows, self.input_size),
                  "weight_hh": (self.gate_rows, self.state_size)}
        if bias:
            shapes["bias_ih"] = shapes["bias_hh"] = (self.gate_rows,)
        if self.proj_size:
            shapes["weight_hr"] = (self.state_size, self.hidden_size)
        if self.peepholes:
            shapes["weight_peephole"] = (3, self.hidden_size)
        return shapes

    def _take_packed(self):
        """The packed-weight buffers, owned and reused across calls; a second
        Python thread running this kernel meanwhile gets its own."""
        packed, self._packed = self._packed, None
        if packed is None:
            is_float = self.dtype == np.float32
            H, C, GH = self._layout.H, self._layout.C, self._layout.GH
            shapes = [(GH, H, True)]
            for k in range(2):
                shapes.append((self._block_size(k), self.input_size, True)
                              if k < block_count(self.cell) else None)
            shapes.append((GH, H, False))
            second = (H, H if self.reset_before else C)
            for transpose in (True, False):
                shapes.append(second + (transpose,)
                              if has_second_product(&self._layout) else None)
            packed = [np.empty(packed_size(s[0], s[1], s[2], is_float) if s else 0,
                               self.dtype) for s in shapes]
            packed.append(None)     # the pack_key of the forward packs held (see forward)
        return packed

    @property
    def forward_pack_key(self):
        """The ``pack_key`` the kept forward packs were made for (None: none
        kept, or in use by a call)."""
        return self._packed[FORWARD_PACK_KEY] if self._packed is not None else None

    @property
    def kept_table_key(self):
        """The ``table_key`` the kept input table of a token input was made
        for (None: none kept, or in use by a call)."""
        return self._workspace.get("table_key") if self._workspace is not None else None

    def _split_workspace(self, dict work, int B, int slices, int block, pack_key):
        """(workspace, h_buf, its pack key, whether it holds those packs) of
        the column split, or empty arrays without one (``slices`` 0).  The
        slices' packed weights sit among per-call rows, so they hold for one
        layout: the key is ``pack_key`` with (slices, B, block)."""
        if not slices:
            return self._empty1, self._empty2, None, False
        split_work = _buffer(work, "split", (colsplit_workspace(
            &self._layout, B, slices, block, self.dtype == np.float32),), self.dtype)
        h_buf = _buffer(work, "h_buf", (2 * B, self.state_size), self.dtype)
        key = (pack_key, slices, B, block) if pack_key is not None else None
        kept = work.pop("split_key", None)     # back in ``work`` once the call is done
        return split_work, h_buf, key, key is not None and kept == key

    def _block_size(self, int which):
        cdef int col, wrow, size
        input_block(self.cell, self.hidden_size, which, &col, &wrow, &size)
        return size

    def _take_workspace(self):
        """The workspace arrays (same hand-out rule as ``_take_packed``)."""
        work, self._workspace = self._workspace, None
        return work if work is not None else {}

    # -- training storage ------------------------------------------------------
    def take_tape(self, Py_ssize_t steps, Py_ssize_t batch, h0, c0):
        """A Tape for (steps, batch), reusing one given back by ``recycle``
        (fresh multi-megabyte buffers cost page faults on every step), with
        copies of the initial state ``h0`` / ``c0`` (in; c0 None without a
        cell state)."""
        cdef Tape tape
        gates_shape = (steps, batch, self.width)
        for i, tape in enumerate(self._spare_tapes):
            if tape.gates.shape == gates_shape:
                del self._spare_tapes[i]
                break
        else:
            c_hist = (np.empty((steps, batch, self.hidden_size), self.dtype)
                      if self.has_cell_state else self._empty3)
            tape = Tape(np.empty(gates_shape, self.dtype), c_hist, None, None)
        tape.h0 = h0.copy()
        tape.c0 = c0.copy() if self.has_cell_state else self._empty2
        return tape

    def recycle(self, Tape tape):
        """Give a tape's buffers back for the next ``take_tape`` (keeps one)."""
        tape.h0 = tape.c0 = None
        self._spare_tapes = [tape]

    def release_spares(self):
        """Free the buffers kept for reuse (e.g. when training stops)."""
        self._spare_tapes = []
        self._workspace = None

    # -- the recurrence ---------------------------------------------------------
    def forward(self, x, w_ih, w_hh, b_ih, b_hh, lengths, chunks, h, c, out,
                Tape tape, int num_threads, w2=None, peep=None, ids=None, emb=None,
                pack_key=None, table_key=None):
        """Run this direction over the whole sequence in one parallel region.

        in:     x (T, B, input_size); w_ih (gate_rows, input_size), w_hh
                (gate_rows, state_size); b_ih, b_hh (gate_rows,) or None;
                lengths (B,) int32, rows sorted per chunk longest first;
                chunks (nchunks + 1,) int32, the row ranges of the threads
                (the parallel team has min(num_threads, nchunks) threads);
                w2: W_hr (state_size, hidden_size) of the projected LSTM,
                peep: the peepholes (3, hidden_size); None when unused.
        in/out: h (B, state_size) and, for the LSTM, c (B, hidden_size): the
                initial state on entry, the state at each row's last step on
                exit.
        out:    out (T, B, out_width): this direction's columns receive the
                hidden states (rows past their length are left untouched);
                tape: training storage from ``take_tape`` (None: inference).
        Token input: ``ids`` (T * B,) intp, time-major in kernel row order,
        rows of ``emb`` (V, input_size); x is then None.  Each vocabulary
        row's biases and input product are made once (V rows, not T * B),
        bit for bit those of x = emb[ids].
        ``pack_key`` / ``table_key`` (inference with ``ids``): the packed
        weights / the input table are made once per key and reused by later
        calls with an equal key (None: for this call only); the caller
        promises that an equal key means unchanged inputs to them.
        """
        w2, peep = self._variant_inputs("forward", w2, peep)
        work = self._take_workspace()
        packed = self._take_packed()
        cdef int T = out.shape[0], B = out.shape[1], block = 0, slices = 0, pipelined = 0
        cdef bint inputs_ahead = False
        cdef bint packed_ready = pack_key is not None and packed[FORWARD_PACK_KEY] == pack_key
        packed[FORWARD_PACK_KEY] = None        # until this call has finished with them
        try:
            if tape is None:
                block, slices, pipelined, gates, inputs = self._inference_workspace(
                    work, T, B, lengths, chunks, num_threads, ids is not None)
                c_hist = self._empty3
            else:
                gates, c_hist, inputs = tape.gates, tape.c_hist, self._empty1
                inputs_ahead = ids is None and 0 < widest_chunk(T, lengths, chunks) <= FEW_ROWS
            split_work, h_buf, split_key, split_ready = self._split_workspace(
                work, B, slices, block, pack_key)
            token_inputs = self._token_inputs(work, ids, emb, table_key)
            uses_packs = batch_packs_used(slices, ids is not None and not token_inputs[3])
            self._forward(self, self._array3(x), w_ih, w_hh, self._vector(b_ih),
                          self._vector(b_hh), w2, peep, lengths, chunks, h,
                          c if self.has_cell_state else self._empty2, out, gates, c_hist,
                          _buffer(work, "bias_row", (self.width,), self.dtype),
                          packed[0], packed[1], packed[2], packed[4],
                          uses_packs and not packed_ready, split_ready, num_threads,
                          block, pipelined, inputs_ahead, inputs, slices, split_work,
                          h_buf, *token_inputs)
            _keep_keys(work, split_key=split_key,
                       table_key=table_key if ids is not None else None)
            packed[FORWARD_PACK_KEY] = pack_key if packed_ready or uses_packs else None
        finally:
            self._packed = packed
            self._workspace = work

    def backward(self, Tape tape, x, w_ih, w_hh, lengths, chunks, bint had_h0, out,
                 d_out, dh, dc, d_x, bint accumulate_d_x, dw_ih, dw_hh, db_ih, db_hh,
                 int num_threads, w2=None, peep=None, dw2=None, dpeep=None, ids=None,
                 emb=None, token_sums=None, bint state_grad=True):
        """Backpropagate through this direction (after a training ``forward``).

        in:     tape (its gates are overwritten with the pre-activation
                gradients); x, w_ih, w_hh, lengths, chunks, w2, peep as in
                forward; had_h0: the initial state was given (else zero, no
                dW_hh term); out (T, B, out_width) the forward's output; d_out
                (T, B, out_width) dL/d(out).
        in/out: dh (B, state_size), and dc (B, hidden_size) for the LSTM:
                dL/d(final state) on entry, dL/d(initial state) on exit (not
                with ``state_grad`` False: the products that only feed it are
                skipped, and dh is left meaningless);
                dw_ih, dw_hh, db_ih, db_hh (db_* None without bias), dw2 (the
                shape of w2) and dpeep (of peep; None when unused): gradients
                accumulated (+=).
        out:    d_x (T, B, input_size) dL/dx, or None when not needed; added
                to instead of written with ``accumulate_d_x`` (the second
                direction).
        Token input (``ids``, ``emb`` as in forward; x and d_x None): the
        tokens' gate gradients are summed per vocabulary id into
        ``token_sums`` (out, (V, width)), from which dW_ih is a product with
        V rows, and ``add_table_gradient`` the embedding's gradient.
        """
        w2, peep = self._variant_inputs("backward", w2, peep)
        dw2, dpeep = self._variant_inputs("backward", dw2, dpeep, "dw2", "dpeep")
        batch, nchunks = out.shape[1], chunks.shape[0] - 1
        scratch_cols = max(self._layout.GH, 2 * self.hidden_size)
        work = self._take_workspace()
        packed = self._take_packed()
        try:
            self._backward(self, self._array3(x), w_ih, w_hh, w2, peep, lengths, chunks, tape.h0,
                           tape.c0, had_h0, out, tape.gates, tape.c_hist, d_out, dh,
                           dc if self.has_cell_state else self._empty2,
                           d_x if d_x is not None else self._empty3, accumulate_d_x,
                           dw_ih, dw_hh, self._vector(db_ih), self._vector(db_hh), dw2, dpeep,
                           _buffer(work, "scratch", (batch, scratch_cols), self.dtype),
                           _buffer(work, "h_prevs", (batch,), np.intp),
                           _buffer(work, "bias_acc", (nchunks * self.width,), self.dtype)
                           if db_ih is not None else self._empty1,
                           _buffer(work, "peep_acc", (nchunks * 3 * self.hidden_size,),
                                   self.dtype) if self.peepholes else self._empty1,
                           packed[3], packed[5], num_threads,
                           ids if ids is not None else self._empty_ids,
                           emb if ids is not None else self._empty2,
                           token_sums if ids is not None else self._empty2,
                           _buffer(work, "token_extra", ((nchunks - 1) * emb.shape[0]
                                                         * self.width,), self.dtype)
                           if ids is not None and nchunks > 1 else self._empty1,
                           state_grad)
        finally:
            self._packed = packed
            self._workspace = work

    cpdef tuple inference_plan(self, int T, int B, const int[::1] lengths,
                               const int[::1] chunks, int num_threads):
        """(block, slices, pipelined) of an inference forward.  block > 0:
        the input products of ``block`` steps at a time are one product (only
        without padding, and when a chunk has few rows: a big chunk already
        gives the micro-kernel full tiles); slices > 0: the column split over
        that many threads (``colsplit_applies``), else one batch chunk per
        thread; pipelined = 1: one chunk on two threads, the second making
        the blocks' input products ahead (``pipelined_forward``)."""
        cdef int rows = widest_chunk(T, lengths, chunks), block = 0, slices = 0, pipelined = 0
        cdef Dims dm = self._layout
        dm.B = B
        if rows > 0 and colsplit_applies(&dm, num_threads):
            rows = B
        if 0 < rows <= FEW_ROWS:
            block = min(T, 64 // rows, 65536 // (rows * dm.W))
        if block < 2:
            block = 0
        # The one thread-split rule: too little work does not pay for a parallel region.
        if colsplit_applies(&dm, num_threads):
            slices = split_threads(<double>T * B * dm.C * dm.W, num_threads)
            if slices < 2:
                slices = 0
        elif (block > 0 and chunks.shape[0] == 2 and num_threads > 1 and fr_openmp_enabled()
              and split_threads(<double>T * B * dm.E * dm.W, num_threads) > 1):
            pipelined = 1
            block = min(block, max(2, PIPE_BLOCK_ROWS // rows))
        return block, slices, pipelined

    def _inference_workspace(self, dict work, int T, int B, lengths, chunks,
                             int num_threads, bint token_input):
        """(block, slices, pipelined, gate slab, gathered inputs) of an
        inference forward (``inference_plan``)."""
        block, slices, pipelined = self.inference_plan(T, B, lengths, chunks, num_threads)
        if token_input:
            pipelined = 0       # a token input's table rows need no thread making them
        copies = PIPE_BUFFERS if pipelined else 1
        return (block, slices, pipelined,
                _buffer(work, "slab", (copies * max(block, 1), B, self.width), self.dtype),
                _buffer(work, "inputs", (copies * block * B * self.input_size,), self.dtype))

    def _variant_inputs(self, method, w2, peep, w2_name="w2", peep_name="peep"):
        """``w2`` / ``peep`` (or their gradients) as the typed functions take
        them: required exactly when the layout has them, else empty."""
        for name, value, needed in ((w2_name, w2, self.proj_size > 0),
                                    (peep_name, peep, self.peepholes)):
            if needed and value is None:
                raise ValueError(f"DirectionKernel.{method}: {name} is required by "
                                 f"this kernel's layout, got None")
        return (w2 if self.proj_size else self._empty2,
                peep if self.peepholes else self._empty2)

    def _token_inputs(self, work, ids, emb, table_key):
        """(ids, emb, the input table (V, width, workspace), whether it holds
        the rows made for ``table_key`` already) for the typed forward; empty
        without a token input.  The key leaves ``work`` until the call is
        done, so a call that fails leaves no table marked made."""
        if ids is None:
            return self._empty_ids, self._empty2, self._empty2, False
        kept = work.pop("table_key", None)
        table = _buffer(work, "table", (emb.shape[0], self.width), self.dtype)
        return ids, emb, table, table_key is not None and kept == table_key

    def add_table_gradient(self, token_sums, w_ih, d_emb, Py_ssize_t padding,
                           int num_threads):
        """d_emb (V, input_size) += token_sums W_ih: the embedding's gradient
        from a token-input backward's per-id sums (in; its ``padding`` row
        is zeroed, -1: none), except the ``padding`` row."""
        self._table_gradient(self, token_sums, w_ih, d_emb, padding, num_threads)

    cdef object _array3(self, a):
        return a if a is not None else self._empty3

    cdef object _vector(self, a):
        return a if a is not None else self._empty1


def _forward(DirectionKernel kernel, const floating[:, :, ::1] x,
             const floating[:, ::1] w_ih, const floating[:, ::1] w_hh,
             const floating[::1] b_ih, const floating[::1] b_hh,
             const floating[:, ::1] w2, const floating[:, ::1] peep,
             const int[::1] lengths, const int[::1] chunks,
             floating[:, ::1] h, floating[:, ::1] c, floating[:, :, ::1] out,
             floating[:, :, ::1] gates, floating[:, :, ::1] c_hist,
             floating[::1] bias_row, floating[::1] w_hh_packed,
             floating[::1] w_ih_packed0, floating[::1] w_ih_packed1,
             floating[::1] w2_packed, bint pack_now, bint split_ready, int num_threads,
             int block, int pipelined, bint inputs_ahead, floating[::1] inputs, int slices,
             floating[::1] split_work, floating[:, ::1] h_buf, const Py_ssize_t[::1] ids,
             const floating[:, ::1] emb, floating[:, ::1] table, bint table_ready):
    """DirectionKernel.forward, typed (see there).  ``gates`` is (T, B, W)
    to keep what backward needs (every step's input products made first
    with ``inputs_ahead``), or max(block, 1) * B rows of workspace for
    inference (PIPE_BUFFERS times that when ``pipelined``, as ``inputs``,
    block * B * E); ``bias_row`` and the ``*_packed`` buffers are workspace
    (``pack_now``: pack these weights into them first).  ``slices`` > 0:
    the column split (workspace ``split_work``, its packs made with
    ``split_ready``, ``h_buf`` (2B, H)); see ``inference_plan``.  A token
    input (``ids`` (T * B,) not empty; ``x`` then empty) reads rows of ``emb``
    (V, E) through the table ``table`` (V, W; made already: ``table_ready``)."""
    cdef Dims dm = kernel._layout
    cdef int k, nchunks = chunks.shape[0] - 1, team = min(num_threads, chunks.shape[0] - 1)
    cdef size_t gates_t_stride = (0 if gates.shape[0] == 1
                                  else <size_t>out.shape[1] * gates.shape[2])
    cdef floating *c_ptr = ptr2(c)
    cdef floating *w_ih_packed[2]
    cdef floating *w2_ptr = ptr1(w2_packed)
    cdef const floating *peep_ptr = const_ptr2(peep)
    dm.T, dm.B = out.shape[0], out.shape[1]
    w_ih_packed[0] = &w_ih_packed0[0]
    w_ih_packed[1] = ptr1(w_ih_packed1)
    with nogil:
        fold_bias(&dm, const_ptr1(b_ih), const_ptr1(b_hh), &bias_row[0])
        if pack_now:
            pack_forward_weights(&dm, &w_ih[0, 0], &w_hh[0, 0], const_ptr2(w2),
                                 w_ih_packed, &w_hh_packed[0], w2_ptr)
        inputs_before_recurrence(&dm, team, num_threads, inputs_ahead, ids, emb, table,
                                 table_ready, const_ptr3(x), &bias_row[0],
                                 <const floating **>w_ih_packed, &gates[0, 0, 0])
        if slices > 0:
            column_split_forward(&dm, slices, block, &lengths[0], const_ptr3(x),
                                 &w_ih[0, 0], &w_hh[0, 0], &bias_row[0], &h[0, 0],
                                 &h_buf[0, 0], c_ptr, &out[0, 0, 0], &split_work[0],
                                 split_ready)
        elif pipelined:
            pipelined_forward(&dm, block, &lengths[0], const_ptr3(x), &bias_row[0],
                              <const floating **>w_ih_packed, &w_hh_packed[0],
                              &gates[0, 0, 0], &h[0, 0], c_ptr, &out[0, 0, 0], w2_ptr,
                              peep_ptr, ptr1(inputs))
        else:
            for k in prange(nchunks, num_threads=team, schedule="static", chunksize=1):
                forward_chunk(&dm, chunks[k], chunks[k + 1], &lengths[0],
                              const_ptr3(x), &bias_row[0], <const floating **>w_ih_packed,
                              &w_hh_packed[0], &gates[0, 0, 0], gates_t_stride,
                              &h[0, 0], c_ptr, &out[0, 0, 0], ptr3(c_hist), w2_ptr,
                              peep_ptr, block, ptr1(inputs))


cdef void inputs_before_recurrence(Dims *dm, int team, int num_threads, bint inputs_ahead,
                                   const Py_ssize_t[::1] ids, const floating[:, ::1] emb,
                                   floating[:, ::1] table, bint table_ready,
                                   const floating *x,
                                   const floating *bias_row, const floating **w_ih_packed,
                                   floating *gates) noexcept nogil:
    """Input products made before the recurrence, which ``dm`` then marks:
    a token input's table (one row per vocabulary id; kept from an earlier
    call with ``table_ready``), or with ``inputs_ahead`` every step's rows in
    the training tape."""
    if ids.shape[0] > 0:
        dm.ids = &ids[0]
        dm.table = &table[0, 0]
        if not table_ready:
            input_table(dm, team, emb.shape[0], &emb[0, 0], bias_row, w_ih_packed,
                        &table[0, 0])
    elif inputs_ahead:
        make_input_rows(dm, num_threads, x, bias_row, w_ih_packed, gates)
        dm.inputs_made = True


cdef void pack_forward_weights(const Dims *dm, const floating *w_ih, const floating *w_hh,
                               const floating *w2, floating **w_ih_packed,
                               floating *w_hh_packed, floating *w2_packed) noexcept nogil:
    """Pack W_hh^T, the variant's second product and each input block of
    W_ih^T for the batch path's micro-kernel."""
    cdef int k, col, wrow, size
    pack_weights_into(w_hh, dm.GH, dm.H, True, w_hh_packed)
    if has_second_product(dm):
        pack_second_product(dm, w_hh, w2, True, w2_packed)
    for k in range(block_count(dm.cell)):
        input_block(dm.cell, dm.C, k, &col, &wrow, &size)
        pack_weights_into(w_ih + <size_t>wrow * dm.E, size, dm.E, True, w_ih_packed[k])


cdef void column_split_forward(const Dims *dm, int slices, int block, const int *lengths,
                               const floating *x, const floating *w_ih,
                               const floating *w_hh, const floating *bias_row,
                               floating *h, floating *h_buf, floating *c, floating *out,
                               floating *work, bint packed_ready) noexcept nogil:
    """The whole sequence in one parallel region (``colsplit_thread``); the
    state goes in and out through ``h`` (B, H)."""
    cdef size_t state = <size_t>dm.B * dm.H
    memcpy(h_buf, h, state * sizeof(floating))
    with parallel(num_threads=slices):
        colsplit_thread(dm, slices, block, lengths, x, w_ih, w_hh, bias_row, h_buf,
                        c, out, work, packed_ready)
    memcpy(h, h_buf + (dm.T % 2) * state, state * sizeof(floating))


def _backward(DirectionKernel kernel, const floating[:, :, ::1] x,
              const floating[:, ::1] w_ih, const floating[:, ::1] w_hh,
              const floating[:, ::1] w2, const floating[:, ::1] peep,
              const int[::1] lengths, const int[::1] chunks, floating[:, ::1] h0,
              floating[:, ::1] c0, bint has_h0, floating[:, :, ::1] out,
              floating[:, :, ::1] gates, floating[:, :, ::1] c_hist,
              const floating[:, :, ::1] d_out, floating[:, ::1] dh,
              floating[:, ::1] dc, floating[:, :, ::1] d_x, bint add_to_d_x,
              floating[:, ::1] dw_ih, floating[:, ::1] dw_hh, floating[::1] db_ih,
              floating[::1] db_hh, floating[:, ::1] dw2, floating[:, ::1] dpeep,
              floating[:, ::1] scratch, Py_ssize_t[::1] h_prevs,
              floating[::1] bias_acc, floating[::1] peep_acc,
              floating[::1] w_hh_packed, floating[::1] w2_packed, int num_threads,
              const Py_ssize_t[::1] ids, const floating[:, ::1] emb,
              floating[:, ::1] token_sums, floating[::1] token_extra, bint state_grad):
    """DirectionKernel.backward, typed (see there).  Workspace: ``scratch``
    (B, max(GH, 2C)), ``h_prevs`` (B,) row pointers, ``bias_acc`` (nchunks *
    W; empty without bias) and ``peep_acc`` (nchunks * 3C; empty without
    peepholes), the chunks' partial sums, and the ``*_packed`` buffers.  A
    token input (``ids`` not empty): ``token_sums`` (V, W) receives the
    per-id sums of the gate gradients, ``token_extra`` ((nchunks - 1) * V * W)
    holds the other chunks' until they are added to it."""
    cdef Dims dm = kernel._layout
    cdef int nchunks = chunks.shape[0] - 1, prev_threads
    cdef floating *bias_acc_ptr = ptr1(bias_acc)
    cdef floating *peep_acc_ptr = ptr1(peep_acc)
    cdef floating *w2_ptr = ptr1(w2_packed)
    cdef floating *sums_ptr = NULL
    cdef int V = 0
    dm.T = out.shape[0]
    dm.B = out.shape[1]
    dm.state_grad = state_grad
    if ids.shape[0] > 0:
        dm.ids = &ids[0]
        V = emb.shape[0]
        sums_ptr = &token_sums[0, 0]
    with nogil:
        pack_weights_into(&w_hh[0, 0], dm.GH, dm.H, False, &w_hh_packed[0])
        if has_second_product(&dm):
            pack_second_product(&dm, &w_hh[0, 0], const_ptr2(w2), False, w2_ptr)
        prev_threads = blas_get_threads()
        blas_set_threads(1)
        sweep_backward(&dm, &chunks[0], nchunks, min(num_threads, nchunks), &lengths[0],
                       &gates[0, 0, 0], &w_hh_packed[0], &h0[0, 0], ptr2(c0),
                       &out[0, 0, 0], ptr3(c_hist), &d_out[0, 0, 0], &dh[0, 0], ptr2(dc),
                       &scratch[0, 0], bias_acc_ptr, w2_ptr, const_ptr2(peep),
                       peep_acc_ptr, <const floating **>&h_prevs[0], V, sums_ptr,
                       ptr1(token_extra))
        reduce_chunk_sums(&dm, nchunks, V, ptr1(token_extra), sums_ptr, bias_acc_ptr,
                          ptr1(db_ih), ptr1(db_hh), peep_acc_ptr, ptr2(dpeep))
        weight_gradients(&dm, &lengths[0], const_ptr3(x), &w_ih[0, 0],
                         &gates[0, 0, 0], &out[0, 0, 0],
                         &h0[0, 0] if has_h0 else NULL, &scratch[0, 0],
                         ptr3(d_x), add_to_d_x, &dw_ih[0, 0], &dw_hh[0, 0], ptr2(dw2),
                         num_threads)
        if sums_ptr != NULL:
            token_gradients(&dm, V, &emb[0, 0], sums_ptr, &dw_ih[0, 0], num_threads)
        if prev_threads > 1:
            blas_set_threads(prev_threads)


cdef void reduce_chunk_sums(const Dims *dm, int nchunks, int V, const floating *token_extra,
                            floating *token_sums, floating *bias_acc, floating *db_ih,
                            floating *db_hh, const floating *peep_acc,
                            floating *dpeep) noexcept nogil:
    """The sweep's per-chunk sums into their totals, in chunk order: a token
    input's per-id sums (the bias gradients then follow from them), the
    bias and the peephole gradients (NULL: not made)."""
    if token_sums != NULL:
        merge_token_sums(dm, V, nchunks, token_extra, token_sums, bias_acc)
    if bias_acc != NULL:
        add_bias_gradients(dm, bias_acc, 1 if token_sums != NULL else nchunks, db_ih, db_hh)
    if peep_acc != NULL:
        add_chunk_sums(peep_acc, nchunks, 3 * dm.C, dpeep)


def _table_gradient(DirectionKernel kernel, floating[:, ::1] token_sums,
                    const floating[:, ::1] w_ih, floating[:, ::1] d_emb, Py_ssize_t padding,
                    int num_threads):
    """DirectionKernel.add_table_gradient, typed."""
    cdef Dims dm = kernel._layout
    cdef int prev_threads
    with nogil:
        prev_threads = blas_get_threads()
        blas_set_threads(1)
        table_gradient(&dm, token_sums.shape[0], &w_ih[0, 0], &token_sums[0, 0], &d_emb[0, 0],
                       padding, num_threads)
        if prev_threads > 1:
            blas_set_threads(prev_threads)


cdef void sweep_backward(const Dims *dm, const int *chunks, int nchunks, int team,
                         const int *lengths, floating *gates,
                         const floating *w_hh_packed, const floating *h0,
                         const floating *c0, const floating *out,
                         const floating *c_hist, const floating *d_out, floating *dh,
                         floating *dc, floating *scratch, floating *bias_acc,
                         const floating *w2_packed, const floating *peep,
                         floating *peep_acc, const floating **h_prevs, int V,
                         floating *token_sums, floating *token_extra) noexcept nogil:
    """``backward_chunk`` on every chunk, one per thread of the team.  The
    chunks' bias (W each) and peephole (3C each) partial sums start at zero
    in ``bias_acc`` / ``peep_acc`` (NULL: not wanted).  A token input's
    per-id sums (V, W) go to ``token_sums`` for chunk 0, to ``token_extra``
    for the others (NULL without token input)."""
    cdef int k
    cdef size_t table = <size_t>V * dm.W
    cdef Sweep shared = Sweep(lengths=lengths, w_hh_packed=w_hh_packed, w2_packed=w2_packed,
                              h0=h0, c0=c0, out=out, c_hist=c_hist, d_out=d_out, peep=peep,
                              dh=dh, dc=dc, scratch=scratch, bias_acc=NULL, peep_acc=NULL,
                              token_acc=NULL, h_prevs=NULL)
    if bias_acc != NULL:
        memset(bias_acc, 0, <size_t>nchunks * dm.W * sizeof(floating))
    if peep_acc != NULL:
        memset(peep_acc, 0, <size_t>nchunks * 3 * dm.C * sizeof(floating))
    if token_sums != NULL:
        memset(token_sums, 0, table * sizeof(floating))
        if nchunks > 1:
            memset(token_extra, 0, (nchunks - 1) * table * sizeof(floating))
    for k in prange(nchunks, num_threads=team, schedule="static", chunksize=1):
        chunk_backward(dm, &shared, chunks, k, gates, bias_acc, peep_acc, h_prevs,
                       NULL if token_sums == NULL else
                       token_sums if k == 0 else token_extra + (k - 1) * table)


cdef void chunk_backward(const Dims *dm, const Sweep *shared, const int *chunks, int k,
                         floating *gates, floating *bias_acc, floating *peep_acc,
                         const floating **h_prevs, floating *token_acc) noexcept nogil:
    """``backward_chunk`` of chunk k: the ``shared`` arrays with the chunk's
    own partial sums and previous-state pointers."""
    cdef Sweep sw = shared[0]
    sw.bias_acc = bias_acc + <size_t>k * dm.W if bias_acc != NULL else NULL
    sw.peep_acc = peep_acc + <size_t>k * 3 * dm.C if peep_acc != NULL else NULL
    sw.token_acc = token_acc
    sw.h_prevs = <const void **>(h_prevs + chunks[k])
    backward_chunk(dm, &sw, chunks[k], chunks[k + 1], gates)


# --------------------------------------------------------------------------
# Streaming: one timestep of every layer per call (fastrnn.layers.stream).
# --------------------------------------------------------------------------

cimport numpy as cnp

cnp.import_array()


cdef struct StreamLayer:
    # One layer of a unidirectional stack; the pointers are typed float or
    # double by the stream's dtype and point into arrays LayerStream keeps.
    Dims dm                 # the DirectionKernel's layout with T = 1, out_ld = H
    void *w_hh_packed
    void *w_ih_packed[2]
    void *w2_packed         # the variant's second product (NULL without one)
    void *peep              # (3, C) peepholes (NULL without them)
    void *bias_row
    void *gates             # (B, W) workspace
    void *h                 # (B, H) this layer's row of the stream state
    void *c                 # (B, C) or NULL without a cell state
    void *out               # (B, H) the next layer's input; NULL: the caller's y


cdef bint all_finite_row(const floating *x, Py_ssize_t n) noexcept nogil:
    """The one finiteness check (fr_math.h), for this module's fused types."""
    if floating is float:
        return fr_all_finite_f(x, n)
    else:
        return fr_all_finite_d(x, n)


cdef void stream_step(StreamLayer *layers, int num_layers, const int *ones,
                      const floating *x, floating *y) noexcept nogil:
    """Every layer through one timestep: the same chunk routine as the
    whole-sequence forward with T = 1, so the results are bit for bit those of
    ``layer(x)`` (the micro-kernel's sums per row do not depend on the rows
    around it)."""
    cdef int l
    cdef const floating *layer_in = x
    cdef floating *layer_out
    cdef StreamLayer *s
    for l in range(num_layers):
        s = &layers[l]
        layer_out = <floating *>s.out if s.out != NULL else y
        forward_chunk(&s.dm, 0, s.dm.B, ones, layer_in, <const floating *>s.bias_row,
                      <const floating **>s.w_ih_packed, <const floating *>s.w_hh_packed,
                      <floating *>s.gates, 0, <floating *>s.h, <floating *>s.c,
                      layer_out, NULL, <const floating *>s.w2_packed,
                      <const floating *>s.peep)
        layer_in = layer_out


cdef void pack_layer(StreamLayer *s, const floating *w_ih, const floating *w_hh,
                     const floating *b_ih, const floating *b_hh, const floating *w_hr,
                     const floating *peep) noexcept nogil:
    """The packing steps of ``_forward``, into the stream's own buffers."""
    cdef int k, col, wrow, size
    pack_weights_into(w_hh, s.dm.GH, s.dm.H, True, <floating *>s.w_hh_packed)
    if has_second_product(&s.dm):
        pack_second_product(&s.dm, w_hh, w_hr, True, <floating *>s.w2_packed)
    if s.dm.peepholes:
        memcpy(s.peep, peep, <size_t>3 * s.dm.C * sizeof(floating))
    for k in range(block_count(s.dm.cell)):
        input_block(s.dm.cell, s.dm.C, k, &col, &wrow, &size)
        pack_weights_into(w_ih + <size_t>wrow * s.dm.E, size, s.dm.E, True,
                          <floating *>s.w_ih_packed[k])
    fold_bias(&s.dm, b_ih, b_hh, <floating *>s.bias_row)


cdef void head_rows(int B, int K, int H, const floating *h, const floating *packed,
                    const floating *bias, floating *y) noexcept nogil:
    """y (B, K) = bias + h (B, H) @ W^T: linear_forward's steps (_dense.pyx)."""
    cdef int i
    for i in range(B):
        memcpy(y + <size_t>i * K, bias, K * sizeof(floating))
    packed_gemm(B, K, H, h, H, packed, y, K)


cdef void softmax_rows(int B, int K, const floating *z, double *p) noexcept nogil:
    """p[i] = exp(z[i] - max z[i]) / sum, per row, in double."""
    cdef int i, j
    cdef double top, total
    for i in range(B):
        top = z[<size_t>i * K]
        for j in range(1, K):
            top = max(top, <double>z[<size_t>i * K + j])
        total = 0
        for j in range(K):
            p[<size_t>i * K + j] = exp(<double>z[<size_t>i * K + j] - top)
            total += p[<size_t>i * K + j]
        for j in range(K):
            p[<size_t>i * K + j] /= total


cdef inline void *data_or_null(a):
    return cnp.PyArray_DATA(a) if a is not None and a.size > 0 else NULL


cdef class LayerStream:
    """The compiled half of a stream over a unidirectional layer stack: its own
    packed weights, workspace and state (B rows), and ``step``.

    Built from the layer's DirectionKernels (one per layer); ``pack`` copies
    the weights in (again after they change); ``step`` checks x_t's shape,
    dtype and values and runs every layer for one timestep without the GIL.
    Not shared between threads: each stream owns one.
    """
    cdef StreamLayer *layers
    cdef int num_layers, batch, input_size, hidden_size, typenum
    cdef bint is_float
    cdef int *ones
    # (L, B, H) state (H: the state width, proj_size when projected) and
    # (L, B, C) cell state (None without one).
    cdef readonly object h, c
    cdef object dtype, _convert
    cdef list _keep
    # An optional linear head (task models): packed weight^T, bias (NULL: none).
    cdef int head_size
    cdef void *head_packed
    cdef void *head_bias
    cdef object _top, _logits      # step_head's workspace (B, H) and (B, K)

    def __cinit__(self):
        self.layers = NULL
        self.ones = NULL
        self.head_size = 0

    def __init__(self, list direction_kernels, int batch, convert):
        """``direction_kernels``: one forward DirectionKernel per layer, bottom
        first; ``convert(x_t)``: the Python check/conversion for inputs that
        are not already C-contiguous arrays of the stream's dtype."""
        cdef DirectionKernel kernel
        cdef StreamLayer *s
        cdef int l, L = len(direction_kernels)
        kernel = direction_kernels[0]
        self.num_layers, self.batch = L, batch
        self.input_size, self.hidden_size = kernel.input_size, kernel.state_size
        self.dtype = kernel.dtype
        self.is_float = self.dtype == np.float32
        self.typenum = cnp.NPY_FLOAT32 if self.is_float else cnp.NPY_FLOAT64
        self._convert = convert
        self._keep = []
        self.layers = <StreamLayer *>calloc(L, sizeof(StreamLayer))
        self.ones = <int *>malloc(batch * sizeof(int))
        if self.layers == NULL or self.ones == NULL:
            raise MemoryError("fastrnn: no memory for a stream")
        for l in range(batch):
            self.ones[l] = 1
        H, C = self.hidden_size, kernel.hidden_size
        self.h = np.zeros((L, batch, H), self.dtype)
        self.c = np.zeros((L, batch, C), self.dtype) if kernel.has_cell_state else None
        for l in range(L):
            kernel = direction_kernels[l]
            s = &self.layers[l]
            self._fill_layer(s, kernel, batch)
            s.h = cnp.PyArray_DATA(self.h[l])
            s.c = cnp.PyArray_DATA(self.c[l]) if self.c is not None else NULL
            s.out = self._buffer(<size_t>batch * H) if l < L - 1 else NULL

    cdef int _fill_layer(self, StreamLayer *s, DirectionKernel kernel,
                         int batch) except -1:
        """Layer s's layout (the kernel's, variants included, forward only
        and one step) and its own weight and workspace buffers."""
        cdef int k, H = kernel.state_size, C = kernel.hidden_size
        fill_layout(&s.dm, kernel.cell, False, kernel.input_size, C, H, 1,
                    kernel.reset_before, kernel.clip, kernel.peepholes,
                    kernel.input_forget)
        s.dm.T = 1
        s.dm.B = batch
        s.w_hh_packed = self._buffer(packed_size(s.dm.GH, H, True, self.is_float))
        for k in range(2):
            s.w_ih_packed[k] = self._buffer(
                packed_size(kernel._block_size(k), kernel.input_size, True, self.is_float)
                if k < block_count(s.dm.cell) else 0)
        s.w2_packed = NULL
        if has_second_product(&s.dm):
            s.w2_packed = self._buffer(packed_size(H, H if s.dm.reset_before else C, True,
                                                   self.is_float))
        s.peep = self._buffer(<size_t>3 * C) if s.dm.peepholes else NULL
        s.bias_row = self._buffer(s.dm.W)
        s.gates = self._buffer(<size_t>batch * s.dm.W)
        return 0

    def __dealloc__(self):
        free(self.layers)
        free(self.ones)

    cdef void *_buffer(self, size_t size) except NULL:
        array = np.zeros(max(size, 1), self.dtype)
        self._keep.append(array)
        return cnp.PyArray_DATA(array)

    def pack(self, list weights):
        """Copy in and pack the weights: one (w_ih, w_hh, b_ih, b_hh, w_hr,
        peephole) per layer, C-contiguous arrays of the stream's dtype (None
        for those the layer does not have)."""
        cdef int l, k
        cdef StreamLayer *s
        cdef void *p[6]
        for l in range(self.num_layers):
            s = &self.layers[l]
            for k in range(6):
                p[k] = data_or_null(weights[l][k])
            with nogil:
                if self.is_float:
                    pack_layer(s, <float *>p[0], <float *>p[1], <float *>p[2], <float *>p[3],
                               <float *>p[4], <float *>p[5])
                else:
                    pack_layer(s, <double *>p[0], <double *>p[1], <double *>p[2],
                               <double *>p[3], <double *>p[4], <double *>p[5])

    def pack_head(self, weight, bias):
        """Copy in and pack a linear head: weight (K, H) C-contiguous of the
        stream's dtype, bias (K,) or None; ``apply_head`` then computes
        exactly what the Linear layer's forward does for those rows."""
        cdef int K = weight.shape[0]
        if weight.shape[1] != self.hidden_size:
            raise ValueError(f"the head takes {weight.shape[1]} features, the stream's "
                             f"layers give {self.hidden_size}")
        if K != self.head_size:
            self.head_size = K
            self.head_packed = self._buffer(packed_size(K, self.hidden_size, True,
                                                        self.is_float))
            self.head_bias = self._buffer(K)
        cdef void *w = cnp.PyArray_DATA(weight)
        cdef bint has_bias = bias is not None
        with nogil:
            if self.is_float:
                pack_weights_into(<const float *>w, K, self.hidden_size, True,
                                  <float *>self.head_packed)
            else:
                pack_weights_into(<const double *>w, K, self.hidden_size, True,
                                  <double *>self.head_packed)
        if has_bias:
            memcpy(self.head_bias, cnp.PyArray_DATA(bias),
                   K * (sizeof(float) if self.is_float else sizeof(double)))
        else:
            memset(self.head_bias, 0, K * (sizeof(float) if self.is_float else sizeof(double)))

    def apply_head(self, h):
        """The packed head on ``h`` (B, H), an output of ``step`` or a pooled
        vector of the same dtype: a new (B, K) array."""
        cdef cnp.npy_intp dims[2]
        if self.head_size == 0:
            raise RuntimeError("this stream has no head (pack_head first)")
        if not (type(h) is np.ndarray and cnp.PyArray_TYPE(<cnp.ndarray>h) == self.typenum
                and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>h)
                and cnp.PyArray_NDIM(<cnp.ndarray>h) == 2
                and cnp.PyArray_DIM(<cnp.ndarray>h, 0) == self.batch
                and cnp.PyArray_DIM(<cnp.ndarray>h, 1) == self.hidden_size):
            raise ValueError(f"h must be a C-contiguous {self.dtype} array of shape "
                             f"({self.batch}, {self.hidden_size})")
        dims[0] = self.batch
        dims[1] = self.head_size
        y = cnp.PyArray_EMPTY(2, dims, self.typenum, 0)
        cdef void *hp = cnp.PyArray_DATA(<cnp.ndarray>h)
        cdef void *yp = cnp.PyArray_DATA(<cnp.ndarray>y)
        with nogil:
            if self.is_float:
                head_rows(self.batch, self.head_size, self.hidden_size, <const float *>hp,
                          <const float *>self.head_packed, <const float *>self.head_bias,
                          <float *>yp)
            else:
                head_rows(self.batch, self.head_size, self.hidden_size, <const double *>hp,
                          <const double *>self.head_packed, <const double *>self.head_bias,
                          <double *>yp)
        return y

    def step(self, x_t):
        """y_t (B, H) of the top layer for x_t (B, E); the state moves on."""
        cdef cnp.npy_intp dims[2]
        dims[0] = self.batch
        dims[1] = self.hidden_size
        y = cnp.PyArray_EMPTY(2, dims, self.typenum, 0)
        self._step_into(x_t, cnp.PyArray_DATA(<cnp.ndarray>y))
        return y

    def step_head(self, x_t, bint softmax=False):
        """The packed head on this step's output, in one call: a new (B, K)
        array of the stream's dtype, or with ``softmax`` each row's softmax in
        float64 (exp(z - max(z)) / sum, as the task models' predict_proba)."""
        cdef cnp.npy_intp dims[2]
        if self.head_size == 0:
            raise RuntimeError("this stream has no head (pack_head first)")
        if self._top is None:
            self._top = np.empty((self.batch, self.hidden_size), self.dtype)
            self._logits = np.empty((self.batch, self.head_size), self.dtype)
        elif self._logits.shape[1] != self.head_size:
            self._logits = np.empty((self.batch, self.head_size), self.dtype)
        self._step_into(x_t, cnp.PyArray_DATA(<cnp.ndarray>self._top))
        if not softmax:
            return self.apply_head(self._top)
        dims[0] = self.batch
        dims[1] = self.head_size
        p = cnp.PyArray_EMPTY(2, dims, cnp.NPY_FLOAT64, 0)
        cdef void *hp = cnp.PyArray_DATA(<cnp.ndarray>self._top)
        cdef void *zp = cnp.PyArray_DATA(<cnp.ndarray>self._logits)
        cdef double *pp = <double *>cnp.PyArray_DATA(<cnp.ndarray>p)
        with nogil:
            if self.is_float:
                head_rows(self.batch, self.head_size, self.hidden_size, <const float *>hp,
                          <const float *>self.head_packed, <const float *>self.head_bias,
                          <float *>zp)
                softmax_rows(self.batch, self.head_size, <const float *>zp, pp)
            else:
                head_rows(self.batch, self.head_size, self.hidden_size, <const double *>hp,
                          <const double *>self.head_packed, <const double *>self.head_bias,
                          <double *>zp)
                softmax_rows(self.batch, self.head_size, <const double *>zp, pp)
        return p

    cdef int _step_into(self, x_t, void *yp) except -1:
        """Check x_t (shape, dtype, values) and run one step into ``yp`` (B, H)."""
        cdef cnp.ndarray x
        if not (type(x_t) is np.ndarray
                and cnp.PyArray_TYPE(<cnp.ndarray>x_t) == self.typenum
                and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>x_t)):
            x_t = self._convert(x_t)       # raises on non-float input
        x = <cnp.ndarray>x_t
        if (cnp.PyArray_NDIM(x) != 2 or cnp.PyArray_DIM(x, 0) != self.batch
                or cnp.PyArray_DIM(x, 1) != self.input_size):
            raise ValueError(f"x_t must have shape ({self.batch}, {self.input_size}) "
                             f"(batch_size, input_size), got {x_t.shape}")
        cdef void *xp = cnp.PyArray_DATA(x)
        cdef Py_ssize_t n = <Py_ssize_t>self.batch * self.input_size
        cdef bint finite
        with nogil:
            if self.is_float:
                finite = all_finite_row(<const float *>xp, n)
                if finite:
                    stream_step(self.layers, self.num_layers, self.ones,
                                <const float *>xp, <float *>yp)
            else:
                finite = all_finite_row(<const double *>xp, n)
                if finite:
                    stream_step(self.layers, self.num_layers, self.ones,
                                <const double *>xp, <double *>yp)
        if not finite:
            raise ValueError("x_t contains NaN or infinite values")
        return 0
