"""Many-to-many tagging: one tag per token (named entities, part of speech, chunks)."""

import numpy as np

from ..layers import Linear
from ..losses import CrossEntropyLoss
from ..metrics import entity_scores, token_accuracy
from .base import TaskModel, json_labels, validation_pair
from .inputs import InputEncoder, check_count
from .network import layer_seeds

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
        hidden_size, num_layers, bidirectional, dropout: the recurrent stack
            (dropout between layers and on its output).
        input: "embedding" (learned or ``pretrained`` vectors, optionally
            frozen) or "onehot" for tokens; numeric inputs need no choice.
        embedding_dim: size of a learned embedding.
        tokenizer, lower, min_freq, max_vocab: how texts are split and the
            vocabulary is built.  ``lower`` is False by default: capital
            letters matter for names.
        dtype: "float32" or "float64".  seed: int for reproducible runs.

    Example::

        tagger = fr.SequenceTagger(hidden_size=64)
        tagger.fit([["Ann", "lives", "in", "Rome"]], [["B-PER", "O", "O", "B-LOC"]])
        tagger.predict([["Bob", "lives", "in", "Oslo"]])
        # -> [['B-PER', 'O', 'O', 'B-LOC']]
    """

    def __init__(self, cell="lstm", hidden_size=64, num_layers=1, bidirectional=True,
                 dropout=0.0, input="embedding", embedding_dim=64, pretrained=None,
                 freeze_embedding=False, tokenizer="word", lower=False, min_freq=1,
                 max_vocab=None, dtype="float32", seed=None):
        self._store_params(locals())

    # -- building -------------------------------------------------------------------
    def _build(self, inputs, classes):
        network_seed, head_seed = layer_seeds(self.seed, 2)
        self.inputs_ = inputs
        self.classes_ = list(classes)
        self._class_array = np.empty(len(self.classes_), dtype=object)
        self._class_array[:] = self.classes_
        self.network_ = self._sequence_encoder(inputs, network_seed)
        self.head_ = Linear(self.network_.output_size, len(self.classes_), dtype=self.dtype,
                            seed=head_seed)
        self.loss_ = CrossEntropyLoss(ignore_index=IGNORE)

    def modules(self):
        return self.network_.modules() + [self.head_]

    # -- input checks ---------------------------------------------------------------
    @staticmethod
    def _check_sentences(X, name="X"):
        """Catch empty sentences before the input encoder guesses their kind."""
        if isinstance(X, (list, tuple)):
            for index, item in enumerate(X):
                if isinstance(item, (list, tuple, str)) and len(item) == 0:
                    raise ValueError(f"{name}[{index}] is an empty sentence: every sentence "
                                     f"needs at least one token")

    @staticmethod
    def _tag_ids(y, sequences, text, name="y", index_of=None):
        """Per-sentence int64 tag ids checked against the token counts.

        ``text``: the sentences were texts (messages mention tokenization).
        ``index_of`` maps tag -> id; None at fit, where the tag set is built
        and returned as the first element of the result.
        """
        checked = _aligned_tags(y, [len(s) for s in sequences], name, text)
        classes = None
        if index_of is None:
            distinct = list(dict.fromkeys(_hashable(name, checked)))
            try:
                distinct = sorted(distinct)
            except TypeError:
                pass
            if len(distinct) < 2:
                raise ValueError(f"{name} must contain at least 2 distinct tags, got "
                                 f"{distinct!r}")
            classes = distinct
            index_of = {tag: i for i, tag in enumerate(classes)}
        ids = []
        for index, tags in enumerate(checked):
            try:
                ids.append(np.fromiter((index_of[tag] for tag in tags), dtype=np.int64,
                                       count=len(tags)))
            except (KeyError, TypeError):
                bad = next(p for p, tag in enumerate(tags) if not _known(index_of, tag))
                raise ValueError(f"{name}[{index}][{bad}] = {tags[bad]!r} is not one of the "
                                 f"tags seen in fit: {list(index_of)!r}") from None
        return classes, ids

    def _sequences(self, X, name="X"):
        self._check_sentences(X, name)
        return self.inputs_.transform(X, name)

    # -- Trainer protocol -------------------------------------------------------------
    def _logits(self, batch):
        out, _ = self.network_.forward(batch.inputs, batch.lengths)
        return self.head_(out)                                   # (T, B, n_tags)

    def _step(self, batch, training):
        logits = self._logits(batch)
        loss, d_logits = self.loss_(logits, batch.targets)
        if training:
            self.network_.backward(self.head_.backward(d_logits))
        real = batch.targets != IGNORE
        tokens = int(real.sum())
        correct = int(((logits.argmax(axis=2) == batch.targets) & real).sum())
        # Weighted by tokens, so epoch averages are per-token loss and accuracy.
        return {"loss": loss, "accuracy": correct / tokens}, tokens

    def train_batch(self, batch):
        return self._step(batch, training=True)

    def evaluate_batch(self, batch):
        return self._step(batch, training=False)

    # -- public API -------------------------------------------------------------------
    def fit(self, X, y, epochs=10, batch_size=32, validation_data=None,
            validation_split=0.0, callbacks=None, verbose=1, optimizer="adam", lr=None,
            clip_norm=None, weight_decay=None, resume_from=None):
        """Train on sentences ``X`` (token lists or texts) and their tags ``y``
        (one tag list per sentence, one tag per token); returns the History
        (also kept as ``history_``) with per-token "loss" and "accuracy".

        Keras keywords: ``validation_data`` = (X_val, y_val) or
        ``validation_split`` (a fraction of the sentences held out).
        """
        check_count("epochs", epochs)
        check_count("batch_size", batch_size)
        self._check_sentences(X)
        inputs = self._input_encoder().fit(X)
        sequences = inputs.transform(X)
        classes, targets = self._tag_ids(y, sequences, inputs.kind == "text")
        self._build(inputs, classes)
        validation = None
        if validation_data is not None:
            X_val, y_val = validation_pair(validation_data)
            val_sequences = self._sequences(X_val, "validation_data[0]")
            validation = (val_sequences,
                          self._tag_ids(y_val, val_sequences, inputs.kind == "text",
                                        "validation_data[1]", self._index_of())[1])
        train, held_out = self._loaders(sequences, targets, batch_size, validation,
                                        validation_split, per_step_targets=True)
        return self._train(train, held_out, epochs, callbacks, verbose, optimizer, lr,
                           clip_norm, weight_decay, resume_from)

    def _index_of(self):
        return {tag: i for i, tag in enumerate(self.classes_)}

    def predict_proba(self, X, batch_size=256):
        """Tag probabilities per sentence: a list of (T_i, n_tags) float64 arrays,
        columns in ``classes_`` order."""
        self._check_fitted()
        check_count("batch_size", batch_size)
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
        """The most probable tag of every token: a list of tag lists, each as
        long as its sentence."""
        self._check_fitted()
        check_count("batch_size", batch_size)
        sequences = self._sequences(X)
        results = [None] * len(sequences)
        for batch in self._batches(sequences, batch_size):
            tags = self._class_array[self._logits(batch).argmax(axis=2).T]    # (B, T)
            for column, row in enumerate(batch.indices):
                results[row] = tags[column, :batch.lengths[column]].tolist()
        return results

    def score(self, X, y):
        """``{"accuracy", "precision", "recall", "f1"}`` of ``predict(X)`` against ``y``.

        accuracy: over all tokens.  precision / recall / f1: over entities,
        micro-averaged (:func:`fastrnn.metrics.entity_scores`): conlleval's
        rule when every tag (true and predicted) is ``O``/``B-X``/``I-X``;
        otherwise every maximal run of one tag other than ``"O"`` is an entity.
        """
        predicted = self.predict(X)
        true = _aligned_tags(y, [len(tags) for tags in predicted], "y",
                             self.inputs_.kind == "text")
        p, r, f1 = entity_scores(true, predicted, scheme="auto")
        return {"accuracy": token_accuracy(true, predicted), "precision": p, "recall": r,
                "f1": f1}

    # -- saving -----------------------------------------------------------------------
    def _fitted_state(self):
        for tag in self.classes_:
            if not isinstance(tag, (str, int, float, bool, np.generic)):
                raise TypeError(f"cannot save {type(self).__name__}: tag {tag!r} of type "
                                f"{type(tag).__name__} does not survive JSON; tags must be "
                                f"str, int, float or bool")
        return {"inputs": self.inputs_.to_dict(), "classes": json_labels(self.classes_)}

    def _restore(self, state):
        self._build(InputEncoder.from_dict(state["inputs"]), state["classes"])


def _hashable(name, tag_lists):
    for index, tags in enumerate(tag_lists):
        for position, tag in enumerate(tags):
            try:
                hash(tag)
            except TypeError:
                raise TypeError(f"{name}[{index}][{position}] = {tag!r} is not hashable: "
                                f"tags must be hashable (str, int, ...)") from None
            yield tag


def _known(index_of, tag):
    try:
        return tag in index_of
    except TypeError:
        return False


def _aligned_tags(y, lengths, name="y", text=False):
    """``y`` as a list of tag lists, one per sentence, as long as ``lengths``.

    ``text``: whether the sentences were texts (the message then says the
    count is after tokenization).
    """
    if isinstance(y, (str, bytes)) or isinstance(y, np.ndarray) and y.ndim == 0:
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
