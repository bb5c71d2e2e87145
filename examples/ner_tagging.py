"""Named-entity recognition: tag people, places and organisations in sentences.

The sentences are generated from templates ("Ann Smith moved to Oslo last
year .") with BIO tags (B-PER I-PER O O B-LOC O O O).  Entities are either
common names from short lists, or invented ones ("Tovaris Kelunsen",
"Marobburg", "Veltari Labs") that are rare in training.  Words seen only
once in training are mapped to <unk> (min_freq=2), so the model learns to
recognise an entity from its context rather than by memorising it; the
test then uses invented names it has never seen at all.

Prints token accuracy and entity precision / recall / F1 (conlleval's
rule: an entity counts only if its type and both boundaries are right) on
held-out sentences, for common and for never-seen names.

    python examples/ner_tagging.py            # under a minute on 2 cores
    python examples/ner_tagging.py --quick    # a few seconds
"""

import argparse
import random
import time

import fastrnn as fr

FIRST = ["Ann", "Bob", "Carla", "David", "Elena", "Farid", "Greta", "Hiro", "Ines", "Jonas",
         "Kemal", "Lena", "Marco", "Nadia", "Omar", "Paula", "Quentin", "Rosa", "Sven", "Tara",
         "Umar", "Vera", "Wen", "Xenia", "Yusuf", "Zoe", "Amir", "Bianca", "Chen", "Dara"]
LAST = ["Smith", "Garcia", "Novak", "Tanaka", "Okafor", "Larsen", "Rossi", "Kowalski",
        "Haddad", "Silva", "Jensen", "Moreau", "Fischer", "Ivanova", "Park", "Costa"]
PLACES = ["Oslo", "Lima", "Cairo", "Porto", "Kyoto", "Dublin", "Quito", "Tunis", "Riga",
          "Perth", "New York", "Buenos Aires", "Cape Town", "Hong Kong", "San Diego", "Tel Aviv"]
ORGS = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Stark Industries",
        "Wayne Enterprises", "the United Nations", "the Red Cross", "Blue Origin", "Pied Piper"]

TEMPLATES = [
    "{PER} lives in {LOC} .",
    "{PER} moved to {LOC} last year .",
    "{PER} works for {ORG} in {LOC} .",
    "Yesterday {PER} flew from {LOC} to {LOC} .",
    "{ORG} hired {PER} as a manager .",
    "The mayor of {LOC} , {PER} , spoke on Monday .",
    "{PER} and {PER} visited {LOC} in May .",
    "According to {PER} , {ORG} will open an office in {LOC} .",
    "{ORG} announced that {PER} will lead the team .",
    "We met {PER} at the {ORG} conference .",
    "Shares of {ORG} rose after {PER} resigned .",
    "It rained all week in {LOC} .",
]


SYLLABLES = ["ka", "lo", "mi", "ta", "ren", "vo", "shi", "dan", "el", "mar", "ti", "ba",
             "no", "rus", "fe", "li", "ga", "sto", "wen", "qui", "pa", "dor", "zi", "hel"]


def invented(rng, parts, suffixes=("",)):
    word = "".join(rng.choice(SYLLABLES) for _ in range(parts)) + rng.choice(suffixes)
    return word.capitalize()


def entity(kind, rng, names):
    """The words of one entity: a common name from ``names`` or, if
    ``names`` is None or by chance, an invented one."""
    common = names is not None and rng.random() < 0.5
    if kind == "PER":
        words = [rng.choice(names["first"]) if common else invented(rng, rng.randint(2, 3))]
        if rng.random() < 0.5:
            words.append(rng.choice(names["last"]) if common
                         else invented(rng, 2, ("son", "ova", "ez", "berg", "")))
        return words
    if kind == "LOC":
        if common:
            return rng.choice(names["places"]).split()
        place = invented(rng, 2, ("burg", "ville", "ton", "polis", "stad", ""))
        return ["New", place] if rng.random() < 0.2 else [place]
    if common:
        return rng.choice(names["orgs"]).split()
    name = invented(rng, rng.randint(2, 3))
    roll = rng.random()
    if roll < 0.3:
        return [name, rng.choice(["Labs", "Group", "Motors", "Bank", "Systems"])]
    if roll < 0.5:
        return ["the", name, "Institute"]
    return [name]


def sentence(rng, names):
    """(tokens, BIO tags) from a random template.  ``the`` before an
    organisation name is not part of the entity, as in CoNLL-2003."""
    tokens, tags = [], []
    for word in rng.choice(TEMPLATES).split():
        if word.startswith("{") and word.endswith("}"):
            kind = word[1:-1]
            words = entity(kind, rng, names)
            if words[0] == "the":
                tokens.append("the")
                tags.append("O")
                words = words[1:]
            tokens.extend(words)
            tags.extend([f"B-{kind}"] + [f"I-{kind}"] * (len(words) - 1))
        else:
            tokens.append(word)
            tags.append("O")
    return tokens, tags


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, few epochs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    common = {"first": FIRST, "last": LAST, "places": PLACES, "orgs": ORGS}
    n_train, n_test, epochs = (600, 200, 4) if args.quick else (3000, 600, 8)
    train = [sentence(rng, common) for _ in range(n_train)]
    test_common = [sentence(rng, common) for _ in range(n_test // 2)]
    test_unseen = [sentence(rng, None) for _ in range(n_test // 2)]
    X, y = [s for s, _ in train], [t for _, t in train]
    print(f"{len(train)} training sentences, e.g. {' '.join(X[0])!r}\n"
          f"  tags: {' '.join(y[0])}")

    tagger = fr.SequenceTagger(cell="lstm", hidden_size=64, embedding_dim=48, min_freq=2,
                               bidirectional=True, seed=args.seed)
    start = time.perf_counter()
    tagger.fit(X, y, epochs=epochs, batch_size=32, lr=5e-3, validation_split=0.1,
               verbose=0 if args.quick else 1)
    print(f"trained in {time.perf_counter() - start:.1f} s")

    for name, data in (("mixed names", test_common), ("unseen names", test_unseen)):
        scores = tagger.score([s for s, _ in data], [t for _, t in data])
        print(f"test, {name:>12}: token accuracy {scores['accuracy']:.3f}, entity "
              f"precision {scores['precision']:.3f}, recall {scores['recall']:.3f}, "
              f"F1 {scores['f1']:.3f}")
    example = "Yesterday Mia Quist flew from Lagos to Oslo .".split()
    tags = tagger.predict([example])[0]
    print("example:", " ".join(f"{w}/{t}" for w, t in zip(example, tags)))


if __name__ == "__main__":
    main()
