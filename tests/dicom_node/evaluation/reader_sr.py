"""Readers' assessment SRs as a reporting system would send them back, built with highdicom: a Comprehensive
SR that references the node's SR (as evidence, as its predecessor, or from a content item) and states the
reader's finding, optionally with the node's verdict / reason / comment items."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import Comprehensive3DSRStorage, PositronEmissionTomographyImageStorage, generate_uid

ASSESSMENT = Code("AI_ASSESSMENT", "99LOCAL", "AI result assessment")
RECURRENT_MALIGNANCY = Code("111338", "DCM", "Recurrent malignancy")
FINDINGS = {"present": codes.SCT.Present, "absent": codes.SCT.Absent, "indeterminate": Code("82334004", "SCT",
                                                                                             "Indeterminate")}
TEXTS = {
    "verdict": Code("AI_VERDICT", "99LOCAL", "AI result verdict"),
    "reason": Code("AI_REASON", "99LOCAL", "AI result assessment reason"),
    "comment": Code("AI_COMMENT", "99LOCAL", "AI result assessment comment"),
    "seen": Code("AI_SEEN_FIRST", "99LOCAL", "AI result seen before reporting"),
}


def study_object(study_uid: str, sop_uid: str | None = None, sop_class: str = Comprehensive3DSRStorage,
                 accession: str = "ACC-SR") -> Dataset:
    """The header of an object of the study (by default the node's SR): what highdicom copies patient and
    study attributes from, and what the reader's SR references."""
    ds = Dataset()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid or generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Sentinel^Zebra", "PID-1", "19500101", "M"
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20240102", "101500", "1", accession
    ds.ReferringPhysicianName = ""
    return ds


def reader_sr(node_sr: Dataset, *, finding: str | list[str] | None = "present", reference: str = "evidence",
              verified: bool = True, reader: str = "Reader^Rita", texts: dict[str, str] | None = None) -> Dataset:
    """A reader's SR on the result whose SR header is `node_sr`.

    reference: "evidence" (Current Requested Procedure Evidence), "predecessor" (an edited copy: Predecessor
    Documents), "content" (a COMPOSITE item's Referenced SOP Sequence) or "none"."""
    items: list[hd.sr.ContentItem] = []
    for value in [finding] if isinstance(finding, str) else finding or []:
        items.append(hd.sr.CodeContentItem(RECURRENT_MALIGNANCY, FINDINGS[value], relationship_type="CONTAINS"))
    for key, text in (texts or {}).items():
        items.append(hd.sr.TextContentItem(TEXTS[key], text, relationship_type="CONTAINS"))
    if not verified:
        items.append(hd.sr.PnameContentItem(codes.DCM.PersonObserverName, reader,
                                            relationship_type="HAS OBS CONTEXT"))
    other = study_object(node_sr.StudyInstanceUID, sop_class=PositronEmissionTomographyImageStorage)
    for name in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber"):
        setattr(other, name, node_sr.get(name, ""))
    if reference == "content":
        items.append(hd.sr.CompositeContentItem(Code("121112", "DCM", "Source of Measurement"),
                                                node_sr.SOPClassUID, node_sr.SOPInstanceUID,
                                                relationship_type="CONTAINS"))
    root = hd.sr.ContainerContentItem(ASSESSMENT)
    root.ContentSequence = hd.sr.ContentSequence(items)
    sr = hd.sr.ComprehensiveSR(
        evidence=[node_sr] if reference == "evidence" else [other, node_sr] if reference == "content" else [other],
        content=root, series_instance_uid=generate_uid(), series_number=77, sop_instance_uid=generate_uid(),
        instance_number=1, manufacturer="Reporting system", is_complete=True, is_final=verified,
        is_verified=verified, verifying_observer_name=reader if verified else None,
        verifying_organization="Radiology" if verified else None,
        previous_versions=[node_sr] if reference == "predecessor" else None,
    )
    if reference == "content":  # highdicom lists it as evidence too; a system referencing it only there would not
        for study in sr.CurrentRequestedProcedureEvidenceSequence:
            for series in study.ReferencedSeriesSequence:
                series.ReferencedSOPSequence = [item for item in series.ReferencedSOPSequence
                                                if item.ReferencedSOPInstanceUID != node_sr.SOPInstanceUID]
    return sr


def save(ds: Dataset, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path
