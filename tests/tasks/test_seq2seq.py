"""Seq2Seq: learns to reverse strings and to translate words, maps vectors to
sequences, beam search finds the exhaustive best, beam_size=1 is greedy, the
gradient reaches the encoder through the decoder's initial state, scheduled
sampling mixes in the model's predictions, save/load round-trips, and bad
input is refused."""

import itertools

import numpy as np
import pytest

from fastrnn.data import BatchLoader
from fastrnn.tasks import NotFittedError, load
from fastrnn.tasks.base import eval_mode
from fastrnn.tasks.seq2seq import BANNED, IGNORE, Seq2Seq, _TargetTable
from fastrnn.text import BOS, EOS, PAD

LETTERS = "abcdef"


def random_strings(rng, n, letters=LETTERS, low=3, high=6):
    return ["".join(rng.choice(list(letters), size=int(rng.integers(low, high + 1))))
            for _ in range(n)]


def held_out(rng, n, seen, **options):
    return [s for s in random_strings(rng, 3 * n, **options) if s not in seen][:n]


def reverse(strings):
    return [s[::-1] for s in strings]


@pytest.fixture(scope="module")
def reverser():
    """A char-level model trained to reverse strings of 3-6 letters over 6 letters,
    with held-out strings it never saw."""
    rng = np.random.default_rng(0)
    train = random_strings(rng, 2000)
    test = held_out(rng, 200, set(train))
    model = Seq2Seq(hidden_size=64, embedding_dim=16, seed=0)
    model.fit(train, reverse(train), epochs=15, verbose=0, lr=0.01)
    return model, test


# -- learning ----------------------------------------------------------------------------

def test_learns_to_reverse_strings(reverser):
    model, test = reverser
    history = model.history_.history
    assert history["accuracy"][-1] > 0.97 and history["loss"][-1] < history["loss"][0] / 5
    predicted = model.predict(test)
    assert all(isinstance(p, str) for p in predicted)
    exact = np.mean([p == t for p, t in zip(predicted, reverse(test))])
    assert exact >= 0.9, exact
    scores = model.score(test, reverse(test))
    assert scores["exact_match"] == pytest.approx(exact)
    assert scores["exact_match"] <= scores["token_accuracy"] <= 1.0


def test_beam_search_is_at_least_as_good_as_greedy(reverser):
    model, test = reverser
    greedy = model.score(test, reverse(test))["exact_match"]
    beam = model.score(test, reverse(test), beam_size=3)["exact_match"]
    assert beam >= greedy >= 0.9


def test_teacher_forcing_half_still_learns():
    rng = np.random.default_rng(1)
    train = random_strings(rng, 1500)
    test = held_out(rng, 150, set(train))
    model = Seq2Seq(hidden_size=64, embedding_dim=16, seed=1)
    history = model.fit(train, reverse(train), epochs=12, teacher_forcing=0.5, verbose=0,
                        lr=0.01).history_.history
    assert history["accuracy"][-1] > 0.95
    assert model.score(test, reverse(test))["exact_match"] >= 0.8
    # Seeded: the same run again gives the same losses; full teacher forcing differs.
    def first_epoch(teacher_forcing):
        return Seq2Seq(hidden_size=64, embedding_dim=16, seed=1).fit(
            train[:300], reverse(train[:300]), epochs=1, teacher_forcing=teacher_forcing,
            verbose=0).history_.history["loss"]
    assert first_epoch(0.5) == first_epoch(0.5) != first_epoch(1.0)


COLOURS = {"red": "rouge", "blue": "bleu", "green": "vert", "black": "noir",
           "white": "blanc", "grey": "gris", "pink": "rose", "brown": "brun"}


def translate(sentence):
    """Word-level 'translation' with reordering: map each word, reverse the order."""
    return " ".join(COLOURS[w] for w in reversed(sentence.split()))


def test_word_level_mapping_with_validation():
    rng = np.random.default_rng(2)
    words = list(COLOURS)
    sentences = [" ".join(rng.choice(words, size=int(rng.integers(2, 5))))
                 for _ in range(1500)]
    train, val = sentences[:1300], sentences[1300:]
    test = [s for s in (" ".join(rng.choice(words, size=int(rng.integers(2, 5))))
                        for _ in range(400)) if s not in set(sentences)][:150]
    model = Seq2Seq(hidden_size=64, embedding_dim=16, tokenizer="word", seed=2)
    history = model.fit(train, [translate(s) for s in train], epochs=12, verbose=0, lr=0.01,
                        validation_data=(val, [translate(s) for s in val])).history_.history
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(history)
    assert history["val_accuracy"][-1] > 0.95
    # Word vocabularies are separate: no French word on the source side and back.
    assert "rouge" not in model.inputs_.vocab and "red" not in model.outputs_.vocab
    predicted = model.predict(test, beam_size=2)
    assert np.mean([p == translate(s) for p, s in zip(predicted, test)]) >= 0.9
    assert model.score(test, [translate(s) for s in test])["exact_match"] >= 0.9


def test_validation_split_reports_validation_metrics():
    rng = np.random.default_rng(3)
    train = random_strings(rng, 200)
    history = Seq2Seq(hidden_size=16, embedding_dim=8, seed=3).fit(
        train, reverse(train), epochs=2, validation_split=0.25, verbose=0).history_.history
    assert len(history["val_loss"]) == 2 and np.isfinite(history["val_loss"]).all()


# -- numeric sources: one-to-many ------------------------------------------------------

CAPTIONS = [["a", "red", "car"], ["the", "blue", "sky", "today"], ["green"],
            ["a", "red", "sky"]]


def noisy_vectors(rng, classes):
    x = 0.15 * rng.standard_normal((len(classes), 6))
    x[np.arange(len(classes)), classes] += 1.0
    return x


def test_numeric_vectors_map_to_sequences():
    rng = np.random.default_rng(4)
    classes = rng.integers(0, 4, size=300)
    model = Seq2Seq(hidden_size=32, embedding_dim=8, seed=4)
    model.fit(noisy_vectors(rng, classes), [CAPTIONS[c] for c in classes], epochs=15,
              verbose=0, lr=0.01)
    assert model.inputs_.num_features == 6
    new = rng.integers(0, 4, size=60)
    predicted = model.predict(noisy_vectors(rng, new))
    assert all(isinstance(p, list) for p in predicted)          # token-list targets
    assert np.mean([p == CAPTIONS[c] for p, c in zip(predicted, new)]) >= 0.95
    # A list of (F,) vectors is read the same way as the (N, F) array.
    vectors = noisy_vectors(rng, new[:5])
    assert model.predict(list(vectors)) == model.predict(vectors)
    with pytest.raises(ValueError, match="5 features per step; the model expects 6"):
        model.predict(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="shape \\(N, F\\).*or \\(N, T, F\\)"):
        model.predict(np.zeros(6))


def test_numeric_sequence_sources():
    rng = np.random.default_rng(5)

    def make(n):
        classes = rng.integers(0, 4, size=n)
        x = 0.1 * rng.standard_normal((n, 3, 2))
        x[:, 1, 0] += np.where(classes // 2, 1.0, -1.0)
        x[:, 1, 1] += np.where(classes % 2, 1.0, -1.0)
        return x, classes

    x, classes = make(400)
    model = Seq2Seq(hidden_size=32, embedding_dim=8, seed=5)
    model.fit(x, [" ".join(CAPTIONS[c]) for c in classes], epochs=20, verbose=0, lr=0.01)
    x_new, new = make(60)
    predicted = model.predict(x_new)
    assert np.mean([p == " ".join(CAPTIONS[c]) for p, c in zip(predicted, new)]) >= 0.95


# -- decoding ----------------------------------------------------------------------------

def encoder_states(model, sources):
    ids = model.inputs_.transform(model._sources(sources))
    batch = next(iter(BatchLoader(ids, batch_size=len(ids), shuffle=False)))
    with eval_mode(model.modules()):
        return model._encode_batch(batch), batch


def test_beam_size_one_is_greedy_exactly():
    # A half-trained model: outputs of many lengths, some cut at max_length.
    rng = np.random.default_rng(6)
    train = random_strings(rng, 400)
    model = Seq2Seq(hidden_size=24, embedding_dim=8, seed=6)
    model.fit(train, reverse(train), epochs=2, verbose=0, lr=0.01)
    sources = random_strings(rng, 50)
    state, batch = encoder_states(model, sources)
    with eval_mode(model.modules()):
        for max_length in (3, 8):
            greedy = model._greedy(state, len(sources), max_length)
            beam = model._beam_search(state, len(sources), max_length, 1)
            assert [g.tolist() for g in greedy] == [b.tolist() for b in beam]
    lengths = {len(g) for g in greedy}
    assert len(lengths) > 1


def reference_log_probs(model, state, sequences):
    """Teacher-forced log-probabilities of candidate outputs for one source
    (a full-sequence decoder pass, numpy log-softmax): per candidate the sum
    over its tokens, and that sum plus the final <eos>."""
    n = len(sequences)
    inputs = np.full((max(len(s) for s in sequences) + 1, n), PAD, dtype=np.int64)
    inputs[0] = BOS
    for column, s in enumerate(sequences):
        inputs[1:len(s) + 1, column] = s
    hx = tuple(np.repeat(part, n, axis=1) for part in state) \
        if isinstance(state, tuple) else np.repeat(state, n, axis=1)
    with eval_mode(model.modules()):
        z = model._decode(inputs, np.array([len(s) + 1 for s in sequences]), hx)
    z = z.astype(np.float64)
    z[..., list(BANNED)] = -np.inf
    z = z - z.max(axis=2, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=2, keepdims=True))
    tokens, with_eos = np.empty(n), np.empty(n)
    for column, s in enumerate(sequences):
        tokens[column] = sum(logp[t, column, token] for t, token in enumerate(s))
        with_eos[column] = tokens[column] + logp[len(s), column, EOS]
    return tokens, with_eos


@pytest.mark.parametrize("cell, max_length, epochs", [("lstm", 3, 1), ("gru", 3, 1),
                                                      ("lstm", 2, 3)])
def test_wide_beam_finds_the_exhaustive_best(cell, max_length, epochs):
    """With a beam wider than the number of hypotheses, beam search must return
    the output with the best length-normalised score among all outputs of at
    most max_length tokens, each scored independently by a teacher-forced pass:
    sum(log p) / (n + 1) with <eos>, sum(log p) / max_length when cut."""
    rng = np.random.default_rng(7)
    train = random_strings(rng, 300, letters="abc", low=1, high=3)
    model = Seq2Seq(cell=cell, hidden_size=16, embedding_dim=8, dtype="float64", seed=7)
    model.fit(train, reverse(train), epochs=epochs, verbose=0, lr=0.005 * epochs)
    allowed = [i for i in range(len(model.outputs_.vocab)) if i not in BANNED and i != EOS]
    finished = [list(s) for n in range(max_length) for s in itertools.product(allowed, repeat=n)]
    cut = [list(s) for s in itertools.product(allowed, repeat=max_length)]
    sources = random_strings(rng, 8, letters="abc", low=1, high=3)
    state, _ = encoder_states(model, sources)
    with eval_mode(model.modules()):
        beam = model._beam_search(state, len(sources), max_length, beam_size=200)
        greedy = model._greedy(state, len(sources), max_length)
    improved = cut_wins = 0
    for b in range(len(sources)):
        row = tuple(part[:, b:b + 1] for part in state) if isinstance(state, tuple) \
            else state[:, b:b + 1]
        _, with_eos = reference_log_probs(model, row, finished)
        cut_sums, _ = reference_log_probs(model, row, cut)
        candidates = [(total / (len(s) + 1), s) for total, s in zip(with_eos, finished)] + \
            [(total / max_length, s) for total, s in zip(cut_sums, cut)]
        scores = sorted((score for score, _ in candidates), reverse=True)
        assert scores[0] - scores[1] > 1e-9          # a unique best: the test is sharp
        best_score, best = max(candidates, key=lambda item: item[0])
        assert beam[b].tolist() == best, (b, beam[b], best, best_score)
        improved += greedy[b].tolist() != best
        cut_wins += len(best) == max_length
    if epochs == 1:     # a weak model: the search finds outputs greedy decoding misses
        assert improved >= 1
    else:               # a trained one wants 3 letters: the cut outputs' rule matters
        assert cut_wins >= 1


@pytest.mark.parametrize("max_length", [1, 2])
def test_max_length_cuts_outputs(reverser, max_length):
    model, test = reverser
    for beam_size in (1, 3):
        outputs = model.predict(test[:20], max_length=max_length, beam_size=beam_size)
        assert all(len(o) <= max_length for o in outputs)
        assert np.mean([o == t[::-1][:max_length] for o, t in zip(outputs, test[:20])]) >= 0.9


def test_deeper_models_with_dropout_train_and_predict_deterministically():
    rng = np.random.default_rng(13)
    train = random_strings(rng, 200)
    for cell in ("rnn", "gru", "lstm"):
        model = Seq2Seq(cell=cell, hidden_size=16, embedding_dim=8, num_layers=2,
                        dropout=0.2, seed=13)
        history = model.fit(train, reverse(train), epochs=2, teacher_forcing=0.7,
                            verbose=0).history_.history
        assert history["loss"][1] < history["loss"][0]
        assert model.predict(train[:10], beam_size=2) == model.predict(train[:10], beam_size=2)
        assert model.encode(train[:10]).shape == (10, 16)


# -- training internals ------------------------------------------------------------------

def test_target_table_builds_decoder_inputs_and_targets():
    sequences = [np.array([5, 6, 7]), np.array([8]), np.array([9, 10])]
    inputs, targets, lengths = _TargetTable(sequences).batch(np.array([2, 0, 1]))
    assert lengths.tolist() == [3, 4, 2]
    assert inputs.T.tolist() == [[BOS, 9, 10, PAD], [BOS, 5, 6, 7], [BOS, 8, PAD, PAD]]
    assert targets.T.tolist() == [[9, 10, EOS, IGNORE], [5, 6, 7, EOS],
                                  [8, EOS, IGNORE, IGNORE]]


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_gradients_reach_the_encoder_through_the_initial_state(cell):
    """Analytic gradients of the per-token loss against central differences (float64),
    for parameters of the encoder (reached only through d_hx), decoder and head."""
    rng = np.random.default_rng(8)
    sources = random_strings(rng, 6, low=2, high=4)
    targets = random_strings(rng, 6, low=1, high=4)
    model = Seq2Seq(cell=cell, hidden_size=5, embedding_dim=3, num_layers=2,
                    dtype="float64", seed=8)
    model.fit(sources, targets, epochs=1, verbose=0, lr=1e-4)
    model._table = _TargetTable(model.outputs_.transform(targets))
    ids = model.inputs_.transform(sources)
    batch = next(iter(BatchLoader(ids, np.arange(len(ids)), batch_size=6, shuffle=False)))
    model._set_mode(True)
    for module in model.modules():
        module.zero_grad()
    model.train_batch(batch)
    model._set_mode(False)
    checked = 0
    for module in model.modules():
        for name, param in module.named_parameters():
            grad = module.grads[name]
            for flat in rng.choice(param.size, size=min(4, param.size), replace=False):
                index = np.unravel_index(flat, param.shape)
                saved = param[index]
                param[index] = saved + 1e-6
                up = model._step(batch, training=False)[0]["loss"]
                param[index] = saved - 1e-6
                down = model._step(batch, training=False)[0]["loss"]
                param[index] = saved
                assert grad[index] == pytest.approx((up - down) / 2e-6, rel=1e-4, abs=1e-8), \
                    (type(module).__name__, name, index)
                checked += 1
    encoder_grads = [g for m in model.encoder_.modules() for g in m.grads.values()]
    assert all(np.abs(g).max() > 0 for g in encoder_grads)
    assert checked > 20


def test_scheduled_sampling_mixes_in_the_model_predictions():
    rng = np.random.default_rng(9)
    train = random_strings(rng, 200)
    model = Seq2Seq(hidden_size=16, embedding_dim=8, seed=9)
    model.fit(train, reverse(train), epochs=1, verbose=0, lr=1e-3)
    model._table = _TargetTable(model.outputs_.transform(reverse(train)))
    ids = model.inputs_.transform(train)
    batch = next(iter(BatchLoader(ids, np.arange(len(ids)), batch_size=200, shuffle=False)))
    decoder_inputs, _, lengths = model._table.batch(batch.targets)
    model._set_mode(True)
    state = model._encode_batch(batch)
    with eval_mode(model.modules()):
        z = model._decode(decoder_inputs, lengths, state)
    z[..., list(BANNED)] = -np.inf
    predicted = z.argmax(axis=2)
    valid = np.arange(1, len(decoder_inputs))[:, None] < lengths[None, :]
    model._teacher_forcing = 1.0
    assert np.array_equal(model._scheduled_inputs(decoder_inputs, lengths, state, batch.targets),
                          decoder_inputs)
    model._teacher_forcing = 0.0
    mixed = model._scheduled_inputs(decoder_inputs, lengths, state, batch.targets)
    assert (mixed[0] == BOS).all()
    assert np.array_equal(mixed[1:][valid], predicted[:-1][valid])
    assert np.array_equal(mixed[1:][~valid], decoder_inputs[1:][~valid])   # padding kept
    model._teacher_forcing = 0.5
    mixed = model._scheduled_inputs(decoder_inputs, lengths, state, batch.targets)
    differs = valid & (predicted[:-1] != decoder_inputs[1:])
    taken = mixed[1:] == predicted[:-1]
    assert np.array_equal(mixed[1:][~(valid & taken)], decoder_inputs[1:][~(valid & taken)])
    assert 0.4 < taken[differs].mean() < 0.6, taken[differs].mean()
    # The decoder is back in training mode and its forward still trains.
    assert all(module.training for module in model.decoder_.modules())


# -- encode: the sequence autoencoder ---------------------------------------------------

def test_encode_autoencoder_places_similar_sources_nearer():
    rng = np.random.default_rng(10)
    train = random_strings(rng, 1000, low=4, high=6)
    model = Seq2Seq(cell="gru", hidden_size=32, embedding_dim=8, seed=10)
    model.fit(train, train, epochs=8, verbose=0, lr=0.01)
    base = random_strings(rng, 100, low=4, high=6)
    edited = []
    for s in base:                       # change the last letter: a near neighbour
        other = [c for c in LETTERS if c != s[-1]]
        edited.append(s[:-1] + str(rng.choice(other)))
    strangers = random_strings(rng, 100, low=4, high=6)
    vectors = model.encode(base + edited + strangers, batch_size=64)
    assert vectors.shape == (300, 32) and vectors.dtype == np.float32
    near = np.linalg.norm(vectors[:100] - vectors[100:200], axis=1).mean()
    far = np.linalg.norm(vectors[:100] - vectors[200:], axis=1).mean()
    assert near < 0.8 * far, (near, far)
    # Batching does not change the vectors.
    np.testing.assert_allclose(model.encode(base[:7], batch_size=3), vectors[:7],
                               rtol=1e-5, atol=1e-6)


# -- saving ------------------------------------------------------------------------------

def test_save_load_gives_identical_predictions(reverser, tmp_path):
    model, test = reverser
    path = tmp_path / "s2s.npz"
    model.save(path)
    loaded = load(path)
    assert isinstance(loaded, Seq2Seq) and loaded.get_params() == model.get_params()
    assert loaded.predict(test) == model.predict(test)
    assert loaded.predict(test[:30], beam_size=3) == model.predict(test[:30], beam_size=3)
    np.testing.assert_array_equal(loaded.encode(test), model.encode(test))


def test_save_load_numeric_token_model(tmp_path):
    rng = np.random.default_rng(11)
    classes = rng.integers(0, 4, size=80)
    model = Seq2Seq(hidden_size=8, embedding_dim=4, input="onehot", seed=11)
    model.fit(noisy_vectors(rng, classes), [CAPTIONS[c] for c in classes], epochs=2,
              verbose=0)
    model.save(tmp_path / "m.npz")
    loaded = load(tmp_path / "m.npz")
    x = noisy_vectors(rng, classes[:10])
    assert loaded.predict(x, beam_size=2) == model.predict(x, beam_size=2)


# -- bad input ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny():
    model = Seq2Seq(hidden_size=8, embedding_dim=4, seed=12)
    model.fit(["abc", "bca", "cab"], ["cba", "acb", "bac"], epochs=1, verbose=0)
    return model


def test_bad_input():
    model = Seq2Seq(hidden_size=8, embedding_dim=4, seed=0)
    with pytest.raises(ValueError, match="same length: 3 sources but 2 targets"):
        model.fit(["ab", "cd", "ef"], ["ba", "dc"], verbose=0)
    with pytest.raises(ValueError, match=r"sources\[1\] is an empty source"):
        model.fit(["ab", "", "ef"], ["ba", "x", "fe"], verbose=0)
    with pytest.raises(ValueError, match=r"targets\[2\] is an empty target"):
        model.fit(["ab", "cd", "ef"], ["ba", "dc", ""], verbose=0)
    with pytest.raises(ValueError, match=r"targets\[0\] is an empty target"):
        model.fit([["a"], ["b"]], [[], ["b"]], verbose=0)
    with pytest.raises(ValueError, match=r"targets\[1\] is empty \(no tokens\)"):
        Seq2Seq(tokenizer="word").fit(["ab", "cd"], ["x", "  "], verbose=0)
    for bad in (-0.1, 1.5, float("nan"), True, "0.5"):
        with pytest.raises(ValueError, match="teacher_forcing must be a number in \\[0, 1\\]"):
            model.fit(["ab"], ["ba"], teacher_forcing=bad, verbose=0)
    with pytest.raises(TypeError, match="targets must be texts or token lists"):
        model.fit(["ab", "cd"], np.zeros((2, 3)), verbose=0)
    with pytest.raises(ValueError, match="input must be one of 'embedding', 'onehot'"):
        Seq2Seq(input="numeric").fit(["ab"], ["ba"], verbose=0)
    with pytest.raises(ValueError, match="epochs must be an int >= 1"):
        model.fit(["ab"], ["ba"], epochs=0, verbose=0)
    with pytest.raises(ValueError, match="the vocabulary of sources has no tokens besides "
                                         "the specials: min_freq=5 / max_vocab=None"):
        Seq2Seq(min_freq=5).fit(["ab"], ["ba"], verbose=0)
    with pytest.raises(ValueError, match="the vocabulary of targets has no tokens besides "
                                         "the specials: min_freq=2"):
        Seq2Seq(min_freq=2).fit(["ab", "ab"], ["ba", "cd"], verbose=0)
    with pytest.raises(ValueError, match=r"validation_data\[0\] and validation_data\[1\] "
                                         r"must have the same length"):
        model.fit(["ab"], ["ba"], validation_data=(["ab", "ba"], ["ba"]), verbose=0)


def test_not_fitted():
    model = Seq2Seq()
    for call in (lambda: model.predict(["ab"]), lambda: model.encode(["ab"]),
                 lambda: model.score(["ab"], ["ba"]), lambda: model.save("x.npz")):
        with pytest.raises(NotFittedError, match="not fitted yet"):
            call()


def test_bad_prediction_arguments(tiny):
    with pytest.raises(ValueError, match="max_length must be an int >= 1, got 0"):
        tiny.predict(["abc"], max_length=0)
    with pytest.raises(ValueError, match="beam_size must be an int >= 1, got 0"):
        tiny.predict(["abc"], beam_size=0)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        tiny.encode(["abc"], batch_size=0)
    with pytest.raises(ValueError, match=r"sources\[0\] is an empty source"):
        tiny.predict([""])
    with pytest.raises(TypeError, match="numeric inputs but the model was fitted on text"):
        tiny.predict(np.zeros((2, 3)))
    with pytest.raises(TypeError, match="single string"):
        tiny.predict("abc")
    with pytest.raises(ValueError, match="same length: 2 sources but 1 targets"):
        tiny.score(["abc", "bca"], ["cba"])
    # Token lists against a model of text targets: named, not the tokenizer's "text must
    # be a str" from deep inside.
    with pytest.raises(TypeError, match="targets holds tokens but the model was fitted on "
                                        "text targets"):
        tiny.score(["abc"], [["c", "b", "a"]])
    # Characters never seen in training are <unk> on the way in, not an error.
    assert len(tiny.predict(["xyz"])) == 1


def test_generators_and_tuples_are_accepted(tiny):
    sources = ("abc", "cab")
    assert tiny.predict(s for s in sources) == tiny.predict(list(sources))
    score = tiny.score(iter(sources), (t for t in ("cba", "bac")))
    assert set(score) == {"exact_match", "token_accuracy"}
