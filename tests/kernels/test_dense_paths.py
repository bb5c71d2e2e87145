"""fr.Linear's forward product takes the packed micro-kernel for few rows or
outputs and BLAS otherwise (_dense._packed_is_faster): both routes give the
same product, with and without bias, for every dtype and thread count."""

import numpy as np
import pytest

import fastrnn as fr
from fastrnn._kernels._dispatch import _dense

TOLERANCE = {"float": 2e-5, "double": 1e-12}


@pytest.mark.parametrize("ctype", ["float", "double"])
@pytest.mark.parametrize("rows,fan_out,fan_in", [(7, 5, 3), (300, 100, 33), (129, 40, 17)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("threads", [1, 2])
def test_packed_and_blas_routes_match_numpy(ctype, rows, fan_out, fan_in, bias, threads):
    dtype = np.float32 if ctype == "float" else np.float64
    rng = np.random.default_rng(rows + fan_out)
    x = rng.standard_normal((rows, fan_in)).astype(dtype)
    weight = rng.standard_normal((fan_out, fan_in)).astype(dtype)
    b = rng.standard_normal(fan_out).astype(dtype) if bias else np.empty(0, dtype)
    expected = x.astype(np.float64) @ weight.T.astype(np.float64) + (b if bias else 0)
    kernel = _dense.linear_forward[ctype]
    for path in (_dense.AUTO, _dense.PACKED, _dense.BLAS):
        y = np.full((rows, fan_out), np.nan, dtype)
        kernel(x, weight, b, y, threads, path)
        np.testing.assert_allclose(y, expected, rtol=TOLERANCE[ctype],
                                   atol=TOLERANCE[ctype] * fan_in)


def test_a_timestep_head_takes_the_blas_route_with_the_same_result():
    """(T * B) rows of a head on every timestep: the BLAS route, through the
    layer, equal to the packed route's product to float rounding."""
    layer = fr.Linear(64, 200, dtype="float64", seed=3)
    x = np.random.default_rng(0).standard_normal((20, 16, 64))
    packed = np.empty((320, 200))
    bias = layer.state_dict()["bias"]
    _dense.linear_forward["double"](x.reshape(320, 64), layer.state_dict()["weight"],
                                    bias, packed, 1, _dense.PACKED)
    np.testing.assert_allclose(layer(x).reshape(320, 200), packed, rtol=1e-13, atol=1e-13)
