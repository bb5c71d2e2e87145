"""``fastrnn demo``: a character-level language model on the standard library's docstrings."""

import platform
import time

from ..training import Callback
from .common import (CLIError, POSITIVE, POSITIVE_FLOAT, add_threads_option, apply_threads,
                     check_writable, int_at_least, library_call)

PROMPT = "Return the "
# The defaults finish in about two minutes on two cores (the time budget
# stops training if the machine is slower); --quick takes a couple of seconds.
DEFAULTS = dict(max_chars=2_000_000, epochs=3, hidden_size=384, minutes=1.75,
                batch_size=32, bptt=64, embedding_dim=32, lr=3e-3, sample_length=200)
QUICK = dict(max_chars=60_000, epochs=3, hidden_size=64, minutes=0.5,
             batch_size=16, bptt=32, embedding_dim=16, lr=3e-3, sample_length=60)
MIN_CHARS = 2000


def add_parser(commands):
    demo = commands.add_parser(
        "demo", help="train a character-level language model on the Python standard "
                     "library's docstrings (about 2 minutes)",
        description="Build a corpus from the docstrings of this Python's standard library "
                    "(no download), train a character-level LSTM language model on 90% of "
                    "it with a time budget, report validation bits per character next to the "
                    "unigram entropy (what a model without context would score), print "
                    "samples at three temperatures and save the model.")
    demo.add_argument("--max-chars", type=int_at_least(MIN_CHARS), metavar="N",
                      help=f"corpus size in characters (default: {DEFAULTS['max_chars']:,}; "
                           f"--quick: {QUICK['max_chars']:,})")
    demo.add_argument("--epochs", type=POSITIVE, metavar="N",
                      help=f"passes over the corpus (default: {DEFAULTS['epochs']})")
    demo.add_argument("--hidden-size", type=POSITIVE, metavar="H",
                      help=f"LSTM hidden units (default: {DEFAULTS['hidden_size']}; "
                           f"--quick: {QUICK['hidden_size']})")
    demo.add_argument("--minutes", type=POSITIVE_FLOAT, metavar="M",
                      help=f"stop training after M minutes of wall time (default: "
                           f"{DEFAULTS['minutes']}; --quick: {QUICK['minutes']})")
    add_threads_option(demo)
    demo.add_argument("-o", "--output", default="fastrnn-demo.npz", metavar="MODEL",
                      help="where to save the model (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0, metavar="N",
                      help="seed of the weights, the data order and the samples "
                           "(default: %(default)s)")
    demo.add_argument("--quick", action="store_true",
                      help="a tiny corpus and model (a few seconds; for tests)")
    demo.set_defaults(func=demo_command)


class TimeBudget(Callback):
    """Stops training once ``seconds`` of wall time have passed since it began
    (checked after every batch; None: never) and counts the tokens trained and
    the time spent inside training batches, for a throughput figure."""

    def __init__(self, seconds):
        self.seconds = seconds
        self.tokens = 0.0
        self.batch_seconds = 0.0
        self.stopped = False
        self.epoch_batches = 0
        self._epoch_bits = self._epoch_tokens = 0.0

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_batches = 0
        self._epoch_bits = self._epoch_tokens = 0.0

    def on_batch_begin(self, step, logs=None):
        self._batch_start = time.perf_counter()

    def on_batch_end(self, step, logs=None):
        now = time.perf_counter()
        logs = logs or {}
        weight = float(logs.get("weight", 0.0))
        self.batch_seconds += now - self._batch_start
        self.tokens += weight
        self.epoch_batches += 1
        self._epoch_bits += float(logs.get("bits_per_char", 0.0)) * weight
        self._epoch_tokens += weight
        if self.seconds is not None and now - self.start >= self.seconds:
            self.stopped = True
            self.trainer.stop_training = True

    @property
    def epoch_bits_per_char(self):
        """Train bits per character over the batches of the current (cut) epoch."""
        return self._epoch_bits / self._epoch_tokens if self._epoch_tokens else float("nan")


class EpochPrinter(Callback):
    """Prints ``epoch k: train <metric> ..., validation ... (seconds)`` after
    each epoch."""

    def __init__(self, metric, label):
        self.metric = metric
        self.label = label

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        parts = [f"{prefix} {logs[name]:.3f} {self.label}"
                 for prefix, name in (("train", self.metric), ("validation", "val_" + self.metric))
                 if name in logs]
        print(f"  epoch {epoch + 1}: {', '.join(parts)} "
              f"({seconds(time.perf_counter() - self.start)})", flush=True)


def seconds(value):
    """``"0.4 s"``, ``"12 s"``: a tenth of a second below 10 s, whole seconds above."""
    return f"{value:.1f} s" if value < 10 else f"{value:.0f} s"


def demo_command(args):
    from ..tasks import LanguageModel
    from .. import get_num_threads

    settings = dict(QUICK if args.quick else DEFAULTS)
    settings.update({name: getattr(args, name) for name in ("max_chars", "epochs",
                                                            "hidden_size", "minutes")
                     if getattr(args, name) is not None})
    apply_threads(args)
    check_writable(args.output)
    total_start = time.perf_counter()
    entropy, train_text, valid_text = _read_corpus(settings)

    model = LanguageModel(level="char", cell="lstm", hidden_size=settings["hidden_size"],
                          embedding_dim=settings["embedding_dim"], seed=args.seed)
    budget = TimeBudget(settings["minutes"] * 60.0)
    print(f"Model: character-level LSTM, hidden size {settings['hidden_size']}, "
          f"{get_num_threads()} thread(s); batch {settings['batch_size']} x "
          f"{settings['bptt']} steps, Adam lr {settings['lr']}")
    _train(model, settings, train_text, valid_text, budget)
    _show_results(model, settings, valid_text, entropy, budget, args.seed)
    with library_call(f"cannot save to {args.output}"):
        model.save(args.output)
    print(f"Saved the model to {args.output} ({seconds(time.perf_counter() - total_start)} "
          f"in all); sample more with: fastrnn generate {args.output} --prompt \"...\"")
    return 0


def _read_corpus(settings):
    """``(unigram entropy, training text, validation text)`` of the stdlib
    docstrings, with what was read printed."""
    from ..corpus import stdlib_docstrings, stdlib_root, unigram_entropy

    print(f"Corpus: docstrings of the Python {platform.python_version()} standard library "
          f"({stdlib_root()})", flush=True)
    start = time.perf_counter()
    text = stdlib_docstrings(max_chars=settings["max_chars"])
    if len(text) < MIN_CHARS:
        raise CLIError(f"--max-chars {settings['max_chars']} gives only {len(text):,} "
                       f"characters (the corpus ends after a whole docstring); the demo "
                       f"needs {MIN_CHARS:,}: use a larger value")
    entropy = unigram_entropy(text)
    train_text, valid_text = _split(text, 0.9)
    print(f"  {len(text):,} characters ({len(set(text))} distinct) read in "
          f"{seconds(time.perf_counter() - start)}; unigram entropy {entropy:.3f} bits/char")
    print(f"  training on the first {len(train_text):,}, validating on the last "
          f"{len(valid_text):,} characters")
    return entropy, train_text, valid_text


def _train(model, settings, train_text, valid_text, budget):
    """Fit within the epochs and the time ``budget``; say how the run ended."""
    print(f"Training: up to {settings['epochs']} epoch(s) or {settings['minutes']:g} "
          f"minute(s)", flush=True)
    history = model.fit(train_text, epochs=settings["epochs"],
                        batch_size=settings["batch_size"], bptt=settings["bptt"],
                        validation_data=valid_text,
                        callbacks=[EpochPrinter("bits_per_char", "bpc"), budget],
                        verbose=1, lr=settings["lr"], clip_norm=5.0).history_
    steps = history.params.get("steps")
    if budget.stopped and budget.epoch_batches != steps:
        of = f" of {steps}" if steps else ""
        print(f"  epoch {len(history.epoch) + 1} (cut by the time budget of "
              f"{settings['minutes']:g} minute(s) after {budget.epoch_batches}{of} batches; "
              f"its training is kept): train {budget.epoch_bits_per_char:.3f} bpc")
    elif history.stop_reason:
        print(f"  stopped: {history.stop_message}")


def _show_results(model, settings, valid_text, entropy, budget, seed):
    """Validation bits per character against the unigram entropy, the training
    throughput and samples at three temperatures."""
    start = time.perf_counter()
    final = model.evaluate(valid_text, batch_size=min(8, max(1, len(valid_text) // 512)))
    bpc = final["bits_per_char"]
    print(f"Result: validation {bpc:.3f} bits/char vs unigram entropy {entropy:.3f} bits/char "
          f"({bpc / entropy:.0%} of it; perplexity {final['perplexity']:.2f}; evaluated in "
          f"{seconds(time.perf_counter() - start)})")
    rate = budget.tokens / budget.batch_seconds if budget.batch_seconds > 0 else 0.0
    print(f"Throughput: {rate:,.0f} characters/s trained ({budget.tokens:,.0f} "
          f"characters in {seconds(budget.batch_seconds)})")
    print(f"Samples (prompt {PROMPT!r}):")
    for temperature in (0.5, 0.8, 1.0):
        sample = model.generate(PROMPT, length=settings["sample_length"],
                                temperature=temperature, seed=seed)
        shown = sample.replace("\n", "\n      ")
        print(f"  temperature {temperature}:\n      {shown}")


def _split(text, fraction):
    """(first ``fraction``, the rest) of ``text``, cut at a blank line between
    docstrings when there is one in the second half."""
    cut = text.rfind("\n\n", 0, int(len(text) * fraction))
    cut = cut if cut > len(text) // 2 else int(len(text) * fraction)
    return text[:cut], text[cut:].lstrip("\n")
