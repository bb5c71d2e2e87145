"""The task models as scikit-learn estimators: clone, Pipeline, GridSearchCV,
cross_val_score, check_estimator; training settings as constructor
parameters; fit returning the model; and the same classes without
scikit-learn installed."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastrnn as fr
from task_data import LABELS, TEXTS

sklearn = pytest.importorskip("sklearn")
from sklearn.base import clone, is_classifier, is_regressor  # noqa: E402
from sklearn.exceptions import NotFittedError as SklearnNotFittedError  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import FunctionTransformer, StandardScaler  # noqa: E402
from sklearn.utils.validation import check_is_fitted  # noqa: E402

QUIET = dict(verbose=0, seed=0)


def _series(n=48, steps=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, steps))
    return X, X[:, -3:].sum(axis=1)


def test_estimator_types_tags_and_fitted_state():
    clf = fr.SequenceClassifier(hidden_size=4, epochs=2, **QUIET)
    reg = fr.SequenceRegressor(hidden_size=4, epochs=2, **QUIET)
    assert is_classifier(clf) and not is_regressor(clf)
    assert is_regressor(reg) and not is_classifier(reg)
    assert not is_classifier(fr.SequenceTagger()) and not is_regressor(fr.LanguageModel())
    clf_tags, reg_tags = clf.__sklearn_tags__(), reg.__sklearn_tags__()
    assert clf_tags.input_tags.string and not clf_tags.input_tags.two_d_array
    assert reg_tags.input_tags.three_d_array and not reg_tags.input_tags.string
    assert not clf_tags.non_deterministic
    assert fr.SequenceClassifier().__sklearn_tags__().non_deterministic   # no seed
    with pytest.raises(SklearnNotFittedError):
        clf.predict(TEXTS[:2])
    with pytest.raises(SklearnNotFittedError):
        check_is_fitted(clf)
    assert issubclass(fr.NotFittedError, SklearnNotFittedError)
    assert clf.fit(TEXTS, LABELS) is clf                  # fit returns the estimator
    check_is_fitted(clf)
    assert len(clf.history_.epoch) == 2
    assert not hasattr(clf, "n_features_in_")             # texts have no feature count
    X, y = _series()
    reg.fit(X[:, :, None].repeat(3, axis=2), y)
    assert reg.n_features_in_ == 3
    clf.fit(X, (y > 0).astype(int))                       # numeric input now
    assert clf.n_features_in_ == 1


def test_training_settings_are_constructor_parameters_and_fit_overrides_them():
    clf = fr.SequenceClassifier(hidden_size=4, epochs=3, batch_size=8, lr=0.02,
                                optimizer="sgd", **QUIET)
    params = clf.get_params()
    for name in ("epochs", "batch_size", "lr", "optimizer", "clip_norm", "weight_decay",
                 "verbose", "validation_split", "shuffle"):
        assert name in params
    clf.fit(TEXTS, LABELS)
    assert len(clf.history_.epoch) == 3 and clf.history_.history["lr"] == [0.02] * 3
    clf.fit(TEXTS, LABELS, epochs=1, lr=0.5)              # one call only
    assert len(clf.history_.epoch) == 1 and clf.history_.history["lr"] == [0.5]
    assert clf.epochs == 3 and clf.lr == 0.02
    with pytest.raises(ValueError, match="epochs must be an int >= 1, got 0"):
        fr.SequenceClassifier(epochs=0, **QUIET).fit(TEXTS, LABELS)
    with pytest.raises(TypeError, match="shuffle must be True or False"):
        fr.SequenceClassifier(shuffle="no", **QUIET).fit(TEXTS, LABELS)
    lm = fr.LanguageModel(hidden_size=4, bptt=5, epochs=1, **QUIET)
    assert "shuffle" not in lm.get_params() and lm.get_params()["bptt"] == 5
    s2s = fr.Seq2Seq(hidden_size=4, teacher_forcing=0.5, epochs=1, **QUIET)
    assert s2s.fit(["ab", "ba"] * 4, ["ba", "ab"] * 4) is s2s


def test_an_optimizer_class_is_saved_by_name(tmp_path):
    clf = fr.SequenceClassifier(hidden_size=4, epochs=1, optimizer=fr.optim.RMSprop, **QUIET)
    loaded = fr.load(clf.fit(TEXTS, LABELS).save(tmp_path / "m.npz"))
    assert loaded.optimizer == "rmsprop"


def test_clone_keeps_parameters_and_drops_the_fit():
    clf = fr.SequenceClassifier(hidden_size=5, epochs=1, lr=0.01, **QUIET).fit(TEXTS, LABELS)
    copy = clone(clf)
    assert copy.get_params() == clf.get_params()
    assert not hasattr(copy, "history_")
    with pytest.raises(fr.NotFittedError):
        copy.predict(TEXTS[:1])


def test_pipelines_for_texts_and_numbers():
    lower = FunctionTransformer(lambda X: [text.upper() for text in X])
    text_pipe = Pipeline([("upper", lower),
                          ("clf", fr.SequenceClassifier(hidden_size=8, epochs=15, lr=0.05,
                                                        lower=False, **QUIET))])
    text_pipe.fit(TEXTS, LABELS)
    assert text_pipe.score(TEXTS, LABELS) == 1.0
    assert text_pipe.named_steps["clf"].inputs_.vocab.encode(["GOOD"])[0] > 3   # saw upper
    X, y = _series()
    num_pipe = Pipeline([("scale", StandardScaler()),
                         ("rnn", fr.SequenceRegressor(hidden_size=8, epochs=30, lr=0.02,
                                                      **QUIET))])
    num_pipe.fit(X * 10 + 3, y)
    assert num_pipe.score(X * 10 + 3, y) > 0.5
    assert num_pipe.predict(X[:5]).shape == (5,)


def test_grid_search_over_hidden_size_and_lr_in_two_processes():
    search = GridSearchCV(fr.SequenceClassifier(epochs=4, **QUIET),
                          {"hidden_size": [4, 8], "lr": [0.001, 0.05]}, cv=3, n_jobs=2)
    search.fit(TEXTS, LABELS)
    results = search.cv_results_
    assert len(results["params"]) == 4
    assert search.best_params_["lr"] == 0.05          # 4 epochs at lr 1e-3 learn nothing
    assert search.best_estimator_.hidden_size == search.best_params_["hidden_size"]
    assert search.best_estimator_.predict(["good film"])[0] == "pos"


def test_cross_val_score():
    scores = cross_val_score(fr.SequenceClassifier(hidden_size=8, epochs=10, lr=0.05,
                                                   **QUIET), TEXTS, LABELS, cv=3)
    assert scores.shape == (3,) and (scores > 0.9).all()


# Checks that cannot apply to a sequence model: an (N, T) array is N series of
# T steps with one feature each, so n_features_in_ is 1 (features per step)
# and a different T at predict is a valid input, not an error.
EXPECTED_FAILURES = {
    "check_n_features_in": "n_features_in_ counts features per step, not the T columns "
                           "of an (N, T) array of N univariate series",
    "check_n_features_in_after_fitting": "a sequence model accepts any length T at "
                                         "predict: fewer columns is a shorter series",
}


def test_check_estimator_on_the_numeric_regressor():
    from sklearn.utils.estimator_checks import check_estimator

    results = check_estimator(fr.SequenceRegressor(hidden_size=4, epochs=2, **QUIET),
                              expected_failed_checks=EXPECTED_FAILURES, on_fail=None)
    failed = {r["check_name"]: r["exception"] for r in results if r["status"] == "failed"}
    assert not failed, failed
    xfailed = {r["check_name"] for r in results if r["status"] == "xfail"}
    assert xfailed == set(EXPECTED_FAILURES)     # they do fail, for the reason given
    assert sum(r["status"] == "passed" for r in results) >= 45


def test_the_models_work_without_scikit_learn():
    """sklearn hidden from the import system: the classes are plain, with the
    same parameters, fit returning the model and the same NotFittedError
    bases (ValueError, AttributeError)."""
    script = textwrap.dedent("""
        import sys
        sys.modules["sklearn"] = None           # import sklearn -> ImportError
        import pickle
        import fastrnn as fr
        from fastrnn.tasks import base
        assert not base.HAVE_SKLEARN
        assert fr.SequenceClassifier.__mro__[1:] == (base.TaskModel, object)
        assert issubclass(fr.NotFittedError, (ValueError)) and \\
            issubclass(fr.NotFittedError, AttributeError)
        clf = fr.SequenceClassifier(hidden_size=4, epochs=2, verbose=0, seed=0)
        try:
            clf.predict(["a"])
        except fr.NotFittedError:
            pass
        texts, labels = ["good film", "bad plot"] * 4, ["pos", "neg"] * 4
        assert clf.fit(texts, labels) is clf and len(clf.history_.epoch) == 2
        clf.set_params(hidden_size=6)
        assert clf.get_params()["hidden_size"] == 6 and "epochs" in clf.get_params()
        copy = pickle.loads(pickle.dumps(clf))
        assert (copy.predict_proba(texts) == clf.predict_proba(texts)).all()
        assert not hasattr(clf, "__sklearn_tags__")
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=dict(os.environ), timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
