"""Saving and loading task models (fastrnn.tasks.base, fastrnn._io): identical
predictions after a round trip, atomic writes, the file format and clear
errors for damaged files."""

import json
import os
import zipfile

import numpy as np
import pytest

import fastrnn as fr
from fastrnn._io import META_KEY, atomic_write, read_archive, write_archive
from fastrnn.tasks.base import MODEL_FORMAT
from fastrnn.tasks.inputs import InputEncoder
from task_data import FAST, LABELS, TEXTS, numeric, ragged


# -- save / load --------------------------------------------------------------------

def _save_load(model, path):
    model.save(path)
    loaded = fr.load(path)
    assert type(loaded) is type(model)
    assert loaded.is_fitted_ and loaded.get_params() == model.get_params()
    return loaded


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_save_load_classifier_identical_predictions(tmp_path, dtype, bidirectional):
    model = fr.SequenceClassifier(cell="gru", hidden_size=6, embedding_dim=4, dropout=0.2,
                                  num_layers=2, bidirectional=bidirectional, pooling="max",
                                  dtype=dtype, seed=1)
    model.fit(TEXTS, LABELS, epochs=2, **FAST)
    loaded = _save_load(model, tmp_path / "clf.npz")
    test = ["good good film", "unseen words here", "bad"]
    np.testing.assert_array_equal(loaded.predict_proba(test), model.predict_proba(test))
    np.testing.assert_array_equal(loaded.predict(test), model.predict(test))
    assert loaded.classes_ == model.classes_ == ["neg", "pos"]
    assert loaded.inputs_.vocab.tokens == model.inputs_.vocab.tokens
    assert loaded.predict_proba(test).dtype == np.float64
    assert loaded.network_.dtype == np.dtype(dtype)
    for a, b in zip(loaded.modules(), model.modules()):
        assert a.training is False
        for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
            assert x.dtype == np.dtype(dtype)
            np.testing.assert_array_equal(x, y, err_msg=name)
    # Eval mode: dropout is off, predictions are repeatable.
    np.testing.assert_array_equal(loaded.predict_proba(test), loaded.predict_proba(test))
    assert loaded.score(TEXTS, LABELS) == model.score(TEXTS, LABELS)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("per_step,bidirectional", [(False, True), (True, False), (True, True)])
def test_save_load_regressor_identical_predictions(tmp_path, rng, dtype, per_step,
                                                    bidirectional):
    X = ragged(rng)
    y = ([np.cumsum(x, axis=0) for x in X] if per_step
         else np.stack([x.sum(axis=0) for x in X]))
    model = fr.SequenceRegressor(hidden_size=5, per_step=per_step, pooling="mean",
                                 bidirectional=bidirectional, dtype=dtype, seed=2)
    model.fit(X, y, epochs=2, **FAST)
    loaded = _save_load(model, tmp_path / "reg")            # no extension needed
    assert os.path.exists(tmp_path / "reg")
    before, after = model.predict(X), loaded.predict(X)
    if per_step:
        assert len(before) == len(after)
        for a, b in zip(after, before):
            assert a.shape == b.shape and a.shape[1] == 2
            np.testing.assert_array_equal(a, b)
    else:
        assert after.shape == (len(X), 2)
        np.testing.assert_array_equal(after, before)
    assert loaded.n_outputs_ == 2 and loaded.target_is_vector_ is True


def test_save_load_keeps_label_types_and_numpy_settings(tmp_path, rng):
    X, ids = numeric(rng, classes=3, features=3)
    names = ["b", 2, 3.5]                          # unsortable: first-seen order
    y = [names[i] for i in ids]
    model = fr.SequenceClassifier(hidden_size=4, dtype=np.float32, seed=np.int64(5))
    model.fit(X, y, epochs=1, **FAST)
    loaded = fr.load(model.save(tmp_path / "m.npz"))
    assert loaded.classes_ == model.classes_ == list(dict.fromkeys(y))
    assert [type(c) for c in loaded.classes_] == [type(c) for c in model.classes_]
    assert loaded.dtype == "float32" and loaded.seed == 5
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert loaded.predict(X).dtype == object


def test_save_refuses_labels_that_would_not_come_back(tmp_path, rng):
    X, ids = numeric(rng)
    model = fr.SequenceClassifier(hidden_size=4, seed=0)
    model.fit(X, [(0, i) for i in ids], epochs=1, **FAST)
    assert model.predict(X[:3]).shape == (3,)                 # tuples stay whole labels
    with pytest.raises(TypeError, match="cannot save labels of type tuple"):
        model.save(tmp_path / "m.npz")
    assert not os.listdir(tmp_path)


def test_save_load_with_pretrained_vectors(tmp_path):
    vocab_size = len(InputEncoder("word", True).fit(TEXTS).vocab)
    vectors = np.random.default_rng(0).standard_normal((vocab_size, 3))
    model = fr.SequenceClassifier(hidden_size=4, pretrained=vectors, freeze_embedding=True,
                                  seed=0)
    model.fit(TEXTS, LABELS, epochs=1, **FAST)
    model.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as archive:
        params = json.loads(archive[META_KEY].tobytes())["params"]
    assert params["pretrained"] is None and params["embedding_dim"] == 3
    loaded = fr.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.predict_proba(TEXTS), model.predict_proba(TEXTS))
    np.testing.assert_allclose(loaded.network_.embedding.state_dict()["weight"],
                               vectors.astype(np.float32))


def test_saved_file_is_a_plain_npz(tmp_path, rng):
    X, y = numeric(rng)
    model = fr.SequenceClassifier(cell="lstm", hidden_size=4, seed=0)
    model.fit(X, y, epochs=1, **FAST)
    path = model.save(tmp_path / "m.npz")
    assert os.fspath(path) == os.fspath(tmp_path / "m.npz")
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    meta = json.loads(arrays.pop(META_KEY).tobytes().decode("utf-8"))
    assert meta["format"] == MODEL_FORMAT and meta["version"] == 1
    assert meta["class"] == "SequenceClassifier" and meta["fastrnn_version"] == fr.__version__
    assert meta["params"] == model.get_params()
    assert meta["fitted"]["classes"] == [0, 1]
    assert meta["fitted"]["inputs"]["kind"] == "numeric"
    expected = {f"0/{n}" for n in model.network_.rnn.state_dict()} | {"1/weight", "1/bias"}
    assert set(arrays) == expected
    np.testing.assert_array_equal(arrays["1/weight"], model.head_.state_dict()["weight"])
    assert all(a.dtype == np.float32 for a in arrays.values())


def test_save_is_atomic(tmp_path, rng, monkeypatch):
    X, y = numeric(rng)
    model = fr.SequenceClassifier(hidden_size=4, seed=0)
    model.fit(X, y, epochs=1, **FAST)
    path = tmp_path / "m.npz"
    model.save(path)
    original = path.read_bytes()
    model.fit(X, 1 - y, epochs=1, **FAST)                   # different weights

    def broken(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="No space left"):
        model.save(path)
    assert path.read_bytes() == original and sorted(os.listdir(tmp_path)) == ["m.npz"]

    def interrupted(stream, **arrays):
        stream.write(b"PK half an archive")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        model.save(path)
    assert path.read_bytes() == original and sorted(os.listdir(tmp_path)) == ["m.npz"]
    monkeypatch.undo()
    model.save(path)
    assert path.read_bytes() != original
    np.testing.assert_array_equal(fr.load(path).predict_proba(X), model.predict_proba(X))


def test_atomic_write_and_archive_helpers(tmp_path):
    target = tmp_path / "data.bin"
    atomic_write(target, lambda stream: stream.write(b"one"))
    assert target.read_bytes() == b"one"

    def failing(stream):
        stream.write(b"two")
        raise ValueError("stop")

    with pytest.raises(ValueError, match="stop"):
        atomic_write(target, failing)
    assert target.read_bytes() == b"one" and os.listdir(tmp_path) == ["data.bin"]
    with pytest.raises(FileNotFoundError, match="directory .* does not exist"):
        atomic_write(tmp_path / "missing" / "x.npz", lambda stream: None)
    with pytest.raises(IsADirectoryError, match="it is a directory"):
        atomic_write(tmp_path, lambda stream: None)
    assert os.listdir(tmp_path) == ["data.bin"]

    arrays = {"a/b": np.arange(6.0).reshape(2, 3), "c": np.array([1, 2], dtype=np.int64)}
    meta = {"format": "test.kind", "version": 2, "text": "é", "nan": float("nan")}
    write_archive(tmp_path / "arc.npz", arrays, meta)
    read, got = read_archive(tmp_path / "arc.npz", "test.kind", 2, "thing")
    assert set(read) == set(arrays) and got["text"] == "é" and np.isnan(got["nan"])
    for name in arrays:
        np.testing.assert_array_equal(read[name], arrays[name])
        assert read[name].dtype == arrays[name].dtype
    with pytest.raises(ValueError, match="thing .* has format version 2, written by a newer"):
        read_archive(tmp_path / "arc.npz", "test.kind", 1, "thing")
    with pytest.raises(ValueError, match="is not a fastrnn thing .format 'test.kind', "
                                         "expected 'other'"):
        read_archive(tmp_path / "arc.npz", "other", 2, "thing")
    with pytest.raises(ValueError, match="'__meta__' is reserved"):
        write_archive(tmp_path / "x.npz", {META_KEY: np.zeros(1)}, {})
    with pytest.raises(TypeError, match="array 'o' holds Python objects"):
        write_archive(tmp_path / "x.npz", {"o": np.array([{}], dtype=object)}, {})
    with pytest.raises(TypeError):
        write_archive(tmp_path / "x.npz", {}, {"bad": object()})
    assert sorted(os.listdir(tmp_path)) == ["arc.npz", "data.bin"]


@pytest.fixture
def saved(tmp_path):
    rng = np.random.default_rng(1)
    X, y = numeric(rng)
    model = fr.SequenceClassifier(hidden_size=4, seed=0)
    model.fit(X, y, epochs=1, **FAST)
    path = tmp_path / "model.npz"
    model.save(path)
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    meta = json.loads(arrays.pop(META_KEY).tobytes())
    return path, arrays, meta


def _rewrite(path, arrays, meta):
    write_archive(path, arrays, meta)
    return path


def test_load_errors(saved, tmp_path):
    path, arrays, meta = saved
    with pytest.raises(FileNotFoundError, match="model .*nope.npz' does not exist"):
        fr.load(tmp_path / "nope.npz")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a zip archive at all" * 10)
    with pytest.raises(ValueError, match="model .*garbage.npz' is corrupt or not an .npz"):
        fr.load(garbage)
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(ValueError, match="corrupt or not an .npz file.*single ndarray"):
        fr.load(tmp_path / "single.npy")
    other = tmp_path / "other.npz"
    np.savez(other, weights=np.zeros(3))
    with pytest.raises(ValueError, match=r"other.npz' is not a fastrnn model \(no "
                                         r"'__meta__' entry\)"):
        fr.load(other)
    checkpoint = _rewrite(tmp_path / "ckpt.npz", {}, {"format": "fastrnn.checkpoint",
                                                       "version": 1})
    with pytest.raises(ValueError, match=r"is not a fastrnn model \(format "
                                         r"'fastrnn.checkpoint', expected 'fastrnn.model'\)"):
        fr.load(checkpoint)
    newer = _rewrite(tmp_path / "newer.npz", arrays, {**meta, "version": 2})
    with pytest.raises(ValueError, match="has format version 2, written by a newer fastrnn "
                                         r"\(0.1.0\); this fastrnn reads versions up to 1: "
                                         "upgrade fastrnn"):
        fr.load(newer)
    for version in ("1", True, 0, None):
        bad = _rewrite(tmp_path / "v.npz", arrays, {**meta, "version": version})
        with pytest.raises(ValueError, match="has an invalid format version"):
            fr.load(bad)
    broken_json = tmp_path / "json.npz"
    np.savez(broken_json, **arrays, **{META_KEY: np.frombuffer(b"{not json", np.uint8)})
    with pytest.raises(ValueError, match="its JSON entry cannot be read"):
        fr.load(broken_json)


def test_load_errors_in_the_model_document(saved, tmp_path):
    path, arrays, meta = saved
    unknown = _rewrite(tmp_path / "u.npz", arrays, {**meta, "class": "Transformer"})
    with pytest.raises(ValueError, match="unknown model class 'Transformer'; known: .*"
                                         "SequenceClassifier"):
        fr.load(unknown)
    missing = _rewrite(tmp_path / "m.npz", arrays,
                       {k: v for k, v in meta.items() if k != "fitted"})
    with pytest.raises(ValueError, match="missing its fitted entry"):
        fr.load(missing)
    odd = _rewrite(tmp_path / "p.npz", arrays, {**meta, "params": {**meta["params"],
                                                                   "colour": "red"}})
    with pytest.raises(ValueError, match="saved SequenceClassifier settings do not fit"):
        fr.load(odd)
    shape = dict(arrays)
    shape["1/weight"] = np.zeros((2, 5), dtype=np.float32)
    # Checked on the .npy headers, before any array is read.
    with pytest.raises(ValueError, match=r"s.npz': array '1/weight' must be numbers of "
                                         r"shape \(2, 4\), the file stores float32 of "
                                         r"shape \(2, 5\)"):
        fr.load(_rewrite(tmp_path / "s.npz", shape, meta))
    dropped = {k: v for k, v in arrays.items() if k != "1/bias"}
    # Its settings need 2 values more than it stores: refused before building.
    with pytest.raises(ValueError, match="d.npz': its settings declare larger layers than "
                                         "the 136 weight values it stores"):
        fr.load(_rewrite(tmp_path / "d.npz", dropped, meta))
    extra = {**arrays, "7/weight": np.zeros(2, np.float32)}
    with pytest.raises(ValueError, match=r"unexpected \['7/weight'\]"):
        fr.load(_rewrite(tmp_path / "e.npz", extra, meta))
    nan = {**arrays, "1/bias": np.full_like(arrays["1/bias"], np.nan)}
    with pytest.raises(ValueError, match="NaN or infinite"):
        fr.load(_rewrite(tmp_path / "n.npz", nan, meta))


def test_truncated_or_damaged_files_are_clear_errors(saved, tmp_path):
    path, _, _ = saved
    data = path.read_bytes()
    damaged = tmp_path / "damaged.npz"
    cuts = np.linspace(1, len(data) - 1, 25).astype(int)
    for cut in cuts:
        damaged.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="corrupt"):
            fr.load(damaged)
    # A flipped byte inside the stored weights breaks the archive's CRC check.
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("1/weight.npy")
    offset = info.header_offset + 30 + len(info.filename) + len(info.extra) + info.file_size - 1
    flipped = bytearray(data)
    flipped[offset] ^= 0xFF
    damaged.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="corrupt"):
        fr.load(damaged)


def test_a_load_budget_binds_only_its_own_thread():
    # fastrnn.load caps the parameters a file's settings may build; a Dask
    # worker or web server loads models on several threads at once, and one
    # thread's cap must not charge layers another thread builds meanwhile.
    import threading

    from fastrnn.layers.module import ParameterBudgetError, parameter_budget

    built, failed = [], []

    def build_elsewhere():
        try:
            built.append(fr.LSTM(8, 16))
        except ParameterBudgetError as exc:
            failed.append(exc)

    with parameter_budget(10):
        with pytest.raises(ParameterBudgetError):
            fr.LSTM(8, 16)                  # this thread's cap holds here
        other = threading.Thread(target=build_elsewhere)
        other.start()
        other.join()
    assert not failed and len(built) == 1

