"""The ``fastrnn`` command line: demo, train, generate, predict, evaluate, bench, info.

    fastrnn demo                                   # char-level LM on the stdlib's docstrings
    fastrnn train classify reviews.tsv -o clf.npz  # text<TAB>label lines
    fastrnn predict clf.npz new_reviews.txt        # one label per line
    fastrnn evaluate clf.npz test.tsv
    fastrnn generate lm.npz --prompt "Return the" --temperature 0.8
    fastrnn bench --quick
    fastrnn info

Every subcommand has ``--help`` (``fastrnn train TASK --help`` documents the
data format of each task).  Mistakes in the arguments or in data files
print one line on stderr and exit with status 2; a traceback means a bug.
Set FASTRNN_TRACEBACK=1 to see the traceback of a user error too.
"""

import argparse
import contextlib
import importlib
import inspect
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
import zipfile

import numpy as np

from .training import Callback

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

class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``fastrnn train: error: ... (see --help)``."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _int_at_least(minimum):
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


def _float_in(low, high, low_open=False, high_open=False):
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


POSITIVE = _int_at_least(1)
NON_NEGATIVE = _int_at_least(0)
POSITIVE_FLOAT = _float_in(0, math.inf, low_open=True, high_open=True)
PROBABILITY = _float_in(0.0, 1.0, high_open=True)        # dropout, validation split


# -- reading data files -----------------------------------------------------------------------

def _open_text(path):
    """The text of ``path`` ('-' is stdin), or a CLIError saying why not."""
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        raise CLIError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CLIError(f"{path}: is a directory, expected a file") from None
    except PermissionError:
        raise CLIError(f"{path}: permission denied") from None
    except UnicodeDecodeError as exc:
        raise CLIError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise CLIError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _numbered_lines(text):
    """(line number, line) for every line, newline stripped (1-based numbers)."""
    for number, line in enumerate(text.splitlines(), start=1):
        yield number, line.rstrip("\r")


def _detect_format(path, text, requested, plain):
    """"jsonl" or ``plain`` (the task's line format).  ``auto``: by extension
    (.jsonl/.ndjson/.json), else JSONL when the first non-blank line is a
    JSON object, else ``plain``."""
    if requested != "auto":
        return requested
    extension = os.path.splitext(path)[1].lower()
    if extension in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if extension in (".tsv", ".conll", ".txt", ".csv"):
        return plain
    for _, line in _numbered_lines(text):
        if line.strip():
            if line.lstrip().startswith("{"):
                try:
                    if isinstance(json.loads(line), dict):
                        return "jsonl"
                except ValueError:
                    pass
            break
    return plain


def _jsonl_records(path, text, keys):
    """(line number, record) for each non-blank line; each record must be a JSON
    object with ``keys``."""
    for number, line in _numbered_lines(text):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise CLIError(f"{path}, line {number}: not valid JSON ({exc})") from None
        if not isinstance(record, dict):
            raise CLIError(f"{path}, line {number}: expected a JSON object "
                           f"{{{', '.join(repr(k) + ': ...' for k in keys)}}}, got "
                           f"{type(record).__name__}")
        missing = [key for key in keys if key not in record]
        if missing:
            raise CLIError(f"{path}, line {number}: missing key {missing[0]!r} (each line "
                           f"needs {', '.join(map(repr, keys))})")
        yield number, record


def _need_text(path, number, what, value):
    if not isinstance(value, str):
        raise CLIError(f"{path}, line {number}: {what} must be a string, got "
                       f"{type(value).__name__}")
    if not value.strip():
        raise CLIError(f"{path}, line {number}: {what} is empty")
    return value


def _need_label(path, number, value):
    if isinstance(value, (str, bool, int)) or isinstance(value, float) and math.isfinite(value):
        return value
    raise CLIError(f"{path}, line {number}: label must be a string or a number, got "
                   f"{json.dumps(value)[:40]}")


def _need_tokens(path, number, what, value):
    if not isinstance(value, list) or not value \
            or not all(isinstance(token, str) and token for token in value):
        raise CLIError(f"{path}, line {number}: {what} must be a non-empty list of "
                       f"non-empty strings")
    return value


def _no_examples(path):
    return CLIError(f"{path}: no examples found (the file is empty or only blank lines)")


def read_texts(paths, lines=False):
    """LM data: each file is one text, or each non-blank line with ``lines``."""
    texts = []
    for path in paths:
        text = _open_text(path)
        if lines:
            texts.extend(line for _, line in _numbered_lines(text) if line.strip())
        elif text.strip():
            texts.append(text)
    if not texts:
        raise CLIError(f"{', '.join(paths)}: no text found (empty files)")
    return texts


def read_pairs(path, fmt="auto", keys=("text", "label"), label_is_text=False):
    """(inputs, outputs) from ``input<TAB>output`` lines or JSONL objects with ``keys``.

    The output is a label (classify) or a text (seq2seq, ``label_is_text``).
    """
    text = _open_text(path)
    fmt = _detect_format(path, text, fmt, "tsv")
    first, second = [], []
    if fmt == "jsonl":
        for number, record in _jsonl_records(path, text, keys):
            first.append(_need_text(path, number, keys[0], record[keys[0]]))
            value = record[keys[1]]
            second.append(_need_text(path, number, keys[1], value) if label_is_text
                          else _need_label(path, number, value))
    else:
        layout = f"{keys[0]}<TAB>{keys[1]}"
        for number, line in _numbered_lines(text):
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != 2:
                raise CLIError(f"{path}, line {number}: expected {layout} (2 tab-separated "
                               f"fields), found {len(fields)} field"
                               f"{'' if len(fields) == 1 else 's'}")
            first.append(_need_text(path, number, keys[0], fields[0]))
            label = fields[1].strip()
            if not label:
                raise CLIError(f"{path}, line {number}: {keys[1]} is empty")
            second.append(fields[1] if label_is_text else label)
    if not first:
        raise _no_examples(path)
    return first, second


def read_tagged(path, fmt="auto"):
    """(token lists, tag lists) from CoNLL-style or JSONL {"tokens", "tags"}.

    CoNLL: one token per line, the token in the first column and its tag in
    the last (columns split by tabs, or by spaces when a line has no tab),
    a blank line between sentences; ``-DOCSTART-`` lines are skipped.
    """
    text = _open_text(path)
    fmt = _detect_format(path, text, fmt, "conll")
    sentences, tag_lists = [], []
    if fmt == "jsonl":
        for number, record in _jsonl_records(path, text, ("tokens", "tags")):
            tokens = _need_tokens(path, number, "tokens", record["tokens"])
            tags = record["tags"]
            if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
                raise CLIError(f"{path}, line {number}: tags must be a list of non-empty "
                               f"strings")
            if len(tags) != len(tokens):
                raise CLIError(f"{path}, line {number}: {len(tokens)} tokens but "
                               f"{len(tags)} tags (one tag per token)")
            sentences.append(tokens)
            tag_lists.append(tags)
    else:
        tokens, tags = [], []
        for number, line in list(_numbered_lines(text)) + [(None, "")]:
            if not line.strip():
                if tokens:
                    sentences.append(tokens)
                    tag_lists.append(tags)
                    tokens, tags = [], []
                continue
            if line.startswith("-DOCSTART-"):
                continue
            fields = line.split("\t") if "\t" in line else line.split()
            fields = [field.strip() for field in fields]
            if len(fields) < 2 or not fields[0] or not fields[-1]:
                raise CLIError(f"{path}, line {number}: expected token<TAB>tag (a blank line "
                               f"between sentences), found {line[:60]!r}")
            if len(fields[0].split()) > 1:
                raise CLIError(f"{path}, line {number}: the token {fields[0][:40]!r} contains "
                               f"spaces: expected one token per line (token<TAB>tag)")
            tokens.append(fields[0])
            tags.append(fields[-1])
    if not sentences:
        raise _no_examples(path)
    return sentences, tag_lists


def _parse_numbers(path, number, text, what):
    items = text.replace(",", " ").split()
    try:
        values = [float(item) for item in items]
    except ValueError:
        raise CLIError(f"{path}, line {number}: {what} must be numbers separated by spaces "
                       f"or commas, got {text[:60]!r}") from None
    if not values:
        raise CLIError(f"{path}, line {number}: {what} is empty")
    if not all(math.isfinite(v) for v in values):
        raise CLIError(f"{path}, line {number}: {what} contains NaN or infinity")
    return values


def _need_numbers(path, number, what, value, nested_ok):
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise CLIError(f"{path}, line {number}: {what} must be a number or a list of "
                       f"numbers") from None
    if array.ndim > (2 if nested_ok else 1) or array.size == 0 \
            or not np.isfinite(array).all():
        raise CLIError(f"{path}, line {number}: {what} must be a non-empty list of finite "
                       f"numbers{' (or a list of equal-length lists)' if nested_ok else ''}")
    return array


def read_regression(path, fmt="auto", with_targets=True, text=None):
    """(sequences, targets) for ``regress``: TSV ``x1 x2 ...<TAB>y`` (numbers
    separated by spaces or commas; one feature per step) or JSONL
    {"sequence": [...] or [[...], ...], "target": y or [y1, ...]}.
    ``text``: the file's content when already read (stdin)."""
    if text is None:
        text = _open_text(path)
    fmt = _detect_format(path, text, fmt, "tsv")
    sequences, targets = [], []
    if fmt == "jsonl":
        keys = ("sequence", "target") if with_targets else ("sequence",)
        for number, record in _jsonl_records(path, text, keys):
            sequence = _need_numbers(path, number, "sequence", record["sequence"], True)
            sequences.append(sequence)
            if with_targets:
                targets.append(_need_numbers(path, number, "target", record["target"], False))
    else:
        for number, line in _numbered_lines(text):
            if not line.strip():
                continue
            fields = line.split("\t")
            wanted = 2 if with_targets else 1
            if len(fields) != wanted and not (not with_targets and len(fields) == 2):
                raise CLIError(f"{path}, line {number}: expected sequence<TAB>target "
                               f"(2 tab-separated fields), found {len(fields)}")
            sequences.append(np.array(_parse_numbers(path, number, fields[0], "sequence")))
            if with_targets:
                targets.append(np.array(_parse_numbers(path, number, fields[1], "target")))
    if not sequences:
        raise _no_examples(path)
    if with_targets:
        widths = {t.size for t in targets}
        if len(widths) != 1:
            raise CLIError(f"{path}: every target needs the same number of values, found "
                           f"{sorted(widths)}")
        targets = np.stack(targets)
        if targets.shape[1] == 1:
            targets = targets[:, 0]
    return sequences, targets


def read_inputs(path, task, tokenizer_splits=False):
    """Inputs for ``predict``: one per non-blank line (texts; for tag,
    whitespace-separated tokens; for regress, numbers), or the input field
    of JSONL records ("text", "tokens", "source", "sequence")."""
    text = _open_text(path)
    fmt = _detect_format(path, text, "auto", "lines")
    key = {"classify": "text", "tag": "tokens", "seq2seq": "source", "regress": "sequence"}[task]
    if task == "regress":
        return read_regression(path, fmt="jsonl" if fmt == "jsonl" else "tsv",
                               with_targets=False, text=text)[0]
    inputs = []
    if fmt == "jsonl":
        for number, record in _jsonl_records(path, text, (key,)):
            if task == "tag":
                inputs.append(_need_tokens(path, number, key, record[key]))
            else:
                inputs.append(_need_text(path, number, key, record[key]))
    else:
        for _, line in _numbered_lines(text):
            if line.strip():
                inputs.append(line.split() if task == "tag" else line)
    if not inputs:
        raise _no_examples(path)
    return inputs


# -- models -----------------------------------------------------------------------------------

def _task_classes():
    """Task name -> model class."""
    from . import tasks
    return {"lm": tasks.LanguageModel, "classify": tasks.SequenceClassifier,
            "tag": tasks.SequenceTagger, "seq2seq": tasks.Seq2Seq,
            "regress": tasks.SequenceRegressor}


def _task_of(model):
    for task, cls in _task_classes().items():
        if isinstance(model, cls):
            return task
    raise CLIError(f"unsupported model type {type(model).__name__}")


def _model_class(task):
    return _task_classes()[task]


def _load_model(path):
    from .tasks import load
    if not os.path.exists(path):
        raise CLIError(f"{path}: no such model file")
    if os.path.isdir(path):
        raise CLIError(f"{path}: is a directory, expected a model file")
    if not zipfile.is_zipfile(path):
        raise CLIError(f"{path}: not a fastrnn model (models are .npz files written by "
                       f"fastrnn train or model.save)")
    try:
        return load(path)
    except (ValueError, KeyError) as exc:
        raise CLIError(f"{path}: cannot load the model: {exc}") from None
    except OSError as exc:
        raise CLIError(f"{path}: cannot read ({exc.strerror or exc})") from None


@contextlib.contextmanager
def _user_errors(context):
    """Library ValueErrors about the user's data or options become CLIErrors."""
    try:
        yield
    except CLIError:
        raise
    except ValueError as exc:
        if os.environ.get("FASTRNN_TRACEBACK"):
            raise
        raise CLIError(f"{context}: {exc}") from None


def _emit_warnings(caught):
    for warning in caught:
        print(f"fastrnn: warning: {str(warning.message).splitlines()[0]}", file=sys.stderr)


# -- callbacks for the command line -----------------------------------------------------------

class TimeBudget(Callback):
    """Stops training once ``seconds`` of wall time have passed since it began
    (checked after every batch; None: never) and counts the tokens trained and
    the time spent inside training batches, for a throughput figure."""

    def __init__(self, seconds):
        self.seconds = seconds
        self.tokens = 0.0
        self.batch_seconds = 0.0
        self.stopped = False

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_batch_begin(self, step, logs=None):
        self._batch_start = time.perf_counter()

    def on_batch_end(self, step, logs=None):
        now = time.perf_counter()
        self.batch_seconds += now - self._batch_start
        self.tokens += float((logs or {}).get("weight", 0.0))
        if self.seconds is not None and now - self.start >= self.seconds:
            self.stopped = True
            self.trainer.stop_training = True


class EpochPrinter(Callback):
    """Prints ``epoch k: train <metric> ..., validation ... (seconds)`` after
    each epoch."""

    def __init__(self, metric, label):
        self.metric = metric
        self.label = label

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        parts = [f"{prefix} {logs[name]:.3f} {self.label}"
                 for prefix, name in (("train", self.metric), ("validation", "val_" + self.metric))
                 if name in logs]
        seconds = time.perf_counter() - self.start
        print(f"  epoch {epoch + 1}: {', '.join(parts)} ({seconds:.0f} s)", flush=True)


# -- fastrnn demo -----------------------------------------------------------------------------

def _demo(args):
    import fastrnn as fr
    from .corpus import stdlib_docstrings, stdlib_root, unigram_entropy

    defaults = DEMO_QUICK if args.quick else DEMO_DEFAULTS
    for name in ("max_chars", "epochs", "hidden_size", "minutes"):
        if getattr(args, name) is None:
            setattr(args, name, defaults[name])
    if args.threads is not None:
        fr.set_num_threads(args.threads)
    output = args.output
    _check_writable(output)
    LanguageModel = _model_class("lm")

    total_start = time.perf_counter()
    print(f"Corpus: docstrings of the Python {platform.python_version()} standard library "
          f"({stdlib_root()})", flush=True)
    start = time.perf_counter()
    text = stdlib_docstrings(max_chars=args.max_chars)
    if len(text) < 2000:
        raise CLIError(f"--max-chars {args.max_chars} gives only {len(text)} characters; "
                       f"use at least 2000")
    entropy = unigram_entropy(text)
    cut = text.rfind("\n\n", 0, int(len(text) * 0.9))
    cut = cut if cut > len(text) // 2 else int(len(text) * 0.9)
    train_text, valid_text = text[:cut], text[cut:].lstrip("\n")
    print(f"  {len(text):,} characters ({len(set(text))} distinct) read in "
          f"{time.perf_counter() - start:.1f} s; unigram entropy {entropy:.3f} bits/char")
    print(f"  training on the first {len(train_text):,}, validating on the last "
          f"{len(valid_text):,} characters")
    model = LanguageModel(level="char", cell="lstm", hidden_size=args.hidden_size,
                          embedding_dim=defaults["embedding_dim"], seed=args.seed)
    budget = TimeBudget(args.minutes * 60.0)
    printer = EpochPrinter("bits_per_char", "bpc")
    print(f"Model: character-level LSTM, hidden size {args.hidden_size}, "
          f"{fr.get_num_threads()} thread(s); batch {defaults['batch_size']} x "
          f"{defaults['bptt']} steps, Adam lr {defaults['lr']}")
    print(f"Training: up to {args.epochs} epoch(s) or {args.minutes:g} minute(s)", flush=True)
    verbose = 1 if _isatty(sys.stderr) else 0
    history = model.fit(train_text, epochs=args.epochs, batch_size=defaults["batch_size"],
                        bptt=defaults["bptt"], validation_data=valid_text,
                        callbacks=[printer, budget], verbose=verbose,
                        lr=defaults["lr"], clip_norm=5.0)
    if budget.stopped:
        print(f"  time budget of {args.minutes:g} minute(s) reached during epoch "
              f"{len(history.epoch) + 1} (that epoch's partial training is kept)")
    elif history.stop_reason:
        print(f"  stopped: {history.stop_message}")
    throughput = budget.tokens / budget.batch_seconds if budget.batch_seconds > 0 else 0.0
    start = time.perf_counter()
    final = model.evaluate(valid_text, batch_size=min(8, max(1, len(valid_text) // 512)))
    bpc = final["bits_per_char"]
    print(f"Result: validation {bpc:.3f} bits/char vs unigram entropy {entropy:.3f} bits/char "
          f"({bpc / entropy:.0%} of it; perplexity {final['perplexity']:.2f}; evaluated in "
          f"{time.perf_counter() - start:.1f} s)")
    print(f"Throughput: {throughput:,.0f} characters/s trained ({budget.tokens:,.0f} "
          f"characters in {budget.batch_seconds:.1f} s)")
    print(f"Samples (prompt {DEMO_PROMPT!r}):")
    for temperature in (0.5, 0.8, 1.0):
        sample = model.generate(DEMO_PROMPT, length=defaults["sample_length"],
                                temperature=temperature, seed=args.seed)
        shown = sample.replace("\n", "\n      ")
        print(f"  temperature {temperature}:\n      {shown}")
    with _user_errors(f"cannot save to {output}"):
        model.save(output)
    print(f"Saved the model to {output} ({time.perf_counter() - total_start:.0f} s in all); "
          f"sample more with: fastrnn generate {output} --prompt \"...\"")
    return 0



def _isatty(stream):
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _check_writable(path):
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise CLIError(f"cannot write {path}: directory {directory} does not exist")
    if os.path.isdir(path):
        raise CLIError(f"cannot write {path}: it is a directory")


# -- fastrnn train ----------------------------------------------------------------------------

# CLI option (argparse dest) -> constructor parameter, per task model.
_MODEL_OPTIONS = {
    "cell": "cell", "hidden_size": "hidden_size", "layers": "num_layers",
    "bidirectional": "bidirectional", "dropout": "dropout", "embedding_dim": "embedding_dim",
    "input": "input", "tokenizer": "tokenizer", "lower": "lower", "min_freq": "min_freq",
    "max_vocab": "max_vocab", "level": "level", "pooling": "pooling", "dtype": "dtype",
    "seed": "seed",
}
_FIT_OPTIONS = {
    "epochs": "epochs", "batch_size": "batch_size", "validation_split": "validation_split",
    "optimizer": "optimizer", "lr": "lr", "clip_norm": "clip_norm", "bptt": "bptt",
    "teacher_forcing": "teacher_forcing", "weight_decay": "weight_decay",
}

_FORMATS = {
    "lm": """\
data: plain UTF-8 text files.  Each file is one text (or, with --lines, each
non-blank line is a separate text, e.g. a list of names).  Texts are joined
with an end-of-text token, so generation learns how a text starts and ends.""",
    "classify": """\
data: TSV, one example per line: text<TAB>label  (exactly one tab)
  or JSONL, one object per line: {"text": "...", "label": "pos"}
  (labels may be strings or numbers; blank lines are skipped).""",
    "tag": """\
data: CoNLL-style, one token per line: token<TAB>tag, a blank line between
  sentences (columns may also be space-separated: the first column is the
  token, the last the tag, as in CoNLL-2003; -DOCSTART- lines are skipped)
  or JSONL: {"tokens": ["Ann", "lives", "in", "Rome"], "tags": ["B-PER", "O", "O", "B-LOC"]}.""",
    "seq2seq": """\
data: TSV, one pair per line: source<TAB>target  (exactly one tab)
  or JSONL: {"source": "...", "target": "..."}.""",
    "regress": """\
data: TSV, one example per line: x1 x2 x3 ...<TAB>y  (a sequence of numbers
  separated by spaces or commas, one feature per step; the target may be
  several numbers) or JSONL: {"sequence": [0.1, 0.5, ...] or [[f1, f2], ...],
  "target": 0.7 or [0.7, 1.2]}.  Scale inputs and targets yourself (about
  mean 0 and variance 1): recurrent networks train poorly on large values.""",
}

_TASK_TITLE = {"lm": "language model (LanguageModel)",
               "classify": "sequence classifier (SequenceClassifier)",
               "tag": "sequence tagger (SequenceTagger)",
               "seq2seq": "sequence-to-sequence model (Seq2Seq)",
               "regress": "sequence regressor (SequenceRegressor)"}

_TASK_HELP = {
    "lm": "language model (next character or word); generate text with it",
    "classify": "one label per text (sentiment, topic, ...)",
    "tag": "one tag per token (named entities, part of speech)",
    "seq2seq": "text to text (transliteration, reversal, date formats, ...)",
    "regress": "a number (or vector) per numeric sequence",
}


def _signature_default(task, parameter, method="__init__"):
    try:
        function = getattr(_model_class(task), method)
        value = inspect.signature(function).parameters[parameter].default
    except (CLIError, KeyError, ValueError, TypeError):
        return None
    return None if value is inspect.Parameter.empty else value


def _with_default(text, task, parameter, method="__init__"):
    default = _signature_default(task, parameter, method)
    return f"{text} (default: {default})" if default is not None else text


def _add_train_parser(subparsers):
    train = subparsers.add_parser(
        "train", help="train a model on a data file and save it",
        description="Train a task model and save it to one .npz file (load it with "
                    "fastrnn.tasks.load, or use it with fastrnn predict/evaluate/generate). "
                    "Run `fastrnn train TASK --help` for the options and the data format "
                    "of a task.")
    tasks = train.add_subparsers(dest="task", metavar="TASK", required=True,
                                 parser_class=_Parser)
    for task in TASKS:
        parser = tasks.add_parser(
            task, help=_TASK_HELP[task],
            description=f"Train a {_TASK_TITLE[task]}: {_TASK_HELP[task]}.\n\n"
                        + _FORMATS[task],
            formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("data", nargs="+" if task == "lm" else None, metavar="DATA",
                            help="training data file(s)" if task == "lm"
                            else "training data file")
        parser.add_argument("-o", "--output", default=f"fastrnn-{task}.npz", metavar="MODEL",
                            help="where to save the model (default: %(default)s)")
        if task != "lm":
            parser.add_argument("--format", default="auto",
                                choices=("auto", "jsonl", "conll" if task == "tag" else "tsv"),
                                help="data format (default: from the extension, .jsonl -> "
                                     "JSONL; else by looking at the first line)")
        else:
            parser.add_argument("--lines", action="store_true",
                                help="each non-blank line is a separate text")
        parser.add_argument("--validation-data", metavar="FILE",
                            help="held-out data in the same format, scored after every epoch")
        parser.add_argument("--validation-split", type=PROBABILITY, metavar="F",
                            help="fraction of the data held out for validation instead "
                                 "(default: 0, or 0.1 with --patience)")
        group = parser.add_argument_group("model")
        group.add_argument("--cell", choices=CELLS,
                           help=_with_default("recurrent cell", task, "cell"))
        group.add_argument("--hidden-size", type=POSITIVE, metavar="H",
                           help=_with_default("hidden units per layer", task, "hidden_size"))
        group.add_argument("--layers", type=POSITIVE, metavar="N",
                           help=_with_default("stacked recurrent layers", task, "num_layers"))
        if task in ("classify", "tag", "regress"):
            group.add_argument("--bidirectional", action=argparse.BooleanOptionalAction,
                               help=_with_default("read sequences in both directions", task,
                                                  "bidirectional"))
        group.add_argument("--dropout", type=PROBABILITY, metavar="P",
                           help=_with_default("dropout rate", task, "dropout"))
        if task != "regress":
            group.add_argument("--embedding-dim", type=POSITIVE, metavar="E",
                               help=_with_default("embedding size", task, "embedding_dim"))
        if task in ("lm", "classify", "tag", "seq2seq"):
            group.add_argument("--input", choices=("embedding", "onehot"),
                               help=_with_default("input layer", task, "input"))
        if task == "lm":
            group.add_argument("--level", choices=("char", "word"),
                               help=_with_default("tokens are characters or words", task,
                                                  "level"))
        if task in ("classify", "seq2seq"):
            group.add_argument("--tokenizer", choices=("word", "char"),
                               help=_with_default("how texts are split", task, "tokenizer"))
        if task != "regress":
            group.add_argument("--lower", action=argparse.BooleanOptionalAction,
                               help=_with_default("lower-case texts", task, "lower"))
            group.add_argument("--min-freq", type=POSITIVE, metavar="N",
                               help="rarer tokens become <unk>")
            group.add_argument("--max-vocab", type=POSITIVE, metavar="N",
                               help="keep only the N most frequent tokens")
        if task in ("classify", "regress"):
            group.add_argument("--pooling", choices=("last", "mean", "max"),
                               help=_with_default("how steps are summarised", task,
                                                  "pooling"))
        group.add_argument("--dtype", choices=("float32", "float64"),
                           help=_with_default("weight precision", task, "dtype"))
        group = parser.add_argument_group("training")
        group.add_argument("--epochs", type=POSITIVE, metavar="N",
                           help=_with_default("passes over the data", task, "epochs", "fit"))
        group.add_argument("--batch-size", type=POSITIVE, metavar="B",
                           help=_with_default("sequences per batch", task, "batch_size",
                                              "fit"))
        if task == "lm":
            group.add_argument("--bptt", type=POSITIVE, metavar="T",
                               help=_with_default("steps per chunk (truncated "
                                                  "backpropagation)", task, "bptt", "fit"))
        if task == "seq2seq":
            group.add_argument("--teacher-forcing", type=_float_in(0.0, 1.0), metavar="R",
                               help=_with_default("probability of feeding the true previous "
                                                  "token while training", task,
                                                  "teacher_forcing", "fit"))
        group.add_argument("--optimizer", choices=OPTIMIZERS,
                           help=_with_default("optimizer", task, "optimizer", "fit"))
        group.add_argument("--lr", type=POSITIVE_FLOAT,
                           help="learning rate (default: the optimizer's)")
        group.add_argument("--weight-decay", type=_float_in(0.0, math.inf, high_open=True),
                           metavar="W", help="L2 weight decay (default: 0)")
        group.add_argument("--clip-norm", type=POSITIVE_FLOAT, metavar="C",
                           help=_with_default("clip the gradient norm to C", task,
                                              "clip_norm", "fit"))
        group.add_argument("--patience", type=POSITIVE, metavar="N",
                           help="stop when the validation loss has not improved for N "
                                "epochs, keeping the best weights")
        group.add_argument("--seed", type=int, default=0,
                           help="seed for the weights and the data order (default: "
                                "%(default)s)")
        group.add_argument("--threads", type=POSITIVE, metavar="N",
                           help="threads for the kernels (default: all allowed CPUs)")
        group.add_argument("--checkpoint", metavar="PATH",
                           help="write a training checkpoint after every epoch (may "
                                "contain {epoch}); continue a run with --resume")
        group.add_argument("--resume", metavar="PATH",
                           help="continue from a checkpoint written by --checkpoint (same "
                                "data and options; --epochs is the total to reach; new "
                                "checkpoints go to PATH unless --checkpoint says otherwise)")
        group.add_argument("--plot", metavar="PNG",
                           help="save the loss/metric curves (needs matplotlib)")
        group.add_argument("-q", "--quiet", action="store_true",
                           help="no progress or summary output")
        parser.set_defaults(func=_train)
    return train


def _read_training_data(task, path, args):
    if task == "lm":
        return read_texts(path if isinstance(path, list) else [path], args.lines), None
    if task == "classify":
        return read_pairs(path, args.format, ("text", "label"))
    if task == "seq2seq":
        return read_pairs(path, args.format, ("source", "target"), label_is_text=True)
    if task == "tag":
        return read_tagged(path, args.format)
    return read_regression(path, args.format)


def _accepted(function):
    return set(inspect.signature(function).parameters)


def _options(args, mapping, accepted, owner):
    """Keyword arguments from the options the user gave (None = not given)."""
    chosen = {}
    for dest, parameter in mapping.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        if parameter not in accepted:
            if dest == "seed":
                continue
            raise CLIError(f"--{dest.replace('_', '-')} does not apply to {owner}")
        chosen[parameter] = value
    return chosen


def _train(args):
    import fastrnn as fr
    from .training import EarlyStopping, ModelCheckpoint

    task = args.task
    cls = _model_class(task)
    if args.threads is not None:
        fr.set_num_threads(args.threads)
    _check_writable(args.output)
    if args.plot is not None:
        _check_writable(args.plot)
        try:
            importlib.import_module("matplotlib.figure")   # fail before training, not after
        except ImportError:
            raise CLIError("--plot needs matplotlib, which is not installed "
                           "(pip install matplotlib)") from None
    if args.resume is not None and args.checkpoint is None:
        args.checkpoint = args.resume      # keep checkpointing where the run left off
    if args.checkpoint is not None and "{" not in args.checkpoint:
        _check_writable(args.checkpoint)
    if args.resume is not None and not os.path.isfile(args.resume):
        raise CLIError(f"--resume {args.resume}: no such checkpoint file")
    if args.validation_data is not None and args.validation_split is not None:
        raise CLIError("give either --validation-data or --validation-split, not both")

    X, y = _read_training_data(task, args.data, args)
    params = _options(args, _MODEL_OPTIONS, _accepted(cls.__init__), cls.__name__)
    fit_kwargs = _options(args, _FIT_OPTIONS, _accepted(cls.fit), f"{cls.__name__}.fit")
    if args.patience is not None and args.validation_data is None \
            and args.validation_split is None:
        fit_kwargs["validation_split"] = 0.1
    if args.validation_data is not None:
        X_val, y_val = _read_training_data(task, args.validation_data, args)
        fit_kwargs["validation_data"] = X_val if task == "lm" else (X_val, y_val)
    callbacks = []
    if args.patience is not None:
        callbacks.append(EarlyStopping(monitor="val_loss", patience=args.patience,
                                       restore_best_weights=True))
    if args.checkpoint is not None:
        callbacks.append(ModelCheckpoint(args.checkpoint))
    fit_kwargs.update(callbacks=callbacks, verbose=0 if args.quiet else 1,
                      resume_from=args.resume)

    with _user_errors("invalid option"):
        model = cls(**params)
    if not args.quiet:
        count = f"{len(X):,} text(s)" if task == "lm" else f"{len(X):,} examples"
        data = ", ".join(args.data) if task == "lm" else args.data
        print(f"Training {model!r} on {count} from {data}", flush=True)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with _user_errors("cannot train"):
            if task == "lm":
                history = model.fit(X, **fit_kwargs)
            else:
                history = model.fit(X, y, **fit_kwargs)
    _emit_warnings([w for w in caught if not issubclass(w.category, DeprecationWarning)])
    seconds = time.perf_counter() - start
    if not getattr(model, "is_fitted_", False) or not history.epoch and not args.resume:
        raise CLIError(f"training stopped before the first epoch ended "
                       f"({history.stop_message or 'no epoch completed'}); nothing saved")
    with _user_errors(f"cannot save to {args.output}"):
        model.save(args.output)
    if not args.quiet:
        if history.stop_reason:
            print(history.stop_message)
        if history.history:
            last = {name: values[-1] for name, values in history.history.items()
                    if name != "lr"}
            shown = ", ".join(f"{name} {value:.4g}" for name, value in last.items())
            print(f"After {len(history.epoch)} epoch(s) in {seconds:.1f} s: {shown}")
        print(f"Saved the model to {args.output}")
    if args.plot is not None:
        try:
            history.plot(args.plot)
        except ImportError as exc:
            raise CLIError(str(exc)) from None
        except ValueError as exc:
            raise CLIError(f"--plot: {exc}") from None
        if not args.quiet:
            print(f"Saved the training curves to {args.plot}")
    return 0


# -- fastrnn generate / predict / evaluate ----------------------------------------------------

def _generate(args):
    model = _load_model(args.model)
    task = _task_of(model)
    if task != "lm":
        raise CLIError(f"{args.model} is a {type(model).__name__}; generate needs a "
                       f"language model (use fastrnn predict)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with _user_errors("cannot generate"):
            texts = [model.generate(args.prompt, length=args.length,
                                    temperature=args.temperature, top_k=args.top_k,
                                    top_p=args.top_p,
                                    seed=None if args.seed is None else args.seed + i)
                     for i in range(args.num_samples)]
    _emit_warnings(caught)
    for index, text in enumerate(texts):
        if index:
            print("\n---")
        print(text)
    return 0


def _format_prediction(task, value):
    if task == "tag":
        return " ".join(map(str, value))
    if task == "regress":
        array = np.atleast_1d(np.asarray(value, dtype=np.float64))
        return " ".join(f"{v:.6g}" for v in array)
    if isinstance(value, np.generic):
        value = value.item()
    return str(value)


def _predict(args):
    model = _load_model(args.model)
    task = _task_of(model)
    if task == "lm":
        raise CLIError(f"{args.model} is a language model; use fastrnn generate (text) or "
                       f"fastrnn evaluate (perplexity)")
    inputs = read_inputs(args.input, task)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with _user_errors(f"cannot predict on {args.input}"):
            if task == "seq2seq":
                options = {name: getattr(args, name) for name in ("max_length", "beam_size")
                           if getattr(args, name) is not None}
                predictions = model.predict(inputs, **options)
            else:
                predictions = model.predict(inputs)
    _emit_warnings(caught)
    out = sys.stdout
    for value in predictions:
        out.write(_format_prediction(task, value).replace("\n", " ") + "\n")
    return 0


def _evaluate(args):
    model = _load_model(args.model)
    task = _task_of(model)
    results = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with _user_errors(f"cannot evaluate on {args.data}"):
            if task == "lm":
                texts = read_texts([args.data], args.lines)
                results = dict(model.evaluate(texts))
            elif task == "classify":
                X, y = read_pairs(args.data, args.format, ("text", "label"))
                predicted = model.predict(X)
                labels = [str(v.item() if isinstance(v, np.generic) else v)
                          for v in predicted]
                results = {"accuracy": float(np.mean([p == str(t) for p, t in
                                                      zip(labels, y)])),
                           "examples": len(y)}
            elif task == "tag":
                X, y = read_tagged(args.data, args.format)
                results = dict(model.score(X, y))
                results["sentences"] = len(X)
            elif task == "seq2seq":
                X, y = read_pairs(args.data, args.format, ("source", "target"),
                                  label_is_text=True)
                options = {name: getattr(args, name) for name in ("max_length", "beam_size")
                           if getattr(args, name) is not None}
                results = dict(model.score(X, y, **options))
                results["examples"] = len(y)
            else:
                X, y = read_regression(args.data, args.format)
                predicted = np.asarray(model.predict(X), dtype=np.float64).reshape(len(X), -1)
                truth = np.asarray(y, dtype=np.float64).reshape(len(X), -1)
                rmse = float(np.sqrt(np.mean((predicted - truth) ** 2)))
                baseline = float(np.sqrt(np.mean((truth - truth.mean(axis=0)) ** 2)))
                total = float(((truth - truth.mean(axis=0)) ** 2).sum())
                r2 = 1.0 - float(((truth - predicted) ** 2).sum()) / total if total > 0 else 0.0
                results = {"r2": r2, "rmse": rmse, "rmse_of_mean": baseline,
                           "examples": len(X)}
    _emit_warnings(caught)
    if args.json:
        print(json.dumps(results))
    else:
        for name, value in results.items():
            label = name.replace("_", " ")
            print(f"{label}: {value}" if isinstance(value, int) else f"{label}: {value:.4f}")
    return 0


# -- fastrnn bench ----------------------------------------------------------------------------

def _time_it(function, budget, max_reps, min_reps=3):
    """Median seconds of ``function()`` over repeats (one warm-up call first)."""
    function()
    times = []
    start = time.perf_counter()
    while len(times) < max_reps and (len(times) < min_reps
                                     or time.perf_counter() - start < budget):
        begin = time.perf_counter()
        function()
        times.append(time.perf_counter() - begin)
    return statistics.median(times)


def _recurrent_flops(cell, T, B, H, E):
    """Matrix FLOPs of one forward pass (the elementwise gate math is not counted)."""
    gates = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    return 2.0 * T * B * (E * gates * H + H * gates * H)


def _gemm_gflops(n, budget):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    seconds = _time_it(lambda: a @ b, budget, 50)
    return 2.0 * n ** 3 / seconds / 1e9


def _bench(args):
    import fastrnn as fr
    from threadpoolctl import threadpool_limits

    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            torch = None
    configs = [(20, 16, 64)] if args.quick else [(50, 32, 128), (50, 32, 256)]
    budget, reps = (0.15, 10) if args.quick else (1.0, 200)
    cells = args.cells
    fr.set_num_threads(1)
    if torch is not None:
        torch.set_num_threads(1)
    rows = []
    with threadpool_limits(limits=1):
        roofline = _gemm_gflops(512 if args.quick else 1024, budget)
        print(f"fastrnn bench: 1 thread, float32, input size = hidden size, zero initial "
              f"state; torch {'%s' % torch.__version__ if torch is not None else 'not used'}")
        print(f"roofline: numpy float32 GEMM {512 if args.quick else 1024}^3 = "
              f"{roofline:.1f} GFLOP/s on 1 thread (measured now)")
        print("train = forward + backward (weight gradients, no input gradient); "
              "infer = eval-mode forward")
        for cell in cells:
            for T, B, H in configs:
                row = _bench_one(fr, torch, cell, T, B, H, budget, reps)
                flops = _recurrent_flops(cell, T, B, H, H)
                row.update(cell=cell, T=T, B=B, H=H,
                           train_roof=3 * flops * row["fr_train"] / B / 1e9 / roofline,
                           infer_roof=flops * row["fr_infer"] / B / 1e9 / roofline)
                rows.append(row)
    header = (f"{'cell':<5} {'T':>4} {'B':>4} {'H':>5} | {'train seq/s':>11} "
              f"{'torch':>9} {'x torch':>7} | {'infer seq/s':>11} {'torch':>9} "
              f"{'x torch':>7} | {'% roofline train/infer':>22}")
    print(header)
    print("-" * len(header))
    for row in rows:
        def cells_for(mode):
            mine, theirs = row[f"fr_{mode}"], row.get(f"torch_{mode}")
            if theirs is None:
                return f"{mine:>11.1f} {'-':>9} {'-':>7}"
            return f"{mine:>11.1f} {theirs:>9.1f} {mine / theirs:>7.2f}"
        print(f"{row['cell']:<5} {row['T']:>4} {row['B']:>4} {row['H']:>5} | "
              f"{cells_for('train')} | {cells_for('infer')} | "
              f"{row['train_roof']:>11.0%} / {row['infer_roof']:.0%}")
    if torch is None and not args.no_torch:
        print("(torch is not installed: fastrnn alone)")
    return 0


def _bench_one(fr, torch, cell, T, B, H, budget, reps):
    rng = np.random.default_rng(0)
    layer = {"rnn": fr.RNN, "lstm": fr.LSTM, "gru": fr.GRU}[cell](H, H, seed=0)
    x = rng.standard_normal((T, B, H), dtype=np.float32)
    d_out = rng.standard_normal((T, B, H), dtype=np.float32)

    def fr_train():
        layer.train()
        layer.zero_grad()
        layer(x)
        layer.backward(d_out, input_grad=False)

    def fr_infer():
        layer.eval()
        layer(x)

    row = {"fr_train": B / _time_it(fr_train, budget, reps),
           "fr_infer": B / _time_it(fr_infer, budget, reps)}
    if torch is not None:
        module = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](H, H)
        xt, dt = torch.from_numpy(x), torch.from_numpy(d_out)

        def torch_train():
            module.zero_grad(set_to_none=False)
            out, _ = module(xt)
            out.backward(dt)

        def torch_infer():
            with torch.inference_mode():
                module(xt)

        row["torch_train"] = B / _time_it(torch_train, budget, reps)
        row["torch_infer"] = B / _time_it(torch_infer, budget, reps)
    return row


# -- fastrnn info -----------------------------------------------------------------------------

def _version_of(name):
    try:
        from importlib.metadata import PackageNotFoundError, version
        return version(name)
    except PackageNotFoundError:
        return None


def _info(args):
    import fastrnn as fr
    lines = [("fastrnn", f"{fr.__version__} ({os.path.dirname(os.path.abspath(fr.__file__))})"),
             ("python", f"{platform.python_version()} ({sys.executable})"),
             ("platform", platform.platform()),
             ("OpenMP", "on" if fr.openmp_enabled() else "off (serial kernels)"),
             ("threads", f"{fr.get_num_threads()} (of {os.cpu_count()} CPUs; set with "
                         f"--threads or OMP_NUM_THREADS)")]
    blas = fr.blas_info()
    if not blas:
        lines.append(("BLAS", "none found through threadpoolctl"))
    for lib in blas:
        lines.append(("BLAS", f"{lib.get('internal_api')} {lib.get('version')} "
                              f"({lib.get('architecture')}, {lib.get('threading_layer')} "
                              f"threads; {lib.get('filepath')})"))
    for name in ("numpy", "scipy", "threadpoolctl", "tqdm", "matplotlib", "torch"):
        lines.append((name, _version_of(name) or "not installed"))
    width = max(len(name) for name, _ in lines)
    for name, value in lines:
        print(f"{name:<{width}}  {value}")
    return 0


# -- the parser -------------------------------------------------------------------------------

def build_parser():
    parser = _Parser(prog="fastrnn", description="fastrnn: fast CPU recurrent neural "
                     "networks. Train, use and measure RNN/LSTM/GRU task models.",
                     epilog="Run `fastrnn COMMAND --help` for the options of a command.")
    parser.add_argument("--version", action="version", version=f"fastrnn {_package_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                     parser_class=_Parser)

    demo = commands.add_parser(
        "demo", help="train a character-level language model on the Python standard "
                     "library's docstrings (about 2 minutes)",
        description="Build a corpus from the docstrings of this Python's standard library "
                    "(no download), train a character-level LSTM language model on 90%% of "
                    "it with a time budget, report validation bits per character next to the "
                    "unigram entropy (what a model without context would score), print "
                    "samples at three temperatures and save the model.")
    demo.add_argument("--max-chars", type=_int_at_least(2000), metavar="N",
                      help=f"corpus size in characters (default: "
                           f"{DEMO_DEFAULTS['max_chars']:,})")
    demo.add_argument("--epochs", type=POSITIVE, metavar="E",
                      help=f"passes over the corpus (default: {DEMO_DEFAULTS['epochs']})")
    demo.add_argument("--hidden-size", type=POSITIVE, metavar="H",
                      help=f"LSTM hidden units (default: {DEMO_DEFAULTS['hidden_size']})")
    demo.add_argument("--minutes", type=POSITIVE_FLOAT, metavar="M",
                      help=f"stop training after M minutes (default: "
                           f"{DEMO_DEFAULTS['minutes']})")
    demo.add_argument("--threads", type=POSITIVE, metavar="T",
                      help="kernel threads (default: all allowed CPUs)")
    demo.add_argument("-o", "--output", default="fastrnn-demo.npz", metavar="MODEL",
                      help="where to save the model (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0, help="seed (default: %(default)s)")
    demo.add_argument("--quick", action="store_true",
                      help="a tiny corpus and model (a few seconds; for tests)")
    demo.set_defaults(func=_demo)

    _add_train_parser(commands)

    generate = commands.add_parser("generate", help="sample text from a language model",
                                   description="Continue a prompt with a language model "
                                               "trained by `fastrnn train lm` or `fastrnn demo`.")
    generate.add_argument("model", metavar="MODEL", help="a saved language model (.npz)")
    generate.add_argument("--prompt", default="", help="text to continue (default: start "
                                                       "a new text)")
    generate.add_argument("--length", type=NON_NEGATIVE, default=200, metavar="N",
                          help="tokens to generate (default: %(default)s)")
    generate.add_argument("--temperature", type=_float_in(0.0, math.inf, high_open=True),
                          default=1.0, metavar="T",
                          help="< 1 safer, > 1 more varied, 0 greedy (default: %(default)s)")
    generate.add_argument("--top-k", type=POSITIVE, metavar="K",
                          help="sample among the K most probable tokens only")
    generate.add_argument("--top-p", type=_float_in(0.0, 1.0, low_open=True), metavar="P",
                          help="nucleus sampling: the most probable tokens covering P")
    generate.add_argument("--seed", type=int, help="seed for reproducible samples")
    generate.add_argument("-n", "--num-samples", type=POSITIVE, default=1, metavar="N",
                          help="number of samples (default: %(default)s)")
    generate.set_defaults(func=_generate)

    predict = commands.add_parser(
        "predict", help="print one prediction per input line",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Apply a saved model to every input and print one prediction per "
                    "line:\n"
                    "  classify: the label        (input: one text per line)\n"
                    "  tag:      the tags, space-separated  (input: one sentence per line, "
                    "tokens separated by spaces)\n"
                    "  seq2seq:  the output text  (input: one source per line)\n"
                    "  regress:  the value(s)     (input: numbers per line, spaces or "
                    "commas)\n"
                    "JSONL input works too (keys \"text\", \"tokens\", \"source\", "
                    "\"sequence\"; other keys are ignored). INPUT - reads stdin.")
    predict.add_argument("model", metavar="MODEL", help="a saved model (.npz)")
    predict.add_argument("input", metavar="INPUT", help="input file, or - for stdin")
    predict.add_argument("--max-length", type=POSITIVE, metavar="N",
                         help="seq2seq: longest output in tokens")
    predict.add_argument("--beam-size", type=POSITIVE, metavar="K",
                         help="seq2seq: beam search width (default: the model's)")
    predict.set_defaults(func=_predict)

    evaluate = commands.add_parser(
        "evaluate", help="score a saved model on labelled data",
        description="Score a saved model on data in its training format: lm -> loss, "
                    "perplexity (and bits per character); classify -> accuracy; tag -> token "
                    "accuracy and entity precision/recall/F1; seq2seq -> exact match; "
                    "regress -> R^2 and RMSE next to the RMSE of predicting the mean.")
    evaluate.add_argument("model", metavar="MODEL", help="a saved model (.npz)")
    evaluate.add_argument("data", metavar="DATA", help="data file in the training format")
    evaluate.add_argument("--format", default="auto", choices=("auto", "jsonl", "tsv", "conll"),
                          help="data format (default: auto)")
    evaluate.add_argument("--lines", action="store_true",
                          help="lm: each non-blank line is a separate text")
    evaluate.add_argument("--max-length", type=POSITIVE, metavar="N",
                          help="seq2seq: longest output in tokens")
    evaluate.add_argument("--beam-size", type=POSITIVE, metavar="K",
                          help="seq2seq: beam search width")
    evaluate.add_argument("--json", action="store_true", help="print the scores as JSON")
    evaluate.set_defaults(func=_evaluate)

    bench = commands.add_parser(
        "bench", help="quick training/inference throughput benchmark",
        description="Sequences per second of RNN/LSTM/GRU training (forward + backward) "
                    "and inference on one thread, for fastrnn and, when installed, PyTorch, "
                    "plus fastrnn's share of a numpy GEMM roofline measured in the same run. "
                    "A quick look, not bench/compare.py's careful report.")
    bench.add_argument("--quick", action="store_true", help="one small size, a few seconds")
    bench.add_argument("--cells", type=_cell_list, default=list(CELLS), metavar="LIST",
                       help="comma-separated cells (default: lstm,gru,rnn)")
    bench.add_argument("--no-torch", action="store_true", help="fastrnn alone")
    bench.set_defaults(func=_bench)

    info = commands.add_parser("info", help="version, OpenMP, threads, BLAS, dependencies",
                               description="Print what this fastrnn runs on.")
    info.set_defaults(func=_info)
    return parser


def _cell_list(text):
    cells = [cell.strip() for cell in text.split(",") if cell.strip()]
    bad = [cell for cell in cells if cell not in CELLS]
    if not cells or bad:
        raise argparse.ArgumentTypeError(f"must be a comma-separated list of "
                                         f"{', '.join(CELLS)}, got {text!r}")
    return cells


def _package_version():
    from . import __version__
    return __version__


def main(argv=None):
    """Run the command line; returns the exit status (0 ok, 2 user error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CLIError as exc:
        if os.environ.get("FASTRNN_TRACEBACK"):
            raise
        command = " ".join(filter(None, ("fastrnn", args.command, getattr(args, "task", None))))
        print(f"{command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"fastrnn {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `fastrnn predict ... | head`: the reader left; not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":          # pragma: no cover - `python -m fastrnn` uses __main__
    sys.exit(main())
