"""``fastrnn info``: what this fastrnn runs on."""

import os
import platform
import sys
from importlib.metadata import PackageNotFoundError, version


def add_parser(commands):
    info = commands.add_parser("info", help="version, OpenMP, threads, BLAS, dependencies",
                               description="Print what this fastrnn runs on: its version "
                                           "and location, Python, OpenMP, the kernel "
                                           "threads, the BLAS library and the versions of "
                                           "the dependencies.")
    info.set_defaults(func=info_command)


def _version_of(name):
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def info_command(args):
    import fastrnn as fr
    lines = [("fastrnn", f"{fr.__version__} ({os.path.dirname(os.path.abspath(fr.__file__))})"),
             ("python", f"{platform.python_version()} ({sys.executable})"),
             ("platform", platform.platform()),
             ("OpenMP", "on" if fr.openmp_enabled() else "off (serial kernels)"),
             ("threads", f"{fr.get_num_threads()} (of {os.cpu_count()} CPUs; set with "
                         f"--threads or OMP_NUM_THREADS)")]
    blas = fr.blas_info()
    if not blas:
        lines.append(("BLAS", "none found through threadpoolctl"))
    for lib in blas:
        lines.append(("BLAS", f"{lib.get('internal_api')} {lib.get('version')} "
                              f"({lib.get('architecture')}, {lib.get('threading_layer')} "
                              f"threads; {lib.get('filepath')})"))
    for name in ("numpy", "scipy", "threadpoolctl", "tqdm", "matplotlib", "torch"):
        lines.append((name, _version_of(name) or "not installed"))
    width = max(len(name) for name, _ in lines)
    for name, value in lines:
        print(f"{name:<{width}}  {value}")
    return 0
