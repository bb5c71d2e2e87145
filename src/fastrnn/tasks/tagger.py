"""Many-to-many tagging: one tag per token (named entities, part of speech, chunks)."""

import numpy as np

from ..layers import Linear
from ..losses import CrossEntropyLoss
from ..metrics import entity_scores, token_accuracy
from .base import TRAINING_PARAMS, TaskModel, distinct_labels, encode_labels, json_labels, validation_pair
from .._validation import Integer, layer_seeds
from ..distributed.shared import fit_inputs, fit_plan
from .inputs import InputEncoder, as_sequences, check_nonempty
from .streaming import TaggerStream

IGNORE = -100   # padded steps' target: CrossEntropyLoss's ignore_index, BatchLoader's fill


class SequenceTagger(TaskModel):
    """Tag every token of a sequence: NER with BIO tags, POS tagging, chunking.

    An encoder stack (embedding / one-hot / numeric input -> RNN, LSTM or GRU,
    bidirectional by default so each tag sees both sides of its token) feeds
    a linear layer at every step; training minimises the cross-entropy over
    real tokens only (padding is ignored).  Inputs are token lists, or texts
    split by ``tokenizer`` (then the tags must align with *those* tokens),
    or numeric sequences.  Tags may be any hashable values (strings are
    typical); saved models need str/int/float/bool tags.  Words not seen in
    training map to ``<unk>``; with ``min_freq=2`` words seen once are
    ``<unk>`` too, so the model learns to tag unknown words from context.

    ``score`` reports token accuracy and entity precision/recall/F1 (see
    :mod:`fastrnn.metrics`: conlleval's rule for BIO tags, runs of equal tags
    otherwise).

    Args:
        cell: "lstm", "gru" or "rnn".
        cell_options: dict of extra recurrent-layer options, e.g.
            {"reset_after": False} (GRU) or {"peepholes": True} (LSTM).
        hidden_size, num_layers, bidirectional, dropout: the recurrent stack
            (dropout between layers and on its output).
        input: "embedding" (learned or ``pretrained`` vectors, optionally
            frozen with ``freeze_embedding``) or "onehot" for tokens; numeric
            inputs need no choice.
        embedding_dim: size of a learned embedding.
        tokenizer, lower, min_freq, max_vocab: how texts are split and the
            vocabulary is built.  ``lower`` is False by default: capital
            letters matter for names.
        dtype: "float32" or "float64".  seed: None or an int >= 0 for
            reproducible weights, dropout and data order.
        {TRAINING}
        class_weight: None, "balanced" (weights inversely proportional to
            the tag frequencies over all tokens) or a dict tag -> weight;
            training only.

    Example::

        tagger = fr.SequenceTagger(hidden_size=64)
        tagger.fit([["Ann", "lives", "in", "Rome"]], [["B-PER", "O", "O", "B-LOC"]])
        tagger.predict([["Bob", "lives", "in", "Oslo"]])
        # -> [['B-PER', 'O', 'O', 'B-LOC']]
    """

    _training_params = TRAINING_PARAMS + ("class_weight",)

    def __init__(self, cell="lstm", hidden_size=64, num_layers=1, bidirectional=True,
                 dropout=0.0, input="embedding", embedding_dim=64, pretrained=None,
                 freeze_embedding=False, tokenizer="word", lower=False, min_freq=1,
                 max_vocab=None, cell_options=None,
                 dtype="float32", seed=None, epochs=10, batch_size=32,
                 optimizer="adam", lr=None, weight_decay=None, clip_norm=None,
                 validation_split=0.0, shuffle=True, verbose=1, class_weight=None):
        self._store_params(locals())

    # -- building -------------------------------------------------------------------
    def _build(self, inputs, classes):
        self._begin_build()
        network_seed, head_seed = layer_seeds(self.seed, 2)
        self.inputs_ = inputs
        self._set_input_attributes(inputs)
        self.classes_ = list(classes)
        self._class_array = np.empty(len(self.classes_), dtype=object)
        self._class_array[:] = self.classes_
        self.network_ = self._sequence_encoder(inputs, network_seed)
        self.head_ = Linear(self.network_.output_size, len(self.classes_), dtype=self.dtype,
                            seed=head_seed)
        self.loss_ = CrossEntropyLoss(ignore_index=IGNORE)


    # -- input checks ---------------------------------------------------------------
    @staticmethod
    def _tag_ids(y, sequences, text, name="y", classes=None):
        """``(classes, ids)``: the tag set and per-sentence int64 tag ids,
        checked against the token counts.

        ``text``: the sentences were texts (messages mention tokenization).
        ``classes`` None (at fit): the tag set is built from ``y`` with the
        label rules every model shares (:func:`~fastrnn.tasks.base.distinct_labels`);
        else tags must be among ``classes``.
        """
        checked = _aligned_tags(y, [len(s) for s in sequences], name, text)
        flat = [tag for tags in checked for tag in tags]
        lengths = np.array([len(tags) for tags in checked], dtype=np.int64)
        ends = np.cumsum(lengths)

        def where(k):
            sentence = int(np.searchsorted(ends, k, side="right"))
            return f"[{sentence}][{k - (ends[sentence] - lengths[sentence])}]"

        if classes is None:
            classes = distinct_labels(flat, name, "tags", where)
        ids = encode_labels(classes, flat, name, "tags", where)
        return classes, np.split(ids, ends[:-1])

    def _shared_tag_ids(self, plan, y, sequences, text):
        """:meth:`_tag_ids` of a distributed fit: the tag set built once for
        every rank (``plan``: the FitPlan), then this rank's tags encoded."""
        lengths = [len(s) for s in sequences]
        flat = plan.run("reading y", lambda: [
            tag for tags in _aligned_tags(y, lengths, "y", text) for tag in tags])
        classes = plan.labels(flat, lambda tags: distinct_labels(tags, "y", "tags"), "tags")
        classes, ids = plan.run("encoding y", self._tag_ids, y, sequences, text, "y", classes)
        plan.check_same("the encoded y", ids)
        return classes, ids

    def _sequences(self, X, name="X"):
        """``X`` as the fitted encoder's id or feature sequences."""
        X = as_sequences(X)
        check_nonempty(X, name, "sentence")
        return self.inputs_.transform(X, name)

    _onnx_sequences = _sequences

    # -- Trainer protocol -------------------------------------------------------------
    def _logits(self, batch):
        out, _ = self.network_.forward(batch.inputs, batch.lengths)
        return self.head_(out)                                   # (T, B, n_tags)

    def _step(self, batch, training):
        """Loss (and gradients when training) over the real tokens of a batch."""
        logits = self._logits(batch)
        weights = self._target_weights(batch, batch.targets) if training else None
        loss, d_logits = self.loss_(logits, batch.targets, sample_weight=weights)
        if training:
            self.network_.backward(self.head_.backward(d_logits), state_grad=False)
        real = batch.targets != IGNORE
        tokens = int(real.sum())
        correct = int(((logits.argmax(axis=2) == batch.targets) & real).sum())
        # Weighted by tokens, so epoch averages are per-token loss and accuracy.
        return {"loss": loss, "accuracy": correct / tokens}, tokens

    def batch_weight(self, batch):
        """Trainer protocol: what the loss of ``batch`` is divided by (its real
        tokens, or the sum of their class and sample weights), known before
        the backward pass (distributed training overlaps with it)."""
        return self._loss_weight(batch, batch.targets, int((batch.targets != IGNORE).sum()))

    def train_batch(self, batch):
        """Trainer protocol: train on ``batch``; ``({"loss", "accuracy"}, real
        tokens)``, per token."""
        return self._step(batch, training=True)

    def evaluate_batch(self, batch):
        """Trainer protocol: per-token loss and accuracy of a batch, no gradients."""
        return self._step(batch, training=False)

    # -- public API -------------------------------------------------------------------
    def fit(self, X, y, epochs=None, batch_size=None, validation_data=None,
            validation_split=None, callbacks=None, verbose=None, optimizer=None, lr=None,
            clip_norm=None, weight_decay=None, resume_from=None, shuffle=None,
            class_weight=None, sample_weight=None, distributed=False):
        """Train on sentences ``X`` and their tags ``y``; returns the model.

        Args:
            X: token lists, texts (split by ``tokenizer``) or numeric
                sequences; any iterable.
            y: one tag list per sentence, one tag per token (at least 2
                distinct tags overall).
            epochs, batch_size, validation_data, validation_split, callbacks,
                verbose, optimizer, lr, clip_norm, weight_decay, resume_from,
                shuffle, class_weight, distributed: as in ``SequenceClassifier.fit``;
                ``validation_split`` holds out a fraction of the sentences.
            sample_weight: None or one weight >= 0 per sentence (all its
                tokens), for the training loss only.

        The History in ``history_`` has per-token "loss" and "accuracy"
        (padding excluded; and ``val_*``).
        """
        options = self._fit_options(epochs=epochs, batch_size=batch_size,
                                    validation_split=validation_split, verbose=verbose,
                                    optimizer=optimizer, lr=lr, clip_norm=clip_norm,
                                    weight_decay=weight_decay, shuffle=shuffle,
                                    class_weight=class_weight)
        plan = fit_plan(distributed)
        X = as_sequences(X)
        check_nonempty(X, "X", "sentence")
        inputs = self._input_encoder()
        sequences = fit_inputs(plan, inputs, X)
        if plan is None:
            classes, targets = self._tag_ids(y, sequences, inputs.kind == "text")
        else:
            classes, targets = self._shared_tag_ids(plan, y, sequences, inputs.kind == "text")
        self._build(inputs, classes)
        self._set_fit_weights(options["class_weight"], sample_weight, np.concatenate(targets),
                              len(targets), plan)
        validation = None
        if validation_data is not None:
            X_val, y_val = validation_pair(validation_data)
            val_sequences = self._sequences(X_val, "validation_data[0]")
            validation = (val_sequences,
                          self._tag_ids(y_val, val_sequences, inputs.kind == "text",
                                        "validation_data[1]", self.classes_)[1])
        train, held_out = self._loaders(sequences, targets, options, validation,
                                        per_step_targets=True, plan=plan)
        return self._train(train, held_out, options, callbacks, resume_from, plan)

    def predict_proba(self, X, batch_size=256):
        """Tag probabilities per sentence: a list of (T_i, n_tags) float64
        arrays, columns in ``classes_`` order, in the order of ``X``.

        Args:
            X: sentences of the kind seen in fit (at least one, none empty).
            batch_size: sentences per forward pass (memory, not results).
        """
        self._check_fitted()
        Integer(low=1)("batch_size", batch_size)
        sequences = self._sequences(X)
        results = [None] * len(sequences)
        for batch in self._batches(sequences, batch_size):
            logits = self._logits(batch).astype(np.float64)
            shifted = np.exp(logits - logits.max(axis=2, keepdims=True))
            probabilities = (shifted / shifted.sum(axis=2, keepdims=True)).swapaxes(0, 1)
            for column, row in enumerate(batch.indices):
                results[row] = probabilities[column, :batch.lengths[column]].copy()
        return results

    def predict(self, X, batch_size=256):
        """The most probable tag of every token: a list (one per sentence, in
        the order of ``X``) of tag lists, each as long as its sentence.

        Args:
            X, batch_size: as in :meth:`predict_proba`.
        """
        self._check_fitted()
        Integer(low=1)("batch_size", batch_size)
        sequences = self._sequences(X)
        results = [None] * len(sequences)
        for batch in self._batches(sequences, batch_size):
            tags = self._class_array[self._logits(batch).argmax(axis=2).T]    # (B, T)
            for column, row in enumerate(batch.indices):
                results[row] = tags[column, :batch.lengths[column]].tolist()
        return results

    def score(self, X, y, batch_size=256):
        """``{"accuracy", "precision", "recall", "f1"}`` (floats) of
        ``predict(X)`` against ``y``.

        accuracy: over all tokens.  precision / recall / f1: over entities,
        micro-averaged (:func:`fastrnn.metrics.entity_scores`): conlleval's
        rule when every tag (true and predicted) is ``O``/``B-X``/``I-X``;
        otherwise every maximal run of one tag other than ``"O"`` is an entity.
        A true tag not seen in fit counts as wrong (it can never be predicted).

        Args:
            X: sentences; y: one tag list per sentence, aligned with its tokens.
            batch_size: as in :meth:`predict_proba`.
        """
        predicted = self.predict(X, batch_size)
        true = _aligned_tags(y, [len(tags) for tags in predicted], "y",
                             self.inputs_.kind == "text")
        p, r, f1 = entity_scores(true, predicted, scheme="auto")
        return {"accuracy": token_accuracy(true, predicted), "precision": p, "recall": r,
                "f1": f1}

    def stream(self):
        """A :class:`~fastrnn.tasks.streaming.TaggerStream`: ``step(token)``
        returns this token's tag with the state carried (what ``predict``
        gives for the prefix).  Unidirectional taggers only (ValueError)."""
        return TaggerStream(self)

    # -- saving -----------------------------------------------------------------------
    _onnx_head = "tokens"         # its ONNX graph output (tasks.onnx_export.HEADS)

    def _fitted_state(self):
        return {"inputs": self.inputs_.to_dict(), "classes": json_labels(self.classes_, "tags")}

    def _restore(self, state):
        self._build(InputEncoder.from_dict(state["inputs"]), state["classes"])


def _aligned_tags(y, lengths, name="y", text=False):
    """``y`` as a list of tag lists, one per sentence, as long as ``lengths``.

    ``text``: whether the sentences were texts (the message then says the
    count is after tokenization).
    """
    if isinstance(y, (str, bytes, dict, set, frozenset)) \
            or isinstance(y, np.ndarray) and y.ndim == 0:
        raise TypeError(f"{name} must be a list of tag lists (one per sentence), got "
                        f"{type(y).__name__}")
    try:
        tag_lists = list(y)
    except TypeError:
        raise TypeError(f"{name} must be a list of tag lists (one per sentence), got "
                        f"{type(y).__name__}") from None
    if len(tag_lists) != len(lengths):
        raise ValueError(f"{name} must hold one tag list per sentence: {len(lengths)} "
                         f"sentences but {len(tag_lists)} tag lists")
    note = " (after tokenization)" if text else ""
    checked = []
    for index, (tags, length) in enumerate(zip(tag_lists, lengths)):
        if isinstance(tags, (str, bytes)):
            raise TypeError(f"{name}[{index}] must be a list of tags, got a single "
                            f"{type(tags).__name__} {tags[:40]!r}")
        try:
            tags = tags.tolist() if isinstance(tags, np.ndarray) else list(tags)
        except TypeError:
            raise TypeError(f"{name}[{index}] must be a list of tags, got "
                            f"{type(tags).__name__}") from None
        if len(tags) != length:
            raise ValueError(f"{name}[{index}] has {len(tags)} tags but sentence {index} has "
                             f"{length} tokens{note}: tags must align one per token")
        checked.append(tags)
    return checked
