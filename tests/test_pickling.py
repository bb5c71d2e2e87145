"""Pickling layers, optimizers and task models (pickle, cloudpickle, joblib),
bytes and file objects for save/load, and sending fitted models to joblib
(loky) and Dask worker processes.

Pickles go through the npz+JSON archive: the compiled kernels are never
pickled (they were the reason ``pickle.dumps(fr.LSTM(4, 8))`` failed).
"""

import io
import pickle
import pickletools

import numpy as np
import pytest

import fastrnn as fr
from task_data import MODELS, _fit, _outputs, _small

cloudpickle = pytest.importorskip("cloudpickle")
joblib = pytest.importorskip("joblib")


def _joblib_round_trip(obj):
    buffer = io.BytesIO()
    joblib.dump(obj, buffer)
    buffer.seek(0)
    return joblib.load(buffer)


ROUND_TRIPS = {
    "pickle5": lambda obj: pickle.loads(pickle.dumps(obj, protocol=5)),
    "cloudpickle": lambda obj: cloudpickle.loads(cloudpickle.dumps(obj)),
    "joblib": _joblib_round_trip,
}

LAYERS = [
    lambda: fr.LSTM(3, 5, num_layers=2, bidirectional=True, dropout=0.3, seed=1),
    lambda: fr.GRU(3, 5, batch_first=True, dtype="float64", seed=2),
    lambda: fr.RNN(3, 5, nonlinearity="relu", bias=False, seed=3),
    lambda: fr.Linear(3, 2, seed=4),
    lambda: fr.Dropout(0.4, seed=5),
    lambda: fr.Embedding(7, 3, padding_idx=0, freeze=True, seed=6),
    # Cell variants: the options are part of the layer (some change no shape).
    lambda: fr.LSTM(3, 5, cell_clip=0.7, input_forget=True, seed=7),
    lambda: fr.LSTM(3, 5, proj_size=2, peepholes=True, seed=8),
    lambda: fr.GRU(3, 5, reset_after=False, seed=9),
]


def _same_layer(a, b):
    assert type(a) is type(b) and a.training == b.training and a.dtype == b.dtype
    assert repr(a) == repr(b)
    assert a.state_dict().keys() == b.state_dict().keys()
    for name, value in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[name], value, err_msg=name)
    assert a.rng_state() == b.rng_state()


def _no_compiled_code(data):
    """No global the pickle refers to is a compiled kernel module."""
    globals_ = [arg for op, arg, _ in pickletools.genops(data)
                if op.name in ("GLOBAL", "STACK_GLOBAL") or isinstance(arg, str)]
    assert not any("_kernels" in str(name) for name in globals_)


@pytest.mark.parametrize("how", ROUND_TRIPS)
@pytest.mark.parametrize("make", LAYERS, ids=lambda make: type(make()).__name__)
def test_layers_round_trip(make, how, rng):
    layer = make()
    layer.train(False) if isinstance(layer, fr.Linear) else None
    copy = ROUND_TRIPS[how](layer)
    _same_layer(layer, copy)
    _no_compiled_code(pickle.dumps(layer, protocol=5))
    if isinstance(layer, fr.Embedding):
        assert copy.freeze and copy.padding_idx == 0
        ids = rng.integers(0, 7, size=(4, 2))
        np.testing.assert_array_equal(copy(ids), layer(ids))
        return
    width = {fr.Linear: 3, fr.Dropout: 3}.get(type(layer), 3)
    x = rng.standard_normal((4, 2, width)).astype(layer.dtype)
    # Same parameters and the same random state: same outputs, dropout masks included.
    first, second = layer(x), copy(x)
    for a, b in zip(first if isinstance(first, tuple) else (first,),
                    second if isinstance(second, tuple) else (second,)):
        np.testing.assert_array_equal(np.asarray(a[0] if isinstance(a, tuple) else a),
                                      np.asarray(b[0] if isinstance(b, tuple) else b))


@pytest.mark.parametrize("how", ROUND_TRIPS)
@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad"])
def test_optimizers_round_trip_with_their_modules(name, how, rng):
    """The optimizer state comes back, still bound to the unpickled modules
    (pickled together they stay shared), and the next step is identical."""
    lstm, head = fr.LSTM(3, 4, seed=0), fr.Linear(4, 2, seed=1)
    options = {"momentum": 0.9} if name == "SGD" else {}
    optimizer = getattr(fr.optim, name)([lstm, head], lr=0.05, **options)

    def step(modules, opt):
        out, _ = modules[0](x)
        y = modules[1](out)
        opt.zero_grad()
        modules[0].backward(modules[1].backward(y - 1.0))
        opt.step()

    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    step((lstm, head), optimizer)
    lstm2, head2, optimizer2 = ROUND_TRIPS[how]((lstm, head, optimizer))
    assert optimizer2.modules[0] is lstm2 and optimizer2.modules[1] is head2
    assert optimizer2.step_count == 1 and optimizer2.hyperparameters == optimizer.hyperparameters
    step((lstm, head), optimizer)
    step((lstm2, head2), optimizer2)
    for a, b in ((lstm, lstm2), (head, head2)):
        _same_layer(a, b)
    state, state2 = optimizer.state_dict(), optimizer2.state_dict()
    assert state["buffers"].keys() == state2["buffers"].keys()
    for key, value in state["buffers"].items():
        np.testing.assert_array_equal(state2["buffers"][key], value)


@pytest.mark.parametrize("how", ROUND_TRIPS)
@pytest.mark.parametrize("cls", MODELS, ids=lambda cls: cls.__name__)
def test_fitted_task_models_round_trip(cls, how):
    model = _fit(_small(cls), epochs=2)
    copy = ROUND_TRIPS[how](model)
    assert type(copy) is cls and copy.get_params() == model.get_params()
    assert _outputs(copy) == _outputs(model)
    assert copy.history_.history == model.history_.history
    _no_compiled_code(pickle.dumps(model, protocol=5))
    _fit(copy)          # and it trains on


def test_unfitted_models_pickle_their_parameters_and_set_params_survives():
    model = fr.SequenceClassifier(hidden_size=3, cell="gru")
    copy = pickle.loads(pickle.dumps(model))
    assert copy.get_params() == model.get_params()
    assert not getattr(copy, "is_fitted_", False)
    fitted = _fit(_small(fr.SequenceClassifier))
    fitted.set_params(hidden_size=9)              # takes effect at the next fit only
    copy = pickle.loads(pickle.dumps(fitted))
    assert copy.hidden_size == 9 and _outputs(copy) == _outputs(fitted)
    assert copy.head_.in_features == 4


def test_to_bytes_from_bytes_and_file_objects(tmp_path):
    model = _fit(_small(fr.SequenceTagger))
    data = model.to_bytes()
    assert isinstance(data, bytes)
    assert _outputs(fr.from_bytes(data)) == _outputs(model)
    assert _outputs(fr.from_bytes(bytearray(data))) == _outputs(model)
    path = tmp_path / "tagger.npz"
    with open(path, "wb") as handle:
        assert model.save(handle) is handle
    assert path.read_bytes() == data                  # the same file as save(path)
    with open(path, "rb") as handle:
        assert _outputs(fr.load(handle)) == _outputs(model)
    stream = io.BytesIO()
    model.save(stream)
    stream.seek(0)
    assert _outputs(fr.load(stream)) == _outputs(model)


def test_bytes_and_file_object_errors(tmp_path):
    model = _fit(_small(fr.SequenceClassifier))
    with pytest.raises(TypeError, match="data must be bytes .* got str"):
        fr.from_bytes("not bytes")
    with pytest.raises(ValueError, match="corrupt or not an .npz file"):
        fr.from_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupt or not an .npz file"):
        fr.from_bytes(model.to_bytes()[:100])
    path = tmp_path / "m.npz"
    path.write_bytes(model.to_bytes())
    with open(path) as text_handle, pytest.raises(TypeError, match="binary mode"):
        fr.load(text_handle)
    with open(path, "rb") as handle, pytest.raises(TypeError, match="no write method or is not writable"):
        model.save(handle)
    unfitted = fr.SequenceClassifier()
    with pytest.raises(fr.NotFittedError):
        unfitted.to_bytes()


def test_joblib_parallel_loky_workers_predict_like_the_local_model():
    model = _fit(_small(fr.SequenceClassifier), epochs=2)
    chunks = [["good film", "bad plot"], ["a good one"], ["bad film", "good plot", "a"]]
    local = [model.predict_proba(chunk) for chunk in chunks]
    remote = joblib.Parallel(n_jobs=2, backend="loky")(
        joblib.delayed(model.predict_proba)(chunk) for chunk in chunks)
    for a, b in zip(local, remote):
        np.testing.assert_array_equal(a, b)


def test_dask_workers_predict_like_the_local_model():
    distributed = pytest.importorskip("distributed")
    model = _fit(_small(fr.SequenceRegressor), epochs=2)
    X = np.random.default_rng(1).standard_normal((6, 5, 2))
    local = model.predict(X)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                                  processes=True, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        futures = [client.submit(model.predict, X[i:i + 2], pure=False)
                   for i in range(0, 6, 2)]
        remote = np.concatenate(client.gather(futures))
    np.testing.assert_array_equal(local, remote)
