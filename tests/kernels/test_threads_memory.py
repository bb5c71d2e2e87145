"""Thread count control, agreement across thread counts, determinism, memory
stability over many iterations, and use from several Python threads."""

import gc
import itertools
import os
import subprocess
import sys
import threading
import tracemalloc
import zlib

import numpy as np
import pytest

import fastrnn as fr
from helpers import CELLS, make_inputs, make_layer, run_fastrnn


def _tolerance(dtype):
    return (1e-6, 1e-9) if np.dtype(dtype) == np.float64 else (1e-5, 1e-5)


def _assert_close(a, b, dtype, context=""):
    rtol, atol = _tolerance(dtype)
    assert set(a) == set(b)
    for key in a:
        scale = max(1.0, float(np.max(np.abs(b[key]))))
        np.testing.assert_allclose(a[key], b[key], rtol=rtol, atol=atol * scale,
                                   err_msg=f"{context} {key}")


def _assert_identical(a, b, context=""):
    assert set(a) == set(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=f"{context} {key}")


# -- the setting itself -----------------------------------------------------------

@pytest.mark.parametrize("value", [0, -1, "2", 2.0, None, True, False, 1.5])
def test_set_num_threads_rejects_bad_values(value, restore_num_threads):
    before = fr.get_num_threads()
    with pytest.raises(ValueError, match=r"set_num_threads|\bn\b"):
        fr.set_num_threads(value)
    assert fr.get_num_threads() == before


@pytest.mark.parametrize("n", [1, 2, 3, 8])
def test_set_get_num_threads(n):
    fr.set_num_threads(n)
    assert fr.get_num_threads() == n


def test_openmp_enabled_is_bool():
    assert isinstance(fr.openmp_enabled(), bool)


def test_restore_fixture_restores(restore_num_threads):
    # the autouse fixture yields the value it will restore
    assert fr.get_num_threads() == restore_num_threads


# -- results across thread counts -------------------------------------------------

THREAD_CASES = list(itertools.product(CELLS, ("float32", "float64"), (16, 70)))


def _threads_id(case):
    cell, dtype, H = case
    return f"{cell}-{dtype}-H{H}"


def _run_with_threads(n, layer, inputs):
    fr.set_num_threads(n)
    return run_fastrnn(layer, **inputs)


@pytest.mark.parametrize("case", THREAD_CASES, ids=_threads_id)
@pytest.mark.parametrize("lengths", [False, True], ids=["full", "lengths"])
def test_one_vs_two_threads_agree(case, lengths):
    cell, dtype, H = case
    rng = np.random.default_rng(zlib.crc32(repr(case).encode()))
    layer = make_layer(cell, 6, H, num_layers=2, bidirectional=True, dtype=dtype, seed=3)
    inputs = make_inputs(layer, rng, 9, 11, with_hx=True, with_lengths=lengths)
    one = _run_with_threads(1, layer, inputs)
    for n in (2, 3):
        _assert_close(_run_with_threads(n, layer, inputs), one, dtype, context=f"{n} threads")


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("batch", [1, 2, 3])
def test_more_threads_than_rows(cell, batch):
    rng = np.random.default_rng(batch)
    layer = make_layer(cell, 4, 8, num_layers=2, bidirectional=True, dtype="float64", seed=1)
    inputs = make_inputs(layer, rng, 5, batch, with_hx=True, with_lengths=True)
    one = _run_with_threads(1, layer, inputs)
    _assert_close(_run_with_threads(4, layer, inputs), one, "float64")


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("lengths", [False, True], ids=["full", "lengths"])
def test_same_thread_count_is_bit_identical(cell, threads, lengths):
    rng = np.random.default_rng(threads)
    layer = make_layer(cell, 6, 70, num_layers=2, bidirectional=True, dtype="float32", seed=2)
    inputs = make_inputs(layer, rng, 8, 10, with_hx=True, with_lengths=lengths)
    fr.set_num_threads(threads)
    first = run_fastrnn(layer, **inputs)
    for _ in range(3):
        _assert_identical(run_fastrnn(layer, **inputs), first, context=f"{threads} threads")
    layer.eval()
    evaluated = run_fastrnn(layer, **inputs, backward=False)
    for key in evaluated:
        np.testing.assert_array_equal(evaluated[key], first[key], err_msg=key)


def _blas_threads():
    """Thread count of the BLAS the kernels use (None if threadpoolctl can't tell)."""
    from threadpoolctl import threadpool_info
    paths = {info["filepath"] for info in fr.blas_info()}
    counts = [lib["num_threads"] for lib in threadpool_info() if lib["filepath"] in paths]
    return counts[0] if counts else None


@pytest.mark.parametrize("threads", [1, 2])
def test_kernels_restore_blas_thread_count(threads):
    from threadpoolctl import threadpool_limits
    if _blas_threads() is None:
        pytest.skip("threadpoolctl does not see the BLAS used by the kernels")
    rng = np.random.default_rng(0)
    layer = make_layer("lstm", 6, 70, num_layers=2, bidirectional=True, seed=0)
    inputs = make_inputs(layer, rng, 6, 8, with_hx=True, with_lengths=True)
    fr.set_num_threads(threads)
    with threadpool_limits(limits=3, user_api="blas"):
        before = _blas_threads()
        run_fastrnn(layer, **inputs)
        assert _blas_threads() == before


# -- memory -----------------------------------------------------------------------

def _rss_bytes():
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
    except OSError:
        return None
    import os
    return pages * os.sysconf("SC_PAGE_SIZE")


def _iterate(layer, inputs, count, backward=True):
    for _ in range(count):
        out, state = layer.forward(inputs["x"], hx=inputs["hx"], lengths=inputs["lengths"])
        if backward:
            layer.backward(inputs["d_out"], inputs["d_hn"])
        del out, state


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_repeated_calls_do_not_grow_python_memory(cell, mode):
    """tracemalloc sees numpy's buffers: nothing may pile up across iterations."""
    rng = np.random.default_rng(0)
    layer = make_layer(cell, 16, 48, num_layers=2, bidirectional=True, seed=0)
    inputs = make_inputs(layer, rng, 20, 8, with_hx=True, with_lengths=True)
    backward = mode == "train"
    if not backward:
        layer.eval()
    _iterate(layer, inputs, 5, backward)           # warm-up
    gc.collect()
    tracemalloc.start()
    try:
        _iterate(layer, inputs, 2, backward)
        gc.collect()
        start, _ = tracemalloc.get_traced_memory()
        _iterate(layer, inputs, 50, backward)
        gc.collect()
        end, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # one iteration allocates ~100s of kB (gate buffers); 50 leaked ones would be MBs
    assert end - start < 200_000, f"grew by {end - start} bytes over 50 iterations"
    assert peak > 0


def test_repeated_calls_do_not_grow_rss():
    """Resident memory (C-level allocations included) stays flat over many calls."""
    if _rss_bytes() is None:
        pytest.skip("/proc/self/statm not available")
    rng = np.random.default_rng(1)
    layers = [make_layer(cell, 16, H, num_layers=2, bidirectional=True, seed=0)
              for cell, H in itertools.product(CELLS, (24, 80))]
    inputs = [make_inputs(layer, rng, 30, 12, with_hx=True, with_lengths=True)
              for layer in layers]
    for layer, inp in zip(layers, inputs):
        _iterate(layer, inp, 5)
    gc.collect()
    start = _rss_bytes()
    for _ in range(10):
        for layer, inp in zip(layers, inputs):
            _iterate(layer, inp, 5)
    gc.collect()
    grown = _rss_bytes() - start
    print(f"RSS grew by {grown / 2 ** 20:.2f} MiB")
    # 400 forward/backward pairs; a leak of even one gate buffer per call
    # (>= 30*12*4*24*4 bytes = 138 kB) would add > 50 MB
    assert grown < 24 * 2 ** 20, f"RSS grew by {grown / 2 ** 20:.1f} MiB"


# -- several Python threads -------------------------------------------------------

def _in_threads(functions):
    """Run each function in its own thread, started together; re-raise failures."""
    barrier = threading.Barrier(len(functions))
    results, errors = [None] * len(functions), []

    def run(k):
        try:
            barrier.wait()
            results[k] = functions[k]()
        except BaseException as exc:   # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(functions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    if errors:
        raise errors[0]
    return results


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_same_layer_forward_from_two_threads(cell, mode):
    """One layer shared by two Python threads.  In eval mode (inference) both must
    get correct results.  In train mode a forward may instead be refused with a
    RuntimeError (one stored pass per layer), but never silently wrong outputs."""
    rng = np.random.default_rng(2)
    layer = make_layer(cell, 8, 40, num_layers=2, bidirectional=True, dtype="float64", seed=4)
    if mode == "eval":
        layer.eval()
    batches = [make_inputs(layer, rng, 12, 7, with_hx=True, with_lengths=True)
               for _ in range(2)]
    expected = [run_fastrnn(layer, **b, backward=False) for b in batches]

    def work(k):
        def go():
            outcome = "correct"
            for _ in range(15):
                try:
                    got = run_fastrnn(layer, **batches[k], backward=False)
                except RuntimeError:
                    if mode == "eval":
                        raise
                    outcome = "refused"
                    continue
                _assert_close(got, expected[k], "float64", context=f"thread {k}")
            return outcome
        return go

    outcomes = _in_threads([work(0), work(1)])
    if mode == "eval":
        assert outcomes == ["correct", "correct"]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_training_in_two_threads(cell, dtype):
    """Two layers with the same weights trained concurrently give the serial results."""
    rng = np.random.default_rng(3)
    layers = [make_layer(cell, 8, 70, num_layers=2, bidirectional=True, dtype=dtype,
                         seed=5) for _ in range(2)]
    batches = [make_inputs(layers[0], rng, 10, 9, with_hx=True, with_lengths=True)
               for _ in range(2)]
    expected = [run_fastrnn(layers[k], **batches[k]) for k in range(2)]

    def work(k):
        def go():
            for _ in range(8):
                _assert_close(run_fastrnn(layers[k], **batches[k]), expected[k], dtype,
                              context=f"thread {k}")
            return True
        return go

    assert _in_threads([work(0), work(1)]) == [True, True]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("order", [(1, 2), (2, 1), (2, 3)])
@pytest.mark.parametrize("lengths", [False, True], ids=["full", "lengths"])
def test_thread_count_changed_between_forward_and_backward(cell, order, lengths):
    rng = np.random.default_rng(sum(order))
    layer = make_layer(cell, 5, 40, num_layers=2, bidirectional=True, dtype="float64", seed=6)
    inputs = make_inputs(layer, rng, 7, 9, with_hx=True, with_lengths=lengths)
    fr.set_num_threads(order[0])
    ref = run_fastrnn(layer, **inputs)
    layer.zero_grad()
    out, _ = layer.forward(inputs["x"], hx=inputs["hx"], lengths=inputs["lengths"])
    fr.set_num_threads(order[1])
    d_x, _ = layer.backward(inputs["d_out"], inputs["d_hn"])
    got = {"d_x": d_x, **{"grad:" + k: v for k, v in layer.grads.items()}}
    _assert_close(got, {k: ref[k] for k in got}, "float64")


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_work_threshold_does_not_change_results(cell):
    """Small problems run on one thread by default; results are the same."""
    from fastrnn._kernels import _runtime

    rng = np.random.default_rng(7)
    x = rng.standard_normal((6, 5, 3))
    d_out = rng.standard_normal((6, 5, 8))
    results = []
    for threshold in (0.0, 1e30):
        _runtime.set_parallel_min_work(threshold)
        fr.set_num_threads(2)
        layer = {"rnn": fr.RNN, "lstm": fr.LSTM, "gru": fr.GRU}[cell](
            3, 4, bidirectional=True, dtype="float64", seed=3)
        out, _ = layer(x, lengths=[6, 2, 5, 1, 3])
        d_x, _ = layer.backward(d_out)
        results.append((out, d_x, layer.grads["weight_hh_l0"].copy()))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)



def _settings_after_import(**env_changes):
    """(malloc tuned?, OpenMP spin limited?, GOMP_SPINCOUNT in os.environ, and
    in a subprocess started after the import) seen by a fresh interpreter
    importing fastrnn with none of the user's own MALLOC_* / OpenMP wait
    settings, plus ``env_changes``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MALLOC_") and k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY",
                                                        "FASTRNN_MALLOC_TUNING")}
    env.update(env_changes)
    code = ("import os, subprocess, sys, fastrnn; from fastrnn import _process; "
            "child = subprocess.run([sys.executable, '-c', "
            "'import os; print(os.environ.get(\"GOMP_SPINCOUNT\"))'], "
            "capture_output=True, text=True, check=True).stdout.strip(); "
            "print(_process.malloc_tuned, _process.openmp_spin_limited, "
            "os.environ.get('GOMP_SPINCOUNT'), child)")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, check=True)
    return result.stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt, /proc")
def test_process_settings_at_import_respect_the_user_and_leave_no_trace():
    # By default: libgomp got the spin limit as it loaded, and the variable is
    # gone again, from this process and from the ones it starts; the allocator
    # is untouched (a process-wide change is the application's to ask for).
    assert _settings_after_import() == ["False", "True", "None", "None"]
    assert _settings_after_import(FASTRNN_MALLOC_TUNING="1")[0] == "True"
    assert _settings_after_import(FASTRNN_MALLOC_TUNING="0")[0] == "False"
    assert _settings_after_import(FASTRNN_MALLOC_TUNING="1",
                                  MALLOC_TRIM_THRESHOLD_="1000000")[0] == "False"
    # The user's own OpenMP wait settings are theirs: kept, and not overridden.
    assert _settings_after_import(GOMP_SPINCOUNT="5")[1:] == ["False", "5", "5"]
    assert _settings_after_import(OMP_WAIT_POLICY="passive")[1:] == ["False", "None", "None"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_the_fastrnn_command_tunes_its_own_allocator():
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MALLOC_") and k != "FASTRNN_MALLOC_TUNING"}
    code = ("import fastrnn; from fastrnn import _process; from fastrnn.cli import main; "
            "before = _process.malloc_tuned; main(['info']); "
            "print('TUNED', before, _process.malloc_tuned)")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, check=True)
    assert result.stdout.split()[-3:] == ["TUNED", "False", "True"]
