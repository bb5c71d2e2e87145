"""No function in the package runs past ~60 lines (signature and docstring
included): past that, a named helper serves the reader better.

Python functions are measured with ``ast``; Cython kernels (when the sources
ship beside the modules) by indentation from their ``def`` / ``cdef`` /
``cpdef`` line to the last line of their body.
"""

import ast
import pathlib
import re

import pytest

import fastrnn

SRC = pathlib.Path(fastrnn.__file__).parent
LONGEST = 60
_CYTHON_DEF = re.compile(r"^(\s*)(?:cdef|cpdef|def)\s+(?!class\b|struct\b|enum\b|extern\b)[^=]*\(")


def python_function_lengths(text):
    """``[(lines, line number, name)]`` of every function in a module's text."""
    return [(node.end_lineno - node.lineno + 1, node.lineno, node.name)
            for node in ast.walk(ast.parse(text))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def cython_function_lengths(text):
    """The same for Cython: a body is every line indented deeper than its
    definition (continuation lines of the signature included)."""
    lines = text.splitlines()
    found = []
    for start, line in enumerate(lines):
        match = _CYTHON_DEF.match(line)
        if not match:
            continue
        indent, last = len(match.group(1)), start
        for index in range(start + 1, len(lines)):
            stripped = lines[index].strip()
            if not stripped:
                continue
            deeper = len(lines[index]) - len(lines[index].lstrip()) > indent
            if not deeper and not stripped.startswith(")"):
                break
            last = index
        found.append((last - start + 1, start + 1, line.strip()[:60]))
    return found


def _too_long(paths, measure):
    return [f"{path.relative_to(SRC)}:{line} {name} ({length} lines)"
            for path in paths for length, line, name in measure(path.read_text("utf-8"))
            if length > LONGEST]


def test_no_python_function_is_longer_than_the_limit():
    assert not _too_long(sorted(SRC.rglob("*.py")), python_function_lengths)


def test_no_kernel_function_is_longer_than_the_limit():
    sources = sorted(SRC.rglob("*.pyx")) + sorted(SRC.rglob("*.pxd"))
    if not sources:
        pytest.skip("the Cython sources are not installed beside the modules")
    assert not _too_long(sources, cython_function_lengths)


def test_the_measures_count_signature_docstring_and_body():
    python = "def f(a,\n      b):\n    '''doc'''\n    return a\n\nx = 1\n"
    assert python_function_lengths(python) == [(4, 1, "f")]
    cython = ("cdef inline int f(int a,\n                  int b) noexcept nogil:\n"
              "    cdef int c = a\n\n    return c + b\n\ncdef int g = 2\n"
              "cdef class K:\n    def m(self):\n        pass\n")
    assert cython_function_lengths(cython) == [
        (5, 1, "cdef inline int f(int a,"), (2, 9, "def m(self):")]
