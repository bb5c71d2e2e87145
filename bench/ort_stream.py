#!/usr/bin/env python
"""fastrnn vs ONNX Runtime vs torch: inference rows and streaming (us per step).

    PYTHONPATH=src python bench/ort_stream.py                 # everything
    PYTHONPATH=src python bench/ort_stream.py --only stream   # streaming only
    PYTHONPATH=src python bench/ort_stream.py --only infer --threads 1,2

Inference rows: a layer + Linear(H -> 64) head on every step, float32, one
layer, the same weights in all three (ORT runs its own LSTM / GRU
(linear_before_reset=1) / RNN operators, graph built with onnx.helper, one
session per thread count via ``intra_op_num_threads``).  Reported: sequences
per second, fastrnn / ORT and fastrnn / torch.

Streaming: microseconds per step at B=1 for ``stream.step(x_t)``, the
compiled part alone (``LayerStream.step``), ``layer(x_t, hx)`` with T=1,
ORT ``session.run`` on one step (state fed back), torch ``nn.LSTMCell`` /
``GRUCell`` / ``RNNCell``, and the kernel's own per-step time (a T=2000
whole-sequence run / 2000): stream overhead = stream.step - kernel.

Timing: min over ``--repeats`` rounds of a tight loop (the machine may be
shared; the minimum is the least disturbed).  Not a test.
"""

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

INFER_ROWS = [("lstm", 50, 32, 64), ("lstm", 100, 64, 256), ("lstm", 100, 32, 512),
              ("lstm", 200, 1, 64), ("lstm", 200, 4, 256), ("lstm", 200, 1, 256),
              ("gru", 200, 1, 64), ("gru", 100, 32, 512), ("gru", 200, 4, 256),
              ("rnn_tanh", 100, 32, 256)]
HEAD = 64


def best_time(fn, repeats, min_seconds=0.05):
    """Minimum seconds per call over ``repeats`` rounds of a calibrated loop."""
    fn()
    n = 1
    while True:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            break
        n *= 2
    best = elapsed / n
    for _ in range(repeats - 1):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - start) / n)
    return best


def ort_session(layer, cell, steps, batch, threads, head=None):
    import onnxruntime as ort
    from test_parity_ort import _graph
    model = _graph(layer, cell, steps, batch)
    if head is not None:
        model = _with_head(model, head)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _with_head(model_bytes, head):
    """The parity graph plus y @ W^T + b on every step (output "logits")."""
    import onnx
    from onnx import helper, numpy_helper
    model = onnx.load_from_string(model_bytes)
    params = head.state_dict()
    model.graph.initializer.extend([
        numpy_helper.from_array(np.ascontiguousarray(params["weight"].T), "head_w"),
        numpy_helper.from_array(params["bias"], "head_b")])
    model.graph.node.extend([helper.make_node("MatMul", ["y", "head_w"], ["head_mm"]),
                             helper.make_node("Add", ["head_mm", "head_b"], ["logits"])])
    model.graph.output.insert(0, helper.make_tensor_value_info(
        "logits", onnx.TensorProto.FLOAT, None))
    return model.SerializeToString()


def torch_layer(layer, cell):
    import torch
    kind = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}.get(cell, torch.nn.RNN)
    options = {} if cell in ("lstm", "gru") else {"nonlinearity": cell[4:]}
    module = kind(layer.input_size, layer.hidden_size, **options)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    return module.eval()


def infer_rows(threads_list, repeats):
    import torch
    import fastrnn as fr
    from helpers import make_layer
    print("## Inference: layer + Linear(H->64) head, seq/s (float32)\n")
    print("| cell | (T,B,H) | threads | fastrnn | ORT | torch | fr/ORT | fr/torch |")
    print("|---|---|---|---|---|---|---|---|")
    for cell, T, B, H in INFER_ROWS:
        layer = make_layer(cell, H, H, seed=0).eval()
        head = fr.Linear(H, HEAD, seed=1).eval()
        x = np.random.default_rng(0).standard_normal((T, B, H)).astype(np.float32)
        t_layer, t_head = torch_layer(layer, cell), torch.nn.Linear(H, HEAD)
        t_head.load_state_dict({k: torch.from_numpy(v) for k, v in head.state_dict().items()})
        tx = torch.from_numpy(x)
        for threads in threads_list:
            fr.set_num_threads(threads)
            torch.set_num_threads(threads)
            session = ort_session(layer, cell, T, B, threads, head)
            feeds = {"x": x, "lens": np.full(B, T, np.int32),
                     "h0": np.zeros((1, B, H), np.float32)}
            if cell == "lstm":
                feeds["c0"] = feeds["h0"]
            lat = {"fastrnn": best_time(lambda: head(layer(x)[0]), repeats),
                   "ORT": best_time(lambda: session.run(["logits"], feeds), repeats)}
            with torch.inference_mode():
                lat["torch"] = best_time(lambda: t_head(t_layer(tx)[0]), repeats)
            rate = {k: B / v for k, v in lat.items()}
            print(f"| {cell} | ({T},{B},{H}) | {threads} | {rate['fastrnn']:.0f} | "
                  f"{rate['ORT']:.0f} | {rate['torch']:.0f} | "
                  f"{rate['fastrnn'] / rate['ORT']:.2f} | "
                  f"{rate['fastrnn'] / rate['torch']:.2f} |", flush=True)
    print()


def stream_rows(sizes, repeats):
    import torch
    import fastrnn as fr
    from helpers import make_layer
    fr.set_num_threads(1)
    torch.set_num_threads(1)
    print("## Streaming: us per step, B=1, float32, 1 thread\n")
    print("| cell | H | kernel | LayerStream.step | stream.step | overhead | "
          "layer(x_t, hx) | ORT run | torch cell | task model step |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for cell in ("lstm", "gru", "rnn_tanh"):
        for H in sizes:
            layer = make_layer(cell, H, H, seed=0).eval()
            rng = np.random.default_rng(0)
            x_t = rng.standard_normal((1, H)).astype(np.float32)
            long = rng.standard_normal((2000, 1, H)).astype(np.float32)
            kernel = best_time(lambda: layer(long), max(2, repeats // 2)) / 2000
            stream = layer.stream()
            compiled = stream._kernel
            us = {"kernel": kernel, "compiled": best_time(lambda: compiled.step(x_t), repeats),
                  "stream": best_time(lambda: stream.step(x_t), repeats)}
            state = [layer(x_t[None])[1]]

            def layer_step():
                state[0] = layer(x_t[None], state[0])[1]
            us["layer"] = best_time(layer_step, repeats)
            session = ort_session(layer, cell, 1, 1, 1)
            feeds = {"x": x_t[None], "lens": np.ones(1, np.int32),
                     "h0": np.zeros((1, 1, H), np.float32)}
            if cell == "lstm":
                feeds["c0"] = feeds["h0"]
            us["ort"] = best_time(lambda: session.run(None, feeds), repeats)
            kind = {"lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}.get(
                cell, torch.nn.RNNCell)
            cell_module = kind(H, H).eval()
            tx = torch.from_numpy(x_t)
            hidden = [cell_module(tx)]

            def torch_step():
                hidden[0] = cell_module(tx, hidden[0])
            with torch.inference_mode():
                hidden = [cell_module(tx)]
                us["torch"] = best_time(torch_step, repeats)
            us["task"] = task_step_time(cell, H, repeats)
            us = {k: v * 1e6 for k, v in us.items()}
            print(f"| {cell} | {H} | {us['kernel']:.2f} | {us['compiled']:.2f} | "
                  f"{us['stream']:.2f} | {us['stream'] - us['kernel']:.2f} | "
                  f"{us['layer']:.1f} | {us['ort']:.1f} | {us['torch']:.1f} | "
                  f"{us['task']:.1f} |", flush=True)
    print()


def task_step_time(cell, H, repeats):
    """A per-step SequenceRegressor(per_step=True) with H hidden units:
    ``stream().step(features)`` on 8 features."""
    from fastrnn.tasks.regressor import SequenceRegressor
    rng = np.random.default_rng(0)
    X = [rng.standard_normal((5, 8)) for _ in range(4)]
    model = SequenceRegressor(cell=cell[:4].rstrip("_"), hidden_size=H, per_step=True,
                              seed=0)
    model.fit(X, [x[:, 0] for x in X], epochs=1, verbose=0)
    stream = model.stream()
    row = rng.standard_normal(8)
    return best_time(lambda: stream.step(row), repeats)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=("infer", "stream"))
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--sizes", default="64,256")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    import fastrnn as fr
    from machine import cpu_model
    print(f"CPU: {cpu_model()}; kernels: {fr.kernel_levels() if hasattr(fr, 'kernel_levels') else ''}\n")
    if args.only in (None, "stream"):
        stream_rows([int(s) for s in args.sizes.split(",")], args.repeats)
    if args.only in (None, "infer"):
        infer_rows([int(t) for t in args.threads.split(",")], args.repeats)


if __name__ == "__main__":
    main()
