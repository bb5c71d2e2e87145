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
import io
import json
import math

import numpy as np

from .. import optim
from .._io import META_KEY, open_archive, write_archive
from .._version import __version__
from ..layers.module import ParameterBudgetError, parameter_budget
from ..data import BatchLoader
from ..training import Trainer
from .._validation import FRACTION, Boolean, Integer, Options, Real, resolve_seed
from .inputs import InputEncoder
from .onnx_export import export_model, pad
from .stack import INPUTS, RecurrentStack

MODEL_FORMAT = "fastrnn.model"
MODEL_VERSION = 1

_MODEL_CLASSES = {}

OPTIMIZERS = {"sgd": optim.SGD, "adam": optim.Adam, "adamw": optim.AdamW,
              "rmsprop": optim.RMSprop, "adagrad": optim.Adagrad}


try:    # scikit-learn is optional: with it the task models are its estimators
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import NotFittedError as _NotFittedBase
except ImportError:
    BaseEstimator = object
    ClassifierMixin = RegressorMixin = None
    _NotFittedBase = None
HAVE_SKLEARN = BaseEstimator is not object


def estimator_bases(mixin):
    """``(mixin,)`` when scikit-learn is importable (the mixin must come before
    BaseEstimator), else ``()``: the class works the same without it."""
    return (mixin,) if HAVE_SKLEARN else ()


if _NotFittedBase is not None:
    class NotFittedError(_NotFittedBase):
        """A method that needs a fitted model was called before ``fit``
        (scikit-learn's NotFittedError, itself a ValueError and AttributeError)."""
else:
    class NotFittedError(ValueError, AttributeError):
        """A method that needs a fitted model was called before ``fit``."""


# Training settings: constructor parameters (so scikit-learn can clone and search
# them); every fit keyword of the same name overrides one for that call (None:
# the constructor's value).  Models add their own (bptt, teacher_forcing).
TRAINING_PARAMS = ("epochs", "batch_size", "optimizer", "lr", "weight_decay", "clip_norm",
                   "validation_split", "shuffle", "verbose")
TRAINING_DOC = """epochs, batch_size, optimizer, lr, weight_decay, clip_norm,
            validation_split, shuffle, verbose: training settings, as in
            ``fit`` (whose keywords override them for one call).  optimizer:
            "adam", "sgd", "adamw", "rmsprop", "adagrad" or an ``fr.optim``
            class; lr / weight_decay None keep its defaults; clip_norm: global
            gradient-norm clipping (None: off); shuffle: reshuffle the training
            sequences every epoch (seeded by ``seed``); verbose: 0 silent, 1
            progress (a bar on a terminal, a line per epoch otherwise)."""


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
    Options(INPUTS)("input", value)
    if kind == "numeric":
        return "numeric"
    if value == "numeric":
        raise ValueError(f"input='numeric' needs numeric X (arrays of numbers), but X holds "
                         f"{kind}; use input='embedding' or 'onehot'")
    return value


class TaskModel(BaseEstimator):
    """Base class of the task models; see the module docstring."""

    # The Trainer's Ctrl-C message: task models do not expose their trainer.
    resume_hint = ("model.save(path) keeps it. To resume an interrupted fit later, "
                   "fit with callbacks=[fr.ModelCheckpoint(path)] (a checkpoint after "
                   "every epoch), then fit(..., resume_from=path).")

    _training_params = TRAINING_PARAMS      # constructor parameters fit may override

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _MODEL_CLASSES[cls.__name__] = cls
        if cls.__doc__:     # every model documents its training settings the same way
            cls.__doc__ = cls.__doc__.replace("{TRAINING}", TRAINING_DOC)

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

    if HAVE_SKLEARN:
        def __sklearn_tags__(self):
            """scikit-learn tags: inputs are sequences (texts, token lists or
            numeric series), never NaN; a model without a seed is not
            deterministic."""
            tags = super().__sklearn_tags__()
            tags.input_tags.string = True
            tags.input_tags.two_d_array = False
            tags.non_deterministic = self.seed is None
            return tags

    def _fit_options(self, **overrides):
        """The training settings for one fit: the constructor's values (the
        model's ``TRAINING_PARAMS`` plus its own), each replaced by the fit
        keyword of the same name when that is not None; checked."""
        options = {name: getattr(self, name) for name in self._training_params}
        options.update({name: value for name, value in overrides.items() if value is not None})
        Integer(low=1)("epochs", options["epochs"])
        Integer(low=1)("batch_size", options["batch_size"])
        options["validation_split"] = FRACTION("validation_split",
                                                options["validation_split"])
        if "shuffle" in options:
            options["shuffle"] = Boolean()("shuffle", options["shuffle"])
        return options

    # -- class and sample weights (classifier, tagger) ---------------------------------
    def _set_fit_weights(self, class_weight, sample_weight, label_ids, count, plan=None):
        """Keep the training weights for :meth:`_target_weights` (None: none).

        ``label_ids``: the training targets' class ids (a flat array over all
        tokens for the tagger); ``count``: the number of sequences; ``plan``:
        a distributed fit's FitPlan ("balanced" counts every rank's part)."""
        total = plan.context.sum if plan is not None and plan.sharded else None
        class_vector = class_weights(class_weight, self.classes_, label_ids, total)
        if plan is None:
            sample = sample_weights(sample_weight, count)
        else:
            sample = plan.run("checking sample_weight", sample_weights, sample_weight, count)
        self._fit_weights = (None if class_vector is None and sample is None
                             else (class_vector, sample))

    def _raw_target_weights(self, batch, targets):
        """``(weights, counted)`` of a training batch's targets before
        scaling (class weight of each target times the sample weight of its
        sequence; ``counted``: targets >= 0), or None without weights."""
        weights = getattr(self, "_fit_weights", None)
        if weights is None:
            return None
        class_vector, sample = weights
        result = np.ones(targets.shape)
        counted = targets >= 0
        if class_vector is not None:
            result[counted] = class_vector[targets[counted]]
        if sample is not None:
            result *= sample[batch.indices]          # one per sequence: the last axis
        return result, counted

    def _target_weights(self, batch, targets):
        """Weights of a training batch's targets (same shape; ignored targets
        are < 0), or None: the raw weights scaled to mean 1 over the counted
        targets, so the loss is the weighted sum over the sum of the weights."""
        raw = self._raw_target_weights(batch, targets)
        if raw is None:
            return None
        result, counted = raw
        total = result[counted].sum()
        return result * (counted.sum() / total) if total > 0 else result * 0.0

    def _loss_weight(self, batch, targets, count):
        """What the training loss of a batch is divided by: ``count`` (its
        rows or tokens), or with weights the sum of its counted targets'
        weights.  Distributed training scales each rank's gradient by it:
        the ranks then sum to the gradient of the global batch's loss."""
        raw = self._raw_target_weights(batch, targets)
        return count if raw is None else float(raw[0][raw[1]].sum())

    def _set_input_attributes(self, inputs):
        """``n_features_in_`` (scikit-learn's name) for numeric inputs: the
        features per step; text and token inputs have none."""
        if inputs.kind == "numeric":
            self.n_features_in_ = inputs.num_features
        else:
            self.__dict__.pop("n_features_in_", None)

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

    def __sklearn_is_fitted__(self):
        """scikit-learn's fitted test (``check_is_fitted``)."""
        return bool(getattr(self, "is_fitted_", False))

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
        encoder = InputEncoder(self.tokenizer, self.lower, self.min_freq, self.max_vocab)
        encoder.dtype = self.dtype
        return encoder

    def _sequence_encoder(self, inputs, seed):
        """The encoder stack for fitted ``inputs`` (an InputEncoder).

        Models without token inputs (the regressor) have no embedding options;
        the defaults below are then unused.
        """
        inputs.dtype = self.dtype      # also for a loaded model's predict
        kind = network_input(getattr(self, "input", "embedding"), inputs.kind)
        return RecurrentStack(self.cell, kind, inputs.size, self.hidden_size,
                               num_layers=self.num_layers,
                               bidirectional=Boolean()(
                                   "bidirectional", getattr(self, "bidirectional", False)),
                               dropout=self.dropout,
                               embedding_dim=getattr(self, "embedding_dim", None),
                               pretrained=getattr(self, "pretrained", None),
                               vocab=inputs.vocab,
                               cell_options=getattr(self, "cell_options", None),
                               freeze_embedding=Boolean()(
                                   "freeze_embedding",
                                   getattr(self, "freeze_embedding", False)),
                               dtype=self.dtype, seed=seed)

    # -- fitting --------------------------------------------------------------------
    def _loaders(self, inputs, targets, options, validation, per_step_targets=False,
                 plan=None):
        """Training and validation BatchLoaders (validation may be None).

        ``options``: from :meth:`_fit_options` (batch_size, validation_split,
        shuffle).  ``validation`` is already prepared ``(inputs, targets)`` or None.
        ``plan``: the distributed fit's FitPlan; sharded data gives loaders of
        this rank's shard.
        """
        validation_split = options["validation_split"]
        seed = resolve_seed(self.seed)      # data order must be seeded
        shuffle = options["shuffle"]
        options = {"batch_size": options["batch_size"], "per_step_targets": per_step_targets,
                   "shard": None if plan is None else plan.shard}
        train = BatchLoader(inputs, targets, shuffle=shuffle, bucket=shuffle, seed=seed,
                            **options)
        if validation is not None:
            return train, BatchLoader(validation[0], validation[1], shuffle=False, **options)
        if validation_split:
            try:
                return train.split(validation_split)
            except ValueError as exc:
                raise ValueError(f"validation_split={validation_split} cannot split "
                                 f"{len(inputs)} sequences: {exc}") from None
        return train, None

    def _train(self, train, validation, options, callbacks, resume_from, distributed=None):
        """Run the Trainer with ``options`` (from :meth:`_fit_options`); returns
        the model, the history kept as ``history_``.

        ``resume_from``: a training checkpoint (``fr.ModelCheckpoint`` /
        ``Trainer.save_checkpoint``) written by the same fit on the same data
        and seed; training continues from it exactly.

        ``distributed``: the FitPlan of :func:`fastrnn.distributed.shared.fit_plan`
        (None: one process); the vocabulary and labels were built once and
        shared, so they are the same on every rank.
        """
        optimizer = make_optimizer(options["optimizer"], self, options["lr"],
                                   options["weight_decay"])
        trainer = Trainer(self, optimizer, clip_norm=options["clip_norm"],
                          callbacks=callbacks, verbose=options["verbose"],
                          distributed=None if distributed is None else distributed.context)
        self.is_fitted_ = True      # evaluate/predict work during callbacks
        try:
            self.history_ = trainer.fit(train, epochs=options["epochs"],
                                        validation_data=validation, resume_from=resume_from)
        finally:
            self._fit_weights = None     # training only
        self._set_mode(False)
        return self

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
            path: file path (str or os.PathLike; no extension is added) or a
                binary file object open for writing (written with one call).

        Returns ``path``.  The parameters saved are those the model was
        fitted with (see ``set_params``).
        """
        self._check_fitted()
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

    def to_bytes(self):
        """The fitted model as bytes, the content of a file ``save`` writes;
        ``fastrnn.from_bytes`` turns them back into the model."""
        buffer = io.BytesIO()
        self.save(buffer)
        return buffer.getvalue()

    # -- ONNX ----------------------------------------------------------------------------
    def to_onnx(self, path=None):
        """Export the fitted model as an ONNX graph (needs the ``onnx`` package).

        Inputs: ``ids`` int64 (batch, time), batch-first, padded with 0, and
        ``lengths`` int64 (batch); a numeric model takes ``features`` float32
        (batch, time, F) instead of ``ids``.  :meth:`to_ids` makes both.
        Output ``probabilities`` float32 (classifier: batch x classes;
        tagger: batch x time x tags; language model: batch x time x vocab,
        the next-token distribution after each step) or ``values``
        (regressor: as ``predict``, per step batch x time).  Steps past a
        row's length are padding (meaningless values).  The vocabulary,
        labels and configuration travel in ``metadata_props`` as JSON
        (``fastrnn.vocabulary``, ``fastrnn.labels``, ``fastrnn.config``,
        ``fastrnn.fitted``, ``fastrnn.inputs``).

        Args:
            path: file path or binary file object to write, or None.

        Returns the ``onnx.ModelProto``.
        """
        params = _json_params(getattr(self, "_fitted_params", None) or self.get_params())
        return export_model(self, params, path)

    def to_ids(self, X):
        """``(ids, lengths)``: ``X`` as the exported ONNX graph takes it (see
        :meth:`to_onnx`); ``(features, lengths)`` for numeric input.

        Args:
            X: sequences of the kind seen in fit.
        """
        self._check_fitted()
        sequences = self._onnx_sequences(X)
        inputs = getattr(self, "inputs_", None)
        return pad(sequences, numeric=inputs is not None and inputs.kind == "numeric")

    # The output of the exported graph: a key of onnx_export.HEADS (None: no export).
    _onnx_head = None

    def _onnx_sequences(self, X):
        """The id (or feature) sequences of ``X`` the graph reads."""
        return self.inputs_.transform(X)

    def _onnx_inputs(self):
        """How to build the graph's inputs (``fastrnn.inputs`` metadata)."""
        kind = self.inputs_.kind
        if kind == "numeric":
            return {"features": "float32 (batch, time, features), zero padded",
                    "num_features": self.inputs_.num_features}
        return {"ids": "int64 (batch, time), padded with 0 (<pad>)", "kind": kind,
                "tokenizer": self.inputs_.tokenizer, "lower": self.inputs_.lower,
                "unknown_id": 1}

    # -- pickling (pickle, cloudpickle, joblib) ----------------------------------------
    def __getstate__(self):
        """A fitted model pickles as its saved file (``to_bytes``) plus the
        current parameters and ``history_``; unpickling is ``fastrnn.load``, so
        no compiled function is ever pickled.  An unfitted model is its
        parameters alone."""
        state = {"params": self.get_params()}
        if getattr(self, "is_fitted_", False):
            state["model"] = self.to_bytes()
            state["history"] = getattr(self, "history_", None)
        return state

    def __setstate__(self, state):
        if "model" in state:
            self.__dict__.update(from_bytes(state["model"]).__dict__)
            if state["history"] is not None:
                self.history_ = state["history"]
        self.__dict__.update(state["params"])


def label_list(y, count, name="y"):
    """``y`` as a list of ``count`` labels, one per sequence.

    A bare string, unordered containers (set, dict) and arrays that are not
    1-D (one-hot rows, say) are refused: iterating them would not give the
    sequences' labels in order.
    """
    check_targets_given(y, name)
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


def class_weights(class_weight, classes, label_ids, total=None):
    """One weight per class from ``class_weight``: None, "balanced" (n /
    (n_classes * count of the class), scikit-learn's rule) or a dict
    label -> weight (classes not in it weigh 1).  ``total``: sums the class
    counts over the parts of sharded data (all ranks), or None."""
    if class_weight is None:
        return None
    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise ValueError(f"class_weight must be None, 'balanced' or a dict of label -> "
                             f"weight, got {class_weight!r}")
        counts = np.bincount(label_ids, minlength=len(classes)).astype(np.float64)
        if total is not None:
            counts = total(counts)
        return counts.sum() / (len(classes) * np.maximum(counts, 1.0))
    if not isinstance(class_weight, dict):
        raise TypeError(f"class_weight must be None, 'balanced' or a dict of label -> "
                        f"weight, got {type(class_weight).__name__}")
    vector = np.ones(len(classes))
    index = {label: i for i, label in enumerate(classes)}
    for label, weight in class_weight.items():
        if label not in index:
            raise ValueError(f"class_weight has the label {label!r}, which is not in y "
                             f"(labels: {list(classes)!r})")
        vector[index[label]] = Real(low=0)(f"class_weight[{label!r}]", weight)
    return vector


def sample_weights(sample_weight, count):
    """``sample_weight`` as a float64 array of ``count`` weights >= 0 (None stays None)."""
    if sample_weight is None:
        return None
    try:
        array = np.asarray(sample_weight, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"sample_weight must be numbers, one per sequence, got "
                        f"{type(sample_weight).__name__}") from None
    if array.shape != (count,):
        raise ValueError(f"sample_weight must have one weight per sequence: shape "
                         f"({count},), got {array.shape}")
    if not np.isfinite(array).all() or (array < 0).any():
        raise ValueError("sample_weight must be finite and >= 0")
    if not array.any():
        raise ValueError("sample_weight is 0 everywhere: nothing to train on")
    return array


def check_targets_given(y, name="y"):
    """ValueError when the targets are None (scikit-learn's wording)."""
    if y is None:
        raise ValueError(f"this estimator requires y to be passed, but the target y is "
                         f"None ({name})")


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


def fit_labels(y, count, name="y", plan=None):
    """(classes, ids): the distinct labels of ``y`` (see :func:`distinct_labels`)
    and each label's index; ``y`` holds one label per sequence.  ``plan``: a
    distributed fit's FitPlan (the classes are then built once for all ranks)."""
    if plan is None:
        labels = label_list(y, count, name)
        classes = distinct_labels(labels, name)
        return classes, encode_labels(classes, labels, name)
    labels = plan.run(f"reading {name}", label_list, y, count, name)
    classes = plan.labels(labels, lambda values: distinct_labels(values, name))
    ids = plan.run(f"encoding {name}", encode_labels, classes, labels, name)
    plan.check_same(f"the encoded {name}", [ids])
    return classes, ids


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

    Raises FileNotFoundError for a missing file and ValueError naming the
    file for one that is not a fastrnn model, is damaged, exceeds the loader
    limits (``fastrnn.set_load_limits``) or was written by a newer fastrnn.

    Nothing in the file is trusted: the member list and every array header
    are checked against the sizes its settings declare before the layers
    are built or any array is read, and no other file is opened (the
    ``pretrained`` setting is a record: the vectors are in the weights).
    """
    with open_archive(path, MODEL_FORMAT, MODEL_VERSION, "model") as archive:
        model = _build_saved(archive)
        _check_stored_arrays(archive, model)
        for index, module in enumerate(model.modules()):
            state = {name: archive.read(f"{index}/{name}") for name in module.state_names()}
            try:
                module.load_state_dict(state)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"model {archive.path!r}: weights of layer {index} "
                                 f"({type(module).__name__}) do not fit the model: "
                                 f"{exc}") from None
    model.is_fitted_ = True
    model._set_mode(False)
    return model


def from_bytes(data):
    """The task model in ``data``, bytes made by ``model.to_bytes()`` (or the
    content of a saved file); as :func:`load`."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes (from model.to_bytes()), got "
                        f"{type(data).__name__}")
    return load(io.BytesIO(bytes(data)))


def _build_saved(archive):
    """The unfitted model the file's settings describe, its layers no larger
    in total than the arrays the file stores."""
    meta, where = archive.meta, f"model {archive.path!r}"
    missing = [key for key in ("class", "params", "fitted") if key not in meta]
    if missing:
        raise ValueError(f"{where} is missing its {', '.join(missing)} entry")
    name = meta["class"]
    cls = _MODEL_CLASSES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"{where}: unknown model class {name!r}; known: "
                         f"{', '.join(sorted(_MODEL_CLASSES))}")
    params = meta["params"]
    if not isinstance(params, dict):
        raise ValueError(f"{where}: its params entry must be a JSON object, got "
                         f"{type(params).__name__}")
    if "pretrained" in params:
        params = dict(params, pretrained=None)    # a record only: never opened
    stored = sum(math.prod(shape) for key, (shape, _) in archive.headers.items()
                 if key != META_KEY)
    try:
        with parameter_budget(stored):
            model = cls(**params)
            model._restore(meta["fitted"])
    except ParameterBudgetError as exc:
        raise ValueError(f"{where}: its settings declare larger layers than the "
                         f"{stored} weight values it stores ({exc})") from None
    except (TypeError, KeyError, AttributeError, ValueError, IndexError) as exc:
        raise ValueError(f"{where}: the saved {name} settings do not fit this fastrnn "
                         f"({type(exc).__name__}: {exc})") from None
    return model


def _check_stored_arrays(archive, model):
    """The archive's arrays are exactly the model's parameters, shapes equal,
    checked on the headers before any array is read."""
    expected = {f"{index}/{name}": module._params[name].shape
                for index, module in enumerate(model.modules())
                for name in module.state_names()}
    stored = {key: header for key, header in archive.headers.items() if key != META_KEY}
    where = f"model {archive.path!r}"
    if set(stored) != set(expected):
        raise ValueError(f"{where}: its arrays do not match the model: missing "
                         f"{sorted(set(expected) - set(stored))}, unexpected "
                         f"{sorted(set(stored) - set(expected))}")
    for key, shape in expected.items():
        found, dtype = stored[key]
        if found != shape or dtype.kind not in "fiu":
            raise ValueError(f"{where}: array {key!r} must be numbers of shape {shape}, "
                             f"the file stores {dtype} of shape {found}")


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
    if isinstance(value, type) and issubclass(value, optim.Optimizer):
        names = [name for name, cls in OPTIMIZERS.items() if cls is value]
        if names:       # a built-in optimizer class is saved by its name
            return names[0]
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
