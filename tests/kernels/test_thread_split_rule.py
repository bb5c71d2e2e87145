"""The one thread-split rule (fastrnn._kernels._runtime.threads_for /
split_threads): every kernel and the layers decide how many threads share a
job by it, and results stay identical for any thread count."""

import numpy as np
import pytest

from fastrnn._kernels import _runtime
from fastrnn._kernels._dispatch import _optim


@pytest.fixture
def min_work():
    saved = _runtime.get_parallel_min_work()
    yield
    _runtime.set_parallel_min_work(saved)


def test_small_work_runs_serially(min_work):
    """n threads need work >= S * n * (n - 1), S the start-up cost per extra
    thread: each added thread must save more than it costs."""
    _runtime.set_parallel_min_work(1000)
    assert _runtime.threads_for(1999, 4) == 1
    assert _runtime.threads_for(2000, 4) == 2
    assert _runtime.threads_for(5999, 4) == 2
    assert _runtime.threads_for(6000, 4) == 3
    assert _runtime.threads_for(12000, 4) == 4
    assert _runtime.threads_for(10 ** 9, 4) == 4
    assert _runtime.threads_for(10 ** 9, 1) == 1
    assert _runtime.threads_for(10 ** 9, 0) == 1


def test_split_is_never_expected_slower_than_serial(min_work):
    """Under the rule's own cost model (work / n + S * (n - 1)) the chosen
    thread count is the cheapest, so never dearer than one thread."""
    S = 1000.0
    _runtime.set_parallel_min_work(S)

    def cost(work, n):
        return work / n + S * (n - 1)

    for work in (0.0, 500.0, 1999.0, 2000.0, 7000.0, 1e5, 1e7):
        for threads in (1, 2, 3, 8):
            chosen = _runtime.threads_for(work, threads)
            best = min(cost(work, n) for n in range(1, threads + 1))
            assert cost(work, chosen) == pytest.approx(best)


def test_thread_count_is_capped(min_work):
    _runtime.set_parallel_min_work(0)
    assert _runtime.threads_for(1.0, 300) == 256
    assert _runtime.threads_for(1.0, 256) == 256


@pytest.mark.parametrize("n", [1, 15, 17, 1000, 4097])
@pytest.mark.parametrize("threads", [2, 3, 7, 300])
def test_chunked_kernels_cover_every_element_once(min_work, n, threads):
    """scale and all_finite split by chunk_start: every element exactly once,
    whatever the chunk count (more chunks than elements leaves some empty)."""
    _runtime.set_parallel_min_work(0)
    x = np.arange(1, n + 1, dtype=np.float64)
    _optim.scale(x, 2.0, threads)
    np.testing.assert_array_equal(x, 2 * np.arange(1, n + 1))
    assert _runtime.all_finite(x, threads)
    x[-1] = np.nan
    assert not _runtime.all_finite(x, threads)


@pytest.mark.parametrize("threads", [2, 3, 300])
def test_norm_reduce_matches_serial_sum(min_work, threads):
    _runtime.set_parallel_min_work(0)
    x = np.random.default_rng(0).normal(size=5000)
    serial = _optim.norm_reduce(x, 0, 2.0, 1)
    split = _optim.norm_reduce(x, 0, 2.0, threads)
    assert split == pytest.approx(np.sum(x * x), rel=1e-12)
    assert serial == pytest.approx(split, rel=1e-12)
    assert _optim.norm_reduce(x, 2, 0.0, threads) == np.max(np.abs(x))
