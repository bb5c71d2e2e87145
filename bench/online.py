"""Online learning throughput: RTRL and online truncated BPTT vs full BPTT.

One stream (B = 1, input E = 8, head Linear(H, 1), MSE), float32.  Per cell
and hidden size H = 16, 32, 64:

* RTRL: ``fr.online.RTRL.step`` (exact gradient through the whole past;
  O(H^4) per step);
* TBPTT(16): ``fr.online.TBPTT(window=16).step`` (each step backpropagates
  through the last 16 steps);
* full BPTT: one forward + backward over the stream cut into sequences of
  T = 256 steps (head and loss on every step), i.e. what offline training on
  the same stream costs per step -- it only gives a gradient at the end.

Reported as steps per wall second and per CPU second (higher is better),
the best of interleaved rounds (the machine may be shared; CPU time is
less disturbed by other load than wall time).  No optimizer step is included.

    python bench/online.py                 # a few minutes of CPU
    python bench/online.py --quick         # H = 16, 32; RNN and GRU
"""

import argparse
import time

import numpy as np

import fastrnn as fr
from machine import cpu_model

E = 8
T_BPTT = 256


def make(cell, H):
    if cell == "jordan":
        layer = fr.Jordan(E, H, H, output_activation="tanh", seed=0)
    else:
        layer = {"rnn": fr.RNN, "gru": fr.GRU, "lstm": fr.LSTM}[cell](E, H, seed=0)
    return layer, fr.Linear(H, 1, seed=1)


def online_runner(cell, H, kind, steps):
    layer, head = make(cell, H)
    learner = (fr.online.RTRL(layer, head, fr.MSELoss()) if kind == "rtrl"
               else fr.online.TBPTT(layer, head, fr.MSELoss(), window=16))
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((steps, 1, E)).astype(np.float32)
    ys = rng.standard_normal((steps, 1, 1)).astype(np.float32)

    def run():
        for t in range(steps):
            learner.step(xs[t], ys[t])
        return steps
    return run


def bptt_runner(cell, H):
    layer, head = make(cell, H)
    loss = fr.MSELoss()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T_BPTT, 1, E)).astype(np.float32)
    y = rng.standard_normal((T_BPTT, 1, 1)).astype(np.float32)

    def run():
        out, _ = layer(x)
        _, d_pred = loss(head(out), y)
        layer.backward(head.backward(d_pred), input_grad=False)
        return T_BPTT
    return run


def best_rate(runners, rounds):
    """Best steps per wall second and per CPU second (all threads) of each."""
    rate = {name: [0.0, 0.0] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            wall, cpu = time.perf_counter(), time.process_time()
            steps = run()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            rate[name][0] = max(rate[name][0], steps / wall)
            rate[name][1] = max(rate[name][1], steps / max(cpu, 1e-9))
    return rate


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        fr.set_num_threads(args.threads)
    cells = ("rnn", "gru") if args.quick else ("rnn", "gru", "lstm", "jordan")
    sizes = (16, 32) if args.quick else (16, 32, 64)
    print(f"CPU: {cpu_model()}, {fr.get_num_threads()} fastrnn threads; B = 1, E = {E}; "
          f"best of {args.rounds} interleaved rounds; steps per wall second "
          f"(per CPU second of all threads)")
    print("| cell | H | RTRL | TBPTT(16) | full BPTT (T=256) | RTRL memory |")
    print("|---|---|---|---|---|---|")
    for cell in cells:
        for H in sizes:
            layer, _ = make(cell, H)
            mib = fr.online.RTRL.memory_bytes(layer) / 2**20
            steps = max(5, 4096 // H)
            runners = {"rtrl": online_runner(cell, H, "rtrl", steps if H < 64 else 10),
                       "tbptt": online_runner(cell, H, "tbptt", 50),
                       "bptt": bptt_runner(cell, H)}
            for run in runners.values():
                run()    # warm up
            rate = best_rate(runners, args.rounds)
            cols = " | ".join(f"{rate[k][0]:.0f} ({rate[k][1]:.0f})"
                              for k in ("rtrl", "tbptt", "bptt"))
            print(f"| {cell} | {H} | {cols} | {mib:.1f} MiB |", flush=True)


if __name__ == "__main__":
    main()
