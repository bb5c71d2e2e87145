"""Each lookup table (cells, optimizers, data formats) is defined once and the
CLI reads the library's: a cell or optimizer added to the task models is a
CLI choice without a second edit."""

import ast
import pathlib

import fastrnn as fr
from fastrnn.cli import build_parser, common
from fastrnn.tasks import base, stack

SRC = pathlib.Path(fr.__file__).resolve().parent


def _choices(parser, path, option):
    for name in path:
        parser = next(action for action in parser._actions
                      if getattr(action, "choices", None) and name in action.choices
                      ).choices[name]
    return tuple(next(action.choices for action in parser._actions
                      if option in action.option_strings))


def test_cli_choices_are_the_task_models_tables():
    parser = build_parser()
    assert _choices(parser, ["train", "classify"], "--cell") == tuple(stack.CELLS)
    assert _choices(parser, ["train", "lm"], "--optimizer") == tuple(base.OPTIMIZERS)
    assert "jordan" in stack.CELLS and "adagrad" in base.OPTIMIZERS
    formats = _choices(parser, ["train", "tag"], "--format")
    assert formats == ("auto",) + common.DATA_FORMATS["tag"]


def _assigned_names(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    yield target.id


def test_each_table_is_assigned_in_one_module():
    owners = {}
    for path in SRC.rglob("*.py"):
        for name in _assigned_names(path):
            if name in ("CELLS", "OPTIMIZERS", "DATA_FORMATS", "INPUTS", "POOLINGS"):
                owners.setdefault(name, []).append(path.relative_to(SRC).as_posix())
    # the benchmark's cells are its own table (with their gate counts), derived once
    assert sorted(owners["CELLS"]) == ["cli/bench.py", "tasks/stack.py"]
    for name in ("OPTIMIZERS", "DATA_FORMATS", "INPUTS", "POOLINGS"):
        assert len(owners[name]) == 1, (name, owners[name])
