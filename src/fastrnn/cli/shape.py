"""Telling a data file meant for another task apart, and labels a model never saw.

The readers accept what parses; a CoNLL file (``token<TAB>tag`` lines) also
parses as ``text<TAB>label`` pairs, so ``fastrnn train classify`` would train
on single tokens.  :func:`check_task_shape` looks at what was read and
refuses data whose shape is another task's, naming that task.
"""

import re
import sys

from .common import CLIError

_TAG = re.compile(r"^(O|[BIESLU]-\S+)$")
_NUMBERS = re.compile(r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?"
                      r"([\s,]+[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?)*\s*$")
MOSTLY = 0.9


def _share(items, test):
    items = list(items)
    return sum(1 for item in items if test(item)) / len(items) if items else 0.0


def _single_token(text):
    return len(str(text).split()) == 1


def check_task_shape(task, X, y, name, command="train"):
    """CLIError when ``(X, y)`` read for ``task`` has the shape of another task's
    data; ``command`` ("train" or "evaluate") shapes the suggestion."""
    guess = None
    if task in ("classify", "seq2seq"):
        if _share(X, _single_token) >= MOSTLY and \
                _share(y, lambda label: _TAG.match(str(label).strip())) >= 0.5:
            guess = ("tag", "CoNLL tagging data (one token and its tag per line)")
        elif task == "classify" and _share(X, lambda text: _NUMBERS.match(text)) >= MOSTLY \
                and _share(y, lambda label: _NUMBERS.match(str(label))) >= MOSTLY:
            guess = ("regress", "regression data (numbers<TAB>target)")
    elif task == "tag":
        tokens = [token for sentence in X for token in sentence]
        if _share(tokens, lambda token: not _single_token(token)) >= 0.5:
            guess = ("classify", "one text and its label per line (text<TAB>label), not "
                                 "one token per line")
    if guess is not None:
        hint = (f"did you mean `fastrnn train {guess[0]} {name}`?" if command == "train"
                else f"evaluate it with a {guess[0]} model")
        raise CLIError(f"{name} looks like {guess[1]}, not {task} data: {hint}")


def warn_unseen(labels, known, name, what="labels"):
    """A stderr warning when evaluation ``labels`` hold values the model never saw
    (they can never be predicted, so they count as wrong)."""
    labels = [str(label) for label in labels]
    known = {str(label) for label in known}
    unseen = [label for label in labels if label not in known]
    if not unseen:
        return
    distinct = list(dict.fromkeys(unseen))
    shown = ", ".join(map(repr, distinct[:5])) + (", ..." if len(distinct) > 5 else "")
    share = "all" if len(unseen) == len(labels) else f"{len(unseen)} of {len(labels)}"
    print(f"fastrnn: warning: {name}: {share} {what} are ones the model never saw "
          f"({shown}); they count as wrong. The model knows: "
          f"{', '.join(map(repr, sorted(known)[:10]))}", file=sys.stderr)
