#!/usr/bin/env python
"""fastrnn vs ONNX Runtime in one process, interleaved: the issue-12 ratios
without the run-to-run drift of separate worker processes.

compare.py times each framework in its own pinned worker, one after the
other; on a shared VM its two-thread medians move by up to 1.4x between runs.
Here both frameworks run in the same process, alternating repeat by repeat,
and each keeps its best time, so a disturbance hits both or is discarded.
Two rows per config: the whole inference model of compare.py (embedding,
layer, Linear head; ORT's Gather + operator + MatMul/Add) and the layer alone
(ORT's operator alone on the same float input)::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/ort_interleaved.py
    python bench/ort_interleaved.py --cells lstm --threads 2 --configs 50,32,64
"""

import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import workloads as wl  # noqa: E402
from compare import _best_time  # noqa: E402  (one calibrated best-of loop)

CONFIGS = ["50,32,64", "100,64,128", "100,64,256", "100,32,512", "200,1,64",
           "200,4,256", "200,1,256"]


def cpu_name():
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return os.uname().machine


def contenders(cell, T, B, H, threads):
    """name -> zero-argument callable, for the four timed rows."""
    import fastrnn as fr

    fr.set_num_threads(threads)
    wl.ORT_THREADS = threads
    model = wl.build("fastrnn", cell, T, B, H)
    ort_model = wl.build("ort", cell, T, B, H)
    params = wl.make_params(cell, H, H)
    session = wl.ort_session(wl.ort_graph(cell, H, H, params, embed=False, head=False),
                             threads)
    x = np.random.default_rng(0).standard_normal((T, B, H)).astype(np.float32)
    layer = model.model.layer
    return {"fastrnn model": model.step, "ort model": ort_model.step,
            "fastrnn layer": lambda: layer(x),
            "ort layer": lambda: session.run(["ys"], {"x": x})}


def measure(cell, T, B, H, threads, rounds):
    fns = contenders(cell, T, B, H, threads)
    best = {name: float("inf") for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            best[name] = min(best[name], _best_time(fn, 3, min_seconds=0.02))
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", default="lstm,gru")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--configs", default=";".join(CONFIGS),
                        help="T,B,H;T,B,H;... (default: compare.py's inference rows)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)    # the layer-only graph drops the head
    print(f"CPU: {cpu_name()}; ONNX Runtime {onnxruntime.__version__}; best of "
          f"{args.rounds} interleaved rounds, float32, ms per call")
    print("| cell | (T,B,H) | thr | fastrnn model | ORT model | fr÷ORT model "
          "| fastrnn layer | ORT layer | fr÷ORT layer |")
    print("|---|---|---|---|---|---|---|---|---|")
    for cell in args.cells.split(","):
        for threads in (int(t) for t in args.threads.split(",")):
            for config in args.configs.split(";"):
                T, B, H = (int(v) for v in config.split(","))
                t = measure(cell, T, B, H, threads, args.rounds)
                print(f"| {cell} | ({T},{B},{H}) | {threads} "
                      f"| {t['fastrnn model'] * 1e3:.3f} | {t['ort model'] * 1e3:.3f} "
                      f"| **{t['ort model'] / t['fastrnn model']:.2f}** "
                      f"| {t['fastrnn layer'] * 1e3:.3f} | {t['ort layer'] * 1e3:.3f} "
                      f"| **{t['ort layer'] / t['fastrnn layer']:.2f}** |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
