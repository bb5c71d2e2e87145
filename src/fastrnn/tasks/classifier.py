"""Many-to-one classification: one label per sequence (e.g. sentiment)."""

import numpy as np

from ..layers import Linear
from ..losses import BCEWithLogitsLoss, CrossEntropyLoss
from .base import (TaskModel, encode_labels, fit_labels, json_labels, label_array,
                   validation_pair)
from .inputs import InputEncoder, check_count
from .network import Pooling, check_choice, layer_seeds


class SequenceClassifier(TaskModel):
    """Classify whole sequences: texts, token lists or numeric series.

    An encoder stack (embedding / one-hot / numeric input -> RNN, LSTM or GRU)
    is pooled over time (``pooling``: the final state "last", "mean" or "max"
    over valid steps) and a linear layer gives class scores.  ``output``:
    "softmax" (cross-entropy over the classes) or "sigmoid" (binary tasks: one
    logit, binary cross-entropy).  Labels may be any hashable values that
    sort or not; saved models need str/int/float/bool labels.

    Example::

        clf = fr.SequenceClassifier(cell="gru", hidden_size=64)
        clf.fit(["great film", "dull plot"], ["pos", "neg"], epochs=5)
        clf.predict(["great plot"])            # -> array(['pos'], ...)
    """

    def __init__(self, cell="lstm", hidden_size=64, num_layers=1, bidirectional=False,
                 dropout=0.0, pooling="last", output="softmax", input="embedding",
                 embedding_dim=64, pretrained=None, freeze_embedding=False,
                 tokenizer="word", lower=True, min_freq=1, max_vocab=None,
                 dtype="float32", seed=None):
        self._store_params(locals())

    # -- building -------------------------------------------------------------------
    def _build(self, inputs, classes):
        check_choice("output", self.output, ("softmax", "sigmoid"))
        if self.output == "sigmoid" and len(classes) != 2:
            raise ValueError(f"output='sigmoid' is for 2 classes; y has {len(classes)} "
                             f"(use output='softmax')")
        network_seed, head_seed = layer_seeds(self.seed, 2)
        self.is_fitted_ = False     # a refit that fails from here on leaves no stale model
        self.inputs_ = inputs
        self.classes_ = list(classes)
        self.network_ = self._sequence_encoder(inputs, network_seed)
        self.pool_ = Pooling(self.pooling, bool(self.bidirectional))
        outputs = 1 if self.output == "sigmoid" else len(classes)
        self.head_ = Linear(self.network_.output_size, outputs, dtype=self.dtype,
                            seed=head_seed)
        self.loss_ = BCEWithLogitsLoss() if self.output == "sigmoid" else CrossEntropyLoss()

    def modules(self):
        return self.network_.modules() + [self.head_]

    # -- Trainer protocol -------------------------------------------------------------
    def _logits(self, batch):
        out, h_n = self.network_.forward(batch.inputs, batch.lengths)
        return self.head_(self.pool_.forward(out, h_n, batch.lengths))

    def _loss(self, logits, labels):
        if self.output == "sigmoid":
            return self.loss_(logits, labels[:, None].astype(logits.dtype))
        return self.loss_(logits, labels)

    def _predicted_ids(self, logits):
        if self.output == "sigmoid":
            return (logits[:, 0] > 0).astype(np.int64)
        return logits.argmax(axis=1)

    def train_batch(self, batch):
        logits = self._logits(batch)
        loss, d_logits = self._loss(logits, batch.targets)
        d_out, d_hn = self.pool_.backward(self.head_.backward(d_logits))
        self.network_.backward(d_out, d_hn)
        accuracy = float(np.mean(self._predicted_ids(logits) == batch.targets))
        return {"loss": loss, "accuracy": accuracy}, len(batch.lengths)

    def evaluate_batch(self, batch):
        logits = self._logits(batch)
        loss, _ = self._loss(logits, batch.targets)
        accuracy = float(np.mean(self._predicted_ids(logits) == batch.targets))
        return {"loss": loss, "accuracy": accuracy}, len(batch.lengths)

    # -- public API -------------------------------------------------------------------
    def fit(self, X, y, epochs=10, batch_size=32, validation_data=None,
            validation_split=0.0, callbacks=None, verbose=1, optimizer="adam", lr=None,
            clip_norm=None, weight_decay=None, resume_from=None):
        """Train on sequences ``X`` and one label per sequence ``y``; returns the
        History (also kept as ``history_``).  Keras keywords: ``validation_data``
        = (X_val, y_val) or ``validation_split`` (a fraction held out)."""
        check_count("epochs", epochs)
        check_count("batch_size", batch_size)
        inputs = self._input_encoder().fit(X)
        sequences = inputs.transform(X)
        classes, targets = fit_labels(y, len(sequences))
        self._build(inputs, classes)
        validation = None
        if validation_data is not None:
            X_val, y_val = validation_pair(validation_data)
            val_sequences = inputs.transform(X_val, "validation_data[0]")
            y_val = list(y_val)
            if len(y_val) != len(val_sequences):
                raise ValueError(f"validation_data[1] must have one label per sequence: "
                                 f"{len(val_sequences)} sequences but {len(y_val)} labels")
            validation = (val_sequences,
                          encode_labels(self.classes_, y_val, "validation_data[1]"))
        train, held_out = self._loaders(sequences, targets, batch_size, validation,
                                        validation_split)
        return self._train(train, held_out, epochs, callbacks, verbose, optimizer, lr,
                           clip_norm, weight_decay, resume_from)

    def predict_proba(self, X, batch_size=256):
        """Class probabilities (N, n_classes), columns in ``classes_`` order."""
        self._check_fitted()
        sequences = self.inputs_.transform(X)
        probabilities = np.empty((len(sequences), len(self.classes_)))
        for batch in self._batches(sequences, batch_size):
            logits = self._logits(batch).astype(np.float64)
            if self.output == "sigmoid":
                # sigmoid(+-z) = exp(-log(1 + exp(-+z))): no overflow for large |z|.
                z = logits[:, 0]
                probabilities[batch.indices] = np.exp(-np.logaddexp(0.0, np.stack([z, -z], 1)))
            else:
                shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
                probabilities[batch.indices] = shifted / shifted.sum(axis=1, keepdims=True)
        return probabilities

    def predict(self, X, batch_size=256):
        """The most probable label of each sequence."""
        ids = self.predict_proba(X, batch_size).argmax(axis=1)
        return label_array(self.classes_)[ids]

    def score(self, X, y):
        """Accuracy of ``predict(X)`` against ``y``; every label in ``y`` must be
        one seen in fit (ValueError otherwise)."""
        predicted = self.predict_proba(X).argmax(axis=1)
        labels = list(y)
        if len(labels) != len(predicted):
            raise ValueError(f"y must have one label per sequence: {len(predicted)} "
                             f"sequences but {len(labels)} labels")
        return float(np.mean(predicted == encode_labels(self.classes_, labels, "y")))

    # -- saving -----------------------------------------------------------------------
    def _fitted_state(self):
        return {"inputs": self.inputs_.to_dict(), "classes": json_labels(self.classes_)}

    def _restore(self, state):
        self._build(InputEncoder.from_dict(state["inputs"]), state["classes"])

