"""ONNX graphs of fitted task models (``model.to_onnx`` / ``model.to_ids``).

The recurrent stack is written by ``fastrnn.onnx`` (layer export); this
module adds the task model's inputs (ids through an embedding or one-hot, or
numeric features), its pooling and output head, and the metadata that lets
another runtime prepare inputs and read outputs.  It sits above
``fastrnn.onnx`` and below the task classes, which name their head in
``_onnx_head``.
"""

import json

import numpy as np

from .._version import __version__
from ..onnx import FLOAT, INT64, Graph, recurrent_nodes, write


SEQ2SEQ_REASON = (
    "Seq2Seq cannot be exported to ONNX: its output is decoded one token at a time "
    "(greedy or beam search) with a length that depends on the tokens drawn, which "
    "would need an ONNX Loop around the decoder and the beam bookkeeping; fastrnn "
    "keeps decoding in Python.  Export its parts as layers (fr.onnx.export(model."
    "encoder_.rnn, ...)) if you need them elsewhere.")


def export_model(model, params, path=None):
    """``model.to_onnx(path)``: see ``TaskModel.to_onnx``.  ``params`` are the
    model's constructor parameters as saved (JSON-able); the output head is
    the one ``model._onnx_head`` names (a key of ``HEADS``)."""
    head = HEADS.get(getattr(model, "_onnx_head", None))
    if head is None:
        raise TypeError(f"cannot export a {type(model).__name__} to ONNX")
    model._check_fitted()
    graph = Graph()
    out, h_n, lengths = _encoder(graph, model.network_)
    name, tensor, shape = head(graph, model, out, h_n, lengths)
    graph.output(tensor, name, FLOAT, shape)
    onnx_model = graph.model(f"fastrnn_{type(model).__name__}", model_metadata(model, params))
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


def _token_head(graph, model, out, h_n, lengths):
    """Per-step softmax over the head's outputs (tagger, language model)."""
    logits = _linear(graph, model.head_, out)                       # (T, B, K)
    probabilities = graph.node("Softmax", [logits], axis=2)
    return ("probabilities", graph.node("Transpose", [probabilities], perm=[1, 0, 2]),
            ["batch", "time", model.head_.out_features])


# The graph output of each task model, named by the class's ``_onnx_head``.
HEADS = {"classifier": _classifier_head, "regressor": _regressor_head, "tokens": _token_head}


def model_metadata(model, params):
    """metadata_props of an exported task model, each a JSON document."""
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
