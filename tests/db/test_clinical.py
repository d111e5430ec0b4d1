"""Registered clinical metadata: appended, audited, newest value per field wins, accession before patient."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from db.clinical import ClinicalInputError, clinical_history, lookup_clinical, register_clinical_info
from db.models import AuditEvent
from db.session import transaction


def test_newest_value_per_field_wins_and_every_registration_is_audited(sessions) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as session:
        register_clinical_info(session, "ACC1", psa_ng_ml=3.2, prostatectomy=False, source="cli")
    with transaction(sessions) as session:
        register_clinical_info(session, "ACC1", prostatectomy=True, source="http", actor="ris")
    with transaction(sessions) as session:
        found = lookup_clinical(session, "ACC1")
        assert found is not None
        assert (found.psa_ng_ml, found.prostatectomy) == (3.2, True)
        assert "via cli" in found.detail and "via http" in found.detail
        assert len(clinical_history(session, "ACC1")) == 2
        events = session.scalars(select(AuditEvent).where(AuditEvent.action == "clinical-registered")).all()
        assert len(events) == 2
        assert events[1].actor == "ris" and events[1].detail["prostatectomy"] is True


def test_patient_level_values_apply_when_the_accession_has_none(sessions) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as session:
        register_clinical_info(session, None, patient_id="P7", psa_ng_ml=1.1)
        register_clinical_info(session, "ACC2", patient_id="P7", prostatectomy=True)
    with transaction(sessions) as session:
        found = lookup_clinical(session, "ACC2", "P7")
        assert found is not None and (found.psa_ng_ml, found.prostatectomy) == (1.1, True)
        assert lookup_clinical(session, "UNKNOWN") is None


@pytest.mark.parametrize(
    ("accession", "values", "message"),
    [
        (None, {"psa_ng_ml": 1.0}, "accession number or a patient ID"),
        ("ACC3", {}, "PSA value, a prostatectomy status"),
        ("ACC3", {"psa_ng_ml": -1.0}, "between 0 and"),
        ("ACC3", {"psa_ng_ml": float("nan")}, "between 0 and"),
    ],
)
def test_nonsense_registrations_are_refused(sessions, accession, values, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ClinicalInputError, match=message):
        with transaction(sessions) as session:
            register_clinical_info(session, accession, **values)
