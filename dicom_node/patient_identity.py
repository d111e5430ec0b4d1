"""Which patient an instance belongs to, kept as salted hashes in its header row.

Assembly must notice a study whose instances name two different patients (a mis-merged or mis-labelled
study) and say which attribute differs, without the names ever reaching the log, the audit trail or a
column meant for matching. Each attribute is hashed with the Study Instance UID as salt, so equal values
compare equal inside a study while the hashes link nothing across studies.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

IDENTITY_ATTRIBUTES: dict[str, str] = {
    "PatientID": "PatientIDHash",
    "PatientName": "PatientNameHash",
    "PatientBirthDate": "PatientBirthDateHash",
}
"""DICOM keyword -> key of its hash in Instance.header."""

LABELS: dict[str, str] = {
    "PatientID": "Patient ID",
    "PatientName": "Patient's Name",
    "PatientBirthDate": "Patient's Birth Date",
}


def normalise(keyword: str, value: str) -> str:
    """The value as compared: case, padding and empty trailing name components do not make a new patient."""
    text = value.strip()
    if keyword == "PatientName":
        groups = [
            "^".join(part.strip() for part in group.split("^")).rstrip("^") for group in text.split("=")
        ]
        text = "=".join(groups).rstrip("=").upper()
    return text


def identity_hashes(study_uid: str, values: Mapping[str, str | None]) -> dict[str, str]:
    """Header entries {PatientIDHash: ..., ...} for the attributes present (empty ones are not compared)."""
    hashes: dict[str, str] = {}
    for keyword, key in IDENTITY_ATTRIBUTES.items():
        raw = values.get(keyword)
        text = normalise(keyword, raw) if raw is not None else ""
        if not text:
            continue
        digest = hashlib.sha256(f"{study_uid}\x00{keyword}\x00{text}".encode("utf-8", "replace"))
        hashes[key] = digest.hexdigest()[:16]
    return hashes
