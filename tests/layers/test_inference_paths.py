"""The inference forward's paths (issue 12): the small-batch product, the
input products of many steps as one product (no padding), the column
split of the gate units over threads (B <= 4), and the pipeline (B = 1:
a second thread makes the input products ahead).

Every path must give the same bits as the others whatever the thread count
(each output element is the same sequence of operations), equal a stream
stepping through the sequence, and match PyTorch.
"""

import contextlib
import os
import subprocess
import sys

import numpy as np
import pytest

import fastrnn as fr
from fastrnn._kernels import _runtime
from fastrnn._kernels._dispatch import _recurrent as kernels

from helpers import make_layer, require_torch

VARIANTS = [("lstm", {}), ("gru", {}), ("rnn_tanh", {}), ("rnn_relu", {}),
            ("lstm", {"cell_clip": 0.7}), ("lstm", {"input_forget": True}),
            ("lstm", {"peepholes": True}), ("lstm", {"proj_size": 24}),
            ("gru", {"reset_after": False})]


@contextlib.contextmanager
def threads(n, split_min_hidden=None):
    """n kernel threads; the column split from ``split_min_hidden`` units on
    (and parallel regions for any amount of work)."""
    old_threads, old_min = fr.get_num_threads(), kernels.get_column_split_min_hidden()
    old_work = _runtime.get_parallel_min_work()
    fr.set_num_threads(n)
    if split_min_hidden is not None:
        kernels.set_column_split_min_hidden(split_min_hidden)
        _runtime.set_parallel_min_work(0)
    try:
        yield
    finally:
        fr.set_num_threads(old_threads)
        kernels.set_column_split_min_hidden(old_min)
        _runtime.set_parallel_min_work(old_work)


def run(layer, x, lengths, n, split_min_hidden):
    with threads(n, split_min_hidden):
        out, state = layer(x, lengths=lengths)
    states = state if isinstance(state, tuple) else (state,)
    return [out] + list(states)


def make(cell, options, hidden, dtype, **kw):
    layer = make_layer(cell, 12, hidden, dtype=dtype, seed=3, **options, **kw)
    return layer.eval()


@pytest.mark.parametrize("cell,options", VARIANTS)
@pytest.mark.parametrize("batch", [1, 2, 3, 4, 6])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_every_path_gives_the_same_bits(cell, options, batch, with_lengths):
    """1 thread, 2 threads by batch chunks and 2 threads by gate columns:
    identical outputs and final states (float32, bidirectional, stacked)."""
    layer = make(cell, options, 64, np.float32, num_layers=2, bidirectional=True)
    rng = np.random.default_rng(batch)
    x = rng.standard_normal((23, batch, 12)).astype(np.float32)
    lengths = rng.integers(1, 24, batch) if with_lengths else None
    reference = run(layer, x, lengths, 1, None)
    for n, split in ((2, 10 ** 6), (2, 1), (3, 1)):
        for got, want in zip(run(layer, x, lengths, n, split), reference):
            np.testing.assert_array_equal(got, want, err_msg=f"{n} threads, split {split}")


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
@pytest.mark.parametrize("batch", [1, 2, 4])
def test_column_split_with_uneven_slices(cell, batch):
    """A hidden size that the slices (multiples of 32 units) do not divide:
    the last slice is short, with 3 threads one slice may be empty."""
    layer = make(cell, {}, 70, np.float64)
    x = np.random.default_rng(0).standard_normal((9, batch, 12))
    reference = run(layer, x, None, 1, None)
    for n in (2, 3, 4):
        for got, want in zip(run(layer, x, None, n, 1), reference):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("cell,options", VARIANTS)
@pytest.mark.parametrize("batch", [1, 2, 4])
@pytest.mark.parametrize("n", [1, 2])
def test_stream_equals_whole_sequence(cell, options, batch, n):
    """The stream's per-step input product and the whole sequence's blocked
    one (and its column split) give the same bits."""
    layer = make(cell, options, 64, np.float32, num_layers=2)
    x = np.random.default_rng(1).standard_normal((70, batch, 12)).astype(np.float32)
    whole = run(layer, x, None, n, 1)
    stream = layer.stream(batch_size=batch)
    steps = np.stack([stream.step(x[t]) for t in range(len(x))])
    np.testing.assert_array_equal(steps, whole[0])
    state = stream.state if isinstance(stream.state, tuple) else (stream.state,)
    for got, want in zip(state, whole[1:]):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("split", [None, 1])
def test_paths_match_torch(cell, batch, with_lengths, split):
    """float64 against PyTorch: bidirectional, two layers, initial state."""
    torch = require_torch()
    layer = make(cell, {}, 48, np.float64, num_layers=2, bidirectional=True)
    kind = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}.get(cell, torch.nn.RNN)
    t_layer = kind(12, 48, num_layers=2, bidirectional=True).double()
    t_layer.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    rng = np.random.default_rng(5)
    T = 17
    x = rng.standard_normal((T, batch, 12))
    h0 = rng.standard_normal((4, batch, 48))
    hx = (h0, rng.standard_normal((4, batch, 48))) if cell == "lstm" else h0
    lengths = rng.integers(1, T + 1, batch) if with_lengths else np.full(batch, T)
    with threads(2, split):
        out, state = layer(x, hx, lengths=lengths if with_lengths else None)
    t_hx = tuple(torch.from_numpy(a) for a in hx) if cell == "lstm" else torch.from_numpy(hx)
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        torch.from_numpy(x), torch.from_numpy(lengths), enforce_sorted=False)
    with torch.no_grad():
        t_out, t_state = t_layer(packed, t_hx)
    t_out, _ = torch.nn.utils.rnn.pad_packed_sequence(t_out, total_length=T)
    np.testing.assert_allclose(out, t_out.numpy(), rtol=0, atol=1e-12)
    states = state if isinstance(state, tuple) else (state,)
    t_states = t_state if isinstance(t_state, tuple) else (t_state,)
    for got, want in zip(states, t_states):
        np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=1e-12)


def test_float32_column_split_is_close_to_float64():
    layer32 = make("lstm", {}, 160, np.float32)
    layer64 = make("lstm", {}, 160, np.float64)
    layer64.load_state_dict({k: v.astype(np.float64) for k, v in layer32.state_dict().items()})
    x = np.random.default_rng(2).standard_normal((40, 2, 12))
    out32 = run(layer32, x.astype(np.float32), None, 2, 128)[0]
    out64 = run(layer64, x, None, 1, None)[0]
    np.testing.assert_allclose(out32, out64, rtol=0, atol=2e-5)


def test_column_split_threshold_is_checked():
    with pytest.raises(ValueError, match="hidden must be >= 1"):
        kernels.set_column_split_min_hidden(0)


def test_the_plan_picks_each_path():
    """inference_plan: (steps per input block, column slices, pipelined) as
    documented."""
    layer = make("lstm", {}, 256, np.float32)
    kernel = layer._kernels[0]
    full = np.full(4, 200, np.intc)
    one_chunk, two_chunks = np.array([0, 4], np.intc), np.array([0, 2, 4], np.intc)
    assert kernel.inference_plan(200, 4, full, one_chunk, 1) == (16, 0, 0)
    assert kernel.inference_plan(200, 4, full, two_chunks, 2) == (16, 2, 0)
    ragged = np.array([200, 150, 90, 10], np.intc)
    assert kernel.inference_plan(200, 4, ragged, two_chunks, 2) == (0, 2, 0)
    _runtime.set_parallel_min_work(1 << 19)     # conftest sets 0; restored after
    # One step of one row: too little work for a parallel region.
    assert kernel.inference_plan(1, 1, full[:1], np.array([0, 1], np.intc), 2) == (0, 0, 0)
    big = np.full(64, 100, np.intc)
    assert kernel.inference_plan(100, 64, big, np.array([0, 32, 64], np.intc), 2) == (0, 0, 0)
    # One row below the column split's hidden size: the input products are
    # made ahead by the second thread, in short blocks; never on one thread.
    small = make_layer("lstm", 64, 64, dtype=np.float32, seed=3).eval()._kernels[0]
    row = np.array([0, 1], np.intc)
    assert small.inference_plan(200, 1, full[:1], row, 2) == (8, 0, 1)
    assert small.inference_plan(200, 1, full[:1], row, 1) == (64, 0, 0)
    assert small.inference_plan(200, 1, np.array([150], np.intc), row, 2) == (0, 0, 0)


@pytest.mark.parametrize("cell,options", VARIANTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("steps", [1, 7, 8, 9, 41])
def test_pipelined_input_products_give_the_same_bits(cell, options, dtype, steps):
    """One row on two threads (the second makes the input products ahead,
    in two buffers): the outputs and final states of one thread, bit for
    bit, for every block count and a short last block, in both directions."""
    layer = make(cell, options, 40, dtype, num_layers=2, bidirectional=True)
    x = np.random.default_rng(steps).standard_normal((steps, 1, 12)).astype(dtype)
    reference = run(layer, x, None, 1, None)
    for got, want in zip(run(layer, x, None, 2, 10 ** 6), reference):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("cell,options", VARIANTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pipeline_with_a_late_helper_gives_the_same_bits(cell, options, dtype):
    """A helper that has claimed a block but not finished it when the
    consumer gets there (descheduled): the consumer makes the block again
    in its spare buffer instead of waiting; same bits as one thread."""
    layer = make(cell, options, 40, dtype, num_layers=2, bidirectional=True)
    x = np.random.default_rng(5).standard_normal((41, 1, 12)).astype(dtype)
    reference = run(layer, x, None, 1, None)
    kernels.set_pipeline_late_helper(True)
    try:
        for _ in range(3):
            for got, want in zip(run(layer, x, None, 2, 10 ** 6), reference):
                np.testing.assert_array_equal(got, want)
    finally:
        kernels.set_pipeline_late_helper(False)


def test_pipeline_without_a_second_thread_runs_alone():
    """OpenMP may give the pipeline's region one thread (OMP_THREAD_LIMIT,
    nested regions): thread 0 then claims and makes every block itself, with
    no wait on a helper that never comes, and the same bits."""
    script = (
        "import numpy as np, fastrnn as fr\n"
        "layer = fr.LSTM(64, 64).eval()\n"
        "x = np.random.default_rng(0).standard_normal((100, 1, 64)).astype(np.float32)\n"
        "fr.set_num_threads(1); want = layer(x)[0]\n"
        "fr.set_num_threads(2)\n"
        "plan = layer._kernels[0].inference_plan(100, 1, np.full(1, 100, np.intc),\n"
        "                                        np.array([0, 1], np.intc), 2)\n"
        "assert plan[2] == 1, plan\n"
        "assert np.array_equal(layer(x)[0], want)\n")
    env = dict(os.environ, OMP_THREAD_LIMIT="1")
    done = subprocess.run([sys.executable, "-c", script], env=env, timeout=120,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# -- packed weights kept between calls ----------------------------------------------------
# A layer packs its weights for the micro-kernel once and reuses the packs
# while the weights are unchanged (packing was most of a call for short
# sequences).  Each way the weights can change must be seen at the next call.

def _fresh_copy(layer):
    """A new layer with the same weights: it packs them for the first time."""
    copy = type(layer)(**layer._config())
    copy.load_state_dict(layer.state_dict())
    return copy.eval()


def _forward_keys(layer):
    return [kernel.forward_pack_key for kernel in layer._kernels]


@pytest.mark.parametrize("cell,options", VARIANTS)
def test_kept_packs_are_reused_while_the_weights_are_unchanged(cell, options):
    layer = make(cell, options, 40, np.float32, num_layers=2, bidirectional=True)
    x = np.random.default_rng(0).standard_normal((7, 3, 12)).astype(np.float32)
    first = layer(x)[0].copy()
    version = layer._weights_version
    assert _forward_keys(layer) == [version] * len(layer._kernels)
    np.testing.assert_array_equal(layer(x)[0], first)
    assert _forward_keys(layer) == [version] * len(layer._kernels)
    np.testing.assert_array_equal(_fresh_copy(layer)(x)[0], first)


def _load_other_weights(layer, held):
    layer.load_state_dict(_fresh_copy(layer).train().state_dict() | {
        name: value * 0.5 for name, value in layer.state_dict().items()})


def _optimizer_step(layer, held):
    layer.train()
    out, _ = layer(np.ones((3, 2, 12), np.float32))
    layer.backward(np.ones_like(out))
    fr.optim.SGD(layer, lr=0.3).step()
    layer.eval()


def _write_a_kept_array(layer, held):
    held[0] *= 0.5            # taken before the last call, still held


def _write_a_kept_view(layer, held):
    held[1][...] = 0.25       # a view of W_hh taken before the last call
    held.clear()              # dropped before the next call


def _write_a_fresh_array(layer, held):
    dict(layer.named_parameters())["weight_hh_l0"][...] *= -1.0   # taken, written, dropped


WEIGHT_CHANGES = [_load_other_weights, _optimizer_step, _write_a_kept_array,
                  _write_a_kept_view, _write_a_fresh_array]


@pytest.mark.parametrize("change", WEIGHT_CHANGES, ids=lambda f: f.__name__[1:])
@pytest.mark.parametrize("n,split,batch", [(1, None, 3), (2, 1, 2)],
                         ids=["batch-path", "column-split"])
def test_every_change_of_the_weights_is_packed_again(change, n, split, batch):
    """After each change the next call equals a fresh layer with the new
    weights (bits), on the batch path and the column split."""
    layer = make("lstm", {}, 40, np.float32, num_layers=2)
    x = np.random.default_rng(1).standard_normal((9, batch, 12)).astype(np.float32)
    held = []
    if change in (_write_a_kept_array, _write_a_kept_view):
        weight_ih, weight_hh = layer.parameters()[:2]
        held = [weight_ih, weight_hh[:5]] if change is _write_a_kept_view else [weight_ih]
        del weight_ih, weight_hh
    before = run(layer, x, None, n, split)
    run(layer, x, None, n, split)                # a second call, packs kept where allowed
    change(layer, held)
    after = run(layer, x, None, n, split)
    assert not np.array_equal(after[0], before[0]), "the change must matter"
    for got, want in zip(after, run(_fresh_copy(layer), x, None, n, split)):
        np.testing.assert_array_equal(got, want)


def test_a_held_parameter_array_turns_the_kept_packs_off():
    """While anything outside the layer holds one of its parameter arrays
    (an optimizer after its first step, a caller's array or view), every
    call packs afresh; once it is dropped, packs are kept again."""
    layer = make("gru", {}, 40, np.float32)
    x = np.ones((4, 1, 12), np.float32)
    view = layer.parameters()[3][1:]
    layer(x)
    assert _forward_keys(layer) == [None]
    del view
    layer(x)
    assert _forward_keys(layer) == [layer._weights_version]


# -- a token input's table kept between calls ---------------------------------------------
# layer(ids, embedding=emb) reads each vocabulary row's input product from a
# table; in inference the first layer keeps it while the layer's and the
# embedding's weights are unchanged, so a call makes no input product.

def _table_keys(layer):
    return [kernel.kept_table_key for kernel in layer._kernels[:layer._directions]]


def _token_run(layer, embedding, ids, lengths=None):
    """The fused call and the two-module form of the same model."""
    fused = layer(ids, embedding=embedding, lengths=lengths)
    two_module = layer(embedding(ids), lengths=lengths)
    return fused, two_module


def _flat(result):
    out, state = result
    return [out] + list(state if isinstance(state, tuple) else (state,))


@pytest.mark.parametrize("cell,options", VARIANTS)
@pytest.mark.parametrize("vocab", [10, 60], ids=["vocab-below-tokens", "vocab-above-tokens"])
def test_a_kept_table_gives_the_two_module_results(cell, options, vocab):
    """Calls with changing ids equal ``layer(embedding(ids))`` bit for bit;
    the table is kept from the first call when the vocabulary is smaller
    than the call's tokens, else from the second (bidirectional, stacked)."""
    layer = make(cell, options, 40, np.float32, num_layers=2, bidirectional=True)
    embedding = fr.Embedding(vocab, 12, seed=5).eval()
    rng = np.random.default_rng(vocab)
    for call in range(4):
        ids = rng.integers(0, vocab, (9, 3))
        fused, two_module = _token_run(layer, embedding, ids,
                                       lengths=[9, 4, 7] if call == 3 else None)
        for got, want in zip(_flat(fused), _flat(two_module)):
            np.testing.assert_array_equal(got, want)
        kept = call >= 1 or vocab < ids.size
        assert all((key is not None) == kept for key in _table_keys(layer)), (call, vocab)


def _load_embedding(layer, embedding, held):
    embedding.load_state_dict({"weight": embedding.state_dict()["weight"][::-1].copy()})


def _write_embedding_weight(layer, embedding, held):
    embedding.weight[:] *= -0.5           # handed out, written, dropped


def _write_held_embedding_rows(layer, embedding, held):
    held[0][:] = 0.25                     # a view taken before the last call


def _embedding_step(layer, embedding, held):
    embedding.train()
    embedding.backward(np.ones(embedding(np.arange(4)).shape, np.float32))
    fr.optim.SGD(embedding, lr=0.5).step()
    embedding.eval()


def _change_the_layer(layer, embedding, held):
    dict(layer.named_parameters())["weight_ih_l0"][...] *= -1.0


TABLE_CHANGES = [_load_embedding, _write_embedding_weight, _write_held_embedding_rows,
                 _embedding_step, _change_the_layer]


@pytest.mark.parametrize("change", TABLE_CHANGES, ids=lambda f: f.__name__[1:])
def test_every_change_of_the_table_is_seen(change):
    """After each change of the embedding's or the layer's weights the next
    call equals the two-module form with the new weights, bit for bit."""
    layer = make("lstm", {}, 40, np.float32)
    embedding = fr.Embedding(8, 12, seed=6).eval()
    held = [embedding.weight[1:5]] if change is _write_held_embedding_rows else []
    ids = np.random.default_rng(2).integers(0, 8, (6, 2))
    before = _flat(layer(ids, embedding=embedding))
    layer(ids, embedding=embedding)                 # a second call: the table kept if allowed
    change(layer, embedding, held)
    after, two_module = _token_run(layer, embedding, ids)
    assert not np.array_equal(_flat(after)[0], before[0]), "the change must matter"
    for got, want in zip(_flat(after), _flat(two_module)):
        np.testing.assert_array_equal(got, want)


def test_another_embedding_gets_its_own_table():
    """Two embeddings of the same shape and version take turns: each call
    reads its own rows."""
    layer = make("gru", {}, 40, np.float32)
    first, second = fr.Embedding(5, 12, seed=1).eval(), fr.Embedding(5, 12, seed=2).eval()
    ids = np.arange(10).reshape(5, 2) % 5
    for embedding in (first, second, first, second):
        got = _flat(layer(ids, embedding=embedding))
        for a, b in zip(got, _flat(layer(embedding(ids))), strict=True):
            np.testing.assert_array_equal(a, b)


def test_no_table_is_kept_in_training_past_the_size_limit_or_with_nan_rows(monkeypatch):
    """Training calls, a table over the limit and an embedding with a NaN row
    keep nothing; a NaN row a call does not select does not stop it, one it
    selects raises."""
    from fastrnn.layers import recurrent

    layer = make("lstm", {}, 40, np.float32)
    embedding = fr.Embedding(6, 12, seed=4).eval()
    ids = np.arange(12).reshape(6, 2) % 5                # row 5 is never selected
    layer.train()
    for _ in range(2):
        layer(ids, embedding=embedding)
    assert _table_keys(layer) == [None]
    layer.eval()
    monkeypatch.setattr(recurrent, "_KEPT_TABLE_BYTES", 6 * layer._kernels[0].width * 4 - 1)
    for _ in range(2):
        layer(ids, embedding=embedding)
    assert _table_keys(layer) == [None]
    monkeypatch.undo()
    embedding.weight[5] = np.nan
    out = [layer(ids, embedding=embedding)[0].copy() for _ in range(3)]
    assert _table_keys(layer) == [None]
    np.testing.assert_array_equal(out[2], layer(embedding(ids))[0])
    with pytest.raises(ValueError, match="embedding rows it selects"):
        layer(np.full((6, 2), 5), embedding=embedding)
    embedding.load_state_dict({"weight": np.ones((6, 12))})
    for _ in range(2):
        layer(ids, embedding=embedding)
    assert _table_keys(layer) != [None]


@pytest.mark.parametrize("cell,options", [("lstm", {}), ("gru", {}), ("rnn_tanh", {})])
@pytest.mark.parametrize("vocab", [10, 30])
def test_the_column_split_reads_the_kept_table(cell, options, vocab):
    """With B <= 4 on two threads the gate columns split over the threads;
    each slice then copies its columns of the table rows: the same bits as
    the gathered rows on the column split and as one thread."""
    layer = make(cell, options, 64, np.float32)
    embedding = fr.Embedding(vocab, 12, seed=8).eval()
    rng = np.random.default_rng(3)
    for call in range(3):
        ids = rng.integers(0, vocab, (9, 2))
        with threads(2, split_min_hidden=16):
            assert layer._kernels[0].inference_plan(9, 2, np.full(2, 9, np.intc),
                                                    np.array([0, 2], np.intc), 2)[1] == 2
            fused, two_module = _token_run(layer, embedding, ids)
        with threads(1):
            alone = _flat(layer(embedding(ids)))
        for got, want, one in zip(_flat(fused), _flat(two_module), alone):
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(got, one)
        assert (_table_keys(layer) != [None]) == (call >= 1 or vocab < ids.size)


def test_pretrained_vectors_are_copied_so_a_kept_table_stays_right():
    """``Embedding.from_pretrained`` keeps its own copy of the caller's
    array: writing into that array afterwards changes neither the embedding
    nor the kept table (an alias would be a change no key could see)."""
    vectors = np.linspace(-1, 1, 5 * 12, dtype=np.float32).reshape(5, 12)
    embedding = fr.Embedding.from_pretrained(vectors).eval()
    layer = make("lstm", {}, 40, np.float32)
    ids = np.arange(10).reshape(5, 2) % 5
    before = [layer(ids, embedding=embedding)[0].copy() for _ in range(2)][1]
    assert _table_keys(layer) != [None]
    vectors[:] = 3.0
    np.testing.assert_array_equal(layer(ids, embedding=embedding)[0], before)
    np.testing.assert_array_equal(layer(embedding(ids))[0], before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_call_inside_a_parameter_loop_sees_the_write(dtype):
    """The finite-difference pattern: hold ``named_parameters()`` items,
    write one, call the model, write it back.  Every call in the loop reads
    the current weights (a float64 embedding's array is its constructor's
    own, so its reference count starts with no extra hold)."""
    layer = make("gru", {}, 40, dtype)
    embedding = fr.Embedding(6, 12, seed=7, dtype=dtype).eval()
    ids = np.arange(12).reshape(6, 2) % 6
    for module in (embedding, layer):
        for _, param in module.named_parameters():
            saved = param.flat[3]
            param.flat[3] = saved + 0.5
            got = layer(ids, embedding=embedding)[0].copy()
            param.flat[3] = saved
            for _ in range(2):
                np.testing.assert_array_equal(layer(ids, embedding=embedding)[0],
                                              layer(embedding(ids))[0])
            assert not np.array_equal(got, layer(embedding(ids))[0])
