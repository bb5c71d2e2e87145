"""What every task model shares: parameters, the fit plumbing, saving, loading.

A task model keeps its constructor arguments as attributes (scikit-learn
style: ``get_params``/``set_params``; fitted attributes end in ``_``) and
implements the Trainer's model protocol (``modules``, ``train_batch``,
``evaluate_batch``), so ``fit`` is batching + :class:`fastrnn.Trainer`.

A saved model is one ``.npz`` file: every module's parameters plus a JSON
document with the class name, the constructor parameters and the fitted
state (vocabulary, classes, sizes).  Loading builds the model from that
document and copies the arrays in; no pickle, no code runs.
"""

import contextlib
import inspect
import json
import math
import numbers

import numpy as np

from .. import optim
from .._io import read_archive, write_archive
from ..data import BatchLoader
from ..training import Trainer
from .inputs import InputEncoder
from .network import INPUTS, SequenceEncoder

MODEL_FORMAT = "fastrnn.model"
MODEL_VERSION = 1

_MODEL_CLASSES = {}

OPTIMIZERS = {"sgd": optim.SGD, "adam": optim.Adam, "adamw": optim.AdamW,
              "rmsprop": optim.RMSprop, "adagrad": optim.Adagrad}


class NotFittedError(ValueError, AttributeError):
    """A method that needs a fitted model was called before ``fit``."""


def make_optimizer(optimizer, modules, lr=None, weight_decay=None):
    """An fr.optim optimizer from a name ("adam", ...) or an optimizer class.

    ``lr`` / ``weight_decay`` None keep the optimizer's own defaults (AdamW's
    decoupled decay is 1e-2, the others' 0), as in torch.optim.
    """
    if isinstance(optimizer, str):
        key = optimizer.lower()
        if key not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)} (or an "
                             f"fr.optim class), got {optimizer!r}")
        optimizer = OPTIMIZERS[key]
    if not (isinstance(optimizer, type) and issubclass(optimizer, optim.Optimizer)):
        raise TypeError(f"optimizer must be a name or an fr.optim optimizer class, got "
                        f"{optimizer!r}")
    options = {}
    if lr is not None:
        options["lr"] = lr
    if weight_decay is not None:
        options["weight_decay"] = weight_decay
    return optimizer(modules, **options)


def network_input(value, kind):
    """The encoder's input kind: "numeric" for numeric data (whatever ``input``
    says), else the model's ``input``, "embedding" or "onehot"."""
    if value not in INPUTS:
        raise ValueError(f"input must be one of {', '.join(map(repr, INPUTS))}, got "
                         f"{value!r}")
    if kind == "numeric":
        return "numeric"
    if value == "numeric":
        raise ValueError(f"input='numeric' needs numeric X (arrays of numbers), but X holds "
                         f"{kind}; use input='embedding' or 'onehot'")
    return value


def check_validation_split(value):
    """``validation_split`` as a float in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not 0.0 <= value < 1.0:
        raise ValueError(f"validation_split must be a number in [0, 1), got {value!r}")
    return float(value)


def fresh_seed(seed):
    """``seed`` itself, or a random one when None (data order must be seeded)."""
    if seed is not None:
        return seed
    return int(np.random.SeedSequence().generate_state(1)[0])


def check_flag(name, value):
    """``value`` as a bool; anything else (a string like "no" is truthy) is refused."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


class TaskModel:
    """Base class of the task models; see the module docstring."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _MODEL_CLASSES[cls.__name__] = cls

    # -- scikit-learn parameters ----------------------------------------------------
    @classmethod
    def _param_names(cls):
        signature = inspect.signature(cls.__init__)
        return [name for name in signature.parameters if name != "self"]

    def _store_params(self, values):
        """Keep the constructor arguments as attributes (call with ``locals()``)."""
        for name in self._param_names():
            setattr(self, name, values[name])

    def get_params(self, deep=True):
        """The constructor parameters as a dict (scikit-learn protocol; ``deep``
        is accepted for compatibility and has no effect: no parameter is an
        estimator)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params):
        """Change constructor parameters (``name=value``); returns the model.

        The change takes effect at the next ``fit``: a fitted model keeps
        predicting, scoring and saving with the parameters it was fitted
        with (an unknown name is a ValueError).
        """
        valid = self._param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"{type(self).__name__} has no parameter {name!r}; "
                                 f"valid: {', '.join(valid)}")
            setattr(self, name, value)
        return self

    def __repr__(self):
        defaults = {name: p.default for name, p in
                    inspect.signature(type(self).__init__).parameters.items()}
        changed = [f"{name}={value!r}" for name, value in self.get_params().items()
                   if not _same(value, defaults.get(name))]
        return f"{type(self).__name__}({', '.join(changed)})"

    # -- Trainer protocol (subclasses implement train_batch / evaluate_batch) ------
    def modules(self):
        """The layers, in a fixed order (saving and checkpoints rely on it):
        the encoder stack (``network_``), then the linear head (``head_``).
        Models with other layers override this."""
        return self.network_.modules() + [self.head_]

    def _begin_build(self):
        """Start (re)building the fitted layers; every ``_build`` calls it first.

        The model is unfitted from here until training starts, so a refit
        that fails leaves no stale model behind, and the parameters are
        frozen as they are now: predict, score and save use these (through
        :meth:`_fitted_param`) even if ``set_params`` changes the attributes
        before the next fit.
        """
        self.is_fitted_ = False
        self._fitted_params = self.get_params()

    def _fitted_param(self, name):
        """The value parameter ``name`` had when the model was built."""
        params = getattr(self, "_fitted_params", None)
        return params[name] if params is not None else getattr(self, name)

    def _check_fitted(self):
        if not getattr(self, "is_fitted_", False):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call "
                                 f"fit() first (or fastrnn.load a saved model)")

    def _set_mode(self, training):
        """Every module in training (True) or eval (False) mode."""
        for module in self.modules():
            module.train(training)

    # -- building -------------------------------------------------------------------
    def _input_encoder(self):
        """An unfitted InputEncoder with the model's text settings."""
        return InputEncoder(self.tokenizer, self.lower, self.min_freq, self.max_vocab)

    def _sequence_encoder(self, inputs, seed):
        """The encoder stack for fitted ``inputs`` (an InputEncoder).

        Models without token inputs (the regressor) have no embedding options;
        the defaults below are then unused.
        """
        kind = network_input(getattr(self, "input", "embedding"), inputs.kind)
        return SequenceEncoder(self.cell, kind, inputs.size, self.hidden_size,
                               num_layers=self.num_layers,
                               bidirectional=check_flag(
                                   "bidirectional", getattr(self, "bidirectional", False)),
                               dropout=self.dropout,
                               embedding_dim=getattr(self, "embedding_dim", None),
                               pretrained=getattr(self, "pretrained", None),
                               vocab=inputs.vocab,
                               cell_options=getattr(self, "cell_options", None),
                               freeze_embedding=check_flag(
                                   "freeze_embedding",
                                   getattr(self, "freeze_embedding", False)),
                               dtype=self.dtype, seed=seed)

    # -- fitting --------------------------------------------------------------------
    def _loaders(self, inputs, targets, batch_size, validation, validation_split,
                 per_step_targets=False):
        """Training and validation BatchLoaders (validation may be None).

        ``validation`` is already prepared ``(inputs, targets)`` or None.
        """
        validation_split = check_validation_split(validation_split)
        seed = fresh_seed(self.seed)
        options = {"batch_size": batch_size, "per_step_targets": per_step_targets}
        train = BatchLoader(inputs, targets, shuffle=True, bucket=True, seed=seed, **options)
        if validation is not None:
            return train, BatchLoader(validation[0], validation[1], shuffle=False, **options)
        if validation_split:
            try:
                return train.split(validation_split)
            except ValueError as exc:
                raise ValueError(f"validation_split={validation_split} cannot split "
                                 f"{len(inputs)} sequences: {exc}") from None
        return train, None

    def _train(self, train, validation, epochs, callbacks, verbose, optimizer, lr,
               clip_norm, weight_decay, resume_from):
        """Run the Trainer; the history is returned and kept as ``history_``.

        ``resume_from``: a training checkpoint (``fr.ModelCheckpoint`` /
        ``Trainer.save_checkpoint``) written by the same fit on the same data
        and seed; training continues from it exactly.
        """
        trainer = Trainer(self, make_optimizer(optimizer, self, lr, weight_decay),
                          clip_norm=clip_norm, callbacks=callbacks, verbose=verbose)
        self.is_fitted_ = True      # evaluate/predict work during callbacks
        self.history_ = trainer.fit(train, epochs=epochs, validation_data=validation,
                                    resume_from=resume_from)
        self._set_mode(False)
        return self.history_

    def _batches(self, inputs, batch_size, targets=None, per_step_targets=False):
        """Batches for prediction, the modules in eval mode while they are
        consumed (their modes come back afterwards).

        Sequences of similar length are batched together (deterministic
        bucketing: no shuffling), which cuts the padding computed on mixed
        lengths; ``batch.indices`` give each row's position in ``inputs``,
        so results are written back in data order.
        """
        loader = prediction_loader(inputs, batch_size, targets, per_step_targets)
        with eval_mode(self.modules()):
            yield from loader

    # -- saving ---------------------------------------------------------------------
    def _fitted_state(self):
        """JSON-able fitted state (vocabulary, classes, sizes)."""
        raise NotImplementedError

    def _restore(self, state):
        """Rebuild the fitted layers from :meth:`_fitted_state` (weights come after)."""
        raise NotImplementedError

    def save(self, path):
        """Write the fitted model to one ``.npz`` file, atomically (a temporary
        file renamed over ``path``); ``fastrnn.load(path)`` reads it back.

        Args:
            path: file path (str or os.PathLike); no extension is added.

        Returns ``path``.  The parameters saved are those the model was
        fitted with (see ``set_params``).
        """
        self._check_fitted()
        from .. import __version__
        arrays = {f"{index}/{name}": value
                  for index, module in enumerate(self.modules())
                  for name, value in module.state_dict().items()}
        fitted = getattr(self, "_fitted_params", None) or self.get_params()
        params = _json_params(fitted)
        embedding = getattr(getattr(self, "network_", None), "embedding", None)
        if fitted.get("pretrained") is not None and embedding is not None:
            # The vectors live on in the embedding weights; the loaded model is
            # built without them, so it needs their width as embedding_dim.
            params["embedding_dim"] = embedding.embedding_dim
        meta = {"format": MODEL_FORMAT, "version": MODEL_VERSION,
                "fastrnn_version": __version__, "class": type(self).__name__,
                "params": params,
                "fitted": self._fitted_state()}
        try:
            json.dumps(meta)
        except TypeError as exc:
            raise TypeError(f"cannot save {type(self).__name__}: its parameters or fitted "
                            f"state are not JSON-serialisable ({exc})") from None
        return write_archive(path, arrays, meta)


def label_list(y, count, name="y"):
    """``y`` as a list of ``count`` labels, one per sequence.

    A bare string, unordered containers (set, dict) and arrays that are not
    1-D (one-hot rows, say) are refused: iterating them would not give the
    sequences' labels in order.
    """
    if isinstance(y, (str, bytes)):
        raise TypeError(f"{name} must be a list of labels (one per sequence), got a single "
                        f"{type(y).__name__} {y[:40]!r}")
    if isinstance(y, (set, frozenset, dict)):
        raise TypeError(f"{name} must be an ordered list of labels (one per sequence), got "
                        f"a {type(y).__name__}")
    if isinstance(y, np.ndarray) and y.ndim != 1:
        hint = "; for one-hot rows pass y.argmax(axis=1)" if y.ndim == 2 else ""
        raise ValueError(f"{name} must be 1-D (one label per sequence), got an array of "
                         f"shape {y.shape}{hint}")
    try:
        labels = list(y)
    except TypeError:
        raise TypeError(f"{name} must be a list of labels (one per sequence), got "
                        f"{type(y).__name__}") from None
    if len(labels) != count:
        raise ValueError(f"{name} must have one label per sequence: {count} sequences "
                         f"but {len(labels)} labels")
    return labels


def _position(k):
    return f"[{k}]"


def distinct_labels(labels, name="y", what="labels", where=_position):
    """The distinct values of ``labels``, sorted (first-seen order when they
    do not sort); at least two, none NaN.

    Shared by every model with a label set (classes, tags).  ``what`` names
    them in messages, ``where(k)`` gives the index text of ``labels[k]``
    (tags are ``[sentence][token]``).
    """
    try:
        distinct = list(dict.fromkeys(labels))
    except TypeError:
        _raise_unhashable(labels, name, what, where)
    for label in distinct:
        if _is_nan(label):
            k = next(k for k, value in enumerate(labels) if _is_nan(value))
            raise ValueError(f"{name}{where(k)} is NaN: {what} must not be missing (drop "
                             f"or fill those sequences before fit)")
    try:
        distinct = sorted(distinct)
    except TypeError:
        pass
    if len(distinct) < 2:
        raise ValueError(f"{name} must contain at least 2 distinct {what}, got "
                         f"{distinct!r}")
    return distinct


def fit_labels(y, count, name="y"):
    """(classes, ids): the distinct labels of ``y`` (see :func:`distinct_labels`)
    and each label's index; ``y`` holds one label per sequence."""
    labels = label_list(y, count, name)
    classes = distinct_labels(labels, name)
    return classes, encode_labels(classes, labels, name)


def encode_labels(classes, labels, name="y", what="labels", where=_position, strict=True):
    """Each label's index in ``classes`` (int64).

    strict: a label not in ``classes`` is a ValueError naming it; with False
    it gets id -1 (scores count it as wrong: it can never be predicted).
    An unhashable label is a TypeError either way.
    """
    get = {label: i for i, label in enumerate(classes)}.get
    try:
        ids = np.fromiter((get(label, -1) for label in labels), dtype=np.int64,
                          count=len(labels))
    except TypeError:
        _raise_unhashable(labels, name, what, where)
    if strict and ids.size and ids.min() < 0:
        k = int(np.argmax(ids < 0))
        raise ValueError(f"{name}{where(k)} = {labels[k]!r} is not one of the {what} seen "
                         f"in fit: {list(classes)!r}")
    return ids


def _raise_unhashable(labels, name, what, where):
    k = next(k for k, label in enumerate(labels) if not _hashable(label))
    raise TypeError(f"{name}{where(k)} = {_short(labels[k])} is not hashable: {what} must "
                    f"be hashable values (str, int, ...), got a "
                    f"{type(labels[k]).__name__}") from None


def json_labels(classes, what="labels"):
    """Labels as plain Python values (numpy scalars become int/float/str/bool).

    Only such scalars (and None) survive a save and load unchanged, so other
    labels (tuples, objects) are refused here rather than coming back altered.
    """
    plain = [label.item() if isinstance(label, np.generic) else label for label in classes]
    for label in plain:
        if label is not None and not isinstance(label, (str, int, float)):
            raise TypeError(f"cannot save {what} of type {type(label).__name__} "
                            f"({label!r}); saved models need str, int, float or bool "
                            f"{what}")
    return plain


def label_array(classes):
    """``classes`` as a 1-D array to index predictions with: numpy's own dtype
    when it keeps every label as it is, else object (mixed str/int labels
    would otherwise all become str, tuples a 2-D array)."""
    plain = [label.item() if isinstance(label, np.generic) else label for label in classes]
    try:
        array = np.array(plain)
    except (ValueError, TypeError):
        array = None
    if array is not None and array.ndim == 1 and array.dtype != object and all(
            type(a) is type(b) and a == b for a, b in zip(array.tolist(), plain)):
        return array
    array = np.empty(len(classes), dtype=object)
    for index, label in enumerate(classes):
        array[index] = label
    return array


def prediction_loader(inputs, batch_size, targets=None, per_step_targets=False):
    """A BatchLoader for inference: no shuffling, sorted by length inside
    windows of batches (see ``TaskModel._batches``)."""
    return BatchLoader(inputs, targets, batch_size=batch_size, shuffle=False, bucket=True,
                       per_step_targets=per_step_targets)


@contextlib.contextmanager
def eval_mode(modules):
    """Modules in eval mode inside the block, their previous modes after it
    (predict/generate may run from a callback in the middle of training)."""
    modes = [module.training for module in modules]
    for module in modules:
        module.train(False)
    try:
        yield
    finally:
        for module, mode in zip(modules, modes):
            module.train(mode)


def validation_pair(value, name="validation_data"):
    """``(X_val, y_val)`` from Keras-style ``validation_data``."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        got = (f"a {type(value).__name__} of length {len(value)}"
               if isinstance(value, (tuple, list)) else type(value).__name__)
        raise TypeError(f"{name} must be a pair (X, y) of inputs and targets, got {got}")
    return value


def load(path):
    """The task model saved at ``path`` by ``model.save``, of its own class,
    fitted and in eval mode (its predictions equal the saved model's).

    Args:
        path: the file (str or os.PathLike).

    Raises FileNotFoundError for a missing file and ValueError for one that
    is not a fastrnn model, is damaged, or was written by a newer fastrnn.
    """
    arrays, meta = read_archive(path, MODEL_FORMAT, MODEL_VERSION, "model")
    missing = [key for key in ("class", "params", "fitted") if key not in meta]
    if missing:
        raise ValueError(f"{path!r}: model file is missing its {', '.join(missing)} "
                         f"entry")
    name = meta["class"]
    cls = _MODEL_CLASSES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"{path!r}: unknown model class {name!r}; known: "
                         f"{', '.join(sorted(_MODEL_CLASSES))}")
    try:
        model = cls(**meta["params"])
        model._restore(meta["fitted"])
    except (TypeError, KeyError, AttributeError) as exc:
        raise ValueError(f"{path!r}: the saved {name} settings do not fit this fastrnn "
                         f"({type(exc).__name__}: {exc})") from None
    for index, module in enumerate(model.modules()):
        prefix = f"{index}/"
        state = {key[len(prefix):]: value for key, value in arrays.items()
                 if key.startswith(prefix)}
        try:
            module.load_state_dict(state)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path!r}: weights of layer {index} "
                             f"({type(module).__name__}) do not fit the model: {exc}") from None
    expected = {f"{i}/{name}" for i, m in enumerate(model.modules()) for name in m.state_dict()}
    if set(arrays) != expected:
        raise ValueError(f"{path!r}: unexpected arrays {sorted(set(arrays) - expected)}")
    model.is_fitted_ = True
    model._set_mode(False)
    return model


def _json_params(params):
    """Constructor parameters for the file.  Pretrained vectors are not needed
    once trained (the embedding weights carry them) and are stored as None, so
    loading never reads the vectors file again."""
    return {name: (None if name == "pretrained" else _json_value(value))
            for name, value in params.items()}


def _json_value(value):
    """numpy scalars as Python numbers, dtypes (np.float32, np.dtype) as names."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.dtype) or (isinstance(value, type)
                                       and issubclass(value, np.generic)):
        return np.dtype(value).name
    return value


def _is_nan(value):
    return isinstance(value, (float, np.floating)) and math.isnan(value)


def _short(value):
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _hashable(value):
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _same(a, b):
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return a is b
