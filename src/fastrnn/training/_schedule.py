"""Learning-rate schedules as the fit loop steps them (used by the Trainer's
``schedule=`` and by the ``LearningRateScheduler`` callback)."""

from .._validation import Options
from ..optim import ReduceLROnPlateau

INTERVALS = Options(("epoch", "batch"))


def _is_plateau(schedule):
    """ReduceLROnPlateau steps with a metric; the other schedules without."""
    return isinstance(schedule, ReduceLROnPlateau)


def check_schedule(name, schedule, interval):
    """Validate an fr.optim schedule and its interval ("epoch" or "batch")."""
    INTERVALS(f"{name} interval", interval)
    for method in ("step", "state_dict", "load_state_dict"):
        if not callable(getattr(schedule, method, None)):
            raise TypeError(f"{name} must be an fr.optim learning-rate schedule (StepLR, "
                            f"ExponentialLR, CosineAnnealingLR, LinearWarmup, "
                            f"ReduceLROnPlateau), got {type(schedule).__name__}")
    if interval == "batch" and _is_plateau(schedule):
        raise ValueError(f"{name}: ReduceLROnPlateau needs an epoch metric; use "
                         f"interval 'epoch', not 'batch'")
    return schedule


def step_schedule(schedule, logs, monitor="val_loss"):
    """One epoch step; ReduceLROnPlateau gets ``monitor`` (or ``loss`` when the
    run has no validation)."""
    if _is_plateau(schedule):
        logs = logs or {}
        name = monitor if monitor in logs else (
            monitor[4:] if monitor.startswith("val_") and monitor[4:] in logs else None)
        if name is None:
            raise ValueError(f"ReduceLROnPlateau: monitor {monitor!r} is not among the epoch "
                             f"metrics {sorted(logs)}")
        schedule.step(float(logs[name]))
    else:
        schedule.step()
