"""A fitted task model as bytes, in the safe npz+JSON model format.

Dask sends these bytes to its workers instead of a pickled model: loading
them runs no code, exactly as ``fastrnn.load`` of a file.  The two functions
go through a temporary file because ``save`` / ``load`` work on paths; they
are the one place to switch to in-memory ``to_bytes`` / ``from_bytes``.
"""

import os
import tempfile

__all__ = ["model_to_bytes", "model_from_bytes"]


def model_to_bytes(model):
    """The bytes of ``model.save(path)`` for a fitted fastrnn task model."""
    if not callable(getattr(model, "save", None)):
        raise TypeError(f"model must be a fitted fastrnn task model (with save()), "
                        f"got {type(model).__name__}")
    with tempfile.TemporaryDirectory(prefix="fastrnn-") as directory:
        path = os.path.join(directory, "model.npz")
        model.save(path)
        with open(path, "rb") as stream:
            return stream.read()


def model_from_bytes(blob):
    """The model saved in ``blob`` (bytes from :func:`model_to_bytes`)."""
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise TypeError(f"blob must be bytes from model_to_bytes, got {type(blob).__name__}")
    from ..tasks import load
    with tempfile.TemporaryDirectory(prefix="fastrnn-") as directory:
        path = os.path.join(directory, "model.npz")
        with open(path, "wb") as stream:
            stream.write(blob)
        return load(path)
