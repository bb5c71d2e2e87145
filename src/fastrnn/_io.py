"""One-file storage for models and checkpoints: ``.npz`` arrays plus JSON,
and the limits every loader of fastrnn applies to what it reads.

The JSON document travels inside the archive as a uint8 array under the key
``__meta__``, so the archive holds only ``.npy`` members and loading never
runs code.  Writes go to a temporary file in the target's directory and are
renamed over it only when complete: a crash or a full disk leaves the
previous file intact, never half of a new one.

Reading trusts nothing in the file: the member list (no duplicates, only
``.npy`` members, stored uncompressed inside the file), every ``.npy`` header (a numeric dtype, and exactly as
many data bytes as the member holds) and the total size are checked before
any array is allocated, and the JSON document's size and nesting depth before
it is parsed.  The limits (:func:`set_load_limits`) are the one place that
says how much any loader may read.

Binary file objects and bytes work too (``save(stream)`` / ``load(stream)``,
pickling through bytes): the archive is built in memory first and written
with one ``write`` call, so a failure while building it writes nothing; a
stream being loaded is read to its end (at most ``max_bytes``) and checked
like a file.
"""

import io
import json
import os
import re
import stat
import time
import zipfile
import zlib

import numpy as np

from ._rules import Boolean, Integer, is_int

META_KEY = "__meta__"

__all__ = ["atomic_write", "write_archive", "read_archive", "open_archive", "archive_bytes",
           "is_stream",
           "get_load_limits", "set_load_limits", "open_regular", "read_limited",
           "parse_json"]

# -- limits ----------------------------------------------------------------------------

_LIMITS = {
    # Model, checkpoint, vocabulary and vectors files: bytes read (for an
    # archive, the uncompressed total its members declare).
    "max_bytes": 16 * 2 ** 30,
    # A JSON document (vocabulary file, an archive's __meta__ entry, a JSONL line).
    "max_json_bytes": 256 * 2 ** 20,
    # Nesting of JSON arrays and objects; fastrnn's own files use fewer than 20.
    "max_json_depth": 100,
    # One line of a CLI data file or a text vectors file.
    "max_line_bytes": 2 ** 20,
    # Read devices, pipes and sockets (a path to /dev/stdin, a FIFO) too.
    "allow_special_files": False,
}


def get_load_limits():
    """The limits every fastrnn loader applies (a copy); see :func:`set_load_limits`."""
    return dict(_LIMITS)


def set_load_limits(**limits):
    """Change the loader limits; returns the previous values (pass them back
    as ``set_load_limits(**previous)`` to restore).

    Keywords: ``max_bytes`` (model, checkpoint, vocabulary, vectors files;
    default 16 GiB), ``max_json_bytes`` (one JSON document; 256 MiB),
    ``max_json_depth`` (nesting of JSON arrays/objects; 100),
    ``max_line_bytes`` (one line of a CLI data file or a vectors file;
    1 MiB), ``allow_special_files`` (read devices and pipes; False).
    """
    checked = {}
    for name, value in limits.items():
        if name not in _LIMITS:
            raise TypeError(f"set_load_limits() got an unknown limit {name!r}; known: "
                            f"{', '.join(_LIMITS)}")
        rule = Boolean() if name == "allow_special_files" else Integer(low=1)
        checked[name] = rule(name, value)
    previous = dict(_LIMITS)
    _LIMITS.update(checked)
    return previous


class LoadError(ValueError):
    """A file a loader refuses; the message names the file and the problem."""


def _too_big(what, path, size, limit_name):
    return LoadError(f"{what} {path!r} is too large: {size} bytes, more than the "
                      f"{limit_name} limit of {_LIMITS[limit_name]} (raise it with "
                      f"fastrnn.set_load_limits({limit_name}=...) if the file is trusted)")


# -- opening and reading files ------------------------------------------------------------

def open_regular(path, what):
    """``path`` opened for binary reading, after checking that it is a regular
    file (devices, pipes and sockets are refused unless allow_special_files:
    /dev/zero never ends, a FIFO blocks).  FileNotFoundError when missing,
    ValueError naming the file for anything else."""
    path = os.fspath(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path!r} does not exist") from None
    except OSError as exc:
        raise LoadError(f"{what} {path!r} cannot be read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise LoadError(f"{what} {path!r} is a directory, expected a file")
    if not stat.S_ISREG(info.st_mode) and not _LIMITS["allow_special_files"]:
        raise LoadError(f"{what} {path!r} is not a regular file (a device, pipe or "
                         f"socket); fastrnn.set_load_limits(allow_special_files=True) "
                         f"reads such files")
    try:
        return open(path, "rb")
    except OSError as exc:
        raise LoadError(f"{what} {path!r} cannot be read: {exc.strerror or exc}") from None


def read_limited(path, what, limit_name="max_bytes"):
    """The bytes of the file ``path``, at most the ``limit_name`` limit."""
    path = os.fspath(path)
    limit = _LIMITS[limit_name]
    with open_regular(path, what) as handle:
        try:
            data = handle.read(limit + 1)
        except OSError as exc:
            raise LoadError(f"{what} {path!r} cannot be read: {exc.strerror or exc}") \
                from None
    if len(data) > limit:
        raise _too_big(what, path, f"over {limit}", limit_name)
    return data


# -- JSON ---------------------------------------------------------------------------------

_JSON_STRING = re.compile(rb'"(?:[^"\\]+|\\.)*"', re.DOTALL)
_OPEN = np.zeros(256, np.int8)
_OPEN[[ord("["), ord("{")]] = 1
_OPEN[[ord("]"), ord("}")]] = -1
_SCAN_CHUNK = 1 << 24


def json_depth(data):
    """The deepest nesting of arrays/objects in the JSON text ``data`` (bytes),
    found without parsing (strings removed, brackets counted in chunks), so a
    hostile document cannot exhaust the recursion of the parser."""
    skeleton = np.frombuffer(_JSON_STRING.sub(b'""', data), dtype=np.uint8)
    depth = deepest = 0
    for start in range(0, skeleton.size, _SCAN_CHUNK):
        steps = _OPEN[skeleton[start:start + _SCAN_CHUNK]].astype(np.int64)
        running = np.cumsum(steps) + depth
        if running.size:
            deepest = max(deepest, int(running.max()))
            depth = int(running[-1])
    return deepest


def parse_json(data, where):
    """The JSON document in ``data`` (bytes or str) after the size and depth
    limits; ``where`` ("vocabulary file 'v.json'") starts every error."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    if len(data) > _LIMITS["max_json_bytes"]:
        raise ValueError(f"{where}: its JSON document has {len(data)} bytes, more than "
                         f"the max_json_bytes limit of {_LIMITS['max_json_bytes']} "
                         f"(fastrnn.set_load_limits raises it)")
    depth = json_depth(data)
    if depth > _LIMITS["max_json_depth"]:
        raise ValueError(f"{where}: its JSON is nested {depth} levels deep, more than the "
                         f"max_json_depth limit of {_LIMITS['max_json_depth']} "
                         f"(fastrnn.set_load_limits raises it)")
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{where} is not UTF-8 text ({exc.reason} at byte "
                         f"{exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where} is not valid JSON ({exc.msg} at line {exc.lineno}, "
                         f"column {exc.colno}); it may be truncated or damaged") from None
    except RecursionError:      # only when max_json_depth was raised very high
        raise ValueError(f"{where}: its JSON is nested too deeply to parse") from None


# -- writing ------------------------------------------------------------------------------

_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.(?P<pid>\d+)\.[0-9a-f]{12}\.tmp$")
# fastrnn 0.1.0 named temp files without the pid: those are removed once
# older than this process's start and than _LEGACY_AGE seconds (no live
# writer leaves a temp file untouched that long).
_LEGACY_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.[0-9a-f]{12}\.tmp$")
_LEGACY_AGE = 600.0
_STARTED = time.time()


def _temp_name(target):
    """The hidden temp file for ``target``: ``.<name>.<pid>.<random>.tmp``; the pid
    lets a later save tell a dead writer's leftovers from a live writer's file."""
    return f".{target}.{os.getpid()}.{os.urandom(6).hex()}.tmp"


def _pid_alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:           # exists but belongs to someone else
        return True
    return True


def _stale(directory, name, target):
    """Whether ``name`` is a temp file of ``target`` that no writer will finish."""
    match = _TEMP_NAME.match(name)
    if match is not None:
        return match["target"] == target and not _pid_alive(int(match["pid"]))
    match = _LEGACY_TEMP_NAME.match(name)
    if match is None or match["target"] != target:
        return False
    try:
        modified = os.stat(os.path.join(directory, name)).st_mtime
    except OSError:
        return False
    return modified < min(_STARTED, time.time() - _LEGACY_AGE)


def clean_stale_temps(directory, target):
    """Remove temp files of ``target`` left by writers that no longer run
    (a ``kill -9`` during a save).  Returns the names removed."""
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        if not _stale(directory, name, target):
            continue
        try:
            os.unlink(os.path.join(directory, name))
            removed.append(name)
        except OSError:
            pass
    return removed


def atomic_write(path, write):
    """Call ``write(binary_stream)`` on a temp file beside ``path``, then rename it
    over ``path``; on any failure (KeyboardInterrupt included) the temp file is
    removed and ``path`` untouched.  Temp files of the same target left by
    killed processes are removed first."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot save to {path!r}: it is a directory; give a "
                                f"file name")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot save to {path!r}: directory {directory!r} "
                                f"does not exist")
    clean_stale_temps(directory, os.path.basename(path))
    temporary = os.path.join(directory, _temp_name(os.path.basename(path)))
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


def is_stream(target):
    """True for a binary file object (anything with ``read`` or ``write``)
    rather than a path."""
    return callable(getattr(target, "write", None)) or callable(getattr(target, "read", None))


def _stream_name(stream):
    name = getattr(stream, "name", None)
    return name if isinstance(name, str) else f"<{type(stream).__name__}>"


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


def _open_source(source, what):
    """``(name, binary handle, size in bytes)`` for a path, bytes or a binary
    file object (read to its end, at most ``max_bytes``)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, name = bytes(source), "<bytes>"
    elif is_stream(source):
        if not callable(getattr(source, "read", None)):
            raise TypeError(f"cannot load from {type(source).__name__}: the file object has "
                            f"no read method; open it in binary read mode ('rb')")
        limit = _LIMITS["max_bytes"]
        data = None if isinstance(source, io.TextIOBase) else source.read(limit + 1)
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"{what} file object must be opened in binary mode ('rb'): "
                            f"got a text stream ({type(source).__name__})")
        name = _stream_name(source)
        if len(data) > limit:
            raise _too_big(what, name, f"over {limit}", "max_bytes")
    else:
        name = os.fspath(source)
        handle = open_regular(name, what)
        return name, handle, os.fstat(handle.fileno()).st_size
    return name, io.BytesIO(data), len(data)


# -- reading archives ---------------------------------------------------------------------

_ZIP_ERRORS = (OSError, EOFError, RuntimeError, NotImplementedError, zipfile.BadZipFile,
               zlib.error, ValueError)


class Archive:
    """An open archive whose member list and ``.npy`` headers have been checked;
    arrays are read one at a time with :meth:`read`.

    ``meta`` is the parsed JSON document; ``headers`` maps every array name
    to ``(shape, dtype)`` as its header declares (and the member's size
    confirms), so callers compare them with what they expect before reading.
    """

    def __init__(self, source, what):
        """``source``: a path, bytes, or a binary file object."""
        self.what = what
        self.path, self._handle, self._size = _open_source(source, what)
        try:
            if self._handle.read(6) == b"\x93NUMPY":
                raise self.corrupt("it holds a single ndarray (.npy), not an archive")
            self._handle.seek(0)
            self._zip = zipfile.ZipFile(self._handle)
            self._members = self._check_members()
            self.headers = {name: self._header(info)[:2]
                            for name, info in self._members.items()}
        except LoadError:
            self.close()
            raise
        except _ZIP_ERRORS as exc:      # zipfile's own errors do not name the file
            self.close()
            raise self.corrupt(f"{type(exc).__name__}: {exc}") from None

    def corrupt(self, message):
        return LoadError(f"{self.what} {self.path!r} is corrupt or not an .npz file: "
                          f"{message}")

    def _check_members(self):
        """Members by array name: only ``.npy`` ones, each once, stored
        uncompressed (as np.savez writes them) inside the file, so no array
        can claim more memory than the file's own bytes (no zip bombs)."""
        members = {}
        total = 0
        size = self._size
        for info in self._zip.infolist():
            name = info.filename
            if not name.endswith(".npy") or name == ".npy":
                raise self.corrupt(f"unexpected member {name!r} (only .npy arrays belong "
                                   f"in it)")
            key = name[:-4]
            if key in members:
                raise self.corrupt(f"member {name!r} appears more than once")
            if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
                raise self.corrupt(f"member {name!r} is compressed; fastrnn archives store "
                                   f"their arrays uncompressed")
            if info.header_offset + info.compress_size > size:
                raise self.corrupt(f"member {name!r} extends past the end of the file "
                                   f"(truncated)")
            members[key] = info
            total += info.file_size
        if total > _LIMITS["max_bytes"]:
            raise _too_big(self.what, self.path, total, "max_bytes")
        return members

    def _header(self, info):
        """(shape, dtype, fortran_order, data offset) of a member, checked:
        a numeric dtype and exactly the member's remaining bytes of data."""
        with self._zip.open(info) as stream:
            try:
                version = np.lib.format.read_magic(stream)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
                elif version == (2, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
                else:
                    raise ValueError(f"unsupported .npy version {version}")
            except ValueError as exc:     # numpy's messages do not name the file
                raise self.corrupt(f"{info.filename}: bad .npy header ({exc})") from None
            offset = stream.tell()
        if dtype.hasobject or dtype.kind not in "biufc" or dtype.fields is not None:
            raise self.corrupt(f"{info.filename}: dtype {dtype} is not a numeric type")
        nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if nbytes != info.file_size - offset:
            raise self.corrupt(f"{info.filename}: its header declares shape {shape} "
                               f"({nbytes} bytes of {dtype}) but the member holds "
                               f"{info.file_size - offset} bytes of data")
        return shape, dtype, fortran, offset

    def read(self, name):
        """The array ``name`` (a fresh, writable array)."""
        info = self._members[name]
        try:
            shape, dtype, fortran, offset = self._header(info)
            array = np.empty(shape[::-1] if fortran else shape, dtype=dtype)
            with self._zip.open(info) as stream:
                stream.read(offset)
                view = memoryview(array.reshape(-1).view(np.uint8))
                done = 0
                while done < len(view):
                    count = stream.readinto(view[done:])
                    if not count:
                        raise self.corrupt(f"{info.filename}: truncated data")
                    done += count
                if stream.read(1):     # also makes zipfile check the CRC
                    raise self.corrupt(f"{info.filename}: data beyond the array")
        except LoadError:
            raise
        except _ZIP_ERRORS as exc:
            raise self.corrupt(f"{info.filename}: {type(exc).__name__}: {exc}") from None
        return array.T if fortran else array

    def read_all(self):
        return {name: self.read(name) for name in self._members if name != META_KEY}

    def close(self):
        zipped = getattr(self, "_zip", None)
        if zipped is not None:
            zipped.close()
        self._handle.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def open_archive(path, kind, max_version, what):
    """An :class:`Archive` of a file written by :func:`write_archive`, its JSON
    document parsed into ``archive.meta`` and checked: ``meta["format"]``
    must equal ``kind`` and ``meta["version"]`` must not be newer than
    ``max_version``.  ``what`` ("model", "checkpoint") names the file in
    errors: FileNotFoundError when it does not exist, ValueError naming the
    path and the problem for anything else.  ``path`` may also be bytes or a
    binary file object.  Close it (``with``)."""
    archive = Archive(path, what)
    try:
        archive.meta = _read_meta(archive, kind, max_version)
    except BaseException:
        archive.close()
        raise
    return archive


def _read_meta(archive, kind, max_version):
    path, what = archive.path, archive.what
    header = archive.headers.get(META_KEY)
    if header is None or header[1] != np.uint8 or len(header[0]) != 1:
        raise ValueError(f"{path!r} is not a fastrnn {what} (no {META_KEY!r} entry)")
    if header[0][0] > _LIMITS["max_json_bytes"]:
        raise ValueError(f"{what} {path!r}: its JSON entry has {header[0][0]} bytes, more "
                         f"than the max_json_bytes limit of {_LIMITS['max_json_bytes']} "
                         f"(fastrnn.set_load_limits raises it)")
    raw = archive.read(META_KEY)
    try:
        meta = parse_json(raw.tobytes(), f"{what} {path!r}")
    except ValueError as exc:
        raise ValueError(f"{what} {path!r} is corrupt: its JSON entry cannot be read "
                         f"({exc})") from None
    found = meta.get("format") if isinstance(meta, dict) else None
    if found != kind:
        raise ValueError(f"{path!r} is not a fastrnn {what} (format {found!r}, "
                         f"expected {kind!r})")
    version = meta.get("version")
    if not is_int(version) or version < 1:
        raise ValueError(f"{what} {path!r} has an invalid format version {version!r}")
    if version > max_version:
        raise ValueError(f"{what} {path!r} has format version {version}, written by a "
                         f"newer fastrnn ({meta.get('fastrnn_version')}); this fastrnn "
                         f"reads versions up to {max_version}: upgrade fastrnn")
    return meta


def read_archive(path, kind, max_version, what):
    """``(arrays, meta)`` from a file written by :func:`write_archive`, every
    array read (see :func:`open_archive` for the checks and errors)."""
    with open_archive(path, kind, max_version, what) as archive:
        return archive.read_all(), archive.meta
