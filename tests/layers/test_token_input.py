"""Token ids through an Embedding into a recurrent layer: ``layer(ids, embedding=emb)``.

With fewer vocabulary rows than tokens the kernels make each vocabulary row's
input product once (a table) and, in backward, sum the tokens' gate gradients
per id; otherwise they gather the rows and run as on any input.  Both must
equal the two-module form ``layer(emb(ids))``: outputs and states bit for bit,
gradients (the embedding's included) to float rounding, PyTorch's
nn.Embedding + nn.RNN/LSTM/GRU, and central differences.
"""

import numpy as np
import pytest

import fastrnn as fr
from helpers import central_differences, make_layer, random_lengths, require_torch

V_SMALL, V_LARGE = 7, 500      # fused (< T * B tokens) and gathered (>= T * B)
T, B, E, H = 6, 5, 4, 3

# (cell, options): every cell and the variants whose input side differs.
LAYERS = [("rnn_tanh", {}), ("rnn_relu", {"num_layers": 2}), ("lstm", {}),
          ("gru", {"bidirectional": True}), ("gru", {"reset_after": False}),
          ("lstm", {"proj_size": 2, "bidirectional": True, "num_layers": 2}),
          ("lstm", {"peepholes": True, "batch_first": True})]
LAYER_IDS = ["rnn_tanh", "rnn_relu-L2", "lstm", "gru-bi", "gru-reset_before", "lstm-proj-bi-L2",
             "lstm-peep-bf"]


def _pair(cell, options, vocab, dtype="float64", padding_idx=None, freeze=False, seed=0):
    layer = make_layer(cell, E, H, dtype=dtype, seed=seed, **options)
    embedding = fr.Embedding(vocab, E, padding_idx=padding_idx, freeze=freeze, dtype=dtype,
                             seed=seed + 1)
    return layer, embedding


def _ids(rng, vocab, layer, padding_idx=None):
    ids = rng.integers(0, vocab, size=(T, B))
    if padding_idx is not None:
        ids[0, :2] = padding_idx
    return ids.T.copy() if layer.batch_first else ids


def _states(h_n):
    return h_n if isinstance(h_n, tuple) else (h_n,)


def _separate(layer, embedding, ids, lengths, d_out):
    """Outputs and gradients of the two-module form."""
    layer.zero_grad()
    embedding.zero_grad()
    out, h_n = layer(embedding(ids), lengths=lengths)
    d_x, _ = layer.backward(d_out)
    if not embedding.freeze:
        embedding.backward(d_x)
    return out.copy(), [s.copy() for s in _states(h_n)], _gradients(layer, embedding)


def _fused(layer, embedding, ids, lengths, d_out):
    layer.zero_grad()
    embedding.zero_grad()
    out, h_n = layer(ids, embedding=embedding, lengths=lengths)
    # Both paths are exercised: the table below T * B vocabulary rows, else the gather.
    assert layer._cache.layers[0].input.fused == (embedding.num_embeddings < ids.size)
    d_x, _ = layer.backward(d_out)
    assert d_x is None
    return out.copy(), [s.copy() for s in _states(h_n)], _gradients(layer, embedding)


def _gradients(layer, embedding):
    grads = {name: g.copy() for name, g in layer.grads.items()}
    if "weight" in embedding.grads:
        grads["embedding"] = embedding.grads["weight"].copy()
    return grads


@pytest.mark.parametrize("vocab", [V_SMALL, V_LARGE], ids=["table", "gathered"])
@pytest.mark.parametrize("cell, options", LAYERS, ids=LAYER_IDS)
@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
def test_token_input_equals_the_embedded_input(cell, options, vocab, with_lengths):
    rng = np.random.default_rng(3)
    layer, embedding = _pair(cell, options, vocab, padding_idx=2)
    ids = _ids(rng, vocab, layer, padding_idx=2)
    lengths = random_lengths(rng, B, T) if with_lengths else None
    out_shape = layer(embedding(ids), lengths=lengths)[0].shape
    d_out = rng.standard_normal(out_shape)
    want_out, want_states, want_grads = _separate(layer, embedding, ids, lengths, d_out)
    out, states, grads = _fused(layer, embedding, ids, lengths, d_out)
    np.testing.assert_array_equal(out, want_out)
    for got, want in zip(states, want_states):
        np.testing.assert_array_equal(got, want)
    assert grads.keys() == want_grads.keys()
    for name, want in want_grads.items():
        np.testing.assert_allclose(grads[name], want, rtol=1e-12, atol=1e-13, err_msg=name)
    assert not grads["embedding"][2].any(), "the padding row must get no gradient"
    # Eval mode (the inference kernels, blocked input steps included) too.
    layer.eval()
    np.testing.assert_array_equal(layer(ids, embedding=embedding, lengths=lengths)[0],
                                  layer(embedding(ids), lengths=lengths)[0])


@pytest.mark.parametrize("vocab", [V_SMALL, V_LARGE], ids=["table", "gathered"])
@pytest.mark.parametrize("cell, options", LAYERS, ids=LAYER_IDS)
def test_state_grad_false_changes_no_gradient(cell, options, vocab):
    rng = np.random.default_rng(4)
    layer, embedding = _pair(cell, options, vocab)
    ids = _ids(rng, vocab, layer)
    lengths = random_lengths(rng, B, T)
    d_out = rng.standard_normal(layer(ids, embedding=embedding, lengths=lengths)[0].shape)
    results = []
    for state_grad in (True, False):
        layer.zero_grad()
        embedding.zero_grad()
        layer(ids, embedding=embedding, lengths=lengths)
        d_x, d_hx = layer.backward(d_out, state_grad=state_grad)
        assert d_x is None and (d_hx is None) == (not state_grad)
        results.append(_gradients(layer, embedding))
    for name, want in results[0].items():
        np.testing.assert_array_equal(results[1][name], want, err_msg=name)


@pytest.mark.parametrize("vocab", [V_SMALL, V_LARGE], ids=["table", "gathered"])
def test_float32_and_two_threads_give_the_same_bits(vocab):
    """Outputs do not depend on the thread count; float32 matches float64 to rounding."""
    rng = np.random.default_rng(4)
    batch = 16
    ids = rng.integers(0, vocab, size=(T, batch))
    results = {}
    for dtype in ("float32", "float64"):
        for threads in (1, 2):
            layer, embedding = _pair("lstm", {"num_layers": 2}, vocab, dtype=dtype)
            previous = fr.get_num_threads()
            fr.set_num_threads(threads)
            try:
                out, _ = layer(ids, embedding=embedding)
                layer.backward(np.ones(out.shape, dtype))
            finally:
                fr.set_num_threads(previous)
            results[dtype, threads] = out.copy(), embedding.grads["weight"].copy()
    for dtype in ("float32", "float64"):
        np.testing.assert_array_equal(results[dtype, 1][0], results[dtype, 2][0])
        np.testing.assert_allclose(results[dtype, 1][1], results[dtype, 2][1], rtol=1e-5,
                                   atol=1e-6)
    np.testing.assert_allclose(results["float32", 1][0], results["float64", 1][0], atol=1e-5)


def test_frozen_embedding_gets_no_gradient_and_the_layer_still_does():
    rng = np.random.default_rng(5)
    layer, embedding = _pair("gru", {}, V_SMALL, freeze=True)
    ids = _ids(rng, V_SMALL, layer)
    out, _ = layer(ids, embedding=embedding)
    d_out = rng.standard_normal(out.shape)
    _, _, want = _separate(layer, embedding, ids, None, d_out)
    _, _, got = _fused(layer, embedding, ids, None, d_out)
    assert "embedding" not in got and "weight" not in embedding.grads
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("cell, options", LAYERS[2:5], ids=LAYER_IDS[2:5])
def test_token_input_gradients_match_central_differences(cell, options):
    rng = np.random.default_rng(6)
    layer, embedding = _pair(cell, options, V_SMALL, padding_idx=0)
    ids = _ids(rng, V_SMALL, layer, padding_idx=0)
    lengths = random_lengths(rng, B, T)
    out, h_n = layer(ids, embedding=embedding, lengths=lengths)
    R = rng.standard_normal(out.shape)

    def loss():
        layer.eval()
        value = float(np.sum(layer(ids, embedding=embedding, lengths=lengths)[0] * R))
        layer.train()
        return value

    _, _, grads = _fused(layer, embedding, ids, lengths, R)
    table = embedding.weight
    indices = np.arange(table.size)
    numeric = central_differences(table, loss, 1e-6, indices)
    numeric[np.arange(E)] = 0.0       # the padding row: no gradient by definition
    np.testing.assert_allclose(grads["embedding"].reshape(-1), numeric, rtol=1e-6, atol=1e-8)
    w_ih = layer._params["weight_ih_l0"]
    picks = rng.choice(w_ih.size, size=12, replace=False)
    np.testing.assert_allclose(grads["weight_ih_l0"].reshape(-1)[picks],
                               central_differences(w_ih, loss, 1e-6, picks),
                               rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm", "gru"])
@pytest.mark.parametrize("vocab", [V_SMALL, V_LARGE], ids=["table", "gathered"])
def test_token_input_matches_torch(cell, vocab):
    torch = require_torch()
    from helpers import make_torch_layer
    rng = np.random.default_rng(7)
    layer, embedding = _pair(cell, {"bidirectional": True, "num_layers": 2}, vocab,
                             padding_idx=1)
    ids = _ids(rng, vocab, layer, padding_idx=1)
    module = make_torch_layer(torch, layer)
    table = torch.nn.Embedding(vocab, E, padding_idx=1).double()
    with torch.no_grad():
        table.weight.copy_(torch.from_numpy(embedding.weight))
    want, _ = module(table(torch.from_numpy(ids)))
    d_out = rng.standard_normal(tuple(want.shape))
    want.backward(torch.from_numpy(d_out))
    out, _, grads = _fused(layer, embedding, ids, None, d_out)
    np.testing.assert_allclose(out, want.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grads["embedding"], table.weight.grad.numpy(), rtol=1e-10,
                               atol=1e-12)
    for name, parameter in module.named_parameters():
        np.testing.assert_allclose(grads[name], parameter.grad.numpy(), rtol=1e-10,
                                   atol=1e-12, err_msg=name)


def test_bad_token_input_names_the_argument():
    layer, embedding = _pair("lstm", {}, V_SMALL)
    ids = np.zeros((T, B), dtype=np.int64)
    with pytest.raises(TypeError, match="embedding must be a fastrnn Embedding, got ndarray"):
        layer(ids, embedding=np.zeros((V_SMALL, E)))
    with pytest.raises(ValueError, match=r"embedding must give 4-wide float64 rows"):
        layer(ids, embedding=fr.Embedding(V_SMALL, E + 1, dtype="float64"))
    with pytest.raises(ValueError, match=r"embedding must give 4-wide float64 rows"):
        layer(ids, embedding=fr.Embedding(V_SMALL, E, dtype="float32"))
    with pytest.raises(TypeError, match=r"ids must be integer token ids, got floats"):
        layer(ids.astype(float), embedding=embedding)
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 7\).*from 0 to 7"):
        layer(ids + np.eye(T, B, dtype=np.int64) * 7, embedding=embedding)
    with pytest.raises(ValueError, match=r"x must be a 2-D array of token ids \(T, B\).*"
                                         r"got shape \(6, 5, 4\)"):
        layer(np.zeros((T, B, E), dtype=np.int64), embedding=embedding)
    # A diverged table is rejected as the layer rejects x: only rows it reads count.
    for table in (embedding, fr.Embedding(V_LARGE, E, dtype="float64")):
        table.weight[3, 1] = np.inf
        layer(ids, embedding=table)           # row 3 unused: fine
        with pytest.raises(ValueError, match=r"x \(the embedding rows it selects\) contains NaN"):
            layer(ids + 3, embedding=table)


@pytest.mark.parametrize("input_kind", ["embedding", "onehot"])
def test_a_task_model_stack_reads_ids_in_the_layer(input_kind):
    """RecurrentStack hands ids to the layer (an identity table for one-hot
    inputs); training matches the layer on the embedded / one-hot vectors."""
    from fastrnn.tasks.stack import RecurrentStack
    from fastrnn.text import one_hot
    rng = np.random.default_rng(8)
    vocab = 9
    ids = rng.integers(0, vocab, size=(T, B))
    lengths = random_lengths(rng, B, T)
    d_out = rng.standard_normal((T, B, 2 * H))
    stacks = [RecurrentStack("lstm", input_kind, vocab, H, embedding_dim=E, bidirectional=True,
                             dtype="float64", seed=1) for _ in range(2)]
    assert stacks[0]._id_table() is not None
    out, _ = stacks[0].forward(ids, lengths=lengths)
    assert stacks[0].rnn._cache.layers[0].input.fused
    stacks[0].backward(d_out)
    layer = stacks[1].rnn
    vectors = stacks[1].embedding.weight[ids] if input_kind == "embedding" \
        else one_hot(ids, vocab, dtype="float64")
    want, _ = layer(vectors, lengths=lengths)
    d_x, _ = layer.backward(d_out)
    np.testing.assert_array_equal(out, want)
    for name, grad in layer.grads.items():
        np.testing.assert_allclose(stacks[0].rnn.grads[name], grad, rtol=1e-12, atol=1e-13,
                                   err_msg=name)
    if input_kind == "embedding":
        want_table = np.zeros_like(stacks[1].embedding.weight)
        np.add.at(want_table, ids, d_x)
        want_table[0] = 0        # PAD
        np.testing.assert_allclose(stacks[0].embedding.grads["weight"], want_table,
                                   rtol=1e-12, atol=1e-13)


def test_a_jordan_stack_and_wide_one_hot_take_vectors():
    from fastrnn.tasks.stack import ONEHOT_TABLE_MAX, RecurrentStack
    assert RecurrentStack("jordan", "embedding", 9, H, embedding_dim=E)._id_table() is None
    assert RecurrentStack("gru", "onehot", ONEHOT_TABLE_MAX + 1, H)._id_table() is None
    assert RecurrentStack("gru", "numeric", 5, H)._id_table() is None
