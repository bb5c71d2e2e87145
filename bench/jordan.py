"""Jordan forward + backward vs an Elman RNN with a Linear head of the same sizes.

fr.Jordan(E, H, O) computes y_t = g(W_hy f(W_ih x_t + W_yh y_{t-1} + b_h) + b_y):
the output product sits inside the recurrence.  The comparison is
fr.RNN(E, H) followed by fr.Linear(H, O) on every step (the output product
outside the recurrence, one big product after it): the same parameter
products per step, except that the Jordan recurrence reads y (O wide)
instead of h (H wide).  One training step = forward + backward of the whole
sequence (input gradient included), identity output, float32.

The contenders take turns; the minimum over the rounds is reported (the
machine may be shared: the minimum is the least disturbed run).

    python bench/jordan.py                # a few minutes of CPU
    python bench/jordan.py --quick
"""

import argparse
import time

import numpy as np

import fastrnn as fr
from machine import cpu_model

CONFIGS = [(50, 32, 32, 64, 32), (100, 32, 64, 128, 64), (100, 64, 128, 256, 128)]


def jordan_step(T, B, E, H, O):
    layer = fr.Jordan(E, H, O, seed=0)
    x = np.random.default_rng(0).standard_normal((T, B, E)).astype(np.float32)
    d_out = np.ones((T, B, O), np.float32)

    def step():
        layer(x)
        layer.backward(d_out)
    return step


def elman_step(T, B, E, H, O):
    rnn, head = fr.RNN(E, H, seed=0), fr.Linear(H, O, seed=1)
    x = np.random.default_rng(0).standard_normal((T, B, E)).astype(np.float32)
    d_y = np.ones((T, B, O), np.float32)

    def step():
        out, _ = rnn(x)
        head(out)
        rnn.backward(head.backward(d_y))
    return step


def interleaved_min(steps, rounds):
    for step in steps.values():
        step()
    best = {name: float("inf") for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    configs = CONFIGS[:2] if args.quick else CONFIGS
    print(f"CPU: {cpu_model()}, {fr.get_num_threads()} fastrnn threads; "
          f"min over {args.rounds} interleaved rounds")
    print("| T, B, E, H, O | Jordan fwd+bwd (ms) | RNN + Linear fwd+bwd (ms) | ratio |")
    print("|---|---|---|---|")
    for config in configs:
        best = interleaved_min({"jordan": jordan_step(*config),
                                "elman": elman_step(*config)}, args.rounds)
        print(f"| {config} | {1e3 * best['jordan']:.2f} | {1e3 * best['elman']:.2f} | "
              f"{best['jordan'] / best['elman']:.2f} |")


if __name__ == "__main__":
    main()
