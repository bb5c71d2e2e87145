"""Recurrent layers: RNN, LSTM and GRU with PyTorch's semantics and layout.

All three share ``_Recurrent``: validation, the batch plan (row order and
OpenMP chunks), the loop over layers and directions, dropout between layers,
and the state dict.  The per-timestep work is one kernel call per layer and
direction (``fastrnn._kernels._recurrent``); a cell differs only in its gate
count, its kernel id and whether it carries a cell state.
"""

import math

import numpy as np

from .. import _threads
from .._kernels import _recurrent as kernels
from .._validation import (check_finite, check_shape, float_array, lengths_array,
                           positive_int, resolve_dtype)
from .module import Module

__all__ = ["RNN", "LSTM", "GRU"]


class _BatchPlan:
    """Row order and thread chunks for one batch.

    Without ``lengths`` rows keep their order and are split into equal
    contiguous chunks.  With lengths, rows are dealt longest-first round-robin
    to the chunks, so every chunk is sorted by length (its running rows are a
    prefix: padded steps cost nothing) and the chunks carry similar work.
    """

    def __init__(self, lengths, batch, steps, num_threads):
        nchunks = max(1, min(num_threads if _threads.openmp_enabled() else 1, batch))
        if lengths is None or (lengths == steps).all():
            self.perm = None
            self.inverse = None
            self.lengths = np.full(batch, steps, dtype=np.intc)
            sizes = [batch // nchunks + (c < batch % nchunks) for c in range(nchunks)]
        else:
            order = np.argsort(-lengths, kind="stable")
            dealt = [order[c::nchunks] for c in range(nchunks)]
            self.perm = np.concatenate(dealt)
            self.inverse = np.argsort(self.perm)
            self.lengths = np.ascontiguousarray(lengths[self.perm], dtype=np.intc)
            sizes = [len(rows) for rows in dealt]
        self.chunks = np.concatenate([[0], np.cumsum(sizes)]).astype(np.intc)

    def to_kernel(self, array, axis=1):
        """Rows of a user array in kernel order (a C-contiguous array)."""
        if self.perm is not None:
            array = np.take(array, self.perm, axis=axis)
        return np.ascontiguousarray(array)

    def to_user(self, array, axis=1):
        if self.perm is None:
            return array
        return np.take(array, self.inverse, axis=axis)


class _Recurrent(Module):
    """Shared implementation; use RNN, LSTM or GRU."""

    _gates = 1             # gate blocks in W_ih / W_hh
    _has_cell_state = False

    def __init__(self, cell, input_size, hidden_size, num_layers=1, bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False,
                 dtype="float32", seed=None):
        super().__init__(resolve_dtype(dtype))
        self.input_size = positive_int("input_size", input_size)
        self.hidden_size = positive_int("hidden_size", hidden_size)
        self.num_layers = positive_int("num_layers", num_layers)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) \
                or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be a float in [0, 1), got {dropout!r}")
        self.dropout = float(dropout)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.bidirectional = bool(bidirectional)
        self.seed = seed
        self._cell = cell
        self._directions = 2 if self.bidirectional else 1
        self._rng = np.random.default_rng(seed)
        self._cache = None
        self._init_parameters()

    # -- parameters -----------------------------------------------------------
    def _names(self, layer, direction):
        suffix = f"l{layer}" + ("_reverse" if direction else "")
        return (f"weight_ih_{suffix}", f"weight_hh_{suffix}",
                f"bias_ih_{suffix}", f"bias_hh_{suffix}")

    def _init_parameters(self):
        """U(-1/sqrt(H), 1/sqrt(H)) like PyTorch, drawn in state-dict order."""
        H, G = self.hidden_size, self._gates
        bound = 1.0 / math.sqrt(H)
        for layer in range(self.num_layers):
            layer_input = self.input_size if layer == 0 else H * self._directions
            for direction in range(self._directions):
                w_ih, w_hh, b_ih, b_hh = self._names(layer, direction)
                shapes = {w_ih: (G * H, layer_input), w_hh: (G * H, H)}
                if self.bias:
                    shapes.update({b_ih: (G * H,), b_hh: (G * H,)})
                for name, shape in shapes.items():
                    self._add_parameter(name, self._rng.uniform(-bound, bound, shape))

    def _weights(self, layer, direction):
        w_ih, w_hh, b_ih, b_hh = self._names(layer, direction)
        p = self._params
        return p[w_ih], p[w_hh], p.get(b_ih), p.get(b_hh)

    def _folded_bias(self, b_ih, b_hh):
        """Initial gate-buffer row: biases summed where the kernel adds them."""
        H = self.hidden_size
        width = H if self._gates == 1 else 4 * H
        if b_ih is None:
            return np.zeros(width, dtype=self.dtype)
        if self._cell == kernels.Cell.GRU:   # [r, z, hn, n]: b_hn stays with hn
            return np.concatenate([b_ih[:2 * H] + b_hh[:2 * H], b_hh[2 * H:], b_ih[2 * H:]])
        return b_ih + b_hh

    # -- validation -----------------------------------------------------------
    def _time_major(self, name, array):
        return np.ascontiguousarray(array.transpose(1, 0, 2)) if self.batch_first else array

    def _check_input(self, x):
        x = float_array("x", x, self.dtype, ndim=3)
        x = self._time_major("x", x)
        steps, batch, features = x.shape
        if features != self.input_size:
            raise ValueError(f"x must have {self.input_size} features (input_size) in "
                             f"its last dimension, got {features}")
        if steps < 1 or batch < 1:
            raise ValueError(f"x must have at least one timestep and one batch row, "
                             f"got shape {x.shape}")
        check_finite("x", x)
        return x

    def _state_shape(self, batch):
        return (self.num_layers * self._directions, batch, self.hidden_size)

    def _check_state(self, name, value, batch):
        if value is None:
            return None
        value = float_array(name, value, self.dtype)
        check_shape(name, value, self._state_shape(batch))
        check_finite(name, value)
        return value

    def _split_states(self, name, value, batch):
        """(h, c) for the LSTM, (h, None) otherwise; each validated or None."""
        if not self._has_cell_state:
            return self._check_state(name, value, batch), None
        if value is None:
            return None, None
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            raise TypeError(f"{name} must be a tuple (h, c) for an LSTM, "
                            f"got {type(value).__name__}")
        return (self._check_state(f"{name}[0]", value[0], batch),
                self._check_state(f"{name}[1]", value[1], batch))

    # -- forward --------------------------------------------------------------
    def forward(self, x, hx=None, lengths=None):
        """Run the whole sequence.

        x: (T, B, input_size), or (B, T, input_size) with ``batch_first``.
        hx: initial state (num_layers * D, B, H), zeros when None; a tuple
            (h0, c0) for the LSTM.
        lengths: one int per row in 1..T; rows end early (PyTorch packed
            sequence semantics: zero outputs past the end, final state at the
            last valid step, the reverse direction starts there).
        Returns ``out`` (T, B, D * H) (batch-first if so built) and the final
        state ``h_n`` (num_layers * D, B, H), or ``(h_n, c_n)`` for the LSTM.
        """
        x = self._check_input(x)
        steps, batch, _ = x.shape
        h0, c0 = self._split_states("hx", hx, batch)
        if lengths is not None:
            lengths = lengths_array(lengths, batch, steps)
        num_threads = _threads.get_num_threads()
        plan = _BatchPlan(lengths, batch, steps, num_threads)
        h = plan.to_kernel(h0) if h0 is not None else None
        c = plan.to_kernel(c0) if c0 is not None else None
        layer_input = plan.to_kernel(x)
        keep = self.training
        cache = []
        H, D = self.hidden_size, self._directions
        h_n = np.empty(self._state_shape(batch), dtype=self.dtype)
        c_n = np.empty_like(h_n) if self._has_cell_state else None
        width = H if self._gates == 1 else 4 * H
        gates = None
        with _threads.blas_region():
            for layer in range(self.num_layers):
                out = np.zeros((steps, batch, D * H), dtype=self.dtype)
                saved = []
                for direction in range(D):
                    k = layer * D + direction
                    if keep or gates is None:
                        gates = np.empty((steps, batch, width), dtype=self.dtype)
                    h_k = h[k].copy() if h is not None else np.zeros((batch, H), self.dtype)
                    c_k = self._initial_cell(c, k, batch)
                    c_hist = (np.empty((steps, batch, H), self.dtype)
                              if keep and self._has_cell_state else self._empty(3))
                    h_start, c_start = (h_k.copy(), c_k.copy()) if keep else (None, None)
                    w_ih, w_hh, b_ih, b_hh = self._weights(layer, direction)
                    kernels.forward(self._cell, direction == 1, layer_input, w_ih, w_hh,
                                    self._folded_bias(b_ih, b_hh), plan.lengths,
                                    plan.chunks, h_k, c_k, out, direction * H, gates,
                                    c_hist, num_threads)
                    h_n[k] = h_k
                    if self._has_cell_state:
                        c_n[k] = c_k
                    saved.append((gates, c_hist, h_start, c_start))
                mask = self._dropout_mask(out.shape) if layer < self.num_layers - 1 else None
                if keep:
                    cache.append((layer_input, out, saved, mask))
                layer_input = out * mask if mask is not None else out
        self._cache = (plan, cache, h0 is not None) if keep else None
        out = plan.to_user(layer_input)
        if self.batch_first:
            out = out.transpose(1, 0, 2)
        h_n = plan.to_user(h_n)
        if self._has_cell_state:
            return out, (h_n, plan.to_user(c_n))
        return out, h_n

    def _initial_cell(self, c, k, batch):
        if not self._has_cell_state:
            return self._empty(2)
        if c is None:
            return np.zeros((batch, self.hidden_size), self.dtype)
        return c[k].copy()

    def _empty(self, ndim):
        return np.empty((0,) * ndim, dtype=self.dtype)

    def _dropout_mask(self, shape):
        if not (self.training and self.dropout > 0):
            return None
        keep = 1.0 - self.dropout
        return (self._rng.random(shape) < keep).astype(self.dtype) / self.dtype.type(keep)

    # -- backward -------------------------------------------------------------
    def backward(self, d_out, d_hn=None, input_grad=True):
        """Gradients of the last ``forward`` (training mode), once per forward.

        d_out: dL/d(out), shaped like ``out``; gradients at padded positions
            have no effect.
        d_hn: dL/d(h_n), or None; for the LSTM a tuple (d_hn, d_cn) whose parts
            may be None.
        input_grad: False skips computing dL/dx (returned as None) when the
            input needs no gradient, e.g. a first layer fed by data.
        Returns ``(d_x, d_hx)`` (``d_hx`` = (d_h0, d_c0) for the LSTM).
        Parameter gradients are added to ``self.grads``.
        """
        if self._cache is None:
            raise RuntimeError(
                "backward needs a forward pass in training mode first (none since the "
                "last backward, or the layer is in eval mode: call train())")
        plan, cache, had_h0 = self._cache
        first_input, last_out = cache[0][0], cache[-1][1]
        steps, batch = last_out.shape[:2]
        d_out = float_array("d_out", d_out, self.dtype, ndim=3)
        d_out = self._time_major("d_out", d_out)
        check_shape("d_out" + (" (batch-first)" if self.batch_first else ""), d_out,
                    last_out.shape)
        check_finite("d_out", d_out)
        d_h, d_c = self._split_states("d_hn", d_hn, batch)
        d_layer = plan.to_kernel(d_out)
        d_h = plan.to_kernel(d_h) if d_h is not None else None
        d_c = plan.to_kernel(d_c) if d_c is not None else None
        self._cache = None
        num_threads = _threads.get_num_threads()
        H, D = self.hidden_size, self._directions
        d_h0 = np.zeros(self._state_shape(batch), dtype=self.dtype)
        d_c0 = np.zeros_like(d_h0) if self._has_cell_state else None
        with _threads.blas_region():
            for layer in reversed(range(self.num_layers)):
                layer_input, out, saved, mask = cache[layer]
                need_d_input = layer > 0 or input_grad
                d_input = np.zeros_like(layer_input) if need_d_input else self._empty(3)
                for direction in range(D):
                    k = layer * D + direction
                    gates, c_hist, h_start, c_start = saved[direction]
                    dh = d_h[k].copy() if d_h is not None else np.zeros((batch, H), self.dtype)
                    dc = self._initial_cell(d_c, k, batch)
                    names = self._names(layer, direction)
                    w_ih, w_hh, _, _ = self._weights(layer, direction)
                    db_ih, db_hh = ((self.grads[names[2]], self.grads[names[3]])
                                    if self.bias else (self._empty(1), self._empty(1)))
                    kernels.backward(self._cell, direction == 1, layer_input, w_ih, w_hh,
                                     plan.lengths, plan.chunks, h_start,
                                     c_start if c_start is not None else self._empty(2),
                                     had_h0, out, direction * H, gates, c_hist, d_layer,
                                     dh, dc, d_input, self.grads[names[0]],
                                     self.grads[names[1]], db_ih, db_hh,
                                     np.empty((batch, w_hh.shape[0]), self.dtype),
                                     num_threads)
                    d_h0[k] = dh
                    if self._has_cell_state:
                        d_c0[k] = dc
                if layer > 0:
                    below_mask = cache[layer - 1][3]
                    d_layer = d_input * below_mask if below_mask is not None else d_input
        d_x = None
        if input_grad:
            d_x = plan.to_user(d_input)
            if self.batch_first:
                d_x = d_x.transpose(1, 0, 2)
        d_h0 = plan.to_user(d_h0)
        if self._has_cell_state:
            return d_x, (d_h0, plan.to_user(d_c0))
        return d_x, d_h0

    def __repr__(self):
        extra = f", nonlinearity={self.nonlinearity!r}" if isinstance(self, RNN) else ""
        return (f"{type(self).__name__}({self.input_size}, {self.hidden_size}, "
                f"num_layers={self.num_layers}{extra}, bias={self.bias}, "
                f"batch_first={self.batch_first}, dropout={self.dropout}, "
                f"bidirectional={self.bidirectional}, dtype={self.dtype.name!r})")


class RNN(_Recurrent):
    """Elman RNN: h_t = g(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), g = tanh or ReLU.

    Same arguments, parameter names and shapes as ``torch.nn.RNN``; see
    ``_Recurrent.forward`` / ``backward`` for the call contract.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh",
                 bias=True, batch_first=False, dropout=0.0, bidirectional=False,
                 dtype="float32", seed=None):
        cells = {"tanh": kernels.Cell.RNN_TANH, "relu": kernels.Cell.RNN_RELU}
        if nonlinearity not in cells:
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(cells[nonlinearity], input_size, hidden_size, num_layers, bias,
                         batch_first, dropout, bidirectional, dtype, seed)


class LSTM(_Recurrent):
    """LSTM with PyTorch's gates (i, f, g, o), names and shapes (``torch.nn.LSTM``).

    ``hx`` is a tuple (h0, c0); ``forward`` returns ``out, (h_n, c_n)``;
    ``backward(d_out, (d_hn, d_cn))`` returns ``d_x, (d_h0, d_c0)``.
    """

    _gates = 4
    _has_cell_state = True

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False,
                 dtype="float32", seed=None):
        super().__init__(kernels.Cell.LSTM, input_size, hidden_size, num_layers, bias,
                         batch_first, dropout, bidirectional, dtype, seed)


class GRU(_Recurrent):
    """GRU with PyTorch's gates (r, z, n), n = tanh(W_in x + b_in + r * (W_hn h + b_hn)).

    Same arguments, names and shapes as ``torch.nn.GRU``.
    """

    _gates = 3

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False,
                 dtype="float32", seed=None):
        super().__init__(kernels.Cell.GRU, input_size, hidden_size, num_layers, bias,
                         batch_first, dropout, bidirectional, dtype, seed)
