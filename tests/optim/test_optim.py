"""fr.optim optimizers: parity with torch.optim, L1, and which parameters they update."""

import inspect

import numpy as np
import pytest

import fastrnn as fr
from fastrnn import optim
from optim_cases import (CASES, NAMES, TOL, assert_params_close, case_id, make_modules, parameters,
                         run_pair, set_grads, snapshot)


# -- parity -----------------------------------------------------------------------

@pytest.mark.torch
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_matches_torch(torch, case, dtype):
    name, options = case
    ours, theirs, opt, topt, tensors = run_pair(torch, name, options, dtype,
                                                lr_change=(3, options["lr"] * 0.5))
    assert_params_close(ours, theirs, dtype, case_id(case))
    if dtype == "float64":
        # the moment buffers agree too
        buffers = opt.state_dict()["buffers"]
        for (k, pname, _), t in zip(parameters(opt.modules), tensors):
            for key, value in topt.state[t].items():
                ours_value = buffers[f"{k}.{pname}.{key}"]
                np.testing.assert_allclose(ours_value, np.asarray(value), rtol=1e-10,
                                           atol=1e-12, err_msg=f"{k}.{pname}.{key}")


@pytest.mark.torch
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name,options", [
    ("SGD", dict(lr=0.05, momentum=0.9, weight_decay=0.1)),
    ("Adam", dict(lr=0.05, weight_decay=0.1)),
    ("AdamW", dict(lr=0.05, weight_decay=0.3)),
    ("RMSprop", dict(lr=0.01, centered=True, weight_decay=0.1)),
    ("Adagrad", dict(lr=0.05, weight_decay=0.1)),
])
def test_l1_is_the_sign_term_in_the_gradient(torch, name, options, dtype):
    ours, theirs, _, _, _ = run_pair(torch, name, options, dtype, l1=0.03)
    assert_params_close(ours, theirs, dtype, name)
    # and it matters: without the term the result differs
    plain, _, _, _, _ = run_pair(torch, name, options, dtype, l1=0.0)
    assert max(np.abs(a - b).max() for a, b in zip(ours, plain)) > 1e-4


def test_l1_sign_of_zero_is_zero():
    layer = fr.Linear(3, 2, dtype="float64", seed=0)
    layer._params["weight"][...] = 0.0
    opt = optim.SGD(layer, lr=1.0, l1=0.5)
    before_bias = layer.state_dict()["bias"]
    opt.step()    # zero gradients: only the L1 term could move anything
    np.testing.assert_array_equal(layer.state_dict()["weight"], 0.0)
    np.testing.assert_allclose(layer.state_dict()["bias"],
                               before_bias - 0.5 * np.sign(before_bias), rtol=0, atol=1e-15)


@pytest.mark.torch
@pytest.mark.parametrize("name", NAMES)
def test_defaults_match_torch(torch, name):
    ours = inspect.signature(getattr(optim, name)).parameters
    theirs = inspect.signature(getattr(torch.optim, name)).parameters
    for key, param in ours.items():
        if key in ("modules", "l1"):
            continue
        assert key in theirs, key
        assert param.default == theirs[key].default, (key, param.default,
                                                      theirs[key].default)
    assert ours["l1"].default == 0.0


# -- which parameters ----------------------------------------------------------------

class FrozenLinear(fr.Linear):
    """A Linear that reports no parameters (what a frozen module does)."""

    def named_parameters(self):
        return []


class ModelWithModules:
    def __init__(self, modules):
        self._list = modules

    def modules(self):
        return self._list


@pytest.mark.parametrize("name", NAMES)
def test_frozen_and_parameterless_modules_are_skipped(name, rng):
    frozen = FrozenLinear(3, 2, dtype="float64", seed=0)
    empty = fr.Module(np.dtype(np.float64))
    live = fr.Linear(3, 2, dtype="float64", seed=1)
    before_frozen = frozen.state_dict()
    before_live = live.state_dict()
    opt = getattr(optim, name)(ModelWithModules([frozen, empty, live]), lr=0.1)
    for m in (frozen, live):
        for g in m.grads.values():
            g[...] = rng.standard_normal(g.shape)
    opt.step()
    for key, value in frozen.state_dict().items():
        np.testing.assert_array_equal(value, before_frozen[key])
    assert all(not np.array_equal(v, before_live[k]) for k, v in live.state_dict().items())
    keys = opt.state_dict()["buffers"]
    assert all(key.startswith("2.") for key in keys)    # module index 2 = live


class SwitchableLinear(fr.Linear):
    """A Linear that can be frozen (lists no parameters) and unfrozen."""

    frozen = False

    def named_parameters(self):
        return [] if self.frozen else super().named_parameters()


@pytest.mark.torch
@pytest.mark.parametrize("name", ["Adam", "Adagrad", "RMSprop", "SGD"])
def test_module_frozen_for_a_while_matches_torch_skipping_it(torch, name):
    """Frozen steps are skipped like torch's grad=None parameters: the state
    (Adam's bias-correction step count included) is per parameter."""
    options = dict(lr=0.05) if name != "SGD" else dict(lr=0.05, momentum=0.9)
    a = fr.Linear(3, 4, dtype="float64", seed=0)
    b = SwitchableLinear(4, 2, dtype="float64", seed=1)
    tensors = {(k, n): torch.tensor(p.copy(), requires_grad=True)
               for k, m in enumerate([a, b]) for n, p in m.named_parameters()}
    opt = getattr(optim, name)([a, b], **options)
    topt = getattr(torch.optim, name)(list(tensors.values()), **options)
    rng = np.random.default_rng(3)
    for step in range(6):
        b.frozen = step in (1, 2, 3)
        for (k, n), t in tensors.items():
            module = [a, b][k]
            g = rng.standard_normal(t.shape)
            module.grads[n][...] = g
            t.grad = None if (k == 1 and b.frozen) else torch.from_numpy(g)
        opt.step()
        topt.step()
    b.frozen = False
    for (k, n), t in tensors.items():
        np.testing.assert_allclose([a, b][k].state_dict()[n], t.detach().numpy(),
                                   rtol=1e-10, atol=1e-12, err_msg=f"{k}.{n}")
    if name != "SGD":
        state = opt.state_dict()["buffers"]
        assert int(state["0.weight.step"]) == 6 and int(state["1.weight.step"]) == 3


@pytest.mark.torch
def test_float32_and_float64_modules_in_one_optimizer(torch):
    modules = [fr.Linear(3, 4, dtype="float32", seed=0), fr.Linear(4, 2, dtype="float64", seed=1)]
    tensors = [torch.tensor(p.copy(), requires_grad=True) for _, _, p in parameters(modules)]
    opt, topt = optim.Adam(modules, lr=0.05), torch.optim.Adam(tensors, lr=0.05)
    rng = np.random.default_rng(4)
    for _ in range(4):
        for g, t in zip(set_grads(modules, rng), tensors):
            t.grad = torch.from_numpy(g.copy())
        opt.step()
        topt.step()
    for (k, _, p), t in zip(parameters(modules), tensors):
        assert p.dtype == (np.float32 if k == 0 else np.float64)
        np.testing.assert_allclose(p, t.detach().numpy(), **TOL[p.dtype.name])


def test_accepts_one_module_a_list_or_a_model(rng):
    results = []
    for wrap in (lambda m: m[0], lambda m: list(m), lambda m: tuple(m),
                 lambda m: ModelWithModules(m)):
        layer = fr.Linear(4, 3, dtype="float64", seed=2)
        layer.grads["weight"][...] = 1.0
        opt = optim.Adam(wrap([layer]), lr=0.1)
        opt.step()
        results.append(layer.state_dict()["weight"])
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


def test_updates_in_place_and_zero_grad(rng):
    modules = make_modules("float32")
    live = [p for _, _, p in parameters(modules)]
    set_grads(modules, rng)
    opt = optim.SGD(modules, lr=0.1, momentum=0.9)
    before = snapshot(modules)
    opt.step()
    for (_, _, p), arr, old in zip(parameters(modules), live, before):
        assert p is arr and not np.array_equal(p, old)
    opt.zero_grad()
    assert all(not g.any() for m in modules for g in m.grads.values())


@pytest.mark.parametrize("name", NAMES)
def test_results_do_not_depend_on_threads(name):
    results = []
    for threads in (1, 2, 3):
        fr.set_num_threads(threads)
        layer = fr.Linear(300, 200, dtype="float32", seed=3)    # 60,000 weights
        opt = getattr(optim, name)(layer, lr=0.01)
        rng = np.random.default_rng(0)
        for _ in range(3):
            for g in layer.grads.values():
                g[...] = rng.standard_normal(g.shape)
            opt.step()
        results.append(layer.state_dict())
    for other in results[1:]:
        for key in other:
            np.testing.assert_array_equal(other[key], results[0][key])
