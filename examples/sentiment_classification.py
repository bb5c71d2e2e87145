"""Sentiment classification: is a short review positive or negative?

The reviews are generated ("the plot was not exactly brilliant , but the
cast was superb") so that word counts alone are not enough: negation
flips a phrase ("not boring" is praise), and after "but" the second
clause decides.  A bag-of-words baseline (logistic regression on word
counts, fitted here with numpy) is printed next to the recurrent model,
overall and on the reviews that need word order.

    python examples/sentiment_classification.py           # under a minute on 2 cores
    python examples/sentiment_classification.py --quick   # a few seconds
"""

import argparse
import random
import time

import numpy as np

import fastrnn as fr

POSITIVE = ["great", "wonderful", "excellent", "delightful", "brilliant", "superb",
            "moving", "charming", "gripping", "funny", "beautiful", "clever"]
NEGATIVE = ["awful", "boring", "dull", "terrible", "dreadful", "tedious", "clumsy", "bland",
            "predictable", "messy", "forgettable", "silly"]
SUBJECTS = ["the film", "the plot", "the acting", "the soundtrack", "the ending", "the cast",
            "this movie", "the script", "the dialogue", "the photography", "the director"]
ADVERBS = ["", "", "really", "quite", "very", "truly", "rather", "exactly"]
OPENERS = ["", "", "", "honestly ,", "i thought", "to be fair ,", "in my opinion",
           "overall ,", "my friends said"]


def clause(rng, sentiment):
    """(words, +1/-1, negated) for one 'subject was adjective' clause."""
    negated = rng.random() < 0.35
    surface = -sentiment if negated else sentiment
    adjective = rng.choice(POSITIVE if surface > 0 else NEGATIVE)
    words = [rng.choice(SUBJECTS), "was"] + (["not"] if negated else [])
    words += [rng.choice(ADVERBS), adjective]
    return " ".join(w for w in words if w), negated


def review(rng):
    """(text, label, needs_order): the label and whether the review needs
    more than word counts (negation or a contrast)."""
    sentiment = rng.choice([1, -1])
    opener = rng.choice(OPENERS)
    if rng.random() < 0.35:                     # contrast: the clause after "but" wins
        first, neg1 = clause(rng, -sentiment)
        second, neg2 = clause(rng, sentiment)
        text = f"{opener} {first} , but {second}"
        needs_order = True
    else:
        text, negated = clause(rng, sentiment)
        text = f"{opener} {text}"
        needs_order = negated
    return " ".join(text.split()), "pos" if sentiment > 0 else "neg", needs_order


def bag_of_words_accuracy(train_texts, train_labels, test_texts, test_labels, steps=300):
    """Logistic regression on word counts (gradient descent in numpy)."""
    vocab = {w: i for i, w in enumerate(sorted({w for t in train_texts for w in t.split()}))}

    def counts(texts):
        matrix = np.zeros((len(texts), len(vocab) + 1))
        matrix[:, -1] = 1.0                                        # bias
        for row, text in enumerate(texts):
            for word in text.split():
                if word in vocab:
                    matrix[row, vocab[word]] += 1
        return matrix

    X, y = counts(train_texts), np.array([lab == "pos" for lab in train_labels], float)
    w = np.zeros(X.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-X @ w))
        w -= 0.5 * X.T @ (p - y) / len(y)
    predicted = (counts(test_texts) @ w) > 0
    return predicted == np.array([lab == "pos" for lab in test_labels])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, few epochs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    n_train, n_test, epochs = (1000, 300, 4) if args.quick else (6000, 1000, 10)
    train = [review(rng) for _ in range(n_train)]
    test = [review(rng) for _ in range(n_test)]
    texts, labels = [t for t, _, _ in train], [lab for _, lab, _ in train]
    test_texts, test_labels = [t for t, _, _ in test], [lab for _, lab, _ in test]
    hard = np.array([needs for _, _, needs in test])
    print(f"{n_train} training reviews, e.g. {texts[0]!r} -> {labels[0]}")

    model = fr.SequenceClassifier(cell="gru", hidden_size=64, embedding_dim=32,
                                  bidirectional=True, seed=args.seed)
    start = time.perf_counter()
    model.fit(texts, labels, epochs=epochs, batch_size=32, lr=5e-3, validation_split=0.1,
              verbose=0 if args.quick else 1)
    print(f"trained in {time.perf_counter() - start:.1f} s")

    correct = model.predict(test_texts) == np.array(test_labels)
    baseline = bag_of_words_accuracy(texts, labels, test_texts, test_labels)
    majority = max(test_labels.count("pos"), test_labels.count("neg")) / n_test
    print(f"test accuracy: {correct.mean():.3f} (bag of words: {baseline.mean():.3f}, "
          f"majority class: {majority:.3f})")
    print(f"  on the {hard.sum()} reviews with negation or 'but': {correct[hard].mean():.3f} "
          f"(bag of words: {baseline[hard].mean():.3f})")
    for text in ["the acting was not boring at all",
                 "the plot was great , but the ending was dull"]:
        probabilities = model.predict_proba([text])[0]
        print(f"  {text!r}: " + ", ".join(f"{c} {p:.2f}" for c, p in
                                            zip(model.classes_, probabilities)))


if __name__ == "__main__":
    main()
