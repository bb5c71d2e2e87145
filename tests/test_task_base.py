"""What the task models share (fastrnn.tasks.base / inputs / network, fastrnn._io):
parameters, repr, saving and loading, errors before fit, input checks,
validation data, optimizers, callbacks."""

import inspect
import json
import os
import zipfile

import numpy as np
import pytest

import fastrnn as fr
from fastrnn._io import META_KEY, atomic_write, read_archive, write_archive
from fastrnn.tasks.base import MODEL_FORMAT, NotFittedError, make_optimizer
from fastrnn._validation import Integer, layer_seeds
from fastrnn.tasks.inputs import InputEncoder, detect_kind
from fastrnn.tasks.pooling import Pooling
from fastrnn.tasks.stack import RecurrentStack
from fastrnn.text import UNK
from fastrnn.training import Callback, EarlyStopping, LambdaCallback

FAST = dict(verbose=0, batch_size=16, lr=0.02)
TEXTS = ["good film", "bad plot", "good plot", "bad film", "a good one", "a bad one"] * 5
LABELS = ["pos", "neg", "pos", "neg", "pos", "neg"] * 5


def numeric(rng, n=40, steps=5, features=2, classes=2):
    labels = rng.integers(classes, size=n)
    X = rng.standard_normal((n, steps, features))
    X[np.arange(n), :, labels % features] += 2.0
    return X, labels


def ragged(rng, n=30, features=2):
    return [rng.standard_normal((rng.integers(2, 7), features)) for _ in range(n)]


# -- parameters and repr -----------------------------------------------------------

@pytest.mark.parametrize("cls", [fr.SequenceClassifier, fr.SequenceRegressor])
def test_get_and_set_params(cls):
    model = cls(hidden_size=8, seed=3)
    params = model.get_params()
    names = [n for n in inspect.signature(cls.__init__).parameters if n != "self"]
    assert list(params) == names
    assert params["hidden_size"] == 8 and params["seed"] == 3 and params["cell"] == "lstm"
    assert model.get_params(deep=False) == params
    assert model.set_params(hidden_size=5, cell="gru") is model
    assert model.hidden_size == 5 and model.cell == "gru"
    with pytest.raises(ValueError, match=rf"{cls.__name__} has no parameter 'hiden_size'; "
                                         rf"valid: cell, hidden_size"):
        model.set_params(hiden_size=4)
    assert model.hidden_size == 5
    clone = cls(**model.get_params())
    assert clone.get_params() == model.get_params() and not hasattr(clone, "network_")


def test_set_params_takes_effect_at_the_next_fit(rng):
    X, y = numeric(rng)
    model = fr.SequenceClassifier(hidden_size=4, seed=0)
    model.fit(X, y, epochs=1, **FAST)
    model.set_params(hidden_size=6, cell="gru", bidirectional=True)
    assert model.network_.rnn.hidden_size == 4             # unchanged until fit
    model.fit(X, y, epochs=1, **FAST)
    assert isinstance(model.network_.rnn, fr.GRU)
    assert model.network_.output_size == 12 and model.head_.in_features == 12


def test_repr_shows_only_non_defaults():
    assert repr(fr.SequenceClassifier()) == "SequenceClassifier()"
    assert repr(fr.SequenceRegressor()) == "SequenceRegressor()"
    assert repr(fr.SequenceClassifier(seed=0, hidden_size=64, cell="gru", pooling="max",
                                      dropout=0)) == \
        "SequenceClassifier(cell='gru', pooling='max', seed=0)"
    assert repr(fr.SequenceRegressor(per_step=True, dtype="float64")) == \
        "SequenceRegressor(per_step=True, dtype='float64')"
    vectors = np.zeros((3, 2))
    assert "pretrained=array(" in repr(fr.SequenceClassifier(pretrained=vectors))


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


# -- before fit ---------------------------------------------------------------------

@pytest.mark.parametrize("cls", [fr.SequenceClassifier, fr.SequenceRegressor])
def test_not_fitted_errors(cls, tmp_path, rng):
    model = cls()
    X = rng.standard_normal((3, 4, 2))
    calls = [lambda: model.predict(X), lambda: model.score(X, [0, 1, 0]),
             lambda: model.save(tmp_path / "m.npz")]
    if cls is fr.SequenceClassifier:
        calls.append(lambda: model.predict_proba(X))
    for call in calls:
        with pytest.raises(NotFittedError, match=f"this {cls.__name__} is not fitted yet: "
                                                 f"call fit"):
            call()
    assert issubclass(NotFittedError, ValueError) and issubclass(NotFittedError, AttributeError)
    assert fr.NotFittedError is NotFittedError
    assert not os.listdir(tmp_path)


def test_a_failed_refit_leaves_no_stale_model(rng):
    X, y = numeric(rng)
    model = fr.SequenceClassifier(hidden_size=4, seed=0)
    model.fit(X, y, epochs=1, **FAST)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        model.fit(X, y, optimizer="nadam", verbose=0)
    with pytest.raises(NotFittedError):
        model.predict(X)


# -- input and label checks -----------------------------------------------------------

@pytest.fixture(scope="module")
def text_model():
    model = fr.SequenceClassifier(hidden_size=4, embedding_dim=4, seed=0)
    model.fit(TEXTS, LABELS, epochs=1, **FAST)
    return model


@pytest.fixture(scope="module")
def numeric_model():
    X, y = numeric(np.random.default_rng(2))
    model = fr.SequenceClassifier(hidden_size=4, seed=0)
    model.fit(X, y, epochs=1, **FAST)
    return model, X, y


def test_unknown_labels_count_as_wrong_in_score_but_not_in_validation(text_model):
    """score is accuracy: a label never seen in fit can never be predicted, so
    it is a wrong prediction (as in the tagger and scikit-learn), not an
    error; validation data needs a loss, so unseen labels stay an error."""
    predicted = text_model.predict(TEXTS[:3]).tolist()
    truth = [predicted[0], "meh", predicted[2]]
    assert text_model.score(TEXTS[:3], truth) == pytest.approx(2 / 3)
    assert text_model.score(TEXTS[:3], ["meh"] * 3) == 0.0
    with pytest.raises(TypeError, match=r"y\[1\] = \['pos'\] is not hashable"):
        text_model.score(TEXTS[:3], ["pos", ["pos"], "neg"])
    with pytest.raises(ValueError, match=r"validation_data\[1\]\[0\] = 'meh' is not one of "
                                         r"the labels seen in fit: \['neg', 'pos'\]"):
        fr.SequenceClassifier(hidden_size=4).fit(TEXTS, LABELS, verbose=0,
                                                 validation_data=(TEXTS[:2], ["meh", "pos"]))


def test_label_and_input_counts_must_match(text_model):
    with pytest.raises(ValueError, match="y must have one label per sequence: 30 sequences "
                                         "but 29 labels"):
        fr.SequenceClassifier().fit(TEXTS, LABELS[:-1], verbose=0)
    with pytest.raises(ValueError, match="y must have one label per sequence: 3 sequences "
                                         "but 2 labels"):
        text_model.score(TEXTS[:3], LABELS[:2])
    with pytest.raises(ValueError, match=r"validation_data\[1\] must have one label per "
                                         r"sequence: 3 sequences but 2 labels"):
        fr.SequenceClassifier().fit(TEXTS, LABELS, verbose=0,
                                    validation_data=(TEXTS[:3], LABELS[:2]))
    with pytest.raises(ValueError, match=r"y must be 1-D \(one label per sequence\), got an "
                                         r"array of shape \(30, 2\); for one-hot rows pass "
                                         r"y.argmax\(axis=1\)"):
        fr.SequenceClassifier().fit(TEXTS, np.eye(2)[[0, 1] * 15], verbose=0)
    with pytest.raises(TypeError, match=r"y\[2\] = \{'a': 1\} is not hashable: labels must "
                                        r"be hashable values \(str, int, ...\), got a dict"):
        fr.SequenceClassifier().fit(TEXTS[:3], ["a", "b", {"a": 1}], verbose=0)
    with pytest.raises(TypeError, match="y must be a list of labels .one per sequence., got a "
                                        "single str"):
        fr.SequenceClassifier().fit(TEXTS[:3], "pos", verbose=0)
    with pytest.raises(TypeError, match="y must be an ordered list of labels .one per "
                                        "sequence., got a set"):
        fr.SequenceClassifier().fit(TEXTS[:2], {"pos", "neg"}, verbose=0)
    with pytest.raises(ValueError, match=r"validation_data\[1\] must have one label per "
                                         r"sequence: 3 sequences but 2 labels"):
        fr.SequenceClassifier().fit(TEXTS, LABELS, verbose=0,
                                    validation_data=(TEXTS[:3], iter(LABELS[:2])))


def test_bad_inputs_at_fit_and_predict(text_model, numeric_model):
    with pytest.raises(ValueError, match="X is empty: need at least one sequence"):
        fr.SequenceClassifier().fit([], [], verbose=0)
    with pytest.raises(ValueError, match="X is empty"):
        text_model.predict([])
    with pytest.raises(ValueError, match=r"X\[1\] is an empty sequence: every sequence needs "
                                         r"at least one token or step"):
        fr.SequenceClassifier().fit(["good", "", "bad"], [1, 0, 1], verbose=0)
    with pytest.raises(ValueError, match=r"X\[0\] is an empty sequence"):    # not "numbers"
        fr.SequenceClassifier().fit([[], ["good"]], [1, 0], verbose=0)
    with pytest.raises(ValueError, match=r"X\[0\] is empty \(no tokens\)"):
        text_model.predict(["   "])
    with pytest.raises(TypeError, match="for one text, pass \\[text\\]"):
        text_model.predict("good film")
    with pytest.raises(TypeError, match="X holds numeric inputs but the model was fitted on "
                                        "text inputs"):
        text_model.predict(np.zeros((2, 3, 1)))
    with pytest.raises(TypeError, match="X holds tokens inputs but the model was fitted on "
                                        "text"):
        text_model.predict([["good", "film"]])
    model, X, _ = numeric_model
    with pytest.raises(TypeError, match="X holds text inputs but the model was fitted on "
                                        "numeric inputs"):
        model.predict(["good film"])
    with pytest.raises(ValueError, match=r"X\[0\] has 3 features per step; the model "
                                         r"expects 2"):
        model.predict(np.zeros((2, 5, 3)))
    with pytest.raises(ValueError, match=r"X\[1\] has 1 features per step; the model "
                                         r"expects 2"):
        model.predict([np.zeros((4, 2)), np.zeros(4)])
    bad = X[:2].copy()
    bad[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match=r"X\[1\] contains NaN or infinite values"):
        model.predict(bad)
    with pytest.raises(ValueError, match=r"X\[0\] is an empty sequence"):
        model.predict([np.zeros((0, 2))])
    with pytest.raises(ValueError, match=r"X\[0\] must be a non-empty \(T, F\) or \(T,\) "
                                         r"sequence, got shape \(\)"):
        model.predict([np.float64(3.0)])
    with pytest.raises(ValueError, match="epochs must be an int >= 1, got 0"):
        fr.SequenceClassifier().fit(X, [0, 1] * 20, epochs=0, verbose=0)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 2.5"):
        fr.SequenceClassifier().fit(X, [0, 1] * 20, batch_size=2.5, verbose=0)


def test_input_option_is_checked_against_the_data(rng):
    with pytest.raises(ValueError, match="input='numeric' needs numeric X .* X holds text"):
        fr.SequenceClassifier(input="numeric").fit(TEXTS, LABELS, verbose=0)
    with pytest.raises(ValueError, match="input must be one of 'embedding', 'onehot', "
                                         "'numeric', got 'glove'"):
        fr.SequenceClassifier(input="glove").fit(*numeric(rng), verbose=0)
    with pytest.raises(ValueError, match="cell must be one of 'rnn', 'lstm', 'gru', 'jordan', got "
                                         "'transformer'"):
        fr.SequenceClassifier(cell="transformer").fit(TEXTS, LABELS, verbose=0)


# -- validation data ----------------------------------------------------------------------

def test_validation_data_pair_is_evaluated_after_each_epoch(rng):
    X, y = numeric(rng, n=60)
    model = fr.SequenceClassifier(hidden_size=6, dtype="float64", seed=0)
    history = model.fit(X[:40], y[:40], epochs=3, validation_data=(X[40:], y[40:]), **FAST).history_
    assert history is model.history_ and history.epoch == [0, 1, 2]
    assert len(history.history["val_loss"]) == 3
    # The last epoch's validation metrics are those of the final model.
    probabilities = model.predict_proba(X[40:])
    loss = -np.mean(np.log(probabilities[np.arange(20), y[40:]]))
    assert history.history["val_loss"][-1] == pytest.approx(loss, rel=1e-9)
    assert history.history["val_accuracy"][-1] == pytest.approx(model.score(X[40:], y[40:]))
    with pytest.raises(TypeError, match="validation_data must be a pair"):
        model.fit(X, y, validation_data=X[:5], verbose=0)
    with pytest.raises(TypeError, match=r"validation_data\[0\] holds text inputs"):
        model.fit(X, y, validation_data=(["a b"], [0]), verbose=0)


def test_validation_split_holds_out_a_seeded_fraction(rng):
    X, y = numeric(rng, n=40)
    model = fr.SequenceClassifier(hidden_size=6, dtype="float64", seed=7)
    history = model.fit(X, y, epochs=2, validation_split=0.25, **FAST).history_
    assert len(history.history["val_accuracy"]) == 2
    held_out = fr.data.BatchLoader(list(X), y, seed=7).split(0.25)[1].source_indices
    assert len(held_out) == 10
    assert history.history["val_accuracy"][-1] == pytest.approx(
        model.score(X[held_out], y[held_out]))
    for bad in (1.0, -0.1, "0.2", True):
        with pytest.raises(ValueError, match=r"validation_split must be a number in \[0, 1\)"):
            model.fit(X, y, validation_split=bad, verbose=0)


# -- optimizers and callbacks --------------------------------------------------------------

@pytest.mark.parametrize("name,cls", [("sgd", fr.optim.SGD), ("Adam", fr.optim.Adam),
                                      ("adamw", fr.optim.AdamW),
                                      ("RMSprop", fr.optim.RMSprop),
                                      ("adagrad", fr.optim.Adagrad)])
def test_make_optimizer_by_name(name, cls):
    layer = fr.Linear(2, 2, seed=0)
    optimizer = make_optimizer(name, [layer], lr=0.3, weight_decay=0.01)
    assert type(optimizer) is cls and optimizer.lr == 0.3
    assert optimizer.hyperparameters["weight_decay"] == 0.01
    assert optimizer.modules == [layer]
    default = make_optimizer(name, [layer])
    assert default.lr == cls([layer]).lr          # lr=None: the optimizer's own default
    # weight_decay=None keeps the optimizer's default (AdamW: 1e-2, decoupled)
    assert (default.hyperparameters["weight_decay"]
            == cls([layer]).hyperparameters["weight_decay"])


def test_make_optimizer_class_and_bad_values():
    layer = fr.Linear(2, 2, seed=0)
    assert type(make_optimizer(fr.optim.RMSprop, [layer], lr=0.1)) is fr.optim.RMSprop
    with pytest.raises(ValueError, match="optimizer must be one of sgd, adam, adamw, "
                                         "rmsprop, adagrad .* got 'nadam'"):
        make_optimizer("nadam", [layer])
    for bad in (fr.optim.Adam([layer]), 3, dict, None):
        with pytest.raises(TypeError, match="optimizer must be a name or an fr.optim "
                                            "optimizer class"):
            make_optimizer(bad, [layer])
    with pytest.raises(ValueError, match="lr must be a finite number >= 0"):
        make_optimizer("sgd", [layer], lr=-1.0)
    with pytest.raises(TypeError, match="lr must be a finite number >= 0.0, got 'fast'"):
        make_optimizer("adam", [layer], lr="fast")


class _Spy(Callback):
    """Records the trainer's optimizer and what predict gives during training."""

    def __init__(self, X):
        self.X, self.optimizer, self.predictions = X, None, []

    def on_train_begin(self, logs=None):
        self.optimizer = self.trainer.optimizer

    def on_epoch_end(self, epoch, logs=None):
        self.predictions.append(self.trainer.model.predict(self.X))


def test_fit_uses_the_requested_optimizer_and_runs_callbacks(rng):
    X, y = numeric(rng)
    spy = _Spy(X[:5])
    model = fr.SequenceClassifier(hidden_size=4, seed=0)
    model.fit(X, y, epochs=2, optimizer="sgd", lr=0.5, weight_decay=0.001, callbacks=[spy],
              verbose=0)
    assert type(spy.optimizer) is fr.optim.SGD and spy.optimizer.lr == 0.5
    assert spy.optimizer.hyperparameters["weight_decay"] == 0.001
    assert len(spy.predictions) == 2 and spy.predictions[0].shape == (5,)
    ended = []
    model.fit(X, y, epochs=1, callbacks=[LambdaCallback(on_train_end=ended.append)],
              verbose=0)
    assert len(ended) == 1


def test_early_stopping(rng):
    X, y = numeric(rng)
    # Nothing can improve the loss by 1e9: the run stops at the second epoch.
    stopper = EarlyStopping(monitor="loss", min_delta=1e9, patience=0)
    model = fr.SequenceClassifier(hidden_size=4, seed=0)
    history = model.fit(X, y, epochs=20, callbacks=[stopper], **FAST).history_
    assert history.epoch == [0, 1] and history.stop_reason == "callback"
    assert stopper.stopped_epoch == 1 and model.is_fitted_
    assert model.predict(X).shape == (40,)
    # restore_best_weights: the weights after fit are the best epoch's.
    stopper = EarlyStopping(monitor="val_loss", patience=1, restore_best_weights=True)
    history = model.fit(X, y, epochs=6, validation_split=0.25, callbacks=[stopper], **FAST).history_
    best = stopper.best_epoch
    assert history.history["val_loss"][best] == min(history.history["val_loss"])


def test_regressor_accepts_callbacks_and_validation_split(rng):
    X = ragged(rng, 40)
    y = np.array([x.sum() for x in X])
    stopper = EarlyStopping(monitor="val_loss", min_delta=1e9)
    model = fr.SequenceRegressor(hidden_size=4, seed=0)
    history = model.fit(X, y, epochs=10, validation_split=0.2, callbacks=[stopper], **FAST).history_
    assert history.epoch == [0, 1] and "val_loss" in history.history


# -- inputs.py ------------------------------------------------------------------------------

def test_detect_kind():
    assert detect_kind(["a b", "c"]) == "text"
    assert detect_kind([["a", "b"], ("c",)]) == "tokens"
    assert detect_kind(np.zeros((2, 3))) == "numeric"
    assert detect_kind(np.zeros((2, 3, 4), dtype=np.int32)) == "numeric"
    assert detect_kind([np.zeros((3, 2)), [[1, 2]]]) == "numeric"
    assert detect_kind(x for x in ["a"]) == "text"                     # any iterable
    with pytest.raises(TypeError, match="X must be a list of sequences .for one text, "
                                        "pass \\[text\\]"):
        detect_kind("abc")
    with pytest.raises(TypeError, match="X must be a list of sequences, got int"):
        detect_kind(5)
    # A set has no order: its texts would be paired with the wrong labels.
    with pytest.raises(TypeError, match="X must be an ordered collection of sequences .*, "
                                        "got a set"):
        detect_kind({"a b", "c"})
    # Arrays of strings (a pandas column's .values) are texts or token lists.
    assert detect_kind(np.array(["a b", "c"])) == "text"
    assert detect_kind(np.array(["a b", "c"], dtype=object)) == "text"
    assert detect_kind(np.array([["a", "b"]])) == "tokens"
    assert detect_kind([np.array(["a", "b"]), ["c"]]) == "tokens"
    with pytest.raises(ValueError, match="X: Complex data not supported"):
        detect_kind(np.zeros((2, 3), dtype=complex))
    with pytest.raises(TypeError, match="must hold numbers when given as an array, got "
                                        "dtype bool"):
        detect_kind(np.zeros((2, 3), dtype=bool))
    with pytest.raises(ValueError, match=r"shape \(N, T\) or \(N, T, F\) with N >= 1, got "
                                         r"\(3,\)"):
        detect_kind(np.zeros(3))
    with pytest.raises(ValueError, match=r"got \(0, 3\)"):
        detect_kind(np.zeros((0, 3)))
    with pytest.raises(TypeError, match=r"Xv\[1\] must be a string like Xv\[0\], got list"):
        detect_kind(["a", ["b"]], "Xv")
    with pytest.raises(TypeError, match=r"X\[1\] must be a list of token strings like "
                                        r"X\[0\], got str"):
        detect_kind([["a"], "b"])
    with pytest.raises(TypeError, match=r"X\[1\] must be a list of token strings"):
        detect_kind([["a"], ["b", 3]])


def test_input_encoder_text_tokens_numeric():
    words = InputEncoder("word", lower=True).fit(["Good film", "good plot"])
    assert words.kind == "text" and words.size == len(words.vocab) == 4 + 3
    ids = words.transform(["GOOD unseen film"])
    assert ids[0].dtype == np.int64
    assert ids[0].tolist() == [words.vocab["good"], UNK, words.vocab["film"]]
    chars = InputEncoder("char").fit(["ab", "ba"])
    assert chars.transform(["abc"])[0].tolist() == [chars.vocab["a"], chars.vocab["b"], UNK]
    limited = InputEncoder("word", min_freq=2).fit(["a a b", "a c"])
    assert limited.vocab.tokens[4:] == ["a"]
    tokens = InputEncoder().fit([["x", "y"], ["y"]])
    assert tokens.kind == "tokens"
    assert tokens.transform([("y", "x")])[0].tolist() == [tokens.vocab["y"], tokens.vocab["x"]]
    series = InputEncoder().fit(np.arange(6).reshape(2, 3))
    assert series.kind == "numeric" and series.size == series.num_features == 1
    out = series.transform([np.array([1, 2]), [3.5]])
    assert [o.shape for o in out] == [(2, 1), (1, 1)] and out[0].dtype == np.float64
    with pytest.raises(TypeError, match=r"X\[0\] must hold numbers, got dtype bool"):
        series.transform([np.array([True])])
    for encoder in (words, chars, tokens, series):
        data = json.loads(json.dumps(encoder.to_dict()))
        copy = InputEncoder.from_dict(data)
        assert copy.kind == encoder.kind and copy.size == encoder.size
        sample = [[1.0, 2.0]] if encoder.kind == "numeric" else (
            [["x", "q"]] if encoder.kind == "tokens" else ["good abc film"])
        for a, b in zip(copy.transform(sample), encoder.transform(sample)):
            np.testing.assert_array_equal(a, b)


def test_check_count():
    check_count = Integer(low=1)
    assert check_count("n", 3) == 3 and check_count("n", np.int64(2)) == 2
    for bad in (0, -1, 1.5, True, "3", None):
        with pytest.raises(ValueError, match="n must be an int >= 1, got"):
            check_count("n", bad)


# -- stack.py ---------------------------------------------------------------------------

def test_sequence_encoder_layers_and_shapes(rng):
    encoder = RecurrentStack("gru", "embedding", 10, 4, num_layers=2, bidirectional=True,
                              dropout=0.1, embedding_dim=3, dtype="float64", seed=0)
    embedding, rnn, dropout = encoder.modules()
    assert isinstance(embedding, fr.Embedding) and isinstance(rnn, fr.GRU)
    assert isinstance(dropout, fr.Dropout) and rnn.dropout == 0.1
    assert embedding.padding_idx == 0 and encoder.output_size == 8
    ids = rng.integers(1, 10, size=(5, 3))
    lengths = np.array([5, 2, 3])
    out, h_n = encoder.forward(ids, lengths)
    assert out.shape == (5, 3, 8) and h_n.shape == (4, 3, 4) and out.dtype == np.float64
    assert not out[2:, 1].any()                             # padded steps emit zeros
    d_hx = encoder.backward(None, np.ones_like(h_n))       # only through the final state
    assert d_hx.shape == h_n.shape and embedding.grads["weight"].any()
    single = RecurrentStack("rnn", "numeric", 2, 3, dropout=0.5, seed=0)
    assert single.rnn.dropout == 0.0 and isinstance(single.modules()[-1], fr.Dropout)
    onehot = RecurrentStack("lstm", "onehot", 6, 3, seed=0)
    assert onehot.modules() == [onehot.rnn] and onehot.rnn.input_size == 6
    with pytest.raises(ValueError,
                       match="cell must be one of 'rnn', 'lstm', 'gru', 'jordan', got 'x'"):
        RecurrentStack("x", "numeric", 2, 3)
    with pytest.raises(ValueError, match="input must be one of 'embedding', 'onehot', "
                                         "'numeric', got 'y'"):
        RecurrentStack("gru", "y", 2, 3)
    with pytest.raises(ValueError, match="pretrained vectors must have 5 rows"):
        RecurrentStack("gru", "embedding", 5, 3, pretrained=np.zeros((4, 2)))


def test_same_seed_same_model_and_layer_seeds(rng):
    assert layer_seeds(3, 4) == layer_seeds(3, 4)
    assert len(set(layer_seeds(3, 4))) == 4 and layer_seeds(3, 2) != layer_seeds(4, 2)
    assert layer_seeds(None, 2) != layer_seeds(None, 2)
    X, y = numeric(rng)
    runs = []
    for _ in range(2):
        model = fr.SequenceClassifier(hidden_size=4, dropout=0.3, seed=11)
        model.fit(X, y, epochs=2, **FAST)
        runs.append(model.predict_proba(X))
    np.testing.assert_array_equal(runs[0], runs[1])


def test_pooling_last_gradient_goes_to_the_top_layer_only():
    h = np.arange(4 * 2 * 3, dtype=np.float64).reshape(4, 2, 3)   # 2 layers x 2 directions
    pool = Pooling("last", bidirectional=True)
    top = pool.forward(np.zeros((3, 2, 6)), (h, h + 100), np.array([3, 1]))
    np.testing.assert_array_equal(top, np.concatenate([h[2], h[3]], axis=1))
    d_out, (d_h, d_c) = pool.backward(np.arange(12.0).reshape(2, 6))
    assert d_out is None and d_c is None
    assert not d_h[:2].any()
    np.testing.assert_array_equal(d_h[2], [[0, 1, 2], [6, 7, 8]])
    np.testing.assert_array_equal(d_h[3], [[3, 4, 5], [9, 10, 11]])


# -- all five task models: one API ---------------------------------------------------------

SENTENCES = [["Anna", "lives", "here"], ["Ben", "left"], ["we", "saw", "Clara"]] * 4
TAGS = [["B-PER", "O", "O"], ["B-PER", "O"], ["O", "O", "B-PER"]] * 4
STRINGS = ["abc", "bca", "cab", "ab", "ca", "bcb"] * 2
LM_TEXT = "the cat sat on the mat. " * 6
SERIES = np.random.default_rng(0).standard_normal((12, 4, 2))

MODELS = [fr.SequenceClassifier, fr.SequenceRegressor, fr.SequenceTagger, fr.LanguageModel,
          fr.Seq2Seq]
FIT_KEYWORDS = ("epochs", "batch_size", "validation_data", "validation_split", "callbacks",
                "verbose", "optimizer", "lr", "clip_norm", "weight_decay", "resume_from")


def _fit(model, epochs=1, **options):
    """Fit any task model on its tiny data set; returns the model."""
    options = dict(verbose=0, epochs=epochs, batch_size=4, **options)
    if isinstance(model, fr.SequenceClassifier):
        model.fit(TEXTS[:12], LABELS[:12], **options)
    elif isinstance(model, fr.SequenceRegressor):
        y = SERIES.sum(axis=2) if model.per_step else SERIES.sum(axis=(1, 2))
        model.fit(SERIES, list(y) if model.per_step else y, **options)
    elif isinstance(model, fr.SequenceTagger):
        model.fit(SENTENCES, TAGS, **options)
    elif isinstance(model, fr.LanguageModel):
        model.fit(LM_TEXT, bptt=4, **options)
    else:
        model.fit(STRINGS, [s[::-1] for s in STRINGS], **options)
    return model


def _outputs(model):
    """What the fitted model gives for new input, comparable with ==."""
    if isinstance(model, fr.LanguageModel):
        return model.generate("the", length=8, seed=0), model.evaluate("the mat")
    if isinstance(model, fr.Seq2Seq):
        return model.predict(STRINGS[:4], beam_size=2), model.encode(STRINGS[:4]).tolist()
    if isinstance(model, fr.SequenceTagger):
        probabilities = model.predict_proba(SENTENCES[:3])
        return model.predict(SENTENCES[:3]), [p.tolist() for p in probabilities]
    if isinstance(model, fr.SequenceRegressor):
        predicted = model.predict(SERIES[:3])
        return [np.asarray(p).tolist() for p in predicted]
    return model.predict(TEXTS[:4]).tolist(), model.predict_proba(TEXTS[:4]).tolist()


def _small(cls, **params):
    options = dict(hidden_size=4, seed=0)
    if cls is not fr.SequenceRegressor:
        options["embedding_dim"] = 4
    if cls is fr.LanguageModel:
        options["level"] = "word"
    return cls(**dict(options, **params))


def test_shared_constructor_parameters_have_the_same_defaults():
    """A parameter that means the same thing has the same name and default in
    every model (hidden_size, bidirectional, tokenizer and lower differ on
    purpose and are documented per model)."""
    shared = {"cell": "lstm", "num_layers": 1, "dropout": 0.0, "input": "embedding",
              "embedding_dim": 64, "pretrained": None, "freeze_embedding": False,
              "min_freq": 1, "max_vocab": None, "dtype": "float32", "seed": None}
    for cls in MODELS:
        parameters = inspect.signature(cls.__init__).parameters
        for name, default in shared.items():
            if name in parameters:
                assert parameters[name].default == default, (cls.__name__, name)
        names = [n for n in parameters if n != "self"]
        seed = names.index("seed")
        assert names[seed - 1] == "dtype", cls.__name__
        assert names[seed + 1:] == list(cls._training_params), cls.__name__     # then training
        if "input" in names and "embedding_dim" in names:      # same order everywhere
            assert names.index("input") + 1 == names.index("embedding_dim"), cls.__name__


def test_fit_predict_and_score_keywords_agree_across_models():
    for cls in MODELS:
        fit = inspect.signature(cls.fit).parameters
        reference = inspect.signature(fr.SequenceClassifier.fit).parameters
        for name in FIT_KEYWORDS:
            assert name in fit, (cls.__name__, name)
            if name != "clip_norm":     # LM and Seq2Seq clip by default (documented)
                assert fit[name].default == reference[name].default, (cls.__name__, name)
        for method in ("predict", "predict_proba", "score", "encode", "evaluate"):
            if hasattr(cls, method):
                assert "batch_size" in inspect.signature(getattr(cls, method)).parameters, \
                    (cls.__name__, method)


def test_every_public_method_documents_its_arguments():
    for cls in MODELS:
        for name, member in inspect.getmembers(cls, inspect.isfunction):
            if name.startswith("_"):
                continue
            doc = inspect.getdoc(member)
            assert doc, f"{cls.__name__}.{name} has no docstring"
            for parameter in inspect.signature(member).parameters.values():
                if parameter.name == "self" or parameter.kind is parameter.VAR_KEYWORD:
                    continue
                assert parameter.name in doc, \
                    f"{cls.__name__}.{name} does not document {parameter.name!r}"
        class_doc = inspect.getdoc(cls)
        for parameter in list(inspect.signature(cls.__init__).parameters)[1:]:
            assert parameter in class_doc, f"{cls.__name__} does not document {parameter!r}"


CHANGES = {
    fr.SequenceClassifier: dict(output="sigmoid", pooling="mean", bidirectional=True,
                                hidden_size=6),
    fr.SequenceRegressor: dict(per_step=True, bidirectional=True, hidden_size=6),
    fr.SequenceTagger: dict(bidirectional=False, hidden_size=6, cell="gru"),
    fr.LanguageModel: dict(level="char", hidden_size=6, cell="gru"),
    fr.Seq2Seq: dict(tokenizer="word", lower=True, hidden_size=6),
}


@pytest.mark.parametrize("cls", MODELS, ids=lambda cls: cls.__name__)
def test_set_params_after_fit_takes_effect_at_the_next_fit_only(cls, tmp_path):
    """A fitted model keeps predicting and saving with the parameters it was
    fitted with; set_params used to change predict (a pooled head read as
    per-step, softmax logits read as a sigmoid) and the saved file (the new
    parameters with the old weights)."""
    model = _fit(_small(cls))
    fitted_params = model.get_params()
    before = _outputs(model)
    model.set_params(**CHANGES[cls])
    assert _outputs(model) == before
    loaded = fr.load(model.save(tmp_path / "m.npz"))
    assert loaded.get_params() == fitted_params
    assert _outputs(loaded) == before
    _fit(model)                                             # now the change applies
    assert model.get_params() == dict(fitted_params, **CHANGES[cls])
    assert model.modules()[-1].in_features in (6, 12)       # the head sees the new size


@pytest.mark.parametrize("cls", MODELS, ids=lambda cls: cls.__name__)
def test_a_failed_refit_of_any_model_leaves_no_stale_model(cls):
    """Rebuilt layers are untrained: after a refit that fails past the build
    (here: at the optimizer) the model must not predict with them."""
    model = _fit(_small(cls))
    with pytest.raises(ValueError, match="optimizer must be one of"):
        _fit(model, optimizer="nadam")
    with pytest.raises(NotFittedError, match=f"this {cls.__name__} is not fitted yet"):
        _outputs(model)
    _fit(model)
    _outputs(model)


ROUND_TRIPS = [
    (fr.SequenceClassifier, dict(input="onehot", bidirectional=True, dtype="float64")),
    (fr.SequenceClassifier, dict(cell="rnn", bidirectional=True, num_layers=2, dropout=0.2)),
    (fr.SequenceRegressor, dict(bidirectional=True, per_step=True, dtype="float64")),
    (fr.SequenceTagger, dict(input="onehot", dtype="float64")),
    (fr.SequenceTagger, dict(cell="gru", bidirectional=False, num_layers=2, dropout=0.1)),
    (fr.LanguageModel, dict(input="onehot", dtype="float64", level="char")),
    (fr.LanguageModel, dict(cell="rnn", num_layers=2, dropout=0.2)),
    (fr.Seq2Seq, dict(input="onehot", dtype="float64")),
    (fr.Seq2Seq, dict(cell="gru", num_layers=2, tokenizer="word")),
]


@pytest.mark.parametrize("cls,params", ROUND_TRIPS,
                         ids=lambda value: value.__name__ if isinstance(value, type) else
                         "-".join(f"{k}={v}" for k, v in value.items()))
def test_save_load_round_trip_of_every_task(cls, params, tmp_path):
    model = _fit(_small(cls, **params), epochs=2)
    loaded = fr.load(model.save(tmp_path / "model.npz"))
    assert type(loaded) is cls and loaded.get_params() == model.get_params()
    assert _outputs(loaded) == _outputs(model)
    dtype = np.dtype(params.get("dtype", "float32"))
    for a, b in zip(loaded.modules(), model.modules()):
        assert type(a) is type(b) and not a.training
        for name, value in b.state_dict().items():
            assert a.state_dict()[name].dtype == dtype
            np.testing.assert_array_equal(a.state_dict()[name], value, err_msg=name)


@pytest.mark.parametrize("cls", MODELS, ids=lambda cls: cls.__name__)
def test_empty_input_at_prediction_is_a_clear_error(cls):
    model = _fit(_small(cls))
    if cls is fr.LanguageModel:
        with pytest.raises(ValueError, match="text_or_texts is an empty list: need at least "
                                             "one text"):
            model.evaluate([])
        assert model.generate("the", length=0) == "the"
        return
    name = "sources" if cls is fr.Seq2Seq else "X"
    with pytest.raises(ValueError, match=f"{name} is empty: need at least one sequence"):
        model.predict([])
    with pytest.raises(ValueError, match="is empty: need at least one sequence"):
        model.score([], [])


def test_flags_must_be_booleans():
    """bidirectional="no" is a truthy string: it used to build a bidirectional model."""
    for cls, name in ((fr.SequenceClassifier, "bidirectional"),
                      (fr.SequenceTagger, "bidirectional"),
                      (fr.SequenceRegressor, "bidirectional"),
                      (fr.SequenceRegressor, "per_step"),
                      (fr.SequenceClassifier, "freeze_embedding"),
                      (fr.LanguageModel, "freeze_embedding")):
        with pytest.raises(TypeError, match=f"{name} must be True or False, got 'no'"):
            _fit(_small(cls, **{name: "no"}))
    model = _fit(_small(fr.SequenceClassifier, bidirectional=np.True_))
    assert model.network_.output_size == 8
    lm = _fit(_small(fr.LanguageModel))
    with pytest.raises(TypeError, match="stop_at_eos must be True or False, got 'yes'"):
        lm.generate("the", length=3, stop_at_eos="yes")


def test_seed_and_dropout_errors_name_the_argument():
    for bad in ("x", -1, 1.5, True):
        with pytest.raises(ValueError, match=r"seed must be None or an int >= 0, got "):
            _fit(_small(fr.SequenceTagger, seed=bad))
    with pytest.raises(ValueError, match=r"seed must be None or an int >= 0, got 'x'"):
        _fit(_small(fr.LanguageModel)).generate("the", length=2, seed="x")
    for cls in (fr.SequenceClassifier, fr.Seq2Seq):
        for bad in (1.5, -0.1, "0.2"):
            with pytest.raises(ValueError, match=r"dropout must be a number in \[0, 1\), got"):
                _fit(_small(cls, dropout=bad))


def test_pretrained_vectors_need_an_embedding_and_the_right_rows():
    vectors = np.ones((50, 3))
    with pytest.raises(ValueError, match="pretrained vectors need input='embedding', but "
                                         "this model's input is 'onehot'"):
        _fit(_small(fr.SequenceClassifier, input="onehot", pretrained=vectors))
    X, y = numeric(np.random.default_rng(0))
    with pytest.raises(ValueError, match="pretrained vectors need input='embedding', .*"
                                         "'numeric' \\(numeric data\\)"):
        fr.SequenceClassifier(pretrained=vectors).fit(X, y, verbose=0)
    with pytest.raises(ValueError, match="pretrained: vocab has .* tokens but source has 50 "
                                         "rows"):
        _fit(_small(fr.SequenceTagger, pretrained=vectors))


def test_vocabulary_limits_are_checked_under_the_models_names():
    for cls in (fr.SequenceClassifier, fr.SequenceTagger, fr.LanguageModel, fr.Seq2Seq):
        with pytest.raises(ValueError, match=r"max_vocab must be None or an int >= 1, got -1"):
            _fit(_small(cls, max_vocab=-1))
        with pytest.raises(ValueError, match=r"min_freq must be an int >= 1, got 0"):
            _fit(_small(cls, min_freq=0))
    # Limits that leave only the specials would read every input as <unk>.
    for cls, name in ((fr.SequenceClassifier, "X"), (fr.SequenceTagger, "X"),
                      (fr.LanguageModel, "text_or_texts"), (fr.Seq2Seq, "sources")):
        with pytest.raises(ValueError, match=f"the vocabulary of {name} has no tokens besides "
                                             f"the specials: min_freq=1000"):
            _fit(_small(cls, min_freq=1000))


def test_validation_arguments_name_themselves():
    with pytest.raises(ValueError, match=r"validation_split=0.1 cannot split 4 sequences: "
                                         r"fraction 0.1 of 4 examples gives 0 validation"):
        fr.SequenceClassifier().fit(TEXTS[:4], LABELS[:4], validation_split=0.1, verbose=0)
    with pytest.raises(TypeError, match=r"validation_data must be a pair \(X, y\) of inputs "
                                        r"and targets, got a list of length 1"):
        _fit(_small(fr.SequenceTagger), validation_data=[SENTENCES])
    with pytest.raises(ValueError, match=r"validation_split must be a number in \[0, 1\), "
                                         r"got np.True_"):
        _fit(_small(fr.LanguageModel), validation_split=np.True_)


def test_generators_and_string_arrays_are_read_once():
    """Inputs are read twice (kind detection, then encoding): a generator used
    to arrive empty the second time ("corpus is empty", IndexError)."""
    reference = fr.SequenceClassifier(hidden_size=4, seed=0)
    reference.fit(TEXTS, LABELS, epochs=1, **FAST)
    model = fr.SequenceClassifier(hidden_size=4, seed=0)
    model.fit((text for text in TEXTS), iter(LABELS), epochs=1, **FAST)
    np.testing.assert_array_equal(model.predict_proba(iter(TEXTS)),
                                  reference.predict_proba(TEXTS))
    # A pandas column's .values: an object array of str.
    column = np.array(TEXTS, dtype=object)
    np.testing.assert_array_equal(model.predict_proba(column), reference.predict_proba(TEXTS))
    assert model.score(column, np.array(LABELS, dtype=object)) == reference.score(TEXTS, LABELS)
    regressor = fr.SequenceRegressor(hidden_size=4, seed=0)
    regressor.fit((x for x in SERIES), SERIES.sum(axis=(1, 2)), epochs=1, **FAST)
    assert regressor.predict(x for x in SERIES[:3]).shape == (3,)
    ragged_objects = np.empty(2, dtype=object)
    ragged_objects[:] = [SERIES[0], SERIES[1, :2]]
    assert regressor.predict(ragged_objects).shape == (2,)
    tagger = fr.SequenceTagger(hidden_size=4, seed=0)
    tagger.fit((s for s in SENTENCES), (t for t in TAGS), epochs=1, **FAST)
    assert tagger.predict(iter(SENTENCES[:2])) == tagger.predict(SENTENCES[:2])
    assert tagger.predict([np.array(SENTENCES[0])]) == tagger.predict(SENTENCES[:1])
    lm = fr.LanguageModel(level="word", hidden_size=4, seed=0)
    lm.fit((text for text in [LM_TEXT, LM_TEXT]), epochs=1, batch_size=2, bptt=4, verbose=0)
    assert lm.evaluate(np.array([LM_TEXT])) == lm.evaluate([LM_TEXT])


def test_missing_labels_are_refused():
    """NaN != NaN: every NaN label used to become a class of its own."""
    with pytest.raises(ValueError, match=r"y\[1\] is NaN: labels must not be missing"):
        fr.SequenceClassifier().fit(TEXTS[:3], [1.0, float("nan"), float("nan")], verbose=0)
    tags = [list(t) for t in TAGS]
    tags[1][1] = np.nan
    with pytest.raises(ValueError, match=r"y\[1\]\[1\] is NaN: tags must not be missing"):
        fr.SequenceTagger().fit(SENTENCES, tags, verbose=0)


def test_prediction_batches_group_similar_lengths_and_keep_data_order():
    """Alternating lengths 1 and 40 in batches of 2: in data order every batch
    would run 40 steps; grouped by length, half of them run 1."""
    X = [np.full((1 if i % 2 else 40, 2), float(i)) for i in range(20)]
    model = fr.SequenceRegressor(hidden_size=3, seed=0)
    model.fit(X, np.arange(20.0), epochs=1, **FAST)
    steps = [batch.inputs.shape[0] for batch in model._batches(model.inputs_.transform(X), 2)]
    assert sum(steps) == 5 * 40 + 5 * 1
    single = np.array([model.predict([x])[0] for x in X])
    np.testing.assert_allclose(model.predict(X, batch_size=2), single, rtol=1e-5, atol=1e-6)


def test_batches_of_one_length_one_sequences_unicode_and_long_inputs(tmp_path):
    """The small and odd shapes: every batch a single sequence, sequences of one
    step, non-ASCII text (combining marks, emoji, CJK) through save/load, and a
    long sequence batched with short ones."""
    texts = ["é", "😀", "東", "e\u0301", "ß", "😀😀"]
    labels = ["a", "b", "a", "b", "a", "b"]
    clf = fr.SequenceClassifier(hidden_size=4, embedding_dim=4, tokenizer="char", seed=0)
    clf.fit(texts, labels, epochs=2, batch_size=1, verbose=0)
    assert len(clf.inputs_.vocab) == 4 + 6            # é, 😀, 東, e, U+0301, ß
    loaded = fr.load(clf.save(tmp_path / "unicode.npz"))
    assert loaded.inputs_.vocab.tokens == clf.inputs_.vocab.tokens
    np.testing.assert_array_equal(loaded.predict_proba(texts), clf.predict_proba(texts))
    long_text = "東é" * 1500
    alone = clf.predict_proba([long_text])
    np.testing.assert_allclose(clf.predict_proba(texts + [long_text])[-1:], alone,
                               rtol=1e-5, atol=1e-6)

    tagger = fr.SequenceTagger(hidden_size=4, embedding_dim=4, seed=0)
    tagger.fit([["東京"], ["Zoë"]], [["LOC"], ["PER"]], epochs=1, batch_size=1, verbose=0)
    assert [len(t) for t in tagger.predict([["東京"], ["x", "y", "z"]])] == [1, 3]

    regressor = fr.SequenceRegressor(hidden_size=3, per_step=True, seed=0)
    regressor.fit([np.ones(1), np.zeros(1)], [np.ones(1), np.zeros(1)], epochs=1,
                  batch_size=1, verbose=0)
    assert [p.shape for p in regressor.predict([np.ones(1), np.ones(3)])] == [(1,), (3,)]

    s2s = fr.Seq2Seq(hidden_size=4, embedding_dim=4, seed=0)
    s2s.fit(["é", "😀"], ["😀", "é"], epochs=1, batch_size=1, verbose=0)
    for beam_size in (1, 3):
        assert all(len(out) <= 1 for out in s2s.predict(["é", "東"], max_length=1,
                                                        beam_size=beam_size))

    lm = fr.LanguageModel(level="char", hidden_size=4, embedding_dim=4, seed=0)
    lm.fit("é😀東" * 5, epochs=1, batch_size=1, bptt=3, verbose=0)
    assert lm.generate("é", length=1, seed=0)[0] == "é"
    assert len(lm.generate("é", length=1, seed=0)) == 2
    assert set(lm.generate("", length=20, seed=0)) <= set("é😀東")
