"""LanguageModel(tie_weights=True): one matrix for the embedding and the output
layer, gradients summed (PyTorch parity and finite differences in float64),
listed and saved once, and the size rules."""

import numpy as np
import pytest

from fastrnn.data import StreamBatcher
from fastrnn.tasks import load
from fastrnn.tasks.language_model import LanguageModel, TiedOutput
from fastrnn.text import PAD

TEXT = " ".join(["the cat sees the moon.", "a dog likes her garden.",
                 "my friend paints two small boats."] * 6)


def _tied(cell="lstm", **options):
    lm = LanguageModel(level="char", cell=cell, hidden_size=6, embedding_dim=6,
                       dtype="float64", seed=0, tie_weights=True, **options)
    lm.fit(TEXT, epochs=1, batch_size=3, bptt=5, verbose=0)
    return lm


def _chunk_gradients(lm):
    """Chunks, the state carried into the second one, and its loss (and
    gradients, in the modules)."""
    chunks = list(StreamBatcher(lm._stream([TEXT], "text"), 3, 5))[:2]
    lm._set_mode(True)
    lm.on_epoch_begin(0, True)
    lm.train_batch(chunks[0])
    carried = [part.copy() for part in lm._carry["train"]]
    for module in lm.modules():
        module.zero_grad()
    metrics, _ = lm.train_batch(chunks[1])
    lm._set_mode(False)
    return chunks, carried, metrics["loss"]


def test_the_matrix_is_shared_and_listed_once():
    lm = _tied()
    embedding = lm.network_.embedding
    assert isinstance(lm.head_, TiedOutput)
    assert lm.head_._params["weight"] is embedding.weight
    params = [p for m in lm.modules() for p in m.parameters()]
    assert len({id(p) for p in params}) == len(params)
    assert [name for name, _ in lm.head_.named_parameters()] == ["bias"]
    # training moved the one matrix (the optimizer stepped it once per batch)
    fresh = LanguageModel(level="char", hidden_size=6, embedding_dim=6, dtype="float64",
                          seed=0, tie_weights=True)
    fresh._build(lm.vocab_)
    assert not np.allclose(fresh.network_.embedding.weight, embedding.weight)


@pytest.mark.torch
def test_tied_gradients_match_torch(torch):
    lm = _tied()
    chunks, _, loss_value = _chunk_gradients(lm)
    net = lm.network_
    V, H = len(lm.vocab_), lm.hidden_size
    rnn = torch.nn.LSTM(H, H).double()
    rnn.load_state_dict({k: torch.from_numpy(v) for k, v in net.rnn.state_dict().items()})
    embedding = torch.nn.Embedding(V, H, padding_idx=PAD).double()
    embedding.weight.data = torch.from_numpy(net.embedding.state_dict()["weight"])
    head = torch.nn.Linear(H, V).double()
    head.weight = embedding.weight                                     # tied, as in torch
    head.bias.data = torch.from_numpy(lm.head_.state_dict()["bias"])
    with torch.no_grad():
        _, state = rnn(embedding(torch.from_numpy(chunks[0].inputs)))
    out, _ = rnn(embedding(torch.from_numpy(chunks[1].inputs)), state)
    logits = head(out)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V),
                                             torch.from_numpy(chunks[1].targets.reshape(-1)))
    loss.backward()
    assert loss_value == pytest.approx(loss.item(), rel=1e-10)
    np.testing.assert_allclose(net.embedding.grads["weight"], embedding.weight.grad.numpy(),
                               rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(lm.head_.grads["bias"], head.bias.grad.numpy(), rtol=1e-8,
                               atol=1e-12)


def test_tied_gradient_matches_finite_differences():
    """The shared matrix's gradient is the sum of both uses: perturbing one entry
    changes the input embedding and the output weight together."""
    lm = _tied(cell="gru")
    chunks, carried, _ = _chunk_gradients(lm)
    weight = lm.network_.embedding.weight
    grad = lm.network_.embedding.grads["weight"].copy()
    rng = np.random.default_rng(0)

    def loss():      # truncated BPTT: the carried state is a constant
        lm._carry["eval"] = [part.copy() for part in carried]
        return lm.loss_(lm._forward_chunk(chunks[1], "eval"), chunks[1].targets)[0]

    used = np.unique(chunks[1].inputs)
    rows = np.concatenate([used[:3], [PAD]])          # input rows, and PAD: output only
    for row in rows:
        for col in rng.choice(weight.shape[1], size=2, replace=False):
            saved = weight[row, col]
            weight[row, col] = saved + 1e-6
            up = loss()
            weight[row, col] = saved - 1e-6
            down = loss()
            weight[row, col] = saved
            assert grad[row, col] == pytest.approx((up - down) / 2e-6, rel=1e-5, abs=1e-9)
    assert np.abs(grad[PAD]).max() > 0       # the output use reaches the padding row


def test_save_load_keeps_the_tie(tmp_path):
    lm = _tied()
    path = tmp_path / "tied.npz"
    lm.save(path)
    with np.load(path) as archive:
        assert sum(archive[name].shape == lm.network_.embedding.weight.shape
                   for name in archive.files if name.endswith("weight")) == 1
    loaded = load(path)
    assert loaded.get_params()["tie_weights"] is True
    assert loaded.head_._params["weight"] is loaded.network_.embedding.weight
    assert loaded.generate("the ", length=30, seed=1) == lm.generate("the ", length=30, seed=1)
    assert loaded.evaluate(TEXT[:200]) == lm.evaluate(TEXT[:200])


def test_tie_weights_learns():
    lm = LanguageModel(level="char", hidden_size=32, embedding_dim=32, seed=0,
                       tie_weights=True)
    lm.fit(TEXT, epochs=8, batch_size=8, bptt=16, verbose=0, lr=0.01)
    losses = lm.history_.history["loss"]
    assert losses[-1] < 0.6 * losses[0]


def test_tie_weights_bad_input():
    with pytest.raises(ValueError, match="tie_weights=True needs embedding_dim == "
                                         "hidden_size.*embedding_dim=4, hidden_size=6"):
        LanguageModel(hidden_size=6, embedding_dim=4, tie_weights=True).fit(TEXT, verbose=0)
    with pytest.raises(ValueError, match="tie_weights=True needs input='embedding'"):
        LanguageModel(hidden_size=6, input="onehot", tie_weights=True).fit(TEXT, verbose=0)
    with pytest.raises(ValueError, match="tie_weights=True needs a trainable embedding"):
        LanguageModel(hidden_size=6, embedding_dim=6, freeze_embedding=True,
                      tie_weights=True).fit(TEXT, verbose=0)
    with pytest.raises(TypeError, match="tie_weights must be True or False"):
        LanguageModel(tie_weights="yes").fit(TEXT, verbose=0)
