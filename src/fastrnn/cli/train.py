"""``fastrnn train TASK DATA``: train a task model from a data file and save it."""

import argparse
import importlib
import inspect
import os
import sys
import textwrap
import time

from ..tasks.base import OPTIMIZERS
from ..tasks.stack import CELLS
from .common import (CLIError, DATA_FORMATS, EXIT_INTERRUPTED, POSITIVE, POSITIVE_FLOAT,
                     NON_NEGATIVE_FLOAT, PROBABILITY, Parser, TASKS, add_threads_option,
                     apply_threads, check_writable, float_in, library_call, plural,
                     task_classes)
from .readers import display_name, read_pairs, read_regression, read_tagged, read_texts
from .shape import check_task_shape

FORMATS = {
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
  or JSONL: {"tokens": ["Ann", "lives", "in", "Rome"],
             "tags": ["B-PER", "O", "O", "B-LOC"]}.""",
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

TASK_HELP = {
    "lm": "language model: predicts the next character or word; sample text from it "
          "with fastrnn generate",
    "classify": "one label per text (sentiment, topic, ...)",
    "tag": "one tag per token (named entities, part of speech)",
    "seq2seq": "text to text (transliteration, reversal, date formats, ...)",
    "regress": "a number (or vector) per numeric sequence",
}

# CLI option (argparse dest) -> constructor parameter / fit() parameter.  The
# parser of each task only offers the options its model accepts.
MODEL_OPTIONS = {
    "cell": "cell", "hidden_size": "hidden_size", "layers": "num_layers",
    "bidirectional": "bidirectional", "dropout": "dropout", "embedding_dim": "embedding_dim",
    "input": "input", "tokenizer": "tokenizer", "lower": "lower", "min_freq": "min_freq",
    "max_vocab": "max_vocab", "level": "level", "pooling": "pooling", "dtype": "dtype",
    "seed": "seed",
}
FIT_OPTIONS = {
    "epochs": "epochs", "batch_size": "batch_size", "validation_split": "validation_split",
    "optimizer": "optimizer", "lr": "lr", "clip_norm": "clip_norm", "bptt": "bptt",
    "teacher_forcing": "teacher_forcing", "weight_decay": "weight_decay",
}


# -- the parser -------------------------------------------------------------------------------

def add_parser(commands):
    train = commands.add_parser(
        "train", help="train a model on a data file and save it",
        description="Train a task model and save it to one .npz file (load it with "
                    "fastrnn.tasks.load, or use it with fastrnn predict/evaluate/generate). "
                    "Run `fastrnn train TASK --help` for the options and the data format "
                    "of a task.")
    tasks = train.add_subparsers(dest="task", metavar="TASK", required=True,
                                 parser_class=Parser)
    for task in TASKS:
        cls = task_classes()[task]
        parser = tasks.add_parser(
            task, help=TASK_HELP[task], formatter_class=argparse.RawDescriptionHelpFormatter,
            description=textwrap.fill(f"Train a {cls.__name__} on DATA and save it to MODEL "
                                      f"(-o). {TASK_HELP[task].capitalize()}.", width=79)
            + "\n\n" + FORMATS[task])
        _add_data_options(parser, task)
        _add_model_options(parser.add_argument_group("model"), task, cls)
        _add_training_options(parser.add_argument_group("training"), task, cls)
        parser.set_defaults(func=train_command)


def _default(cls, parameter, method="__init__"):
    """The default of ``cls.method``'s ``parameter`` (None when it has none)."""
    value = inspect.signature(getattr(cls, method)).parameters[parameter].default
    return None if value is inspect.Parameter.empty else value


def _help(text, cls, parameter, method="__init__", none=None):
    """``text (default: <the model's default>)``; ``none`` says what a None default means."""
    default = _default(cls, parameter, method)
    shown = none if default is None else default
    return text if shown is None else f"{text} (default: {shown})"


def _optimizer_defaults(parameter):
    """``"0.001 for adam, sgd; 0.01 for rmsprop"``: each optimizer's own default."""
    groups = {}
    for name, cls in OPTIMIZERS.items():
        groups.setdefault(_default(cls, parameter), []).append(name)
    return "; ".join(f"{value:g} for {', '.join(names)}" for value, names in groups.items())


def _add_data_options(parser, task):
    if task == "lm":
        parser.add_argument("data", nargs="+", metavar="DATA", help="training text file(s)")
    else:
        parser.add_argument("data", metavar="DATA", help="training data file")
    parser.add_argument("-o", "--output", default=f"fastrnn-{task}.npz", metavar="MODEL",
                        help="where to save the model (default: %(default)s)")
    if task == "lm":
        parser.add_argument("--lines", action="store_true",
                            help="each non-blank line is a separate text (also for "
                                 "--validation-data)")
    else:
        plain = DATA_FORMATS[task][0]
        parser.add_argument("--format", default="auto", choices=("auto",) + DATA_FORMATS[task],
                            help=f"data format (default: auto: JSONL for .jsonl files or "
                                 f"when the first line is a JSON object, else {plain})")
    parser.add_argument("--validation-data", metavar="FILE",
                        help="held-out data in the same format, scored after every epoch")
    parser.add_argument("--validation-split", type=PROBABILITY, metavar="F",
                        help="fraction of the data held out for validation instead "
                             "(default: 0, or 0.1 with --patience)")


def _add_model_options(group, task, cls):
    group.add_argument("--cell", choices=tuple(CELLS), help=_help("recurrent cell", cls, "cell"))
    group.add_argument("--hidden-size", type=POSITIVE, metavar="H",
                       help=_help("hidden units per layer", cls, "hidden_size"))
    group.add_argument("--layers", type=POSITIVE, metavar="N",
                       help=_help("stacked recurrent layers", cls, "num_layers"))
    if task in ("classify", "tag", "regress"):
        group.add_argument("--bidirectional", action=argparse.BooleanOptionalAction,
                           help=_help("read sequences in both directions", cls,
                                      "bidirectional"))
    group.add_argument("--dropout", type=PROBABILITY, metavar="P",
                       help=_help("dropout rate", cls, "dropout"))
    if task != "regress":
        _add_vocabulary_options(group, task, cls)
    if task in ("classify", "regress"):
        group.add_argument("--pooling", choices=("last", "mean", "max"),
                           help=_help("how the steps are summarised", cls, "pooling"))
    group.add_argument("--dtype", choices=("float32", "float64"),
                       help=_help("weight precision", cls, "dtype"))


def _add_vocabulary_options(group, task, cls):
    group.add_argument("--embedding-dim", type=POSITIVE, metavar="E",
                       help=_help("embedding size", cls, "embedding_dim"))
    group.add_argument("--input", choices=("embedding", "onehot"),
                       help=_help("input layer", cls, "input"))
    if task == "lm":
        group.add_argument("--level", choices=("char", "word"),
                           help=_help("tokens are characters or words", cls, "level"))
    if task in ("classify", "seq2seq"):
        group.add_argument("--tokenizer", choices=("word", "char"),
                           help=_help("how texts are split into tokens", cls, "tokenizer"))
    group.add_argument("--lower", action=argparse.BooleanOptionalAction,
                       help=_help("lower-case the text", cls, "lower"))
    group.add_argument("--min-freq", type=POSITIVE, metavar="N",
                       help=_help("tokens seen fewer than N times become <unk>", cls,
                                  "min_freq"))
    group.add_argument("--max-vocab", type=POSITIVE, metavar="N",
                       help=_help("keep only the N most frequent tokens", cls, "max_vocab",
                                  none="no limit"))


def _add_training_options(group, task, cls):
    group.add_argument("--epochs", type=POSITIVE, metavar="N",
                       help=_help("passes over the data; with --resume, the total "
                                  "including the earlier ones", cls, "epochs"))
    group.add_argument("--batch-size", type=POSITIVE, metavar="B",
                       help=_help("parallel text streams per batch" if task == "lm"
                                  else "sequences per batch", cls, "batch_size"))
    if task == "lm":
        group.add_argument("--bptt", type=POSITIVE, metavar="T",
                           help=_help("steps per chunk of truncated backpropagation through "
                                      "time", cls, "bptt"))
    if task == "seq2seq":
        group.add_argument("--teacher-forcing", type=float_in(0.0, 1.0), metavar="R",
                           help=_help("probability of feeding the true previous token while "
                                      "training", cls, "teacher_forcing"))
    group.add_argument("--optimizer", choices=tuple(OPTIMIZERS),
                       help=_help("optimizer", cls, "optimizer"))
    group.add_argument("--lr", type=POSITIVE_FLOAT,
                       help=f"learning rate (default: {_optimizer_defaults('lr')})")
    group.add_argument("--weight-decay", type=NON_NEGATIVE_FLOAT, metavar="W",
                       help=f"weight decay (default: {_optimizer_defaults('weight_decay')})")
    group.add_argument("--clip-norm", type=POSITIVE_FLOAT, metavar="C",
                       help=_help("clip the gradient norm to C", cls, "clip_norm",
                                  none="no clipping"))
    group.add_argument("--patience", type=POSITIVE, metavar="N",
                       help="stop when the validation loss has not improved for N "
                            "epochs, and save the weights of the best epoch")
    group.add_argument("--seed", type=int, default=0, metavar="N",
                       help="seed for the weights and the data order (default: %(default)s)")
    add_threads_option(group)
    group.add_argument("--checkpoint", metavar="PATH",
                       help="write a training checkpoint after every epoch (PATH may "
                            "contain {epoch}); continue the run with --resume")
    group.add_argument("--resume", metavar="PATH",
                       help="continue from a checkpoint written by --checkpoint (same "
                            "data and options; new checkpoints go to PATH unless "
                            "--checkpoint says otherwise)")
    group.add_argument("--plot", metavar="PNG",
                       help="save the loss and metric curves as an image (needs matplotlib)")
    group.add_argument("--distributed", action="store_true",
                       help="data-parallel training over the ranks of `mpiexec -n N fastrnn "
                            "train ...` (needs fastrnn[mpi]); --batch-size is the global "
                            "batch; rank 0 prints and writes the model and checkpoints")
    group.add_argument("--sharded", action="store_true",
                       help="with --distributed: each rank reads only its own part of the "
                            "data, from the DATA (and --validation-data) path with {rank} "
                            "filled in (train-{rank}.tsv)")
    group.add_argument("-q", "--quiet", action="store_true",
                       help="print nothing but errors and warnings")


# -- the command ------------------------------------------------------------------------------

def train_command(args):
    task, cls = args.task, task_classes()[args.task]
    _check_options(args)
    if not _join_ranks(args):
        args.quiet = True           # ranks other than 0 train silently and write nothing
    apply_threads(args)
    X, y = _read_training_data(task, args.data, args)
    if task != "lm":
        check_task_shape(task, X, y, display_name(args.data))
    fit_kwargs, early_stopping = _fit_arguments(args, task, cls)
    with library_call("invalid option"):
        model = cls(**_options(args, MODEL_OPTIONS, cls.__init__))
    if not args.quiet:
        _print_plan(model, task, X, y, args, fit_kwargs)
    start = time.perf_counter()
    with library_call("cannot train"):
        model.fit(X, **fit_kwargs) if task == "lm" else model.fit(X, y, **fit_kwargs)
    history = model.history_
    elapsed = time.perf_counter() - start
    if not getattr(model, "is_fitted_", False) or (not history.epoch and not args.resume):
        if history.interrupted:
            print(f"fastrnn train {task}: interrupted before the first epoch ended; nothing "
                  f"saved", file=sys.stderr)
            return EXIT_INTERRUPTED
        if history.non_finite:        # the trainer's warning has said where
            raise CLIError("training diverged (NaN/infinite values) before the first epoch "
                           "ended; nothing saved: try a lower --lr or --clip-norm")
        raise CLIError(f"training stopped before the first epoch ended "
                       f"({history.stop_message or 'no epoch completed'}); nothing saved")
    if getattr(args, "rank", 0) != 0:
        return EXIT_INTERRUPTED if history.interrupted else 0
    with library_call(f"cannot save to {args.output}"):
        model.save(args.output)
    if not args.quiet:
        _print_summary(history, elapsed, early_stopping)
        print(f"Saved the model to {args.output}")
    if args.plot is not None:
        _plot(history, args)
    if history.interrupted:
        _print_interrupted(history, args)
        return EXIT_INTERRUPTED
    return 0


def _join_ranks(args):
    """For --distributed: join the MPI world (``args.rank``); True on the rank
    that prints and writes (always True without --distributed)."""
    args.rank = 0
    if not args.distributed:
        if args.sharded:
            raise CLIError("--sharded needs --distributed")
        return True
    try:
        from ..distributed import init
        args.rank = init().rank
    except ImportError as exc:
        raise CLIError(f"--distributed: {exc}") from None
    if args.sharded:
        _rank_paths(args)
    return args.rank == 0


def _rank_paths(args):
    """--sharded: this rank's data files, ``{rank}`` filled in."""
    paths = args.data if isinstance(args.data, list) else [args.data]
    if not all("{rank}" in path for path in paths):
        raise CLIError(f"--sharded: every DATA path must contain {{rank}} (each "
                       f"rank reads its own part, e.g. train-{{rank}}.tsv), got {paths}")
    rank = str(args.rank)
    filled = [path.replace("{rank}", rank) for path in paths]
    args.data = filled if isinstance(args.data, list) else filled[0]
    if args.validation_data is not None:
        args.validation_data = args.validation_data.replace("{rank}", rank)
    mine = args.data if isinstance(args.data, list) else [args.data]
    missing = [path for path in mine + [args.validation_data]
               if path is not None and not os.path.isfile(path)]
    from ..distributed import init
    from ..distributed.training import together

    def check():        # on every rank at once: a rank alone in error would leave
        if missing:     # the others waiting for it
            raise CLIError(f"--sharded: rank {args.rank} has no file "
                           f"{', '.join(missing)}")
    from ..distributed import DistributedError
    try:
        together(init(), "reading the data files", check)
    except DistributedError as exc:
        raise CLIError(f"--sharded: {exc}") from None


def _fit_arguments(args, task, cls):
    """(keyword arguments of ``model.fit``, the EarlyStopping callback or None)."""
    from ..training import EarlyStopping, ModelCheckpoint

    fit_kwargs = _options(args, FIT_OPTIONS, cls.fit)
    if args.validation_data is not None:
        X_val, y_val = _read_training_data(task, args.validation_data, args)
        fit_kwargs["validation_data"] = X_val if task == "lm" else (X_val, y_val)
    elif args.patience is not None and args.validation_split is None:
        fit_kwargs["validation_split"] = 0.1
    callbacks, early_stopping = [], None
    if args.patience is not None:
        early_stopping = EarlyStopping(monitor="val_loss", patience=args.patience,
                                       restore_best_weights=True)
        callbacks.append(early_stopping)
    if args.checkpoint is not None:
        callbacks.append(ModelCheckpoint(args.checkpoint))
    fit_kwargs.update(callbacks=callbacks, verbose=0 if args.quiet else 1,
                      resume_from=args.resume)
    if args.distributed:
        fit_kwargs["distributed"] = "sharded" if args.sharded else True
    return fit_kwargs, early_stopping


def _check_options(args):
    """Everything that can be checked before reading data and training."""
    check_writable(args.output)
    if args.plot is not None:
        check_writable(args.plot, "--plot")
        try:
            importlib.import_module("matplotlib.figure")   # fail before training, not after
        except ImportError:
            raise CLIError("--plot needs matplotlib, which is not installed "
                           "(pip install matplotlib)") from None
    if args.validation_data is not None and args.validation_split is not None:
        raise CLIError("give either --validation-data or --validation-split, not both")
    if args.resume is not None:
        if not os.path.isfile(args.resume):
            raise CLIError(f"--resume {args.resume}: no such checkpoint file")
        if args.checkpoint is None:
            args.checkpoint = args.resume      # keep checkpointing where the run left off
    if args.checkpoint is not None and "{" not in args.checkpoint:
        check_writable(args.checkpoint, "--checkpoint")


def _read_training_data(task, path, args):
    """(inputs, targets) of ``fastrnn train TASK`` (targets None for lm)."""
    if task == "lm":
        return read_texts(path if isinstance(path, list) else [path], args.lines), None
    if task == "classify":
        return read_pairs(path, args.format, ("text", "label"))
    if task == "seq2seq":
        return read_pairs(path, args.format, ("source", "target"), label_is_text=True)
    if task == "tag":
        return read_tagged(path, args.format)
    return read_regression(path, args.format)


def _options(args, mapping, function):
    """Keyword arguments of ``function`` from the options the user gave (None:
    not given, so the model's default applies)."""
    accepted = inspect.signature(function).parameters
    chosen = {}
    for dest, parameter in mapping.items():
        value = getattr(args, dest, None)
        if value is not None:
            if parameter not in accepted:      # the parsers offer only what applies
                raise CLIError(f"--{dest.replace('_', '-')} does not apply to "
                               f"{function.__qualname__}")
            chosen[parameter] = value
    return chosen


def _describe_data(task, X, y):
    """``"200 examples (2 labels)"``: what was read, in the task's terms."""
    if task == "lm":
        return f"{plural(len(X), 'text')} ({plural(sum(map(len, X)), 'character')})"
    if task == "classify":
        return f"{plural(len(X), 'example')} ({plural(len(set(map(str, y))), 'label')})"
    if task == "tag":
        tags = {tag for tags in y for tag in tags}
        return (f"{plural(len(X), 'sentence')} ({plural(sum(map(len, X)), 'token')}, "
                f"{plural(len(tags), 'tag')})")
    if task == "seq2seq":
        return plural(len(X), "pair")
    features = sorted({x.shape[1] if x.ndim == 2 else 1 for x in X})
    width = 1 if y.ndim == 1 else y.shape[1]
    return (f"{plural(len(X), 'sequence')} ({' or '.join(map(str, features))} "
            f"{'feature' if features == [1] else 'features'} per step, "
            f"{plural(width, 'target value')} each)")


def _print_plan(model, task, X, y, args, fit_kwargs):
    data = ", ".join(args.data) if task == "lm" else args.data
    lines = [f"Training {model!r} on {_describe_data(task, X, y)} from {data}"]
    if args.validation_data is not None:
        validation = fit_kwargs["validation_data"]
        X_val, y_val = (validation, None) if task == "lm" else validation
        lines.append(f"  validation: {_describe_data(task, X_val, y_val)} from "
                     f"{args.validation_data}")
    elif fit_kwargs.get("validation_split"):
        lines.append(f"  validation: {fit_kwargs['validation_split']:.0%} of the data held "
                     f"out")
    if args.resume is not None:
        lines.append(f"  resuming from {args.resume}")
    print("\n".join(lines), flush=True)


def _format_metrics(logs):
    """``"loss 0.6488, accuracy 0.8063, val_loss 0.6353"`` (the lr left out)."""
    def number(value):
        return f"{value:.4f}" if value == 0 or 1e-3 <= abs(value) < 1e5 else f"{value:.3e}"
    return ", ".join(f"{name} {number(value)}" for name, value in logs.items() if name != "lr")


def _epoch_logs(history, epoch):
    """The metrics of epoch ``epoch`` (0-based), or None when this run did not record it."""
    if epoch not in history.epoch:
        return None
    index = history.epoch.index(epoch)
    return {name: values[index] for name, values in history.history.items()}


def _print_summary(history, elapsed, early):
    """The last epoch's metrics, and which epoch's weights were saved when that differs."""
    if history.epoch:
        last = history.epoch[-1]
        print(f"After epoch {last + 1} ({plural(len(history.epoch), 'epoch')} in "
              f"{elapsed:.1f} s): {_format_metrics(_epoch_logs(history, last))}")
    if early is not None and early.best_epoch is not None \
            and (not history.epoch or early.best_epoch != history.epoch[-1]):
        best = _epoch_logs(history, early.best_epoch)
        why = (f"{early.monitor} has not improved for {plural(early.wait, 'epoch')}"
               if early.stopped_epoch is not None else "the last epoch was not the best")
        print(f"Early stopping: {why}; saved the weights of epoch {early.best_epoch + 1}"
              + (f": {_format_metrics(best)}" if best else ""))
    elif history.non_finite:      # the trainer's warning says where; say what to change
        print("Stopped early on a NaN/infinite loss or gradient: try a lower --lr or "
              "--clip-norm")


def _print_interrupted(history, args):
    """After Ctrl-C (the trainer has said where it stopped): how to continue."""
    if args.checkpoint is None:
        how = "next time, --checkpoint PATH makes an interrupted run resumable"
    elif "{" in args.checkpoint:
        how = f"to continue, repeat the command with --resume and the last {args.checkpoint} file"
    else:
        how = f"to continue, repeat the command with --resume {args.checkpoint}"
    print(f"fastrnn train {args.task}: interrupted; saved the model as it was to "
          f"{args.output}; {how}", file=sys.stderr)


def _plot(history, args):
    try:
        history.plot(args.plot)
    except ImportError as exc:
        raise CLIError(str(exc)) from None
    except ValueError as exc:
        raise CLIError(f"--plot {args.plot}: {exc}") from None
    if not args.quiet:
        print(f"Saved the training curves to {args.plot}")
