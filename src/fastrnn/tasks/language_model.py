"""Language modelling: predict the next character or word; generate text.

The training texts become one token stream, ``<eos> text_1 <eos> text_2
<eos> ...``: every text is preceded by the separator ``<eos>``, so the model
learns how a text begins (what follows ``<eos>``) and how it ends.  The
stream is cut into ``batch_size`` parallel columns read in chunks of
``bptt`` steps (:class:`fastrnn.data.StreamBatcher`) and trained with
truncated backpropagation through time: the hidden state is carried from
one chunk to the next as a constant, so each column is read as one
continuous text while gradients span at most ``bptt`` steps.
"""

import math
import warnings

import numpy as np

from ..data import StreamBatcher
from ..layers import Linear
from ..losses import CrossEntropyLoss
from ..text import BOS, EOS, PAD, UNK, Vocab, get_tokenizer
from .._validation import Boolean, Integer, Options, Real, check_seed, layer_seeds
from ..distributed.shared import fit_plan
from .base import TaskModel, eval_mode
from .inputs import check_vocab, check_vocab_limits
from .stack import RecurrentStack
from .streaming import LanguageModelStream

LEVELS = ("char", "word")
LN2 = math.log(2.0)


def _check_texts(value, name):
    """A list of str from one text or an iterable of texts (a list, a
    generator, a numpy array of strings)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, np.ndarray) and value.dtype.kind in "UO" and value.ndim == 1:
        value = value.tolist()
    texts = None
    if not isinstance(value, (bytes, np.ndarray, dict)):
        try:
            texts = list(value)
        except TypeError:
            pass
    if texts is None:
        raise TypeError(f"{name} must be a str or a list of str, got "
                        f"{type(value).__name__}")
    if not texts:
        raise ValueError(f"{name} is an empty list: need at least one text")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{name}[{index}] must be a str, got {type(text).__name__}")
    return texts


class LanguageModel(TaskModel):
    """Character- or word-level recurrent language model with text generation.

    Args:
        level: "char" (every character is a token) or "word" (words and
            punctuation, see ``fastrnn.text.WordTokenizer``).
        cell: "lstm", "gru" or "rnn".
        cell_options: dict of extra recurrent-layer options, e.g.
            {"reset_after": False} (GRU) or {"peepholes": True} (LSTM).
        hidden_size, num_layers: size of the recurrent stack (unidirectional:
            a language model only sees the past).
        dropout: dropout on the recurrent outputs (and between layers).
        input: "embedding" (learned vectors of ``embedding_dim``) or "onehot"
            (no input weights; good for small character vocabularies).
        pretrained, freeze_embedding: initial embedding vectors (file or
            array, rows matched through the vocabulary) and whether to keep
            them fixed.
        lower: casefold texts before tokenizing.
        min_freq, max_vocab: vocabulary limits; rarer tokens become ``<unk>``.
        dtype: "float32" or "float64".
        seed: None or an int >= 0; seeds the weights, dropout and nothing
            else (data order is fixed; ``generate`` has its own seed).
        tie_weights: the output layer uses the input embedding matrix as its
            weight (Press & Wolf 2017; one (V, D) matrix, its gradient the
            sum of both uses; the output bias stays separate).  Needs
            ``input="embedding"`` and an embedding the size of the
            recurrent output (``embedding_dim == hidden_size``), and a
            trainable embedding (not ``freeze_embedding``).
        epochs, batch_size, optimizer, lr, weight_decay, clip_norm,
            validation_split, verbose, bptt: training settings, as in ``fit``
            (whose keywords override them for one call).  There is no
            ``shuffle``: the stream is read in order, the state carried.

    Example::

        lm = fr.LanguageModel(level="char", hidden_size=128)
        lm.fit(corpus, epochs=5, bptt=64)
        lm.evaluate(held_out)       # {'loss': ..., 'perplexity': ..., 'bits_per_char': ...}
        lm.generate("Once upon", length=100, temperature=0.8, seed=0)
    """

    _training_params = ("epochs", "batch_size", "optimizer", "lr", "weight_decay",
                        "clip_norm", "validation_split", "verbose", "bptt")

    def __init__(self, level="char", cell="lstm", hidden_size=128, num_layers=1, dropout=0.0,
                 input="embedding", embedding_dim=64, pretrained=None,
                 freeze_embedding=False, lower=False, min_freq=1, max_vocab=None,
                 tie_weights=False, cell_options=None,
                 dtype="float32", seed=None, epochs=10, batch_size=32,
                 optimizer="adam", lr=None, weight_decay=None, clip_norm=5.0,
                 validation_split=0.0, verbose=1, bptt=64):
        self._store_params(locals())

    # -- building -------------------------------------------------------------------
    def _build(self, vocab):
        self._begin_build()
        self._level = Options(LEVELS)("level", self.level)
        Options(("embedding", "onehot"))("input", self.input)
        network_seed, head_seed = layer_seeds(self.seed, 2)
        self.vocab_ = vocab
        self.network_ = RecurrentStack(
            self.cell, self.input, len(vocab), self.hidden_size, num_layers=self.num_layers,
            bidirectional=False, dropout=self.dropout, embedding_dim=self.embedding_dim,
            pretrained=self.pretrained, vocab=vocab,
            freeze_embedding=Boolean()("freeze_embedding", self.freeze_embedding),
            dtype=self.dtype, seed=network_seed, cell_options=self.cell_options)
        if Boolean()("tie_weights", self.tie_weights):
            self.head_ = TiedOutput(self.network_, seed=head_seed)
        else:
            self.head_ = Linear(self.network_.output_size, len(vocab), dtype=self.dtype,
                                seed=head_seed)
        self.loss_ = CrossEntropyLoss()
        self._carry = {"train": None, "eval": None}      # state carried between chunks


    def _tokenizer(self):
        return get_tokenizer(Options(LEVELS)("level", self.level), lower=self.lower)

    def _stream(self, texts, name, vocab=None):
        """``<eos> t_1 <eos> t_2 <eos> ...`` as one int64 id array (ids of
        ``vocab``, by default the fitted one).

        Texts without tokens (e.g. only spaces at word level) are skipped."""
        vocab = self.vocab_ if vocab is None else vocab
        parts = [np.array([EOS], dtype=np.int64)]
        for text in texts:
            ids = vocab.encode(vocab.tokenizer.tokenize(text))
            if ids.size:
                parts.append(ids)
                parts.append(parts[0])
        if len(parts) == 1:
            raise ValueError(f"{name} contains no tokens (every text is empty)")
        return np.concatenate(parts)

    # -- truncated BPTT ----------------------------------------------------------------
    def _start_state(self, key, chunk):
        """The state a chunk starts from: zeros on a stream's first chunk,
        else the previous chunk's final state (a constant: no gradient)."""
        carry = self._carry[key]
        if chunk.first or carry is None or carry[0].shape[1] != chunk.inputs.shape[1]:
            return None
        return tuple(carry) if len(carry) == 2 else carry[0]

    def _keep_state(self, key, h_n):
        parts = h_n if isinstance(h_n, tuple) else (h_n,)
        self._carry[key] = [np.array(part, copy=True) for part in parts]

    def _forward_chunk(self, chunk, key):
        out, h_n = self.network_.forward(chunk.inputs, hx=self._start_state(key, chunk))
        self._keep_state(key, h_n)
        return self.head_(out)

    def _metrics(self, loss):
        """Batch metrics; all are linear in the loss, so their token-weighted
        epoch means are exact (perplexity is added by ``epoch_metrics``)."""
        metrics = {"loss": loss}
        if self._level == "char":
            metrics["bits_per_char"] = loss / LN2
        return metrics

    def epoch_metrics(self, metrics):
        """Trainer hook: ``metrics`` (an epoch's means) plus "perplexity", exp
        of the mean loss."""
        return dict(metrics, perplexity=_perplexity(metrics["loss"]))

    # -- Trainer protocol -------------------------------------------------------------
    def on_epoch_begin(self, epoch, training=True):
        """Trainer hook: every pass over a stream (training=True: the training
        stream, False: validation; ``epoch`` is unused) starts from a zero state."""
        key = "train" if training else "eval"
        self._carry[key] = None

    def batch_weight(self, chunk):
        """Trainer protocol: the tokens the loss of ``chunk`` averages over,
        known before the backward pass (distributed training overlaps with it)."""
        return chunk.targets.size

    def train_batch(self, chunk):
        """Trainer protocol: one truncated-BPTT chunk; ``(metrics, predicted tokens)``."""
        logits = self._forward_chunk(chunk, "train")
        loss, d_logits = self.loss_(logits, chunk.targets)
        self.network_.backward(self.head_.backward(d_logits), state_grad=False)
        return self._metrics(loss), chunk.targets.size

    def evaluate_batch(self, chunk):
        """Trainer protocol: the loss of one validation chunk, state carried."""
        loss, _ = self.loss_(self._forward_chunk(chunk, "eval"), chunk.targets)
        return self._metrics(loss), chunk.targets.size

    def extra_state(self):
        """Trainer hook: the carried training state, so a checkpoint written
        between chunks resumes exactly."""
        carry = self._carry["train"]
        return {"carry": None if carry is None else [part.copy() for part in carry]}

    def load_extra_state(self, state):
        """Trainer hook: restore the carried state saved by :meth:`extra_state`
        (checked against the model's cell, layers and hidden size)."""
        carry = state["carry"]
        if carry is not None:
            expected = 2 if self._fitted_param("cell") == "lstm" else 1
            layers, size = self._fitted_param("num_layers"), self._fitted_param("hidden_size")
            # h is proj_size wide for a projected LSTM, c hidden_size
            widths = [self.network_.rnn.proj_size or size, size][:expected]
            carry = [np.asarray(part) for part in carry]
            if len(carry) != expected or any(
                    part.ndim != 3 or (part.shape[0], part.shape[2]) != (layers, width)
                    for part, width in zip(carry, widths)):
                raise ValueError(f"carried state must be {expected} array(s) of shape "
                                 f"({layers}, B, {' or '.join(map(str, widths))}), got "
                                 f"{[part.shape for part in carry]}")
            carry = [np.array(part, dtype=self.network_.dtype) for part in carry]
        self._carry["train"] = carry

    # -- public API -------------------------------------------------------------------
    def fit(self, text_or_texts, epochs=None, batch_size=None, bptt=None,
            validation_data=None, validation_split=None, callbacks=None, verbose=None,
            optimizer=None, lr=None, clip_norm=None, weight_decay=None, resume_from=None,
            distributed=False):
        """Train on a text or a list of texts; returns the model, with the
        History in ``history_``.

        Args:
            text_or_texts: a str or a list of str (joined with ``<eos>``).
            validation_data: held-out text(s), scored after every epoch
                (takes precedence over ``validation_split``).
            callbacks, resume_from, distributed: as ``fr.Trainer``.
            epochs, batch_size, bptt, validation_split, verbose, optimizer, lr,
                clip_norm, weight_decay: override the constructor's settings
                for this call (None: use them).  batch_size: parallel
                columns of the stream; bptt: steps per chunk, gradients flow
                back at most this far; validation_split: fraction in [0, 1)
                of the token stream, taken from its end, held out for
                validation; clip_norm: the default 5.0 matters, a rare long
                dependency can make one chunk's gradient explode and undo
                many steps of training.

        Epoch metrics: ``loss`` (mean cross-entropy per predicted token, in
        nats), ``perplexity`` (exp of the mean loss) and, at char level,
        ``bits_per_char`` (loss / ln 2), each also as ``val_*``.  Validation
        streams are read with ``min(batch_size, (n - 1) // bptt)`` columns (at
        least 1), so every column spans at least one chunk.  Per-batch logs
        (``on_batch_end``) carry ``loss`` and ``bits_per_char`` only.

        The hidden state carried between chunks is part of the Trainer's
        checkpoints (``extra_state``), so a run resumed mid-epoch continues
        exactly.
        """
        options = self._fit_options(epochs=epochs, batch_size=batch_size, bptt=bptt,
                                    validation_split=validation_split, verbose=verbose,
                                    optimizer=optimizer, lr=lr, clip_norm=clip_norm,
                                    weight_decay=weight_decay)
        batch_size, bptt = options["batch_size"], Integer(low=1)("bptt", options["bptt"])
        validation_split = options["validation_split"]
        Options(("embedding", "onehot"))("input", self.input)
        check_vocab_limits(self.min_freq, self.max_vocab)
        texts = _check_texts(text_or_texts, "text_or_texts")
        plan = fit_plan(distributed)
        vocab = self._fit_vocab(plan, texts)
        stream, held_out = self._train_streams(texts, vocab, validation_data,
                                               validation_split, batch_size)
        stream = self._ranks_stream(plan, stream, batch_size)
        self._build(vocab)     # only now: a refused call leaves a fitted model as it was
        train, validation = self._batchers(plan, stream, held_out, batch_size, bptt)
        return self._train(train, validation, options, callbacks, resume_from, plan)

    @staticmethod
    def _ranks_stream(plan, stream, batch_size):
        """The training stream this rank reads: checked equal on every rank
        (full data), or cut to the shortest rank's (sharded); too short a
        stream for ``batch_size`` columns is an error."""
        if plan is not None:
            plan.check_same("the token stream of text_or_texts", [stream])
        if plan is not None and plan.sharded:
            return plan.common_stream(stream, batch_size)
        if len(stream) < batch_size + 1:
            raise ValueError(f"text_or_texts is too short for batch_size={batch_size}: "
                             f"{len(stream)} tokens (with <eos> separators) give fewer "
                             f"than 1 step per column; need at least {batch_size + 1} "
                             f"tokens or a smaller batch_size")
        return stream

    @staticmethod
    def _batchers(plan, stream, held_out, batch_size, bptt):
        """``(train, validation or None)`` StreamBatchers; validation streams
        are read in ``min(batch_size, (n - 1) // bptt)`` columns (at least 1,
        and one per rank)."""
        shard = None if plan is None else plan.shard
        train = StreamBatcher(stream, batch_size, bptt, shard=shard)
        if held_out is None:
            return train, None
        columns = max(1, min(batch_size, (len(held_out) - 1) // bptt))
        if shard is not None:
            columns = max(columns, shard[1])    # a stream for every rank
        return train, StreamBatcher(held_out, columns, bptt, shard=shard)

    def _fit_vocab(self, plan, texts):
        """The vocabulary of the training ``texts`` under the model's limits:
        built here, or once for all ranks (``plan``)."""
        tokenizer = self._tokenizer()
        corpus = [tokens for tokens in (tokenizer.tokenize(text) for text in texts) if tokens]
        if not corpus:
            raise ValueError("text_or_texts contains no tokens (every text is empty)")

        def check(vocab):
            return check_vocab(vocab, "text_or_texts", self.min_freq, self.max_vocab)
        if plan is None:
            return check(Vocab.build(corpus, tokenizer=tokenizer, min_freq=self.min_freq,
                                     max_size=self.max_vocab))
        return plan.vocab(corpus, tokenizer, self.min_freq, self.max_vocab, check)

    def _train_streams(self, texts, vocab, validation_data, validation_split, batch_size):
        """``(training ids, held-out ids or None)``: the held-out stream from
        ``validation_data``, else the last ``validation_split`` of the texts."""
        stream = self._stream(texts, "text_or_texts", vocab)
        if validation_data is not None:
            return stream, self._stream(_check_texts(validation_data, "validation_data"),
                                        "validation_data", vocab)
        if not validation_split:
            return stream, None
        cut = int(round(len(stream) * (1.0 - validation_split)))
        if cut < batch_size + 1 or len(stream) - cut < 1:
            raise ValueError(f"validation_split={validation_split} leaves "
                             f"{cut} training and {len(stream) - cut} validation "
                             f"tokens of {len(stream)}; training needs at least "
                             f"batch_size + 1 = {batch_size + 1} and validation 1")
        return stream[:cut], stream[cut - 1:]   # every token predicted once

    def evaluate(self, text_or_texts, bptt=256, batch_size=1):
        """Loss, perplexity (and bits per character) of the model on
        ``text_or_texts`` (a str or a list of str).

        The text is read as in training (``<eos>``-separated stream, state
        carried across chunks of ``bptt`` steps) in ``batch_size`` columns;
        with the default ``batch_size=1`` every token is predicted from all
        of the stream before it, and ``bptt`` only bounds the memory used.
        Returns ``{"loss", "perplexity"}`` plus ``"bits_per_char"`` at char
        level; the loss is the mean over all predicted tokens (including the
        ``<eos>`` ending each text).
        """
        self._check_fitted()
        Integer(low=1)("bptt", bptt)
        Integer(low=1)("batch_size", batch_size)
        stream = self._stream(_check_texts(text_or_texts, "text_or_texts"), "text_or_texts")
        if len(stream) < batch_size + 1:
            raise ValueError(f"text_or_texts is too short for batch_size={batch_size}: "
                             f"{len(stream)} tokens (with <eos> separators); need at "
                             f"least {batch_size + 1}")
        total = count = 0.0
        with eval_mode(self.modules()):
            saved = self._carry["eval"]
            try:
                self._carry["eval"] = None
                for chunk in StreamBatcher(stream, batch_size, bptt):
                    loss, _ = self.loss_(self._forward_chunk(chunk, "eval"), chunk.targets)
                    total += loss * chunk.targets.size
                    count += chunk.targets.size
            finally:
                self._carry["eval"] = saved
        return self.epoch_metrics(self._metrics(total / count))

    def generate(self, prompt="", length=200, temperature=1.0, top_k=None, top_p=None,
                 seed=None, stop_at_eos=False):
        """Continue ``prompt`` with ``length`` sampled tokens.

        The prompt is read as the start of a new text (after ``<eos>``, the
        stream separator; an empty prompt starts from ``<eos>`` alone) in
        one forward pass, then tokens are drawn one at a time from
        ``softmax(logits / temperature)``, restricted by ``top_k`` (the k most
        probable tokens) and ``top_p`` (nucleus: the fewest most probable
        tokens whose probability sums to at least ``top_p``), both applied
        when given.  ``<pad>``, ``<unk>`` and ``<bos>`` are never drawn; nor is
        ``<eos>`` unless ``stop_at_eos`` (then drawing it ends the text early).

        Args:
            prompt: str; tokens the vocabulary lacks are read as ``<unk>``
                (with a warning).
            length: number of tokens to generate (int >= 0).
            temperature: >= 0; 0 means greedy (always the most probable
                token, ties to the lowest id), < 1 sharpens, > 1 flattens.
            top_k: None or int >= 1.
            top_p: None or a number in (0, 1].
            seed: None or an int >= 0, the sampling generator's seed: same
                seed, same text.
            stop_at_eos: allow ``<eos>`` and stop when it is drawn.

        Returns at char level the prompt followed by the generated
        characters; at word level the prompt's and the generated words
        joined by the tokenizer's ``detokenize`` (prompt words as tokenized:
        casefolded with ``lower=True``).
        """
        self._check_fitted()
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
        length = Integer(low=0)("length", length)
        temperature = Real(0.0, math.inf)("temperature", temperature)
        if top_k is not None:
            top_k = Integer(low=1)("top_k", top_k)
        if top_p is not None:
            top_p = Real(0.0, 1.0, low_open=True)("top_p", top_p)
        stop_at_eos = Boolean()("stop_at_eos", stop_at_eos)
        rng = np.random.default_rng(check_seed(seed))
        tokens = self._prompt_tokens(prompt)
        ids = np.concatenate([[EOS], self.vocab_.encode(tokens)]).astype(np.int64)
        banned = np.zeros(len(self.vocab_), dtype=bool)
        banned[[PAD, UNK, BOS]] = True
        banned[EOS] = not stop_at_eos
        generated = self._sample_after(ids, length, banned, (temperature, top_k, top_p), rng)
        words = [self.vocab_.lookup(token) for token in generated]
        if self._level == "char":
            return prompt + "".join(words)
        return self.vocab_.tokenizer.detokenize(tokens + words)

    def _prompt_tokens(self, prompt):
        """The prompt's tokens, with one warning for those the vocabulary lacks."""
        tokens = self.vocab_.tokenizer.tokenize(prompt)
        unknown = [token for token in tokens if token not in self.vocab_]
        if unknown:
            shown = ", ".join(map(repr, list(dict.fromkeys(unknown))[:5]))
            warnings.warn(f"prompt has {len(unknown)} token(s) not in the vocabulary "
                          f"({shown}); they are read as <unk>", UserWarning, stacklevel=3)
        return tokens

    def _sample_after(self, ids, length, banned, sampling, rng):
        """Up to ``length`` token ids drawn one at a time after reading ``ids``
        (``sampling``: temperature, top_k, top_p); a drawn ``<eos>`` ends them."""
        read = self._token_reader()
        for token in ids:
            logits = read(int(token))
        generated = []
        for step in range(length):
            token = _sample(logits, banned, *sampling, rng)
            if token == EOS:
                break
            generated.append(token)
            if step + 1 < length:
                logits = read(token)
        return generated

    def _token_reader(self):
        """``read(token_id)`` -> the next-token logits, the state carried.
        One token at a time through a stream (the same numbers as a forward
        pass over the sequence: streams equal whole-sequence runs bit for
        bit); a network that cannot stream (cell="jordan") steps its forward."""
        if hasattr(self.network_.rnn, "stream"):
            return self.stream().logits
        state = None

        def read(token):
            nonlocal state
            with eval_mode(self.modules()):
                out, state = self.network_.forward(np.array([[token]], dtype=np.int64),
                                                   hx=state)
                return self.head_(out[0])[0]
        return read

    # -- ONNX -------------------------------------------------------------------------
    def _onnx_sequences(self, X):
        """Each text as the model reads it: ``<eos>`` (the stream separator,
        where a text starts) then its token ids."""
        vocab = self.vocab_
        return [np.concatenate([[EOS], vocab.encode(vocab.tokenizer.tokenize(text))])
                .astype(np.int64) for text in _check_texts(X, "X")]

    def _onnx_inputs(self):
        return {"ids": "int64 (batch, time): <eos> (id 3) then the text's token ids, "
                       "padded with 0 (<pad>)", "level": self._level, "lower": self.lower,
                "unknown_id": UNK}

    def stream(self):
        """A :class:`~fastrnn.tasks.streaming.LanguageModelStream`: ``step(token)``
        returns the next-token probabilities after reading ``token``, with
        the state carried.  A new stream starts a new sequence: feed "<eos>"
        first to read what follows as the start of a text, as ``generate`` does."""
        return LanguageModelStream(self)

    # -- saving -----------------------------------------------------------------------
    _onnx_head = "tokens"         # its ONNX graph output (tasks.onnx_export.HEADS)

    def _fitted_state(self):
        return {"vocab": self.vocab_.to_dict()}

    def _restore(self, state):
        self._build(Vocab.from_dict(state["vocab"]))


class TiedOutput(Linear):
    """The output layer of a weight-tied language model: logits = x E^T + b
    with E the embedding's live (V, D) weight.

    The matrix is listed (and saved) once, by the embedding; this layer
    lists only its bias.  Its weight and weight gradient are the
    embedding's arrays, looked up at every pass (``Embedding.freeze``
    replaces the gradient array), so ``backward`` adds its share to the
    same gradient the embedding adds to.
    """

    def __init__(self, network, seed=None):
        embedding = network.embedding
        if embedding is None:
            raise ValueError("tie_weights=True needs input='embedding' (the output layer "
                             "shares the embedding matrix), got input='onehot'")
        if embedding.freeze:
            raise ValueError("tie_weights=True needs a trainable embedding: with "
                             "freeze_embedding=True the shared matrix could not learn")
        if embedding.embedding_dim != network.output_size:
            raise ValueError(f"tie_weights=True needs embedding_dim == hidden_size (the "
                             f"output layer reads {network.output_size} features and "
                             f"shares the (vocabulary, embedding_dim) matrix), got "
                             f"embedding_dim={embedding.embedding_dim}, "
                             f"hidden_size={network.output_size}")
        super().__init__(network.output_size, embedding.num_embeddings,
                         dtype=embedding.dtype, seed=seed)
        self.embedding = embedding
        self._share()

    def _new_parameter(self, name, shape, draw):
        if name != "weight":     # the weight is the embedding's matrix (_share)
            super()._new_parameter(name, shape, draw)

    def _share(self):
        self._params["weight"] = self.embedding.weight
        self.grads["weight"] = self.embedding.grads["weight"]

    def forward(self, x):
        self._share()
        return super().forward(x)

    def backward(self, d_y, input_grad=True):
        self._share()
        return super().backward(d_y, input_grad)

    def named_parameters(self):
        return [("bias", self._params["bias"])]

    def parameters(self):
        return [self._params["bias"]]

    def zero_grad(self):
        self.grads["bias"].fill(0)

    def state_names(self):
        return ["bias"]

    def state_dict(self):
        return {"bias": self._params["bias"].copy()}

    def load_state_dict(self, state_dict):
        weight = self._params.pop("weight")
        try:
            super().load_state_dict(state_dict)
        finally:
            self._params["weight"] = weight

    def __repr__(self):
        return f"TiedOutput({self.in_features}, {self.out_features}, tied to the embedding)"


def _perplexity(mean_loss):
    return math.exp(min(mean_loss, 700.0))     # exp(700) ~ 1e304: stays finite


def _sample(logits, banned, temperature, top_k, top_p, rng):
    """One token id from (V,) logits; see ``LanguageModel.generate``."""
    z = np.asarray(logits, dtype=np.float64).copy()
    z[banned] = -np.inf
    if temperature == 0.0:
        return int(np.argmax(z))
    order = np.argsort(-z, kind="stable")              # most probable first, ties by id
    allowed = len(z) - int(banned.sum())
    keep = allowed if top_k is None else min(top_k, allowed)
    order = order[:keep]
    scaled = (z[order] - z[order[0]]) / temperature   # <= 0: no overflow at tiny temperatures
    probs = np.exp(scaled)
    probs /= probs.sum()
    if top_p is not None:
        cumulative = np.cumsum(probs)
        keep = min(int(np.searchsorted(cumulative, top_p * (1 - 1e-12))) + 1, len(probs))
        order, probs = order[:keep], probs[:keep] / probs[:keep].sum()
    cumulative = np.cumsum(probs)
    index = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
    return int(order[min(index, len(order) - 1)])
