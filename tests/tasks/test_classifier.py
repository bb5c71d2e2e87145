"""fr.SequenceClassifier: learning, pooling gradients, predictions, labels.

Every learning test fits a tiny generated many-to-one problem (a few hundred
short sequences, a few epochs) and must reach >= 0.95 accuracy on held-out
data.  The gradient tests run the classifier's own ``train_batch`` on a
hand-built float64 batch of unsorted, variable lengths and compare every
parameter gradient with central differences of ``evaluate_batch``'s loss:
that proves the RecurrentStack + Pooling + Linear + loss backward.
"""

import numpy as np
import pytest

import fastrnn as fr
from fastrnn.data import Batch
from helpers import central_differences

FAST = dict(verbose=0, batch_size=16, lr=0.02)


# -- generated problems --------------------------------------------------------------

def numeric_problem(rng, n, classes=3, ragged=False, steps=6, features=3):
    """Class k shifts feature k up by 2 at every step: (N, T, F) or a ragged list
    (lengths 4..T); the Bayes accuracy is > 0.99."""
    labels = rng.integers(classes, size=n)
    lengths = rng.integers(4, steps + 1, size=n) if ragged else np.full(n, steps)
    X = []
    for label, length in zip(labels, lengths):
        x = rng.standard_normal((length, features))
        x[:, label % features] += 2.0
        X.append(x)
    return (X if ragged else np.stack(X)), labels


WORDS = ["film", "plot", "the", "a", "was", "very", "actor", "scene"]


def word_problem(rng, n):
    """Token lists with one keyword at a random position; the label names it."""
    X, y = [], []
    for _ in range(n):
        tokens = list(rng.choice(WORDS, rng.integers(3, 8)))
        label = ["good", "bad", "meh"][rng.integers(3)]
        tokens[rng.integers(len(tokens))] = label
        X.append(tokens)
        y.append(label)
    return X, y


def char_problem(rng, n):
    """Strings over 'abcd' with one 'x' or 'y' inside; the label is that letter."""
    X, y = [], []
    for _ in range(n):
        chars = list(rng.choice(list("abcd"), rng.integers(3, 9)))
        label = "xy"[rng.integers(2)]
        chars[rng.integers(len(chars))] = label
        X.append("".join(chars))
        y.append(label)
    return X, y


def held_out_accuracy(model, X_test, y_test):
    predicted = model.predict(X_test)
    return float(np.mean([p == t for p, t in zip(predicted.tolist(), list(y_test))]))


# -- learning -------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["word", "char", "tokens"])
def test_learns_token_problems(kind):
    rng = np.random.default_rng(1)
    if kind == "char":
        X, y = char_problem(rng, 500)
    else:
        X, y = word_problem(rng, 500)
        if kind == "word":
            X = [" ".join(tokens).upper() for tokens in X]   # lower=True folds case
    model = fr.SequenceClassifier(cell="gru", hidden_size=16, embedding_dim=8,
                                  tokenizer="char" if kind == "char" else "word", seed=0)
    model.fit(X[:300], y[:300], epochs=6, **FAST)
    assert model.inputs_.kind == ("tokens" if kind == "tokens" else "text")
    assert held_out_accuracy(model, X[300:], y[300:]) >= 0.95
    if kind == "char":
        assert len(model.inputs_.vocab) == 4 + 6          # specials + a b c d x y


@pytest.mark.parametrize("ragged", [False, True], ids=["array", "ragged"])
@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_learns_numeric_every_cell_and_pooling(cell, pooling, ragged):
    rng = np.random.default_rng(2)
    X, y = numeric_problem(rng, 450, ragged=ragged)
    model = fr.SequenceClassifier(cell=cell, hidden_size=12, pooling=pooling, seed=0)
    model.fit(X[:300], y[:300], epochs=5, **FAST)
    assert model.inputs_.kind == "numeric" and model.network_.input_kind == "numeric"
    assert model.score(X[300:], y[300:]) >= 0.95


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
def test_learns_bidirectional(pooling):
    # The keyword is at a random position: a bidirectional "last" state sees it
    # from both ends.
    rng = np.random.default_rng(3)
    X, y = word_problem(rng, 450)
    model = fr.SequenceClassifier(cell="lstm", hidden_size=8, embedding_dim=8,
                                  bidirectional=True, pooling=pooling, seed=1)
    model.fit(X[:300], y[:300], epochs=6, **FAST)
    assert model.network_.output_size == 16 and model.head_.in_features == 16
    assert model.score(X[300:], y[300:]) >= 0.95


def test_learns_binary_with_sigmoid_output():
    rng = np.random.default_rng(4)
    X, labels = numeric_problem(rng, 450, classes=2, ragged=True)
    y = np.where(labels == 1, "pos", "neg")
    model = fr.SequenceClassifier(cell="gru", hidden_size=12, output="sigmoid", seed=0)
    model.fit(X[:300], y[:300], epochs=5, **FAST)
    assert model.head_.out_features == 1 and isinstance(model.loss_, fr.BCEWithLogitsLoss)
    assert model.classes_ == ["neg", "pos"]
    assert model.score(X[300:], y[300:]) >= 0.95
    probabilities = model.predict_proba(X[300:])
    assert probabilities.shape == (150, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=0, atol=1e-12)


def test_learns_with_onehot_input():
    rng = np.random.default_rng(5)
    X, y = char_problem(rng, 450)
    model = fr.SequenceClassifier(cell="gru", hidden_size=16, input="onehot",
                                  tokenizer="char", seed=0)
    model.fit(X[:300], y[:300], epochs=6, **FAST)
    assert model.network_.embedding is None and model.network_.input_kind == "onehot"
    assert model.network_.rnn.input_size == len(model.inputs_.vocab)
    assert model.score(X[300:], y[300:]) >= 0.95


@pytest.mark.parametrize("names,expected", [
    (["cat", "ant", "bee"], ["ant", "bee", "cat"]),            # str: sorted
    ([10, 3, 7], [3, 7, 10]),                                  # int: sorted
    (["b", 2, "a"], None),                                     # mixed: first seen
])
def test_label_types(names, expected):
    rng = np.random.default_rng(6)
    X, ids = numeric_problem(rng, 450)
    y = [names[i] for i in ids]
    model = fr.SequenceClassifier(cell="gru", hidden_size=12, seed=0)
    model.fit(X[:300], y[:300], epochs=5, **FAST)
    if expected is None:
        expected = list(dict.fromkeys(y[:300]))
    assert model.classes_ == expected
    predicted = model.predict(X[300:])
    # Each prediction is one of the labels themselves, type included (mixed
    # labels must not all turn into strings, 2 is not '2').
    assert all(any(p is c or (type(p) is type(c) and p == c) for c in names)
               for p in predicted.tolist())
    assert held_out_accuracy(model, X[300:], y[300:]) >= 0.95
    assert model.score(X[300:], y[300:]) == pytest.approx(
        held_out_accuracy(model, X[300:], y[300:]))


def test_numpy_labels_and_bool_labels():
    rng = np.random.default_rng(7)
    X, ids = numeric_problem(rng, 120, classes=2)
    model = fr.SequenceClassifier(cell="gru", hidden_size=8, seed=0)
    model.fit(X, ids.astype(bool), epochs=1, **FAST)
    assert model.classes_ == [False, True] and model.predict(X).dtype == bool
    model.fit(X, np.array(["x", "y"])[ids], epochs=1, **FAST)
    assert model.predict(X).dtype.kind == "U"


def test_sigmoid_needs_two_classes():
    rng = np.random.default_rng(8)
    X, y = numeric_problem(rng, 30, classes=3)
    with pytest.raises(ValueError, match="output='sigmoid' is for 2 classes; y has 3"):
        fr.SequenceClassifier(output="sigmoid").fit(X, y, verbose=0)
    with pytest.raises(ValueError, match="output must be one of 'softmax', 'sigmoid'"):
        fr.SequenceClassifier(output="relu").fit(X, y, verbose=0)
    with pytest.raises(ValueError, match="at least 2 distinct labels"):
        fr.SequenceClassifier().fit(X, np.zeros(30, dtype=int), verbose=0)


# -- gradients through the whole stack -------------------------------------------------

LENGTHS = np.array([5, 2, 4, 1, 3], dtype=np.int64)      # unsorted, max = T


def _fitted(rng, classes=3, **options):
    """A float64 classifier on numeric inputs with 2 features (built by fit)."""
    X, y = numeric_problem(rng, 20, classes=classes, features=2, steps=5)
    model = fr.SequenceClassifier(hidden_size=3, dtype="float64", seed=0, **options)
    model.fit(X, y, epochs=1, verbose=0, batch_size=8)
    return model


def _assert_gradients_match(model, batch, rng, per_param=30):
    """Every module's gradient from train_batch vs central differences of the loss."""
    for module in model.modules():      # as the Trainer does before a training step
        module.train()
        module.zero_grad()
    metrics, weight = model.train_batch(batch)
    assert weight == len(batch.lengths)
    analytic = [{name: grad.copy() for name, grad in module.grads.items()}
                for module in model.modules()]

    def loss():
        return model.evaluate_batch(batch)[0]["loss"]

    assert loss() == pytest.approx(metrics["loss"], rel=1e-12)
    checked = 0
    for module, grads in zip(model.modules(), analytic):
        for name, param in module.named_parameters():
            indices = rng.choice(param.size, min(param.size, per_param), replace=False)
            numeric = central_differences(param, loss, 1e-6, indices)
            np.testing.assert_allclose(grads[name].reshape(-1)[indices], numeric,
                                       rtol=1e-5, atol=1e-8,
                                       err_msg=f"{type(module).__name__}.{name}")
            checked += int(np.any(numeric != 0))
    assert checked >= 4     # the rnn weights and the head all receive gradient


def _numeric_batch(rng, model, classes=3):
    steps, batch = int(LENGTHS.max()), len(LENGTHS)
    inputs = rng.standard_normal((steps, batch, 2))
    inputs[np.arange(steps)[:, None] >= LENGTHS[None, :]] = 7.0     # padding: ignored
    targets = rng.integers(classes, size=batch).astype(np.int64)
    return Batch(inputs, LENGTHS.copy(), targets, np.arange(batch))


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_gradients_match_finite_differences(cell, pooling, bidirectional):
    rng = np.random.default_rng(10)
    model = _fitted(rng, cell=cell, pooling=pooling, bidirectional=bidirectional,
                    num_layers=2 if cell == "gru" else 1)
    _assert_gradients_match(model, _numeric_batch(rng, model), rng)


@pytest.mark.parametrize("pooling", ["last", "max"])
def test_gradients_sigmoid_output(pooling):
    rng = np.random.default_rng(11)
    model = _fitted(rng, classes=2, output="sigmoid", pooling=pooling, bidirectional=True)
    _assert_gradients_match(model, _numeric_batch(rng, model, classes=2), rng)


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
def test_gradients_reach_the_embedding(pooling):
    rng = np.random.default_rng(12)
    X, y = word_problem(rng, 20)
    model = fr.SequenceClassifier(cell="lstm", hidden_size=3, embedding_dim=2,
                                  bidirectional=True, pooling=pooling, dtype="float64",
                                  seed=0)
    model.fit(X, y, epochs=1, verbose=0)
    steps, size = int(LENGTHS.max()), len(LENGTHS)
    ids = rng.integers(4, len(model.inputs_.vocab), size=(steps, size))
    ids[np.arange(steps)[:, None] >= LENGTHS[None, :]] = 0
    batch = Batch(ids, LENGTHS.copy(), rng.integers(3, size=size), np.arange(size))
    assert isinstance(model.modules()[0], fr.Embedding)
    _assert_gradients_match(model, batch, rng, per_param=40)


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
def test_padding_values_never_matter(pooling):
    rng = np.random.default_rng(13)
    model = _fitted(rng, pooling=pooling, bidirectional=True)
    batch = _numeric_batch(rng, model)
    before = model.evaluate_batch(batch)[0]["loss"]
    padded = np.arange(batch.inputs.shape[0])[:, None] >= LENGTHS[None, :]
    batch.inputs[padded] = -1e3
    assert model.evaluate_batch(batch)[0]["loss"] == before


def test_pooling_forward_matches_numpy():
    rng = np.random.default_rng(14)
    out = rng.standard_normal((5, 5, 4))
    h_n = rng.standard_normal((2, 5, 2))        # one bidirectional layer, H = 2
    valid = np.arange(5)[:, None] < LENGTHS[None, :]
    mean = fr.tasks.pooling.Pooling("mean", True).forward(out, h_n, LENGTHS)
    maximum = fr.tasks.pooling.Pooling("max", True).forward(out, h_n, LENGTHS)
    last = fr.tasks.pooling.Pooling("last", True).forward(out, (h_n, h_n * 0), LENGTHS)
    for b, length in enumerate(LENGTHS):
        np.testing.assert_allclose(mean[b], out[:length, b].mean(axis=0), rtol=1e-12)
        np.testing.assert_array_equal(maximum[b], out[:length, b].max(axis=0))
    np.testing.assert_array_equal(last, np.concatenate([h_n[0], h_n[1]], axis=1))
    assert valid.sum() == LENGTHS.sum()
    with pytest.raises(ValueError, match="pooling must be one of 'last', 'mean', 'max', "
                                         "got 'sum'"):
        fr.SequenceClassifier(pooling="sum").fit(*numeric_problem(rng, 10), verbose=0)


# -- predictions ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fitted_numeric():
    rng = np.random.default_rng(20)
    X, ids = numeric_problem(rng, 260, ragged=True)
    y = np.array(["a", "b", "c"])[ids]
    model = fr.SequenceClassifier(cell="lstm", hidden_size=10, pooling="mean",
                                  bidirectional=True, dtype="float64", seed=0)
    model.fit(X[:200], y[:200], epochs=4, **FAST)
    return model, X[200:], y[200:]


def test_predict_proba_predict_and_score_agree(fitted_numeric):
    model, X, y = fitted_numeric
    probabilities = model.predict_proba(X)
    assert probabilities.shape == (len(X), 3)
    assert (probabilities > 0).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    predicted = model.predict(X)
    np.testing.assert_array_equal(predicted, np.array(model.classes_)[probabilities.argmax(1)])
    assert model.score(X, y) == pytest.approx(np.mean(predicted == y))
    # Softmax of the head's logits, computed here from the layers themselves.
    inputs, lengths = _padded(X[:3])
    out, h_n = model.network_.forward(inputs, lengths)
    logits = model.head_(model.pool_.forward(out, h_n, lengths))
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probabilities[:3], expected, rtol=1e-10)


def _padded(sequences):
    lengths = np.array([len(s) for s in sequences])
    inputs = np.zeros((lengths.max(), len(sequences), sequences[0].shape[1]))
    for b, sequence in enumerate(sequences):
        inputs[:len(sequence), b] = sequence
    return inputs, lengths


def test_order_preserved_for_unsorted_lengths(fitted_numeric, rng):
    model, X, _ = fitted_numeric
    lengths = np.array([len(x) for x in X])
    assert len(set(lengths.tolist())) > 2 and not (np.diff(lengths) >= 0).all()
    reference = model.predict_proba(X, batch_size=4)
    permutation = rng.permutation(len(X))
    permuted = model.predict_proba([X[i] for i in permutation], batch_size=4)
    np.testing.assert_allclose(permuted, reference[permutation], rtol=1e-10, atol=1e-12)
    # One at a time (no padding at all) gives the same numbers as padded batches.
    single = np.concatenate([model.predict_proba([x]) for x in X[:12]])
    np.testing.assert_allclose(single, reference[:12], rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(model.predict([X[i] for i in permutation]),
                                  model.predict(X)[permutation])


def test_sigmoid_probabilities_are_stable_for_huge_logits(rng):
    X, ids = numeric_problem(rng, 40, classes=2)
    model = fr.SequenceClassifier(hidden_size=4, output="sigmoid", seed=0)
    model.fit(X, ids, epochs=1, **FAST)
    params = dict(model.head_.named_parameters())     # the live arrays
    params["weight"][...] = 0.0
    for bias, positive in ((1e4, 1.0), (-1e4, 0.0)):
        params["bias"][...] = bias
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            probabilities = model.predict_proba(X[:3])
        np.testing.assert_array_equal(probabilities, [[1 - positive, positive]] * 3)
    params["bias"][...] = 0.5
    expected = 1 / (1 + np.exp(-0.5))
    np.testing.assert_allclose(model.predict_proba(X[:2]), [[1 - expected, expected]] * 2,
                               rtol=1e-6)
