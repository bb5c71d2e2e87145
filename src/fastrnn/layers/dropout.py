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

    def _config(self):
        return {"p": self.p, "dtype": self.dtype.name}

    def forward(self, x):
        x = float_array("x", x, self.dtype)
        if not self.training or self.p == 0.0:
            self._keep_for_backward(shape=x.shape, mask=None)     # eval mode keeps nothing
            return x
        mask = self._dropout_mask(x.shape, self.p)
        self._keep_for_backward(shape=x.shape, mask=mask)
        return read_only(x * mask)

    def backward(self, d_y):
        """``d_y * mask`` for the last training-mode forward (once per forward)."""
        cache = self._forward_cache()
        d_y = float_array("d_y", d_y, self.dtype)
        check_shape("d_y", d_y, cache.shape)
        self._consume_cache()
        return produced(d_y.copy() if cache.mask is None else d_y * cache.mask)

    def __repr__(self):
        return f"Dropout(p={self.p}, dtype={self.dtype.name!r})"
