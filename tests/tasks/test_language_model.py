"""LanguageModel: learning, truncated BPTT, generation, saving, bad input.

References: the corpus's unigram entropy (computed here), PyTorch for the
loss over a stream and the gradients of one truncated-BPTT chunk, and the
sampling distributions written out in numpy.
"""

import math
import warnings
from collections import Counter

import numpy as np
import pytest

from fastrnn.data import StreamBatcher
from fastrnn.tasks import NotFittedError, load
from fastrnn.tasks.base import make_optimizer
from fastrnn.tasks.language_model import LanguageModel, _sample
from fastrnn.text import BOS, PAD, UNK
from fastrnn.training import Trainer
from task_data import SaveAt

SUBJECTS = ["the cat", "a dog", "my friend", "the old man", "some birds"]
VERBS = ["sees", "likes", "follows", "paints", "hears"]
OBJECTS = ["the river.", "a red house.", "the moon.", "two small boats.", "her garden."]
COUNT = "one two three four five six seven"


def sentences(seed, n):
    """Random sentences of a tiny grammar: about 7 bits of choice per ~30 chars."""
    rng = np.random.default_rng(seed)
    return " ".join(f"{SUBJECTS[a]} {VERBS[b]} {OBJECTS[c]}"
                    for a, b, c in rng.integers(0, 5, (n, 3)))


def unigram_bits(text):
    counts = np.array(list(Counter(text).values()), dtype=np.float64)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


@pytest.fixture(scope="module")
def char_lm():
    lm = LanguageModel(level="char", hidden_size=48, input="onehot", seed=0)
    lm.fit(sentences(0, 150), epochs=10, batch_size=16, bptt=32, lr=0.02, verbose=0,
           validation_data=sentences(2, 20))
    return lm


@pytest.fixture(scope="module")
def word_lm():
    """Separate texts that all count from one to seven."""
    lm = LanguageModel(level="word", hidden_size=32, embedding_dim=16, seed=0)
    lm.fit([COUNT] * 60, epochs=15, batch_size=8, bptt=16, lr=0.02, verbose=0)
    return lm


# -- learning ---------------------------------------------------------------------------

def test_char_lm_beats_unigram_entropy_on_held_out_text(char_lm):
    held_out = sentences(1, 30)
    unigram = unigram_bits(sentences(0, 150))
    result = char_lm.evaluate(held_out)
    assert set(result) == {"loss", "perplexity", "bits_per_char"}
    assert result["bits_per_char"] < 0.4 * unigram, (result, unigram)
    assert result["bits_per_char"] == pytest.approx(result["loss"] / math.log(2))
    assert result["perplexity"] == pytest.approx(math.exp(result["loss"]))


def test_epoch_metrics_are_derived_from_the_mean_loss(char_lm):
    history = char_lm.history_.history
    for prefix in ("", "val_"):
        loss = np.array(history[prefix + "loss"])
        np.testing.assert_allclose(history[prefix + "perplexity"], np.exp(loss), rtol=1e-9)
        np.testing.assert_allclose(history[prefix + "bits_per_char"], loss / math.log(2),
                                   rtol=1e-12)
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert history["val_loss"][-1] < 0.5 * history["val_loss"][0]


def test_word_lm_learns_a_deterministic_sequence(word_lm):
    assert "bits_per_char" not in word_lm.evaluate([COUNT] * 3)
    assert word_lm.evaluate([COUNT] * 3)["perplexity"] < 1.2
    # greedy continuation of a prompt, and a whole text from <eos> that stops at <eos>
    assert word_lm.generate("one two", length=5, temperature=0) == COUNT
    assert word_lm.generate("", length=20, temperature=0, stop_at_eos=True) == COUNT
    # without stop_at_eos exactly `length` words come out, never <eos>
    assert len(word_lm.generate("one", length=12, seed=0).split()) == 13


def test_greedy_char_generation_reproduces_a_memorised_text():
    line = "the quick brown fox jumps over the lazy dog. "
    lm = LanguageModel(level="char", hidden_size=48, input="onehot", seed=1)
    lm.fit(line * 40, epochs=12, batch_size=8, bptt=32, lr=0.02, verbose=0)
    generated = lm.generate("the quick", length=2 * len(line), temperature=0)
    assert generated == "the quick" + (line * 3)[len("the quick"):][:2 * len(line)]


# -- generation -------------------------------------------------------------------------

def test_generation_is_reproducible_with_a_seed_and_varies_across_seeds(char_lm):
    first = char_lm.generate("the ", length=150, seed=7)
    assert first == char_lm.generate("the ", length=150, seed=7)
    assert first.startswith("the ") and len(first) == 154
    others = {char_lm.generate("the ", length=150, seed=s) for s in range(8, 12)}
    assert first not in others and len(others) > 1
    assert char_lm.generate("", length=0) == ""
    assert char_lm.generate("abc", length=0) == "abc"


def test_top_k_1_and_a_tiny_nucleus_are_greedy(char_lm):
    greedy = char_lm.generate("a dog ", length=80, temperature=0)
    for seed in (0, 1):
        assert char_lm.generate("a dog ", length=80, top_k=1, temperature=1.7,
                                seed=seed) == greedy
        assert char_lm.generate("a dog ", length=80, top_p=1e-9, seed=seed) == greedy
    # high temperature sampling really samples
    assert char_lm.generate("a dog ", length=80, temperature=1.5, seed=0) != greedy


def test_generated_text_only_uses_vocabulary_characters(char_lm):
    text = char_lm.generate("", length=300, temperature=2.0, seed=3)
    assert set(text) <= set(sentences(0, 150))


def test_sampling_distribution_with_top_k_and_top_p(rng):
    logits = np.array([5.0, 5.0, 5.0, 0.0, 1.0, 2.0, 0.5, 1.5])
    banned = np.zeros(8, dtype=bool)
    banned[[PAD, UNK, BOS]] = True       # the three 5.0s must never come out
    draws = 20000

    def frequencies(**options):
        generator = np.random.default_rng(0)
        ids = [_sample(logits, banned, rng=generator, **options) for _ in range(draws)]
        return np.bincount(ids, minlength=8) / draws

    def expected(keep, temperature):
        p = np.zeros(8)
        p[keep] = np.exp(logits[keep] / temperature)
        return p / p.sum()

    # temperature only: softmax over the allowed ids
    got = frequencies(temperature=0.7, top_k=None, top_p=None)
    np.testing.assert_allclose(got, expected([3, 4, 5, 6, 7], 0.7), atol=0.015)
    # top_k=2: ids 5 (2.0) and 7 (1.5) renormalised
    got = frequencies(temperature=1.0, top_k=2, top_p=None)
    np.testing.assert_allclose(got, expected([5, 7], 1.0), atol=0.015)
    # top_p: the fewest most probable ids reaching the mass
    full = expected([3, 4, 5, 6, 7], 1.0)
    order = np.argsort(-full)
    nucleus = order[:np.searchsorted(np.cumsum(full[order]), 0.8) + 1]
    got = frequencies(temperature=1.0, top_k=None, top_p=0.8)
    np.testing.assert_allclose(got, expected(sorted(nucleus), 1.0), atol=0.015)
    assert got[[PAD, UNK, BOS]].sum() == 0
    # greedy, also at a temperature tiny enough to overflow a naive softmax
    assert _sample(logits, banned, 0.0, None, None, rng) == 5
    assert _sample(logits, banned, 1e-300, None, None, rng) == 5


def test_unknown_prompt_tokens_warn_and_read_as_unk(char_lm):
    with pytest.warns(UserWarning, match=r"1 token\(s\) not in the vocabulary \('Z'\)"):
        text = char_lm.generate("Zthe ", length=10, seed=0)
    assert text.startswith("Zthe ") and len(text) == 15


# -- truncated BPTT ----------------------------------------------------------------------

def test_evaluate_is_independent_of_the_chunk_length(char_lm):
    """The carried state makes chunked evaluation equal one pass over the stream."""
    held_out = sentences(3, 10)
    whole = char_lm.evaluate(held_out, bptt=100000)["loss"]
    for bptt in (1, 7, 64):
        assert char_lm.evaluate(held_out, bptt=bptt)["loss"] == pytest.approx(whole,
                                                                               rel=1e-5)
    # and columns started from zero state (batch_size > 1) really change it
    assert char_lm.evaluate(held_out, batch_size=8)["loss"] != pytest.approx(whole,
                                                                              rel=1e-3)


def _torch_stack(torch, lm):
    """Embedding (or one-hot), recurrent stack and head in torch, same weights."""
    net = lm.network_
    cell = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[lm.cell]
    features = net.embedding.embedding_dim if net.embedding is not None else len(lm.vocab_)
    rnn = cell(features, lm.hidden_size, num_layers=lm.num_layers).double()
    rnn.load_state_dict({k: torch.from_numpy(v) for k, v in net.rnn.state_dict().items()})
    head = torch.nn.Linear(lm.hidden_size, len(lm.vocab_)).double()
    head.load_state_dict({k: torch.from_numpy(v) for k, v in lm.head_.state_dict().items()})
    if net.embedding is not None:
        embedding = torch.nn.Embedding(len(lm.vocab_), features).double()
        embedding.weight.data = torch.from_numpy(net.embedding.state_dict()["weight"])
    else:
        embedding = None

    def features_of(ids):
        ids = torch.from_numpy(ids)
        if embedding is None:
            return torch.nn.functional.one_hot(ids, len(lm.vocab_)).double()
        return embedding(ids)

    return features_of, rnn, head, embedding


@pytest.mark.torch
@pytest.mark.parametrize("cell, input_kind", [("lstm", "embedding"), ("gru", "onehot"),
                                              ("rnn", "embedding")])
def test_evaluate_matches_torch_over_the_whole_stream(torch, cell, input_kind):
    lm = LanguageModel(level="char", cell=cell, hidden_size=8, num_layers=2,
                       input=input_kind, embedding_dim=5, dtype="float64", seed=0)
    lm.fit(sentences(0, 20), epochs=1, batch_size=4, bptt=8, verbose=0)
    held_out = [sentences(4, 2), "the moon sees a dog."]
    stream = lm._stream(held_out, "held_out")
    features_of, rnn, head, _ = _torch_stack(torch, lm)
    with torch.no_grad():
        out, _ = rnn(features_of(stream[:-1, None]))
        loss = torch.nn.functional.cross_entropy(head(out)[:, 0], torch.from_numpy(stream[1:]))
    got = lm.evaluate(held_out, bptt=5)
    assert got["loss"] == pytest.approx(loss.item(), rel=1e-10)
    assert got["perplexity"] == pytest.approx(math.exp(loss.item()), rel=1e-10)


@pytest.mark.torch
def test_training_chunk_gradients_match_torch_truncated_bptt(torch):
    """Chunk 2 starts from chunk 1's final state, with no gradient across."""
    lm = LanguageModel(level="char", cell="lstm", hidden_size=6, num_layers=2,
                       embedding_dim=4, dtype="float64", seed=0)
    text = sentences(0, 10)
    lm.fit(text, epochs=1, batch_size=3, bptt=5, verbose=0)
    chunks = list(StreamBatcher(lm._stream([text], "text"), 3, 5))[:2]
    lm._set_mode(True)
    lm.on_epoch_begin(0, True)
    lm.train_batch(chunks[0])
    for module in lm.modules():
        module.zero_grad()
    metrics, weight = lm.train_batch(chunks[1])
    assert weight == chunks[1].targets.size

    features_of, rnn, head, embedding = _torch_stack(torch, lm)
    with torch.no_grad():
        _, state = rnn(features_of(chunks[0].inputs))
    out, _ = rnn(features_of(chunks[1].inputs), tuple(s.detach() for s in state))
    logits = head(out)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                             torch.from_numpy(chunks[1].targets.reshape(-1)))
    loss.backward()
    assert metrics["loss"] == pytest.approx(loss.item(), rel=1e-10)
    expected = {("rnn", k): p.grad for k, p in rnn.named_parameters()}
    expected.update({("head", k): p.grad for k, p in head.named_parameters()})
    expected[("embedding", "weight")] = embedding.weight.grad
    got = {("rnn", k): v for k, v in lm.network_.rnn.grads.items()}
    got.update({("head", k): v for k, v in lm.head_.grads.items()})
    got[("embedding", "weight")] = lm.network_.embedding.grads["weight"]
    assert set(got) == set(expected)
    for key, value in expected.items():
        grad = value.numpy().copy()
        if key == ("embedding", "weight"):
            grad[PAD] = 0                       # the padding row never learns
        np.testing.assert_allclose(got[key], grad, rtol=1e-8, atol=1e-12, err_msg=str(key))


def test_trainer_checkpoint_mid_epoch_resumes_exactly(tmp_path):
    text = sentences(5, 100)
    options = dict(epochs=2, batch_size=8, bptt=16, lr=0.01, verbose=0,
                   validation_data=sentences(6, 10))
    checkpoint = tmp_path / "ckpt.npz"
    lm = LanguageModel(level="char", hidden_size=16, embedding_dim=8, seed=0)
    lm.fit(text, callbacks=[SaveAt(checkpoint, 1, 4)], **options)
    assert len(StreamBatcher(lm._stream([text], "text"), 8, 16)) > 6
    final = [module.state_dict() for module in lm.modules()]
    lm.save(tmp_path / "lm.npz")

    def resume(drop_carry):
        model = load(tmp_path / "lm.npz")          # built; the checkpoint sets the weights
        if drop_carry:
            model.load_extra_state = lambda state: LanguageModel.load_extra_state(
                model, dict(state, carry=None))
        trainer = Trainer(model, make_optimizer("adam", model, lr=0.01), clip_norm=5.0,
                          verbose=0)
        stream = StreamBatcher(model._stream([text], "text"), 8, 16)
        validation = StreamBatcher(model._stream([sentences(6, 10)], "v"), 8, 16)
        history = trainer.fit(stream, epochs=2, validation_data=validation,
                              resume_from=checkpoint)
        return model, history

    model, history = resume(drop_carry=False)
    for saved, module in zip(final, model.modules()):
        for name, value in saved.items():
            np.testing.assert_array_equal(module.state_dict()[name], value, err_msg=name)
    for name, values in lm.history_.history.items():
        np.testing.assert_allclose(history.history[name], values, rtol=1e-12, err_msg=name)
    # the test can fail: resuming without the carried state ends elsewhere
    model, _ = resume(drop_carry=True)
    assert not all(np.array_equal(module.state_dict()[name], value)
                   for saved, module in zip(final, model.modules())
                   for name, value in saved.items())


# -- saving -------------------------------------------------------------------------------

def test_save_load_gives_identical_generation_and_evaluation(char_lm, word_lm, tmp_path):
    for lm, prompt, held_out in ((char_lm, "the ", sentences(1, 5)),
                                 (word_lm, "one", [COUNT, COUNT])):
        path = tmp_path / f"{lm.level}.npz"
        lm.save(path)
        loaded = load(path)
        assert type(loaded) is LanguageModel and loaded.get_params() == lm.get_params()
        assert loaded.vocab_.tokens == lm.vocab_.tokens
        for seed in (0, 1):
            assert loaded.generate(prompt, length=60, seed=seed, top_p=0.9) == \
                lm.generate(prompt, length=60, seed=seed, top_p=0.9)
        assert loaded.evaluate(held_out, bptt=16) == lm.evaluate(held_out, bptt=16)


def test_validation_split_holds_out_the_end_of_the_stream():
    lm = LanguageModel(level="word", hidden_size=8, embedding_dim=4, seed=0)
    history = lm.fit([COUNT] * 30, epochs=2, batch_size=4, bptt=8, verbose=0,
                     validation_split=0.2).history_
    assert {"val_loss", "val_perplexity", "loss", "perplexity"} <= set(history.history)
    assert "bits_per_char" not in history.history


# -- bad input -----------------------------------------------------------------------------

def test_bad_input_errors(char_lm):
    lm = LanguageModel(level="char", hidden_size=8)
    with pytest.raises(NotFittedError, match="not fitted"):
        lm.generate("a")
    with pytest.raises(NotFittedError, match="not fitted"):
        lm.evaluate("a")
    with pytest.raises(ValueError, match="no tokens"):
        lm.fit("")
    with pytest.raises(ValueError, match="no tokens"):
        LanguageModel(level="word").fit(["  ", "\n"])
    with pytest.raises(ValueError, match="empty list"):
        lm.fit([])
    with pytest.raises(TypeError, match=r"text_or_texts\[1\] must be a str, got int"):
        lm.fit(["abc", 3])
    with pytest.raises(TypeError, match="must be a str or a list of str, got int"):
        lm.fit(42)
    with pytest.raises(ValueError, match=r"bptt must be an int >= 1, got 0"):
        lm.fit("abcabc", bptt=0)
    with pytest.raises(ValueError, match=r"too short for batch_size=32"):
        lm.fit("abcabc", epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"validation_split must be a number in \[0, 1\)"):
        lm.fit("abcabc" * 20, validation_split=1.0)
    with pytest.raises(ValueError, match="level must be one of"):
        LanguageModel(level="byte").fit("abc")
    with pytest.raises(ValueError, match="input must be one of"):
        LanguageModel(input="numeric").fit("abc" * 20, batch_size=2, verbose=0)
    with pytest.raises(ValueError, match="no tokens besides the specials"):
        LanguageModel(min_freq=100).fit("abc" * 20, batch_size=2, verbose=0)

    with pytest.raises(ValueError, match=r"temperature must be a number in \[0.0, inf\], "
                                         r"got -0.5"):
        char_lm.generate("a", temperature=-0.5)
    with pytest.raises(ValueError, match="temperature .* got nan"):
        char_lm.generate("a", temperature=float("nan"))
    with pytest.raises(ValueError, match=r"top_p must be a number in \(0.0, 1.0\], got 0"):
        char_lm.generate("a", top_p=0)
    with pytest.raises(ValueError, match=r"top_p .* got 1.5"):
        char_lm.generate("a", top_p=1.5)
    with pytest.raises(ValueError, match=r"top_k must be an int >= 1, got 0"):
        char_lm.generate("a", top_k=0)
    with pytest.raises(ValueError, match=r"length must be an int >= 0, got -1"):
        char_lm.generate("a", length=-1)
    with pytest.raises(ValueError, match=r"length must be an int >= 0, got 2.5"):
        char_lm.generate("a", length=2.5)
    with pytest.raises(TypeError, match="prompt must be a str, got list"):
        char_lm.generate(["a"])
    with pytest.raises(ValueError, match=r"bptt must be an int >= 1, got 0"):
        char_lm.evaluate("the cat", bptt=0)
    with pytest.raises(ValueError, match="no tokens"):
        char_lm.evaluate("")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        char_lm.generate("the", length=3, seed=0)     # known prompt: no warning


def test_a_refused_refit_leaves_the_fitted_model_unchanged():
    lm = LanguageModel(level="word", hidden_size=8, embedding_dim=4, seed=0)
    lm.fit([COUNT] * 10, epochs=1, batch_size=4, bptt=8, verbose=0)
    before = lm.generate("one", length=10, seed=0), lm.vocab_.tokens
    with pytest.raises(ValueError, match="too short for batch_size=32"):
        lm.fit("completely new words", epochs=1, verbose=0)
    assert (lm.generate("one", length=10, seed=0), lm.vocab_.tokens) == before
