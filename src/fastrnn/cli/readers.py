"""Reading the data files of ``fastrnn train`` / ``predict`` / ``evaluate``.

Every problem is a CLIError naming the file and line."""

import json
import math
import os
import sys

import numpy as np

from .common import CLIError


# -- reading data files -----------------------------------------------------------------------

def _open_text(path):
    """The text of ``path`` ('-' is stdin), or a CLIError saying why not."""
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        raise CLIError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CLIError(f"{path}: is a directory, expected a file") from None
    except PermissionError:
        raise CLIError(f"{path}: permission denied") from None
    except UnicodeDecodeError as exc:
        raise CLIError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise CLIError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _numbered_lines(text):
    """(line number, line) for every line, newline stripped (1-based numbers)."""
    for number, line in enumerate(text.splitlines(), start=1):
        yield number, line.rstrip("\r")


def _detect_format(path, text, requested, plain):
    """"jsonl" or ``plain`` (the task's line format).  ``auto``: by extension
    (.jsonl/.ndjson/.json), else JSONL when the first non-blank line is a
    JSON object, else ``plain``."""
    if requested != "auto":
        return requested
    extension = os.path.splitext(path)[1].lower()
    if extension in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if extension in (".tsv", ".conll", ".txt", ".csv"):
        return plain
    for _, line in _numbered_lines(text):
        if line.strip():
            if line.lstrip().startswith("{"):
                try:
                    if isinstance(json.loads(line), dict):
                        return "jsonl"
                except ValueError:
                    pass
            break
    return plain


def _jsonl_records(path, text, keys):
    """(line number, record) for each non-blank line; each record must be a JSON
    object with ``keys``."""
    for number, line in _numbered_lines(text):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise CLIError(f"{path}, line {number}: not valid JSON ({exc})") from None
        if not isinstance(record, dict):
            raise CLIError(f"{path}, line {number}: expected a JSON object "
                           f"{{{', '.join(repr(k) + ': ...' for k in keys)}}}, got "
                           f"{type(record).__name__}")
        missing = [key for key in keys if key not in record]
        if missing:
            raise CLIError(f"{path}, line {number}: missing key {missing[0]!r} (each line "
                           f"needs {', '.join(map(repr, keys))})")
        yield number, record


def _need_text(path, number, what, value):
    if not isinstance(value, str):
        raise CLIError(f"{path}, line {number}: {what} must be a string, got "
                       f"{type(value).__name__}")
    if not value.strip():
        raise CLIError(f"{path}, line {number}: {what} is empty")
    return value


def _need_label(path, number, value):
    if isinstance(value, (str, bool, int)) or isinstance(value, float) and math.isfinite(value):
        return value
    raise CLIError(f"{path}, line {number}: label must be a string or a number, got "
                   f"{json.dumps(value)[:40]}")


def _need_tokens(path, number, what, value):
    if not isinstance(value, list) or not value \
            or not all(isinstance(token, str) and token for token in value):
        raise CLIError(f"{path}, line {number}: {what} must be a non-empty list of "
                       f"non-empty strings")
    return value


def _no_examples(path):
    return CLIError(f"{path}: no examples found (the file is empty or only blank lines)")


def read_texts(paths, lines=False):
    """LM data: each file is one text, or each non-blank line with ``lines``."""
    texts = []
    for path in paths:
        text = _open_text(path)
        if lines:
            texts.extend(line for _, line in _numbered_lines(text) if line.strip())
        elif text.strip():
            texts.append(text)
    if not texts:
        raise CLIError(f"{', '.join(paths)}: no text found (empty files)")
    return texts


def read_pairs(path, fmt="auto", keys=("text", "label"), label_is_text=False):
    """(inputs, outputs) from ``input<TAB>output`` lines or JSONL objects with ``keys``.

    The output is a label (classify) or a text (seq2seq, ``label_is_text``).
    """
    text = _open_text(path)
    fmt = _detect_format(path, text, fmt, "tsv")
    first, second = [], []
    if fmt == "jsonl":
        for number, record in _jsonl_records(path, text, keys):
            first.append(_need_text(path, number, keys[0], record[keys[0]]))
            value = record[keys[1]]
            second.append(_need_text(path, number, keys[1], value) if label_is_text
                          else _need_label(path, number, value))
    else:
        layout = f"{keys[0]}<TAB>{keys[1]}"
        for number, line in _numbered_lines(text):
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != 2:
                raise CLIError(f"{path}, line {number}: expected {layout} (2 tab-separated "
                               f"fields), found {len(fields)} field"
                               f"{'' if len(fields) == 1 else 's'}")
            first.append(_need_text(path, number, keys[0], fields[0]))
            label = fields[1].strip()
            if not label:
                raise CLIError(f"{path}, line {number}: {keys[1]} is empty")
            second.append(fields[1] if label_is_text else label)
    if not first:
        raise _no_examples(path)
    return first, second


def read_tagged(path, fmt="auto"):
    """(token lists, tag lists) from CoNLL-style or JSONL {"tokens", "tags"}.

    CoNLL: one token per line, the token in the first column and its tag in
    the last (columns split by tabs, or by spaces when a line has no tab),
    a blank line between sentences; ``-DOCSTART-`` lines are skipped.
    """
    text = _open_text(path)
    fmt = _detect_format(path, text, fmt, "conll")
    sentences, tag_lists = [], []
    if fmt == "jsonl":
        for number, record in _jsonl_records(path, text, ("tokens", "tags")):
            tokens = _need_tokens(path, number, "tokens", record["tokens"])
            tags = record["tags"]
            if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
                raise CLIError(f"{path}, line {number}: tags must be a list of non-empty "
                               f"strings")
            if len(tags) != len(tokens):
                raise CLIError(f"{path}, line {number}: {len(tokens)} tokens but "
                               f"{len(tags)} tags (one tag per token)")
            sentences.append(tokens)
            tag_lists.append(tags)
    else:
        tokens, tags = [], []
        for number, line in list(_numbered_lines(text)) + [(None, "")]:
            if not line.strip():
                if tokens:
                    sentences.append(tokens)
                    tag_lists.append(tags)
                    tokens, tags = [], []
                continue
            if line.startswith("-DOCSTART-"):
                continue
            fields = line.split("\t") if "\t" in line else line.split()
            fields = [field.strip() for field in fields]
            if len(fields) < 2 or not fields[0] or not fields[-1]:
                raise CLIError(f"{path}, line {number}: expected token<TAB>tag (a blank line "
                               f"between sentences), found {line[:60]!r}")
            if len(fields[0].split()) > 1:
                raise CLIError(f"{path}, line {number}: the token {fields[0][:40]!r} contains "
                               f"spaces: expected one token per line (token<TAB>tag)")
            tokens.append(fields[0])
            tags.append(fields[-1])
    if not sentences:
        raise _no_examples(path)
    return sentences, tag_lists


def _parse_numbers(path, number, text, what):
    items = text.replace(",", " ").split()
    try:
        values = [float(item) for item in items]
    except ValueError:
        raise CLIError(f"{path}, line {number}: {what} must be numbers separated by spaces "
                       f"or commas, got {text[:60]!r}") from None
    if not values:
        raise CLIError(f"{path}, line {number}: {what} is empty")
    if not all(math.isfinite(v) for v in values):
        raise CLIError(f"{path}, line {number}: {what} contains NaN or infinity")
    return values


def _need_numbers(path, number, what, value, nested_ok):
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise CLIError(f"{path}, line {number}: {what} must be a number or a list of "
                       f"numbers") from None
    if array.ndim > (2 if nested_ok else 1) or array.size == 0 \
            or not np.isfinite(array).all():
        raise CLIError(f"{path}, line {number}: {what} must be a non-empty list of finite "
                       f"numbers{' (or a list of equal-length lists)' if nested_ok else ''}")
    return array


def read_regression(path, fmt="auto", with_targets=True, text=None):
    """(sequences, targets) for ``regress``: TSV ``x1 x2 ...<TAB>y`` (numbers
    separated by spaces or commas; one feature per step) or JSONL
    {"sequence": [...] or [[...], ...], "target": y or [y1, ...]}.
    ``text``: the file's content when already read (stdin)."""
    if text is None:
        text = _open_text(path)
    fmt = _detect_format(path, text, fmt, "tsv")
    sequences, targets = [], []
    if fmt == "jsonl":
        keys = ("sequence", "target") if with_targets else ("sequence",)
        for number, record in _jsonl_records(path, text, keys):
            sequence = _need_numbers(path, number, "sequence", record["sequence"], True)
            sequences.append(sequence)
            if with_targets:
                targets.append(_need_numbers(path, number, "target", record["target"], False))
    else:
        for number, line in _numbered_lines(text):
            if not line.strip():
                continue
            fields = line.split("\t")
            wanted = 2 if with_targets else 1
            if len(fields) != wanted and not (not with_targets and len(fields) == 2):
                raise CLIError(f"{path}, line {number}: expected sequence<TAB>target "
                               f"(2 tab-separated fields), found {len(fields)}")
            sequences.append(np.array(_parse_numbers(path, number, fields[0], "sequence")))
            if with_targets:
                targets.append(np.array(_parse_numbers(path, number, fields[1], "target")))
    if not sequences:
        raise _no_examples(path)
    if with_targets:
        widths = {t.size for t in targets}
        if len(widths) != 1:
            raise CLIError(f"{path}: every target needs the same number of values, found "
                           f"{sorted(widths)}")
        targets = np.stack(targets)
        if targets.shape[1] == 1:
            targets = targets[:, 0]
    return sequences, targets


def read_inputs(path, task, tokenizer_splits=False):
    """Inputs for ``predict``: one per non-blank line (texts; for tag,
    whitespace-separated tokens; for regress, numbers), or the input field
    of JSONL records ("text", "tokens", "source", "sequence")."""
    text = _open_text(path)
    fmt = _detect_format(path, text, "auto", "lines")
    key = {"classify": "text", "tag": "tokens", "seq2seq": "source", "regress": "sequence"}[task]
    if task == "regress":
        return read_regression(path, fmt="jsonl" if fmt == "jsonl" else "tsv",
                               with_targets=False, text=text)[0]
    inputs = []
    if fmt == "jsonl":
        for number, record in _jsonl_records(path, text, (key,)):
            if task == "tag":
                inputs.append(_need_tokens(path, number, key, record[key]))
            else:
                inputs.append(_need_text(path, number, key, record[key]))
    else:
        for _, line in _numbered_lines(text):
            if line.strip():
                inputs.append(line.split() if task == "tag" else line)
    if not inputs:
        raise _no_examples(path)
    return inputs
