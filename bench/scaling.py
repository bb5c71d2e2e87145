"""Data-parallel scaling of fr.distributed on this machine.

Trains the benchmark LSTM workload (token ids -> Embedding(1000, 256) ->
LSTM(256, 256) -> Linear(256, 64) at every step, softmax cross-entropy,
Adam; T=100, global batch B=64, float32; about 0.8M parameters) with
``fr.Trainer(..., distributed=True)`` on 1, 2 and 4 MPI ranks of one kernel
thread each (4 ranks oversubscribe a 2-core machine), plus 1 rank of 2
threads for reference.  Configurations take turns round after round, so
load from other processes falls on all of them alike; the table gives the
best and the median throughput (sequences per second) over the rounds, the
speedup over 1 rank x 1 thread and the parallel efficiency.  On a busy
machine wall-clock ratios mostly measure the share of the CPU each run got,
so the table also gives the CPU-time efficiency: the CPU seconds of 1 rank
divided by the CPU seconds of all N ranks together for the same global
batches (the best run of each), i.e. the work the ranks add by splitting the
batch and reducing (a rank sleeps while it waits for the others to join a
reduction, then tests back to back until the reduction is done: waiting for
a slower rank costs little CPU time, the reduction itself counts).
It also times an all-reduce of the model's P parameters per rank count (the
communication term of the cost model in docs/scaling.md).

    python bench/scaling.py                 # 3 rounds, 12 steps each
    python bench/scaling.py --rounds 5 --steps 16 --json scaling.json
    python bench/scaling.py --model         # the cost model's table only

Each rank runs ``--threads`` kernel threads and a BLAS pool of as many
(OMP/OPENBLAS/MKL/BLIS_NUM_THREADS), so 2 ranks x 1 thread use 2 cores.
After the measured table it prints the cost model fed with the measured
1-rank step time: predicted efficiency on 2-64 nodes over 10 and 25 Gbit/s,
and, for 2 ranks on loopback, the model with the measured all-reduce next to
the measured efficiency.

Needs fastrnn[mpi] (mpiexec from the mpich wheel, next to python).  Only
127.0.0.1 is used.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

T, B, H, E, VOCAB, CLASSES = 100, 64, 256, 256, 1000, 64
LOOPBACK_ENV = {"HYDRA_IFACE": "lo", "MPIR_CVAR_CH4_NETMOD": "ofi", "FI_PROVIDER": "tcp",
                "FI_TCP_IFACE": "lo"}


# -- one rank -------------------------------------------------------------------------
class TokenLSTM:
    """The benchmark model in the trainer protocol."""

    def __init__(self, fr):
        self.embedding = fr.Embedding(VOCAB, E, seed=0)
        self.lstm = fr.LSTM(E, H, seed=1)
        self.head = fr.Linear(H, CLASSES, seed=2)
        self.loss = fr.CrossEntropyLoss()

    def modules(self):
        return [self.embedding, self.lstm, self.head]

    def batch_weight(self, batch):
        return batch.inputs.size                # tokens: the loss is their mean

    def train_batch(self, batch):
        out, _ = self.lstm(self.embedding(batch.inputs), lengths=batch.lengths)
        loss, d_logits = self.loss(self.head(out), batch.targets)
        d_x, _ = self.lstm.backward(self.head.backward(d_logits))
        self.embedding.backward(d_x)
        return {"loss": loss}, batch.inputs.size

    def evaluate_batch(self, batch):
        out, _ = self.lstm(self.embedding(batch.inputs), lengths=batch.lengths)
        loss, _ = self.loss(self.head(out), batch.targets)
        return {"loss": loss}, batch.inputs.size


def _loader(fr, steps, seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, VOCAB, size=(steps * B, T))
    targets = rng.integers(0, CLASSES, size=(steps * B, T))
    return fr.data.BatchLoader(list(ids), list(targets), batch_size=B, per_step_targets=True,
                               seed=seed)


def _allreduce_seconds(ctx, count, repeats=7):
    from mpi4py import MPI
    buffer = np.ones(count, dtype=np.float32)
    times = []
    for _ in range(repeats):
        ctx.barrier()
        start = time.perf_counter()
        ctx.comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def worker(args):
    import fastrnn as fr
    fr.set_num_threads(args.threads)
    ctx = fr.distributed.init()
    model = TokenLSTM(fr)
    trainer = fr.Trainer(model, fr.optim.Adam(model.modules(), lr=1e-3), verbose=0,
                         distributed=True)
    trainer.fit(_loader(fr, 2, seed=1), epochs=1)          # warm-up: buffers, pools
    loader = _loader(fr, args.steps, seed=2)
    ctx.barrier()
    start, cpu = time.perf_counter(), time.process_time()
    trainer.fit(loader, epochs=1)
    seconds = time.perf_counter() - start
    cpu_seconds = float(ctx.sum([time.process_time() - cpu])[0])    # over all ranks
    parameters = sum(p.size for m in model.modules() for p in m.parameters())
    allreduce = _allreduce_seconds(ctx, parameters) if ctx.size > 1 else 0.0
    if ctx.is_root:
        print(json.dumps({"ranks": ctx.size, "threads": args.threads, "seconds": seconds,
                          "steps": args.steps, "parameters": parameters,
                          "allreduce_seconds": allreduce, "cpu_seconds": cpu_seconds,
                          "sequences_per_second": args.steps * B / seconds}), flush=True)


# -- the cost model (docs/scaling.md) ---------------------------------------------------
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
# Training sequences/s of one 2-core node (1 and 2 threads), from the README's
# bench/compare.py table on a quiet machine: the compute term.
NODE_RATES = {("rnn", 50, 32, 64): (20442, 24631), ("rnn", 100, 64, 256): (1602, 3196),
              ("lstm", 50, 32, 64): (8185, 11694), ("lstm", 100, 64, 256): (404, 894),
              ("gru", 50, 32, 64): (9632, 13585), ("gru", 100, 64, 256): (561, 1101)}
LATENCY = 25e-6         # seconds per message of a TCP MPI on 10/25 GbE (typical)


def parameters(cell, H, E=None, vocab=VOCAB, classes=CLASSES):
    """P of the benchmark model: embedding, one layer, head."""
    E = H if E is None else E
    G = GATES[cell]
    return vocab * E + G * H * (E + H) + 2 * G * H + classes * H + classes


def ring_allreduce_seconds(P, nodes, gbit, latency=LATENCY, bytes_per_value=4):
    """2(N-1)/N x 4P bytes over the link, plus 2(N-1) message latencies."""
    if nodes == 1:
        return 0.0
    volume = 2 * (nodes - 1) / nodes * bytes_per_value * P
    return volume / (gbit * 1e9 / 8) + 2 * (nodes - 1) * latency


def efficiency(step_seconds, P, nodes, gbit):
    """Weak scaling (each node keeps the benchmark batch), nothing overlapped:
    compute / (compute + all-reduce).  A lower bound: overlap only helps."""
    return step_seconds / (step_seconds + ring_allreduce_seconds(P, nodes, gbit))


def cost_table(threads=2, nodes=(8, 16, 32, 64), links=(10, 25)):
    lines = ["| model (T, B, H) | P | step (ms) | " +
             " | ".join(f"{n} nodes {g} Gbit/s" for g in links for n in nodes) + " |",
             "|---|---|---|" + "---|" * (len(nodes) * len(links))]
    for (cell, T_, B_, H_), rates in NODE_RATES.items():
        P = parameters(cell, H_)
        step = B_ / rates[threads - 1]
        cells = [f"{efficiency(step, P, n, g):.0%}" for g in links for n in nodes]
        lines.append(f"| {cell.upper()} ({T_}, {B_}, {H_}) | {P:,} | {1e3 * step:.1f} | " +
                     " | ".join(cells) + " |")
    return "\n".join(lines)


# -- the driver ------------------------------------------------------------------------
def _mpiexec():
    local = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return local if os.access(local, os.X_OK) else shutil.which("mpiexec")


def run_config(ranks, threads, steps, bind=False, timeout=900):
    binding = ["-bind-to", "core"] if bind and ranks * threads <= (os.cpu_count() or 1) else []
    command = [_mpiexec(), "-launcher", "fork", "-hosts", "127.0.0.1", *binding,
               "-n", str(ranks), sys.executable, os.path.abspath(__file__), "--worker",
               "--threads", str(threads), "--steps", str(steps)]
    # Each rank: `threads` kernel threads and a BLAS pool of the same size
    # (numpy's BLAS would otherwise start one thread per core in every rank).
    limits = {name: str(threads) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                              "MKL_NUM_THREADS", "BLIS_NUM_THREADS")}
    env = dict(os.environ, **LOOPBACK_ENV, **limits)
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{ranks} ranks failed:\n{done.stdout}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(results):
    base = statistics.median(r["sequences_per_second"] for r in results[(1, 1)])
    base_cpu = min(r["cpu_seconds"] for r in results[(1, 1)])
    lines = ["| ranks x threads | seq/s best | seq/s median | speedup (median) | "
             "efficiency per core-thread | CPU-time efficiency | all-reduce of P (ms) |",
             "|---|---|---|---|---|---|---|"]
    for (ranks, threads), runs in results.items():
        rates = [r["sequences_per_second"] for r in runs]
        median = statistics.median(rates)
        workers = ranks * threads
        reduce_ms = 1e3 * statistics.median(r["allreduce_seconds"] for r in runs)
        cpu = base_cpu / min(r["cpu_seconds"] for r in runs)
        lines.append(f"| {ranks} x {threads} | {max(rates):.1f} | {median:.1f} | "
                     f"{median / base:.2f}x | {median / base / workers:.0%} | {cpu:.0%} | "
                     f"{reduce_ms:.2f} |")
    return "\n".join(lines)


def measured_model_table(results, nodes=(2, 8, 16, 32, 64), links=(10, 25)):
    """The cost model fed with this machine's numbers: the compute term is the
    measured 1 rank x 1 thread step, P the benchmark's parameters.  Row
    "loopback" puts the measured all-reduce of P next to the measured
    2-rank CPU-time efficiency (the check of the model); the other rows
    predict weak-scaling efficiency on 10 and 25 Gbit/s networks."""
    base = results[(1, 1)]
    step = min(r["seconds"] / r["steps"] for r in base)
    P = base[0]["parameters"]
    lines = [f"cost model, compute = measured 1 x 1 step {1e3 * step:.1f} ms, P = {P:,}:",
             "| network | " + " | ".join(f"{n} nodes" for n in nodes) + " |",
             "|---|" + "---|" * len(nodes)]
    if (2, 1) in results:
        reduce = statistics.median(r["allreduce_seconds"] for r in results[(2, 1)])
        measured = min(r["cpu_seconds"] for r in base) / min(
            r["cpu_seconds"] for r in results[(2, 1)])
        lines.append(f"| loopback: model {step / (step + reduce):.0%} with the measured "
                     f"all-reduce ({1e3 * reduce:.2f} ms); measured CPU-time efficiency "
                     f"{measured:.0%} | " + " | ".join("" for _ in nodes[1:]) + " |")
    for gbit in links:
        cells = [f"{efficiency(step, P, n, gbit):.0%}" for n in nodes]
        lines.append(f"| {gbit} Gbit/s | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--configs", default="1x1,2x1,4x1,1x2",
                        help="ranks x threads per rank, comma-separated")
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--bind", action="store_true",
                        help="bind each rank to a core (mpiexec -bind-to core) when the "
                             "ranks x threads fit the cores: steadier timings on an idle "
                             "machine")
    parser.add_argument("--model", action="store_true",
                        help="print the cost model's predicted efficiencies and exit")
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.model:
        for threads in (1, 2):
            print(f"\nnodes computing with {threads} thread(s):")
            print(cost_table(threads))
        return None
    configs = [tuple(int(v) for v in c.split("x")) for c in args.configs.split(",")]
    results = {config: [] for config in configs}
    for round_ in range(args.rounds):
        for ranks, threads in configs:
            result = run_config(ranks, threads, args.steps, args.bind)
            results[(ranks, threads)].append(result)
            print(f"round {round_ + 1}: {ranks} x {threads}: "
                  f"{result['sequences_per_second']:.1f} seq/s", file=sys.stderr, flush=True)
    print(f"LSTM (T, B, H) = ({T}, {B}, {H}), E = {E}, vocabulary {VOCAB}, float32, "
          f"P = {results[configs[0]][0]['parameters']} parameters, {args.steps} steps x "
          f"{args.rounds} rounds")
    print(report(results))
    if (1, 1) in results:
        print()
        print(measured_model_table(results))
    if args.json:
        with open(args.json, "w") as stream:
            json.dump({f"{r}x{t}": runs for (r, t), runs in results.items()}, stream, indent=1)


if __name__ == "__main__":
    main()
