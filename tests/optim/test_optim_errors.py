"""fr.optim optimizers' bad input: hyperparameters, parameters, gradients."""

import numpy as np
import pytest

import fastrnn as fr
from fastrnn import optim


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
