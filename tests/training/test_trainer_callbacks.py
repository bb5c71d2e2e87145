"""fr.Trainer's callbacks (EarlyStopping, ModelCheckpoint, LearningRateScheduler,
LambdaCallback, custom ones) and its progress display."""

import io
import os
import sys

import numpy as np
import pytest

import fastrnn as fr
from fastrnn import optim
from fastrnn.training import (Callback, EarlyStopping, LambdaCallback, LearningRateScheduler,
                              ModelCheckpoint, Trainer)
from trainer_models import (PerEpoch, Regressor, Scripted, assert_weights_equal, loader,
                            scripted_batches, weights_of)


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
