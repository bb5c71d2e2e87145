"""Idle OpenMP threads against another thread pool: the spin limit fastrnn
hands libgomp at import, measured.

Each row runs in a fresh interpreter (libgomp reads its settings once, as it
loads): a small fastrnn RNN forward on 2 OpenMP threads, then a numpy matrix
product on numpy's own 2 BLAS threads, repeated.  With libgomp's default spin
(300,000 rounds, ~20 ms) fastrnn's idle threads hold both cores while
numpy's threads wait for them; fastrnn's limit (1,000 rounds) lets them go.

    python bench/openmp_spin.py             # about 30 s

Rows: ``fastrnn default`` (what ``import fastrnn`` does: GOMP_SPINCOUNT=1000
handed to libgomp, then removed from os.environ), ``libgomp default``
(GOMP_SPINCOUNT=300000 set by the user, which fastrnn leaves alone: the
behaviour before the limit) and ``passive`` (OMP_WAIT_POLICY=passive: no
spinning at all).  Also printed: whether GOMP_SPINCOUNT was left in the
environment of the measuring process (it must not be, by default).
"""

import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, os, sys, time
import numpy as np
import fastrnn as fr
from fastrnn import _process

fr.set_num_threads(2)
rng = np.random.default_rng(0)
layer = fr.RNN(32, 64, seed=0).eval()
x = rng.standard_normal((10, 64, 32)).astype(np.float32)
a = rng.standard_normal((160, 160))
b = rng.standard_normal((160, 160))
for _ in range(20):
    layer(x); a @ b
pairs, products = [], []
for _ in range(int(sys.argv[1])):
    start = time.perf_counter()
    layer(x)
    middle = time.perf_counter()
    a @ b
    end = time.perf_counter()
    pairs.append(end - start)
    products.append(end - middle)
print(json.dumps({"pair": pairs, "product": products,
                  "spin_limited": _process.openmp_spin_limited,
                  "GOMP_SPINCOUNT_left": os.environ.get("GOMP_SPINCOUNT")}))
"""

ROWS = {
    "fastrnn default": {},
    "libgomp default": {"GOMP_SPINCOUNT": "300000"},
    "passive": {"OMP_WAIT_POLICY": "passive"},
}


def measure(extra, repeats):
    env = {k: v for k, v in os.environ.items()
           if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "OMP_NUM_THREADS",
                        "OPENBLAS_NUM_THREADS")}
    env.update(extra, OPENBLAS_NUM_THREADS="2")
    out = subprocess.run([sys.executable, "-c", CHILD, str(repeats)], env=env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(repeats=300):
    print("median (10th percentile) per call, ms")
    print(f"{'row':16s} {'RNN step + matmul':>20s} {'matmul after it':>20s}  "
          f"spin limited  GOMP_SPINCOUNT left")
    for name, extra in ROWS.items():
        result = measure(extra, repeats)
        cells = []
        for key in ("pair", "product"):
            times = sorted(result[key])
            cells.append(f"{statistics.median(times) * 1e3:8.3f} ({times[len(times) // 10] * 1e3:7.3f})")
        print(f"{name:16s} {cells[0]:>20s} {cells[1]:>20s}  "
              f"{str(result['spin_limited']):12s}  {result['GOMP_SPINCOUNT_left']}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
