"""Sequence-to-sequence: an encoder reads the source, a decoder writes the target.

The encoder's final state (h_n, and c_n for an LSTM) is the decoder's initial
state.  Without attention the whole source must pass through that fixed-size
state; with ``attention`` the decoder also reads every encoder output (see
``Seq2Seq``'s docstring).  Training uses teacher forcing: the decoder reads
``<bos>`` + target and learns to predict target + ``<eos>``, one vectorised
pass per batch.  Inference decodes one step at a time for a whole batch (greedy) or
for a batch of beams (beam search); the Python loop runs per generated step,
never per sequence or per token.
"""

import numpy as np

from ..layers import Attention, Linear
from ..losses import CrossEntropyLoss
from ..text import BOS, EOS, PAD, get_tokenizer
from ..distributed.shared import fit_inputs, fit_plan
from .base import TRAINING_PARAMS, TaskModel, eval_mode, prediction_loader, validation_pair
from .._validation import Integer, Options, Real, layer_seeds
from .inputs import InputEncoder, as_sequences, check_nonempty, detect_kind
from .onnx_export import SEQ2SEQ_REASON
from .pooling import top_state
from .stack import CELLS, RecurrentStack

IGNORE = -100               # padded decoder targets: CrossEntropyLoss's ignore_index
BANNED = (PAD, BOS)         # never generated: PAD is never a target, BOS only an input
ATTENTIONS = (None, "dot", "general", "additive")


class _Finished:
    """The finished hypotheses of a beam search: up to ``k`` per source, each
    scored by its mean log-probability per token (``<eos>`` counted)."""

    def __init__(self, batch, k, max_length):
        self.k = k
        self.scores = np.full((batch, k), -np.inf)
        self.tokens = np.zeros((batch, k, max_length), dtype=np.int64)
        self.lengths = np.zeros((batch, k), dtype=np.int64)
        self.count = np.zeros(batch, dtype=np.int64)
        self.done = np.zeros(batch, dtype=bool)     # k hypotheses finished

    def add(self, step, best_scores, parent, ending, history):
        """Finish the extensions that end with ``<eos>`` ranked within the first
        k of a source's 2k best (``best_scores`` (B, 2k), ``parent`` their live
        beam, ``history`` (B, k, step) the live beams' tokens)."""
        k = self.k
        add = ending & (np.arange(2 * k) < k) & np.isfinite(best_scores) & ~self.done[:, None]
        slot = self.count[:, None] + np.cumsum(add, axis=1) - 1
        add &= slot < k
        b_idx, c_idx = np.nonzero(add)
        s_idx = slot[b_idx, c_idx]
        self.scores[b_idx, s_idx] = best_scores[b_idx, c_idx] / (step + 1)
        self.tokens[b_idx, s_idx, :step] = history[b_idx, parent[b_idx, c_idx]]
        self.lengths[b_idx, s_idx] = step
        self.count += add.sum(axis=1)
        self.done |= self.count >= k

    def best(self, live_scores=None, live_history=None):
        """The best hypothesis of each source (token ids without ``<eos>``); with
        ``live_scores`` (B, k) the live beams of unfinished sources compete too."""
        scores = self.scores
        if live_scores is not None:
            live = np.where(self.done[:, None], -np.inf, live_scores)
            scores = np.concatenate([scores, live], axis=1)
        results = []
        for b, pick in enumerate(scores.argmax(axis=1)):
            if pick < self.k:
                results.append(self.tokens[b, pick, :self.lengths[b, pick]])
            else:
                results.append(live_history[b, pick - self.k])
        return results


class Seq2Seq(TaskModel):
    """Encoder-decoder for sequence-to-sequence tasks: transliteration,
    reversal/sorting toys, short translations, captioning-style one-to-many.

    Sources are texts (split by ``tokenizer``), token lists, or numbers:
    a 2-D array (N, F) or a list of (F,) vectors is one feature vector per
    example, read as a length-1 sequence (one-to-many: a vector in, a
    sequence out); a 3-D array (N, T, F) or a list of (T_i, F) arrays is a
    feature sequence per example (a scalar series must be given as (T, 1)).
    Targets are texts or token lists, with their own vocabulary (the source
    and target vocabularies are separate; ``tokenizer``/``lower``/
    ``min_freq``/``max_vocab`` apply to both sides).

    Model: a unidirectional encoder stack (embedding / one-hot / numeric
    input -> RNN, LSTM or GRU) whose final state starts a decoder stack of
    the same cell and size over target ids, and a linear layer from the
    decoder's outputs to target-token scores.  Training minimises the
    per-token cross-entropy of target + ``<eos>`` given ``<bos>`` + target
    (padding ignored); gradients flow head -> decoder -> (through the
    initial state) encoder.

    Args:
        cell: "lstm", "gru" or "rnn" (both stacks).
        cell_options: dict of extra recurrent-layer options, e.g.
            {"reset_after": False} (GRU) or {"peepholes": True} (LSTM).
        hidden_size, num_layers, dropout: size of both stacks; dropout
            between layers and on the outputs.
        input: "embedding" or "onehot" for token ids (numeric sources need
            no choice; the decoder always reads target ids).
        embedding_dim: size of the learned source and target embeddings.
        tokenizer: "char" or "word": how source and target texts are split.
        lower: casefold texts before splitting.
        min_freq, max_vocab: vocabulary limits (rarer tokens are ``<unk>``).
        dtype: "float32" or "float64".  seed: None or an int >= 0 for
            reproducible runs (weights, dropout, data order and scheduled
            sampling).
        attention: None, "dot", "general" (Luong) or "additive" (Bahdanau):
            the decoder attends over all encoder outputs (masked by source
            length; ``fr.Attention``).  The decoder stack's top output
            queries the encoder outputs; the context goes into the input of
            one more recurrent layer of the same cell (over [decoder output;
            context]) and into the output layer (over [that layer's output;
            context]).  Feeding the context in *above* the querying stack,
            rather than into the next step's input as in Luong's input
            feeding, keeps teacher-forced training one vectorised pass over
            the whole target (the query never depends on an earlier context).
            ``attention_weights`` returns the alignments.
        {TRAINING}
        teacher_forcing: as in ``fit``.

    Example::

        model = fr.Seq2Seq(hidden_size=128, tokenizer="char", seed=0)
        model.fit(["abc", "hello"], ["cba", "olleh"], epochs=30)
        model.predict(["abc"], beam_size=3)        # -> ['cba']
        model.encode(["abc"])                      # (1, 128) source vectors
    """

    _training_params = TRAINING_PARAMS + ("teacher_forcing",)

    def __init__(self, cell="lstm", hidden_size=128, num_layers=1, dropout=0.0,
                 input="embedding", embedding_dim=64, tokenizer="char", lower=False,
                 min_freq=1, max_vocab=None, attention=None, cell_options=None,
                 dtype="float32", seed=None,
                 epochs=10, batch_size=32, optimizer="adam", lr=None, weight_decay=None,
                 clip_norm=5.0, validation_split=0.0, shuffle=True, verbose=1,
                 teacher_forcing=1.0):
        self._store_params(locals())

    # -- building -------------------------------------------------------------------
    def _build(self, inputs, outputs):
        self._begin_build()
        Options(("embedding", "onehot"))("input", self.input)
        Options(ATTENTIONS)("attention", self.attention)
        # spawn(6)[:4] == spawn(4): models without attention keep their seeds
        (encoder_seed, decoder_seed, head_seed, sampling_seed, attention_seed,
         post_seed) = layer_seeds(self.seed, 6)
        self.inputs_ = inputs
        self.outputs_ = outputs
        vocab = outputs.vocab
        self._itos = np.array(vocab.tokens, dtype=object)
        self.encoder_ = self._sequence_encoder(inputs, encoder_seed)
        self.decoder_ = RecurrentStack(
            self.cell, self.input, len(vocab), self.hidden_size, num_layers=self.num_layers,
            bidirectional=False, dropout=self.dropout, embedding_dim=self.embedding_dim,
            vocab=vocab, dtype=self.dtype, seed=decoder_seed,
            cell_options=self.cell_options)
        self._build_attention(attention_seed, post_seed)
        head_inputs = self.decoder_.output_size
        if self.attention_ is not None:
            head_inputs += self.encoder_.output_size
        self.head_ = Linear(head_inputs, len(vocab), dtype=self.dtype, seed=head_seed)
        self.loss_ = CrossEntropyLoss(ignore_index=IGNORE)
        self._sampling_seed, self._sampling_epoch = sampling_seed, 0
        self._sampling_part = ()         # (rank,) when rows number a rank's own part
        self._teacher_forcing = 1.0
        self._table = None

    def _build_attention(self, attention_seed, post_seed):
        """The attention layer and the recurrent layer over [decoder output;
        context] (both None without attention)."""
        self.attention_ = self.post_ = None
        if self.attention is None:
            return
        query, memory = self.decoder_.output_size, self.encoder_.output_size
        self.attention_ = Attention(query, memory, score=self.attention, dtype=self.dtype,
                                    seed=attention_seed)
        self.post_ = CELLS[self.cell](query + memory, self.hidden_size, dtype=self.dtype,
                                      seed=post_seed)

    def modules(self):
        """The layers in a fixed order: encoder stack, decoder stack, (attention,
        post-attention layer,) head."""
        extra = [self.attention_, self.post_] if self.attention_ is not None else []
        return self.encoder_.modules() + self.decoder_.modules() + extra + [self.head_]

    # -- input checks -------------------------------------------------------------------
    @staticmethod
    def _sources(X, name="sources"):
        """``X`` with feature vectors turned into length-1 sequences (see the
        class docstring); empty sequences are refused here, before the input
        encoder guesses the kind from them."""
        X = as_sequences(X)
        if isinstance(X, np.ndarray):
            if X.dtype.kind in "fiu" and X.ndim == 2:
                return X[:, None, :]
            if X.dtype.kind in "fiu" and X.ndim != 3:
                raise ValueError(f"{name} as an array must have shape (N, F) (one vector "
                                 f"per example) or (N, T, F) (sequences), got {X.shape}")
            return X
        check_nonempty(X, name, "source")
        if detect_kind(X, name) != "numeric":
            return X
        converted = []
        for item in X:
            try:
                array = np.asarray(item)
            except ValueError:                  # ragged: the input encoder reports it
                array = None
            if array is not None and array.ndim == 1 and array.dtype.kind in "fiu":
                item = array[None, :]
            converted.append(item)
        return converted

    @staticmethod
    def _targets(y, name="targets"):
        """``y`` as a list of texts or token lists (numbers are refused)."""
        if isinstance(y, np.ndarray):
            y = y.tolist()
        y = as_sequences(y)
        check_nonempty(y, name, "target")
        kind = detect_kind(y, name)
        if kind == "numeric":
            raise TypeError(f"{name} must be texts or token lists (a decoder writes "
                            f"tokens), got numbers")
        return y

    @staticmethod
    def _check_counts(n_sources, n_targets, names=("sources", "targets")):
        if n_sources != n_targets:
            raise ValueError(f"{names[0]} and {names[1]} must have the same length: "
                             f"{n_sources} sources but {n_targets} targets")

    def _target_ids(self, y, name="targets"):
        return self.outputs_.transform(y, name)

    # -- Trainer protocol -------------------------------------------------------------
    def _encode_batch(self, batch):
        """The encoder's final state for a batch (the decoder's initial state);
        with attention the encoder outputs become the attention's memory."""
        out, state = self.encoder_.forward(batch.inputs, batch.lengths)
        if self.attention_ is not None:
            self.attention_.set_memory(out, batch.lengths)
        return state

    def _decode(self, decoder_inputs, lengths, state):
        out, _ = self.decoder_.forward(decoder_inputs, lengths, hx=state)
        if self.attention_ is None:
            return self.head_(out)                                   # (T, B, V)
        context, _ = self.attention_.forward(out)
        above, _ = self.post_(np.concatenate([out, context], axis=2), lengths=lengths)
        return self.head_(np.concatenate([above, context], axis=2))

    def _backward(self, d_logits):
        """Back from the logits to the decoder and encoder parameters."""
        d_features = self.head_.backward(d_logits)
        d_memory = None
        if self.attention_ is None:
            d_out = d_features
        else:
            hidden = self.post_.hidden_size
            d_post_in, _ = self.post_.backward(d_features[..., :hidden])
            query = self.decoder_.output_size
            d_context = d_features[..., hidden:] + d_post_in[..., query:]
            d_query, d_memory = self.attention_.backward(d_context)
            d_out = d_post_in[..., :query] + d_query
        d_state = self.decoder_.backward(d_out)
        self.encoder_.backward(d_memory, d_hn=d_state, state_grad=False)

    def _scheduled_inputs(self, decoder_inputs, lengths, state, rows):
        """Parallel (two-pass) scheduled sampling.

        A first teacher-forced pass of the decoder in eval mode (no dropout,
        nothing kept for backward) gives the model's own prediction at every
        step; each decoder input after ``<bos>`` is then replaced by the
        prediction for its position with probability ``1 - teacher_forcing``.
        The real training pass runs on these mixed inputs.  Unlike classic
        scheduled sampling the predictions come from the gold prefix, not
        from the mixed one: all steps stay one vectorised pass.

        The draws are a function of (seed, epoch, the example's row ``rows``
        in the training data, step) alone, not of the batch it sits in: N
        ranks, each given its slice of every global batch, replace exactly
        the inputs one process replaces, and a resumed run replays them.
        With sharded data the rows are those of the rank's part and the rank
        joins the key.
        """
        with eval_mode(self.modules()[len(self.encoder_.modules()):]):
            logits = self._decode(decoder_inputs, lengths, state)
        logits[..., list(BANNED)] = -np.inf
        predicted = logits.argmax(axis=2)                            # (T, B)
        steps = len(decoder_inputs)
        key = (self._sampling_seed, self._sampling_epoch, *self._sampling_part)
        replace = _row_uniforms(key, rows, steps - 1) >= self._teacher_forcing
        replace &= np.arange(1, steps)[:, None] < lengths[None, :]
        mixed = decoder_inputs.copy()
        mixed[1:][replace] = predicted[:-1][replace]
        return mixed

    def _step(self, batch, training):
        decoder_inputs, targets, lengths = self._table.batch(batch.targets)
        state = self._encode_batch(batch)
        if training and self._teacher_forcing < 1.0:
            decoder_inputs = self._scheduled_inputs(decoder_inputs, lengths, state,
                                                    batch.targets)
        logits = self._decode(decoder_inputs, lengths, state)
        loss, d_logits = self.loss_(logits, targets)
        if training:
            self._backward(d_logits)
        real = targets != IGNORE
        tokens = int(real.sum())
        correct = int(((logits.argmax(axis=2) == targets) & real).sum())
        # Weighted by tokens: epoch averages are per-token loss and accuracy.
        return {"loss": loss, "accuracy": correct / tokens}, tokens

    def batch_weight(self, batch):
        """Trainer protocol: the target tokens the loss of ``batch`` averages
        over (each target and its ``<eos>``), known before the backward pass:
        distributed training then reduces each layer's gradients while the
        backward of the layers below it (decoder, then encoder) still runs."""
        return self._table.tokens(batch.targets)

    def train_batch(self, batch):
        """Trainer protocol: train on ``batch``; ``({"loss", "accuracy"}, target
        tokens)``, per token."""
        return self._step(batch, training=True)

    def evaluate_batch(self, batch):
        """Trainer protocol: teacher-forced per-token loss and accuracy of
        ``batch``, no gradients."""
        return self._step(batch, training=False)

    def on_epoch_begin(self, epoch, training):
        """Trainer protocol: at the start of each pass over the data (``epoch``,
        0-based; ``training`` False for an evaluation pass), key scheduled
        sampling's draws by the training epoch, so they are new each epoch."""
        if training:
            self._sampling_epoch = int(epoch)

    def extra_state(self):
        """Trainer hook: the epoch the scheduled-sampling draws are keyed by
        (a run resumed mid-epoch does not begin that epoch again)."""
        return {"sampling_epoch": self._sampling_epoch}

    def load_extra_state(self, state):
        """Trainer hook: restore the epoch saved by :meth:`extra_state` (a
        checkpoint from before it, holding a generator state, keeps 0)."""
        self._sampling_epoch = int(state.get("sampling_epoch", 0))

    # -- public API -------------------------------------------------------------------
    def fit(self, sources, targets, epochs=None, batch_size=None, teacher_forcing=None,
            validation_data=None, validation_split=None, callbacks=None, verbose=None,
            optimizer=None, lr=None, clip_norm=None, weight_decay=None, resume_from=None,
            shuffle=None, distributed=False):
        """Train on ``sources`` and their ``targets``; returns the model, with
        the History in ``history_``: per-token "loss" and "accuracy"
        (teacher-forced, ``<eos>`` included; ``val_*`` likewise on validation
        data).  Every keyword left None takes the constructor's setting.

        Args:
            sources: texts, token lists or numbers (see the class docstring).
            targets: one text or token list per source.
            epochs, batch_size: passes over the data and sources per batch.
            teacher_forcing: in [0, 1]; 1 = the decoder always reads the true
                previous token.  Below 1, two-pass scheduled sampling: each
                decoder input is replaced by the model's own prediction with
                probability ``1 - teacher_forcing`` (see
                ``_scheduled_inputs``; seeded by ``seed``).
            validation_data: ``(sources, targets)`` scored after each epoch;
                or ``validation_split``, a fraction of the pairs held out.
            callbacks, verbose, optimizer, lr, weight_decay, resume_from,
                shuffle, distributed: as in ``SequenceClassifier.fit``.
            clip_norm: global gradient-norm clipping (default 5.0; None
                turns it off): long decoder chains can explode.

        Batching: a BatchLoader over the sources carries each example's row
        number as its target; the batch's decoder inputs and targets are
        gathered from one flat table of target ids with a single vectorised
        scatter (validation pairs live in the same table, after the training
        ones).
        """
        options = self._fit_options(epochs=epochs, batch_size=batch_size,
                                    teacher_forcing=teacher_forcing,
                                    validation_split=validation_split, verbose=verbose,
                                    optimizer=optimizer, lr=lr, clip_norm=clip_norm,
                                    weight_decay=weight_decay, shuffle=shuffle)
        teacher_forcing = Real(0, 1)("teacher_forcing", options["teacher_forcing"])
        sources = self._sources(sources)
        targets = self._targets(targets)
        self._check_counts(len(sources), len(targets))
        plan = fit_plan(distributed)
        inputs = self._input_encoder()
        source_ids = fit_inputs(plan, inputs, sources, "sources")
        outputs = fit_inputs(plan, self._input_encoder(), targets, "targets", transform=False)
        self._build(inputs, outputs)
        self._teacher_forcing = teacher_forcing
        # Sharded data: each rank's rows are numbered within its part, so the
        # rank joins the key (no two ranks share draws).
        self._sampling_part = (plan.context.rank,) if plan is not None and plan.sharded else ()
        validation = self._fill_target_table(targets, validation_data, inputs, plan)
        train, held_out = self._loaders(source_ids, np.arange(len(source_ids)), options,
                                        validation, plan=plan)
        try:
            return self._train(train, held_out, options, callbacks, resume_from, plan)
        finally:
            self._table = None

    def _fill_target_table(self, targets, validation_data, inputs, plan):
        """Put the training targets' ids (then the validation pairs', after
        them) in the one flat table batches gather from; returns the
        validation rows (None without ``validation_data``)."""
        target_ids = self._target_ids(targets)
        if plan is not None:
            plan.check_same("the encoded targets", target_ids)
        validation = None
        if validation_data is not None:
            validation, val_ids = self._validation_rows(validation_data, inputs,
                                                        len(target_ids))
            target_ids = target_ids + val_ids
        self._table = _TargetTable(target_ids)
        return validation

    def _validation_rows(self, validation_data, inputs, first_row):
        """``((source ids, table rows of their targets), target ids)`` of
        ``validation_data``: its targets follow the ``first_row`` training ones
        in the one target table."""
        val_sources, val_targets = validation_pair(validation_data)
        val_sources = self._sources(val_sources, "validation_data[0]")
        val_targets = self._targets(val_targets, "validation_data[1]")
        self._check_counts(len(val_sources), len(val_targets),
                           ("validation_data[0]", "validation_data[1]"))
        val_ids = self._target_ids(val_targets, "validation_data[1]")
        rows = np.arange(first_row, first_row + len(val_ids))
        return (inputs.transform(val_sources, "validation_data[0]"), rows), val_ids

    def predict(self, sources, max_length=50, beam_size=1, batch_size=64):
        """The decoded target of every source: strings (joined with the target
        tokenizer's ``detokenize``) when the targets were texts, token lists
        when they were token lists; a list as long as ``sources``, in order.

        Args:
            sources: sources of the kind seen in fit (at least one).
            max_length: most tokens generated per output (``<eos>`` not
                counted); an output that reaches it is cut there.
            beam_size: 1 = greedy decoding (the most probable token at each
                step, ties to the lowest id); k > 1 = beam search (see
                ``_beam_search`` for the scoring rule).
            batch_size: sources decoded together (beam search runs
                ``batch_size * beam_size`` rows per step).

        ``<pad>`` and ``<bos>`` are never generated; ``<unk>`` can be (it
        appears as the token "<unk>").
        """
        ids = self._predict_ids(sources, max_length, beam_size, batch_size)
        tokens = [self._itos[row].tolist() for row in ids]
        if self.outputs_.kind == "tokens":
            return tokens
        detokenize = self._target_tokenizer().detokenize
        return [detokenize(row) for row in tokens]

    def _target_tokenizer(self):
        """The tokenizer the target texts were split with in fit."""
        return get_tokenizer(self.outputs_.tokenizer, lower=self.outputs_.lower)

    def _predict_ids(self, sources, max_length, beam_size, batch_size):
        self._check_fitted()
        max_length = Integer(low=1)("max_length", max_length)
        beam_size = Integer(low=1)("beam_size", beam_size)
        batch_size = Integer(low=1)("batch_size", batch_size)
        source_ids = self.inputs_.transform(self._sources(sources), "sources")
        results = [None] * len(source_ids)
        with eval_mode(self.modules()):
            for batch in self._loader(source_ids, batch_size):
                state = self._encode_batch(batch)
                if self.attention_ is not None:
                    state = (state, None)          # (decoder, post-attention layer)
                if beam_size == 1:
                    decoded = self._greedy(state, len(batch.lengths), max_length)
                else:
                    decoded = self._beam_search(state, len(batch.lengths), max_length,
                                                beam_size)
                for row, ids in zip(batch.indices.tolist(), decoded):
                    results[row] = ids
        return results

    @staticmethod
    def _loader(source_ids, batch_size):
        return prediction_loader(source_ids, batch_size)

    def _log_probs(self, tokens, state):
        """One decoder step for every row: ``(log-probabilities (rows, V) float64
        with the banned tokens at -inf, new state)``."""
        if self.attention_ is None:
            out, state = self.decoder_.forward(tokens[None, :], hx=state)
            features = out[0]
        else:
            decoder_state, post_state = state
            out, decoder_state = self.decoder_.forward(tokens[None, :], hx=decoder_state)
            context, _ = self.attention_.step(out[0])
            above, post_state = self.post_(np.concatenate([out[0], context], axis=1)[None],
                                           hx=post_state)
            features = np.concatenate([above[0], context], axis=1)
            state = (decoder_state, post_state)
        z = self.head_(features).astype(np.float64)
        z[:, list(BANNED)] = -np.inf
        top = z.max(axis=1, keepdims=True)
        z -= top
        z -= np.log(np.exp(z).sum(axis=1, keepdims=True))
        return z, state

    def _greedy(self, state, batch, max_length):
        """Greedy decoding of a batch: one 1-step decoder forward per step for
        all rows, until every row has produced ``<eos>`` or ``max_length``."""
        tokens = np.full(batch, BOS, dtype=np.int64)
        generated = np.zeros((max_length, batch), dtype=np.int64)
        lengths = np.full(batch, max_length, dtype=np.int64)
        finished = np.zeros(batch, dtype=bool)
        for step in range(max_length):
            log_probs, state = self._log_probs(tokens, state)
            tokens = log_probs.argmax(axis=1)
            generated[step] = tokens
            ended = (tokens == EOS) & ~finished
            lengths[ended] = step
            finished |= ended
            if finished.all():
                break
        return [generated[:lengths[b], b] for b in range(batch)]

    def _beam_search(self, state, batch, max_length, beam_size):
        """Beam search for a batch of sources, all beams as rows of one batch.

        Each source keeps ``k = beam_size`` live hypotheses; the ``k * B``
        rows go through one 1-step decoder forward per step.  Of each
        source's ``k * V`` extensions the 2k best (by summed log-probability;
        all live hypotheses have the same length, so this is also the
        normalised order) are taken: an ``<eos>`` among the first k finishes
        a hypothesis, and the best k that do not end become the live beams.
        A source is done when k hypotheses have finished, or at
        ``max_length`` (its live beams then compete as they are).

        Scoring rule (length normalisation): a finished hypothesis is ranked
        by its mean log-probability per generated token, ``<eos>`` counted
        as a token: ``sum(log p) / (n_tokens + 1)``; a hypothesis cut at
        ``max_length`` by ``sum(log p) / max_length``.  With ``beam_size=1``
        this is exactly greedy decoding.
        """
        k, rows = beam_size, batch * beam_size
        state = _repeat_state(state, k)
        if self.attention_ is not None:
            self.attention_.repeat_memory(k)
        tokens = np.full(rows, BOS, dtype=np.int64)
        sums = np.full((batch, k), -np.inf)
        sums[:, 0] = 0.0                         # one live hypothesis to start from
        history = np.zeros((batch, k, 0), dtype=np.int64)
        finished = _Finished(batch, k, max_length)
        source = np.arange(batch)
        for step in range(max_length):
            log_probs, state = self._log_probs(tokens, state)
            vocab = log_probs.shape[1]
            scores = (sums[:, :, None] + log_probs.reshape(batch, k, vocab)).reshape(batch, -1)
            best = _top(scores, 2 * k)                                 # (B, 2k) flat ids
            best_scores = np.take_along_axis(scores, best, axis=1)
            parent, token = best // vocab, best % vocab
            ending = token == EOS
            finished.add(step, best_scores, parent, ending, history)
            if finished.done.all():
                return finished.best()
            # Live beams: the k best extensions that do not end here.
            keep = np.argsort(ending, axis=1, kind="stable")[:, :k]
            parent = np.take_along_axis(parent, keep, axis=1)
            token = np.take_along_axis(token, keep, axis=1)
            sums = np.take_along_axis(best_scores, keep, axis=1)
            history = np.concatenate(
                [history[source[:, None], parent], token[:, :, None]], axis=2)
            state = _gather_state(state, (source[:, None] * k + parent).reshape(-1))
            tokens = token.reshape(-1)
        # max_length reached: unfinished sources also consider their live beams.
        return finished.best(sums / max_length, history)

    def encode(self, sources, batch_size=256):
        """One fixed-size vector per source: the encoder's final hidden state of
        the top layer, an ``(N, hidden_size)`` array of the model's dtype.

        Args:
            sources: sources of the kind seen in fit (at least one).
            batch_size: sources per forward pass (memory, not results).

        Trained with ``targets = sources`` the model is a sequence
        autoencoder: the vector must hold all the decoder needs to rebuild
        the source, so similar sources get nearby vectors (usable for
        search, clustering or as features for another model).
        """
        self._check_fitted()
        batch_size = Integer(low=1)("batch_size", batch_size)
        source_ids = self.inputs_.transform(self._sources(sources), "sources")
        vectors = np.empty((len(source_ids), self.encoder_.output_size),
                           dtype=self.encoder_.dtype)
        with eval_mode(self.modules()):
            for batch in self._loader(source_ids, batch_size):
                vectors[batch.indices] = top_state(self._encode_batch(batch), False)
        return vectors

    def attention_weights(self, sources, targets, batch_size=64):
        """The alignment of every (source, target) pair, for plotting: a list of
        float arrays, one per pair, of shape (len(target) + 1, len(source))
        (in tokens; the last row is the step that predicts ``<eos>``).  Row i
        holds the attention weights over the source when the decoder, fed
        ``<bos>`` + target[:i] (teacher forcing), predicts token i; every row
        sums to 1.  Needs a model built with ``attention``.

        Args:
            sources: sources of the kind seen in fit (at least one).
            targets: one target per source (texts or token lists, as in fit).
            batch_size: pairs per forward pass (memory, not results).
        """
        self._check_fitted()
        if self.attention_ is None:
            raise ValueError("attention_weights needs a model built with attention='dot', "
                             "'general' or 'additive'; this one has attention=None")
        batch_size = Integer(low=1)("batch_size", batch_size)
        sources = self._sources(sources)
        targets = self._targets(targets)
        self._check_counts(len(sources), len(targets))
        source_ids = self.inputs_.transform(sources, "sources")
        table = _TargetTable(self._target_ids(targets))
        results = [None] * len(source_ids)
        with eval_mode(self.modules()):
            for batch in self._loader(source_ids, batch_size):
                decoder_inputs, _, lengths = table.batch(batch.indices)
                state = self._encode_batch(batch)
                out, _ = self.decoder_.forward(decoder_inputs, lengths, hx=state)
                _, weights = self.attention_.forward(out)                 # (B, T, S)
                for i, row in enumerate(batch.indices.tolist()):
                    results[row] = weights[i, :lengths[i], :batch.lengths[i]].copy()
        return results

    def score(self, sources, targets, max_length=50, beam_size=1, batch_size=64):
        """``{"exact_match", "token_accuracy"}`` of ``predict(sources)`` against
        ``targets`` (texts are compared as token sequences after the target
        tokenizer, so spacing does not matter).

        exact_match: the fraction of outputs equal to their target.
        token_accuracy: position-by-position matches of output + ``<eos>``
        against target + ``<eos>``, over the longer of the two for each pair
        (a missing or extra token counts as an error).  Both are floats.

        Args:
            sources: as in :meth:`predict`.
            targets: one target per source, of the kind seen in fit (texts
                or token lists).
            max_length, beam_size, batch_size: decoding, as in :meth:`predict`.
        """
        self._check_fitted()
        targets = self._targets(targets)
        kind = detect_kind(targets, "targets")
        if kind != self.outputs_.kind:
            raise TypeError(f"targets holds {kind} but the model was fitted on "
                            f"{self.outputs_.kind} targets")
        predicted = self._predict_ids(sources, max_length, beam_size, batch_size)
        self._check_counts(len(predicted), len(targets))
        if self.outputs_.kind == "text":
            split = self._target_tokenizer().tokenize
            expected = [split(text) for text in targets]
        else:
            expected = [list(tokens) for tokens in targets]
        exact = matches = total = 0
        for ids, truth in zip(predicted, expected):
            output = self._itos[ids].tolist()
            exact += output == truth
            matches += sum(a == b for a, b in zip(output, truth)) + (len(output) == len(truth))
            total += max(len(output), len(truth)) + 1
        return {"exact_match": exact / len(expected), "token_accuracy": matches / total}

    def to_onnx(self, path=None):
        """Not available for Seq2Seq (NotImplementedError, saying why: decoding
        is a data-dependent loop kept in Python).

        Args:
            path: unused.
        """
        raise NotImplementedError(SEQ2SEQ_REASON)

    def to_ids(self, X):
        """Not available for Seq2Seq (see :meth:`to_onnx`).

        Args:
            X: unused.
        """
        raise NotImplementedError(SEQ2SEQ_REASON)

    # -- saving -----------------------------------------------------------------------
    def _fitted_state(self):
        return {"sources": self.inputs_.to_dict(), "targets": self.outputs_.to_dict()}

    def _restore(self, state):
        self._build(InputEncoder.from_dict(state["sources"]),
                    InputEncoder.from_dict(state["targets"]))


class _TargetTable:
    """All target id sequences in one flat array; a batch's decoder inputs
    (``<bos>`` + target, padded with PAD) and decoder targets (target +
    ``<eos>``, padded with IGNORE) are gathered with one vectorised scatter."""

    def __init__(self, sequences):
        self.lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64,
                                   count=len(sequences))
        self.offsets = np.cumsum(self.lengths) - self.lengths
        self.flat = np.concatenate(sequences).astype(np.int64, copy=False)

    def tokens(self, rows):
        """The decoder targets of ``rows`` that are not IGNORE: each target
        sequence and its ``<eos>``."""
        rows = np.asarray(rows, dtype=np.int64)
        return int(self.lengths[rows].sum()) + len(rows)

    def batch(self, rows):
        """``(decoder inputs (T, B), decoder targets (T, B), lengths (B,))``."""
        rows = np.asarray(rows, dtype=np.int64)
        counts = self.lengths[rows]
        batch = len(rows)
        steps = int(counts.max()) + 1
        inputs = np.full((steps, batch), PAD, dtype=np.int64)
        inputs[0] = BOS
        targets = np.full((steps, batch), IGNORE, dtype=np.int64)
        starts = np.cumsum(counts) - counts
        time = np.arange(int(counts.sum())) - np.repeat(starts, counts)
        column = np.repeat(np.arange(batch), counts)
        values = self.flat[np.repeat(self.offsets[rows], counts) + time]
        inputs[time + 1, column] = values
        targets[time, column] = values
        targets[counts, np.arange(batch)] = EOS
        return inputs, targets, counts + 1


def _top(scores, count):
    """Column ids of the ``count`` largest entries of each row, best first
    (ties: lower id first)."""
    if count < scores.shape[1]:
        part = np.argpartition(-scores, count - 1, axis=1)[:, :count]
    else:
        part = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    values = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -values), axis=1)
    return np.take_along_axis(part, order, axis=1)


def _repeat_state(state, k):
    """Nested tuples (LSTM states, attention's (decoder, post) pair) and None
    (a zero state) are followed."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(_repeat_state(part, k) for part in state)
    return np.repeat(state, k, axis=1)


def _gather_state(state, rows):
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(_gather_state(part, rows) for part in state)
    return np.ascontiguousarray(state[:, rows])


_MIX = (np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(z):
    """SplitMix64's finaliser: a bijection of uint64 whose outputs look
    independent for neighbouring inputs."""
    z = (z ^ (z >> np.uint64(30))) * _MIX[0]
    z = (z ^ (z >> np.uint64(27))) * _MIX[1]
    return z ^ (z >> np.uint64(31))


def _row_uniforms(key, rows, steps):
    """Uniform [0, 1) draws ``(steps, len(rows))``: entry ``(t, j)`` is a
    hash of (``key``, ``rows[j]``, ``t``) alone (counter-based), so a row
    draws the same numbers whichever batch or rank holds it."""
    base = np.random.SeedSequence(list(key)).generate_state(1, np.uint64)[0]
    with np.errstate(over="ignore"):
        row = _mix64(base ^ (np.asarray(rows, dtype=np.uint64) * _GOLDEN))
        bits = _mix64(row[None, :] + np.arange(1, steps + 1, dtype=np.uint64)[:, None] * _GOLDEN)
    return (bits >> np.uint64(11)) * (1.0 / (1 << 53))
