"""Many-to-one classification: one label per sequence (e.g. sentiment)."""

import numpy as np

from ..layers import Linear
from ..losses import BCEWithLogitsLoss, CrossEntropyLoss
from .base import (TRAINING_PARAMS, ClassifierMixin, TaskModel, encode_labels, estimator_bases, fit_labels, json_labels, label_array,
                   label_list, validation_pair)
from .._validation import Integer, Options, layer_seeds
from ..distributed.shared import fit_inputs, fit_plan
from .inputs import InputEncoder
from .pooling import Pooling
from .streaming import ClassifierStream


class SequenceClassifier(*estimator_bases(ClassifierMixin), TaskModel):
    """Classify whole sequences: texts, token lists or numeric series.

    An encoder stack (embedding / one-hot / numeric input -> RNN, LSTM or GRU)
    is pooled over time (``pooling``: the final state "last", "mean" or "max"
    over valid steps) and a linear layer gives class scores.  ``output``:
    "softmax" (cross-entropy over the classes) or "sigmoid" (binary tasks: one
    logit, binary cross-entropy).  Labels may be any hashable values that
    sort or not; saved models need str/int/float/bool labels.

    Args:
        cell: "lstm", "gru" or "rnn".
        cell_options: dict of extra recurrent-layer options, e.g.
            {"reset_after": False} (GRU) or {"peepholes": True} (LSTM).
        hidden_size, num_layers, bidirectional, dropout: the recurrent stack
            (dropout between layers and on its output).
        pooling: "last", "mean" or "max" (see above).
        output: "softmax" or "sigmoid" (2 classes only).
        input: "embedding" (learned or ``pretrained`` vectors, optionally
            frozen with ``freeze_embedding``) or "onehot" for tokens; numeric
            inputs need no choice.
        embedding_dim: size of a learned embedding.
        tokenizer, lower, min_freq, max_vocab: how texts are split ("word" or
            "char", casefolded by default) and the vocabulary is built.
        dtype: "float32" or "float64".  seed: None or an int >= 0 for
            reproducible weights, dropout and data order.
        {TRAINING}
        class_weight: None, "balanced" (weights inversely proportional to
            the class frequencies) or a dict label -> weight; training only.

    A scikit-learn classifier when scikit-learn is installed (``clone``,
    ``Pipeline``, ``GridSearchCV`` over any parameter above, ``cross_val_score``).

    Example::

        clf = fr.SequenceClassifier(cell="gru", hidden_size=64, epochs=5)
        clf.fit(["great film", "dull plot"], ["pos", "neg"])
        clf.predict(["great plot"])            # -> array(['pos'], ...)
    """

    _training_params = TRAINING_PARAMS + ("class_weight",)

    def __init__(self, cell="lstm", hidden_size=64, num_layers=1, bidirectional=False,
                 dropout=0.0, pooling="last", output="softmax", input="embedding",
                 embedding_dim=64, pretrained=None, freeze_embedding=False,
                 tokenizer="word", lower=True, min_freq=1, max_vocab=None,
                 cell_options=None,
                 dtype="float32", seed=None, epochs=10, batch_size=32, optimizer="adam",
                 lr=None, weight_decay=None, clip_norm=None, validation_split=0.0,
                 shuffle=True, verbose=1, class_weight=None):
        self._store_params(locals())

    # -- building -------------------------------------------------------------------
    def _build(self, inputs, classes):
        self._begin_build()
        Options(("softmax", "sigmoid"))("output", self.output)
        if self.output == "sigmoid" and len(classes) != 2:
            raise ValueError(f"output='sigmoid' is for 2 classes; y has {len(classes)} "
                             f"(use output='softmax')")
        network_seed, head_seed = layer_seeds(self.seed, 2)
        self.inputs_ = inputs
        self._set_input_attributes(inputs)
        self.classes_ = list(classes)
        self.network_ = self._sequence_encoder(inputs, network_seed)
        self.pool_ = Pooling(self.pooling, bool(self.bidirectional))
        outputs = 1 if self.output == "sigmoid" else len(classes)
        self.head_ = Linear(self.network_.output_size, outputs, dtype=self.dtype,
                            seed=head_seed)
        self.loss_ = BCEWithLogitsLoss() if self.output == "sigmoid" else CrossEntropyLoss()
        self._sigmoid = self.output == "sigmoid"


    # -- Trainer protocol -------------------------------------------------------------
    def _logits(self, batch):
        out, h_n = self.network_.forward(batch.inputs, batch.lengths)
        return self.head_(self.pool_.forward(out, h_n, batch.lengths))

    def _loss(self, logits, labels, weights=None):
        if self._sigmoid:
            loss = self.loss_ if weights is None else BCEWithLogitsLoss(weight=weights[:, None])
            return loss(logits, labels[:, None].astype(logits.dtype))
        return self.loss_(logits, labels, sample_weight=weights)

    def _predicted_ids(self, logits):
        if self._sigmoid:
            return (logits[:, 0] > 0).astype(np.int64)
        return logits.argmax(axis=1)

    def batch_weight(self, batch):
        """Trainer protocol: what the loss of ``batch`` is divided by (its
        sequences, or the sum of their class and sample weights), known
        before the backward pass (distributed training overlaps with it)."""
        return self._loss_weight(batch, batch.targets, len(batch.lengths))

    def train_batch(self, batch):
        """Trainer protocol: forward, backward, ``({"loss", "accuracy"}, batch size)``."""
        logits = self._logits(batch)
        loss, d_logits = self._loss(logits, batch.targets,
                                    self._target_weights(batch, batch.targets))
        d_out, d_hn = self.pool_.backward(self.head_.backward(d_logits))
        self.network_.backward(d_out, d_hn, state_grad=False)
        accuracy = float(np.mean(self._predicted_ids(logits) == batch.targets))
        return {"loss": loss, "accuracy": accuracy}, len(batch.lengths)

    def evaluate_batch(self, batch):
        """Trainer protocol: loss and accuracy of a batch, no gradients."""
        logits = self._logits(batch)
        loss, _ = self._loss(logits, batch.targets)
        accuracy = float(np.mean(self._predicted_ids(logits) == batch.targets))
        return {"loss": loss, "accuracy": accuracy}, len(batch.lengths)

    # -- public API -------------------------------------------------------------------
    def fit(self, X, y, epochs=None, batch_size=None, validation_data=None,
            validation_split=None, callbacks=None, verbose=None, optimizer=None, lr=None,
            clip_norm=None, weight_decay=None, resume_from=None, shuffle=None,
            class_weight=None, sample_weight=None, distributed=False):
        """Train on sequences ``X`` and one label per sequence ``y``; returns
        the model, with the :class:`fastrnn.training.History` (per-sequence
        "loss" and "accuracy", and ``val_*``) in ``history_``.

        Args:
            X: texts, token lists, or numeric sequences ((N, T, F) / (N, T)
                array or a list of (T_i, F) / (T_i,) arrays); any iterable.
            y: one hashable label per sequence (at least 2 distinct).
            validation_data: ``(X_val, y_val)`` scored after every epoch
                (takes precedence over ``validation_split``); its labels
                must be ones seen in ``y``.
            callbacks, resume_from, distributed: as ``fr.Trainer``.
            epochs, batch_size, validation_split, verbose, optimizer, lr,
                clip_norm, weight_decay, shuffle, class_weight: override the
                constructor's settings for this call (None: use them).
                validation_split: fraction in [0, 1) of the sequences held
                out (a seeded random choice).
            sample_weight: None or one weight >= 0 per sequence.  Training
                losses are weighted by sample and class weights (a weighted
                mean per batch); validation scores are not.
        """
        options = self._fit_options(epochs=epochs, batch_size=batch_size,
                                    validation_split=validation_split, verbose=verbose,
                                    optimizer=optimizer, lr=lr, clip_norm=clip_norm,
                                    weight_decay=weight_decay, shuffle=shuffle,
                                    class_weight=class_weight)
        plan = fit_plan(distributed)
        inputs = self._input_encoder()
        sequences = fit_inputs(plan, inputs, X)
        classes, targets = fit_labels(y, len(sequences), plan=plan)
        self._build(inputs, classes)
        self._set_fit_weights(options["class_weight"], sample_weight, targets, len(targets),
                              plan)
        validation = None
        if validation_data is not None:
            X_val, y_val = validation_pair(validation_data)
            val_sequences = inputs.transform(X_val, "validation_data[0]")
            y_val = label_list(y_val, len(val_sequences), "validation_data[1]")
            validation = (val_sequences,
                          encode_labels(self.classes_, y_val, "validation_data[1]"))
        train, held_out = self._loaders(sequences, targets, options, validation, plan=plan)
        return self._train(train, held_out, options, callbacks, resume_from, plan)

    def predict_proba(self, X, batch_size=256):
        """Class probabilities: a float64 array (N, n_classes), columns in
        ``classes_`` order, rows in the order of ``X``.

        Args:
            X: sequences of the kind seen in fit (at least one).
            batch_size: sequences per forward pass (memory, not results).
        """
        self._check_fitted()
        Integer(low=1)("batch_size", batch_size)
        sequences = self.inputs_.transform(X)
        probabilities = np.empty((len(sequences), len(self.classes_)))
        for batch in self._batches(sequences, batch_size):
            logits = self._logits(batch).astype(np.float64)
            if self._sigmoid:
                # sigmoid(+-z) = exp(-log(1 + exp(-+z))): no overflow for large |z|.
                z = logits[:, 0]
                probabilities[batch.indices] = np.exp(-np.logaddexp(0.0, np.stack([z, -z], 1)))
            else:
                shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
                probabilities[batch.indices] = shifted / shifted.sum(axis=1, keepdims=True)
        return probabilities

    def predict(self, X, batch_size=256):
        """The most probable label of each sequence: a 1-D array (N,) of the
        labels themselves (numpy's dtype when it keeps them exactly, else
        object).

        Args:
            X, batch_size: as in :meth:`predict_proba`.
        """
        ids = self.predict_proba(X, batch_size).argmax(axis=1)
        return label_array(self.classes_)[ids]

    def score(self, X, y, batch_size=256):
        """Accuracy of ``predict(X)`` against ``y``: a float in [0, 1].

        Args:
            X: sequences of the kind seen in fit.
            y: one label per sequence.  A label not seen in fit counts as
                a wrong prediction (the model can never predict it).
            batch_size: as in :meth:`predict_proba`.
        """
        predicted = self.predict_proba(X, batch_size).argmax(axis=1)
        labels = label_list(y, len(predicted), "y")
        truth = encode_labels(self.classes_, labels, "y", strict=False)
        return float(np.mean(predicted == truth))

    def stream(self):
        """A :class:`~fastrnn.tasks.streaming.ClassifierStream`: ``step(item)``
        returns the class probabilities of the sequence so far (what
        ``predict_proba`` gives for the prefix).  Unidirectional models only."""
        return ClassifierStream(self)

    # -- saving -----------------------------------------------------------------------
    _onnx_head = "classifier"         # its ONNX graph output (tasks.onnx_export.HEADS)

    def _fitted_state(self):
        return {"inputs": self.inputs_.to_dict(),
                "classes": json_labels(self.classes_, "labels")}

    def _restore(self, state):
        self._build(InputEncoder.from_dict(state["inputs"]), state["classes"])

