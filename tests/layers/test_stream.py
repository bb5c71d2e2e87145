"""Layer streams: step-by-step runs equal whole-sequence runs bit for bit."""

import threading

import numpy as np
import pytest

import fastrnn as fr
from helpers import CELLS, make_layer


def _state_equal(a, b):
    if isinstance(a, tuple):
        return all(np.array_equal(x, y) for x, y in zip(a, b))
    return np.array_equal(a, b)


def _initial_state(layer, batch, rng):
    shape = (layer.num_layers, batch, layer.hidden_size)
    h0 = rng.standard_normal(shape).astype(layer.dtype)
    if isinstance(layer, fr.LSTM):
        return h0, rng.standard_normal(shape).astype(layer.dtype)
    return h0


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("threads", [1, 2])
def test_steps_equal_whole_sequence_bit_for_bit(cell, dtype, threads):
    rng = np.random.default_rng(3)
    fr.set_num_threads(threads)
    layer = make_layer(cell, 5, 7, num_layers=3, dtype=dtype, seed=1).eval()
    batch, steps = 3, 9
    x = rng.standard_normal((steps, batch, 5)).astype(dtype)
    hx = _initial_state(layer, batch, rng)
    out, h_n = layer(x, hx)
    stream = layer.stream(batch_size=batch, hx=hx)
    ys = np.stack([stream.step(x[t]) for t in range(steps)])
    assert ys.dtype == np.dtype(dtype) and ys.shape == (steps, batch, 7)
    assert np.array_equal(ys, out)
    assert _state_equal(stream.state, h_n)


VARIANTS = {
    "gru_reset_before": lambda dtype: fr.GRU(5, 7, num_layers=2, dtype=dtype, seed=1,
                                              reset_after=False),
    "lstm_peepholes_proj": lambda dtype: fr.LSTM(5, 7, num_layers=2, dtype=dtype, seed=1,
                                                 peepholes=True, proj_size=3),
    "lstm_clip_input_forget": lambda dtype: fr.LSTM(5, 7, num_layers=2, dtype=dtype,
                                                    seed=1, cell_clip=0.5,
                                                    input_forget=True),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cell_variant_steps_equal_whole_sequence_bit_for_bit(variant, dtype):
    """Streams run the layer's own cell variant (second product, peepholes,
    state width proj_size), not the plain cell."""
    rng = np.random.default_rng(4)
    layer = VARIANTS[variant](dtype).eval()
    batch, steps = 3, 8
    x = rng.standard_normal((steps, batch, 5)).astype(dtype)
    width = layer.proj_size if getattr(layer, "proj_size", 0) else layer.hidden_size
    h0 = rng.standard_normal((2, batch, width)).astype(dtype)
    if isinstance(layer, fr.LSTM):
        hx = (h0, rng.standard_normal((2, batch, layer.hidden_size)).astype(dtype))
    else:
        hx = h0
    out, h_n = layer(x, hx)
    stream = layer.stream(batch_size=batch, hx=hx)
    ys = np.stack([stream.step(x[t]) for t in range(steps)])
    assert ys.shape == (steps, batch, width)
    assert np.array_equal(ys, out)
    assert _state_equal(stream.state, h_n)
    # The plain cell gives different outputs: the variant is really used.
    plain = (fr.GRU(5, 7, num_layers=2, dtype=dtype) if isinstance(layer, fr.GRU)
             else None)
    if plain is not None:
        plain.load_state_dict(layer.state_dict())
        assert not np.array_equal(plain.eval()(x, hx)[0], ys)


def test_stream_from_zero_state_and_reset():
    rng = np.random.default_rng(0)
    layer = fr.LSTM(4, 6, num_layers=2, seed=2).eval()
    x = rng.standard_normal((5, 2, 4)).astype(np.float32)
    out, (h_n, c_n) = layer(x)
    stream = layer.stream(batch_size=2)
    first = [stream.step(x[t]) for t in range(5)]
    stream.reset()
    second = [stream.step(x[t]) for t in range(5)]
    assert np.array_equal(np.stack(first), out) and np.array_equal(np.stack(second), out)
    h, c = stream.state
    assert np.array_equal(h, h_n) and np.array_equal(c, c_n)
    # The state is a copy: changing it does not move the stream.
    h[...] = 5
    assert np.array_equal(stream.state[0], h_n)
    # Continue from a given state: equals layer(x[2:], state after 2 steps).
    stream.reset()
    stream.step(x[0])
    stream.step(x[1])
    mid = stream.state
    stream.reset(mid)
    rest = np.stack([stream.step(x[t]) for t in range(2, 5)])
    assert np.array_equal(rest, layer(x[2:], mid)[0])


def test_training_mode_layer_streams_without_dropout():
    rng = np.random.default_rng(1)
    layer = fr.GRU(3, 4, num_layers=2, dropout=0.5, seed=0)
    x = rng.standard_normal((4, 1, 3)).astype(np.float32)
    stream = layer.stream()
    ys = np.stack([stream.step(x[t]) for t in range(4)])
    assert np.array_equal(ys, layer.eval()(x)[0])


def test_input_conversion_matches_layer():
    """Lists and float64 input to a float32 layer are converted like layer(x)."""
    layer = fr.RNN(2, 3, seed=0).eval()
    x64 = np.array([[0.5, -1.0]])
    expected = layer(x64[None])[0][0]
    assert np.array_equal(layer.stream().step(x64), expected)
    assert np.array_equal(layer.stream().step([[0.5, -1.0]]), expected)
    # A non-contiguous view is accepted as well.
    wide = np.array([[0.5, 9.0, -1.0]], np.float32)[:, ::2]
    assert np.array_equal(layer.stream().step(wide), expected)


@pytest.mark.parametrize("bad, error, match", [
    (np.zeros((2, 3), np.float32), ValueError, r"x_t must have shape \(1, 3\).*\(2, 3\)"),
    (np.zeros((1, 4), np.float32), ValueError, r"x_t must have shape \(1, 3\).*\(1, 4\)"),
    (np.zeros((1, 1, 3), np.float32), ValueError, r"x_t must have shape \(1, 3\).*\(1, 1, 3\)"),
    (np.zeros((1, 1, 3)), ValueError, r"x_t must have 2 dimensions"),
    (np.zeros((1, 3), np.int64), TypeError, r"x_t must hold float32 or float64.*integers"),
    (np.array([[0.0, np.nan, 1.0]], np.float32), ValueError, r"x_t contains NaN"),
    (np.array([[0.0, np.inf, 1.0]], np.float32), ValueError, r"x_t contains NaN"),
    (None, TypeError, r"x_t must be an array"),
])
def test_bad_x_t(bad, error, match):
    layer = fr.LSTM(3, 4, seed=0).eval()
    stream = layer.stream()
    before = stream.state
    with pytest.raises(error, match=match):
        stream.step(bad)
    assert _state_equal(stream.state, before)     # a refused step changes nothing


def test_bad_stream_arguments():
    layer = fr.LSTM(3, 4, seed=0)
    with pytest.raises(ValueError, match="bidirectional=True.*cannot stream"):
        fr.GRU(3, 4, bidirectional=True).stream()
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        layer.stream(batch_size=0)
    with pytest.raises(TypeError, match=r"hx must be a tuple \(h, c\)"):
        layer.stream(hx=np.zeros((1, 1, 4)))
    with pytest.raises(ValueError, match=r"hx\[0\] must have shape \(1, 2, 4\)"):
        layer.stream(batch_size=2, hx=(np.zeros((1, 1, 4)), np.zeros((1, 1, 4))))
    stream = layer.stream()
    with pytest.raises(ValueError, match=r"hx\[1\] contains NaN"):
        stream.reset((np.zeros((1, 1, 4)), np.full((1, 1, 4), np.nan)))


def test_stream_repacks_after_load_state_dict_and_optimizer_step():
    """Streams re-pack at the next step when the weights may have changed."""
    rng = np.random.default_rng(2)
    layer = fr.LSTM(3, 5, seed=0).eval()
    other = fr.LSTM(3, 5, seed=9)
    x = rng.standard_normal((1, 1, 3)).astype(np.float32)
    stream = layer.stream()
    before = stream.step(x[0])
    layer.load_state_dict(other.state_dict())
    stream.reset()
    assert np.array_equal(stream.step(x[0]), other.eval()(x)[0][0])
    assert not np.array_equal(before, other.eval()(x)[0][0])
    # An optimizer step (it lists the live arrays) moves the stream's weights too.
    stream = layer.stream()
    layer.train()
    out, _ = layer(x)
    layer.backward(np.ones_like(out))
    fr.optim.SGD(layer, lr=0.5).step()
    layer.eval()
    assert np.array_equal(stream.step(x[0]), layer(x)[0][0])
    # Writing into a parameter array kept from before is seen after reset().
    weight = dict(layer.named_parameters())["weight_ih_l0"]
    stream = layer.stream()
    stale = stream.step(x[0])
    weight += 1.0       # after the stream packed: the version did not move
    stream.reset()
    fresh = stream.step(x[0])
    assert np.array_equal(fresh, layer(x)[0][0]) and not np.array_equal(fresh, stale)


def test_many_streams_in_threads_equal_runs_alone():
    rng = np.random.default_rng(4)
    layer = fr.GRU(6, 32, num_layers=2, seed=0).eval()
    inputs = [rng.standard_normal((200, 2, 6)).astype(np.float32) for _ in range(6)]
    alone = [layer(x)[0] for x in inputs]
    results = [None] * len(inputs)
    start = threading.Barrier(len(inputs))

    def run(i):
        stream = layer.stream(batch_size=2)
        start.wait()
        results[i] = np.stack([stream.step(x_t) for x_t in inputs[i]])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for got, expected in zip(results, alone):
        assert np.array_equal(got, expected)


def test_reset_packs_again_only_when_the_weights_may_have_changed(monkeypatch):
    """A stream per sequence of a fixed model does not pack at every reset;
    a held parameter array (writes through it are possible) or a change of
    version makes reset pack again, and the write is seen."""
    from fastrnn.layers.stream import Stream

    layer = fr.GRU(4, 8, seed=0).eval()
    stream = layer.stream()
    packs, pack = [], Stream._pack
    monkeypatch.setattr(Stream, "_pack", lambda self: (packs.append(1), pack(self)))
    x = np.ones((1, 4), np.float32)
    stream.step(x)
    stream.reset()
    stream.step(x)
    assert packs == []
    weight = layer.parameters()[0]
    stream.reset()
    stream.reset()
    assert len(packs) == 2
    weight += 1.0
    del weight
    stream.reset()
    assert len(packs) == 3
    np.testing.assert_array_equal(stream.step(x), layer(x[None])[0][0])
    assert len(packs) == 3
