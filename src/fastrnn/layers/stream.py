"""Streaming a recurrent layer one timestep at a time, with the state carried.

``layer.stream(batch_size, hx)`` returns a :class:`Stream`.  Everything that
cannot change between steps (batch size, the initial state, the layout) is
checked once there; each ``step(x_t)`` checks only x_t's shape, dtype and
values, in compiled code, then runs every layer for one step without the GIL
(``fastrnn._kernels._recurrent.LayerStream``).  The arithmetic is the
whole-sequence forward's own chunk routine with T = 1, so stepping through a
sequence gives exactly ``layer(x)``'s outputs and final state.

Weights: a stream packs its own copy of the layer's weights.  When the layer's
weights may have changed -- ``load_state_dict``, or an optimizer or clipping
step (they list the live arrays through ``named_parameters()``) -- the next
``step`` re-packs them (the layer's ``_weights_version`` moved).  Writing into
a parameter array kept from before is not seen by ``step``: call ``reset()``
after that.  ``reset()`` keeps the packs only when the layer's pack key
(``Module._unchanged_version``: the version, while nothing outside the layer holds
its arrays) is the one they were made under, so a stream per sequence of a
fixed model does not pack again at every reset.
"""

import functools

from .._kernels._dispatch import _recurrent as kernels
from .._validation import float_array, positive_int

__all__ = ["Stream"]


class Stream:
    """One caller's step-by-step run of a unidirectional RNN/LSTM/GRU, cell
    variants included (reset_after=False, peepholes, proj_size, cell_clip,
    input_forget: the stream uses the layer's own kernel layout).

    Use ``layer.stream(batch_size=1, hx=None)``.  Each thread should own its
    streams (a stream's state is its own; the layer is only read), and many
    streams may run over one layer at once.  Streams compute inference (no
    dropout), whatever the layer's mode.
    """

    def __init__(self, layer, batch_size=1, hx=None):
        if layer.bidirectional:
            raise ValueError(
                f"{type(layer).__name__}(bidirectional=True) cannot stream: its reverse "
                f"direction needs the whole sequence; use layer(x) instead")
        self._layer = layer
        self.batch_size = positive_int("batch_size", batch_size)
        convert = functools.partial(float_array, "x_t", dtype=layer.dtype, ndim=2)
        self._kernel = kernels.LayerStream(layer._kernels, self.batch_size, convert)
        self._version = self._key = None
        self.reset(hx)

    def step(self, x_t):
        """The top layer's output for one timestep: x_t (B, input_size) ->
        y (B, hidden_size), or (B, proj_size) for a projected LSTM.  The state
        moves on."""
        if self._version != self._layer._weights_version:
            self._pack()
        return self._kernel.step(x_t)

    def step_head(self, x_t, softmax=False):
        """``step`` followed by the linear head packed with
        ``_kernel.pack_head`` (task models), in one compiled call: the head's
        (B, K) rows, or with ``softmax`` their float64 softmax."""
        if self._version != self._layer._weights_version:
            self._pack()
        return self._kernel.step_head(x_t, softmax)

    @property
    def state(self):
        """Copies of the current state, laid out like the layer's ``h_n``
        (num_layers, B, H), or ``(h_n, c_n)`` for an LSTM."""
        h = self._kernel.h.copy()
        if self._kernel.c is not None:
            return h, self._kernel.c.copy()
        return h

    def reset(self, hx=None):
        """Start again from ``hx`` (zeros when None; ``(h0, c0)`` for an LSTM,
        shaped like the layer's ``hx``).  The weights are re-packed unless
        the layer's pack key shows them unchanged (see the module docstring)."""
        h0, c0 = self._layer._split_states("hx", hx, self.batch_size)
        self._kernel.h[...] = h0 if h0 is not None else 0
        if self._kernel.c is not None:
            self._kernel.c[...] = c0 if c0 is not None else 0
        key = self._layer._unchanged_version()
        if key is None or key != self._key:
            self._pack()

    def _pack(self):
        layer = self._layer
        self._key = layer._unchanged_version()
        self._version = layer._weights_version
        self._kernel.pack([layer._slots[k][0] for k in range(layer.num_layers)])

    def __repr__(self):
        return f"Stream({self._layer!r}, batch_size={self.batch_size})"
