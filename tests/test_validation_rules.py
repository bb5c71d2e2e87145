"""The vocabulary of argument checks (fastrnn._rules, re-exported by
fastrnn._validation): each rule accepts what it says, refuses the rest with
one message format naming the argument, and is the only place such a rule
is written (a scan of src/ proves no hand-written bool guard came back)."""

import ast
import math
import pathlib
import re

import numpy as np
import pytest

import fastrnn as fr
from fastrnn import _validation as v
from fastrnn._rules import ArgumentTypeError

SRC = pathlib.Path(fr.__file__).resolve().parent


# -- the message format -------------------------------------------------------------------

def test_message_names_argument_expectation_and_arrival():
    with pytest.raises(ValueError, match=r"^batch_size must be an int >= 1, got 0$"):
        v.Integer(low=1)("batch_size", 0)
    with pytest.raises(ValueError, match=r"^Adam: lr must be a finite number >= 0, got -1$"):
        v.Real(low=0)("lr", -1, "Adam")


def test_wrong_type_is_a_type_error_that_is_also_a_value_error():
    with pytest.raises(TypeError, match=r"^epochs must be an int >= 1, got 'x'$") as info:
        v.Integer(low=1)("epochs", "x")
    assert isinstance(info.value, ValueError) and isinstance(info.value, ArgumentTypeError)
    with pytest.raises(ValueError) as info:          # a range error is only a ValueError
        v.Integer(low=1)("epochs", 0)
    assert not isinstance(info.value, TypeError)


def test_arrival_is_shortened_and_shown_as_its_repr():
    assert v.describe(np.float32(0.5)) == repr(np.float32(0.5))
    assert v.describe("3") == "'3'" and v.describe(3) == "3"
    long = v.describe("x" * 100)
    assert len(long) == 60 and long.endswith("...")


# -- integers -----------------------------------------------------------------------------

@pytest.mark.parametrize("value", [1, 7, np.int32(2), np.int64(10**12), np.uint8(3)])
def test_integer_accepts_python_and_numpy_ints(value):
    result = v.Integer(low=1)("n", value)
    assert result == int(value) and type(result) is int


@pytest.mark.parametrize("value,error", [
    (True, TypeError), (np.bool_(True), TypeError), (1.0, TypeError), ("1", TypeError),
    (None, TypeError), (0, ValueError), (-3, ValueError)])
def test_integer_refuses_bools_floats_and_out_of_range(value, error):
    with pytest.raises(error, match=r"^n must be an int >= 1, got "):
        v.Integer(low=1)("n", value)


def test_integer_descriptions():
    assert v.Integer().expected == "an int"
    assert v.Integer(low=0).expected == "an int >= 0"
    assert v.Integer(high=5).expected == "an int <= 5"
    assert v.Integer(0, 5).expected == "an int in [0, 5]"
    assert v.Integer(0, 5)("k", 5) == 5
    with pytest.raises(ValueError, match=r"k must be an int in \[0, 5\], got 6"):
        v.Integer(0, 5)("k", 6)


# -- real numbers -------------------------------------------------------------------------

@pytest.mark.parametrize("value", [0, 0.0, 0.5, np.float32(0.25), np.float64(0.9), np.int8(0)])
def test_unit_interval_accepts_numbers_and_numpy_scalars(value):
    result = v.Real(0, 1, high_open=True)("dropout", value)
    assert result == float(value) and type(result) is float


@pytest.mark.parametrize("value,error", [
    (1.0, ValueError), (1, ValueError), (-0.1, ValueError), (math.nan, ValueError),
    (math.inf, ValueError), (True, TypeError), (np.bool_(False), TypeError),
    ("0.5", TypeError), (None, TypeError), ([0.5], TypeError)])
def test_unit_interval_refuses(value, error):
    with pytest.raises(error, match=r"^dropout must be a number in \[0, 1\), got "):
        v.Real(0, 1, high_open=True)("dropout", value)


def test_real_bounds_open_closed_and_infinite():
    assert v.Real(low=0, low_open=True).expected == "a finite number > 0"
    assert v.Real(low=0, finite=False).expected == "a number >= 0"
    assert v.Real(low=0, finite=False)("max_norm", math.inf) == math.inf
    assert v.Real(0.0, math.inf).expected == "a number in [0.0, inf]"
    with pytest.raises(ValueError, match="got nan"):
        v.Real(low=0, finite=False)("x", math.nan)       # NaN is never a number here
    with pytest.raises(ValueError, match=r"must be a finite number > 0, got 0"):
        v.Real(low=0, low_open=True)("eps", 0)
    assert v.Real(0, 1, low_open=True)("top_p", 1) == 1.0
    with pytest.raises(ValueError, match=r"top_p must be a number in \(0, 1\], got 0"):
        v.Real(0, 1, low_open=True)("top_p", 0)


# -- bools, options, optional -----------------------------------------------------------

@pytest.mark.parametrize("value,expected", [(True, True), (False, False),
                                            (np.bool_(True), True)])
def test_boolean_accepts_python_and_numpy_bools(value, expected):
    result = v.Boolean()("shuffle", value)
    assert result is expected


@pytest.mark.parametrize("value", [1, 0, "no", "False", None, np.array(True), 1.0])
def test_boolean_refuses_truthy_lookalikes(value):
    with pytest.raises(TypeError, match=r"^shuffle must be True or False, got "):
        v.Boolean()("shuffle", value)


def test_options():
    rule = v.Options(("mean", "sum", "none"))
    assert rule("reduction", "sum") == "sum"
    with pytest.raises(ValueError, match=r"^reduction must be one of 'mean', 'sum', 'none', "
                                         r"got 'avg'$"):
        rule("reduction", "avg")
    for bad in (np.array(["mean"]), ["mean"], None):
        with pytest.raises(ValueError, match="reduction must be one of"):
            rule("reduction", bad)
    verbose = v.Options((0, 1, 2))
    assert verbose("verbose", np.int64(2)) == 2
    with pytest.raises(ValueError, match="verbose must be one of 0, 1, 2, got True"):
        verbose("verbose", True)                 # True == 1, but a bool is not a level


def test_optional_keeps_none_and_prefixes_the_description():
    rule = v.Optional(v.Integer(low=1))
    assert rule("max_vocab", None) is None and rule("max_vocab", 3) == 3
    with pytest.raises(ValueError, match=r"^max_vocab must be None or an int >= 1, got -1$"):
        rule("max_vocab", -1)


# -- seeds --------------------------------------------------------------------------------

def test_seed_one_treatment_of_none():
    assert v.check_seed(None) is None
    assert v.check_seed(np.int64(5)) == 5
    fresh = {v.resolve_seed(None) for _ in range(4)}
    assert all(isinstance(s, int) and s >= 0 for s in fresh) and len(fresh) > 1
    assert v.resolve_seed(7) == 7
    for bad, error in (("x", TypeError), (-1, ValueError), (True, TypeError), (1.5, TypeError)):
        with pytest.raises(error, match=r"^seed must be None or an int >= 0, got "):
            v.resolve_seed(bad)
    assert v.layer_seeds(3, 2) == v.layer_seeds(3, 2)
    assert len(set(v.layer_seeds(3, 3))) == 3


def test_every_seeded_entry_point_uses_the_one_seed_rule():
    message = r"seed must be None or an int >= 0, got -1"
    with pytest.raises(ValueError, match=message):
        fr.data.BatchLoader([[1, 2]], [0], seed=-1)
    with pytest.raises(ValueError, match=message):
        fr.SequenceClassifier(seed=-1, epochs=1).fit(["ab", "ba"], [0, 1])
    loader = fr.data.BatchLoader([[1, 2], [3]], [0, 1], seed=None)
    assert isinstance(loader.seed, int)          # None became one stored seed


# -- modules ------------------------------------------------------------------------------

def test_modules_rule_is_shared_by_optimizers_and_trainer():
    layer = fr.Linear(2, 2)

    class Model:
        def modules(self):
            return [layer, "x"]

        def train_batch(self, batch):
            return {"loss": 0.0}, 1.0

        def evaluate_batch(self, batch):
            return {"loss": 0.0}, 1.0

    with pytest.raises(TypeError, match=r"Adam: model.modules\(\)\[1\] must be a Module"):
        fr.optim.Adam(Model())
    with pytest.raises(TypeError, match=r"^model.modules\(\)\[1\] must be a Module"):
        fr.Trainer(Model(), fr.optim.Adam([layer]))
    assert v.Modules().resolve("modules", layer) == [layer]
    assert v.Modules().resolve("modules", (layer,)) == [layer]
    with pytest.raises(ValueError, match=r"modules\[1\] \(Linear\) appears more than once"):
        v.Modules().resolve("modules", [layer, layer])
    with pytest.raises(ValueError, match="modules must not be empty"):
        v.Modules().resolve("modules", [])


# -- public entry points speak the same language ------------------------------------------

@pytest.mark.parametrize("call,message", [
    (lambda: fr.LSTM(3, 4, dropout=1.0), r"dropout must be a number in \[0, 1\), got 1.0"),
    (lambda: fr.Dropout(p=True), r"must be a number in \[0, 1\), got True"),
    (lambda: fr.CrossEntropyLoss(label_smoothing=1), r"label_smoothing must be a number in "
                                                      r"\[0, 1\), got 1"),
    (lambda: fr.GRU(3, 4, reset_after=1), r"reset_after must be True or False, got 1"),
    (lambda: fr.LSTM(3, 4, peepholes="yes"), r"peepholes must be True or False, got 'yes'"),
    (lambda: fr.Linear(0, 2), r"in_features must be an int >= 1, got 0"),
    (lambda: fr.RNN(np.int64(3), 4, num_layers=True), r"num_layers must be an int >= 1, "
                                                        r"got True"),
    (lambda: fr.text.one_hot([0], 2.0), r"num_classes must be an int >= 1, got 2.0"),
    (lambda: fr.set_num_threads(0), r"set_num_threads: n must be an int >= 1, got 0"),
    (lambda: fr.set_load_limits(max_bytes=True), r"max_bytes must be an int >= 1, got True"),
    (lambda: fr.optim.StepLR(fr.optim.SGD(fr.Linear(1, 1)), 0),
     r"StepLR: step_size must be an int >= 1, got 0"),
    (lambda: fr.EarlyStopping(patience=-1), r"patience must be an int >= 0, got -1"),
    (lambda: fr.CSVLogger("x.csv", append="no"), r"CSVLogger: append must be True or False"),
    (lambda: fr.metrics.entity_scores([["O"]], [["O"]], zero_division=2),
     r"zero_division must be a number in \[0, 1\], got 2"),
])
def test_entry_points_use_the_vocabulary(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


def test_numpy_scalars_accepted_at_entry_points():
    layer = fr.LSTM(np.int32(3), np.int64(4), num_layers=np.int16(2), dropout=np.float32(0.25))
    assert (layer.input_size, layer.hidden_size, layer.num_layers) == (3, 4, 2)
    assert type(layer.hidden_size) is int and layer.dropout == 0.25
    assert fr.Dropout(np.float64(0.5)).p == 0.5


def test_cli_number_types_use_the_rules():
    import argparse
    from fastrnn.cli.common import POSITIVE, PROBABILITY
    assert POSITIVE("3") == 3 and PROBABILITY("0.5") == 0.5
    with pytest.raises(argparse.ArgumentTypeError, match=r"must be an int >= 1, got '0'"):
        POSITIVE("0")
    with pytest.raises(argparse.ArgumentTypeError,
                       match=r"must be a number in \[0.0, 1.0\), got 'nan'"):
        PROBABILITY("nan")


# -- no rule written twice: a scan of src/ ---------------------------------------------------

_RULES_HOME = {"_rules.py"}


def _bool_guards(path):
    """Lines of ``isinstance(x, bool)`` / ``isinstance(x, (..., np.bool_))`` calls."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id == "isinstance" and len(node.args) == 2:
            kinds = node.args[1]
            names = kinds.elts if isinstance(kinds, ast.Tuple) else [kinds]
            for name in names:
                if (isinstance(name, ast.Name) and name.id == "bool") or \
                        (isinstance(name, ast.Attribute) and name.attr == "bool_"):
                    lines.append(node.lineno)
    return lines


def _sources():
    for path in sorted(SRC.rglob("*.py")):
        yield path.relative_to(SRC).as_posix(), path


def test_no_hand_written_bool_guard_outside_the_vocabulary():
    found = {name: _bool_guards(path) for name, path in _sources()
             if name not in _RULES_HOME}
    found = {name: lines for name, lines in found.items() if lines}
    assert not found, (f"hand-written bool guards (use fastrnn._validation's Integer, Real, "
                       f"Boolean or is_int / is_real / is_bool instead): {found}")


def test_scan_sees_guards_where_they_are():
    assert _bool_guards(SRC / "_rules.py")            # the one home of the rule


def test_no_second_copy_of_a_range_or_choice_message():
    """Messages like "must be a number in [", "must be an int >=", "must be True
    or False" and "must be one of" are produced by the rules only."""
    pattern = re.compile(r"must be (a (finite )?number (in [\[(]|[<>]=? )|an int (>=|in \[)"
                         r"|True or False|a positive int|a non-negative int)")
    copies = {}
    for name, path in _sources():
        if name in _RULES_HOME:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line) and not line.lstrip().startswith("#"):
                copies.setdefault(name, []).append(number)
    assert not copies, f"argument-check messages written outside the rules: {copies}"
