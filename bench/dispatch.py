#!/usr/bin/env python
"""The dispatched build against a native build, and each kernel level against the next.

    python bench/dispatch.py                    # builds the native copy if needed
    python bench/dispatch.py --quick            # 2 small configs, 2 rounds
    python bench/dispatch.py --native DIR       # a tree built with FASTRNN_NATIVE=1

Variants (each timed in its own worker subprocess, so its kernels and OpenMP
runtime are alone in the process):

* ``native``: the baseline modules compiled with ``-march=native``
  (``FASTRNN_NATIVE=1 python setup.py build_ext --inplace`` in a copy of the
  tree: what a build for this one machine gives);
* the dispatched build of this tree (``src/``) at every level this CPU runs
  (``FASTRNN_ISA=...``): the best level is what ``import fastrnn`` picks; the
  baseline level has the flags of the old ``FASTRNN_PORTABLE=1`` build.

Timed: one training step of one recurrent layer (forward with storage +
backward with input gradient), float32, on bench/compare.py's configs, 1 and
2 threads.  The machine may be shared, so the variants are run in
interleaved rounds and the table reports each one's minimum over all rounds.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from machine import cpu_model  # noqa: E402

CONFIGS = [(50, 32, 64), (100, 64, 128), (100, 64, 256), (100, 32, 512)]   # compare.py's
QUICK_CONFIGS = [(20, 16, 32), (50, 32, 64)]
CELLS = ("rnn", "lstm", "gru")


# -- worker -------------------------------------------------------------------------------

def worker(configs, reps):
    """Min time (ms) of forward + backward per (cell, T, B, H); JSON on stdout."""
    import numpy as np

    import fastrnn as fr
    rng = np.random.default_rng(0)
    times = {}
    for cell in CELLS:
        for steps, batch, hidden in configs:
            layer = {"rnn": fr.RNN, "lstm": fr.LSTM, "gru": fr.GRU}[cell](hidden, hidden, seed=0)
            x = rng.standard_normal((steps, batch, hidden)).astype(np.float32)
            d_out = rng.standard_normal((steps, batch, hidden)).astype(np.float32)
            best = float("inf")
            for rep in range(reps + 1):          # the first run warms up
                start = time.perf_counter()
                layer(x)
                layer.backward(d_out)
                elapsed = time.perf_counter() - start
                if rep:
                    best = min(best, elapsed)
            times[f"{cell} {steps} {batch} {hidden}"] = best * 1e3
    print(json.dumps({"level": fr.kernel_levels()["chosen"], "times": times}))


# -- driver -------------------------------------------------------------------------------

def build_native(directory):
    """A copy of the tree with every kernel compiled for this CPU only."""
    if os.path.exists(os.path.join(directory, "src", "fastrnn")):
        return
    os.makedirs(directory, exist_ok=True)
    for name in ("setup.py", "pyproject.toml"):
        shutil.copy(os.path.join(ROOT, name), directory)
    shutil.copytree(os.path.join(ROOT, "src"), os.path.join(directory, "src"),
                    ignore=shutil.ignore_patterns("*.so", "*.c", "__pycache__", "avx2", "avx512"))
    print(f"building the native reference in {directory} (a few minutes)", file=sys.stderr)
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace", "-j", "2"],
                   cwd=directory, check=True, env=dict(os.environ, FASTRNN_NATIVE="1"),
                   stdout=subprocess.DEVNULL)


def run_worker(src, level, threads, configs, reps):
    env = dict(os.environ, PYTHONPATH=src, OMP_NUM_THREADS=str(threads),
               OPENBLAS_NUM_THREADS="1")
    env.pop("FASTRNN_ISA", None)
    if level:
        env["FASTRNN_ISA"] = level
    for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        env.pop(name, None)
    out = subprocess.run([sys.executable, __file__, "--worker", json.dumps([configs, reps])],
                         env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[-1])


def measure(variants, threads_list, configs, rounds, reps):
    """{(variant, threads): {key: min ms}}, the variants interleaved per round."""
    best = {}
    for round_ in range(rounds):
        for threads in threads_list:
            for name, (src, level) in variants.items():
                result = run_worker(src, level, threads, configs, reps)
                slot = best.setdefault((name, threads), {})
                for key, ms in result["times"].items():
                    slot[key] = min(slot.get(key, float("inf")), ms)
                print(f"round {round_ + 1}/{rounds}: {name} ({result['level']}), "
                      f"{threads} thread(s) done", file=sys.stderr)
    return best


def report(best, variants, threads_list, configs):
    names = list(variants)
    lines = [f"CPU: {cpu_model()}; float32; RNN/LSTM/GRU layer forward + backward, "
             f"min ms over interleaved rounds (shared machine)", ""]
    header = "| cell | T, B, H | threads | " + " | ".join(names)
    ratios = [f"{names[i + 1]}/{names[i]}" for i in range(1, len(names) - 1)]
    header += " | dispatched/native | " + " | ".join(ratios) + " |"
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    for cell in CELLS:
        for steps, batch, hidden in configs:
            key = f"{cell} {steps} {batch} {hidden}"
            for threads in threads_list:
                ms = [best[(name, threads)][key] for name in names]
                row = (f"| {cell} | {steps}, {batch}, {hidden} | {threads} | "
                       + " | ".join(f"{m:.2f}" for m in ms)
                       + f" | {ms[-1] / ms[0]:.3f} | "
                       + " | ".join(f"{ms[i + 1] / ms[i]:.3f}" for i in range(1, len(ms) - 1))
                       + " |")
                lines.append(row)
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--native", default=os.path.join(ROOT, "build", "native-tree"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.worker:
        configs, reps = json.loads(args.worker)
        return worker([tuple(c) for c in configs], reps)
    configs = QUICK_CONFIGS if args.quick else CONFIGS
    rounds = 2 if args.quick else args.rounds
    build_native(args.native)
    sys.path.insert(0, os.path.join(ROOT, "src"))
    from fastrnn._kernels import _dispatch
    levels = [level for level in _dispatch.compiled_levels() if level in _dispatch.cpu_levels()]
    variants = {"native": (os.path.join(args.native, "src"), None)}
    variants.update({level: (os.path.join(ROOT, "src"), level) for level in levels})
    threads_list = [int(t) for t in args.threads.split(",")]
    table = report(measure(variants, threads_list, configs, rounds, args.reps),
                   variants, threads_list, configs)
    print(table)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(table + "\n")


if __name__ == "__main__":
    main()
