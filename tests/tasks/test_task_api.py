"""All five task models, one API: the same constructor defaults, fit / predict
keywords and documentation, set_params after fit, failed refits, saving
round trips, empty input, flags, seeds and vocabulary limits."""

import inspect

import numpy as np
import pytest

import fastrnn as fr
from fastrnn.tasks.base import NotFittedError
from task_data import (FAST, FIT_KEYWORDS, LABELS, LM_TEXT, MODELS, SENTENCES, SERIES, TAGS, TEXTS,
                       _fit, _outputs, _small, numeric)


def test_shared_constructor_parameters_have_the_same_defaults():
    """A parameter that means the same thing has the same name and default in
    every model (hidden_size, bidirectional, tokenizer and lower differ on
    purpose and are documented per model)."""
    shared = {"cell": "lstm", "num_layers": 1, "dropout": 0.0, "input": "embedding",
              "embedding_dim": 64, "pretrained": None, "freeze_embedding": False,
              "min_freq": 1, "max_vocab": None, "dtype": "float32", "seed": None}
    for cls in MODELS:
        parameters = inspect.signature(cls.__init__).parameters
        for name, default in shared.items():
            if name in parameters:
                assert parameters[name].default == default, (cls.__name__, name)
        names = [n for n in parameters if n != "self"]
        seed = names.index("seed")
        assert names[seed - 1] == "dtype", cls.__name__
        assert names[seed + 1:] == list(cls._training_params), cls.__name__     # then training
        if "input" in names and "embedding_dim" in names:      # same order everywhere
            assert names.index("input") + 1 == names.index("embedding_dim"), cls.__name__


def test_fit_predict_and_score_keywords_agree_across_models():
    for cls in MODELS:
        fit = inspect.signature(cls.fit).parameters
        reference = inspect.signature(fr.SequenceClassifier.fit).parameters
        for name in FIT_KEYWORDS:
            assert name in fit, (cls.__name__, name)
            if name != "clip_norm":     # LM and Seq2Seq clip by default (documented)
                assert fit[name].default == reference[name].default, (cls.__name__, name)
        for method in ("predict", "predict_proba", "score", "encode", "evaluate"):
            if hasattr(cls, method):
                assert "batch_size" in inspect.signature(getattr(cls, method)).parameters, \
                    (cls.__name__, method)


def test_every_public_method_documents_its_arguments():
    for cls in MODELS:
        for name, member in inspect.getmembers(cls, inspect.isfunction):
            if name.startswith("_"):
                continue
            doc = inspect.getdoc(member)
            assert doc, f"{cls.__name__}.{name} has no docstring"
            for parameter in inspect.signature(member).parameters.values():
                if parameter.name == "self" or parameter.kind is parameter.VAR_KEYWORD:
                    continue
                assert parameter.name in doc, \
                    f"{cls.__name__}.{name} does not document {parameter.name!r}"
        class_doc = inspect.getdoc(cls)
        for parameter in list(inspect.signature(cls.__init__).parameters)[1:]:
            assert parameter in class_doc, f"{cls.__name__} does not document {parameter!r}"


CHANGES = {
    fr.SequenceClassifier: dict(output="sigmoid", pooling="mean", bidirectional=True,
                                hidden_size=6),
    fr.SequenceRegressor: dict(per_step=True, bidirectional=True, hidden_size=6),
    fr.SequenceTagger: dict(bidirectional=False, hidden_size=6, cell="gru"),
    fr.LanguageModel: dict(level="char", hidden_size=6, cell="gru"),
    fr.Seq2Seq: dict(tokenizer="word", lower=True, hidden_size=6),
}


@pytest.mark.parametrize("cls", MODELS, ids=lambda cls: cls.__name__)
def test_set_params_after_fit_takes_effect_at_the_next_fit_only(cls, tmp_path):
    """A fitted model keeps predicting and saving with the parameters it was
    fitted with; set_params used to change predict (a pooled head read as
    per-step, softmax logits read as a sigmoid) and the saved file (the new
    parameters with the old weights)."""
    model = _fit(_small(cls))
    fitted_params = model.get_params()
    before = _outputs(model)
    model.set_params(**CHANGES[cls])
    assert _outputs(model) == before
    loaded = fr.load(model.save(tmp_path / "m.npz"))
    assert loaded.get_params() == fitted_params
    assert _outputs(loaded) == before
    _fit(model)                                             # now the change applies
    assert model.get_params() == dict(fitted_params, **CHANGES[cls])
    assert model.modules()[-1].in_features in (6, 12)       # the head sees the new size


@pytest.mark.parametrize("cls", MODELS, ids=lambda cls: cls.__name__)
def test_a_failed_refit_of_any_model_leaves_no_stale_model(cls):
    """Rebuilt layers are untrained: after a refit that fails past the build
    (here: at the optimizer) the model must not predict with them."""
    model = _fit(_small(cls))
    with pytest.raises(ValueError, match="optimizer must be one of"):
        _fit(model, optimizer="nadam")
    with pytest.raises(NotFittedError, match=f"this {cls.__name__} is not fitted yet"):
        _outputs(model)
    _fit(model)
    _outputs(model)


ROUND_TRIPS = [
    (fr.SequenceClassifier, dict(input="onehot", bidirectional=True, dtype="float64")),
    (fr.SequenceClassifier, dict(cell="rnn", bidirectional=True, num_layers=2, dropout=0.2)),
    (fr.SequenceRegressor, dict(bidirectional=True, per_step=True, dtype="float64")),
    (fr.SequenceTagger, dict(input="onehot", dtype="float64")),
    (fr.SequenceTagger, dict(cell="gru", bidirectional=False, num_layers=2, dropout=0.1)),
    (fr.LanguageModel, dict(input="onehot", dtype="float64", level="char")),
    (fr.LanguageModel, dict(cell="rnn", num_layers=2, dropout=0.2)),
    (fr.Seq2Seq, dict(input="onehot", dtype="float64")),
    (fr.Seq2Seq, dict(cell="gru", num_layers=2, tokenizer="word")),
]


@pytest.mark.parametrize("cls,params", ROUND_TRIPS,
                         ids=lambda value: value.__name__ if isinstance(value, type) else
                         "-".join(f"{k}={v}" for k, v in value.items()))
def test_save_load_round_trip_of_every_task(cls, params, tmp_path):
    model = _fit(_small(cls, **params), epochs=2)
    loaded = fr.load(model.save(tmp_path / "model.npz"))
    assert type(loaded) is cls and loaded.get_params() == model.get_params()
    assert _outputs(loaded) == _outputs(model)
    dtype = np.dtype(params.get("dtype", "float32"))
    for a, b in zip(loaded.modules(), model.modules()):
        assert type(a) is type(b) and not a.training
        for name, value in b.state_dict().items():
            assert a.state_dict()[name].dtype == dtype
            np.testing.assert_array_equal(a.state_dict()[name], value, err_msg=name)


@pytest.mark.parametrize("cls", MODELS, ids=lambda cls: cls.__name__)
def test_empty_input_at_prediction_is_a_clear_error(cls):
    model = _fit(_small(cls))
    if cls is fr.LanguageModel:
        with pytest.raises(ValueError, match="text_or_texts is an empty list: need at least "
                                             "one text"):
            model.evaluate([])
        assert model.generate("the", length=0) == "the"
        return
    name = "sources" if cls is fr.Seq2Seq else "X"
    with pytest.raises(ValueError, match=f"{name} is empty: need at least one sequence"):
        model.predict([])
    with pytest.raises(ValueError, match="is empty: need at least one sequence"):
        model.score([], [])


def test_flags_must_be_booleans():
    """bidirectional="no" is a truthy string: it used to build a bidirectional model."""
    for cls, name in ((fr.SequenceClassifier, "bidirectional"),
                      (fr.SequenceTagger, "bidirectional"),
                      (fr.SequenceRegressor, "bidirectional"),
                      (fr.SequenceRegressor, "per_step"),
                      (fr.SequenceClassifier, "freeze_embedding"),
                      (fr.LanguageModel, "freeze_embedding")):
        with pytest.raises(TypeError, match=f"{name} must be True or False, got 'no'"):
            _fit(_small(cls, **{name: "no"}))
    model = _fit(_small(fr.SequenceClassifier, bidirectional=np.True_))
    assert model.network_.output_size == 8
    lm = _fit(_small(fr.LanguageModel))
    with pytest.raises(TypeError, match="stop_at_eos must be True or False, got 'yes'"):
        lm.generate("the", length=3, stop_at_eos="yes")


def test_seed_and_dropout_errors_name_the_argument():
    for bad in ("x", -1, 1.5, True):
        with pytest.raises(ValueError, match=r"seed must be None or an int >= 0, got "):
            _fit(_small(fr.SequenceTagger, seed=bad))
    with pytest.raises(ValueError, match=r"seed must be None or an int >= 0, got 'x'"):
        _fit(_small(fr.LanguageModel)).generate("the", length=2, seed="x")
    for cls in (fr.SequenceClassifier, fr.Seq2Seq):
        for bad in (1.5, -0.1, "0.2"):
            with pytest.raises(ValueError, match=r"dropout must be a number in \[0, 1\), got"):
                _fit(_small(cls, dropout=bad))


def test_pretrained_vectors_need_an_embedding_and_the_right_rows():
    vectors = np.ones((50, 3))
    with pytest.raises(ValueError, match="pretrained vectors need input='embedding', but "
                                         "this model's input is 'onehot'"):
        _fit(_small(fr.SequenceClassifier, input="onehot", pretrained=vectors))
    X, y = numeric(np.random.default_rng(0))
    with pytest.raises(ValueError, match="pretrained vectors need input='embedding', .*"
                                         "'numeric' \\(numeric data\\)"):
        fr.SequenceClassifier(pretrained=vectors).fit(X, y, verbose=0)
    with pytest.raises(ValueError, match="pretrained: vocab has .* tokens but source has 50 "
                                         "rows"):
        _fit(_small(fr.SequenceTagger, pretrained=vectors))


def test_vocabulary_limits_are_checked_under_the_models_names():
    for cls in (fr.SequenceClassifier, fr.SequenceTagger, fr.LanguageModel, fr.Seq2Seq):
        with pytest.raises(ValueError, match=r"max_vocab must be None or an int >= 1, got -1"):
            _fit(_small(cls, max_vocab=-1))
        with pytest.raises(ValueError, match=r"min_freq must be an int >= 1, got 0"):
            _fit(_small(cls, min_freq=0))
    # Limits that leave only the specials would read every input as <unk>.
    for cls, name in ((fr.SequenceClassifier, "X"), (fr.SequenceTagger, "X"),
                      (fr.LanguageModel, "text_or_texts"), (fr.Seq2Seq, "sources")):
        with pytest.raises(ValueError, match=f"the vocabulary of {name} has no tokens besides "
                                             f"the specials: min_freq=1000"):
            _fit(_small(cls, min_freq=1000))


def test_validation_arguments_name_themselves():
    with pytest.raises(ValueError, match=r"validation_split=0.1 cannot split 4 sequences: "
                                         r"fraction 0.1 of 4 examples gives 0 validation"):
        fr.SequenceClassifier().fit(TEXTS[:4], LABELS[:4], validation_split=0.1, verbose=0)
    with pytest.raises(TypeError, match=r"validation_data must be a pair \(X, y\) of inputs "
                                        r"and targets, got a list of length 1"):
        _fit(_small(fr.SequenceTagger), validation_data=[SENTENCES])
    with pytest.raises(ValueError, match=r"validation_split must be a number in \[0, 1\), "
                                         r"got np.True_"):
        _fit(_small(fr.LanguageModel), validation_split=np.True_)


def test_generators_and_string_arrays_are_read_once():
    """Inputs are read twice (kind detection, then encoding): a generator used
    to arrive empty the second time ("corpus is empty", IndexError)."""
    reference = fr.SequenceClassifier(hidden_size=4, seed=0)
    reference.fit(TEXTS, LABELS, epochs=1, **FAST)
    model = fr.SequenceClassifier(hidden_size=4, seed=0)
    model.fit((text for text in TEXTS), iter(LABELS), epochs=1, **FAST)
    np.testing.assert_array_equal(model.predict_proba(iter(TEXTS)),
                                  reference.predict_proba(TEXTS))
    # A pandas column's .values: an object array of str.
    column = np.array(TEXTS, dtype=object)
    np.testing.assert_array_equal(model.predict_proba(column), reference.predict_proba(TEXTS))
    assert model.score(column, np.array(LABELS, dtype=object)) == reference.score(TEXTS, LABELS)
    regressor = fr.SequenceRegressor(hidden_size=4, seed=0)
    regressor.fit((x for x in SERIES), SERIES.sum(axis=(1, 2)), epochs=1, **FAST)
    assert regressor.predict(x for x in SERIES[:3]).shape == (3,)
    ragged_objects = np.empty(2, dtype=object)
    ragged_objects[:] = [SERIES[0], SERIES[1, :2]]
    assert regressor.predict(ragged_objects).shape == (2,)
    tagger = fr.SequenceTagger(hidden_size=4, seed=0)
    tagger.fit((s for s in SENTENCES), (t for t in TAGS), epochs=1, **FAST)
    assert tagger.predict(iter(SENTENCES[:2])) == tagger.predict(SENTENCES[:2])
    assert tagger.predict([np.array(SENTENCES[0])]) == tagger.predict(SENTENCES[:1])
    lm = fr.LanguageModel(level="word", hidden_size=4, seed=0)
    lm.fit((text for text in [LM_TEXT, LM_TEXT]), epochs=1, batch_size=2, bptt=4, verbose=0)
    assert lm.evaluate(np.array([LM_TEXT])) == lm.evaluate([LM_TEXT])


def test_missing_labels_are_refused():
    """NaN != NaN: every NaN label used to become a class of its own."""
    with pytest.raises(ValueError, match=r"y\[1\] is NaN: labels must not be missing"):
        fr.SequenceClassifier().fit(TEXTS[:3], [1.0, float("nan"), float("nan")], verbose=0)
    tags = [list(t) for t in TAGS]
    tags[1][1] = np.nan
    with pytest.raises(ValueError, match=r"y\[1\]\[1\] is NaN: tags must not be missing"):
        fr.SequenceTagger().fit(SENTENCES, tags, verbose=0)


def test_prediction_batches_group_similar_lengths_and_keep_data_order():
    """Alternating lengths 1 and 40 in batches of 2: in data order every batch
    would run 40 steps; grouped by length, half of them run 1."""
    X = [np.full((1 if i % 2 else 40, 2), float(i)) for i in range(20)]
    model = fr.SequenceRegressor(hidden_size=3, seed=0)
    model.fit(X, np.arange(20.0), epochs=1, **FAST)
    steps = [batch.inputs.shape[0] for batch in model._batches(model.inputs_.transform(X), 2)]
    assert sum(steps) == 5 * 40 + 5 * 1
    single = np.array([model.predict([x])[0] for x in X])
    np.testing.assert_allclose(model.predict(X, batch_size=2), single, rtol=1e-5, atol=1e-6)


def test_batches_of_one_length_one_sequences_unicode_and_long_inputs(tmp_path):
    """The small and odd shapes: every batch a single sequence, sequences of one
    step, non-ASCII text (combining marks, emoji, CJK) through save/load, and a
    long sequence batched with short ones."""
    texts = ["é", "😀", "東", "e\u0301", "ß", "😀😀"]
    labels = ["a", "b", "a", "b", "a", "b"]
    clf = fr.SequenceClassifier(hidden_size=4, embedding_dim=4, tokenizer="char", seed=0)
    clf.fit(texts, labels, epochs=2, batch_size=1, verbose=0)
    assert len(clf.inputs_.vocab) == 4 + 6            # é, 😀, 東, e, U+0301, ß
    loaded = fr.load(clf.save(tmp_path / "unicode.npz"))
    assert loaded.inputs_.vocab.tokens == clf.inputs_.vocab.tokens
    np.testing.assert_array_equal(loaded.predict_proba(texts), clf.predict_proba(texts))
    long_text = "東é" * 1500
    alone = clf.predict_proba([long_text])
    np.testing.assert_allclose(clf.predict_proba(texts + [long_text])[-1:], alone,
                               rtol=1e-5, atol=1e-6)

    tagger = fr.SequenceTagger(hidden_size=4, embedding_dim=4, seed=0)
    tagger.fit([["東京"], ["Zoë"]], [["LOC"], ["PER"]], epochs=1, batch_size=1, verbose=0)
    assert [len(t) for t in tagger.predict([["東京"], ["x", "y", "z"]])] == [1, 3]

    regressor = fr.SequenceRegressor(hidden_size=3, per_step=True, seed=0)
    regressor.fit([np.ones(1), np.zeros(1)], [np.ones(1), np.zeros(1)], epochs=1,
                  batch_size=1, verbose=0)
    assert [p.shape for p in regressor.predict([np.ones(1), np.ones(3)])] == [(1,), (3,)]

    s2s = fr.Seq2Seq(hidden_size=4, embedding_dim=4, seed=0)
    s2s.fit(["é", "😀"], ["😀", "é"], epochs=1, batch_size=1, verbose=0)
    for beam_size in (1, 3):
        assert all(len(out) <= 1 for out in s2s.predict(["é", "東"], max_length=1,
                                                        beam_size=beam_size))

    lm = fr.LanguageModel(level="char", hidden_size=4, embedding_dim=4, seed=0)
    lm.fit("é😀東" * 5, epochs=1, batch_size=1, bptt=3, verbose=0)
    assert lm.generate("é", length=1, seed=0)[0] == "é"
    assert len(lm.generate("é", length=1, seed=0)) == 2
    assert set(lm.generate("", length=20, seed=0)) <= set("é😀東")
