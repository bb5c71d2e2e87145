"""fr.Jordan: a float64 numpy reference, finite-difference gradients for every
option and activation, lengths, threads, state dicts and bad input."""

import itertools

import numpy as np
import pytest

import fastrnn as fr

HIDDEN = ("tanh", "relu")
OUTPUT = ("identity", "tanh", "sigmoid", "softmax")


# -- reference --------------------------------------------------------------------

def _g(kind, z):
    if kind == "identity":
        return z
    if kind == "tanh":
        return np.tanh(z)
    if kind == "sigmoid":
        return 1 / (1 + np.exp(-z))
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def reference_forward(layer, x, hx=None, lengths=None):
    """Plain numpy loop over time for every layer, time-major x (T, B, E)."""
    p = layer.state_dict()
    steps, batch, _ = x.shape
    lengths = np.full(batch, steps) if lengths is None else np.asarray(lengths)
    finals = []
    layer_input = x
    for k in range(layer.num_layers):
        y = np.zeros((batch, layer.output_size)) if hx is None else hx[k].copy()
        out = np.zeros((steps, batch, layer.output_size))
        for t in range(steps):
            a = layer_input[t] @ p[f"weight_ih_l{k}"].T + y @ p[f"weight_yh_l{k}"].T
            a = a + p.get(f"bias_ih_l{k}", 0)
            h = np.tanh(a) if layer.nonlinearity == "tanh" else np.maximum(a, 0)
            z = h @ p[f"weight_hy_l{k}"].T + p.get(f"bias_hy_l{k}", 0)
            y_new = _g(layer.output_activation, z)
            live = (t < lengths)[:, None]
            out[t] = np.where(live, y_new, 0)
            y = np.where(live, y_new, y)
        finals.append(y)
        layer_input = out
    return layer_input, np.stack(finals)


def make(hidden="tanh", output="identity", **options):
    options.setdefault("dtype", "float64")
    options.setdefault("seed", 3)
    return fr.Jordan(4, 5, 3, nonlinearity=hidden, output_activation=output, **options)


def data(steps=6, batch=4, features=4, outputs=3, seed=0, layers=1):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((steps, batch, features)),
            rng.standard_normal((layers, batch, outputs)) * 0.5,
            rng.standard_normal((steps, batch, outputs)),
            rng.standard_normal((layers, batch, outputs)))


# -- forward ------------------------------------------------------------------------

@pytest.mark.parametrize("hidden,output", list(itertools.product(HIDDEN, OUTPUT)))
def test_forward_matches_numpy_reference(hidden, output):
    layer = make(hidden, output, num_layers=2)
    x, hx, _, _ = data(layers=2)
    lengths = [6, 3, 1, 5]
    out, y_n = layer(x, hx=hx, lengths=lengths)
    ref_out, ref_yn = reference_forward(layer, x, hx, lengths)
    np.testing.assert_allclose(out, ref_out, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(y_n, ref_yn, rtol=1e-12, atol=1e-13)


def test_float32_close_to_float64_and_batch_first():
    layer64 = make("tanh", "softmax", num_layers=2, batch_first=True)
    layer32 = make("tanh", "softmax", num_layers=2, batch_first=True, dtype="float32")
    layer32.load_state_dict(layer64.state_dict())
    x = np.random.default_rng(1).standard_normal((3, 7, 4))      # (B, T, E)
    out64, y64 = layer64(x)
    out32, y32 = layer32(x.astype(np.float32))
    assert out32.dtype == np.float32 and out32.shape == (3, 7, 3)
    np.testing.assert_allclose(out32, out64, atol=2e-5)
    np.testing.assert_allclose(y32, y64, atol=2e-5)
    ref, _ = reference_forward(layer64, x.transpose(1, 0, 2))
    np.testing.assert_allclose(out64, ref.transpose(1, 0, 2), rtol=1e-12, atol=1e-13)


def test_softmax_outputs_are_distributions():
    out, _ = make("relu", "softmax")(data()[0])
    np.testing.assert_allclose(out.sum(axis=-1), 1.0, rtol=1e-12)


def test_eval_mode_matches_training_forward():
    layer = make("tanh", "sigmoid", num_layers=2)
    x, hx, _, _ = data(layers=2)
    train_out, _ = layer(x, hx=hx, lengths=[2, 6, 6, 4])
    layer.eval()
    eval_out, _ = layer(x, hx=hx, lengths=[2, 6, 6, 4])
    np.testing.assert_array_equal(train_out, eval_out)
    with pytest.raises(RuntimeError, match="training mode"):
        layer.backward(np.zeros_like(eval_out))


# -- gradients -------------------------------------------------------------------------

def _loss(layer, x, hx, lengths, d_out, d_yn):
    out, y_n = layer(x, hx=hx, lengths=lengths)
    return float((out * d_out).sum() + (y_n * d_yn).sum())


def _check_gradients(layer, x, hx, lengths, d_out, d_yn, eps=1e-6, tol=1e-6):
    layer.zero_grad()
    layer(x, hx=hx, lengths=lengths)
    d_x, d_y0 = layer.backward(d_out, d_yn)
    numeric = {}
    for name, value in layer.named_parameters():
        grad = np.zeros_like(value)
        for idx in np.ndindex(value.shape):
            keep = value[idx]
            value[idx] = keep + eps
            up = _loss(layer, x, hx, lengths, d_out, d_yn)
            value[idx] = keep - eps
            down = _loss(layer, x, hx, lengths, d_out, d_yn)
            value[idx] = keep
            grad[idx] = (up - down) / (2 * eps)
        numeric[name] = grad
    for name in numeric:
        np.testing.assert_allclose(layer.grads[name], numeric[name], rtol=tol, atol=tol,
                                   err_msg=name)
    for given, analytic in ((x, d_x), (hx, d_y0)):
        flat = given.reshape(-1)
        expect = np.zeros_like(flat)
        for i in range(flat.size):
            keep = flat[i]
            flat[i] = keep + eps
            up = _loss(layer, x, hx, lengths, d_out, d_yn)
            flat[i] = keep - eps
            down = _loss(layer, x, hx, lengths, d_out, d_yn)
            flat[i] = keep
            expect[i] = (up - down) / (2 * eps)
        np.testing.assert_allclose(analytic.reshape(-1), expect, rtol=tol, atol=tol)


@pytest.mark.parametrize("hidden,output", list(itertools.product(HIDDEN, OUTPUT)))
def test_gradients_finite_difference(hidden, output):
    layer = make(hidden, output)
    x, hx, d_out, d_yn = data(steps=5, batch=3)
    _check_gradients(layer, x, hx, [5, 2, 4], d_out, d_yn)


@pytest.mark.parametrize("options", [dict(num_layers=2), dict(bias=False),
                                     dict(num_layers=2, bias=False, output="tanh")])
def test_gradients_finite_difference_options(options):
    options = dict(options)
    output = options.pop("output", "sigmoid")
    layer = make("tanh", output, **options)
    layers = layer.num_layers
    x, hx, d_out, d_yn = data(steps=4, batch=3, layers=layers)
    _check_gradients(layer, x, hx, None, d_out, d_yn)


def test_gradients_batch_first_without_hx():
    layer = make("relu", "identity", batch_first=True)
    x, _, d_out, d_yn = data(steps=4, batch=2)
    xb = np.ascontiguousarray(x.transpose(1, 0, 2))
    layer(xb)
    d_x, d_y0 = layer.backward(d_out.transpose(1, 0, 2), d_yn)
    ref = make("relu", "identity")
    ref(x)
    d_x_ref, d_y0_ref = ref.backward(d_out, d_yn)
    np.testing.assert_allclose(d_x, d_x_ref.transpose(1, 0, 2), rtol=1e-12)
    np.testing.assert_allclose(d_y0, d_y0_ref, rtol=1e-12)
    for name in ref.grads:
        np.testing.assert_allclose(layer.grads[name], ref.grads[name], rtol=1e-12)


def test_threads_give_the_same_results():
    layer = fr.Jordan(6, 32, 8, output_activation="tanh", num_layers=2, dtype="float64",
                      seed=1)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((20, 64, 6))
    lengths = rng.integers(1, 21, size=64)
    d_out = rng.standard_normal((20, 64, 8))
    results = []
    previous = fr.get_num_threads()
    try:
        for threads in (1, 2):
            fr.set_num_threads(threads)
            layer.zero_grad()
            out, _ = layer(x, lengths=lengths)
            d_x, _ = layer.backward(d_out)
            results.append((out, d_x, {k: v.copy() for k, v in layer.grads.items()}))
    finally:
        fr.set_num_threads(previous)
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-13)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-11, atol=1e-13)
    for name in layer.grads:
        np.testing.assert_allclose(results[0][2][name], results[1][2][name],
                                   rtol=1e-10, atol=1e-12)


def test_state_grad_false_skips_only_the_initial_state_gradient():
    layer = make(output="tanh", num_layers=2)
    x, hx, d_out, d_hn = data(layers=2)
    lengths = [6, 2, 5, 1]
    results = []
    for state_grad in (True, False):
        layer.zero_grad()
        layer(x, hx=hx, lengths=lengths)
        d_x, d_y0 = layer.backward(d_out, d_hn=d_hn, state_grad=state_grad)
        assert (d_y0 is None) == (not state_grad)
        results.append([d_x] + [layer.grads[k].copy() for k in sorted(layer.grads)])
    for got, want in zip(results[1], results[0]):
        np.testing.assert_array_equal(got, want)


# -- API -------------------------------------------------------------------------------

def test_state_dict_names_and_shapes():
    layer = fr.Jordan(4, 5, 3, num_layers=2)
    shapes = {name: value.shape for name, value in layer.state_dict().items()}
    assert shapes == {
        "weight_ih_l0": (5, 4), "weight_yh_l0": (5, 3), "bias_ih_l0": (5,),
        "weight_hy_l0": (3, 5), "bias_hy_l0": (3,),
        "weight_ih_l1": (5, 3), "weight_yh_l1": (5, 3), "bias_ih_l1": (5,),
        "weight_hy_l1": (3, 5), "bias_hy_l1": (3,)}
    other = fr.Jordan(4, 5, 3, num_layers=2, seed=9)
    other.load_state_dict(layer.state_dict())
    x = np.ones((2, 1, 4), np.float32)
    np.testing.assert_array_equal(other(x)[0], layer(x)[0])
    assert set(fr.Jordan(4, 5, 3, bias=False).state_dict()) == {
        "weight_ih_l0", "weight_yh_l0", "weight_hy_l0"}


def test_seed_makes_parameters_reproducible():
    a, b = fr.Jordan(3, 4, 2, seed=5), fr.Jordan(3, 4, 2, seed=5)
    for name, value in a.state_dict().items():
        np.testing.assert_array_equal(value, b.state_dict()[name])


@pytest.mark.parametrize("kwargs,match", [
    (dict(output_activation="relu"), "output_activation"),
    (dict(output_activation=None), "output_activation"),
    (dict(nonlinearity="sigmoid"), "nonlinearity"),
    (dict(num_layers=0), "num_layers"),
    (dict(dtype="float16"), "dtype"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        fr.Jordan(3, 4, 2, **kwargs)


def test_bad_inputs():
    layer = fr.Jordan(3, 4, 2)
    with pytest.raises(ValueError, match="input_size"):
        layer(np.zeros((2, 1, 5), np.float32))
    with pytest.raises(ValueError, match="hx"):
        layer(np.zeros((2, 1, 3), np.float32), hx=np.zeros((1, 1, 4), np.float32))
    with pytest.raises(ValueError, match="lengths"):
        layer(np.zeros((2, 1, 3), np.float32), lengths=[3])
    with pytest.raises(ValueError, match="NaN"):
        layer(np.full((2, 1, 3), np.nan, np.float32))
    layer(np.zeros((2, 1, 3), np.float32))
    with pytest.raises(ValueError, match="d_out"):
        layer.backward(np.zeros((2, 1, 3), np.float32))


# -- task models ------------------------------------------------------------------------

def test_task_models_accept_jordan(tmp_path):
    texts = ["good movie", "bad movie", "great fun", "awful bore"] * 10
    labels = ["pos", "neg", "pos", "neg"] * 10
    clf = fr.SequenceClassifier(cell="jordan", hidden_size=16, seed=0)
    clf.fit(texts, labels, epochs=20)
    assert isinstance(clf.network_.rnn, fr.Jordan)
    assert list(clf.predict(["good movie", "awful bore"])) == ["pos", "neg"]
    clf.save(tmp_path / "clf.npz")
    loaded = fr.load(tmp_path / "clf.npz")
    np.testing.assert_array_equal(loaded.predict_proba(texts[:4]), clf.predict_proba(texts[:4]))


def test_task_model_jordan_refuses_bidirectional():
    with pytest.raises(ValueError, match="bidirectional"):
        fr.SequenceTagger(cell="jordan", bidirectional=True).fit([["a", "b"]], [["X", "Y"]])
