"""``_runtime.all_finite`` (fr_math.h's check, blocked into separate sums):
a NaN or infinity anywhere is found, in the blocked part and in the tail."""

import numpy as np
import pytest

from fastrnn._kernels import _runtime


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n", [1, 31, 32, 33, 64, 95, 130])
def test_a_bad_value_at_any_position_is_found(dtype, n):
    x = np.linspace(-3e38 if dtype == "float32" else -1e308, 1e30, n).astype(dtype)
    assert _runtime.all_finite(x, 1)
    for bad in (np.nan, np.inf, -np.inf):
        for i in range(n):
            y = x.copy()
            y[i] = bad
            assert not _runtime.all_finite(y, 1), (bad, i)


def test_largest_finite_values_are_finite():
    """x * 0 is 0 for every finite x, however large: no false alarm."""
    for dtype in (np.float32, np.float64):
        x = np.full(100, np.finfo(dtype).max, dtype=dtype)
        x[::2] = -x[::2]
        assert _runtime.all_finite(x, 1)


@pytest.fixture
def split_every_pass():
    """Small arrays are one chunk; these tests lower the threshold so their
    copies are split over threads too."""
    before = _runtime.get_parallel_min_work()
    _runtime.set_parallel_min_work(1)
    yield
    _runtime.set_parallel_min_work(before)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_copy_values_copies_every_value_on_any_thread_count(split_every_pass, dtype, threads):
    """The threaded copy that keeps a training input for backward: chunk
    edges fall on 16-value boundaries, so lengths around them and shorter
    than one chunk per thread are all covered, NaN and inf included."""
    rng = np.random.default_rng(threads)
    for n in (1, 15, 16, 17, 47, 48, 49, 1000):
        source = rng.standard_normal(n).astype(dtype)
        source[::7] = np.nan
        source[3::11] = np.inf
        target = np.full(n + 1, 7.0, dtype)
        _runtime.copy_values(source, target[:n], threads)
        np.testing.assert_array_equal(target[:n], source)
        assert target[n] == 7.0                          # nothing written past the end


def test_copy_values_refuses_a_target_of_another_length():
    with pytest.raises(ValueError, match="source has 3 values, target 4"):
        _runtime.copy_values(np.zeros(3), np.zeros(4), 1)
