"""fastrnn.data: padding, BatchLoader (shuffle, buckets, split), StreamBatcher.

References are written independently of the code under test: padding is
checked element by element against the source sequences, orders against
set/permutation properties, and stream chunks against slices of the stream.
"""

import numpy as np
import pytest

from fastrnn.data import Batch, BatchLoader, StreamBatcher, StreamChunk, pad_sequences


def random_sequences(rng, n, low=1, high=30, features=()):
    lengths = rng.integers(low, high + 1, size=n)
    return [rng.standard_normal((int(t),) + features) for t in lengths]


def random_ids(rng, n, low=1, high=30, vocab=50):
    return [rng.integers(0, vocab, size=int(t)).tolist() for t in rng.integers(low, high + 1, n)]


def check_padded(padded, lengths, sequences, padding_value, batch_first=False):
    """Every cell is either the source value or the padding value."""
    if batch_first:
        padded = np.swapaxes(padded, 0, 1)
    assert padded.shape[0] == max(len(s) for s in sequences)
    assert padded.shape[1] == len(sequences)
    np.testing.assert_array_equal(lengths, [len(s) for s in sequences])
    for b, seq in enumerate(sequences):
        np.testing.assert_array_equal(padded[:len(seq), b], np.asarray(seq))
        tail = padded[len(seq):, b]
        if isinstance(padding_value, float) and np.isnan(padding_value):
            assert np.isnan(tail).all()
        else:
            assert (tail == padding_value).all()


# ---------------------------------------------------------------------------
# pad_sequences


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("features", [(), (3,), (2, 4)])
def test_pad_sequences_values_and_lengths(rng, batch_first, features):
    seqs = random_sequences(rng, 9, features=features)
    padded, lengths = pad_sequences(seqs, padding_value=-7.5, batch_first=batch_first)
    assert lengths.dtype == np.int64
    assert padded.dtype == np.float64
    assert padded.shape[2:] == features
    assert padded.flags.c_contiguous
    check_padded(padded, lengths, seqs, -7.5, batch_first)


def test_pad_sequences_int_lists_and_dtype(rng):
    seqs = random_ids(rng, 6)
    padded, lengths = pad_sequences(seqs)
    assert padded.dtype == np.int64
    check_padded(padded, lengths, seqs, 0)
    padded32, _ = pad_sequences(seqs, dtype="float32", padding_value=0.1)
    assert padded32.dtype == np.float32
    check_padded(padded32, lengths, seqs, np.float32(0.1))
    nan_padded, _ = pad_sequences([np.ones(3), np.ones(1)], padding_value=float("nan"))
    check_padded(nan_padded, [3, 1], [np.ones(3), np.ones(1)], float("nan"))


def test_pad_sequences_mixed_dtypes_promote():
    padded, _ = pad_sequences([np.array([1, 2], np.int32), np.array([0.5])])
    assert padded.dtype == np.float64
    np.testing.assert_array_equal(padded[:, 1], [0.5, 0.0])


def test_pad_sequences_equal_length_array_and_tuple(rng):
    data = rng.standard_normal((4, 5, 2))
    padded, lengths = pad_sequences(data)
    np.testing.assert_array_equal(padded, data.swapaxes(0, 1))
    np.testing.assert_array_equal(lengths, [5] * 4)
    padded, lengths = pad_sequences(tuple(data), batch_first=True)
    np.testing.assert_array_equal(padded, data)


@pytest.mark.parametrize("sequences,kwargs,error,match", [
    ([], {}, ValueError, r"sequences is empty"),
    ([[1, 2], [], [3]], {}, ValueError, r"sequences\[1\] is empty.*length >= 1"),
    ([np.ones((3, 2)), np.ones((2, 3))], {}, ValueError,
     r"sequences\[1\] has shape \(2, 3\) but sequences\[0\] has shape \(3, 2\)"),
    ([[1, 2], ["a", "b"]], {}, TypeError, r"sequences\[1\] must hold numbers.*strings"),
    (["abc"], {}, TypeError, r"sequences\[0\] must hold numbers, got a str"),
    ([[1, 2], 3], {}, ValueError, r"sequences\[1\] must be a sequence.*scalar"),
    ([[[1, 2], [3]]], {}, ValueError, r"sequences\[0\] could not be converted"),
    ([[1 + 2j]], {}, TypeError, r"sequences\[0\].*complex"),
    ("abc", {}, TypeError, r"sequences must be a list of sequences.*got str"),
    (None, {}, TypeError, r"sequences must be a list of sequences.*got NoneType"),
    (5, {}, TypeError, r"sequences must be a list of sequences.*got int"),
    (np.array(3), {}, TypeError, r"sequences must be a list.*0-d"),
    (np.zeros(4), {}, ValueError, r"scalar.*shape \(N, T, \.\.\.\)"),
    (np.zeros((3, 0)), {}, ValueError, r"sequences\[0\] is empty"),
    ([[0.5, 1.5]], {"dtype": "int64"}, TypeError, r"cannot cast sequences of dtype float64"),
    ([[1]], {"dtype": "float16x"}, TypeError, r"dtype must be a numpy dtype"),
    ([[1]], {"dtype": "U3"}, TypeError, r"dtype must be a bool, int or float dtype"),
    ([[1]], {"padding_value": 0.5}, ValueError, r"padding_value 0.5 cannot be stored.*int64"),
    ([[1]], {"padding_value": "x"}, TypeError, r"padding_value must be a number, got str"),
    ([np.array([1], np.uint8)], {"padding_value": -1}, ValueError,
     r"padding_value -1 cannot be stored.*uint8"),
    ([np.array([1.0], np.float32)], {"padding_value": 1e300}, ValueError,
     r"padding_value 1e\+300 overflows.*float32"),
    ([[1]], {"batch_first": 1}, TypeError, r"batch_first must be True or False"),
])
def test_pad_sequences_bad_input(sequences, kwargs, error, match):
    with pytest.raises(error, match=match):
        pad_sequences(sequences, **kwargs)


# ---------------------------------------------------------------------------
# BatchLoader: coverage, lengths, padding, order


def collect(loader):
    return list(loader)


@pytest.mark.parametrize("bucket", [False, True])
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("n,batch_size", [(103, 8), (64, 8), (5, 7), (300, 4)])
def test_every_example_once_per_epoch(rng, bucket, shuffle, drop_last, n, batch_size):
    seqs = random_ids(rng, n, high=12)
    labels = rng.integers(0, 3, n)
    if drop_last and n < batch_size:
        with pytest.raises(ValueError, match=r"leaves no batch"):
            BatchLoader(seqs, labels, batch_size=batch_size, drop_last=True)
        return
    loader = BatchLoader(seqs, labels, batch_size=batch_size, shuffle=shuffle, bucket=bucket,
                         drop_last=drop_last, seed=3, bucket_window=2, padding_value=99)
    for epoch in range(2):
        loader.set_epoch(epoch)
        batches = collect(loader)
        assert len(batches) == len(loader)
        seen = np.concatenate([b.indices for b in batches])
        assert len(np.unique(seen)) == len(seen)              # no example twice
        if drop_last:
            assert len(seen) == n - n % batch_size
            assert all(len(b.indices) == batch_size for b in batches)
        else:
            np.testing.assert_array_equal(np.sort(seen), np.arange(n))
            sizes = [len(b.indices) for b in batches]
            assert sorted(sizes, reverse=True) == [batch_size] * (n // batch_size) + (
                [n % batch_size] if n % batch_size else [])
            if not (bucket and shuffle):
                assert sizes == sorted(sizes, reverse=True)   # the partial batch comes last
        for batch in batches:
            assert isinstance(batch, Batch)
            chosen = [seqs[i] for i in batch.indices]
            check_padded(batch.inputs, batch.lengths, chosen, 99)
            assert batch.inputs.shape[0] == batch.lengths.max()   # no empty steps
            np.testing.assert_array_equal(batch.targets, labels[batch.indices])
            assert batch.lengths.dtype == np.int64 and batch.indices.dtype == np.int64
        if not shuffle and not bucket:
            np.testing.assert_array_equal(seen, np.arange(len(seen)))


def test_drop_last_drops_a_random_subset_each_epoch(rng):
    seqs = random_ids(rng, 50)
    loader = BatchLoader(seqs, batch_size=8, drop_last=True, bucket=True, seed=1)
    missing = []
    for epoch in range(6):
        loader.set_epoch(epoch)
        seen = np.concatenate([b.indices for b in loader])
        missing.append(frozenset(set(range(50)) - set(seen.tolist())))
        assert len(missing[-1]) == 2
    assert len(set(missing)) > 1


def test_float_features_and_equal_length_array(rng):
    seqs = random_sequences(rng, 20, features=(3,))
    loader = BatchLoader(seqs, batch_size=6, seed=0)
    for batch in loader:
        assert batch.inputs.ndim == 3 and batch.inputs.shape[2] == 3
        check_padded(batch.inputs, batch.lengths, [seqs[i] for i in batch.indices], 0)
        assert batch.targets is None
    data = rng.standard_normal((10, 4, 2)).astype(np.float32)
    targets = rng.standard_normal((10, 3))
    loader = BatchLoader(data, targets, batch_size=4, seed=2)
    for batch in loader:
        assert batch.inputs.dtype == np.float32 and batch.inputs.flags.c_contiguous
        np.testing.assert_array_equal(batch.inputs, data[batch.indices].swapaxes(0, 1))
        np.testing.assert_array_equal(batch.lengths, [4] * len(batch.indices))
        np.testing.assert_array_equal(batch.targets, targets[batch.indices])


def test_same_seed_and_epoch_same_order_different_epochs_differ(rng):
    seqs = random_ids(rng, 200)

    def order(loader, epoch):
        loader.set_epoch(epoch)
        return np.concatenate([b.indices for b in loader])

    for bucket in (False, True):
        a = BatchLoader(seqs, batch_size=8, seed=5, bucket=bucket, bucket_window=3)
        b = BatchLoader(seqs, batch_size=8, seed=5, bucket=bucket, bucket_window=3)
        np.testing.assert_array_equal(order(a, 3), order(b, 3))
        np.testing.assert_array_equal(order(a, 3), order(a, 3))      # replay after a resume
        assert not np.array_equal(order(a, 3), order(a, 4))
        c = BatchLoader(seqs, batch_size=8, seed=6, bucket=bucket, bucket_window=3)
        assert not np.array_equal(order(a, 3), order(c, 3))


def test_iterating_without_set_epoch_advances(rng):
    loader = BatchLoader(random_ids(rng, 40), batch_size=4, seed=0)
    first = np.concatenate([b.indices for b in loader])
    assert loader.epoch == 0
    second = np.concatenate([b.indices for b in loader])
    assert loader.epoch == 1
    assert not np.array_equal(first, second)
    loader.set_epoch(1)
    np.testing.assert_array_equal(np.concatenate([b.indices for b in loader]), second)
    loader.set_epoch(0)
    np.testing.assert_array_equal(np.concatenate([b.indices for b in loader]), first)


def test_no_shuffle_keeps_data_order_every_epoch(rng):
    loader = BatchLoader(random_ids(rng, 23), batch_size=5, shuffle=False)
    for epoch in range(3):
        loader.set_epoch(epoch)
        batches = collect(loader)
        np.testing.assert_array_equal(np.concatenate([b.indices for b in batches]),
                                      np.arange(23))
        assert [len(b.indices) for b in batches] == [5, 5, 5, 5, 3]


def reference_padding_fraction(batches):
    cells = sum(len(b.lengths) * b.inputs.shape[0] for b in batches)
    real = sum(int(b.lengths.sum()) for b in batches)
    return 1 - real / cells


def test_bucketing_reduces_padding(rng):
    seqs = random_ids(rng, 2000, low=1, high=100)
    plain = BatchLoader(seqs, batch_size=16, seed=0)
    bucketed = BatchLoader(seqs, batch_size=16, seed=0, bucket=True)
    for loader in (plain, bucketed):
        loader.set_epoch(2)
        assert loader.padding_fraction() == pytest.approx(
            reference_padding_fraction(collect(loader)), abs=1e-12)
        assert loader.padding_fraction(epoch=2) == loader.padding_fraction()
    assert plain.padding_fraction() > 0.3
    assert bucketed.padding_fraction() < 0.1
    # Still random: batch order and batch contents change between epochs.
    bucketed.set_epoch(2)
    first = [frozenset(b.indices.tolist()) for b in bucketed]
    bucketed.set_epoch(3)
    second = [frozenset(b.indices.tolist()) for b in bucketed]
    assert first != second and set(first) != set(second)
    # Batch lengths are not sorted across the epoch (the batch order is shuffled).
    # Within the first window of 50 batches, too, so not just window by window.
    maxima = [max(len(seqs[i]) for i in batch) for batch in first[:50]]
    assert maxima != sorted(maxima) and maxima != sorted(maxima, reverse=True)


def test_bucket_windows_limit_sorting(rng):
    """Unshuffled bucketing sorts inside windows of bucket_window * batch_size only."""
    seqs = random_ids(rng, 40, high=50)
    loader = BatchLoader(seqs, batch_size=4, shuffle=False, bucket=True, bucket_window=2)
    order = np.concatenate([b.indices for b in loader])
    lengths = np.array([len(s) for s in seqs])
    for start in range(0, 40, 8):
        window = order[start:start + 8]
        np.testing.assert_array_equal(np.sort(window), np.arange(start, start + 8))
        assert (np.diff(lengths[window]) >= 0).all()


def test_per_step_targets_aligned_and_padded(rng):
    n = 30
    seqs = random_ids(rng, n, high=15)
    tags = [[(7 * x + 1) % 5 for x in s] for s in seqs]   # a function of the token
    loader = BatchLoader(seqs, tags, batch_size=7, per_step_targets=True, bucket=True, seed=4)
    for batch in loader:
        assert batch.targets.shape == batch.inputs.shape
        assert batch.targets.dtype == np.int64
        check_padded(batch.targets, batch.lengths, [tags[i] for i in batch.indices], -100)
        mask = np.arange(batch.inputs.shape[0])[:, None] < batch.lengths
        np.testing.assert_array_equal(batch.targets[mask], (7 * batch.inputs[mask] + 1) % 5)
    small = [np.asarray(t, dtype=np.uint8) for t in tags]   # -100 must still fit
    loader = BatchLoader(seqs, small, batch_size=7, per_step_targets=True)
    assert loader.target_padding_value == -100
    for batch in loader:
        assert batch.targets.dtype == np.int64
        check_padded(batch.targets, batch.lengths, [tags[i] for i in batch.indices], -100)
    float_targets = [rng.standard_normal((len(s), 2)) for s in seqs]
    loader = BatchLoader(seqs, float_targets, batch_size=7, per_step_targets=True)
    assert loader.target_padding_value == 0
    for batch in loader:
        assert batch.targets.shape == batch.inputs.shape + (2,)
        check_padded(batch.targets, batch.lengths, [float_targets[i] for i in batch.indices], 0)
    loader = BatchLoader(seqs, tags, batch_size=7, per_step_targets=True,
                         target_padding_value=-1)
    for batch in loader:
        check_padded(batch.targets, batch.lengths, [tags[i] for i in batch.indices], -1)


def test_indices_put_predictions_back_in_order(rng):
    seqs = random_sequences(rng, 37, features=(2,))
    loader = BatchLoader(seqs, batch_size=5, bucket=True, seed=9)
    out = np.full(37, np.nan)
    for batch in loader:
        # A per-row "prediction": the sum of the row's real steps.
        mask = np.arange(batch.inputs.shape[0])[:, None] < batch.lengths
        out[batch.indices] = (batch.inputs * mask[..., None]).sum(axis=(0, 2))
    np.testing.assert_allclose(out, [s.sum() for s in seqs], rtol=1e-12)


# ---------------------------------------------------------------------------
# split


def test_split_partitions_deterministically(rng):
    seqs = random_ids(rng, 50)
    labels = np.arange(50) * 10
    loader = BatchLoader(seqs, labels, batch_size=4, seed=8, bucket=True)
    train, val = loader.split(0.2)
    assert (train.num_examples, val.num_examples) == (40, 10)
    union = np.concatenate([train.source_indices, val.source_indices])
    np.testing.assert_array_equal(np.sort(union), np.arange(50))
    train2, val2 = BatchLoader(seqs, labels, batch_size=4, seed=8).split(0.2)
    np.testing.assert_array_equal(val.source_indices, val2.source_indices)
    _, val3 = BatchLoader(seqs, labels, batch_size=4, seed=9).split(0.2)
    assert not np.array_equal(val.source_indices, val3.source_indices)
    # Settings carried over; validation unshuffled; indices refer to the original data.
    assert train.shuffle and train.bucket and val.bucket and not val.shuffle
    assert train.batch_size == val.batch_size == 4
    for sub in (train, val):
        seen = np.concatenate([b.indices for b in sub])
        np.testing.assert_array_equal(np.sort(seen), np.sort(sub.source_indices))
        for batch in sub:
            np.testing.assert_array_equal(batch.targets, batch.indices * 10)
            check_padded(batch.inputs, batch.lengths, [seqs[i] for i in batch.indices], 0)
    first = [b.indices for b in val]
    val.set_epoch(5)
    second = [b.indices for b in val]
    assert all(np.array_equal(a, b) for a, b in zip(first, second))


def test_split_without_shuffle_takes_the_tail_and_keeps_drop_last_on_train(rng):
    seqs = random_ids(rng, 30)
    tags = [list(s) for s in seqs]
    loader = BatchLoader(seqs, tags, batch_size=4, per_step_targets=True, drop_last=True)
    train, val = loader.split(0.3, shuffle=False)
    np.testing.assert_array_equal(train.source_indices, np.arange(21))
    np.testing.assert_array_equal(val.source_indices, np.arange(21, 30))
    assert train.drop_last and not val.drop_last
    assert len(train) == 5 and len(val) == 3
    seen = np.concatenate([b.indices for b in val])
    np.testing.assert_array_equal(seen, np.arange(21, 30))
    for batch in val:
        check_padded(batch.targets, batch.lengths, [tags[i] for i in batch.indices], -100)


# ---------------------------------------------------------------------------
# BatchLoader: bad input


@pytest.mark.parametrize("batch_size", [0, -3, 2.5, "8", True])
def test_bad_batch_size(batch_size):
    with pytest.raises(ValueError, match=r"batch_size must be an int >= 1"):
        BatchLoader([[1, 2]], batch_size=batch_size)


@pytest.mark.parametrize("kwargs,error,match", [
    ({"inputs": [[1], [2], [3]], "targets": [0, 1]}, ValueError,
     r"inputs has 3 sequences, targets has 2"),
    ({"inputs": []}, ValueError, r"inputs is empty"),
    ({"inputs": [[1, 2], []]}, ValueError, r"inputs\[1\] is empty"),
    ({"inputs": [[1, 2], [[1], [2]]]}, ValueError,
     r"inputs\[1\] has shape \(2, 1\) but inputs\[0\] has shape \(2,\)"),
    ({"inputs": [[1, 2], [3]], "targets": [[1, 2], [3, 4]], "per_step_targets": True},
     ValueError, r"targets\[1\] has length 2 but inputs\[1\] has length 1"),
    ({"inputs": [[1, 2], [3]], "targets": [[1, 2], []], "per_step_targets": True},
     ValueError, r"targets\[1\] is empty"),
    ({"inputs": [[1, 2]], "per_step_targets": True}, ValueError, r"needs targets"),
    ({"inputs": [[1, 2]], "targets": [1], "target_padding_value": -1}, ValueError,
     r"target_padding_value applies only to per-step targets"),
    ({"inputs": [[1, 2]], "targets": [[1, 2]], "per_step_targets": True,
      "target_padding_value": 0.5}, ValueError, r"target_padding_value 0.5 cannot be stored"),
    ({"inputs": [[1, 2], [3]], "targets": [[1, 2], [3]]}, ValueError,
     r"targets could not be converted"),
    ({"inputs": [[1, 2]], "targets": ["cat"]}, TypeError, r"targets must hold numbers.*strings"),
    ({"inputs": [[1, 2]], "targets": 3}, TypeError, r"targets must be a list or array"),
    ({"inputs": [[1, 2]], "seed": -1}, ValueError, r"seed must be None or an int >= 0"),
    ({"inputs": [[1, 2]], "seed": 1.5}, ValueError, r"seed must be None or an int >= 0"),
    ({"inputs": [[1, 2]], "shuffle": "yes"}, TypeError, r"shuffle must be True or False"),
    ({"inputs": [[1, 2]], "bucket_window": 0}, ValueError, r"bucket_window must be an int >= 1"),
    ({"inputs": [[1, 2]], "padding_value": 0.5}, ValueError, r"padding_value 0.5 cannot"),
    ({"inputs": [[1], [2]], "batch_size": 3, "drop_last": True}, ValueError,
     r"drop_last=True with 2 examples and batch_size 3 leaves no batch"),
    ({"inputs": "abc"}, TypeError, r"inputs must be a list of sequences"),
])
def test_loader_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        BatchLoader(**kwargs)


@pytest.mark.parametrize("fraction,match", [
    (0, r"fraction must be a number in \(0, 1\), got 0"),
    (1.0, r"fraction must be a number in \(0, 1\)"),
    (-0.1, r"fraction must be"),
    ("0.2", r"fraction must be"),
    (0.01, r"gives 0 validation and 10 training examples"),
    (0.99, r"gives 10 validation and 0 training examples"),
])
def test_split_bad_fraction(fraction, match):
    loader = BatchLoader([[1]] * 10, batch_size=2)
    with pytest.raises(ValueError, match=match):
        loader.split(fraction)


def test_split_drop_last_train_too_small_and_bad_epoch():
    loader = BatchLoader([[1]] * 10, batch_size=8, drop_last=True)
    with pytest.raises(ValueError, match=r"drop_last=True with 5 training examples"):
        loader.split(0.5)
    for epoch in (-1, 1.5, None):
        with pytest.raises(ValueError, match=r"epoch must be an int >= 0"):
            loader.set_epoch(epoch)


# ---------------------------------------------------------------------------
# StreamBatcher


@pytest.mark.parametrize("n,batch_size,bptt", [(1000, 7, 13), (101, 4, 5), (21, 4, 100),
                                               (2, 1, 1), (50, 49, 3)])
def test_stream_layout(rng, n, batch_size, bptt):
    stream = np.arange(n) * 3 + 1               # distinct values locate every token
    batcher = StreamBatcher(stream, batch_size, bptt)
    steps = (n - 1) // batch_size
    assert batcher.steps_per_stream == steps
    assert batcher.dropped == n - 1 - batch_size * steps
    chunks = list(batcher)
    assert len(chunks) == len(batcher) == -(-steps // bptt)
    assert [c.first for c in chunks] == [True] + [False] * (len(chunks) - 1)
    assert sum(c.inputs.shape[0] for c in chunks) == steps
    assert all(c.inputs.shape[0] == bptt for c in chunks[:-1])
    for c in chunks:
        assert isinstance(c, StreamChunk)
        assert c.inputs.dtype == np.int64 and c.targets.dtype == np.int64
        assert c.inputs.shape == c.targets.shape and c.inputs.shape[1] == batch_size
    inputs = np.concatenate([c.inputs for c in chunks])
    targets = np.concatenate([c.targets for c in chunks])
    # Every token up to the dropped tail appears exactly once as an input.
    np.testing.assert_array_equal(np.sort(inputs.ravel()), stream[:batch_size * steps])
    # Targets are the next token of the stream.
    position = (inputs - 1) // 3
    np.testing.assert_array_equal(targets, stream[position + 1])
    # Each column is one contiguous piece, and the pieces follow each other.
    for b in range(batch_size):
        np.testing.assert_array_equal(inputs[:, b], stream[b * steps:(b + 1) * steps])


def test_stream_of_streams_and_lists(rng):
    parts = [rng.integers(0, 9, int(k)).tolist() for k in (5, 1, 12)]
    joined = np.concatenate([np.asarray(p) for p in parts])
    a = [(c.inputs, c.targets) for c in StreamBatcher(parts, 3, 2)]
    b = [(c.inputs, c.targets) for c in StreamBatcher(joined.tolist(), 3, 2)]
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    tuple_parts = (np.arange(4, dtype=np.int32), np.arange(4, 9, dtype=np.uint16))
    x = np.concatenate([c.inputs for c in StreamBatcher(list(tuple_parts), 2, 3)])
    np.testing.assert_array_equal(x[:, 0], [0, 1, 2, 3])


def test_stream_set_epoch_is_a_noop(rng):
    batcher = StreamBatcher(rng.integers(0, 20, 200), 4, 7)
    before = [c.inputs for c in batcher]
    batcher.set_epoch(3)
    after = [c.inputs for c in batcher]
    assert all(np.array_equal(p, q) for p, q in zip(before, after, strict=True))
    # Chunks are copies: editing one does not change the next epoch.
    before[0][:] = -1
    assert (next(iter(batcher)).inputs >= 0).all()


@pytest.mark.parametrize("tokens,batch_size,bptt,error,match", [
    (list(range(10)), 10, 3, ValueError,
     r"10 tokens give \(N - 1\) // batch_size = \(10 - 1\) // 10 = 0 steps"),
    ([5], 1, 3, ValueError, r"1 tokens give"),
    ([], 1, 3, ValueError, r"tokens is empty"),
    ([[], []], 1, 3, ValueError, r"tokens is empty"),
    (np.arange(10.0), 2, 3, TypeError, r"tokens must hold integer token ids, got dtype float64"),
    ([[1, 2], [0.5]], 2, 3, TypeError, r"tokens\[1\] must hold integer token ids"),
    (np.zeros((3, 4), np.int64), 2, 3, ValueError, r"tokens must be 1-D.*shape \(3, 4\)"),
    ([1, -2, 3], 1, 3, ValueError, r"tokens must hold non-negative token ids, got -2"),
    ("abc", 1, 3, TypeError, r"tokens must be a 1-D list"),
    (None, 1, 3, TypeError, r"tokens must be a 1-D list"),
    (["a", "b"], 1, 3, TypeError, r"tokens must hold numbers.*strings"),
    (list(range(10)), 0, 3, ValueError, r"batch_size must be an int >= 1, got 0"),
    (list(range(10)), 2, -1, ValueError, r"bptt must be an int >= 1, got -1"),
    (list(range(10)), 2.0, 3, ValueError, r"batch_size must be an int >= 1"),
])
def test_stream_bad_input(tokens, batch_size, bptt, error, match):
    with pytest.raises(error, match=match):
        StreamBatcher(tokens, batch_size, bptt)


def test_stream_bad_epoch():
    with pytest.raises(ValueError, match=r"epoch must be an int >= 0, got -1"):
        StreamBatcher(list(range(10)), 2, 3).set_epoch(-1)


def test_uint64_ids_past_int64_are_refused_not_wrapped():
    """Token ids and per-step targets become int64; a uint64 value past its
    range would wrap to a negative id."""
    huge = np.array([2 ** 63 + 5, 1, 2], dtype=np.uint64)
    with pytest.raises(ValueError, match=r"tokens must hold values <= 9223372036854775807 "
                                         r"\(int64\), got 9223372036854775813"):
        StreamBatcher(huge, 1, 1)
    with pytest.raises(ValueError, match=r"tokens\[1\] must hold values <= "):
        StreamBatcher([np.arange(3), huge], 1, 1)
    with pytest.raises(ValueError, match=r"targets must hold values <= 9223372036854775807"):
        BatchLoader([[1, 2, 3]], [huge], per_step_targets=True)
    fine = np.array([2 ** 63 - 1, 1, 2], dtype=np.uint64)
    chunk = next(iter(StreamBatcher(fine, 1, 2)))
    assert chunk.inputs.dtype == np.int64 and chunk.inputs[0, 0] == 2 ** 63 - 1
