"""fr.Trainer's bad input (model, optimizer, data, batch results, arguments)
and the checks it keeps between batches."""

import warnings

import numpy as np
import pytest

from fastrnn import optim
from fastrnn.training import (EarlyStopping, History, LearningRateScheduler, ModelCheckpoint,
                              Trainer)
from trainer_models import Regressor, Scripted, loader, scripted_batches


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
