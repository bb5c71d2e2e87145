"""fr.optim learning-rate schedules: parity with torch.optim.lr_scheduler, state, bad input."""

import json
import math

import numpy as np
import pytest

import fastrnn as fr
from fastrnn import optim

STEPS = 30
# (fastrnn schedule, its options, torch scheduler, torch options)
CASES = [
    ("StepLR", dict(step_size=7), "StepLR", dict(step_size=7)),
    ("StepLR", dict(step_size=3, gamma=0.5), "StepLR", dict(step_size=3, gamma=0.5)),
    ("ExponentialLR", dict(gamma=0.9), "ExponentialLR", dict(gamma=0.9)),
    ("CosineAnnealingLR", dict(T_max=10), "CosineAnnealingLR", dict(T_max=10)),
    ("CosineAnnealingLR", dict(T_max=12, eta_min=0.01), "CosineAnnealingLR",
     dict(T_max=12, eta_min=0.01)),
    ("LinearWarmup", dict(warmup_steps=8), "LinearLR", dict(total_iters=8, end_factor=1.0)),
    ("LinearWarmup", dict(warmup_steps=5, start_factor=0.1), "LinearLR",
     dict(total_iters=5, start_factor=0.1, end_factor=1.0)),
]


def case_id(case):
    return case[0] + "-" + ",".join(f"{k}={v}" for k, v in case[1].items())


def torch_optimizer(torch, lr):
    return torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)


def optimizer(lr=0.1):
    return optim.SGD(fr.Linear(2, 2), lr=lr)


@pytest.mark.torch
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_matches_torch(torch, case):
    name, options, torch_name, torch_options = case
    opt, topt = optimizer(0.1), torch_optimizer(torch, 0.1)
    sched = getattr(optim, name)(opt, **options)
    tsched = getattr(torch.optim.lr_scheduler, torch_name)(topt, **torch_options)
    ours, theirs = [opt.lr], [topt.param_groups[0]["lr"]]
    for _ in range(STEPS):
        opt.step()
        topt.step()
        sched.step()
        tsched.step()
        assert sched.get_last_lr() == opt.lr
        ours.append(opt.lr)
        theirs.append(tsched.get_last_lr()[0])
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=0)
    assert sched.last_epoch == tsched.last_epoch == STEPS
    assert len(set(ours)) > 2    # the schedule did something


@pytest.mark.torch
def test_schedules_chain_like_torch(torch):
    """Two schedules on one optimizer compose, as torch's chainable form does."""
    opt, topt = optimizer(0.2), torch_optimizer(torch, 0.2)
    ours = [optim.LinearWarmup(opt, 5), optim.ExponentialLR(opt, 0.95)]
    theirs = [torch.optim.lr_scheduler.LinearLR(topt, total_iters=5),
              torch.optim.lr_scheduler.ExponentialLR(topt, 0.95)]
    for _ in range(12):
        topt.step()
        for s in ours + theirs:
            s.step()
        assert opt.lr == pytest.approx(topt.param_groups[0]["lr"], rel=1e-12)


PLATEAU_CASES = [
    dict(),
    dict(patience=2, factor=0.5),
    dict(patience=1, cooldown=2, factor=0.5, min_lr=0.004),
    dict(mode="max", patience=2, threshold=0.05),
    dict(mode="max", patience=0, threshold_mode="abs", threshold=0.1),
    dict(mode="min", patience=1, threshold_mode="abs", threshold=0.2, eps=0.05),
]


@pytest.mark.torch
@pytest.mark.parametrize("options", PLATEAU_CASES, ids=str)
def test_plateau_matches_torch(torch, options):
    rng = np.random.default_rng(1)
    # improving, then flat with noise, then a NaN, then improving again
    metrics = list(np.linspace(2.0, 1.0, 8)) + list(1.0 + 0.05 * rng.standard_normal(15)) \
        + [float("nan")] + list(np.linspace(0.9, 0.5, 10))
    opt, topt = optimizer(0.1), torch_optimizer(torch, 0.1)
    sched = optim.ReduceLROnPlateau(opt, **options)
    tsched = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, **options)
    assert opt.lr == 0.1
    lrs = []
    for m in metrics:
        sched.step(np.float64(m))
        tsched.step(m)
        lrs.append(opt.lr)
        assert opt.lr == pytest.approx(topt.param_groups[0]["lr"], rel=1e-12)
        assert sched.num_bad_epochs == tsched.num_bad_epochs
        assert sched.get_last_lr() == opt.lr
    if options.get("mode") != "max":
        assert len(set(lrs)) > 1


def run(make, steps, metrics=None):
    opt = optimizer(0.1)
    sched = make(opt)
    for i in range(steps):
        opt.step()
        sched.step() if metrics is None else sched.step(metrics[i])
    return opt, sched


@pytest.mark.parametrize("make", [
    lambda o: optim.StepLR(o, 4, gamma=0.5),
    lambda o: optim.ExponentialLR(o, 0.8),
    lambda o: optim.CosineAnnealingLR(o, 7, eta_min=0.001),
    lambda o: optim.LinearWarmup(o, 12, start_factor=0.2),
    lambda o: optim.ReduceLROnPlateau(o, patience=1, cooldown=1),
], ids=["step", "exp", "cos", "warmup", "plateau"])
def test_state_dict_resume_equals_uninterrupted(make):
    metrics = [1.0, 0.9, 0.95, 0.96, 0.97, 0.85, 0.99, 0.99, 0.98, 0.99, 1.0, 1.1, 0.7,
               0.8, 0.8, 0.8]
    plateau = isinstance(make(optimizer()), optim.ReduceLROnPlateau)
    m = metrics if plateau else None
    straight_opt, _ = run(make, 16, m)
    opt, sched = run(make, 9, m)
    opt_state = opt.state_dict()
    sched_state = json.loads(json.dumps(sched.state_dict()))
    # resume: new optimizer and schedule, then both states (schedule first is fine too)
    new_opt = optimizer(0.5)
    new_sched = make(new_opt)
    new_opt.load_state_dict(opt_state)
    new_sched.load_state_dict(sched_state)
    for i in range(9, 16):
        new_opt.step()
        new_sched.step() if not plateau else new_sched.step(metrics[i])
    assert new_opt.lr == straight_opt.lr
    assert new_sched.state_dict() == json.loads(json.dumps(new_sched.state_dict()))


def test_plateau_state_with_no_metric_yet_is_json():
    sched = optim.ReduceLROnPlateau(optimizer(), mode="max")
    state = sched.state_dict()
    assert state["best"] == "-inf"
    text = json.dumps(state, allow_nan=False)
    other = optim.ReduceLROnPlateau(optimizer(), mode="max")
    other.load_state_dict(json.loads(text))
    assert other.best == -math.inf


def test_load_state_dict_checks():
    sched = optim.StepLR(optimizer(), 3)
    good = sched.state_dict()
    for state, error, match in [
        ([1], TypeError, "state must be a mapping"),
        ({**good, "type": "ExponentialLR"}, ValueError, "'ExponentialLR' schedule"),
        ({k: v for k, v in good.items() if k != "gamma"}, ValueError, r"missing \['gamma'\]"),
        ({**good, "step_size": 0}, ValueError, "step_size must be an int >= 1, got 0"),
        ({**good, "last_epoch": -3}, ValueError, "last_epoch must be an int >= 0"),
        ({**good, "base_lr": "x"}, ValueError, "base_lr must be a finite number >= 0"),
    ]:
        with pytest.raises(error, match=match):
            sched.load_state_dict(state)
        assert sched.state_dict() == good
    plateau = optim.ReduceLROnPlateau(optimizer())
    with pytest.raises(ValueError, match="best must be a number, got None"):
        plateau.load_state_dict({**plateau.state_dict(), "best": None})


@pytest.mark.parametrize("make,error,match", [
    (lambda o: optim.StepLR(o, 0), ValueError, "StepLR: step_size must be an int >= 1, got 0"),
    (lambda o: optim.StepLR(o, 2.5), ValueError, "step_size must be an int >= 1"),
    (lambda o: optim.StepLR(o, 2, gamma=0), ValueError, "gamma must be a finite number > 0, got 0"),
    (lambda o: optim.ExponentialLR(o, float("nan")), ValueError, "gamma"),
    (lambda o: optim.CosineAnnealingLR(o, 0), ValueError, "T_max must be an int >= 1"),
    (lambda o: optim.CosineAnnealingLR(o, 5, eta_min=-1), ValueError, "eta_min must be"),
    (lambda o: optim.LinearWarmup(o, 0), ValueError, "warmup_steps must be an int >= 1"),
    (lambda o: optim.LinearWarmup(o, 5, start_factor=0), ValueError,
     r"start_factor must be a number in \(0, 1\], got 0"),
    (lambda o: optim.LinearWarmup(o, 5, start_factor=1.5), ValueError, "start_factor"),
    (lambda o: optim.ReduceLROnPlateau(o, mode="lowest"), ValueError,
     r"mode must be one of 'min', 'max', got 'lowest'"),
    (lambda o: optim.ReduceLROnPlateau(o, factor=1.0), ValueError,
     r"factor must be a number in \(0, 1\)"),
    (lambda o: optim.ReduceLROnPlateau(o, patience=-1), ValueError, "patience must be an int"),
    (lambda o: optim.ReduceLROnPlateau(o, threshold_mode="pct"), ValueError, "threshold_mode"),
    (lambda o: optim.ReduceLROnPlateau(o, min_lr=-0.1), ValueError, "min_lr"),
    (lambda o: optim.StepLR("adam", 3), TypeError,
     "StepLR: optimizer must be a fastrnn optimizer.*got str"),
    (lambda o: optim.ReduceLROnPlateau(None), TypeError, "got NoneType"),
])
def test_bad_arguments(make, error, match):
    opt = optimizer(0.1)
    with pytest.raises(error, match=match):
        make(opt)
    assert opt.lr == 0.1


def test_plateau_metric_must_be_a_number():
    sched = optim.ReduceLROnPlateau(optimizer())
    with pytest.raises(TypeError, match="metric must be a number, got str"):
        sched.step("low")
    assert sched.last_epoch == 0


@pytest.mark.parametrize("metric", ["0.5", b"0.5", True, np.bool_(False), None, [0.5, 0.4]])
def test_plateau_metric_must_not_be_a_string_or_a_flag(metric):
    """float() would read "0.5" and True as numbers; a metric that is text or a
    flag is a caller's bug, refused before anything is counted."""
    sched = optim.ReduceLROnPlateau(optimizer())
    with pytest.raises(TypeError, match="ReduceLROnPlateau.step: metric must be a number, got"):
        sched.step(metric)
    assert sched.last_epoch == 0 and sched.num_bad_epochs == 0
    sched.step(np.float32(0.5))     # numpy scalars are numbers
    assert sched.best == 0.5
