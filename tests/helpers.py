"""Shared builders for the fastrnn test suite.

* ``require_torch`` - import torch, or skip (fail when the CI variable is set).
* ``make_layer`` / ``make_torch_layer`` - a fastrnn layer and a torch layer with
  the same options and the same weights.
* ``make_inputs`` - random x, hx, lengths, d_out, d_hn for a layer.
* ``run_fastrnn`` / ``run_torch`` - forward + backward with
  loss = sum(out * d_out) + sum(h_n * d_hn) (+ sum(c_n * d_cn)); both return
  the same dict of numpy arrays so they can be compared key by key.
"""

import os

import numpy as np
import pytest

import fastrnn as fr

CELLS = ("rnn_tanh", "rnn_relu", "lstm", "gru")


# -- torch availability ---------------------------------------------------------

def ci_enabled():
    """True when the CI environment variable is set to a true-ish value."""
    value = os.environ.get("CI", "").strip().lower()
    return value not in ("", "0", "false", "no", "off")


def require_torch():
    """The torch module; when it is missing, fail under CI and skip elsewhere."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the environment
        message = f"torch is required for the parity tests ({exc})"
        if ci_enabled():
            pytest.fail(message + "; CI is set, so this is a failure, not a skip",
                        pytrace=False)
        pytest.skip(message)
    return torch


def require_module(name, purpose):
    """Import ``name`` (an optional test dependency such as onnxruntime), or
    skip -- fail when the CI variable is set, as :func:`require_torch` does."""
    import importlib
    try:
        return importlib.import_module(name)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        message = f"{name} is required for {purpose} ({exc})"
        if ci_enabled():
            pytest.fail(message + "; CI is set, so this is a failure, not a skip",
                        pytrace=False)
        pytest.skip(message)


# -- layers -----------------------------------------------------------------------

def layer_class(cell):
    return {"rnn_tanh": fr.RNN, "rnn_relu": fr.RNN, "lstm": fr.LSTM, "gru": fr.GRU}[cell]


def make_layer(cell, input_size, hidden_size, **options):
    """A fastrnn layer; ``cell`` is one of CELLS."""
    options = dict(options)
    if cell.startswith("rnn_"):
        options["nonlinearity"] = cell[len("rnn_"):]
    return layer_class(cell)(input_size, hidden_size, **options)


def is_lstm(layer):
    return isinstance(layer, fr.LSTM)


def directions(layer):
    return 2 if layer.bidirectional else 1


def make_torch_layer(torch, layer):
    """A torch.nn layer with the options and weights of the fastrnn ``layer``."""
    kwargs = dict(input_size=layer.input_size, hidden_size=layer.hidden_size,
                  num_layers=layer.num_layers, bias=layer.bias,
                  batch_first=layer.batch_first, dropout=layer.dropout,
                  bidirectional=layer.bidirectional)
    if getattr(layer, "proj_size", 0):
        kwargs["proj_size"] = layer.proj_size
    if isinstance(layer, fr.RNN):
        module = torch.nn.RNN(nonlinearity=layer.nonlinearity, **kwargs)
    elif isinstance(layer, fr.LSTM):
        module = torch.nn.LSTM(**kwargs)
    else:
        module = torch.nn.GRU(**kwargs)
    torch_dtype = torch.float64 if layer.dtype == np.float64 else torch.float32
    module = module.to(torch_dtype)
    state = {name: torch.from_numpy(np.array(value)) for name, value in layer.state_dict().items()}
    module.load_state_dict(state, strict=True)
    module.train(layer.training)
    return module


# -- inputs -----------------------------------------------------------------------

def random_lengths(rng, batch, steps):
    """One length per row in 1..steps; when steps > 1 at least one row is
    shorter than ``steps`` and (for batches of 2+) another is full length."""
    lengths = rng.integers(1, steps + 1, size=batch)
    if steps > 1:
        rows = rng.permutation(batch)
        lengths[rows[0]] = rng.integers(1, steps)
        if batch > 1:
            lengths[rows[1]] = steps
    return lengths.astype(np.int64)


def make_inputs(layer, rng, steps, batch, with_hx=False, with_lengths=False,
                with_d_hn=True, scale=1.0):
    """Random inputs for ``layer`` in its own layout and dtype.

    Returns a dict: x, hx, lengths, d_out, d_hn (hx/d_hn are (h, c) tuples for
    the LSTM; None when not requested).
    """
    dtype = layer.dtype
    D, L, H = directions(layer), layer.num_layers, layer.hidden_size
    S = getattr(layer, "proj_size", 0) or H      # h and out width (LSTM proj_size)
    if layer.batch_first:
        x_shape, out_shape = (batch, steps, layer.input_size), (batch, steps, D * S)
    else:
        x_shape, out_shape = (steps, batch, layer.input_size), (steps, batch, D * S)
    state_shape = (L * D, batch, S)

    def normal(shape, s=1.0):
        return (s * rng.standard_normal(shape)).astype(dtype)

    def state(s=1.0):
        if is_lstm(layer):
            return (normal(state_shape, s), normal((L * D, batch, H), s))
        return normal(state_shape, s)

    return {
        "x": normal(x_shape, scale),
        "hx": state(0.5) if with_hx else None,
        "lengths": random_lengths(rng, batch, steps) if with_lengths else None,
        "d_out": normal(out_shape),
        "d_hn": state() if with_d_hn else None,
    }


def pad_mask(layer, lengths, steps, batch):
    """Boolean mask in the layer's layout (T, B) / (B, T): True at padded steps."""
    if lengths is None:
        mask = np.zeros((steps, batch), dtype=bool)
    else:
        mask = np.arange(steps)[:, None] >= np.asarray(lengths)[None, :]
    return mask.T if layer.batch_first else mask


# -- running ----------------------------------------------------------------------

def _split(state):
    """(h, c) of an LSTM state tuple, (h, None) otherwise."""
    if isinstance(state, tuple):
        return state
    return state, None


def run_fastrnn(layer, x, hx=None, lengths=None, d_out=None, d_hn=None,
                backward=True, input_grad=True, state_grad=True):
    """Forward (+ backward) through a fastrnn layer; returns a dict of arrays.

    Keys: out, h_n, c_n (LSTM), and after backward d_x, d_h0, d_c0 (LSTM;
    None when not computed) and ``grad:<name>`` for every parameter (the
    gradient of this call only: the layer's gradients are zeroed first).
    """
    result = {}
    out, state = layer.forward(x, hx=hx, lengths=lengths)
    h_n, c_n = _split(state)
    result["out"], result["h_n"] = np.array(out), np.array(h_n)
    if c_n is not None:
        result["c_n"] = np.array(c_n)
    if not backward:
        return result
    layer.zero_grad()
    d_x, d_state = layer.backward(d_out, d_hn, input_grad=input_grad, state_grad=state_grad)
    result["d_x"] = None if d_x is None else np.array(d_x)
    if d_state is None:
        result["d_h0"] = None
    else:
        d_h0, d_c0 = _split(d_state)
        result["d_h0"] = np.array(d_h0)
        if d_c0 is not None:
            result["d_c0"] = np.array(d_c0)
    for name, grad in layer.grads.items():
        result["grad:" + name] = grad.copy()
    return result


def run_torch(torch, module, x, hx=None, lengths=None, d_out=None, d_hn=None,
              backward=True):
    """The same as ``run_fastrnn`` for a torch.nn RNN/LSTM/GRU.

    ``lengths`` go through pack_padded_sequence(enforce_sorted=False) and
    pad_packed_sequence(total_length=T).  When ``hx`` is None torch starts
    from zeros, and d_h0 / d_c0 are the gradients with respect to explicit
    zero states (what fastrnn returns in that case).
    """
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    lstm = isinstance(module, torch.nn.LSTM)
    dtype = next(module.parameters()).dtype
    batch_first = module.batch_first
    x_t = torch.tensor(np.asarray(x), dtype=dtype, requires_grad=True)
    steps = x_t.shape[1] if batch_first else x_t.shape[0]
    batch = x_t.shape[0] if batch_first else x_t.shape[1]
    D = 2 if module.bidirectional else 1
    state_shape = (module.num_layers * D, batch, module.hidden_size)
    h_shape = (module.num_layers * D, batch, getattr(module, "proj_size", 0) or module.hidden_size)
    h0, c0 = _split(hx)
    h0_t = torch.tensor(np.zeros(h_shape) if h0 is None else np.asarray(h0),
                        dtype=dtype, requires_grad=True)
    c0_t = None
    if lstm:
        c0_t = torch.tensor(np.zeros(state_shape) if c0 is None else np.asarray(c0),
                            dtype=dtype, requires_grad=True)
    module.zero_grad(set_to_none=True)
    state_in = (h0_t, c0_t) if lstm else h0_t
    if lengths is None:
        out_t, state_out = module(x_t, state_in)
    else:
        packed = pack_padded_sequence(x_t, torch.as_tensor(np.asarray(lengths), dtype=torch.int64),
                                      batch_first=batch_first, enforce_sorted=False)
        out_packed, state_out = module(packed, state_in)
        out_t, _ = pad_packed_sequence(out_packed, batch_first=batch_first,
                                       total_length=steps)
    h_n_t, c_n_t = _split(state_out)
    result = {"out": out_t.detach().numpy().copy(), "h_n": h_n_t.detach().numpy().copy()}
    if lstm:
        result["c_n"] = c_n_t.detach().numpy().copy()
    if not backward:
        return result
    d_h, d_c = _split(d_hn)
    loss = (out_t * torch.tensor(np.asarray(d_out), dtype=dtype)).sum()
    if d_h is not None:
        loss = loss + (h_n_t * torch.tensor(np.asarray(d_h), dtype=dtype)).sum()
    if lstm and d_c is not None:
        loss = loss + (c_n_t * torch.tensor(np.asarray(d_c), dtype=dtype)).sum()
    loss.backward()

    def grad_of(tensor):
        if tensor.grad is None:
            return np.zeros(tuple(tensor.shape), dtype=result["out"].dtype)
        return tensor.grad.detach().numpy().copy()

    result["d_x"] = grad_of(x_t)
    result["d_h0"] = grad_of(h0_t)
    if lstm:
        result["d_c0"] = grad_of(c0_t)
    for name, param in module.named_parameters():
        result["grad:" + name] = grad_of(param)
    return result


# -- comparing --------------------------------------------------------------------

def tolerances(dtype):
    """(rtol, atol-relative-to-scale) for comparing fastrnn with a reference."""
    if np.dtype(dtype) == np.float64:
        return 1e-9, 1e-10
    return 1e-4, 1e-4


def assert_results_close(actual, expected, dtype, context=""):
    """Compare two result dicts key by key (same keys required)."""
    assert set(actual) == set(expected), (
        f"{context}: keys differ: only fastrnn {sorted(set(actual) - set(expected))}, "
        f"only reference {sorted(set(expected) - set(actual))}")
    rtol, atol = tolerances(dtype)
    for key in sorted(expected):
        a, e = actual[key], expected[key]
        assert a is not None, f"{context}: {key} is None"
        assert a.shape == e.shape, f"{context}: {key} shape {a.shape} != {e.shape}"
        scale = max(1.0, float(np.max(np.abs(e))) if e.size else 1.0)
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol * scale,
                                   err_msg=f"{context}: {key}")


def loss_value(result, R, S):
    """sum(out * R) + sum(h_n * S[0]) (+ sum(c_n * S[1])) in float64."""
    total = np.sum(np.asarray(result["out"], np.float64) * R)
    s_h, s_c = _split(S)
    if s_h is not None:
        total += np.sum(np.asarray(result["h_n"], np.float64) * s_h)
    if s_c is not None:
        total += np.sum(np.asarray(result["c_n"], np.float64) * s_c)
    return float(total)


def central_differences(array, loss, eps, indices=None):
    """Central differences of ``loss()`` w.r.t. entries of ``array`` (changed in
    place and restored): the given flat ``indices``, or every entry."""
    flat = array.reshape(-1)
    if indices is None:
        indices = np.arange(flat.size)
    grads = np.empty(len(indices))
    for k, index in enumerate(indices):
        original = flat[index]
        flat[index] = original + eps
        plus = loss()
        flat[index] = original - eps
        minus = loss()
        flat[index] = original
        grads[k] = (plus - minus) / (2 * eps)
    return grads
