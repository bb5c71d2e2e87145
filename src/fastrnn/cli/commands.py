"""The subcommands: demo, train, generate, predict, evaluate, info."""

import argparse
import contextlib
import importlib
import inspect
import json
import math
import os
import platform
import sys
import time
import warnings
import zipfile

import numpy as np

from ..training import Callback
from .common import (CELLS, CLIError, DEMO_DEFAULTS, DEMO_PROMPT, DEMO_QUICK, OPTIMIZERS, POSITIVE,
                     POSITIVE_FLOAT, PROBABILITY, Parser, TASKS, float_in)
from .readers import read_inputs, read_pairs, read_regression, read_tagged, read_texts


# -- models -----------------------------------------------------------------------------------

def _task_classes():
    """Task name -> model class."""
    from .. import tasks
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
    from ..tasks import load
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

def demo_command(args):
    import fastrnn as fr
    from ..corpus import stdlib_docstrings, stdlib_root, unigram_entropy

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


def add_train_parser(subparsers):
    train = subparsers.add_parser(
        "train", help="train a model on a data file and save it",
        description="Train a task model and save it to one .npz file (load it with "
                    "fastrnn.tasks.load, or use it with fastrnn predict/evaluate/generate). "
                    "Run `fastrnn train TASK --help` for the options and the data format "
                    "of a task.")
    tasks = train.add_subparsers(dest="task", metavar="TASK", required=True,
                                 parser_class=Parser)
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
            group.add_argument("--teacher-forcing", type=float_in(0.0, 1.0), metavar="R",
                               help=_with_default("probability of feeding the true previous "
                                                  "token while training", task,
                                                  "teacher_forcing", "fit"))
        group.add_argument("--optimizer", choices=OPTIMIZERS,
                           help=_with_default("optimizer", task, "optimizer", "fit"))
        group.add_argument("--lr", type=POSITIVE_FLOAT,
                           help="learning rate (default: the optimizer's)")
        group.add_argument("--weight-decay", type=float_in(0.0, math.inf, high_open=True),
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
        parser.set_defaults(func=train_command)
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


def train_command(args):
    import fastrnn as fr
    from ..training import EarlyStopping, ModelCheckpoint

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

def generate_command(args):
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


def predict_command(args):
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


def evaluate_command(args):
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


# -- fastrnn info -----------------------------------------------------------------------------

def _version_of(name):
    try:
        from importlib.metadata import PackageNotFoundError, version
        return version(name)
    except PackageNotFoundError:
        return None


def info_command(args):
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
