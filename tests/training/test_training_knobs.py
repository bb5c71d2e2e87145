"""Keras's training knobs on the task models: class_weight, sample_weight,
shuffle, the CSVLogger callback, and pandas inputs."""

import csv

import numpy as np
import pytest

import fastrnn as fr
from task_data import LABELS, TEXTS

QUIET = dict(verbose=0, seed=0, hidden_size=4, embedding_dim=4)
SENTENCES = [["Anna", "lives", "here"], ["Ben", "left"], ["we", "saw", "Clara"]] * 4
TAGS = [["B-PER", "O", "O"], ["B-PER", "O"], ["O", "O", "B-PER"]] * 4


def _noise(n=40, seed=0):
    """Texts whose labels carry no signal, half pos and half neg."""
    rng = np.random.default_rng(seed)
    words = ["alpha", "beta", "gamma", "delta"]
    texts = [" ".join(rng.choice(words, 3)) for _ in range(n)]
    return texts, ["pos", "neg"] * (n // 2)


def test_uniform_weights_change_nothing():
    plain = fr.SequenceClassifier(epochs=2, **QUIET).fit(TEXTS, LABELS)
    scaled = fr.SequenceClassifier(epochs=2, **QUIET).fit(TEXTS, LABELS,
                                                         sample_weight=np.full(30, 3.0))
    balanced = fr.SequenceClassifier(epochs=2, class_weight="balanced", **QUIET)
    balanced.fit(TEXTS, LABELS)                          # balanced data: weights all 1
    np.testing.assert_array_equal(plain.predict_proba(TEXTS), scaled.predict_proba(TEXTS))
    np.testing.assert_array_equal(plain.predict_proba(TEXTS), balanced.predict_proba(TEXTS))


@pytest.mark.parametrize("output", ["softmax", "sigmoid"])
def test_class_and_sample_weights_pull_predictions(output):
    """On labels that carry no signal, the weighted class wins."""
    texts, labels = _noise()
    options = dict(QUIET, epochs=15, lr=0.05, output=output)
    weighted = fr.SequenceClassifier(class_weight={"pos": 20.0}, **options)
    assert (weighted.fit(texts, labels).predict(texts) == "pos").mean() > 0.9
    weighted = fr.SequenceClassifier(class_weight={"neg": 20.0}, **options)
    assert (weighted.fit(texts, labels).predict(texts) == "neg").mean() > 0.9
    sample_weight = np.array([1.0 if label == "neg" else 0.0 for label in labels])
    only_neg = fr.SequenceClassifier(**options).fit(texts, labels, sample_weight=sample_weight)
    assert (only_neg.predict(texts) == "neg").all()


def test_balanced_class_weight_follows_scikit_learn():
    from fastrnn.tasks.base import class_weights
    ids = np.array([0, 0, 0, 1])
    np.testing.assert_allclose(class_weights("balanced", ["a", "b"], ids), [4 / 6, 4 / 2])
    np.testing.assert_allclose(class_weights({"b": 3}, ["a", "b"], ids), [1, 3])
    pytest.importorskip("sklearn")
    from sklearn.utils.class_weight import compute_class_weight
    np.testing.assert_allclose(class_weights("balanced", [0, 1], ids),
                               compute_class_weight("balanced", classes=np.array([0, 1]),
                                                    y=ids))


def test_tagger_class_and_sample_weights():
    plain = fr.SequenceTagger(epochs=2, **QUIET).fit(SENTENCES, TAGS)
    same = fr.SequenceTagger(epochs=2, **QUIET).fit(SENTENCES, TAGS,
                                                   sample_weight=np.full(12, 0.5))
    for a, b in zip(plain.predict_proba(SENTENCES[:3]), same.predict_proba(SENTENCES[:3])):
        np.testing.assert_array_equal(a, b)
    heavy = fr.SequenceTagger(epochs=25, lr=0.05, class_weight={"B-PER": 50.0}, **QUIET)
    tags = [tag for sentence in heavy.fit(SENTENCES, TAGS).predict(SENTENCES[:3])
            for tag in sentence]
    assert tags.count("B-PER") > 3            # the rare tag is over-predicted


@pytest.mark.parametrize("call, error, match", [
    (dict(class_weight="even"), ValueError, "class_weight must be None, 'balanced' or a dict"),
    (dict(class_weight=[1, 2]), TypeError, "class_weight must be None, 'balanced' or a dict"),
    (dict(class_weight={"maybe": 2.0}), ValueError, "'maybe', which is not in y"),
    (dict(class_weight={"pos": -1.0}), ValueError, r"class_weight\['pos'\] must be a finite"),
    (dict(sample_weight=np.ones(3)), ValueError, r"one weight per sequence: shape \(30,\)"),
    (dict(sample_weight=-np.ones(30)), ValueError, "sample_weight must be finite and >= 0"),
    (dict(sample_weight=np.zeros(30)), ValueError, "0 everywhere"),
    (dict(sample_weight=["a"] * 30), TypeError, "sample_weight must be numbers"),
])
def test_weight_errors(call, error, match):
    with pytest.raises(error, match=match):
        fr.SequenceClassifier(epochs=1, **QUIET).fit(TEXTS, LABELS, **call)


def _batch_order(model, X, y, **fit_options):
    """The sequence indices in the order training read them, per epoch."""
    seen = []
    train_batch = model.train_batch

    def record(batch):
        seen.extend(batch.indices.tolist())
        return train_batch(batch)

    model.train_batch = record
    model.fit(X, y, **fit_options)
    return seen


def test_shuffle():
    X = [f"text {i}" for i in range(12)]
    y = ["a", "b"] * 6
    ordered = _batch_order(fr.SequenceClassifier(epochs=2, batch_size=4, shuffle=False,
                                                 **QUIET), X, y)
    assert ordered == list(range(12)) * 2
    shuffled = _batch_order(fr.SequenceClassifier(epochs=2, batch_size=4, **QUIET), X, y)
    assert sorted(shuffled) == sorted(ordered) and shuffled != ordered
    once = _batch_order(fr.SequenceClassifier(epochs=1, batch_size=4, **QUIET), X, y,
                        shuffle=False)
    assert once == list(range(12))


def test_csv_logger(tmp_path):
    path = tmp_path / "log.csv"
    model = fr.SequenceClassifier(epochs=3, **QUIET)
    model.fit(TEXTS, LABELS, validation_split=0.2, callbacks=[fr.CSVLogger(path)])
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr"]
    assert [row[0] for row in rows[1:]] == ["1", "2", "3"]
    history = model.history_.history
    for row, loss, val_loss in zip(rows[1:], history["loss"], history["val_loss"]):
        assert float(row[1]) == loss and float(row[3]) == val_loss
    model.fit(TEXTS, LABELS, epochs=2, callbacks=[fr.CSVLogger(path, append=True,
                                                              separator=",")])
    rows = list(csv.reader(path.open()))
    assert len(rows) == 6 and rows[4][3] == ""           # no validation in the second run
    model.fit(TEXTS, LABELS, epochs=1, callbacks=[fr.CSVLogger(path, separator=";")])
    lines = path.read_text().splitlines()
    assert lines[0] == "epoch;loss;accuracy;lr" and len(lines) == 2   # replaced
    with pytest.raises(ValueError, match="separator must be one character"):
        fr.CSVLogger(path, separator=", ")
    with pytest.raises(TypeError, match="path must be a file path"):
        fr.CSVLogger(3)
    with pytest.raises(TypeError, match="append must be True or False"):
        fr.CSVLogger(path, append="yes")


def test_pandas_inputs():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"text": TEXTS, "label": LABELS})
    reference = fr.SequenceClassifier(epochs=2, **QUIET).fit(TEXTS, LABELS)
    for X in (frame["text"], frame[["text"]]):
        model = fr.SequenceClassifier(epochs=2, **QUIET).fit(X, frame["label"])
        np.testing.assert_array_equal(model.predict_proba(X), reference.predict_proba(TEXTS))
    with pytest.raises(TypeError, match="DataFrame with 2 columns.*pass the one column"):
        fr.SequenceClassifier(epochs=1, **QUIET).fit(frame, LABELS)
    series = np.random.default_rng(0).standard_normal((20, 5))
    numbers = pd.DataFrame(series, columns=[f"t{i}" for i in range(5)])
    reg = fr.SequenceRegressor(epochs=2, verbose=0, seed=0, hidden_size=4)
    reg.fit(numbers, pd.Series(series.sum(axis=1)))
    np.testing.assert_array_equal(reg.predict(numbers), reg.predict(series))
    assert reg.n_features_in_ == 1


def test_language_model_progress_shows_bits_per_char(monkeypatch):
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    screen = Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    fr.LanguageModel(hidden_size=4, embedding_dim=4, epochs=1, verbose=1, seed=0).fit(
        "the cat sat on the mat. " * 6, batch_size=4, bptt=4)
    # The bar's last state holds the epoch's logs, bits per character among them
    # (running figures between refreshes depend on timing: checked directly).
    assert "bits_per_char: " in screen.getvalue()
    from fastrnn.training.trainer import _running
    assert _running({"loss": 2.0, "bits_per_char": 2.885}) == "bpc=2.8850"
    assert _running({"loss": 2.0}) == "loss=2.0000"
