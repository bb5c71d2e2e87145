"""fr.optim optimizers: parity with torch.optim, L1, state dicts, bad input."""

import inspect
import io
import json

import numpy as np
import pytest

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


# -- state dicts ------------------------------------------------------------------------

def checkpoint_roundtrip(state):
    """Store like a checkpoint writer: buffers in .npz, the rest in JSON."""
    blob = io.BytesIO()
    np.savez(blob, **state["buffers"])
    blob.seek(0)
    meta = json.loads(json.dumps({k: v for k, v in state.items() if k != "buffers"}))
    with np.load(blob) as data:
        meta["buffers"] = {key: data[key] for key in data.files}
    return meta


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_state_dict_resume_equals_uninterrupted(case, dtype):
    name, options = case
    cls = getattr(optim, name)
    grads = [set_grads(make_modules(dtype), np.random.default_rng(s)) for s in range(6)]

    def apply(modules, opt, gs):
        for g_list in gs:
            for (k, pname, _), g in zip(parameters(modules), g_list):
                modules[k].grads[pname][...] = g
            opt.step()

    straight = make_modules(dtype)
    opt = cls(straight, l1=0.01, **options)
    apply(straight, opt, grads)

    first = make_modules(dtype)
    opt1 = cls(first, l1=0.01, **options)
    apply(first, opt1, grads[:3])
    saved = checkpoint_roundtrip(opt1.state_dict())
    resumed = make_modules(dtype, seed=5)    # different init, then load the weights
    for m_new, m_old in zip(resumed, first):
        m_new.load_state_dict(m_old.state_dict())
    opt2 = cls(resumed, lr=123.0)    # other hyperparameters: the state brings them
    opt2.load_state_dict(saved)
    assert opt2.step_count == 3 and opt2.lr == options["lr"]
    apply(resumed, opt2, grads[3:])
    for a, b in zip(snapshot(resumed), snapshot(straight)):
        np.testing.assert_array_equal(a, b)


def test_state_dict_format():
    modules = make_modules("float32")
    opt = optim.Adam(modules, amsgrad=True)
    state = opt.state_dict()
    assert state["type"] == "Adam" and state["step"] == 0 and state["buffers"] == {}
    json.dumps(state["hyperparameters"])
    opt.step()
    state = opt.state_dict()
    assert state["step"] == 1
    for key, value in state["buffers"].items():
        assert isinstance(value, np.ndarray)
        k, pname, buffer = key.split(".")
        param = dict(modules[int(k)].named_parameters())[pname]
        if buffer == "step":
            assert value.shape == () and value.dtype == np.int64 and int(value) == 1
        else:
            assert buffer in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
            assert value.shape == param.shape and value.dtype == param.dtype
            assert not np.shares_memory(value, opt._state[(int(k), pname)][buffer])
    assert len(state["buffers"]) == 4 * 10


def _bad_states(good):
    def edit(fn):
        state = {k: (dict(v) if isinstance(v, dict) else v) for k, v in good.items()}
        fn(state)
        return state

    first = next(k for k in good["buffers"] if k.endswith("exp_avg"))
    return [
        ("not a mapping", [1, 2], TypeError, "must be a mapping"),
        ("wrong type", edit(lambda s: s.update(type="SGD")), ValueError, "'SGD' optimizer"),
        ("missing key", edit(lambda s: s.pop("step")), ValueError, r"missing \['step'\]"),
        ("extra key", edit(lambda s: s.update(extra=1)), ValueError, r"unexpected \['extra'\]"),
        ("bad step", edit(lambda s: s.update(step=-1)), ValueError, "step must be an int"),
        ("bad lr", edit(lambda s: s["hyperparameters"].update(lr=-1.0)), ValueError,
         "lr must be"),
        ("unknown hyperparameter", edit(lambda s: s["hyperparameters"].update(foo=1)),
         ValueError, r"unexpected \['foo'\]"),
        ("shape", edit(lambda s: s["buffers"].update({first: np.zeros(3)})), ValueError,
         "must have the parameter's shape"),
        ("nan", edit(lambda s: s["buffers"].update(
            {first: np.full_like(good["buffers"][first], np.nan)})), ValueError, "NaN"),
        ("unknown parameter", edit(lambda s: s["buffers"].update({"1.nope.exp_avg": 0})),
         ValueError, "has no parameter 'nope'"),
        ("module index", edit(lambda s: s["buffers"].update({"7.weight.exp_avg": 0})),
         ValueError, "names module 7"),
        ("bad key", edit(lambda s: s["buffers"].update({"weight": 0})), ValueError,
         "is not '<module index>"),
        ("unknown buffer", edit(lambda s: s["buffers"].update({"1.weight.momentum": 0})),
         ValueError, "not 'momentum'"),
        ("missing buffer", edit(lambda s: s["buffers"].pop(first)), ValueError,
         r"missing buffers \['exp_avg'\]"),
        ("amsgrad without its buffer", edit(lambda s: s["hyperparameters"].update(
            amsgrad=True)), ValueError, r"missing buffers \['max_exp_avg_sq'\]"),
        ("bad param step", edit(lambda s: s["buffers"].update({"1.weight.step": 0})),
         ValueError, "positive integer"),
    ]


def test_load_state_dict_rejects_bad_states_and_changes_nothing(rng):
    modules = make_modules("float64")
    opt = optim.Adam(modules, lr=0.01)
    set_grads(modules, rng)
    opt.step()
    good = opt.state_dict()
    set_grads(modules, rng)
    opt.step()
    before = opt.state_dict()
    for label, state, error, match in _bad_states(good):
        with pytest.raises(error, match=match):
            opt.load_state_dict(state)
        after = opt.state_dict()
        assert after["step"] == 2 and after["hyperparameters"] == before["hyperparameters"], label
        for key, value in before["buffers"].items():
            np.testing.assert_array_equal(after["buffers"][key], value, err_msg=label)


def test_load_state_dict_accepts_partial_state():
    modules = make_modules("float64")
    opt = optim.Adagrad(modules)
    opt.step()
    state = opt.state_dict()
    state["buffers"] = {k: v for k, v in state["buffers"].items() if k.startswith("1.")}
    fresh = optim.Adagrad(make_modules("float64"))
    fresh.load_state_dict(state)
    assert set(fresh.state_dict()["buffers"]) == set(state["buffers"])


# -- bad input ---------------------------------------------------------------------------

@pytest.mark.parametrize("name,options,error,match", [
    ("SGD", dict(lr=-0.1), ValueError, r"SGD: lr must be a finite number >= 0.0, got -0.1"),
    ("SGD", dict(lr=float("nan")), ValueError, "lr must be a finite number"),
    ("SGD", dict(lr="0.1"), TypeError, "lr must be a finite number >= 0.0, got '0.1'"),
    ("SGD", dict(momentum=-0.5), ValueError, "momentum must be"),
    ("SGD", dict(nesterov=True), ValueError, "nesterov=True needs momentum > 0"),
    ("SGD", dict(nesterov=True, momentum=0.9, dampening=0.1), ValueError,
     "nesterov=True needs momentum > 0 and dampening 0"),
    ("SGD", dict(dampening=1.5), ValueError, "dampening must be"),
    ("SGD", dict(nesterov=1), TypeError, "nesterov must be True or False"),
    ("SGD", dict(weight_decay=-1.0), ValueError, "weight_decay must be"),
    ("SGD", dict(l1=-1e-3), ValueError, "l1 must be"),
    ("Adam", dict(betas=(1.0, 0.9)), ValueError, r"betas\[0\] must be a number in "
                                                 r"\[0.0, 1.0\), got 1.0"),
    ("Adam", dict(betas=(0.9, -0.1)), ValueError, r"betas\[1\]"),
    ("Adam", dict(betas=0.9), ValueError, "betas must be a pair"),
    ("Adam", dict(eps=0.0), ValueError, "eps must be a finite number > 0.0"),
    ("Adam", dict(amsgrad="yes"), TypeError, "amsgrad must be True or False"),
    ("AdamW", dict(weight_decay=-0.01), ValueError, "AdamW: weight_decay"),
    ("RMSprop", dict(alpha=1.0), ValueError, "alpha must be"),
    ("RMSprop", dict(centered=None), TypeError, "centered must be True or False"),
    ("Adagrad", dict(lr_decay=-1.0), ValueError, "lr_decay must be"),
    ("Adagrad", dict(initial_accumulator_value=-1.0), ValueError,
     "initial_accumulator_value must be"),
])
def test_bad_hyperparameters(name, options, error, match):
    with pytest.raises(error, match=match):
        getattr(optim, name)(fr.Linear(2, 2), **options)


@pytest.mark.parametrize("modules,error,match", [
    (None, TypeError, "modules must be a Module, a list/tuple of Modules or an object "
                      "with a modules\\(\\) method, got NoneType"),
    ([], ValueError, "modules must not be empty"),
    ([fr.Linear(2, 2), "x"], TypeError, r"modules\[1\] must be a Module.*got str"),
    (np.zeros(3), TypeError, "got ndarray"),
])
def test_bad_modules(modules, error, match):
    with pytest.raises(error, match=match):
        optim.Adam(modules)


def test_same_module_twice_is_refused():
    layer = fr.Linear(2, 2)
    with pytest.raises(ValueError, match=r"modules\[1\] \(Linear\) appears more than once"):
        optim.SGD([layer, layer])


def test_shared_parameter_array_is_refused():
    first, second = fr.Linear(2, 2, dtype="float64"), fr.Linear(2, 2, dtype="float64")
    second._params["weight"] = first._params["weight"]
    opt = optim.SGD([first, second])
    with pytest.raises(ValueError, match=r"modules\[1\] parameter 'weight' is the same array "
                                         r"as modules\[0\] parameter 'weight'"):
        opt.step()


def test_lr_property():
    opt = optim.Adam(fr.Linear(2, 2), lr=0.5)
    assert opt.lr == 0.5
    opt.lr = 0.25
    assert opt.lr == 0.25 and opt.state_dict()["hyperparameters"]["lr"] == 0.25
    for bad, error in ((-1.0, ValueError), (float("inf"), ValueError), (None, TypeError),
                       (True, TypeError)):
        with pytest.raises(error, match="lr must be"):
            opt.lr = bad
    assert opt.lr == 0.25


def test_bad_gradient_is_refused_before_anything_changes():
    first, second = fr.Linear(3, 2, dtype="float64", seed=0), fr.Linear(3, 2, dtype="float64")
    opt = optim.Adam([first, second])
    first.grads["weight"][...] = 1.0
    before = first.state_dict()
    second.grads["bias"] = np.zeros(2, dtype=np.float32)
    with pytest.raises(ValueError, match=r"modules\[1\] parameter 'bias'.*dtype float64, "
                                         r"got \(2,\) float32"):
        opt.step()
    second.grads["bias"] = np.zeros(5)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        opt.step()
    second.grads["bias"] = np.zeros(4)[::2]
    with pytest.raises(ValueError, match="must be C-contiguous"):
        opt.step()
    del second.grads["bias"]
    with pytest.raises(TypeError, match=r"grads\['bias'\] must be a numpy array, got NoneType"):
        opt.step()
    for key, value in first.state_dict().items():
        np.testing.assert_array_equal(value, before[key])
    assert opt.step_count == 0 and opt.state_dict()["buffers"] == {}


def test_replaced_parameter_is_detected():
    layer = fr.Linear(3, 2, dtype="float64")
    opt = optim.Adam(layer)
    opt.step()
    layer._params["weight"] = np.zeros((4, 3))
    layer.grads["weight"] = np.zeros((4, 3))
    with pytest.raises(ValueError, match="the parameter was replaced"):
        opt.step()


def test_repr_and_hyperparameters_copy():
    opt = optim.AdamW(fr.Linear(2, 2), betas=(0.8, 0.9))
    assert repr(opt) == ("AdamW(lr=0.001, betas=(0.8, 0.9), eps=1e-08, weight_decay=0.01, "
                         "amsgrad=False, l1=0.0)")
    hp = opt.hyperparameters
    hp["betas"][0] = 0.0
    assert opt.hyperparameters["betas"] == [0.8, 0.9]


def test_kernels_refuse_arrays_of_other_lengths():
    """Defence in depth: the private kernels check lengths before any loop."""
    from fastrnn._kernels import _optim
    a, b, e = np.zeros(8), np.zeros(7), np.empty(0)
    with pytest.raises(ValueError, match="adam_step: the arrays must all have"):
        _optim.adam_step(a, a, a, b, e, 1.0, 0.0, 0.0, 0.9, 0.999, 1e-3, 1.0, 1e-8, 1)
    with pytest.raises(ValueError, match="sgd_step"):
        _optim.sgd_step(a, b, e, 0.1, 0.0, 0.0, 0.0, 0.0, False, False, 1)
    with pytest.raises(ValueError, match="rmsprop_step"):
        _optim.rmsprop_step(a, a, a, b, e, 0.1, 0.9, 1e-8, 0.0, 0.0, 0.0, 1)
    with pytest.raises(ValueError, match="adagrad_step"):
        _optim.adagrad_step(a, a, b, 0.1, 1e-8, 0.0, 0.0, 1)


# -- checks kept between steps -------------------------------------------------------------
# step() keeps the checked parameter list while the modules' arrays stay the same; each
# test below changes something after a first step and fails if the change went unnoticed.

def _stepped(name="Adam", dtype="float64", **options):
    layer = fr.Linear(3, 2, dtype=dtype, seed=0)
    opt = getattr(optim, name)(layer, lr=0.1, **options)
    layer.grads["weight"][...] = 1.0
    opt.step()
    return layer, opt


@pytest.mark.parametrize("name", NAMES)
def test_gradient_array_replaced_after_a_step_is_used(name, rng):
    """A module that puts a new gradient array in ``grads`` (instead of filling
    the old one) has the new array read, not a kept view of the old one."""
    layer, opt = _stepped(name)
    twin, twin_opt = _stepped(name)
    g = rng.standard_normal((2, 3))
    layer.grads["weight"] = g.copy()              # a new array
    twin.grads["weight"][...] = g                 # the same values, in place
    opt.step()
    twin_opt.step()
    for key, value in layer.state_dict().items():
        np.testing.assert_array_equal(value, twin.state_dict()[key])
    # the whole grads mapping replaced
    layer.grads = {k: v.copy() for k, v in layer.grads.items()}
    layer.grads["bias"][...] = 5.0
    twin.grads["bias"][...] = 5.0
    opt.step()
    twin_opt.step()
    for key, value in layer.state_dict().items():
        np.testing.assert_array_equal(value, twin.state_dict()[key])


def test_parameter_made_read_only_after_a_step_is_refused():
    layer, opt = _stepped()
    layer._params["weight"].flags.writeable = False
    before = layer.state_dict()
    with pytest.raises(ValueError, match=r"Adam: modules\[0\] parameter 'weight' is read-only"):
        opt.step()
    for key, value in layer.state_dict().items():
        np.testing.assert_array_equal(value, before[key])
    layer._params["weight"].flags.writeable = True
    opt.step()
    assert opt.step_count == 2


def test_parameter_reshaped_or_retyped_in_place_is_detected():
    layer, opt = _stepped()
    layer._params["weight"].shape = (3, 2)
    layer.grads["weight"].shape = (3, 2)
    with pytest.raises(ValueError, match=r"parameter 'weight' is now \(3, 2\) float64, but "
                                         r"its optimizer state is \(2, 3\) float64"):
        opt.step()
    layer, opt = _stepped(dtype="float32")
    layer._params["bias"].dtype = np.int32
    with pytest.raises(TypeError, match=r"parameter 'bias' must be a float32 or float64 numpy "
                                        r"array, got int32"):
        opt.step()
    layer, opt = _stepped(dtype="float32")
    layer.grads["bias"].dtype = np.int32
    with pytest.raises(ValueError, match=r"parameter 'bias': the gradient must have the "
                                         r"parameter's shape \(2,\) and dtype float32, got "
                                         r"\(2,\) int32"):
        opt.step()


@pytest.mark.parametrize("name", NAMES)
def test_load_state_dict_into_a_stepped_optimizer_takes_effect(name, rng):
    """Loading replaces the state the kept parameter list points at."""
    grads = [rng.standard_normal((2, 3)) for _ in range(3)]

    def step(layer, opt, g):
        layer.grads["weight"][...] = g
        layer.grads["bias"][...] = g[:, 0]
        opt.step()

    options = dict(momentum=0.9) if name in ("SGD", "RMSprop") else {}
    twin = fr.Linear(3, 2, dtype="float64", seed=0)
    twin_opt = getattr(optim, name)(twin, lr=0.1, **options)
    step(twin, twin_opt, grads[0])
    saved_weights, saved_state = twin.state_dict(), twin_opt.state_dict()
    step(twin, twin_opt, grads[1])

    layer = fr.Linear(3, 2, dtype="float64", seed=0)
    opt = getattr(optim, name)(layer, lr=0.1, **options)
    for g in grads:
        step(layer, opt, g)
    layer.load_state_dict(saved_weights)
    opt.load_state_dict(saved_state)
    step(layer, opt, grads[1])
    for key, value in layer.state_dict().items():
        np.testing.assert_array_equal(value, twin.state_dict()[key], err_msg=key)
