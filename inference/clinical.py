"""PSA and prostatectomy status for the model's metadata channels, each with where it came from.

Order: values registered for the accession/patient (CLI or HTTP), then configured DICOM text tags, then
policy as published: PSA imputed with 30.1 ng/ml, an unknown prostatectomy status imputed as px = 1 (the
authors' choice for their test set). Guessing the status from the organ the localiser found is an opt-in
local choice. The provenance travels into the result, so a reader knows what the model was told.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from inference.result import ClinicalValue


@dataclass(frozen=True)
class RegisteredClinical:
    """Values registered for a study before or after it arrived (ClinicalInfo rows)."""

    psa_ng_ml: float | None = None
    prostatectomy: bool | None = None
    detail: str = ""


@dataclass(frozen=True)
class ClinicalRules:
    """How to find PSA / prostatectomy in DICOM headers, and the policy when nothing is known."""

    tags: tuple[str, ...] = ("AdditionalPatientHistory", "RequestedProcedureComments", "ImageComments")
    psa_pattern: str = r"PSA[^0-9]{0,12}([0-9]+(?:[.,][0-9]+)?)\s*(?:ng/?ml)?"
    prostatectomy_pattern: str = r"(?i)(prostatectomy|\bRPE\b|\bRP\b|s/p\s+RP)"
    no_prostatectomy_pattern: str = r"(?i)(no prostatectomy|not operated|non-operated|without prostatectomy)"
    impute_psa: float = 30.1
    impute_prostatectomy: bool = True
    infer_prostatectomy: bool = False


def tag_texts(headers: Sequence[Any], tags: Sequence[str]) -> list[tuple[str, str]]:
    """(keyword, text) of every configured tag present in the given headers, in tag order."""
    found: list[tuple[str, str]] = []
    for keyword in tags:
        for header in headers:
            value = getattr(header, keyword, None)
            if value is None or value == "":
                continue
            text = " ".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)
            if text.strip():
                found.append((keyword, text))
                break
    return found


def resolve_psa(
    registered: RegisteredClinical | None, headers: Sequence[Any], rules: ClinicalRules
) -> ClinicalValue:
    if registered is not None and registered.psa_ng_ml is not None:
        return ClinicalValue(float(registered.psa_ng_ml), "given", registered.detail or "registered")
    pattern = re.compile(rules.psa_pattern)
    for keyword, text in tag_texts(headers, rules.tags):
        match = pattern.search(text)
        if match:
            try:
                value = float(match.group(1).replace(",", "."))
            except (IndexError, ValueError):
                continue
            return ClinicalValue(value, "tag", f"{keyword}: {match.group(0).strip()!r}")
    return ClinicalValue(
        float(rules.impute_psa),
        "imputed",
        f"no PSA registered or in {', '.join(rules.tags)}; published imputation",
    )


def resolve_prostatectomy(
    registered: RegisteredClinical | None,
    headers: Sequence[Any],
    rules: ClinicalRules,
    organ_found: str | None,
) -> ClinicalValue:
    """`organ_found` is the localiser's organ: 'prostate', 'bladder', or 'given'/None when it did not run."""
    if registered is not None and registered.prostatectomy is not None:
        return ClinicalValue(bool(registered.prostatectomy), "given", registered.detail or "registered")
    negative = re.compile(rules.no_prostatectomy_pattern)
    positive = re.compile(rules.prostatectomy_pattern)
    for keyword, text in tag_texts(headers, rules.tags):
        match = negative.search(text)
        if match:
            return ClinicalValue(False, "tag", f"{keyword}: {match.group(0)!r}")
        match = positive.search(text)
        if match:
            return ClinicalValue(True, "tag", f"{keyword}: {match.group(0)!r}")
    if rules.infer_prostatectomy and organ_found == "prostate":
        return ClinicalValue(False, "inferred", "a prostate was found on the CT: assumed not operated")
    if rules.infer_prostatectomy and organ_found == "bladder":
        return ClinicalValue(
            True,
            "inferred",
            "no prostate found on the CT (centred on the bladder): assumed post-prostatectomy",
        )
    if rules.impute_prostatectomy:
        return ClinicalValue(
            True,
            "imputed",
            "status not registered nor in the tags: imputed as post-prostatectomy (px = 1), as published",
        )
    return ClinicalValue(
        False,
        "imputed",
        "status not registered nor in the tags: imputed as not operated (px = 0, "
        "clinical.impute_prostatectomy: false; the published imputation is px = 1)",
    )

