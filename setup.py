"""Build the fastrnn Cython kernels: one portable build with run-time dispatch.

The hot kernel modules (``DISPATCHED``) are compiled once per instruction-set
level from the same ``.pyx`` source: the baseline into
``fastrnn._kernels.<name>`` and, on x86-64, the AVX2 (x86-64-v3) and AVX-512
(x86-64-v4) levels into ``fastrnn._kernels.<level>.<name>``.
``fastrnn._kernels._dispatch`` picks the best level the CPU supports at import
(``FASTRNN_ISA`` forces one).  ``_runtime`` (the CPU probe, thread control and
shared state) is compiled once, for the baseline, so it runs on every CPU.

OpenMP is used when the compiler accepts ``-fopenmp`` (checked by compiling a
tiny program); without it the kernels build and run serially and
``fastrnn.openmp_enabled()`` returns False.  A level the compiler cannot
target is left out (``fastrnn info`` lists the levels built).

Environment (development only):
  FASTRNN_KERNELS=_losses,_optim   rebuild only those modules
  FASTRNN_LEVELS=baseline,avx2     build only these levels
  FASTRNN_NATIVE=1                 build only the baseline modules, compiled
                                   for this machine (-march=native): the
                                   reference of bench/dispatch.py
  FASTRNN_ANNOTATE=1               write Cython's HTML annotations
"""

import glob
import os
import platform
import shutil
import sys
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def _dispatched_modules():
    """``DISPATCHED`` of src/fastrnn/_kernels/_dispatch.py, read without
    importing the package (it needs the compiled kernels)."""
    import ast
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        "src", "fastrnn", "_kernels", "_dispatch.py")
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                getattr(target, "id", None) == "DISPATCHED" for target in node.targets):
            return list(ast.literal_eval(node.value))
    raise RuntimeError(f"{path} defines no DISPATCHED tuple")


# Compiled once per instruction-set level: the modules the package's run-time
# dispatch loads (one list, kept in _kernels/_dispatch.py and read from there).
DISPATCHED = _dispatched_modules()
# Compiled once, for the baseline (the CPU probe runs here before dispatch).
SINGLE = ["_runtime"]

# Level -> extra compiler flags.  The baseline is the compiler's default
# target (x86-64 = SSE2; aarch64 = NEON).  GCC >= 11 and clang >= 12 know the
# x86-64-vN names.
X86_LEVELS = {"avx2": ["-march=x86-64-v3"], "avx512": ["-march=x86-64-v4"]}
IS_X86_64 = platform.machine().lower() in ("x86_64", "amd64")

BASE_FLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math"]
DIRECTIVES = {
    "language_level": 3,
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": False,
    "nonecheck": False,
}


def _env_list(name):
    return [item for item in os.environ.get(name, "").split(",") if item]


def _native():
    return os.environ.get("FASTRNN_NATIVE", "") not in ("", "0")


def _compiler_accepts(compiler, flags, source, link=True):
    """Compile (and link) ``source`` with ``flags``; True when that works."""
    tmp = tempfile.mkdtemp(prefix="fastrnn-check-")
    try:
        path = os.path.join(tmp, "check.c")
        with open(path, "w") as handle:
            handle.write(source)
        objects = compiler.compile([path], output_dir=tmp, extra_postargs=flags)
        if link:
            compiler.link_executable(
                objects, os.path.join(tmp, "check"), extra_postargs=flags
            )
        return True
    except Exception:
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


OPENMP_PROBE = """
#include <omp.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    return n > 0 ? 0 : 1;
}
"""
EMPTY_PROGRAM = "int main(void){return 0;}\n"


def _level_of(ext):
    """'baseline', 'avx2' or 'avx512' from the extension's module name."""
    parts = ext.name.split(".")
    return parts[2] if len(parts) == 4 else "baseline"


class BuildKernels(build_ext):
    """build_ext that decides on OpenMP, per-level CPU flags and stripping,
    and compiles the modules in parallel (pip gives no -j)."""

    def finalize_options(self):
        # Cythonize first: setuptools annotates the Extension objects it finalizes.
        jobs = int(self.parallel) if self.parallel else os.cpu_count() or 1
        self.distribution.ext_modules = _cythonize(self.distribution.ext_modules, jobs)
        super().finalize_options()
        if not self.parallel:
            self.parallel = os.cpu_count() or 1

    def build_extensions(self):
        if self.compiler.compiler_type == "msvc":
            common, link = ["/O2", "/openmp"], []
            level_flags = {}
        else:
            common, link = list(BASE_FLAGS), ["-s"]  # stripped: 1/6 the size
            if _compiler_accepts(self.compiler, ["-fopenmp"], OPENMP_PROBE):
                common = common + ["-fopenmp"]
                link = link + ["-fopenmp"]
            else:
                print("fastrnn: compiler has no OpenMP; building serial kernels",
                      file=sys.stderr)
            level_flags = {level: flags for level, flags in X86_LEVELS.items()
                           if _compiler_accepts(self.compiler, flags, EMPTY_PROGRAM)}
            if _native():
                common = common + ["-march=native"]   # one level, for this CPU only
        kept = []
        for ext in self.extensions:
            level = _level_of(ext)
            if level != "baseline" and level not in level_flags:
                print(f"fastrnn: the compiler cannot target {level}; those kernels "
                      f"are left out", file=sys.stderr)
                continue
            ext.extra_compile_args = common + level_flags.get(level, []) + ext.extra_compile_args
            ext.extra_link_args = link + ext.extra_link_args
            kept.append(ext)
        self.extensions = kept
        super().build_extensions()


def _cimports_numpy(name):
    """Whether the kernel module uses numpy's C API (``cimport numpy``)."""
    with open(f"src/fastrnn/_kernels/{name}.pyx", encoding="utf-8") as source:
        return any(line.strip().startswith("cimport numpy") for line in source)


def _extension(name, level):
    module = f"fastrnn._kernels.{name}" if level == "baseline" \
        else f"fastrnn._kernels.{level}.{name}"
    # numpy's headers and API macro only for the modules that cimport numpy
    # (today _recurrent's streaming code); the others use typed memoryviews.
    numpy_c_api = _cimports_numpy(name)
    return Extension(
        module,
        [f"src/fastrnn/_kernels/{name}.pyx"],
        include_dirs=([np.get_include()] if numpy_c_api else []) + ["src/fastrnn/_kernels"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")] if numpy_c_api else [],
        # The C headers the kernels include: an edit to one rebuilds the modules
        # (setuptools compares them with the built module; Cython does not see them).
        depends=sorted(glob.glob("src/fastrnn/_kernels/*.h")),
    )


def _extensions():
    """Every (module, level) as a .pyx Extension; cythonized by build_ext only
    (so building the sdist compiles nothing and ships the .pyx sources)."""
    names = _env_list("FASTRNN_KERNELS")
    levels = ["baseline"] + (list(X86_LEVELS) if IS_X86_64 else [])
    levels = [level for level in levels if level in (_env_list("FASTRNN_LEVELS") or levels)]
    if _native():
        levels = ["baseline"]
    return [_extension(name, level) for level in levels
            for name in DISPATCHED + (SINGLE if level == "baseline" else [])
            if not names or name in names]


def _cythonize(extensions, jobs):
    """C sources for the extensions; each level's C goes to its own directory
    because the same .pyx yields one C file per module name."""
    annotate = os.environ.get("FASTRNN_ANNOTATE", "") not in ("", "0")
    result = []
    for level in ("baseline", *X86_LEVELS):
        group = [ext for ext in extensions if _level_of(ext) == level]
        if group:
            result += cythonize(group, compiler_directives=DIRECTIVES, nthreads=jobs,
                                build_dir=None if level == "baseline" else f"build/cython/{level}",
                                annotate=annotate, quiet=True)
    return result


setup(
    ext_modules=_extensions(),
    cmdclass={"build_ext": BuildKernels},
)
