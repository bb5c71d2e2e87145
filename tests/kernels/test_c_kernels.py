"""The C-level kernel tests (tests/kernels/c/test_fr_kernels.c) at every level and on arm64.

fr_gemm.h and fr_math.h are compiled with the flags of each x86-64 level the
compiler targets (run where this CPU can), and cross-compiled for aarch64
(NEON) with Debian's gcc-aarch64-linux-gnu and run under qemu-aarch64
(qemu-user): no arm64 machine is at hand, so arm64 is tested this way.  The
cross test skips only when that compiler or qemu is absent (.ci/run installs
both).
"""

import os
import platform
import shutil
import subprocess

import pytest

from fastrnn._kernels import _dispatch

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "c", "test_fr_kernels.c")
# The headers ship in the sdist's source tree; the test runs from there.
HEADERS = os.path.join(os.path.dirname(os.path.dirname(HERE)), "src", "fastrnn", "_kernels")
FLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd", "-Wall",
         "-Werror", "-I", HEADERS]
X86_FLAGS = {"baseline": [], "avx2": ["-march=x86-64-v3"], "avx512": ["-march=x86-64-v4"]}

pytestmark = pytest.mark.skipif(not os.path.exists(os.path.join(HEADERS, "fr_gemm.h")),
                                reason="needs the source tree's kernel headers")


def build(compiler, flags, output, source=SOURCE):
    subprocess.run([compiler, *FLAGS, *flags, source, "-o", str(output), "-lm"],
                   check=True, capture_output=True, text=True)


def build_at_level(level, output, source=SOURCE):
    """Compile ``source`` with an x86-64 level's flags (every level must
    compile); skip when this CPU cannot run it.  Returns the level's vector
    width in bytes, which the C tests print."""
    build("gcc", X86_FLAGS[level], output, source)
    if level not in _dispatch.cpu_levels():
        pytest.skip(f"compiled; this CPU cannot run {level}")
    return {"baseline": 16, "avx2": 32, "avx512": 64}[level]


def run(command):
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64")
                    or shutil.which("gcc") is None, reason="x86-64 with gcc only")
@pytest.mark.parametrize("level", ["baseline", "avx2", "avx512"])
def test_c_kernels_at_each_x86_level(level, tmp_path):
    exe = tmp_path / f"test_{level}"
    vector = build_at_level(level, exe)
    assert f"vector {vector} bytes" in run([str(exe)])


@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-gcc") is None
                    or shutil.which("qemu-aarch64") is None,
                    reason="needs gcc-aarch64-linux-gnu and qemu-user")
def test_c_kernels_on_aarch64_under_qemu(tmp_path):
    exe = tmp_path / "test_aarch64"
    build("aarch64-linux-gnu-gcc", ["-static"], exe)
    out = run(["qemu-aarch64", str(exe)])
    assert "vector 16 bytes, MR 6, NR 8 floats: all passed" in out
    objdump = shutil.which("aarch64-linux-gnu-objdump")
    if objdump:   # the micro-kernel really uses NEON's vector FMA
        code = subprocess.run([objdump, "-d", str(exe)], capture_output=True, text=True).stdout
        assert "fmla" in code and ".4s" in code
