"""Build the fastrnn Cython kernels.

OpenMP is used when the compiler accepts ``-fopenmp`` (checked by compiling a
tiny program); without it the kernels build and run serially and
``fastrnn.openmp_enabled()`` returns False.

By default the kernels are compiled for the building machine's CPU
(``-march=native``) so the gate nonlinearities vectorise with the widest
instructions available.  Set ``FASTRNN_PORTABLE=1`` when building a wheel
that will run on other machines.
"""

import os
import shutil
import sys
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

KERNELS = ["_recurrent", "_dense", "_runtime", "_embedding", "_losses", "_optim",
           "_jordan", "_rtrl", "_attention"]
# Development: FASTRNN_KERNELS=_losses,_optim rebuilds only those modules.
_selected = [name for name in os.environ.get("FASTRNN_KERNELS", "").split(",") if name]
if _selected:
    KERNELS = [name for name in KERNELS if name in _selected]
BASE_FLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math"]


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


class BuildKernels(build_ext):
    """build_ext that decides on OpenMP and CPU flags for this compiler."""

    def build_extensions(self):
        compile_flags = list(BASE_FLAGS)
        link_flags = []
        if self.compiler.compiler_type == "msvc":
            compile_flags = ["/O2", "/openmp"]
            link_flags = []
        else:
            if _compiler_accepts(self.compiler, ["-fopenmp"], OPENMP_PROBE):
                compile_flags.append("-fopenmp")
                link_flags.append("-fopenmp")
            else:
                print("fastrnn: compiler has no OpenMP; building serial kernels",
                      file=sys.stderr)
            portable = os.environ.get("FASTRNN_PORTABLE", "") not in ("", "0")
            if not portable and _compiler_accepts(
                self.compiler, ["-march=native"], "int main(void){return 0;}\n"
            ):
                compile_flags.append("-march=native")
        for ext in self.extensions:
            ext.extra_compile_args = compile_flags + ext.extra_compile_args
            ext.extra_link_args = link_flags + ext.extra_link_args
        super().build_extensions()


extensions = [
    Extension(
        f"fastrnn._kernels.{name}",
        [f"src/fastrnn/_kernels/{name}.pyx"],
        include_dirs=[np.get_include(), "src/fastrnn/_kernels"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
    for name in KERNELS
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "nonecheck": False,
        },
        annotate=os.environ.get("FASTRNN_ANNOTATE", "") not in ("", "0"),
    ),
    cmdclass={"build_ext": BuildKernels},
)
