"""The module protocol every fastrnn layer follows.

A module owns named parameters (live numpy arrays an optimizer updates in
place) and same-shaped gradient arrays in ``grads``.  ``forward`` keeps what
``backward`` needs (training mode only); ``backward`` returns input gradients
and accumulates parameter gradients.  No autograd tape: the layer family is
fixed, so explicit backward passes are simpler and faster.

Layers pickle (pickle, cloudpickle, joblib) through the ``.npz`` + JSON
archive of :mod:`fastrnn._io`: the pickle holds the class, its constructor
arguments, the parameters, the mode and the random state, never the compiled
kernels, which unpickling gets again by building the layer anew.
"""

import contextlib
import math

import numpy as np

from .._io import archive_bytes, read_archive
from .._validation import to_numpy

# Elements the layers may still allocate for parameters, or None (no limit).
# fastrnn.load rebuilds a model from sizes written in the file; it sets this
# to what the file really stores, so a file declaring hidden_size=2**40 fails
# before anything is allocated (see Module._new_parameter).
_budget = None


class ParameterBudgetError(ValueError):
    """A layer would hold more parameters than a :func:`parameter_budget` allows."""


@contextlib.contextmanager
def parameter_budget(elements):
    """Inside the block, layers created may hold at most ``elements`` parameter
    values in total (ParameterBudgetError before a larger one is drawn)."""
    global _budget
    previous, _budget = _budget, [int(elements)]
    try:
        yield
    finally:
        _budget = previous


def check_parameter_budget(elements, what):
    """Raise ParameterBudgetError when ``elements`` values (a lower bound of what
    ``what`` will hold) exceed the active budget; charges nothing.  Lets a layer
    refuse sizes from a file before it builds anything from them."""
    if _budget is not None and elements > _budget[0]:
        raise ParameterBudgetError(f"{what} needs at least {elements} parameter values, "
                                   f"more than the {_budget[0]} left")


def reserve_parameter(shape):
    """Charge a parameter of ``shape`` against the active budget, if any."""
    if _budget is None:
        return
    size = math.prod(int(n) for n in shape)
    if size > _budget[0]:
        raise ParameterBudgetError(f"a parameter of shape {tuple(shape)} ({size} values) "
                                   f"exceeds the {_budget[0]} values left")
    _budget[0] -= size


LAYER_FORMAT = "fastrnn.layer"
LAYER_VERSION = 1


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

    def _new_parameter(self, name, shape, draw):
        """Add parameter ``name`` initialised by ``draw(shape)``, after charging
        its size to the active parameter budget (before any allocation)."""
        reserve_parameter(shape)
        self._add_parameter(name, draw(shape))

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

    def state_names(self):
        """The names ``state_dict`` holds (and a saved model stores), without
        copying anything."""
        return list(self._params)

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

    # -- pickling ---------------------------------------------------------------
    def _config(self):
        """JSON-able constructor arguments that rebuild this layer (without its
        seed: parameters and random state are restored afterwards), or None
        when the class does not know them (then pickling is Python's own)."""
        return None

    def __reduce_ex__(self, protocol):
        config = self._config()
        if config is None:
            return super().__reduce_ex__(protocol)
        meta = {"format": LAYER_FORMAT, "version": LAYER_VERSION, "config": config,
                "training": self.training, "rng": self.rng_state()}
        return _unpickle_module, (type(self), archive_bytes(self.state_dict(), meta))


def _unpickle_module(cls, data):
    """The layer pickled by ``Module.__reduce_ex__``: built from its constructor
    arguments, then parameters, random state and mode restored."""
    arrays, meta = read_archive(data, LAYER_FORMAT, LAYER_VERSION, "layer")
    module = cls(**meta["config"])
    module.load_state_dict(arrays)
    module.set_rng_state(meta["rng"])
    return module.train(meta["training"])
