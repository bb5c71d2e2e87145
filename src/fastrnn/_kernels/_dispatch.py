"""Run-time choice of the instruction-set level of the compiled kernels.

setup.py compiles every hot kernel module once per level ("baseline": the
architecture's default, SSE2 on x86-64 and NEON on aarch64; "avx2":
x86-64-v3; "avx512": x86-64-v4).  At import this module asks the CPU which
levels it runs (``_runtime.cpu_levels``, a compiled CPUID probe) and picks
the highest one that was built, unless ``FASTRNN_ISA`` names one.  The
layers, losses and optimizers import their kernel modules from here
(``from fastrnn._kernels._dispatch import _recurrent``), so a level the CPU
lacks is never loaded (no SIGILL).
"""

import importlib
import importlib.util
import os

from . import _runtime

__all__ = ["LEVELS", "ENV_VAR", "module", "chosen_level", "compiled_levels", "cpu_levels"]

ENV_VAR = "FASTRNN_ISA"
# The modules compiled once per level; setup.py reads this tuple to build them.
DISPATCHED = ("_recurrent", "_dense", "_embedding", "_losses", "_optim", "_gemm_twin",
              "_gemm_probe",
              "_jordan", "_rtrl", "_attention")
LEVELS = ("baseline", "avx2", "avx512")          # lowest first
AUTO = ("", "auto")


def _module_name(level, name):
    return f"{__package__}.{name}" if level == "baseline" else f"{__package__}.{level}.{name}"


def _built(level):
    try:
        return importlib.util.find_spec(_module_name(level, "_recurrent")) is not None
    except ModuleNotFoundError:      # the level's package itself is absent
        return False


def compiled_levels():
    """The levels this installation holds kernels for, lowest first."""
    return tuple(level for level in LEVELS if _built(level))


def cpu_levels():
    """The levels this CPU can run, lowest first."""
    return _runtime.cpu_levels()


def choose(requested, compiled, supported):
    """The level to use: ``requested`` (the value of FASTRNN_ISA, "" or
    "auto" for the best) checked against what is compiled and supported."""
    usable = [level for level in compiled if level in supported]
    value = requested.strip().lower()
    if value in AUTO:
        return usable[-1]
    if value not in LEVELS or value not in usable:
        if value not in LEVELS:
            problem = f"{value!r} is not a kernel level"
        elif value not in supported:
            problem = f"this CPU cannot run {value!r}"
        else:
            problem = f"{value!r} kernels were not built in this installation"
        raise ValueError(
            f"{ENV_VAR}={requested!r}: {problem}. Allowed values: "
            f"{', '.join(LEVELS + ('auto',))}; this CPU runs {', '.join(supported)}; "
            f"built: {', '.join(compiled)}. Unset {ENV_VAR} to use the best "
            f"({usable[-1]}).")
    return value


_chosen = choose(os.environ.get(ENV_VAR, ""), compiled_levels(), cpu_levels())


def chosen_level():
    """The level every dispatched kernel module comes from in this process."""
    return _chosen


def module(name, level=None):
    """The kernel module ``name`` (e.g. "_recurrent") of ``level`` (default:
    the chosen one).  Tests pass a level to compare levels side by side;
    a level this CPU cannot run is refused rather than loaded."""
    if level is not None and level not in cpu_levels():
        raise ValueError(f"level must be one of this CPU's levels "
                         f"{', '.join(cpu_levels())}, got {level!r}")
    return importlib.import_module(_module_name(level or _chosen, name))


def __getattr__(name):
    """``from fastrnn._kernels._dispatch import _losses``: the chosen level's module."""
    if name in DISPATCHED:
        return module(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
