#!/usr/bin/env python
"""The weight-gradient products of one recurrent layer (issue 18), interleaved.

dW_ih += dG^T X and dW_hh += dG^T H_prev share dG, the gate gradients (k =
T x B rows, m = G x H columns).  For the roofline's shapes (E = H, k = 99 x B,
the steps that have a previous output), float32, three contenders take turns
and each keeps its best time:

* **pair**: ``parallel_gemm_tn_pair`` (fr_gemm.h's ``fr_gemm_tn_pair``): each
  K block of dG packed once for both products, as the RNN and LSTM backward
  run them;
* **two**: two ``parallel_gemm_tn`` calls, dG packed for each;
* **blas**: scipy's ``sgemm`` (the OpenBLAS the kernels call), C += A^T B
  for each product with no copy (row-major C is column-major C^T = B^T A),
  on OpenBLAS's own threads.

Products past fr_gemm_tn's size limit (``TN_MAX_VALUES`` in ``_packed.pxd``)
go to OpenBLAS in "pair" and "two" alike.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/weight_gradients.py
    ... --threads 2 --shapes 256,256,6336
"""

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from machine import cpu_model  # noqa: E402

# m (gate columns), n (E = H), k (99 steps x B): the roofline's RNN and LSTM.
SHAPES = ["128,128,6336", "256,256,6336", "512,512,3168",
          "512,128,6336", "1024,256,6336", "2048,512,3168"]


def contenders(module, m, n, k, threads, rng):
    from scipy.linalg.blas import sgemm

    gates = rng.standard_normal((k, m), dtype=np.float32)
    x, h = (rng.standard_normal((k, n), dtype=np.float32) for _ in range(2))
    dw_ih, dw_hh = np.zeros((m, n), np.float32), np.zeros((m, n), np.float32)

    def pair():
        module.gemm_tn_pair(gates, m, x, n, dw_ih, h, n, dw_hh, threads)

    def two():
        module.gemm_tn(gates, m, x, n, dw_ih, threads)
        module.gemm_tn(gates, m, h, n, dw_hh, threads)

    def blas():
        sgemm(1.0, x.T, gates.T, beta=1.0, c=dw_ih.T, trans_b=1, overwrite_c=1)
        sgemm(1.0, h.T, gates.T, beta=1.0, c=dw_hh.T, trans_b=1, overwrite_c=1)

    blas()                                 # in place, and the right product
    np.testing.assert_allclose(dw_ih, gates.T @ x, rtol=1e-3, atol=1e-2 * np.sqrt(k))
    return {"pair": pair, "two": two, "blas": blas}


def best_times(fns, rounds, reps):
    best = {name: float("inf") for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            fn()                                   # untimed: caches and clock warm
            start = time.perf_counter()
            for _ in range(reps):
                fn()
            best[name] = min(best[name], (time.perf_counter() - start) / reps)
            if name == "blas":
                # OpenBLAS's workers busy-wait after a product (about 0.1 s)
                # and would take a core from the contender timed next.
                time.sleep(0.3)
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--shapes", default=";".join(SHAPES), help="m,n,k;m,n,k;...")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    from threadpoolctl import threadpool_info, threadpool_limits

    import fastrnn as fr
    from fastrnn._kernels import _dispatch

    level = _dispatch.chosen_level()
    module = _dispatch.module("_gemm_probe", level)
    blas = "; ".join(f"{p['internal_api']} {p['version']} {p.get('architecture')}"
                     for p in threadpool_info() if p["user_api"] == "blas")
    print(f"CPU: {cpu_model()}; kernel level {level}; BLAS {blas}; float32; best of "
          f"{args.rounds} interleaved rounds, ms per pair of products")
    print("\n| m, n, k | threads | pair | two | blas | two / pair | blas / pair |")
    print("|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for threads in (int(t) for t in args.threads.split(",")):
        fr.set_num_threads(threads)
        with threadpool_limits(limits=threads, user_api="blas"):
            for shape in args.shapes.split(";"):
                m, n, k = (int(v) for v in shape.split(","))
                best = best_times(contenders(module, m, n, k, threads, rng),
                                  args.rounds, args.reps)
                pair = best["pair"]
                print(f"| {m}, {n}, {k} | {threads} | {pair * 1e3:.2f} | "
                      f"{best['two'] * 1e3:.2f} | {best['blas'] * 1e3:.2f} | "
                      f"{best['two'] / pair:.2f} | {best['blas'] / pair:.2f} |", flush=True)


if __name__ == "__main__":
    main()
