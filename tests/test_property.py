"""Property-based tests (hypothesis): the fuzzing campaign kept as a bounded
test.  Layers against numpy and PyTorch, losses against numpy references,
loaders (archives, vocabularies, JSON depth, CLI readers) and the batchers
against their contracts.

Every test runs a bounded number of examples without deadlines (CI machines
are slow and shared); the whole module takes well under a minute.
"""

import json
import math
import string

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastrnn as fr
from fastrnn._io import json_depth, read_archive, write_archive
from fastrnn._kernels import _runtime
from fastrnn.cli import readers
from fastrnn.data import BatchLoader, StreamBatcher
from helpers import require_torch

BOUNDED = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                   suppress_health_check=[HealthCheck.function_scoped_fixture,
                                          HealthCheck.too_slow])

FLOATS = st.floats(-10, 10, allow_nan=False, allow_infinity=False, width=64)


def float_arrays(shape):
    return hnp.arrays(np.float64, shape, elements=FLOATS)


# -- layers ------------------------------------------------------------------------------------------

@BOUNDED
@given(data=st.data(), rows=st.integers(1, 20), fan_in=st.integers(1, 6),
       fan_out=st.integers(1, 6), bias=st.booleans(), limit=st.integers(1, 8),
       threads=st.integers(1, 2))
def test_linear_matches_numpy_at_any_split(data, rows, fan_in, fan_out, bias, limit,
                                           threads):
    """Forward and backward equal numpy's, whatever the BLAS split threshold
    (the 64-bit split paths) and thread count."""
    x = data.draw(float_arrays((rows, fan_in)))
    d_y = data.draw(float_arrays((rows, fan_out)))
    layer = fr.Linear(fan_in, fan_out, bias=bias, dtype="float64", seed=0)
    weight = layer.state_dict()["weight"]
    before = _runtime.get_blas_int_limit()
    fr.set_num_threads(threads)
    _runtime.set_blas_int_limit(limit)
    try:
        y = layer(x)
        d_x = layer.backward(d_y)
    finally:
        _runtime.set_blas_int_limit(before)
    expected = x @ weight.T + (layer.state_dict()["bias"] if bias else 0)
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(d_x, d_y @ weight, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(layer.grads["weight"], d_y.T @ x, rtol=1e-10, atol=1e-10)


@pytest.mark.torch
@settings(max_examples=15, deadline=None, derandomize=True, database=None)
@given(data=st.data(), cell=st.sampled_from(["RNN", "LSTM", "GRU"]),
       steps=st.integers(1, 5), batch=st.integers(1, 4), features=st.integers(1, 4),
       hidden=st.integers(1, 5), layers=st.integers(1, 2), bidirectional=st.booleans())
def test_recurrent_layers_match_torch(data, cell, steps, batch, features, hidden, layers,
                                      bidirectional):
    torch = require_torch()
    layer = getattr(fr, cell)(features, hidden, num_layers=layers,
                              bidirectional=bidirectional, dtype="float64", seed=1)
    reference = getattr(torch.nn, cell)(features, hidden, num_layers=layers,
                                        bidirectional=bidirectional).double()
    reference.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    x = data.draw(float_arrays((steps, batch, features)))
    out = layer(x)[0]
    expected = reference(torch.from_numpy(x))[0].detach().numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-9, atol=1e-9)


@BOUNDED
@given(data=st.data(), vocab=st.integers(1, 12), dim=st.integers(1, 5),
       shape=hnp.array_shapes(min_dims=1, max_dims=2, max_side=6))
def test_embedding_gathers_and_scatters_like_numpy(data, vocab, dim, shape):
    ids = data.draw(hnp.arrays(np.int64, shape, elements=st.integers(0, vocab - 1)))
    layer = fr.Embedding(vocab, dim, dtype="float64", seed=0)
    out = layer(ids)
    np.testing.assert_array_equal(out, layer.weight[ids])
    d_out = data.draw(float_arrays(shape + (dim,)))
    layer.backward(d_out)
    expected = np.zeros((vocab, dim))
    np.add.at(expected, ids.reshape(-1), d_out.reshape(-1, dim))
    np.testing.assert_allclose(layer.grads["weight"], expected, rtol=1e-12, atol=1e-12)


# -- losses ------------------------------------------------------------------------------------------

def _log_softmax(x):
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


@BOUNDED
@given(data=st.data(), rows=st.integers(1, 12), classes=st.integers(2, 6),
       smoothing=st.sampled_from([0.0, 0.1]))
def test_cross_entropy_matches_numpy(data, rows, classes, smoothing):
    logits = data.draw(float_arrays((rows, classes)))
    targets = data.draw(hnp.arrays(np.int64, rows, elements=st.integers(0, classes - 1)))
    loss, grad = fr.CrossEntropyLoss(label_smoothing=smoothing)(logits, targets)
    q = np.full((rows, classes), smoothing / classes)
    q[np.arange(rows), targets] += 1 - smoothing
    log_p = _log_softmax(logits)
    assert loss == pytest.approx(-(q * log_p).sum() / rows, rel=1e-9, abs=1e-12)
    np.testing.assert_allclose(grad, (np.exp(log_p) - q) / rows, rtol=1e-9, atol=1e-12)


@BOUNDED
@given(data=st.data(), shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=5))
def test_mse_and_bce_match_numpy(data, shape):
    x = data.draw(float_arrays(shape))
    t = data.draw(float_arrays(shape))
    loss, grad = fr.MSELoss()(x, t)
    assert loss == pytest.approx(((x - t) ** 2).mean(), rel=1e-9, abs=1e-12)
    np.testing.assert_allclose(grad, 2 * (x - t) / x.size, rtol=1e-9, atol=1e-12)
    labels = (t > 0).astype(np.float64)
    loss, grad = fr.BCEWithLogitsLoss()(x, labels)
    expected = np.mean(np.logaddexp(0, x) - labels * x)
    assert loss == pytest.approx(expected, rel=1e-9, abs=1e-12)
    np.testing.assert_allclose(grad, (1 / (1 + np.exp(-x)) - labels) / x.size,
                               rtol=1e-9, atol=1e-12)


# -- loaders -----------------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10 ** 6, 10 ** 6) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=4), children, max_size=3),
    max_leaves=20)


def _depth(value):
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


@BOUNDED
@given(document=JSON, ascii_only=st.booleans())
def test_json_depth_scan_equals_the_parsed_depth(document, ascii_only):
    text = json.dumps(document, ensure_ascii=ascii_only)
    assert json_depth(text.encode("utf-8", "surrogatepass")) == _depth(document)


@BOUNDED
@given(arrays=st.dictionaries(
    st.text(string.ascii_letters + "/_", min_size=1, max_size=6),
    hnp.arrays(st.sampled_from([np.float32, np.float64, np.int64, np.uint8]),
               hnp.array_shapes(min_dims=0, max_dims=3, max_side=4)),
    max_size=4), meta=JSON)
def test_archives_round_trip(tmp_path_factory, arrays, meta):
    path = tmp_path_factory.mktemp("archive") / "a.npz"
    document = {"format": "test", "version": 1, "payload": meta}
    write_archive(path, arrays, document)
    loaded, loaded_meta = read_archive(path, "test", 1, "archive")
    assert loaded_meta == document
    assert loaded.keys() == arrays.keys()
    for name, value in arrays.items():
        assert loaded[name].dtype == value.dtype and loaded[name].flags.writeable
        np.testing.assert_array_equal(loaded[name], value)


@BOUNDED
@given(tokens=st.lists(st.text(min_size=1, max_size=6), max_size=12, unique=True))
def test_vocab_round_trips_any_tokens(tmp_path_factory, tokens):
    tokens = [t for t in tokens if t not in fr.text.SPECIAL_TOKENS]
    vocab = fr.Vocab(tokens)
    path = vocab.save(tmp_path_factory.mktemp("vocab") / "v.json")
    assert fr.Vocab.load(path) == vocab


CELL = st.text(st.characters(blacklist_characters="\t\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029",
                             blacklist_categories=("Cs",)), min_size=1, max_size=10)


@BOUNDED
@given(pairs=st.lists(st.tuples(CELL, CELL).filter(lambda p: p[0].strip() and p[1].strip()),
                      min_size=1, max_size=8))
def test_cli_tsv_reader_round_trips(tmp_path_factory, pairs):
    path = tmp_path_factory.mktemp("cli") / "data.tsv"
    path.write_text("".join(f"{a}\t{b}\n" for a, b in pairs), encoding="utf-8")
    texts, labels = readers.read_pairs(str(path))
    assert texts == [a for a, _ in pairs]
    assert labels == [b.strip() for _, b in pairs]


# -- batchers ----------------------------------------------------------------------------------------

@BOUNDED
@given(lengths=st.lists(st.integers(1, 7), min_size=1, max_size=30),
       batch_size=st.integers(1, 8), bucket=st.booleans(), seed=st.integers(0, 100))
def test_batch_loader_serves_every_sequence_once_padded(lengths, batch_size, bucket, seed):
    sequences = [np.arange(n) + 1 for n in lengths]
    loader = BatchLoader(sequences, list(range(len(lengths))), batch_size=batch_size,
                         shuffle=True, bucket=bucket, seed=seed)
    seen = []
    for batch in loader:
        assert batch.inputs.shape == (batch.lengths.max(), len(batch.indices))
        for column, row in enumerate(batch.indices):
            n = lengths[row]
            assert batch.lengths[column] == n and batch.targets[column] == row
            np.testing.assert_array_equal(batch.inputs[:n, column], sequences[row])
            assert not batch.inputs[n:, column].any()
        seen.extend(batch.indices.tolist())
    assert sorted(seen) == list(range(len(lengths)))
    assert len(loader) == math.ceil(len(lengths) / batch_size)


@BOUNDED
@given(n=st.integers(2, 200), batch_size=st.integers(1, 6), bptt=st.integers(1, 9))
def test_stream_batcher_lays_out_contiguous_columns(n, batch_size, bptt):
    tokens = np.arange(n)
    if (n - 1) // batch_size < 1:
        with pytest.raises(ValueError):
            list(StreamBatcher(tokens, batch_size, bptt))
        return
    length = (n - 1) // batch_size
    chunks = list(StreamBatcher(tokens, batch_size, bptt))
    inputs = np.concatenate([c.inputs for c in chunks], axis=0)
    targets = np.concatenate([c.targets for c in chunks], axis=0)
    expected = tokens[:batch_size * length].reshape(batch_size, length).T
    np.testing.assert_array_equal(inputs, expected)
    np.testing.assert_array_equal(targets, expected + 1)
    assert all(c.inputs.shape[0] <= bptt for c in chunks)
