#!/usr/bin/env python
"""A whole char-LSTM language-model training loop: fastrnn against PyTorch (issue 18).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/train_loop.py           # 100 steps
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/train_loop.py --quick   # 10 steps
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/train_loop.py --breakdown

``--ref-src OTHER/src`` adds fastrnn imported from another checkout as a
third contender in the same alternation (a before/after comparison on a
shared machine).  ``--breakdown`` also prints where each framework's step goes, per phase
(ms per step, from the best run): a clock read between the phases of the
timed loop itself (no other instrumentation while it is timed).  PyTorch's
backward is one ``loss.backward()`` call; after its timed loop, a few more
steps under ``torch.autograd.profiler`` give the shares of its backward
nodes, which split that span into loss, head, LSTM and embedding backward.
``--clock cpu`` times phases with the process's CPU time instead of the wall
clock (steadier on a shared machine: time spent waiting for a core is not
counted); the table always shows both the loop's wall and CPU time.

Model: Embedding(V, 64) -> LSTM(64, 256) -> Linear(256, V), softmax
cross-entropy over every step, gradient clipping (joint 2-norm 1.0), Adam
(lr 2e-3), on characters of real English text (this repository's README and
docs by default, ``--text FILE`` for another), T = 100, B = 64.  Both
frameworks start from identical weights and see identical batches; each runs
in its own subprocess with the same thread count (fastrnn/torch threads and
BLAS threads).  Reported: wall time of the loop (after one warm-up step that
is not counted), ms per step, the first and final loss, and fastrnn's time
as a fraction of PyTorch's (target: <= 0.6 at H = 256, 1 thread).

fastrnn runs twice: "fastrnn" feeds the ids to the layer,
``lstm(x, embedding=embedding)``, which makes the input product once per
vocabulary row (V = 70-100 characters here, against T * B = 6400 tokens);
"fastrnn-separate" is the two-module form ``lstm(embedding(x))``, whose input
product is one row per token, as in PyTorch.
"""

import argparse
import glob
import inspect
import json
import os
import subprocess
import sys
import time
from collections import defaultdict

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from machine import cpu_model  # noqa: E402

EMBED, HIDDEN, T, B, LR, CLIP = 64, 256, 100, 64, 2e-3, 1.0


def corpus(path):
    paths = [path] if path else [os.path.join(ROOT, "README.md")] + sorted(
        glob.glob(os.path.join(ROOT, "docs", "*.md")))
    text = "".join(open(p, encoding="utf-8").read() for p in paths)
    chars = sorted(set(text))
    ids = np.array([chars.index(c) for c in text], dtype=np.int64)
    return ids, len(chars)


def batches(ids, steps, seed=0):
    """``steps`` (inputs, targets) pairs of (T, B) windows at random offsets."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps + 1):                           # + the warm-up step
        starts = rng.integers(0, len(ids) - T - 1, size=B)
        window = np.stack([ids[s:s + T + 1] for s in starts], axis=1)    # (T + 1, B)
        out.append((np.ascontiguousarray(window[:-1]), np.ascontiguousarray(window[1:])))
    return out


def init_params(vocab, seed=0):
    """PyTorch's initial distributions, drawn once with numpy for both frameworks."""
    rng = np.random.default_rng(seed)
    bound = 1.0 / np.sqrt(HIDDEN)
    u = lambda *shape: rng.uniform(-bound, bound, shape).astype(np.float32)  # noqa: E731
    return {"embedding": rng.standard_normal((vocab, EMBED), dtype=np.float32),
            "weight_ih_l0": u(4 * HIDDEN, EMBED), "weight_hh_l0": u(4 * HIDDEN, HIDDEN),
            "bias_ih_l0": u(4 * HIDDEN), "bias_hh_l0": u(4 * HIDDEN),
            "head_weight": u(vocab, HIDDEN), "head_bias": u(vocab)}


# -- per-phase clock (--breakdown) ---------------------------------------------------------
PHASES = ("zero_grad", "embedding fwd", "lstm fwd", "head fwd", "loss", "backward (torch)",
          "loss bwd", "head bwd", "lstm bwd", "embedding bwd", "clip_grad_norm", "Adam")
# PyTorch backward nodes -> the phase they belong to (the rest: "backward (torch)").
TORCH_NODES = {"MkldnnRnnLayerBackward0": "lstm bwd", "CudnnRnnBackward0": "lstm bwd",
               "AddmmBackward0": "head bwd", "TBackward0": "head bwd",
               "ViewBackward0": "head bwd", "UnsafeViewBackward0": "head bwd",
               "LogSoftmaxBackward0": "loss bwd", "NllLossBackward0": "loss bwd",
               "EmbeddingBackward0": "embedding bwd"}


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


class Spans:
    """Seconds per phase: ``tick(name)`` charges the time since the last
    tick (or ``start``) to ``name``."""

    def __init__(self, clock):
        self.clock = clock
        self.seconds = defaultdict(float)
        self.last = 0.0

    def start(self):
        self.last = self.clock()

    def tick(self, name):
        now = self.clock()
        self.seconds[name] += now - self.last
        self.last = now


def no_tick(name):
    """The clock of a run without --breakdown: nothing."""


# -- the two loops (each in its own worker process) --------------------------------------
def fastrnn_loop(params, data, tick=no_tick, separate=False):
    """fastrnn's loop: ``lstm(x, embedding=embedding)`` (token ids in, the
    input product made once per vocabulary row), or with ``separate`` the
    two-module form ``lstm(embedding(x))`` (also any fastrnn before the
    ``embedding`` keyword existed)."""
    import fastrnn as fr

    vocab = params["embedding"].shape[0]
    embedding, lstm, head = fr.Embedding(vocab, EMBED), fr.LSTM(EMBED, HIDDEN), \
        fr.Linear(HIDDEN, vocab)
    embedding.load_state_dict({"weight": params["embedding"]})
    lstm.load_state_dict({k: params[k] for k in ("weight_ih_l0", "weight_hh_l0",
                                                  "bias_ih_l0", "bias_hh_l0")})
    head.load_state_dict({"weight": params["head_weight"], "bias": params["head_bias"]})
    modules = [embedding, lstm, head]
    criterion, opt = fr.CrossEntropyLoss(), fr.optim.Adam(modules, lr=LR)
    # No gradient for the zero initial state, as in PyTorch (h0 not given);
    # a fastrnn from before ``state_grad`` (--ref-src) computes it.
    no_state_grad = ({"state_grad": False}
                     if "state_grad" in inspect.signature(lstm.backward).parameters else {})

    def step(x, y):
        opt.zero_grad()
        tick("zero_grad")
        if separate:
            embedded = embedding(x)
            tick("embedding fwd")
            out, _ = lstm(embedded)
        else:
            out, _ = lstm(x, embedding=embedding)
        tick("lstm fwd")
        logits = head(out)
        tick("head fwd")
        loss, d_logits = criterion(logits, y)
        tick("loss")
        d_out = head.backward(d_logits)
        tick("head bwd")
        d_x, _ = lstm.backward(d_out, **no_state_grad)
        tick("lstm bwd")
        if separate:
            embedding.backward(d_x)
            tick("embedding bwd")
        fr.clip_grad_norm(modules, CLIP)
        tick("clip_grad_norm")
        opt.step()
        tick("Adam")
        return float(loss)

    return step


def torch_loop(params, data, tick=no_tick):
    import torch
    import torch.nn.functional as F

    vocab = params["embedding"].shape[0]
    embedding, lstm, head = (torch.nn.Embedding(vocab, EMBED), torch.nn.LSTM(EMBED, HIDDEN),
                             torch.nn.Linear(HIDDEN, vocab))
    with torch.no_grad():
        embedding.weight.copy_(torch.from_numpy(params["embedding"]))
        for name, p in lstm.named_parameters():
            p.copy_(torch.from_numpy(params[name]))
        head.weight.copy_(torch.from_numpy(params["head_weight"]))
        head.bias.copy_(torch.from_numpy(params["head_bias"]))
    parameters = [p for m in (embedding, lstm, head) for p in m.parameters()]
    opt = torch.optim.Adam(parameters, lr=LR)

    def step(x, y):
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        opt.zero_grad(set_to_none=True)
        tick("zero_grad")
        embedded = embedding(x)
        tick("embedding fwd")
        out, _ = lstm(embedded)
        tick("lstm fwd")
        logits = head(out)
        tick("head fwd")
        loss = F.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1))
        tick("loss")
        loss.backward()
        tick("backward (torch)")
        torch.nn.utils.clip_grad_norm_(parameters, CLIP)
        tick("clip_grad_norm")
        opt.step()
        tick("Adam")
        return loss.item()

    return step


def torch_backward_shares(step, data):
    """Shares of PyTorch's backward time per phase, from its autograd
    profiler over a few extra steps (after the timed loop)."""
    import torch

    node = "autograd::engine::evaluate_function: "
    seconds = defaultdict(float)
    with torch.autograd.profiler.profile() as prof:
        for x, y in data[:5]:
            step(x, y)
    for event in prof.function_events:
        if event.name.startswith(node):
            name = event.name[len(node):]
            seconds[TORCH_NODES.get(name, "backward (torch)")] += event.cpu_time_total
    total = sum(seconds.values())
    return {name: value / total for name, value in seconds.items()} if total else {}


def split_torch_backward(phases, shares):
    """Replace the one "backward (torch)" span by its profiled parts."""
    backward = phases.pop("backward (torch)", 0.0)
    for name, share in shares.items():
        phases[name] = phases.get(name, 0.0) + backward * share
    return phases


def worker(framework, threads, steps, text, breakdown=False, clock="wall"):
    """One contender's timed loop; prints its result as one JSON line."""
    from threadpoolctl import threadpool_limits

    ids, vocab = corpus(text)
    data = batches(ids, steps)
    params = init_params(vocab)
    spans = Spans(CLOCKS[clock])
    tick = spans.tick if breakdown else no_tick
    if framework == "torch":
        import torch
        torch.set_num_threads(threads)
        step = torch_loop(params, data, tick)
    else:
        import fastrnn as fr
        fr.set_num_threads(threads)
        step = fastrnn_loop(params, data, tick, separate=framework == "fastrnn-separate")
    threadpool_limits(limits=threads, user_api="blas")
    spans.start()
    first = step(*data[0])                                   # warm-up, not timed
    spans.seconds.clear()
    spans.start()
    start, cpu_start = time.perf_counter(), time.process_time()
    for x, y in data[1:]:
        last = step(x, y)
        spans.tick("float(loss)")
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    phases = {name: value / steps for name, value in spans.seconds.items()}
    if breakdown and framework == "torch":
        phases = split_torch_backward(phases, torch_backward_shares(step, data))
    print(json.dumps({"wall": wall, "cpu": cpu, "first_loss": first, "final_loss": last,
                      "vocab": vocab, "chars": int(len(ids)), "phases": phases}))


def run_worker(name, threads, args):
    """One contender's loop in its own process: fastrnn, fastrnn-separate
    (Embedding then LSTM as two modules), torch, or fastrnn-ref (the
    separate form, fastrnn imported from ``--ref-src``: before/after runs)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        env.pop(var, None)
    if name == "fastrnn-ref":
        env["PYTHONPATH"] = os.path.abspath(args.ref_src)
    framework = {"fastrnn-ref": "fastrnn-separate"}.get(name, name)
    command = [sys.executable, __file__, "--worker", framework, "--threads", str(threads),
               "--steps", str(args.steps), "--clock", args.clock] \
        + (["--text", args.text] if args.text else []) \
        + (["--breakdown"] if args.breakdown else [])
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 steps, 1 round")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2,
                        help="alternating runs per framework; the best wall time counts")
    parser.add_argument("--threads", default="1")
    parser.add_argument("--text", help="a UTF-8 text file (default: README + docs)")
    parser.add_argument("--breakdown", action="store_true",
                        help="also print ms per step of each phase, both frameworks")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="the clock of the --breakdown phases (default: wall)")
    parser.add_argument("--ref-src", metavar="DIR",
                        help="also run fastrnn imported from DIR (another checkout's src/) "
                             "as 'fastrnn-ref', in the same alternation: before/after")
    parser.add_argument("--worker", choices=("fastrnn", "fastrnn-separate", "torch"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.steps, args.rounds = 10, 1
    if args.worker:
        worker(args.worker, int(args.threads), args.steps, args.text, args.breakdown,
               args.clock)
        return
    print(f"CPU: {cpu_model()}; char-LSTM LM: Embedding(V, {EMBED}) -> LSTM({EMBED}, "
          f"{HIDDEN}) -> Linear({HIDDEN}, V), T={T}, B={B}, Adam lr={LR}, clip {CLIP}; "
          f"{args.steps} timed steps, best of {args.rounds} alternating run(s)\n")
    contenders = ["fastrnn", "fastrnn-separate", "torch"] + \
        (["fastrnn-ref"] if args.ref_src else [])
    print("| threads | framework | wall s | ms/step | CPU s | first loss | final loss | "
          "/ torch (wall) | / torch (CPU) |")
    print("|---|---|---|---|---|---|---|---|---|")
    bests = {}
    for threads in (int(v) for v in args.threads.split(",")):
        best = bests[threads] = {}
        for _ in range(args.rounds):
            for name in contenders:
                r = run_worker(name, threads, args)
                if name not in best or r["wall"] < best[name]["wall"]:
                    best[name] = r
        print_results(threads, best, args.steps)
    for threads, best in bests.items() if args.breakdown else ():
        print_breakdown(threads, best)


def print_results(threads, best, steps):
    """One table row per contender (its best run), with its time as a
    fraction of PyTorch's."""
    torch = best["torch"]
    for name, r in best.items():
        ratios = "| |" if name == "torch" else \
            f"**{r['wall'] / torch['wall']:.2f}** | {r['cpu'] / torch['cpu']:.2f} |"
        print(f"| {threads} | {name} | {r['wall']:.2f} | {r['wall'] / steps * 1e3:.1f} | "
              f"{r['cpu']:.2f} | {r['first_loss']:.4f} | {r['final_loss']:.4f} | {ratios}")


def print_breakdown(threads, best):
    """ms per step of each phase, every contender (its best run)."""
    names = list(best)
    phases = {name: best[name]["phases"] for name in names}
    print(f"\nPer phase, {threads} thread(s), ms per step (best run of each):\n")
    print("| phase | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    rows = [p for p in PHASES + ("float(loss)",) if any(p in v for v in phases.values())]
    for row in rows:
        print(f"| {row} | " + " | ".join(f"{phases[n].get(row, 0.0) * 1e3:.2f}"
                                         for n in names) + " |")
    print("| **total** | " + " | ".join(f"{sum(phases[n].values()) * 1e3:.2f}"
                                        for n in names) + " |")


if __name__ == "__main__":
    main()
