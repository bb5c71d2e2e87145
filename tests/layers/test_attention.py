"""fr.Attention: numpy reference, finite differences, step path, bad input;
Seq2Seq(attention=...): alignments, save/load, errors and a learning test."""

import numpy as np
import pytest

import fastrnn as fr

SCORES = ("dot", "general", "additive")


def _reference(att, query, memory, lengths):
    """float64 numpy attention: (context (T, B, M), weights (B, T, S))."""
    p = {name: value.astype(np.float64) for name, value in att.state_dict().items()}
    q, m = query.astype(np.float64), memory.astype(np.float64)
    if att.score == "dot":
        scores = np.einsum("tbd,sbd->bts", q, m)
    elif att.score == "general":
        scores = np.einsum("tbd,de,sbe->bts", q, p["weight"], m)
    else:
        qp = q @ p["query_weight"].T
        kp = m @ p["key_weight"].T + p["bias"]
        scores = np.tanh(qp[:, :, None, :] + kp.transpose(1, 0, 2)[None]) @ p["v"]   # (T,B,S)
        scores = scores.transpose(1, 0, 2)
    mask = np.arange(memory.shape[0])[None, None, :] < lengths[:, None, None]
    scores = np.where(mask, scores, -np.inf)
    weights = np.exp(scores - scores.max(axis=2, keepdims=True))
    weights /= weights.sum(axis=2, keepdims=True)
    context = np.einsum("bts,sbe->tbe", weights, m)
    return context, weights


def _case(score, dtype="float64", seed=0, steps=4, batch=3, source=5, q=6, m=6):
    rng = np.random.default_rng(seed)
    att = fr.Attention(q, m, score=score, attention_size=5 if score == "additive" else None,
                       dtype=dtype, seed=seed)
    query = rng.standard_normal((steps, batch, q))
    memory = rng.standard_normal((source, batch, m))
    lengths = np.array([source, 2, 1][:batch] + [source] * max(0, batch - 3))
    memory[:, :, :] *= (np.arange(source)[:, None] < lengths[None, :])[:, :, None]
    return att, query.astype(dtype), memory.astype(dtype), lengths


@pytest.mark.parametrize("score", SCORES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_forward_matches_numpy_reference(score, dtype):
    att, query, memory, lengths = _case(score, dtype, m=6 if score == "dot" else 7)
    att.set_memory(memory, lengths)
    context, weights = att(query)
    ref_context, ref_weights = _reference(att, query, memory, lengths)
    tol = 1e-12 if dtype == "float64" else 2e-5
    np.testing.assert_allclose(weights, ref_weights, atol=tol, rtol=tol)
    np.testing.assert_allclose(context, ref_context, atol=tol * 10, rtol=tol * 10)
    np.testing.assert_allclose(weights.sum(axis=2), 1.0, atol=tol)
    assert (weights[1, :, 2:] == 0).all() and (weights[2, :, 1:] == 0).all()


def _loss(att, query, memory, lengths, r_context):
    att.set_memory(memory, lengths)
    context, _ = att(query)
    return float((context * r_context).sum())


@pytest.mark.parametrize("score", SCORES)
def test_gradients_match_finite_differences(score):
    att, query, memory, lengths = _case(score, m=6 if score == "dot" else 4)
    rng = np.random.default_rng(1)
    r = rng.standard_normal((query.shape[0], query.shape[1], memory.shape[2]))
    att.zero_grad()
    att.set_memory(memory, lengths)
    att(query)
    d_query, d_memory = att.backward(r)
    analytic = {"query": d_query, "memory": d_memory,
                **{name: grad.copy() for name, grad in att.grads.items()}}
    arrays = {"query": query, "memory": memory, **att._params}
    eps = 1e-6
    for name, array in arrays.items():
        numeric = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            saved = array[index]
            array[index] = saved + eps
            plus = _loss(att, query, memory, lengths, r)
            array[index] = saved - eps
            minus = _loss(att, query, memory, lengths, r)
            array[index] = saved
            numeric[index] = (plus - minus) / (2 * eps)
        np.testing.assert_allclose(analytic[name], numeric, rtol=1e-6, atol=1e-8,
                                   err_msg=f"{score}: gradient of {name}")
    # memory past a row's length gets no gradient: it is masked out
    assert (d_memory[2:, 1] == 0).all() and (d_memory[1:, 2] == 0).all()


@pytest.mark.parametrize("score", SCORES)
def test_step_path_equals_sequence_path(score):
    att, query, memory, lengths = _case(score, steps=5, m=6 if score == "dot" else 3)
    att.eval()
    att.set_memory(memory, lengths)
    context, weights = att(query)
    for t in range(query.shape[0]):
        step_context, step_weights = att.step(query[t])
        np.testing.assert_allclose(step_context, context[t], rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(step_weights, weights[:, t], rtol=1e-13, atol=1e-14)


def test_repeat_memory_gives_every_beam_its_source():
    att, query, memory, lengths = _case("additive", m=4)
    att.eval()
    att.set_memory(memory, lengths)
    single = [att.step(query[0])[0]]
    att.repeat_memory(2)
    repeated, _ = att.step(np.repeat(query[0], 2, axis=0))
    np.testing.assert_allclose(repeated[0::2], single[0], rtol=1e-13)
    np.testing.assert_allclose(repeated[1::2], single[0], rtol=1e-13)


def test_bad_input_is_refused_by_name():
    att, query, memory, lengths = _case("dot")
    with pytest.raises(ValueError, match="score must be one of"):
        fr.Attention(4, 4, score="bilinear")
    with pytest.raises(ValueError, match="query_size == memory_size"):
        fr.Attention(4, 5, score="dot")
    with pytest.raises(ValueError, match=r"lengths\[1\] is 0.*length 0"):
        att.set_memory(memory, np.array([5, 0, 1]))
    with pytest.raises(ValueError, match="at most 5"):
        att.set_memory(memory, np.array([6, 1, 1]))
    with pytest.raises(RuntimeError, match="set_memory"):
        fr.Attention(6, 6).forward(query)
    att.set_memory(memory, lengths)
    with pytest.raises(ValueError, match="query must have shape"):
        att(query[:, :2])
    with pytest.raises(RuntimeError, match="backward needs a forward"):
        att.backward(np.zeros((4, 3, 6)))


def test_state_dict_round_trip():
    att, query, memory, lengths = _case("additive", m=4)
    other = fr.Attention(6, 4, score="additive", attention_size=5, dtype="float64", seed=9)
    other.load_state_dict(att.state_dict())
    for module in (att, other):
        module.set_memory(memory, lengths)
    np.testing.assert_array_equal(att(query)[0], other(query)[0])
    assert sorted(att.state_dict()) == ["bias", "key_weight", "query_weight", "v"]


# -- Seq2Seq(attention=...) ---------------------------------------------------------------

from fastrnn.data import BatchLoader                      # noqa: E402
from fastrnn.tasks import load                            # noqa: E402
from fastrnn.tasks.base import eval_mode                  # noqa: E402
from fastrnn.tasks.seq2seq import Seq2Seq, _TargetTable   # noqa: E402
from fastrnn.text import BOS                              # noqa: E402

DIGITS = list("0123456789")


def digit_strings(rng, n, low, high):
    return ["".join(rng.choice(DIGITS, size=int(rng.integers(low, high + 1))))
            for _ in range(n)]


def _first_batch(model, sources, targets):
    model._table = _TargetTable(model.outputs_.transform(targets))
    ids = model.inputs_.transform(sources)
    return next(iter(BatchLoader(ids, np.arange(len(ids)), batch_size=len(ids),
                                 shuffle=False)))


@pytest.mark.parametrize("score,cell", [("dot", "lstm"), ("general", "gru"),
                                        ("additive", "rnn"), ("additive", "lstm")])
def test_seq2seq_gradients_match_finite_differences(score, cell):
    """Every parameter of encoder, decoder, attention, post-attention layer and
    head against central differences of the per-token loss (float64); the
    encoder now also gets gradient through the memory."""
    rng = np.random.default_rng(3)
    sources = digit_strings(rng, 5, 2, 5)
    targets = digit_strings(rng, 5, 1, 4)
    model = Seq2Seq(cell=cell, hidden_size=4, embedding_dim=3, dtype="float64", seed=3,
                    attention=score)
    model.fit(sources, targets, epochs=1, verbose=0, lr=1e-4)
    batch = _first_batch(model, sources, targets)
    model._set_mode(True)
    for module in model.modules():
        module.zero_grad()
    model.train_batch(batch)
    model._set_mode(False)
    checked = 0
    for module in model.modules():
        for name, param in module.named_parameters():
            grad = module.grads[name]
            for flat in rng.choice(param.size, size=min(3, param.size), replace=False):
                index = np.unravel_index(flat, param.shape)
                saved = param[index]
                param[index] = saved + 1e-6
                up = model._step(batch, training=False)[0]["loss"]
                param[index] = saved - 1e-6
                down = model._step(batch, training=False)[0]["loss"]
                param[index] = saved
                assert grad[index] == pytest.approx((up - down) / 2e-6, rel=1e-5, abs=1e-9), \
                    (type(module).__name__, name, index)
                checked += 1
    assert checked > 25
    # the encoder learns through the memory too, and every attention weight moves
    assert all(np.abs(g).max() > 0 for m in model.encoder_.modules() for g in m.grads.values())
    assert all(np.abs(g).max() > 0 for g in model.attention_.grads.values())


@pytest.mark.parametrize("score", SCORES)
def test_seq2seq_step_decoding_equals_the_teacher_forced_pass(score):
    """Feeding the gold tokens one step at a time (the greedy / beam path:
    decoder step, attention step, post-attention step) gives the logits of the
    whole-sequence teacher-forced pass."""
    rng = np.random.default_rng(4)
    sources = digit_strings(rng, 6, 3, 7)
    targets = digit_strings(rng, 6, 2, 5)
    model = Seq2Seq(hidden_size=6, embedding_dim=4, dtype="float64", seed=4, attention=score)
    model.fit(sources, targets, epochs=1, verbose=0)
    batch = _first_batch(model, sources, targets)
    decoder_inputs, _, lengths = model._table.batch(batch.targets)
    with eval_mode(model.modules()):
        state = model._encode_batch(batch)
        logits = model._decode(decoder_inputs, lengths, state)
        step_state = (state, None)
        for t in range(decoder_inputs.shape[0]):
            log_probs, step_state = model._log_probs(decoder_inputs[t], step_state)
            z = logits[t].astype(np.float64)
            z[:, [0, BOS]] = -np.inf
            expected = z - z.max(axis=1, keepdims=True)
            expected -= np.log(np.exp(expected).sum(axis=1, keepdims=True))
            valid = t < lengths
            np.testing.assert_allclose(log_probs[valid], expected[valid], rtol=1e-10,
                                       atol=1e-12)


@pytest.fixture(scope="module")
def small_attention_model():
    rng = np.random.default_rng(5)
    sources = digit_strings(rng, 60, 3, 8)
    model = Seq2Seq(hidden_size=16, embedding_dim=8, seed=5, attention="general")
    model.fit(sources, [s[::-1] for s in sources], epochs=2, verbose=0)
    return model, sources[:12]


def test_attention_weights_are_alignments(small_attention_model):
    model, sources = small_attention_model
    targets = [s[::-1] + "1" for s in sources]
    weights = model.attention_weights(sources, targets)
    assert len(weights) == len(sources)
    for w, source, target in zip(weights, sources, targets):
        assert w.shape == (len(target) + 1, len(source))
        np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-5)
        assert (w >= 0).all()
    # batching does not change them
    one_by_one = model.attention_weights(sources, targets, batch_size=1)
    for a, b in zip(weights, one_by_one):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_attention_beam_one_is_greedy_and_beams_run(small_attention_model):
    model, sources = small_attention_model
    assert model.predict(sources, beam_size=1) == model.predict(sources)
    wide = model.predict(sources, beam_size=4, batch_size=5)
    assert len(wide) == len(sources) and all(isinstance(p, str) for p in wide)


def test_attention_save_load_round_trip(small_attention_model, tmp_path):
    model, sources = small_attention_model
    path = tmp_path / "att.npz"
    model.save(path)
    loaded = load(path)
    assert loaded.get_params()["attention"] == "general"
    assert loaded.predict(sources) == model.predict(sources)
    assert loaded.predict(sources, beam_size=3) == model.predict(sources, beam_size=3)
    for a, b in zip(loaded.attention_weights(sources, sources),
                    model.attention_weights(sources, sources)):
        np.testing.assert_array_equal(a, b)
    names = {name for m in loaded.modules() for name in m.state_dict()}
    assert "weight" in loaded.attention_.state_dict() and "weight_hh_l0" in names


def test_attention_bad_input(small_attention_model):
    model, sources = small_attention_model
    with pytest.raises(ValueError, match="attention must be one of None, 'dot', 'general', "
                                         "'additive', got 'luong'"):
        Seq2Seq(attention="luong").fit(["12"], ["21"], verbose=0)
    with pytest.raises(ValueError, match=r"sources\[1\] is an empty source"):
        Seq2Seq(attention="dot").fit(["12", "", "3"], ["21", "1", "3"], verbose=0)
    with pytest.raises(ValueError, match=r"sources has 0 feature\(s\) .* every sequence "
                                         r"needs at least one step"):
        Seq2Seq(attention="additive").fit(np.zeros((2, 0, 3)), ["1", "2"], verbose=0)
    with pytest.raises(ValueError, match=r"sources\[0\] is an empty source"):
        model.attention_weights([""], ["1"])
    with pytest.raises(ValueError, match=r"sources\[0\] is an empty source"):
        model.predict([""])
    with pytest.raises(ValueError, match="same length"):
        model.attention_weights(sources[:2], sources[:1])
    plain = Seq2Seq(hidden_size=4, embedding_dim=2, seed=0)
    plain.fit(["12", "21"], ["21", "12"], epochs=1, verbose=0)
    with pytest.raises(ValueError, match="attention_weights needs a model built with "
                                         "attention"):
        plain.attention_weights(["12"], ["21"])


def test_attention_learns_long_reversals_where_the_final_state_fails():
    """Reversing 12-20 digit strings: with the same data, epochs and optimizer,
    additive attention reaches >= 0.9 exact match on held-out strings while the
    final-state bottleneck (attention=None) stays near 0.  (The 25-40 digit
    version is ``bench/attention.py --learn``; this size keeps CI fast.)"""
    rng = np.random.default_rng(0)
    train = digit_strings(rng, 2000, 12, 20)
    test = digit_strings(rng, 200, 12, 20)
    exact = {}
    for attention in ("additive", None):
        model = Seq2Seq(hidden_size=64, embedding_dim=16, seed=0, attention=attention)
        model.fit(train, [s[::-1] for s in train], epochs=9, lr=0.01, verbose=0)
        exact[attention] = model.score(test, [s[::-1] for s in test],
                                       max_length=25)["exact_match"]
    assert exact["additive"] >= 0.9 and exact[None] <= 0.2, exact


def _candidate_log_probs(model, source, sequences):
    """Teacher-forced log-probabilities (float64) of candidate outputs for one
    source through the whole-sequence path: per candidate the sum over its
    tokens, and that sum plus the final <eos>."""
    from fastrnn.tasks.base import prediction_loader
    from fastrnn.tasks.seq2seq import BANNED, _repeat_state
    from fastrnn.text import EOS, PAD
    n = len(sequences)
    inputs = np.full((max(len(s) for s in sequences) + 1, n), PAD, dtype=np.int64)
    inputs[0] = BOS
    for column, s in enumerate(sequences):
        inputs[1:len(s) + 1, column] = s
    batch = next(iter(prediction_loader(model.inputs_.transform([source]), 1)))
    with eval_mode(model.modules()):
        state = _repeat_state(model._encode_batch(batch), n)
        model.attention_.repeat_memory(n)
        z = model._decode(inputs, np.array([len(s) + 1 for s in sequences]), state)
    z = z.astype(np.float64)
    z[..., list(BANNED)] = -np.inf
    z = z - z.max(axis=2, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=2, keepdims=True))
    sums = np.array([sum(logp[t, c, token] for t, token in enumerate(s))
                     for c, s in enumerate(sequences)])
    ends = np.array([logp[len(s), c, EOS] for c, s in enumerate(sequences)])
    return sums, sums + ends


def test_attention_wide_beam_finds_the_exhaustive_best():
    """Beam search with attention (beams share their source's memory, several
    sources per batch) returns the best length-normalised output among all
    outputs of at most max_length tokens, each scored by a teacher-forced pass."""
    import itertools
    from fastrnn.tasks.seq2seq import BANNED
    from fastrnn.text import EOS
    rng = np.random.default_rng(6)
    train = digit_strings(rng, 200, 1, 3)
    train = ["".join("012"[int(c) % 3] for c in s) for s in train]
    model = Seq2Seq(hidden_size=12, embedding_dim=6, dtype="float64", seed=6,
                    attention="additive")
    model.fit(train, [s[::-1] for s in train], epochs=1, verbose=0, lr=0.005)
    max_length = 3
    allowed = [i for i in range(len(model.outputs_.vocab)) if i not in BANNED and i != EOS]
    finished = [list(s) for n in range(max_length) for s in itertools.product(allowed, repeat=n)]
    cut = [list(s) for s in itertools.product(allowed, repeat=max_length)]
    sources = ["01", "210", "2", "1201", "00", "12"]
    beams = model._predict_ids(sources, max_length, beam_size=200, batch_size=4)
    for source, beam in zip(sources, beams):
        _, with_eos = _candidate_log_probs(model, source, finished)
        cut_sums, _ = _candidate_log_probs(model, source, cut)
        candidates = [(total / (len(s) + 1), s) for total, s in zip(with_eos, finished)] + \
            [(total / max_length, s) for total, s in zip(cut_sums, cut)]
        scores = sorted((score for score, _ in candidates), reverse=True)
        assert scores[0] - scores[1] > 1e-9          # a unique best: the test is sharp
        assert beam.tolist() == max(candidates, key=lambda item: item[0])[1], source
