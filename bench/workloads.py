"""Benchmark workloads shared by ``compare.py``, ``step_breakdown.py`` and
``test_bench_recurrent.py``.

A workload is a small token model, time-major, float32, in one of two modes:

    token ids (T, B) in [0, V) -> Embedding(V, E) -> recurrent layer (RNN tanh /
    LSTM / GRU, one layer, one direction, zero initial state) -> Linear head
    (H -> 64) at every timestep

* ``inference``: eval / no-grad forward of the whole model (embedding lookup,
  layer, head); the value checked across frameworks is mean |logits|;
* ``training``: forward, softmax cross-entropy over all T*B steps (mean),
  backward through the head, the layer (including its input gradient) and
  the embedding (a scatter-add into the (V, E) table), then one Adam update of
  every parameter (lr 1e-3, betas (0.9, 0.999), eps 1e-8: PyTorch's
  defaults).  The value checked is the loss before the update.

Both modes use the embedding, so inference and training time the same model.
V = ``VOCAB`` = 1000 by default.

Every framework starts from the same weights (``make_params``: PyTorch's
U(-1/sqrt(H), 1/sqrt(H)) init for the layer and the head, N(0, 1) for the
embedding table as ``nn.Embedding``, drawn with numpy) and the same data
(``make_data``), so their first-step values must agree; ``compare.py`` checks.

Frameworks:

* ``fastrnn``: ``fr.Embedding``, ``fr.RNN/LSTM/GRU``, ``fr.Linear``,
  ``fr.CrossEntropyLoss``, ``fr.optim.Adam`` (``FastrnnModel``): the public
  API only, as a user would write the loop.  Inference feeds the ids
  straight to the layer (``layer(ids, embedding=emb)``, equal to
  ``layer(emb(ids))`` bit for bit), which keeps its table of each
  vocabulary row's input product between calls, as a deployed model runs;
  training keeps the two-module form ``layer(emb(ids))`` that
  ``step_breakdown.py`` times part by part (``train_loop.py`` compares the
  two forms);
* ``numpy``: the plain-numpy BPTT reference (``numpy_reference.py``) with a
  numpy gather (``np.take``) / scatter-add (``np.add.at``) embedding, numpy
  head and softmax cross-entropy and a numpy Adam, all into preallocated
  buffers (``NumpyModel``, ``NumpyAdam``);
* ``torch``: ``nn.Embedding`` + ``nn.RNN/LSTM/GRU`` + ``nn.Linear``,
  ``F.cross_entropy``, ``torch.optim.Adam`` with its default implementation
  (on CPU tensors torch 2.x picks the single-tensor loop: ``foreach`` and
  ``fused`` default to on only for CUDA-like devices; ``optim_step.py`` times
  all three); inference under ``torch.inference_mode()``;
* ``jax``: ``jnp.take`` + ``jax.lax.scan`` cells (input projection as one
  matmul before the scan) + head, ``jax.jit``; training is
  ``jax.value_and_grad`` + a hand-written Adam in one jitted function with the
  parameters and optimizer state donated (no optax).

FLOPs (``flops``) count matrix products only; the embedding gather /
scatter, the loss and Adam are memory-bound and not counted.

Only the framework that is asked for is imported.
"""

import math

import numpy as np

CELLS = ("rnn", "lstm", "gru")
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
MODES = ("inference", "training")
FRAMEWORKS = ("fastrnn", "torch", "numpy", "jax", "ort")
HEAD = 64            # classes of the Linear head / softmax
VOCAB = 1000         # rows of the embedding table
LR = 1e-3            # Adam: torch.optim.Adam's defaults
BETAS = (0.9, 0.999)
EPS = 1e-8
LAYER_NAMES = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
PARAM_NAMES = ("embedding_weight",) + LAYER_NAMES + ("head_weight", "head_bias")


def flops(cell, T, B, H, E=None, mode="inference"):
    """Matrix-product FLOPs of one step (elementwise work is not counted).

    forward = 2*T*B*(E*G*H + H*G*H + H*64): input projection, recurrent
    product, head.  The embedding lookup is a gather, not a product.
    training = 3 * forward: every forward product has two backward products
    (the gradient of each operand; the layer's input gradient is computed
    because it feeds the embedding).  Loss, embedding scatter-add and Adam
    are memory traffic, not counted.
    """
    E = H if E is None else E
    G = GATES[cell]
    forward = 2 * T * B * (E * G * H + H * G * H + H * HEAD)
    return forward if mode == "inference" else 3 * forward


def make_params(cell, E, H, seed=0, vocab=VOCAB):
    """All parameters by name (the layer's with PyTorch names), float32.

    Layer and head ~ U(-1/sqrt(H), 1/sqrt(H)) (drawn first, in the same order
    as before the embedding existed), then ``embedding_weight`` (V, E) ~ N(0, 1).
    """
    rng = np.random.default_rng(seed)
    G = GATES[cell]
    bound = 1.0 / math.sqrt(H)
    shapes = {"weight_ih_l0": (G * H, E), "weight_hh_l0": (G * H, H),
              "bias_ih_l0": (G * H,), "bias_hh_l0": (G * H,),
              "head_weight": (HEAD, H), "head_bias": (HEAD,)}
    params = {name: rng.uniform(-bound, bound, shape).astype(np.float32)
              for name, shape in shapes.items()}
    params["embedding_weight"] = rng.standard_normal((vocab, E), dtype=np.float32)
    return params


def make_data(T, B, seed=0, vocab=VOCAB):
    """ids: (T, B) int64 token ids in [0, vocab); y: (T, B) int64 class per step."""
    rng = np.random.default_rng(seed + 1)
    ids = rng.integers(0, vocab, size=(T, B), dtype=np.int64)
    y = rng.integers(0, HEAD, size=(T, B), dtype=np.int64)
    return ids, y


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


def _mean_abs(array):
    return float(np.abs(np.asarray(array)).mean(dtype=np.float64))


# -- fastrnn -------------------------------------------------------------------------
class FastrnnModel:
    """The workload with fastrnn's public API only.

    ``infer()`` -> logits (T, B, 64); ``forward_backward()`` -> loss (gradients
    left in every module's ``grads``); ``train_step()`` = ``forward_backward()``
    + ``Adam.step()``.  ``modules`` = [embedding, layer, head].
    """

    def __init__(self, layer, params, ids, y, lr=LR):
        import fastrnn as fr

        vocab, E = params["embedding_weight"].shape
        self.embedding = fr.Embedding(vocab, E)
        self.embedding.load_state_dict({"weight": params["embedding_weight"]})
        self.layer = layer
        self.layer.load_state_dict({n: params[n] for n in LAYER_NAMES})
        self.head = fr.Linear(layer.hidden_size, HEAD)
        self.head.load_state_dict({"weight": params["head_weight"],
                                   "bias": params["head_bias"]})
        self.modules = [self.embedding, self.layer, self.head]
        self.criterion = fr.CrossEntropyLoss()
        self.optimizer = fr.optim.Adam(self.modules, lr=lr, betas=BETAS, eps=EPS)
        self.ids = np.ascontiguousarray(ids, dtype=np.int64)
        self.y = np.ascontiguousarray(y, dtype=np.int64)

    def train(self, mode=True):
        for module in self.modules:
            module.train(mode)
        return self

    def infer(self):
        out, _ = self.layer(self.ids, embedding=self.embedding)
        return self.head(out)

    def forward_backward(self):
        self.optimizer.zero_grad()
        x = self.embedding(self.ids)
        out, _ = self.layer(x)
        loss, d_logits = self.criterion(self.head(out), self.y)
        d_x, _ = self.layer.backward(self.head.backward(d_logits))
        self.embedding.backward(d_x)
        return loss

    def train_step(self):
        loss = self.forward_backward()
        self.optimizer.step()
        return loss


def build_fastrnn(cell, T, B, H, E=None, mode="inference", seed=0, vocab=VOCAB):
    import fastrnn as fr

    E = H if E is None else E
    layer = {"rnn": lambda: fr.RNN(E, H, nonlinearity="tanh"),
             "lstm": lambda: fr.LSTM(E, H), "gru": lambda: fr.GRU(E, H)}[cell]()
    ids, y = make_data(T, B, seed, vocab)
    model = FastrnnModel(layer, make_params(cell, E, H, seed, vocab), ids, y)
    if mode == "inference":
        model.train(False)
        return Workload("fastrnn", cell, mode, T, B, H, E, model.infer, _mean_abs, model)
    model.train(True)
    return Workload("fastrnn", cell, mode, T, B, H, E, model.train_step, float, model)


# -- numpy reference ----------------------------------------------------------------
class NumpyAdam:
    """``torch.optim.Adam``'s update (no weight decay / amsgrad) in numpy,
    in place, with one preallocated temporary per parameter:

    m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
    p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
    """

    def __init__(self, params, grads, lr=LR, betas=BETAS, eps=EPS):
        self.params, self.grads = list(params), list(grads)
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.tmp = [np.empty_like(p) for p in self.params]
        self.lr, self.betas, self.eps = lr, betas, eps
        self.t = 0

    def step(self):
        self.t += 1
        b1, b2 = self.betas
        step_size = self.lr / (1 - b1 ** self.t)
        bc2_sqrt = math.sqrt(1 - b2 ** self.t)
        for p, g, m, v, tmp in zip(self.params, self.grads, self.m, self.v, self.tmp):
            dt = p.dtype.type
            m *= dt(b1)
            np.multiply(g, dt(1 - b1), out=tmp)
            m += tmp
            v *= dt(b2)
            np.multiply(g, g, out=tmp)
            tmp *= dt(1 - b2)
            v += tmp
            np.sqrt(v, out=tmp)
            tmp /= dt(bc2_sqrt)
            tmp += dt(self.eps)
            np.divide(m, tmp, out=tmp)
            tmp *= dt(step_size)
            p -= tmp


class NumpyModel:
    """The workload in plain numpy around a layer with fastrnn's module
    protocol (the numpy BPTT reference), preallocated buffers throughout.

    Embedding: ``np.take`` gather, ``np.add.at`` scatter-add; head: one matmul
    over all T*B rows forward and one for each gradient; in-place softmax
    cross-entropy; ``NumpyAdam``.  ``infer()`` -> logits (T*B, 64);
    ``forward_backward()`` -> loss; ``train_step()`` adds the Adam update.
    """

    def __init__(self, layer, params, ids, y, lr=LR):
        self.layer = layer
        layer.load_state_dict({n: params[n] for n in LAYER_NAMES})
        self.ids = np.ascontiguousarray(np.asarray(ids).reshape(-1), dtype=np.intp)
        T, B = np.shape(ids)
        self.H = layer.hidden_size
        self.N = T * B
        self.embedding_weight = np.array(params["embedding_weight"], dtype=np.float32)
        self.E = self.embedding_weight.shape[1]
        self.d_embedding_weight = np.zeros_like(self.embedding_weight)
        self.x = np.empty((T, B, self.E), np.float32)
        self.head_weight = np.array(params["head_weight"], dtype=np.float32)    # (64, H)
        self.head_bias = np.array(params["head_bias"], dtype=np.float32)
        self.d_head_weight = np.zeros_like(self.head_weight)
        self.d_head_bias = np.zeros_like(self.head_bias)
        self.y = np.ascontiguousarray(np.asarray(y).reshape(-1), dtype=np.intp)
        self.rows = np.arange(self.N)
        self.logits = np.empty((self.N, HEAD), np.float32)
        self.d_out = np.empty((T, B, self.H), np.float32)
        self.inv_n = np.float32(1.0 / self.N)
        params_ = ([self.embedding_weight] + layer.parameters()
                   + [self.head_weight, self.head_bias])
        grads = ([self.d_embedding_weight] + list(layer.grads.values())
                 + [self.d_head_weight, self.d_head_bias])
        self.optimizer = NumpyAdam(params_, grads, lr=lr)

    def gradients(self):
        """The gradients by ``PARAM_NAMES`` name (live arrays)."""
        return dict(self.layer.grads, embedding_weight=self.d_embedding_weight,
                    head_weight=self.d_head_weight, head_bias=self.d_head_bias)

    def _embed(self):
        np.take(self.embedding_weight, self.ids, axis=0, out=self.x.reshape(self.N, self.E))
        return self.x

    def infer(self):
        out, _ = self.layer(self._embed())
        logits = np.matmul(out.reshape(self.N, self.H), self.head_weight.T, out=self.logits)
        logits += self.head_bias
        return logits

    def forward_backward(self):
        self.layer.zero_grad()
        self.d_embedding_weight.fill(0)
        out, _ = self.layer(self._embed())
        out2 = out.reshape(self.N, self.H)
        z = np.matmul(out2, self.head_weight.T, out=self.logits)
        z += self.head_bias
        loss = self.softmax_cross_entropy_(z)
        np.matmul(z.T, out2, out=self.d_head_weight)
        z.sum(axis=0, out=self.d_head_bias)
        np.matmul(z, self.head_weight, out=self.d_out.reshape(self.N, self.H))
        d_x, _ = self.layer.backward(self.d_out, input_grad=True)
        np.add.at(self.d_embedding_weight, self.ids, d_x.reshape(self.N, self.E))
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

    def train_step(self):
        loss = self.forward_backward()
        self.optimizer.step()
        return loss


def build_numpy(cell, T, B, H, E=None, mode="inference", seed=0, vocab=VOCAB):
    import numpy_reference

    E = H if E is None else E
    layer = numpy_reference.make_layer(cell, E, H, dtype="float32")
    ids, y = make_data(T, B, seed, vocab)
    model = NumpyModel(layer, make_params(cell, E, H, seed, vocab), ids, y)
    if mode == "inference":
        layer.eval()
        return Workload("numpy", cell, mode, T, B, H, E, model.infer, _mean_abs, model)
    layer.train()
    return Workload("numpy", cell, mode, T, B, H, E, model.train_step, float, model)


# -- torch -------------------------------------------------------------------------
def torch_modules(cell, E, H, params):
    """(nn.Embedding, nn.RNN/LSTM/GRU, nn.Linear) holding ``params``."""
    import torch

    vocab = params["embedding_weight"].shape[0]
    embedding = torch.nn.Embedding(vocab, E)
    rnn = {"rnn": lambda: torch.nn.RNN(E, H, nonlinearity="tanh"),
           "lstm": lambda: torch.nn.LSTM(E, H), "gru": lambda: torch.nn.GRU(E, H)}[cell]()
    head = torch.nn.Linear(H, HEAD)
    with torch.no_grad():
        embedding.weight.copy_(torch.from_numpy(params["embedding_weight"]))
        for name, p in rnn.named_parameters():
            p.copy_(torch.from_numpy(params[name]))
        head.weight.copy_(torch.from_numpy(params["head_weight"]))
        head.bias.copy_(torch.from_numpy(params["head_bias"]))
    return embedding, rnn, head


def torch_named_parameters(embedding, rnn, head):
    """{PARAM_NAMES name: tensor}."""
    named = {"embedding_weight": embedding.weight, "head_weight": head.weight,
             "head_bias": head.bias}
    named.update(dict(rnn.named_parameters()))
    return named


def build_torch(cell, T, B, H, E=None, mode="inference", seed=0, vocab=VOCAB):
    import torch
    import torch.nn.functional as F

    E = H if E is None else E
    embedding, rnn, head = torch_modules(cell, E, H, make_params(cell, E, H, seed, vocab))
    modules = (embedding, rnn, head)
    ids_np, y_np = make_data(T, B, seed, vocab)
    ids, y = torch.from_numpy(ids_np), torch.from_numpy(y_np).reshape(-1)
    if mode == "inference":
        for m in modules:
            m.eval()

        def step():
            with torch.inference_mode():
                out, _ = rnn(embedding(ids))
                return head(out)

        return Workload("torch", cell, mode, T, B, H, E, step,
                        lambda r: float(r.double().abs().mean()), modules)
    for m in modules:
        m.train()
    opt = torch.optim.Adam([p for m in modules for p in m.parameters()], lr=LR,
                           betas=BETAS, eps=EPS)

    def step():
        opt.zero_grad(set_to_none=True)
        out, _ = rnn(embedding(ids))
        loss = F.cross_entropy(head(out).reshape(-1, HEAD), y)
        loss.backward()
        opt.step()
        return loss

    return Workload("torch", cell, mode, T, B, H, E, step, lambda r: r.item(),
                    modules + (opt,))


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


def jax_logits(cell, p, ids):
    import jax.numpy as jnp

    out = jax_forward(cell, p, jnp.take(p["embedding_weight"], ids, axis=0))
    return out.reshape(-1, out.shape[-1]) @ p["head_weight"].T + p["head_bias"]


def jax_loss(cell, p, ids, y):
    import jax
    import jax.numpy as jnp

    logp = jax.nn.log_softmax(jax_logits(cell, p, ids), axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, y.reshape(-1, 1), axis=1))


def jax_adam(p, g, m, v, t, lr=LR, betas=BETAS, eps=EPS):
    """One Adam update of the pytrees (torch.optim.Adam's formula); ``t`` is
    the update count before this step (a float32 scalar).  Returns
    (p, m, v, t + 1).  Traceable: used inside the jitted training step."""
    import jax
    import jax.numpy as jnp

    b1, b2 = betas
    t = t + 1
    step_size = lr / (1 - b1 ** t)
    bc2_sqrt = jnp.sqrt(1 - b2 ** t)
    tm = jax.tree_util.tree_map
    m = tm(lambda m, g: b1 * m + (1 - b1) * g, m, g)
    v = tm(lambda v, g: b2 * v + (1 - b2) * (g * g), v, g)
    p = tm(lambda p, m, v: p - step_size * m / (jnp.sqrt(v) / bc2_sqrt + eps), p, m, v)
    return p, m, v, t


def build_jax(cell, T, B, H, E=None, mode="inference", seed=0, vocab=VOCAB):
    import functools

    import jax
    import jax.numpy as jnp

    E = H if E is None else E
    params = {k: jnp.asarray(v) for k, v in make_params(cell, E, H, seed, vocab).items()}
    ids_np, y_np = make_data(T, B, seed, vocab)
    ids, y = jnp.asarray(ids_np.astype(np.int32)), jnp.asarray(y_np.astype(np.int32))
    if mode == "inference":
        infer = jax.jit(functools.partial(jax_logits, cell))

        def step():
            return infer(params, ids).block_until_ready()

        return Workload("jax", cell, mode, T, B, H, E, step, _mean_abs)

    def train(state, ids, y):
        p, m, v, t = state
        loss, g = jax.value_and_grad(functools.partial(jax_loss, cell))(p, ids, y)
        return jax_adam(p, g, m, v, t), loss

    train = jax.jit(train, donate_argnums=0)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    box = {"state": (params, zeros, jax.tree_util.tree_map(jnp.zeros_like, params),
                     jnp.zeros((), jnp.float32))}

    def step():
        box["state"], loss = train(box["state"], ids, y)
        jax.block_until_ready(box["state"])
        return loss.block_until_ready()

    return Workload("jax", cell, mode, T, B, H, E, step, lambda r: float(r))


# -- ONNX Runtime (inference only) ---------------------------------------------------
ORT_OPS = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
ORT_THREADS = 1      # intra_op_num_threads of the sessions built (compare.py sets it)


def ort_graph(cell, E, H, params, steps=None, batch=None, embed=True, state=False,
              head=True):
    """The workload as an ONNX model, ORT's own recurrent operator holding the
    layer's weights (``fastrnn._onnx_layout`` reorders the gates; GRU with
    linear_before_reset=1, fastrnn's and PyTorch's GRU).

    embed: input ``ids`` (T, B) int64 through a Gather of the table, else the
    input is ``x`` (T, B, E) float32.  state: inputs ``h0`` (and ``c0``) and
    outputs ``hn`` (``cn``) too (the streaming section feeds them back).
    Output ``logits`` (T, B, HEAD), or without ``head`` the layer's ``ys``
    (T, B, H)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from fastrnn._onnx_layout import from_fastrnn

    op = ORT_OPS[cell]
    W, R, Bias, _ = from_fastrnn(op, params, 0, 1, H)
    f32 = TensorProto.FLOAT
    inits = [numpy_helper.from_array(a.astype(np.float32), n)
             for a, n in ((W, "W"), (R, "R"), (Bias, "B"))]
    inits += [numpy_helper.from_array(np.ascontiguousarray(params["head_weight"].T), "head_w"),
              numpy_helper.from_array(params["head_bias"], "head_b"),
              numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    nodes, inputs = [], []
    if embed:
        inits.append(numpy_helper.from_array(params["embedding_weight"], "table"))
        inputs.append(helper.make_tensor_value_info("ids", TensorProto.INT64, [steps, batch]))
        nodes.append(helper.make_node("Gather", ["table", "ids"], ["x"]))
    else:
        inputs.append(helper.make_tensor_value_info("x", f32, [steps, batch, E]))
    op_inputs, outputs = ["x", "W", "R", "B", "", ""], ["y", ""]
    if state:
        states = ("h0", "c0") if cell == "lstm" else ("h0",)
        inputs += [helper.make_tensor_value_info(n, f32, [1, batch, H]) for n in states]
        op_inputs = op_inputs[:5] + list(states)
        outputs = ["y", "hn"] + (["cn"] if cell == "lstm" else [])
    attrs = {"hidden_size": H}
    if cell == "gru":
        attrs["linear_before_reset"] = 1
    nodes += [helper.make_node(op, op_inputs, outputs, **attrs),
              helper.make_node("Squeeze", ["y", "axis1"], ["ys"])]     # (T, 1, B, H)
    if head:
        nodes += [helper.make_node("MatMul", ["ys", "head_w"], ["mm"]),
                  helper.make_node("Add", ["mm", "head_b"], ["logits"])]
    out_info = [helper.make_tensor_value_info("logits" if head else "ys", f32, None)]
    out_info += [helper.make_tensor_value_info(n, f32, None) for n in outputs[1:] if n]
    graph = helper.make_graph(nodes, "workload", inputs, out_info, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    return model.SerializeToString()


def ort_session(model_bytes, threads):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def build_ort(cell, T, B, H, E=None, mode="inference", seed=0, vocab=VOCAB):
    if mode != "inference":
        raise ValueError("ONNX Runtime runs inference only")
    E = H if E is None else E
    params = make_params(cell, E, H, seed, vocab)
    session = ort_session(ort_graph(cell, E, H, params), ORT_THREADS)
    ids, _ = make_data(T, B, seed, vocab)
    feeds = {"ids": ids}

    def step():
        return session.run(["logits"], feeds)[0]

    return Workload("ort", cell, mode, T, B, H, E, step, _mean_abs, session)


BUILDERS = {"fastrnn": build_fastrnn, "torch": build_torch, "numpy": build_numpy,
            "jax": build_jax, "ort": build_ort}


def build(framework, cell, T, B, H, E=None, mode="inference", seed=0, vocab=VOCAB):
    """One ``Workload``; E defaults to H, the vocabulary to ``VOCAB``."""
    if framework not in BUILDERS:
        raise ValueError(f"framework must be one of {FRAMEWORKS}, got {framework!r}")
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return BUILDERS[framework](cell, T, B, H, E, mode, seed, vocab)


# -- correctness of the training step (used by self_check.py) ---------
def _max_rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def check_training_gradients(cell, T=6, B=4, E=5, H=8, vocab=11, seed=1, tol=1e-4):
    """Loss and all gradients (embedding table included) of one training
    step, before the update: the numpy reference (``NumpyModel``), fastrnn
    (``FastrnnModel``) and JAX vs torch, each when importable.  A small
    vocabulary so that rows get several ids (the scatter-add accumulates).
    Returns {name: (max relative error, tolerance)}."""
    import torch
    import torch.nn.functional as F

    import numpy_reference

    params = make_params(cell, E, H, seed, vocab)
    ids, y = make_data(T, B, seed, vocab)

    modules = torch_modules(cell, E, H, params)
    embedding, rnn, head = modules
    out, _ = rnn(embedding(torch.from_numpy(ids)))
    loss_t = F.cross_entropy(head(out).reshape(-1, HEAD), torch.from_numpy(y).reshape(-1))
    loss_t.backward()
    ref = {n: p.grad.numpy() for n, p in torch_named_parameters(*modules).items()}
    assert set(ref) == set(PARAM_NAMES)

    def error(loss, grads):
        return max([abs(loss - loss_t.item()) / abs(loss_t.item())]
                   + [_max_rel(grads[n], ref[n]) for n in ref])

    layer = numpy_reference.make_layer(cell, E, H)
    model = NumpyModel(layer, params, ids, y)
    errors = {"numpy vs torch": (error(model.forward_backward(), model.gradients()), tol)}
    try:
        import fastrnn as fr
    except ImportError:
        pass
    else:
        layer = {"rnn": fr.RNN, "lstm": fr.LSTM, "gru": fr.GRU}[cell](E, H)
        model = FastrnnModel(layer, params, ids, y)
        loss = model.forward_backward()
        grads = dict(layer.grads, embedding_weight=model.embedding.grads["weight"],
                     head_weight=model.head.grads["weight"], head_bias=model.head.grads["bias"])
        errors["fastrnn vs torch"] = (error(loss, grads), tol)
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return errors
    p = {k: jnp.asarray(v) for k, v in params.items()}
    loss_j, g = jax.value_and_grad(lambda p: jax_loss(cell, p, jnp.asarray(ids.astype(np.int32)),
                                                      jnp.asarray(y.astype(np.int32))))(p)
    errors["jax vs torch"] = (error(float(loss_j), {n: np.asarray(g[n]) for n in g}), tol)
    return errors


class _ArrayModule:
    """One parameter array ``w`` behind the module protocol fr.optim needs
    (``named_parameters()`` and ``grads``)."""

    def __init__(self, w):
        self.w = w.copy()
        self.grads = {"w": np.zeros_like(w)}

    def named_parameters(self):
        return [("w", self.w)]


def check_adam(steps=3, seed=0, tol=1e-5):
    """Parameters after ``steps`` Adam updates with the same (random) gradients:
    ``NumpyAdam``, ``jax_adam`` and ``fr.optim.Adam`` vs ``torch.optim.Adam``
    (default implementation), each when importable.  Gradients include exact
    zeros (unused embedding rows) and differ per step.
    Returns {name: (max relative error, tolerance)}."""
    import torch

    rng = np.random.default_rng(seed)
    shapes = [(7, 5), (12, 5), (12,), (64, 3)]
    start = [rng.uniform(-1, 1, s).astype(np.float32) for s in shapes]
    grads = [[(rng.standard_normal(s) * 10.0 ** rng.integers(-4, 1, s)).astype(np.float32)
              for s in shapes] for _ in range(steps)]
    for g in grads:
        g[0][:2] = 0                           # rows no id touched

    tensors = [torch.tensor(p, requires_grad=True) for p in start]
    opt = torch.optim.Adam(tensors, lr=LR, betas=BETAS, eps=EPS)
    for g in grads:
        for t, gi in zip(tensors, g):
            t.grad = torch.from_numpy(gi.copy())
        opt.step()
    ref = [t.detach().numpy() for t in tensors]

    def error(result):
        return max(_max_rel(a, b) for a, b in zip(result, ref))

    params = [p.copy() for p in start]
    live = [np.zeros_like(p) for p in params]
    ours = NumpyAdam(params, live)
    for g in grads:
        for dst, src in zip(live, g):
            dst[...] = src
        ours.step()
    errors = {"numpy Adam vs torch": (error(params), tol)}
    try:
        import fastrnn as fr
    except ImportError:
        pass
    else:
        modules = [_ArrayModule(p) for p in start]
        opt_fr = fr.optim.Adam(modules, lr=LR, betas=BETAS, eps=EPS)
        for g in grads:
            for module, gi in zip(modules, g):
                module.grads["w"][...] = gi
            opt_fr.step()
        errors["fastrnn Adam vs torch"] = (error([m.w for m in modules]), tol)
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return errors
    p = [jnp.asarray(a) for a in start]
    m = [jnp.zeros_like(a) for a in p]
    v = [jnp.zeros_like(a) for a in p]
    t = jnp.zeros((), jnp.float32)
    update = jax.jit(jax_adam)
    for g in grads:
        p, m, v, t = update(p, [jnp.asarray(a) for a in g], m, v, t)
    errors["jax Adam vs torch"] = (error([np.asarray(a) for a in p]), tol)
    return errors
