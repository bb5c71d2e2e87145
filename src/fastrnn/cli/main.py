"""The argument parser and the entry point."""

import os
import sys

from .. import _process
from . import bench, demo, export, info, train, use
from .common import CLIError, EXIT_INTERRUPTED, EXIT_USAGE, Parser, traceback_wanted


def build_parser():
    parser = Parser(prog="fastrnn", description="fastrnn: fast CPU recurrent neural "
                    "networks. Train, use and measure RNN/LSTM/GRU task models.",
                    epilog="Run `fastrnn COMMAND --help` for the options of a command. "
                           "Mistakes in arguments or data files print one line on stderr "
                           "and exit with status 2 (FASTRNN_TRACEBACK=1 shows where).")
    parser.add_argument("--version", action="version", version=f"fastrnn {_package_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                     parser_class=Parser)
    # In the order `fastrnn --help` lists them.
    demo.add_parser(commands)
    train.add_parser(commands)
    use.add_parsers(commands)          # generate, predict, evaluate
    export.add_parser(commands)
    bench.add_parser(commands)
    info.add_parser(commands)
    return parser


def _package_version():
    from .. import __version__
    return __version__


def main(argv=None):
    """Run the command line; returns the exit status (0 ok, 2 user error, 130 Ctrl-C)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _process.keep_freed_arrays_mapped()     # the command owns its process (see _process)
    command = " ".join(filter(None, ("fastrnn", args.command, getattr(args, "task", None))))
    try:
        return args.func(args)
    except CLIError as exc:
        if traceback_wanted():
            raise
        print(f"{command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `fastrnn predict ... | head`: the reader left; not an error.  Point stdout
        # at /dev/null so the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":          # pragma: no cover - `python -m fastrnn` uses __main__
    sys.exit(main())
