"""Task-model streams: step-by-step predictions equal predict on every prefix."""

import threading

import numpy as np
import pytest

import fastrnn as fr
from fastrnn.tasks import NotFittedError
from fastrnn.tasks.classifier import SequenceClassifier
from fastrnn.tasks.language_model import LanguageModel
from fastrnn.tasks.regressor import SequenceRegressor
from fastrnn.tasks.tagger import SequenceTagger
from fastrnn.text import BOS, EOS, PAD, UNK

SENTENCES = [["Ann", "lives", "in", "Rome"], ["Bob", "flew", "to", "Oslo", "today"],
             ["we", "met", "Ann", "in", "Oslo"], ["Rome", "is", "far"]]
TAGS = [["B-PER", "O", "O", "B-LOC"], ["B-PER", "O", "O", "B-LOC", "O"],
        ["O", "O", "B-PER", "O", "B-LOC"], ["B-LOC", "O", "O"]]


@pytest.fixture(scope="module")
def tagger():
    model = SequenceTagger(hidden_size=16, bidirectional=False, embedding_dim=8, seed=0)
    model.fit(SENTENCES, TAGS, epochs=3, verbose=0)
    return model


def test_tagger_stream_equals_predict_on_prefixes(tagger):
    sentence = ["Bob", "met", "Ann", "in", "Paris", "today"]   # "Paris" is unknown
    stream = tagger.stream()
    for k, token in enumerate(sentence):
        assert stream.step(token) == tagger.predict([sentence[:k + 1]])[0][-1]
    stream.reset()
    probabilities = [stream.step_proba(token) for token in sentence]
    np.testing.assert_allclose(probabilities, tagger.predict_proba([sentence])[0],
                               rtol=1e-6, atol=1e-7)


def test_tagger_stream_bad_input_and_bidirectional(tagger):
    stream = tagger.stream()
    with pytest.raises(TypeError, match="item must be one token"):
        stream.step(["two", "tokens"])
    with pytest.raises(ValueError, match="token id in 0"):
        stream.step(10 ** 6)
    both = SequenceTagger(hidden_size=8, embedding_dim=4, seed=0)   # bidirectional
    both.fit(SENTENCES, TAGS, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"bidirectional=True\) cannot stream"):
        both.stream()
    with pytest.raises(NotFittedError):
        SequenceTagger().stream()


def _numeric_data(rng, count=12, features=3):
    X = [rng.standard_normal((int(rng.integers(3, 8)), features)) for _ in range(count)]
    return X


def test_per_step_regressor_stream_equals_predict():
    rng = np.random.default_rng(0)
    X = _numeric_data(rng)
    y = [x.sum(axis=1) for x in X]
    model = SequenceRegressor(cell="gru", hidden_size=12, num_layers=2, per_step=True, seed=1)
    model.fit(X, y, epochs=2, verbose=0)
    sequence = X[0]
    stream = model.stream()
    values = [stream.step(row) for row in sequence]
    assert all(isinstance(v, np.float64) for v in values)
    np.testing.assert_array_equal(values, model.predict([sequence])[0])
    with pytest.raises(ValueError, match="item must be one step of 3 feature"):
        stream.step(np.zeros(4))
    with pytest.raises(ValueError, match="item contains NaN"):
        stream.step(np.array([0.0, np.nan, 1.0]))
    with pytest.raises(TypeError, match="item must hold numbers"):
        stream.step(["a", "b", "c"])


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
def test_pooled_regressor_stream_equals_predict_on_prefixes(pooling):
    rng = np.random.default_rng(1)
    X = _numeric_data(rng)
    y = np.stack([x.mean(axis=0)[:2] for x in X])           # (N, 2): vector targets
    model = SequenceRegressor(hidden_size=10, pooling=pooling, seed=2)
    model.fit(X, y, epochs=2, verbose=0)
    sequence = X[3]
    stream = model.stream()
    for k, row in enumerate(sequence):
        got = stream.step(row)
        assert got.shape == (2,)
        np.testing.assert_allclose(got, model.predict([sequence[:k + 1]])[0],
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("output", ["softmax", "sigmoid"])
def test_classifier_stream_equals_predict_proba_on_prefixes(output):
    texts = ["good fine great", "bad awful", "great good", "awful bad terrible",
             "fine good", "terrible bad"]
    labels = ["pos", "neg", "pos", "neg", "pos", "neg"]
    model = SequenceClassifier(hidden_size=12, embedding_dim=6, output=output,
                               pooling="mean", seed=0)
    model.fit(texts, labels, epochs=2, verbose=0)
    tokens = ["good", "but", "bad"]
    stream = model.stream()
    for k, token in enumerate(tokens):
        np.testing.assert_allclose(stream.step(token),
                                   model.predict_proba([" ".join(tokens[:k + 1])])[0],
                                   rtol=1e-5, atol=1e-7)


def test_language_model_stream_and_generate():
    texts = ["the cat sat on the mat", "a cat and a hat", "the hat sat"]
    model = LanguageModel(level="char", hidden_size=16, embedding_dim=8, seed=0)
    model.fit(texts, epochs=1, bptt=8, batch_size=2, verbose=0)
    stream = model.stream()
    p_eos = stream.step("<eos>")
    p_t = stream.step("t")
    assert p_t.shape == (len(model.vocab_),) and abs(p_t.sum() - 1) < 1e-12
    # The same probabilities as a whole-sequence forward over "<eos> t".
    with fr.tasks.base.eval_mode(model.modules()):
        out, _ = model.network_.forward(np.array([[EOS], [model.vocab_["t"]]]))
        logits = model.head_(out[:, 0])
    for probabilities, row in zip([p_eos, p_t], logits.astype(np.float64)):
        expected = np.exp(row - row.max())
        np.testing.assert_allclose(probabilities, expected / expected.sum(), rtol=1e-6)
    # generate runs on streams: greedy continuation follows the stream's argmax.
    text = model.generate("t", length=3, temperature=0.0)
    stream.reset()
    stream.step("<eos>")
    p = stream.step("t")
    expected = "t"
    for _ in range(3):
        z = np.where(np.isin(np.arange(len(p)), [PAD, UNK, BOS, EOS]), -np.inf, np.log(p))
        token = model.vocab_.lookup(int(np.argmax(z)))
        expected += token
        p = stream.step(token)
    assert text == expected


def test_variant_and_jordan_language_models_stream_and_generate():
    """A cell variant streams like the plain cell (its outputs equal the
    whole-sequence forward); a Jordan network cannot stream (clear error),
    and its generate still runs (through forward, step by step)."""
    texts = ["the cat sat on the mat", "a cat and a hat", "the hat sat"]
    model = LanguageModel(level="char", cell="lstm", hidden_size=12, embedding_dim=6,
                          cell_options={"peepholes": True, "proj_size": 5}, seed=0)
    model.fit(texts, epochs=1, bptt=8, batch_size=2, verbose=0)
    stream = model.stream()
    rows = [stream.logits(token) for token in ("<eos>", "t", "h")]
    with fr.tasks.base.eval_mode(model.modules()):
        ids = np.array([[EOS], [model.vocab_["t"]], [model.vocab_["h"]]])
        out, _ = model.network_.forward(ids)
        logits = model.head_(out[:, 0])
    np.testing.assert_array_equal(np.stack(rows), logits)
    jordan = LanguageModel(level="char", cell="jordan", hidden_size=8, embedding_dim=4,
                           seed=0)
    jordan.fit(texts, epochs=1, bptt=8, batch_size=2, verbose=0)
    with pytest.raises(ValueError, match=r"cell='jordan'\) cannot stream"):
        jordan.stream()
    text = jordan.generate("t", length=4, temperature=0.0, stop_at_eos=False)
    assert text.startswith("t") and len(text) == 5


def test_task_streams_in_threads_equal_runs_alone(tagger):
    sentences = [["Ann", "lives", "in", "Oslo"] * 20, ["Bob", "met", "Ann"] * 25,
                 ["Rome", "is", "far"] * 30, ["we", "flew", "to", "Rome"] * 15]
    alone = []
    for sentence in sentences:
        stream = tagger.stream()
        alone.append(np.array([stream.step_proba(token) for token in sentence]))
    results = [None] * len(sentences)
    barrier = threading.Barrier(len(sentences))

    def run(i):
        stream = tagger.stream()
        barrier.wait()
        results[i] = np.array([stream.step_proba(token) for token in sentences[i]])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(sentences))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for got, expected in zip(results, alone):
        np.testing.assert_array_equal(got, expected)
