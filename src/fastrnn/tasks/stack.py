"""The recurrent stack every task model builds on, encoder and decoder alike.

``RecurrentStack`` is input layer (embedding, one-hot or numeric features)
-> stacked (optionally bidirectional) RNN/LSTM/GRU/Jordan layers -> dropout,
with one forward and one backward for the whole stack.  ``CELLS`` is the one
table of the cell names the task models (and the CLI) accept.
"""

import functools

import numpy as np

from .._validation import FRACTION, Options, layer_seeds
from ..layers import GRU, LSTM, RNN, Jordan
from ..layers.dropout import Dropout
from ..layers.embedding import Embedding
from ..text import PAD, one_hot


def _jordan_stack(input_size, hidden_size, num_layers=1, dropout=0.0, bidirectional=False,
                  dtype="float32", seed=None):
    """cell="jordan" in the task models: a Jordan stack whose fed-back output
    (tanh, hidden_size wide) is what the model's head reads."""
    if bidirectional:
        raise ValueError("cell='jordan' cannot be bidirectional (pass bidirectional=False)")
    if dropout > 0 and num_layers > 1:
        raise ValueError(f"cell='jordan' has no dropout between layers; got dropout="
                         f"{dropout} with num_layers={num_layers} (use dropout=0.0 or "
                         f"num_layers=1)")
    return Jordan(input_size, hidden_size, hidden_size, output_activation="tanh",
                  num_layers=num_layers, dtype=dtype, seed=seed)


CELLS = {"rnn": RNN, "lstm": LSTM, "gru": GRU, "jordan": _jordan_stack}
INPUTS = ("embedding", "onehot", "numeric")

# One-hot inputs up to this width go to the layer as ids of a frozen identity
# table (V * V values: 4 MB in float32 at the limit), so the layer can make the
# input product once per symbol instead of once per token.
ONEHOT_TABLE_MAX = 1024


@functools.lru_cache(maxsize=4)
def _identity_table(size, dtype):
    """A frozen Embedding whose row v is the one-hot vector of v (shared, never written)."""
    return Embedding.from_pretrained(np.eye(size), freeze=True, dtype=dtype)


class RecurrentStack:
    """Input layer + recurrent stack + output dropout, as one unit.

    input_kind "embedding"/"onehot" takes token ids (T, B) over ``input_size``
    symbols; "numeric" takes features (T, B, input_size).  ``pretrained``: a
    vectors file or array for the embedding, rows matched through ``vocab``
    (only with input_kind "embedding": one-hot and numeric inputs have no
    embedding to put them in).  ``dropout`` applies between recurrent layers
    and to the stack's output.  ``cell_options``: extra keyword arguments of
    the recurrent layer (``{"reset_after": False}`` for the GRU; ``peepholes``,
    ``cell_clip``, ``proj_size`` for the LSTM).
    """

    def __init__(self, cell, input_kind, input_size, hidden_size, num_layers=1,
                 bidirectional=False, dropout=0.0, embedding_dim=None, pretrained=None,
                 vocab=None, freeze_embedding=False, dtype="float32", seed=None,
                 cell_options=None):
        Options(tuple(CELLS))("cell", cell)
        Options(INPUTS)("input", input_kind)
        dropout = FRACTION("dropout", dropout)
        if pretrained is not None and input_kind != "embedding":
            raise ValueError(f"pretrained vectors need input='embedding', but this model's "
                             f"input is {input_kind!r}"
                             + (" (numeric data)" if input_kind == "numeric" else ""))
        seeds = layer_seeds(seed, 3)
        self.input_kind = input_kind
        self.input_size = input_size
        self.embedding = None
        if input_kind == "embedding":
            if pretrained is not None:
                try:
                    self.embedding = Embedding.from_pretrained(
                        pretrained, vocab=vocab, freeze=freeze_embedding, padding_idx=PAD,
                        dtype=dtype, seed=seeds[0])
                except (ValueError, TypeError) as exc:
                    kind = TypeError if isinstance(exc, TypeError) else ValueError
                    raise kind(f"pretrained: {exc}") from None
                if self.embedding.num_embeddings != input_size:
                    raise ValueError(f"pretrained vectors must have {input_size} rows (one "
                                     f"per vocabulary entry), got "
                                     f"{self.embedding.num_embeddings}")
            else:
                self.embedding = Embedding(input_size, embedding_dim, padding_idx=PAD,
                                           freeze=freeze_embedding, dtype=dtype,
                                           seed=seeds[0])
            features = self.embedding.embedding_dim
        else:
            features = input_size
        if cell_options is not None and not isinstance(cell_options, dict):
            raise TypeError(f"cell_options must be None or a dict of {cell} layer options, "
                            f"got {type(cell_options).__name__}")
        try:
            self.rnn = CELLS[cell](features, hidden_size, num_layers=num_layers,
                                   dropout=dropout if num_layers > 1 else 0.0,
                                   bidirectional=bidirectional, dtype=dtype, seed=seeds[1],
                                   **(cell_options or {}))
        except TypeError as exc:    # an unknown or mistyped option
            raise TypeError(f"cell_options for cell={cell!r}: {exc}") from None
        self.dropout = Dropout(dropout, seed=seeds[2], dtype=dtype) if dropout > 0 else None
        self.dtype = self.rnn.dtype
        # h is proj_size wide for a projected LSTM (Jordan stacks have no projection)
        self.output_size = ((getattr(self.rnn, "proj_size", 0) or hidden_size)
                            * (2 if bidirectional else 1))

    def modules(self):
        """The layers that exist, in order: embedding, recurrent stack, dropout."""
        return [m for m in (self.embedding, self.rnn, self.dropout) if m is not None]

    def _id_table(self):
        """The Embedding the recurrent layer reads token ids through (the
        input product once per vocabulary row, see ``RNN.forward``): the
        model's embedding, or an identity table for one-hot inputs; None when
        the layer takes vectors (numeric inputs, Jordan stacks, one-hot wider
        than ``ONEHOT_TABLE_MAX``)."""
        if isinstance(self.rnn, Jordan):
            return None
        if self.embedding is not None:
            return self.embedding
        if self.input_kind == "onehot" and self.input_size <= ONEHOT_TABLE_MAX:
            return _identity_table(self.input_size, self.dtype.name)
        return None

    def _features(self, inputs):
        if self.input_kind == "embedding":
            return self.embedding(inputs)
        if self.input_kind == "onehot":
            return one_hot(inputs, self.input_size, dtype=self.dtype)
        return inputs

    def forward(self, inputs, lengths=None, hx=None):
        """``(out (T, B, output_size), h_n)`` for ids (T, B) or features (T, B, F)."""
        table = self._id_table()
        if table is not None:
            out, h_n = self.rnn(inputs, hx=hx, lengths=lengths, embedding=table)
        else:
            out, h_n = self.rnn(self._features(inputs), hx=hx, lengths=lengths)
        if self.dropout is not None:
            out = self.dropout(out)
        self._out_shape = out.shape    # backward(None, d_hn) needs it
        return out, h_n

    def backward(self, d_out, d_hn=None, state_grad=True):
        """Back through the stack; returns the gradient of the initial state
        (None with ``state_grad=False``, which skips computing it).

        d_out None means the loss reached the stack only through ``d_hn``.
        """
        if d_out is None:
            d_out = np.zeros(self._out_shape, dtype=self.dtype)
        elif self.dropout is not None:
            d_out = self.dropout.backward(d_out)
        if self._id_table() is not None:     # the layer hands the table its gradient
            return self.rnn.backward(d_out, d_hn=d_hn, state_grad=state_grad)[1]
        needs_input_grad = self.embedding is not None and bool(self.embedding.parameters())
        d_x, d_hx = self.rnn.backward(d_out, d_hn=d_hn, input_grad=needs_input_grad,
                                      state_grad=state_grad)
        if needs_input_grad:
            self.embedding.backward(d_x)
        return d_hx
