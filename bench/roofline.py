#!/usr/bin/env python
"""One recurrent layer's training step against the machine's GEMM rate (issue 18).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/roofline.py           # full
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/roofline.py --quick   # ~1 min

For RNN (tanh), GRU and LSTM at (T, B, H) = (100, 64, 128), (100, 64, 256),
(100, 32, 512), float32, input size E = H: one layer forward (with storage)
+ backward with the input gradient, as a fraction of numpy's 2048^3 sgemm
rate measured in the same process at the same thread count.  FLOPs =
3 x 2*T*B*G*H*(E+H) (G gates: the forward products and the two backward
products of each).  Each thread count runs in its own worker subprocess
(OMP_NUM_THREADS, BLAS threads limited by threadpoolctl); rounds alternate
sgemm and layer timings and every figure is the best over all rounds, so a
busy machine lowers both and the fraction stays meaningful.  Targets (issue
18): >= 0.85 at H >= 256 on 1 and 2 threads; 1 -> 2 threads >= 1.7x at
H >= 128.
"""

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from machine import cpu_model  # noqa: E402

CONFIGS = [(100, 64, 128), (100, 64, 256), (100, 32, 512)]
CELLS = ("rnn", "gru", "lstm")
GATES = {"rnn": 1, "gru": 3, "lstm": 4}
GEMM_N = 2048


def layer_flops(cell, T, B, H, E=None):
    E = H if E is None else E
    return 3 * 2 * T * B * GATES[cell] * H * (E + H)


# -- worker (one thread count) ----------------------------------------------------------
def _sgemm_rate(a, b, c, reps):
    import numpy as np

    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        np.matmul(a, b, out=c)
        best = min(best, time.perf_counter() - start)
    # numpy's OpenBLAS workers busy-wait after a product (OPENBLAS_THREAD_TIMEOUT,
    # 2^28 cycles by default: ~0.1 s) and would take a core from the layer timed
    # next (RNN (100,64,128) measured 1.13x from the second thread right after
    # this, 1.85x on its own); let them go to sleep first.
    time.sleep(0.5)
    return 2 * GEMM_N ** 3 / best


def worker(threads, rounds, reps):
    import numpy as np
    from threadpoolctl import threadpool_limits

    import fastrnn as fr

    fr.set_num_threads(threads)
    threadpool_limits(limits=threads, user_api="blas")
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((GEMM_N, GEMM_N), dtype=np.float32) for _ in range(2))
    c = np.empty_like(a)
    np.matmul(a, b, out=c)                             # warm-up
    layers = {}
    for cell in CELLS:
        for T, B, H in CONFIGS:
            layer = {"rnn": fr.RNN, "gru": fr.GRU, "lstm": fr.LSTM}[cell](H, H, seed=0)
            x = rng.standard_normal((T, B, H), dtype=np.float32)
            d_out = rng.standard_normal((T, B, H), dtype=np.float32)
            layers[f"{cell} {T} {B} {H}"] = (layer, x, d_out)
    rate, best = 0.0, {}
    for _ in range(rounds):
        rate = max(rate, _sgemm_rate(a, b, c, reps))
        for key, (layer, x, d_out) in layers.items():
            for rep in range(reps + 1):                # the first run warms up
                start = time.perf_counter()
                layer(x)
                layer.backward(d_out)
                elapsed = time.perf_counter() - start
                if rep:
                    best[key] = min(best.get(key, float("inf")), elapsed)
    print(json.dumps({"threads": threads, "sgemm_flops": rate, "seconds": best}))


# -- driver ---------------------------------------------------------------------------
def run_worker(threads, rounds, reps):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        env.pop(name, None)
    out = subprocess.run([sys.executable, __file__, "--worker", str(threads),
                          "--rounds", str(rounds), "--reps", str(reps)],
                         env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[-1])


def config_lines():
    import fastrnn as fr
    from threadpoolctl import threadpool_info

    blas = "; ".join(f"{lib['internal_api']} {lib.get('version')} "
                     f"{lib.get('architecture')}" for lib in threadpool_info()
                     if lib["user_api"] == "blas")
    levels = fr.kernel_levels()
    return [f"CPU: {cpu_model()} ({os.cpu_count()} CPUs)",
            f"fastrnn {fr.__version__}: kernel level {levels['chosen']} "
            f"(built {', '.join(levels['built'])}; CPU runs {', '.join(levels['cpu'])})",
            f"BLAS (threadpoolctl): {blas}"]


def report(results):
    threads = sorted(results)
    lines = config_lines()
    lines.append("sgemm 2048^3 (numpy, same process): " + ", ".join(
        f"{results[t]['sgemm_flops'] / 1e9:.1f} GFLOP/s on {t} thread(s)" for t in threads))
    lines.append("")
    header = ("| cell (T,B,H) | " + " | ".join(f"{t} thread(s): ms, GFLOP/s, of sgemm"
                                               for t in threads))
    if len(threads) > 1:
        header += f" | {threads[0]} -> {threads[-1]} threads"
    lines += [header + " |", "|---" * (header.count("|")) + "|"]
    for cell in CELLS:
        for T, B, H in CONFIGS:
            key = f"{cell} {T} {B} {H}"
            cells = []
            for t in threads:
                sec = results[t]["seconds"][key]
                rate = layer_flops(cell, T, B, H) / sec
                cells.append(f"{sec * 1e3:.2f}, {rate / 1e9:.1f}, "
                             f"**{rate / results[t]['sgemm_flops']:.2f}**")
            row = f"| {cell.upper()} ({T},{B},{H}) | " + " | ".join(cells)
            if len(threads) > 1:
                s0, s1 = (results[t]["seconds"][key] for t in (threads[0], threads[-1]))
                row += f" | {s0 / s1:.2f}x"
            lines.append(row + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 2 repetitions")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.reps = 1, 2
    if args.worker:
        worker(args.worker, args.rounds, args.reps)
        return
    results = {}
    for t in (int(v) for v in args.threads.split(",")):
        results[t] = run_worker(t, args.rounds, args.reps)
        print(f"{t} thread(s) done", file=sys.stderr)
    print(report(results))


if __name__ == "__main__":
    main()
