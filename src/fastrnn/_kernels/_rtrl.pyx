"""Real-time recurrent learning: one step of the sensitivity update.

For one layer with state s (S values per stream) and P parameters, RTRL keeps
the sensitivity M = ds_t/dθ (S x P per stream) and updates it every step::

    Q   = W_rec @ M_prev[rows feeding the recurrence] + immediate part
    M_t = (cell's elementwise Jacobians) applied to Q (+ diagonal * M_prev)

then the step's exact gradient is d_out · M_t[output rows].  Q's rows are the
cell's pre-activations (one block of H per gate); the immediate part is the
direct dependence of one pre-activation on each parameter (x_e, a previous
state value or 1 for a bias), given by the tables ``imm_row`` / ``imm_src``:
parameter p adds ``src[imm_src[p]]`` to Q[imm_row[p], p].

Every parameter column is independent, so the columns are split into one
block per thread: each thread does the product, the update and the gradient
for its columns of every stream, with no synchronisation.  The product
W_rec @ M is a BLAS call (single-threaded inside the threads); it is the
O(G * R * P) cost per stream and step that makes RTRL expensive.

Cells and their coefficient rows ``coef[b, k, :]`` (computed by
``fastrnn.online`` from the step's activations):

* RNN   (Q: a)              M = c0 * Q_a
* GRU   (Q: r, z, hn, nx)   M = c0 Q_r + c1 Q_z + c2 Q_hn + c3 Q_nx + c4 * M
* LSTM  (Q: i, f, g, o)     M_c = c0 Q_i + c1 Q_f + c2 Q_g + c3 * M_c
  state rows [h, c]         M_h = c4 Q_o + c5 * M_c (new)
* JORDAN (Q: a, z)          dh = c0 * Q_a;  Q_z = W_hy @ dh + imm;  M = c1 * Q_z
  (JORDAN_SOFTMAX: c1 = y,  M = y * (Q_z - y . Q_z))
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memset

from fastrnn._kernels._blas cimport gemm
from fastrnn._kernels._runtime cimport blas_get_threads, blas_set_threads

cpdef enum Cell:
    RNN = 0
    GRU = 1
    LSTM = 2
    JORDAN = 3
    JORDAN_SOFTMAX = 4


cdef struct Step:
    int cell
    int B, S, P          # streams, state rows, parameters
    int H                # unit count of the gate blocks (O for Jordan's output)
    int G1, R            # rows of W_rec (stage 1) and of M it reads
    int O                # Jordan output size (0 otherwise)
    int QR               # rows of Q (all stages)
    int NS               # width of src
    int out_rows         # rows of M the loss reads (d_out width)


cdef void add_immediate(const Step *st, int p0, int p1, int row_lo, int row_hi,
                        const int *imm_row, const int *imm_src, const floating *src,
                        floating *Q, int cw) noexcept nogil:
    """Q[imm_row[p], p - p0] += src[imm_src[p]] for the parameters whose row
    lies in [row_lo, row_hi)."""
    cdef int p, row
    for p in range(p0, p1):
        row = imm_row[p]
        if row_lo <= row < row_hi:
            Q[<size_t>row * cw + (p - p0)] += src[imm_src[p]]


cdef void update_columns(const Step *st, floating *M, const floating *Q,
                         const floating *c, int p0, int cw) noexcept nogil:
    """The cell's update of M's columns [p0, p0 + cw) from Q (stage 1 cells)."""
    cdef int H = st.H, P = st.P
    cdef int j, q
    cdef size_t row
    cdef floating *m
    cdef floating *mh
    cdef const floating *qj
    for j in range(H):
        m = M + <size_t>j * P + p0
        qj = Q + <size_t>j * cw
        if st.cell == RNN:
            for q in range(cw):
                m[q] = c[j] * qj[q]
        elif st.cell == GRU:
            for q in range(cw):
                m[q] = (c[j] * qj[q] + c[H + j] * qj[<size_t>H * cw + q]
                        + c[2 * H + j] * qj[<size_t>2 * H * cw + q]
                        + c[3 * H + j] * qj[<size_t>3 * H * cw + q] + c[4 * H + j] * m[q])
        else:   # LSTM: rows [0, H) are h, [H, 2H) are c
            mh = m
            m = M + <size_t>(H + j) * P + p0
            for q in range(cw):
                m[q] = (c[j] * qj[q] + c[H + j] * qj[<size_t>H * cw + q]
                        + c[2 * H + j] * qj[<size_t>2 * H * cw + q] + c[3 * H + j] * m[q])
                mh[q] = c[4 * H + j] * qj[<size_t>3 * H * cw + q] + c[5 * H + j] * m[q]


cdef void jordan_columns(const Step *st, floating *M, floating *Q, const floating *c,
                         const floating *w_hy, const int *imm_row, const int *imm_src,
                         const floating *src, int p0, int p1) noexcept nogil:
    """Jordan's second stage: dh = c0 * Q_a, Q_z = W_hy dh + imm, M = g'(z) Q_z."""
    cdef int H = st.G1, O = st.O, P = st.P, cw = p1 - p0
    cdef int j, q
    cdef floating *qa = Q
    cdef floating *qz = Q + <size_t>H * cw
    cdef floating dot
    cdef floating *m
    for j in range(H):
        for q in range(cw):
            qa[<size_t>j * cw + q] *= c[j]
    gemm(False, False, O, cw, H, <floating>1, w_hy, H, qa, cw, <floating>0, qz, cw)
    add_immediate(st, p0, p1, H, H + O, imm_row, imm_src, src, Q, cw)
    if st.cell == JORDAN:
        for j in range(O):
            m = M + <size_t>j * P + p0
            for q in range(cw):
                m[q] = c[H + j] * qz[<size_t>j * cw + q]
        return
    for q in range(cw):            # softmax: M = y * (Q_z - y . Q_z)
        dot = 0
        for j in range(O):
            dot = dot + c[H + j] * qz[<size_t>j * cw + q]
        for j in range(O):
            M[<size_t>j * P + p0 + q] = c[H + j] * (qz[<size_t>j * cw + q] - dot)


cdef void column_block(const Step *st, int p0, int p1, floating *M,
                       const floating *w_rec, const floating *w_hy,
                       const floating *coef, int coef_len, const int *imm_row,
                       const int *imm_src, const floating *src, const floating *d_out,
                       floating *grad, floating *Q) noexcept nogil:
    """Columns [p0, p1) of every stream: product, update, gradient."""
    cdef int cw = p1 - p0
    cdef int b, j, q
    cdef size_t m_stride = <size_t>st.S * st.P
    cdef floating *Mb
    cdef floating d
    for b in range(st.B):
        Mb = M + b * m_stride
        if st.O == 0 and st.QR > st.G1:   # GRU's nx rows: immediate part only
            memset(Q + <size_t>st.G1 * cw, 0, <size_t>(st.QR - st.G1) * cw * sizeof(floating))
        gemm(False, False, st.G1, cw, st.R, <floating>1, w_rec, st.R, Mb + p0, st.P,
             <floating>0, Q, cw)
        add_immediate(st, p0, p1, 0, st.G1 if st.O > 0 else st.QR, imm_row, imm_src,
                      src + <size_t>b * st.NS, Q, cw)
        if st.O > 0:
            jordan_columns(st, Mb, Q, coef + <size_t>b * coef_len, w_hy, imm_row,
                           imm_src, src + <size_t>b * st.NS, p0, p1)
        else:
            update_columns(st, Mb, Q, coef + <size_t>b * coef_len, p0, cw)
        for j in range(st.out_rows):
            d = d_out[<size_t>b * st.out_rows + j]
            for q in range(cw):
                grad[p0 + q] += d * Mb[<size_t>j * st.P + p0 + q]


def step(int cell, int units,
         floating[:, :, ::1] M,
         const floating[:, ::1] w_rec,
         const floating[:, ::1] w_hy,
         const floating[:, ::1] coef,
         const int[::1] imm_row,
         const int[::1] imm_src,
         const floating[:, ::1] src,
         const floating[:, ::1] d_out,
         floating[::1] grad,
         floating[:, ::1] work,
         int num_threads):
    """One RTRL step for B streams (validated by fastrnn.online; never call directly).

    M (B, S, P): sensitivities, updated in place.  w_rec (G1, R): the
    recurrent matrix (W_hh, or W_yh for Jordan); w_hy (O, H): Jordan's output
    weights (empty otherwise).  coef (B, K * units): the cell's coefficients.
    src (B, NS): values the immediate part reads.  d_out (B, out_rows):
    dL/d(layer output).  grad (P,) += this step's gradient.  work (blocks,
    QR * block width): one workspace row per column block (= thread).
    """
    cdef Step st
    cdef int blocks = work.shape[0]
    cdef int blk, p0, p1, prev_threads
    st.cell = cell
    st.B = M.shape[0]
    st.S = M.shape[1]
    st.P = M.shape[2]
    st.H = units
    st.G1 = w_rec.shape[0]
    st.R = w_rec.shape[1]
    st.O = w_hy.shape[0] if cell == JORDAN or cell == JORDAN_SOFTMAX else 0
    st.QR = st.G1 + st.O if st.O > 0 else (4 * units if cell != RNN else units)
    st.NS = src.shape[1]
    st.out_rows = d_out.shape[1]
    with nogil:
        prev_threads = blas_get_threads()
        blas_set_threads(1)
        for blk in prange(blocks, num_threads=min(num_threads, blocks),
                          schedule="static", chunksize=1):
            p0 = <int>(<long>blk * st.P // blocks)
            p1 = <int>(<long>(blk + 1) * st.P // blocks)
            if p1 > p0:
                column_block(&st, p0, p1, &M[0, 0, 0], &w_rec[0, 0],
                             &w_hy[0, 0] if st.O > 0 else NULL, &coef[0, 0],
                             coef.shape[1], &imm_row[0], &imm_src[0], &src[0, 0],
                             &d_out[0, 0], &grad[0], &work[blk, 0])
        if prev_threads > 1:
            blas_set_threads(prev_threads)
