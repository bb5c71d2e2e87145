"""Jordan network: the recurrent layer that feeds back its output.

An Elman RNN (``fr.RNN``) feeds its hidden state h_{t-1} back; a Jordan
network feeds back its previous *output* y_{t-1}::

    h_t = f(W_ih x_t + W_yh y_{t-1} + b_h)      f = tanh or relu
    y_t = g(W_hy h_t + b_y)                     g = identity, tanh, sigmoid or softmax

The recurrent state is therefore y (output_size wide), not h.  The whole
sequence runs in one compiled call per layer (``fastrnn._kernels._jordan``).
"""

import math

import numpy as np

from .. import _threads
from .._kernels._dispatch import _jordan as kernels
from .._kernels import _runtime
from .._validation import (Options, check_finite, check_shape, float_array, lengths_array,
                           positive_int, private_input, produced, read_only, resolve_dtype,
                           sequence_input)
from .module import ForwardCache, Module
from .recurrent import _BatchPlan

__all__ = ["Jordan"]

NONLINEARITIES = {"tanh": kernels.Hidden.TANH, "relu": kernels.Hidden.RELU}
OUTPUT_ACTIVATIONS = {"identity": kernels.Output.IDENTITY, "tanh": kernels.Output.OUT_TANH,
                      "sigmoid": kernels.Output.SIGMOID, "softmax": kernels.Output.SOFTMAX}


class Jordan(Module):
    """Jordan network layer (optionally stacked): the output y is the state.

    Args:
        input_size, hidden_size, output_size: sizes of x, h and y.
        nonlinearity: f, "tanh" or "relu".
        output_activation: g, "identity", "tanh", "sigmoid" or "softmax".
        num_layers: stacked layers; layer k > 0 takes layer k-1's y as input.
        bias, batch_first, dtype ("float32"/"float64"), seed: as ``fr.RNN``.

    Parameters per layer k (``state_dict`` names): ``weight_ih_l{k}``
    (hidden, input), ``weight_yh_l{k}`` (hidden, output), ``bias_ih_l{k}``
    (b_h, hidden), ``weight_hy_l{k}`` (output, hidden), ``bias_hy_l{k}``
    (b_y, output); all U(-1/sqrt(hidden), 1/sqrt(hidden)).

    ``forward(x, hx=None, lengths=None)`` returns ``(out, y_n)``: ``out``
    (T, B, output_size) the top layer's outputs (zero past a row's length),
    ``y_n`` (num_layers, B, output_size) each layer's output at the row's
    last valid step.  ``hx`` is y_0 with that shape (zeros when None).
    ``backward(d_out, d_hn=None, input_grad=True)`` (d_hn = dL/d(y_n)) returns ``(d_x, d_y0)``
    and adds the parameter gradients to ``grads``.
    """

    def __init__(self, input_size, hidden_size, output_size, nonlinearity="tanh",
                 output_activation="identity", num_layers=1, bias=True, batch_first=False,
                 dtype="float32", seed=None):
        super().__init__(resolve_dtype(dtype))
        self.input_size = positive_int("input_size", input_size)
        self.hidden_size = positive_int("hidden_size", hidden_size)
        self.output_size = positive_int("output_size", output_size)
        self.num_layers = positive_int("num_layers", num_layers)
        self.nonlinearity = Options(NONLINEARITIES)("nonlinearity", nonlinearity)
        self.output_activation = Options(OUTPUT_ACTIVATIONS)("output_activation",
                                                              output_activation)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._init_parameters()
        self._forward_kernel = self._kernel(kernels.forward)
        self._backward_kernel = self._kernel(kernels.backward)
        self._kinds = (NONLINEARITIES[nonlinearity], OUTPUT_ACTIVATIONS[output_activation])
        self._none1 = np.empty(0, dtype=self.dtype)
        self._none3 = np.empty((0, 0, 0), dtype=self.dtype)

    # -- parameters -----------------------------------------------------------
    @staticmethod
    def _names(layer):
        return tuple(f"{kind}_l{layer}" for kind in
                     ("weight_ih", "weight_yh", "bias_ih", "weight_hy", "bias_hy"))

    def _init_parameters(self):
        H, O = self.hidden_size, self.output_size
        bound = 1.0 / math.sqrt(H)
        for layer in range(self.num_layers):
            w_ih, w_yh, b_h, w_hy, b_y = self._names(layer)
            fan_in = self.input_size if layer == 0 else O
            shapes = {w_ih: (H, fan_in), w_yh: (H, O), b_h: (H,), w_hy: (O, H), b_y: (O,)}
            for name, shape in shapes.items():
                if self.bias or not name.startswith("bias"):
                    self._add_parameter(name, self._rng.uniform(-bound, bound, shape))

    def _layer(self, layer, store):
        """(w_ih, w_yh, b_h, w_hy, b_y) of ``store`` (params or grads); empty
        biases when the layer has none."""
        return tuple(store.get(name, self._none1) for name in self._names(layer))

    # -- forward --------------------------------------------------------------
    def _check_input(self, x):
        return sequence_input(x, self.dtype, self.input_size, self.batch_first)

    def _check_state(self, hx, batch):
        if hx is None:
            return None
        hx = float_array("hx", hx, self.dtype)
        check_shape("hx", hx, (self.num_layers, batch, self.output_size))
        check_finite("hx", hx)
        return hx

    def forward(self, x, hx=None, lengths=None):
        """``(out, y_n)`` for x (T, B, input_size); see the class docstring."""
        x_given = x
        x = self._check_input(x)
        steps, batch, _ = x.shape
        y0 = self._check_state(hx, batch)
        if lengths is not None:
            lengths = lengths_array(lengths, batch, steps)
        num_threads = _threads.get_num_threads()
        work = steps * batch * self.hidden_size * (self.input_size + 2 * self.output_size)
        num_threads = _runtime.threads_for(work, num_threads)
        plan = _BatchPlan(lengths, batch, steps, num_threads)
        y_n = (plan.to_kernel(y0, copy=True) if y0 is not None
               else np.zeros((self.num_layers, batch, self.output_size), self.dtype))
        keep = self.training
        layer_input = plan.to_kernel(x)
        if keep:
            layer_input = private_input(layer_input, x_given, self._buffers)
        new_buffer = np.zeros if plan.perm is not None else np.empty  # padding stays 0
        cache = []
        with _threads.blas_region():
            for layer in range(self.num_layers):
                out = new_buffer((steps, batch, self.output_size), dtype=self.dtype)
                h_hist = np.empty((steps if keep else 1, batch, self.hidden_size),
                                  dtype=self.dtype)
                y_start = y_n[layer].copy() if keep else None
                w_ih, w_yh, b_h, w_hy, b_y = self._layer(layer, self._params)
                self._forward_kernel(*self._kinds, layer_input, w_ih, w_yh, b_h, w_hy, b_y,
                                     plan.lengths, plan.chunks, y_n[layer], out, h_hist,
                                     num_threads)
                if keep:
                    cache.append(ForwardCache(input=layer_input, out=out, h_hist=h_hist,
                                              y_start=y_start))
                layer_input = out
        self._keep_for_backward(plan=plan, layers=cache, had_y0=y0 is not None)
        out = plan.to_user(layer_input)
        if keep and out is layer_input:
            out = read_only(out)     # backward reads it
        if self.batch_first:
            out = out.transpose(1, 0, 2)
        return out, plan.to_user(y_n)

    # -- backward -------------------------------------------------------------
    def backward(self, d_out, d_hn=None, input_grad=True, state_grad=True):
        """Gradients of the last training-mode ``forward``, once per forward.

        d_out: dL/d(out), shaped like ``out``; d_hn: dL/d(y_n) or None (the
        final state; named as in ``fr.RNN`` so the layers are interchangeable).
        Returns ``(d_x, d_y0)`` (d_x None with ``input_grad=False``, d_y0 None
        with ``state_grad=False``, which skips the first step's product into
        it, as in ``fr.RNN.backward``); the parameter gradients are added to
        ``grads``.
        """
        cache = self._forward_cache()
        plan = cache.plan
        steps, batch = cache.layers[0].out.shape[:2]
        d_out = float_array("d_out", d_out, self.dtype, ndim=3)
        if self.batch_first:
            d_out = d_out.transpose(1, 0, 2)
        check_shape("d_out" + (" (time-major view)" if self.batch_first else ""), d_out,
                    (steps, batch, self.output_size))
        check_finite("d_out", d_out)
        dy = np.zeros((self.num_layers, batch, self.output_size), dtype=self.dtype)
        if d_hn is not None:
            d_hn = float_array("d_hn", d_hn, self.dtype)
            check_shape("d_hn", d_hn, dy.shape)
            check_finite("d_hn", d_hn)
            dy[...] = plan.to_kernel(d_hn)
        self._consume_cache()
        d_layer = plan.to_kernel(d_out)
        with _threads.blas_region():
            for layer in reversed(range(self.num_layers)):
                d_layer = self._backward_layer(layer, plan, cache.layers[layer], cache.had_y0,
                                               d_layer, dy[layer], layer > 0 or input_grad,
                                               state_grad)
        d_x = None
        if input_grad:
            d_x = plan.to_user(d_layer)
            if self.batch_first:
                d_x = d_x.transpose(1, 0, 2)
            produced(d_x)
        return d_x, plan.to_user(dy) if state_grad else None

    def _backward_layer(self, layer, plan, saved, had_y0, d_out, dy, need_d_input,
                        state_grad):
        layer_input, out, h_hist, y_start = saved.input, saved.out, saved.h_hist, saved.y_start
        steps, batch = out.shape[:2]
        w_ih, w_yh, _, w_hy, _ = self._layer(layer, self._params)
        dw_ih, dw_yh, db_h, dw_hy, db_y = self._layer(layer, self.grads)
        d_input = np.empty_like(layer_input) if need_d_input else self._none3
        self._backward_kernel(
            *self._kinds, layer_input, w_ih, w_yh, w_hy, plan.lengths, plan.chunks,
            y_start, had_y0, out, h_hist, d_out, dy,
            np.empty((steps, batch, self.output_size), self.dtype),
            np.empty((steps, batch, self.hidden_size), self.dtype),
            d_input, dw_ih, dw_yh, db_h, dw_hy, db_y, _threads.get_num_threads(),
            state_grad)
        return d_input

    def __repr__(self):
        return (f"Jordan({self.input_size}, {self.hidden_size}, {self.output_size}, "
                f"nonlinearity={self.nonlinearity!r}, "
                f"output_activation={self.output_activation!r}, "
                f"num_layers={self.num_layers}, bias={self.bias}, "
                f"batch_first={self.batch_first}, dtype={self.dtype.name!r})")
