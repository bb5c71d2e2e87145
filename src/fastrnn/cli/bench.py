"""``fastrnn bench``: a quick throughput benchmark (fastrnn alone when torch is absent)."""

import argparse
import statistics
import time

import numpy as np


# The benchmarked cells and their gate counts (for the FLOPs of the roofline).
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
CELLS = tuple(GATES)
# (T steps, B batch, H hidden = input size) of each measured layer.
QUICK_SIZES = [(20, 16, 64)]
SIZES = [(50, 32, 128), (50, 32, 256)]


def add_parser(commands):
    bench = commands.add_parser(
        "bench", help="quick training/inference throughput benchmark",
        description="Sequences per second of RNN/LSTM/GRU training (forward + backward) "
                    "and inference on one thread, for fastrnn and, when installed, PyTorch, "
                    "plus fastrnn's share of a numpy GEMM roofline measured in the same run. "
                    "A quick look (about a minute; --quick: a few seconds), not "
                    "bench/compare.py's careful report.")
    bench.add_argument("--quick", action="store_true",
                       help="one small size and short timings (a few seconds)")
    bench.add_argument("--cells", type=_cell_list, default=list(CELLS), metavar="LIST",
                       help=f"comma-separated cells (default: {','.join(CELLS)})")
    bench.add_argument("--no-torch", action="store_true", help="fastrnn alone")
    bench.set_defaults(func=bench_command)


def _cell_list(text):
    cells = [cell.strip() for cell in text.split(",") if cell.strip()]
    bad = [cell for cell in cells if cell not in CELLS]
    if not cells or bad:
        raise argparse.ArgumentTypeError(f"must be a comma-separated list of "
                                         f"{', '.join(CELLS)}, got {text!r}")
    return cells


def _time_it(function, budget, max_reps, min_reps=3):
    """Median seconds of ``function()`` over repeats (one warm-up call first)."""
    function()
    times = []
    start = time.perf_counter()
    while len(times) < max_reps and (len(times) < min_reps
                                     or time.perf_counter() - start < budget):
        begin = time.perf_counter()
        function()
        times.append(time.perf_counter() - begin)
    return statistics.median(times)


def _recurrent_flops(cell, T, B, H, E):
    """Matrix FLOPs of one (forward, training step) of a layer; the elementwise gate
    math is not counted.  The training step is the forward pass plus the backward
    products: the two weight gradients and the gradient carried to the previous
    step (no input gradient, as measured)."""
    gates = GATES[cell]
    input_product, hidden_product = 2.0 * T * B * E * gates * H, 2.0 * T * B * H * gates * H
    forward = input_product + hidden_product
    return forward, forward + input_product + 2 * hidden_product


def _gemm_gflops(n, budget):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    seconds = _time_it(lambda: a @ b, budget, 50)
    return 2.0 * n ** 3 / seconds / 1e9


def bench_command(args):
    import fastrnn as fr
    from threadpoolctl import threadpool_limits

    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            torch = None
    configs = QUICK_SIZES if args.quick else SIZES
    budget, reps = (0.15, 10) if args.quick else (1.0, 200)
    gemm_size = 512 if args.quick else 1024
    fr.set_num_threads(1)
    if torch is not None:
        torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        roofline = _gemm_gflops(gemm_size, budget)
        print(f"fastrnn bench: 1 thread, float32, input size = hidden size, zero initial "
              f"state; torch {torch.__version__ if torch is not None else 'not used'}")
        print(f"roofline: numpy float32 GEMM {gemm_size}^3 = {roofline:.1f} GFLOP/s on 1 "
              f"thread (measured now)")
        print("T steps, B batch, H hidden units; seq/s: sequences per second")
        print("train: forward + backward (weight gradients, no input gradient); infer: "
              "eval-mode forward")
        print(HEADER)
        print("-" * len(HEADER), flush=True)
        for cell in args.cells:
            for T, B, H in configs:
                row = _bench_one(fr, torch, cell, T, B, H, budget, reps)
                # Share of the roofline: matrix GFLOP/s achieved over the GEMM's.
                infer_flops, train_flops = _recurrent_flops(cell, T, B, H, H)
                row.update(cell=cell, T=T, B=B, H=H,
                           train_roof=train_flops * row["fr_train"] / B / 1e9 / roofline,
                           infer_roof=infer_flops * row["fr_infer"] / B / 1e9 / roofline)
                print(_format_row(row), flush=True)
    if torch is None and not args.no_torch:
        print("(torch is not installed: fastrnn alone)")
    return 0


HEADER = (f"{'cell':<5} {'T':>4} {'B':>4} {'H':>5} | {'train seq/s':>11} {'torch':>9} "
          f"{'x torch':>7} | {'infer seq/s':>11} {'torch':>9} {'x torch':>7} | "
          f"% roofline train / infer")


def _format_row(row):
    def speeds(mode):
        mine, theirs = row[f"fr_{mode}"], row.get(f"torch_{mode}")
        if theirs is None:
            return f"{mine:>11.1f} {'-':>9} {'-':>7}"
        return f"{mine:>11.1f} {theirs:>9.1f} {mine / theirs:>7.2f}"
    return (f"{row['cell']:<5} {row['T']:>4} {row['B']:>4} {row['H']:>5} | "
            f"{speeds('train')} | {speeds('infer')} | "
            f"{row['train_roof']:>10.0%} / {row['infer_roof']:.0%}")


def _bench_one(fr, torch, cell, T, B, H, budget, reps):
    rng = np.random.default_rng(0)
    layer = {"rnn": fr.RNN, "lstm": fr.LSTM, "gru": fr.GRU}[cell](H, H, seed=0)
    x = rng.standard_normal((T, B, H), dtype=np.float32)
    d_out = rng.standard_normal((T, B, H), dtype=np.float32)

    def fr_train():
        layer.train()
        layer.zero_grad()
        layer(x)
        layer.backward(d_out, input_grad=False, state_grad=False)

    def fr_infer():
        layer.eval()
        layer(x)

    row = {"fr_train": B / _time_it(fr_train, budget, reps),
           "fr_infer": B / _time_it(fr_infer, budget, reps)}
    if torch is not None:
        module = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](H, H)
        xt, dt = torch.from_numpy(x), torch.from_numpy(d_out)

        def torch_train():
            module.zero_grad(set_to_none=False)
            out, _ = module(xt)
            out.backward(dt)

        def torch_infer():
            with torch.inference_mode():
                module(xt)

        row["torch_train"] = B / _time_it(torch_train, budget, reps)
        row["torch_infer"] = B / _time_it(torch_infer, budget, reps)
    return row
