"""Sequence to sequence: translate human-written dates to ISO 8601.

    "Friday, March 5, 2021"  ->  "2021-03-05"
    "5 mar 2021"             ->  "2021-03-05"
    "the 5th of March, 2021" ->  "2021-03-05"

A character-level encoder-decoder (fastrnn.tasks.Seq2Seq, no attention):
the encoder reads the source into its final LSTM state, the decoder writes
the ISO date from it.  Training uses teacher forcing (the decoder reads the
true previous character); prediction decodes greedily or with beam search.
Prints the exact-match rate (the whole date right) on held-out dates and
per-character accuracy.

    python examples/seq2seq_dates.py           # under a minute on 2 cores
    python examples/seq2seq_dates.py --quick   # a few seconds
"""

import argparse
import datetime
import random
import time

import fastrnn as fr

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def ordinal(n):
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def human(date, rng):
    """One of several human formats for ``date``."""
    month, short = MONTHS[date.month - 1], MONTHS[date.month - 1][:3]
    day = DAYS[date.weekday()]
    formats = [
        f"{month} {date.day}, {date.year}",
        f"{day}, {month} {date.day}, {date.year}",
        f"{date.day} {month} {date.year}",
        f"{date.day} {short.lower()} {date.year}",
        f"{short} {date.day} {date.year}",
        f"the {ordinal(date.day)} of {month}, {date.year}",
        f"{ordinal(date.day)} {month} {date.year}",
        f"{month.upper()} {date.day} {date.year}",
    ]
    return rng.choice(formats)


def random_date(rng):
    start = datetime.date(1950, 1, 1).toordinal()
    end = datetime.date(2049, 12, 31).toordinal()
    return datetime.date.fromordinal(rng.randint(start, end))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, few epochs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    n_train, n_test, epochs, hidden = (2000, 200, 8, 64) if args.quick else (8000, 1000, 10, 128)

    dates = [random_date(rng) for _ in range(n_train + n_test)]
    sources = [human(date, rng) for date in dates]
    targets = [date.isoformat() for date in dates]
    train_x, train_y = sources[:n_train], targets[:n_train]
    test_x, test_y = sources[n_train:], targets[n_train:]
    print(f"{n_train} training pairs, e.g. {train_x[0]!r} -> {train_y[0]!r}")

    model = fr.Seq2Seq(cell="lstm", hidden_size=hidden, embedding_dim=32, tokenizer="char",
                       seed=args.seed)
    start = time.perf_counter()
    model.fit(train_x, train_y, epochs=epochs, batch_size=64, lr=5e-3, teacher_forcing=1.0,
              validation_split=0.05, verbose=0 if args.quick else 1)
    print(f"trained in {time.perf_counter() - start:.1f} s")

    greedy = model.score(test_x, test_y, max_length=12)
    beam = model.score(test_x, test_y, max_length=12, beam_size=3)
    print(f"held-out exact match: greedy {greedy['exact_match']:.3f}, beam 3 "
          f"{beam['exact_match']:.3f} (per-character accuracy {greedy['token_accuracy']:.3f})")
    examples = ["Saturday, July 4, 1987", "the 23rd of November, 2031", "1 jan 2000"]
    for source, output in zip(examples, model.predict(examples, max_length=12, beam_size=3)):
        print(f"  {source!r:32} -> {output!r}")


if __name__ == "__main__":
    main()
