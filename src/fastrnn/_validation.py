"""Checks at the Python boundary: nothing reaches a kernel unchecked.

Every error names the argument, what was expected and what arrived.  The
rules for scalar arguments (``Integer``, ``Real``, ``Boolean``, ``Options``,
``Optional``, seeds, modules) live in ``_rules`` and are re-exported here.
"""

import weakref

import numpy as np

from . import _threads
from ._kernels import _runtime
from ._rules import (FRACTION, SEED, ArgumentTypeError, Boolean, Integer,  # noqa: F401
                     Modules, Optional, Options, Real, Rule, check_callable, check_seed,
                     describe, is_bool, is_int, is_real, layer_seeds, resolve_seed)

SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def resolve_dtype(dtype):
    """The layer dtype from a name or numpy dtype: float32 or float64 only."""
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be 'float32' or 'float64', got {dtype!r}") from None
    if resolved not in SUPPORTED_DTYPES:
        raise TypeError(f"dtype must be 'float32' or 'float64', got {resolved.name}")
    return resolved


POSITIVE_INT = Integer(low=1)


def positive_int(name, value, owner=None):
    """``value`` as an int >= 1."""
    return POSITIVE_INT(name, value, owner)


def to_numpy(value, name=None):
    """numpy view of an array-like; tensors are duck-typed (detach().cpu().numpy()).
    A ragged nested list is a ValueError naming ``name``."""
    if hasattr(value, "detach") and hasattr(value, "cpu") and hasattr(value, "numpy"):
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except ValueError as exc:
        if "inhomogeneous" not in str(exc):
            raise
        raise ValueError(f"{name or 'the input'} must be a rectangular array, got nested "
                         f"lists of unequal lengths (numpy: {exc})") from None


def float_array(name, value, dtype, ndim=None):
    """A C-contiguous ``dtype`` copy or view of ``value`` after type checks.

    float16 and non-float arrays are refused (a silent cast would hide a bug
    in the caller); float32 <-> float64 is converted.
    """
    if value is None:
        raise TypeError(f"{name} must be an array, got None")
    array = to_numpy(value, name)
    kind = array.dtype.kind
    if kind != "f":
        what = {"i": "integers", "u": "unsigned integers", "b": "booleans",
                "c": "complex numbers"}.get(kind, f"dtype {array.dtype}")
        raise TypeError(f"{name} must hold float32 or float64 values, got {what}")
    if array.dtype == np.float16:
        raise TypeError(f"{name}: float16 is not supported; use float32 or float64")
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {array.shape}")
    if array.dtype == dtype and array.flags.c_contiguous:
        return array            # the common case, without errstate's cost per call
    with np.errstate(over="ignore"):      # reported below, naming the argument
        result = np.ascontiguousarray(array, dtype=dtype)
    if result.dtype.itemsize < array.dtype.itemsize:
        check_float_range(name, array, result.dtype, converted=result)
    return result


def check_float_range(name, array, dtype, converted=None):
    """ValueError when finite values of ``array`` overflow ``dtype`` (1e300 is
    finite in float64 but inf in float32: say so, instead of a later "NaN or
    infinite" about a value the caller never passed).  ``dtype`` None: no check."""
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        return                  # an invalid dtype is reported where it is resolved
    if dtype.kind != "f" or dtype.itemsize >= array.dtype.itemsize \
            or array.dtype.kind != "f":
        return
    if converted is None:
        limit = np.finfo(dtype).max
        overflow = bool((np.abs(array) > limit).any())
    else:
        overflow = not all_finite(converted) \
            and bool((np.isinf(converted) & np.isfinite(array)).any())
    if overflow:
        finite = np.abs(array[np.isfinite(array)])
        raise ValueError(f"{name} holds values too large for {np.dtype(dtype).name} "
                         f"(largest magnitude {finite.max():.3g}, limit "
                         f"{np.finfo(dtype).max:.3g}); scale the data or use "
                         f"dtype='float64'")


# Arrays fastrnn computed and returned (layer outputs, gradients), by id.
_produced = weakref.WeakValueDictionary()


def produced(array):
    """Mark ``array`` as computed by fastrnn: handed back to a layer (the next
    layer's input, the previous layer's output gradient) it is not scanned for
    NaN/inf again, in training and in inference.  The check is a full memory
    pass, five of them per training step and two per call of an embedding,
    layer and head; a NaN that fastrnn itself produced still shows in the
    loss and the gradient norm, which the Trainer checks."""
    _produced[id(array)] = array
    return array


# The compiled scan and copy for each dtype, picked here: a call of the
# fused-type function itself pays Cython's signature matching, 0.8 us, twice
# the scan of a small array.
_FINITE_SCANS = {np.dtype(np.float32): _runtime.all_finite["float"],
                 np.dtype(np.float64): _runtime.all_finite["double"]}
_COPIES = {np.dtype(np.float32): _runtime.copy_values["float"],
           np.dtype(np.float64): _runtime.copy_values["double"]}


def all_finite(array):
    """True when ``array`` holds no NaN or inf: one threaded pass for contiguous
    float32/64 arrays (numpy's isfinite().all() makes two and a temporary)."""
    scan = _FINITE_SCANS.get(array.dtype)
    if scan is not None and array.flags.c_contiguous:
        return scan(array.reshape(-1), _threads.get_num_threads())
    return bool(np.isfinite(array).all())


def check_finite(name, array):
    """ValueError when ``array`` holds NaN or inf.  Arrays marked with
    :func:`produced` are not scanned."""
    if _produced.get(id(array)) is array:
        return
    if not all_finite(array):
        raise ValueError(f"{name} contains NaN or infinite values")


def check_shape(name, array, expected):
    if array.shape != tuple(expected):
        raise ValueError(f"{name} must have shape {tuple(expected)}, got {array.shape}")


def time_major(array, batch_first):
    """A (B, T, ...) array as a contiguous (T, B, ...) one when ``batch_first``."""
    return np.ascontiguousarray(array.swapaxes(0, 1)) if batch_first else array


def sequence_input(x, dtype, input_size, batch_first):
    """A recurrent layer's input ``x`` as a finite time-major (T, B,
    input_size) array of ``dtype``: the one rule every recurrent layer checks."""
    x = time_major(float_array("x", x, dtype, ndim=3), batch_first)
    steps, batch, features = x.shape
    if features != input_size:
        raise ValueError(f"x must have {input_size} features (input_size) in "
                         f"its last dimension, got {features}")
    if steps < 1 or batch < 1:
        raise ValueError(f"x must have at least one timestep and one batch row, "
                         f"got shape {x.shape}")
    check_finite("x", x)
    return x


def lengths_array(lengths, batch, steps):
    """Sequence lengths as int32, one per row, each in 1..steps."""
    array = to_numpy(lengths, "lengths")
    if array.dtype.kind not in "iu":
        raise TypeError(f"lengths must be integers, got dtype {array.dtype}")
    if array.ndim != 1 or array.shape[0] != batch:
        raise ValueError(f"lengths must be a 1-D sequence of {batch} ints "
                         f"(one per batch row), got shape {array.shape}")
    if batch and (array.min() < 1 or array.max() > steps):
        raise ValueError(f"lengths must lie in 1..{steps} (the sequence length), "
                         f"got values from {array.min()} to {array.max()}")
    return np.ascontiguousarray(array, dtype=np.intc)


def private_input(array, given, buffers):
    """``array`` (the checked form of the caller's ``given``) safe to keep for
    backward: a copy when it shares memory with a writable caller array, which
    could be refilled before backward reads it.  Read-only arrays -- the
    training-mode outputs of fastrnn layers -- are kept without a copy.  The
    copy goes into an array of the module's ``buffers`` (a Recycler): a fresh
    one each step was faulted in page by page, 2-4% of an RNN(256) training
    step at (100, 64).  Float arrays are copied on every thread."""
    given = to_numpy(given)
    if given.flags.writeable and np.may_share_memory(array, given):
        kept = buffers.empty("private input", array.shape, array.dtype)
        copy = _COPIES.get(array.dtype)
        if copy is not None and array.flags.c_contiguous:
            copy(array.reshape(-1), kept.reshape(-1), _threads.get_num_threads())
        else:
            np.copyto(kept, array)
        return kept
    return array


def read_only(array):
    """A read-only view: a training-mode output that a later backward may read
    (so the next layer can keep it without copying)."""
    view = array.view()
    view.flags.writeable = False
    return produced(view)
