"""The Structured Report: valid for dciodvfy and dsrdump, and carrying the coded values the reference asks."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import pytest
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from dicom_node.config import ResultSettings
from dicom_node.report.sr import (
    COMPREHENSIVE_3D_SR,
    COMPREHENSIVE_SR,
    PROSTATE_BED,
    as_comprehensive,
    build_sr,
    device_uid,
)
from tests.dicom_node.report.synthetic import CT_SOP_CLASS, make_analysis, make_pet_header
from tests.dicom_node.report.validation import dciodvfy_errors, dsrdump_problems


def _evidence(pet: Dataset) -> list[Dataset]:
    ct = Dataset()
    ct.StudyInstanceUID = pet.StudyInstanceUID
    ct.SeriesInstanceUID = generate_uid()
    ct.SOPClassUID = CT_SOP_CLASS
    ct.SOPInstanceUID = generate_uid()
    return [pet, ct]


def _write(tmp_path: Path, ds: Dataset, name: str = "sr.dcm") -> Path:
    path = tmp_path / name
    ds.save_as(path, enforce_file_format=True)
    return path


def _assert_valid(path: Path) -> str:
    assert dciodvfy_errors(path) == []
    status, errors, text = dsrdump_problems(path)
    assert status == 0 and errors == []
    return text


def test_sr_passes_dciodvfy_and_dsrdump_and_keeps_the_ohif_title(tmp_path: Path) -> None:
    pet = make_pet_header()
    sr = build_sr(make_analysis(), _evidence(pet), ResultSettings(), series_uid=generate_uid(), sop_uid=generate_uid())
    text = _assert_valid(_write(tmp_path, sr))
    assert sr.SOPClassUID == COMPREHENSIVE_3D_SR
    assert sr.ConceptNameCodeSequence[0].CodeValue == "126000"
    assert "Imaging Measurement Report" in text and "Recurrent malignancy" in text
    assert (sr.CompletionFlag, sr.VerificationFlag, sr.PreliminaryFlag) == ("COMPLETE", "UNVERIFIED", "PRELIMINARY")
    assert sr.StudyInstanceUID == pet.StudyInstanceUID and sr.PatientID == pet.PatientID
    assert sr.SeriesNumber >= 9000 and sr.SeriesDescription.startswith("AI")


def _items(group: hd.sr.MeasurementsAndQualitativeEvaluations, meaning: str) -> list:
    return [i for i in group[0].ContentSequence if i.name.meaning == meaning]


def test_sr_round_trip_has_the_coded_finding_probability_and_suv(tmp_path: Path) -> None:
    analysis = make_analysis(probability=0.83)
    sr = build_sr(analysis, _evidence(make_pet_header()), ResultSettings(), series_uid=generate_uid(),
                  sop_uid=generate_uid())
    report = hd.sr.srread(_write(tmp_path, sr))
    content = report.content
    observer = content.get_observer_contexts()[0]
    assert observer.observer_type == codes.DCM.Device
    assert observer.observer_identifying_attributes.uid == device_uid(analysis.weights_sha256, "0.1.0")
    procedure = [i for i in content[0].ContentSequence if i.name.meaning == "Procedure reported"]
    assert procedure[0].value == hd.sr.CodedConcept("44139-4", "LN", "PET whole body")
    assert content.get_planar_roi_measurement_groups() == []  # study level: no region
    groups = content.get_image_measurement_groups()
    assert len(groups) == 1
    group = groups[0]
    assert group.finding_type == codes.DCM.RecurrentMalignancy
    assert group.tracking_uid and group.tracking_identifier
    assert [s.value for s in group.finding_sites] == [codes.SCT.Prostate]
    assert [e.value for e in group.get_qualitative_evaluations(name=codes.DCM.RecurrentMalignancy)] == [
        codes.SCT.Present]
    probability = group.get_measurements(name=codes.DCM.ProbabilityOfCancer)
    assert len(probability) == 1 and probability[0].value == pytest.approx(0.83)
    assert probability[0].unit == hd.sr.CodedConcept("1", "UCUM", "no units")
    suv = group.get_measurements(name=hd.sr.CodedConcept("126401", "DCM", "SUVbw"))
    assert sorted(m.value for m in suv) == pytest.approx([6.2, 14.6])
    assert {m.unit.value for m in suv} == {"g/ml"}
    params = [i.value for i in _items(group, "Algorithm Parameters")]
    assert any(p.startswith("psa_ng_ml=4.2 (tag") for p in params)
    assert any(p.startswith("prostatectomy=no (given") for p in params)
    assert "threshold=0.5" in params and "model_id=D" in params
    assert _items(group, "Algorithm Name") and _items(group, "Algorithm Version")
    comments = [i.value for i in _items(group, "Comment")]
    assert len(comments) == 1
    assert "NOT FOR DIAGNOSTIC USE" in comments[0] and "sensitivity 0.57" in comments[0]
    evidence = report.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    assert len(evidence) == 2 and "PertinentOtherEvidenceSequence" not in report
    node = [e for e in report.ContributingEquipmentSequence if e.Manufacturer.startswith("psma-node")]
    assert len(node) == 1 and node[0].DeviceUID == observer.observer_identifying_attributes.uid
    assert node[0].PurposeOfReferenceCodeSequence[0].CodeValue == "109102"


def test_sr_without_classifier_is_undetermined_with_quantitative_findings(tmp_path: Path) -> None:
    analysis = make_analysis(classifier_run=False)
    sr = build_sr(analysis, _evidence(make_pet_header()), ResultSettings(), series_uid=generate_uid(),
                  sop_uid=generate_uid())
    text = _assert_valid(_write(tmp_path, sr))
    assert "Undetermined" in text and "Probability of cancer" not in text
    assert "SUVbw" in text
    group = hd.sr.srread(tmp_path / "sr.dcm").content.get_image_measurement_groups()[0]
    assert [e.value for e in group.get_qualitative_evaluations()] == [codes.SCT.Undetermined]
    assert group.get_measurements(name=codes.DCM.ProbabilityOfCancer) == []
    comment = _items(group, "Comment")[0].value
    assert "Classifier not run: no checkpoint for model D" in comment


def test_sr_after_prostatectomy_names_the_prostate_bed_with_a_private_code(tmp_path: Path) -> None:
    sr = build_sr(make_analysis(prostatectomy=True), _evidence(make_pet_header()), ResultSettings(),
                  series_uid=generate_uid(), sop_uid=generate_uid())
    text = _assert_valid(_write(tmp_path, sr))
    assert f"({PROSTATE_BED.value},{PROSTATE_BED.scheme_designator},\"Prostate bed\")" in text


def test_comprehensive_sr_by_configuration_and_as_fallback_copy_are_valid(tmp_path: Path) -> None:
    pet = make_pet_header()
    configured = build_sr(make_analysis(), _evidence(pet), ResultSettings(sr_storage="comprehensive"),
                          series_uid=generate_uid(), sop_uid=generate_uid())
    assert configured.SOPClassUID == COMPREHENSIVE_SR
    _assert_valid(_write(tmp_path, configured, "configured.dcm"))
    original = build_sr(make_analysis(), _evidence(pet), ResultSettings(), series_uid=generate_uid(),
                        sop_uid=generate_uid())
    copy = as_comprehensive(original)
    assert original.SOPClassUID == COMPREHENSIVE_3D_SR
    assert copy.SOPClassUID == COMPREHENSIVE_SR == copy.file_meta.MediaStorageSOPClassUID
    assert copy.SOPInstanceUID == original.SOPInstanceUID
    _assert_valid(_write(tmp_path, copy, "fallback.dcm"))


def test_device_uid_changes_with_weights_or_software_and_only_then() -> None:
    base = device_uid("ab" * 32, "0.1.0")
    assert base == device_uid("ab" * 32, "0.1.0")
    assert base != device_uid("cd" * 32, "0.1.0")
    assert base != device_uid("ab" * 32, "0.2.0")
    assert base.startswith("2.25.") and len(base) <= 64
