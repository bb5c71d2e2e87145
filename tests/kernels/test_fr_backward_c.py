"""The C-level tests of fr_backward.h (tests/kernels/c/test_fr_backward.c),
compiled with the flags of each x86-64 level and run where this CPU can."""

import os
import platform
import shutil
import subprocess

import pytest
from test_c_kernels import HEADERS, X86_FLAGS, run

from fastrnn._kernels import _dispatch

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "c", "test_fr_backward.c")
FLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-Wall", "-Werror", "-I", HEADERS]


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64")
                    or shutil.which("gcc") is None
                    or not os.path.exists(os.path.join(HEADERS, "fr_backward.h")),
                    reason="x86-64 with gcc and the source tree's headers only")
@pytest.mark.parametrize("level", ["baseline", "avx2", "avx512"])
def test_fr_backward_at_each_x86_level(level, tmp_path):
    exe = tmp_path / f"test_backward_{level}"
    subprocess.run(["gcc", *FLAGS, *X86_FLAGS[level], SOURCE, "-o", str(exe)],
                   check=True, capture_output=True, text=True)     # every level compiles
    if level not in _dispatch.cpu_levels():
        pytest.skip(f"compiled; this CPU cannot run {level}")
    assert "all passed" in run([str(exe)])
