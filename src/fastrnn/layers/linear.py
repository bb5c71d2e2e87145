"""Linear layer: y = x W^T + b over the last axis, any leading axes."""

import math

import numpy as np

from .. import _threads
from .._kernels._dispatch import _dense
from .._validation import (check_finite, check_shape, float_array, positive_int,
                           private_input, produced, read_only, resolve_dtype)
from .module import Module

__all__ = ["Linear"]


class Linear(Module):
    """``torch.nn.Linear`` semantics: ``weight`` (out, in), ``bias`` (out,).

    Init U(-1/sqrt(in), 1/sqrt(in)) for both, as PyTorch.  ``forward(x)`` takes
    ``(..., in_features)`` (for example ``(T, B, H)`` from a recurrent layer)
    and returns ``(..., out_features)``; ``backward(d_y, input_grad=True)``
    returns ``d_x`` (None with ``input_grad=False``) and accumulates into
    ``grads``.  The products run on fastrnn's threads (``fr.set_num_threads``).
    """

    def __init__(self, in_features, out_features, bias=True, dtype="float32", seed=None):
        super().__init__(resolve_dtype(dtype))
        self.in_features = positive_int("in_features", in_features)
        self.out_features = positive_int("out_features", out_features)
        self.bias = bool(bias)
        rng = np.random.default_rng(seed)
        bound = 1.0 / math.sqrt(self.in_features)
        def draw(shape):
            return rng.uniform(-bound, bound, shape)
        self._new_parameter("weight", (self.out_features, self.in_features), draw)
        if self.bias:
            self._new_parameter("bias", (self.out_features,), draw)
        self._forward_kernel = self._kernel(_dense.linear_forward)
        self._backward_kernel = self._kernel(_dense.linear_backward)
        self._no_bias = np.empty(0, dtype=self.dtype)
        self._no_input = np.empty((0, 0), dtype=self.dtype)

    def _config(self):
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias, "dtype": self.dtype.name}

    def forward(self, x):
        x_given = x
        x = float_array("x", x, self.dtype)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must have {self.in_features} features (in_features) in "
                             f"its last dimension, got shape {x.shape}")
        if x.size == 0:
            raise ValueError(f"x must not be empty, got shape {x.shape}")
        check_finite("x", x)
        rows = x.reshape(-1, self.in_features)
        if self.training:
            rows = private_input(rows, x_given, self._buffers)    # backward reads it
        y = self._buffers.empty("y", (rows.shape[0], self.out_features), self.dtype)
        self._forward_kernel(rows, self._params["weight"],
                             self._params.get("bias", self._no_bias), y,
                             _threads.get_num_threads())
        self._keep_for_backward(rows=rows, x_shape=x.shape)
        y = y.reshape(x.shape[:-1] + (self.out_features,))
        return read_only(y) if self.training else produced(y)

    def backward(self, d_y, input_grad=True):
        cache = self._forward_cache()
        rows, x_shape = cache.rows, cache.x_shape
        d_y = float_array("d_y", d_y, self.dtype)
        check_shape("d_y", d_y, x_shape[:-1] + (self.out_features,))
        check_finite("d_y", d_y)
        self._consume_cache()
        d_x = self._buffers.empty("d_x", rows.shape, self.dtype) if input_grad \
            else self._no_input
        self._backward_kernel(rows, self._params["weight"],
                              d_y.reshape(-1, self.out_features), d_x,
                              self.grads["weight"], self.grads.get("bias", self._no_bias),
                              _threads.get_num_threads())
        return produced(d_x.reshape(x_shape)) if input_grad else None

    def __repr__(self):
        return (f"Linear({self.in_features}, {self.out_features}, bias={self.bias}, "
                f"dtype={self.dtype.name!r})")
