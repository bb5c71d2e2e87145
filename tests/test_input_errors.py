"""Input errors name the public argument and say what is wrong (issue 11's
smaller findings): finite values that overflow float32, ragged nested lists,
and the Ctrl-C message of a task model."""

import os
import signal

import numpy as np
import pytest

import fastrnn as fr
from fastrnn.training import LambdaCallback


def test_finite_input_overflowing_float32_is_named_as_such(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.random((8, 5, 2)) * 1e300, rng.random(8)
    model = fr.SequenceRegressor(hidden_size=4)
    with pytest.raises(ValueError, match=r"X\[0\] holds values too large for float32 "
                                         r"\(largest magnitude .*e\+299"):
        model.fit(X, y, epochs=1, verbose=0)
    model.fit(X * 0 + 1, y, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"X\[0\] holds values too large for float32"):
        fr.load(model.save(tmp_path / "model.npz")).predict(X)
    fr.SequenceRegressor(hidden_size=4, dtype="float64").fit(X, y, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="x holds values too large for float32"):
        fr.LSTM(2, 3)(np.full((2, 3, 2), 1e300))
    with pytest.raises(ValueError, match="x contains NaN or infinite values"):
        fr.LSTM(2, 3)(np.full((2, 3, 2), np.inf))


@pytest.mark.parametrize("make", [lambda: fr.LSTM(3, 4), lambda: fr.GRU(3, 4, num_layers=2),
                                  lambda: fr.RNN(3, 4, batch_first=True),
                                  lambda: fr.Jordan(3, 4, 2), lambda: fr.Linear(3, 4)])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_bad_value_in_x_is_found_in_either_mode(make, training, bad):
    """Training also copies a writable x for backward (``private_input``).  A
    NaN or infinity at either end or in the middle is found in either mode,
    the layer keeps nothing for backward, and the same layer then runs on
    good data."""
    layer = make().train(training)
    for index in (0, 31, -1):
        x = np.random.default_rng(0).standard_normal((6, 7, 3))
        x.reshape(-1)[index] = bad
        with pytest.raises(ValueError, match="^x contains NaN or infinite values$"):
            layer(x)
        if training:
            with pytest.raises(RuntimeError, match="backward needs a forward pass"):
                layer.backward(np.ones((6, 7, 4)))
    x[...] = 0.5
    layer(x)


@pytest.mark.parametrize("call,name", [
    (lambda: fr.LSTM(2, 3)([[[1.0, 2.0]], [[1.0]]]), "x"),
    (lambda: fr.Linear(2, 3)([[1.0, 2.0], [1.0]]), "x"),
    (lambda: fr.CrossEntropyLoss()([[1.0, 2.0], [1.0]], [0, 1]), "logits"),
    (lambda: fr.CrossEntropyLoss()([[1.0, 2.0], [1.0, 3.0]], [[0], [1, 0]]), "targets"),
    (lambda: fr.MSELoss()([[1.0, 2.0], [1.0, 3.0]], [[0.0], [1.0, 0.0]]), "targets"),
    (lambda: fr.Embedding(4, 2)([[1, 2], [1]]), "ids"),
])
def test_ragged_nested_lists_name_the_argument(call, name):
    with pytest.raises(ValueError, match=rf"^{name} must be a rectangular array, got nested "
                                         rf"lists of unequal lengths"):
        call()


def test_ctrl_c_in_a_task_model_says_how_to_resume_it(capsys):
    texts = ["good film", "bad plot", "good plot", "bad film"] * 8
    labels = ["pos", "neg", "pos", "neg"] * 8
    model = fr.SequenceClassifier(hidden_size=4, seed=0)
    interrupt = LambdaCallback(on_batch_end=lambda step, logs: os.kill(os.getpid(),
                                                                        signal.SIGINT))
    history = model.fit(texts, labels, epochs=2, batch_size=8, verbose=0,
                        callbacks=[interrupt]).history_
    assert history.interrupted
    message = capsys.readouterr().err
    assert "trainer.save_checkpoint" not in message
    assert "callbacks=[fr.ModelCheckpoint(path)]" in message
    assert "fit(..., resume_from=path)" in message
