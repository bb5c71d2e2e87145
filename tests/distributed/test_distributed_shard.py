"""Task models on sharded data (``fit(..., distributed="sharded")``) and the
vocabulary and label set built once for all ranks (tests/distributed/distributed_script.py
runs the ranks; the launcher and comparisons come from tests/test_distributed.py)."""

import os

import numpy as np
import pytest

import fastrnn as fr
from test_distributed import _assert_ranks_match, _load, run_ranks, script


@pytest.mark.parametrize("n", [2, 3])
def test_sharded_task_models_equal_one_process_on_the_whole_data(tmp_path, n):
    code, out, err = run_ranks(n, "shard_tasks", tmp_path)
    assert code == 0, f"mpiexec failed ({code}):\n{out}\n{err}"
    for name, reference in script.train_sharded_tasks().items():
        # weights of one process (float64 1e-10), validation metrics reduced
        # over the ranks' validation parts, every rank bit-identical to rank 0
        _assert_ranks_match(tmp_path, name, n, reference, 1e-10)
    lm = [_load(tmp_path, "lm", rank) for rank in range(n)]
    for rank in range(n):
        assert lm[rank]["has_zzz"][0], "the last rank's token is in every rank's vocabulary"
        for key in lm[0]:
            assert np.array_equal(lm[rank][key], lm[0][key]), (rank, key)


def test_full_data_that_differs_between_ranks_is_an_error_on_every_rank(tmp_path):
    # rank 0 built the vocabulary and labels; the ranks' encoded data must match
    code, out, err = run_ranks(2, "task_text_mismatch", tmp_path, timeout=120)
    assert code == 0, f"{out}\n{err}"
    for rank in (0, 1):
        assert (f"rank {rank}: DistributedError: the ranks disagree on the encoded X "
                f"(every rank must be given the same data, or pass "
                f"distributed='sharded')") in out, out
    code, out, err = run_ranks(2, "task_label_mismatch", tmp_path, timeout=120)
    assert code == 0, f"{out}\n{err}"
    assert "rank 1: ValueError: y[42]" in out, out
    assert "rank 0: DistributedError: encoding y failed on rank(s) [1]" in out, out


def test_shard_rows_are_the_ranks_rows_of_every_global_batch():
    rows = [fr.distributed.shard_rows(23, 10, rank, 3) for rank in range(3)]
    assert rows[0].tolist() == [0, 3, 6, 9, 10, 13, 16, 19, 20]
    assert sorted(np.concatenate(rows).tolist()) == list(range(23))
    X, y = script.data(count=23)
    whole = fr.data.BatchLoader(X, y, batch_size=10, shuffle=False)
    for rank in range(3):
        part = fr.data.BatchLoader([X[i] for i in rows[rank]], y[rows[rank]], batch_size=10,
                                   shuffle=False, shard=(rank, 3))
        for mine, batch in zip(part, whole.for_rank(rank, 3)):
            np.testing.assert_array_equal(rows[rank][mine.indices], batch.indices)


def test_vocab_from_counts_of_parts_is_the_vocab_of_the_concatenation():
    parts = [[["b", "a", "b"], ["c"]], [["d", "a"], ["a", "e", "e"]]]
    counts = {}
    for part in parts:
        for token, count in fr.Vocab.count(part)[0].items():
            counts[token] = counts.get(token, 0) + count
    merged = fr.Vocab.from_counts(counts, min_freq=1, max_size=4)
    whole = fr.Vocab.build(parts[0] + parts[1], max_size=4)
    assert merged.tokens == whole.tokens and merged.counts == whole.counts
    with pytest.raises(ValueError, match="min_freq must be an int >= 1"):
        fr.Vocab.from_counts(counts, min_freq=0)


def test_distributed_values_are_checked():
    clf = fr.SequenceClassifier(hidden_size=3)
    with pytest.raises(ValueError, match="distributed must be True, False, 'sharded'"):
        clf.fit(["a b", "c d"], [0, 1], epochs=1, distributed="shard")
    with pytest.raises(ValueError, match="shard=.*no stream"):
        fr.data.StreamBatcher(np.arange(50), batch_size=2, bptt=4, shard=(2, 3))
    part = fr.data.StreamBatcher(np.arange(50), batch_size=5, bptt=4, shard=(1, 2))
    assert next(iter(part)).inputs.shape[1] == 2       # rank 1 of 2: 2 of the 5 streams
    with pytest.raises(ValueError, match="already holds only shard"):
        part.for_rank(0, 2)


def test_ranks_on_one_machine_share_its_cores(tmp_path):
    cpus = len(os.sched_getaffinity(0))
    code, out, err = run_ranks(2, "threads", tmp_path, timeout=120,
                               env={"OMP_NUM_THREADS": ""})     # nothing chosen
    assert code == 0, f"{out}\n{err}"
    share = max(1, cpus // 2)
    for rank in (0, 1):
        assert (f"rank {rank}: local_size=2 threads={share} kernel={share} "
                f"blas=[{share}]") in out, out
    code, out, err = run_ranks(2, "threads", tmp_path, timeout=120,
                               env={"OMP_NUM_THREADS": "3"})    # the user's choice stands
    assert code == 0, f"{out}\n{err}"
    assert "rank 1: local_size=2 threads=3 kernel=3" in out, out


def test_balanced_class_weights_count_every_part():
    from fastrnn.tasks.base import class_weights
    parts = [np.array([0, 0, 1]), np.array([0, 2, 2, 2, 1])]
    others = np.bincount(parts[1], minlength=3).astype(np.float64)
    sharded = class_weights("balanced", ["a", "b", "c"], parts[0],
                            total=lambda counts: counts + others)
    whole = class_weights("balanced", ["a", "b", "c"], np.concatenate(parts))
    np.testing.assert_array_equal(sharded, whole)


def test_cli_train_sharded_reads_one_file_per_rank(tmp_path):
    import fastrnn as fr
    rng = np.random.default_rng(5)
    words = ["good", "bad", "film", "plot", "not", "great"]
    for rank in (0, 1):
        extra = ["only1"] if rank == 1 else []
        lines = [" ".join(list(rng.choice(words, size=int(rng.integers(2, 6)))) + extra) +
                 "\t" + rng.choice(["x", "y"]) for _ in range(24)]
        (tmp_path / f"train-{rank}.tsv").write_text("\n".join(lines) + "\n")
    options = ["train", "classify", "train-{rank}.tsv", "--epochs", "1", "--batch-size", "8",
               "--hidden-size", "4", "--threads", "1", "--distributed", "--sharded"]
    code, out, err = run_ranks(2, *options, "-o", "model.npz", cwd=tmp_path,
                               program=("-m", "fastrnn"))
    assert code == 0, f"{out}\n{err}"
    assert out.count("Saved the model to model.npz") == 1, out
    assert "only1" in fr.load(tmp_path / "model.npz").inputs_.vocab   # rank 1's word
    # a rank without its file: a clear error on every rank, no hang
    (tmp_path / "train-1.tsv").unlink()
    code, out, err = run_ranks(2, *options, "-o", "other.npz", cwd=tmp_path, timeout=120,
                               program=("-m", "fastrnn"))
    assert code != 0
    assert "rank 1 has no file train-1.tsv" in err, err
    assert "reading the data files failed on rank(s) [1]" in err, err
    assert not (tmp_path / "other.npz").exists()
