"""ONNX export of recurrent layers and task models, and weight import.

``export(layer, path)`` writes an ``RNN``/``LSTM``/``GRU`` layer as a graph of
ONNX ``RNN``/``LSTM``/``GRU`` nodes (one per layer, both directions in one
node) with the same inputs and outputs as ``layer(x)``; ``model.to_onnx(path)``
(built here by :func:`export_model`) does the same for a fitted task model,
embedding, pooling, head and softmax included.  ``load_weights`` reads the
weights of such nodes back into a fastrnn layer.  The ``onnx`` package is
needed (``pip install fastrnn[onnx]``); ONNX Runtime checks the graphs in the
tests.

Gate layouts differ: fastrnn (like PyTorch) stacks LSTM gates as i, f, g, o
and GRU gates as r, z, n; ONNX wants i, o, f, c and z, r, h.  ``CELLS`` holds,
per cell, the ONNX operator, the block permutation and the attributes; a
new variant (GRU with ``linear_before_reset=0``, LSTM peepholes, ``clip``)
is one more entry there.  fastrnn's GRU applies the reset gate after the
recurrent product (``r * (W_hn h + b_hn)``): ONNX's ``linear_before_reset=1``.
"""

import json
import os
from dataclasses import dataclass, field

import numpy as np

from ._io import atomic_write, is_stream
from .layers.recurrent import GRU, LSTM, RNN

__all__ = ["export", "load_weights", "CELLS", "OPSET"]

OPSET = 17
_HINT = "ONNX export needs the onnx package: pip install fastrnn[onnx]  (or: pip install onnx)"


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError(_HINT) from None
    return onnx


# -- cells: the one place that knows how fastrnn's gates map to ONNX's ---------------------

@dataclass(frozen=True)
class OnnxCell:
    """How a fastrnn cell is written as an ONNX node.

    op: the ONNX operator.  order: for each ONNX gate block, the index of the
    fastrnn (PyTorch) block it takes.  attributes: fixed node attributes.
    activation: the layer's activation names for one direction (None: the
    operator's default), from the layer.
    """
    op: str
    order: tuple
    attributes: dict = field(default_factory=dict)
    activation: object = None

    def to_onnx(self, weight):
        """fastrnn's (G*H, ...) weight or bias in ONNX block order."""
        return np.concatenate([block for block in self._blocks(weight, self.order)], axis=0)

    def from_onnx(self, weight):
        """ONNX's (G*H, ...) weight or bias in fastrnn block order."""
        inverse = tuple(int(i) for i in np.argsort(self.order))
        return np.concatenate(list(self._blocks(weight, inverse)), axis=0)

    def _blocks(self, weight, order):
        blocks = np.split(weight, len(self.order), axis=0)
        return [blocks[i] for i in order]


CELLS = {
    "rnn": OnnxCell("RNN", (0,), activation=lambda layer: ["Relu" if layer.nonlinearity
                                                            == "relu" else "Tanh"]),
    "lstm": OnnxCell("LSTM", (0, 3, 1, 2)),           # i f g o -> i o f c
    "gru": OnnxCell("GRU", (1, 0, 2), {"linear_before_reset": 1}),   # r z n -> z r h
}


def cell_of(layer):
    """The CELLS key of a fastrnn recurrent layer."""
    for cls, name in ((LSTM, "lstm"), (GRU, "gru"), (RNN, "rnn")):
        if isinstance(layer, cls):
            return name
    raise TypeError(f"layer must be an fr.RNN, fr.LSTM or fr.GRU, got {type(layer).__name__}")


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
        from . import __version__
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
    cell = CELLS[name]
    H, D = layer.hidden_size, 2 if layer.bidirectional else 1
    sequence_lens = graph.node("Cast", [lengths], to=6) if lengths is not None else ""
    state = layer.state_dict()
    finals_h, finals_c = [], []
    for index in range(layer.num_layers):
        w, r, b = _onnx_weights(layer, cell, state, index)
        inputs = [x, graph.constant(w, "W"), graph.constant(r, "R"),
                  graph.constant(b, "B") if b is not None else "", sequence_lens]
        for initial in (h0, c0 if name == "lstm" else None):
            inputs.append("" if initial is None else graph.node("Slice", [
                initial, graph.constant([index * D], "start", np.int64),
                graph.constant([(index + 1) * D], "end", np.int64)]))
        attributes = dict(cell.attributes, hidden_size=H,
                          direction="bidirectional" if D == 2 else "forward")
        if cell.activation is not None:
            attributes["activations"] = cell.activation(layer) * D
        outputs = graph.node(cell.op, _trim(inputs), 3 if name == "lstm" else 2,
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


def _onnx_weights(layer, cell, state, index):
    """W (D, G*H, E), R (D, G*H, H) and B (D, 2*G*H) or None, float32, ONNX order."""
    suffixes = [f"l{index}"] + ([f"l{index}_reverse"] if layer.bidirectional else [])
    w = np.stack([cell.to_onnx(state[f"weight_ih_{s}"]) for s in suffixes])
    r = np.stack([cell.to_onnx(state[f"weight_hh_{s}"]) for s in suffixes])
    b = None
    if layer.bias:
        b = np.stack([np.concatenate([cell.to_onnx(state[f"bias_ih_{s}"]),
                                      cell.to_onnx(state[f"bias_hh_{s}"])])
                      for s in suffixes])
    return (w.astype(np.float32), r.astype(np.float32),
            None if b is None else b.astype(np.float32))


def export(layer, path=None, lengths=False, initial_state=False):
    """Write a fastrnn ``RNN``/``LSTM``/``GRU`` layer as an ONNX model.

    Graph inputs: ``input`` float32 (T, B, E) ((B, T, E) for a batch_first
    layer), then ``lengths`` int64 (B,) when ``lengths`` is True (rows end
    early: outputs past the end are 0, final states come from the last
    valid step), then ``h0`` (and ``c0`` for an LSTM), (L*D, B, H), when
    ``initial_state`` is True.  Outputs: ``output`` (T, B, D*H) and ``h_n``
    (and ``c_n``), (L*D, B, H): what ``layer(x, hx, lengths)`` returns, in
    float32 (a float64 layer's weights are rounded).  Eval mode: no dropout.

    Args:
        layer: an fr.RNN, fr.LSTM or fr.GRU.
        path: file path or binary file object to write, or None.
        lengths, initial_state: add those optional inputs (see above).

    Returns the ``onnx.ModelProto`` (also written to ``path`` when given).
    """
    cell_of(layer)
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
            match the nodes (GRU nodes need ``linear_before_reset=1``, the
            PyTorch and fastrnn variant).

    Returns ``layer``.  Nothing changes unless every weight fits.
    """
    onnx = _onnx()
    name = cell_of(layer)
    cell = CELLS[name]
    model = _read_model(onnx, path_or_model)
    tensors = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:     # weights given as Constant nodes
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            tensors[node.output[0]] = onnx.numpy_helper.to_array(node.attribute[0].t)
    nodes = [node for node in model.graph.node if node.op_type == cell.op]
    if len(nodes) != layer.num_layers:
        found = sorted({n.op_type for n in model.graph.node if n.op_type in ("RNN", "LSTM",
                                                                             "GRU")})
        raise ValueError(f"the ONNX model has {len(nodes)} {cell.op} node(s) (recurrent "
                         f"nodes found: {found or 'none'}); the {type(layer).__name__} has "
                         f"num_layers={layer.num_layers}")
    state = {}
    for index, node in enumerate(nodes):
        state.update(_node_state(node, index, layer, cell, tensors, onnx))
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


def _node_state(node, index, layer, cell, tensors, onnx):
    """The state-dict entries of layer ``index`` from one ONNX node."""
    where = f"ONNX {node.op_type} node {node.name or index!r}"
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    direction = attributes.get("direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    expected = "bidirectional" if layer.bidirectional else "forward"
    if direction != expected:
        raise ValueError(f"{where} has direction={direction!r}; the layer needs {expected!r}")
    for key, value in cell.attributes.items():
        if attributes.get(key, 0) != value:
            raise ValueError(f"{where} has {key}={attributes.get(key, 0)}; fastrnn's "
                             f"{type(layer).__name__} needs {key}={value}")
    activations = attributes.get("activations")
    if cell.activation is not None and activations is not None:
        wanted = cell.activation(layer)
        if [a.decode() if isinstance(a, bytes) else a for a in activations][:1] != wanted:
            raise ValueError(f"{where} has activations {activations}; the layer uses {wanted}")
    if attributes.get("clip") is not None:
        raise ValueError(f"{where} clips its cell (clip={attributes['clip']}): fastrnn's "
                         f"layers do not")
    weights = [tensors.get(name) if name else None for name in list(node.input)[1:4]]
    if weights[0] is None or weights[1] is None:
        raise ValueError(f"{where}: its W and R inputs must be initializers or constants")
    if len(node.input) > 7 and node.input[7]:
        raise ValueError(f"{where} has peephole weights (input P): fastrnn's LSTM has none")
    w, r, b = weights
    if (b is not None) != layer.bias:
        raise ValueError(f"{where} {'has' if b is not None else 'has no'} bias B but the "
                         f"layer was built with bias={layer.bias}")
    state = {}
    for direction_index, suffix in enumerate([f"l{index}"] + (
            [f"l{index}_reverse"] if layer.bidirectional else [])):
        state[f"weight_ih_{suffix}"] = cell.from_onnx(w[direction_index])
        state[f"weight_hh_{suffix}"] = cell.from_onnx(r[direction_index])
        if b is not None:
            wb, rb = np.split(b[direction_index], 2)
            state[f"bias_ih_{suffix}"] = cell.from_onnx(wb)
            state[f"bias_hh_{suffix}"] = cell.from_onnx(rb)
    return state


# -- task models ------------------------------------------------------------------------------

SEQ2SEQ_REASON = (
    "Seq2Seq cannot be exported to ONNX: its output is decoded one token at a time "
    "(greedy or beam search) with a length that depends on the tokens drawn, which "
    "would need an ONNX Loop around the decoder and the beam bookkeeping; fastrnn "
    "keeps decoding in Python.  Export its parts as layers (fr.onnx.export(model."
    "encoder_.rnn, ...)) if you need them elsewhere.")


def export_model(model, path=None):
    """``model.to_onnx(path)``: see ``TaskModel.to_onnx``."""
    from .tasks import LanguageModel, Seq2Seq, SequenceClassifier, SequenceRegressor
    from .tasks import SequenceTagger
    if isinstance(model, Seq2Seq):
        raise NotImplementedError(SEQ2SEQ_REASON)
    model._check_fitted()
    graph = Graph()
    out, h_n, lengths = _encoder(graph, model.network_)
    if isinstance(model, SequenceClassifier):
        result = _classifier_head(graph, model, out, h_n, lengths)
    elif isinstance(model, SequenceRegressor):
        result = _regressor_head(graph, model, out, h_n, lengths)
    elif isinstance(model, (SequenceTagger, LanguageModel)):
        logits = _linear(graph, model.head_, out)                       # (T, B, K)
        probabilities = graph.node("Softmax", [logits], axis=2)
        result = ("probabilities", graph.node("Transpose", [probabilities], perm=[1, 0, 2]),
                  ["batch", "time", model.head_.out_features])
    else:
        raise TypeError(f"cannot export a {type(model).__name__} to ONNX")
    name, tensor, shape = result
    graph.output(tensor, name, FLOAT, shape)
    onnx_model = graph.model(f"fastrnn_{type(model).__name__}", model_metadata(model))
    if path is not None:
        write(onnx_model, path)
    return onnx_model


def _encoder(graph, encoder):
    """Graph inputs (``ids`` or ``features``, then ``lengths``) and the encoder
    stack; returns ``(out (T, B, D*H), h_n, lengths)`` tensor names."""
    if encoder.input_kind == "numeric":
        features = graph.input("features", FLOAT, ["batch", "time", encoder.input_size])
        x = graph.node("Transpose", [features], perm=[1, 0, 2])
    else:
        ids = graph.input("ids", INT64, ["batch", "time"])
        ids = graph.node("Transpose", [ids], perm=[1, 0])
        if encoder.input_kind == "embedding":
            table = graph.constant(encoder.embedding.weight.astype(np.float32), "embedding")
            x = graph.node("Gather", [table, ids], axis=0)
        else:
            x = graph.node("OneHot", [ids, graph.constant(encoder.input_size, "depth",
                                                          np.int64),
                                      graph.constant([0.0, 1.0], "values", np.float32)],
                           axis=-1)
    lengths = graph.input("lengths", INT64, ["batch"])
    out, h_n, _ = recurrent_nodes(graph, encoder.rnn, x, lengths)
    return out, h_n, lengths


def _linear(graph, linear, x):
    """``linear(x)`` for x (..., in_features)."""
    weight = graph.constant(linear.state_dict()["weight"].T.astype(np.float32), "head_w")
    y = graph.node("MatMul", [x, weight])
    if linear.bias:
        y = graph.node("Add", [y, graph.constant(linear.state_dict()["bias"].astype(
            np.float32), "head_b")])
    return y


def _pooled(graph, model, out, h_n, lengths):
    """The Pooling of the task models, (B, D*H)."""
    rnn = model.network_.rnn
    directions = 2 if rnn.bidirectional else 1
    mode = model._fitted_param("pooling")
    if mode == "last":
        top = graph.node("Slice", [h_n, graph.constant([-directions], "start", np.int64),
                                   graph.constant([np.iinfo(np.int64).max], "end", np.int64)])
        top = graph.node("Transpose", [top], perm=[1, 0, 2])
        return graph.node("Reshape", [top, graph.constant([0, -1], "shape", np.int64)])
    mask = graph.node("Unsqueeze", [graph.time_mask(out, lengths),
                                    graph.constant([2], "axes", np.int64)])     # (T, B, 1)
    if mode == "mean":
        total = graph.node("ReduceSum", [graph.node("Mul", [out, graph.node(
            "Cast", [mask], to=FLOAT)]), graph.constant([0], "axes", np.int64)], keepdims=0)
        count = graph.node("Cast", [graph.node("Unsqueeze", [lengths, graph.constant(
            [1], "axes", np.int64)])], to=FLOAT)
        return graph.node("Div", [total, count])
    masked = graph.node("Where", [mask, out, graph.constant(-np.inf, "ninf", np.float32)])
    return graph.node("ReduceMax", [masked], axes=[0], keepdims=0)


def _classifier_head(graph, model, out, h_n, lengths):
    logits = _linear(graph, model.head_, _pooled(graph, model, out, h_n, lengths))
    if model._sigmoid:
        positive = graph.node("Sigmoid", [logits])
        negative = graph.node("Sub", [graph.constant(1.0, "one", np.float32), positive])
        probabilities = graph.node("Concat", [negative, positive], axis=1)
    else:
        probabilities = graph.node("Softmax", [logits], axis=1)
    return "probabilities", probabilities, ["batch", len(model.classes_)]


def _regressor_head(graph, model, out, h_n, lengths):
    if model._per_step:
        values = graph.node("Transpose", [_linear(graph, model.head_, out)], perm=[1, 0, 2])
        shape = ["batch", "time", model.n_outputs_]
    else:
        values = _linear(graph, model.head_, _pooled(graph, model, out, h_n, lengths))
        shape = ["batch", model.n_outputs_]
    if not model.target_is_vector_:
        values = graph.node("Squeeze", [values, graph.constant([-1], "axes", np.int64)])
        shape = shape[:-1]
    return "values", values, shape


def model_metadata(model):
    """metadata_props of an exported task model, each a JSON document."""
    from .tasks.base import _json_params
    from . import __version__
    params = _json_params(getattr(model, "_fitted_params", None) or model.get_params())
    fitted = model._fitted_state()
    metadata = {"fastrnn.config": {"class": type(model).__name__, "params": params,
                                   "fastrnn_version": __version__},
                "fastrnn.fitted": fitted,
                "fastrnn.inputs": model._onnx_inputs()}
    vocab = getattr(model, "vocab_", None) or getattr(getattr(model, "inputs_", None),
                                                      "vocab", None)
    if vocab is not None:
        metadata["fastrnn.vocabulary"] = list(vocab.tokens)
    if "classes" in fitted:
        metadata["fastrnn.labels"] = fitted["classes"]
    return {key: json.dumps(value) for key, value in metadata.items()}


def pad(sequences, numeric):
    """``(ids (B, T) int64 padded with 0, lengths (B,) int64)`` or, numeric,
    ``(features (B, T, F) float32 padded with 0, lengths)``."""
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    steps = int(lengths.max())
    if numeric:
        batch = np.zeros((len(sequences), steps, sequences[0].shape[1]), dtype=np.float32)
    else:
        batch = np.zeros((len(sequences), steps), dtype=np.int64)
    for row, sequence in enumerate(sequences):
        batch[row, :len(sequence)] = sequence
    return batch, lengths
