"""``fastrnn bench``: a quick throughput benchmark (fastrnn alone when torch is absent)."""

import statistics
import time

import numpy as np


# -- fastrnn bench ----------------------------------------------------------------------------

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
    """Matrix FLOPs of one forward pass (the elementwise gate math is not counted)."""
    gates = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    return 2.0 * T * B * (E * gates * H + H * gates * H)


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
    configs = [(20, 16, 64)] if args.quick else [(50, 32, 128), (50, 32, 256)]
    budget, reps = (0.15, 10) if args.quick else (1.0, 200)
    cells = args.cells
    fr.set_num_threads(1)
    if torch is not None:
        torch.set_num_threads(1)
    rows = []
    with threadpool_limits(limits=1):
        roofline = _gemm_gflops(512 if args.quick else 1024, budget)
        print(f"fastrnn bench: 1 thread, float32, input size = hidden size, zero initial "
              f"state; torch {'%s' % torch.__version__ if torch is not None else 'not used'}")
        print(f"roofline: numpy float32 GEMM {512 if args.quick else 1024}^3 = "
              f"{roofline:.1f} GFLOP/s on 1 thread (measured now)")
        print("train = forward + backward (weight gradients, no input gradient); "
              "infer = eval-mode forward")
        for cell in cells:
            for T, B, H in configs:
                row = _bench_one(fr, torch, cell, T, B, H, budget, reps)
                flops = _recurrent_flops(cell, T, B, H, H)
                row.update(cell=cell, T=T, B=B, H=H,
                           train_roof=3 * flops * row["fr_train"] / B / 1e9 / roofline,
                           infer_roof=flops * row["fr_infer"] / B / 1e9 / roofline)
                rows.append(row)
    header = (f"{'cell':<5} {'T':>4} {'B':>4} {'H':>5} | {'train seq/s':>11} "
              f"{'torch':>9} {'x torch':>7} | {'infer seq/s':>11} {'torch':>9} "
              f"{'x torch':>7} | {'% roofline train/infer':>22}")
    print(header)
    print("-" * len(header))
    for row in rows:
        def cells_for(mode):
            mine, theirs = row[f"fr_{mode}"], row.get(f"torch_{mode}")
            if theirs is None:
                return f"{mine:>11.1f} {'-':>9} {'-':>7}"
            return f"{mine:>11.1f} {theirs:>9.1f} {mine / theirs:>7.2f}"
        print(f"{row['cell']:<5} {row['T']:>4} {row['B']:>4} {row['H']:>5} | "
              f"{cells_for('train')} | {cells_for('infer')} | "
              f"{row['train_roof']:>11.0%} / {row['infer_roof']:.0%}")
    if torch is None and not args.no_torch:
        print("(torch is not installed: fastrnn alone)")
    return 0


def _bench_one(fr, torch, cell, T, B, H, budget, reps):
    rng = np.random.default_rng(0)
    layer = {"rnn": fr.RNN, "lstm": fr.LSTM, "gru": fr.GRU}[cell](H, H, seed=0)
    x = rng.standard_normal((T, B, H), dtype=np.float32)
    d_out = rng.standard_normal((T, B, H), dtype=np.float32)

    def fr_train():
        layer.train()
        layer.zero_grad()
        layer(x)
        layer.backward(d_out, input_grad=False)

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
