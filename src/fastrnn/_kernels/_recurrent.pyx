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

Rows of the batch are split into contiguous chunks, one per OpenMP thread;
each thread runs the whole time loop on its rows (rows never interact, so
there is no barrier per timestep).  Within a chunk rows are sorted by length,
longest first, so the rows still running at a timestep are a prefix of the
chunk and padded steps cost nothing.
"""

import numpy as np

from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memcpy, memset

from libc.stdlib cimport calloc, free, malloc

from fastrnn._kernels._blas cimport gemm, parallel_gemm, parallel_gemm_tn
from fastrnn._kernels._packed cimport pack_weights_into, packed_gemm, packed_size
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


cdef inline int gate_width(int cell, int H) noexcept nogil:
    return H if cell == RNN_TANH or cell == RNN_RELU else 4 * H


cdef inline int gate_rows(int cell, int H) noexcept nogil:
    if cell == LSTM:
        return 4 * H
    if cell == GRU:
        return 3 * H
    return H


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

cdef inline void cell_forward_row(int cell, int H, floating *g, floating *h,
                                  floating *c, floating *out_row) noexcept nogil:
    """Pre-activations ``g`` -> stored activations; update state ``h`` (and ``c``).

    ``out_row`` receives the new hidden state.
    """
    cdef int j
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
    else:  # GRU: g = [r, z, hn, n_x] -> [r, z, hn, n]
        sigmoid_row(g, g, 2 * H)
        for j in range(H):
            g[3 * H + j] = g[3 * H + j] + g[j] * g[2 * H + j]
        tanh_row(g + 3 * H, g + 3 * H, H)
        for j in range(H):
            h[j] = (one - g[H + j]) * g[3 * H + j] + g[H + j] * h[j]
    memcpy(out_row, h, H * sizeof(floating))


cdef inline void cell_backward_row(int cell, int H, floating *g, floating *dh,
                                   floating *dc, const floating *h,
                                   const floating *h_prev, const floating *c,
                                   const floating *c_prev,
                                   floating *scratch) noexcept nogil:
    """Stored activations ``g`` -> pre-activation gradients, in place.

    ``dh`` comes in as dL/dh_t and leaves as the part of dL/dh_{t-1} that does
    not pass through W_hh (the recurrent product is added by the caller).
    ``dc`` (LSTM) comes in as dL/dc_t from later steps and leaves as dL/dc_{t-1}.
    """
    cdef int j
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
                        floating *c, floating *out, floating *c_hist) noexcept nogil:
    """Rows r0..r1 through the whole sequence.

    Per timestep: folded biases + the input product (one packed W_ih^T per
    input block) + the recurrent product (packed W_hh^T), then the cell's gate
    math.  ``gates_t_stride`` is B * W when every step is kept for backward,
    0 in inference (one slab of B rows reused).  ``c`` and ``c_hist`` are NULL
    except for the LSTM (``c_hist`` only when training).
    """
    cdef int T = dm.T, B = dm.B, E = dm.E, H = dm.H, W = dm.W, GH = dm.GH
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
            input_block(dm.cell, H, k, &col, &wrow, &size)
            packed_gemm(n, size, E, x + (<size_t>t * B + r0) * E, E, w_ih_packed[k],
                        g + col, W)
        packed_gemm(n, GH, H, h + <size_t>r0 * H, H, w_hh_packed, g, W)
        for i in range(n):
            b = r0 + i
            cell_forward_row(dm.cell, H, g + <size_t>i * W, h + <size_t>b * H,
                             c + <size_t>b * H if c != NULL else NULL,
                             out + (<size_t>t * B + b) * dm.out_ld + dm.out_off)
            if c_hist != NULL:
                memcpy(c_hist + (<size_t>t * B + b) * H, c + <size_t>b * H,
                       H * sizeof(floating))


cdef void backward_chunk(const Dims *dm, int r0, int r1, const int *lengths,
                         floating *gates, const floating *w_hh_packed,
                         const floating *h0, const floating *c0,
                         const floating *out, const floating *c_hist,
                         const floating *d_out, floating *dh, floating *dc,
                         floating *scratch, floating *bias_acc) noexcept nogil:
    cdef int T = dm.T, B = dm.B, H = dm.H, W = dm.W, GH = dm.GH
    cdef int rows = r1 - r0
    cdef int n = rows if dm.reverse else 0     # rows with a step at t
    cdef int step, t, i, b, j, t_prev
    cdef bint has_prev
    cdef floating *g
    cdef floating *dh_row
    cdef const floating *d_row
    cdef const floating *h_prev
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
        for i in range(n):
            b = r0 + i
            dh_row = dh + <size_t>b * H
            d_row = d_out + (<size_t>t * B + b) * o_ld + dm.out_off
            for j in range(H):
                dh_row[j] = dh_row[j] + d_row[j]
            t_prev = t + 1 if dm.reverse else t - 1
            has_prev = t_prev < lengths[b] if dm.reverse else t_prev >= 0
            if has_prev:
                h_prev = out + (<size_t>t_prev * B + b) * o_ld + dm.out_off
            else:
                h_prev = h0 + <size_t>b * H
            c_t = NULL
            c_prev = NULL
            if c_hist != NULL:
                c_t = c_hist + (<size_t>t * B + b) * H
                c_prev = (c_hist + (<size_t>t_prev * B + b) * H if has_prev
                          else c0 + <size_t>b * H)
            cell_backward_row(dm.cell, H, g + <size_t>i * W, dh_row,
                              dc + <size_t>b * H if dc != NULL else NULL,
                              out + (<size_t>t * B + b) * o_ld + dm.out_off,
                              h_prev, c_t, c_prev, scratch + <size_t>b * H)
            if bias_acc != NULL:   # bias gradients while the row is in cache
                for j in range(W):
                    bias_acc[j] += g[<size_t>i * W + j]
        packed_gemm(n, H, GH, g, W, w_hh_packed, dh + <size_t>r0 * H, H)


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
            input_block(dm.cell, dm.H, blk, &col, &wrow, &size)
            for j in range(size):
                db_ih[wrow + j] += acc[col + j]
        for j in range(dm.GH):
            db_hh[j] += acc[j]


cdef void fold_bias(const Dims *dm, const floating *b_ih, const floating *b_hh,
                    floating *row) noexcept nogil:
    """The gate-buffer row before any product: the biases, summed where they meet.

    The GRU keeps b_hn with hn (the reset gate multiplies W_hn h + b_hn).
    """
    cdef int j, H = dm.H
    memset(row, 0, dm.W * sizeof(floating))
    if b_ih == NULL:
        return
    if dm.cell == GRU:
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
                           floating *dw_ih, floating *dw_hh,
                           int num_threads) noexcept nogil:
    """The weight and input gradients: big products of the pre-activation
    gradients in ``gates`` with the layer input and the hidden states.

    ``d_x`` is overwritten (padded rows get 0: their gradients are 0), or
    added to with ``add_to_d_x`` (the second direction of a layer)."""
    cdef int T = dm.T, B = dm.B, E = dm.E, H = dm.H, W = dm.W, GH = dm.GH
    cdef Py_ssize_t rows = <Py_ssize_t>T * B
    cdef int k, col, wrow, size, b
    cdef const floating *h_shift = out + dm.out_off
    for k in range(block_count(dm.cell)):
        input_block(dm.cell, H, k, &col, &wrow, &size)
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
            parallel_gemm_tn(GH, H, <Py_ssize_t>(T - 1) * B, gates, W,
                             h_shift + <size_t>B * dm.out_ld, dm.out_ld, dw_hh, H,
                             num_threads)
        else:
            parallel_gemm_tn(GH, H, <Py_ssize_t>(T - 1) * B, gates + <size_t>B * W, W,
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


# --------------------------------------------------------------------------
# The kernel object: one per (layer, direction), built by fastrnn.layers.
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


cdef inline floating *ptr1(floating[::1] a) noexcept nogil:
    return &a[0] if a.shape[0] > 0 else NULL


cdef inline const floating *const_ptr1(const floating[::1] a) noexcept nogil:
    return &a[0] if a.shape[0] > 0 else NULL


cdef inline floating *ptr2(floating[:, ::1] a) noexcept nogil:
    return &a[0, 0] if a.shape[0] > 0 and a.shape[1] > 0 else NULL


cdef inline floating *ptr3(floating[:, :, ::1] a) noexcept nogil:
    return &a[0, 0, 0] if a.shape[0] > 0 and a.shape[1] > 0 and a.shape[2] > 0 else NULL


cdef class Tape:
    """What a training ``forward`` keeps for ``backward`` (one layer direction).

    gates  (T, B, W): the activations, overwritten by backward with the
           pre-activation gradients;
    c_hist (T, B, H): the LSTM's cell states (empty for other cells);
    h0, c0 (B, H): copies of the initial state (c0 empty without a cell state).
    """
    cdef readonly object gates, c_hist, h0, c0

    def __cinit__(self, gates, c_hist, h0, c0):
        self.gates = gates
        self.c_hist = c_hist
        self.h0 = h0
        self.c0 = c0


cdef class DirectionKernel:
    """One direction of one recurrent layer: its cell layout, its packed
    weights and workspace, and the whole-sequence forward and backward.

    The layout (gate-buffer width ``width``, rows of W_ih / W_hh
    ``gate_rows``, whether the cell has a cell state) lives here and nowhere
    else.  ``forward`` / ``backward`` trust their arguments (shapes, dtypes,
    C order): fastrnn.layers validates user input before calling them.
    Arrays marked "in" are only read, "out" only written, "in/out" both.
    """
    cdef readonly int cell, input_size, hidden_size, width, gate_rows
    cdef readonly int out_width, out_offset
    cdef readonly bint reverse, has_cell_state
    cdef readonly object dtype
    cdef object _forward, _backward
    # When idle: packed W_hh^T, the two input blocks of W_ih^T (the second
    # empty unless the GRU) and W_hh (for backward), reused across calls.
    cdef object _packed
    cdef list _spare_tapes
    cdef object _empty1, _empty2, _empty3

    def __init__(self, int cell, bint reverse, int input_size, int hidden_size,
                 int directions, dtype):
        """``directions`` (1 or 2) fixes the layer output's width D * H;
        this direction writes columns [H, 2H) when ``reverse``, else [0, H)."""
        self.cell = cell
        self.reverse = reverse
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.width = gate_width(cell, hidden_size)
        self.gate_rows = gate_rows(cell, hidden_size)
        self.has_cell_state = cell == LSTM
        self.out_width = directions * hidden_size
        self.out_offset = hidden_size if reverse else 0
        self.dtype = np.dtype(dtype)
        precision = "float" if self.dtype == np.float32 else "double"
        self._forward = _forward[precision]
        self._backward = _backward[precision]
        self._packed = None
        self._spare_tapes = []
        self._empty1 = np.empty(0, self.dtype)
        self._empty2 = np.empty((0, 0), self.dtype)
        self._empty3 = np.empty((0, 0, 0), self.dtype)

    def _take_packed(self):
        """The packed-weight buffers, owned and reused across calls; a second
        Python thread running this kernel meanwhile gets its own."""
        packed, self._packed = self._packed, None
        if packed is None:
            is_float = self.dtype == np.float32
            sizes = [packed_size(self.gate_rows, self.hidden_size, True, is_float)]
            for k in range(2):
                sizes.append(packed_size(self._block_size(k), self.input_size, True,
                                         is_float) if k < block_count(self.cell) else 0)
            sizes.append(packed_size(self.gate_rows, self.hidden_size, False, is_float))
            packed = [np.empty(size, self.dtype) for size in sizes]
        return packed

    def _block_size(self, int which):
        cdef int col, wrow, size
        input_block(self.cell, self.hidden_size, which, &col, &wrow, &size)
        return size

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

    # -- the recurrence ---------------------------------------------------------
    def forward(self, x, w_ih, w_hh, b_ih, b_hh, lengths, chunks, h, c, out,
                Tape tape, int num_threads):
        """Run this direction over the whole sequence in one parallel region.

        in:     x (T, B, E); w_ih (gate_rows, E), w_hh (gate_rows, H);
                b_ih, b_hh (gate_rows,) or None; lengths (B,) int32, rows
                sorted per chunk longest first; chunks (nchunks + 1,) int32,
                the row ranges of the threads.
        in/out: h (B, H) and, for the LSTM, c (B, H): the initial state on
                entry, the state at each row's last step on exit.
        out:    out (T, B, out_width): this direction's columns receive the
                hidden states (rows past their length are left untouched);
                tape: training storage from ``take_tape`` (None: inference).
        """
        if tape is None:
            gates = np.empty((1, x.shape[1], self.width), self.dtype)
            c_hist = self._empty3
        else:
            gates, c_hist = tape.gates, tape.c_hist
        packed = self._take_packed()
        try:
            self._forward(self, x, w_ih, w_hh, self._vector(b_ih), self._vector(b_hh),
                          lengths, chunks, h, c if self.has_cell_state else self._empty2,
                          out, gates, c_hist, packed[0], packed[1], packed[2], num_threads)
        finally:
            self._packed = packed

    def backward(self, Tape tape, x, w_ih, w_hh, lengths, chunks, bint had_h0, out,
                 d_out, dh, dc, d_x, bint accumulate_d_x, dw_ih, dw_hh, db_ih, db_hh,
                 int num_threads):
        """Backpropagate through this direction (after a training ``forward``).

        in:     tape (its gates are overwritten with the pre-activation
                gradients); x, w_ih, w_hh, lengths, chunks as in forward;
                had_h0: the initial state was given (else zero, no dW_hh term);
                out (T, B, out_width) the forward's output; d_out (T, B,
                out_width) dL/d(out).
        in/out: dh (B, H), and dc (B, H) for the LSTM: dL/d(final state) on
                entry, dL/d(initial state) on exit; dw_ih, dw_hh, db_ih, db_hh
                (db_* None without bias): gradients accumulated (+=).
        out:    d_x (T, B, E) dL/dx, or None when not needed; added to instead
                of written with ``accumulate_d_x`` (the second direction).
        """
        scratch = np.empty((x.shape[1], self.gate_rows), self.dtype)
        packed = self._take_packed()
        try:
            self._backward(self, x, w_ih, w_hh, lengths, chunks, tape.h0, tape.c0, had_h0,
                           out, tape.gates, tape.c_hist, d_out, dh,
                           dc if self.has_cell_state else self._empty2,
                           d_x if d_x is not None else self._empty3, accumulate_d_x,
                           dw_ih, dw_hh, self._vector(db_ih), self._vector(db_hh), scratch,
                           packed[3], num_threads)
        finally:
            self._packed = packed

    cdef object _vector(self, a):
        return a if a is not None else self._empty1


def _forward(DirectionKernel kernel,
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
             floating[:, :, ::1] gates,
             floating[:, :, ::1] c_hist,
             floating[::1] w_hh_packed,
             floating[::1] w_ih_packed0,
             floating[::1] w_ih_packed1,
             int num_threads):
    """DirectionKernel.forward, typed (see there).  ``gates`` is (T, B, W)
    to keep what backward needs, or (1, B, W) as workspace for inference."""
    cdef Dims dm
    cdef int nchunks = chunks.shape[0] - 1
    cdef int k, col, wrow, size
    cdef size_t gates_t_stride = 0 if gates.shape[0] == 1 else <size_t>x.shape[1] * gates.shape[2]
    cdef floating *c_ptr = ptr2(c)
    cdef floating *c_hist_ptr = ptr3(c_hist)
    cdef floating *w_ih_packed[2]
    cdef floating[::1] bias_row = np.empty(kernel.width, kernel.dtype)
    fill_dims(&dm, kernel.cell, kernel.reverse, x.shape[0], x.shape[1], x.shape[2],
              kernel.hidden_size, kernel.out_width, kernel.out_offset)
    w_ih_packed[0] = &w_ih_packed0[0]
    w_ih_packed[1] = ptr1(w_ih_packed1)
    with nogil:
        pack_weights_into(&w_hh[0, 0], dm.GH, dm.H, True, &w_hh_packed[0])
        for k in range(block_count(dm.cell)):
            input_block(dm.cell, dm.H, k, &col, &wrow, &size)
            pack_weights_into(&w_ih[wrow, 0], size, dm.E, True, w_ih_packed[k])
        fold_bias(&dm, const_ptr1(b_ih), const_ptr1(b_hh), &bias_row[0])
        for k in prange(nchunks, num_threads=num_threads, schedule="static",
                        chunksize=1):
            forward_chunk(&dm, chunks[k], chunks[k + 1], &lengths[0],
                          &x[0, 0, 0], &bias_row[0], <const floating **>w_ih_packed,
                          &w_hh_packed[0], &gates[0, 0, 0], gates_t_stride, &h[0, 0],
                          c_ptr, &out[0, 0, 0], c_hist_ptr)


def _backward(DirectionKernel kernel,
              const floating[:, :, ::1] x,
              const floating[:, ::1] w_ih,
              const floating[:, ::1] w_hh,
              const int[::1] lengths,
              const int[::1] chunks,
              floating[:, ::1] h0,
              floating[:, ::1] c0,
              bint has_h0,
              floating[:, :, ::1] out,
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
              floating[::1] w_hh_packed,
              int num_threads):
    """DirectionKernel.backward, typed (see there).  ``scratch`` is
    workspace (B, GH)."""
    cdef Dims dm
    cdef int nchunks = chunks.shape[0] - 1
    cdef int k, prev_threads
    cdef floating *dc_ptr = ptr2(dc)
    cdef floating *c_hist_ptr = ptr3(c_hist)
    cdef floating *c0_ptr = ptr2(c0)
    cdef floating *d_x_ptr = ptr3(d_x)
    cdef floating *db_ih_ptr = ptr1(db_ih)
    cdef floating *db_hh_ptr = ptr1(db_hh)
    cdef floating *packed = &w_hh_packed[0]
    cdef floating *bias_acc = NULL
    cdef bint ok = True
    fill_dims(&dm, kernel.cell, kernel.reverse, x.shape[0], x.shape[1], x.shape[2],
              kernel.hidden_size, kernel.out_width, kernel.out_offset)
    with nogil:
        pack_weights_into(&w_hh[0, 0], dm.GH, dm.H, False, packed)
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
                               bias_acc + <size_t>k * dm.W if bias_acc != NULL else NULL)
            if bias_acc != NULL:
                add_bias_gradients(&dm, bias_acc, nchunks, db_ih_ptr, db_hh_ptr)
            weight_gradients(&dm, &lengths[0], &x[0, 0, 0], &w_ih[0, 0],
                             &gates[0, 0, 0], &out[0, 0, 0],
                             &h0[0, 0] if has_h0 else NULL, &scratch[0, 0],
                             d_x_ptr, add_to_d_x, &dw_ih[0, 0], &dw_hh[0, 0], num_threads)
            if prev_threads > 1:
                blas_set_threads(prev_threads)
        free(bias_acc)
    if not ok:
        raise MemoryError("fastrnn: no memory for the bias gradient sums")


# --------------------------------------------------------------------------
# Streaming: one timestep of every layer per call (fastrnn.layers.stream).
# --------------------------------------------------------------------------

cimport numpy as cnp

cnp.import_array()


cdef struct StreamLayer:
    # One layer of a unidirectional stack; the pointers are typed float or
    # double by the stream's dtype and point into arrays LayerStream keeps.
    Dims dm                 # T = 1, out_ld = H
    void *w_hh_packed
    void *w_ih_packed[2]
    void *bias_row
    void *gates             # (B, W) workspace
    void *h                 # (B, H) this layer's row of the stream state
    void *c                 # (B, H) or NULL without a cell state
    void *out               # (B, H) the next layer's input; NULL: the caller's y


cdef bint all_finite_row(const floating *x, Py_ssize_t n) noexcept nogil:
    """x * 0 is 0 for finite values and NaN for NaN and inf."""
    cdef Py_ssize_t i
    cdef floating acc = 0
    for i in range(n):
        acc += x[i] * 0
    return acc == 0


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
                      layer_out, NULL)
        layer_in = layer_out


cdef void pack_layer(StreamLayer *s, const floating *w_ih, const floating *w_hh,
                     const floating *b_ih, const floating *b_hh) noexcept nogil:
    cdef int k, col, wrow, size
    pack_weights_into(w_hh, s.dm.GH, s.dm.H, True, <floating *>s.w_hh_packed)
    for k in range(block_count(s.dm.cell)):
        input_block(s.dm.cell, s.dm.H, k, &col, &wrow, &size)
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
    cdef readonly object h, c          # (L, B, H) state; c None without a cell state
    cdef object dtype, _convert
    cdef list _keep
    # An optional linear head (task models): packed weight^T, bias (NULL: none).
    cdef int head_size
    cdef void *head_packed
    cdef void *head_bias

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
        self.input_size, self.hidden_size = kernel.input_size, kernel.hidden_size
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
        H = self.hidden_size
        self.h = np.zeros((L, batch, H), self.dtype)
        self.c = np.zeros((L, batch, H), self.dtype) if kernel.has_cell_state else None
        for l in range(L):
            kernel = direction_kernels[l]
            s = &self.layers[l]
            fill_dims(&s.dm, kernel.cell, False, 1, batch, kernel.input_size, H, H, 0)
            s.w_hh_packed = self._buffer(packed_size(s.dm.GH, H, True, self.is_float))
            for k in range(2):
                s.w_ih_packed[k] = self._buffer(
                    packed_size(kernel._block_size(k), kernel.input_size, True, self.is_float)
                    if k < block_count(s.dm.cell) else 0)
            s.bias_row = self._buffer(s.dm.W)
            s.gates = self._buffer(<size_t>batch * s.dm.W)
            s.h = cnp.PyArray_DATA(self.h[l])
            s.c = cnp.PyArray_DATA(self.c[l]) if self.c is not None else NULL
            s.out = self._buffer(<size_t>batch * H) if l < L - 1 else NULL

    def __dealloc__(self):
        free(self.layers)
        free(self.ones)

    cdef void *_buffer(self, size_t size):
        array = np.zeros(max(size, 1), self.dtype)
        self._keep.append(array)
        return cnp.PyArray_DATA(array)

    def pack(self, list weights):
        """Copy in and pack the weights: one (w_ih, w_hh, b_ih, b_hh) per
        layer, C-contiguous arrays of the stream's dtype (biases may be None)."""
        cdef int l
        cdef StreamLayer *s
        cdef void *p[4]
        for l in range(self.num_layers):
            s = &self.layers[l]
            for k in range(4):
                p[k] = data_or_null(weights[l][k])
            with nogil:
                if self.is_float:
                    pack_layer(s, <float *>p[0], <float *>p[1], <float *>p[2], <float *>p[3])
                else:
                    pack_layer(s, <double *>p[0], <double *>p[1], <double *>p[2],
                               <double *>p[3])

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
        cdef cnp.ndarray x
        cdef cnp.npy_intp dims[2]
        if not (type(x_t) is np.ndarray
                and cnp.PyArray_TYPE(<cnp.ndarray>x_t) == self.typenum
                and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>x_t)):
            x_t = self._convert(x_t)       # raises on non-float input
        x = <cnp.ndarray>x_t
        if (cnp.PyArray_NDIM(x) != 2 or cnp.PyArray_DIM(x, 0) != self.batch
                or cnp.PyArray_DIM(x, 1) != self.input_size):
            raise ValueError(f"x_t must have shape ({self.batch}, {self.input_size}) "
                             f"(batch_size, input_size), got {x_t.shape}")
        dims[0] = self.batch
        dims[1] = self.hidden_size
        y = cnp.PyArray_EMPTY(2, dims, self.typenum, 0)
        cdef void *xp = cnp.PyArray_DATA(x)
        cdef void *yp = cnp.PyArray_DATA(<cnp.ndarray>y)
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
        return y
