"""fastrnn.metrics against hand-computed cases (conlleval's chunk rules)."""

import numpy as np
import pytest

from fastrnn.metrics import (bio_entities, detect_scheme, entities, entity_scores,
                             entity_scores_by_type, tag_spans, token_accuracy)


# -- entity extraction ------------------------------------------------------------------

def test_bio_entities_basic_spans_are_end_exclusive():
    tags = ["B-PER", "I-PER", "O", "B-LOC", "O", "B-ORG", "I-ORG", "I-ORG"]
    assert bio_entities(tags) == {("PER", 0, 2), ("LOC", 3, 4), ("ORG", 5, 8)}


def test_adjacent_b_tags_start_separate_entities():
    assert bio_entities(["B-PER", "B-PER", "I-PER"]) == {("PER", 0, 1), ("PER", 1, 3)}


def test_i_without_b_starts_an_entity_as_in_conlleval():
    # At the start, after O, and after an entity of another type.
    assert bio_entities(["I-PER", "I-PER", "O"]) == {("PER", 0, 2)}
    assert bio_entities(["O", "I-LOC"]) == {("LOC", 1, 2)}
    assert bio_entities(["B-PER", "I-LOC", "I-LOC"]) == {("PER", 0, 1), ("LOC", 1, 3)}
    # IOB1 parses the same way: B only separates touching entities of one type.
    assert bio_entities(["I-PER", "I-PER", "B-PER", "O"]) == {("PER", 0, 2), ("PER", 2, 3)}


def test_type_names_may_contain_hyphens_and_no_entities_is_empty():
    assert bio_entities(["B-GPE-CITY", "I-GPE-CITY"]) == {("GPE-CITY", 0, 2)}
    assert bio_entities(["O", "O"]) == set()
    assert bio_entities([]) == set()
    assert bio_entities(np.array(["B-X", "I-X"])) == {("X", 0, 2)}


def test_tag_spans_runs_of_equal_tags():
    assert tag_spans(["PER", "PER", "O", "LOC", "PER"]) == {
        ("PER", 0, 2), ("LOC", 3, 4), ("PER", 4, 5)}
    assert tag_spans([1, 1, 0, 2], outside=0) == {(1, 0, 2), (2, 3, 4)}
    assert tag_spans([0, 0], outside=None) == {(0, 0, 2)}
    assert tag_spans([]) == set()


def test_detect_scheme_and_entities_dispatch():
    assert detect_scheme([["O", "B-X"]], [["I-Y"]]) == "bio"
    assert detect_scheme([["O", "PER"]]) == "spans"
    assert detect_scheme([[0, 1]]) == "spans"
    assert detect_scheme([["B-"]]) == "spans"            # a prefix needs a type
    assert entities(["PER", "PER"], "spans") == {("PER", 0, 2)}
    with pytest.raises(ValueError, match="scheme must be one of 'bio', 'spans', got 'iobes'"):
        entities(["O"], "iobes")


# -- scores ----------------------------------------------------------------------------

def test_entity_scores_hand_computed():
    y_true = [["B-PER", "I-PER", "O", "B-LOC"],
              ["O", "B-ORG", "I-ORG", "O", "B-PER"]]
    y_pred = [["B-PER", "I-PER", "O", "B-PER"],           # PER right, LOC typed wrong
              ["O", "B-ORG", "O", "O", "B-PER"]]          # ORG cut short, PER right
    # true: PER(0,0-2) LOC(0,3-4) ORG(1,1-3) PER(1,4-5)                 -> 4
    # pred: PER(0,0-2) PER(0,3-4) ORG(1,1-2) PER(1,4-5)                 -> 4
    # correct: 2 -> precision 2/4, recall 2/4, f1 0.5
    assert entity_scores(y_true, y_pred) == pytest.approx((0.5, 0.5, 0.5))
    assert token_accuracy(y_true, y_pred) == pytest.approx(7 / 9)


def test_partial_matches_count_as_both_errors():
    y_true = [["B-PER", "I-PER", "I-PER"]]
    y_pred = [["B-PER", "I-PER", "O"]]
    assert entity_scores(y_true, y_pred) == (0.0, 0.0, 0.0)
    # A longer prediction is wrong too.
    assert entity_scores([["B-PER", "O"]], [["B-PER", "I-PER"]]) == (0.0, 0.0, 0.0)


def test_i_without_b_in_predictions_is_an_entity():
    y_true = [["O", "B-LOC", "I-LOC", "O"]]
    y_pred = [["O", "I-LOC", "I-LOC", "O"]]               # conlleval: same entity
    assert entity_scores(y_true, y_pred) == (1.0, 1.0, 1.0)


def test_unequal_precision_and_recall():
    y_true = [["B-A", "O", "B-B", "O", "B-C"]]
    y_pred = [["B-A", "O", "O", "O", "O"]]
    p, r, f1 = entity_scores(y_true, y_pred)
    assert (p, r) == (1.0, pytest.approx(1 / 3))
    assert f1 == pytest.approx(2 * 1 * (1 / 3) / (1 + 1 / 3))


def test_zero_division():
    assert entity_scores([["O", "O"]], [["O", "O"]]) == (0.0, 0.0, 0.0)
    assert entity_scores([["O", "O"]], [["O", "O"]], zero_division=1.0) == (1.0, 1.0, 1.0)
    # Nothing predicted, something to find: precision undefined, recall 0.
    assert entity_scores([["B-X"]], [["O"]], zero_division=1.0) == (1.0, 0.0, 0.0)
    # A non-number used to come back as the "score" itself.
    for bad in ("x", None, True, 2.0, -0.5):
        with pytest.raises(ValueError, match=r"zero_division must be a number in \[0, 1\]"):
            entity_scores([["O"]], [["O"]], zero_division=bad)
        with pytest.raises(ValueError, match="zero_division must be a number"):
            entity_scores_by_type([["O"]], [["O"]], zero_division=bad)


def test_spans_scheme_for_non_bio_tags():
    y_true = [["PER", "PER", "O", "LOC"]]
    y_pred = [["PER", "PER", "O", "PER"]]
    assert entity_scores(y_true, y_pred) == (0.5, 0.5, 0.5)       # auto -> spans
    ints_true, ints_pred = [[1, 1, 0, 2]], [[1, 1, 0, 0]]
    assert entity_scores(ints_true, ints_pred, outside=0) == (1.0, 0.5, pytest.approx(2 / 3))
    assert token_accuracy(ints_true, ints_pred) == 0.75


def test_forcing_bio_on_non_bio_tags_names_the_tag():
    with pytest.raises(ValueError, match=r"y_pred\[0\]: tags\[1\] = 'PER' is not a BIO tag"):
        entity_scores([["O", "B-PER"]], [["O", "PER"]], scheme="bio")


def test_entity_scores_by_type():
    y_true = [["B-PER", "O", "B-LOC", "B-LOC"]]
    y_pred = [["B-PER", "O", "B-LOC", "O"]]
    report = entity_scores_by_type(y_true, y_pred)
    assert report["PER"] == (1.0, 1.0, 1.0, 1)
    assert report["LOC"] == (1.0, 0.5, pytest.approx(2 / 3), 2)
    # Types come in sorted order (a set's order changes from run to run with
    # string hashing); types that do not sort keep first-seen order.
    report = entity_scores_by_type([["B-ZED", "B-ALPHA", "O", "B-MID"]],
                                   [["O", "O", "B-BETA", "O"]])
    assert list(report) == ["ALPHA", "BETA", "MID", "ZED"]
    mixed = entity_scores_by_type([["b", 2, "O", "b"]], [["b", 2, "O", 1]], scheme="spans")
    assert list(mixed) == ["b", 2, 1]


# -- bad input -------------------------------------------------------------------------

def test_sentence_count_mismatch():
    with pytest.raises(ValueError, match="y_true has 2, y_pred has 1"):
        entity_scores([["O"], ["O"]], [["O"]])
    with pytest.raises(ValueError, match="y_true has 1, y_pred has 2"):
        token_accuracy([["O"]], [["O"], ["O"]])


def test_sentence_length_mismatch_names_index_and_lengths():
    with pytest.raises(ValueError, match=r"y_true\[1\] has 2 tags but y_pred\[1\] has 3"):
        entity_scores([["O"], ["O", "O"]], [["O"], ["O", "O", "O"]])


def test_flat_lists_and_strings_are_refused():
    with pytest.raises(TypeError, match=r"y_true\[0\] must be a sequence of tags, got a "
                                        r"single str 'B-PER'"):
        entity_scores(["B-PER", "O"], ["B-PER", "O"])
    with pytest.raises(TypeError, match="y_pred must be a list of tag sequences"):
        token_accuracy([["O"]], "O")
    with pytest.raises(TypeError, match="tags must be a sequence of tags, got a single str"):
        bio_entities("B-PER")
    with pytest.raises(TypeError, match="y_true must be a list of tag sequences"):
        token_accuracy(3, [["O"]])


def test_token_accuracy_needs_tokens():
    with pytest.raises(ValueError, match="y_true holds no tags"):
        token_accuracy([[]], [[]])


def test_scheme_argument_checked():
    with pytest.raises(ValueError, match="scheme must be 'auto' or one of 'bio', 'spans', "
                                         "got 'BIO'"):
        entity_scores([["O"]], [["O"]], scheme="BIO")
