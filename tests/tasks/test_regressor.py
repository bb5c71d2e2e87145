"""fr.SequenceRegressor: learning, shapes, R^2, gradients, bad input.

Learning tests fit small generated problems (sums, cumulative sums, the
next value of a sine) for a few epochs and must explain > 90 % of the
held-out variance (R^2 > 0.9, i.e. ten times better than predicting the
mean).  The gradient tests run ``train_batch`` on a hand-built float64 batch
(pooled and per-step with a padding mask) against central differences.
"""

import numpy as np
import pytest

import fastrnn as fr
from fastrnn.data import Batch
from helpers import central_differences

FAST = dict(verbose=0, batch_size=16, lr=0.02)


def ragged(rng, n, features=2, low=4, high=10):
    return [rng.uniform(-1, 1, size=(rng.integers(low, high + 1), features))
            for _ in range(n)]


def r2(truth, predicted):
    """R^2 over all values (numpy reference): columns centred on their own mean."""
    truth = np.concatenate([np.reshape(t, (len(t), -1)) for t in truth]) \
        if isinstance(truth, list) else np.reshape(truth, (len(truth), -1))
    predicted = np.concatenate([np.reshape(p, (len(p), -1)) for p in predicted]) \
        if isinstance(predicted, list) else np.reshape(predicted, truth.shape)
    return 1.0 - ((truth - predicted) ** 2).sum() / ((truth - truth.mean(axis=0)) ** 2).sum()


def sine_problem(rng, n):
    """Per step: the next value of a sine of random frequency and phase, and the
    running mean of the values so far."""
    X, y = [], []
    for _ in range(n):
        steps = rng.integers(8, 16)
        wave = np.sin(rng.uniform(0.3, 0.9) * np.arange(steps + 1) + rng.uniform(0, 2 * np.pi))
        X.append(wave[:-1])                                        # (T_i,)
        y.append(np.stack([wave[1:], np.cumsum(wave[:-1]) / np.arange(1, steps + 1)], 1))
    return X, y


# -- learning -------------------------------------------------------------------------

@pytest.mark.parametrize("cell,pooling,bidirectional", [
    ("gru", "last", False), ("lstm", "last", True), ("rnn", "last", False),
    ("gru", "mean", False), ("gru", "max", True), ("lstm", "mean", True)])
def test_learns_sum_many_to_one(cell, pooling, bidirectional):
    rng = np.random.default_rng(1)
    X = ragged(rng, 600)
    y = np.array([x[:, 0].sum() for x in X]) / 2
    model = fr.SequenceRegressor(cell=cell, hidden_size=16, pooling=pooling,
                                 bidirectional=bidirectional, seed=0)
    # The plain RNN learns more slowly: smaller steps, more of them.
    options = dict(FAST, lr=0.01) if cell == "rnn" else FAST
    model.fit(X[:400], y[:400], epochs=15 if cell == "rnn" else 8, **options)
    predicted = model.predict(X[400:])
    assert predicted.shape == (200,) and predicted.dtype == np.float64
    assert r2(y[400:], predicted) > 0.9
    mse = np.mean((predicted - y[400:]) ** 2)
    assert mse < 0.1 * np.mean((y[400:] - y[:400].mean()) ** 2)      # vs predicting the mean


def test_learns_vector_targets_from_an_array():
    rng = np.random.default_rng(2)
    X = rng.uniform(-1, 1, size=(600, 7, 2))                          # (N, T, F)
    y = np.stack([X[:, :, 0].sum(axis=1) / 2, X[:, :, 1].mean(axis=1) * 2], axis=1)
    model = fr.SequenceRegressor(cell="gru", hidden_size=16, seed=0)
    model.fit(X[:400], y[:400], epochs=8, **FAST)
    assert model.n_outputs_ == 2 and model.head_.out_features == 2
    predicted = model.predict(X[400:])
    assert predicted.shape == (200, 2)
    assert r2(y[400:], predicted) > 0.9
    for k in range(2):                                                # each output learnt
        assert r2(y[400:, k], predicted[:, k]) > 0.85


def test_single_column_target_keeps_its_shape():
    rng = np.random.default_rng(3)
    X = rng.uniform(-1, 1, size=(60, 5))                              # (N, T): one feature
    model = fr.SequenceRegressor(hidden_size=4, seed=0)
    model.fit(X, X.sum(axis=1, keepdims=True), epochs=1, **FAST)
    assert model.inputs_.num_features == 1
    assert model.predict(X[:3]).shape == (3, 1)
    model.fit(X, X.sum(axis=1), epochs=1, **FAST)
    assert model.predict(X[:3]).shape == (3,)


def test_learns_cumulative_sum_per_step():
    rng = np.random.default_rng(4)
    X = ragged(rng, 600)
    y = [np.cumsum(x[:, 0]) / 2 for x in X]                           # (T_i,)
    model = fr.SequenceRegressor(cell="gru", hidden_size=16, per_step=True, seed=0)
    model.fit(X[:400], y[:400], epochs=8, **FAST)
    predicted = model.predict(X[400:])
    assert isinstance(predicted, list) and len(predicted) == 200
    assert all(p.shape == (len(x),) for p, x in zip(predicted, X[400:]))
    assert r2(y[400:], predicted) > 0.9
    assert model.score(X[400:], y[400:]) == pytest.approx(r2(y[400:], predicted), rel=1e-12)


def test_learns_next_value_of_a_sine_per_step_vector_targets():
    rng = np.random.default_rng(5)
    X, y = sine_problem(rng, 600)
    model = fr.SequenceRegressor(cell="lstm", hidden_size=16, per_step=True, seed=0)
    model.fit(X[:400], y[:400], epochs=8, **FAST)
    predicted = model.predict(X[400:])
    assert all(p.shape == (len(x), 2) for p, x in zip(predicted, X[400:]))
    assert r2(y[400:], predicted) > 0.9
    # The next value is learnt, not the current one copied (that scores lower).
    copy = r2([t[:, 0] for t in y[400:]], X[400:])
    assert r2([t[:, 0] for t in y[400:]], [p[:, 0] for p in predicted]) > max(copy, 0.9)


# -- score, order ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def per_step_model():
    rng = np.random.default_rng(6)
    X, y = sine_problem(rng, 120)
    model = fr.SequenceRegressor(cell="gru", hidden_size=8, per_step=True,
                                 dtype="float64", seed=0)
    model.fit(X[:80], y[:80], epochs=2, **FAST)
    return model, X[80:], y[80:]


def test_score_is_r2_over_all_values(per_step_model, rng):
    model, X, y = per_step_model
    predicted = model.predict(X)
    truth = np.concatenate(y)
    flat = np.concatenate(predicted)
    expected = 1 - ((truth - flat) ** 2).sum() / ((truth - truth.mean(0)) ** 2).sum()
    assert model.score(X, y) == pytest.approx(expected, rel=1e-12)
    # Many-to-one, a single column: the textbook formula.
    X2 = rng.uniform(-1, 1, size=(50, 4, 1))
    y2 = X2.sum(axis=(1, 2))
    model2 = fr.SequenceRegressor(hidden_size=4, seed=0)
    model2.fit(X2, y2, epochs=1, **FAST)
    p = model2.predict(X2)
    assert model2.score(X2, y2) == pytest.approx(
        1 - np.sum((y2 - p) ** 2) / np.sum((y2 - y2.mean()) ** 2), rel=1e-12)


def test_per_step_predictions_keep_input_order(per_step_model, rng):
    model, X, _ = per_step_model
    reference = model.predict(X, batch_size=3)
    permutation = rng.permutation(len(X))
    permuted = model.predict([X[i] for i in permutation], batch_size=5)
    for got, i in zip(permuted, permutation):
        np.testing.assert_allclose(got, reference[i], rtol=1e-10, atol=1e-12)
    alone = model.predict([X[7]])[0]
    np.testing.assert_allclose(alone, reference[7], rtol=1e-10, atol=1e-12)


# -- gradients ------------------------------------------------------------------------

LENGTHS = np.array([4, 1, 5, 2, 3], dtype=np.int64)


def _model(rng, per_step, targets=2, **options):
    X = ragged(rng, 12, features=2, low=2, high=5)
    y = ([rng.standard_normal((len(x), targets)) for x in X] if per_step
         else rng.standard_normal((12, targets)))
    model = fr.SequenceRegressor(hidden_size=3, per_step=per_step, dtype="float64",
                                 seed=0, **options)
    model.fit(X, y, epochs=1, verbose=0)
    return model


def _batch(rng, per_step, targets=2):
    steps, size = int(LENGTHS.max()), len(LENGTHS)
    padded = np.arange(steps)[:, None] >= LENGTHS[None, :]
    inputs = rng.standard_normal((steps, size, 2))
    inputs[padded] = 5.0
    if per_step:
        y = rng.standard_normal((steps, size, targets))
        y[padded] = 1e3                      # must be masked out of loss and gradient
    else:
        y = rng.standard_normal((size, targets))
    return Batch(inputs, LENGTHS.copy(), y, np.arange(size))


def _check_gradients(model, batch, rng):
    for module in model.modules():
        module.train()
        module.zero_grad()
    metrics, _ = model.train_batch(batch)
    grads = [{n: g.copy() for n, g in m.grads.items()} for m in model.modules()]

    def loss():
        return model.evaluate_batch(batch)[0]["loss"]

    assert loss() == pytest.approx(metrics["loss"], rel=1e-12)
    for module, module_grads in zip(model.modules(), grads):
        for name, param in module.named_parameters():
            indices = rng.choice(param.size, min(param.size, 30), replace=False)
            numeric = central_differences(param, loss, 1e-6, indices)
            np.testing.assert_allclose(module_grads[name].reshape(-1)[indices], numeric,
                                       rtol=1e-5, atol=1e-8, err_msg=name)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_gradients_per_step(cell, bidirectional):
    rng = np.random.default_rng(10)
    model = _model(rng, True, cell=cell, bidirectional=bidirectional)
    batch = _batch(rng, True)
    _check_gradients(model, batch, rng)
    # The loss is the mean over valid steps only (padding targets are 1e3).
    out, _ = model.network_.forward(batch.inputs, batch.lengths)
    predictions = model.head_(out)
    valid = np.arange(5)[:, None] < LENGTHS[None, :]
    expected = np.mean((predictions - batch.targets)[valid] ** 2)
    assert model.evaluate_batch(batch)[0]["loss"] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_gradients_pooled(pooling, bidirectional):
    rng = np.random.default_rng(11)
    model = _model(rng, False, cell="lstm", pooling=pooling, bidirectional=bidirectional)
    _check_gradients(model, _batch(rng, False), rng)


# -- bad input --------------------------------------------------------------------------

def test_bad_targets_and_inputs(rng):
    X = ragged(rng, 6)
    reg = fr.SequenceRegressor(hidden_size=4)
    with pytest.raises(ValueError, match=r"y must have shape \(N,\) or \(N, K\) with N = 6 "
                                         r"sequences, got \(5,\)"):
        reg.fit(X, np.zeros(5), verbose=0)
    with pytest.raises(ValueError, match=r"got \(6, 2, 2\)"):
        reg.fit(X, np.zeros((6, 2, 2)), verbose=0)
    with pytest.raises(ValueError, match="y contains NaN or infinite values"):
        reg.fit(X, np.r_[np.zeros(5), np.nan], verbose=0)
    with pytest.raises(ValueError, match="y must be numbers forming a regular array"):
        reg.fit(X, [[1.0], [1.0, 2.0], [1.0], [1.0], [1.0], [1.0]], verbose=0)
    with pytest.raises(TypeError, match="X must be numeric sequences for a "
                                        "SequenceRegressor, got text"):
        reg.fit(["a b", "c"], [1.0, 2.0], verbose=0)
    step = fr.SequenceRegressor(hidden_size=4, per_step=True)
    good = [np.zeros(len(x)) for x in X]
    with pytest.raises(ValueError, match="y must have one target sequence per input: "
                                         "6 inputs but 5 targets"):
        step.fit(X, good[:5], verbose=0)
    bad = list(good)
    bad[2] = np.zeros(len(X[2]) + 1)
    with pytest.raises(ValueError, match=rf"y\[2\] has {len(X[2]) + 1} steps but its "
                                         rf"input has {len(X[2])}"):
        step.fit(X, bad, verbose=0)
    bad[2] = 1.0
    with pytest.raises(ValueError, match=r"y\[2\] must be a \(T,\) or \(T, K\) array"):
        step.fit(X, bad, verbose=0)
    bad = [np.zeros((len(x), 1 + (i == 3))) for i, x in enumerate(X)]
    with pytest.raises(ValueError, match=r"every step needs the same number of values, "
                                         r"got \[1, 2\]"):
        step.fit(X, bad, verbose=0)
    bad = [np.zeros(len(x)) for x in X]
    bad[4][0] = np.inf
    with pytest.raises(ValueError, match=r"y\[4\] contains NaN or infinite values"):
        step.fit(X, bad, verbose=0)


def test_validation_targets_are_checked(rng):
    X = ragged(rng, 20)
    y = np.zeros(20)
    reg = fr.SequenceRegressor(hidden_size=4)
    with pytest.raises(ValueError, match=r"validation_data\[1\] must have shape"):
        reg.fit(X, y, validation_data=(X[:4], y[:3]), verbose=0)
    with pytest.raises(ValueError, match=r"validation_data\[0\]\[1\] has 3 features per "
                                         r"step; the model expects 2"):
        reg.fit(X, y, validation_data=([X[0], np.zeros((4, 3))], y[:2]), verbose=0)
    history = reg.fit(X, y, validation_data=(X[:4], y[:4]), epochs=2, verbose=0).history_
    assert len(history.history["val_loss"]) == 2


def test_target_widths_must_match_the_model(rng):
    """Validation targets of another width used to fail only after a whole
    training epoch, inside the loss; score's failed in a reshape."""
    X = ragged(rng, 20)
    y = np.stack([x.sum(axis=0) for x in X])                          # (N, 2)
    model = fr.SequenceRegressor(hidden_size=4, seed=0)
    with pytest.raises(ValueError, match=r"validation_data\[1\] has 3 value\(s\) per target "
                                         r"but y has 2"):
        model.fit(X, y, validation_data=(X[:5], np.zeros((5, 3))), epochs=1, **FAST)
    model.fit(X, y, epochs=1, **FAST)
    with pytest.raises(ValueError, match=r"y has 1 value\(s\) per target but the model "
                                         r"predicts 2"):
        model.score(X, y[:, 0])
    assert model.score(X, y, batch_size=3) == pytest.approx(model.score(X, y), rel=1e-6)
    step = fr.SequenceRegressor(hidden_size=4, per_step=True, seed=0)
    targets = [np.cumsum(x, axis=0) for x in X]                       # (T_i, 2)
    with pytest.raises(ValueError, match=r"validation_data\[1\] has 1 value\(s\) per target "
                                         r"but y has 2"):
        step.fit(X, targets, validation_data=(X[:3], [t[:, 0] for t in targets[:3]]),
                 epochs=1, **FAST)


def test_diverging_training_stops_cleanly_with_the_last_good_weights():
    """A NaN born inside the model (pooled gradient of a diverged run) reaches the
    Trainer's gradient check, not a layer's input check: the run stops cleanly."""
    rng = np.random.default_rng(0)
    X = [rng.normal(size=(rng.integers(3, 9), 2)) for _ in range(200)]
    y = np.array([x[:, 0].sum() for x in X]) * 100
    reg = fr.SequenceRegressor(hidden_size=16, seed=0)
    with pytest.warns(RuntimeWarning, match="not finite|nan|inf"):
        history = reg.fit(X, y, epochs=3, verbose=0, optimizer="sgd", lr=100.0).history_
    assert history.stop_reason == "non_finite"
    assert all(np.isfinite(p).all() for m in reg.modules() for p in m.parameters())
