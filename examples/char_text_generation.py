"""Character-level language model: learn to write like Python's docstrings.

Trains an LSTM to predict the next character of the standard library's
docstrings (``fastrnn.corpus.stdlib_docstrings``: read from this Python's
own source files, no download), reports bits per character on held-out
text next to the unigram entropy (what a model that ignores context would
score), then samples text at a few temperatures and with nucleus sampling.

    python examples/char_text_generation.py           # under a minute on 2 cores
    python examples/char_text_generation.py --quick   # a few seconds

``fastrnn demo`` is the longer version of this (about two minutes).
"""

import argparse
import time

import fastrnn as fr
from fastrnn.corpus import stdlib_docstrings, unigram_entropy


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small corpus and model")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    chars, hidden, epochs = (40_000, 48, 3) if args.quick else (600_000, 192, 4)

    text = stdlib_docstrings(max_chars=chars)
    cut = text.rfind("\n\n", 0, int(len(text) * 0.9))
    train, held_out = text[:cut], text[cut:].lstrip("\n")
    entropy = unigram_entropy(text)
    print(f"corpus: {len(text):,} characters of docstrings, {len(set(text))} distinct; "
          f"unigram entropy {entropy:.3f} bits/char")

    model = fr.LanguageModel(level="char", cell="lstm", hidden_size=hidden, embedding_dim=32,
                             seed=args.seed, epochs=epochs, batch_size=32, bptt=64, lr=3e-3,
                             verbose=0 if args.quick else 1)
    start = time.perf_counter()
    history = model.fit(train, validation_data=held_out).history_
    seconds = time.perf_counter() - start
    print(f"trained {epochs} epoch(s) in {seconds:.1f} s "
          f"({epochs * len(train) / seconds:,.0f} training characters/s, validation "
          f"included)")
    for epoch, (bpc, val_bpc) in enumerate(zip(history.history["bits_per_char"],
                                               history.history["val_bits_per_char"]), 1):
        print(f"  epoch {epoch}: train {bpc:.3f} bpc, held-out {val_bpc:.3f} bpc")

    scores = model.evaluate(held_out)
    print(f"held-out: {scores['bits_per_char']:.3f} bits/char (unigram entropy "
          f"{entropy:.3f}), perplexity {scores['perplexity']:.2f}")
    length = 80 if args.quick else 240
    for label, options in (("temperature 0.5", {"temperature": 0.5}),
                           ("temperature 1.0", {"temperature": 1.0}),
                           ("top_p 0.9", {"top_p": 0.9})):
        sample = model.generate("Return the ", length=length, seed=args.seed, **options)
        print(f"--- {label}:\n{sample}")


if __name__ == "__main__":
    main()
