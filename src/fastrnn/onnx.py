"""ONNX export of recurrent layers and task models, and weight import.

``export(layer, path)`` writes an ``RNN``/``LSTM``/``GRU`` layer as a graph of
ONNX ``RNN``/``LSTM``/``GRU`` nodes (one per layer, both directions in one
node) with the same inputs and outputs as ``layer(x)``; ``model.to_onnx(path)``
(built by ``fastrnn.tasks.onnx_export`` from this module's ``Graph``) does the
same for a fitted task model, embedding, pooling, head and softmax included.  ``load_weights`` reads the
weights of such nodes back into a fastrnn layer.  The ``onnx`` package is
needed (``pip install fastrnn[onnx]``); ONNX Runtime checks the graphs in the
tests.

Gate layouts differ (fastrnn, like PyTorch, stacks LSTM gates as i, f, g, o
and GRU gates as r, z, n; ONNX wants i, o, f, c and z, r, h; peepholes i, f,
o against ONNX's ``P`` i, o, f): ``_onnx_layout`` is the one place that maps
them.  The cell options map to node attributes through
``VARIANT_ATTRIBUTES``: GRU ``reset_after`` -> ``linear_before_reset``, LSTM
``cell_clip`` -> ``clip``, ``input_forget`` -> ``input_forget``; LSTM
``peepholes`` adds the ``P`` input.  ``proj_size`` has no ONNX equivalent.
"""

import json
import os

import numpy as np

from ._io import atomic_write, is_stream
from ._onnx_layout import GATES, from_fastrnn, to_fastrnn
from ._validation import Boolean
from ._version import __version__
from .layers.recurrent import GRU, LSTM, RNN

__all__ = ["export", "load_weights", "OPSET"]

OPSET = 17
_HINT = "ONNX export needs the onnx package: pip install fastrnn[onnx]  (or: pip install onnx)"


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError(_HINT) from None
    return onnx


# -- cells: operator and attributes (weight layout: _onnx_layout) --------------------------

OPS = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}

# ONNX attribute -> (ONNX default, fastrnn option, the option's value -> the attribute's).
# The one table of the variant attributes, used by export and checked by import.
VARIANT_ATTRIBUTES = {
    "linear_before_reset": (0, "reset_after", lambda value: int(value)),
    "clip": (None, "cell_clip", lambda value: None if value is None else float(value)),
    "input_forget": (0, "input_forget", lambda value: int(value)),
}
_VARIANTS_OF = {"RNN": (), "GRU": ("linear_before_reset",), "LSTM": ("clip", "input_forget")}


def cell_of(layer):
    """The OPS key of a fastrnn recurrent layer."""
    for cls, name in ((LSTM, "lstm"), (GRU, "gru"), (RNN, "rnn")):
        if isinstance(layer, cls):
            return name
    raise TypeError(f"layer must be an fr.RNN, fr.LSTM or fr.GRU, got {type(layer).__name__}")


def _check_no_projection(layer):
    if getattr(layer, "proj_size", 0):
        raise ValueError(f"proj_size={layer.proj_size}: an LSTM with a projection has no ONNX "
                         f"equivalent (ONNX's LSTM has no W_hr); use proj_size=0")


def _variant_attributes(layer):
    """The ONNX attributes {name: value} that the layer's cell options give
    (None: the attribute is left out)."""
    return {key: VARIANT_ATTRIBUTES[key][2](getattr(layer, VARIANT_ATTRIBUTES[key][1]))
            for key in _VARIANTS_OF[OPS[cell_of(layer)]]}


def _activations(layer):
    """The ``activations`` attribute for one direction, or None (the defaults)."""
    if cell_of(layer) == "rnn":
        return ["Relu" if layer.nonlinearity == "relu" else "Tanh"]
    return None


# -- a small graph builder --------------------------------------------------------------------

class Graph:
    """Nodes, initializers, inputs and outputs of one ONNX graph, with fresh names."""

    def __init__(self):
        self.onnx = _onnx()
        self.nodes, self.initializers, self.inputs, self.outputs = [], [], [], []
        self._count = 0

    def name(self, hint):
        self._count += 1
        return f"{hint}_{self._count}"

    def constant(self, value, hint="const", dtype=None):
        array = np.asarray(value, dtype=dtype)
        name = self.name(hint)
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def node(self, op, inputs, outputs=1, hint=None, **attributes):
        """Add a node; returns its output name (or names when ``outputs`` > 1
        or a list of names)."""
        names = outputs if isinstance(outputs, list) else [
            self.name(hint or op.lower()) for _ in range(outputs)]
        self.nodes.append(self.onnx.helper.make_node(op, inputs, names, **attributes))
        return names if len(names) > 1 or isinstance(outputs, list) else names[0]

    def input(self, name, elem_type, shape):
        self.inputs.append(self.onnx.helper.make_tensor_value_info(name, elem_type, shape))
        return name

    def output(self, source, name, elem_type, shape):
        self.node("Identity", [source], [name])
        self.outputs.append(self.onnx.helper.make_tensor_value_info(name, elem_type, shape))

    def model(self, graph_name, metadata=None):
        helper = self.onnx.helper
        graph = helper.make_graph(self.nodes, graph_name, self.inputs, self.outputs,
                                  self.initializers)
        model = helper.make_model(graph, producer_name="fastrnn",
                                  opset_imports=[helper.make_opsetid("", OPSET)])
        model.producer_version = __version__
        for key, value in (metadata or {}).items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        self.onnx.checker.check_model(model)
        return model

    # helpers used by several graphs
    def time_mask(self, steps_like, lengths):
        """Bool (T, B): step t of row b is valid (t < lengths[b]).  ``steps_like``
        is a (T, B, ...) tensor giving T."""
        steps = self.node("Gather", [self.node("Shape", [steps_like]), self.constant(0, "i0",
                                                                                      np.int64)])
        t = self.node("Range", [self.constant(0, "zero", np.int64), steps,
                                self.constant(1, "one", np.int64)])
        column = self.node("Unsqueeze", [t, self.constant([1], "axes", np.int64)])
        return self.node("Less", [column, self.node("Unsqueeze", [lengths, self.constant(
            [0], "axes", np.int64)])])


FLOAT, INT64 = 1, 7     # onnx.TensorProto.FLOAT / INT64


# -- recurrent layers -------------------------------------------------------------------------

def recurrent_nodes(graph, layer, x, lengths=None, h0=None, c0=None):
    """Add ``layer``'s stack to ``graph`` for time-major input ``x`` (T, B, E).

    ``lengths`` (int64 (B,)), ``h0`` / ``c0`` ((L*D, B, H)) are tensor names or
    None.  Returns ``(out, h_n, c_n)`` names: out (T, B, D*H), states
    (L*D, B, H); c_n is None except for an LSTM.  Padded steps' outputs are 0
    as in fastrnn.
    """
    name = cell_of(layer)
    _check_no_projection(layer)
    op, H, D = OPS[name], layer.hidden_size, 2 if layer.bidirectional else 1
    sequence_lens = graph.node("Cast", [lengths], to=6) if lengths is not None else ""
    attributes = {key: value for key, value in _variant_attributes(layer).items()
                  if value is not None}
    attributes.update(hidden_size=H, direction="bidirectional" if D == 2 else "forward")
    if _activations(layer) is not None:
        attributes["activations"] = _activations(layer) * D
    state = layer.state_dict()
    finals_h, finals_c = [], []
    for index in range(layer.num_layers):
        w, r, b, p = _onnx_weights(layer, op, state, index)
        inputs = [x, graph.constant(w, "W"), graph.constant(r, "R"),
                  graph.constant(b, "B") if b is not None else "", sequence_lens]
        for initial in (h0, c0 if name == "lstm" else None):
            inputs.append("" if initial is None else graph.node("Slice", [
                initial, graph.constant([index * D], "start", np.int64),
                graph.constant([(index + 1) * D], "end", np.int64)]))
        if p is not None:
            inputs.append(graph.constant(p, "P"))          # LSTM input 7
        outputs = graph.node(op, _trim(inputs), 3 if name == "lstm" else 2,
                             hint=f"{name}{index}", **attributes)
        y, y_h = outputs[0], outputs[1]
        finals_h.append(y_h)
        if name == "lstm":
            finals_c.append(outputs[2])
        # Y (T, D, B, H) -> (T, B, D*H): the next layer's input and the output.
        y = graph.node("Transpose", [y], perm=[0, 2, 1, 3])
        x = graph.node("Reshape", [y, graph.constant([0, 0, D * H], "shape", np.int64)])
    h_n = finals_h[0] if len(finals_h) == 1 else graph.node("Concat", finals_h, axis=0)
    c_n = None
    if name == "lstm":
        c_n = finals_c[0] if len(finals_c) == 1 else graph.node("Concat", finals_c, axis=0)
    return x, h_n, c_n


def _trim(inputs):
    """Optional ONNX inputs may be left out at the end (and "" in the middle)."""
    while inputs and inputs[-1] == "":
        inputs = inputs[:-1]
    return inputs


def _onnx_weights(layer, op, state, index):
    """W (D, G*H, E), R (D, G*H, H), B (D, 2*G*H) or None and P (D, 3*H) or None,
    float32, in ONNX's layout (see _onnx_layout)."""
    w, r, b, p = from_fastrnn(op, state, index, 2 if layer.bidirectional else 1,
                              layer.hidden_size)
    return tuple(None if a is None else a.astype(np.float32)
                 for a in (w, r, b if layer.bias else None, p))


def export(layer, path=None, lengths=False, initial_state=False):
    """Write a fastrnn ``RNN``/``LSTM``/``GRU`` layer as an ONNX model.

    Graph inputs: ``input`` float32 (T, B, E) ((B, T, E) for a batch_first
    layer), then ``lengths`` int64 (B,) when ``lengths`` is True (rows end
    early: outputs past the end are 0, final states come from the last
    valid step), then ``h0`` (and ``c0`` for an LSTM), (L*D, B, H), when
    ``initial_state`` is True.  Outputs: ``output`` (T, B, D*H) and ``h_n``
    (and ``c_n``), (L*D, B, H): what ``layer(x, hx, lengths)`` returns, in
    float32 (a float64 layer's weights are rounded).  Eval mode: no dropout.
    The cell options become node attributes (``linear_before_reset``,
    ``clip``, ``input_forget``) and the ``P`` input; an LSTM with
    ``proj_size`` raises ValueError (ONNX has no projection).

    Args:
        layer: an fr.RNN, fr.LSTM or fr.GRU.
        path: file path or binary file object to write, or None.
        lengths, initial_state: add those optional inputs (see above).

    Returns the ``onnx.ModelProto`` (also written to ``path`` when given).
    """
    cell_of(layer)
    lengths = Boolean()("lengths", lengths)
    initial_state = Boolean()("initial_state", initial_state)
    graph = Graph()
    time, batch = "time", "batch"
    layout = [batch, time] if layer.batch_first else [time, batch]
    x = graph.input("input", FLOAT, layout + [layer.input_size])
    if layer.batch_first:
        x = graph.node("Transpose", [x], perm=[1, 0, 2])
    length_input = graph.input("lengths", INT64, [batch]) if lengths else None
    state_shape = [layer.num_layers * (2 if layer.bidirectional else 1), batch,
                   layer.hidden_size]
    h0 = c0 = None
    if initial_state:
        h0 = graph.input("h0", FLOAT, state_shape)
        if isinstance(layer, LSTM):
            c0 = graph.input("c0", FLOAT, state_shape)
    out, h_n, c_n = recurrent_nodes(graph, layer, x, length_input, h0, c0)
    if layer.batch_first:
        out = graph.node("Transpose", [out], perm=[1, 0, 2])
    width = layer.hidden_size * (2 if layer.bidirectional else 1)
    graph.output(out, "output", FLOAT, layout + [width])
    graph.output(h_n, "h_n", FLOAT, state_shape)
    if c_n is not None:
        graph.output(c_n, "c_n", FLOAT, state_shape)
    config = {"class": type(layer).__name__, "config": layer._config()}
    model = graph.model(f"fastrnn_{type(layer).__name__}",
                        {"fastrnn.config": json.dumps(config)})
    if path is not None:
        write(model, path)
    return model


def write(model, path):
    """Serialise ``model`` to a path (atomically) or a binary file object."""
    data = model.SerializeToString()
    if is_stream(path):
        path.write(data)
    else:
        atomic_write(os.fspath(path), lambda stream: stream.write(data))
    return model


# -- weight import ----------------------------------------------------------------------------

def load_weights(path_or_model, layer):
    """Fill ``layer`` (fr.RNN / fr.LSTM / fr.GRU) from the ONNX ``RNN`` / ``LSTM`` /
    ``GRU`` nodes of a model, in graph order: node k is layer k of the stack.

    Args:
        path_or_model: a path, a binary file object, bytes, or an
            ``onnx.ModelProto``.
        layer: the layer to fill; its cell, sizes, direction and bias must
            match the nodes, and so must its cell options: a GRU's
            ``reset_after`` the node's ``linear_before_reset``, an LSTM's
            ``peepholes`` the ``P`` input, ``cell_clip`` ``clip`` and
            ``input_forget`` ``input_forget``.

    Returns ``layer``.  Nothing changes unless every weight fits.
    """
    onnx = _onnx()
    op = OPS[cell_of(layer)]
    _check_no_projection(layer)
    model = _read_model(onnx, path_or_model)
    tensors = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:     # weights given as Constant nodes
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            tensors[node.output[0]] = onnx.numpy_helper.to_array(node.attribute[0].t)
    nodes = [node for node in model.graph.node if node.op_type == op]
    if len(nodes) != layer.num_layers:
        found = sorted({n.op_type for n in model.graph.node if n.op_type in ("RNN", "LSTM",
                                                                             "GRU")})
        raise ValueError(f"the ONNX model has {len(nodes)} {op} node(s) (recurrent "
                         f"nodes found: {found or 'none'}); the {type(layer).__name__} has "
                         f"num_layers={layer.num_layers}")
    state = {}
    for index, node in enumerate(nodes):
        state.update(_node_state(node, index, layer, tensors, onnx))
    layer.load_state_dict(state)
    return layer


def _read_model(onnx, source):
    if isinstance(source, onnx.ModelProto):
        return source
    if isinstance(source, (bytes, bytearray)):
        return onnx.load_model_from_string(bytes(source))
    if is_stream(source):
        return onnx.load_model_from_string(source.read())
    path = os.fspath(source)
    if not os.path.exists(path):
        raise FileNotFoundError(f"ONNX model {path!r} does not exist")
    try:
        return onnx.load(path)
    except Exception as exc:      # protobuf's DecodeError and friends
        raise ValueError(f"{path!r} is not an ONNX model: {type(exc).__name__}: {exc}") \
            from None


def _node_state(node, index, layer, tensors, onnx):
    """The state-dict entries of layer ``index`` from one ONNX node."""
    where = f"ONNX {node.op_type} node {node.name or index!r}"
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    direction = attributes.get("direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    expected = "bidirectional" if layer.bidirectional else "forward"
    if direction != expected:
        raise ValueError(f"{where} has direction={direction!r}; the layer needs {expected!r}")
    _check_variant_attributes(where, attributes, layer)
    activations = attributes.get("activations")
    if _activations(layer) is not None and activations is not None:
        wanted = _activations(layer)
        if [a.decode() if isinstance(a, bytes) else a for a in activations][:1] != wanted:
            raise ValueError(f"{where} has activations {activations}; the layer uses {wanted}")
    inputs = list(node.input) + [""] * (8 - len(node.input))
    w, r, b, p = [tensors.get(name) if name else None for name in inputs[1:4] + inputs[7:8]]
    if w is None or r is None:
        raise ValueError(f"{where}: its W and R inputs must be initializers or constants")
    if (b is not None) != layer.bias:
        raise ValueError(f"{where} {'has' if b is not None else 'has no'} bias B but the "
                         f"layer was built with bias={layer.bias}")
    if (p is not None) != bool(getattr(layer, "peepholes", False)):
        raise ValueError(f"{where} {'has' if p is not None else 'has no'} peephole input P "
                         f"but the {type(layer).__name__} was built with peepholes="
                         f"{getattr(layer, 'peepholes', False)}")
    _check_node_shapes(where, node.op_type, w, r, b, p)
    return to_fastrnn(node.op_type, w, r, b, p, layer=index)


def _check_variant_attributes(where, attributes, layer):
    """Each variant attribute of the node (or its ONNX default) must be what the
    layer's cell options give; ``clip`` on a cell without ``cell_clip`` too."""
    wanted = _variant_attributes(layer)
    for key, (default, option, _) in VARIANT_ATTRIBUTES.items():
        got = attributes.get(key, default)
        if key not in wanted:
            if got != default:
                raise ValueError(f"{where} has {key}={got}; fastrnn's "
                                 f"{type(layer).__name__} has no {option} option")
            continue
        want = wanted[key]
        same = (got == want if key != "clip" or None in (got, want)
                else np.float32(got) == np.float32(want))    # ONNX stores float32
        if not same:
            raise ValueError(f"{where} has {key}={got}; the {type(layer).__name__} was built "
                             f"with {option}={getattr(layer, option)}, which needs "
                             f"{key}={want}")


def _check_node_shapes(where, op, w, r, b, p):
    """The node's own arrays agree with each other (the layer's sizes are
    checked by load_state_dict)."""
    gates, H = GATES[op][0], r.shape[-1]
    shapes = {"W": (w, (None, gates * H, None)), "R": (r, (w.shape[0], gates * H, H)),
              "B": (b, (w.shape[0], 2 * gates * H)), "P": (p, (w.shape[0], 3 * H))}
    for name, (array, shape) in shapes.items():
        if array is None:
            continue
        if array.ndim != len(shape) or any(s is not None and s != n
                                            for s, n in zip(shape, array.shape)):
            raise ValueError(f"{where}: input {name} has shape {array.shape}; with "
                             f"hidden_size={H} (from R) it must be {shape} (None: any)")
