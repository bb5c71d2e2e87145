"""One-file storage for models and checkpoints: ``.npz`` arrays plus JSON.

The JSON document travels inside the archive as a uint8 array under the key
``__meta__``, so ``np.load(..., allow_pickle=False)`` reads everything and
loading never runs code.  Writes go to a temporary file in the target's
directory and are renamed over it only when complete: a crash or a full disk
leaves the previous file intact, never half of a new one.

Binary file objects work too (``save(stream)`` / ``load(stream)``, pickling
through bytes): the archive is built in memory first and written with one
``write`` call, so a failure while building it writes nothing.
"""

import io
import json
import os
import secrets
import zipfile

import numpy as np

META_KEY = "__meta__"

__all__ = ["atomic_write", "write_archive", "read_archive", "archive_bytes", "is_stream"]


def is_stream(target):
    """True for a binary file object (anything with ``read`` or ``write``)
    rather than a path."""
    return callable(getattr(target, "write", None)) or callable(getattr(target, "read", None))


def _stream_name(stream):
    name = getattr(stream, "name", None)
    return name if isinstance(name, str) else f"<{type(stream).__name__}>"


def atomic_write(path, write):
    """Call ``write(binary_stream)`` on a temp file beside ``path``, then rename it
    over ``path``; on any failure the temp file is removed and ``path`` untouched."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot save to {path!r}: it is a directory; give a "
                                f"file name")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot save to {path!r}: directory {directory!r} "
                                f"does not exist")
    temporary = os.path.join(directory, f".{os.path.basename(path)}."
                                        f"{secrets.token_hex(6)}.tmp")
    # O_EXCL: never follow or clobber an existing name; 0o666 lets the umask
    # decide the final permissions, as for a normally created file.
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    return path


def write_archive(path, arrays, meta):
    """Atomically write ``arrays`` (name -> ndarray) and ``meta`` (JSON-able) to
    ``path``: a file path, or a binary file object (written with one call)."""
    if is_stream(path):
        writable = getattr(path, "writable", None)
        if not callable(getattr(path, "write", None)) or (callable(writable)
                                                          and not writable()):
            raise TypeError(f"cannot save to {type(path).__name__}: the file object has "
                            f"no write method or is not writable; open it in binary write "
                            f"mode ('wb')")
        if isinstance(path, io.TextIOBase):
            raise TypeError(f"cannot save to a text stream ({type(path).__name__}): open "
                            f"the file in binary write mode ('wb')")
        path.write(archive_bytes(arrays, meta))
        return path
    path = os.fspath(path)
    return atomic_write(path, _archive_writer(arrays, meta))


def archive_bytes(arrays, meta):
    """The archive :func:`write_archive` would write, as bytes."""
    buffer = io.BytesIO()
    _archive_writer(arrays, meta)(buffer)
    return buffer.getvalue()


def _archive_writer(arrays, meta):
    """A function writing the checked archive to a binary stream."""
    if META_KEY in arrays:
        raise ValueError(f"array name {META_KEY!r} is reserved")
    document = json.dumps(meta, allow_nan=True, separators=(",", ":")).encode("utf-8")
    payload = {name: np.asarray(value) for name, value in arrays.items()}
    for name, value in payload.items():
        if value.dtype.hasobject:
            raise TypeError(f"array {name!r} holds Python objects; only numeric arrays "
                            f"can be saved")
    payload[META_KEY] = np.frombuffer(document, dtype=np.uint8)
    return lambda stream: np.savez(stream, **payload)


def read_archive(path, kind, max_version, what):
    """``(arrays, meta)`` from a file written by :func:`write_archive`.

    ``meta["format"]`` must equal ``kind`` and ``meta["version"]`` must not be
    newer than ``max_version``.  ``what`` ("model", "checkpoint") names the
    file in errors: FileNotFoundError when it does not exist, ValueError
    naming the path when it cannot be read.  ``path`` may also be a binary
    file object (read to its end) or bytes.
    """
    if isinstance(path, (bytes, bytearray, memoryview)):
        source, path = io.BytesIO(path), "<bytes>"
    elif is_stream(path):
        if not callable(getattr(path, "read", None)):
            raise TypeError(f"cannot load from {type(path).__name__}: the file object has "
                            f"no read method; open it in binary read mode ('rb')")
        data = None if isinstance(path, io.TextIOBase) else path.read()
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"{what} file object must be opened in binary mode ('rb'): "
                            f"got a text stream ({type(path).__name__})")
        source, path = io.BytesIO(data), _stream_name(path)
    else:
        path = source = os.fspath(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{what} {path!r} does not exist")
    try:
        archive = np.load(source, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            # A .npy file loads as a bare array (no context manager, no names).
            raise ValueError(f"it holds a single {type(archive).__name__}, not an archive")
        with archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, KeyError, RuntimeError,
            zipfile.BadZipFile) as exc:
        raise ValueError(f"{what} {path!r} is corrupt or not an .npz file: "
                         f"{type(exc).__name__}: {exc}") from None
    raw = arrays.pop(META_KEY, None)
    if raw is None or raw.dtype != np.uint8 or raw.ndim != 1:
        raise ValueError(f"{path!r} is not a fastrnn {what} (no {META_KEY!r} entry)")
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{what} {path!r} is corrupt: its JSON entry cannot be read "
                         f"({exc})") from None
    found = meta.get("format") if isinstance(meta, dict) else None
    if found != kind:
        raise ValueError(f"{path!r} is not a fastrnn {what} (format {found!r}, "
                         f"expected {kind!r})")
    version = meta.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"{what} {path!r} has an invalid format version {version!r}")
    if version > max_version:
        raise ValueError(f"{what} {path!r} has format version {version}, written by a "
                         f"newer fastrnn ({meta.get('fastrnn_version')}); this fastrnn "
                         f"reads versions up to {max_version}: upgrade fastrnn")
    return arrays, meta
