"""The small data sets and helpers the task-model tests share (tests/tasks/,
tests/training/, tests/onnx/, tests/test_pickling.py): a text classification
set, numeric sequences, and one tiny fit of each of the five task models."""

import numpy as np

import fastrnn as fr
from fastrnn.training import Callback, save_checkpoint


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


class SaveAt(Callback):
    """Write a checkpoint in the middle of an epoch (at ``step`` of ``epoch``);
    training goes on."""

    def __init__(self, path, epoch, step):
        self.path, self.at = path, (epoch, step)

    def on_batch_end(self, step, logs=None):
        if (self.trainer.epoch, step) == self.at:
            save_checkpoint(self.path, self.trainer)
