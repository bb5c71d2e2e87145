"""Outputs and gradients reused across calls (fastrnn._buffers): a caller who
keeps an earlier array -- or only a view of it -- never sees it overwritten,
and an array nobody holds any more is reused instead of allocated anew."""

import copy
import pickle

import numpy as np
import pytest

import fastrnn as fr
from fastrnn import _buffers
from fastrnn._buffers import Recycler

RNG = np.random.default_rng(7)
T, B, V, E, H = 5, 3, 11, 4, 6


def address(array):
    return array.__array_interface__["data"][0]


def linear_forward(layer, x):
    return layer(x)


def linear_backward(layer, x):
    layer(x)
    return layer.backward(np.ones((T, B, H), dtype=np.float32))


def lstm_forward(layer, x):
    """The output of a training step (the layer's cache holds it until backward)."""
    out = layer(x)[0]
    layer.backward(np.ones((T, B, H), dtype=np.float32))
    return out


def lstm_eval_forward(layer, x):
    return layer.eval()(x)[0]


def lstm_backward(layer, x):
    layer(x)
    return layer.backward(np.ones((T, B, H), dtype=np.float32))[0]


def embedding_forward(layer, ids):
    return layer(ids)


def cross_entropy_grad(criterion, logits):
    return criterion(logits, np.arange(T * B).reshape(T, B) % V)[1]


def inputs(kind):
    if kind == "ids":
        return [RNG.integers(0, V, (T, B)) for _ in range(3)]
    width = {"linear": E, "lstm": E, "logits": V}[kind]
    return [RNG.standard_normal((T, B, width)).astype(np.float32) for _ in range(3)]


CASES = {
    "linear forward": (lambda: fr.Linear(E, H, seed=0), linear_forward, "linear"),
    "linear backward": (lambda: fr.Linear(E, H, seed=0), linear_backward, "linear"),
    "lstm forward": (lambda: fr.LSTM(E, H, seed=0), lstm_forward, "lstm"),
    "lstm eval forward": (lambda: fr.LSTM(E, H, seed=0), lstm_eval_forward, "lstm"),
    "lstm backward": (lambda: fr.LSTM(E, H, seed=0), lstm_backward, "lstm"),
    "embedding forward": (lambda: fr.Embedding(V, E, seed=0), embedding_forward, "ids"),
    "cross-entropy grad": (fr.CrossEntropyLoss, cross_entropy_grad, "logits"),
}


@pytest.mark.parametrize("case", CASES)
def test_kept_results_are_never_overwritten(case):
    make, call, kind = CASES[case]
    owner, xs = make(), inputs(kind)
    first = call(owner, xs[0])
    expected_first = np.array(first)
    view = call(owner, xs[1])[1:]              # only a view of the second is kept
    expected_view = np.array(view)
    for x in xs:
        call(owner, x)
    np.testing.assert_array_equal(first, expected_first)
    np.testing.assert_array_equal(view, expected_view)


@pytest.mark.parametrize("case", CASES)
def test_dropped_results_are_reused_and_recomputed(case):
    make, call, kind = CASES[case]
    owner, fresh, xs = make(), make(), inputs(kind)
    result = call(owner, xs[0])
    before = address(result)
    del result
    reused = call(owner, xs[1])
    assert address(reused) == before
    np.testing.assert_array_equal(reused, call(fresh, xs[1]))   # same values as a new array


@pytest.mark.parametrize("case", ["linear backward", "lstm backward", "embedding forward"])
def test_the_kept_copy_of_a_writable_input_is_recycled(case):
    """Training keeps a private copy of a caller's writable input for
    backward (the caller may refill it first).  The copy goes into the
    module's recycled arrays, not a new array each step, and still gives the
    results of the input that ran."""
    make, call, kind = CASES[case]
    owner, fresh, xs = make(), make(), inputs(kind)
    buffer = xs[0].copy()
    kept = set()
    for x in xs * 2:
        buffer[...] = x                        # the caller refills its one buffer
        result = call(owner, buffer)
        kept |= {address(a) for a in owner._buffers._arrays["private input"]}
        np.testing.assert_array_equal(result, call(fresh, x.copy()))
    assert len(kept) <= _buffers.KEEP


def test_recycler_hands_out_only_idle_arrays_of_the_asked_shape():
    recycler = Recycler()
    a = recycler.empty("y", (4, 3), np.float32)
    b = recycler.empty("y", (4, 3), np.float32)
    assert not np.shares_memory(a, b)          # a is still held
    a_address = address(a)
    del a
    c = recycler.empty("y", (4, 3), np.float32)
    assert address(c) == a_address
    d = recycler.empty("y", (4, 3), np.float64)   # other dtype: a new array
    assert d.dtype == np.float64 and d.shape == (4, 3)
    del b, c, d
    e = recycler.empty("y", (2, 5), np.float32)   # other shape: a new array
    assert e.shape == (2, 5) and e.flags.c_contiguous


def test_recycler_keeps_a_bounded_number_of_small_arrays(monkeypatch):
    recycler = Recycler()
    held = [recycler.empty("y", (8,), np.float32) for _ in range(5)]
    assert len(recycler._arrays["y"]) == _buffers.KEEP
    monkeypatch.setattr(_buffers, "MAX_BYTES", 16)
    big = recycler.empty("z", (8,), np.float32)         # 32 bytes: not kept
    assert recycler._arrays["z"] == []
    assert big.shape == (8,) and len(held) == 5


def test_objects_with_recycled_buffers_pickle_and_copy():
    criterion = fr.CrossEntropyLoss()
    logits = inputs("logits")[0]
    loss, grad = cross_entropy_grad(criterion, logits), None
    for clone in (pickle.loads(pickle.dumps(criterion)), copy.deepcopy(criterion)):
        np.testing.assert_array_equal(cross_entropy_grad(clone, logits), loss)
    layer = fr.Linear(E, H, seed=0)
    x = inputs("linear")[0]
    out = np.array(layer(x))
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(layer))(x), out)
    assert grad is None
