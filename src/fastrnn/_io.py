"""One-file storage for models and checkpoints: ``.npz`` arrays plus JSON.

The JSON document travels inside the archive as a uint8 array under the key
``__meta__``, so ``np.load(..., allow_pickle=False)`` reads everything and
loading never runs code.  Writes go to a temporary file in the target's
directory and are renamed over it only when complete: a crash or a full disk
leaves the previous file intact, never half of a new one.
"""

import json
import os
import secrets
import zipfile

import numpy as np

META_KEY = "__meta__"

__all__ = ["atomic_write", "write_archive", "read_archive"]


def atomic_write(path, write):
    """Call ``write(binary_stream)`` on a temp file beside ``path``, then rename it
    over ``path``; on any failure the temp file is removed and ``path`` untouched."""
    path = os.fspath(path)
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
    """Atomically write ``arrays`` (name -> ndarray) and ``meta`` (JSON-able) to ``path``."""
    path = os.fspath(path)
    if META_KEY in arrays:
        raise ValueError(f"array name {META_KEY!r} is reserved")
    document = json.dumps(meta, sort_keys=True, allow_nan=True).encode("utf-8")
    payload = {name: np.asarray(value) for name, value in arrays.items()}
    for name, value in payload.items():
        if value.dtype.hasobject:
            raise TypeError(f"array {name!r} holds Python objects; only numeric arrays "
                            f"can be saved")
    payload[META_KEY] = np.frombuffer(document, dtype=np.uint8)
    return atomic_write(path, lambda stream: np.savez(stream, **payload))


def read_archive(path, kind, max_version):
    """``(arrays, meta)`` from a file written by :func:`write_archive`.

    ``meta["format"]`` must equal ``kind`` and ``meta["version"]`` must not be
    newer than ``max_version``; anything unreadable is a ValueError naming the
    path (FileNotFoundError when it does not exist).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path!r}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"{path!r} is not a fastrnn {kind} file (cannot read it as "
                         f".npz: {exc})") from None
    raw = arrays.pop(META_KEY, None)
    if raw is None or raw.dtype != np.uint8:
        raise ValueError(f"{path!r} is not a fastrnn {kind} file (no {META_KEY} entry)")
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path!r}: its {META_KEY} entry is corrupt ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != kind:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise ValueError(f"{path!r} is not a fastrnn {kind} file "
                         f"(format {found!r})")
    version = meta.get("version")
    if not isinstance(version, int):
        raise ValueError(f"{path!r}: missing or invalid format version {version!r}")
    if version > max_version:
        raise ValueError(f"{path!r} was written by a newer fastrnn ({kind} format "
                         f"version {version}; this version reads up to {max_version}); "
                         f"upgrade fastrnn to load it")
    return arrays, meta
