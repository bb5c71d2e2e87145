"""Many-to-one outputs: one vector per sequence from a recurrent stack's
per-step outputs (``Pooling``), and the top layer's final state."""

import numpy as np

from .._validation import Options, produced

POOLINGS = ("last", "mean", "max")


def top_state(h_n, bidirectional):
    """The last layer's final hidden state, both directions concatenated: (B, D*H)."""
    h = h_n[0] if isinstance(h_n, tuple) else h_n
    if bidirectional:
        return np.concatenate([h[-2], h[-1]], axis=1)
    return h[-1]


def top_state_grad(d_top, h_n, bidirectional):
    """d_hn for the recurrent layer given the gradient of :func:`top_state`."""
    h = h_n[0] if isinstance(h_n, tuple) else h_n
    d_h = np.zeros_like(h)
    if bidirectional:
        hidden = h.shape[2]
        d_h[-2] = d_top[:, :hidden]
        d_h[-1] = d_top[:, hidden:]
    else:
        d_h[-1] = d_top
    produced(d_h)    # a NaN here came from the model: the Trainer's gradient check reports it
    return (d_h, None) if isinstance(h_n, tuple) else d_h


class Pooling:
    """One vector per sequence from per-step outputs (T, B, F).

    "last": the final hidden state of the top layer (for a bidirectional stack
    the forward direction's last valid step and the reverse direction's first
    step); "mean"/"max": over each row's valid steps only.
    """

    def __init__(self, mode, bidirectional):
        self.mode = Options(POOLINGS)("pooling", mode)
        self.bidirectional = bidirectional
        self._cache = None

    def forward(self, out, h_n, lengths):
        steps, batch = out.shape[:2]
        valid = np.arange(steps)[:, None] < lengths[None, :]                 # (T, B)
        if self.mode == "last":
            pooled = top_state(h_n, self.bidirectional)
            self._cache = (h_n,)
        elif self.mode == "mean":
            scale = (1.0 / lengths).astype(out.dtype)
            pooled = (out * valid[:, :, None]).sum(axis=0) * scale[:, None]
            self._cache = (valid, scale, out.shape)
        else:
            masked = np.where(valid[:, :, None], out, -np.inf)
            argmax = masked.argmax(axis=0)                                     # (B, F)
            pooled = np.take_along_axis(out, argmax[None], axis=0)[0]
            self._cache = (argmax, out.shape)
        return pooled

    def backward(self, d_pooled):
        """``(d_out or None, d_hn or None)`` for the encoder's backward."""
        if self.mode == "last":
            (h_n,) = self._cache
            return None, top_state_grad(d_pooled, h_n, self.bidirectional)
        if self.mode == "mean":
            valid, scale, shape = self._cache
            d_out = valid[:, :, None] * (d_pooled * scale[:, None])[None]
            return produced(np.ascontiguousarray(d_out, dtype=d_pooled.dtype)), None
        argmax, shape = self._cache
        d_out = np.zeros(shape, dtype=d_pooled.dtype)
        np.put_along_axis(d_out, argmax[None], d_pooled[None], axis=0)
        return produced(d_out), None
