"""The fixed words of reader assessments and reference standards, with the labels people read.

One list for every way in (dashboard, HTTP API, CSV import, DICOM SR) and for the statistics that count
them, so that a verdict means the same wherever it was entered. The values are stored as-is in the database
and appear in the API, the CSV format and docs/assessments.md: they are an interface, so only add to them.
"""

from __future__ import annotations

import datetime as dt
from enum import Enum
from typing import TypeVar


class Verdict(str, Enum):
    """The reader's verdict on the AI result as a whole."""

    AGREE = "agree"
    DISAGREE = "disagree"
    MODIFIED = "modified"
    """The reader kept the result but changed it (e.g. an edited copy of the node's SR)."""


class ReaderFinding(str, Enum):
    """The reader's own finding for local recurrence, whatever the AI said."""

    PRESENT = "present"
    ABSENT = "absent"
    INDETERMINATE = "indeterminate"


class Reason(str, Enum):
    """Why the reader disagreed with (or modified) the result: a fixed list, free text goes in the comment."""

    FALSE_POSITIVE_PHYSIOLOGICAL = "false-positive-physiological"
    FALSE_POSITIVE_OTHER = "false-positive-other"
    MISSED_FOCUS = "missed-focus"
    WRONG_REGION = "wrong-region"
    IMAGE_QUALITY = "image-quality"
    NOT_ASSESSABLE = "not-assessable"
    OTHER = "other"


class ReferenceMethod(str, Enum):
    """How the truth about local recurrence was established."""

    HISTOPATHOLOGY = "histopathology"
    IMAGING_FOLLOW_UP = "imaging-follow-up"
    PSA_RESPONSE = "psa-response"
    COMPOSITE = "composite"
    OTHER = "other"


class AssessmentSource(str, Enum):
    """The way an assessment reached the node."""

    DASHBOARD = "dashboard"
    API = "api"
    DICOM = "dicom"


class ReferenceChannel(str, Enum):
    """The way a reference standard reached the node."""

    DASHBOARD = "dashboard"
    API = "api"
    CSV = "csv"


VERDICT_LABELS: dict[Verdict, str] = {
    Verdict.AGREE: "Agree with the AI result",
    Verdict.DISAGREE: "Disagree with the AI result",
    Verdict.MODIFIED: "AI result modified by the reader",
}
FINDING_LABELS: dict[ReaderFinding, str] = {
    ReaderFinding.PRESENT: "Local recurrence present",
    ReaderFinding.ABSENT: "Local recurrence absent",
    ReaderFinding.INDETERMINATE: "Indeterminate",
}
REASON_LABELS: dict[Reason, str] = {
    Reason.FALSE_POSITIVE_PHYSIOLOGICAL: "False positive: physiological or urinary bladder uptake",
    Reason.FALSE_POSITIVE_OTHER: "False positive: other cause (inflammation, benign lesion, artefact)",
    Reason.MISSED_FOCUS: "Missed focus: recurrence the AI did not call",
    Reason.WRONG_REGION: "Wrong region: the analysed region is not the prostate / prostate bed",
    Reason.IMAGE_QUALITY: "Image quality too poor for a reliable result",
    Reason.NOT_ASSESSABLE: "Not assessable by the reader",
    Reason.OTHER: "Other (say why in the comment)",
}
METHOD_LABELS: dict[ReferenceMethod, str] = {
    ReferenceMethod.HISTOPATHOLOGY: "Histopathology (biopsy or resection)",
    ReferenceMethod.IMAGING_FOLLOW_UP: "Imaging follow-up",
    ReferenceMethod.PSA_RESPONSE: "PSA response to local therapy",
    ReferenceMethod.COMPOSITE: "Composite reference (several of the above)",
    ReferenceMethod.OTHER: "Other",
}

AI_FINDING_AS_READER: dict[str, ReaderFinding] = {
    "present": ReaderFinding.PRESENT,
    "absent": ReaderFinding.ABSENT,
    "undetermined": ReaderFinding.INDETERMINATE,
}
"""The AI's finding (Result.finding) in the reader's terms: what "agree" compares against."""

_TRUE = frozenset({"true", "yes", "1", "y"})
_FALSE = frozenset({"false", "no", "0", "n"})


class VocabularyError(ValueError):
    """A value outside its list; `field` names the input, and the message lists what is allowed."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


E = TypeVar("E", bound=Enum)


def parse(kind: type[E], value: object, field: str) -> E:
    """`value` as a member of `kind` (exact, case-insensitive, surrounding blanks ignored), or a clear error."""
    text = str(value).strip().lower() if value is not None else ""
    for member in kind:
        if member.value == text:
            return member
    allowed = ", ".join(str(m.value) for m in kind)
    shown = "nothing" if not text else repr(str(value).strip())
    raise VocabularyError(field, f"{field}: {shown} is not one of {allowed}")


def parse_optional(kind: type[E], value: object, field: str) -> E | None:
    """Like `parse`, but an empty value means "not given"."""
    if value is None or not str(value).strip():
        return None
    return parse(kind, value, field)


def parse_yes_no(value: object, field: str) -> bool:
    """true/false, yes/no or 1/0 (case-insensitive), as written by people and spreadsheets."""
    text = str(value).strip().lower() if value is not None else ""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    shown = "nothing" if not text else repr(str(value).strip())
    raise VocabularyError(field, f"{field}: {shown} is not yes/no (true/false, 1/0)")


def parse_date(value: object, field: str) -> dt.date:
    """A YYYY-MM-DD date, as a date picker sends it and the CSV import and the API document it."""
    text = str(value).strip() if value is not None else ""
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        shown = "nothing" if not text else repr(text)
        raise VocabularyError(field, f"{field}: {shown} is not a date (YYYY-MM-DD)") from None
