"""Online learning: gradients one step at a time, while the sequence streams in.

Two learners with one interface::

    learner = fr.online.RTRL(layer, head, loss)          # or TBPTT(..., window=k)
    for x_t, y_t in stream:                              # x_t (B, input_size)
        loss = learner.step(x_t, y_t)                    # adds to layer/head grads
        optimizer.step(); optimizer.zero_grad()          # fully online

``step`` runs the layer one step, applies ``head`` (an ``fr.Linear``, or
None for the layer output itself) and ``loss`` (``fr.MSELoss``,
``fr.CrossEntropyLoss``, ...) to that step's prediction and adds the step's
gradient to ``layer.grads`` and ``head.grads``; the optimizer is the caller's
(every step = fully online, every k steps = batched).  B >= 1 streams run in
parallel; ``reset(rows)`` starts those streams again from a zero state.

* ``RTRL`` (real-time recurrent learning) carries the exact sensitivity
  d state / d parameters forward: the gradient it adds is the exact gradient
  of this step's loss through the whole past (with fixed weights, the sum over
  a sequence equals full BPTT).  Cost per step and stream: memory S x P and
  time O(G x R x P) for S state values, P recurrent parameters, G gate rows,
  R recurrent inputs -- O(H^4) for a layer of H units (an LSTM with H = 64
  and 8 inputs: 128 x 18944 sensitivities, ~0.6 GFLOP a step).  One layer of ``fr.RNN``,
  ``fr.GRU``, ``fr.LSTM`` or ``fr.Jordan``.
* ``TBPTT`` (online truncated BPTT) keeps the last ``window`` inputs and, every
  step, backpropagates this step's loss through them (the state before the
  window is held fixed).  Cost O(window) layer steps per step; any of those
  layers (stacked too, not bidirectional).
"""


import numpy as np

from . import _threads
from ._kernels import _runtime
from ._kernels._dispatch import _rtrl
from ._validation import Real, float_array, check_finite, positive_int
from .layers.jordan import Jordan
from .layers.linear import Linear
from .layers.recurrent import GRU, LSTM, RNN

__all__ = ["RTRL", "TBPTT"]

DEFAULT_MAX_MEMORY = 1 << 30      # bytes of sensitivities and workspace RTRL may use


def _sigmoid(v):
    """Logistic function without exp overflow (warnings) at large |v|."""
    return 0.5 * (1.0 + np.tanh(0.5 * v))


# -- cells as RTRL sees them ------------------------------------------------------

class _Cell:
    """One recurrent layer's step in numpy, plus what the RTRL kernel needs:
    the state layout, the coefficients of the sensitivity update and the
    tables of the immediate part (parameter -> Q row, source index)."""

    def __init__(self, layer):
        self.layer = layer
        self.params = dict(layer.named_parameters())
        self.E = layer.input_size

    def tables(self):
        """(imm_row, imm_src) int32 arrays over the flattened parameters."""
        rows, srcs = [], []
        for name, value in self.params.items():
            row, src = self.parameter_table(name, value.shape)
            rows.append(np.broadcast_to(row, value.shape).ravel())
            srcs.append(np.broadcast_to(src, value.shape).ravel())
        return (np.ascontiguousarray(np.concatenate(rows), dtype=np.intc),
                np.ascontiguousarray(np.concatenate(srcs), dtype=np.intc))


class _Gated(_Cell):
    """RNN / GRU / LSTM: parameters weight_ih, weight_hh, bias_ih, bias_hh."""

    def __init__(self, layer, kind):
        super().__init__(layer)
        self.kind = kind
        self.H = layer.hidden_size
        self.units = self.H
        self.state_rows = 2 * self.H if kind == _rtrl.Cell.LSTM else self.H
        self.out_rows = self.H
        self.q_rows = self.H if kind == _rtrl.Cell.RNN else 4 * self.H

    def gate_row(self, i):
        """Q row of W_ih / b_ih row i (the GRU keeps n's input part apart)."""
        if self.kind == _rtrl.Cell.GRU:
            return np.where(i < 2 * self.H, i, i + self.H)
        return i

    def parameter_table(self, name, shape):
        E, H = self.E, self.H
        rows = np.arange(shape[0])[:, None] if len(shape) == 2 else np.arange(shape[0])
        if name.startswith("weight_ih"):
            return self.gate_row(rows), np.arange(E)[None, :]
        if name.startswith("weight_hh"):
            return rows, E + np.arange(H)[None, :]
        if name.startswith("bias_ih"):
            return self.gate_row(rows), E + H
        return rows, E + H          # bias_hh

    def recurrent_weights(self):
        return self.params["weight_hh_l0"], None

    def pre(self, x, h):
        p = self.params
        gi = x @ p["weight_ih_l0"].T + p.get("bias_ih_l0", 0)
        gh = h @ p["weight_hh_l0"].T + p.get("bias_hh_l0", 0)
        return gi, gh

    def step(self, x, state):
        """(output, new state, coef (B, K * H), src (B, NS)) for one step."""
        H = self.H
        h = state[:, :H]
        gi, gh = self.pre(x, h)
        src = np.concatenate([x, h, np.ones((x.shape[0], 1), x.dtype)], axis=1)
        if self.kind == _rtrl.Cell.RNN:
            a = gi + gh
            if self.layer.nonlinearity == "tanh":
                h_new = np.tanh(a)
                coef = 1 - h_new * h_new
            else:
                h_new = np.maximum(a, 0)
                coef = (a > 0).astype(x.dtype)
            return h_new, h_new, coef, src
        if self.kind == _rtrl.Cell.GRU:
            r = _sigmoid(gi[:, :H] + gh[:, :H])
            z = _sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
            hn = gh[:, 2 * H:]
            n = np.tanh(gi[:, 2 * H:] + r * hn)
            h_new = (1 - z) * n + z * h
            c_nx = (1 - z) * (1 - n * n)
            coef = np.concatenate([c_nx * hn * r * (1 - r), (h - n) * z * (1 - z),
                                   c_nx * r, c_nx, z], axis=1)
            return h_new, h_new, coef, src
        c = state[:, H:]
        g = gi + gh
        i, f = _sigmoid(g[:, :H]), _sigmoid(g[:, H:2 * H])
        gg, o = np.tanh(g[:, 2 * H:3 * H]), _sigmoid(g[:, 3 * H:])
        c_new = f * c + i * gg
        tc = np.tanh(c_new)
        h_new = o * tc
        coef = np.concatenate([i * (1 - i) * gg, f * (1 - f) * c, i * (1 - gg * gg), f,
                               o * (1 - o) * tc, o * (1 - tc * tc)], axis=1)
        return h_new, np.concatenate([h_new, c_new], axis=1), coef, src


class _JordanCell(_Cell):
    """Jordan: state y (O); Q rows [a (H), z (O)]; src = [x, y_prev, 1, h]."""

    def __init__(self, layer):
        super().__init__(layer)
        self.H, self.O = layer.hidden_size, layer.output_size
        self.kind = (_rtrl.Cell.JORDAN_SOFTMAX if layer.output_activation == "softmax"
                     else _rtrl.Cell.JORDAN)
        self.units = self.H
        self.state_rows = self.out_rows = self.O
        self.q_rows = self.H + self.O

    def parameter_table(self, name, shape):
        E, H, O = self.E, self.H, self.O
        rows = np.arange(shape[0])[:, None] if len(shape) == 2 else np.arange(shape[0])
        return {"weight_ih": (rows, np.arange(E)[None, :]),
                "weight_yh": (rows, E + np.arange(O)[None, :]),
                "bias_ih": (rows, E + O),
                "weight_hy": (H + rows, E + O + 1 + np.arange(H)[None, :]),
                "bias_hy": (H + rows, E + O)}[name[:-3]]

    def recurrent_weights(self):
        return self.params["weight_yh_l0"], self.params["weight_hy_l0"]

    def step(self, x, state):
        p = self.params
        a = x @ p["weight_ih_l0"].T + state @ p["weight_yh_l0"].T + p.get("bias_ih_l0", 0)
        if self.layer.nonlinearity == "tanh":
            h = np.tanh(a)
            d_h = 1 - h * h
        else:
            h = np.maximum(a, 0)
            d_h = (a > 0).astype(x.dtype)
        z = h @ p["weight_hy_l0"].T + p.get("bias_hy_l0", 0)
        kind = self.layer.output_activation
        if kind == "identity":
            y, d_y = z, np.ones_like(z)
        elif kind == "tanh":
            y = np.tanh(z)
            d_y = 1 - y * y
        elif kind == "sigmoid":
            y = _sigmoid(z)
            d_y = y * (1 - y)
        else:
            e = np.exp(z - z.max(axis=1, keepdims=True))
            y = d_y = e / e.sum(axis=1, keepdims=True)   # the kernel reads y
        src = np.concatenate([x, state, np.ones((x.shape[0], 1), x.dtype), h], axis=1)
        return y, y, np.concatenate([d_h, d_y], axis=1), src


def _rtrl_cell(layer):
    if isinstance(layer, (RNN, GRU, LSTM)):
        if layer.num_layers != 1 or layer.bidirectional:
            raise ValueError(f"layer must have num_layers=1 and bidirectional=False for "
                             f"RTRL, got num_layers={layer.num_layers}, "
                             f"bidirectional={layer.bidirectional}")
        kind = {RNN: _rtrl.Cell.RNN, GRU: _rtrl.Cell.GRU, LSTM: _rtrl.Cell.LSTM}[type(layer)]
        return _Gated(layer, kind)
    if isinstance(layer, Jordan):
        if layer.num_layers != 1:
            raise ValueError(f"layer must have num_layers=1 for RTRL, got "
                             f"num_layers={layer.num_layers}")
        return _JordanCell(layer)
    raise TypeError(f"layer must be an fr.RNN, fr.GRU, fr.LSTM or fr.Jordan, got "
                    f"{type(layer).__name__}")


# -- shared parts of the learners ----------------------------------------------------

class _Learner:
    """Validation of the step inputs, the head and the loss."""

    def __init__(self, layer, head, loss):
        if head is not None and not isinstance(head, Linear):
            raise TypeError(f"head must be an fr.Linear or None, got {type(head).__name__}")
        if loss is None or not callable(loss):
            raise TypeError(f"loss must be a loss such as fr.MSELoss(), got {loss!r}")
        width = layer.output_size if isinstance(layer, Jordan) else layer.hidden_size
        if head is not None and head.in_features != width:
            raise ValueError(f"head must take the layer's {width} outputs "
                             f"(in_features), got in_features={head.in_features}")
        if head is not None and head.dtype != layer.dtype:
            raise TypeError(f"head must have the layer's dtype {layer.dtype.name}, "
                            f"got {head.dtype.name}")
        self.layer, self.head, self.loss = layer, head, loss
        self.dtype = layer.dtype
        self.batch = None
        self.steps = 0

    def _check_x(self, x_t):
        x = float_array("x_t", x_t, self.dtype)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.layer.input_size:
            raise ValueError(f"x_t must have shape (B, {self.layer.input_size}) "
                             f"(streams, input_size), got {np.shape(x_t)}")
        check_finite("x_t", x)
        if self.batch is None:
            self._start(x.shape[0])
        elif x.shape[0] != self.batch:
            raise ValueError(f"x_t must have {self.batch} rows (the streams of the first "
                             f"step), got {x.shape[0]}")
        return x

    def _head_and_loss(self, output, y_t):
        """(loss, dL/d(output)); adds the head's gradients."""
        pred = self.head.forward(output) if self.head is not None else output
        loss, d_pred = self.loss(pred, y_t)
        d_output = self.head.backward(d_pred) if self.head is not None else d_pred
        return float(loss), np.ascontiguousarray(d_output, dtype=self.dtype)

    def _rows(self, rows):
        """Row indices for reset (all rows when None)."""
        if self.batch is None:
            return None
        if rows is None:
            return np.arange(self.batch)
        index = np.asarray(rows)
        if index.dtype == bool:
            if index.shape != (self.batch,):
                raise ValueError(f"rows as a mask must have shape ({self.batch},), "
                                 f"got {index.shape}")
            return np.flatnonzero(index)
        index = np.atleast_1d(index)
        if index.dtype.kind not in "iu" or (index.size and
                                            (index.min() < -self.batch
                                             or index.max() >= self.batch)):
            raise ValueError(f"rows must be stream indices in 0..{self.batch - 1} or a "
                             f"bool mask, got {rows!r}")
        return index


# -- RTRL ----------------------------------------------------------------------------

class RTRL(_Learner):
    """Real-time recurrent learning for one layer (see the module docstring).

    Args:
        layer: a one-layer ``fr.RNN`` (tanh/relu), ``fr.GRU``, ``fr.LSTM`` or
            ``fr.Jordan``, float32 or float64.
        head: ``fr.Linear`` on the layer output (h, or y for Jordan), or None.
        loss: a criterion called as ``loss(prediction, y_t) -> (value, grad)``.
        max_memory: bytes the sensitivities and workspace may take (default
            1 GiB); a larger need raises ValueError before anything is
            allocated.

    ``step(x_t, y_t)`` with x_t (B, input_size) returns the step's loss.
    ``state`` is the current state per stream ((B, H); (B, 2H) = [h, c] for
    the LSTM; (B, output_size) for Jordan).
    """

    def __init__(self, layer, head, loss, max_memory=DEFAULT_MAX_MEMORY):
        self.cell = _rtrl_cell(layer)
        super().__init__(layer, head, loss)
        Real(low=0, low_open=True, finite=False)("max_memory (bytes)", max_memory)
        self.max_memory = max_memory
        self.num_parameters = sum(v.size for v in self.cell.params.values())
        self.imm_row, self.imm_src = self.cell.tables()
        self.state = None

    @staticmethod
    def memory_bytes(layer, batch=1):
        """Bytes RTRL needs for ``layer`` and ``batch`` streams."""
        batch = positive_int("batch", batch)
        cell = _rtrl_cell(layer)
        P = sum(v.size for v in cell.params.values())
        per = np.dtype(layer.dtype).itemsize
        threads = max(1, _threads.get_num_threads())
        return per * (batch * cell.state_rows * P + cell.q_rows * (P + threads))

    def _start(self, batch):
        need = self.memory_bytes(self.layer, batch)
        if need > self.max_memory:
            raise ValueError(
                f"RTRL needs {need / 2**20:.1f} MiB for this layer and {batch} streams "
                f"(sensitivities: {self.cell.state_rows} state values x "
                f"{self.num_parameters} parameters per stream), more than max_memory="
                f"{self.max_memory / 2**20:.1f} MiB; use a smaller hidden_size, fewer "
                f"streams, fr.online.TBPTT, or raise max_memory")
        self.batch = batch
        P = self.num_parameters
        self.M = np.zeros((batch, self.cell.state_rows, P), dtype=self.dtype)
        self.state = np.zeros((batch, self.cell.state_rows), dtype=self.dtype)
        self.grad = np.zeros(P, dtype=self.dtype)
        # One column block per thread, unless a step is too small to pay for
        # waking them (flops of the product, roughly).
        blocks = _runtime.threads_for(2 * batch * self.cell.q_rows * self.cell.units * P,
                                      max(1, min(_threads.get_num_threads(), P // 64)))
        width = -(-P // blocks)
        self.work = np.empty((blocks, self.cell.q_rows * width), dtype=self.dtype)

    def step(self, x_t, y_t):
        """One step forward, the sensitivity update and this step's gradient."""
        x = self._check_x(x_t)
        output, new_state, coef, src = self.cell.step(x, self.state)
        loss, d_output = self._head_and_loss(output, y_t)
        w_rec, w_hy = self.cell.recurrent_weights()
        if w_hy is None:
            w_hy = np.empty((0, 0), dtype=self.dtype)
        self.grad.fill(0)
        _rtrl.step(self.cell.kind, self.cell.units, self.M, w_rec, w_hy,
                   np.ascontiguousarray(coef, dtype=self.dtype), self.imm_row,
                   self.imm_src, np.ascontiguousarray(src, dtype=self.dtype), d_output,
                   self.grad, self.work, _threads.get_num_threads())
        self._add_gradients()
        self.state = np.ascontiguousarray(new_state, dtype=self.dtype)
        self.steps += 1
        return loss

    def _add_gradients(self):
        offset = 0
        for name, value in self.cell.params.items():
            self.layer.grads[name] += self.grad[offset:offset + value.size].reshape(value.shape)
            offset += value.size

    def reset(self, rows=None):
        """Start streams ``rows`` (indices or a bool mask; all when None) again
        from a zero state with zero sensitivities."""
        index = self._rows(rows)
        if index is not None:
            self.state[index] = 0
            self.M[index] = 0


# -- online truncated BPTT ---------------------------------------------------------------

class TBPTT(_Learner):
    """Online truncated BPTT over a sliding window of the last ``window`` steps.

    Every ``step`` runs the layer's compiled forward over the window (from the
    state held at its start), applies head and loss to the last step and
    backpropagates through the window only.  With ``window`` >= the number of
    steps since a reset the gradient is exact (as RTRL's), shorter windows
    truncate it.  Works with any ``fr.RNN``/``GRU``/``LSTM``/``Jordan`` that
    is not bidirectional (stacked layers too).
    """

    def __init__(self, layer, head, loss, window=16):
        if not isinstance(layer, (RNN, GRU, LSTM, Jordan)):
            raise TypeError(f"layer must be an fr.RNN, fr.GRU, fr.LSTM or fr.Jordan, got "
                            f"{type(layer).__name__}")
        if getattr(layer, "bidirectional", False):
            raise ValueError("layer must not be bidirectional for online learning "
                             "(a step cannot see the future)")
        if layer.batch_first:
            raise ValueError("layer must have batch_first=False for TBPTT")
        super().__init__(layer, head, loss)
        self.window = positive_int("window", window)
        self._lstm = isinstance(layer, LSTM)
        self._width = layer.output_size if isinstance(layer, Jordan) else layer.hidden_size

    def _start(self, batch):
        self.batch = batch
        self.x_window = np.zeros((self.window, batch, self.layer.input_size), self.dtype)
        self.filled = np.zeros(batch, dtype=np.intp)    # steps of each row in the window
        shape = (self.layer.num_layers, batch, self._width)
        parts = 2 if self._lstm else 1
        self.start_state = [np.zeros(shape, self.dtype) for _ in range(parts)]

    def _hx(self, rows):
        parts = [part[:, rows] for part in self.start_state]
        return tuple(parts) if self._lstm else parts[0]

    def _advance_start(self):
        """Rows with a full window: move their start state one step on."""
        rows = np.flatnonzero(self.filled == self.window)
        if rows.size == 0:
            return
        _, state = self.layer.forward(self.x_window[:1, rows], hx=self._hx(rows))
        for part, value in zip(self.start_state, state if self._lstm else (state,)):
            part[:, rows] = value

    def step(self, x_t, y_t):
        """Slide the window, forward over it, backpropagate this step's loss."""
        x = self._check_x(x_t)
        self._advance_start()
        self.x_window[:-1] = self.x_window[1:]
        self.x_window[-1] = x
        self.filled = np.minimum(self.filled + 1, self.window)
        groups = [np.flatnonzero(self.filled == n) for n in np.unique(self.filled)]
        if len(groups) == 1:
            out = self._forward(groups[0])
            loss, d_output = self._head_and_loss(out[-1], y_t)
            self._backward(out, d_output)
        else:   # streams reset at different times: windows of several lengths
            output = np.empty((self.batch, self._width), self.dtype)
            for rows in groups:
                output[rows] = self._forward(rows)[-1]
            loss, d_output = self._head_and_loss(output, y_t)
            for rows in groups:
                self._backward(self._forward(rows), d_output[rows])
        self.steps += 1
        return loss

    def _forward(self, rows):
        n = int(self.filled[rows[0]])
        xs = self.x_window[self.window - n:]
        if rows.size != self.batch:
            xs = xs[:, rows]
        out, _ = self.layer.forward(xs, hx=self._hx(rows))
        return out

    def _backward(self, out, d_last):
        d_out = np.zeros(out.shape, self.dtype)
        d_out[-1] = d_last
        self.layer.backward(d_out, input_grad=False, state_grad=False)

    def reset(self, rows=None):
        """Start streams ``rows`` (indices or a bool mask; all when None) again
        from a zero state with an empty window."""
        index = self._rows(rows)
        if index is not None:
            self.filled[index] = 0
            for part in self.start_state:
                part[:, index] = 0
