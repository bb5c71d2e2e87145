"""Dropout layer: inverted dropout with a checkpointable random generator."""


import numpy as np

from .._validation import FRACTION, check_shape, float_array, produced, read_only, resolve_dtype
from .module import Module

__all__ = ["Dropout"]


class Dropout(Module):
    """``torch.nn.Dropout`` semantics: zero each element with probability ``p``.

    Args:
        p: drop probability in [0, 1); 0 makes the layer the identity.
        seed: seed of the layer's generator (``np.random.default_rng``).  Its
            state is ``rng_state()`` / ``set_rng_state()``, which checkpoints
            save so a resumed run draws the same masks.
        dtype: "float32" (default) or "float64": the dtype of the output.

    Training mode: ``forward(x)`` returns ``x * mask`` where the mask holds 0
    or ``1 / (1 - p)`` (inverted dropout: the expectation is unchanged, so
    eval mode needs no rescaling), and keeps the mask for ``backward(d_y)``,
    which returns ``d_y * mask``.  Eval mode: ``forward`` returns ``x`` itself
    (converted to ``dtype`` if needed) and ``backward`` is refused.  Values
    are not checked for NaN: dropout neither creates nor hides them
    (NaN * 0 is NaN) and the next layer checks.
    """

    def __init__(self, p=0.5, seed=None, dtype="float32"):
        super().__init__(resolve_dtype(dtype))
        self.p = FRACTION("p (the drop probability)", p)
        self._rng = np.random.default_rng(seed)
        self._cache = None

    def _config(self):
        return {"p": self.p, "dtype": self.dtype.name}

    def forward(self, x):
        x = float_array("x", x, self.dtype)
        if not self.training:
            self._cache = None
            return x
        if self.p == 0.0:
            self._cache = (x.shape, None)
            return x
        keep = 1.0 - self.p
        # float32 uniforms: half the random bits and memory of float64; a
        # keep probability is resolved to ~2**-24, far below any use of p
        mask = self._rng.random(x.shape, dtype=np.float32) < np.float32(keep)
        mask = mask.astype(self.dtype)
        mask *= self.dtype.type(1.0 / keep)
        self._cache = (x.shape, mask)
        return read_only(x * mask)

    def backward(self, d_y):
        """``d_y * mask`` for the last training-mode forward (once per forward)."""
        if self._cache is None:
            raise RuntimeError(
                "backward needs a forward pass in training mode first (none since the "
                "last backward, or the layer is in eval mode: call train())")
        shape, mask = self._cache
        d_y = float_array("d_y", d_y, self.dtype)
        check_shape("d_y", d_y, shape)
        self._cache = None
        return produced(d_y.copy() if mask is None else d_y * mask)

    def train(self, mode=True):
        if not mode:
            self._cache = None
        return super().train(mode)

    def __repr__(self):
        return f"Dropout(p={self.p}, dtype={self.dtype.name!r})"
