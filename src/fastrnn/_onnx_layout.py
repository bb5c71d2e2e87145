"""ONNX <-> fastrnn parameter layout of the ``RNN``, ``GRU`` and ``LSTM`` operators.

The one place that knows how ONNX stacks recurrent weights; shared by the
ONNX conformance tests and the ONNX export/import (``fastrnn.onnx``, whose
``VARIANT_ATTRIBUTES`` maps the cell options to node attributes).

ONNX, per layer (one operator node), with D directions (index 0 forward,
1 reverse) and G gate blocks of H rows:

* ``W`` (D, G*H, E), ``R`` (D, G*H, H), ``B`` (D, 2*G*H) = [Wb | Rb],
  ``P`` (D, 3*H) the LSTM peepholes;
* gate order: LSTM ``i, o, f, c``; GRU ``z, r, h``; RNN one block.

fastrnn (= PyTorch), per layer k and direction (suffix ``""`` / ``"_reverse"``):

* ``weight_ih_l{k}`` = W[d], ``weight_hh_l{k}`` = R[d], ``bias_ih_l{k}`` = Wb,
  ``bias_hh_l{k}`` = Rb, each with the gate blocks reordered;
* gate order: LSTM ``i, f, g, o`` (g = ONNX c); GRU ``r, z, n`` (n = ONNX h);
* ``weight_peephole_l{k}`` (3, H), rows ``i, f, o`` (ONNX ``P`` is ``i, o, f``).

Semantics that must match as well: GRU ``linear_before_reset=1`` is fastrnn's
default ``reset_after=True`` and ``linear_before_reset=0`` (ONNX's default) is
``reset_after=False``; LSTM ``clip`` is ``cell_clip`` and ``input_forget=1``
``input_forget=True``; an ONNX ``reverse``
(single-direction) node is a forward layer run over each row's reversed
sequence.  The activations must be ONNX's defaults (sigmoid/tanh, RNN tanh or
relu as ``nonlinearity``); fastrnn's ``proj_size`` has no ONNX counterpart.
"""

import numpy as np

__all__ = ["GATES", "to_fastrnn", "from_fastrnn"]

# ONNX operator -> (number of gate blocks, ONNX block index of each fastrnn block)
GATES = {"RNN": (1, (0,)), "GRU": (3, (1, 0, 2)), "LSTM": (4, (0, 2, 3, 1))}
# fastrnn peephole row -> ONNX P block (i, o, f)
PEEPHOLE_ORDER = (0, 2, 1)


def _reorder(array, order, hidden_size, axis=0):
    """Blocks of ``hidden_size`` along ``axis`` taken in ``order``."""
    blocks = np.split(np.asarray(array), len(order), axis=axis)
    assert all(b.shape[axis] == hidden_size for b in blocks)
    return np.concatenate([blocks[i] for i in order], axis=axis)


def _inverse(order):
    return tuple(int(i) for i in np.argsort(order))


def _suffix(layer, direction):
    return f"l{layer}" + ("_reverse" if direction else "")


def to_fastrnn(op, W, R, B=None, P=None, layer=0):
    """A state-dict fragment for fastrnn layer ``layer`` from ONNX W, R, B, P.

    B None gives no bias entries (build the layer with ``bias=False`` or fill
    zeros); P None gives no peephole entries.
    """
    gates, order = GATES[op]
    W, R = np.asarray(W), np.asarray(R)
    H = R.shape[-1]
    state = {}
    for d in range(W.shape[0]):
        s = _suffix(layer, d)
        state[f"weight_ih_{s}"] = _reorder(W[d], order, H)
        state[f"weight_hh_{s}"] = _reorder(R[d], order, H)
        if B is not None:
            wb, rb = np.split(np.asarray(B)[d], 2)
            state[f"bias_ih_{s}"] = _reorder(wb, order, H)
            state[f"bias_hh_{s}"] = _reorder(rb, order, H)
        if P is not None:
            state[f"weight_peephole_{s}"] = _reorder(np.asarray(P)[d], PEEPHOLE_ORDER,
                                                     H).reshape(3, H)
    return state


def from_fastrnn(op, state_dict, layer, directions, hidden_size):
    """ONNX (W, R, B, P) of fastrnn layer ``layer``; B is zeros without bias
    entries, P is None without peepholes."""
    gates, order = GATES[op]
    back, H = _inverse(order), hidden_size
    W, R, B, P = [], [], [], []
    for d in range(directions):
        s = _suffix(layer, d)
        W.append(_reorder(state_dict[f"weight_ih_{s}"], back, H))
        R.append(_reorder(state_dict[f"weight_hh_{s}"], back, H))
        if f"bias_ih_{s}" in state_dict:
            B.append(np.concatenate([_reorder(state_dict[f"bias_ih_{s}"], back, H),
                                     _reorder(state_dict[f"bias_hh_{s}"], back, H)]))
        else:
            B.append(np.zeros(2 * gates * H, dtype=W[-1].dtype))
        if f"weight_peephole_{s}" in state_dict:
            P.append(_reorder(np.asarray(state_dict[f"weight_peephole_{s}"]).reshape(-1),
                              _inverse(PEEPHOLE_ORDER), H))
    return (np.stack(W), np.stack(R), np.stack(B), np.stack(P) if P else None)
