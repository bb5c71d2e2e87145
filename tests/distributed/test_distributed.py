"""Data-parallel training on MPI (fr.distributed): N ranks equal one process.

The multi-rank tests launch ``mpiexec -n N`` on tests/distributed/distributed_script.py
over loopback, each under a hard timeout that kills the whole process group
(a hang fails the test, it never blocks CI).  The one-process references run
here, in the test process, with ``distributed=False``.  Without mpi4py the
tests are skipped locally and fail under CI (CI=true), like the torch tests.
"""

import ast
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

import fastrnn as fr
from helpers import ci_enabled

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import distributed_script as script  # noqa: E402

TIMEOUT = 240
# Loopback only: hydra forks the ranks locally, libfabric's tcp provider on lo.
LOOPBACK_ENV = {"HYDRA_IFACE": "lo", "MPIR_CVAR_CH4_NETMOD": "ofi", "FI_PROVIDER": "tcp",
                "FI_TCP_IFACE": "lo", "OMP_NUM_THREADS": "1"}


def _mpiexec():
    try:
        import mpi4py  # noqa: F401
    except ImportError as exc:
        message = f"mpi4py is needed for the distributed tests ({exc})"
        if ci_enabled():
            pytest.fail(message + "; CI is set, so this is a failure", pytrace=False)
        pytest.skip(message)
    for path in (os.path.join(os.path.dirname(sys.executable), "mpiexec"),):
        if os.access(path, os.X_OK):
            return path
    import shutil
    found = shutil.which("mpiexec")
    if found is None:
        pytest.fail("mpi4py is installed but no mpiexec was found (pip install mpich)")
    return found


def run_ranks(n, *args, timeout=TIMEOUT, options=(), env=None, cwd=None,
              program=(os.path.join(HERE, "distributed_script.py"),)):
    """Run ``python program args`` on ``n`` ranks; (returncode, stdout,
    stderr).  On timeout the process group is killed and the test fails."""
    command = [_mpiexec(), "-launcher", "fork", "-hosts", "127.0.0.1", *options, "-n", str(n),
               sys.executable, *program, *map(str, args)]
    env = {**os.environ, **LOOPBACK_ENV, **(env or {})}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.path.dirname(fr.__path__[0]),
                                                    env.get("PYTHONPATH")) if p)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env, start_new_session=True, cwd=cwd)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"mpiexec -n {n} {args} did not finish in {timeout}s (hang)\n"
                    f"stdout: {out[-2000:]}\nstderr: {err[-2000:]}")
    return process.returncode, out, err


def _load(outdir, name, rank):
    with np.load(os.path.join(outdir, f"{name}_rank{rank}.npz")) as z:
        return {key: z[key] for key in z.files}


def _assert_close(got, want, rtol, what):
    for key, value in want.items():
        scale = max(np.abs(value).max(), 1e-3)
        error = np.abs(got[key] - value).max() / scale
        assert error <= rtol, f"{what}: {key} differs by {error:.3g} (relative) > {rtol}"


def _assert_ranks_match(outdir, name, n, reference, rtol):
    weights, history = reference
    rank0 = _load(outdir, name, 0)
    _assert_close(rank0, weights, rtol, f"{name} weights of rank 0 vs one process")
    for key, values in history.items():
        np.testing.assert_allclose(rank0["history/" + key], values, rtol=rtol * 10,
                                   err_msg=f"{name} history {key}")
    for rank in range(1, n):
        other = _load(outdir, name, rank)
        for key in rank0:
            assert np.array_equal(other[key], rank0[key]), \
                f"{name}: rank {rank}'s {key} is not bit-identical to rank 0's"


# -- N ranks = one process ---------------------------------------------------------

@pytest.mark.parametrize("n, dtype, rtol", [(2, "float64", 1e-10), (3, "float64", 1e-10),
                                            (2, "float32", 1e-5), (3, "float32", 1e-5)])
def test_ranks_train_the_weights_of_one_process(tmp_path, n, dtype, rtol):
    code, out, err = run_ranks(n, "equal", tmp_path, dtype)
    assert code == 0, f"mpiexec failed ({code}):\n{out}\n{err}"
    _assert_ranks_match(tmp_path, "custom", n, script.train_custom(dtype, False), rtol)
    _assert_ranks_match(tmp_path, "task", n, script.train_task(dtype, False), rtol)


class _UnionOfShards:
    """One process's view of sharded training: each global batch is the union
    of the ranks' batches (padded to the longest), in the ranks' order."""

    def __init__(self, loaders):
        self.loaders = loaders

    def __len__(self):
        return len(self.loaders[0])

    def set_epoch(self, epoch):
        for loader in self.loaders:
            loader.set_epoch(epoch)

    def __iter__(self):
        for parts in zip(*self.loaders):
            steps = max(part.inputs.shape[0] for part in parts)
            inputs = np.concatenate([np.pad(p.inputs, ((0, steps - p.inputs.shape[0]),
                                                       (0, 0), (0, 0))) for p in parts], 1)
            yield fr.data.Batch(inputs, np.concatenate([p.lengths for p in parts]),
                                np.concatenate([p.targets for p in parts]),
                                np.concatenate([p.indices for p in parts]))


def test_sharded_data_trains_on_the_union_of_the_ranks_batches(tmp_path):
    code, out, err = run_ranks(2, "shard", tmp_path)
    assert code == 0, f"{out}\n{err}"
    union = _UnionOfShards(script.shard_loaders(2))
    _assert_ranks_match(tmp_path, "shard", 2, script.train_sharded(union, False), 1e-10)
    code, out, err = run_ranks(2, "shard_uneven", tmp_path, timeout=120)
    assert code == 0, f"{out}\n{err}"
    for rank in (0, 1):
        assert f"rank {rank}: DistributedError: the ranks disagree on the training data" \
               in out, out


def test_language_model_tagger_and_seq2seq_on_ranks_equal_one_process(tmp_path):
    code, out, err = run_ranks(2, "tasks", tmp_path)
    assert code == 0, f"{out}\n{err}"
    for name, reference in script.train_other_tasks(False).items():
        _assert_ranks_match(tmp_path, name, 2, reference, 1e-10)


@pytest.mark.parametrize("n", [2, 3])
def test_class_and_sample_weights_on_ranks_equal_one_process(tmp_path, n):
    code, out, err = run_ranks(n, "weighted", tmp_path)
    assert code == 0, f"{out}\n{err}"
    for name, reference in script.train_weighted(False).items():
        _assert_ranks_match(tmp_path, name, n, reference, 1e-10)


@pytest.mark.parametrize("n", [2, 3])
def test_scheduled_sampling_on_ranks_equals_one_process(tmp_path, n):
    # teacher_forcing < 1 replaces each example's decoder inputs by draws
    # keyed by the example, not by the rank's slice of the batch; resuming
    # the ranks' checkpoint on another number of ranks replays them too.
    code, out, err = run_ranks(n, "scheduled", tmp_path)
    assert code == 0, f"{out}\n{err}"
    reference = script.train_scheduled(False)
    _assert_ranks_match(tmp_path, "scheduled", n, reference, 1e-10)
    code, out, err = run_ranks(5 - n, "scheduled_resume", tmp_path)
    assert code == 0, f"resume on {5 - n} ranks failed:\n{out}\n{err}"
    _assert_ranks_match(tmp_path, "scheduled_resumed", 5 - n, reference, 1e-10)


def test_buckets_launched_during_backward_and_a_layer_run_twice(tmp_path):
    code, out, err = run_ranks(2, "buckets", tmp_path, "float64")
    assert code == 0, f"{out}\n{err}"
    small = script.train_custom("float64", False)
    _assert_ranks_match(tmp_path, "small", 2, small, 1e-10)
    twice = script.train_custom("float64", False, model_class=script.TwiceRegressor)
    _assert_ranks_match(tmp_path, "twice", 2, twice, 1e-10)
    stats = {name: ast.literal_eval(found)     # (the ranks' lines may interleave)
             for name, found in re.findall(r"rank 0: (\w+) (\{[^}]*\})", out)}
    # 10 arrays, the 1-value head bias shares a bucket: 9 buckets, each launched
    # as soon as its layer's backward returned, at each of rank 0's 12 steps
    assert stats["small"] == {"buckets": 9, "steps": 12, "early_launches": 108,
                              "early": True}, out
    # the head's bucket left after its first backward: early launches turned off
    assert stats["twice"]["early"] is False and stats["twice"]["early_launches"] < 108, out


def test_seq2seq_buckets_launch_during_its_backward(tmp_path):
    code, out, err = run_ranks(2, "seq2seq_buckets", tmp_path)
    assert code == 0, f"{out}\n{err}"
    for attention in (None, "general"):
        name = f"seq2seq_{attention}"
        reference, _ = script.train_seq2seq(False, attention)
        _assert_ranks_match(tmp_path, name, 2, reference, 1e-10)
        found = re.search(rf"rank 0: {name} (\{{[^}}]*\}})", out)
        stats = ast.literal_eval(found.group(1))
        # 2 epochs of 3 batches; every bucket left as soon as its layer's
        # backward returned, the encoder's last
        assert stats["early"] is True and stats["steps"] == 6, out
        assert stats["early_launches"] == stats["buckets"] * 6, out


def test_a_stop_request_on_one_rank_stops_every_rank_at_the_same_batch(tmp_path):
    code, out, err = run_ranks(2, "stop_requests", tmp_path)
    assert code == 0, f"{out}\n{err}"
    # asked at batch 2's start (the third batch): summed with its gradients;
    # asked during its update: held for batch 3's reduction, one batch later
    for case, steps, reason in (("interrupt", 3, "interrupted"), ("stop", 3, "callback"),
                                ("late_interrupt", 4, "interrupted")):
        for rank in (0, 1):
            assert f"rank {rank}: {case} stopped after {steps} steps: {reason}" in out, out


def test_one_rank_distributed_equals_plain_training():
    pytest.importorskip("mpi4py") if not ci_enabled() else None
    plain, _ = script.train_custom("float64", False, epochs=2)
    distributed, _ = script.train_custom("float64", True, epochs=2)
    for key in plain:
        assert np.array_equal(plain[key], distributed[key]), key


def test_resume_with_the_same_and_another_number_of_ranks(tmp_path):
    code, out, err = run_ranks(2, "checkpoint", tmp_path, "float64")
    assert code == 0, f"{out}\n{err}"
    assert os.path.exists(tmp_path / "ckpt.npz")
    reference = script.train_custom("float64", False, epochs=3)
    for n in (2, 3):
        code, out, err = run_ranks(n, "resume", tmp_path, "float64")
        assert code == 0, f"resume on {n} ranks failed:\n{out}\n{err}"
        _assert_ranks_match(tmp_path, "resumed", n, reference, 1e-10)
    # a checkpoint one rank cannot read: an error on every rank, no hang
    code, out, err = run_ranks(2, "checkpoint_missing_on_rank_1", tmp_path, "float64",
                               timeout=120)
    assert code == 0, f"{out}\n{err}"
    assert "rank 1: FileNotFoundError" in out, out
    assert ("rank 0: DistributedError: restoring checkpoint" in out
            and "failed on rank(s) [1]" in out), out
    # and in one process, from the checkpoint the ranks wrote
    weights, _ = script.train_custom("float64", False, checkpoint=str(tmp_path / "one.npz"),
                                     resume_from=str(tmp_path / "ckpt.npz"))
    _assert_close(weights, reference[0], 1e-10, "one process resuming the ranks' checkpoint")


def test_cli_train_distributed_saves_the_one_process_model_once(tmp_path):
    rng = np.random.default_rng(3)
    words = ["good", "bad", "film", "plot", "not", "great"]
    lines = [" ".join(rng.choice(words, size=int(rng.integers(2, 8)))) + "\t" +
             rng.choice(["x", "y"]) for _ in range(45)]
    (tmp_path / "train.tsv").write_text("\n".join(lines) + "\n")
    options = ["train", "classify", "train.tsv", "--epochs", "2", "--batch-size", "8",
               "--hidden-size", "8", "--dtype", "float64", "--threads", "1"]
    code, out, err = run_ranks(3, *options, "--distributed", "-o", "ranks.npz", cwd=tmp_path,
                               program=("-m", "fastrnn"))
    assert code == 0, f"{out}\n{err}"
    assert out.count("Saved the model to ranks.npz") == 1, out
    env = dict(os.environ, PYTHONPATH=os.path.dirname(fr.__path__[0]))
    subprocess.run([sys.executable, "-m", "fastrnn", *options, "-q", "-o", "one.npz"],
                   cwd=tmp_path, check=True, timeout=TIMEOUT, env=env)
    ranks, one = fr.load(tmp_path / "ranks.npz"), fr.load(tmp_path / "one.npz")
    for a, b in zip(ranks.modules(), one.modules()):
        _assert_close(a.state_dict(), b.state_dict(), 1e-10, "CLI --distributed vs one process")


# -- failure modes -------------------------------------------------------------------

@pytest.mark.parametrize("scenario, what", [("config_mismatch", "the model"),
                                            ("data_mismatch", "the training data")])
def test_ranks_that_disagree_all_raise(tmp_path, scenario, what):
    code, out, err = run_ranks(2, scenario, tmp_path, timeout=120)
    assert code == 0, f"{out}\n{err}"
    for rank in (0, 1):     # every rank raised, naming what differs and where
        assert f"rank {rank}: DistributedError: the ranks disagree on {what}" in out, out
    assert out.count("rank 0 has") == 2 and out.count("; rank 1: ") == 2, out


def test_a_rank_that_dies_ends_the_run(tmp_path):
    # mpiexec's default: when a rank exits early, hydra ends the others.
    code, out, _ = run_ranks(2, "dies", tmp_path, timeout=120)
    assert code == 7 and "rank 0: done" not in out


def test_a_rank_that_dies_is_reported_by_the_survivors(tmp_path):
    # Without that cleanup the survivors notice on their own: no reply within
    # the timeout -> a message and MPI_Abort.
    code, out, err = run_ranks(2, "dies", tmp_path, timeout=120,
                               options=["-disable-auto-cleanup"],
                               env={"FASTRNN_DISTRIBUTED_TIMEOUT": "5"})
    report = f"exit code {code}\nstdout:\n{out}\nstderr:\n{err}"
    assert "rank 0: done" not in out, report
    assert "rank 0 of 2 failed; aborting all ranks" in err, report
    assert "got no reply from the other ranks within 5 s" in err, report


def test_a_rank_that_raises_aborts_every_rank_with_a_message(tmp_path):
    code, out, err = run_ranks(2, "raises", tmp_path, timeout=120)
    assert code != 0
    assert "rank 1 of 2 failed; aborting all ranks" in err, err
    assert "rank 1 failed on purpose" in err, err
    assert "rank 0: done" not in out


def test_distributed_without_mpi4py_is_a_clear_error():
    code = ("import sys; sys.modules['mpi4py'] = None\n"
            "import fastrnn as fr\n"
            "lstm = fr.LSTM(2, 3)\n"
            "class M:\n"
            "    def modules(self): return [lstm]\n"
            "    def train_batch(self, b): pass\n"
            "    def evaluate_batch(self, b): pass\n"
            "try:\n"
            "    fr.Trainer(M(), fr.optim.SGD([lstm]), distributed=True)\n"
            "except ImportError as exc:\n"
            "    print('ImportError:', exc)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, env=dict(os.environ, PYTHONPATH=os.path.dirname(
                                fr.__path__[0])))
    assert "ImportError: distributed training needs mpi4py" in result.stdout, result
    assert 'pip install "fastrnn[mpi]"' in result.stdout


def test_distributed_argument_is_checked():
    lstm = fr.LSTM(2, 3)
    model = script.LastStepRegressor("float64")
    with pytest.raises(TypeError, match="distributed must be True, False or a"):
        fr.Trainer(model, fr.optim.SGD(model.modules()), distributed="yes")
    del lstm


# -- the data side: each rank's part of a global batch --------------------------------

def _rows(batches):
    return [None if b is None else b.indices.tolist() for b in batches]


def test_for_rank_parts_make_up_the_global_batches():
    X, y = script.data()
    loader = fr.data.BatchLoader(X, y, batch_size=10, seed=4, bucket=True)
    loader.set_epoch(2)
    whole = _rows(loader)
    parts = []
    for rank in range(3):
        part = loader.for_rank(rank, 3)
        part.set_epoch(2)
        parts.append(_rows(part))
        assert len(part) == len(loader)
    for k, rows in enumerate(whole):
        joined = sorted(i for p in parts if p[k] is not None for i in p[k])
        assert joined == sorted(rows)
        assert [p[k] for p in parts] == [rows[r::3] or None for r in range(3)]
    # 41 = 4 * 10 + 1: one global batch of one row, which ranks 1 and 2 see as None
    assert [sum(rows is None for rows in part) for part in parts] == [0, 1, 1]


def test_shard_forms_local_batches_of_the_rank_share():
    X, y = script.data(count=20)
    loaders = [fr.data.BatchLoader(X[r::3], y[r::3], batch_size=10, shard=(r, 3), seed=1)
               for r in range(3)]
    assert [l._rows_per_batch for l in loaders] == [4, 3, 3]
    assert [len(l) for l in loaders] == [2, 3, 2]         # 7/4, 7/3, 6/3 rows per batch
    sizes = [len(b.lengths) for b in loaders[0]]
    assert sizes == [4, 3]
    with pytest.raises(ValueError, match="shard=.*no rows"):
        fr.data.BatchLoader(X, y, batch_size=2, shard=(2, 3))
    with pytest.raises(ValueError, match="shard must satisfy 0 <= rank < size"):
        fr.data.BatchLoader(X, y, shard=(3, 3))
    with pytest.raises(TypeError, match="shard must be a pair of ints"):
        fr.data.BatchLoader(X, y, shard=3)
    with pytest.raises(ValueError, match="already holds only shard"):
        loaders[0].for_rank(0, 3)


def test_stream_batcher_for_rank_takes_columns():
    tokens = np.arange(101)
    batcher = fr.data.StreamBatcher(tokens, batch_size=5, bptt=7)
    chunks = list(batcher)
    part = list(batcher.for_rank(1, 2))
    assert len(part) == len(chunks)
    for whole, mine in zip(chunks, part):
        np.testing.assert_array_equal(mine.inputs, whole.inputs[:, 1::2])
        np.testing.assert_array_equal(mine.targets, whole.targets[:, 1::2])
    with pytest.raises(ValueError, match="batch_size must be >= the number of ranks"):
        batcher.for_rank(0, 6)
