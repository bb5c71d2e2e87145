"""The optimizer cases and helpers the fr.optim tests share: the torch parity
cases, small modules with gradients, and a side-by-side run against torch.optim."""

import numpy as np

import fastrnn as fr
from fastrnn import optim


TOL = {"float64": dict(rtol=1e-10, atol=1e-12), "float32": dict(rtol=2e-4, atol=2e-5)}

# (fastrnn class name, options).  torch takes the same options (minus l1).
CASES = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.8, dampening=0.3)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("SGD", dict(lr=0.05, weight_decay=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.7, weight_decay=0.1, nesterov=True)),
    ("Adam", dict(lr=0.05)),
    ("Adam", dict(lr=0.05, weight_decay=0.1)),
    ("Adam", dict(lr=0.05, amsgrad=True)),
    ("Adam", dict(lr=0.05, betas=(0.3, 0.8), eps=1e-3)),
    ("Adam", dict(lr=0.05, weight_decay=0.1, amsgrad=True)),
    ("AdamW", dict(lr=0.05)),
    ("AdamW", dict(lr=0.05, weight_decay=0.3)),
    ("AdamW", dict(lr=0.05, weight_decay=0.3, amsgrad=True, betas=(0.5, 0.9))),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, momentum=0.9)),
    ("RMSprop", dict(lr=0.01, centered=True)),
    ("RMSprop", dict(lr=0.01, alpha=0.3, centered=True, momentum=0.5, weight_decay=0.1)),
    ("Adagrad", dict(lr=0.05)),
    ("Adagrad", dict(lr=0.05, lr_decay=0.1)),
    ("Adagrad", dict(lr=0.05, weight_decay=0.1, initial_accumulator_value=0.5, eps=1e-3)),
]
NAMES = ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad"]


def case_id(case):
    name, options = case
    return name + "-" + ",".join(f"{k}={v}" for k, v in options.items())


def make_modules(dtype, seed=0):
    """An LSTM (2 layers) and a Linear head: 10 parameter arrays of 4 shapes."""
    return [fr.LSTM(4, 5, num_layers=2, dtype=dtype, seed=seed),
            fr.Linear(5, 3, dtype=dtype, seed=seed + 1)]


def parameters(modules):
    return [(k, name, p) for k, m in enumerate(modules) for name, p in m.named_parameters()]


def snapshot(modules):
    return [p.copy() for _, _, p in parameters(modules)]


def set_grads(modules, rng):
    """Fresh random gradients in every module; returns them in parameter order."""
    grads = []
    for k, name, p in parameters(modules):
        g = rng.standard_normal(p.shape).astype(p.dtype)
        modules[k].grads[name][...] = g
        grads.append(g)
    return grads


def run_pair(torch, name, options, dtype, steps=5, l1=0.0, lr_change=None):
    """Run fastrnn's and torch's optimizer on the same parameters and gradients;
    returns (fastrnn params, torch params, fastrnn optimizer, torch optimizer,
    torch tensors)."""
    modules = make_modules(dtype)
    tensors = [torch.tensor(p.copy(), requires_grad=True) for _, _, p in parameters(modules)]
    opt = getattr(optim, name)(modules, l1=l1, **options)
    topt = getattr(torch.optim, name)(tensors, **options)
    rng = np.random.default_rng(7)
    for step in range(steps):
        if lr_change is not None and step == lr_change[0]:
            opt.lr = lr_change[1]
            topt.param_groups[0]["lr"] = lr_change[1]
        grads = set_grads(modules, rng)
        for g, t in zip(grads, tensors):
            # the L1 term by hand: what fastrnn adds before the update
            t.grad = torch.from_numpy(g + np.asarray(l1, g.dtype) * np.sign(t.detach().numpy()))
        opt.step()
        topt.step()
    return snapshot(modules), [t.detach().numpy() for t in tensors], opt, topt, tensors


def assert_params_close(ours, theirs, dtype, context=""):
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, **TOL[dtype], err_msg=context)
