"""pytest-benchmark suite: fastrnn inference and training steps.

Not part of the normal test run (the project's ``testpaths`` is ``tests/``).
Run from the repository root::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE pytest bench/ --benchmark-only
    FASTRNN_BENCH_THREADS=1 pytest bench/ --benchmark-only    # thread count (default: fastrnn's)
    pytest bench/ --benchmark-only -k lstm --benchmark-group-by=group

The workloads are the ones ``compare.py`` times (``workloads.py``): token ids
(T, B) -> ``fr.Embedding`` (V = 1000, E = H) -> one recurrent layer -> ``fr.Linear``
head (H -> 64) on every step, float32; *inference* = eval forward of all of it;
*training* = forward + ``fr.CrossEntropyLoss`` + backward (embedding gradient
included) + ``fr.optim.Adam`` step.  ``extra_info`` of every
benchmark carries the configuration, the thread count, the FLOP count and,
when timing is enabled, seq/s and GFLOP/s from the median.
"""

import os

import pytest

pytest.importorskip("pytest_benchmark")

import workloads  # noqa: E402  (bench/ is on sys.path: pytest's rootdir-relative import)

CONFIGS = [(50, 32, 64), (100, 64, 256)]
CONFIG_IDS = [f"T{T}xB{B}xH{H}" for T, B, H in CONFIGS]


@pytest.fixture(scope="module")
def threads():
    """Thread count for fastrnn and every numpy/scipy BLAS (FASTRNN_BENCH_THREADS)."""
    fr = pytest.importorskip("fastrnn")
    from threadpoolctl import threadpool_limits

    n = int(os.environ.get("FASTRNN_BENCH_THREADS", fr.get_num_threads()))
    previous = fr.get_num_threads()
    fr.set_num_threads(n)
    with threadpool_limits(limits=n, user_api="blas"):
        yield n
    fr.set_num_threads(previous)


def _run(benchmark, threads, cell, T, B, H, mode):
    wl = workloads.build("fastrnn", cell, T, B, H, mode=mode)
    first = wl.value(wl.step())          # warm-up (allocations) and a sanity value
    assert first == first and abs(first) < 1e6, f"non-finite first step: {first}"
    benchmark.group = f"{cell}-{mode}"
    benchmark.extra_info.update(framework="fastrnn", cell=cell, mode=mode, T=T, B=B, H=H,
                                E=H, vocab=workloads.VOCAB, threads=threads,
                                flops=wl.flops)
    benchmark(wl.step)
    stats = getattr(benchmark, "stats", None)
    if stats is not None:               # None under --benchmark-disable
        median = stats.stats.median
        benchmark.extra_info.update(seq_per_s=B / median, gflops=wl.flops / median / 1e9)


@pytest.mark.parametrize("T,B,H", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("cell", workloads.CELLS)
def test_inference(benchmark, threads, cell, T, B, H):
    _run(benchmark, threads, cell, T, B, H, "inference")


@pytest.mark.parametrize("T,B,H", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("cell", workloads.CELLS)
def test_training(benchmark, threads, cell, T, B, H):
    _run(benchmark, threads, cell, T, B, H, "training")
