"""A demo corpus that every Python installation already has: the standard
library's docstrings.

``stdlib_docstrings()`` reads the ``.py`` files of the running interpreter's
standard library with :mod:`ast` (nothing is imported or executed) and
collects the docstrings of modules, classes and functions: several MB of
English prose mixed with code examples, enough for a character-level
language model to learn words, punctuation and doctest layout.  No download
and no data files: the text is the same on every machine with the same
Python version.

``unigram_entropy(text)`` is the baseline a language model must beat: the
bits per character of a model that knows only how often each character
occurs.
"""

import ast
import collections
import inspect
import math
import os
import sysconfig
import warnings

from ._validation import Integer, Optional

__all__ = ["stdlib_docstrings", "unigram_entropy", "stdlib_root", "SKIPPED_DIRS",
           "DEFAULT_MAX_CHARS"]

DEFAULT_MAX_CHARS = 4_000_000

# Directories that are not the standard library proper, or whose docstrings
# are noise for a language model:
#   site-packages, dist-packages: third-party packages installed into this Python;
#   test, tests, idle_test: test suites (test_* docstrings, fixtures, bad encodings);
#   idlelib, turtledemo: applications and demos shipped with CPython;
#   lib2to3: a deprecated tool, mostly grammar fixers and their tests;
#   encodings: ~100 generated codec modules with near-identical docstrings;
#   ensurepip, pydoc_data: bundled wheels and a generated help-topics table;
#   __pycache__, lib-dynload, config-*: compiled files and build configuration.
SKIPPED_DIRS = frozenset({
    "site-packages", "dist-packages", "test", "tests", "idle_test", "idlelib",
    "turtledemo", "lib2to3", "encodings", "ensurepip", "pydoc_data", "__pycache__",
    "lib-dynload", "__phello__",
})

_DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def stdlib_root():
    """The directory of the running interpreter's pure-Python standard library."""
    return sysconfig.get_paths()["stdlib"]


def _skip_dir(name):
    return name in SKIPPED_DIRS or name.startswith("config-") or name.startswith(".")


def _source_files(root):
    """Every ``.py`` file under ``root`` outside the skipped directories, in
    sorted path order (the same order on every run and machine)."""
    found = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if not _skip_dir(d)]
        found.extend(os.path.join(directory, f) for f in files if f.endswith(".py"))
    return sorted(found, key=lambda path: os.path.relpath(path, root).split(os.sep))


def _docstrings(source):
    """Cleaned docstrings of a module's source, in source order."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")        # SyntaxWarning on odd escapes in old code
        tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, _DOCUMENTED):
            text = ast.get_docstring(node, clean=False)
            if text:
                text = inspect.cleandoc(text).strip()
                if text:
                    yield getattr(node, "lineno", 0), text


def stdlib_docstrings(max_chars=DEFAULT_MAX_CHARS, root=None):
    """The standard library's docstrings as one text.

    Module, class and function docstrings of every ``.py`` file under the
    standard library directory (``sysconfig.get_paths()["stdlib"]``, or
    ``root``), files in sorted path order and docstrings in source order,
    each cleaned with :func:`inspect.cleandoc` (common indentation removed)
    and separated by a blank line.  Directories in :data:`SKIPPED_DIRS`
    (third-party packages, test suites, IDLE, generated codecs, ...) are not
    read; files that cannot be read or parsed are skipped.

    Args:
        max_chars: stop once the text reaches this many characters (the
            text is cut at the end of the last whole docstring that fits,
            or inside the first one if even that is longer); None for all.
        root: read another directory instead of this Python's stdlib.

    Returns:
        str (deterministic for a given Python installation).
    """
    max_chars = Optional(Integer(low=1))("max_chars", max_chars)
    root = stdlib_root() if root is None else os.fspath(root)
    if not os.path.isdir(root):
        raise ValueError(f"root must be a directory, got {root!r}")
    parts, size = [], 0
    for path in _source_files(root):
        try:
            with open(path, "rb") as handle:
                source = handle.read()
            found = sorted(_docstrings(source), key=lambda item: item[0])
        except (OSError, SyntaxError, ValueError, UnicodeDecodeError, RecursionError):
            continue
        for _, text in found:
            extra = len(text) + (2 if parts else 0)
            if max_chars is not None and size + extra > max_chars:
                if not parts:
                    parts.append(text[:max_chars])
                return "\n\n".join(parts)
            parts.append(text)
            size += extra
    return "\n\n".join(parts)


def unigram_entropy(text):
    """Entropy of the character frequencies of ``text`` in bits per character:
    what a model that ignores context would score (the bar to beat)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if not text:
        raise ValueError("text is empty: the entropy of no characters is undefined")
    total = len(text)
    counts = collections.Counter(text).values()
    return -sum(c / total * math.log2(c / total) for c in counts)
