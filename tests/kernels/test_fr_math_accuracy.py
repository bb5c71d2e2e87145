"""fr_math.h's float32 activations: ulp bounds against float64 at every level.

tests/kernels/c/test_fr_math_ulp.c sweeps the float range (every 61st bit
pattern, both signs) through the row functions the recurrent kernels call and
checks tanh and sigmoid within 3 ulp, exp within 1.5 ulp, plus the edge values
(+-0, NaN, +-inf, subnormals, saturation).  It is compiled with each x86-64
level's flags (baseline SSE2 has no FMA, so its rounding differs) and for
aarch64 under qemu.  The polynomial coefficients in the header are checked
against a fresh fit (tests/kernels/fr_math_fit.py).
"""

import os
import platform
import re
import shutil

import numpy as np
import pytest

from kernels import fr_math_fit
from kernels.test_c_kernels import HEADERS, build, build_at_level, run

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "c", "test_fr_math_ulp.c")
MATH_H = os.path.join(HEADERS, "fr_math.h")

pytestmark = pytest.mark.skipif(not os.path.exists(MATH_H),
                                reason="needs the source tree's kernel headers")


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64")
                    or shutil.which("gcc") is None, reason="x86-64 with gcc only")
@pytest.mark.parametrize("level", ["baseline", "avx2", "avx512"])
def test_activation_ulp_bounds_at_each_x86_level(level, tmp_path):
    exe = tmp_path / f"ulp_{level}"
    vector = build_at_level(level, exe, SOURCE)
    assert f"vector {vector} bytes: all passed" in run([str(exe), "61"])


@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-gcc") is None
                    or shutil.which("qemu-aarch64") is None,
                    reason="needs gcc-aarch64-linux-gnu and qemu-user")
def test_activation_ulp_bounds_on_aarch64_under_qemu(tmp_path):
    exe = tmp_path / "ulp_aarch64"
    build("aarch64-linux-gnu-gcc", ["-static"], exe, SOURCE)
    assert "vector 16 bytes: all passed" in run(["qemu-aarch64", str(exe), "1009"])


def header_coefficients(function):
    """The float literals of one fr_math.h function body, in order."""
    with open(MATH_H, encoding="utf-8") as handle:
        text = handle.read()
    body = re.search(r"static inline float %s\(float r\)\n\{(.*?)\n\}" % function, text, re.S)
    assert body, f"{function} not found in fr_math.h"
    return np.array([float(v) for v in re.findall(r"([0-9.]+e[-+][0-9]+)f", body.group(1))],
                    dtype=np.float32)


@pytest.mark.parametrize("function, fit, error", [
    ("fr_exp_reducedf", fr_math_fit.fit_exp, fr_math_fit.exp_error),
    ("fr_expm1_reducedf", fr_math_fit.fit_expm1, fr_math_fit.expm1_error)])
def test_polynomials_are_the_minimax_fits(function, fit, error):
    in_header = header_coefficients(function)[::-1]      # lowest degree first
    fitted, best = fit()
    assert len(in_header) == len(fitted)
    np.testing.assert_allclose(in_header, fitted, rtol=1e-6)
    # near-minimax: about 10x below the Taylor polynomial of the same degree
    assert error(in_header) < 2.5e-8 and best < 2.5e-8
