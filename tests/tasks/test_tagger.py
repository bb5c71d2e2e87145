"""SequenceTagger: learns a generated NER task (unseen names included), round-trips
through save/load, keeps lengths, masks padding in its metrics, refuses bad input."""

import numpy as np
import pytest

from fastrnn.metrics import entity_scores, token_accuracy
from fastrnn.tasks import NotFittedError, load
from fastrnn.tasks.tagger import SequenceTagger
from fastrnn.text import UNK

# -- a generated NER data set ------------------------------------------------------------
# Sentences come from templates whose slots are people (B-PER I-PER) and places
# (B-LOC I-LOC).  Names are either drawn from short fixed lists (seen often in
# training) or invented from syllables (almost every one unique).  With
# min_freq=2 invented training names become <unk>, so the model learns to tag
# unknown words from their context; the held-out sets use fresh invented names
# that never occur in training.

FIRST = ["Anna", "Ben", "Clara", "David", "Elena", "Felix", "Grace", "Hugo", "Irene",
         "Jonas", "Karin", "Leo", "Maria", "Nico", "Olga", "Paul"]
LAST = ["Smith", "Meyer", "Garcia", "Rossi", "Novak", "Dubois", "Berg", "Silva"]
CITIES = ["Paris", "Berlin", "Madrid", "Lisbon", "Oslo", "Vienna", "Prague", "Dublin",
          "New York", "Buenos Aires", "San Diego", "Hong Kong"]
SYLLABLES = ["ka", "lo", "mi", "ren", "tas", "vo", "bel", "dor", "fin", "gu", "har", "ist",
             "jo", "ul", "pe", "sa", "tor", "ve", "wen", "zi", "an", "mar", "sel", "ko"]
TEMPLATES = [
    "{PER} lives in {LOC} .",
    "{PER} flew to {LOC} on Monday .",
    "yesterday {PER} met {PER} in {LOC} .",
    "the mayor of {LOC} , {PER} , resigned .",
    "{PER} was born in {LOC} and moved to {LOC} .",
    "we visited {LOC} with {PER} .",
    "{LOC} is far from {LOC} .",
    "{PER} said that {PER} works in {LOC} .",
    "a storm hit {LOC} last night .",
    "{PER} called me .",
    "the train from {LOC} to {LOC} was late .",
    "I saw {PER} at the market .",
]


def _invented(rng):
    return "".join(rng.choice(SYLLABLES, size=int(rng.integers(2, 4)))).capitalize()


def _person(rng, invent):
    first = _invented(rng) if invent else str(rng.choice(FIRST))
    last = _invented(rng) if invent else str(rng.choice(LAST))
    form = rng.integers(3)
    if form == 0:
        return [first], ["B-PER"]
    if form == 1:
        return [first, last], ["B-PER", "I-PER"]
    return ["Dr.", last], ["O", "B-PER"]          # titles are outside the entity


def _place(rng, invent):
    if not invent:
        words = str(rng.choice(CITIES)).split()
    elif rng.random() < 0.7:
        words = [_invented(rng)]
    else:
        words = ["New", _invented(rng)]
    return words, ["B-LOC"] + ["I-LOC"] * (len(words) - 1)


def make_ner(n, rng, invent_rate):
    """``n`` sentences (token lists) and their BIO tags; ``invent_rate`` = share
    of names invented rather than drawn from the fixed lists."""
    X, Y = [], []
    for _ in range(n):
        parts = [TEMPLATES[rng.integers(len(TEMPLATES))]]
        if rng.random() < 0.25:                    # some longer sentences
            parts = [parts[0][:-2], "; meanwhile", TEMPLATES[rng.integers(len(TEMPLATES))]]
        tokens, tags = [], []
        for word in " ".join(parts).split():
            if word in ("{PER}", "{LOC}"):
                make = _person if word == "{PER}" else _place
                words, labels = make(rng, rng.random() < invent_rate)
            else:
                words, labels = [word], ["O"]
            tokens += words
            tags += labels
        X.append(tokens)
        Y.append(tags)
    return X, Y


@pytest.fixture(scope="module")
def ner():
    rng = np.random.default_rng(20240605)
    train = make_ner(600, rng, invent_rate=0.5)
    unseen = make_ner(250, rng, invent_rate=1.0)
    known = make_ner(250, rng, invent_rate=0.0)
    tagger = SequenceTagger(hidden_size=32, embedding_dim=32, min_freq=2, seed=0)
    history = tagger.fit(*train, epochs=10, batch_size=32, lr=0.01, verbose=0,
                         validation_data=known).history_
    return tagger, history, train, unseen, known


# -- learning ------------------------------------------------------------------------------

def test_learns_ner_including_unseen_names(ner):
    tagger, history, train, unseen, known = ner
    vocab = tagger.inputs_.vocab
    unknown = sum(vocab[token] == UNK for sentence in unseen[0] for token in sentence)
    assert unknown > 200                  # the held-out names really are new words
    for X, Y in (unseen, known):
        scores = tagger.score(X, Y)
        assert scores["f1"] >= 0.95, scores
        assert scores["accuracy"] >= 0.98, scores
    loss = history.history["loss"]
    assert loss[-1] < 0.2 * loss[0]
    assert history.history["accuracy"][-1] > 0.98
    assert tagger.classes_ == ["B-LOC", "B-PER", "I-LOC", "I-PER", "O"]


def test_predictions_keep_lengths_and_order(ner):
    tagger, _, _, unseen, _ = ner
    X = unseen[0][:40]
    predicted = tagger.predict(X, batch_size=7)      # several batches, mixed lengths
    assert [len(p) for p in predicted] == [len(x) for x in X]
    assert all(tag in tagger.classes_ for tags in predicted for tag in tags)
    # Each sentence alone gives the same tags as in a padded batch.
    for sentence, tags in zip(X[:5], predicted[:5]):
        assert tagger.predict([sentence]) == [tags]


def test_predict_proba_matches_predict(ner):
    tagger, _, _, unseen, _ = ner
    X = unseen[0][:20]
    probabilities = tagger.predict_proba(X)
    predicted = tagger.predict(X)
    for p, tags, x in zip(probabilities, predicted, X):
        assert p.shape == (len(x), len(tagger.classes_))
        np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-6)
        assert [tagger.classes_[i] for i in p.argmax(axis=1)] == tags


def test_score_agrees_with_metrics(ner):
    tagger, _, _, unseen, _ = ner
    X, Y = unseen[0][:60], unseen[1][:60]
    predicted = tagger.predict(X)
    p, r, f1 = entity_scores(Y, predicted)
    assert tagger.score(X, Y) == pytest.approx(
        {"accuracy": token_accuracy(Y, predicted), "precision": p, "recall": r, "f1": f1})


def test_validation_metrics_are_per_real_token(ner):
    """The last epoch's val_loss / val_accuracy use the final weights, so they
    must equal the cross-entropy and accuracy recomputed from predict_proba over
    the real tokens only; counting padded steps would change both."""
    tagger, history, _, _, known = ner
    X, Y = known
    index = {tag: i for i, tag in enumerate(tagger.classes_)}
    probabilities = tagger.predict_proba(X)
    true = np.concatenate([[index[t] for t in tags] for tags in Y])
    stacked = np.concatenate(probabilities)
    loss = -np.mean(np.log(stacked[np.arange(len(true)), true]))
    accuracy = np.mean(stacked.argmax(axis=1) == true)
    assert history.history["val_loss"][-1] == pytest.approx(loss, rel=1e-4, abs=1e-6)
    assert history.history["val_accuracy"][-1] == pytest.approx(accuracy)


# -- saving ----------------------------------------------------------------------------------

def test_save_load_gives_identical_predictions(ner, tmp_path):
    tagger, _, _, unseen, _ = ner
    path = tmp_path / "tagger.npz"
    tagger.save(path)
    restored = load(path)
    assert type(restored) is SequenceTagger
    assert restored.get_params() == tagger.get_params()
    assert restored.classes_ == tagger.classes_
    X = unseen[0][:50]
    assert restored.predict(X) == tagger.predict(X)
    for a, b in zip(restored.predict_proba(X), tagger.predict_proba(X)):
        np.testing.assert_array_equal(a, b)


def test_texts_int_tags_and_reproducibility(tmp_path):
    # Texts are tokenized with the model's tokenizer; tags align with those tokens.
    texts = ["Anna lives in Paris .", "Ben met Clara in Oslo .", "it rained ."] * 10
    tags = [[1, 0, 0, 2, 0], [1, 0, 1, 0, 2, 0], [0, 0, 0]] * 10
    runs = []
    for _ in range(2):
        tagger = SequenceTagger(cell="gru", hidden_size=8, embedding_dim=8, seed=3)
        history = tagger.fit(texts, tags, epochs=3, batch_size=8, lr=0.05, verbose=0).history_
        runs.append((history.history["loss"], tagger.predict(texts[:3])))
    assert runs[0] == runs[1]                        # same seed, same run
    assert tagger.classes_ == [0, 1, 2]
    assert [len(t) for t in runs[0][1]] == [5, 6, 3]
    assert all(isinstance(tag, int) for sentence in runs[0][1] for tag in sentence)
    scores = tagger.score(texts, tags)                # int tags: runs of equal tags
    assert set(scores) == {"accuracy", "precision", "recall", "f1"}
    tagger.save(tmp_path / "ints.npz")
    assert load(tmp_path / "ints.npz").predict(texts[:3]) == runs[0][1]


def test_numeric_sequences_deep_gru_with_dropout():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((200, 12, 1))
    y = [["up" if v > 0 else "down" for v in row[:, 0]] for row in X]
    tagger = SequenceTagger(cell="gru", hidden_size=16, num_layers=2, dropout=0.1, seed=1)
    history = tagger.fit(X, y, epochs=4, batch_size=20, lr=0.02, verbose=0,
                         validation_split=0.2).history_
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(history.history)
    assert history.history["val_accuracy"][-1] > 0.9
    assert tagger.predict(X[:3]) == tagger.predict(X[:3])   # eval mode: no dropout


def test_params_and_repr():
    tagger = SequenceTagger(hidden_size=8, cell="gru")
    assert tagger.get_params()["bidirectional"] is True
    assert tagger.get_params()["lower"] is False
    assert repr(tagger) == "SequenceTagger(cell='gru', hidden_size=8)"
    tagger.set_params(hidden_size=4)
    assert tagger.hidden_size == 4


# -- bad input -------------------------------------------------------------------------------

X_SMALL = [["Anna", "lives", "here"], ["Ben", "left"]]
Y_SMALL = [["B-PER", "O", "O"], ["B-PER", "O"]]


def _small():
    return SequenceTagger(hidden_size=4, embedding_dim=4, seed=0)


def test_tag_and_token_counts_must_match():
    with pytest.raises(ValueError, match=r"y\[1\] has 3 tags but sentence 1 has 2 tokens: "
                                         r"tags must align one per token"):
        _small().fit(X_SMALL, [["B-PER", "O", "O"], ["B-PER", "O", "O"]], verbose=0)
    with pytest.raises(ValueError, match=r"y\[0\] has 2 tags but sentence 0 has 4 tokens "
                                         r"\(after tokenization\)"):
        _small().fit(["Jean-Paul left", "Ben left"], [["B-PER", "O"], ["B-PER", "O"]],
                     verbose=0)


def test_sentence_counts_must_match():
    with pytest.raises(ValueError, match="y must hold one tag list per sentence: 2 "
                                         "sentences but 1 tag lists"):
        _small().fit(X_SMALL, Y_SMALL[:1], verbose=0)
    with pytest.raises(ValueError, match=r"validation_data\[1\] must hold one tag list per "
                                         r"sentence: 2 sentences but 1"):
        _small().fit(X_SMALL, Y_SMALL, epochs=1, verbose=0,
                     validation_data=(X_SMALL, Y_SMALL[:1]))


def test_empty_sentences_are_refused():
    with pytest.raises(ValueError, match=r"X\[1\] is an empty sentence"):
        _small().fit([["Anna"], []], [["B-PER"], []], verbose=0)
    with pytest.raises(ValueError, match=r"X\[1\] is an empty sentence"):
        _small().fit(["Anna left", ""], [["B-PER", "O"], []], verbose=0)
    with pytest.raises(ValueError, match=r"X\[1\] is empty \(no tokens\)"):
        _small().fit(["Anna left", "   "], [["B-PER", "O"], []], verbose=0)
    tagger = _small()
    tagger.fit(X_SMALL, Y_SMALL, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"X\[0\] is an empty sentence"):
        tagger.predict([[]])


def test_predict_before_fit():
    tagger = _small()
    for call in (lambda: tagger.predict(X_SMALL), lambda: tagger.predict_proba(X_SMALL),
                 lambda: tagger.score(X_SMALL, Y_SMALL), lambda: tagger.save("never.npz")):
        with pytest.raises(NotFittedError, match="SequenceTagger is not fitted yet"):
            call()


def test_bad_tags():
    with pytest.raises(TypeError, match="y must be a list of tag lists"):
        _small().fit(X_SMALL, "B-PER O O", verbose=0)
    with pytest.raises(TypeError, match=r"y\[0\] must be a list of tags, got a single str"):
        _small().fit(X_SMALL, ["B-PER O O", ["B-PER", "O"]], verbose=0)
    with pytest.raises(ValueError, match="y must contain at least 2 distinct tags, got "
                                         r"\['O'\]"):
        _small().fit(X_SMALL, [["O", "O", "O"], ["O", "O"]], verbose=0)
    with pytest.raises(TypeError, match=r"y\[1\]\[0\] = \['B'\] is not hashable"):
        _small().fit(X_SMALL, [["B-PER", "O", "O"], [["B"], "O"]], verbose=0)
    with pytest.raises(ValueError, match=r"validation_data\[1\]\[1\]\[1\] = 'B-LOC' is not "
                                         r"one of the tags seen in fit"):
        _small().fit(X_SMALL, Y_SMALL, epochs=1, verbose=0,
                     validation_data=(X_SMALL, [Y_SMALL[0], ["B-PER", "B-LOC"]]))


def test_bad_calls_after_fit(tmp_path):
    tagger = _small()
    tagger.fit(X_SMALL, Y_SMALL, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"y\[0\] has 2 tags but sentence 0 has 3 tokens"):
        tagger.score(X_SMALL, [["O", "O"], ["O", "O"]])
    with pytest.raises(ValueError, match="y must hold one tag list per sentence: 2"):
        tagger.score(X_SMALL, Y_SMALL[:1])
    with pytest.raises(TypeError, match="X holds numeric inputs but the model was fitted "
                                        "on tokens inputs"):
        tagger.predict(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
        tagger.predict(X_SMALL, batch_size=0)
    tuples = _small()
    tuples.fit(X_SMALL, [[("P",), "O", "O"], [("P",), "O"]], epochs=1, verbose=0)
    with pytest.raises(TypeError, match=r"cannot save tags of type tuple \(\('P',\)\); saved "
                                        r"models need str, int, float or bool tags"):
        tuples.save(tmp_path / "tuples.npz")


def test_bad_constructor_arguments_surface_at_fit():
    with pytest.raises(ValueError,
                       match="cell must be one of 'rnn', 'lstm', 'gru', 'jordan', got 'tcn'"):
        SequenceTagger(cell="tcn").fit(X_SMALL, Y_SMALL, verbose=0)
    with pytest.raises(ValueError, match="epochs must be an int >= 1, got 0"):
        _small().fit(X_SMALL, Y_SMALL, epochs=0, verbose=0)


def test_tag_containers_and_score_batch_size():
    # A dict iterates over its keys: the "tags" would have been its key strings.
    with pytest.raises(TypeError, match="y must be a list of tag lists .one per sentence., "
                                        "got dict"):
        _small().fit(X_SMALL, {"Anna": "B-PER"}, verbose=0)
    tagger = _small()
    tagger.fit(X_SMALL, [np.array(tags) for tags in Y_SMALL], epochs=1, verbose=0)
    assert tagger.classes_ == ["B-PER", "O"]
    assert tagger.score(X_SMALL, Y_SMALL, batch_size=1) == tagger.score(X_SMALL, Y_SMALL)
    # A tag never seen in fit is a wrong prediction, not an error (as in classifier.score).
    scores = tagger.score([["Anna"]], [["B-LOC"]])
    assert scores["accuracy"] == 0.0 and scores["recall"] == 0.0
