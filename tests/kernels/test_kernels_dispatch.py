"""The instruction-set dispatch and fr_gemm.h, tested directly.

``_gemm_twin`` exposes fr_gemm.h's pack routine and packed micro-kernel; it is
compiled at every level like the kernels, and checked against numpy at every
level this machine runs.  The dispatch table is checked in subprocesses that
force each level with FASTRNN_ISA, and with values that must be refused.
"""

import os
import platform
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import fastrnn as fr
from fastrnn._kernels import _dispatch

RUNNABLE = [level for level in _dispatch.compiled_levels() if level in _dispatch.cpu_levels()]
X86_64 = platform.machine().lower() in ("x86_64", "amd64")
VECTOR_BYTES = {"baseline": 16, "avx2": 32, "avx512": 64}


def twin(level):
    return _dispatch.module("_gemm_twin", level)


@pytest.mark.parametrize("level", RUNNABLE)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (5, 17, 3), (13, 40, 31), (8, 64, 300),
                                   (7, 33, 257)])
@pytest.mark.parametrize("transposed", [False, True])
def test_packed_gemm_matches_numpy(level, dtype, m, n, k, transposed, rng):
    """C += A @ B for row counts around MR, column counts around NR and K past
    one K block (256), with B given directly or as B^T (as W_hh is)."""
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    c = rng.standard_normal((m, n)).astype(dtype)
    expected = c.astype(np.float64) + a.astype(np.float64) @ b.astype(np.float64)
    source = np.ascontiguousarray(b.T) if transposed else b
    twin(level).packed_gemm(a, twin(level).pack(source, transposed), c)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(c, expected, rtol=tol, atol=tol * np.sqrt(k))


@pytest.mark.parametrize("level", RUNNABLE)
def test_pack_layout_is_zero_padded_column_panels(level):
    """Panels of NR = 2 vectors of columns, K rows each, zeros past N."""
    _, vector_bytes, _ = twin(level).tile_shape()
    nr = 2 * vector_bytes // 4
    k, n = 3, nr + 5
    b = np.arange(k * n, dtype=np.float32).reshape(k, n) + 1
    packed = twin(level).pack(b)
    padded = np.zeros((k, 2 * nr), np.float32)
    padded[:, :n] = b
    expected = np.concatenate([padded[:, :nr].ravel(), padded[:, nr:].ravel()])
    np.testing.assert_array_equal(packed, expected)


@pytest.mark.parametrize("level", RUNNABLE)
def test_each_level_keeps_its_tile_shape(level):
    mr, vector_bytes, kc = twin(level).tile_shape()
    assert vector_bytes == VECTOR_BYTES[level]
    assert mr == (8 if level == "avx512" else 6) and kc == 256


def test_packed_gemm_refuses_mismatched_operands():
    a = np.ones((4, 3), np.float32)
    packed = twin(None).pack(np.ones((3, 5), np.float32))
    with pytest.raises(ValueError, match=r"A 4x3, C 2x5 .* do not fit"):
        twin(None).packed_gemm(a, packed, np.zeros((2, 5), np.float32))


def test_module_refuses_a_level_this_cpu_cannot_run():
    missing = [level for level in _dispatch.LEVELS if level not in _dispatch.cpu_levels()]
    for level in missing + ["sse9"]:
        with pytest.raises(ValueError, match=r"level must be one of this CPU's levels"):
            _dispatch.module("_recurrent", level)


# -- the dispatch table ----------------------------------------------------------------------

def test_choose_picks_the_best_level_built_and_supported():
    all_levels = ("baseline", "avx2", "avx512")
    assert _dispatch.choose("", all_levels, ("baseline", "avx2")) == "avx2"
    assert _dispatch.choose("auto", ("baseline",), all_levels) == "baseline"
    assert _dispatch.choose(" AVX2 ", all_levels, all_levels) == "avx2"
    assert _dispatch.choose("baseline", all_levels, all_levels) == "baseline"


@pytest.mark.parametrize("value,built,cpu,problem", [
    ("sse9", ("baseline", "avx2"), ("baseline", "avx2"), "'sse9' is not a kernel level"),
    ("avx512", ("baseline", "avx2", "avx512"), ("baseline", "avx2"),
     "this CPU cannot run 'avx512'"),
    ("avx2", ("baseline",), ("baseline", "avx2"),
     "'avx2' kernels were not built in this installation"),
])
def test_choose_refuses_with_the_variable_the_values_and_the_cpu(value, built, cpu, problem):
    with pytest.raises(ValueError) as caught:
        _dispatch.choose(value, built, cpu)
    message = str(caught.value)
    assert message.startswith(f"FASTRNN_ISA={value!r}: {problem}.")
    assert "Allowed values: baseline, avx2, avx512, auto" in message
    assert f"this CPU runs {', '.join(cpu)}" in message


def run_forced(value, code):
    env = dict(os.environ, FASTRNN_ISA=value)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=300)


PROBE = """
import numpy as np, fastrnn as fr
from fastrnn._kernels._dispatch import _recurrent, _losses
print(fr.kernel_levels()["chosen"], _recurrent.__name__, _losses.__name__)
rng = np.random.default_rng(0)
lstm = fr.LSTM(5, 12, bidirectional=True, seed=1)
x = rng.standard_normal((7, 3, 5)).astype(np.float32)
out, _ = lstm(x)
d_x, _ = lstm.backward(np.ones_like(out))
np.save({path!r}, np.concatenate([out.ravel(), d_x.ravel(),
                                  lstm.grads["weight_hh_l0"].ravel()]))
"""


def test_each_runnable_level_can_be_forced_and_agrees(tmp_path):
    """Every level this CPU runs loads its own modules and computes the same
    LSTM forward and backward (to float32 rounding: FMA and vector widths
    change the order of sums)."""
    results = {}
    for level in RUNNABLE:
        path = str(tmp_path / f"{level}.npy")
        proc = run_forced(level, PROBE.format(path=path))
        assert proc.returncode == 0, proc.stderr
        chosen, recurrent, losses = proc.stdout.split()
        prefix = "fastrnn._kernels." + ("" if level == "baseline" else level + ".")
        assert (chosen, recurrent, losses) == (level, prefix + "_recurrent", prefix + "_losses")
        results[level] = np.load(path)
    for level, values in results.items():
        np.testing.assert_allclose(values, results["baseline"], rtol=1e-4, atol=1e-5,
                                   err_msg=level)


@pytest.mark.parametrize("value", ["sse9", "avx512", "native"])
def test_bad_or_unsupported_level_is_one_clear_error_at_import(value):
    if value == "avx512" and "avx512" in _dispatch.cpu_levels():
        pytest.skip("this CPU runs AVX-512")
    proc = run_forced(value, "import fastrnn")
    assert proc.returncode == 1 and "Segmentation" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert re.match(rf"ValueError: FASTRNN_ISA='{value}': ", last), proc.stderr
    assert "Allowed values: baseline, avx2, avx512, auto" in last
    assert f"this CPU runs {', '.join(_dispatch.cpu_levels())}" in last


def test_show_config_names_the_chosen_level(capsys):
    fr.show_config()
    out = capsys.readouterr().out
    levels = fr.kernel_levels()
    forced = (levels["forced"] or "").strip().lower()
    expected = forced if forced not in ("", "auto") else RUNNABLE[-1]
    assert levels["chosen"] == _dispatch.chosen_level() == expected
    assert re.search(rf"^kernels\s+{levels['chosen']} \((best for this CPU|forced)", out, re.M)
    assert f"this CPU runs: {', '.join(levels['cpu'])}" in out


# -- what each level's machine code holds ----------------------------------------------------

def disassembly(level, name="_recurrent"):
    spec = __import__("importlib.util").util.find_spec(_dispatch._module_name(level, name))
    return subprocess.run(["objdump", "-d", "--no-show-raw-insn", spec.origin],
                          capture_output=True, text=True, check=True).stdout


@pytest.mark.skipif(not X86_64 or shutil.which("objdump") is None,
                    reason="x86-64 with objdump only")
@pytest.mark.parametrize("level,present,absent", [
    ("baseline", ["%xmm"], ["%ymm", "%zmm", "vfmadd"]),
    ("avx2", ["%ymm", "vfmadd"], ["%zmm"]),
    ("avx512", ["%zmm", "vfmadd"], []),
])
def test_machine_code_of_each_level(level, present, absent):
    """The baseline holds no AVX instruction (it must run on any x86-64 CPU);
    the AVX2 and AVX-512 builds really use their registers and FMA."""
    if level not in _dispatch.compiled_levels():
        pytest.skip(f"{level} not built")
    code = disassembly(level)
    for token in present:
        assert token in code, f"{level}: no {token}"
    for token in absent:
        assert token not in code, f"{level}: holds {token}"
