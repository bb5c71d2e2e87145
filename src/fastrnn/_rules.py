"""The vocabulary of argument checks: each rule is written once, here.

A rule describes what an argument must be (``Integer(low=1)`` is "an int >= 1")
and checks it::

    batch_size = Integer(low=1)("batch_size", batch_size)
    dropout = Real(0, 1, high_open=True)("dropout", dropout)

Every failure reads ``[owner: ]name must be <expected>, got <arrived>``: what
arrived is its repr ("got 0", "got 'x'"; a Module list's wrong element by its
type's name).  A value of the wrong type raises
:class:`ArgumentTypeError` (a TypeError that is also a ValueError: fastrnn
raised either for these before the rules were unified); a value of the right
type outside the rule raises ValueError.

The predicates ``is_int`` / ``is_real`` / ``is_bool`` are the one definition of
those kinds: Python and numpy scalars count, bools are never numbers.

This module imports nothing from fastrnn, so every module may use it
(``_validation`` re-exports it for the layers above).
"""

import math
import numbers
from collections.abc import Mapping

import numpy as np

__all__ = ["ArgumentTypeError", "Rule", "Integer", "Real", "Boolean", "Options",
           "Optional", "Modules", "is_int", "is_real", "is_bool", "describe",
           "check_seed", "resolve_seed", "layer_seeds", "check_callable", "SEED",
           "FRACTION"]


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type.  Also a ValueError, as some of these were
    before the checks were unified (``except ValueError`` keeps working)."""


def is_bool(value):
    """True for Python and numpy bools."""
    return isinstance(value, (bool, np.bool_))


def is_int(value):
    """An integer (Python or numpy), not a bool."""
    return isinstance(value, numbers.Integral) and not is_bool(value)


def is_real(value):
    """A real number (Python or numpy int or float), not a bool."""
    return isinstance(value, numbers.Real) and not is_bool(value)


def describe(value):
    """What arrived, for messages: its repr, cut at 60 characters.  The repr
    tells the type apart where it matters ('3' from 3, 0.0 from 0, None,
    np.True_ from True)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _fail(error, owner, name, expected, arrived):
    prefix = f"{owner}: " if owner else ""
    raise error(f"{prefix}{name} must be {expected}, got {arrived}")


class Rule:
    """A check with a description.  Subclasses set ``expected`` and define
    ``type_ok`` (the kind of value), ``value_ok`` (its range) and ``convert``."""

    expected = "valid"

    def type_ok(self, value):
        return True

    def value_ok(self, value):
        return True

    def convert(self, value):
        return value

    def __call__(self, name, value, owner=None):
        """``value`` converted (an int, a float, a bool...), or an error naming
        ``name`` (and ``owner``, the class or function that was given it)."""
        if not self.type_ok(value):
            _fail(ArgumentTypeError, owner, name, self.expected, describe(value))
        if not self.value_ok(value):
            _fail(ValueError, owner, name, self.expected, describe(value))
        return self.convert(value)

    def __repr__(self):
        return f"<{type(self).__name__}: {self.expected}>"


def _bound_text(value):
    return str(value)


class Integer(Rule):
    """An int (numpy integers too, never a bool) in ``[low, high]``; either
    bound may be None (unbounded)."""

    def __init__(self, low=None, high=None):
        self.low, self.high = low, high
        if low is not None and high is not None:
            self.expected = f"an int in [{low}, {high}]"
        elif low is not None:
            self.expected = f"an int >= {low}"
        elif high is not None:
            self.expected = f"an int <= {high}"
        else:
            self.expected = "an int"

    def type_ok(self, value):
        return is_int(value)

    def value_ok(self, value):
        return (self.low is None or value >= self.low) and \
            (self.high is None or value <= self.high)

    def convert(self, value):
        return int(value)


class Real(Rule):
    """A number (ints and numpy scalars too, never a bool, never NaN) between
    ``low`` and ``high`` (None: unbounded; ``*_open``: the bound excluded).
    ``finite``: infinities refused too (the default)."""

    def __init__(self, low=None, high=None, low_open=False, high_open=False, finite=True):
        self.low, self.high = low, high
        self.low_open, self.high_open, self.finite = low_open, high_open, finite
        number = "a finite number" if finite and (low is None or high is None) \
            else "a number"
        if low is not None and high is not None:
            self.expected = (f"a number in {'(' if low_open else '['}{_bound_text(low)}, "
                             f"{_bound_text(high)}{')' if high_open else ']'}")
        elif low is not None:
            self.expected = f"{number} {'>' if low_open else '>='} {_bound_text(low)}"
        elif high is not None:
            self.expected = f"{number} {'<' if high_open else '<='} {_bound_text(high)}"
        else:
            self.expected = number

    def type_ok(self, value):
        return is_real(value)

    def value_ok(self, value):
        value = float(value)
        if math.isnan(value) or (self.finite and math.isinf(value)):
            return False
        if self.low is not None and not (value > self.low if self.low_open
                                         else value >= self.low):
            return False
        return self.high is None or (value < self.high if self.high_open
                                     else value <= self.high)

    def convert(self, value):
        return float(value)


class Boolean(Rule):
    """True or False (numpy bools too); a truthy string like "no" is refused."""

    expected = "True or False"

    def type_ok(self, value):
        return is_bool(value)

    def convert(self, value):
        return bool(value)


class Options(Rule):
    """One of a fixed set of values (usually strings), compared with ``==``."""

    def __init__(self, choices):
        self.choices = tuple(choices)
        self.expected = f"one of {', '.join(map(repr, self.choices))}"

    def value_ok(self, value):
        # an array compares elementwise, a list is unhashable, True == 1:
        # none of them is a choice unless listed as such
        if is_bool(value) and not any(is_bool(c) for c in self.choices):
            return False
        return isinstance(value, (str, bytes, numbers.Number, type(None))) \
            and value in self.choices


class Optional(Rule):
    """None (kept as None) or what ``rule`` accepts."""

    def __init__(self, rule):
        self.rule = rule
        self.expected = f"None or {rule.expected}"

    def type_ok(self, value):
        return value is None or self.rule.type_ok(value)

    def value_ok(self, value):
        return value is None or self.rule.value_ok(value)

    def convert(self, value):
        return None if value is None else self.rule.convert(value)


SEED = Optional(Integer(low=0))
# A probability that must leave something: dropout rates, validation splits,
# label smoothing ("a number in [0, 1)").
FRACTION = Real(0, 1, high_open=True)


def check_seed(seed, name="seed", owner=None):
    """A seed: None (fresh entropy when used) or an int >= 0, what
    ``np.random.SeedSequence`` takes.  Returns None or an int."""
    return SEED(name, seed, owner)


def resolve_seed(seed, name="seed", owner=None):
    """:func:`check_seed`, with None replaced by a fresh random int: for
    objects that must reuse one seed (data order per epoch, a fitted model's
    layers) and so store it."""
    seed = check_seed(seed, name, owner)
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0])
    return seed


def layer_seeds(seed, count, name="seed"):
    """``count`` independent int seeds from one user seed (None: fresh
    entropy), one per layer a model builds."""
    children = np.random.SeedSequence(check_seed(seed, name)).spawn(count)
    return [int(child.generate_state(1)[0]) for child in children]


def check_callable(name, value, owner=None, none_ok=False):
    """``value`` if it is callable (or None, when ``none_ok``)."""
    if value is None and none_ok or callable(value):
        return value
    expected = "None or a callable" if none_ok else "callable"
    _fail(ArgumentTypeError, owner, name, expected, describe(value))


def _is_module(obj):
    """A fastrnn Module by duck type: ``named_parameters()`` and ``grads``."""
    return callable(getattr(obj, "named_parameters", None)) and \
        isinstance(getattr(obj, "grads", None), Mapping)


class Modules:
    """The one rule for "the modules to train or update": a Module, a
    list/tuple of Modules, or an object with a ``modules()`` method (a task
    model, whose ``modules()`` returns such a list).  ``resolve`` returns a
    non-empty list of distinct modules, in order."""

    expected = "a Module, a list/tuple of Modules or an object with a modules() method"

    def resolve(self, name, value, owner=None):
        given = value
        source = name
        if not _is_module(value) and callable(getattr(value, "modules", None)):
            value = value.modules()
            source = "model.modules()"
        if _is_module(value):
            return [value]
        if not isinstance(value, (list, tuple)):
            if value is given:
                _fail(ArgumentTypeError, owner, name, self.expected, type(given).__name__)
            _fail(ArgumentTypeError, owner, source, "a list/tuple of Modules",
                  type(value).__name__)
        modules = list(value)
        if not modules:
            prefix = f"{owner}: " if owner else ""
            raise ValueError(f"{prefix}{source} must not be empty, got no modules")
        seen = set()
        for index, module in enumerate(modules):
            if not _is_module(module):
                _fail(ArgumentTypeError, owner, f"{source}[{index}]",
                      "a Module (with named_parameters() and grads)",
                      type(module).__name__)
            if id(module) in seen:
                prefix = f"{owner}: " if owner else ""
                raise ValueError(f"{prefix}{source}[{index}] ({type(module).__name__}) "
                                 f"appears more than once; its parameters would be "
                                 f"updated twice")
            seen.add(id(module))
        return modules
