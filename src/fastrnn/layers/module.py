"""The module protocol every fastrnn layer follows.

A module owns named parameters (live numpy arrays an optimizer updates in
place) and same-shaped gradient arrays in ``grads``.  ``forward`` keeps what
``backward`` needs (training mode only); ``backward`` returns input gradients
and accumulates parameter gradients.  No autograd tape: the layer family is
fixed, so explicit backward passes are simpler and faster.

The state contract every layer follows, each rule written once here:

* ``_keep_for_backward(name=value, ...)``: the forward cache, read by name
  (``cache.rows``), kept in training mode only;
* ``_forward_cache()`` / ``_consume_cache()``: backward's access to it, with
  the one error for a backward that has no training-mode forward to use
  (backward runs once per forward); ``eval()`` drops the cache;
* ``_kernel(table)``: the float32 / float64 entry of a compiled kernel table;
* ``_dropout_mask(shape, p)``: inverted-dropout masks from the layer's
  generator, the same draws for every layer that drops;
* ``_unchanged_version()``: a key that stays equal only while the parameters
  are unchanged, under which kernels keep what they derive from them (packed
  weights, an input table) between calls.

Layers pickle (pickle, cloudpickle, joblib) through the ``.npz`` + JSON
archive of :mod:`fastrnn._io`: the pickle holds the class, its constructor
arguments, the parameters, the mode and the random state, never the compiled
kernels, which unpickling gets again by building the layer anew.
"""

import contextlib
import itertools
import math
import sys
import threading
import types

import numpy as np

from .._buffers import Recycler
from .._io import archive_bytes, read_archive
from .._validation import to_numpy

# Elements the layers may still allocate for parameters (``_limits.budget``:
# None = no limit).  fastrnn.load rebuilds a model from sizes written in the
# file; it sets this to what the file really stores, so a file declaring
# hidden_size=2**40 fails before anything is allocated (see
# Module._new_parameter).  Per thread: threads loading models at once (a Dask
# worker's threads, a web server's) must not charge each other's budget.
_limits = threading.local()
_SERIALS = itertools.count()


def _budget():
    return getattr(_limits, "budget", None)


class ParameterBudgetError(ValueError):
    """A layer would hold more parameters than a :func:`parameter_budget` allows."""


@contextlib.contextmanager
def parameter_budget(elements):
    """Inside the block, layers created may hold at most ``elements`` parameter
    values in total (ParameterBudgetError before a larger one is drawn)."""
    previous, _limits.budget = _budget(), [int(elements)]
    try:
        yield
    finally:
        _limits.budget = previous


def check_parameter_budget(elements, what):
    """Raise ParameterBudgetError when ``elements`` values (a lower bound of what
    ``what`` will hold) exceed the active budget; charges nothing.  Lets a layer
    refuse sizes from a file before it builds anything from them."""
    budget = _budget()
    if budget is not None and elements > budget[0]:
        raise ParameterBudgetError(f"{what} needs at least {elements} parameter values, "
                                   f"more than the {budget[0]} left")


def reserve_parameter(shape):
    """Charge a parameter of ``shape`` against the active budget, if any."""
    budget = _budget()
    if budget is None:
        return
    size = math.prod(int(n) for n in shape)
    if size > budget[0]:
        raise ParameterBudgetError(f"a parameter of shape {tuple(shape)} ({size} values) "
                                   f"exceeds the {budget[0]} values left")
    budget[0] -= size


LAYER_FORMAT = "fastrnn.layer"
LAYER_VERSION = 1

BACKWARD_NEEDS_FORWARD = ("backward needs a forward pass in training mode first (none since "
                          "the last backward, or the layer is in eval mode: call train())")


class ForwardCache(types.SimpleNamespace):
    """What a training-mode forward keeps for backward, read by name."""


class Module:
    """Base class: parameters, gradients, train/eval mode, state dicts."""

    def __init__(self, dtype):
        self.dtype = dtype
        self.training = True
        self._params = {}
        self.grads = {}
        self._rng = None    # layers that draw random numbers (dropout) set one
        self._cache = None  # a ForwardCache between a training forward and its backward
        # Bumped whenever the parameters may change: load_state_dict and every
        # hand-out of the live arrays (optimizers and clipping list them at
        # each step).  Streams re-pack their copy of the weights when it moves.
        self._weights_version = 0
        self._own_references = None     # see _unchanged_version
        # Tells modules apart in the keys of what kernels keep (unlike id(),
        # never reused; a copy or an unpickled module is built anew).
        self._serial = next(_SERIALS)
        # Outputs and input gradients reused across calls once the caller has
        # dropped them (no page faults for fresh megabytes every step).
        self._buffers = Recycler()

    def _new_parameter(self, name, shape, draw):
        """Add parameter ``name`` initialised by ``draw(shape)``, after charging
        its size to the active parameter budget (before any allocation)."""
        reserve_parameter(shape)
        self._add_parameter(name, draw(shape))

    def _add_parameter(self, name, array):
        """The module's own copy of ``array`` (a caller's array, say
        pretrained vectors, is never aliased: writes through it would not be
        seen by ``_unchanged_version``)."""
        owned = np.ascontiguousarray(array, dtype=self.dtype)
        if owned is array or owned.base is not None:
            owned = owned.copy()
        self._params[name] = owned
        self.grads[name] = np.zeros_like(self._params[name])

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError

    def backward(self, *args, **kwargs):
        raise NotImplementedError

    # -- mode -----------------------------------------------------------------
    def train(self, mode=True):
        """Training mode: forward keeps activations for backward; dropout is on.
        ``train(False)`` drops what the last forward kept."""
        if not mode:
            self._release_cache()
        self.training = bool(mode)
        return self

    def eval(self):
        """Inference mode: forward keeps nothing and backward is refused."""
        return self.train(False)

    # -- the forward cache ------------------------------------------------------
    def _keep_for_backward(self, **saved):
        """Keep ``saved`` (by name) for the next backward, in training mode;
        eval mode keeps nothing.  Replaces the previous forward's cache."""
        self._release_cache()
        self._cache = ForwardCache(**saved) if self.training else None
        return self._cache

    def _forward_cache(self):
        """The last training-mode forward's cache, left in place (so a backward
        refused for a bad argument can be retried); RuntimeError if none."""
        if self._cache is None:
            raise RuntimeError(BACKWARD_NEEDS_FORWARD)
        return self._cache

    def _consume_cache(self):
        """Take the cache out of the layer: each forward has one backward."""
        cache, self._cache = self._forward_cache(), None
        return cache

    def _release_cache(self):
        """Drop the last forward's cache (layers that pool its buffers take
        them back here)."""
        self._cache = None

    # -- kernels and randomness ---------------------------------------------------
    def _kernel(self, table):
        """The entry of a compiled kernel table (keyed by C type, "float" /
        "double") for this layer's dtype."""
        return table["float" if self.dtype == np.float32 else "double"]

    def _dropout_mask(self, shape, p):
        """An inverted-dropout mask of ``shape`` in the layer's dtype: 0 with
        probability ``p``, else ``1 / (1 - p)``, drawn from the layer's
        generator.  float32 uniforms: half the random bits and memory of
        float64; a keep probability is resolved to ~2**-24, far below any
        use of p."""
        keep = 1.0 - p
        mask = (self._rng.random(shape, dtype=np.float32) < np.float32(keep)).astype(self.dtype)
        mask *= self.dtype.type(1.0 / keep)
        return mask

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

    def _count_own_references(self):
        """Take the parameter arrays' reference counts as the module's own
        (the end of ``__init__``, once every parameter exists)."""
        self._own_references = self._parameter_references()

    def _parameter_references(self):
        """The parameter arrays' reference counts (the same function counts the
        module's own references, so the two compare)."""
        return [sys.getrefcount(array) for array in self._params.values()]

    def _unchanged_version(self):
        """A key that stays equal only while the parameters are unchanged, or
        None when that cannot be known.  Kernels keep what they derive from
        the weights under it (packs, input tables): redoing that on every
        call was 85 of the 104 us of an LSTM(256) forward over one step.

        The parameters can only change through a reference to their arrays.
        ``load_state_dict`` and each hand-out of the live arrays
        (``parameters()``, ``named_parameters()``, which optimizers and
        clipping ask for at every step; ``Embedding.weight``) move
        ``_weights_version``; a reference kept from an earlier hand-out (an
        optimizer's, an array or a view a caller holds) keeps the arrays'
        reference counts above the module's own, and then the key is None."""
        if self._own_references is None or \
                self._parameter_references() != self._own_references:
            return None
        return self._weights_version

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
