"""Streaming forecast: learn online, one step at a time, while the data arrives.

Four sensors each stream a noisy periodic signal (a sine plus its third
harmonic, different phases).  A GRU with a linear head predicts every
sensor's next value; it learns *while* it predicts: after each step the
learner adds that step's gradient and Adam updates the weights, with no
stored history and no epochs.  Halfway through, the period changes from 24
to 15 steps and the models have to adapt on the fly; every 700 steps one
sensor is replaced by a new one (``learner.reset(row)`` starts that stream
from a zero state).

Two learners are compared, each with its own copy of the same model:

* ``fr.online.RTRL``: real-time recurrent learning, the exact gradient
  through the whole past carried forward in sensitivity matrices;
* ``fr.online.TBPTT(window=16)``: online truncated BPTT over the last 16 steps.

Printed: the mean squared error of the one-step-ahead predictions over the
last stretch before and after the change, next to repeating the last value
and the noise floor (the target's own noise variance).

    python examples/online_forecast.py           # under a minute on 2 cores
    python examples/online_forecast.py --quick   # a few seconds
"""

import argparse
import time

import numpy as np

import fastrnn as fr

SENSORS = 4
NOISE = 0.1
HIDDEN = 12


def signal(t, period, phase):
    angle = 2 * np.pi * t / period + phase
    return np.sin(angle) + 0.4 * np.sin(3 * angle)


def make_stream(steps, rng):
    """(steps + 1, SENSORS) noisy values; the period switches at steps // 2."""
    t = np.arange(steps + 1)[:, None]
    phases = rng.uniform(0, 2 * np.pi, size=(1, SENSORS))
    period = np.where(t < steps // 2, 24.0, 15.0)
    return signal(t, period, phases) + NOISE * rng.standard_normal((steps + 1, SENSORS))


def make_learner(kind, seed):
    layer = fr.GRU(1, HIDDEN, seed=seed)
    head = fr.Linear(HIDDEN, 1, seed=seed + 1)
    loss = fr.MSELoss()
    learner = (fr.online.RTRL(layer, head, loss) if kind == "rtrl"
               else fr.online.TBPTT(layer, head, loss, window=16))
    return learner, fr.optim.Adam([layer, head], lr=0.01)


def run(kind, stream, seed, replace_every):
    """Each step's mean squared error over the sensors, predicted before the
    step's own update (so every error is on data the model had not learnt from)."""
    learner, optimizer = make_learner(kind, seed)
    steps = len(stream) - 1
    errors = np.empty(steps)
    for t in range(steps):
        if t and t % replace_every == 0:
            learner.reset([(t // replace_every) % SENSORS])
        x = stream[t].astype(np.float32)[:, None]
        y = stream[t + 1].astype(np.float32)[:, None]
        errors[t] = learner.step(x, y)
        optimizer.step()
        optimizer.zero_grad()
    return errors


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short stream")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    steps = 1200 if args.quick else 5000
    stream = make_stream(steps, np.random.default_rng(args.seed))
    span = steps // 5          # the stretch scored at the end of each half
    before = slice(steps // 2 - span, steps // 2)
    after = slice(steps - span, steps)
    last_value = ((stream[1:] - stream[:-1]) ** 2).mean(axis=1)
    print(f"{SENSORS} streams x {steps} steps, period 24 -> 15 at step {steps // 2}; "
          f"MSE over steps {before.start}-{before.stop} and {after.start}-{after.stop}")
    results = {}
    for kind, name in (("rtrl", "RTRL"), ("tbptt", "TBPTT(16)")):
        start = time.perf_counter()
        errors = run(kind, stream, args.seed, replace_every=700)
        elapsed = time.perf_counter() - start
        results[name] = (errors[before].mean(), errors[after].mean())
        print(f"{name:>10}: MSE {results[name][0]:.4f} before the change, "
              f"{results[name][1]:.4f} after  ({steps / elapsed:.0f} steps/s)")
    print(f"{'last value':>10}: MSE {last_value[before].mean():.4f} before, "
          f"{last_value[after].mean():.4f} after;  noise floor {NOISE ** 2:.4f}")
    print(f"RTRL: MSE {results['RTRL'][1]:.4f}, TBPTT(16): MSE {results['TBPTT(16)'][1]:.4f} "
          f"(after the change; last value {last_value[after].mean():.4f})")


if __name__ == "__main__":
    main()
