"""fr.Trainer: the fit loop, history, callbacks, progress, NaN stop, Ctrl-C, bad input.

Models here are tiny: ``Regressor`` is the docs' example of the model
protocol (an LSTM + Linear stack with a numpy MSE); ``Scripted`` reports
losses from a script so callback logic can be checked against known numbers.
"""

import io
import math
import os
import signal
import sys
import warnings

import numpy as np
import pytest

import fastrnn as fr
from fastrnn import optim
from fastrnn.data import BatchLoader
from fastrnn.losses import MSELoss
from fastrnn.training import (Callback, EarlyStopping, History, LambdaCallback,
                              LearningRateScheduler, ModelCheckpoint, Trainer)


# -- models ------------------------------------------------------------------------------

class Regressor:
    """LSTM -> output at each row's last step -> Linear(1); numpy MSE loss."""

    def __init__(self, features=3, hidden=8, num_layers=1, dropout=0.0, seed=0,
                 dtype="float64"):
        self.lstm = fr.LSTM(features, hidden, num_layers=num_layers, dropout=dropout,
                            seed=seed, dtype=dtype)
        self.head = fr.Linear(hidden, 1, seed=seed + 1, dtype=dtype)
        self.epochs_begun = []

    def modules(self):
        return [self.lstm, self.head]

    def on_epoch_begin(self, epoch, training):
        self.epochs_begun.append((epoch, training))

    def _forward(self, batch):
        out, _ = self.lstm(batch.inputs.astype(self.lstm.dtype), lengths=batch.lengths)
        rows = np.arange(len(batch.lengths))
        pred = self.head(out[batch.lengths - 1, rows])[:, 0]
        return out, rows, pred

    def train_batch(self, batch):
        out, rows, pred = self._forward(batch)
        err = pred - batch.targets
        d_pred = (2.0 / len(err)) * err
        d_last = self.head.backward(d_pred[:, None].astype(out.dtype))
        d_out = np.zeros_like(out)
        d_out[batch.lengths - 1, rows] = d_last
        self.lstm.backward(d_out, input_grad=False)
        return {"loss": float(np.mean(err ** 2)), "mae": float(np.mean(np.abs(err)))}, len(err)

    def evaluate_batch(self, batch):
        _, _, pred = self._forward(batch)
        err = pred - batch.targets
        return {"loss": float(np.mean(err ** 2)), "mae": float(np.mean(np.abs(err)))}, len(err)


class LossModuleRegressor(Regressor):
    """The same stack with fastrnn.losses.MSELoss (the loss computes the gradient)."""

    def train_batch(self, batch):
        out, rows, pred = self._forward(batch)
        loss, d_pred = MSELoss()(pred, batch.targets.astype(pred.dtype))
        d_out = np.zeros_like(out)
        d_out[batch.lengths - 1, rows] = self.head.backward(d_pred[:, None])
        self.lstm.backward(d_out, input_grad=False)
        return {"loss": loss}, len(pred)

    def evaluate_batch(self, batch):
        _, _, pred = self._forward(batch)
        loss, _ = MSELoss()(pred, batch.targets.astype(pred.dtype))
        return {"loss": loss}, len(pred)


def regression_data(n=24, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, 7, size=n)
    inputs = [rng.standard_normal((t, 3)) for t in lengths]
    targets = np.array([0.5 * x[:, 0].sum() for x in inputs])
    return inputs, targets


def loader(n=24, batch_size=6, seed=0, shuffle=True):
    inputs, targets = regression_data(n, seed)
    return BatchLoader(inputs, targets, batch_size=batch_size, shuffle=shuffle, seed=seed)


class Scripted:
    """A Linear module with fixed gradients; losses come from the batches.

    Training batches are dicts {"loss", "weight"} (optionally "acc", "grad");
    the validation loss of epoch e is ``val_script[e]``.
    """

    def __init__(self, val_script=None):
        self.lin = fr.Linear(2, 1, seed=0, dtype="float64")
        self.val_script = val_script
        self.val_epoch = None

    def modules(self):
        return [self.lin]

    def on_epoch_begin(self, epoch, training):
        if not training:
            self.val_epoch = epoch

    def train_batch(self, batch):
        self.lin.grads["weight"][...] = batch.get("grad", 1.0)
        self.lin.grads["bias"][...] = 1.0
        metrics = {"loss": batch["loss"]}
        if "acc" in batch:
            metrics["acc"] = batch["acc"]
        return metrics, batch.get("weight", 1)

    def evaluate_batch(self, batch):
        return {"loss": self.val_script[self.val_epoch]}, 1


class PerEpoch(list):
    """Batches that depend on the epoch: ``set_epoch`` swaps them in."""

    def __init__(self, scripts):
        super().__init__(scripts[0])
        self.scripts = scripts

    def set_epoch(self, epoch):
        self[:] = self.scripts[epoch]


def scripted_batches(losses, weights=None):
    weights = weights or [1] * len(losses)
    return [{"loss": l, "weight": w} for l, w in zip(losses, weights)]


def weights_of(model):
    return [m.state_dict() for m in model.modules()]


def assert_weights_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for name in x:
            np.testing.assert_array_equal(x[name], y[name], err_msg=name)


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


# -- callbacks ---------------------------------------------------------------------------------

class Recorder(Callback):
    def __init__(self):
        self.calls = []

    def on_train_begin(self, logs=None):
        self.calls.append("train_begin")

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(f"epoch_begin {epoch}")

    def on_batch_begin(self, step, logs=None):
        self.calls.append(f"batch_begin {step}")

    def on_batch_end(self, step, logs=None):
        self.calls.append(f"batch_end {step} {logs['loss']} {logs['weight']}")

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(f"epoch_end {epoch} {sorted(logs)}")

    def on_epoch_complete(self, epoch, logs=None):
        self.calls.append(f"epoch_complete {epoch}")

    def on_train_end(self, logs=None):
        self.calls.append(f"train_end {logs['stop_reason']}")


def test_callback_hook_order_and_logs():
    recorder = Recorder()
    model = Scripted(val_script=[1.0, 1.0])
    trainer = Trainer(model, optim.SGD(model.modules(), lr=0.1), callbacks=[recorder],
                      verbose=0)
    assert recorder.trainer is trainer and recorder.model is model
    trainer.fit(scripted_batches([3.0, 5.0], [1, 2]), epochs=2, validation_data=[{}])
    keys = "['loss', 'lr', 'val_loss']"
    assert recorder.calls == [
        "train_begin",
        "epoch_begin 0", "batch_begin 0", "batch_end 0 3.0 1.0", "batch_begin 1",
        "batch_end 1 5.0 2.0", f"epoch_end 0 {keys}", "epoch_complete 0",
        "epoch_begin 1", "batch_begin 0", "batch_end 0 3.0 1.0", "batch_begin 1",
        "batch_end 1 5.0 2.0", f"epoch_end 1 {keys}", "epoch_complete 1",
        "train_end None"]


def test_early_stopping_patience():
    val = [1.0, 0.8, 0.9, 0.85, 0.95, 0.1, 0.1]
    model = Scripted(val_script=val)
    stopper = EarlyStopping(patience=2)
    trainer = Trainer(model, optim.SGD(model.modules(), lr=0.1), callbacks=[stopper], verbose=0)
    history = trainer.fit(scripted_batches([1.0]), epochs=7, validation_data=[{}])
    # Best at epoch 1 (0.8); epochs 2 and 3 do not improve -> stop after epoch 3.
    assert history.epoch == [0, 1, 2, 3]
    assert history.history["val_loss"] == val[:4]
    assert stopper.best == 0.8 and stopper.best_epoch == 1 and stopper.stopped_epoch == 3
    assert history.stop_reason == "callback" and trainer.epoch == 4


def test_early_stopping_min_delta_and_max_mode():
    model = Scripted(val_script=[1.0, 0.95, 0.5])
    stopper = EarlyStopping(min_delta=0.1, patience=0)
    trainer = Trainer(model, optim.SGD(model.modules(), lr=0.1), callbacks=[stopper], verbose=0)
    assert trainer.fit(scripted_batches([1.0]), epochs=3, validation_data=[{}]).epoch == [0, 1]
    # max mode on an accuracy-like name ("auto"), no validation -> uses acc directly.
    batches = [[{"loss": 1.0, "acc": a}] for a in (0.5, 0.7, 0.6, 0.65)]
    stopper = EarlyStopping(monitor="acc", patience=2)
    model = Scripted()
    trainer = Trainer(model, optim.SGD(model.modules(), lr=0.1), callbacks=[stopper], verbose=0)
    history = trainer.fit(PerEpoch(batches), epochs=4)
    assert history.epoch == [0, 1, 2, 3] and stopper.best == 0.7
    assert history.history["acc"] == [0.5, 0.7, 0.6, 0.65] and history.stop_reason == "callback"


def test_early_stopping_restore_best_weights():
    model = Regressor(seed=2)
    val_script = [1.0, 0.5, 0.7, 0.9, 0.8]
    snapshots = []

    def evaluate_batch(batch):
        return {"loss": val_script[len(snapshots)]}, 1

    model.evaluate_batch = evaluate_batch
    keep = LambdaCallback(on_epoch_end=lambda epoch, logs: snapshots.append(weights_of(model)))
    stopper = EarlyStopping(patience=2, restore_best_weights=True)
    trainer = Trainer(model, optim.Adam(model.modules(), lr=0.05), callbacks=[keep, stopper],
                      verbose=0)
    history = trainer.fit(loader(), epochs=5, validation_data=[None])
    assert history.epoch == [0, 1, 2, 3] and stopper.best_epoch == 1
    assert_weights_equal(weights_of(model), snapshots[1])
    with pytest.raises(AssertionError):
        assert_weights_equal(snapshots[3], snapshots[1])


def test_early_stopping_falls_back_to_loss_without_validation():
    model = Scripted()
    stopper = EarlyStopping()        # monitor="val_loss"
    trainer = Trainer(model, optim.SGD(model.modules(), lr=0.1), callbacks=[stopper], verbose=0)
    with pytest.warns(UserWarning, match="no validation data; monitoring 'loss'"):
        history = trainer.fit(PerEpoch([scripted_batches([v]) for v in (3.0, 2.0, 2.5)]),
                              epochs=3)
    assert history.epoch == [0, 1, 2] and stopper.best == 2.0 and stopper.monitor == "loss"


def test_early_stopping_unknown_monitor_is_an_error():
    model = Scripted()
    trainer = Trainer(model, optim.SGD(model.modules(), lr=0.1),
                      callbacks=[EarlyStopping(monitor="f1")], verbose=0)
    with pytest.raises(ValueError, match="monitor 'f1' is not among the epoch metrics"):
        trainer.fit(scripted_batches([1.0]), epochs=2)


def test_model_checkpoint_save_best_only(tmp_path):
    model = Scripted(val_script=[1.0, 2.0, 0.5, 0.7])
    saver = ModelCheckpoint(str(tmp_path / "best-{epoch:02d}-{val_loss:.2f}.npz"),
                            save_best_only=True)
    every = ModelCheckpoint(str(tmp_path / "every-{epoch}.npz"))
    trainer = Trainer(model, optim.SGD(model.modules(), lr=0.1), callbacks=[saver, every],
                      verbose=0)
    trainer.fit(scripted_batches([1.0]), epochs=4, validation_data=[{}])
    names = sorted(os.listdir(tmp_path))
    assert names == ["best-01-1.00.npz", "best-03-0.50.npz", "every-1.npz", "every-2.npz",
                     "every-3.npz", "every-4.npz"]
    assert saver.best == 0.5 and saver.last_path.endswith("best-03-0.50.npz")
    ckpt = fr.training.load_checkpoint(tmp_path / "best-03-0.50.npz")
    assert ckpt.epoch == 3 and ckpt.global_step == 3
    assert ckpt.history.history["val_loss"] == [1.0, 2.0, 0.5]


def test_lr_schedule_per_epoch_and_per_batch():
    model = Scripted()
    opt = optim.SGD(model.modules(), lr=0.8)
    trainer = Trainer(model, opt, schedule=optim.StepLR(opt, step_size=1, gamma=0.5),
                      verbose=0)
    history = trainer.fit(scripted_batches([1.0, 1.0]), epochs=3)
    assert history.history["lr"] == [0.8, 0.4, 0.2] and opt.lr == 0.1

    model = Scripted()
    opt = optim.SGD(model.modules(), lr=0.8)
    seen = []
    trainer = Trainer(model, opt, schedule=optim.StepLR(opt, step_size=1, gamma=0.5),
                      schedule_interval="batch",
                      callbacks=[LambdaCallback(on_batch_end=lambda s, logs: seen.append(
                          logs["lr"]))], verbose=0)
    history = trainer.fit(scripted_batches([1.0, 1.0]), epochs=2)
    assert seen == [0.4, 0.2, 0.1, 0.05] and history.history["lr"] == [0.8, 0.2]
    # The weight moved by lr * grad with the lr of each step: 0.8+0.4+0.2+0.1.
    np.testing.assert_allclose(Scripted().lin.state_dict()["weight"]
                               - model.lin.state_dict()["weight"], 1.5)


def test_reduce_lr_on_plateau_sees_val_loss():
    model = Scripted(val_script=[1.0, 1.0, 1.0, 1.0])
    opt = optim.SGD(model.modules(), lr=1.0)
    trainer = Trainer(model, opt, schedule=optim.ReduceLROnPlateau(opt, factor=0.5, patience=0),
                      verbose=0)
    history = trainer.fit(scripted_batches([5.0]), epochs=4, validation_data=[{}])
    assert history.history["lr"] == [1.0, 1.0, 0.5, 0.25]
    with pytest.raises(ValueError, match="ReduceLROnPlateau needs an epoch metric"):
        Trainer(model, opt, schedule=optim.ReduceLROnPlateau(opt), schedule_interval="batch")


def test_learning_rate_scheduler_callback():
    model = Scripted()
    opt = optim.SGD(model.modules(), lr=1.0)
    callback = LearningRateScheduler(optim.ExponentialLR(opt, gamma=0.1))
    history = Trainer(model, opt, callbacks=[callback], verbose=0).fit(
        scripted_batches([1.0]), epochs=3)
    np.testing.assert_allclose(history.history["lr"], [1.0, 0.1, 0.01])
    other = optim.SGD(Scripted().modules(), lr=1.0)
    with pytest.raises(ValueError, match="another optimizer"):
        Trainer(model, opt, callbacks=[LearningRateScheduler(optim.StepLR(other, 1))])
    with pytest.raises(TypeError, match="learning-rate schedule"):
        LearningRateScheduler(lambda epoch: 0.1)
    with pytest.raises(ValueError, match="interval must be one of 'epoch', 'batch'"):
        LearningRateScheduler(optim.StepLR(opt, 1), interval="step")


def test_lambda_callback_stops_training_mid_epoch():
    model = Scripted()

    def stop(step, logs):
        if step == 1:
            trainer.stop_training = True

    trainer = Trainer(model, optim.SGD(model.modules(), lr=0.1),
                      callbacks=[LambdaCallback(on_batch_end=stop)], verbose=0)
    history = trainer.fit(scripted_batches([1.0, 1.0, 1.0]), epochs=3)
    assert history.epoch == [] and history.stop_reason == "callback"
    assert trainer.epoch == 0 and trainer.step_in_epoch == 2 and trainer.global_step == 2
    with pytest.raises(TypeError, match="on_epoch_end must be callable"):
        LambdaCallback(on_epoch_end=3)


# -- progress -----------------------------------------------------------------------------------

def test_verbose_0_prints_nothing(capsys):
    model = Regressor()
    Trainer(model, optim.SGD(model.modules(), lr=0.01), verbose=0).fit(
        loader(), epochs=2, validation_data=loader(shuffle=False))
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


@pytest.mark.parametrize("verbose", [1, 2])
def test_one_line_per_epoch_off_a_terminal(capsys, verbose):
    model = Regressor()
    Trainer(model, optim.SGD(model.modules(), lr=0.01), verbose=verbose).fit(
        loader(), epochs=2, validation_data=loader(shuffle=False))
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()          # progress goes to stderr
    assert len(lines) == 2 and captured.out == ""
    assert lines[0].startswith("Epoch 1/2 - 4 batches") and "batch/s" in lines[0]
    assert "loss: " in lines[1] and "val_loss: " in lines[1] and "lr: 0.01" in lines[1]


def test_a_single_epoch_off_a_terminal_reports_every_tenth(capsys):
    model = Regressor()
    Trainer(model, optim.SGD(model.modules(), lr=0.01), verbose=1).fit(
        loader(batch_size=3), epochs=1)
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line.split(" - ")[1].split(" batches")[0] for line in lines[:-1]] == \
        [f"{k}/8" for k in range(1, 9)]                  # 8 batches: a line at each tenth
    assert "(50%)" in lines[3] and "loss=" in lines[3]
    assert lines[-1].startswith("Epoch 1/1 - 8 batches")


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_verbose_1_shows_a_progress_bar_on_a_terminal(monkeypatch):
    fake = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", fake)
    model = Regressor()
    Trainer(model, optim.SGD(model.modules(), lr=0.01), verbose=1).fit(loader(), epochs=2)
    text = fake.getvalue()
    assert "Epoch 1/2" in text and "Epoch 2/2" in text and "4/4" in text
    assert "loss" in text and "batch/s" in text


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


# -- bad input ------------------------------------------------------------------------------------

def test_bad_arguments():
    model = Regressor()
    opt = optim.SGD(model.modules(), lr=0.01)
    trainer = Trainer(model, opt, verbose=0)
    data = loader()
    with pytest.raises(ValueError, match="epochs must be an int >= 1, got 0"):
        trainer.fit(data, epochs=0)
    with pytest.raises(TypeError, match="epochs must be an int >= 1, got '2'"):
        trainer.fit(data, epochs="2")
    with pytest.raises(ValueError, match="initial_epoch must be < epochs"):
        trainer.fit(data, epochs=2, initial_epoch=2)
    with pytest.raises(ValueError, match="train_data is empty"):
        trainer.fit([], epochs=1)
    with pytest.raises(TypeError, match="train_data must be re-iterable"):
        trainer.fit(iter(list(data)), epochs=1)
    with pytest.raises(TypeError, match="train_data must be a re-iterable source"):
        trainer.fit(None)
    with pytest.raises(TypeError, match="validation_data must be a source of batches, got a "
                                        "tuple of arrays"):
        trainer.fit(data, validation_data=(np.zeros((3, 2, 3)), np.zeros(2)))
    with pytest.raises(ValueError, match="validation_split must be a number in"):
        trainer.fit(data, validation_split=1.0)
    with pytest.raises(ValueError, match="either validation_data or validation_split"):
        trainer.fit(data, validation_split=0.2, validation_data=data)
    with pytest.raises(TypeError, match="validation_split needs a train_data with split"):
        trainer.fit(list(data), validation_split=0.2)
    with pytest.raises(ValueError, match="either initial_epoch or resume_from"):
        trainer.fit(data, epochs=3, initial_epoch=1, resume_from="x.npz")

    class Empty:
        def __iter__(self):
            return iter(())

    with pytest.raises(ValueError, match="train_data produced no batches"):
        trainer.fit(Empty())
    with pytest.raises(ValueError, match="validation_data produced no batches"):
        trainer.fit(data, validation_data=Empty())


def test_bad_constructor_arguments():
    model = Regressor()
    opt = optim.SGD(model.modules(), lr=0.01)
    with pytest.raises(TypeError, match="optimizer must be a fastrnn.optim optimizer"):
        Trainer(model, "adam")
    with pytest.raises(TypeError, match="optimizer must be a fastrnn.optim optimizer"):
        Trainer(model, object())
    with pytest.raises(ValueError, match=r"optimizer does not update model.modules\(\) \[1\]"):
        Trainer(model, optim.SGD([model.lstm], lr=0.1))
    with pytest.raises(TypeError, match="model must implement the trainer protocol.*lacks "
                                        r"train_batch\(\), evaluate_batch\(\)"):
        Trainer(object.__new__(type("NoProtocol", (), {"modules": lambda self: []})), opt)
    with pytest.raises(TypeError, match=r"model.modules\(\)\[0\] must be a Module"):
        Trainer(type("M", (Regressor,), {"modules": lambda self: ["x"]})(), opt)
    with pytest.raises(ValueError, match="clip_norm must be None or a number > 0"):
        Trainer(model, opt, clip_norm=-1)
    with pytest.raises(ValueError, match="clip_value must be None or a number > 0"):
        Trainer(model, opt, clip_value=float("nan"))
    with pytest.raises(ValueError, match="verbose must be one of 0, 1, 2"):
        Trainer(model, opt, verbose=3)
    with pytest.raises(TypeError, match="callbacks must be a list"):
        Trainer(model, opt, callbacks=EarlyStopping())
    with pytest.raises(TypeError, match=r"callbacks\[0\] must be a fastrnn.training.Callback"):
        Trainer(model, opt, callbacks=[lambda: None])
    with pytest.raises(ValueError, match="schedule_interval must be one of 'epoch', 'batch'"):
        Trainer(model, opt, schedule_interval="step")
    with pytest.raises(ValueError, match="another optimizer"):
        Trainer(model, opt, schedule=optim.StepLR(optim.SGD(model.modules(), lr=1), 1))
    schedule = optim.StepLR(opt, 1)
    with pytest.raises(ValueError, match="it would be stepped twice"):
        Trainer(model, opt, schedule=schedule, callbacks=[LearningRateScheduler(schedule)])
    with pytest.raises(ValueError, match="patience must be an int >= 0"):
        EarlyStopping(patience=-1)
    with pytest.raises(ValueError, match="mode must be one of 'auto', 'min', 'max'"):
        EarlyStopping(mode="up")
    with pytest.raises(TypeError, match="path must be a file path"):
        ModelCheckpoint(3)


@pytest.mark.parametrize("result,error,match", [
    (None, TypeError, r"must return a tuple \(metrics dict, weight\)"),
    (({"acc": 1.0}, 1), TypeError, "with at least 'loss'"),
    (({"loss": "low"}, 1), TypeError, "metric 'loss' must be a number"),
    (({"loss": 1.0}, -1), ValueError, "weight must be a finite number >= 0"),
])
def test_bad_batch_results(result, error, match):
    model = Scripted()
    model.train_batch = lambda batch: result
    trainer = Trainer(model, optim.SGD(model.modules(), lr=0.1), verbose=0)
    with pytest.raises(error, match=match):
        trainer.fit([{}])


def test_all_zero_weights_are_an_error():
    model = Scripted()
    trainer = Trainer(model, optim.SGD(model.modules(), lr=0.1), verbose=0)
    with pytest.raises(ValueError, match="every batch had weight 0"):
        trainer.fit(scripted_batches([1.0, 2.0], [0, 0]))


def test_runs_outside_the_main_thread_without_signal_handling():
    import threading

    model = Regressor()
    trainer = Trainer(model, optim.SGD(model.modules(), lr=0.01), verbose=0)
    result = {}
    thread = threading.Thread(target=lambda: result.update(h=trainer.fit(loader(), epochs=1)))
    thread.start()
    thread.join()
    assert result["h"].epoch == [0]


def test_no_warnings_in_a_clean_run():
    model = Regressor()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Trainer(model, optim.SGD(model.modules(), lr=0.01), verbose=0).fit(
            loader(), epochs=1, validation_data=loader(shuffle=False))


# -- per-batch checks kept between batches --------------------------------------------------

class NewGradArrays(Scripted):
    """Puts new gradient arrays into ``grads`` at every batch (instead of
    filling the old ones): the trainer must clip and check the new ones."""

    def train_batch(self, batch):
        self.lin.grads["weight"] = np.full((1, 2), batch.get("grad", 1.0))
        self.lin.grads["bias"] = np.ones(1)
        return {"loss": batch["loss"]}, 1


def test_gradient_arrays_replaced_between_batches_are_clipped_and_checked():
    model = NewGradArrays()
    trainer = Trainer(model, optim.SGD(model.modules(), lr=1.0), clip_norm=0.5, verbose=0)
    before = model.lin.state_dict()
    trainer.fit([{"loss": 1.0, "grad": 3.0}, {"loss": 1.0, "grad": 4.0}], epochs=1)
    delta = np.concatenate([(before[k] - model.lin.state_dict()[k]).ravel() for k in before])
    # two steps, each clipped to norm 0.5 (the first direction is (3, 3, 1), then (4, 4, 1))
    expected = sum(0.5 / (np.linalg.norm(g) + 1e-6) * g
                   for g in (np.array([3.0, 3.0, 1.0]), np.array([4.0, 4.0, 1.0])))
    np.testing.assert_allclose(delta, expected, rtol=1e-12)
    with pytest.warns(RuntimeWarning, match="gradient norm is inf"):
        history = trainer.fit([{"loss": 1.0}, {"loss": 1.0, "grad": np.inf}], epochs=1)
    assert history.non_finite and trainer.global_step == 2 + 1    # counted across fits


def test_read_only_gradients_are_refused_when_clipping():
    class ReadOnlyGrads(Scripted):
        def train_batch(self, batch):
            result = super().train_batch(batch)
            self.lin.grads["weight"].flags.writeable = not batch.get("read_only", False)
            return result

    model = ReadOnlyGrads()
    trainer = Trainer(model, optim.SGD(model.modules(), lr=1.0), clip_norm=0.5, verbose=0)
    with pytest.raises(ValueError, match=r"Trainer: modules\[0\] parameter 'weight': its "
                                         r"gradient array is read-only"):
        trainer.fit([{"loss": 1.0}, {"loss": 1.0, "read_only": True}])
    assert trainer.global_step == 1


def test_warnings_point_at_the_line_that_called_fit():
    """Warnings raised deep inside the fit loop name the caller's file and line,
    so ``-W error`` and warning filters by module work."""
    model = Scripted()
    trainer = Trainer(model, optim.SGD(model.modules(), lr=0.1), verbose=0,
                      callbacks=[EarlyStopping()])       # falls back to 'loss'
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(scripted_batches([1.0, float("nan")]), epochs=1)
    assert [w.category for w in caught] == [RuntimeWarning]
    assert caught[0].filename == __file__
    model = Scripted()
    trainer = Trainer(model, optim.SGD(model.modules(), lr=0.1), verbose=0,
                      callbacks=[EarlyStopping()])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(scripted_batches([1.0]), epochs=1)
    assert [w.category for w in caught] == [UserWarning]
    assert "monitoring 'loss'" in str(caught[0].message) and caught[0].filename == __file__


def test_callback_flags_must_be_booleans():
    with pytest.raises(TypeError, match="EarlyStopping: restore_best_weights must be True or "
                                        "False, got 'yes'"):
        EarlyStopping(restore_best_weights="yes")
    with pytest.raises(TypeError, match="ModelCheckpoint: save_best_only must be True or "
                                        "False, got 1"):
        ModelCheckpoint("ckpt.npz", save_best_only=1)


def test_history_state_is_checked():
    good = {"history": {"loss": [1.0]}, "epoch": [0], "params": {}, "stop_reason": None,
            "stop_message": None}
    assert History.from_state_dict(good).history == {"loss": [1.0]}
    with pytest.raises(ValueError, match=r"stop_reason must be None or one of .*got 'bored'"):
        History.from_state_dict({**good, "stop_reason": "bored"})
    with pytest.raises(ValueError, match="metric 'loss' must be a list of 1 numbers"):
        History.from_state_dict({**good, "history": {"loss": ["low"]}})
