"""Hostile and damaged files against every loader: a clear ValueError naming the
file, never a MemoryError, RecursionError, hang, or a read of another file.

A generator derives damaged variants from real files (truncations, flipped
bytes) and builds hostile ones (duplicate members, .npy headers claiming
huge shapes, deeply nested JSON, settings declaring huge layers, symlinks to
/dev/zero).  Loaders: ``fr.load``, checkpoints (``resume_from``),
``Vocab.load``, pretrained vectors, the CLI readers.  Interrupted saves are
covered at the end (temp files removed on any exception, stale ones of dead
writers cleaned by the next save).
"""

import io
import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest

import fastrnn as fr
from fastrnn._io import META_KEY
from fastrnn.cli import readers
from fastrnn.cli.common import CLIError

FAST = dict(verbose=0, batch_size=16, lr=0.02)
TEXTS = ["good film", "bad plot", "good plot", "bad film", "a good one", "a bad one"] * 4
LABELS = ["pos", "neg", "pos", "neg", "pos", "neg"] * 4


# -- the corrupted-file generator --------------------------------------------------------------

def damaged_variants(data, seed=0, cuts=12, flips=24):
    """(label, bytes) of truncated and byte-flipped copies of ``data``."""
    rng = np.random.default_rng(seed)
    for cut in np.unique(np.linspace(0, len(data) - 1, cuts).astype(int)):
        yield f"truncated at {cut}", data[:cut]
    for position in rng.choice(len(data), size=min(flips, len(data)), replace=False):
        flipped = bytearray(data)
        flipped[position] ^= 0xFF
        yield f"byte {position} flipped", bytes(flipped)


def npy_bytes(array=None, header=None):
    """An .npy member: ``array`` as numpy writes it, or a raw ``header`` dict
    followed by no data (a header claiming what the data does not hold)."""
    stream = io.BytesIO()
    if header is None:
        np.lib.format.write_array(stream, np.asarray(array), allow_pickle=False)
    else:
        np.lib.format.write_array_header_1_0(stream, header)
        stream.write(b"\0" * 64)
    return stream.getvalue()


def archive_bytes(members):
    """A zip of ``members`` [(name, bytes)], duplicates allowed."""
    stream = io.BytesIO()
    with zipfile.ZipFile(stream, "w") as archive, warnings.catch_warnings():
        warnings.simplefilter("ignore")         # zipfile warns about duplicate names
        for name, data in members:
            archive.writestr(name, data)
    return stream.getvalue()


def members_of(path):
    """[(key, array)] of a saved archive, the JSON document decoded."""
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    meta = json.loads(arrays.pop(META_KEY).tobytes())
    return arrays, meta


def pack(arrays, meta=None, raw_meta=None, extra=()):
    """Archive bytes from arrays and a meta document (or raw meta bytes)."""
    document = raw_meta if raw_meta is not None else json.dumps(meta).encode()
    members = [(f"{name}.npy", npy_bytes(value)) for name, value in arrays.items()]
    members.append((f"{META_KEY}.npy", npy_bytes(np.frombuffer(document, np.uint8))))
    return archive_bytes(members + list(extra))


def deep_json(depth):
    return ("[" * depth + "]" * depth).encode()


def assert_clear_error(load, path, allow_success=False):
    """``load(path)`` succeeds (when allowed) or raises ValueError naming the file."""
    try:
        load(path)
    except ValueError as exc:
        assert os.path.basename(path) in str(exc), str(exc)
        return exc
    except (FileNotFoundError, CLIError) as exc:
        assert os.path.basename(path) in str(exc), str(exc)
        return exc
    if not allow_success:
        raise AssertionError(f"{path} loaded without an error")
    return None


# -- fixtures -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.npz"
    model = fr.SequenceClassifier(hidden_size=4, embedding_dim=3, seed=0)
    model.fit(TEXTS, LABELS, epochs=1, **FAST)
    model.save(path)
    return path


@pytest.fixture(scope="module")
def checkpoint_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "run.npz"
    model = fr.SequenceClassifier(hidden_size=4, embedding_dim=3, seed=0)
    model.fit(TEXTS, LABELS, epochs=1, callbacks=[fr.ModelCheckpoint(path)], **FAST)
    return path


def resume(path):
    model = fr.SequenceClassifier(hidden_size=4, embedding_dim=3, seed=0)
    model.fit(TEXTS, LABELS, epochs=2, resume_from=path, **FAST)


@pytest.fixture(scope="module")
def vocab_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("vocab") / "vocab.json"
    fr.Vocab(["good", "bad", "film"]).save(path)
    return path


def vectors(path):
    return fr.Embedding.from_pretrained(path, vocab=["good", "bad"])


def cli_pairs(path):
    return readers.read_pairs(str(path))


@pytest.fixture
def dev_zero_link(tmp_path):
    def make(name):
        link = tmp_path / name
        link.symlink_to("/dev/zero")
        return link
    return make


# -- the generator over every loader -------------------------------------------------------------

@pytest.mark.parametrize("loader", ["model", "checkpoint", "vocab", "vectors", "cli"])
def test_damaged_copies_load_or_fail_clearly(loader, model_file, checkpoint_file,
                                             vocab_file, tmp_path):
    sources = {"model": (model_file, fr.load), "checkpoint": (checkpoint_file, resume),
               "vocab": (vocab_file, fr.Vocab.load)}
    if loader == "vectors":
        source = tmp_path / "source.txt"
        source.write_text("2 3\ngood 1 2 3\nbad 4 5 6\n")
        sources["vectors"] = (source, vectors)
    if loader == "cli":
        source = tmp_path / "source.tsv"
        source.write_text('good film\tpos\n{"text": "bad", "label": "neg"}\n')
        sources["cli"] = (source, cli_pairs)
    source, load = sources[loader]
    data = source.read_bytes()
    target = tmp_path / f"damaged{os.path.splitext(str(source))[1]}"
    for label, variant in damaged_variants(data, flips=12 if loader == "checkpoint" else 24):
        target.write_bytes(variant)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")     # vectors: words missing from the file
                assert_clear_error(load, str(target), allow_success=True)
        except Exception as exc:      # noqa: BLE001 - report which variant broke it
            raise AssertionError(f"{loader}, {label}: {type(exc).__name__}: {exc}") from exc


# -- model archives -------------------------------------------------------------------------------

def test_duplicate_members_are_refused(model_file, tmp_path):
    arrays, meta = members_of(model_file)
    name = sorted(arrays)[0]
    bad = tmp_path / "dup.npz"
    bad.write_bytes(pack(arrays, meta, extra=[(f"{name}.npy", npy_bytes(arrays[name] * 0))]))
    exc = assert_clear_error(fr.load, str(bad))
    assert f"member '{name}.npy' appears more than once" in str(exc)


def test_unexpected_member_is_refused(model_file, tmp_path):
    arrays, meta = members_of(model_file)
    bad = tmp_path / "extra.npz"
    bad.write_bytes(pack(arrays, meta, extra=[("notes.txt", b"hello")]))
    assert "unexpected member 'notes.txt'" in str(assert_clear_error(fr.load, str(bad)))


def test_compressed_members_and_zip_bombs_are_refused(model_file, tmp_path):
    """fastrnn stores arrays uncompressed, so an archive's arrays can never
    need more memory than the file has bytes; a deflated member (a zip bomb:
    64 MB of zeros in a few KB) is refused before it is inflated."""
    arrays, meta = members_of(model_file)
    bomb = tmp_path / "bomb.npz"
    stream = io.BytesIO()
    with zipfile.ZipFile(stream, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, value in arrays.items():
            archive.writestr(f"{name}.npy", npy_bytes(value))
        archive.writestr("big.npy", npy_bytes(np.zeros(2 ** 24, np.float32)))
        archive.writestr(f"{META_KEY}.npy",
                         npy_bytes(np.frombuffer(json.dumps(meta).encode(), np.uint8)))
    bomb.write_bytes(stream.getvalue())
    assert bomb.stat().st_size < 2 ** 20
    exc = assert_clear_error(fr.load, str(bomb))
    assert "is compressed; fastrnn archives store their arrays uncompressed" in str(exc)


@pytest.mark.parametrize("shape", [(2 ** 40,), (2 ** 20, 2 ** 20), (3, 2 ** 62)])
def test_npy_header_claiming_a_huge_shape_allocates_nothing(model_file, tmp_path, shape):
    arrays, meta = members_of(model_file)
    name = sorted(arrays)[0]
    header = {"descr": "<f4", "fortran_order": False, "shape": shape}
    members = [(f"{k}.npy", npy_bytes(v) if k != name else npy_bytes(header=header))
               for k, v in arrays.items()]
    members.append((f"{META_KEY}.npy",
                    npy_bytes(np.frombuffer(json.dumps(meta).encode(), np.uint8))))
    bad = tmp_path / "huge.npz"
    bad.write_bytes(archive_bytes(members))
    tracemalloc.start()
    try:
        exc = assert_clear_error(fr.load, str(bad))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "header declares shape" in str(exc)
    assert peak < 20 * 2 ** 20


def test_huge_npy_header_text_is_refused(model_file, tmp_path):
    arrays, meta = members_of(model_file)
    name = sorted(arrays)[0]
    stream = io.BytesIO()
    stream.write(b"\x93NUMPY\x02\x00" + (200_000).to_bytes(4, "little") + b" " * 200_000)
    members = [(f"{k}.npy", npy_bytes(v) if k != name else stream.getvalue())
               for k, v in arrays.items()]
    members.append((f"{META_KEY}.npy",
                    npy_bytes(np.frombuffer(json.dumps(meta).encode(), np.uint8))))
    bad = tmp_path / "header.npz"
    bad.write_bytes(archive_bytes(members))
    assert "bad .npy header" in str(assert_clear_error(fr.load, str(bad)))


@pytest.mark.parametrize("hidden_size", [8000, 2 ** 40])
def test_settings_declaring_huge_layers_fail_before_allocating(model_file, tmp_path,
                                                               hidden_size):
    arrays, meta = members_of(model_file)
    meta["params"]["hidden_size"] = hidden_size
    bad = tmp_path / "big.npz"
    bad.write_bytes(pack(arrays, meta))
    tracemalloc.start()
    try:
        exc = assert_clear_error(fr.load, str(bad))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "declare larger layers than the" in str(exc)
    assert peak < 20 * 2 ** 20      # was 3.9 GB for hidden_size=8000


def test_the_pretrained_path_in_a_model_file_is_never_opened(model_file, tmp_path,
                                                             monkeypatch):
    arrays, meta = members_of(model_file)
    opened = []
    monkeypatch.setattr("fastrnn.vectors.read_text_vectors",
                        lambda *args, **kwargs: opened.append(args) or 1 / 0)
    monkeypatch.setattr("fastrnn.layers.embedding.read_vectors_for_vocab",
                        lambda *args, **kwargs: opened.append(args) or 1 / 0)
    for target in ("/dev/zero", "/etc/passwd", str(tmp_path / "vectors.txt")):
        meta["params"]["pretrained"] = target
        path = tmp_path / "pretrained.npz"
        path.write_bytes(pack(arrays, meta))
        started = time.perf_counter()
        model = fr.load(path)
        assert time.perf_counter() - started < 10
        assert model.predict(["good film"])[0] in ("pos", "neg")
    assert opened == []


@pytest.mark.parametrize("depth", [200, 100_000])
def test_deeply_nested_json_is_a_value_error(model_file, tmp_path, depth):
    arrays, _ = members_of(model_file)
    bad = tmp_path / "deep.npz"
    bad.write_bytes(pack(arrays, raw_meta=deep_json(depth)))
    assert "nested" in str(assert_clear_error(fr.load, str(bad)))


def test_deep_json_inside_strings_is_not_nesting(model_file, tmp_path):
    arrays, meta = members_of(model_file)
    meta["fastrnn_version"] = "[" * 500 + '\\"{' * 300
    path = tmp_path / "strings.npz"
    path.write_bytes(pack(arrays, meta))
    fr.load(path)


def test_symlink_to_a_device_is_refused_by_every_loader(dev_zero_link):
    cases = [("model.npz", fr.load), ("run.npz", resume), ("vocab.json", fr.Vocab.load),
             ("vectors.txt", vectors), ("data.tsv", cli_pairs)]
    for name, load in cases:
        exc = assert_clear_error(load, str(dev_zero_link(name)))
        assert "not a regular file" in str(exc), (name, str(exc))


def test_special_files_are_read_when_allowed(tmp_path):
    vocab = tmp_path / "vocab.json"
    fr.Vocab(["a", "b"]).save(vocab)
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    writer = subprocess.Popen([sys.executable, "-c",
                               f"open({str(fifo)!r}, 'wb').write(open({str(vocab)!r}, "
                               f"'rb').read())"])
    previous = fr.set_load_limits(allow_special_files=True)
    try:
        assert fr.Vocab.load(fifo) == fr.Vocab(["a", "b"])
    finally:
        fr.set_load_limits(**previous)
        writer.wait(timeout=30)


def test_archive_size_limit(model_file):
    previous = fr.set_load_limits(max_bytes=1000)
    try:
        exc = assert_clear_error(fr.load, str(model_file))
    finally:
        fr.set_load_limits(**previous)
    assert "max_bytes limit of 1000" in str(exc)
    fr.load(model_file)


def test_load_limits_are_validated_and_restorable():
    before = fr.get_load_limits()
    with pytest.raises(TypeError, match="unknown limit 'max_size'"):
        fr.set_load_limits(max_size=3)
    with pytest.raises(ValueError, match="max_bytes must be an int >= 1"):
        fr.set_load_limits(max_bytes=0)
    with pytest.raises(TypeError, match="allow_special_files must be True or False"):
        fr.set_load_limits(allow_special_files=1)
    previous = fr.set_load_limits(max_json_depth=7)
    assert fr.get_load_limits()["max_json_depth"] == 7
    fr.set_load_limits(**previous)
    assert fr.get_load_limits() == before


# -- checkpoints ----------------------------------------------------------------------------------

def test_checkpoint_with_duplicates_or_deep_json_fails_clearly(checkpoint_file, tmp_path):
    arrays, meta = members_of(checkpoint_file)
    name = sorted(arrays)[0]
    dup = tmp_path / "dup.npz"
    dup.write_bytes(pack(arrays, meta, extra=[(f"{name}.npy", npy_bytes(arrays[name]))]))
    assert "appears more than once" in str(assert_clear_error(resume, str(dup)))
    deep = tmp_path / "deep.npz"
    deep.write_bytes(pack(arrays, raw_meta=deep_json(5000)))
    assert "nested" in str(assert_clear_error(resume, str(deep)))
    nested = dict(meta, history={"x": json.loads(deep_json(150))})
    deep.write_bytes(pack(arrays, nested))
    assert "nested" in str(assert_clear_error(resume, str(deep)))
    malformed = dict(meta, partial={"__ndarray__": [1, 2]})
    bad = tmp_path / "ref.npz"
    bad.write_bytes(pack(arrays, malformed))
    assert_clear_error(resume, str(bad))


# -- vocabularies -----------------------------------------------------------------------------------

def test_vocab_load_limits(vocab_file, tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_bytes(deep_json(100_000))
    assert "nested" in str(assert_clear_error(fr.Vocab.load, str(deep)))
    previous = fr.set_load_limits(max_json_bytes=50)
    try:
        exc = assert_clear_error(fr.Vocab.load, str(vocab_file))
    finally:
        fr.set_load_limits(**previous)
    assert "max_json_bytes limit of 50" in str(exc)
    fr.Vocab.load(vocab_file)


def test_vocab_with_lone_surrogates_saves_and_loads_like_a_model(tmp_path):
    vocab = fr.Vocab(["caf\udce9", "ok"])
    path = vocab.save(tmp_path / "v.json")
    assert fr.Vocab.load(path) == vocab
    path.read_bytes().decode("utf-8")          # still valid UTF-8


# -- pretrained vectors -----------------------------------------------------------------------------

def test_word2vec_header_larger_than_the_file(tmp_path):
    path = tmp_path / "w2v.txt"
    path.write_text("3 1000000000\ngood 1 2\n")
    tracemalloc.start()
    try:
        exc = assert_clear_error(vectors, str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "header declares 3 vectors of 1000000000 values" in str(exc)
    assert peak < 20 * 2 ** 20


def test_vectors_line_cap(tmp_path):
    path = tmp_path / "long.txt"
    path.write_text("good " + "1 " * 5000 + "\n")
    previous = fr.set_load_limits(max_line_bytes=1000)
    try:
        exc = assert_clear_error(vectors, str(path))
    finally:
        fr.set_load_limits(**previous)
    assert "line 1: longer than the max_line_bytes limit of 1000" in str(exc)


# -- CLI readers ----------------------------------------------------------------------------------------

def test_cli_line_cap_and_deep_jsonl(tmp_path):
    long = tmp_path / "long.tsv"
    long.write_text("ok\tpos\n" + "x" * 5000 + "\tneg\n")
    previous = fr.set_load_limits(max_line_bytes=1000)
    try:
        with pytest.raises(CLIError, match=r"long.tsv, line 2: longer than the "
                                           r"max_line_bytes limit of 1000 bytes"):
            readers.read_pairs(str(long))
    finally:
        fr.set_load_limits(**previous)
    deep = tmp_path / "deep.jsonl"
    deep.write_text('{"text": "a", "label": ' + "[" * 50_000 + "]" * 50_000 + "}\n")
    with pytest.raises(CLIError, match=r"deep.jsonl, line 1: its JSON is nested 50001 levels"):
        readers.read_pairs(str(deep))


def test_cli_predict_with_a_huge_line_exits_2_quickly(tmp_path, model_file):
    data = tmp_path / "huge.txt"
    with open(data, "w") as handle:
        handle.write("good film\n")
        handle.write("a " * (3 * 2 ** 20) + "\n")        # 6 MB line, over the 1 MiB cap
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "fastrnn", "predict", str(model_file),
                           str(data)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "huge.txt, line 2: longer than the max_line_bytes limit" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert time.perf_counter() - started < 60


# -- interrupted saves ----------------------------------------------------------------------------------

def _temps(directory):
    return sorted(name for name in os.listdir(directory) if name.endswith(".tmp"))


def test_keyboard_interrupt_during_save_leaves_no_temp_file(tmp_path, monkeypatch):
    model = fr.Vocab(["a", "b"])
    path = model.save(tmp_path / "v.json")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fr.Vocab(["c"]).save(path)
    assert _temps(tmp_path) == []
    assert fr.Vocab.load(path) == model


def test_temp_files_of_killed_writers_are_cleaned_by_the_next_save(tmp_path, model_file):
    target = tmp_path / "model.npz"
    script = (
        "import os, sys, time\n"
        "from fastrnn._io import atomic_write\n"
        "def write(stream):\n"
        "    stream.write(b'x' * 1000); stream.flush()\n"
        "    print('writing', flush=True); time.sleep(600)\n"
        f"atomic_write({str(target)!r}, write)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env)
    assert writer.stdout.readline().strip() == b"writing"
    os.kill(writer.pid, signal.SIGKILL)                   # kill -9 during the save
    writer.wait(timeout=30)
    assert len(_temps(tmp_path)) == 1 and f".{writer.pid}." in _temps(tmp_path)[0]
    # A temp file of a live writer (this process) is left alone.
    live = tmp_path / f".model.npz.{os.getpid()}.{'ab' * 6}.tmp"
    live.write_bytes(b"in progress")
    other = tmp_path / f".other.npz.{writer.pid}.{'cd' * 6}.tmp"
    other.write_bytes(b"another target")
    # Temp files of fastrnn 0.1.0 (no pid): removed once old, kept while fresh.
    legacy_old = tmp_path / ".model.npz.0123456789ab.tmp"
    legacy_old.write_bytes(b"old")
    os.utime(legacy_old, (time.time() - 3600, time.time() - 3600))
    legacy_new = tmp_path / ".model.npz.ba9876543210.tmp"
    legacy_new.write_bytes(b"new")
    fr.load(model_file).save(target)
    assert _temps(tmp_path) == sorted([live.name, other.name, legacy_new.name])
    fr.load(target)
