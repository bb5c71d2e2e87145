#!/usr/bin/env python
"""How much of a fastrnn training step runs outside the recurrent kernels.

For every cell and (T, B, H) config (E = H, float32, vocabulary 1000) and
thread count, three contenders run on the same model, in turns:

* **full**: the fastrnn training step of ``workloads.py`` (``FastrnnModel.
  train_step``: fr.Embedding -> fr.RNN/LSTM/GRU -> fr.Linear ->
  fr.CrossEntropyLoss -> backward -> fr.optim.Adam);
* **recurrent**: the recurrent layer's ``forward`` + ``backward`` alone, on
  fixed inputs identical to the ones it gets inside the full step (the
  embedding output and the head's input gradient, captured once);
* **phased**: the same training step with a clock read between its parts and
  every compiled kernel call timed (the modules' kernel attributes are
  wrapped for the duration of the call), for the per-part breakdown.

The three take turns (order reversed every round) for many rounds, so load
from other processes falls on all of them alike; tables use medians.

    share outside the layer   = 1 - median(recurrent) / median(full)
    share outside the kernels = 1 - (recurrent kernel time in the phased
                                     step) / phased step time

The first is the issue's metric (target: <= 15 % at H >= 128; the layer's
own Python and validation count as "inside"); the second also counts the
layer's wrapper as outside.  Per part, *kernel* is the time inside compiled
kernel calls and *other* the rest (Python, argument checks, copies,
allocation, numpy fills such as zero_grad).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/step_breakdown.py
    ... --cells lstm --threads 1 --configs 100x64x256
    ... --quick          # smoke test, ~10 s
    ... --out breakdown.md
"""

import argparse
import contextlib
import gc
import os
import platform
import resource
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import numpy as np  # noqa: E402

import workloads  # noqa: E402
from machine import cpu_busy_seconds, cpu_model  # noqa: E402

CONFIGS = [(50, 32, 64), (100, 64, 128), (100, 64, 256), (100, 32, 512)]
QUICK_CONFIGS = [(20, 16, 32), (50, 32, 128)]
TARGET_SHARE = 0.15          # issue 4: <= 15 % outside the recurrent kernels ...
TARGET_MIN_H = 128           # ... at H >= 128
PARTS = ("zero_grad", "embedding fwd", "recurrent fwd", "head fwd", "loss", "head bwd",
         "recurrent bwd", "embedding bwd", "Adam step")
OPENBLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


# -- the instrumented (phased) step ---------------------------------------------------
class KernelClock:
    """Wraps the compiled kernels one model calls and sums their time per part.

    The wrappers are installed only around a phased step (``installed()``),
    so the other contenders call the kernels directly.  This relies on the
    private attributes through which fastrnn's modules call their kernels
    (``_forward_kernel``, ``_gather``, ``Adam._kernel``, ``fastrnn.losses._losses``,
    ...): if they are renamed, construction fails with an AttributeError.
    """

    def __init__(self, model):
        import fastrnn.losses

        self.kernel = dict.fromkeys(PARTS, 0.0)
        emb, layer, head, opt = model.embedding, model.layer, model.head, model.optimizer
        self._swaps = [
            (emb, "_gather", self._wrap(emb._gather, "embedding fwd")),
            (emb, "_scatter_add", self._wrap(emb._scatter_add, "embedding bwd")),
            (layer, "_forward_kernel", self._wrap(layer._forward_kernel, "recurrent fwd")),
            (layer, "_backward_kernel", self._wrap(layer._backward_kernel, "recurrent bwd")),
            (head, "_forward_kernel", self._wrap(head._forward_kernel, "head fwd")),
            (head, "_backward_kernel", self._wrap(head._backward_kernel, "head bwd")),
            (opt, "_kernel", {dtype: self._wrap(fn, "Adam step")
                              for dtype, fn in opt._kernel.items()}),
            (fastrnn.losses, "_losses", _Proxy(fastrnn.losses._losses, "cross_entropy",
                                               self._wrap(fastrnn.losses._losses.cross_entropy,
                                                          "loss"))),
        ]

    def _wrap(self, fn, part):
        kernel = self.kernel
        clock = time.perf_counter

        def timed(*args):
            start = clock()
            try:
                return fn(*args)
            finally:
                kernel[part] += clock() - start
        return timed

    @contextlib.contextmanager
    def installed(self):
        saved = [(obj, name, getattr(obj, name)) for obj, name, _ in self._swaps]
        for key in self.kernel:
            self.kernel[key] = 0.0
        for obj, name, wrapper in self._swaps:
            setattr(obj, name, wrapper)
        try:
            yield self.kernel
        finally:
            for obj, name, original in saved:
                setattr(obj, name, original)


class _Proxy:
    """A module stand-in with one attribute replaced."""

    def __init__(self, module, name, replacement):
        self._module, self._name, self._replacement = module, name, replacement

    def __getattr__(self, name):
        return self._replacement if name == self._name else getattr(self._module, name)


def phased_step(model, clock):
    """``FastrnnModel.train_step`` with a clock read between the parts.

    Returns (loss, {part: seconds}, {part: kernel seconds}).  Keep in step
    with ``workloads.FastrnnModel`` (``check_phased_matches`` verifies).
    """
    pc = time.perf_counter
    with clock.installed() as kernel:
        t0 = pc()
        model.optimizer.zero_grad()
        t1 = pc()
        x = model.embedding(model.ids)
        t2 = pc()
        out, _ = model.layer(x)
        t3 = pc()
        z = model.head(out)
        t4 = pc()
        loss, d_logits = model.criterion(z, model.y)
        t5 = pc()
        d_out = model.head.backward(d_logits)
        t6 = pc()
        d_x, _ = model.layer.backward(d_out)
        t7 = pc()
        model.embedding.backward(d_x)
        t8 = pc()
        model.optimizer.step()
        t9 = pc()
        kernel = dict(kernel)
    stamps = (t0, t1, t2, t3, t4, t5, t6, t7, t8, t9)
    parts = {part: stamps[i + 1] - stamps[i] for i, part in enumerate(PARTS)}
    return loss, parts, kernel


def check_phased_matches(cell="lstm", steps=3):
    """The phased step computes exactly what ``train_step`` does (same losses,
    bit for bit, over a few steps on twin models)."""
    a = workloads.build("fastrnn", cell, 7, 5, 16, mode="training").model
    b = workloads.build("fastrnn", cell, 7, 5, 16, mode="training").model
    clock = KernelClock(b)
    for _ in range(steps):
        la = a.train_step()
        lb = phased_step(b, clock)[0]
        if la != lb:
            raise AssertionError(f"phased step diverged from FastrnnModel.train_step: "
                                 f"loss {lb!r} vs {la!r}")
    for (name, p), q in zip(a.layer.named_parameters(), b.layer.parameters()):
        if not np.array_equal(p, q):
            raise AssertionError(f"phased step diverged: parameter {name} differs")


# -- timing ---------------------------------------------------------------------------
def _minor_faults():
    """Minor page faults of this process so far (first touches of fresh memory)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt




def measure(cell, T, B, H, settings, cpus):
    """Interleaved medians of the three contenders for one config."""
    wl = workloads.build("fastrnn", cell, T, B, H, mode="training", vocab=settings["vocab"])
    model = wl.model
    clock = KernelClock(model)

    # inputs of the recurrent layer inside the full step, captured once
    model.train_step()
    model.optimizer.zero_grad()
    x = model.embedding(model.ids).copy()
    out, _ = model.layer(x)
    _, d_logits = model.criterion(model.head(out), model.y)
    d_out = model.head.backward(d_logits).copy()
    model.layer.backward(d_out)

    def full():
        model.train_step()

    def recurrent():
        model.layer(x)
        model.layer.backward(d_out)

    phased_times, phased_parts, phased_kernel = [], [], []

    def phased():
        start = time.perf_counter()
        _, parts, kernel = phased_step(model, clock)
        phased_times.append(time.perf_counter() - start)
        phased_parts.append(parts)
        phased_kernel.append(kernel)

    contenders = {"full": full, "recurrent": recurrent, "phased": phased}
    # warm-up, and the step time that sets the number of rounds
    t0 = time.perf_counter()
    for _ in range(settings["warmup"]):
        for fn in contenders.values():
            fn()
    per_round = (time.perf_counter() - t0) / max(settings["warmup"], 1)
    rounds = int(min(settings["max_reps"],
                     max(settings["min_reps"], settings["budget"] / max(per_round, 1e-9))))
    phased_times.clear(), phased_parts.clear(), phased_kernel.clear()

    times = {"full": [], "recurrent": []}
    faults = {"full": [], "recurrent": []}
    order = list(contenders)
    gc.collect()
    busy0, own0, wall0 = cpu_busy_seconds(cpus), time.process_time(), time.perf_counter()
    for r in range(rounds):
        for name in (order if r % 2 == 0 else order[::-1]):
            if name == "phased":
                phased()
                continue
            f0 = _minor_faults()
            start = time.perf_counter()
            contenders[name]()
            times[name].append(time.perf_counter() - start)
            faults[name].append(_minor_faults() - f0)
    wall = time.perf_counter() - wall0
    own = time.process_time() - own0
    busy1 = cpu_busy_seconds(cpus)
    bg = None if busy0 is None else max(0.0, (busy1 - busy0 - own) / wall)

    med = statistics.median
    parts = {p: med([d[p] for d in phased_parts]) for p in PARTS}
    kernel = {p: med([d[p] for d in phased_kernel]) for p in PARTS}
    rec_kernel = med([d["recurrent fwd"] + d["recurrent bwd"] for d in phased_kernel])
    all_kernel = med([sum(d.values()) for d in phased_kernel])
    return {
        "cell": cell, "T": T, "B": B, "H": H, "rounds": rounds,
        "full": med(times["full"]), "recurrent": med(times["recurrent"]),
        "phased": med(phased_times),
        "spread_full": max(times["full"]) / min(times["full"]),
        "spread_recurrent": max(times["recurrent"]) / min(times["recurrent"]),
        "share_outside_layer": 1 - med(times["recurrent"]) / med(times["full"]),
        "share_outside_kernels": 1 - rec_kernel / med(phased_times),
        "share_outside_all_kernels": 1 - all_kernel / med(phased_times),
        "parts": parts, "kernel": kernel, "bg": bg, "cpu_util": own / wall,
        "faults_full": med(faults["full"]), "faults_recurrent": med(faults["recurrent"]),
    }


# -- report -----------------------------------------------------------------------------
def _blas_lines():
    import scipy.linalg.cython_blas  # noqa: F401  (loads scipy's BLAS, as fastrnn does)
    import threadpoolctl
    from threadpoolctl import threadpool_info

    import fastrnn as fr

    libs = ", ".join(f"{lib['internal_api']} {lib.get('version')} ({lib.get('prefix')}, "
                     f"{lib['num_threads']} threads, {lib['user_api']}, "
                     f"{lib.get('threading_layer') or '-'}, {lib.get('architecture') or '-'})"
                     for lib in threadpool_info())
    kernels_blas = "; ".join(f"{lib['internal_api']} {lib['version']} "
                             f"{lib.get('architecture')}, kernel controls threads: "
                             f"{lib['kernel_controls_threads']}" for lib in fr.blas_info())
    return [f"- threadpoolctl {threadpoolctl.__version__}: {libs}",
            f"- `fr.blas_info()` (the BLAS the kernels call): {kernels_blas}"]




def _ms(seconds):
    return f"{seconds * 1e3:.3f}" if seconds < 0.1 else f"{seconds * 1e3:.1f}"


def _us(seconds):
    return f"{seconds * 1e6:.0f}"


def _target(row):
    if row["H"] < TARGET_MIN_H:
        return f"n/a (H < {TARGET_MIN_H})"
    return "met" if row["share_outside_layer"] <= TARGET_SHARE else "**MISSED**"


def head_flop_share(row):
    """The head's share of the step's matrix-product FLOPs, 64·H against the
    layer's 2·G·H² per row (E = H): a floor on the share outside the layer
    that removing overhead cannot lower."""
    head = workloads.HEAD
    return head / (2 * workloads.GATES[row["cell"]] * row["H"] + head)


def report(rows, args, settings, header):
    L = ["# fastrnn training step: share outside the recurrent kernels", ""]
    L.append(f"`python bench/step_breakdown.py {' '.join(sys.argv[1:])}`".replace("  ", " ")
             + f" — {time.strftime('%Y-%m-%d %H:%M:%S')}"
             + (" — **--quick (smoke test: tiny configs, few rounds; noisy)**"
                if args.quick else ""))
    L.append("")
    L += header
    L.append("")
    L.append(f"Workload: `workloads.FastrnnModel` — ids (T, B) over V = {settings['vocab']} → "
             f"fr.Embedding(V, E=H) → fr.RNN(tanh)/LSTM/GRU → fr.Linear(H, {workloads.HEAD}) "
             f"→ fr.CrossEntropyLoss → backward (embedding gradient included) → "
             f"fr.optim.Adam(lr {workloads.LR:g}); float32. Contenders interleaved (order "
             f"reversed every round), medians; *bg* = CPUs' worth of other processes' work "
             f"during the row's rounds (> 0.25 means the numbers are disturbed).")
    L.append("")
    L += ["## Share of the step outside the recurrent layer", "",
          f"outside layer = 1 − recurrent fwd+bwd / full step (target ≤ "
          f"{TARGET_SHARE:.0%} at H ≥ {TARGET_MIN_H}); outside kernels = 1 − recurrent "
          f"kernel time / phased step (the layer's Python and checks count as outside); "
          f"outside all kernels = share of the phased step spent outside every compiled "
          f"kernel (Python, checks, copies, allocation, fills). head FLOP share = the "
          f"Linear head's share of the step's matrix-product FLOPs (64·H against the "
          f"layer's 2·G·H² per row): a floor for 'outside layer' that removing overhead "
          f"cannot lower. faults = median minor page "
          f"faults per call (4 KiB first touches of freshly allocated memory; each costs "
          f"time, inside kernels too).", ""]
    head = ["cell", "T", "B", "H", "thr", "full ms", "recurrent ms", "outside layer",
            "target", "head FLOP share", "outside kernels", "outside all kernels", "phased ms", "rounds",
            "spread full/rec", "faults full/rec", "bg"]
    L.append("| " + " | ".join(head) + " |")
    L.append("|" + "---|" * len(head))
    for r in rows:
        bg = "—" if r["bg"] is None else f"{r['bg']:.2f}"
        L.append("| " + " | ".join(str(c) for c in [
            r["cell"], r["T"], r["B"], r["H"], r["threads"], _ms(r["full"]),
            _ms(r["recurrent"]), f"{r['share_outside_layer']:.1%}", _target(r),
            f"{head_flop_share(r):.1%}", f"{r['share_outside_kernels']:.1%}", f"{r['share_outside_all_kernels']:.1%}",
            _ms(r["phased"]), r["rounds"],
            f"{r['spread_full']:.2f}/{r['spread_recurrent']:.2f}",
            f"{r['faults_full']:.0f}/{r['faults_recurrent']:.0f}", bg]) + " |")
    L.append("")
    L += ["## Per-part breakdown of the phased step (median µs)", "",
          "Each cell: total µs / of which outside compiled kernels (Python, argument "
          "checks, copies, allocation; zero_grad is numpy fills). The last columns: sum "
          "of the part medians and of their non-kernel parts.", ""]
    head = ["cell", "T", "B", "H", "thr"] + list(PARTS) + ["sum", "non-kernel sum"]
    L.append("| " + " | ".join(head) + " |")
    L.append("|" + "---|" * len(head))
    for r in rows:
        cells = [f"{_us(r['parts'][p])} / {_us(max(r['parts'][p] - r['kernel'][p], 0))}"
                 for p in PARTS]
        total = sum(r["parts"].values())
        other = sum(max(r["parts"][p] - r["kernel"][p], 0) for p in PARTS)
        L.append("| " + " | ".join(str(c) for c in [r["cell"], r["T"], r["B"], r["H"],
                                                     r["threads"]] + cells
                                   + [_us(total), f"{_us(other)} ({other / total:.0%})"])
                 + " |")
    L.append("")
    return "\n".join(L)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cells", default="rnn,lstm,gru")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--configs", default=None,
                   help="TxBxH list, e.g. 50x32x64,100x64x256 (default: the four "
                        "configs of compare.py)")
    p.add_argument("--quick", action="store_true", help="smoke test: tiny configs, few rounds")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds of interleaved rounds per row (default 8; --quick 0.5)")
    p.add_argument("--vocab", type=int, default=workloads.VOCAB)
    p.add_argument("--out", help="also write the markdown report to this file")
    args = p.parse_args(argv)
    from fastrnn import _process
    _process.keep_freed_arrays_mapped()     # the tuned allocator, as the fastrnn command has

    settings = dict(budget=0.5, min_reps=5, max_reps=60, warmup=1) if args.quick \
        else dict(budget=8.0, min_reps=9, max_reps=300, warmup=2)
    if args.budget is not None:
        settings["budget"] = args.budget
    settings["vocab"] = args.vocab
    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    for c in cells:
        if c not in workloads.CELLS:
            p.error(f"unknown cell {c!r} (choose from {', '.join(workloads.CELLS)})")
    try:
        threads = sorted({int(t) for t in args.threads.split(",") if t.strip()})
    except ValueError:
        p.error(f"--threads must be a comma-separated list of ints, got {args.threads!r}")
    if not threads or threads[0] < 1:
        p.error(f"--threads must be positive ints, got {args.threads!r}")
    if args.configs:
        try:
            configs = [tuple(int(v) for v in c.lower().split("x"))
                       for c in args.configs.split(",") if c.strip()]
        except ValueError:
            configs = [()]
        if not configs or any(len(c) != 3 or min(c) < 1 for c in configs):
            p.error(f"--configs must be TxBxH items separated by commas, got {args.configs!r}")
    else:
        configs = QUICK_CONFIGS if args.quick else CONFIGS

    import fastrnn as fr
    from threadpoolctl import threadpool_limits

    for var in OPENBLAS_OVERRIDES:
        if var in os.environ:
            print(f"WARNING: {var}={os.environ[var]} is set; run as `env -u OPENBLAS_CORETYPE "
                  f"-u OPENBLAS_L2_SIZE python bench/step_breakdown.py`", file=sys.stderr)
    cpus = sorted(os.sched_getaffinity(0))
    header = [f"- CPU: {cpu_model()}; {len(cpus)} CPUs allowed {cpus}; load average "
              + " / ".join(f"{x:.2f}" for x in os.getloadavg()) + " at start",
              f"- fastrnn {fr.__version__} ({fr.__file__}), OpenMP {fr.openmp_enabled()}; "
              f"numpy {np.__version__}; Python {platform.python_version()}"]
    header += _blas_lines()
    for line in header:
        print(line, file=sys.stderr)
    overrides = [f"{v}={os.environ[v]}" for v in OPENBLAS_OVERRIDES if v in os.environ]
    if overrides:
        header.append(f"- **WARNING**: {', '.join(overrides)} set: BLAS may use kernels for "
                      f"another CPU")

    check_phased_matches()
    rows = []
    previous = fr.get_num_threads()
    t_start = time.perf_counter()
    try:
        for n in threads:
            fr.set_num_threads(n)
            with threadpool_limits(limits=n, user_api="blas"):
                for cell in cells:
                    for (T, B, H) in configs:
                        t0 = time.perf_counter()
                        row = measure(cell, T, B, H, settings, cpus)
                        row["threads"] = n
                        rows.append(row)
                        print(f"  [{time.perf_counter() - t_start:6.1f}s] {cell} {T}x{B}x{H} "
                              f"x{n}: full {_ms(row['full'])} ms, recurrent "
                              f"{_ms(row['recurrent'])} ms, outside "
                              f"{row['share_outside_layer']:.1%} ({row['rounds']} rounds, "
                              f"{time.perf_counter() - t0:.1f}s)", file=sys.stderr, flush=True)
    finally:
        fr.set_num_threads(previous)
    text = report(rows, args, settings, header)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
