"""The commands that use a saved model: generate, predict, evaluate."""

import argparse
import inspect
import json
import math
import sys

import numpy as np

from .common import (CLIError, DATA_FORMATS, NON_NEGATIVE, POSITIVE, add_threads_option,
                     apply_threads, float_in, library_call, load_model, task_classes)
from .readers import (display_name, read_inputs, read_pairs, read_regression, read_tagged,
                      read_texts)
from .shape import check_task_shape, warn_unseen


def add_parsers(commands):
    _add_generate_parser(commands)
    _add_predict_parser(commands)
    _add_evaluate_parser(commands)


def _add_generate_parser(commands):
    generate = commands.add_parser("generate", help="sample text from a language model",
                                   description="Continue a prompt with a language model "
                                               "trained by `fastrnn train lm` or `fastrnn "
                                               "demo`, and print the prompt and its "
                                               "continuation.")
    generate.add_argument("model", metavar="MODEL", help="a saved language model (.npz)")
    generate.add_argument("--prompt", default="", help="text to continue (default: start "
                                                       "a new text)")
    generate.add_argument("--length", type=NON_NEGATIVE, default=200, metavar="N",
                          help="tokens to generate: characters or words, as the model was "
                               "trained (default: %(default)s)")
    generate.add_argument("--temperature", type=float_in(0.0, math.inf, high_open=True),
                          default=1.0, metavar="T",
                          help="< 1 safer, > 1 more varied, 0 greedy (default: %(default)s)")
    generate.add_argument("--top-k", type=POSITIVE, metavar="K",
                          help="sample among the K most probable tokens only")
    generate.add_argument("--top-p", type=float_in(0.0, 1.0, low_open=True), metavar="P",
                          help="nucleus sampling: among the most probable tokens whose "
                               "probabilities add up to P")
    generate.add_argument("--stop-at-eos", action="store_true",
                          help="end a sample where the model ends its text (useful for "
                               "models trained with --lines, e.g. on names)")
    generate.add_argument("-n", "--num-samples", type=POSITIVE, default=1, metavar="N",
                          help="number of samples, separated by --- lines "
                               "(default: %(default)s)")
    generate.add_argument("--seed", type=int, metavar="N",
                          help="seed for reproducible samples (sample i uses N + i)")
    add_threads_option(generate)
    generate.set_defaults(func=generate_command)


def _seq2seq_default(parameter):
    value = inspect.signature(task_classes()["seq2seq"].predict).parameters[parameter]
    return value.default


def _add_decoding_options(parser):
    parser.add_argument("--max-length", type=POSITIVE, metavar="N",
                        help=f"seq2seq: longest output in tokens (default: "
                             f"{_seq2seq_default('max_length')})")
    parser.add_argument("--beam-size", type=POSITIVE, metavar="K",
                        help=f"seq2seq: beam search width; 1 is greedy (default: "
                             f"{_seq2seq_default('beam_size')})")


def _add_predict_parser(commands):
    predict = commands.add_parser(
        "predict", help="print one prediction per input",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Apply a saved model to every input and print one prediction per line:
  classify: the label           input: one text per line
  tag:      the tags, space-separated
                                input: one sentence per line, tokens separated
                                by spaces; or CoNLL (one token per line, a
                                blank line between sentences)
  seq2seq:  the output text     input: one source text per line
  regress:  the value(s)        input: numbers per line, spaces or commas
A tab ends the input of a line, so the training files (TSV, CoNLL) work as
they are: labels and targets are ignored.  JSONL works too (keys "text",
"tokens", "source", "sequence"; other keys are ignored).""")
    predict.add_argument("model", metavar="MODEL", help="a saved model (.npz)")
    predict.add_argument("input", metavar="INPUT", help="input file, or - for stdin")
    predict.add_argument("--format", default="auto", choices=("auto", "lines", "conll", "jsonl"),
                         help="input format (default: auto: JSONL for .jsonl files or when "
                              "the first line is a JSON object; for tag, CoNLL for .conll "
                              "files or when a line has a tab; else lines)")
    _add_decoding_options(predict)
    add_threads_option(predict)
    predict.set_defaults(func=predict_command)


def _add_evaluate_parser(commands):
    evaluate = commands.add_parser(
        "evaluate", help="score a saved model on labelled data",
        description="Score a saved model on data in its training format (see `fastrnn "
                    "train TASK --help`): lm -> loss, perplexity (and bits per character "
                    "at character level); classify -> accuracy; tag -> token accuracy and "
                    "entity precision/recall/F1; seq2seq -> exact match and token "
                    "accuracy; regress -> R^2 and RMSE next to the RMSE of predicting the "
                    "mean.")
    evaluate.add_argument("model", metavar="MODEL", help="a saved model (.npz)")
    evaluate.add_argument("data", metavar="DATA", help="data file in the training format")
    evaluate.add_argument("--format", default="auto", choices=("auto", "tsv", "conll", "jsonl"),
                          help="data format: tsv or jsonl (classify, seq2seq, regress), "
                               "conll or jsonl (tag) (default: auto, as in fastrnn train)")
    evaluate.add_argument("--lines", action="store_true",
                          help="lm: each non-blank line is a separate text")
    _add_decoding_options(evaluate)
    evaluate.add_argument("--json", action="store_true",
                          help="print the scores as one JSON object")
    add_threads_option(evaluate)
    evaluate.set_defaults(func=evaluate_command)


def _check_applies(args, task, model):
    """Options that do not apply to this model's task are mistakes, as in ``train``."""
    kind = type(model).__name__
    if task != "seq2seq":
        for name in ("max_length", "beam_size"):
            if getattr(args, name, None) is not None:
                raise CLIError(f"--{name.replace('_', '-')} applies to Seq2Seq models only; "
                               f"{args.model} is a {kind}")
    if getattr(args, "lines", False) and task != "lm":
        raise CLIError(f"--lines applies to language models only; {args.model} is a {kind}")
    fmt = getattr(args, "format", "auto")
    if fmt == "auto":
        return
    if args.command == "evaluate":
        allowed = DATA_FORMATS[task]
    else:
        allowed = ("lines", "conll", "jsonl") if task == "tag" else ("lines", "jsonl")
    if fmt not in allowed:
        choices = f"use {' or '.join(allowed)}" if allowed else "it reads plain text"
        raise CLIError(f"--format {fmt} does not apply to a {kind} ({choices})")


def _seq2seq_options(args):
    return {name: getattr(args, name) for name in ("max_length", "beam_size")
            if getattr(args, name) is not None}


# -- generate ---------------------------------------------------------------------------------

def generate_command(args):
    model, task = load_model(args.model)
    if task != "lm":
        raise CLIError(f"{args.model} is a {type(model).__name__}; generate needs a "
                       f"language model (use fastrnn predict)")
    apply_threads(args)
    with library_call("cannot generate"):
        texts = [model.generate(args.prompt, length=args.length,
                                temperature=args.temperature, top_k=args.top_k,
                                top_p=args.top_p, stop_at_eos=args.stop_at_eos,
                                seed=None if args.seed is None else args.seed + i)
                 for i in range(args.num_samples)]
    print("\n---\n".join(texts))
    return 0


# -- predict ----------------------------------------------------------------------------------

def _format_prediction(task, value):
    if task == "tag":
        return " ".join(map(str, value))
    if task == "regress":
        return " ".join(f"{v:.6g}" for v in np.atleast_1d(np.asarray(value, dtype=np.float64)))
    if isinstance(value, np.generic):
        value = value.item()
    return str(value).replace("\n", " ")


def predict_command(args):
    model, task = load_model(args.model)
    if task == "lm":
        raise CLIError(f"{args.model} is a language model; use fastrnn generate (text) or "
                       f"fastrnn evaluate (perplexity)")
    _check_applies(args, task, model)
    apply_threads(args)
    inputs = read_inputs(args.input, task, args.format)
    if task == "regress":
        _check_features(model, inputs, args.input)
    with library_call(f"cannot predict on {display_name(args.input)}"):
        predictions = model.predict(inputs, **_seq2seq_options(args))
    sys.stdout.writelines(_format_prediction(task, value) + "\n" for value in predictions)
    return 0


def _check_features(model, sequences, path):
    """A regressor's inputs must have the features per step it was trained on."""
    expected = model.inputs_.num_features
    found = sorted({x.shape[1] if x.ndim == 2 else 1 for x in sequences})
    if found != [expected]:
        hint = (" (TSV lines give one number per step; use JSONL {\"sequence\": "
                "[[f1, f2, ...], ...]} for more)" if expected > 1 else "")
        raise CLIError(f"{display_name(path)}: the model expects {expected} feature(s) per step, "
                       f"the data has {' or '.join(map(str, found))}{hint}")


# -- evaluate ---------------------------------------------------------------------------------

def evaluate_command(args):
    model, task = load_model(args.model)
    _check_applies(args, task, model)
    apply_threads(args)
    scorer = {"lm": _score_lm, "classify": _score_classifier, "tag": _score_tagger,
              "seq2seq": _score_seq2seq, "regress": _score_regressor}[task]
    results = scorer(model, args)
    if args.json:
        print(json.dumps(results))
    else:
        for name, value in results.items():
            label = name.replace("_", " ")
            print(f"{label}: {value}" if isinstance(value, int) else f"{label}: {value:.4f}")
    return 0


def _score_lm(model, args):
    texts = read_texts([args.data], args.lines)
    with library_call(f"cannot evaluate on {display_name(args.data)}"):
        return dict(model.evaluate(texts))


def _score_classifier(model, args):
    X, y = read_pairs(args.data, args.format, ("text", "label"))
    check_task_shape("classify", X, y, display_name(args.data), "evaluate")
    warn_unseen(y, [_format_prediction("classify", c) for c in model.classes_],
                display_name(args.data))
    with library_call(f"cannot evaluate on {display_name(args.data)}"):
        predicted = model.predict(X)
    # Labels compare as text: a TSV file's "1" is the label 1 of a JSONL file.
    hits = [_format_prediction("classify", p) == str(t) for p, t in zip(predicted, y)]
    return {"accuracy": float(np.mean(hits)), "examples": len(y)}


def _score_tagger(model, args):
    X, y = read_tagged(args.data, args.format)
    check_task_shape("tag", X, y, display_name(args.data), "evaluate")
    warn_unseen([tag for tags in y for tag in tags], model.classes_, display_name(args.data),
                "tags")
    with library_call(f"cannot evaluate on {display_name(args.data)}"):
        results = dict(model.score(X, y))
    return {**results, "sentences": len(X)}


def _score_seq2seq(model, args):
    X, y = read_pairs(args.data, args.format, ("source", "target"), label_is_text=True)
    with library_call(f"cannot evaluate on {display_name(args.data)}"):
        results = dict(model.score(X, y, **_seq2seq_options(args)))
    return {**results, "examples": len(y)}


def _score_regressor(model, args):
    X, y = read_regression(args.data, args.format)
    _check_features(model, X, args.data)
    truth = np.asarray(y, dtype=np.float64).reshape(len(X), -1)
    if truth.shape[1] != model.n_outputs_:
        raise CLIError(f"{display_name(args.data)}: the model predicts {model.n_outputs_} "
                       f"value(s) per sequence, the targets have {truth.shape[1]}")
    with library_call(f"cannot evaluate on {display_name(args.data)}"):
        predicted = np.asarray(model.predict(X), dtype=np.float64).reshape(truth.shape)
    squares = ((truth - predicted) ** 2).sum()
    spread = ((truth - truth.mean(axis=0)) ** 2).sum()
    return {"r2": 1.0 - float(squares / spread) if spread > 0 else 0.0,
            "rmse": float(np.sqrt(squares / truth.size)),
            "rmse_of_mean": float(np.sqrt(spread / truth.size)),
            "examples": len(X)}
