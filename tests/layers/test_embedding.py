"""fr.Embedding: PyTorch parity, finite differences, threads, freezing,
pretrained vectors (GloVe / word2vec text files), bad input."""

import json
import warnings

import numpy as np
import pytest

import fastrnn as fr
from fastrnn.layers.embedding import Embedding
from helpers import central_differences

TOL = {"float32": 1e-6, "float64": 1e-13}


def torch_embedding(torch, layer):
    """torch.nn.Embedding with the weight and padding_idx of ``layer``."""
    ref = torch.nn.Embedding(layer.num_embeddings, layer.embedding_dim,
                             padding_idx=layer.padding_idx)
    ref = ref.to(torch.float64 if layer.dtype == np.float64 else torch.float32)
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    return ref


# -- parity, gradients ------------------------------------------------------------

@pytest.mark.torch
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("padding_idx", [None, 0, 3, -1])
@pytest.mark.parametrize("shape", [(6, 4), (9,), (2, 3, 5)])
def test_matches_torch(torch, dtype, padding_idx, shape):
    rng = np.random.default_rng(1)
    layer = Embedding(12, 7, padding_idx=padding_idx, dtype=dtype, seed=2)
    ref = torch_embedding(torch, layer)
    ids = rng.integers(0, 12, size=shape)
    ids.reshape(-1)[:3] = [3, 3, 11]    # repeated ids and (for some cases) padding ids
    if padding_idx is not None:
        ids.reshape(-1)[-1] = layer.padding_idx
    d_out = rng.standard_normal(shape + (7,)).astype(dtype)
    for step in range(2):    # gradients accumulate like torch's .grad
        out = layer(ids)
        assert out.dtype == np.dtype(dtype) and out.shape == shape + (7,)
        assert layer.backward(d_out) is None
        out_t = ref(torch.from_numpy(ids))
        (out_t * torch.from_numpy(d_out)).sum().backward()
        np.testing.assert_array_equal(out, out_t.detach().numpy())
        np.testing.assert_allclose(layer.grads["weight"], ref.weight.grad.numpy(),
                                   rtol=TOL[dtype], atol=TOL[dtype])
    if padding_idx is not None:
        assert not layer.grads["weight"][layer.padding_idx].any()
        assert not layer.weight[layer.padding_idx].any()


@pytest.mark.torch
def test_from_pretrained_array_matches_torch(torch):
    rng = np.random.default_rng(3)
    weight = rng.standard_normal((8, 5))
    layer = Embedding.from_pretrained(weight, padding_idx=2, dtype="float64")
    ref = torch.nn.Embedding.from_pretrained(torch.from_numpy(weight), freeze=False,
                                             padding_idx=2)
    ids = np.array([[2, 1, 2], [7, 1, 0]])
    d_out = rng.standard_normal((2, 3, 5))
    out = layer(ids)
    layer.backward(d_out)
    out_t = ref(torch.from_numpy(ids))
    (out_t * torch.from_numpy(d_out)).sum().backward()
    np.testing.assert_array_equal(out, out_t.detach().numpy())    # padding row kept as given
    np.testing.assert_allclose(layer.grads["weight"], ref.weight.grad.numpy(), rtol=1e-13)
    np.testing.assert_array_equal(layer.weight, weight)
    layer.weight[0] = 5.0
    assert weight[0, 0] != 5.0    # the layer owns a copy


def test_finite_differences():
    rng = np.random.default_rng(4)
    layer = Embedding(6, 4, dtype="float64", seed=5)
    ids = np.array([[0, 5, 5], [2, 0, 5]])
    r = rng.standard_normal((2, 3, 4))

    def loss():
        return float((layer(ids) * r).sum())

    layer(ids)
    layer.backward(r)
    param = layer.weight
    numeric = central_differences(param, loss, 1e-6).reshape(param.shape)
    np.testing.assert_allclose(layer.grads["weight"], numeric, rtol=1e-7, atol=1e-9)
    assert not numeric[[1, 3, 4]].any()    # rows never looked up


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("dim", [100, 7, 256])
def test_threads_bit_identical_and_equal_to_sequential_sum(dtype, dim):
    """Split columns keep the serial summation order for any thread count."""
    rng = np.random.default_rng(6)
    ids = np.minimum(rng.zipf(1.3, size=(80, 50)) - 1, 299)    # many repeats
    d_out = rng.standard_normal((80, 50, dim)).astype(dtype)
    expected = np.zeros((300, dim), dtype=dtype)
    np.add.at(expected, ids.reshape(-1), d_out.reshape(-1, dim))    # in index order
    results = []
    for threads in (1, 2, 3):
        fr.set_num_threads(threads)
        layer = Embedding(300, dim, dtype=dtype, seed=7)
        out = layer(ids)
        layer.backward(d_out)
        results.append((out, layer.grads["weight"].copy()))
    for out, grad in results:
        np.testing.assert_array_equal(out, results[0][0])
        np.testing.assert_array_equal(grad, expected)


# -- construction, forward/backward details ---------------------------------------

def test_init_padding_and_seed():
    a = Embedding(400, 50, padding_idx=-3, seed=11)
    b = Embedding(400, 50, padding_idx=397, seed=11)
    assert a.padding_idx == 397
    assert a.weight.dtype == np.float32 and a.weight.shape == (400, 50)
    np.testing.assert_array_equal(a.weight, b.weight)
    assert not a.weight[397].any()
    rest = np.delete(a.weight, 397, axis=0)
    assert abs(rest.mean()) < 0.02 and abs(rest.std() - 1.0) < 0.02    # N(0, 1)
    assert not np.array_equal(Embedding(400, 50, seed=12).weight, Embedding(400, 50, seed=11).weight)
    assert [name for name, _ in a.named_parameters()] == ["weight"]
    assert a.parameters()[0] is a.weight
    assert "padding_idx=397" in repr(a)


def test_scalar_empty_and_tensor_ids(torch):
    layer = Embedding(5, 3, dtype="float64", seed=0)
    np.testing.assert_array_equal(layer(np.int8(4)), layer.weight[4])
    assert layer(np.zeros((0, 2), dtype=np.int64)).shape == (0, 2, 3)
    layer.backward(np.zeros((0, 2, 3)))
    assert not layer.grads["weight"].any()
    out = layer(torch.tensor([[1, 4]]))
    np.testing.assert_array_equal(out, layer.weight[[[1, 4]]])
    np.testing.assert_array_equal(layer(np.array([2, 0], dtype=np.uint16)), layer.weight[[2, 0]])


def test_backward_reads_a_private_copy_of_ids():
    layer = Embedding(5, 2, dtype="float64", seed=0)
    ids = np.array([1, 2, 2], dtype=np.int64)
    layer(ids)
    ids[:] = 4
    layer.backward(np.ones((3, 2)))
    np.testing.assert_array_equal(layer.grads["weight"][:, 0], [0, 1, 2, 0, 0])


def test_backward_misuse():
    layer = Embedding(5, 2)
    with pytest.raises(RuntimeError, match="forward"):
        layer.backward(np.ones((1, 2), np.float32))
    layer(np.array([1, 2]))
    with pytest.raises(ValueError, match=r"d_out must have shape \(2, 2\), got \(2, 3\)"):
        layer.backward(np.ones((2, 3), np.float32))
    with pytest.raises(TypeError, match="d_out must hold float"):
        layer.backward(np.ones((2, 2), np.int64))
    with pytest.raises(ValueError, match="d_out contains NaN"):
        layer.backward(np.full((2, 2), np.nan, np.float32))
    layer.backward(np.ones((2, 2), np.float32))
    with pytest.raises(RuntimeError, match="forward"):
        layer.backward(np.ones((2, 2), np.float32))    # once per forward
    layer.eval()
    layer(np.array([1, 2]))
    with pytest.raises(RuntimeError, match="eval mode"):
        layer.backward(np.ones((2, 2), np.float32))
    layer.train()
    layer(np.array([1, 2]))
    layer.eval()    # switching to eval drops what backward needed
    with pytest.raises(RuntimeError):
        layer.backward(np.ones((2, 2), np.float32))


@pytest.mark.parametrize("ids,error,match", [
    (np.array([0, 5]), ValueError, r"ids must lie in \[0, 5\).*from 0 to 5"),
    (np.array([[-1, 2]]), ValueError, r"ids must lie in \[0, 5\).*from -1 to 2"),
    (np.array([2**63], dtype=np.uint64), ValueError, "from 9223372036854775808"),
    (np.array([0.0, 1.0]), TypeError, r"integer token ids, got floats \(float64\)"),
    (np.array([True, False]), TypeError, "integer token ids, got booleans"),
    (np.array(["a"]), TypeError, "got strings"),
    (None, TypeError, "got None"),
])
def test_bad_ids(ids, error, match):
    layer = Embedding(5, 3)
    with pytest.raises(error, match=match):
        layer(ids)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(num_embeddings=0, embedding_dim=2), ValueError, "num_embeddings"),
    (dict(num_embeddings=3, embedding_dim=2.0), ValueError, "embedding_dim"),
    (dict(num_embeddings=3, embedding_dim=2, padding_idx=3), ValueError,
     r"padding_idx must lie in \[-3, 3\).*got 3"),
    (dict(num_embeddings=3, embedding_dim=2, padding_idx=-4), ValueError, "padding_idx"),
    (dict(num_embeddings=3, embedding_dim=2, padding_idx=True), TypeError, "padding_idx"),
    (dict(num_embeddings=3, embedding_dim=2, dtype="float16"), TypeError, "dtype"),
    (dict(num_embeddings=3, embedding_dim=2, freeze="yes"), TypeError, "freeze"),
])
def test_bad_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        Embedding(**kwargs)


# -- freezing ---------------------------------------------------------------------

def test_freeze_semantics():
    layer = Embedding(6, 3, freeze=True, dtype="float64", seed=1)
    assert layer.freeze is True
    assert layer.parameters() == [] and layer.named_parameters() == []
    assert "weight" not in layer.grads
    layer.zero_grad()
    state = layer.state_dict()
    assert list(state) == ["weight"] and state["weight"].shape == (6, 3)
    new = np.arange(18.0).reshape(6, 3)
    layer.load_state_dict({"weight": new})
    np.testing.assert_array_equal(layer(np.array([5, 0])), new[[5, 0]])
    assert layer.backward(np.ones((2, 3))) is None
    with pytest.raises(ValueError, match="d_out must have shape"):
        layer(np.array([1]))
        layer.backward(np.ones((2, 3)))
    # unfreezing makes it trainable again, with a fresh zero gradient
    layer.freeze = False
    assert [name for name, _ in layer.named_parameters()] == ["weight"]
    layer(np.array([1, 1]))
    layer.backward(np.ones((2, 3)))
    np.testing.assert_array_equal(layer.grads["weight"][1], [2, 2, 2])
    assert layer.grads["weight"].sum() == 6
    layer.freeze = True
    assert layer.parameters() == [] and "weight" not in layer.grads


# -- from_pretrained: arrays and vocab forms ---------------------------------------

class TokenVocab:
    def __init__(self, tokens):
        self.tokens = list(tokens)


def test_from_pretrained_array_options():
    weight = np.arange(12, dtype=np.float32).reshape(4, 3)
    layer = Embedding.from_pretrained(weight, vocab=["a", "b", "c", "d"], freeze=True)
    assert layer.freeze and layer.weight.dtype == np.float32
    np.testing.assert_array_equal(layer.weight, weight)
    Embedding.from_pretrained(weight, vocab={"a": 2, "b": 0, "c": 1, "d": 3})
    Embedding.from_pretrained(weight, vocab=TokenVocab("abcd"))


@pytest.mark.parametrize("source,vocab,error,match", [
    (np.ones(4), None, ValueError, r"\(V, D\) array.*got shape \(4,\)"),
    (np.ones((2, 2, 2)), None, ValueError, r"got shape \(2, 2, 2\)"),
    (np.ones((0, 3)), None, ValueError, r"got shape \(0, 3\)"),
    (np.ones((2, 3), dtype=np.int64), None, TypeError, "float array or a file path"),
    (np.array([[1.0, np.inf]]), None, ValueError, "source contains NaN"),
    (np.ones((2, 3)), ["a", "b", "c"], ValueError, "vocab has 3 tokens but source has 2 rows"),
    (np.ones((2, 3)), "ab", TypeError, "vocab must have a 'tokens' attribute"),
    (np.ones((2, 3)), ["a", "a"], ValueError, r"'a' appears twice \(ids 0 and 1\)"),
    (np.ones((2, 3)), ["a", 3], TypeError, "tokens must be str, got int"),
    (np.ones((2, 3)), {"a": 0, "b": 2}, ValueError, "each id 0..1 exactly once"),
    (np.ones((2, 3)), {"a": 0, "b": "1"}, TypeError, "int ids"),
    (np.ones((2, 3)), [], ValueError, "at least one token"),
])
def test_from_pretrained_bad_array_or_vocab(source, vocab, error, match):
    with pytest.raises(error, match=match):
        Embedding.from_pretrained(source, vocab=vocab)


# -- from_pretrained: text files --------------------------------------------------

GLOVE = ("the 0.5 -1.0 2.0\n"
         "cat 1.0 1.5 -0.5\n"
         "ignored 1 2\n"            # wrong size, but not a vocab word: never parsed
         "café -2.0 0.25 3.0\n"
         "cat 9 9 9\n"              # duplicate: the first line wins
         "new york 4.0 5.0 6.0\n"   # a word with a space
         "\n")


def write(tmp_path, text, name="vectors.txt"):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def test_glove_file(tmp_path):
    path = write(tmp_path, GLOVE)
    vocab = ["<pad>", "<unk>", "cat", "the", "new york", "café", "dog"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        layer = Embedding.from_pretrained(path, vocab=vocab, padding_idx=0, seed=3,
                                          dtype="float64")
    assert len(caught) == 1 and caught[0].category is UserWarning
    message = str(caught[0].message)
    assert "2 of 7 vocab words" in message and "'<unk>'" in message and "'dog'" in message
    assert "<pad>" not in message    # the padding row is zero, not random
    w = layer.weight
    np.testing.assert_array_equal(w[3], [0.5, -1.0, 2.0])
    np.testing.assert_array_equal(w[2], [1.0, 1.5, -0.5])
    np.testing.assert_array_equal(w[4], [4.0, 5.0, 6.0])
    np.testing.assert_array_equal(w[5], [-2.0, 0.25, 3.0])
    np.testing.assert_array_equal(w[0], 0.0)
    loaded = np.array([[0.5, -1.0, 2.0], [1.0, 1.5, -0.5], [4.0, 5.0, 6.0], [-2.0, 0.25, 3.0]])
    expected = np.random.default_rng(3).normal(0.0, loaded.std(), (2, 3))
    np.testing.assert_allclose(w[[1, 6]], expected, rtol=1e-15)
    assert layer.padding_idx == 0 and not layer.freeze
    # the padding row gets no gradient, as in the constructor
    layer(np.array([0, 2]))
    layer.backward(np.ones((2, 3)))
    assert not layer.grads["weight"][0].any() and layer.grads["weight"][2].all()


def test_word2vec_file_crlf_and_vocab_object(tmp_path):
    text = "3 2\r\nthe 0.1 0.2 \r\ndog -1e-1 3\r\ncat 7 8\r\n"
    path = write(tmp_path, text, "w2v.txt")
    layer = Embedding.from_pretrained(str(path), vocab=TokenVocab(["cat", "dog"]),
                                      dtype="float32", freeze=True)
    assert layer.weight.dtype == np.float32 and layer.freeze
    np.testing.assert_array_equal(layer.weight, np.array([[7, 8], [-0.1, 3]], np.float32))


def test_glove_with_bom_and_mapping_vocab(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbfa 1 2\nb 3 4\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer = Embedding.from_pretrained(path, vocab={"b": 0, "a": 1}, dtype="float64")
    np.testing.assert_array_equal(layer.weight, [[3, 4], [1, 2]])


def test_missing_words_seeded(tmp_path):
    path = write(tmp_path, "a 1 2\nb 3 -4\n")
    with pytest.warns(UserWarning, match=r"1 of 3 vocab words .* 'zzz'"):
        a = Embedding.from_pretrained(path, vocab=["a", "zzz", "b"], seed=5)
    with pytest.warns(UserWarning):
        b = Embedding.from_pretrained(path, vocab=["a", "zzz", "b"], seed=5)
    np.testing.assert_array_equal(a.weight, b.weight)
    assert a.weight[1].any()


@pytest.mark.parametrize("text,vocab,match", [
    ("a 1 2 3\nb 1 2\n", ["a", "b"], r"vectors.txt', line 2: expected 3 values after the "
                                     r"word 'b', got 2"),
    ("2 3\na 1 2 3\nb 1 2 3 4\n", ["b"], r"line 3: expected 3 values"),
    ("a 1 2\n\nb 1 x\n", ["b"], r"line 3: value 'x' for the word 'b' is not a number"),
    ("a 1 2\nb 1 nan\n", ["b"], r"line 2: the vector of 'b' contains NaN"),
    ("a 1 2\nb\n", ["b"], r"line 2: expected 2 values after the word 'b', got 0"),
    ("a\n", ["a"], r"line 1: expected a word followed by its vector values"),
    ("a 1 2\nb 3 4\n", ["x", "y"], r"none of the 2 vocab words was found in .*vectors.txt"),
    ("2 3\n", ["a"], "header declares 2 vectors of 3 values, more than the file's 4 "
                     "bytes can hold"),
    ("3 1000000000\na 1 2\n", ["a"], "header declares 3 vectors of 1000000000 values"),
    ("1 2\nx 1 2\n", ["a"], "none of the 1 vocab words"),
    ("", ["a"], r"vectors.txt' contains no vectors"),
    ("0 0\n", ["a"], r"line 1: word2vec header gives dimension 0"),
])
def test_bad_files(tmp_path, text, vocab, match):
    path = write(tmp_path, text)
    with pytest.raises(ValueError, match=match):
        Embedding.from_pretrained(path, vocab=vocab)


def test_file_needs_vocab_and_existing_path(tmp_path):
    path = write(tmp_path, "a 1 2\n")
    with pytest.raises(ValueError, match="vocab is required"):
        Embedding.from_pretrained(path)
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        Embedding.from_pretrained(tmp_path / "nope.txt", vocab=["a"])


def test_state_dict_round_trip_is_jsonable_free():
    """No random generator: rng_state is None (checkpoints store nothing for it)."""
    layer = Embedding(4, 2, seed=0)
    assert layer.rng_state() is None
    json.dumps(layer.rng_state())
    other = Embedding(4, 2, seed=1)
    other.load_state_dict(layer.state_dict())
    np.testing.assert_array_equal(other.weight, layer.weight)
