"""The layer structures the recurrent-layer tests run over, and a result comparison."""

import itertools

import numpy as np

from helpers import CELLS


STRUCTURES = list(itertools.product(CELLS, (1, 2, 3), (False, True), (True, False)))


def _structure_id(structure):
    cell, layers, bi, bias = structure
    return f"{cell}-L{layers}" + ("-bi" if bi else "") + ("" if bias else "-nobias")


def _assert_results_equal(a, b):
    assert set(a) == set(b)
    for key in a:
        if a[key] is None or b[key] is None:
            assert a[key] is None and b[key] is None, key
        else:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
