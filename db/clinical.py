"""PSA and prostatectomy status registered for an accession (or patient), from the CLI or over HTTP.

Rows are only ever added: the newest non-empty value of each field wins, so a correction is a new row and
the history stays visible. Each registration is audited.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.audit import record
from db.models import ClinicalInfo

PSA_MAX_NG_ML = 100000.0


@dataclass(frozen=True)
class ClinicalRegistration:
    """What is registered for a study: per field the newest value, and where each came from."""

    psa_ng_ml: float | None
    prostatectomy: bool | None
    detail: str


class ClinicalInputError(ValueError):
    """A registration that makes no sense (no identifier, no value, negative PSA).

    `fields` names the parameters at fault, so the CLI and the HTTP API can each say it in their own terms
    without restating the rules here."""

    def __init__(self, message: str, fields: tuple[str, ...]) -> None:
        super().__init__(message)
        self.fields = fields


class MissingClinicalInput(ClinicalInputError):
    """None of `fields` was given, and at least one of them is needed."""


class InvalidClinicalValue(ClinicalInputError):
    """The value of `fields[0]` is out of its range."""


def register_clinical_info(
    session: Session,
    accession_number: str | None,
    *,
    psa_ng_ml: float | None = None,
    prostatectomy: bool | None = None,
    patient_id: str | None = None,
    source: str = "cli",
    actor: str | None = None,
) -> ClinicalInfo:
    """Add one registration (committed with the caller's transaction) and its audit event."""
    accession_number = (accession_number or "").strip() or None
    patient_id = (patient_id or "").strip() or None
    if accession_number is None and patient_id is None:
        raise MissingClinicalInput(
            "an accession number or a patient ID is required", ("accession_number", "patient_id")
        )
    if psa_ng_ml is None and prostatectomy is None:
        raise MissingClinicalInput(
            "give a PSA value, a prostatectomy status, or both", ("psa_ng_ml", "prostatectomy")
        )
    if psa_ng_ml is not None and (not math.isfinite(psa_ng_ml) or psa_ng_ml < 0 or psa_ng_ml > PSA_MAX_NG_ML):
        raise InvalidClinicalValue(
            f"PSA must be between 0 and {PSA_MAX_NG_ML:g} ng/ml, got {psa_ng_ml}", ("psa_ng_ml",)
        )
    row = ClinicalInfo(
        accession_number=accession_number,
        patient_id=patient_id,
        psa_ng_ml=psa_ng_ml,
        prostatectomy=prostatectomy,
        source=source,
    )
    session.add(row)
    session.flush()
    record(
        session,
        "admin",
        "clinical-registered",
        actor=actor,
        accession_number=accession_number,
        patient_id=patient_id,
        psa_ng_ml=psa_ng_ml,
        prostatectomy=prostatectomy,
        source=source,
        clinical_info_id=row.id,
    )
    return row


def clinical_history(
    session: Session, accession_number: str | None, patient_id: str | None = None
) -> list[ClinicalInfo]:
    """Rows for the accession first, then for the patient, newest first within each."""
    rows: list[ClinicalInfo] = []
    for column, value in (
        (ClinicalInfo.accession_number, accession_number),
        (ClinicalInfo.patient_id, patient_id),
    ):
        if not value:
            continue
        rows.extend(
            session.scalars(
                select(ClinicalInfo)
                .where(column == value)
                .order_by(ClinicalInfo.created_at.desc(), ClinicalInfo.id.desc())
            )
        )
    return rows


def lookup_clinical(
    session: Session, accession_number: str | None, patient_id: str | None = None
) -> ClinicalRegistration | None:
    """What was registered: per field, the newest value for the accession, else for the patient."""
    psa: ClinicalInfo | None = None
    status: ClinicalInfo | None = None
    row: ClinicalInfo | None
    for row in clinical_history(session, accession_number, patient_id):
        if psa is None and row.psa_ng_ml is not None:
            psa = row
        if status is None and row.prostatectomy is not None:
            status = row
    if psa is None and status is None:
        return None
    parts = []
    for label, row in (("PSA", psa), ("prostatectomy", status)):
        if row is not None:
            key = f"accession {row.accession_number}" if row.accession_number else f"patient {row.patient_id}"
            parts.append(f"{label} registered via {row.source} for {key} at {row.created_at:%Y-%m-%d %H:%M}")
    return ClinicalRegistration(
        psa_ng_ml=psa.psa_ng_ml if psa else None,
        prostatectomy=status.prostatectomy if status else None,
        detail="; ".join(parts),
    )
