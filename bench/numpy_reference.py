"""Plain-numpy BPTT reference for the benchmarks: RNN (tanh/relu), LSTM, GRU.

One layer, one direction, time-major (T, B, E), PyTorch's gate layout and
parameter names (``weight_ih_l0``, ``weight_hh_l0``, ``bias_ih_l0``,
``bias_hh_l0``; LSTM gates i, f, g, o; GRU gates r, z, n with
n = tanh(W_in x + b_in + r * (W_hn h + b_hn))).

It is meant to be a *careful* numpy implementation, i.e. a fair baseline:

* the input projection of the whole sequence is one matmul ((T*B, E) x (E, G*H));
* each timestep does exactly one matmul (B, H) x (H, G*H) forward and one
  (B, G*H) x (G*H, H) backward, into preallocated buffers (``out=``);
* the elementwise work is vectorised over the batch (and, where the recurrence
  allows it, over the whole sequence: activation derivatives are computed for
  all timesteps at once before the backward loop);
* the weight gradients are big matmuls over all T*B rows after the loop.

The layer follows fastrnn's module protocol (``forward`` / ``backward`` /
``grads`` / ``parameters()`` / ``zero_grad()`` / ``train()`` / ``eval()``;
gradients accumulate into ``grads``), so ``workloads.py`` drives it with the
same training-step code as fastrnn.

``python bench/self_check.py`` checks this reference: outputs, final
states and all gradients against ``torch.nn.RNN/LSTM/GRU`` (float64, tight
tolerance, and float32), plus the benchmark's training step (embedding
gather / scatter-add, layer, head, softmax cross-entropy: loss and every
gradient) of this reference, of fastrnn and of the JAX implementation in
``workloads.py`` against torch, and the Adam update of each (``NumpyAdam``,
``fr.optim.Adam``, ``workloads.jax_adam``) against ``torch.optim.Adam``;
fastrnn and JAX are skipped when not importable.
"""

import math

import numpy as np

__all__ = ["NumpyRecurrent", "NumpyRNN", "NumpyLSTM", "NumpyGRU"]

GATES = {"rnn": 1, "lstm": 4, "gru": 3}
NAMES = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")


def _sigmoid_(a):
    """In-place logistic sigmoid, via tanh (stable, 3 passes)."""
    a *= 0.5
    np.tanh(a, out=a)
    a *= 0.5
    a += 0.5
    return a


class NumpyRecurrent:
    """Single-layer unidirectional recurrent layer in plain numpy."""

    cell = None

    def __init__(self, input_size, hidden_size, dtype="float32", seed=None,
                 nonlinearity="tanh"):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        self.nonlinearity = nonlinearity
        self.dtype = np.dtype(dtype)
        self.training = True
        self._cache = None
        G, H, E = GATES[self.cell], self.hidden_size, self.input_size
        rng = np.random.default_rng(seed)
        bound = 1.0 / math.sqrt(H)
        shapes = dict(zip(NAMES, [(G * H, E), (G * H, H), (G * H,), (G * H,)]))
        self._params = {n: rng.uniform(-bound, bound, s).astype(self.dtype)
                        for n, s in shapes.items()}
        self.grads = {n: np.zeros_like(p) for n, p in self._params.items()}

    # -- module protocol ------------------------------------------------------
    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def train(self, mode=True):
        self.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    def parameters(self):
        return list(self._params.values())

    def zero_grad(self):
        for g in self.grads.values():
            g.fill(0)

    def state_dict(self):
        return {n: p.copy() for n, p in self._params.items()}

    def load_state_dict(self, state):
        for n, p in self._params.items():
            value = state[n]
            if hasattr(value, "detach"):
                value = value.detach().cpu().numpy()
            value = np.asarray(value)
            if value.shape != p.shape:
                raise ValueError(f"{n}: expected shape {p.shape}, got {value.shape}")
            np.copyto(p, value, casting="unsafe")

    # -- helpers --------------------------------------------------------------
    def _weights(self):
        p = self._params
        return p["weight_ih_l0"], p["weight_hh_l0"], p["bias_ih_l0"], p["bias_hh_l0"]

    def _input_projection(self, x, bias):
        """(T, B, G*H) = x W_ih^T + bias, as one matmul over all T*B rows."""
        T, B, E = x.shape
        w_ih = self._params["weight_ih_l0"]
        xp = np.matmul(x.reshape(T * B, E), w_ih.T).reshape(T, B, w_ih.shape[0])
        xp += bias
        return xp

    def _prepare(self, x, hx):
        x = np.ascontiguousarray(x, dtype=self.dtype)
        if x.ndim != 3 or x.shape[2] != self.input_size:
            raise ValueError(f"x must be (T, B, {self.input_size}), got {x.shape}")
        B, H = x.shape[1], self.hidden_size
        if self.cell == "lstm":
            h0, c0 = hx if hx is not None else (None, None)
        else:
            h0, c0 = hx, None
        h0 = None if h0 is None else np.asarray(h0, self.dtype).reshape(B, H)
        c0 = None if c0 is None else np.asarray(c0, self.dtype).reshape(B, H)
        return x, h0, c0

    def _state_out(self, h, c=None):
        h = h.reshape(1, *h.shape).copy()
        if self.cell == "lstm":
            return h, c.reshape(1, *c.shape).copy()
        return h

    def _accumulate_weight_grads(self, x, out, h0, d_rec, d_in, d_in_bias, d_rec_bias):
        """Weight/bias gradients as big matmuls over all T*B rows.

        d_rec: (T, B, G*H) gradient of the recurrent pre-activations (W_hh h);
        d_in: list of (column slice, (T, B, k) array) for the input
        pre-activations (W_ih x); the bias sums are passed in precomputed.
        """
        T, B, E = x.shape
        H = self.hidden_size
        g = self.grads
        x2 = x.reshape(T * B, E)
        for cols, d in d_in:
            g["weight_ih_l0"][cols] += d.reshape(T * B, -1).T @ x2
        if T > 1:
            g["weight_hh_l0"] += d_rec[1:].reshape((T - 1) * B, -1).T @ out[:-1].reshape(-1, H)
        if h0 is not None:
            g["weight_hh_l0"] += d_rec[0].T @ h0
        g["bias_ih_l0"] += d_in_bias
        g["bias_hh_l0"] += d_rec_bias

    def _input_grad(self, d_in, shape):
        w_ih = self._params["weight_ih_l0"]
        T, B, E = shape
        d_x = np.zeros((T * B, E), self.dtype)
        for cols, d in d_in:
            d_x += d.reshape(T * B, -1) @ w_ih[cols]
        return d_x.reshape(T, B, E)

    def _check_backward(self, d_out):
        if self._cache is None:
            raise RuntimeError("backward needs a training-mode forward first")
        cache, self._cache = self._cache, None
        d_out = np.asarray(d_out, self.dtype)
        if d_out.shape != cache["out"].shape:
            raise ValueError(f"d_out must have shape {cache['out'].shape}, got {d_out.shape}")
        return cache, d_out

    def _d_state(self, d_hn, B):
        H = self.hidden_size
        if self.cell == "lstm":
            d_h, d_c = d_hn if d_hn is not None else (None, None)
        else:
            d_h, d_c = d_hn, None
        dh = np.zeros((B, H), self.dtype) if d_h is None else \
            np.array(d_h, self.dtype).reshape(B, H)
        dc = np.zeros((B, H), self.dtype) if d_c is None else \
            np.array(d_c, self.dtype).reshape(B, H)
        return dh, dc


class NumpyRNN(NumpyRecurrent):
    """h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)."""

    cell = "rnn"

    def forward(self, x, hx=None):
        x, h0, _ = self._prepare(x, hx)
        T, B, _ = x.shape
        _, w_hh, b_ih, b_hh = self._weights()
        out = self._input_projection(x, b_ih + b_hh)     # becomes h_t in place
        w_hh_t = w_hh.T
        tmp = np.empty((B, self.hidden_size), self.dtype)
        relu = self.nonlinearity == "relu"
        h = h0
        for t in range(T):
            a = out[t]
            if h is not None:
                np.matmul(h, w_hh_t, out=tmp)
                a += tmp
            if relu:
                np.maximum(a, 0, out=a)
            else:
                np.tanh(a, out=a)
            h = a
        self._cache = dict(x=x, out=out, h0=h0) if self.training else None
        return out, self._state_out(out[-1])

    def backward(self, d_out, d_hn=None, input_grad=True):
        cache, d_out = self._check_backward(d_out)
        x, out, h0 = cache["x"], cache["out"], cache["h0"]
        T, B, _ = x.shape
        w_hh = self._params["weight_hh_l0"]
        # activation derivative for the whole sequence at once
        if self.nonlinearity == "relu":
            deriv = (out > 0).astype(self.dtype)
        else:
            deriv = np.multiply(out, out)
            np.subtract(1, deriv, out=deriv)
        d_a = deriv                                        # overwritten step by step
        dh, _ = self._d_state(d_hn, B)
        for t in range(T - 1, -1, -1):
            da = d_a[t]
            dh += d_out[t]
            da *= dh
            np.matmul(da, w_hh, out=dh)
        d_bias = d_a.sum(axis=(0, 1))
        self._accumulate_weight_grads(x, out, h0, d_a, [(slice(None), d_a)], d_bias, d_bias)
        d_x = self._input_grad([(slice(None), d_a)], x.shape) if input_grad else None
        return d_x, dh.reshape(1, B, -1)


class NumpyLSTM(NumpyRecurrent):
    """PyTorch LSTM: gates i, f, g, o; c = f*c + i*g; h = o*tanh(c)."""

    cell = "lstm"

    def forward(self, x, hx=None):
        x, h0, c0 = self._prepare(x, hx)
        T, B, _ = x.shape
        H = self.hidden_size
        _, w_hh, b_ih, b_hh = self._weights()
        gates = self._input_projection(x, b_ih + b_hh)   # activated in place
        w_hh_t = w_hh.T
        out = np.empty((T, B, H), self.dtype)
        cs = np.empty((T, B, H), self.dtype)
        tanh_c = np.empty((T, B, H), self.dtype)
        tmp = np.empty((B, 4 * H), self.dtype)
        tmp_h = np.empty((B, H), self.dtype)
        h, c = h0, c0
        for t in range(T):
            gt = gates[t]
            if h is not None:
                np.matmul(h, w_hh_t, out=tmp)
                gt += tmp
            _sigmoid_(gt[:, :2 * H])
            np.tanh(gt[:, 2 * H:3 * H], out=gt[:, 2 * H:3 * H])
            _sigmoid_(gt[:, 3 * H:])
            i, f, g, o = gt[:, :H], gt[:, H:2 * H], gt[:, 2 * H:3 * H], gt[:, 3 * H:]
            ct = cs[t]
            np.multiply(i, g, out=ct)
            if c is not None:
                np.multiply(f, c, out=tmp_h)
                ct += tmp_h
            np.tanh(ct, out=tanh_c[t])
            np.multiply(o, tanh_c[t], out=out[t])
            h, c = out[t], ct
        self._cache = (dict(x=x, out=out, h0=h0, c0=c0, gates=gates, cs=cs, tanh_c=tanh_c)
                       if self.training else None)
        return out, self._state_out(out[-1], cs[-1])

    def backward(self, d_out, d_hn=None, input_grad=True):
        cache, d_out = self._check_backward(d_out)
        x, out, gates, cs, tanh_c = (cache[k] for k in ("x", "out", "gates", "cs", "tanh_c"))
        h0, c0 = cache["h0"], cache["c0"]
        T, B, _ = x.shape
        H = self.hidden_size
        w_hh = self._params["weight_hh_l0"]
        # activation derivatives for the whole sequence at once:
        # sigmoid' = s (1 - s) for i, f, o; tanh' = 1 - g^2 for g; 1 - tanh(c)^2.
        d_g = np.subtract(1, gates, dtype=self.dtype)      # later: dL/d(gate pre-act.)
        d_g[..., :2 * H] *= gates[..., :2 * H]
        d_g[..., 2 * H:3 * H] *= gates[..., 2 * H:3 * H] + 1
        d_g[..., 3 * H:] *= gates[..., 3 * H:]
        d_tc = np.multiply(tanh_c, tanh_c)
        np.subtract(1, d_tc, out=d_tc)
        dh, dc = self._d_state(d_hn, B)
        tmp = np.empty((B, H), self.dtype)
        for t in range(T - 1, -1, -1):
            gt, dg = gates[t], d_g[t]
            i, f, g, o = gt[:, :H], gt[:, H:2 * H], gt[:, 2 * H:3 * H], gt[:, 3 * H:]
            dh += d_out[t]
            # d o (pre-activation) = dh * tanh(c) * o'
            np.multiply(dh, tanh_c[t], out=tmp)
            dg[:, 3 * H:] *= tmp
            # dc += dh * o * tanh'(c)
            np.multiply(dh, o, out=tmp)
            tmp *= d_tc[t]
            dc += tmp
            dg[:, :H] *= g                                   # di = dc * g * i'
            dg[:, :H] *= dc
            dg[:, 2 * H:3 * H] *= i                          # dg = dc * i * g'
            dg[:, 2 * H:3 * H] *= dc
            if t > 0:                                        # df = dc * c_{t-1} * f'
                dg[:, H:2 * H] *= cs[t - 1]
                dg[:, H:2 * H] *= dc
            elif c0 is not None:
                dg[:, H:2 * H] *= c0
                dg[:, H:2 * H] *= dc
            else:
                dg[:, H:2 * H] = 0
            dc *= f
            np.matmul(dg, w_hh, out=dh)
        d_bias = d_g.sum(axis=(0, 1))
        self._accumulate_weight_grads(x, out, h0, d_g, [(slice(None), d_g)], d_bias, d_bias)
        d_x = self._input_grad([(slice(None), d_g)], x.shape) if input_grad else None
        return d_x, (dh.reshape(1, B, H), dc.reshape(1, B, H))


class NumpyGRU(NumpyRecurrent):
    """PyTorch GRU: r, z, n; n = tanh(x_n + r*(W_hn h + b_hn)); h = (1-z)*n + z*h."""

    cell = "gru"

    def forward(self, x, hx=None):
        x, h0, _ = self._prepare(x, hx)
        T, B, _ = x.shape
        H = self.hidden_size
        _, w_hh, b_ih, b_hh = self._weights()
        gates = self._input_projection(x, b_ih)           # r, z, n activated in place
        w_hh_t = w_hh.T
        out = np.empty((T, B, H), self.dtype)
        hn = np.empty((T, B, H), self.dtype)               # W_hn h + b_hn
        tmp = np.empty((B, 3 * H), self.dtype)
        tmp_h = np.empty((B, H), self.dtype)
        h = h0
        for t in range(T):
            gt = gates[t]
            if h is not None:
                np.matmul(h, w_hh_t, out=tmp)
                tmp += b_hh
            else:
                tmp[:] = b_hh
            rz, n = gt[:, :2 * H], gt[:, 2 * H:]
            rz += tmp[:, :2 * H]
            _sigmoid_(rz)
            hn[t] = tmp[:, 2 * H:]
            np.multiply(gt[:, :H], hn[t], out=tmp_h)
            n += tmp_h
            np.tanh(n, out=n)
            # h = n + z * (h_prev - n)
            ht = out[t]
            if h is not None:
                np.subtract(h, n, out=ht)
            else:
                np.negative(n, out=ht)
            ht *= gt[:, H:2 * H]
            ht += n
            h = ht
        self._cache = (dict(x=x, out=out, h0=h0, gates=gates, hn=hn)
                       if self.training else None)
        return out, self._state_out(out[-1])

    def backward(self, d_out, d_hn=None, input_grad=True):
        cache, d_out = self._check_backward(d_out)
        x, out, gates, hn, h0 = (cache[k] for k in ("x", "out", "gates", "hn", "h0"))
        T, B, _ = x.shape
        H = self.hidden_size
        w_hh = self._params["weight_hh_l0"]
        # derivatives for the whole sequence: s(1-s) for r, z; 1 - n^2 for n
        d_rec = np.subtract(1, gates, dtype=self.dtype)       # -> dL/d(W_hh h + b_hh)
        d_rec[..., :2 * H] *= gates[..., :2 * H]
        d_rec[..., 2 * H:] *= gates[..., 2 * H:] + 1
        d_xn = np.empty((T, B, H), self.dtype)                 # dL/d(W_in x + b_in)
        dh, _ = self._d_state(d_hn, B)
        tmp = np.empty((B, H), self.dtype)
        zero = np.zeros((B, H), self.dtype)
        for t in range(T - 1, -1, -1):
            gt, dr = gates[t], d_rec[t]
            r, z, n = gt[:, :H], gt[:, H:2 * H], gt[:, 2 * H:]
            h_prev = out[t - 1] if t > 0 else (h0 if h0 is not None else zero)
            dh += d_out[t]
            # d n_pre = dh * (1 - z) * n'
            dxn = d_xn[t]
            np.subtract(1, z, out=dxn)
            dxn *= dh
            dxn *= dr[:, 2 * H:]
            # d z_pre = dh * (h_prev - n) * z'
            np.subtract(h_prev, n, out=tmp)
            tmp *= dh
            dr[:, H:2 * H] *= tmp
            # d r_pre = d n_pre * hn * r'
            np.multiply(dxn, hn[t], out=tmp)
            dr[:, :H] *= tmp
            # d hn = d n_pre * r
            np.multiply(dxn, r, out=dr[:, 2 * H:])
            # dh_prev = dh * z + d_rec W_hh
            dh *= z
            np.matmul(dr, w_hh, out=tmp)
            dh += tmp
        d_in = [(slice(0, 2 * H), d_rec[..., :2 * H]), (slice(2 * H, 3 * H), d_xn)]
        d_rec_bias = d_rec.sum(axis=(0, 1))
        d_in_bias = np.concatenate([d_rec_bias[:2 * H], d_xn.sum(axis=(0, 1))])
        self._accumulate_weight_grads(x, out, h0, d_rec, d_in, d_in_bias, d_rec_bias)
        d_x = self._input_grad(d_in, x.shape) if input_grad else None
        return d_x, dh.reshape(1, B, H)


CLASSES = {"rnn": NumpyRNN, "lstm": NumpyLSTM, "gru": NumpyGRU}


def make_layer(cell, input_size, hidden_size, dtype="float32", seed=None):
    return CLASSES[cell](input_size, hidden_size, dtype=dtype, seed=seed)


# -- self-check -----------------------------------------------------------------
def _max_rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def check_layer_vs_torch(torch, cell, dtype, T=7, B=3, E=5, H=4, seed=0):
    """Forward/backward of the numpy layer against torch.nn; returns max rel errors."""
    rng = np.random.default_rng(seed)
    tdtype = torch.float64 if dtype == "float64" else torch.float32
    mod = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    torch.manual_seed(seed)
    tl = mod(E, H).to(tdtype)
    ref = make_layer(cell, E, H, dtype=dtype)
    ref.load_state_dict(tl.state_dict())
    x = rng.standard_normal((T, B, E)).astype(dtype)
    h0 = rng.standard_normal((1, B, H)).astype(dtype)
    c0 = rng.standard_normal((1, B, H)).astype(dtype)
    d_out = rng.standard_normal((T, B, H)).astype(dtype)
    d_h = rng.standard_normal((1, B, H)).astype(dtype)
    d_c = rng.standard_normal((1, B, H)).astype(dtype)

    xt = torch.tensor(x, requires_grad=True)
    h0t = torch.tensor(h0, requires_grad=True)
    c0t = torch.tensor(c0, requires_grad=True)
    if cell == "lstm":
        out_t, (hn_t, cn_t) = tl(xt, (h0t, c0t))
        loss = (out_t * torch.tensor(d_out)).sum() + (hn_t * torch.tensor(d_h)).sum() \
            + (cn_t * torch.tensor(d_c)).sum()
    else:
        out_t, hn_t = tl(xt, h0t)
        loss = (out_t * torch.tensor(d_out)).sum() + (hn_t * torch.tensor(d_h)).sum()
    loss.backward()

    errors = {}
    if cell == "lstm":
        out, (hn, cn) = ref(x, (h0, c0))
        d_x, (d_h0, d_c0) = ref.backward(d_out, (d_h, d_c))
        errors["c_n"] = _max_rel(cn, cn_t.detach().numpy())
        errors["d_c0"] = _max_rel(d_c0, c0t.grad.numpy())
    else:
        out, hn = ref(x, h0)
        d_x, d_h0 = ref.backward(d_out, d_h)
    errors["out"] = _max_rel(out, out_t.detach().numpy())
    errors["h_n"] = _max_rel(hn, hn_t.detach().numpy())
    errors["d_x"] = _max_rel(d_x, xt.grad.numpy())
    errors["d_h0"] = _max_rel(d_h0, h0t.grad.numpy())
    for name, p in tl.named_parameters():
        errors[name] = _max_rel(ref.grads[name], p.grad.numpy())

    # the benchmark path: no initial state, no d_hn, input_grad=False
    ref.zero_grad()
    tl.zero_grad()
    out_t, _ = tl(torch.tensor(x))
    (out_t * torch.tensor(d_out)).sum().backward()
    out, _ = ref(x)
    d_x, _ = ref.backward(d_out, input_grad=False)
    assert d_x is None
    errors["zero-state out"] = _max_rel(out, out_t.detach().numpy())
    for name, p in tl.named_parameters():
        errors["zero-state " + name] = _max_rel(ref.grads[name], p.grad.numpy())
    return errors
