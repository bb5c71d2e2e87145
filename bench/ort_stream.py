#!/usr/bin/env python
"""fastrnn vs ONNX Runtime vs torch: the issue-12 tables, from compare.py.

The ORT workloads, the inference rows and the streaming section live in
``compare.py`` (one place); this runs only those parts::

    python bench/ort_stream.py            # = compare.py --cells lstm,gru,rnn
                                          #   --sections main,stream --no-jax --no-numpy
    python bench/ort_stream.py --quick    # extra arguments go to compare.py
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import compare  # noqa: E402

if __name__ == "__main__":
    sys.exit(compare.main(["--cells", "lstm,gru,rnn", "--sections", "main,stream",
                           "--no-jax", "--no-numpy"] + sys.argv[1:]))
