"""Sequence regression: numbers per sequence (many-to-one) or per step."""

import numpy as np

from ..layers import Linear
from ..losses import MSELoss
from .base import (HAVE_SKLEARN, RegressorMixin, TaskModel,
                   check_targets_given, estimator_bases, validation_pair)
from .._validation import Boolean, Integer, layer_seeds
from ..distributed.shared import fit_inputs, fit_plan
from .inputs import InputEncoder
from .pooling import Pooling
from .streaming import RegressorStream


class SequenceRegressor(*estimator_bases(RegressorMixin), TaskModel):
    """Predict a value or vector from numeric sequences, trained with MSE.

    ``per_step=False``: one target per sequence, ``y`` of shape (N,) or (N, K)
    (the encoder's output is pooled with ``pooling``).  ``per_step=True``: a
    target at every step, ``y`` a list of (T_i,) or (T_i, K) arrays as long as
    the inputs (forecasting the next value, smoothing, ...).
    Inputs are (N, T, F) arrays or lists of (T_i, F) / (T_i,) arrays.  Feature
    and target scaling is the caller's: standardise both (for example to mean
    0 and variance 1) — recurrent nets train poorly on raw large values.

    Args:
        cell: "lstm", "gru" or "rnn".
        cell_options: dict of extra recurrent-layer options, e.g.
            {"reset_after": False} (GRU) or {"peepholes": True} (LSTM).
        hidden_size, num_layers, bidirectional, dropout: the recurrent stack
            (dropout between layers and on its output).
        per_step: True for a target at every step (see above).
        pooling: "last", "mean" or "max" over time (per_step=False only).
        dtype: "float32" or "float64".  seed: None or an int >= 0 for
            reproducible weights, dropout and data order.
        {TRAINING}

    A scikit-learn regressor when scikit-learn is installed.  ``n_features_in_``
    is the number of features per step (1 for an (N, T) array: N univariate
    series of T steps; any length T is accepted at prediction).

    Example::

        reg = fr.SequenceRegressor(hidden_size=32, epochs=20)
        reg.fit(windows, next_values)                 # windows (N, T, 1)
        reg.predict(windows[:5])                      # -> (5,)
    """

    def __init__(self, cell="lstm", hidden_size=64, num_layers=1, bidirectional=False,
                 dropout=0.0, per_step=False, pooling="last", cell_options=None,
                 dtype="float32", seed=None,
                 epochs=10, batch_size=32, optimizer="adam", lr=None, weight_decay=None,
                 clip_norm=None, validation_split=0.0, shuffle=True, verbose=1):
        self._store_params(locals())

    if HAVE_SKLEARN:
        def __sklearn_tags__(self):
            """Numeric series only: (N, T) and (N, T, F) arrays; several outputs."""
            tags = super().__sklearn_tags__()
            tags.input_tags.string = False
            tags.input_tags.two_d_array = True
            tags.input_tags.three_d_array = True
            tags.target_tags.multi_output = True
            tags.regressor_tags.poor_score = True     # a few epochs of a small net
            return tags

    # -- building -------------------------------------------------------------------
    def _build(self, inputs, target_size, target_is_vector):
        self._begin_build()
        self._per_step = Boolean()("per_step", self.per_step)
        network_seed, head_seed = layer_seeds(self.seed, 2)
        self.inputs_ = inputs
        self._set_input_attributes(inputs)
        self.n_outputs_ = target_size
        self.target_is_vector_ = target_is_vector
        self.network_ = self._sequence_encoder(inputs, network_seed)
        self.pool_ = None if self._per_step else Pooling(self.pooling, self.bidirectional)
        self.head_ = Linear(self.network_.output_size, target_size, dtype=self.dtype,
                            seed=head_seed)
        self.loss_ = MSELoss()


    def _targets(self, y, sequences, name="y", per_step=None):
        """Targets as 2-D arrays: (N, K) per sequence, or a list of (T_i, K).

        ``per_step``: the layout to read (default: the fitted model's)."""
        check_targets_given(y, name)
        if per_step is None:
            per_step = self._per_step
        if not per_step:
            array = _float_array(y, name)
            if array.ndim not in (1, 2) or array.shape[0] != len(sequences):
                raise ValueError(f"{name} must have shape (N,) or (N, K) with N = "
                                 f"{len(sequences)} sequences, got {array.shape}")
            if not np.isfinite(array).all():
                raise ValueError(f"{name} contains NaN or infinite values")
            return array.reshape(len(sequences), -1), array.ndim == 2
        items = list(y)
        if len(items) != len(sequences):
            raise ValueError(f"{name} must have one target sequence per input: "
                             f"{len(sequences)} inputs but {len(items)} targets")
        targets, vector = [], False
        for index, (item, sequence) in enumerate(zip(items, sequences)):
            array = _float_array(item, f"{name}[{index}]")
            if array.ndim not in (1, 2):
                raise ValueError(f"{name}[{index}] must be a (T,) or (T, K) array of "
                                 f"per-step targets (per_step=True), got shape {array.shape}")
            vector = array.ndim == 2
            array = array.reshape(array.shape[0], -1)
            if array.shape[0] != sequence.shape[0]:
                raise ValueError(f"{name}[{index}] has {array.shape[0]} steps but its input "
                                 f"has {sequence.shape[0]}")
            if not np.isfinite(array).all():
                raise ValueError(f"{name}[{index}] contains NaN or infinite values")
            targets.append(array)
        widths = {t.shape[1] for t in targets}
        if len(widths) != 1:
            raise ValueError(f"{name}: every step needs the same number of values, got "
                             f"{sorted(widths)}")
        return targets, vector

    # -- Trainer protocol -------------------------------------------------------------
    def _predict_batch(self, batch):
        out, h_n = self.network_.forward(batch.inputs, batch.lengths)
        if self._per_step:
            return self.head_(out)
        return self.head_(self.pool_.forward(out, h_n, batch.lengths))

    def _mask(self, batch):
        if not self._per_step:
            return None
        return np.arange(batch.inputs.shape[0])[:, None] < batch.lengths[None, :]

    def batch_weight(self, batch):
        """Trainer protocol: what the loss of ``batch`` averages over, known
        before the backward pass (distributed training then overlaps the
        gradient reduction with it): sequences, or real steps with ``per_step``."""
        return int(self._mask(batch).sum()) if self._per_step else len(batch.lengths)

    def train_batch(self, batch):
        """Trainer protocol: forward, backward, ``({"loss"}, batch_weight)``."""
        predictions = self._predict_batch(batch)
        loss, d_predictions = self.loss_(predictions, batch.targets, mask=self._mask(batch))
        d_hidden = self.head_.backward(d_predictions)
        if self._per_step:
            self.network_.backward(d_hidden, state_grad=False)
        else:
            self.network_.backward(*self.pool_.backward(d_hidden), state_grad=False)
        return {"loss": loss}, self.batch_weight(batch)

    def evaluate_batch(self, batch):
        """Trainer protocol: the MSE of a batch, no gradients."""
        predictions = self._predict_batch(batch)
        loss, _ = self.loss_(predictions, batch.targets, mask=self._mask(batch))
        return {"loss": loss}, self.batch_weight(batch)

    # -- public API -------------------------------------------------------------------
    def fit(self, X, y, epochs=None, batch_size=None, validation_data=None,
            validation_split=None, callbacks=None, verbose=None, optimizer=None, lr=None,
            clip_norm=None, weight_decay=None, resume_from=None, shuffle=None,
            distributed=False):
        """Train with mean squared error; returns the model, with the History
        ("loss", the MSE per value; and ``val_loss``) in ``history_``.

        Args:
            X: numeric sequences: an (N, T, F) or (N, T) array, or a list of
                (T_i, F) / (T_i,) arrays; any iterable.
            y: per_step=False: (N,) or (N, K) numbers.  per_step=True: one
                (T_i,) or (T_i, K) array per sequence, as long as it.
            epochs, batch_size, validation_data, validation_split, callbacks,
                verbose, optimizer, lr, clip_norm, weight_decay, resume_from,
                shuffle, distributed: as in ``SequenceClassifier.fit``.
        """
        options = self._fit_options(epochs=epochs, batch_size=batch_size,
                                    validation_split=validation_split, verbose=verbose,
                                    optimizer=optimizer, lr=lr, clip_norm=clip_norm,
                                    weight_decay=weight_decay, shuffle=shuffle)
        per_step = Boolean()("per_step", self.per_step)
        plan = fit_plan(distributed)
        inputs = InputEncoder()
        inputs.dtype = self.dtype       # values beyond it are refused as "X"
        sequences = fit_inputs(plan, inputs, X)
        if inputs.kind != "numeric":
            raise TypeError(f"X must be numeric sequences for a SequenceRegressor, got "
                            f"{inputs.kind} (use a SequenceClassifier for text)")
        targets, vector = self._targets(y, sequences, per_step=per_step)
        width = targets[0].shape[1] if per_step else targets.shape[1]
        self._build(inputs, width, vector)
        validation = None
        if validation_data is not None:
            X_val, y_val = validation_pair(validation_data)
            val_sequences = inputs.transform(X_val, "validation_data[0]")
            val_targets = self._targets(y_val, val_sequences, "validation_data[1]")[0]
            val_width = val_targets[0].shape[1] if per_step else val_targets.shape[1]
            if val_width != width:
                raise ValueError(f"validation_data[1] has {val_width} value(s) per target "
                                 f"but y has {width}")
            validation = (val_sequences, val_targets)
        train, held_out = self._loaders(sequences, targets, options, validation,
                                        per_step_targets=per_step, plan=plan)
        return self._train(train, held_out, options, callbacks, resume_from, plan)

    def predict(self, X, batch_size=256):
        """Predicted values, float64: per sequence an (N,) array, or (N, K)
        when ``y`` in fit was 2-D; per step a list of (T_i,) or (T_i, K)
        arrays.  Rows follow the order of ``X``.

        Args:
            X: numeric sequences with the feature count seen in fit.
            batch_size: sequences per forward pass (memory, not results).
        """
        self._check_fitted()
        Integer(low=1)("batch_size", batch_size)
        sequences = self.inputs_.transform(X)
        results = [None] * len(sequences)
        for batch in self._batches(sequences, batch_size):
            predictions = self._predict_batch(batch).astype(np.float64)
            for column, row in enumerate(batch.indices):
                value = (predictions[:batch.lengths[column], column] if self._per_step
                         else predictions[column])
                results[row] = value if self.target_is_vector_ else value[..., 0]
        return results if self._per_step else np.stack(results)

    def score(self, X, y, batch_size=256):
        """Coefficient of determination R^2 of ``predict(X)``: a float,
        1 - SS_res / SS_tot over all predicted values (every step of every
        sequence with per_step), each output column centred on its own mean
        (scikit-learn's "variance_weighted" for several outputs).  0.0 when
        ``y`` is constant.

        Args:
            X: numeric sequences; y: targets laid out as in ``fit``.
            batch_size: as in :meth:`predict`.
        """
        self._check_fitted()
        sequences = self.inputs_.transform(X)
        targets, _ = self._targets(y, sequences)
        predicted = self.predict(sequences, batch_size)
        if self._per_step:
            predicted = np.concatenate([np.reshape(p, (len(p), -1)) for p in predicted])
            targets = np.concatenate(targets)
        truth = np.reshape(targets, (len(targets), -1))
        if truth.shape[1] != self.n_outputs_:
            raise ValueError(f"y has {truth.shape[1]} value(s) per target but the model "
                             f"predicts {self.n_outputs_}")
        predicted = np.reshape(predicted, truth.shape)
        residual = ((truth - predicted) ** 2).sum()
        total = ((truth - truth.mean(axis=0)) ** 2).sum()
        return float(1.0 - residual / total) if total > 0 else 0.0

    # -- saving -----------------------------------------------------------------------
    def stream(self):
        """A :class:`~fastrnn.tasks.streaming.RegressorStream`: ``step(features)``
        returns this step's value (per_step=True) or the prefix's value, as
        ``predict`` gives.  Unidirectional models only."""
        return RegressorStream(self)

    _onnx_head = "regressor"         # its ONNX graph output (tasks.onnx_export.HEADS)

    def _fitted_state(self):
        return {"inputs": self.inputs_.to_dict(), "n_outputs": self.n_outputs_,
                "target_is_vector": self.target_is_vector_}

    def _restore(self, state):
        self._build(InputEncoder.from_dict(state["inputs"]), state["n_outputs"],
                    state["target_is_vector"])


def _float_array(value, name):
    """``value`` as a float64 array; ragged or non-numeric input is a ValueError."""
    try:
        return np.asarray(value, dtype=np.float64)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name} must be numbers forming a regular array: {exc}") from None
