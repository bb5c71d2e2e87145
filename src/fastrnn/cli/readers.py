"""Reading the data files of ``fastrnn train`` / ``predict`` / ``evaluate``.

Files are UTF-8 (a byte-order mark is dropped); ``-`` reads stdin, named
``<stdin>`` in messages.  Every problem is a CLIError naming the file and,
for a bad line, its number.
"""

import json
import math
import os
import sys

import numpy as np

from .._io import get_load_limits, open_regular, parse_json
from .common import CLIError

JSONL_EXTENSIONS = (".jsonl", ".ndjson", ".json")


def display_name(path):
    """How messages name ``path``: ``-`` is ``<stdin>``."""
    return "<stdin>" if path == "-" else path


def read_source(path):
    """(name for messages, lines) of ``path``, newlines stripped; ``-`` is stdin.

    The file is read line by line, each line at most the ``max_line_bytes``
    limit (``fastrnn.set_load_limits``; a longer line is an error naming the
    file and line, found before the rest of that line is read).  Named paths
    must be regular files (``-`` reads stdin, a pipe included).
    """
    name = display_name(path)
    if path == "-":
        return name, _read_lines(name, sys.stdin.buffer)
    try:
        handle = open_regular(path, "data file")
    except FileNotFoundError:
        raise CLIError(f"{path}: no such file") from None
    except ValueError as exc:
        raise CLIError(f"{exc} (use - to read standard input)") from None
    with handle:
        return name, _read_lines(name, handle)


def _read_lines(name, stream):
    limit = get_load_limits()["max_line_bytes"]
    lines = []
    try:
        while True:
            raw = stream.readline(limit + 1)
            if not raw:
                break
            if len(raw) > limit and not (len(raw) == limit + 1 and raw.endswith(b"\n")):
                raise CLIError(f"{name}, line {len(lines) + 1}: longer than the "
                               f"max_line_bytes limit of {limit} bytes (split the text, or "
                               f"raise the limit with fastrnn.set_load_limits)")
            if not lines and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]                       # byte-order mark
            lines.append(_decode(name, len(lines) + 1, raw).rstrip("\n").rstrip("\r"))
    except OSError as exc:
        raise CLIError(f"{name}: cannot read ({exc.strerror or exc})") from None
    return lines


def _decode(name, number, raw):
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CLIError(f"{name}, line {number}: not UTF-8 text ({exc.reason} at byte "
                       f"{exc.start} of the line)") from None


def _numbered_lines(lines):
    """(line number, line) for every line (1-based numbers)."""
    return enumerate(lines, start=1)


def _first_line_is_json_object(lines):
    for line in lines:
        if line.strip():
            try:
                return line.lstrip().startswith("{") and isinstance(json.loads(line), dict)
            except (ValueError, RecursionError):
                return False
    return False


def _detect_format(name, lines, requested, plain):
    """"jsonl" or ``plain`` (the task's line format).  ``auto``: by extension
    (.jsonl/.ndjson/.json), else JSONL when the first non-blank line is a
    JSON object, else ``plain``."""
    if requested != "auto":
        return requested
    extension = os.path.splitext(name)[1].lower()
    if extension in JSONL_EXTENSIONS:
        return "jsonl"
    if extension not in (".tsv", ".conll", ".txt", ".csv") and _first_line_is_json_object(lines):
        return "jsonl"
    return plain


def _jsonl_records(name, lines, keys):
    """(line number, record) for each non-blank line; each record must be a JSON
    object with ``keys``."""
    for number, line in _numbered_lines(lines):
        if not line.strip():
            continue
        try:
            record = parse_json(line, f"{name}, line {number}")
        except ValueError as exc:
            raise CLIError(str(exc)) from None
        if not isinstance(record, dict):
            raise CLIError(f"{name}, line {number}: expected a JSON object "
                           f"{{{', '.join(repr(k) + ': ...' for k in keys)}}}, got "
                           f"{type(record).__name__}")
        missing = [key for key in keys if key not in record]
        if missing:
            raise CLIError(f"{name}, line {number}: missing key {missing[0]!r} (each line "
                           f"needs {', '.join(map(repr, keys))})")
        yield number, record


def _need_text(name, number, what, value):
    if not isinstance(value, str):
        raise CLIError(f"{name}, line {number}: {what} must be a string, got "
                       f"{type(value).__name__}")
    if not value.strip():
        raise CLIError(f"{name}, line {number}: {what} is empty")
    return value


def _need_label(name, number, value):
    if isinstance(value, (str, int)) or isinstance(value, float) and math.isfinite(value):
        return value
    raise CLIError(f"{name}, line {number}: label must be a string or a number, got "
                   f"{json.dumps(value)[:40]}")


def _need_strings(name, number, what, value):
    if not isinstance(value, list) or not value \
            or not all(isinstance(item, str) and item for item in value):
        raise CLIError(f"{name}, line {number}: {what} must be a non-empty list of "
                       f"non-empty strings")
    return value


def _no_examples(name):
    return CLIError(f"{name}: no examples found (the file is empty or only blank lines)")


# -- lm ---------------------------------------------------------------------------------------

def read_texts(paths, lines=False):
    """LM data: each file is one text, or each non-blank line with ``lines``."""
    texts = []
    for path in paths:
        _, content = read_source(path)
        if lines:
            texts.extend(line for line in content if line.strip())
        else:
            text = "\n".join(content)
            if text.strip():
                texts.append(text)
    if not texts:
        raise CLIError(f"{', '.join(paths)}: no text found (empty files)")
    return texts


# -- classify, seq2seq ------------------------------------------------------------------------

def read_pairs(path, fmt="auto", keys=("text", "label"), label_is_text=False):
    """(inputs, outputs) from ``input<TAB>output`` lines or JSONL objects with ``keys``.

    The output is a label (classify) or a text (seq2seq, ``label_is_text``).
    """
    name, lines = read_source(path)
    fmt = _detect_format(name, lines, fmt, "tsv")
    first, second = [], []
    if fmt == "jsonl":
        for number, record in _jsonl_records(name, lines, keys):
            first.append(_need_text(name, number, keys[0], record[keys[0]]))
            value = record[keys[1]]
            second.append(_need_text(name, number, keys[1], value) if label_is_text
                          else _need_label(name, number, value))
    else:
        for number, line in _numbered_lines(lines):
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != 2:
                raise CLIError(f"{name}, line {number}: expected {keys[0]}<TAB>{keys[1]} "
                               f"(2 tab-separated fields), found {len(fields)} field"
                               f"{'' if len(fields) == 1 else 's'}")
            first.append(_need_text(name, number, keys[0], fields[0]))
            if not fields[1].strip():
                raise CLIError(f"{name}, line {number}: {keys[1]} is empty")
            second.append(fields[1] if label_is_text else fields[1].strip())
    if not first:
        raise _no_examples(name)
    return first, second


# -- tag --------------------------------------------------------------------------------------

def read_tagged(path, fmt="auto", with_tags=True):
    """(token lists, tag lists) from CoNLL-style or JSONL {"tokens", "tags"}.

    CoNLL: one token per line, the token in the first column and its tag in
    the last (columns split by tabs, or by spaces when a line has no tab),
    a blank line between sentences; ``-DOCSTART-`` lines are skipped.
    Without ``with_tags`` (prediction) the tag column is optional and
    ignored, and the tag lists are None.
    """
    name, lines = read_source(path)
    fmt = _detect_format(name, lines, fmt, "conll")
    reader = _tagged_jsonl if fmt == "jsonl" else _tagged_conll
    sentences, tag_lists = reader(name, lines, with_tags)
    if not sentences:
        raise _no_examples(name)
    return sentences, tag_lists if with_tags else None


def _tagged_jsonl(name, lines, with_tags):
    sentences, tag_lists = [], []
    keys = ("tokens", "tags") if with_tags else ("tokens",)
    for number, record in _jsonl_records(name, lines, keys):
        tokens = _need_strings(name, number, "tokens", record["tokens"])
        sentences.append(tokens)
        if with_tags:
            tags = _need_strings(name, number, "tags", record["tags"])
            if len(tags) != len(tokens):
                raise CLIError(f"{name}, line {number}: {len(tokens)} tokens but "
                               f"{len(tags)} tags (one tag per token)")
            tag_lists.append(tags)
    return sentences, tag_lists


def _tagged_conll(name, lines, with_tags):
    sentences, tag_lists = [], []
    tokens, tags = [], []
    for number, line in list(_numbered_lines(lines)) + [(None, "")]:
        if not line.strip():
            if tokens:
                sentences.append(tokens)
                tag_lists.append(tags)
                tokens, tags = [], []
            continue
        if line.startswith("-DOCSTART-"):
            continue
        fields = [field.strip() for field in (line.split("\t") if "\t" in line
                                              else line.split())]
        if (with_tags and len(fields) < 2) or not fields[0] or not fields[-1]:
            raise CLIError(f"{name}, line {number}: expected token<TAB>tag (a blank line "
                           f"between sentences), found {line[:60]!r}")
        if len(fields[0].split()) > 1:
            raise CLIError(f"{name}, line {number}: the token {fields[0][:40]!r} contains "
                           f"spaces: expected one token per line (token<TAB>tag)")
        tokens.append(fields[0])
        tags.append(fields[-1])
    return sentences, tag_lists


# -- regress ----------------------------------------------------------------------------------

def _parse_numbers(name, number, text, what):
    items = text.replace(",", " ").split()
    try:
        values = [float(item) for item in items]
    except ValueError:
        raise CLIError(f"{name}, line {number}: {what} must be numbers separated by spaces "
                       f"or commas, got {text[:60]!r}") from None
    if not values:
        raise CLIError(f"{name}, line {number}: {what} is empty")
    if not all(math.isfinite(v) for v in values):
        raise CLIError(f"{name}, line {number}: {what} contains NaN or infinity")
    return np.array(values)


def _need_numbers(name, number, what, value, nested_ok):
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise CLIError(f"{name}, line {number}: {what} must be a number or a list of "
                       f"numbers") from None
    if array.ndim > (2 if nested_ok else 1) or array.size == 0 \
            or not np.isfinite(array).all():
        raise CLIError(f"{name}, line {number}: {what} must be a non-empty list of finite "
                       f"numbers{' (or a list of equal-length lists)' if nested_ok else ''}")
    return array


def read_regression(path, fmt="auto", with_targets=True):
    """(sequences, targets) for ``regress``: TSV ``x1 x2 ...<TAB>y`` (numbers
    separated by spaces or commas; one feature per step) or JSONL
    {"sequence": [...] or [[...], ...], "target": y or [y1, ...]}.

    Targets come back as an (N,) array, or (N, K) when they have K > 1
    values.  Without ``with_targets`` (prediction) a target is optional and
    ignored, and the targets are None.
    """
    name, lines = read_source(path)
    return _regression(name, lines, _detect_format(name, lines, fmt, "tsv"), with_targets)


def _regression(name, lines, fmt, with_targets):
    sequences, targets = [], []
    if fmt == "jsonl":
        keys = ("sequence", "target") if with_targets else ("sequence",)
        for number, record in _jsonl_records(name, lines, keys):
            sequences.append(_need_numbers(name, number, "sequence", record["sequence"], True))
            if with_targets:
                target = _need_numbers(name, number, "target", record["target"], False)
                targets.append(np.atleast_1d(target))
    else:
        for number, line in _numbered_lines(lines):
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) > 2 or (with_targets and len(fields) != 2):
                raise CLIError(f"{name}, line {number}: expected sequence<TAB>target "
                               f"(2 tab-separated fields), found {len(fields)}")
            sequences.append(_parse_numbers(name, number, fields[0], "sequence"))
            if with_targets:
                targets.append(_parse_numbers(name, number, fields[1], "target"))
    if not sequences:
        raise _no_examples(name)
    if not with_targets:
        return sequences, None
    widths = sorted({t.size for t in targets})
    if len(widths) != 1:
        raise CLIError(f"{name}: every target needs the same number of values, found "
                       f"{' and '.join(map(str, widths))}")
    targets = np.stack(targets)
    return sequences, targets[:, 0] if widths[0] == 1 else targets


# -- predict ----------------------------------------------------------------------------------

INPUT_KEYS = {"classify": "text", "tag": "tokens", "seq2seq": "source", "regress": "sequence"}


def read_inputs(path, task, fmt="auto"):
    """Inputs for ``predict``, one per non-blank line.

    ``lines``: the line up to its first tab (anything after a tab, such as
    the label or target of a training file, is ignored): a text, for tag
    tokens separated by spaces, for regress numbers.  ``conll`` (tag): one
    token per line in the first column, a blank line between sentences.
    ``jsonl``: the input key of each object ("text", "tokens", "source",
    "sequence"); other keys are ignored.  ``auto``: JSONL by extension or
    a first line that is a JSON object; for tag, CoNLL when the extension
    is .conll or a line has a tab; else lines.
    """
    name, lines = read_source(path)
    conll = task == "tag" and (os.path.splitext(name)[1].lower() == ".conll"
                               or any("\t" in line for line in lines))
    fmt = _detect_format(name, lines, fmt, "conll" if conll else "lines")
    if task == "regress":
        inputs = _regression(name, lines, fmt, with_targets=False)[0]
    elif fmt == "conll":
        inputs = _tagged_conll(name, lines, with_tags=False)[0]
    elif fmt == "jsonl":
        key = INPUT_KEYS[task]
        check = _need_strings if task == "tag" else _need_text
        inputs = [check(name, number, key, record[key])
                  for number, record in _jsonl_records(name, lines, (key,))]
    else:
        inputs = []
        for _, line in _numbered_lines(lines):
            line = line.split("\t", 1)[0]
            if line.strip():
                inputs.append(line.split() if task == "tag" else line)
    if not inputs:
        raise _no_examples(name)
    return inputs
