"""The report's anatomy follows a known prostatectomy status, never an imputed one."""

from __future__ import annotations

import pytest

from inference.result import ClinicalValue, operated_for_report


@pytest.mark.parametrize(
    ("value", "organ", "expected"),
    [
        (ClinicalValue(True, "given"), "prostate", True),
        (ClinicalValue(False, "tag"), "bladder", False),
        (ClinicalValue(True, "inferred"), "bladder", True),
        (ClinicalValue(True, "imputed"), "prostate", False),
        (ClinicalValue(True, "imputed"), "bladder", True),
        (ClinicalValue(True, "imputed"), "given", None),
    ],
)
def test_imputed_status_does_not_decide_the_reported_anatomy(
    value: ClinicalValue, organ: str, expected: bool | None
) -> None:
    assert operated_for_report(value, organ) is expected
