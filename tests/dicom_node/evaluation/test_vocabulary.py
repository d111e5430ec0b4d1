"""The fixed lists of assessments and reference standards: every word has a label, and a word outside its
list is refused with the list spelt out."""

from __future__ import annotations

import pytest

from dicom_node.evaluation.vocabulary import (
    FINDING_LABELS,
    METHOD_LABELS,
    REASON_LABELS,
    VERDICT_LABELS,
    ReaderFinding,
    Reason,
    ReferenceMethod,
    Verdict,
    VocabularyError,
    parse,
    parse_optional,
    parse_yes_no,
)


@pytest.mark.parametrize(("labels", "kind"), [(VERDICT_LABELS, Verdict), (FINDING_LABELS, ReaderFinding),
                                              (REASON_LABELS, Reason), (METHOD_LABELS, ReferenceMethod)])
def test_every_word_has_a_label(labels: dict, kind: type) -> None:
    assert set(labels) == set(kind) and all(label.strip() for label in labels.values())


def test_the_stored_words_are_the_documented_interface() -> None:
    assert [v.value for v in Verdict] == ["agree", "disagree", "modified"]
    assert [f.value for f in ReaderFinding] == ["present", "absent", "indeterminate"]
    assert [m.value for m in ReferenceMethod] == [
        "histopathology", "imaging-follow-up", "psa-response", "composite", "other"]
    assert {"false-positive-physiological", "false-positive-other", "missed-focus", "wrong-region",
            "image-quality", "not-assessable", "other"} == {r.value for r in Reason}


def test_words_are_read_leniently_but_only_from_their_list() -> None:
    assert parse(Verdict, " Agree ", "verdict") is Verdict.AGREE
    assert parse_optional(Reason, "", "reason") is None
    with pytest.raises(VocabularyError) as raised:
        parse(Verdict, "maybe", "verdict")
    assert str(raised.value) == "verdict: 'maybe' is not one of agree, disagree, modified"
    assert raised.value.field == "verdict"
    with pytest.raises(VocabularyError, match="method: nothing is not one of histopathology"):
        parse(ReferenceMethod, "", "method")


@pytest.mark.parametrize(("text", "value"), [("yes", True), ("TRUE", True), ("1", True), ("no", False),
                                             ("False", False), ("0", False)])
def test_yes_no_accepts_what_people_and_spreadsheets_write(text: str, value: bool) -> None:
    assert parse_yes_no(text, "recurrence") is value


def test_anything_else_is_not_yes_or_no() -> None:
    with pytest.raises(VocabularyError, match=r"recurrence: 'maybe' is not yes/no \(true/false, 1/0\)"):
        parse_yes_no("maybe", "recurrence")
