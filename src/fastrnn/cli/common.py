"""Constants, user errors and argument types shared by the subcommands."""

import argparse
import math


EXIT_USAGE = 2
TASKS = ("lm", "classify", "tag", "seq2seq", "regress")
CELLS = ("lstm", "gru", "rnn")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "adagrad")
DEMO_PROMPT = "Return the "
# Settings of ``fastrnn demo``: the defaults finish in about two minutes on two
# cores (the time budget stops training if the machine is slower); --quick
# takes a couple of seconds.
DEMO_DEFAULTS = dict(max_chars=2_000_000, epochs=3, hidden_size=384, minutes=1.75,
                     batch_size=32, bptt=64, embedding_dim=32, lr=3e-3, sample_length=200)
DEMO_QUICK = dict(max_chars=60_000, epochs=3, hidden_size=64, minutes=0.5,
                  batch_size=16, bptt=32, embedding_dim=16, lr=3e-3, sample_length=60)


class CLIError(Exception):
    """A user mistake (arguments, files, data): one line on stderr, exit status 2."""

# -- argument parsing -------------------------------------------------------------------------

class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``fastrnn train: error: ... (see --help)``."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def int_at_least(minimum):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an int >= {minimum}, got {text!r}")
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an int >= {minimum}, got {text!r}")
        return value
    parse.__name__ = f"int>={minimum}"
    return parse


def float_in(low, high, low_open=False, high_open=False):
    interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number in {interval}, got {text!r}")
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        if not (above and below):          # also refuses NaN
            raise argparse.ArgumentTypeError(f"must be a number in {interval}, got {text!r}")
        return value
    parse.__name__ = f"number in {interval}"
    return parse


POSITIVE = int_at_least(1)
NON_NEGATIVE = int_at_least(0)
POSITIVE_FLOAT = float_in(0, math.inf, low_open=True, high_open=True)
PROBABILITY = float_in(0.0, 1.0, high_open=True)        # dropout, validation split
