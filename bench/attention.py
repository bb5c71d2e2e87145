"""Seq2Seq with attention: training throughput, and the long-source learning run.

    python bench/attention.py                  # throughput: none / dot / general / additive
    python bench/attention.py --learn          # + reversal of 25-40 digit strings
    python bench/attention.py --quick          # smaller sizes, a smoke test

Throughput: ``fit(epochs=1)`` on the same pairs for each attention setting,
rounds interleaved (the machine may be shared: interleaving spreads any
disturbance over all settings) and the minimum per setting kept; reported
as source-target pairs and target tokens (``<eos>`` included) per second,
and relative to ``attention=None``.

Learning: reverse digit strings of 25-40 characters, a fixed budget (same
data, epochs and optimizer for every setting), exact match on 300 held-out
strings with greedy decoding.  Without attention the whole source must pass
through the encoder's final state; with it the decoder looks it up.
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__)))
from machine import cpu_model  # noqa: E402

import fastrnn as fr  # noqa: E402
from fastrnn.training import Callback  # noqa: E402

def digit_strings(rng, n, low, high):
    return ["".join(rng.choice(list("0123456789"), size=int(rng.integers(low, high + 1))))
            for _ in range(n)]


def model_for(attention, hidden, seed=0):
    return fr.Seq2Seq(hidden_size=hidden, embedding_dim=32, attention=attention, seed=seed)


def throughput(args):
    rng = np.random.default_rng(0)
    sources = digit_strings(rng, args.pairs, args.low, args.high)
    targets = [s[::-1] for s in sources]
    tokens = sum(len(t) + 1 for t in targets)
    best = {setting: float("inf") for setting in args.settings}
    best_cpu = dict(best)
    for _ in range(args.rounds):
        for setting in args.settings:
            model = model_for(setting, args.hidden)
            start, start_cpu = time.perf_counter(), time.process_time()
            model.fit(sources, targets, epochs=1, batch_size=args.batch_size, verbose=0)
            best[setting] = min(best[setting], time.perf_counter() - start)
            best_cpu[setting] = min(best_cpu[setting], time.process_time() - start_cpu)
    print(f"\n## Training throughput: reversal, {args.pairs} pairs of {args.low}-{args.high} "
          f"digits, hidden {args.hidden}, batch {args.batch_size}, LSTM, "
          f"{fr.get_num_threads()} threads, min of {args.rounds} interleaved rounds\n")
    print("Wall time suffers most on a shared machine; process CPU time (all "
          "threads) is the steadier figure.\n")
    print("| attention | wall s / epoch | pairs / s | target tokens / s | vs none (wall) "
          "| CPU s / epoch | vs none (CPU) |")
    print("|---|---|---|---|---|---|---|")
    for setting in args.settings:
        seconds, cpu = best[setting], best_cpu[setting]
        print(f"| {setting} | {seconds:.2f} | {args.pairs / seconds:.0f} | "
              f"{tokens / seconds:.0f} | {best[None] / seconds:.2f}x | {cpu:.2f} | "
              f"{best_cpu[None] / cpu:.2f}x |")


class _ExactMatchPerEpoch(Callback):
    """Greedy exact match on the held-out pairs after every epoch."""

    def __init__(self, model, sources, targets):
        self.seq2seq, self.sources, self.targets = model, sources, targets
        self.curve = []

    def on_epoch_end(self, epoch, logs=None):
        scores = self.seq2seq.score(self.sources, self.targets, max_length=45)
        self.curve.append(scores["exact_match"])


def learning(args):
    rng = np.random.default_rng(1)
    train = digit_strings(rng, args.learn_pairs, 25, 40)
    test = digit_strings(rng, 300, 25, 40)
    expected = [s[::-1] for s in test]
    print(f"\n## Learning: reverse 25-40 digit strings; {args.learn_pairs} pairs, "
          f"{args.learn_epochs} epochs, hidden {args.hidden}, Adam lr 0.01, batch 32; "
          f"greedy exact match on 300 held-out strings after each epoch\n")
    print("| attention | exact match per epoch | final token accuracy | first epoch >= 0.9 "
          "| fit seconds (incl. per-epoch scoring) |")
    print("|---|---|---|---|---|")
    for setting in args.settings:
        model = model_for(setting, args.hidden)
        tracker = _ExactMatchPerEpoch(model, test, expected)
        start = time.perf_counter()
        model.fit(train, [s[::-1] for s in train], epochs=args.learn_epochs, lr=0.01,
                  batch_size=32, verbose=0, callbacks=[tracker])
        seconds = time.perf_counter() - start
        scores = model.score(test, expected, max_length=45)
        reached = next((i + 1 for i, v in enumerate(tracker.curve) if v >= 0.9), "-")
        curve = " ".join(f"{v:.2f}" for v in tracker.curve)
        print(f"| {setting} | {curve} | {scores['token_accuracy']:.3f} | {reached} | "
              f"{seconds:.0f} |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1024)
    parser.add_argument("--low", type=int, default=25)
    parser.add_argument("--high", type=int, default=40)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--learn", action="store_true", help="also run the learning budget")
    parser.add_argument("--learn-pairs", type=int, default=4000)
    parser.add_argument("--learn-epochs", type=int, default=16)
    parser.add_argument("--settings", default="none,dot,general,additive",
                        help="comma-separated attention settings ('none' first: the "
                             "baseline of the speed ratios)")
    parser.add_argument("--no-throughput", action="store_true")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    args.settings = [None if name == "none" else name for name in args.settings.split(",")]
    if args.settings[0] is not None:
        parser.error("--settings must start with none (the baseline)")
    if args.quick:
        args.pairs, args.rounds, args.hidden = 128, 1, 32
        args.learn_pairs, args.learn_epochs = 256, 1
    print(f"CPU: {cpu_model()}; fastrnn threads: {fr.get_num_threads()}")
    if not args.no_throughput:
        throughput(args)
    if args.learn:
        learning(args)


if __name__ == "__main__":
    main()
