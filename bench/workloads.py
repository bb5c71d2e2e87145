"""Benchmark workloads shared by ``compare.py`` and ``test_bench_recurrent.py``.

A workload is one recurrent layer (RNN tanh / LSTM / GRU, one layer, one
direction, time-major, float32) followed by a Linear head (H -> 64) applied at
every timestep, in one of two modes:

* ``inference``: eval / no-grad forward of the layer and the head;
* ``training``: forward, head, softmax cross-entropy over all T*B steps (mean),
  backward, plain SGD update of every parameter (layer and head).

Every framework starts from the same weights (``make_params``, PyTorch's
U(-1/sqrt(H), 1/sqrt(H)) init drawn with numpy) and the same data
(``make_data``), so their first-step outputs must agree; ``compare.py`` checks.

Frameworks:

* ``fastrnn``: the fastrnn layer; head, loss and SGD in numpy
  (``NumpyHeadModel``: one matmul over all T*B rows for the head forward and
  one each for its two gradients, in-place softmax, no per-step Python);
* ``numpy``: the plain-numpy BPTT reference (``numpy_reference.py``) driven
  by the same ``NumpyHeadModel``;
* ``torch``: ``torch.nn.RNN/LSTM/GRU`` + ``nn.Linear``, ``F.cross_entropy``,
  ``torch.optim.SGD``; inference under ``torch.inference_mode()``;
* ``jax``: ``jax.lax.scan`` cells (input projection as one matmul before the
  scan), ``jax.jit``; training is ``jax.value_and_grad`` + SGD in one jitted
  function with the parameters donated.

Only the framework that is asked for is imported.
"""

import math

import numpy as np

CELLS = ("rnn", "lstm", "gru")
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
MODES = ("inference", "training")
FRAMEWORKS = ("fastrnn", "torch", "numpy", "jax")
HEAD = 64            # classes of the Linear head / softmax
LR = 1e-3            # SGD learning rate (small: repeated steps stay finite)
LAYER_NAMES = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")


def flops(cell, T, B, H, E=None, mode="inference"):
    """Matrix-product FLOPs of one step (elementwise work is not counted).

    forward = 2*T*B*(E*G*H + H*G*H + H*64); training = 3 * forward.
    """
    E = H if E is None else E
    G = GATES[cell]
    forward = 2 * T * B * (E * G * H + H * G * H + H * HEAD)
    return forward if mode == "inference" else 3 * forward


def make_params(cell, E, H, seed=0):
    """Layer parameters (PyTorch names/shapes) and the head, float32."""
    rng = np.random.default_rng(seed)
    G = GATES[cell]
    bound = 1.0 / math.sqrt(H)
    shapes = {"weight_ih_l0": (G * H, E), "weight_hh_l0": (G * H, H),
              "bias_ih_l0": (G * H,), "bias_hh_l0": (G * H,),
              "head_weight": (HEAD, H), "head_bias": (HEAD,)}
    return {name: rng.uniform(-bound, bound, shape).astype(np.float32)
            for name, shape in shapes.items()}


def make_data(T, B, E, seed=0):
    """x: (T, B, E) float32 standard normal; y: (T, B) int64 class per step."""
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((T, B, E), dtype=np.float32)
    y = rng.integers(0, HEAD, size=(T, B), dtype=np.int64)
    return x, y


class Workload:
    """``step()`` runs one iteration; ``value(result)`` turns its result into a
    float for cross-framework checks (the loss for training, mean |logits|
    for inference)."""

    def __init__(self, framework, cell, mode, T, B, H, E, step, value, model=None):
        self.framework, self.cell, self.mode = framework, cell, mode
        self.T, self.B, self.H, self.E = T, B, H, E
        self.step, self.value, self.model = step, value, model

    @property
    def flops(self):
        return flops(self.cell, self.T, self.B, self.H, self.E, self.mode)

    def __repr__(self):
        return (f"Workload({self.framework}, {self.cell}, {self.mode}, T={self.T}, "
                f"B={self.B}, H={self.H}, E={self.E})")


# -- numpy head / loss / SGD (fastrnn and the numpy reference) -------------------
class NumpyHeadModel:
    """A recurrent layer with fastrnn's module protocol + Linear head + softmax
    cross-entropy + SGD, all in numpy with preallocated buffers.

    ``infer()`` -> logits (T*B, 64); ``forward_backward()`` -> loss (leaves the
    gradients in ``layer.grads`` / ``d_head_weight`` / ``d_head_bias``);
    ``train_step()`` = ``forward_backward()`` + ``sgd()``.
    """

    def __init__(self, layer, head_weight, head_bias, x, y, lr=LR):
        self.layer = layer
        self.x = np.ascontiguousarray(x, dtype=np.float32)
        T, B, _ = self.x.shape
        self.H = layer.hidden_size
        self.N = T * B
        self.head_weight = np.array(head_weight, dtype=np.float32)    # (64, H)
        self.head_bias = np.array(head_bias, dtype=np.float32)
        self.d_head_weight = np.zeros_like(self.head_weight)
        self.d_head_bias = np.zeros_like(self.head_bias)
        self.y = np.ascontiguousarray(np.asarray(y).reshape(-1), dtype=np.intp)
        self.rows = np.arange(self.N)
        self.logits = np.empty((self.N, HEAD), np.float32)
        self.d_out = np.empty((T, B, self.H), np.float32)
        self.inv_n = np.float32(1.0 / self.N)
        self.lr = np.float32(lr)
        self.params = layer.parameters() + [self.head_weight, self.head_bias]
        self.grads = list(layer.grads.values()) + [self.d_head_weight, self.d_head_bias]

    def infer(self):
        out, _ = self.layer(self.x)
        logits = np.matmul(out.reshape(self.N, self.H), self.head_weight.T, out=self.logits)
        logits += self.head_bias
        return logits

    def forward_backward(self):
        self.layer.zero_grad()
        out, _ = self.layer(self.x)
        out2 = out.reshape(self.N, self.H)
        z = np.matmul(out2, self.head_weight.T, out=self.logits)
        z += self.head_bias
        loss = self.softmax_cross_entropy_(z)
        np.matmul(z.T, out2, out=self.d_head_weight)
        z.sum(axis=0, out=self.d_head_bias)
        np.matmul(z, self.head_weight, out=self.d_out.reshape(self.N, self.H))
        self.layer.backward(self.d_out, input_grad=False)
        return loss

    def softmax_cross_entropy_(self, z):
        """Mean softmax cross-entropy of logits ``z`` (N, 64); ``z`` becomes
        d loss / d logits in place."""
        z -= z.max(axis=1, keepdims=True)
        z_y = z[self.rows, self.y]
        np.exp(z, out=z)
        s = z.sum(axis=1, keepdims=True)
        loss = (np.log(s).sum(dtype=np.float64) - z_y.sum(dtype=np.float64)) / self.N
        z /= s                                   # softmax
        z[self.rows, self.y] -= 1                # d loss / d logits, times N
        z *= self.inv_n
        return float(loss)

    def sgd(self):
        """p -= lr * g in place (the gradients are scaled in place: they are
        zeroed again by the next ``forward_backward``)."""
        for p, g in zip(self.params, self.grads):
            g *= self.lr
            p -= g

    def train_step(self):
        loss = self.forward_backward()
        self.sgd()
        return loss


class FastrnnHeadModel(NumpyHeadModel):
    """fastrnn layer + ``fr.Linear`` head: every product runs on fastrnn's own
    threads (with numpy's multithreaded BLAS for the head, two thread pools
    would compete for the cores).  Loss and SGD are the same numpy code."""

    def __init__(self, layer, head_weight, head_bias, x, y, lr=LR):
        import fastrnn as fr

        super().__init__(layer, head_weight, head_bias, x, y, lr)
        self.head = fr.Linear(self.H, HEAD)
        self.head.load_state_dict({"weight": head_weight, "bias": head_bias})
        self.head.train(layer.training)
        self.params = layer.parameters() + self.head.parameters()
        self.grads = list(layer.grads.values()) + list(self.head.grads.values())

    def infer(self):
        out, _ = self.layer(self.x)
        return self.head(out).reshape(self.N, HEAD)

    def forward_backward(self):
        self.layer.zero_grad()
        self.head.zero_grad()
        out, _ = self.layer(self.x)
        z = self.head(out)
        loss = self.softmax_cross_entropy_(z.reshape(self.N, HEAD))
        d_out = self.head.backward(z)
        self.layer.backward(d_out, input_grad=False)
        return loss


def _numpy_like_workload(framework, layer, cell, mode, params, x, y):
    T, B, E = x.shape
    layer.load_state_dict({n: params[n] for n in LAYER_NAMES})
    model_class = FastrnnHeadModel if framework == "fastrnn" else NumpyHeadModel
    if mode == "inference":
        layer.eval()
    model = model_class(layer, params["head_weight"], params["head_bias"], x, y)
    if mode == "inference":
        return Workload(framework, cell, mode, T, B, layer.hidden_size, E, model.infer,
                        lambda r: float(np.abs(r).mean(dtype=np.float64)), model)
    layer.train()
    return Workload(framework, cell, mode, T, B, layer.hidden_size, E, model.train_step,
                    float, model)


def build_fastrnn(cell, T, B, H, E=None, mode="inference", seed=0):
    import fastrnn as fr

    E = H if E is None else E
    layer = {"rnn": lambda: fr.RNN(E, H, nonlinearity="tanh"),
             "lstm": lambda: fr.LSTM(E, H), "gru": lambda: fr.GRU(E, H)}[cell]()
    x, y = make_data(T, B, E, seed)
    return _numpy_like_workload("fastrnn", layer, cell, mode, make_params(cell, E, H, seed),
                                x, y)


def build_numpy(cell, T, B, H, E=None, mode="inference", seed=0):
    import numpy_reference

    E = H if E is None else E
    layer = numpy_reference.make_layer(cell, E, H, dtype="float32")
    x, y = make_data(T, B, E, seed)
    return _numpy_like_workload("numpy", layer, cell, mode, make_params(cell, E, H, seed),
                                x, y)


# -- torch -------------------------------------------------------------------------
def torch_modules(cell, E, H, params):
    import torch

    rnn = {"rnn": lambda: torch.nn.RNN(E, H, nonlinearity="tanh"),
           "lstm": lambda: torch.nn.LSTM(E, H), "gru": lambda: torch.nn.GRU(E, H)}[cell]()
    head = torch.nn.Linear(H, HEAD)
    with torch.no_grad():
        for name, p in rnn.named_parameters():
            p.copy_(torch.from_numpy(params[name]))
        head.weight.copy_(torch.from_numpy(params["head_weight"]))
        head.bias.copy_(torch.from_numpy(params["head_bias"]))
    return rnn, head


def build_torch(cell, T, B, H, E=None, mode="inference", seed=0):
    import torch
    import torch.nn.functional as F

    E = H if E is None else E
    rnn, head = torch_modules(cell, E, H, make_params(cell, E, H, seed))
    x_np, y_np = make_data(T, B, E, seed)
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np).reshape(-1)
    if mode == "inference":
        rnn.eval()
        head.eval()

        def step():
            with torch.inference_mode():
                out, _ = rnn(x)
                return head(out)

        return Workload("torch", cell, mode, T, B, H, E, step,
                        lambda r: float(r.double().abs().mean()), (rnn, head))
    rnn.train()
    head.train()
    opt = torch.optim.SGD(list(rnn.parameters()) + list(head.parameters()), lr=LR)

    def step():
        opt.zero_grad(set_to_none=True)
        out, _ = rnn(x)
        loss = F.cross_entropy(head(out).reshape(-1, HEAD), y)
        loss.backward()
        opt.step()
        return loss

    return Workload("torch", cell, mode, T, B, H, E, step, lambda r: r.item(), (rnn, head))


# -- JAX ---------------------------------------------------------------------------
def jax_forward(cell, p, x):
    """(T, B, H) outputs of the cell run with ``lax.scan`` from a zero state."""
    import jax
    import jax.numpy as jnp

    T, B, E = x.shape
    H = p["weight_hh_l0"].shape[1]
    w_hh_t = p["weight_hh_l0"].T
    xp = (x.reshape(T * B, E) @ p["weight_ih_l0"].T).reshape(T, B, -1)
    sig, tanh = jax.nn.sigmoid, jnp.tanh
    h0 = jnp.zeros((B, H), x.dtype)
    if cell == "rnn":
        def f(h, a):
            h = tanh(a + h @ w_hh_t)
            return h, h

        _, out = jax.lax.scan(f, h0, xp + (p["bias_ih_l0"] + p["bias_hh_l0"]))
    elif cell == "lstm":
        def f(carry, a):
            h, c = carry
            g = a + h @ w_hh_t
            c = sig(g[:, H:2 * H]) * c + sig(g[:, :H]) * tanh(g[:, 2 * H:3 * H])
            h = sig(g[:, 3 * H:]) * tanh(c)
            return (h, c), h

        _, out = jax.lax.scan(f, (h0, h0), xp + (p["bias_ih_l0"] + p["bias_hh_l0"]))
    else:
        b_hh = p["bias_hh_l0"]

        def f(h, a):
            hp = h @ w_hh_t + b_hh
            r = sig(a[:, :H] + hp[:, :H])
            z = sig(a[:, H:2 * H] + hp[:, H:2 * H])
            n = tanh(a[:, 2 * H:] + r * hp[:, 2 * H:])
            h = n + z * (h - n)
            return h, h

        _, out = jax.lax.scan(f, h0, xp + p["bias_ih_l0"])
    return out


def jax_logits(cell, p, x):
    out = jax_forward(cell, p, x)
    return out.reshape(-1, out.shape[-1]) @ p["head_weight"].T + p["head_bias"]


def jax_loss(cell, p, x, y):
    import jax
    import jax.numpy as jnp

    logp = jax.nn.log_softmax(jax_logits(cell, p, x), axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, y.reshape(-1, 1), axis=1))


def build_jax(cell, T, B, H, E=None, mode="inference", seed=0):
    import functools

    import jax
    import jax.numpy as jnp

    E = H if E is None else E
    params = {k: jnp.asarray(v) for k, v in make_params(cell, E, H, seed).items()}
    x_np, y_np = make_data(T, B, E, seed)
    x, y = jnp.asarray(x_np), jnp.asarray(y_np.astype(np.int32))
    if mode == "inference":
        infer = jax.jit(functools.partial(jax_logits, cell))

        def step():
            return infer(params, x).block_until_ready()

        return Workload("jax", cell, mode, T, B, H, E, step,
                        lambda r: float(np.abs(np.asarray(r)).mean(dtype=np.float64)))

    def train(p, x, y):
        loss, g = jax.value_and_grad(functools.partial(jax_loss, cell))(p, x, y)
        return jax.tree_util.tree_map(lambda a, b: a - LR * b, p, g), loss

    train = jax.jit(train, donate_argnums=0)
    state = {"p": params}

    def step():
        state["p"], loss = train(state["p"], x, y)
        jax.block_until_ready(state["p"])
        return loss.block_until_ready()

    return Workload("jax", cell, mode, T, B, H, E, step, lambda r: float(r))


BUILDERS = {"fastrnn": build_fastrnn, "torch": build_torch, "numpy": build_numpy,
            "jax": build_jax}


def build(framework, cell, T, B, H, E=None, mode="inference", seed=0):
    """One ``Workload``; E defaults to H."""
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return BUILDERS[framework](cell, T, B, H, E, mode, seed)


# -- correctness of the training step (used by numpy_reference.self_check) ---------
def _max_rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def check_training_gradients(cell, T=6, B=4, E=5, H=8, seed=1, tol=1e-4):
    """Loss and all gradients of one training step (before the SGD update):
    the numpy reference + ``NumpyHeadModel`` vs torch, and JAX vs torch when
    jax is importable.  Returns {name: (max relative error, tolerance)}."""
    import torch
    import torch.nn.functional as F

    import numpy_reference

    params = make_params(cell, E, H, seed)
    x, y = make_data(T, B, E, seed)

    rnn, head = torch_modules(cell, E, H, params)
    out, _ = rnn(torch.from_numpy(x))
    loss_t = F.cross_entropy(head(out).reshape(-1, HEAD), torch.from_numpy(y).reshape(-1))
    loss_t.backward()
    ref = {n: p.grad.numpy() for n, p in rnn.named_parameters()}
    ref["head_weight"] = head.weight.grad.numpy()
    ref["head_bias"] = head.bias.grad.numpy()

    layer = numpy_reference.make_layer(cell, E, H)
    layer.load_state_dict({n: params[n] for n in LAYER_NAMES})
    model = NumpyHeadModel(layer, params["head_weight"], params["head_bias"], x, y)
    loss = model.forward_backward()
    got = dict(layer.grads, head_weight=model.d_head_weight, head_bias=model.d_head_bias)
    errors = {"numpy vs torch": (max([abs(loss - loss_t.item()) / abs(loss_t.item())]
                                     + [_max_rel(got[n], ref[n]) for n in ref]), tol)}
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return errors
    p = {k: jnp.asarray(v) for k, v in params.items()}
    loss_j, g = jax.value_and_grad(lambda p: jax_loss(cell, p, jnp.asarray(x),
                                                      jnp.asarray(y.astype(np.int32))))(p)
    errors["jax vs torch"] = (max([abs(float(loss_j) - loss_t.item()) / abs(loss_t.item())]
                                  + [_max_rel(np.asarray(g[n]), ref[n]) for n in ref]), tol)
    return errors
