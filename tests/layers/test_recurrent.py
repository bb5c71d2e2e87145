"""The recurrent layers' module protocol: state dicts, live parameters,
gradient accumulation, seeds and initialisation, train/eval and the backward
contract."""

import itertools
import math

import numpy as np
import pytest

import fastrnn as fr
from helpers import CELLS, is_lstm, make_inputs, make_layer, make_torch_layer, run_fastrnn
from recurrent_cases import STRUCTURES, _assert_results_equal, _structure_id


# -- state dicts ------------------------------------------------------------------

@pytest.mark.torch
@pytest.mark.parametrize("structure", STRUCTURES, ids=_structure_id)
def test_state_dict_names_and_shapes_match_torch(torch, structure):
    cell, layers, bi, bias = structure
    layer = make_layer(cell, 7, 5, num_layers=layers, bidirectional=bi, bias=bias)
    kwargs = dict(input_size=7, hidden_size=5, num_layers=layers, bidirectional=bi,
                  bias=bias)
    if cell.startswith("rnn_"):
        module = torch.nn.RNN(nonlinearity=cell[4:], **kwargs)
    else:
        module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](**kwargs)
    ours = layer.state_dict()
    theirs = module.state_dict()
    assert list(ours) == list(theirs)
    for name in theirs:
        assert ours[name].shape == tuple(theirs[name].shape), name
    assert list(layer.grads) == list(theirs)
    assert [name for name, _ in layer.named_parameters()] == list(theirs)
    assert [p.shape for p in layer.parameters()] == [tuple(t.shape) for t in theirs.values()]
    # torch accepts our state dict as is (strict), and we accept torch's
    module.load_state_dict({k: torch.from_numpy(v) for k, v in ours.items()}, strict=True)
    layer.load_state_dict(module.state_dict())
    for name, value in layer.state_dict().items():
        np.testing.assert_array_equal(value, ours[name].astype(value.dtype))


@pytest.mark.torch
@pytest.mark.parametrize("cell", CELLS)
def test_load_state_dict_from_torch_tensors(torch, cell):
    layer = make_layer(cell, 4, 6, num_layers=2, bidirectional=True, dtype="float64", seed=1)
    module = make_torch_layer(torch, make_layer(cell, 4, 6, num_layers=2,
                                                bidirectional=True, dtype="float64", seed=2))
    layer.load_state_dict(module.state_dict())           # plain tensors
    layer.load_state_dict(dict(module.named_parameters()))  # tensors requiring grad
    for name, param in module.named_parameters():
        np.testing.assert_array_equal(layer.state_dict()[name], param.detach().numpy())


@pytest.mark.parametrize("structure", STRUCTURES, ids=_structure_id)
def test_state_dict_shapes(structure):
    """Shapes and names from the PyTorch formulas (no torch needed)."""
    cell, layers, bi, bias = structure
    E, H = 7, 5
    G = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}[cell]
    D = 2 if bi else 1
    layer = make_layer(cell, E, H, num_layers=layers, bidirectional=bi, bias=bias)
    expected = {}
    for l, d in itertools.product(range(layers), range(D)):
        sfx = f"l{l}" + ("_reverse" if d else "")
        expected[f"weight_ih_{sfx}"] = (G * H, E if l == 0 else D * H)
        expected[f"weight_hh_{sfx}"] = (G * H, H)
        if bias:
            expected[f"bias_ih_{sfx}"] = (G * H,)
            expected[f"bias_hh_{sfx}"] = (G * H,)
    got = {name: value.shape for name, value in layer.state_dict().items()}
    assert got == expected
    assert {name: g.shape for name, g in layer.grads.items()} == expected


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_state_dict_round_trip(cell, dtype):
    rng = np.random.default_rng(0)
    a = make_layer(cell, 3, 8, num_layers=2, bidirectional=True, dtype=dtype, seed=1)
    b = make_layer(cell, 3, 8, num_layers=2, bidirectional=True, dtype=dtype, seed=2)
    inputs = make_inputs(a, rng, 5, 4, with_hx=True, with_lengths=True)
    before = run_fastrnn(b, **inputs)
    b.load_state_dict(a.state_dict())
    for name, value in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[name], value)
        assert b.state_dict()[name].dtype == np.dtype(dtype)
    after_a, after_b = run_fastrnn(a, **inputs), run_fastrnn(b, **inputs)
    _assert_results_equal(after_a, after_b)
    assert not np.array_equal(before["out"], after_b["out"])


def test_state_dict_returns_copies():
    layer = fr.GRU(3, 4, seed=0)
    state = layer.state_dict()
    for value in state.values():
        value += 1.0
    for name, value in layer.state_dict().items():
        np.testing.assert_array_equal(value + 1.0, state[name])


def test_load_state_dict_copies_in_place_and_converts():
    layer = fr.LSTM(3, 4, num_layers=2, dtype="float32", seed=0)
    params_before = layer.parameters()
    ids = [id(p) for p in params_before]
    source = fr.LSTM(3, 4, num_layers=2, dtype="float64", seed=1).state_dict()
    layer.load_state_dict(source)
    assert [id(p) for p in layer.parameters()] == ids
    for param, (name, value) in zip(params_before, source.items()):
        assert param.dtype == np.float32
        np.testing.assert_array_equal(param, value.astype(np.float32), err_msg=name)
    # the loaded dict is not aliased: changing it afterwards changes nothing
    snapshot = layer.state_dict()
    for value in source.values():
        value += 5.0
    for name, value in layer.state_dict().items():
        np.testing.assert_array_equal(value, snapshot[name])


def _changed_state(layer):
    return {name: value + 0.25 for name, value in layer.state_dict().items()}


@pytest.mark.parametrize("cell", CELLS)
def test_load_state_dict_wrong_keys(cell):
    layer = make_layer(cell, 3, 4, num_layers=2, seed=0)
    original = layer.state_dict()
    missing = _changed_state(layer)
    del missing["weight_hh_l1"]
    extra = _changed_state(layer)
    extra["weight_hh_l2"] = np.zeros_like(extra["weight_hh_l1"])
    renamed = _changed_state(layer)
    renamed["weight_ih_l0_reverse"] = renamed.pop("weight_ih_l0")
    for bad, name in ((missing, "weight_hh_l1"), (extra, "weight_hh_l2"),
                      (renamed, "weight_ih_l0")):
        with pytest.raises(ValueError, match=name):
            layer.load_state_dict(bad)
        _assert_results_equal(layer.state_dict(), original)


@pytest.mark.parametrize("cell", CELLS)
def test_load_state_dict_wrong_shape_changes_nothing(cell):
    layer = make_layer(cell, 3, 4, num_layers=2, bidirectional=True, seed=0)
    original = layer.state_dict()
    for victim in ("weight_ih_l0", "weight_hh_l1_reverse", "bias_hh_l1"):
        bad = _changed_state(layer)   # every entry valid and different ...
        bad[victim] = np.zeros(bad[victim].shape + (1,))   # ... except one
        with pytest.raises(ValueError, match=victim):
            layer.load_state_dict(bad)
        _assert_results_equal(layer.state_dict(), original)
        shape = bad[victim][..., 0].shape
        bad[victim] = np.zeros((shape[0] + 1,) + shape[1:])      # one row too many
        with pytest.raises(ValueError, match=victim):
            layer.load_state_dict(bad)
        _assert_results_equal(layer.state_dict(), original)


def test_load_state_dict_bad_values_change_nothing():
    layer = fr.GRU(3, 4, num_layers=2, seed=0)
    original = layer.state_dict()
    bad = _changed_state(layer)
    bad["bias_ih_l1"] = bad["bias_ih_l1"].copy()
    bad["bias_ih_l1"][2] = np.nan
    with pytest.raises(ValueError, match="bias_ih_l1"):
        layer.load_state_dict(bad)
    _assert_results_equal(layer.state_dict(), original)
    bad = _changed_state(layer)
    bad["weight_hh_l1"] = np.full(bad["weight_hh_l1"].shape, "x")
    with pytest.raises(TypeError, match="weight_hh_l1"):
        layer.load_state_dict(bad)
    _assert_results_equal(layer.state_dict(), original)
    with pytest.raises(TypeError, match="state_dict"):
        layer.load_state_dict([("weight_ih_l0", original["weight_ih_l0"])])
    _assert_results_equal(layer.state_dict(), original)


# -- live parameters and gradients ------------------------------------------------

@pytest.mark.parametrize("cell", CELLS)
def test_parameters_are_live(cell):
    rng = np.random.default_rng(1)
    layer = make_layer(cell, 3, 6, num_layers=2, bidirectional=True, dtype="float64", seed=0)
    inputs = make_inputs(layer, rng, 4, 3, with_hx=True)
    before = run_fastrnn(layer, **inputs, backward=False)
    for k, param in enumerate(layer.parameters()):
        param *= 1.0 + 0.1 * (k + 1)        # in place
    changed = run_fastrnn(layer, **inputs, backward=False)
    assert not np.allclose(changed["out"], before["out"])
    # ... and equals a fresh layer loaded with the modified values
    fresh = make_layer(cell, 3, 6, num_layers=2, bidirectional=True, dtype="float64", seed=5)
    fresh.load_state_dict(layer.state_dict())
    _assert_results_equal(run_fastrnn(fresh, **inputs, backward=False), changed)
    # named_parameters hands out the same live arrays
    for (name, array), param in zip(layer.named_parameters(), layer.parameters()):
        assert array is param
    # a single element changed through parameters() is seen by the next forward
    layer.parameters()[0][0, 0] += 1.0      # weight_ih_l0
    assert not np.array_equal(run_fastrnn(layer, **inputs, backward=False)["out"],
                              changed["out"])


@pytest.mark.parametrize("cell", CELLS)
def test_grads_accumulate_and_zero_grad_clears(cell):
    rng = np.random.default_rng(2)
    layer = make_layer(cell, 3, 5, num_layers=2, bidirectional=True, dtype="float64", seed=0)
    grad_arrays = {name: g for name, g in layer.grads.items()}
    inputs = make_inputs(layer, rng, 4, 3, with_hx=True, with_lengths=True)
    once = run_fastrnn(layer, **inputs)        # zeroes first, then one backward
    # second call without zero_grad: grads are the sum of both calls
    out, _ = layer.forward(inputs["x"], hx=inputs["hx"], lengths=inputs["lengths"])
    layer.backward(inputs["d_out"], inputs["d_hn"])
    for name, grad in layer.grads.items():
        assert grad is grad_arrays[name], "grads arrays must be updated in place"
        np.testing.assert_allclose(grad, 2 * once["grad:" + name], rtol=1e-12, atol=1e-14)
        assert np.any(grad != 0), name
    # a different second input: grads = g1 + g2
    other = make_inputs(layer, rng, 4, 3, with_hx=True, with_lengths=True)
    second = run_fastrnn(layer, **other)
    layer.zero_grad()
    for batch in (inputs, other):
        layer.forward(batch["x"], hx=batch["hx"], lengths=batch["lengths"])
        layer.backward(batch["d_out"], batch["d_hn"])
    for name, grad in layer.grads.items():
        np.testing.assert_allclose(grad, once["grad:" + name] + second["grad:" + name],
                                   rtol=1e-12, atol=1e-14)
    layer.zero_grad()
    for name, grad in layer.grads.items():
        assert grad is grad_arrays[name]
        assert not np.any(grad), name


# -- seeds and initialisation -----------------------------------------------------

@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_same_seed_same_weights_different_seed_differs(cell, dtype):
    def build(seed):
        return make_layer(cell, 5, 7, num_layers=2, bidirectional=True, dtype=dtype,
                          seed=seed).state_dict()

    a, b, c = build(123), build(123), build(124)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
        assert not np.array_equal(a[name], c[name]), name
    n1, n2 = build(None), build(None)
    assert any(not np.array_equal(n1[k], n2[k]) for k in n1)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("hidden_size", [1, 4, 37, 100])
def test_init_bounds(cell, hidden_size):
    layer = make_layer(cell, 6, hidden_size, num_layers=2, bidirectional=True, seed=9)
    bound = 1.0 / math.sqrt(hidden_size)
    values = np.concatenate([p.ravel() for p in layer.parameters()]).astype(np.float64)
    assert np.all(np.abs(values) <= bound * (1 + 1e-6))
    # uniform over the whole interval, not a narrower one: extremes and spread
    if values.size >= 200:   # P(no draw beyond 0.9 * bound) < 1e-4 at this size
        assert values.max() > 0.9 * bound and values.min() < -0.9 * bound
    if values.size >= 500:
        assert abs(values.mean()) < 0.05 * bound
        assert abs(values.std() - bound / math.sqrt(3)) < 0.05 * bound
    for name, param in layer.named_parameters():
        if param.size >= 16:
            assert np.unique(param).size > param.size // 2, f"{name} looks degenerate"


# -- train / eval and the backward contract ---------------------------------------

@pytest.mark.parametrize("cell", CELLS)
def test_eval_forward_matches_train_and_backward_raises(cell):
    rng = np.random.default_rng(3)
    layer = make_layer(cell, 3, 5, num_layers=2, bidirectional=True, seed=0)
    inputs = make_inputs(layer, rng, 4, 3, with_hx=True, with_lengths=True)
    train = run_fastrnn(layer, **inputs, backward=False)
    assert layer.eval() is layer and layer.training is False
    evaluated = run_fastrnn(layer, **inputs, backward=False)
    _assert_results_equal(evaluated, train)
    with pytest.raises(RuntimeError):
        layer.backward(inputs["d_out"], inputs["d_hn"])
    # a train-mode forward followed by an eval-mode forward: nothing to backward
    layer.train()
    layer.forward(inputs["x"], hx=inputs["hx"], lengths=inputs["lengths"])
    layer.eval()
    layer.forward(inputs["x"], hx=inputs["hx"], lengths=inputs["lengths"])
    with pytest.raises(RuntimeError):
        layer.backward(inputs["d_out"], inputs["d_hn"])
    assert layer.train() is layer and layer.training is True
    layer.train(False)
    assert layer.training is False


@pytest.mark.parametrize("cell", CELLS)
def test_backward_twice_raises(cell):
    rng = np.random.default_rng(4)
    layer = make_layer(cell, 3, 5, num_layers=2, seed=0)
    inputs = make_inputs(layer, rng, 4, 3)
    layer.forward(inputs["x"])
    layer.backward(inputs["d_out"], inputs["d_hn"])
    grads = {k: v.copy() for k, v in layer.grads.items()}
    with pytest.raises(RuntimeError):
        layer.backward(inputs["d_out"], inputs["d_hn"])
    _assert_results_equal(layer.grads, grads)   # the refused call added nothing
    layer.forward(inputs["x"])                  # a new forward re-arms backward
    layer.backward(inputs["d_out"], inputs["d_hn"])


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("batch_first", [False, True])
def test_input_grad_false(cell, batch_first):
    rng = np.random.default_rng(5)
    layer = make_layer(cell, 3, 5, num_layers=3, bidirectional=True, dtype="float64",
                       batch_first=batch_first, seed=0)
    inputs = make_inputs(layer, rng, 5, 4, with_hx=True, with_lengths=True)
    full = run_fastrnn(layer, **inputs)
    partial = run_fastrnn(layer, **inputs, input_grad=False)
    assert partial["d_x"] is None
    assert full["d_x"] is not None
    del full["d_x"], partial["d_x"]
    _assert_results_equal(partial, full)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_state_grad_false(cell, dtype, bidirectional, with_lengths):
    """Without dL/d(initial state) the products that only feed it are
    skipped (each row's first step; a reverse direction's rows end at
    different steps): every other result is the same, bit for bit."""
    rng = np.random.default_rng(5)
    layer = make_layer(cell, 3, 5, num_layers=2, bidirectional=bidirectional, dtype=dtype,
                       seed=0)
    inputs = make_inputs(layer, rng, 7, 6, with_hx=True, with_lengths=with_lengths)
    full = run_fastrnn(layer, **inputs)
    partial = run_fastrnn(layer, **inputs, state_grad=False)
    assert partial.pop("d_h0") is None and partial.pop("d_c0", None) is None
    assert full.pop("d_h0") is not None
    full.pop("d_c0", None)
    _assert_results_equal(partial, full)


@pytest.mark.parametrize("cell", CELLS)
def test_backward_returns_shapes_and_dtypes(cell):
    for dtype, batch_first in itertools.product(("float32", "float64"), (False, True)):
        rng = np.random.default_rng(6)
        layer = make_layer(cell, 3, 5, num_layers=2, bidirectional=True, dtype=dtype,
                           batch_first=batch_first, seed=0)
        inputs = make_inputs(layer, rng, 6, 4, with_hx=True)
        result = run_fastrnn(layer, **inputs)
        assert result["d_x"].shape == inputs["x"].shape
        assert result["out"].shape == inputs["d_out"].shape
        assert result["d_x"].dtype == np.dtype(dtype)
        assert result["h_n"].shape == result["d_h0"].shape == (4, 4, 5)
        if is_lstm(layer):
            assert result["c_n"].shape == result["d_c0"].shape == (4, 4, 5)


@pytest.mark.parametrize("cell,options", [
    ("lstm", {}), ("gru", {}), ("rnn_tanh", {}), ("rnn_relu", {}), ("lstm", {"proj_size": 4}),
    ("lstm", {"peepholes": True}), ("lstm", {"cell_clip": 0.5}), ("gru", {"reset_after": False})])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_few_row_training_makes_input_products_ahead_with_the_same_bits(cell, options, dtype):
    """Training with few rows per thread makes every step's input products
    before the recurrence (one product over all steps, split over threads);
    with many rows they are made step by step.  Row 0 of a batch of 12
    copies of one sequence (one chunk of 12 rows: step by step) has the
    outputs and input gradients of that sequence alone (one row: ahead, on 1
    and 2 threads), bit for bit."""
    layer = make_layer(cell, 5, 7, dtype=dtype, seed=2, num_layers=2, bidirectional=True,
                       **options)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((9, 1, 5)).astype(dtype)
    old_threads = fr.get_num_threads()

    def out_and_d_x(x, threads):
        fr.set_num_threads(threads)
        out, _ = layer(x)
        d_out = np.broadcast_to(d_out_row, out.shape).copy()
        d_x, _ = layer.backward(d_out)
        return out[:, 0], d_x[:, 0]

    try:
        fr.set_num_threads(1)
        d_out_row = rng.standard_normal(layer(x)[0][:, :1].shape).astype(dtype)
        layer.zero_grad()
        want = out_and_d_x(np.repeat(x, 12, axis=1), 1)
        for threads in (1, 2):
            for got, expected in zip(out_and_d_x(x, threads), want):
                np.testing.assert_array_equal(got, expected)
    finally:
        fr.set_num_threads(old_threads)


def test_module_outputs_are_not_scanned_again_in_inference(monkeypatch):
    """An eval-mode embedding's, layer's or head's output handed to the next
    module skips the NaN scan (a full memory pass); an array the caller made
    is still scanned, and a NaN in it still raises."""
    from fastrnn import _validation

    embedding, layer, head = (fr.Embedding(20, 6, seed=0).eval(), fr.GRU(6, 8, seed=1).eval(),
                              fr.Linear(8, 3, seed=2).eval())
    scanned = []
    scan = _validation.all_finite
    monkeypatch.setattr(_validation, "all_finite", lambda a: (scanned.append(a.shape), scan(a))[1])
    ids = np.arange(12).reshape(4, 3)
    head(layer(embedding(ids))[0])
    assert scanned == []
    x = np.ones((4, 3, 6), np.float32)
    layer(x)
    assert scanned == [(4, 3, 6)]
    x[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="x contains NaN"):
        layer(x)
