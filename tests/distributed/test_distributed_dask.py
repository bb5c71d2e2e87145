"""fr.distributed.dask_predict on a local Dask cluster (2 worker processes,
1 thread each, 127.0.0.1 only): results equal local prediction, the model
travels as the bytes of its npz+JSON file and is loaded once per worker
thread.  Without dask the tests skip locally and fail under CI."""

import numpy as np
import pytest

import fastrnn as fr
from fastrnn.distributed import dask as fr_dask
from helpers import ci_enabled


def _require(module):
    try:
        return pytest.importorskip(module)
    except pytest.skip.Exception:
        if ci_enabled():
            pytest.fail(f"{module} is needed for the Dask tests; CI is set", pytrace=False)
        raise


@pytest.fixture(scope="module")
def client():
    _require("dask.distributed")
    from dask.distributed import Client, LocalCluster
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                           processes=True, dashboard_address=None)
    with Client(cluster) as client:
        yield client
    cluster.close()


@pytest.fixture(scope="module")
def texts_model():
    rng = np.random.default_rng(0)
    words = ["good", "bad", "fine", "awful", "great", "poor", "ok"]
    texts = [" ".join(rng.choice(words, size=int(rng.integers(1, 7)))) for _ in range(60)]
    labels = ["pos" if t.count("good") + t.count("great") > t.count("bad") else "neg"
              for t in texts]
    clf = fr.SequenceClassifier(hidden_size=8, embedding_dim=6, seed=1)
    clf.fit(texts, labels, epochs=2, batch_size=16, verbose=0)
    return clf, texts


def test_bag_predict_and_predict_proba_equal_local(client, texts_model):
    import dask.bag as db
    clf, texts = texts_model
    bag = db.from_sequence(texts, npartitions=5)
    labels = fr.distributed.dask_predict(clf, bag).compute()
    assert list(labels) == list(clf.predict(texts))
    proba = fr.distributed.dask_predict(clf, bag, method="predict_proba", batch_size=7)
    np.testing.assert_allclose(np.array(proba.compute()), clf.predict_proba(texts),
                               rtol=1e-6)


def test_dataframe_column_keeps_its_index(client, texts_model):
    _require("dask.dataframe")
    import dask.dataframe as dd
    import pandas as pd
    clf, texts = texts_model
    frame = pd.DataFrame({"text": texts}, index=np.arange(100, 160))
    column = dd.from_pandas(frame, npartitions=4)["text"]
    result = fr.distributed.dask_predict(clf, column).compute()
    assert list(result.index) == list(frame.index)
    assert list(result) == list(clf.predict(texts))
    with pytest.raises(ValueError, match="1-D results only"):
        fr.distributed.dask_predict(clf, column, method="predict_proba")


def test_array_partitions_of_numeric_sequences(client):
    import dask.array as da
    rng = np.random.default_rng(2)
    X = rng.normal(size=(50, 6, 3))
    reg = fr.SequenceRegressor(hidden_size=5, seed=0)
    reg.fit(X, X.sum(axis=(1, 2)), epochs=2, batch_size=10, verbose=0)
    array = da.from_array(X, chunks=(13, 3, 3))         # time axis split: rejoined
    result = fr.distributed.dask_predict(reg, array)
    assert result.shape[0] == 50
    np.testing.assert_allclose(result.compute(), reg.predict(X), rtol=1e-5, atol=1e-6)


def test_workers_load_the_model_from_bytes_once_per_thread(client, texts_model):
    import dask.bag as db
    clf, texts = texts_model
    fr.distributed.dask_predict(clf, db.from_sequence(texts, npartitions=6)).compute()

    def loaded():
        return [(len(key[0]), type(model).__name__) for key, model in fr_dask._models.items()]

    # each worker's kernels run on one thread: one per Dask worker thread
    assert set(client.run(fr.get_num_threads).values()) == {1}
    per_worker = client.run(loaded)
    assert len(per_worker) == 2
    for models in per_worker.values():
        assert models in ([], [(64, "SequenceClassifier")])    # one model, sha256 key
    assert sum(len(models) for models in per_worker.values()) >= 1


def test_model_bytes_round_trip_and_bad_input(texts_model):
    clf, texts = texts_model
    blob = clf.to_bytes()                        # what dask_predict sends
    assert blob[:2] == b"PK"                     # an npz (zip) file, not a pickle
    again = fr.from_bytes(blob)
    assert list(again.predict(texts)) == list(clf.predict(texts))
    with pytest.raises(TypeError, match="fitted fastrnn task model"):
        fr.distributed.dask_predict(object(), [])
    with pytest.raises(ValueError, match="method must be one of"):
        fr.distributed.dask_predict(clf, [], method="fit")
    with pytest.raises(ValueError, match="threads must be an int >= 1"):
        fr.distributed.dask_predict(clf, [], threads=0)
    _require("dask")
    with pytest.raises(TypeError, match="data must be a dask Bag, Array or dataframe"):
        fr.distributed.dask_predict(clf, texts)
