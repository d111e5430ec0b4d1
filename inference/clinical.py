"""PSA and prostatectomy status for the model's metadata channels, each with where it came from; and the
tracer, which picks the miPSMA reference organs.

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
    site_tracer: str = "PSMA-1007"
    """The PSMA tracer this site uses: a PET header that names no tracer, or only "PSMA", means this one."""


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



PSMA_1007_CODE = ("126758", "DCM")
"""(126758, DCM, "PSMA-1007 F^18^"), DICOM PS3.16 CID 4021 "PET Radiopharmaceutical"."""
OTHER_PSMA_CODES = {
    ("C118961", "NCIt"): "PSMA-11 Ga^68^",
    ("126759", "DCM"): "PSMA-617 Ga^68^",
    ("C116352", "NCIt"): "Piflufolastat F^18^",
}
"""Other PSMA ligands of CID 4021 (PS3.16): recognised, and not [18F]PSMA-1007."""
OTHER_PSMA_NAMES = ("dcfpyl", "piflufolastat", "pylarify", "psma11", "gozetotide", "hbed", "psma617",
                    "rhpsma", "flotufolastat", "posluma", "ga68", "68ga", "illuccix", "locametz")


@dataclass(frozen=True)
class Tracer:
    """The radiopharmaceutical as recognised, and from what."""

    name: str
    is_psma_1007: bool
    source: str
    """"code" (Radiopharmaceutical Code Sequence), "text" (Radiopharmaceutical), or "site" (configured)."""
    note: str


def _compact(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def resolve_tracer(header: Any, site_tracer: str) -> Tracer:
    """The tracer from the Radiopharmaceutical Code Sequence (CID 4021) first, then the text; a header
    naming none, or only "PSMA", is read as the site's configured tracer (and says so)."""
    site = site_tracer.strip() or "PSMA-1007"
    items = getattr(header, "RadiopharmaceuticalInformationSequence", None) or []
    text = next((str(getattr(i, "Radiopharmaceutical", "") or "").strip() for i in items
                 if str(getattr(i, "Radiopharmaceutical", "") or "").strip()), "")
    codes = [c for i in items for c in (getattr(i, "RadiopharmaceuticalCodeSequence", None) or [])]
    disagreeing = f"; the text {text!r} is not used" if text else ""
    for code in codes:
        key = (str(getattr(code, "CodeValue", "")), str(getattr(code, "CodingSchemeDesignator", "")))
        meaning = str(getattr(code, "CodeMeaning", "") or "")
        named = f"tracer {meaning or key[0]!r} (Radiopharmaceutical Code Sequence {key[0]}, {key[1]})"
        if key == PSMA_1007_CODE:
            return Tracer(meaning or "PSMA-1007 F^18^", True, "code", named + disagreeing)
        if key in OTHER_PSMA_CODES or meaning:
            return Tracer(meaning or OTHER_PSMA_CODES[key], False, "code", named + disagreeing)
    compact = _compact(text)
    if "1007" in compact:
        return Tracer(text, True, "text", f"tracer {text!r} (Radiopharmaceutical)")
    if compact and (any(name in compact for name in OTHER_PSMA_NAMES) or "psma" not in compact):
        return Tracer(text, False, "text", f"tracer {text!r} (Radiopharmaceutical)")
    is_1007 = "1007" in _compact(site)
    if compact:
        return Tracer(site, is_1007, "site",
                      f"tracer {text!r} names no ligand: read as the site's tracer {site} (clinical.site_tracer)")
    return Tracer(site, is_1007, "site",
                  f"tracer not named in the PET header: the site's tracer {site} assumed (clinical.site_tracer)")
