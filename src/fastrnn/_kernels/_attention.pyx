"""Attention kernels: scores, masked softmax and context, forward and backward.

Layouts (time-major like the recurrent layers):

* query   (T, B, D): decoder steps; T = 1 for one decoding step;
* keys    (S, B, D): what the query is compared with (the encoder outputs for
  "dot", their projection for "general", the projected keys + bias for
  "additive", where the query is projected too);
* values  (S, B, E): the encoder outputs the context averages;
* weights (B, T, S): scores, turned into attention weights in place;
* context (T, B, E).

Row b only sees its first ``lengths[b]`` source steps: scores past them are
never computed and their weights are exactly 0.  Rows are independent, so
the batch is split over the threads (``prange``) and every product is a
single-threaded GEMM on one row's strided slices (leading dimension B * D:
the T and S axes of a time-major array are strided by the whole batch).
Workspaces come from the caller: nothing is allocated here.
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport exp
from libc.string cimport memset

from fastrnn._kernels._blas cimport gemm
from fastrnn._kernels._rows cimport tanh_row
from fastrnn._kernels._runtime cimport blas_get_threads, blas_set_threads, split_threads

cdef extern from "fr_math.h" nogil:
    float fr_expf(float x)

cdef enum:
    SCORE_DOT = 0        # dot and general: a row of scores is one product
    SCORE_ADDITIVE = 1   # v . tanh(query + key) for every (step, source step) pair

DOT = SCORE_DOT
ADDITIVE = SCORE_ADDITIVE


cdef inline floating _exp(floating x) noexcept nogil:
    if floating is float:
        return fr_expf(x)
    else:
        return exp(x)


cdef void _additive_row(int steps, int length, int size, const floating *q,
                        const floating *k, const floating *v, floating *scores,
                        int lds, long q_stride, long k_stride,
                        floating *work) noexcept nogil:
    """scores[t, s] = v . tanh(q_t + k_s) for t < steps, s < length.

    Per step, the (length x size) block tanh(q_t + k_s) is built in ``work``
    (one vectorised pass) and reduced against v by one matrix product."""
    cdef int t
    for t in range(steps):
        _tanh_block(q + t * q_stride, k, k_stride, length, size, work)
        gemm(False, True, 1, length, size, <floating>1, v, size, work, size,
             <floating>0, scores + <long>t * lds, lds)


cdef inline void _tanh_block(const floating *q_t, const floating *k, long k_stride,
                             int length, int size, floating *work) noexcept nogil:
    """work[s, :] = tanh(q_t + k_s) for s < length (row-major, width ``size``)."""
    cdef int s, a
    cdef floating *row
    cdef const floating *k_s
    for s in range(length):
        row = work + <long>s * size
        k_s = k + s * k_stride
        for a in range(size):
            row[a] = q_t[a] + k_s[a]
    tanh_row(work, work, length * size)


cdef void _softmax_rows(floating *w, int steps, int width, int length) noexcept nogil:
    """Softmax over the first ``length`` entries of each row; the rest are 0."""
    cdef int t, s
    cdef floating top, total
    cdef floating *row
    for t in range(steps):
        row = w + <long>t * width
        top = row[0]
        for s in range(1, length):
            if row[s] > top:
                top = row[s]
        total = 0
        for s in range(length):
            row[s] = _exp(row[s] - top)
            total = total + row[s]
        total = 1 / total
        for s in range(length):
            row[s] = row[s] * total
        for s in range(length, width):
            row[s] = 0


def attend(int kind, const floating[:, :, ::1] query, const floating[:, :, ::1] keys,
           const floating[:, :, ::1] values, const floating[::1] v,
           const int[::1] lengths, floating[:, :, ::1] weights,
           floating[:, :, ::1] context, floating[:, ::1] work, int num_threads):
    """Forward: weights (B, T, S) and context (T, B, E) for a whole decoder
    sequence (or one step, T = 1).  ``work`` (B, S * D) is the additive
    score's per-row scratch (unused by DOT); ``v`` (D,) its output vector."""
    cdef int steps = query.shape[0], batch = query.shape[1], size = query.shape[2]
    cdef int width = keys.shape[0], features = values.shape[2]
    cdef int b, length, prev_threads
    cdef floating *w
    with nogil:
        prev_threads = blas_get_threads()
        blas_set_threads(1)       # one BLAS thread per OpenMP thread
        num_threads = split_threads(<double>batch * steps * width * (size + features),
                                    num_threads)
        for b in prange(batch, num_threads=num_threads, schedule="dynamic"):
            length = lengths[b]
            w = &weights[b, 0, 0]
            if kind == SCORE_DOT:
                gemm(False, True, steps, length, size, <floating>1, &query[0, b, 0],
                     batch * size, &keys[0, b, 0], batch * size, <floating>0, w, width)
            else:
                _additive_row(steps, length, size, &query[0, b, 0], &keys[0, b, 0],
                              &v[0], w, width, <long>batch * size, <long>batch * size,
                              &work[b, 0])
            _softmax_rows(w, steps, width, length)
            gemm(False, False, steps, features, length, <floating>1, w, width,
                 &values[0, b, 0], batch * features, <floating>0, &context[0, b, 0],
                 batch * features)
        if prev_threads > 1:
            blas_set_threads(prev_threads)


cdef void _softmax_backward_rows(const floating *w, floating *d, int steps, int width,
                                 int length) noexcept nogil:
    """d (weight gradients in, score gradients out): w * (d - sum(w * d))."""
    cdef int t, s
    cdef floating dot
    for t in range(steps):
        dot = 0
        for s in range(length):
            dot = dot + w[<long>t * width + s] * d[<long>t * width + s]
        for s in range(length):
            d[<long>t * width + s] = w[<long>t * width + s] * (d[<long>t * width + s] - dot)
        for s in range(length, width):
            d[<long>t * width + s] = 0


cdef void _additive_backward_row(int steps, int length, int size, const floating *q,
                                 const floating *k, const floating *v,
                                 const floating *d_scores, int lds, floating *d_q,
                                 floating *d_k, floating *d_v, long q_stride,
                                 long k_stride, floating *work) noexcept nogil:
    """Back through v . tanh(q_t + k_s).  tanh is recomputed per step, not
    stored (that would be T * S * B * size values); ``d_q`` comes in zeroed."""
    cdef int t, s, a
    cdef floating g
    cdef floating *row
    cdef floating *d_q_t
    cdef floating *d_k_s
    for t in range(steps):
        _tanh_block(q + t * q_stride, k, k_stride, length, size, work)
        # d_v += d_scores[t, :length] @ tanh block
        gemm(False, False, 1, size, length, <floating>1, d_scores + <long>t * lds, lds,
             work, size, <floating>1, d_v, size)
        d_q_t = d_q + t * q_stride
        for s in range(length):
            g = d_scores[<long>t * lds + s]
            row = work + <long>s * size
            d_k_s = d_k + s * k_stride
            for a in range(size):
                row[a] = g * v[a] * (1 - row[a] * row[a])      # d(pre-activation)
            for a in range(size):
                d_k_s[a] += row[a]
            for a in range(size):
                d_q_t[a] += row[a]


def attend_backward(int kind, const floating[:, :, ::1] query,
                    const floating[:, :, ::1] keys, const floating[:, :, ::1] values,
                    const floating[::1] v, const int[::1] lengths,
                    const floating[:, :, ::1] weights, const floating[:, :, ::1] d_context,
                    floating[:, :, ::1] d_scores, floating[:, :, ::1] d_query,
                    floating[:, :, ::1] d_keys, floating[:, :, ::1] d_values,
                    floating[:, ::1] d_v_rows, floating[:, ::1] work, int num_threads):
    """Backward of :func:`attend`.  ``d_scores`` (B, T, S) is scratch.

    d_query is written (all of it: zeroed first); d_keys and d_values must
    come in zeroed (past a row's length they stay 0).  ``d_v_rows`` (B, D,
    zeroed) gets each row's share of the additive ``v`` gradient, summed by
    the caller: one row per thread keeps the threads apart.
    """
    cdef int steps = query.shape[0], batch = query.shape[1], size = query.shape[2]
    cdef int width = keys.shape[0], features = values.shape[2]
    cdef int b, length, t, prev_threads
    cdef long q_stride = <long>batch * size
    cdef const floating *w
    cdef floating *d
    with nogil:
        prev_threads = blas_get_threads()
        blas_set_threads(1)
        num_threads = split_threads(<double>batch * steps * width * (size + features),
                                    num_threads)
        for b in prange(batch, num_threads=num_threads, schedule="dynamic"):
            length = lengths[b]
            w = &weights[b, 0, 0]
            d = &d_scores[b, 0, 0]
            # weight gradients d_context . values, and values += weights^T d_context
            gemm(False, True, steps, length, features, <floating>1, &d_context[0, b, 0],
                 batch * features, &values[0, b, 0], batch * features, <floating>0,
                 d, width)
            gemm(True, False, length, features, steps, <floating>1, w, width,
                 &d_context[0, b, 0], batch * features, <floating>1, &d_values[0, b, 0],
                 batch * features)
            _softmax_backward_rows(w, d, steps, width, length)
            for t in range(steps):
                memset(&d_query[t, b, 0], 0, size * sizeof(floating))
            if kind == SCORE_DOT:
                gemm(False, False, steps, size, length, <floating>1, d, width,
                     &keys[0, b, 0], batch * size, <floating>0, &d_query[0, b, 0],
                     batch * size)
                gemm(True, False, length, size, steps, <floating>1, d, width,
                     &query[0, b, 0], batch * size, <floating>1, &d_keys[0, b, 0],
                     batch * size)
            else:
                _additive_backward_row(steps, length, size, &query[0, b, 0],
                                       &keys[0, b, 0], &v[0], d, width, &d_query[0, b, 0],
                                       &d_keys[0, b, 0], &d_v_rows[b, 0], q_stride,
                                       q_stride, &work[b, 0])
        if prev_threads > 1:
            blas_set_threads(prev_threads)
