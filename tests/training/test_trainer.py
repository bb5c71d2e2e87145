"""fr.Trainer: the fit loop, history and metrics, NaN stop, Ctrl-C, History.

Models come from trainer_models.py: ``Regressor`` (a real LSTM stack) and
``Scripted`` (losses from a script)."""

import math
import os
import signal
import sys

import numpy as np
import pytest

from fastrnn import optim
from fastrnn.training import History, LambdaCallback, Trainer
from trainer_models import (LossModuleRegressor, PerEpoch, Regressor, Scripted,
                            assert_weights_equal, loader, scripted_batches, weights_of)


# -- fit, history, metrics --------------------------------------------------------------

def test_fit_history_contents_and_lengths():
    model = Regressor()
    trainer = Trainer(model, optim.Adam(model.modules(), lr=0.01), verbose=0)
    history = trainer.fit(loader(), epochs=3, validation_data=loader(12, seed=1, shuffle=False))
    assert isinstance(history, History) and history is trainer.history
    assert history.epoch == [0, 1, 2]
    assert set(history.history) == {"loss", "mae", "val_loss", "val_mae", "lr"}
    assert all(len(values) == 3 for values in history.history.values())
    assert history.history["lr"] == [0.01, 0.01, 0.01]
    assert history.params["epochs"] == 3 and history.params["steps"] == 4
    assert history.stop_reason is None and not history.interrupted
    assert trainer.epoch == 3 and trainer.step_in_epoch == 0 and trainer.global_step == 12
    # Learning happens: the training loss falls.
    assert history.history["loss"][-1] < history.history["loss"][0]
    # Per-epoch hooks: training and evaluation passes.
    assert model.epochs_begun == [(0, True), (0, False), (1, True), (1, False),
                                  (2, True), (2, False)]


def test_epoch_metrics_are_weight_averaged():
    batches = [{"loss": 1.0, "weight": 1, "acc": 0.0}, {"loss": 2.0, "weight": 3, "acc": 1.0},
               {"loss": 4.0, "weight": 0.5, "acc": 0.5}]
    model = Scripted(val_script=[7.0])
    trainer = Trainer(model, optim.SGD(model.modules(), lr=0.0), verbose=0)
    history = trainer.fit(batches, epochs=1, validation_data=[{}, {}])
    expected = (1.0 * 1 + 2.0 * 3 + 4.0 * 0.5) / 4.5
    assert history.history["loss"] == [pytest.approx(expected, rel=1e-15)]
    assert history.history["acc"] == [pytest.approx((0 + 3 + 0.25) / 4.5, rel=1e-15)]
    assert history.history["val_loss"] == [7.0]


def test_last_layer_weights_match_a_hand_written_loop():
    """The trainer does exactly zero_grad / train_batch / step per batch."""
    data = loader(shuffle=False)
    model, ref = Regressor(seed=3), Regressor(seed=3)
    trainer = Trainer(model, optim.SGD(model.modules(), lr=0.05), verbose=0)
    trainer.fit(data, epochs=2)
    opt = optim.SGD(ref.modules(), lr=0.05)
    for _ in range(2):
        for batch in loader(shuffle=False):
            opt.zero_grad()
            ref.train_batch(batch)
            opt.step()
    assert_weights_equal(weights_of(model), weights_of(ref))


def test_model_with_fastrnn_losses_trains():
    model = LossModuleRegressor(seed=1, dtype="float32")
    trainer = Trainer(model, optim.Adam(model.modules(), lr=0.02), clip_norm=5.0, verbose=0)
    history = trainer.fit(loader(), epochs=4)
    assert history.history["loss"][-1] < history.history["loss"][0]
    metrics = trainer.evaluate(loader(shuffle=False))
    assert set(metrics) == {"loss"} and math.isfinite(metrics["loss"])


def test_validation_split_uses_the_loader_split():
    data = loader(n=30)
    train_part, val_part = data.split(0.2)
    seen = []
    model = Regressor()
    trainer = Trainer(model, optim.SGD(model.modules(), lr=0.01), verbose=0,
                      callbacks=[LambdaCallback(on_batch_end=lambda step, logs: seen.append(step))])
    history = trainer.fit(data, epochs=2, validation_split=0.2)
    assert len(seen) == 2 * len(train_part)
    assert history.params["steps"] == len(train_part)
    assert history.history["val_loss"][-1] == pytest.approx(trainer.evaluate(val_part)["loss"],
                                                            rel=1e-12)


def test_evaluate_changes_nothing_and_restores_modes():
    model = Regressor(num_layers=2, dropout=0.5)
    trainer = Trainer(model, optim.Adam(model.modules()), verbose=0)
    before = weights_of(model)
    rng_before = model.lstm.rng_state()
    first = trainer.evaluate(loader(shuffle=False))
    second = trainer.evaluate(loader(shuffle=False))
    assert first == second                        # eval mode: no dropout
    assert_weights_equal(weights_of(model), before)
    assert model.lstm.rng_state() == rng_before
    assert model.lstm.training and model.head.training


def test_fit_restores_module_modes():
    model = Regressor()
    model.head.eval()
    Trainer(model, optim.SGD(model.modules(), lr=0.01), verbose=0).fit(
        loader(), validation_data=loader(shuffle=False))
    assert model.lstm.training and not model.head.training


def test_gradient_clipping_by_norm_and_value():
    model = Scripted()
    model_ref = Scripted()
    batch = [{"loss": 1.0, "grad": 3.0}]      # weight grad (3, 3), bias grad 1
    trainer = Trainer(model, optim.SGD(model.modules(), lr=1.0), clip_norm=0.5, verbose=0)
    before = model.lin.state_dict()
    trainer.fit(batch, epochs=1)
    delta = np.concatenate([(before[k] - model.lin.state_dict()[k]).ravel() for k in before])
    np.testing.assert_allclose(np.linalg.norm(delta), 0.5, rtol=1e-5)
    # By value: every entry clipped to 0.25 (then no norm clipping).
    trainer = Trainer(model_ref, optim.SGD(model_ref.modules(), lr=1.0), clip_value=0.25,
                      verbose=0)
    before = model_ref.lin.state_dict()
    trainer.fit(batch, epochs=1)
    for name in before:
        np.testing.assert_allclose(before[name] - model_ref.lin.state_dict()[name], 0.25)


# -- NaN / inf ----------------------------------------------------------------------------------

def test_non_finite_loss_stops_and_keeps_the_last_good_weights():
    model = Scripted()
    snapshots = []
    trainer = Trainer(model, optim.Adam(model.modules(), lr=0.1), verbose=0,
                      callbacks=[LambdaCallback(
                          on_batch_end=lambda s, logs: snapshots.append(weights_of(model)))])
    good = scripted_batches([1.0, 2.0, 3.0, 1.0])
    batches = PerEpoch([good, scripted_batches([1.0, 2.0, float("nan"), 1.0]), good])
    with pytest.warns(RuntimeWarning, match=r"epoch 2, batch 3: the loss is nan.*update was "
                                             r"skipped"):
        history = trainer.fit(batches, epochs=3)
    assert history.non_finite and history.stop_reason == "non_finite"
    assert history.epoch == [0] and trainer.global_step == 6
    assert trainer.optimizer.step_count == 6
    assert "global step 6" in history.stop_message
    assert_weights_equal(weights_of(model), snapshots[-1])
    assert trainer.epoch == 1 and trainer.step_in_epoch == 2


def test_non_finite_gradient_norm_stops_without_update():
    model = Scripted()
    trainer = Trainer(model, optim.SGD(model.modules(), lr=0.1), clip_value=1.0, verbose=0)
    batches = [{"loss": 1.0}, {"loss": 1.0, "grad": np.inf}]
    with pytest.warns(RuntimeWarning, match="gradient norm is inf"):
        history = trainer.fit(batches, epochs=1)
    assert history.non_finite and trainer.global_step == 1
    np.testing.assert_allclose(model.lin.state_dict()["weight"],
                               Scripted().lin.state_dict()["weight"] - 0.1)


# -- Ctrl-C ---------------------------------------------------------------------------------------

def _sigint_at(trainer_box, epoch, step, times=1):
    def on_batch_end(s, logs):
        if trainer_box[0].epoch == epoch and s == step:
            for _ in range(times):
                os.kill(os.getpid(), signal.SIGINT)
    return LambdaCallback(on_batch_end=on_batch_end)


def test_ctrl_c_stops_at_the_batch_boundary(capsys):
    handler_before = signal.getsignal(signal.SIGINT)
    box = [None]
    model = Regressor()
    trainer = box[0] = Trainer(model, optim.Adam(model.modules(), lr=0.01), verbose=0,
                               callbacks=[_sigint_at(box, epoch=1, step=1)])
    history = trainer.fit(loader(), epochs=3)
    assert history.interrupted and history.stop_reason == "interrupted"
    assert history.epoch == [0]                     # epoch 1 left unfinished
    assert trainer.global_step == 4 + 2 and trainer.step_in_epoch == 2
    assert "Training interrupted at epoch 2, batch 2" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is handler_before
    # The model is usable afterwards.
    assert math.isfinite(trainer.evaluate(loader(shuffle=False))["loss"])


def test_second_ctrl_c_raises_keyboard_interrupt():
    handler_before = signal.getsignal(signal.SIGINT)
    box = [None]
    model = Regressor()
    trainer = box[0] = Trainer(model, optim.SGD(model.modules(), lr=0.01), verbose=0,
                               callbacks=[_sigint_at(box, epoch=0, step=0, times=2)])
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(loader(), epochs=2)
    assert signal.getsignal(signal.SIGINT) is handler_before


# -- History --------------------------------------------------------------------------------------

def test_history_plot(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is the optional 'plot' extra")
    model = Scripted(val_script=[2.0, 1.0])
    history = Trainer(model, optim.SGD(model.modules(), lr=0.1), verbose=0).fit(
        scripted_batches([1.0]), epochs=2, validation_data=[{}])
    figure = history.plot()
    assert [ax.get_title() for ax in figure.axes] == ["loss"]      # lr never changed
    assert len(figure.axes[0].get_lines()) == 2
    path = history.plot(tmp_path / "curves.png", metrics=["loss", "lr"])
    assert path == tmp_path / "curves.png" and path.stat().st_size > 0
    with pytest.raises(ValueError, match="unknown"):
        history.plot(metrics=["accuracy"])


def test_history_plot_draws_distinct_quantities_and_shows_with_pyplot():
    """A language model's loss, perplexity and bits/char are one curve drawn
    three times: only bits/char is drawn (and lr when it changed); the figure
    belongs to pyplot, so plt.show() shows it."""
    pytest.importorskip("matplotlib", reason="matplotlib is the optional 'plot' extra")
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot
    history = History()
    for epoch, (loss, lr) in enumerate([(2.0, 0.01), (1.5, 0.01)]):
        history._append(epoch, {"loss": loss, "perplexity": math.exp(loss),
                                "bits_per_char": loss / math.log(2), "val_loss": loss,
                                "val_bits_per_char": loss / math.log(2), "lr": lr})
    assert history.plot_metrics() == ["bits_per_char"]
    figure = history.plot()
    try:
        assert [ax.get_title() for ax in figure.axes] == ["bits_per_char"]
        assert len(figure.axes[0].get_lines()) == 2          # train and validation
        assert figure.number in pyplot.get_fignums()         # what plt.show() displays
        pyplot.show()                                        # Agg: returns at once
    finally:
        pyplot.close(figure)
    history._append(2, {"loss": 1.0, "perplexity": 2.7, "bits_per_char": 1.4, "lr": 0.001})
    assert history.plot_metrics() == ["bits_per_char", "lr"]
    plain = History()
    plain._append(0, {"loss": 1.0, "perplexity": 2.7, "lr": 0.1})
    assert plain.plot_metrics() == ["loss"]


def test_history_plot_without_matplotlib(monkeypatch):
    history = History()
    history._append(0, {"loss": 1.0})
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"pip install fastrnn\[plot\]"):
        history.plot()


def test_history_keeps_lists_aligned_and_round_trips():
    history = History()
    history._append(0, {"loss": 1.0})
    history._append(1, {"loss": 0.5, "val_loss": 0.7})
    history._append(2, {"val_loss": 0.6})
    assert history.history["loss"][:2] == [1.0, 0.5] and math.isnan(history.history["loss"][2])
    assert math.isnan(history.history["val_loss"][0])
    copy = History.from_state_dict(history.state_dict())
    assert copy.epoch == [0, 1, 2] and copy.history["val_loss"][1:] == [0.7, 0.6]
    assert "History(epochs=3" in repr(copy)
