"""Fixtures shared by the fastrnn tests.

Tests marked ``@pytest.mark.torch`` compare against PyTorch.  When torch is
not importable they are skipped locally but FAIL when the ``CI`` environment
variable is set (CI=true), so a CI machine without torch cannot pass silently.
The rule lives in ``helpers.require_torch`` and is applied both by the
``torch`` fixture and, for any test carrying the marker, before setup.
"""

import os
import sys
import zlib

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fastrnn as fr  # noqa: E402

from helpers import require_torch  # noqa: E402


def pytest_runtest_setup(item):
    if item.get_closest_marker("torch") is not None:
        require_torch()


@pytest.fixture
def torch():
    """The torch module (skip locally / fail under CI when missing)."""
    module = require_torch()
    module.manual_seed(0)
    return module


@pytest.fixture(autouse=True)
def restore_num_threads():
    """Every test leaves fastrnn's thread count as it found it."""
    before = fr.get_num_threads()
    yield before
    fr.set_num_threads(before)


@pytest.fixture
def rng(request):
    """A numpy Generator seeded from the test's node id (stable across runs)."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture(autouse=True)
def split_small_problems():
    """Small test problems are split over threads like big ones.

    The kernels run problems below a work threshold on one thread (a
    parallel region costs more than it saves there); the tests use small
    problems, so they lower the threshold to exercise the parallel paths.
    """
    from fastrnn._kernels import _runtime

    before = _runtime.get_parallel_min_work()
    _runtime.set_parallel_min_work(0)
    yield
    _runtime.set_parallel_min_work(before)
