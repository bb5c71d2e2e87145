"""Thread count for the kernels, and control of the BLAS they call.

fastrnn's parallelism is its own OpenMP: the recurrence runs one batch chunk
per thread, and the whole-sequence products split their rows over the same
threads, each thread calling a single-threaded BLAS.  A multithreaded BLAS
would leave worker threads spinning against ours (2 threads measured up to
10x slower than 1 that way), so the kernels switch scipy's OpenBLAS to one
thread for the duration of a call and restore it afterwards.  threadpoolctl
finds that library; its ``openblas_set_num_threads`` and
``openblas_get_num_threads`` entry points are handed to the kernels so the
switch costs no Python call and needs no GIL.
"""

import contextlib
import ctypes
import itertools
import os
import platform
import sys

from ._kernels import _runtime
from ._rules import Integer
from ._version import __version__

__all__ = ["set_num_threads", "get_num_threads", "openmp_enabled", "blas_info",
           "kernel_levels", "show_config"]


def _threads_from_environment():
    value = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


_num_threads = _threads_from_environment()


def set_num_threads(n):
    """Use ``n`` threads (OpenMP across the batch, and the BLAS) in every kernel."""
    global _num_threads
    _num_threads = Integer(low=1)("n", n, "set_num_threads")


def get_num_threads():
    """Threads the kernels use: ``set_num_threads``, else OMP_NUM_THREADS, else the CPUs."""
    return _num_threads


def openmp_enabled():
    """True when the kernels were compiled with OpenMP (else they run serially)."""
    return _runtime.openmp_enabled()


def _scipy_blas_libraries():
    """threadpoolctl's description (its public ``info()`` dicts) of the BLAS
    behind ``scipy.linalg.cython_blas``."""
    import scipy
    import scipy.linalg.cython_blas  # noqa: F401  (loads the library)
    from threadpoolctl import ThreadpoolController

    blas = [lib for lib in ThreadpoolController().info() if lib["user_api"] == "blas"]
    scipy_root = os.path.dirname(os.path.dirname(os.path.realpath(scipy.__file__)))
    bundled = [lib for lib in blas
               if os.path.realpath(lib["filepath"]).startswith(scipy_root)
               and "scipy" in os.path.basename(os.path.dirname(lib["filepath"]))]
    return bundled or blas


# OpenBLAS builds name their functions with a prefix (scipy's own build:
# scipy_) and a suffix (64-bit integer builds: 64_ or _64).
_OPENBLAS_AFFIXES = tuple(itertools.product(("", "scipy_"), ("", "64_", "_64")))


def _openblas_thread_setters(filepath):
    """``(openblas_set_num_threads, openblas_get_num_threads)`` of the OpenBLAS
    at ``filepath`` (already loaded: RTLD_NOLOAD opens nothing new), found by
    name with ctypes; None if the library or the functions are not there."""
    try:
        library = ctypes.CDLL(filepath, mode=getattr(os, "RTLD_NOLOAD", 0) | ctypes.RTLD_LOCAL)
    except OSError:
        return None
    for prefix, suffix in _OPENBLAS_AFFIXES:
        set_fn = getattr(library, f"{prefix}openblas_set_num_threads{suffix}", None)
        get_fn = getattr(library, f"{prefix}openblas_get_num_threads{suffix}", None)
        if set_fn is not None and get_fn is not None:
            return set_fn, get_fn
    return None


def _bind():
    """Hand a pthreads OpenBLAS's thread setters to the kernels, if there is
    one; returns its threadpoolctl description (or None)."""
    for lib in _scipy_blas_libraries():
        if lib["internal_api"] != "openblas" or lib.get("threading_layer") != "pthreads":
            continue
        setters = _openblas_thread_setters(lib["filepath"])
        if setters is None:
            continue
        set_fn, get_fn = setters
        _runtime.bind_blas_threads(ctypes.cast(set_fn, ctypes.c_void_p).value,
                                   ctypes.cast(get_fn, ctypes.c_void_p).value)
        return lib
    return None


_bound_blas = _bind()


def blas_region():
    """Context for kernel calls: BLAS single-threaded while they run.

    With a bound OpenBLAS the kernels do this themselves, so this does
    nothing.  Any other BLAS (MKL, BLIS, an OpenMP-threaded OpenBLAS) is
    limited through threadpoolctl, at the cost of a Python-level call.
    """
    if _bound_blas is not None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits
    return threadpool_limits(limits=1, user_api="blas")


def blas_info():
    """Describe the BLAS the kernels call (for ``fastrnn info`` and benchmarks)."""
    libs = _scipy_blas_libraries()
    return [{"filepath": lib["filepath"], "internal_api": lib["internal_api"],
             "version": lib.get("version"),
             "architecture": lib.get("architecture"),
             "threading_layer": lib.get("threading_layer"),
             "kernel_controls_threads": (_bound_blas is not None
                                         and lib["filepath"] == _bound_blas["filepath"])}
            for lib in libs]


def kernel_levels():
    """The instruction-set levels of the compiled kernels: ``chosen`` (in
    use), ``built`` (in this installation), ``cpu`` (this CPU can run) and
    ``forced`` (the value of FASTRNN_ISA, None when unset)."""
    from ._kernels import _dispatch
    return {"chosen": _dispatch.chosen_level(), "built": _dispatch.compiled_levels(),
            "cpu": _dispatch.cpu_levels(),
            "forced": os.environ.get(_dispatch.ENV_VAR) or None}


def _version_of(name):
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def config_lines():
    """(name, value) rows describing this fastrnn: ``show_config`` and
    ``fastrnn info`` print them."""
    levels = kernel_levels()
    how = f"forced by FASTRNN_ISA={levels['forced']}" if levels["forced"] else "best for this CPU"
    lines = [("fastrnn", f"{__version__} ({os.path.dirname(os.path.abspath(__file__))})"),
             ("python", f"{platform.python_version()} ({sys.executable})"),
             ("platform", platform.platform()),
             ("kernels", f"{levels['chosen']} ({how}; built: {', '.join(levels['built'])}; "
                         f"this CPU runs: {', '.join(levels['cpu'])})"),
             ("OpenMP", "on" if openmp_enabled() else "off (serial kernels)"),
             ("threads", f"{get_num_threads()} (of {os.cpu_count()} CPUs; set with "
                         f"--threads or OMP_NUM_THREADS)")]
    blas = blas_info()
    if not blas:
        lines.append(("BLAS", "none found through threadpoolctl"))
    for lib in blas:
        lines.append(("BLAS", f"{lib.get('internal_api')} {lib.get('version')} "
                              f"({lib.get('architecture')}, {lib.get('threading_layer')} "
                              f"threads; {lib.get('filepath')})"))
    for name in ("numpy", "scipy", "threadpoolctl", "tqdm", "matplotlib", "torch"):
        lines.append((name, _version_of(name) or "not installed"))
    return lines


def show_config(file=None):
    """Print the version, the kernel instruction-set level (chosen, built,
    supported by this CPU), OpenMP, threads, BLAS and dependency versions."""
    lines = config_lines()
    width = max(len(name) for name, _ in lines)
    for name, value in lines:
        print(f"{name:<{width}}  {value}", file=file or sys.stdout)
