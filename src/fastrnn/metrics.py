"""Scores for sequence tagging: token accuracy and entity-level precision/recall/F1.

Tagging models are judged on whole entities, not tokens: in
``John/B-PER Smith/I-PER`` predicting ``B-PER O`` gets one of two tokens
right but finds no correct person.  This module follows the CoNLL shared
task's ``conlleval`` script:

* tags in the BIO / IOB2 scheme are ``"O"`` (outside), ``"B-TYPE"`` (begins
  an entity) and ``"I-TYPE"`` (inside one);
* an entity is a ``B-X`` followed by any ``I-X``; an ``I-X`` that does not
  continue an entity of type X (after ``O``, after another type, at the
  start) begins a new one, as in ``conlleval`` (so IOB1 data parse too);
* an entity counts as correct only if its type, start and end all match:
  a partial match is a false positive *and* a false negative;
* scores are micro-averaged over all entities of all sentences.

Tags that are not BIO (``"PER"``/``"O"``, integers, ...) are scored with the
"spans" rule: every maximal run of one identical tag other than ``outside``
is an entity of that tag's type.

Entities are ``(type, start, end)`` with ``end`` exclusive, so a sentence's
entity is ``tokens[start:end]``.

    from fastrnn.metrics import bio_entities, entity_scores
    bio_entities(["B-PER", "I-PER", "O", "B-LOC"])
    # {('PER', 0, 2), ('LOC', 3, 4)}
    entity_scores([["B-PER", "I-PER"]], [["B-PER", "O"]])   # (0.0, 0.0, 0.0)
"""

import numpy as np

from ._validation import Options, Real

__all__ = ["SCHEMES", "bio_entities", "tag_spans", "entities", "detect_scheme",
           "token_accuracy", "entity_scores", "entity_scores_by_type"]

#: The entity rules: "bio" (BIO / IOB2, conlleval) and "spans" (runs of equal tags).
SCHEMES = ("bio", "spans")
OUTSIDE = "O"


def _describe(value):
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _split_bio(tag):
    """``(prefix, type)`` of a BIO tag, or None when ``tag`` is not one."""
    if not isinstance(tag, str):
        return None
    if tag == OUTSIDE:
        return OUTSIDE, None
    if len(tag) > 2 and tag[0] in "BI" and tag[1] == "-":
        return tag[0], tag[2:]
    return None


def _tag_sequence(name, tags):
    """``tags`` as a list; a bare string is refused (it would iterate as characters)."""
    if isinstance(tags, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of tags, got a single "
                        f"{type(tags).__name__} {_describe(tags)}; for one tag pass [tag]")
    if isinstance(tags, np.ndarray):
        if tags.ndim != 1:
            raise ValueError(f"{name} must be 1-D (one tag per token), got shape {tags.shape}")
        return tags.tolist()
    try:
        return list(tags)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of tags, got "
                        f"{type(tags).__name__}") from None


def bio_entities(tags):
    """The entities of one sentence tagged in BIO / IOB2: a set of ``(type, start, end)``.

    Args:
        tags: the sentence's tags, each ``"O"``, ``"B-TYPE"`` or ``"I-TYPE"``.

    An ``I-X`` continues the entity before it only if that entity has type X;
    otherwise it begins a new entity (the ``conlleval`` rule).  ``end`` is
    exclusive.  Raises ValueError naming the first tag that is not BIO.
    """
    tags = _tag_sequence("tags", tags)
    found = set()
    start = kind = None
    for position, tag in enumerate(tags):
        parsed = _split_bio(tag)
        if parsed is None:
            raise ValueError(f"tags[{position}] = {_describe(tag)} is not a BIO tag: expected "
                             f"'O', 'B-<type>' or 'I-<type>' (use tag_spans or "
                             f"scheme='spans' for other tag sets)")
        prefix, tag_kind = parsed
        if start is not None and not (prefix == "I" and tag_kind == kind):
            found.add((kind, start, position))
            start = None
        if prefix != OUTSIDE and start is None:
            start, kind = position, tag_kind
    if start is not None:
        found.add((kind, start, len(tags)))
    return found


def tag_spans(tags, outside=OUTSIDE):
    """Entities for tags without a B/I scheme: every maximal run of one
    identical tag other than ``outside`` is ``(tag, start, end)`` (end exclusive).

    Args:
        tags: the sentence's tags, any hashable values.
        outside: the tag meaning "no entity" (None: every run is an entity).
    """
    tags = _tag_sequence("tags", tags)
    found = set()
    start = 0
    for position in range(1, len(tags) + 1):
        if position == len(tags) or not _equal(tags[position], tags[start]):
            if not _equal(tags[start], outside):
                found.add((tags[start], start, position))
            start = position
    return found


def _equal(a, b):
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def entities(tags, scheme="bio", outside=OUTSIDE):
    """The entities of one sentence under ``scheme`` ("bio" or "spans")."""
    if Options(SCHEMES)("scheme", scheme) == "bio":
        return bio_entities(tags)
    return tag_spans(tags, outside)


def detect_scheme(*tag_lists):
    """"bio" when every tag in the given lists of sentences is ``"O"``,
    ``"B-TYPE"`` or ``"I-TYPE"``; otherwise "spans"."""
    for sentences in tag_lists:
        for tags in sentences:
            for tag in tags:
                if _split_bio(tag) is None:
                    return "spans"
    return "bio"


def _pairs(y_true, y_pred):
    """Both lists of sentences as lists of lists, checked to align one-to-one."""
    lists = []
    for name, value in (("y_true", y_true), ("y_pred", y_pred)):
        if isinstance(value, (str, bytes)):
            raise TypeError(f"{name} must be a list of tag sequences (one per sentence), "
                            f"got a single {type(value).__name__}")
        try:
            sentences = list(value)
        except TypeError:
            raise TypeError(f"{name} must be a list of tag sequences (one per sentence), "
                            f"got {type(value).__name__}") from None
        lists.append([_tag_sequence(f"{name}[{i}]", tags) for i, tags in enumerate(sentences)])
    true, pred = lists
    if len(true) != len(pred):
        raise ValueError(f"y_true and y_pred must hold the same number of sentences: "
                         f"y_true has {len(true)}, y_pred has {len(pred)}")
    for index, (a, b) in enumerate(zip(true, pred)):
        if len(a) != len(b):
            raise ValueError(f"y_true[{index}] has {len(a)} tags but y_pred[{index}] has "
                             f"{len(b)}: tags must align one per token")
    return true, pred


def token_accuracy(y_true, y_pred):
    """Fraction of tokens whose predicted tag equals the true tag, over all sentences.

    Args:
        y_true, y_pred: lists of tag sequences, sentence by sentence, each pair
            of equal length.
    """
    true, pred = _pairs(y_true, y_pred)
    total = sum(len(tags) for tags in true)
    if total == 0:
        raise ValueError("y_true holds no tags: token accuracy needs at least one token")
    correct = sum(_equal(a, b) for tags_a, tags_b in zip(true, pred)
                  for a, b in zip(tags_a, tags_b))
    return correct / total


def _entity_sets(y_true, y_pred, scheme, outside):
    true, pred = _pairs(y_true, y_pred)
    if scheme == "auto":
        scheme = detect_scheme(true, pred)
    elif scheme not in SCHEMES:
        raise ValueError(f"scheme must be 'auto' or one of {', '.join(map(repr, SCHEMES))}, "
                         f"got {scheme!r}")
    true_set, pred_set = set(), set()
    for index, (a, b) in enumerate(zip(true, pred)):
        for target, tags, name in ((true_set, a, "y_true"), (pred_set, b, "y_pred")):
            try:
                spans = entities(tags, scheme, outside)
            except ValueError as exc:
                raise ValueError(f"{name}[{index}]: {exc}") from None
            target.update((index,) + span for span in spans)
    return true_set, pred_set


def _check_zero_division(value):
    return Real(0, 1)("zero_division", value)


def _order(span):
    """Sort key of an entity ``(sentence, type, start, end)``: position first."""
    return span[0], span[2], span[3]


def _prf(correct, found, expected, zero_division):
    precision = correct / found if found else zero_division
    recall = correct / expected if expected else zero_division
    if found == 0 and expected == 0:
        return zero_division, zero_division, zero_division
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return float(precision), float(recall), float(f1)


def entity_scores(y_true, y_pred, scheme="auto", outside=OUTSIDE, zero_division=0.0):
    """Micro-averaged entity precision, recall and F1: ``(p, r, f1)``.

    Args:
        y_true, y_pred: lists of tag sequences, sentence by sentence; each
            pair must have equal length.
        scheme: "bio" (conlleval's BIO / IOB2 rule), "spans" (runs of equal
            tags, see :func:`tag_spans`) or "auto": "bio" when every tag in
            both lists is a BIO tag, else "spans".
        outside: the no-entity tag for the "spans" rule.
        zero_division: the score when its denominator is 0 (no predicted
            entities for precision, no true ones for recall).  The default 0.0
            is conlleval's; pass 1.0 to call "nothing to find, nothing
            found" perfect.

    An entity is correct only when type, start and end all match.
    """
    zero_division = _check_zero_division(zero_division)
    true_set, pred_set = _entity_sets(y_true, y_pred, scheme, outside)
    return _prf(len(true_set & pred_set), len(pred_set), len(true_set), zero_division)


def entity_scores_by_type(y_true, y_pred, scheme="auto", outside=OUTSIDE,
                          zero_division=0.0):
    """Per entity type: ``{type: (precision, recall, f1, support)}``, support =
    number of true entities of that type, types in sorted order (first-seen
    when they do not sort).  Arguments as in :func:`entity_scores`."""
    zero_division = _check_zero_division(zero_division)
    true_set, pred_set = _entity_sets(y_true, y_pred, scheme, outside)
    kinds = list(dict.fromkeys(span[1] for span in sorted(true_set | pred_set, key=_order)))
    try:
        kinds = sorted(kinds)
    except TypeError:
        pass
    report = {}
    for kind in kinds:
        true_k = {span for span in true_set if span[1] == kind}
        pred_k = {span for span in pred_set if span[1] == kind}
        report[kind] = _prf(len(true_k & pred_k), len(pred_k), len(true_k),
                            zero_division) + (len(true_k),)
    return report
