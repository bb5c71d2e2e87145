"""fr.optim optimizers' state dicts (round trips, partial and bad states) and
the checks they keep between steps."""

import io
import json

import numpy as np
import pytest

import fastrnn as fr
from fastrnn import optim
from optim_cases import CASES, NAMES, case_id, make_modules, parameters, set_grads, snapshot


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
