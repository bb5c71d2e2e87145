"""The module protocol every fastrnn layer follows.

A module owns named parameters (live numpy arrays an optimizer updates in
place) and same-shaped gradient arrays in ``grads``.  ``forward`` keeps what
``backward`` needs (training mode only); ``backward`` returns input gradients
and accumulates parameter gradients.  No autograd tape: the layer family is
fixed, so explicit backward passes are simpler and faster.
"""

import numpy as np

from .._validation import to_numpy


class Module:
    """Base class: parameters, gradients, train/eval mode, state dicts."""

    def __init__(self, dtype):
        self.dtype = dtype
        self.training = True
        self._params = {}
        self.grads = {}
        self._rng = None    # layers that draw random numbers (dropout) set one
        # Bumped whenever the parameters may change: load_state_dict and every
        # hand-out of the live arrays (optimizers and clipping list them at
        # each step).  Streams re-pack their copy of the weights when it moves.
        self._weights_version = 0

    def _add_parameter(self, name, array):
        self._params[name] = np.ascontiguousarray(array, dtype=self.dtype)
        self.grads[name] = np.zeros_like(self._params[name])

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError

    def backward(self, *args, **kwargs):
        raise NotImplementedError

    # -- mode -----------------------------------------------------------------
    def train(self, mode=True):
        """Training mode: forward keeps activations for backward; dropout is on."""
        self.training = bool(mode)
        return self

    def eval(self):
        """Inference mode: forward keeps nothing and backward is refused."""
        return self.train(False)

    # -- parameters -----------------------------------------------------------
    def parameters(self):
        """The live parameter arrays, in ``state_dict`` order."""
        self._weights_version += 1
        return list(self._params.values())

    def named_parameters(self):
        self._weights_version += 1
        return list(self._params.items())

    def zero_grad(self):
        for grad in self.grads.values():
            grad.fill(0)

    # -- randomness -------------------------------------------------------------
    def rng_state(self):
        """The state of the layer's random generator (JSON-able), or None.

        Checkpoints keep it so a resumed run draws the same dropout masks.
        """
        return None if self._rng is None else self._rng.bit_generator.state

    def set_rng_state(self, state):
        if self._rng is None:
            if state is not None:
                raise ValueError(f"{type(self).__name__} has no random generator; "
                                 f"got a generator state to restore")
            return
        self._rng.bit_generator.state = state

    def state_dict(self):
        """Copies of the parameters by name (PyTorch names and shapes)."""
        return {name: value.copy() for name, value in self._params.items()}

    def load_state_dict(self, state_dict):
        """Copy parameters in by name; names and shapes must match exactly.

        Values may be numpy arrays or anything array-like, including tensors
        (``detach().cpu().numpy()`` is used).  Nothing is changed unless every
        entry is valid.
        """
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"state_dict must be a mapping of names to arrays, "
                            f"got {type(state_dict).__name__}")
        missing = [name for name in self._params if name not in state_dict]
        unexpected = [name for name in state_dict if name not in self._params]
        if missing or unexpected:
            raise ValueError(f"state_dict keys do not match: missing {missing}, "
                             f"unexpected {unexpected}")
        staged = {}
        for name, target in self._params.items():
            value = to_numpy(state_dict[name])
            if value.shape != target.shape:
                raise ValueError(f"state_dict[{name!r}] must have shape "
                                 f"{target.shape}, got {value.shape}")
            if value.dtype.kind not in "fiu":
                raise TypeError(f"state_dict[{name!r}] must be numeric, got {value.dtype}")
            staged[name] = value.astype(self.dtype, copy=False)
            if not np.isfinite(staged[name]).all():
                raise ValueError(f"state_dict[{name!r}] contains NaN or infinite values")
        for name, value in staged.items():
            np.copyto(self._params[name], value)
        self._weights_version += 1
