"""The package's import structure, read from the sources with ``ast``.

Every ``import`` statement counts, those inside functions included: an
import moved into a function hides a cycle from Python but not from the
reader.  The rules:

* no import cycle between the modules of ``src/fastrnn`` (a package's
  ``__init__`` counts as a module, so ``from . import name`` inside a
  package points at its ``__init__``);
* no module below the top imports the package root (``import fastrnn``,
  ``from .. import name``): the root gathers the public API and imports
  nearly everything, so an arrow back to it is a cycle in waiting.  The
  version lives in ``fastrnn._version`` for the modules that record it.
  The command line (``fastrnn.cli``) is an application on top of the
  library and may use it as users do.
"""

import ast
import os

import pytest

import fastrnn

SRC = os.path.dirname(os.path.abspath(fastrnn.__file__))
ROOT = "fastrnn"
# Applications on top of the library: they may import the root like a user.
ABOVE_THE_ROOT = ("fastrnn.cli", "fastrnn.__main__")


def module_files(package_dir=SRC, root=ROOT):
    """``{module name: path}`` of every .py file under ``package_dir``."""
    base = os.path.dirname(package_dir)
    modules = {}
    for folder, _, files in os.walk(package_dir):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                module = os.path.relpath(path, base)[:-3].replace(os.sep, ".")
                modules[module[:-len(".__init__")] if module.endswith(".__init__")
                        else module] = path
    return {name: path for name, path in modules.items()
            if name == root or name.startswith(root + ".")}


def _targets(module, is_package, node, modules):
    """The modules of the package one import statement reaches."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        if node.level:
            parts = module.split(".")
            keep = len(parts) - node.level + (1 if is_package else 0)
            prefix = ".".join(parts[:keep] + ([node.module] if node.module else []))
        else:
            prefix = node.module
        # ``from package import name``: the submodule if ``name`` is one, else the package.
        names = [f"{prefix}.{alias.name}" if f"{prefix}.{alias.name}" in modules else prefix
                 for alias in node.names]
    found = set()
    for name in names:
        while name not in modules and "." in name:
            name = name.rpartition(".")[0]
        if name in modules and name != module:
            found.add(name)
    return found


def import_graph(modules):
    """``{module: {imported module: [line numbers]}}``, every import statement
    (top level or inside a function) included."""
    graph = {}
    for module, path in modules.items():
        with open(path, encoding="utf-8") as file:
            tree = ast.parse(file.read(), path)
        edges = graph.setdefault(module, {})
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _targets(module, path.endswith("__init__.py"), node, modules):
                    edges.setdefault(target, []).append(node.lineno)
    return graph


def cycles(graph):
    """The strongly connected components of more than one module (Tarjan),
    each sorted, plus modules that import themselves."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(start):
        # iterative Tarjan: (node, iterator over its successors)
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        work = [(start, iter(graph.get(start, ())))]
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(graph.get(successor, ()))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _describe(component, graph):
    members = set(component)
    return "; ".join(f"{a} -> {b} (line {', '.join(map(str, graph[a][b]))})"
                     for a in component for b in sorted(graph[a]) if b in members)


def test_the_package_has_no_import_cycle():
    graph = import_graph(module_files())
    assert len(graph) > 40          # the walk found the package
    found = cycles(graph)
    assert not found, "import cycles: " + " | ".join(_describe(c, graph) for c in found)


def test_no_module_below_the_top_imports_the_package_root():
    graph = import_graph(module_files())
    offenders = {module: edges[ROOT] for module, edges in graph.items()
                 if ROOT in edges and module != ROOT and not module.startswith(ABOVE_THE_ROOT)}
    assert not offenders, f"modules importing the package root {ROOT!r}: {offenders}"


def _write_package(tmp_path, files):
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return module_files(str(tmp_path / "pkg"), "pkg")


@pytest.mark.parametrize("files,expected", [
    # a cycle hidden by an import inside a function
    ({"pkg/__init__.py": "", "pkg/a.py": "from .b import f\n",
      "pkg/b.py": "def f():\n    from .a import g\n"}, [["pkg.a", "pkg.b"]]),
    # a submodule importing a name from its own package's __init__
    ({"pkg/__init__.py": "from .sub import layer\n", "pkg/sub/__init__.py": "",
      "pkg/sub/layer.py": "from .. import version\n"}, [["pkg", "pkg.sub.layer"]]),
    # absolute imports, three modules round
    ({"pkg/__init__.py": "", "pkg/a.py": "import pkg.b\n", "pkg/b.py": "from pkg import c\n",
      "pkg/c.py": "from pkg.a import x\n"}, [["pkg.a", "pkg.b", "pkg.c"]]),
    # one direction only: no cycle
    ({"pkg/__init__.py": "from .a import x\n", "pkg/a.py": "from .b import y\n",
      "pkg/b.py": "import os\n"}, []),
])
def test_the_cycle_finder_sees_hidden_cycles(tmp_path, files, expected):
    assert cycles(import_graph(_write_package(tmp_path, files))) == expected
