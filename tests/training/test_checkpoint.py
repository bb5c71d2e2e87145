"""Training checkpoints: exact resume (epoch boundary, mid-epoch after Ctrl-C,
carried model state), file format (no pickle, atomic writes) and clear errors
for corrupt, newer or mismatched checkpoints."""

import json
import os
import signal

import numpy as np
import pytest

import fastrnn as fr
from fastrnn import optim
from fastrnn.data import StreamBatcher
from fastrnn.losses import CrossEntropyLoss
from fastrnn.training import (EarlyStopping, LambdaCallback, ModelCheckpoint, Trainer,
                              load_checkpoint, restore_checkpoint, save_checkpoint)
from fastrnn.training.checkpoint import FORMAT, VERSION

from trainer_models import Regressor, Scripted, assert_weights_equal, loader, weights_of


# -- runs ------------------------------------------------------------------------------------------

def make_trainer(callbacks=(), restore_best=False):
    """A fresh run: 2-layer LSTM with dropout (RNG state matters), Adam, a
    schedule, a stateful EarlyStopping (never triggers)."""
    model = Regressor(num_layers=2, dropout=0.3, seed=5, dtype="float32")
    opt = optim.Adam(model.modules(), lr=0.02)
    stopper = EarlyStopping(patience=100, restore_best_weights=restore_best)
    return Trainer(model, opt, schedule=optim.StepLR(opt, step_size=1, gamma=0.7),
                   callbacks=[stopper, *callbacks], clip_norm=1.0, verbose=0)


def data():
    return loader(n=30, batch_size=6, seed=3)       # shuffled each epoch from (seed, epoch)


def assert_same_run(a, b):
    assert_weights_equal(weights_of(a.model), weights_of(b.model))
    assert a.history.history == b.history.history and a.history.epoch == b.history.epoch
    assert (a.epoch, a.step_in_epoch, a.global_step) == (b.epoch, b.step_in_epoch, b.global_step)
    sa, sb = a.optimizer.state_dict(), b.optimizer.state_dict()
    assert sa["hyperparameters"] == sb["hyperparameters"] and sa["step"] == sb["step"]
    assert sa["buffers"].keys() == sb["buffers"].keys()
    for key in sa["buffers"]:
        np.testing.assert_array_equal(sa["buffers"][key], sb["buffers"][key], err_msg=key)
    assert a.schedule.state_dict() == b.schedule.state_dict()
    for ma, mb in zip(a.modules, b.modules):
        assert ma.rng_state() == mb.rng_state()


@pytest.fixture
def full_run():
    # Function scope: it must run under the same thread settings as the test
    # (conftest switches the kernels' small-problem threshold per test).
    trainer = make_trainer()
    trainer.fit(data(), epochs=4, validation_split=0.2)
    return trainer


def test_resume_at_an_epoch_boundary_is_exact(full_run, tmp_path):
    first = make_trainer()
    first.fit(data(), epochs=2, validation_split=0.2)
    path = first.save_checkpoint(tmp_path / "run.npz")
    # Brand-new objects, as in a new process.
    resumed = make_trainer()
    history = resumed.fit(data(), epochs=4, validation_split=0.2, resume_from=path)
    assert history.epoch == [0, 1, 2, 3] and history.params["initial_epoch"] == 2
    assert_same_run(resumed, full_run)
    assert resumed.callbacks[0].state_dict()["best"] == full_run.callbacks[0].best
    # A different run really differs (the comparison can fail).
    other = make_trainer()
    other.fit(loader(n=30, batch_size=6, seed=4), epochs=4, validation_split=0.2)
    with pytest.raises(AssertionError):
        assert_weights_equal(weights_of(other.model), weights_of(full_run.model))


def test_resume_from_model_checkpoint_files_with_restore_best_weights(tmp_path):
    def run(epochs, callbacks=(), resume_from=None):
        trainer = make_trainer(callbacks, restore_best=True)
        trainer.fit(data(), epochs=epochs, validation_split=0.2, resume_from=resume_from)
        return trainer

    full = run(4)
    saver = ModelCheckpoint(str(tmp_path / "epoch-{epoch}.npz"))
    run(2, [saver])
    assert sorted(os.listdir(tmp_path)) == ["epoch-1.npz", "epoch-2.npz"]
    # The callback list must match the checkpoint's stateful callbacks.
    resumed = run(4, [ModelCheckpoint(str(tmp_path / "again-{epoch}.npz"))],
                  resume_from=tmp_path / "epoch-2.npz")
    assert_weights_equal(weights_of(resumed.model), weights_of(full.model))
    assert resumed.history.history == full.history.history
    assert sorted(os.listdir(tmp_path))[:2] == ["again-3.npz", "again-4.npz"]


def _interrupt_at(box, epoch, step, during="train"):
    def on_batch_end(s, logs):
        if box[0].epoch == epoch and s == step:
            os.kill(os.getpid(), signal.SIGINT)
    return LambdaCallback(on_batch_end=on_batch_end)


def test_mid_epoch_resume_after_ctrl_c_is_exact(full_run, tmp_path, capsys):
    box = [None]
    first = box[0] = make_trainer([_interrupt_at(box, epoch=2, step=1)])
    history = first.fit(data(), epochs=4, validation_split=0.2)
    assert history.interrupted and history.epoch == [0, 1]
    assert (first.epoch, first.step_in_epoch) == (2, 2)
    assert "Training interrupted at epoch 3, batch 2" in capsys.readouterr().err
    path = first.save_checkpoint(tmp_path / "interrupted.npz")
    ckpt = load_checkpoint(path)
    assert (ckpt.epoch, ckpt.step_in_epoch, ckpt.global_step) == (2, 2, 2 * 4 + 2)
    resumed = make_trainer([LambdaCallback()])
    history = resumed.fit(data(), epochs=4, validation_split=0.2, resume_from=path)
    assert history.stop_reason is None
    assert_same_run(resumed, full_run)


def test_interrupt_during_validation_resumes_exactly(full_run, tmp_path):
    box = [None]

    class InterruptingValidation:
        """A validation source that sends SIGINT while epoch 1 is evaluated."""

        def __init__(self, inner):
            self.inner = inner

        def set_epoch(self, epoch):
            self.epoch = epoch

        def __iter__(self):
            for i, batch in enumerate(self.inner):
                if self.epoch == 1 and i == 0 and box[0] is not None:
                    os.kill(os.getpid(), signal.SIGINT)
                yield batch

    train, val = data().split(0.2)
    first = box[0] = make_trainer()
    history = first.fit(train, epochs=4, validation_data=InterruptingValidation(val))
    assert history.interrupted and history.epoch == [0]
    assert (first.epoch, first.step_in_epoch) == (1, 4)        # all of epoch 1's batches done
    path = first.save_checkpoint(tmp_path / "val.npz")
    box[0] = None
    resumed = make_trainer()
    train, val = data().split(0.2)
    resumed.fit(train, epochs=4, validation_data=val, resume_from=path)
    assert_same_run(resumed, full_run)


class TinyLM:
    """Character LM without an Embedding: one-hot inputs, LSTM, Linear head,
    fastrnn's CrossEntropyLoss; the hidden state is carried between chunks
    (truncated BPTT), so a mid-epoch resume needs extra_state."""

    def __init__(self, vocab=5, hidden=6, seed=0):
        self.vocab = vocab
        self.lstm = fr.LSTM(vocab, hidden, seed=seed, dtype="float64")
        self.head = fr.Linear(hidden, vocab, seed=seed + 1, dtype="float64")
        self.state = None

    def modules(self):
        return [self.lstm, self.head]

    def on_epoch_begin(self, epoch, training):
        self.state = None

    def _run(self, chunk):
        if chunk.first:
            self.state = None
        out, self.state = self.lstm(np.eye(self.vocab)[chunk.inputs], hx=self.state)
        loss, d_logits = CrossEntropyLoss()(self.head(out), chunk.targets)
        return out, loss, d_logits

    def train_batch(self, chunk):
        out, loss, d_logits = self._run(chunk)
        self.lstm.backward(self.head.backward(d_logits), input_grad=False)
        return {"loss": loss}, chunk.inputs.size

    def evaluate_batch(self, chunk):
        _, loss, _ = self._run(chunk)
        return {"loss": loss}, chunk.inputs.size

    def extra_state(self):
        return {"state": self.state}          # None or a tuple (h, c)

    def load_extra_state(self, state):
        self.state = state["state"]


def test_carried_state_mid_epoch_resume_is_exact(tmp_path):
    tokens = np.random.default_rng(0).integers(0, 5, size=200)

    def make(callbacks=()):
        model = TinyLM()
        opt = optim.SGD(model.modules(), lr=0.5, momentum=0.9)
        return Trainer(model, opt, callbacks=list(callbacks), verbose=0)

    full = make()
    full.fit(StreamBatcher(tokens, batch_size=4, bptt=7), epochs=2)
    box = [None]
    first = box[0] = make([_interrupt_at(box, epoch=1, step=3)])
    first.fit(StreamBatcher(tokens, batch_size=4, bptt=7), epochs=2)
    assert first.history.interrupted and isinstance(first.model.state, tuple)
    path = first.save_checkpoint(tmp_path / "lm.npz")
    resumed = make([LambdaCallback()])
    resumed.fit(StreamBatcher(tokens, batch_size=4, bptt=7), epochs=2, resume_from=path)
    assert_weights_equal(weights_of(resumed.model), weights_of(full.model))
    assert resumed.history.history == full.history.history
    for a, b in zip(resumed.model.state, full.model.state):
        np.testing.assert_array_equal(a, b)
    # Without the carried state the resumed run would differ.
    ckpt = load_checkpoint(path)
    assert isinstance(ckpt.state["model"]["extra"]["state"], tuple)


# -- file format ---------------------------------------------------------------------------------

def test_file_is_plain_npz_with_a_json_entry(tmp_path):
    trainer = make_trainer()
    trainer.fit(data(), epochs=1, validation_split=0.2)
    path = save_checkpoint(tmp_path / "c.npz", trainer)
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    meta = json.loads(arrays.pop("__meta__").tobytes().decode("utf-8"))
    assert meta["format"] == FORMAT and meta["version"] == VERSION
    assert meta["position"] == {"epoch": 1, "step_in_epoch": 0, "global_step": 4}
    assert meta["optimizer"]["type"] == "Adam" and meta["optimizer"]["step"] == 4
    assert meta["schedule"]["type"] == "StepLR"
    assert [m["type"] for m in meta["model"]["modules"]] == ["LSTM", "Linear"]
    assert meta["model"]["modules"][0]["rng"]["bit_generator"] == "PCG64"
    assert meta["history"]["history"]["loss"] == trainer.history.history["loss"]
    np.testing.assert_array_equal(arrays["model/modules/0/params/weight_ih_l1"],
                                  trainer.model.lstm.state_dict()["weight_ih_l1"])
    assert any(key.startswith("optimizer/buffers/") for key in arrays)
    assert all(array.dtype != object for array in arrays.values())
    ckpt = load_checkpoint(path)
    assert (ckpt.epoch, ckpt.step_in_epoch, ckpt.global_step, ckpt.version) == (1, 0, 4, 1)
    assert ckpt.history.history == trainer.history.history
    assert "Checkpoint(" in repr(ckpt)


def test_write_is_atomic(tmp_path, monkeypatch):
    trainer = make_trainer()
    path = tmp_path / "c.npz"
    save_checkpoint(path, trainer)
    before = path.read_bytes()
    trainer.fit(data(), epochs=1, validation_split=0.2)

    def failing_savez(handle, **arrays):
        handle.write(b"PK\x03\x04 half a file")
        raise OSError("No space left on device")

    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, trainer)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["c.npz"]
    monkeypatch.undo()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save_checkpoint(tmp_path / "missing" / "c.npz", trainer)


def test_corrupt_and_foreign_files_are_clear_errors(tmp_path):
    trainer = make_trainer()
    good = save_checkpoint(tmp_path / "good.npz", trainer)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a zip file at all")
    with pytest.raises(ValueError, match="garbage.npz.*corrupt or not an .npz"):
        load_checkpoint(garbage)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(open(good, "rb").read()[:2000])
    with pytest.raises(ValueError, match="truncated.npz.*corrupt"):
        trainer.fit(data(), epochs=2, resume_from=truncated)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.zeros(3))
    with pytest.raises(ValueError, match="foreign.npz.*is not a fastrnn checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(FileNotFoundError, match="nothing.npz.*does not exist"):
        load_checkpoint(tmp_path / "nothing.npz")


def _rewrite_meta(path, change):
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    meta = json.loads(arrays["__meta__"].tobytes())
    change(meta)
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(path, **arrays)


def test_newer_version_is_refused(tmp_path):
    trainer = make_trainer()
    path = save_checkpoint(tmp_path / "new.npz", trainer)
    _rewrite_meta(path, lambda meta: meta.update(version=VERSION + 1))
    with pytest.raises(ValueError, match=f"format version {VERSION + 1}, written by a newer "
                                         f"fastrnn.*upgrade fastrnn"):
        load_checkpoint(path)
    _rewrite_meta(path, lambda meta: meta.update(format="something.else", version=1))
    with pytest.raises(ValueError, match="is not a fastrnn checkpoint"):
        load_checkpoint(path)


# -- mismatches: refused before anything changes ---------------------------------------------

@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    trainer = make_trainer()
    trainer.fit(data(), epochs=1, validation_split=0.2)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "c.npz", trainer)


def _fresh_state(trainer):
    return weights_of(trainer.model), trainer.optimizer.state_dict(), trainer.epoch


def _assert_unchanged(trainer, state):
    weights, opt_state, epoch = state
    assert_weights_equal(weights_of(trainer.model), weights)
    assert trainer.optimizer.state_dict()["step"] == opt_state["step"]
    assert trainer.epoch == epoch and trainer.history.epoch == []


def _trainer_with(model=None, optimizer=None, schedule="step", callbacks="early"):
    model = model or Regressor(num_layers=2, dropout=0.3, seed=5, dtype="float32")
    opt = optimizer(model.modules()) if optimizer else optim.Adam(model.modules(), lr=0.02)
    sched = {"step": lambda: optim.StepLR(opt, step_size=1, gamma=0.7),
             "exp": lambda: optim.ExponentialLR(opt, gamma=0.5), None: lambda: None}[schedule]()
    cbs = {"early": [EarlyStopping(patience=100)], None: []}[callbacks]
    return Trainer(model, opt, schedule=sched, callbacks=cbs, verbose=0)


def _narrow_head():
    model = Regressor(num_layers=2, dropout=0.3, seed=5, dtype="float32")
    model.head = fr.Linear(8, 1, bias=False, dtype="float32")
    return model


@pytest.mark.parametrize("make,match", [
    (lambda: _trainer_with(model=Scripted()), r"it holds 2 modules \(\['LSTM', 'Linear'\]\), "
                                              r"the model has 1"),
    (lambda: _trainer_with(model=Regressor(num_layers=2, hidden=9, dtype="float32")),
     r"module 0 \(LSTM\) parameter 'weight_ih_l0' has shape \(36, 3\), the checkpoint has "
     r"\(32, 3\)"),
    (lambda: _trainer_with(model=_narrow_head()),
     r"module 1 \(Linear\) has parameters \['weight'\], the checkpoint has \['weight', 'bias'\]"),
    (lambda: _trainer_with(optimizer=lambda m: optim.SGD(m, lr=0.1)),
     "written with optimizer Adam, the trainer has SGD"),
    (lambda: _trainer_with(schedule=None), "written with schedule StepLR, the trainer has none"),
    (lambda: _trainer_with(schedule="exp"),
     "written with schedule StepLR, the trainer has ExponentialLR"),
    (lambda: _trainer_with(callbacks=None),
     r"states for callbacks \['EarlyStopping'\], the trainer's callbacks with state are \[\]"),
])
def test_mismatches_are_refused_before_any_change(saved, make, match):
    trainer = make()
    state = _fresh_state(trainer)
    with pytest.raises(ValueError, match="does not fit this trainer: .*" + match):
        trainer.fit(data(), epochs=3, resume_from=saved)
    _assert_unchanged(trainer, state)


def test_failure_while_applying_rolls_back(saved):
    class Broken(Regressor):
        def extra_state(self):
            return {}

        def load_extra_state(self, state):
            raise RuntimeError("cannot load")

    trainer = _trainer_with(model=Broken(num_layers=2, dropout=0.3, seed=9, dtype="float32"))
    state = _fresh_state(trainer)
    # The checkpoint has no extra state for a model that keeps some: refused up front.
    with pytest.raises(ValueError, match="keeps extra state .* but the checkpoint has none"):
        restore_checkpoint(saved, trainer)
    _assert_unchanged(trainer, state)
    # With extra state present, applying fails at the end and everything is put back.
    other = _trainer_with(model=Broken(num_layers=2, dropout=0.3, seed=5, dtype="float32"))
    other.fit(data(), epochs=1, validation_split=0.2)
    path = save_checkpoint(os.path.join(os.path.dirname(saved), "extra.npz"), other)
    with pytest.raises(ValueError, match=r"could not be restored \(nothing was changed\): "
                                         r"RuntimeError: cannot load"):
        restore_checkpoint(path, trainer)
    _assert_unchanged(trainer, state)
    assert trainer.optimizer.state_dict()["buffers"] == {}


def test_resume_past_the_requested_epochs_warns_and_does_nothing(saved):
    trainer = _trainer_with()
    with pytest.warns(UserWarning, match="is at epoch 1; fit\\(epochs=1\\) has nothing left"):
        history = trainer.fit(data(), epochs=1, validation_split=0.2, resume_from=saved)
    assert history.epoch == [0] and trainer.global_step == 4


def test_unstorable_extra_state_is_a_clear_error(tmp_path):
    class Odd(Regressor):
        def extra_state(self):
            return {"handle": object()}

        def load_extra_state(self, state):
            pass

    model = Odd()
    trainer = Trainer(model, optim.SGD(model.modules(), lr=0.1), verbose=0)
    with pytest.raises(TypeError, match="'model/extra/handle': cannot store a object"):
        save_checkpoint(tmp_path / "odd.npz", trainer)
    assert os.listdir(tmp_path) == []


# -- frozen parameters, schedule interval, malformed documents, other data -------------------

class FrozenEmbeddingRegressor(Regressor):
    """Token ids -> a frozen Embedding -> the Regressor's LSTM and head.  A
    frozen module lists no parameters for the optimizer, but its weights are
    part of the model, so checkpoints keep them."""

    def __init__(self, seed=0):
        super().__init__(features=3, hidden=6, seed=seed, dtype="float64")
        self.emb = fr.Embedding(7, 3, freeze=True, seed=seed + 2, dtype="float64")

    def modules(self):
        return [self.emb, self.lstm, self.head]

    def _forward(self, batch):
        out, _ = self.lstm(self.emb(batch.inputs), lengths=batch.lengths)
        rows = np.arange(len(batch.lengths))
        return out, rows, self.head(out[batch.lengths - 1, rows])[:, 0]


def token_data():
    rng = np.random.default_rng(1)
    inputs = [rng.integers(0, 7, int(t)) for t in rng.integers(2, 6, size=18)]
    targets = np.array([0.3 * x.sum() for x in inputs])
    return fr.data.BatchLoader(inputs, targets, batch_size=6, seed=2)


def test_model_with_a_frozen_module_resumes_exactly(tmp_path):
    def make():
        model = FrozenEmbeddingRegressor()
        return Trainer(model, optim.Adam(model.modules(), lr=0.02), verbose=0)

    full = make()
    full.fit(token_data(), epochs=2)
    first = make()
    first.fit(token_data(), epochs=1)
    path = first.save_checkpoint(tmp_path / "frozen.npz")
    resumed = make()
    resumed.fit(token_data(), epochs=2, resume_from=path)
    assert_weights_equal(weights_of(resumed.model), weights_of(full.model))
    assert resumed.history.history == full.history.history


def test_schedule_interval_must_match(tmp_path):
    model = Scripted()
    opt = optim.SGD(model.modules(), lr=1.0)
    trainer = Trainer(model, opt, schedule=optim.StepLR(opt, 1), schedule_interval="batch",
                      verbose=0)
    trainer.fit([{"loss": 1.0}], epochs=1)
    path = trainer.save_checkpoint(tmp_path / "batch.npz")
    model = Scripted()
    opt = optim.SGD(model.modules(), lr=1.0)
    other = Trainer(model, opt, schedule=optim.StepLR(opt, 1), verbose=0)
    with pytest.raises(ValueError, match="does not fit this trainer: its schedule was stepped "
                                         "every batch, the trainer steps it every epoch"):
        other.fit([{"loss": 1.0}], epochs=2, resume_from=path)
    assert other.epoch == 0 and other.global_step == 0


@pytest.mark.parametrize("change,match", [
    (lambda meta: meta["model"].pop("modules"), r"is malformed: KeyError: 'modules'"),
    (lambda meta: meta.update(position=[1, 0, 4]), r"is malformed: AttributeError"),
    (lambda meta: meta.update(partial={"lr": 0.1, "train": {"sums": 3}}),
     r"does not fit this trainer: the unfinished epoch's metric sums must be"),
    (lambda meta: meta.update(partial={"lr": -1, "train": None}),
     r"the unfinished epoch's state must be a dict with 'lr' \(a number >= 0\)"),
], ids=["no modules", "position not a dict", "bad epoch sums", "negative lr"])
def test_malformed_checkpoint_is_a_clear_error(saved, tmp_path, change, match):
    path = tmp_path / "edited.npz"
    path.write_bytes(open(saved, "rb").read())
    _rewrite_meta(path, change)
    trainer = _trainer_with()
    state = _fresh_state(trainer)
    with pytest.raises(ValueError, match=match):
        restore_checkpoint(path, trainer)
    _assert_unchanged(trainer, state)


def test_resuming_on_data_with_fewer_batches_is_an_error(tmp_path):
    box = [None]
    first = box[0] = make_trainer([_interrupt_at(box, epoch=1, step=2)])
    first.fit(data(), epochs=2, validation_split=0.2)
    assert (first.epoch, first.step_in_epoch) == (1, 3)
    path = first.save_checkpoint(tmp_path / "mid.npz")
    resumed = make_trainer([LambdaCallback()])
    with pytest.raises(ValueError, match=r"train_data produced 2 batches in epoch 1, but 3 of "
                                         r"them were done before the checkpoint"):
        resumed.fit(loader(n=12, batch_size=6, seed=3), epochs=2, resume_from=path)
