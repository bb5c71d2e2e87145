"""Time one Adam step: fastrnn's fused kernel vs torch.optim.Adam.

The parameter set is a language model's: fr.LSTM(E=H=256, 2 layers) and an
fr.Linear(256, 10000) head (about 3.6M float32 values in 10 arrays).  torch
gets tensors of the same shapes and runs its default CPU path (a loop over
tensors), ``foreach=True`` and ``fused=True``.  Gradients are fixed random
values; the contenders take turns step by step and the median of each is
reported.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/optim_step.py
    ... --threads 1 --repeats 50

Numbers from a shared machine are noisy; compare medians from one run.
"""

import argparse
import statistics
import time

import numpy as np

import fastrnn as fr
from fastrnn import optim


def parameter_set(dtype="float32"):
    return [fr.LSTM(256, 256, num_layers=2, dtype=dtype, seed=0),
            fr.Linear(256, 10000, dtype=dtype, seed=1)]


def interleaved_medians(steps, repeats, warmup=3):
    """Median microseconds per call of each function in ``steps`` (a dict).

    The contenders take turns, one call each per round, so load from other
    processes on a shared machine falls on all of them alike.
    """
    for step in steps.values():
        for _ in range(warmup):
            step()
    times = {label: [] for label in steps}
    for _ in range(repeats):
        for label, step in steps.items():
            start = time.perf_counter()
            step()
            times[label].append(time.perf_counter() - start)
    return {label: 1e6 * statistics.median(t) for label, t in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for fastrnn and torch (default: fastrnn's default)")
    args = parser.parse_args()

    import torch
    from threadpoolctl import threadpool_info

    threads = args.threads or fr.get_num_threads()
    fr.set_num_threads(threads)
    torch.set_num_threads(threads)

    modules = parameter_set()
    rng = np.random.default_rng(0)
    shapes = []
    for module in modules:
        for name, param in module.named_parameters():
            module.grads[name][...] = rng.standard_normal(param.shape).astype(param.dtype)
            shapes.append(param.shape)
    count = sum(int(np.prod(s)) for s in shapes)
    print(f"parameters: {len(shapes)} arrays, {count:,} float32 values; threads: "
          f"fastrnn {fr.get_num_threads()}, torch {torch.get_num_threads()}")
    libs = ", ".join(f"{lib['internal_api']} {lib.get('version')} "
                     f"({lib['num_threads']} threads, {lib['user_api']})"
                     for lib in threadpool_info())
    print(f"threadpoolctl: {libs}")

    ours = optim.Adam(modules, lr=1e-3)
    steps = {"fastrnn Adam (fused kernel)": ours.step}
    for label, kwargs in [("torch Adam (default)", {}),
                          ("torch Adam (foreach=True)", {"foreach": True}),
                          ("torch Adam (fused=True)", {"fused": True})]:
        tensors = [torch.zeros(s, dtype=torch.float32, requires_grad=True) for s in shapes]
        for t in tensors:
            t.grad = torch.from_numpy(
                rng.standard_normal(tuple(t.shape)).astype(np.float32))
        steps[label] = torch.optim.Adam(tensors, lr=1e-3, **kwargs).step
    results = interleaved_medians(steps, args.repeats)

    base = results["fastrnn Adam (fused kernel)"]
    print(f"{'optimizer':<30}{'us/step':>12}{'vs fastrnn':>12}")
    for label, us in results.items():
        print(f"{label:<30}{us:>12.0f}{us / base:>11.2f}x")
    print(f"bytes moved by a fused step (7 arrays x 4 B / value): "
          f"{7 * 4 * count / 1e6:.0f} MB -> {7 * 4 * count / base / 1e3:.1f} GB/s for fastrnn")


if __name__ == "__main__":
    main()
