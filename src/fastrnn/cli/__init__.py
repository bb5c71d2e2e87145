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

Modules: ``main`` (the parser and the entry point), one module per command
or family (``demo``, ``train``, ``use`` for generate/predict/evaluate,
``bench``, ``info``; each has ``add_parser`` next to its command), ``readers``
(the data file formats) and ``common`` (errors, argument types, loading
models, calling the library).
"""

from .main import build_parser, main

__all__ = ["main", "build_parser"]
