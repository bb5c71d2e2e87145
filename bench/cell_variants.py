#!/usr/bin/env python
"""What the cell variants cost: forward + backward of one layer vs the default cell.

Contenders (issue 16 target: the variants within 10 % of their default cell):

* ``gru`` (PyTorch's reset-after GRU) vs ``gru_reset_before``
  (``reset_after=False``: a second, dependent recurrent product per step);
* ``lstm`` vs ``lstm_peepholes`` and ``lstm_peepholes_clip``
  (``peepholes=True, cell_clip=3``); ``lstm_proj`` (``proj_size=H/2``) is
  shown for information (it has less recurrent work, not more).

One layer, one direction, float32, E = H, zero initial state, fixed inputs
and output gradient; the contenders take turns (order reversed every round)
and the table reports each one's minimum (the machine may be shared) and
median.  ``--instructions`` instead prints instructions per forward+backward
counted by valgrind's callgrind (repeatable on a busy machine): each
contender runs in its own process once with 1 and once with 3 iterations,
and the difference / 2 removes the start-up cost (several minutes per
contender: Python and numpy start under valgrind).

    python bench/cell_variants.py                       # (100, 64, 256), 1 thread
    python bench/cell_variants.py --config 100x64x256 --rounds 15 --threads 1
    python bench/cell_variants.py --instructions --config 20x16x128
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import fastrnn as fr

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from machine import cpu_model  # noqa: E402

CONTENDERS = {
    "gru": (fr.GRU, {}),
    "gru_reset_before": (fr.GRU, {"reset_after": False}),
    "lstm": (fr.LSTM, {}),
    "lstm_peepholes": (fr.LSTM, {"peepholes": True}),
    "lstm_peepholes_clip": (fr.LSTM, {"peepholes": True, "cell_clip": 3.0}),
    "lstm_proj": (fr.LSTM, {"proj_size": "half"}),
}
BASELINE = {"gru_reset_before": "gru", "lstm_peepholes": "lstm",
            "lstm_peepholes_clip": "lstm", "lstm_proj": "lstm"}


def make_step(name, T, B, H, seed=0):
    """A closure running forward + backward of contender ``name`` once."""
    cls, options = CONTENDERS[name]
    options = {k: (H // 2 if v == "half" else v) for k, v in options.items()}
    layer = cls(H, H, seed=seed, **options)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, B, H)).astype(np.float32)
    width = options.get("proj_size", H)
    d_out = rng.standard_normal((T, B, width)).astype(np.float32)

    def step():
        layer.forward(x)
        layer.backward(d_out, input_grad=True)
    return step


def time_contenders(names, T, B, H, rounds):
    steps = {name: make_step(name, T, B, H) for name in names}
    for step in steps.values():     # warm up: buffers, page faults, caches
        step()
        step()
    times = {name: [] for name in names}
    order = list(names)
    for _ in range(rounds):
        for name in order:
            start = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - start)
        order.reverse()
    return times


def count_instructions(name, T, B, H, iterations):
    """Instructions executed by a process running ``iterations`` steps."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        code = (f"import sys; sys.path.insert(0, {HERE!r}); import cell_variants as c; "
                f"c.fr.set_num_threads(1); "
                f"s = c.make_step({name!r}, {T}, {B}, {H})\n"
                f"for _ in range({iterations}): s()")
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                        sys.executable, "-c", code], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(out) as f:
            text = f.read()
        return int(re.search(r"^summary:\s*(\d+)", text, re.M).group(1))


def report_times(names, T, B, H, rounds):
    times = time_contenders(names, T, B, H, rounds)
    print(f"| contender | min ms | median ms | min vs default |")
    print(f"|---|---:|---:|---:|")
    for name in names:
        best, median = min(times[name]) * 1e3, statistics.median(times[name]) * 1e3
        base = BASELINE.get(name)
        ratio = f"{min(times[name]) / min(times[base]) - 1:+.1%}" if base in times else "-"
        print(f"| {name} | {best:.2f} | {median:.2f} | {ratio} |")


def report_instructions(names, T, B, H):
    counts = {}
    for name in names:   # minutes each under valgrind: show progress
        counts[name] = (count_instructions(name, T, B, H, 3)
                        - count_instructions(name, T, B, H, 1)) / 2
        print(f"{name}: {counts[name]:.4g} instructions", file=sys.stderr, flush=True)
    print(f"| contender | instructions per fwd+bwd | vs default |")
    print(f"|---|---:|---:|")
    for name in names:
        base = BASELINE.get(name)
        ratio = f"{counts[name] / counts[base] - 1:+.1%}" if base in counts else "-"
        print(f"| {name} | {counts[name]:.4g} | {ratio} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="100x64x256", help="TxBxH")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--cells", default=",".join(CONTENDERS))
    parser.add_argument("--instructions", action="store_true",
                        help="count instructions with valgrind --tool=callgrind")
    args = parser.parse_args(argv)
    T, B, H = (int(v) for v in args.config.split("x"))
    names = args.cells.split(",")
    fr.set_num_threads(args.threads)
    print(f"cell variants, (T, B, H) = ({T}, {B}, {H}), E = H, float32, "
          f"{args.threads} thread(s), CPU: {cpu_model()}\n")
    if args.instructions:
        report_instructions(names, T, B, H)
    else:
        report_times(names, T, B, H, args.rounds)


if __name__ == "__main__":
    main()
