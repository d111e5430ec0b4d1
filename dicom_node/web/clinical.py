"""Clinical metadata registered over HTTP (RIS JSON or the study page's form), through `db.clinical`.

`db.clinical.register_clinical_info` owns the rules (an identifier, at least one value, PSA range); this
module only says its refusals in the API's field names, audits them and turns them into a 422 — in one
place for both routes.
"""

from __future__ import annotations

import logging
from typing import Any, NoReturn

from fastapi import HTTPException
from pydantic import BaseModel, ConfigDict, Field

from db.clinical import ClinicalInputError, MissingClinicalInput, register_clinical_info
from db.session import transaction
from dicom_node.web.auth import Principal
from dicom_node.web.context import WebContext
from dicom_node.web.rows import row

log = logging.getLogger(__name__)


class ClinicalIn(BaseModel):
    """What a RIS posts for an accession, before (or after) the study arrives: the JSON shape only."""

    model_config = ConfigDict(extra="forbid")

    accession_number: str = Field(min_length=1, max_length=64)
    patient_id: str | None = Field(default=None, max_length=64)
    psa_ng_ml: float | None = None
    prostatectomy: bool | None = None


def explain(exc: ClinicalInputError) -> str:
    """A refusal from `db.clinical` in terms of the API's field names."""
    if isinstance(exc, MissingClinicalInput):
        names = exc.fields
        return f"neither {' nor '.join(names)} given: give {', '.join(names)} or both"
    return f"{', '.join(exc.fields)}: {exc}"


def refuse(context: WebContext, user: Principal, reason: str, **fields: Any) -> NoReturn:
    """Log and audit a refused registration, and answer 422 with the reason."""
    log.warning("refused clinical registration", extra={"reason": reason, "actor": user.actor})
    context.audit("admin", "clinical-refused", outcome="refused", reason=reason, actor=user.actor, **fields)
    raise HTTPException(422, reason)


def register(
    context: WebContext,
    user: Principal,
    source: str,
    *,
    accession_number: str,
    patient_id: str | None,
    psa_ng_ml: float | None,
    prostatectomy: bool | None,
) -> dict[str, Any]:
    """Register the values as `user`; the stored row, or a 422 saying what `db.clinical` refused."""
    try:
        with transaction(context.sessions) as session:
            info = register_clinical_info(
                session,
                accession_number=accession_number,
                patient_id=patient_id,
                psa_ng_ml=psa_ng_ml,
                prostatectomy=prostatectomy,
                source=source,
                actor=user.actor,
            )
            session.flush()
            stored = row(info)
    except ClinicalInputError as exc:
        refuse(context, user, explain(exc), accession_number=accession_number)
    log.info("clinical metadata registered", extra={"source": source, "actor": user.actor})
    return stored
