"""Recurrent layers: RNN, LSTM and GRU with PyTorch's semantics and layout.

All three share ``_Recurrent``: validation, the batch plan (row order and
OpenMP chunks), the loop over layers and directions, dropout between layers,
and the state dict.  The per-timestep work is one kernel call per layer and
direction: each owns a ``DirectionKernel`` (``fastrnn._kernels._recurrent``,
at the instruction-set level chosen at import), which holds the cell's
layout (gate widths, cell state), packed weights and training buffers.
"""

import math

import numpy as np

from .. import _threads
from .._kernels import _runtime
from .._kernels._dispatch import _recurrent as kernels
from .._validation import (check_finite, check_shape, float_array, lengths_array,
                           positive_int, private_input, produced, read_only, resolve_dtype)
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

    def to_kernel(self, array, axis=1, copy=False):
        """Rows of a user array in kernel order (C-contiguous; a new array when
        ``copy``, as for states the kernels overwrite)."""
        if self.perm is not None:
            return np.take(array, self.perm, axis=axis)   # always a new array
        return np.array(array, order="C", copy=True) if copy else np.ascontiguousarray(array)

    def to_user(self, array, axis=1):
        if self.perm is None:
            return array
        return np.take(array, self.inverse, axis=axis)


class _Recurrent(Module):
    """Shared implementation; use RNN, LSTM or GRU."""

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
        self._directions = 2 if self.bidirectional else 1
        self._rng = np.random.default_rng(seed)
        self._cache = None
        # One compiled kernel per (layer, direction), in state-dict order.
        self._kernels = [
            kernels.DirectionKernel(cell, direction == 1,
                                    self._layer_input_size(layer), self.hidden_size,
                                    self._directions, self.dtype)
            for layer in range(self.num_layers) for direction in range(self._directions)]
        self._init_parameters()
        self._slots = [self._layer_parameters(layer, direction)
                       for layer in range(self.num_layers)
                       for direction in range(self._directions)]
        self._plans = {}

    @property
    def _has_cell_state(self):
        return self._kernels[0].has_cell_state

    # -- parameters -----------------------------------------------------------
    def _names(self, layer, direction):
        suffix = f"l{layer}" + ("_reverse" if direction else "")
        return (f"weight_ih_{suffix}", f"weight_hh_{suffix}",
                f"bias_ih_{suffix}", f"bias_hh_{suffix}")

    def _layer_input_size(self, layer):
        return self.input_size if layer == 0 else self.hidden_size * self._directions

    def _init_parameters(self):
        """U(-1/sqrt(H), 1/sqrt(H)) like PyTorch, drawn in state-dict order;
        shapes from the kernels' layout."""
        H = self.hidden_size
        bound = 1.0 / math.sqrt(H)
        for layer in range(self.num_layers):
            for direction in range(self._directions):
                kernel = self._kernels[layer * self._directions + direction]
                rows = kernel.gate_rows
                w_ih, w_hh, b_ih, b_hh = self._names(layer, direction)
                shapes = {w_ih: (rows, kernel.input_size), w_hh: (rows, H)}
                if self.bias:
                    shapes.update({b_ih: (rows,), b_hh: (rows,)})
                for name, shape in shapes.items():
                    self._add_parameter(name, self._rng.uniform(-bound, bound, shape))

    def _layer_parameters(self, layer, direction):
        """Live (w_ih, w_hh, b_ih, b_hh) and their gradient arrays; None for
        the biases when the layer has none."""
        names = self._names(layer, direction)
        params = tuple(self._params.get(name) for name in names)
        grads = tuple(self.grads.get(name) for name in names)
        return params, grads

    # -- validation -----------------------------------------------------------
    def _time_major(self, array):
        return np.ascontiguousarray(array.transpose(1, 0, 2)) if self.batch_first else array

    def _check_input(self, x):
        x = float_array("x", x, self.dtype, ndim=3)
        x = self._time_major(x)
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
        x_given = x
        x = self._check_input(x)
        steps, batch, _ = x.shape
        h0, c0 = self._split_states("hx", hx, batch)
        if lengths is not None:
            lengths = lengths_array(lengths, batch, steps)
        num_threads = _threads.get_num_threads()
        plan = self._plan(lengths, batch, steps, num_threads)
        # The kernels turn initial states into final states in place.
        h_n = plan.to_kernel(h0, copy=True) if h0 is not None else self._zero_state(batch)
        c_n = None
        if self._has_cell_state:
            c_n = plan.to_kernel(c0, copy=True) if c0 is not None else self._zero_state(batch)
        keep = self.training
        # Backward reads the input again (see private_input).
        layer_input = plan.to_kernel(x)
        if keep:
            layer_input = private_input(layer_input, x_given)
        cache = []
        H, D = self.hidden_size, self._directions
        new_buffer = np.zeros if plan.perm is not None else np.empty  # padding stays 0
        with _threads.blas_region():
            for layer in range(self.num_layers):
                out = new_buffer((steps, batch, D * H), dtype=self.dtype)
                saved = []
                for direction in range(D):
                    k = layer * D + direction
                    kernel = self._kernels[k]
                    c_k = c_n[k] if self._has_cell_state else None
                    tape = kernel.take_tape(steps, batch, h_n[k], c_k) if keep else None
                    saved.append(tape)
                    (w_ih, w_hh, b_ih, b_hh), _ = self._slots[k]
                    kernel.forward(layer_input, w_ih, w_hh, b_ih, b_hh, plan.lengths,
                                   plan.chunks, h_n[k], c_k, out, tape, num_threads)
                mask = self._dropout_mask(out.shape) if layer < self.num_layers - 1 else None
                if keep:
                    cache.append((layer_input, out, saved, mask))
                layer_input = out * mask if mask is not None else out
        self._release_cache()
        self._cache = (plan, cache, h0 is not None) if keep else None
        out = plan.to_user(layer_input)
        if keep and out is layer_input:
            out = read_only(out)     # backward reads it
        if self.batch_first:
            out = out.transpose(1, 0, 2)
        h_n = plan.to_user(h_n)
        if self._has_cell_state:
            return out, (h_n, plan.to_user(c_n))
        return out, h_n

    def stream(self, batch_size=1, hx=None):
        """A :class:`~fastrnn.layers.stream.Stream` that runs this layer one
        timestep at a time: ``y = stream.step(x_t)`` with x_t (B, input_size)
        and y (B, hidden_size), the state carried (``stream.state``,
        ``stream.reset(hx)``).  Stepping through x gives ``layer(x)`` exactly.
        Bidirectional layers cannot stream (ValueError)."""
        from .stream import Stream
        return Stream(self, batch_size, hx)

    def _plan(self, lengths, batch, steps, num_threads):
        """The batch plan; plans without lengths are reused (they are immutable)."""
        if steps * batch * self.hidden_size * self._kernels[0].width < _runtime.get_parallel_min_work():
            num_threads = 1      # too little work to pay for a parallel region
        if lengths is not None:
            return _BatchPlan(lengths, batch, steps, num_threads)
        key = (batch, steps, num_threads)
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) > 16:
                self._plans.clear()
            plan = self._plans[key] = _BatchPlan(None, batch, steps, num_threads)
        return plan

    def _release_cache(self):
        """Drop the activations of the last forward; recycle its buffers."""
        cache, self._cache = self._cache, None
        if cache is not None:
            self._recycle(cache)

    def _recycle(self, cache):
        """Tapes go back to their kernels for the next step (fresh
        multi-megabyte buffers cost page faults: 7% of an LSTM training step
        measured at (100, 64, 256)).  A tape is out of its kernel while a
        forward/backward pair uses it, so two Python threads never share one."""
        for layer, (_, _, saved, _) in enumerate(cache[1]):
            for direction, tape in enumerate(saved):
                self._kernels[layer * self._directions + direction].recycle(tape)

    def train(self, mode=True):
        if not mode:
            self._release_cache()
            for kernel in self._kernels:
                kernel.release_spares()
        return super().train(mode)

    def _zero_state(self, batch):
        return np.zeros(self._state_shape(batch), dtype=self.dtype)

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
        taken = self._cache
        plan, cache, had_h0 = taken
        last_out = cache[-1][1]
        batch = last_out.shape[1]
        d_out = self._time_major(float_array("d_out", d_out, self.dtype, ndim=3))
        check_shape("d_out" + (" (time-major after batch_first)" if self.batch_first else ""),
                    d_out, last_out.shape)
        check_finite("d_out", d_out)
        d_h, d_c = self._split_states("d_hn", d_hn, batch)
        self._cache = None
        # The kernels turn dL/d(final state) into dL/d(initial state) in place.
        d_h0 = plan.to_kernel(d_h, copy=True) if d_h is not None else self._zero_state(batch)
        d_c0 = None
        if self._has_cell_state:
            d_c0 = plan.to_kernel(d_c, copy=True) if d_c is not None else self._zero_state(batch)
        d_layer = plan.to_kernel(d_out)
        num_threads = _threads.get_num_threads()
        D = self._directions
        with _threads.blas_region():
            for layer in reversed(range(self.num_layers)):
                layer_input, out, saved, _ = cache[layer]
                need_d_input = layer > 0 or input_grad
                # the first direction writes it, the second adds
                d_input = np.empty_like(layer_input) if need_d_input else None
                for direction in range(D):
                    k = layer * D + direction
                    (w_ih, w_hh, _, _), (dw_ih, dw_hh, db_ih, db_hh) = self._slots[k]
                    self._kernels[k].backward(
                        saved[direction], layer_input, w_ih, w_hh, plan.lengths,
                        plan.chunks, had_h0, out, d_layer, d_h0[k],
                        d_c0[k] if self._has_cell_state else None, d_input,
                        direction == 1, dw_ih, dw_hh, db_ih, db_hh, num_threads)
                if layer > 0:
                    below_mask = cache[layer - 1][3]
                    d_layer = d_input * below_mask if below_mask is not None else d_input
        self._recycle(taken)
        d_x = None
        if input_grad:
            d_x = plan.to_user(d_input)
            if self.batch_first:
                d_x = d_x.transpose(1, 0, 2)
            produced(d_x)
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

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False,
                 dtype="float32", seed=None):
        super().__init__(kernels.Cell.LSTM, input_size, hidden_size, num_layers, bias,
                         batch_first, dropout, bidirectional, dtype, seed)


class GRU(_Recurrent):
    """GRU with PyTorch's gates (r, z, n), n = tanh(W_in x + b_in + r * (W_hn h + b_hn)).

    Same arguments, names and shapes as ``torch.nn.GRU``.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False,
                 dtype="float32", seed=None):
        super().__init__(kernels.Cell.GRU, input_size, hidden_size, num_layers, bias,
                         batch_first, dropout, bidirectional, dtype, seed)
