"""What the task models share (fastrnn.tasks.base): parameters, repr, errors
before fit, input and label checks, validation data, optimizers, callbacks."""

import inspect
import os

import numpy as np
import pytest

import fastrnn as fr
from fastrnn.tasks.base import NotFittedError, make_optimizer
from fastrnn.training import Callback, EarlyStopping, LambdaCallback
from task_data import FAST, LABELS, TEXTS, numeric, ragged


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
