"""Batches for training: padding, bucketing, seeded shuffling, BPTT streams.

fastrnn's recurrent layers read time-major inputs ``(T, B, F)`` (or token
ids ``(T, B)`` for an Embedding) plus ``lengths`` ``(B,)`` in ``1..T`` with
packed-sequence semantics (rows may come in any order).  This module turns a
data set into such batches:

- :func:`pad_sequences` pads a list of variable-length sequences;
- :class:`BatchLoader` yields :class:`Batch` tuples for sequence
  classification / tagging / regression, shuffled from ``(seed, epoch)`` so a
  resumed run replays the same batches, optionally bucketed by length to cut
  padding, with :meth:`BatchLoader.split` for a validation split;
- :class:`StreamBatcher` cuts one long token stream into parallel streams for
  language models trained with truncated BPTT.

Everything is vectorised per batch: a batch is gathered from one flat array
of all the steps with a single fancy-indexing scatter, never with a Python
loop over tokens.
"""

import functools
import math
import numbers
from typing import Any, NamedTuple

import numpy as np

from ._validation import Boolean, Integer, Real, is_int, positive_int, resolve_seed, to_numpy

__all__ = ["pad_sequences", "Batch", "BatchLoader", "StreamChunk", "StreamBatcher"]

_NUMERIC_KINDS = "biuf"
_KIND_NAMES = {"U": "strings", "S": "bytes", "O": "Python objects", "c": "complex numbers",
               "M": "datetimes", "m": "timedeltas", "V": "structured values"}

# Tags that keep the random streams of epochs and of the validation split apart.
_EPOCH_STREAM = 0
_SPLIT_STREAM = 1


# ---------------------------------------------------------------------------
# validation helpers


def _kind_name(dtype):
    return _KIND_NAMES.get(dtype.kind, f"dtype {dtype}")


def _is_listlike(value):
    return isinstance(value, (list, tuple, np.ndarray)) or hasattr(value, "detach")


def _as_array(name, value):
    """``value`` as a numeric numpy array, or a TypeError/ValueError naming ``name``."""
    try:
        array = to_numpy(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name} could not be converted to a numeric array "
                         f"(ragged nesting?): {exc}") from None
    if array.dtype.kind not in _NUMERIC_KINDS:
        raise TypeError(f"{name} must hold numbers (bool, int or float), "
                        f"got {_kind_name(array.dtype)}")
    return array


class _Sequences(NamedTuple):
    """Validated variable-length sequences stored as one flat array.

    Row ``i`` is ``flat[offsets[i] : offsets[i] + lengths[i]]``.
    """
    flat: np.ndarray       # (sum of lengths, *trailing)
    offsets: np.ndarray    # (N,) int64
    lengths: np.ndarray    # (N,) int64


def _sequences(name, sequences):
    """Check a list of sequences and pack it as :class:`_Sequences`.

    Accepts a list/tuple (or 1-D object array) of sequences, each a list or an
    array of shape ``(T_i,)`` or ``(T_i, F...)``, or a numeric array of
    shape ``(N, T, ...)`` of equal-length sequences (packed without a copy).
    """
    if sequences is None or isinstance(sequences, (str, bytes)) or not _is_listlike(sequences):
        raise TypeError(f"{name} must be a list of sequences (lists or arrays) or an array "
                        f"(N, T, ...), got {type(sequences).__name__}")
    if hasattr(sequences, "detach"):
        sequences = to_numpy(sequences)
    if isinstance(sequences, np.ndarray) and sequences.ndim == 0:
        raise TypeError(f"{name} must be a list of sequences or an array (N, T, ...), "
                        f"got a 0-d array")
    if len(sequences) == 0:
        raise ValueError(f"{name} is empty: expected at least one sequence")
    if isinstance(sequences, np.ndarray) and sequences.dtype.kind != "O":
        if sequences.dtype.kind not in _NUMERIC_KINDS:
            raise TypeError(f"{name} must hold numbers (bool, int or float), "
                            f"got {_kind_name(sequences.dtype)}")
        if sequences.ndim < 2:
            raise ValueError(f"{name}[0] must be a sequence of shape (T,) or (T, F...), got a "
                             f"scalar (an array {name} must have shape (N, T, ...), got "
                             f"{sequences.shape})")
        n, steps = sequences.shape[:2]
        if steps == 0:
            raise ValueError(f"{name}[0] is empty (array shape {sequences.shape}): every "
                             f"sequence needs length >= 1")
        flat = np.ascontiguousarray(sequences).reshape((n * steps,) + sequences.shape[2:])
        return _Sequences(flat, np.arange(n, dtype=np.int64) * steps,
                          np.full(n, steps, dtype=np.int64))

    arrays = []
    first_shape = None
    for i, item in enumerate(sequences):
        if isinstance(item, (str, bytes)):
            raise TypeError(f"{name}[{i}] must hold numbers, got a {type(item).__name__} "
                            f"(tokenize and map to ids first)")
        array = _as_array(f"{name}[{i}]", item)
        if array.ndim == 0:
            raise ValueError(f"{name}[{i}] must be a sequence of shape (T,) or (T, F...), "
                             f"got a scalar")
        if array.shape[0] == 0:
            raise ValueError(f"{name}[{i}] is empty: every sequence needs length >= 1 "
                             f"(the recurrent layers take lengths in 1..T)")
        if first_shape is None:
            first_shape = array.shape
        elif array.shape[1:] != first_shape[1:]:
            raise ValueError(f"{name}[{i}] has shape {array.shape} but {name}[0] has shape "
                             f"{first_shape}: the trailing (feature) shapes must match")
        arrays.append(array)
    lengths = np.fromiter((a.shape[0] for a in arrays), dtype=np.int64, count=len(arrays))
    dtype = functools.reduce(np.promote_types, {a.dtype for a in arrays})
    flat = np.concatenate(arrays, axis=0, dtype=dtype)
    offsets = np.cumsum(lengths) - lengths
    return _Sequences(flat, offsets, lengths)


def _cast(name, flat, dtype):
    """``flat`` as ``dtype``; lossy kind changes (float -> int) are refused."""
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be a numpy dtype or its name, got {dtype!r}") from None
    if dtype.kind not in _NUMERIC_KINDS:
        raise TypeError(f"dtype must be a bool, int or float dtype, got {dtype}")
    if not np.can_cast(flat.dtype, dtype, casting="same_kind"):
        raise TypeError(f"cannot cast {name} of dtype {flat.dtype} to dtype {dtype} "
                        f"without losing values")
    return flat.astype(dtype, copy=False)


def _fill_value(name, value, dtype):
    """Check that the padding ``value`` is a number that ``dtype`` holds exactly."""
    if isinstance(value, np.generic):
        value = value.item()
    if not isinstance(value, numbers.Real):        # bools are Real: True pads with 1
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if dtype.kind == "f":
        # Any real number is fine for a float dtype (0.1 rounds in float32),
        # unless it overflows to infinity.
        with np.errstate(all="ignore"):
            stored = np.array(value, dtype=np.float64).astype(dtype)
        if math.isfinite(value) and not np.isfinite(stored):
            raise ValueError(f"{name} {value!r} overflows the data's dtype {dtype}")
        return value
    with np.errstate(all="ignore"):
        try:
            stored = np.array(value).astype(dtype)
        except (OverflowError, ValueError):
            stored = None
    if stored is None or stored.item() != value:
        raise ValueError(f"{name} {value!r} cannot be stored in the data's dtype {dtype}")
    return value


_EPOCH = Integer(low=0)
_FLAG = Boolean()


def _as_int64(name, array):
    """An integer array as int64; unsigned values past int64's range are refused
    rather than wrapped to negative numbers."""
    if array.dtype == np.uint64 and array.size and array.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name} must hold values <= {np.iinfo(np.int64).max} (int64), "
                         f"got {array.max()}")
    return array.astype(np.int64, copy=False)


# ---------------------------------------------------------------------------
# padding


def _gather(seqs, rows, fill, batch_first=False):
    """Pad the sequences ``rows`` of ``seqs`` into one array, vectorised.

    The steps of all rows are copied with one fancy-indexed assignment: row
    ``b`` step ``t`` comes from ``flat[offsets[rows[b]] + t]``.
    """
    lengths = seqs.lengths[rows]
    batch = len(rows)
    steps = int(lengths.max())
    trailing = seqs.flat.shape[1:]
    if (lengths == steps).all():
        # Equal lengths: one gather and a transpose, no padding needed.
        src = (seqs.offsets[rows][:, None] + np.arange(steps)).reshape(-1)
        block = seqs.flat[src].reshape((batch, steps) + trailing)
        out = block if batch_first else np.ascontiguousarray(block.swapaxes(0, 1))
        return out, lengths
    shape = (batch, steps) if batch_first else (steps, batch)
    out = np.full(shape + trailing, fill, dtype=seqs.flat.dtype)
    total = int(lengths.sum())
    starts = np.cumsum(lengths) - lengths                 # where each row starts in the gather
    time = np.arange(total) - np.repeat(starts, lengths)  # step index of each gathered element
    column = np.repeat(np.arange(batch), lengths)
    src = np.repeat(seqs.offsets[rows], lengths) + time
    if batch_first:
        out[column, time] = seqs.flat[src]
    else:
        out[time, column] = seqs.flat[src]
    return out, lengths


def pad_sequences(sequences, padding_value=0, dtype=None, batch_first=False):
    """Pad variable-length sequences into one array plus their lengths.

    Args:
        sequences: non-empty list of sequences, each a list of numbers or an
            array of shape ``(T_i,)`` or ``(T_i, F...)`` with ``T_i >= 1``
            (the recurrent layers take lengths in ``1..T``); all trailing
            shapes must match.  An array ``(N, T, ...)`` is taken as N
            sequences of length T.
        padding_value: the number written past each sequence's end; it must
            be exactly representable in the result dtype.
        dtype: result dtype; default: the common dtype of the sequences
            (lists of ints give int64 token ids).  Float -> int casts are
            refused rather than truncating.
        batch_first: return ``(B, T_max, ...)`` instead of the time-major
            ``(T_max, B, ...)`` that fastrnn's layers read.

    Returns:
        ``(padded, lengths)`` with ``lengths`` int64 of shape ``(B,)``.
    """
    batch_first = _FLAG("batch_first", batch_first)
    seqs = _sequences("sequences", sequences)
    if dtype is not None:
        seqs = seqs._replace(flat=_cast("sequences", seqs.flat, dtype))
    fill = _fill_value("padding_value", padding_value, seqs.flat.dtype)
    return _gather(seqs, np.arange(len(seqs.lengths)), fill, batch_first)


# ---------------------------------------------------------------------------
# BatchLoader


class Batch(NamedTuple):
    """One mini-batch.

    Attributes:
        inputs: padded time-major inputs ``(T, B, ...)``, T = the longest row.
        lengths: int64 ``(B,)``, the true length of each row.
        targets: None; per-sequence targets stacked ``(B, ...)``; or, with
            per-step targets, padded time-major ``(T, B, ...)``.
        indices: int64 ``(B,)``, the position of each row in the original
            data, so predictions can be put back in order
            (``out[batch.indices] = pred``).
    """
    inputs: np.ndarray
    lengths: np.ndarray
    targets: Any
    indices: np.ndarray


class BatchLoader:
    """Mini-batches of padded sequences with seeded shuffling and bucketing.

    The order of an epoch is a pure function of ``(seed, epoch)``: a run
    resumed at epoch ``e`` calls ``set_epoch(e)`` and replays exactly the
    batches of the original run.  Iterating without calling ``set_epoch``
    moves on to the next epoch each time, so a plain ``for epoch ...: for
    batch in loader`` loop still reshuffles.

    Args:
        inputs: a list of sequences (each a list or an array ``(T_i,)`` /
            ``(T_i, F...)``, ``T_i >= 1``) or an array ``(N, T, ...)`` of
            equal-length ones.  Integer inputs are token ids; their dtype is
            kept.
        targets: None; N per-sequence labels (a list or an array ``(N, ...)``);
            or, with ``per_step_targets``, N sequences each as long as its
            input.
        batch_size: rows per batch (the last batch may be smaller unless
            ``drop_last``).
        shuffle: shuffle examples each epoch; False keeps data order.
        seed: non-negative int (None draws one now, kept in ``self.seed``).
        bucket: group examples of similar length: shuffle, sort by length
            inside windows of ``bucket_window * batch_size`` examples, cut
            into batches, then shuffle the batch order.  Padding falls while
            every batch stays a random draw from its window.
        per_step_targets: targets are sequences aligned with the inputs
            (tagging); they are padded time-major like the inputs.
        padding_value: fills inputs past each row's length.
        target_padding_value: fills per-step targets past each row's length;
            default -100 for integer targets (CrossEntropyLoss's
            ``ignore_index``; such targets are stored as int64) and 0 for
            float or bool targets.  Only for per-step targets.
        drop_last: drop the last incomplete batch.  The dropped examples are
            drawn at random each epoch (before bucketing, so long sequences
            are not dropped more often than short ones).
        bucket_window: batches per bucketing window (default 50).
        shard: ``(rank, size)`` when this process was given only its own
            part of the data (distributed training on data too large for
            one machine; see below); None when it holds all of it.

    ``len(loader)`` is the number of batches per epoch.

    Distributed training (``Trainer(..., distributed=True)``): ``batch_size``
    is always the *global* batch, the rows of one optimizer step over all
    ranks.  When every rank holds the full data (the default), every rank
    forms the same global batches and takes its rows ``rank::size`` of each
    (:meth:`for_rank`, which the trainer calls): the result equals one
    process's up to summation order.  With ``shard=(rank, size)`` each rank
    holds only its part and forms its batches of ``len(range(rank,
    batch_size, size))`` rows from it alone (shuffled from ``(seed, epoch,
    rank)``); a global batch is then the union of the ranks' batches, and
    every rank must have the same number of batches per epoch (equal shards,
    or ``drop_last``).  Without shuffling, shards of the rows
    ``fr.distributed.shard_rows(N, batch_size, rank, size)`` give exactly the
    global batches of one process over all N rows in order; with shuffling
    each shard is shuffled on its own, so results differ from one process's.
    """

    def __init__(self, inputs, targets=None, batch_size=32, shuffle=True, seed=0,
                 bucket=False, per_step_targets=False, padding_value=0,
                 target_padding_value=None, drop_last=False, bucket_window=50, shard=None):
        self.batch_size = positive_int("batch_size", batch_size)
        self.shard = None if shard is None else check_rank_size("shard", shard)
        self._rows_per_batch = _rank_rows(self.batch_size, self.shard)
        self._rank_part = None      # (rank, size) from for_rank()
        self.shuffle = _FLAG("shuffle", shuffle)
        self.seed = resolve_seed(seed)     # one seed for every epoch's order
        self.bucket = _FLAG("bucket", bucket)
        self.per_step_targets = _FLAG("per_step_targets", per_step_targets)
        self.drop_last = _FLAG("drop_last", drop_last)
        self.bucket_window = positive_int("bucket_window", bucket_window)

        self._inputs = _sequences("inputs", inputs)
        n = len(self._inputs.lengths)
        self.padding_value = _fill_value("padding_value", padding_value,
                                         self._inputs.flat.dtype)
        self._targets = None
        self.target_padding_value = None
        if targets is not None:
            n_targets = _count("targets", targets)
            if n_targets != n:
                raise ValueError(f"inputs and targets must have the same length: inputs has "
                                 f"{n} sequences, targets has {n_targets}")
            if self.per_step_targets:
                self._targets = _step_targets(targets, self._inputs.lengths)
                flat_dtype = self._targets.flat.dtype
                if target_padding_value is None:
                    target_padding_value = -100 if flat_dtype.kind in "iu" else 0
                self.target_padding_value = _fill_value(
                    "target_padding_value", target_padding_value, flat_dtype)
            else:
                self._targets = _sequence_targets(targets)
        elif self.per_step_targets:
            raise ValueError("per_step_targets=True needs targets, got targets=None")
        if target_padding_value is not None and not self.per_step_targets:
            raise ValueError("target_padding_value applies only to per-step targets "
                             "(per_step_targets=True)")
        if self._rows_per_batch < 1:
            raise ValueError(f"shard={shard!r}: batch_size {self.batch_size} gives rank "
                             f"{shard[0]} no rows; batch_size must be >= size")
        if self.drop_last and n < self._rows_per_batch:
            raise ValueError(f"drop_last=True with {n} examples and batch_size "
                             f"{self._rows_per_batch} leaves no batch")
        self._origin = np.arange(n, dtype=np.int64)
        self.epoch = 0
        self._epoch_chosen = True  # the next iteration uses self.epoch as is

    # -- sizes ---------------------------------------------------------------

    @property
    def num_examples(self):
        """Number of examples this loader holds."""
        return len(self._origin)

    @property
    def lengths(self):
        """int64 ``(N,)``: the length of every example, in data order."""
        return self._inputs.lengths.copy()

    @property
    def source_indices(self):
        """int64 ``(N,)``: each example's position in the data given to the
        loader this one was split from (``arange(N)`` for an unsplit loader)."""
        return self._origin.copy()

    def __len__(self):
        n, size = self.num_examples, self._rows_per_batch
        return n // size if self.drop_last else -(-n // size)

    def for_rank(self, rank, size):
        """A loader yielding this rank's rows ``rank::size`` of each batch of
        this one (the global batches), or None for a batch with no rows for
        this rank (the last batch may be smaller than ``size``).  Used by
        distributed training when every rank holds the full data."""
        rank, size = check_rank_size("(rank, size)", (rank, size))
        if self.shard is not None:
            raise ValueError(f"this loader already holds only shard {self.shard} of the "
                             f"data; for_rank() is for a loader of the full data")
        other = self._subset(np.arange(self.num_examples), self.shuffle, self.drop_last)
        other.epoch, other._epoch_chosen = self.epoch, self._epoch_chosen
        other._rank_part = (rank, size)
        return other

    # -- order -----------------------------------------------------------------

    def set_epoch(self, epoch):
        """Make the next iteration yield the batches of ``epoch``."""
        self.epoch = _EPOCH("epoch", epoch)
        self._epoch_chosen = True

    def _batches(self, epoch):
        """The row groups of ``epoch``: a list of int64 arrays of local rows."""
        n = self.num_examples
        size = self._rows_per_batch
        stream = [self.seed, _EPOCH_STREAM, epoch]
        rng = np.random.default_rng(stream if self.shard is None else stream + [self.shard[0]])
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        if self.drop_last:
            order = order[:n - n % size]
        if self.bucket:
            # Windows are whole numbers of batches, so no batch straddles two.
            window = np.arange(len(order)) // (self.bucket_window * size)
            order = order[np.lexsort((self._inputs.lengths[order], window))]
        batches = [order[i:i + size] for i in range(0, len(order), size)]
        if self.bucket and self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def padding_fraction(self, epoch=None):
        """Fraction of the padded input cells (time steps x rows) that are
        padding over the batches of ``epoch`` (default: the current epoch)."""
        epoch = self.epoch if epoch is None else _EPOCH("epoch", epoch)
        batches = self._batches(epoch)
        if not batches:
            return 0.0
        sizes = np.fromiter((len(b) for b in batches), dtype=np.int64, count=len(batches))
        lengths = self._inputs.lengths[np.concatenate(batches)]
        starts = np.cumsum(sizes) - sizes
        cells = int((np.maximum.reduceat(lengths, starts) * sizes).sum())
        return 1.0 - float(lengths.sum()) / cells

    def __iter__(self):
        if not self._epoch_chosen:
            self.epoch += 1
        self._epoch_chosen = False
        return self._iterate(self._batches(self.epoch))

    def _iterate(self, batches):
        for rows in batches:
            if self._rank_part is not None:
                rank, size = self._rank_part
                rows = rows[rank::size]
                if len(rows) == 0:
                    yield None
                    continue
            inputs, lengths = _gather(self._inputs, rows, self.padding_value)
            if self._targets is None:
                targets = None
            elif self.per_step_targets:
                targets, _ = _gather(self._targets, rows, self.target_padding_value)
            else:
                targets = self._targets[rows]
            yield Batch(inputs, lengths, targets, self._origin[rows])

    # -- validation split -----------------------------------------------------

    def split(self, fraction, shuffle=True):
        """Split off a validation set: ``(train_loader, validation_loader)``.

        Like Keras's ``validation_split``, but deterministic from ``seed``:
        with ``shuffle`` the validation examples are a random
        ``round(fraction * N)`` of them (the same for the same seed);
        without, the last ones in data order.  Both loaders keep this
        loader's settings; the validation loader never shuffles and never
        drops examples.  Batch ``indices`` of both refer to positions in this
        loader's data.  This is the one way to split in fastrnn.
        """
        fraction = Real(0, 1, True, True)("fraction", fraction)
        shuffle = _FLAG("shuffle", shuffle)
        n = self.num_examples
        n_val = int(round(fraction * n))
        if n_val == 0 or n_val == n:
            raise ValueError(f"fraction {fraction} of {n} examples gives {n_val} validation "
                             f"and {n - n_val} training examples: both must be non-empty")
        if shuffle:
            perm = np.random.default_rng([self.seed, _SPLIT_STREAM]).permutation(n)
            val_rows, train_rows = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        else:
            train_rows, val_rows = np.arange(n - n_val), np.arange(n - n_val, n)
        train = self._subset(train_rows, self.shuffle, self.drop_last)
        if train.drop_last and train.num_examples < train.batch_size:
            raise ValueError(f"drop_last=True with {train.num_examples} training examples and "
                             f"batch_size {train.batch_size} leaves no batch")
        return train, self._subset(val_rows, False, False)

    def _subset(self, rows, shuffle, drop_last):
        """A loader over ``rows`` sharing this one's storage and settings."""
        other = object.__new__(BatchLoader)
        other.__dict__.update(self.__dict__)
        other.shuffle, other.drop_last = shuffle, drop_last
        other._inputs = self._inputs._replace(offsets=self._inputs.offsets[rows],
                                              lengths=self._inputs.lengths[rows])
        if self._targets is not None:
            if self.per_step_targets:
                other._targets = self._targets._replace(offsets=self._targets.offsets[rows],
                                                        lengths=self._targets.lengths[rows])
            else:
                other._targets = self._targets[rows]
        other._origin = self._origin[rows]
        other.epoch, other._epoch_chosen = 0, True
        return other

    def __repr__(self):
        where = "" if self.shard is None else f", shard={self.shard}"
        if self._rank_part is not None:
            where += f", rank_part={self._rank_part}"
        return (f"BatchLoader(examples={self.num_examples}, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, bucket={self.bucket}, seed={self.seed}, "
                f"epoch={self.epoch}{where})")


def check_rank_size(name, value):
    """``(rank, size)`` as two ints with 0 <= rank < size, or a clear error."""
    if not isinstance(value, (tuple, list)) or len(value) != 2 or any(
            not is_int(v) for v in value):
        raise TypeError(f"{name} must be a pair of ints (rank, size), got {value!r}")
    rank, size = int(value[0]), int(value[1])
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"{name} must satisfy 0 <= rank < size, got {value!r}")
    return rank, size


def _rank_rows(batch_size, shard):
    """Rows per batch of this loader: its rank's share of a global batch."""
    if shard is None:
        return batch_size
    rank, size = shard
    return len(range(rank, batch_size, size))


def _count(name, targets):
    if isinstance(targets, (str, bytes)) or not (_is_listlike(targets)
                                                 or hasattr(targets, "__len__")):
        raise TypeError(f"{name} must be a list or array with one entry per input, "
                        f"got {type(targets).__name__}")
    if hasattr(targets, "detach"):
        targets = to_numpy(targets)
    if isinstance(targets, np.ndarray) and targets.ndim == 0:
        raise ValueError(f"{name} must have one entry per input, got a scalar")
    return len(targets)


def _sequence_targets(targets):
    """Per-sequence targets stacked as an array ``(N, ...)``."""
    array = _as_array("targets", targets)
    if array.ndim == 0:
        raise ValueError("targets must have one entry per input, got a scalar")
    return array


def _step_targets(targets, input_lengths):
    """Per-step targets as :class:`_Sequences`, each as long as its input."""
    seqs = _sequences("targets", targets)
    bad = np.flatnonzero(seqs.lengths != input_lengths)
    if len(bad):
        i = int(bad[0])
        raise ValueError(f"per-step targets[{i}] has length {seqs.lengths[i]} but inputs[{i}] "
                         f"has length {input_lengths[i]}: each target sequence must be as "
                         f"long as its input")
    if seqs.flat.dtype.kind in "iu":
        seqs = seqs._replace(flat=_as_int64("targets", seqs.flat))
    return seqs


# ---------------------------------------------------------------------------
# StreamBatcher


class StreamChunk(NamedTuple):
    """One truncated-BPTT chunk of a :class:`StreamBatcher`.

    Attributes:
        inputs: int64 ``(t, B)`` token ids.
        targets: int64 ``(t, B)``, the token following each input.
        first: True on the first chunk of an epoch: reset the hidden state.
    """
    inputs: np.ndarray
    targets: np.ndarray
    first: bool


class StreamBatcher:
    """A token stream as ``batch_size`` parallel streams, cut for truncated BPTT.

    The N tokens are laid out as ``batch_size`` contiguous pieces of length
    ``L = (N - 1) // batch_size``: column ``b`` of the inputs is
    ``tokens[b*L : (b+1)*L]`` and its targets are the same positions shifted
    by one.  The last ``N - 1 - batch_size*L`` tokens (fewer than
    ``batch_size``) do not fit and are dropped.  The ``L`` steps are served
    in chunks of ``bptt`` steps; the last chunk may be shorter.

    Contract with the model (truncated BPTT): on a chunk with ``first=True``
    the model starts from a zero hidden state; on every other chunk it starts
    from the final hidden state of the previous chunk, carried over as a
    constant (no gradient flows back across the chunk boundary).  So each
    column is one continuous text read left to right across the whole epoch,
    while backpropagation spans at most ``bptt`` steps.

    Args:
        tokens: a 1-D stream of non-negative int ids (list or int array), or
            a list of such streams, concatenated in order.
        batch_size: number of parallel streams B.
        bptt: steps per chunk.
        shard: ``(rank, size)`` when ``tokens`` is only this process's part of
            the text (distributed training on sharded data): ``batch_size``
            stays the global number of streams and this part is laid out as
            the rank's ``len(range(rank, batch_size, size))`` of them.

    ``set_epoch(epoch)`` is accepted for the trainer's interface and changes
    nothing: the layout is the same every epoch.
    """

    def __init__(self, tokens, batch_size, bptt, shard=None):
        self.batch_size = positive_int("batch_size", batch_size)
        self.bptt = positive_int("bptt", bptt)
        self.shard = None if shard is None else check_rank_size("shard", shard)
        columns = _rank_rows(self.batch_size, self.shard)   # this process's streams
        if columns < 1:
            raise ValueError(f"shard={shard!r}: batch_size {self.batch_size} gives rank "
                             f"{shard[0]} no stream; batch_size must be >= size")
        stream = _token_stream(tokens)
        n = len(stream)
        steps = (n - 1) // columns
        if steps < 1:
            raise ValueError(f"tokens too short for batch_size: {n} tokens give "
                             f"(N - 1) // batch_size = ({n} - 1) // {columns} = "
                             f"{steps} steps per stream; need at least "
                             f"{columns + 1} tokens")
        self.num_tokens = n
        self.steps_per_stream = steps
        self.dropped = n - 1 - columns * steps
        used = columns * steps
        self._inputs = np.ascontiguousarray(stream[:used].reshape(columns, steps).T)
        self._targets = np.ascontiguousarray(
            stream[1:used + 1].reshape(columns, steps).T)
        self.epoch = 0
        self._columns = slice(None)     # this rank's streams, from for_rank()

    def __len__(self):
        return -(-self.steps_per_stream // self.bptt)

    def for_rank(self, rank, size):
        """A batcher serving this rank's streams ``rank::size`` of every chunk
        (distributed training with the full token stream on every rank)."""
        rank, size = check_rank_size("(rank, size)", (rank, size))
        if self.shard is not None:
            raise ValueError(f"this batcher already holds only shard {self.shard} of the "
                             f"streams; for_rank() is for a batcher of the full stream")
        if self.batch_size < size:
            raise ValueError(f"batch_size {self.batch_size} gives some of the {size} ranks "
                             f"no stream; batch_size must be >= the number of ranks")
        other = object.__new__(StreamBatcher)
        other.__dict__.update(self.__dict__)
        other._columns = slice(rank, None, size)
        return other

    def set_epoch(self, epoch):
        """Accepted for the trainer's interface; the stream layout never changes."""
        self.epoch = _EPOCH("epoch", epoch)

    def __iter__(self):
        for start in range(0, self.steps_per_stream, self.bptt):
            stop = start + self.bptt
            columns = self._columns
            yield StreamChunk(self._inputs[start:stop, columns].copy(),
                              self._targets[start:stop, columns].copy(), start == 0)

    def __repr__(self):
        return (f"StreamBatcher(tokens={self.num_tokens}, batch_size={self.batch_size}, "
                f"bptt={self.bptt}, steps_per_stream={self.steps_per_stream})")


def _token_stream(tokens):
    """One int64 stream from a stream or a list of streams."""
    if tokens is None or isinstance(tokens, (str, bytes)) or not _is_listlike(tokens):
        raise TypeError(f"tokens must be a 1-D list or int array of token ids, or a list of "
                        f"them, got {type(tokens).__name__}")
    if isinstance(tokens, (list, tuple)) and tokens and all(
            _is_listlike(t) and not isinstance(t, (str, bytes)) for t in tokens):
        parts = [_ids(f"tokens[{i}]", t) for i, t in enumerate(tokens)]
        stream = np.concatenate(parts)
    else:
        stream = _ids("tokens", tokens)
    if len(stream) == 0:
        raise ValueError("tokens is empty: expected a stream of token ids")
    return stream


def _ids(name, value):
    array = _as_array(name, value)
    if array.ndim == 1 and array.size == 0:
        return np.zeros(0, dtype=np.int64)  # [] parses as float64; it is just empty
    if array.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer token ids, got dtype {array.dtype}")
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D (a stream of token ids), got shape {array.shape}")
    if len(array) and array.min() < 0:
        raise ValueError(f"{name} must hold non-negative token ids, got {array.min()}")
    return _as_int64(name, array)
