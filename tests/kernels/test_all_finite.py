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
