#!/usr/bin/env python
"""fastrnn vs torch vs ONNX Runtime vs plain numpy vs JAX: throughput, roofline,
latency, streaming, memory.

Run from the repository root, with OpenBLAS's core-type overrides removed so
every BLAS picks its kernels for the real CPU::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/compare.py
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/compare.py --cells rnn
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/compare.py --quick   # < ~1 min
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/compare.py --cells lstm,gru \
        --sections main,stream --no-jax --no-numpy     # the issue-12 tables only

Options: ``--cells rnn,lstm,gru`` ``--threads 1,2`` ``--quick`` ``--no-jax``
``--no-torch`` ``--no-ort`` ``--no-numpy`` ``--sections main,micro,memory,stream``
(``--no-memory`` ``--no-micro`` drop one) ``--out results.md``
``--worker-env KEY=VALUE`` (e.g. OMP_WAIT_POLICY=passive, for experiments).

Prints a markdown report (see bench/README.md for what every number means).

Design: every (framework, thread count) runs in its own worker subprocess
(this script re-invoked with ``--worker``), so that

* thread counts are fixed before any library starts its thread pools: the
  worker is pinned to the first N allowed CPUs (``os.sched_setaffinity``) and
  gets OMP/OPENBLAS/MKL_NUM_THREADS=N, then calls the runtime controls
  (``fastrnn.set_num_threads``, ``torch.set_num_threads``,
  ``threadpoolctl.threadpool_limits`` for every numpy/scipy BLAS).  JAX has no
  per-run thread control: XLA sizes its CPU thread pool from the affinity mask
  at import, which is why the pinning is done before import;
* the OpenMP runtimes, BLAS thread pools and allocators of the frameworks never
  share a process (spinning idle threads of one would slow the other down).

Peak memory is measured in one more fresh worker per (framework, cell).

ONNX Runtime (``ort``) runs inference only: its own RNN / LSTM / GRU
(linear_before_reset=1) operators on the same weights (``workloads.ort_graph``),
one session per worker with ``intra_op_num_threads`` = N.  The streaming
section (one more worker, 1 thread) times one timestep at B = 1: fastrnn's
``stream.step``, ``layer(x_t, hx)``, ORT ``session.run`` on one step with the
state fed back, torch's ``nn.LSTMCell`` / ``GRUCell`` / ``RNNCell``, and a
task model's ``stream().step`` (SequenceTagger).
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from machine import cpu_busy_seconds, cpu_model  # noqa: E402

FRAMEWORK_ORDER = ("fastrnn", "torch", "ort", "numpy", "jax")
SHORT = {"fastrnn": "fr", "torch": "torch", "ort": "ort", "numpy": "np", "jax": "jax"}
INFERENCE_ONLY = ("ort",)
SECTIONS = ("main", "micro", "memory", "stream")
CELL_TITLE = {"rnn": "RNN (tanh)", "lstm": "LSTM", "gru": "GRU"}

FULL = dict(
    configs=[(50, 32, 64), (100, 64, 128), (100, 64, 256), (100, 32, 512),
             (200, 1, 64), (200, 4, 256), (200, 1, 256)],
    micro=(200, 1, 16), memory=(100, 64, 256), stream_sizes=(64, 256), stream_reps=5,
    budget=1.0, min_reps=5, max_reps=25, warmup=0.2,
    micro_budget=0.4, micro_max_reps=50,
    roofline_n=2048, roofline_reps=7,
    retries=2, retry_pause=1.0, retry_budget=30.0, quiet_wait=15.0,
)
QUICK = dict(
    configs=[(20, 16, 32), (50, 32, 64)],
    micro=(50, 1, 16), memory=(50, 32, 128), stream_sizes=(64,), stream_reps=2,
    budget=0.1, min_reps=2, max_reps=5, warmup=0.0,
    micro_budget=0.05, micro_max_reps=5,
    roofline_n=1024, roofline_reps=3,
    retries=0, retry_pause=0.0, retry_budget=0.0, quiet_wait=0.0,
)
BG_LIMIT = 0.25      # CPUs' worth of other processes' work that marks a measurement as disturbed
OPENBLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
MiB = 1024.0 ** 2


# =============================================================================
# worker side
# =============================================================================
def _import_fastrnn(retries=10, delay=3.0):
    """Import fastrnn, retrying: the package may be mid-rebuild."""
    last = None
    for _ in range(retries):
        try:
            import fastrnn
            return fastrnn
        except ImportError as exc:     # partially built extension
            last = exc
            for name in [m for m in sys.modules if m.split(".")[0] == "fastrnn"]:
                del sys.modules[name]
            time.sleep(delay)
    raise last


def _setup_threads(framework, n):
    """Runtime thread controls of the framework (affinity/env are already set)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    info = {}
    if framework == "fastrnn":
        fr = _import_fastrnn()
        fr.set_num_threads(n)
        info.update(fastrnn_threads=fr.get_num_threads(), openmp=fr.openmp_enabled())
    elif framework == "torch":
        import torch
        torch.set_num_threads(n)
        try:
            torch.set_num_interop_threads(n)
        except RuntimeError:
            pass
        parallel = torch.__config__.parallel_info().splitlines()
        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads(),
                    torch_backend=next((l.strip() for l in parallel
                                        if "parallel backend" in l), "?"),
                    torch_blas=next((l.strip() for l in parallel if "Math Kernel" in l
                                     or "OpenBLAS" in l), "?"),
                    mkldnn=bool(torch.backends.mkldnn.is_available()
                                and torch.backends.mkldnn.enabled))
    elif framework == "ort":
        import onnxruntime

        import workloads
        workloads.ORT_THREADS = n
        info.update(ort=onnxruntime.__version__, intra_op_num_threads=n)
    elif framework == "stream":
        import torch
        fr = _import_fastrnn()
        fr.set_num_threads(n)
        torch.set_num_threads(n)
    elif framework == "jax":
        import jax
        import jaxlib
        info.update(jax=jax.__version__, jaxlib=jaxlib.__version__,
                    jax_devices=[str(d) for d in jax.devices()])
    # every numpy/scipy BLAS (the numpy reference, data setup)
    limiter = threadpool_limits(limits=n, user_api="blas")
    info["threadpool"] = [{k: lib.get(k) for k in ("internal_api", "prefix", "version",
                                                   "num_threads", "threading_layer")}
                          for lib in threadpool_info()]
    return info, limiter




def _measure(fn, min_reps, budget, max_reps, cpus):
    """Time ``fn`` repeatedly; also this process's CPU use and everyone else's
    on our CPUs (``bg``, in CPUs: /proc/stat busy time minus our CPU time)."""
    times = []
    busy0, cpu0, wall0 = cpu_busy_seconds(cpus), time.process_time(), time.perf_counter()
    while len(times) < min_reps or (sum(times) < budget and len(times) < max_reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    wall = time.perf_counter() - wall0
    own = time.process_time() - cpu0
    busy1 = cpu_busy_seconds(cpus)
    if busy0 is None:
        return {"times": times, "cpu_util": own / wall, "bg": None, "bg_err": None}
    # /proc/stat counts whole clock ticks per CPU: +-1 tick per CPU at each end
    err = 2 * len(cpus) / os.sysconf("SC_CLK_TCK") / wall
    return {"times": times, "cpu_util": own / wall,
            "bg": max(0.0, (busy1 - busy0 - own) / wall), "bg_err": err}


def _disturbed(r):
    """Other processes took more than BG_LIMIT CPUs, beyond the tick resolution."""
    return r.get("bg") is not None and r["bg"] - (r.get("bg_err") or 0) > BG_LIMIT


_retry_time = [0.0]


def _measure_quiet(fn, job, cpus):
    """``_measure``, repeated (up to job['retries'] times, within the worker's
    retry budget) while other processes disturbed it; keeps the undisturbed
    attempt, else the fastest."""
    attempts = []
    for i in range(1 + job.get("retries", 0)):
        t0 = time.perf_counter()
        m = _measure(fn, job["min_reps"], job["budget"], job["max_reps"], cpus)
        attempts.append(m)
        if i:
            _retry_time[0] += time.perf_counter() - t0
        if not _disturbed(m) or _retry_time[0] > job.get("retry_budget", 0):
            break
        time.sleep(job.get("retry_pause", 0))
        _retry_time[0] += job.get("retry_pause", 0)
    best = min(attempts, key=lambda m: (_disturbed(m), statistics.median(m["times"])))
    best["attempts"] = len(attempts)
    return best


def _roofline(job, cpus):
    import numpy as np

    N = job["n"]
    rng = np.random.default_rng(0)
    a = rng.standard_normal((N, N), dtype=np.float32)
    b = rng.standard_normal((N, N), dtype=np.float32)
    c = np.empty((N, N), np.float32)
    np.matmul(a, b, out=c)
    res = _measure_quiet(lambda: np.matmul(a, b, out=c),
                         dict(job, min_reps=job["reps"], max_reps=job["reps"], budget=0),
                         cpus)
    res.update(n=N, gflops_best=2 * N ** 3 / min(res["times"]) / 1e9,
               gflops_median=2 * N ** 3 / statistics.median(res["times"]) / 1e9)
    return res


def _time_workload(framework, job, cpus):
    import gc

    import workloads

    wl = workloads.build(framework, job["cell"], job["T"], job["B"], job["H"],
                         mode=job["mode"])
    gc.collect()
    t0 = time.perf_counter()
    value = wl.value(wl.step())                 # first call: allocation / JIT compile
    first = time.perf_counter() - t0
    warm_until = time.perf_counter() + job["warmup"]
    warm = 1
    while warm < 2 or time.perf_counter() < warm_until:
        wl.step()
        warm += 1
    res = _measure_quiet(wl.step, job, cpus)
    res.update(first=first, value=value, warmup=warm)
    return res


def _best_time(fn, repeats, min_seconds=0.05):
    """Minimum seconds per call over ``repeats`` rounds of a calibrated loop
    (the least disturbed round on a shared machine)."""
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


def _stream_row(job):
    """Microseconds per timestep at B = 1 (see the module docstring): one
    cell and hidden size, 1 thread."""
    import numpy as np
    import torch

    import workloads

    fr = _import_fastrnn()
    cell, H, reps = job["cell"], job["H"], job["reps"]
    params = workloads.make_params(cell, H, H)
    layer = {"rnn": lambda: fr.RNN(H, H), "lstm": lambda: fr.LSTM(H, H),
             "gru": lambda: fr.GRU(H, H)}[cell]().eval()
    layer.load_state_dict({k: params[k] for k in workloads.LAYER_NAMES})
    rng = np.random.default_rng(0)
    x_t = rng.standard_normal((1, H)).astype(np.float32)
    long = rng.standard_normal((2000, 1, H)).astype(np.float32)
    us = {"kernel": _best_time(lambda: layer(long), max(2, reps // 2)) / 2000}
    stream = layer.stream()
    us["stream.step"] = _best_time(lambda: stream.step(x_t), reps)
    state = [layer(x_t[None])[1]]

    def layer_step():
        state[0] = layer(x_t[None], state[0])[1]
    us["layer(x_t, hx)"] = _best_time(layer_step, reps)

    session = workloads.ort_session(workloads.ort_graph(
        cell, H, H, params, steps=1, batch=1, embed=False, state=True, head=False), 1)
    names = [o.name for o in session.get_outputs()][1:]         # hn (, cn)
    feeds = {"x": x_t[None], "h0": np.zeros((1, 1, H), np.float32)}
    if cell == "lstm":
        feeds["c0"] = feeds["h0"]

    def ort_step():
        new = session.run(names, feeds)
        feeds["h0"] = new[0]
        if cell == "lstm":
            feeds["c0"] = new[1]
    us["ORT run"] = _best_time(ort_step, reps)

    kind = {"lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}.get(cell, torch.nn.RNNCell)
    module = kind(H, H).eval()
    tx = torch.from_numpy(x_t)
    with torch.inference_mode():
        hidden = [module(tx)]

        def torch_step():
            hidden[0] = module(tx, hidden[0])
        us["torch cell"] = _best_time(torch_step, reps)
    us.update(_task_steps(fr, cell, H, reps))
    return {"us": {k: v * 1e6 for k, v in us.items()}}


def _task_steps(fr, cell, H, reps):
    """Seconds per ``model.stream().step(item)`` of small fitted task models
    (one epoch on a toy corpus: the weights do not matter for the time)."""
    words = "the cat sat on a mat and the dog ran to the cat".split()
    texts = [" ".join(words[i:] + words[:i]) for i in range(len(words))]
    tags = [[len(w) % 3 for w in t.split()] for t in texts]
    options = dict(cell=cell, hidden_size=H, seed=0)
    tagger = fr.SequenceTagger(bidirectional=False, **options).fit([t.split() for t in texts], tags, epochs=1,
                                               verbose=0)
    classifier = fr.SequenceClassifier(**options).fit(texts, [i % 2 for i in
                                                               range(len(texts))],
                                                       epochs=1, verbose=0)
    model = fr.LanguageModel(level="word", **options).fit(texts, epochs=1, verbose=0)
    out = {}
    for name, m in (("tagger step", tagger), ("classifier step", classifier),
                    ("LM step", model)):
        stream = m.stream()
        out[name] = _best_time(lambda: stream.step("cat"), reps)
    return out


def _status_bytes(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def _reset_peak_rss():
    """Reset VmHWM (the peak RSS) to the current RSS: Linux >= 4.0 clear_refs '5'."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_bytes("VmHWM") <= _status_bytes("VmRSS") + (1 << 20)
    except OSError:
        return False


def _memory(framework, job):
    """Peak memory of one training step, in a fresh process (see the report)."""
    import gc
    import tracemalloc

    import workloads

    small = workloads.build(framework, job["cell"], 4, 2, 8, mode="training")
    small.step()
    small.step()                                   # load/initialise every code path
    del small
    gc.collect()
    rss_start = _status_bytes("VmRSS")
    wl = workloads.build(framework, job["cell"], job["T"], job["B"], job["H"],
                         mode="training")
    gc.collect()
    rss_before = _status_bytes("VmRSS")
    reset = _reset_peak_rss()
    floor = 0 if reset else _status_bytes("VmHWM") - rss_before
    tracemalloc.start()
    traced0 = tracemalloc.get_traced_memory()[0]
    wl.step()
    traced_peak = tracemalloc.get_traced_memory()[1] - traced0
    tracemalloc.stop()
    peak = _status_bytes("VmHWM")
    return {"setup": rss_before - rss_start, "step_peak": peak - rss_before,
            "reset": reset, "floor": floor, "raised": peak - rss_before > floor,
            "retained": _status_bytes("VmRSS") - rss_before,
            "traced_peak": traced_peak if framework in ("fastrnn", "numpy") else None}


def worker_main(spec_path):
    with open(spec_path) as f:
        spec = json.load(f)
    framework, n = spec["framework"], spec["threads"]
    os.sched_setaffinity(0, spec["cpus"])          # before any thread pool exists
    out = {"framework": framework, "threads": n, "cpus": spec["cpus"], "results": []}

    def save():
        with open(spec["out"], "w") as f:
            json.dump(out, f)

    info, limiter = _setup_threads(framework, n)
    out["info"] = info
    save()
    for job in spec["jobs"]:
        t0 = time.perf_counter()
        try:
            if job["kind"] == "roofline":
                res = _roofline(job, spec["cpus"])
            elif job["kind"] == "stream":
                res = _stream_row(job)
            elif job["kind"] == "memory":
                res = _memory(framework, job)
            else:
                res = _time_workload(framework, job, spec["cpus"])
        except Exception as exc:                   # report, keep going
            res = {"error": f"{type(exc).__name__}: {exc}"}
        res["job"] = job
        res["elapsed"] = time.perf_counter() - t0
        out["results"].append(res)
        save()
        print(f"    [{framework} x{n}] {job.get('kind')} {job.get('cell', '')} "
              f"{job.get('mode', '')} {job.get('T', '')}x{job.get('B', '')}x"
              f"{job.get('H', '')}: {res['elapsed']:.1f}s"
              + (f"  bg {res['bg']:.2f}±{res['bg_err']:.2f} CPU, {res['attempts']} attempt(s)"
                 if res.get("bg") is not None else "")
              + (f"  ERROR {res['error']}" if "error" in res else ""),
              file=sys.stderr, flush=True)
    del limiter


# =============================================================================
# driver side
# =============================================================================
def _log(msg, start=[None]):
    if start[0] is None:
        start[0] = time.perf_counter()
    print(f"[{time.perf_counter() - start[0]:6.1f}s] {msg}", file=sys.stderr, flush=True)


WORKER_ENV = {}


def _spawn(framework, threads, cpus, jobs, tmpdir, tag):
    """One worker process; returns (its JSON output or None, error text)."""
    spec_path = os.path.join(tmpdir, f"{tag}.spec.json")
    out_path = os.path.join(tmpdir, f"{tag}.out.json")
    with open(spec_path, "w") as f:
        json.dump({"framework": framework, "threads": threads, "cpus": cpus,
                   "jobs": jobs, "out": out_path}, f)
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    if framework == "jax" and threads == 1:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + XLA_ONE_THREAD).strip()
    env["PYTHONPATH"] = HERE + os.pathsep + env.get("PYTHONPATH", "")
    env.update(WORKER_ENV)
    try:
        proc = subprocess.run([sys.executable, "-u", os.path.abspath(__file__),
                               "--worker", spec_path], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, timeout=3600)
        stderr, code = proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        stderr, code = (exc.stderr or b"").decode(errors="replace"), "timeout"
    for line in stderr.splitlines():
        if line.startswith("    ["):
            print(line, file=sys.stderr)
    result = None
    if os.path.exists(out_path):
        with open(out_path) as f:
            result = json.load(f)
    error = None
    if code != 0:
        error = f"exit {code}: " + " / ".join(stderr.splitlines()[-6:])
        _log(f"worker {tag} failed ({error})")
    return result, error


def _run_worker(framework, threads, cpus, jobs, tmpdir, tag):
    """Run the jobs in a fresh worker; jobs that failed or never ran (e.g. an
    ImportError while fastrnn is being rebuilt, a crash) get one more try in
    another fresh worker."""
    result, error = _spawn(framework, threads, cpus, jobs, tmpdir, tag)
    if result is None:
        result = {"framework": framework, "threads": threads, "results": []}
    done = {json.dumps(r["job"], sort_keys=True): r for r in result["results"]
            if "error" not in r}
    todo = [j for j in jobs if json.dumps(j, sort_keys=True) not in done]
    if todo:
        _log(f"retrying {len(todo)} failed job(s) of {tag} in a fresh worker in 5 s")
        time.sleep(5)
        again, error = _spawn(framework, threads, cpus, todo, tmpdir, tag + "-retry")
        if again is not None:
            result.setdefault("info", again.get("info", {}))
            failed = {json.dumps(r["job"], sort_keys=True): r for r in result["results"]}
            for r in again["results"]:
                failed[json.dumps(r["job"], sort_keys=True)] = r
            result["results"] = [failed[k] for k in (json.dumps(j, sort_keys=True)
                                                     for j in jobs) if k in failed]
    ran = {json.dumps(r["job"], sort_keys=True) for r in result["results"]}
    if error and any(json.dumps(j, sort_keys=True) not in ran for j in jobs):
        result["error"] = error
    return result


def _background_load(cpus, seconds=1.0):
    """CPUs' worth of work done on ``cpus`` by other processes (we sleep)."""
    b0 = cpu_busy_seconds(cpus)
    time.sleep(seconds)
    b1 = cpu_busy_seconds(cpus)
    return None if b0 is None else max(0.0, (b1 - b0) / seconds)


def _wait_for_quiet(cpus, max_wait):
    """Wait (at most ``max_wait`` s) until other processes leave ``cpus`` idle."""
    if max_wait <= 0:
        return None
    t0 = time.perf_counter()
    while True:
        bg = _background_load(cpus, 0.5)
        if bg is None or bg <= BG_LIMIT:
            return bg
        if time.perf_counter() - t0 > max_wait:
            _log(f"other processes keep {bg:.2f} CPUs busy; starting anyway "
                 f"(disturbed values are marked †)")
            return bg
        _log(f"waiting for other processes to leave the CPUs idle ({bg:.2f} CPUs busy)")
        time.sleep(1.5)




def _git_state():
    try:
        rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "src"],
                               capture_output=True, text=True, timeout=10).stdout
        n = len([l for l in dirty.splitlines() if l.strip()])
        return f"{rev}" + (f" ({n} uncommitted change(s) under src/)" if n else " (clean src/)")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _source_stamp():
    """(git state, newest mtime under src/fastrnn): to notice a rebuild mid-run."""
    newest = 0.0
    for dirpath, _, files in os.walk(os.path.join(ROOT, "src", "fastrnn")):
        for name in files:
            if name.endswith((".py", ".pyx", ".pxd", ".h", ".so")):
                try:
                    newest = max(newest, os.path.getmtime(os.path.join(dirpath, name)))
                except OSError:
                    pass
    return _git_state(), newest


def _version(dist):
    from importlib import metadata
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _environment_lines(warnings):
    import numpy
    import scipy
    import threadpoolctl
    from threadpoolctl import threadpool_info

    fr = _import_fastrnn()
    import scipy.linalg.cython_blas  # noqa: F401  (loads scipy's BLAS, as fastrnn does)

    allowed = sorted(os.sched_getaffinity(0))
    L = ["## Environment", ""]
    L.append(f"- CPU: {cpu_model()}; {os.cpu_count()} logical CPUs, "
             f"{len(allowed)} allowed to this process ({allowed})")
    L.append(f"- {platform.platform()}; Python {platform.python_version()}")
    versions = [("fastrnn", fr.__version__), ("numpy", numpy.__version__),
                ("scipy", scipy.__version__), ("threadpoolctl", threadpoolctl.__version__),
                ("torch", _version("torch")), ("onnxruntime", _version("onnxruntime")),
                ("jax", _version("jax")),
                ("jaxlib", _version("jaxlib"))]
    L.append("- versions: " + ", ".join(f"{k} {v}" for k, v in versions if v))
    L.append(f"- fastrnn source: {fr.__file__}; git {_git_state()}")
    L.append(f"- `fastrnn.openmp_enabled()`: **{fr.openmp_enabled()}**; "
             f"`fastrnn.get_num_threads()` default: {fr.get_num_threads()}")
    L.append("- `fastrnn.blas_info()` (the BLAS the kernels call):")
    for lib in fr.blas_info():
        L.append("  - " + ", ".join(f"{k}={v}" for k, v in lib.items()))
    L.append("- `threadpoolctl.threadpool_info()` (driver process, after importing numpy, "
             "scipy's BLAS and fastrnn):")
    L.append("")
    L.append("  | user_api | internal_api | prefix | version | threading_layer | "
             "architecture | num_threads | filepath |")
    L.append("  |---|---|---|---|---|---|---|---|")
    for lib in threadpool_info():
        L.append("  | " + " | ".join(str(lib.get(k, "")) for k in
                                     ("user_api", "internal_api", "prefix", "version",
                                      "threading_layer", "architecture", "num_threads",
                                      "filepath")) + " |")
    L.append("")
    relevant = {k: v for k, v in os.environ.items()
                if k.startswith(("OMP_", "GOMP_", "KMP_", "OPENBLAS_", "MKL_", "XLA_"))}
    L.append("- thread/BLAS environment of the driver (workers override the thread counts): "
             + (", ".join(f"`{k}={v}`" for k, v in sorted(relevant.items())) or "none set"))
    L.append("")
    for var in OPENBLAS_OVERRIDES:
        if var in os.environ:
            warnings.append(f"{var}={os.environ[var]} is set: OpenBLAS may use kernels "
                            f"for another CPU. Run as `env -u OPENBLAS_CORETYPE -u "
                            f"OPENBLAS_L2_SIZE python bench/compare.py`.")
    return L


def _fmt(x, digits=3):
    if x is None:
        return "—"
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def _bg(r):
    if r.get("bg") is None:
        return "—"
    err = r.get("bg_err") or 0
    return f"{r['bg']:.2f}" + (f" ±{err:.2f}" if err >= 0.05 else "")


def _ratio(a, b):
    return f"{a / b:.2f}×" if a and b else "—"


class Results:
    def __init__(self):
        self.timing = {}      # (fw, n, cell, mode, T, B, H, kind) -> result
        self.roofline = {}    # n -> result
        self.memory = {}      # (fw, cell) -> result
        self.info = {}        # (fw, n) -> info
        self.stream = {}      # (cell, H) -> {method: us per step}
        self.errors = []

    def add(self, worker):
        fw, n = worker["framework"], worker["threads"]
        self.info[(fw, n)] = worker.get("info", {})
        if "error" in worker:
            self.errors.append(f"{fw} x{n}: worker failed: {worker['error']}")
        for r in worker["results"]:
            job = r["job"]
            if "error" in r:
                self.errors.append(f"{fw} x{n} {job}: {r['error']}")
                continue
            if job["kind"] == "roofline":
                self.roofline[n] = r
            elif job["kind"] == "memory":
                self.memory[(fw, job["cell"])] = r
            elif job["kind"] == "stream":
                self.stream[(job["cell"], job["H"])] = r["us"]
            else:
                key = (fw, n, job["cell"], job["mode"], job["T"], job["B"], job["H"],
                       job["kind"])
                self.timing[key] = r

    def mark(self, *key):
        r = self.timing.get(key)
        return "†" if r and _disturbed(r) else ""

    def median(self, *key):
        r = self.timing.get(key)
        return statistics.median(r["times"]) if r else None


def _report_header(args, res, frameworks, threads, warnings, env_lines, load_start, load_end,
                   wall):
    """Title, command line, warnings, environment and machine load."""
    L = ["# fastrnn benchmark: fastrnn vs torch vs ONNX Runtime vs plain numpy vs JAX", ""]
    L.append(f"`{' '.join(['python', 'bench/compare.py'] + sys.argv[1:])}` — "
             f"{time.strftime('%Y-%m-%d %H:%M:%S')}, {wall / 60:.1f} min"
             + (" — **--quick (smoke test: few repeats, small configs)**"
                if args.quick else ""))
    L.append("")
    if WORKER_ENV:
        L.append("Extra worker environment (--worker-env): "
                 + ", ".join(f"`{k}={v}`" for k, v in WORKER_ENV.items()))
        L.append("")
    for w in warnings:
        L.append(f"> **WARNING**: {w}")
    if warnings:
        L.append("")
    L += env_lines
    L.append(f"- machine load at start: {load_start}; at end: {load_end} (CPUs' worth of "
             f"other processes' work, sampled for 1 s while idle; load average 1/5/15 min)")
    for fw in frameworks:
        for n in threads:
            info = res.info.get((fw, n), {})
            if fw == "torch" and info:
                L.append(f"- torch x{n}: {info.get('torch_backend')}; "
                         f"{info.get('torch_blas')}; mkldnn enabled: {info.get('mkldnn')}; "
                         f"torch.get_num_threads() = {info.get('torch_threads')}")
                break
            if fw == "jax" and info:
                L.append(f"- jax {info.get('jax')} / jaxlib {info.get('jaxlib')}, devices "
                         f"{info.get('jax_devices')}")
                break
    L.append("")
    return L


def _report_method(settings):
    """How everything was measured (the workloads, timing, threads, roofline)."""
    import workloads

    L = ["## Method", ""]
    E_note = "E = H"
    L += [
        f"- Disturbance: the timed loop also records *bg* = CPU time other processes "
        f"(and the hypervisor's steal) took on the worker's CPUs, from /proc/stat, in CPUs "
        f"(± the clock-tick resolution, shown when ≥ 0.05: short timing loops cannot "
        f"resolve it). A measurement with bg − resolution > {BG_LIMIT} is repeated up to {settings['retries']} times "
        f"(within {settings['retry_budget']:.0f} s of retries per worker) and the "
        f"least-disturbed attempt kept; values still disturbed are marked **†** in the "
        f"tables. Before each worker the driver waits up to {settings['quiet_wait']:.0f} s "
        f"for the CPUs to be idle. Multi-threaded runs suffer most from other load: a thread that is "
        f"descheduled stalls every barrier of its team.",
        f"- Workloads (`bench/workloads.py`): token ids (T, B) over a vocabulary of "
        f"{workloads.VOCAB} → Embedding({workloads.VOCAB}, E) → one recurrent layer (one "
        f"direction, time-major, float32, {E_note}, zero initial state) → Linear head "
        f"H→{workloads.HEAD} on every step; identical weights and data in every framework. "
        f"**inference** = eval/no-grad forward of all of it; **training** = forward + softmax "
        f"cross-entropy (mean over T·B) + backward through head, layer (with its input "
        f"gradient) and embedding (scatter-add into the table) + one Adam update of all "
        f"parameters (lr {workloads.LR:g}, betas {workloads.BETAS}, eps {workloads.EPS:g}). "
        f"fastrnn: `fr.Embedding`, `fr.RNN/LSTM/GRU`, `fr.Linear`, `fr.CrossEntropyLoss`, "
        f"`fr.optim.Adam` (public API only); the numpy reference "
        f"(`bench/numpy_reference.py`): `np.take` / `np.add.at` embedding, numpy head, "
        f"softmax cross-entropy and Adam into preallocated buffers; torch: nn.Embedding + "
        f"nn.RNN/LSTM/GRU + nn.Linear + F.cross_entropy + torch.optim.Adam (its default "
        f"implementation; on CPU that is the single-tensor loop) (inference under "
        f"`torch.inference_mode()`); JAX: `jnp.take` + `lax.scan` cells under `jax.jit` "
        f"(training: `value_and_grad` + a hand-written Adam in one jitted function, "
        f"parameters and optimizer state donated).",
        f"- Timing: `time.perf_counter` around each step; first call (allocation / JIT "
        f"compile) and ≥1 more warm-up call ({settings['warmup']} s) discarded; then at least "
        f"{settings['min_reps']} repeats, more until {settings['budget']} s or "
        f"{settings['max_reps']} repeats (so small configs get more repeats). Tables use the "
        f"**median**; best and spread are in the raw table. seq/s = B / median step time.",
        "- Threads: one fresh worker process per (framework, thread count), pinned with "
        "`os.sched_setaffinity` to the first N allowed CPUs before any import, with "
        "OMP_NUM_THREADS = OPENBLAS_NUM_THREADS = MKL_NUM_THREADS = N, then "
        "`fastrnn.set_num_threads(N)`, `torch.set_num_threads(N)` (+ interop threads N), "
        "`threadpoolctl.threadpool_limits(N, user_api='blas')` for numpy/scipy BLAS. "
        "JAX/XLA has no per-call thread setting: its CPU thread pool is sized from the "
        f"affinity mask at import (that is what limits it); for N = 1 `XLA_FLAGS={XLA_ONE_THREAD}` "
        "is also set (accepted by XLA, but the measured cpu-util column is the evidence of "
        "what each framework really used: process CPU time / wall time during the timed "
        "repeats; spinning OpenMP workers count as busy).",
        f"- Roofline: best GFLOP/s of a {settings['roofline_n']}³ float32 numpy GEMM "
        f"(best of {settings['roofline_reps']}), measured in the numpy worker of the same "
        f"run with the same thread count and pinning. FLOPs count matrix products only: "
        f"forward = 2·T·B·(E·G·H + H·G·H + H·{workloads.HEAD}) with G = 1/4/3 for "
        f"rnn/lstm/gru; training = 3 × forward (each forward product has two backward "
        f"products; the layer's input gradient is computed, it feeds the embedding). The "
        f"embedding gather / scatter-add, the loss and Adam are memory traffic and not "
        f"counted. % roofline = (FLOPs / median step time) / roofline.",
    ]
    L.append("")
    return L


def _report_roofline(res, threads):
    """The numpy GEMM roofline per thread count."""
    L = []
    # -- roofline
    L += ["## Roofline (numpy float32 GEMM)", "", "| threads | GEMM | best GFLOP/s | "
          "median GFLOP/s | cpu util | bg |", "|---|---|---|---|---|---|"]
    for n in threads:
        r = res.roofline.get(n)
        if r:
            mark = "†" if _disturbed(r) else ""
            L.append(f"| {n} | {r['n']}³ | {r['gflops_best']:.1f}{mark} | "
                     f"{r['gflops_median']:.1f} | {r['cpu_util']:.2f} | {_bg(r)} |")
        else:
            L.append(f"| {n} | — | — | — | — | — |")
    L.append("")
    return L


def _report_throughput(settings, res, threads, cells, fws, others):
    """seq/s, fastrnn's speed ratios and % of the roofline, one table per cell."""
    import workloads

    L = []
    # -- throughput tables
    for cell in cells:
        L += [f"## Throughput — {CELL_TITLE[cell]}", ""]
        L.append("seq/s (higher is better); ratio = fastrnn speed / other speed "
                 "(> 1: fastrnn faster); % of the numpy-GEMM roofline at the same thread "
                 "count. † = disturbed by other processes (on %roof: the measurement or the "
                 "roofline).")
        L.append("")
        head = ["mode", "T", "B", "H", "thr"] + [f"{fw} seq/s" for fw in fws] \
            + [f"fr÷{SHORT[fw]}" for fw in others] + [f"%roof {SHORT[fw]}" for fw in fws]
        L.append("| " + " | ".join(head) + " |")
        L.append("|" + "---|" * len(head))
        for mode in ("inference", "training"):
            for (T, B, H) in settings["configs"]:
                for n in threads:
                    med = {fw: res.median(fw, n, cell, mode, T, B, H, "main") for fw in fws}
                    roof = res.roofline.get(n, {}).get("gflops_best")
                    fl = workloads.flops(cell, T, B, H, mode=mode)
                    row = [mode, T, B, H, n]
                    row += [(_fmt(B / med[fw]) + res.mark(fw, n, cell, mode, T, B, H, "main"))
                            if med[fw] else "—" for fw in fws]
                    row += [_ratio(med[fw], med["fastrnn"]) if "fastrnn" in med else "—"
                            for fw in others]
                    roof_mark = "†" if _disturbed(res.roofline.get(n, {})) else ""
                    row += [f"{100 * fl / med[fw] / 1e9 / roof:.1f}%"
                            + (res.mark(fw, n, cell, mode, T, B, H, "main") or roof_mark)
                            if med[fw] and roof else "—" for fw in fws]
                    L.append("| " + " | ".join(str(c) for c in row) + " |")
        L.append("")
    return L


def _report_scaling(settings, res, threads, cells, fws):
    """Speedup of N threads over the fewest, per framework."""
    L = []
    # -- thread scaling
    if len(threads) > 1:
        base = threads[0]
        L += [f"## Thread scaling: speedup of N threads over {base} (time({base}) / time(N))",
              ""]
        head = ["cell", "mode", "T", "B", "H"] + [f"{fw} {base}→{n}" for n in threads[1:]
                                                 for fw in fws]
        L.append("| " + " | ".join(head) + " |")
        L.append("|" + "---|" * len(head))
        for cell in cells:
            for mode in ("inference", "training"):
                for (T, B, H) in settings["configs"]:
                    row = [cell, mode, T, B, H]
                    for n in threads[1:]:
                        for fw in fws:
                            a = res.median(fw, base, cell, mode, T, B, H, "main")
                            b = res.median(fw, n, cell, mode, T, B, H, "main")
                            mark = res.mark(fw, base, cell, mode, T, B, H, "main") \
                                or res.mark(fw, n, cell, mode, T, B, H, "main")
                            row.append(f"{a / b:.2f}{mark}" if a and b else "—")
                    L.append("| " + " | ".join(str(c) for c in row) + " |")
        L.append("")
    return L


def _report_micro(args, settings, res, threads, cells, fws):
    """Per-timestep latency at the micro size."""
    L = []
    # -- micro
    if "micro" in args.sections:
        T, B, H = settings["micro"]
        L += [f"## Per-timestep latency at T={T}, B={B}, H=E={H} (µs per timestep, lower is "
              f"better)", ""]
        L.append("Median step time / T: dominated by fixed per-step overhead (Python, "
                 "dispatch, kernel launch), not arithmetic.")
        L.append("")
        head = ["cell", "mode"] + [f"{fw} x{n}" for n in threads for fw in fws]
        L.append("| " + " | ".join(head) + " |")
        L.append("|" + "---|" * len(head))
        for cell in cells:
            for mode in ("inference", "training"):
                row = [cell, mode]
                for n in threads:
                    for fw in fws:
                        m = res.median(fw, n, cell, mode, T, B, H, "micro")
                        row.append(f"{m / T * 1e6:.2f}"
                                   + res.mark(fw, n, cell, mode, T, B, H, "micro")
                                   if m else "—")
                L.append("| " + " | ".join(row) + " |")
        L.append("")
    return L


def _report_memory(args, settings, res, frameworks, cells):
    """Peak memory of one training step, per framework and cell."""
    L = []
    # -- memory
    if "memory" in args.sections:
        T, B, H = settings["memory"]
        L += [f"## Peak memory of one training step at T={T}, B={B}, H=E={H}", ""]
        L += [
            "Method: one fresh process per (framework, cell), 1 thread. It first runs two "
            "training steps of a tiny model (T=4, B=2, H=8) so every library and code path "
            "is loaded, then builds the measured model + data (*setup* = RSS growth), "
            "reads the current RSS (VmRSS), resets the kernel's peak-RSS counter (VmHWM, "
            "via `/proc/self/clear_refs` = 5), runs **one** training step and reads VmHWM. "
            "*step peak* = VmHWM after − VmRSS before the step: the extra resident memory "
            "the step needed at its peak (activations kept for backward, gradients, "
            "temporaries, allocator/workspace growth). *retained* = VmRSS after − before "
            "(what stays allocated: e.g. gradients, caches, memory the allocator keeps). "
            "*tracemalloc peak* = peak of Python-tracked allocations during the step; "
            "numpy reports its array buffers to tracemalloc, so for fastrnn and the numpy "
            "reference it is the exact peak of numpy-allocated memory (torch's tensors are "
            "invisible to it: —). If the peak counter cannot be reset, `ru_maxrss`-style "
            "high-water values are used and a peak below the earlier high-water mark "
            "shows as ≤ floor.",
            "",
        ]
        mem_fws = [fw for fw in ("fastrnn", "torch", "numpy") if fw in frameworks]
        head = ["cell", "framework", "setup MiB", "step peak MiB", "tracemalloc peak MiB",
                "retained MiB"]
        L.append("| " + " | ".join(head) + " |")
        L.append("|" + "---|" * len(head))
        for cell in cells:
            for fw in mem_fws:
                m = res.memory.get((fw, cell))
                if not m:
                    L.append(f"| {cell} | {fw} | — | — | — | — |")
                    continue
                peak = f"{m['step_peak'] / MiB:.1f}" if m["raised"] \
                    else f"≤ {max(m['floor'], 0) / MiB:.1f}"
                traced = f"{m['traced_peak'] / MiB:.1f}" if m["traced_peak"] is not None \
                    else "—"
                L.append(f"| {cell} | {fw} | {m['setup'] / MiB:.1f} | {peak} | {traced} | "
                         f"{m['retained'] / MiB:.1f} |")
        L.append("")
    return L


def _report_consistency(res):
    """Every framework's first-step numbers against torch (or numpy)."""
    L = []
    # -- consistency
    L += ["## Consistency", ""]
    worst, bad = 0.0, []
    for key, r in res.timing.items():
        fw, n, cell, mode, T, B, H, kind = key
        ref = res.timing.get(("torch", n, cell, mode, T, B, H, kind)) \
            or res.timing.get(("numpy", n, cell, mode, T, B, H, kind))
        if ref is None or ref is r:
            continue
        rel = abs(r["value"] - ref["value"]) / max(abs(ref["value"]), 1e-30)
        worst = max(worst, rel)
        if rel > 1e-3:
            bad.append(f"{fw} {cell} {mode} {T}x{B}x{H} x{n}: {r['value']:.6g} vs "
                       f"{ref['value']:.6g}")
    L.append(f"First-step loss (training) / mean |logits| (inference) of every framework "
             f"compared with torch (numpy when torch is off): max relative difference "
             f"{worst:.1e}" + (" — all agree (≤ 1e-3)." if not bad else " — **MISMATCHES**:"))
    for b in bad:
        L.append(f"- {b}")
    L.append("")
    if res.errors:
        L += ["## Errors", ""] + [f"- {e}" for e in res.errors] + [""]
    return L


def _report_raw(res):
    """Every timing with its spread, CPU use and disturbance."""
    L = []
    # -- raw
    L += ["## Raw timings", "",
          "cpu util = process CPU time / wall time in the timed loop (≈ threads really "
          "busy); bg = other processes' CPU use on the worker's CPUs; tries = timing "
          "attempts (retried while disturbed).", "",
          "| framework | cell | mode | T | B | H | thr | median ms | best ms | reps | "
          "spread (max/min) | cpu util | bg | tries | first call ms |", "|" + "---|" * 15]
    for key in sorted(res.timing, key=lambda k: (k[7], k[2], k[3], k[4:7], k[1],
                                                 FRAMEWORK_ORDER.index(k[0]))):
        fw, n, cell, mode, T, B, H, kind = key
        r = res.timing[key]
        t = r["times"]
        L.append(f"| {fw} | {cell} | {mode} | {T} | {B} | {H} | {n} | "
                 f"{statistics.median(t) * 1e3:.3f} | {min(t) * 1e3:.3f} | {len(t)} | "
                 f"{max(t) / min(t):.2f} | {r['cpu_util']:.2f} | {_bg(r)} | "
                 f"{r.get('attempts', 1)} | {r['first'] * 1e3:.1f} |")
    L.append("")
    return L


def _report(args, settings, res, frameworks, threads, cells, warnings, env_lines,
            load_start, load_end, wall):
    """The Markdown report: one section per helper below, in order."""
    fws = [fw for fw in FRAMEWORK_ORDER if fw in frameworks]
    others = [fw for fw in fws if fw != "fastrnn"]
    L = _report_header(args, res, frameworks, threads, warnings, env_lines, load_start,
                       load_end, wall)
    L += _report_method(settings)
    L += _report_roofline(res, threads)
    if "main" in args.sections:
        L += _report_throughput(settings, res, threads, cells, fws, others)
        L += _report_scaling(settings, res, threads, cells, fws)
    L += _report_micro(args, settings, res, threads, cells, fws)
    if "stream" in args.sections:
        L += _stream_report(res, cells, settings)
    L += _report_memory(args, settings, res, frameworks, cells)
    L += _report_consistency(res)
    L += _report_raw(res)
    return "\n".join(L)


STREAM_COLUMNS = ("kernel", "stream.step", "layer(x_t, hx)", "ORT run", "torch cell",
                  "tagger step", "classifier step", "LM step")


def _stream_report(res, cells, settings):
    L = ["## Streaming: µs per timestep at B=1, float32, 1 thread (lower is better)", ""]
    L.append("*kernel*: a T=2000 whole-sequence `layer(x)` / 2000 (the arithmetic of a "
             "step); *stream.step*: `layer.stream().step(x_t)`; *layer(x_t, hx)*: the layer "
             "called on one step with the state fed back; *ORT run*: `session.run` of "
             "ORT's operator on one step, state fed back; *torch cell*: `nn.LSTMCell` / "
             "`GRUCell` / `RNNCell` under inference_mode; *tagger / classifier / LM step*: "
             "`model.stream().step(token)` of a SequenceTagger (the tag), "
             "SequenceClassifier (class probabilities), LanguageModel (next-token "
             "probabilities) with this cell and hidden size. Minimum over "
             f"{settings['stream_reps']} rounds of a calibrated loop.")
    L.append("")
    head = ["cell", "H"] + list(STREAM_COLUMNS) + ["stream overhead"]
    L.append("| " + " | ".join(head) + " |")
    L.append("|" + "---|" * len(head))
    for cell in cells:
        for H in settings["stream_sizes"]:
            us = res.stream.get((cell, H))
            if not us:
                L.append("| " + " | ".join([cell, str(H)] + ["—"] * (len(head) - 2)) + " |")
                continue
            row = [cell, str(H)] + [f"{us[c]:.2f}" if c in us else "—" for c in STREAM_COLUMNS]
            row.append(f"{us['stream.step'] - us['kernel']:.2f}")
            L.append("| " + " | ".join(row) + " |")
    L.append("")
    return L


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cells", default="rnn,lstm,gru")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--quick", action="store_true", help="smoke test (< ~1 min)")
    p.add_argument("--no-jax", action="store_true")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--no-ort", action="store_true", help="skip ONNX Runtime")
    p.add_argument("--no-numpy", action="store_true",
                   help="skip the numpy reference (and with it the roofline)")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory part")
    p.add_argument("--no-micro", action="store_true", help="skip the per-timestep latency")
    p.add_argument("--out", help="also write the markdown report to this file")
    p.add_argument("--worker-env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment variable for every worker, e.g. "
                        "OMP_WAIT_POLICY=passive (repeatable; shown in the report)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker_main(args.worker)
    args.sections = [x.strip() for x in args.sections.split(",") if x.strip()]
    for x in args.sections:
        if x not in SECTIONS:
            p.error(f"unknown section {x!r} (choose from {', '.join(SECTIONS)})")
    if args.no_micro and "micro" in args.sections:
        args.sections.remove("micro")
    if args.no_memory and "memory" in args.sections:
        args.sections.remove("memory")
    args.no_micro = "micro" not in args.sections
    args.no_memory = "memory" not in args.sections

    import workloads

    t_start = time.perf_counter()
    for item in args.worker_env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            p.error(f"--worker-env expects KEY=VALUE, got {item!r}")
        WORKER_ENV[key] = value
    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    for c in cells:
        if c not in workloads.CELLS:
            p.error(f"unknown cell {c!r} (choose from {', '.join(workloads.CELLS)})")
    threads = sorted({int(t) for t in args.threads.split(",") if t.strip()})
    if not threads or threads[0] < 1:
        p.error("--threads must be positive ints")
    settings = QUICK if args.quick else FULL
    frameworks = ["fastrnn"] + ([] if args.no_numpy else ["numpy"])
    if not args.no_torch:
        frameworks.append("torch")
    if not args.no_ort:
        import importlib.util
        if importlib.util.find_spec("onnxruntime") is None:
            _log("onnxruntime is not importable: skipped")
        else:
            frameworks.append("ort")
    if not args.no_jax:
        try:
            import importlib.util
            if importlib.util.find_spec("jax") is None:
                raise ImportError
            frameworks.append("jax")
        except ImportError:
            _log("jax is not importable: skipped")
    warnings = []
    for var in OPENBLAS_OVERRIDES:
        if var in os.environ:
            _log(f"WARNING: {var}={os.environ[var]} is set; run as `env -u OPENBLAS_CORETYPE "
                 f"-u OPENBLAS_L2_SIZE python bench/compare.py`")
    env_lines = _environment_lines(warnings)
    allowed = sorted(os.sched_getaffinity(0))
    if threads[-1] > len(allowed):
        warnings.append(f"{threads[-1]} threads requested but only {len(allowed)} CPUs are "
                        f"allowed: the workers with more threads than CPUs are oversubscribed.")
    def machine_load():
        bg = _background_load(allowed)
        return (f"{bg:.2f} CPUs busy" if bg is not None else "?") + ", load average " \
            + " / ".join(f"{x:.2f}" for x in os.getloadavg())

    load_start = machine_load()
    stamp_start = _source_stamp()

    def time_jobs(fw):
        jobs = []
        if fw == "numpy":
            jobs.append({"kind": "roofline", "n": settings["roofline_n"],
                         "reps": settings["roofline_reps"], "retries": settings["retries"],
                         "retry_pause": settings["retry_pause"],
                         "retry_budget": settings["retry_budget"]})
        common = {k: settings[k] for k in ("budget", "min_reps", "max_reps", "warmup",
                                           "retries", "retry_pause", "retry_budget")}
        modes = ("inference",) if fw in INFERENCE_ONLY else ("inference", "training")
        for cell in (cells if "main" in args.sections else []):
            for (T, B, H) in settings["configs"]:
                for mode in modes:
                    jobs.append(dict(common, kind="main", cell=cell, mode=mode, T=T, B=B, H=H))
        if not args.no_micro:
            T, B, H = settings["micro"]
            for cell in cells:
                for mode in modes:
                    jobs.append(dict(common, kind="micro", cell=cell, mode=mode, T=T, B=B,
                                     H=H, budget=settings["micro_budget"],
                                     max_reps=settings["micro_max_reps"]))
        return jobs

    res = Results()
    with tempfile.TemporaryDirectory(prefix="fastrnn-bench-") as tmpdir:
        order = ["numpy", "fastrnn", "torch", "ort", "jax"]   # numpy first: the roofline
        for n in threads:
            cpus = allowed[:n] if n <= len(allowed) else allowed
            for fw in [f for f in order if f in frameworks]:
                _wait_for_quiet(cpus, settings["quiet_wait"])
                jobs = time_jobs(fw)
                if not jobs:
                    continue
                _log(f"{fw}, {n} thread(s), CPUs {cpus}")
                res.add(_run_worker(fw, n, cpus, jobs, tmpdir, f"{fw}-{n}"))
        if "stream" in args.sections:
            jobs = [{"kind": "stream", "cell": cell, "H": H, "reps": settings["stream_reps"]}
                    for cell in cells for H in settings["stream_sizes"]]
            _wait_for_quiet(allowed[:1], settings["quiet_wait"])
            _log("streaming, 1 thread")
            res.add(_run_worker("stream", 1, allowed[:1], jobs, tmpdir, "stream"))
        if not args.no_memory:
            T, B, H = settings["memory"]
            for fw in [f for f in ("fastrnn", "torch", "numpy") if f in frameworks]:
                for cell in cells:
                    _log(f"memory: {fw} {cell} {T}x{B}x{H}")
                    res.add(_run_worker(fw, 1, allowed[:1], [
                        {"kind": "memory", "cell": cell, "T": T, "B": B, "H": H}],
                        tmpdir, f"mem-{fw}-{cell}"))
    load_end = machine_load()
    stamp_end = _source_stamp()
    if stamp_end != stamp_start:
        warnings.append(
            f"fastrnn's source/build changed during the run (git {stamp_start[0]} → "
            f"{stamp_end[0]}; newest file under src/fastrnn modified at "
            f"{time.strftime('%H:%M:%S', time.localtime(stamp_end[1]))}): different workers "
            f"may have measured different versions.")
    report = _report(args, settings, res, frameworks, threads, cells, warnings, env_lines,
                     load_start, load_end, time.perf_counter() - t_start)
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report + "\n")
        _log(f"report written to {args.out}")
    _log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
