"""The program each rank runs in the multi-rank tests (tests/distributed/test_distributed.py).

``python distributed_script.py SCENARIO OUTDIR [DTYPE]`` under ``mpiexec -n N``.
The training functions are also imported by the tests to compute the same
runs in one process (``distributed=False``), the reference the ranks must
match.
"""

import os
import sys

import numpy as np

import fastrnn as fr

GLOBAL_BATCH = 10           # not divisible by 3
EXAMPLES = 41               # the last global batch has one row: ranks 1.. get none


def data(seed=0, count=EXAMPLES):
    rng = np.random.default_rng(seed)
    X = [rng.normal(size=(int(rng.integers(2, 9)), 3)) for _ in range(count)]
    y = np.array([np.tanh(x.sum()) + 0.1 * x[-1, 0] for x in X])
    return X, y


class LastStepRegressor:
    """A custom model for fr.Trainer: LSTM -> Linear on the last valid step,
    mean squared error.  ``batch_weight`` lets the trainer launch gradient
    buckets during the backward pass."""

    def __init__(self, dtype, hidden=6, seed=3):
        self.lstm = fr.LSTM(3, hidden, num_layers=2, dtype=dtype, seed=seed)
        self.head = fr.Linear(hidden, 1, dtype=dtype, seed=seed + 1)

    def modules(self):
        return [self.lstm, self.head]

    def batch_weight(self, batch):
        return len(batch.lengths)

    def _forward(self, batch):
        out, _ = self.lstm(batch.inputs.astype(self.head.dtype), lengths=batch.lengths)
        rows = np.arange(len(batch.lengths))
        last = out[batch.lengths - 1, rows]
        return out, rows, self.head(last)[:, 0]

    def train_batch(self, batch):
        out, rows, pred = self._forward(batch)
        err = pred - batch.targets
        d_last = self.head.backward(((2.0 / len(err)) * err)[:, None].astype(out.dtype))
        d_out = np.zeros_like(out)
        d_out[batch.lengths - 1, rows] = d_last
        self.lstm.backward(d_out, input_grad=False)
        return {"loss": float(np.mean(err ** 2)), "mae": float(np.mean(np.abs(err)))}, len(err)

    def evaluate_batch(self, batch):
        _, _, pred = self._forward(batch)
        err = pred - batch.targets
        return {"loss": float(np.mean(err ** 2))}, len(err)


class TwiceRegressor(LastStepRegressor):
    """Runs the head forward and backward twice per step (two halves of the
    batch): its gradients are complete only after the second backward."""

    def train_batch(self, batch):
        out, _ = self.lstm(batch.inputs.astype(self.head.dtype), lengths=batch.lengths)
        rows = np.arange(len(batch.lengths))
        last = out[batch.lengths - 1, rows]
        n, half = len(rows), max(1, len(rows) // 2)
        d_last, errors = np.zeros_like(last), []
        for part in (slice(0, half), slice(half, n)):
            if part.start == part.stop:
                continue
            err = self.head(last[part])[:, 0] - batch.targets[part]
            d_last[part] = self.head.backward(((2.0 / n) * err)[:, None].astype(out.dtype))
            errors.append(err)
        d_out = np.zeros_like(out)
        d_out[batch.lengths - 1, rows] = d_last
        self.lstm.backward(d_out, input_grad=False)
        err = np.concatenate(errors)
        return {"loss": float(np.mean(err ** 2)), "mae": float(np.mean(np.abs(err)))}, n


def weights(modules):
    return {f"{i}/{name}": value.copy() for i, module in enumerate(modules)
            for name, value in module.state_dict().items()}


def train_custom(dtype, distributed, epochs=3, checkpoint=None, resume_from=None,
                 model_class=LastStepRegressor, stats=None):
    X, y = data()
    model = model_class(dtype)
    optimizer = fr.optim.Adam(model.modules(), lr=0.02)
    callbacks = [fr.EarlyStopping(monitor="val_loss", patience=5)]
    if checkpoint is not None:
        callbacks.append(fr.ModelCheckpoint(checkpoint, save_best_only=False))
    trainer = fr.Trainer(model, optimizer, clip_norm=0.5, callbacks=callbacks, verbose=0,
                         schedule=fr.optim.ReduceLROnPlateau(optimizer, patience=0,
                                                             factor=0.5),
                         distributed=distributed)
    loader = fr.data.BatchLoader(X, y.astype(dtype), batch_size=GLOBAL_BATCH, seed=5,
                                 bucket=True)
    history = trainer.fit(loader, epochs=epochs, validation_split=0.25,
                          resume_from=resume_from)
    if stats is not None:
        stats.update(getattr(trainer, "reduction_stats", {}))
    return weights(model.modules()), history.history


def train_task(dtype, distributed, epochs=2):
    X, y = data(seed=1)
    labels = np.where(y > 0, "up", "down")
    clf = fr.SequenceClassifier(hidden_size=5, dtype=dtype, seed=2)
    history = clf.fit(X, labels, epochs=epochs, batch_size=GLOBAL_BATCH, verbose=0,
                      validation_split=0.2, distributed=distributed).history_
    return weights(clf.modules()), history.history


def _words(rng, count):
    return ["".join(rng.choice(list("abcde"), size=int(rng.integers(1, 6))))
            for _ in range(count)]


def train_other_tasks(distributed):
    """The language model (streams split by column), tagger and seq2seq, float64."""
    rng = np.random.default_rng(4)
    results = {}
    lm = fr.LanguageModel(hidden_size=6, embedding_dim=5, dtype="float64", seed=0)
    lm.fit(" ".join(_words(rng, 150)), epochs=2, batch_size=5, bptt=8, verbose=0,
           validation_split=0.1, distributed=distributed)
    results["lm"] = lm
    sentences = [_words(rng, int(rng.integers(2, 7))) for _ in range(23)]
    tags = [["V" if w[0] in "ae" else "C" for w in s] for s in sentences]
    tagger = fr.SequenceTagger(hidden_size=5, embedding_dim=4, dtype="float64", seed=1)
    tagger.fit(sentences, tags, epochs=2, batch_size=7, verbose=0, distributed=distributed)
    results["tagger"] = tagger
    sources = _words(rng, 25)
    s2s = fr.Seq2Seq(hidden_size=6, embedding_dim=4, tokenizer="char", dtype="float64",
                     seed=2)
    s2s.fit(sources, [w[::-1] for w in sources], epochs=2, batch_size=8, verbose=0,
            distributed=distributed)
    results["seq2seq"] = s2s
    return {name: (weights(model.modules()), model.history_.history)
            for name, model in results.items()}


def train_weighted(distributed):
    """Task models with class and sample weights, float64: each rank's loss is
    normalised by its own weights, the reduction must make it the global
    batch's.  Some sample weights are 0; the last global batch has one row."""
    X, y = data(seed=6)
    labels = np.where(y > 0.3, "up", np.where(y < -0.3, "down", "flat"))
    sample = np.random.default_rng(7).choice([0.0, 0.5, 1.0, 3.0], size=len(X))
    results = {}
    for name, output, class_weight in (("softmax", "softmax", {"up": 4.0, "flat": 0.5}),
                                       ("sigmoid", "sigmoid", "balanced")):
        target = labels if output == "softmax" else np.where(y > 0, "up", "down")
        clf = fr.SequenceClassifier(hidden_size=5, dtype="float64", seed=2, output=output)
        clf.fit(X, target, epochs=2, batch_size=GLOBAL_BATCH, verbose=0,
                class_weight=class_weight, sample_weight=sample, distributed=distributed)
        results[name] = clf
    rng = np.random.default_rng(8)
    sentences = [_words(rng, int(rng.integers(2, 7))) for _ in range(23)]
    tags = [["V" if w[0] in "ae" else "N" if len(w) > 3 else "C" for w in s]
            for s in sentences]
    tagger = fr.SequenceTagger(hidden_size=5, embedding_dim=4, dtype="float64", seed=1)
    tagger.fit(sentences, tags, epochs=2, batch_size=7, verbose=0, class_weight="balanced",
               sample_weight=sample[:23], distributed=distributed)
    results["tagger"] = tagger
    return {name: (weights(model.modules()), model.history_.history)
            for name, model in results.items()}


def train_scheduled(distributed, epochs=3, checkpoint=None, resume_from=None):
    """Seq2Seq with scheduled sampling (teacher_forcing=0.5), float64: each
    example's replaced inputs must not depend on the rank that holds it.  The
    global batch of 10 does not divide by 3 and the last one has one row."""
    rng = np.random.default_rng(11)
    sources = _words(rng, EXAMPLES)
    s2s = fr.Seq2Seq(hidden_size=6, embedding_dim=4, tokenizer="char", dtype="float64",
                     seed=3)
    callbacks = [] if checkpoint is None else [fr.ModelCheckpoint(checkpoint,
                                                                  save_best_only=False)]
    s2s.fit(sources, [w[::-1] for w in sources], epochs=epochs, batch_size=GLOBAL_BATCH,
            teacher_forcing=0.5, verbose=0, callbacks=callbacks, resume_from=resume_from,
            distributed=distributed)
    return weights(s2s.modules()), s2s.history_.history


class _ReductionStats(fr.training.Callback):
    """Keeps the gradient reducer's counts at the end of each epoch."""

    def __init__(self):
        self.stats = {}

    def on_epoch_end(self, epoch, logs=None):
        self.stats = self.trainer._run_state.reducer.stats()


def train_seq2seq(distributed, attention):
    """Seq2Seq with and without attention, float64 (its buckets launch during
    the backward pass); returns (weights, history) and the reducer's counts."""
    rng = np.random.default_rng(9)
    sources = _words(rng, 21)
    s2s = fr.Seq2Seq(hidden_size=6, embedding_dim=4, tokenizer="char", dtype="float64",
                     seed=2, attention=attention)
    counts = _ReductionStats()
    s2s.fit(sources, [w[::-1] for w in sources], epochs=2, batch_size=8, verbose=0,
            callbacks=[counts] if distributed else None, distributed=distributed)
    return (weights(s2s.modules()), s2s.history_.history), counts.stats


class _RequestOnRank(fr.training.Callback):
    """On one rank only, asks to stop at a batch's start, as a Ctrl-C
    (``interrupt``) or as ``stop_training``; no ``on_batch_end``, so the
    request travels in the batch's gradient reduction."""

    def __init__(self, rank, batch, interrupt):
        self.rank, self.batch, self.interrupt = rank, batch, interrupt

    def on_batch_begin(self, step, logs=None):
        if fr.distributed.init().rank == self.rank and step == self.batch:
            if self.interrupt:
                self.trainer._interrupt_requested = True
            else:
                self.trainer.stop_training = True


def train_stop_requests(scenario):
    """Rank 1 asks to stop at batch 2 (before the reduction) or during the
    optimizer step of batch 2 (after it: held for the next reduction).
    Returns (batches trained, stop reason) of this rank."""
    X, y = data()
    model = LastStepRegressor("float64")
    optimizer = fr.optim.SGD(model.modules(), lr=0.1)
    callbacks = []
    if scenario in ("interrupt", "stop"):
        callbacks.append(_RequestOnRank(1, 2, scenario == "interrupt"))
    trainer = fr.Trainer(model, optimizer, callbacks=callbacks, verbose=0, distributed=True)
    if scenario == "late_interrupt":
        step = optimizer.step

        def step_then_interrupt():
            step()
            if fr.distributed.init().rank == 1 and trainer.global_step == 2:
                trainer._interrupt_requested = True
        optimizer.step = step_then_interrupt
    history = trainer.fit(fr.data.BatchLoader(X, y, batch_size=GLOBAL_BATCH), epochs=3)
    return trainer.global_step, history.stop_reason


def shard_loaders(size, drop_last=True):
    """Rank r's BatchLoader over its own part X[r::size] of the data."""
    X, y = data()
    return [fr.data.BatchLoader(X[r::size], y[r::size], batch_size=GLOBAL_BATCH, seed=7,
                                shard=(r, size), drop_last=drop_last) for r in range(size)]


def train_sharded(source, distributed, epochs=2):
    model = LastStepRegressor("float64")
    trainer = fr.Trainer(model, fr.optim.Adam(model.modules(), lr=0.02), verbose=0,
                         distributed=distributed)
    history = trainer.fit(source, epochs=epochs)
    return weights(model.modules()), history.history


def _sharded_task_data():
    """Data for the sharded task models (the last 9 rows are held out for
    validation; every training set ends in a partial global batch of at least
    3 rows, so each of 3 ranks has a row there).  Row 0 holds every token, so
    the vocabulary built from the ranks' parts (ties in rank order) is the
    one of the whole data (ties in data order)."""
    rng = np.random.default_rng(11)
    words = _words(rng, 60)
    texts = [" ".join(words)] + [" ".join(rng.choice(words, size=int(rng.integers(2, 7))))
                                 for _ in range(42)]      # 43 - 9 held out = 3 * 10 + 4
    labels = ["pos" if len(t) % 3 else "neg" for t in texts]
    sentences = [words] + [list(rng.choice(words, size=int(rng.integers(2, 7))))
                           for _ in range(25)]             # 26 - 9 held out = 2 * 7 + 3
    tags = [["V" if w[0] in "ae" else "C" for w in s] for s in sentences]
    sources = ["abcde"] + _words(rng, 27)                   # 28 - 9 held out = 2 * 8 + 3
    X, y = data(seed=2, count=43)
    steps = [np.cumsum(x[:, 0]) for x in X]     # per-step targets: a mean over real steps
    return {"classifier": (texts, labels, 10), "tagger": (sentences, tags, 7),
            "seq2seq": (sources, [w[::-1] for w in sources], 8), "regressor": (X, y, 10),
            "regressor_steps": (X, steps, 10)}


def train_sharded_tasks(rank=None, size=None):
    """Each task model on sharded data without shuffling: rank ``rank`` of
    ``size`` fits on its rows ``shard_rows(...)`` with distributed="sharded";
    ``rank=None``: one process on the whole data."""
    models = {"classifier": fr.SequenceClassifier(hidden_size=5, embedding_dim=4,
                                                  dtype="float64", seed=2),
              "tagger": fr.SequenceTagger(hidden_size=5, embedding_dim=4, dtype="float64",
                                          seed=1),
              "seq2seq": fr.Seq2Seq(hidden_size=6, embedding_dim=4, tokenizer="char",
                                    dtype="float64", seed=2),
              "regressor": fr.SequenceRegressor(hidden_size=5, dtype="float64", seed=3),
              "regressor_steps": fr.SequenceRegressor(hidden_size=5, per_step=True,
                                                      dtype="float64", seed=4)}
    results = {}
    for name, (X, y, batch) in _sharded_task_data().items():
        n_val = 9
        train_rows, val_rows = np.arange(len(X) - n_val), np.arange(len(X) - n_val, len(X))
        distributed = False
        if rank is not None:
            train_rows = train_rows[fr.distributed.shard_rows(len(train_rows), batch, rank,
                                                              size)]
            val_rows = val_rows[rank::size]
            distributed = "sharded"
        pick = lambda values, rows: [values[i] for i in rows]      # noqa: E731
        model = models[name]
        model.fit(pick(X, train_rows), pick(y, train_rows), epochs=2, batch_size=batch,
                  shuffle=False, verbose=0, distributed=distributed,
                  validation_data=(pick(X, val_rows), pick(y, val_rows)))
        results[name] = (weights(model.modules()), model.history_.history)
    return results


def train_sharded_lm(rank, size):
    """A language model on a different text per rank: the vocabulary is the
    union (the token 'zzz' is only in the last rank's text)."""
    rng = np.random.default_rng(20 + rank)
    text = " ".join(_words(rng, 90 + 13 * rank)) + (" zzz" if rank == size - 1 else "")
    lm = fr.LanguageModel(level="word", hidden_size=6, embedding_dim=5, dtype="float64",
                          seed=0)
    lm.fit(text, epochs=2, batch_size=5, bptt=6, verbose=0, validation_split=0.1,
           distributed="sharded")
    state = weights(lm.modules())
    state["has_zzz"] = np.array(["zzz" in lm.vocab_])
    state["vocab_size"] = np.array([len(lm.vocab_)])
    return state, lm.history_.history


def _save(outdir, name, rank, result):
    state, history = result
    arrays = dict(state)
    for key, values in history.items():
        arrays["history/" + key] = np.asarray(values, dtype=np.float64)
    np.savez(os.path.join(outdir, f"{name}_rank{rank}.npz"), **arrays)


def main(scenario, outdir, dtype="float64"):
    ctx = fr.distributed.init()
    if scenario == "equal":
        _save(outdir, "custom", ctx.rank, train_custom(dtype, True))
        _save(outdir, "task", ctx.rank, train_task(dtype, True))
    elif scenario == "shard":
        _save(outdir, "shard", ctx.rank, train_sharded(shard_loaders(ctx.size)[ctx.rank], True))
    elif scenario == "shard_uneven":        # without drop_last the ranks' batch counts differ
        _expect_error(ctx, lambda: train_sharded(
            shard_loaders(ctx.size, drop_last=False)[ctx.rank], True))
    elif scenario == "shard_tasks":
        for name, result in train_sharded_tasks(ctx.rank, ctx.size).items():
            _save(outdir, name, ctx.rank, result)
        _save(outdir, "lm", ctx.rank, train_sharded_lm(ctx.rank, ctx.size))
    elif scenario == "task_text_mismatch":      # full data, but rank 1's texts differ
        texts, labels, _ = _sharded_task_data()["classifier"]
        if ctx.rank == 1:
            texts = texts[:1] + texts[2:] + texts[1:2]
        _expect_error(ctx, lambda: fr.SequenceClassifier(hidden_size=3).fit(
            texts, labels, epochs=1, verbose=0, distributed=True))
    elif scenario == "task_label_mismatch":     # rank 1 has a label rank 0 never saw
        texts, labels, _ = _sharded_task_data()["classifier"]
        if ctx.rank == 1:
            labels = labels[:-1] + ["other"]
        _expect_error(ctx, lambda: fr.SequenceClassifier(hidden_size=3).fit(
            texts, labels, epochs=1, verbose=0, distributed=True),
            (fr.distributed.DistributedError, ValueError))
    elif scenario == "threads":                 # no thread count chosen: init() shares
        from threadpoolctl import threadpool_info
        blas = sorted({pool["num_threads"] for pool in threadpool_info()
                       if pool["user_api"] == "blas"})
        print(f"rank {ctx.rank}: local_size={ctx.local_size} threads={ctx.threads} "
              f"kernel={fr.get_num_threads()} blas={blas}", flush=True)
    elif scenario == "tasks":
        for name, result in train_other_tasks(True).items():
            _save(outdir, name, ctx.rank, result)
    elif scenario == "seq2seq_buckets":      # one bucket per array
        ctx.bucket_bytes = 64
        for attention in (None, "general"):
            result, stats = train_seq2seq(True, attention)
            _save(outdir, f"seq2seq_{attention}", ctx.rank, result)
            print(f"rank {ctx.rank}: seq2seq_{attention} {stats}", flush=True)
    elif scenario == "stop_requests":
        for case in ("interrupt", "stop", "late_interrupt"):
            steps, reason = train_stop_requests(case)
            print(f"rank {ctx.rank}: {case} stopped after {steps} steps: {reason}",
                  flush=True)
    elif scenario == "weighted":
        for name, result in train_weighted(True).items():
            _save(outdir, name, ctx.rank, result)
    elif scenario == "scheduled":        # 3 epochs; then 2, checkpointed
        _save(outdir, "scheduled", ctx.rank, train_scheduled(True))
        _save(outdir, "scheduled_first", ctx.rank, train_scheduled(
            True, epochs=2, checkpoint=os.path.join(outdir, "scheduled.npz")))
    elif scenario == "scheduled_resume":     # the checkpoint, on another rank count
        _save(outdir, "scheduled_resumed", ctx.rank, train_scheduled(
            True, checkpoint=os.path.join(outdir, "scheduled3.npz"),
            resume_from=os.path.join(outdir, "scheduled.npz")))
    elif scenario == "buckets":          # one bucket per array; a layer run twice
        ctx.bucket_bytes = 64
        for name, model_class in (("small", LastStepRegressor), ("twice", TwiceRegressor)):
            stats = {}
            _save(outdir, name, ctx.rank, train_custom(dtype, True, model_class=model_class,
                                                       stats=stats))
            print(f"rank {ctx.rank}: {name} {stats}", flush=True)
    elif scenario == "checkpoint":       # 2 epochs, checkpoint after each
        _save(outdir, "first", ctx.rank,
              train_custom(dtype, True, epochs=2,
                           checkpoint=os.path.join(outdir, "ckpt.npz")))
    elif scenario == "resume":           # continue the checkpoint to 3 epochs
        _save(outdir, "resumed", ctx.rank,
              train_custom(dtype, True, checkpoint=os.path.join(outdir, "ckpt3.npz"),
                           resume_from=os.path.join(outdir, "ckpt.npz")))
    elif scenario == "config_mismatch":
        X, y = data()
        model = LastStepRegressor("float64", hidden=6 + ctx.rank)
        _expect_error(ctx, lambda: fr.Trainer(
            model, fr.optim.SGD(model.modules(), lr=0.1), verbose=0, distributed=True
        ).fit(fr.data.BatchLoader(X, y, batch_size=GLOBAL_BATCH), epochs=1))
    elif scenario == "data_mismatch":
        X, y = data(count=EXAMPLES + ctx.rank)
        model = LastStepRegressor("float64")
        _expect_error(ctx, lambda: fr.Trainer(
            model, fr.optim.SGD(model.modules(), lr=0.1), verbose=0, distributed=True
        ).fit(fr.data.BatchLoader(X, y, batch_size=GLOBAL_BATCH), epochs=1))
    elif scenario == "checkpoint_missing_on_rank_1":
        missing = os.path.join(outdir, "ckpt.npz" if ctx.rank == 0 else "nowhere.npz")
        _expect_error(ctx, lambda: train_custom(dtype, True, resume_from=missing,
                                                checkpoint=os.path.join(outdir, "x.npz")),
                      (fr.distributed.DistributedError, FileNotFoundError))
    elif scenario in ("dies", "raises"):
        _failing_rank(ctx, scenario)
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")
    print(f"rank {ctx.rank}: done", flush=True)


def _expect_error(ctx, run, errors=(fr.distributed.DistributedError,)):
    try:
        run()
    except errors as exc:
        print(f"rank {ctx.rank}: {type(exc).__name__}: {exc}", flush=True)
    else:
        print(f"rank {ctx.rank}: no error", flush=True)


def _failing_rank(ctx, scenario):
    """Rank 1 dies (os._exit) or raises at its third batch; the others are then
    waiting for it in the gradient reduction."""
    X, y = data()
    model = LastStepRegressor("float64")
    steps = []

    def on_batch_end(step, logs):
        steps.append(step)
        if ctx.rank == 1 and len(steps) == 3:
            if scenario == "dies":
                os._exit(7)
            raise RuntimeError("rank 1 failed on purpose")

    trainer = fr.Trainer(model, fr.optim.SGD(model.modules(), lr=0.1), verbose=0,
                         callbacks=[fr.training.LambdaCallback(on_batch_end=on_batch_end)],
                         distributed=True)
    trainer.fit(fr.data.BatchLoader(X, y, batch_size=GLOBAL_BATCH), epochs=50)


if __name__ == "__main__":
    main(*sys.argv[1:])
