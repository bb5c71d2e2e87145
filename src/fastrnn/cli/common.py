"""What the subcommands share: user errors, argument types, loading models,
calling the library.

A user mistake (arguments, files, data) is a :class:`CLIError`: ``main``
prints it as one line on stderr and exits with status 2.  Anything else that
escapes a command is a bug and keeps its traceback.
"""

import argparse
import contextlib
import math
import os
import sys
import warnings
import zipfile

from .._validation import Integer, Real


EXIT_USAGE = 2
EXIT_INTERRUPTED = 130          # the shell's status for a process stopped by Ctrl-C
TASKS = ("lm", "classify", "tag", "seq2seq", "regress")
# The data format choices of each task (besides "auto"); lm reads plain text only.
DATA_FORMATS = {"lm": (), "classify": ("tsv", "jsonl"), "tag": ("conll", "jsonl"),
                "seq2seq": ("tsv", "jsonl"), "regress": ("tsv", "jsonl")}


class CLIError(Exception):
    """A user mistake (arguments, files, data): one line on stderr, exit status 2."""


def traceback_wanted():
    """FASTRNN_TRACEBACK=1 shows the traceback of user errors too (for debugging)."""
    return bool(os.environ.get("FASTRNN_TRACEBACK"))


# -- argument parsing -------------------------------------------------------------------------

class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``fastrnn train: error: ... (see --help)``."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _argparse_type(rule, parse_text):
    """An argparse type: the text parsed by ``parse_text`` (int, float), then
    checked by ``rule`` (a fastrnn._validation rule); argparse names the option."""
    def parse(text):
        try:
            value = parse_text(text)
        except ValueError:
            value = None
        if value is None or not rule.value_ok(value):
            raise argparse.ArgumentTypeError(f"must be {rule.expected}, got {text!r}")
        return rule.convert(value)
    parse.__name__ = rule.expected
    return parse


def int_at_least(minimum):
    """An argparse type: an int >= ``minimum``."""
    return _argparse_type(Integer(low=minimum), int)


def float_in(low, high, low_open=False, high_open=False):
    """An argparse type: a number in the interval [low, high] (ends open as asked)."""
    return _argparse_type(Real(low, high, low_open, high_open), float)


POSITIVE = int_at_least(1)
NON_NEGATIVE = int_at_least(0)
POSITIVE_FLOAT = float_in(0, math.inf, low_open=True, high_open=True)
NON_NEGATIVE_FLOAT = float_in(0, math.inf, high_open=True)
PROBABILITY = float_in(0.0, 1.0, high_open=True)        # dropout, validation split


def add_threads_option(parser):
    parser.add_argument("--threads", type=POSITIVE, metavar="N",
                        help="threads for the kernels (default: all allowed CPUs, or "
                             "OMP_NUM_THREADS)")


def apply_threads(args):
    if getattr(args, "threads", None) is not None:
        from .. import set_num_threads
        set_num_threads(args.threads)


# -- files and models -------------------------------------------------------------------------

def check_writable(path, what="--output"):
    """Fail before any work when ``path`` cannot be written."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise CLIError(f"{what} {path}: directory {directory} does not exist")
    if os.path.isdir(path):
        raise CLIError(f"{what} {path}: is a directory, expected a file name")


def task_classes():
    """Task name (as in ``fastrnn train TASK``) -> model class."""
    from .. import tasks
    return {"lm": tasks.LanguageModel, "classify": tasks.SequenceClassifier,
            "tag": tasks.SequenceTagger, "seq2seq": tasks.Seq2Seq,
            "regress": tasks.SequenceRegressor}


def load_model(path):
    """(model, task) from a file written by ``fastrnn train`` or ``model.save``."""
    from ..tasks import load
    if not os.path.exists(path):
        raise CLIError(f"{path}: no such model file")
    if os.path.isdir(path):
        raise CLIError(f"{path}: is a directory, expected a model file")
    if not zipfile.is_zipfile(path):
        raise CLIError(f"{path}: not a fastrnn model (models are .npz files written by "
                       f"fastrnn train or model.save)")
    try:
        model = load(path)
    except (ValueError, KeyError) as exc:
        raise CLIError(f"{path}: cannot load the model: {exc}") from None
    except OSError as exc:
        raise CLIError(f"{path}: cannot read ({exc.strerror or exc})") from None
    for task, cls in task_classes().items():
        if isinstance(model, cls):
            return model, task
    raise CLIError(f"{path}: a {type(model).__name__}, which the command line does not "
                   f"support")


@contextlib.contextmanager
def library_call(context):
    """Runs library code for a command.

    A ValueError (the library's answer to bad data or options) becomes a
    CLIError ``"<context>: <message>"``.  Warnings are collected and, when
    the block succeeds, printed once each as ``fastrnn: warning: ...`` lines
    on stderr (Python's default format spans two lines and names our source).
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        except ValueError as exc:
            if traceback_wanted():
                raise
            raise CLIError(f"{context}: {exc}") from None
    shown = set()
    for warning in caught:
        if issubclass(warning.category, DeprecationWarning):
            continue
        line = str(warning.message).splitlines()[0]
        if line not in shown:
            shown.add(line)
            print(f"fastrnn: warning: {line}", file=sys.stderr)


def isatty(stream):
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def plural(count, noun, nouns=None):
    """``"1 epoch"``, ``"3 epochs"``, ``"1,200 examples"``."""
    return f"{count:,} {noun if count == 1 else nouns or noun + 's'}"
