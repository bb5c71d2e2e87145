"""The argument parser and the entry point."""

import argparse
import math
import os
import sys

from .bench import bench_command
from .commands import (add_train_parser, demo_command, evaluate_command, generate_command,
                       info_command, predict_command)
from .common import (CELLS, CLIError, DEMO_DEFAULTS, EXIT_USAGE, NON_NEGATIVE, POSITIVE,
                     POSITIVE_FLOAT, Parser, float_in, int_at_least)


# -- the parser -------------------------------------------------------------------------------

def build_parser():
    parser = Parser(prog="fastrnn", description="fastrnn: fast CPU recurrent neural "
                     "networks. Train, use and measure RNN/LSTM/GRU task models.",
                     epilog="Run `fastrnn COMMAND --help` for the options of a command.")
    parser.add_argument("--version", action="version", version=f"fastrnn {_package_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                     parser_class=Parser)

    demo = commands.add_parser(
        "demo", help="train a character-level language model on the Python standard "
                     "library's docstrings (about 2 minutes)",
        description="Build a corpus from the docstrings of this Python's standard library "
                    "(no download), train a character-level LSTM language model on 90% of "
                    "it with a time budget, report validation bits per character next to the "
                    "unigram entropy (what a model without context would score), print "
                    "samples at three temperatures and save the model.")
    demo.add_argument("--max-chars", type=int_at_least(2000), metavar="N",
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
    demo.set_defaults(func=demo_command)

    add_train_parser(commands)

    generate = commands.add_parser("generate", help="sample text from a language model",
                                   description="Continue a prompt with a language model "
                                               "trained by `fastrnn train lm` or `fastrnn demo`.")
    generate.add_argument("model", metavar="MODEL", help="a saved language model (.npz)")
    generate.add_argument("--prompt", default="", help="text to continue (default: start "
                                                       "a new text)")
    generate.add_argument("--length", type=NON_NEGATIVE, default=200, metavar="N",
                          help="tokens to generate (default: %(default)s)")
    generate.add_argument("--temperature", type=float_in(0.0, math.inf, high_open=True),
                          default=1.0, metavar="T",
                          help="< 1 safer, > 1 more varied, 0 greedy (default: %(default)s)")
    generate.add_argument("--top-k", type=POSITIVE, metavar="K",
                          help="sample among the K most probable tokens only")
    generate.add_argument("--top-p", type=float_in(0.0, 1.0, low_open=True), metavar="P",
                          help="nucleus sampling: the most probable tokens covering P")
    generate.add_argument("--seed", type=int, help="seed for reproducible samples")
    generate.add_argument("-n", "--num-samples", type=POSITIVE, default=1, metavar="N",
                          help="number of samples (default: %(default)s)")
    generate.set_defaults(func=generate_command)

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
    predict.set_defaults(func=predict_command)

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
    evaluate.set_defaults(func=evaluate_command)

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
    bench.set_defaults(func=bench_command)

    info = commands.add_parser("info", help="version, OpenMP, threads, BLAS, dependencies",
                               description="Print what this fastrnn runs on.")
    info.set_defaults(func=info_command)
    return parser


def _cell_list(text):
    cells = [cell.strip() for cell in text.split(",") if cell.strip()]
    bad = [cell for cell in cells if cell not in CELLS]
    if not cells or bad:
        raise argparse.ArgumentTypeError(f"must be a comma-separated list of "
                                         f"{', '.join(CELLS)}, got {text!r}")
    return cells


def _package_version():
    from .. import __version__
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
