"""The Structured Report: valid for dciodvfy and dsrdump, every group drawable on the analysed images, and the
coded values and numbers read back with highdicom."""

from __future__ import annotations

import re
import subprocess
from copy import deepcopy
from itertools import pairwise
from pathlib import Path

import highdicom as hd
import numpy as np
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
    outline,
)
from inference.result import AnalysisResult
from tests.support.tools import require_tool
from tests.dicom_node.report.synthetic import (
    CENTRE,
    CT_SOP_CLASS,
    PET_SOP_CLASS,
    make_analysis,
    make_pet_header,
)
from tests.dicom_node.report.synthetic_findings import make_analysis_with_findings, pet_series_headers
from tests.dicom_node.report.validation import dciodvfy_errors, dsrdump_problems

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
CT_STEP_MM, CT_PIXEL_MM, CT_MATRIX = 3.0, 0.9, 256


def _evidence(pet: Dataset) -> list[Dataset]:
    ct = Dataset()
    ct.StudyInstanceUID = pet.StudyInstanceUID
    ct.SeriesInstanceUID = generate_uid()
    ct.SOPClassUID = CT_SOP_CLASS
    ct.SOPInstanceUID = generate_uid()
    return [pet, ct]


def _ct_headers(pet: Dataset, slices: int = 60) -> list[Dataset]:
    """An axial CT series around the synthetic centre on its own grid (finer pixels, 3 mm slices)."""
    series = generate_uid()
    headers = []
    for k in range(slices):
        header = deepcopy(pet)
        header.SOPClassUID, header.SOPInstanceUID, header.SeriesInstanceUID = CT_SOP_CLASS, generate_uid(), series
        header.Modality, header.InstanceNumber = "CT", k + 1
        half = CT_PIXEL_MM * CT_MATRIX / 2
        header.ImagePositionPatient = [CENTRE[0] - half, CENTRE[1] - half, CENTRE[2] + (k - slices / 2) * CT_STEP_MM]
        header.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        header.PixelSpacing = [CT_PIXEL_MM, CT_PIXEL_MM]
        header.SliceThickness = CT_STEP_MM
        header.Rows = header.Columns = CT_MATRIX
        headers.append(header)
    return headers


def _nearest_axial(headers: list[Dataset], z: float) -> Dataset:
    return min(headers, key=lambda h: abs(float(h.ImagePositionPatient[2]) - z))


def _pixel(header: Dataset, lps: tuple[float, float, float]) -> tuple[float, float]:
    """SCOORD (column, row) of an LPS point on an axial image, worked out from the header directly."""
    x0, y0 = float(header.ImagePositionPatient[0]), float(header.ImagePositionPatient[1])
    row_mm, column_mm = (float(v) for v in header.PixelSpacing)
    return (lps[0] - x0) / column_mm + 0.5, (lps[1] - y0) / row_mm + 0.5


def _inside(polygon: np.ndarray, point: tuple[float, float]) -> bool:
    """Even-odd rule: whether `point` lies inside the closed polyline."""
    x, y = point
    inside = False
    for (x1, y1), (x2, y2) in pairwise(polygon):
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


def _build(tmp_path: Path, analysis: AnalysisResult, name: str = "sr.dcm", with_headers: bool = True,
           segmentation: Dataset | None = None, numbers: dict[str, int] | None = None,
           **settings: object) -> tuple[Path, Dataset, list[Dataset], list[Dataset]]:
    pet = make_pet_header(series_uid=analysis.pet_series_uid)
    pet_headers = pet_series_headers(analysis.images, pet) if with_headers and analysis.images else []
    ct_headers = _ct_headers(pet) if with_headers else []
    sr = build_sr(analysis, _evidence(pet), ResultSettings(**settings), series_uid=generate_uid(),
                  sop_uid=generate_uid(), pet_headers=pet_headers, ct_headers=ct_headers,
                  segmentation=segmentation, segment_numbers=numbers)
    path = tmp_path / name
    sr.save_as(path, enforce_file_format=True)
    return path, sr, pet_headers, ct_headers


def _assert_valid(path: Path) -> str:
    assert dciodvfy_errors(path) == []
    status, errors, text = dsrdump_problems(path)
    assert status == 0 and errors == []
    return text


def _items(group: hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations, meaning: str) -> list:
    return [i for i in group[0].ContentSequence if i.name.meaning == meaning]


def _label(group: hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations) -> str:
    """The group's readable name: its first Comment (what OHIF shows as the measurement's label)."""
    return _items(group, "Comment")[0].value


def _by_identifier(path: Path) -> dict[str, hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations]:
    groups = hd.sr.srread(path).content.get_planar_roi_measurement_groups()
    return {_label(g): g for g in groups}


def test_sr_passes_dciodvfy_and_dsrdump_and_keeps_the_ohif_title(tmp_path: Path) -> None:
    path, sr, _, _ = _build(tmp_path, make_analysis_with_findings())
    text = _assert_valid(path)
    assert sr.SOPClassUID == COMPREHENSIVE_3D_SR
    assert sr.ConceptNameCodeSequence[0].CodeValue == "126000"
    assert "Imaging Measurement Report" in text and "Recurrent malignancy" in text
    assert (sr.CompletionFlag, sr.VerificationFlag, sr.PreliminaryFlag) == ("COMPLETE", "UNVERIFIED", "PRELIMINARY")
    assert sr.StudyInstanceUID == make_pet_header().StudyInstanceUID or sr.PatientID == "PID-0001"
    assert sr.SeriesNumber >= 9000 and sr.SeriesDescription.startswith("AI")


def test_every_measurement_group_is_drawn_on_an_image_by_a_2d_scoord(tmp_path: Path) -> None:
    path, _, _, _ = _build(tmp_path, make_analysis_with_findings())
    report = hd.sr.srread(path)
    assert report.content.get_image_measurement_groups() == []  # nothing OHIF cannot draw
    assert report.content.get_volumetric_roi_measurement_groups() == []
    groups = report.content.get_planar_roi_measurement_groups()
    assert [_label(g) for g in groups] == [
        "Focus 1 (prostate), PET", "Focus 1 (prostate), CT", "Focus 2 (pubic bone), PET", "Focus 2 (pubic bone), CT",
        "Analysed region (prostate); AI: recurrence present"]
    assert len({g.tracking_uid for g in groups}) == len(groups)
    assert {g.tracking_identifier for g in groups} == {"Cornerstone3DTools@^0.1.0:PlanarFreehandROI"}
    for group in groups:
        assert group.reference_type == codes.DCM.ImageRegion
        assert group.roi.value_type.value == "SCOORD"
        assert group.roi.graphic_type in (hd.sr.GraphicTypeValues.POLYLINE, hd.sr.GraphicTypeValues.CIRCLE)
        first_num = next(i for i in group[0].ContentSequence if i.ValueType == "NUM")
        inferred = [c for c in first_num.ContentSequence if c.RelationshipType == "INFERRED FROM"]
        assert [c.ValueType for c in inferred] == ["SCOORD"]  # what OHIF's Measurements panel hydrates from


def test_focus_is_outlined_on_the_pet_slice_through_its_suvmax_and_on_the_nearest_ct(tmp_path: Path) -> None:
    analysis = make_analysis_with_findings()
    path, _, pet_headers, ct_headers = _build(tmp_path, analysis)
    focus = analysis.findings.foci[0]
    groups = _by_identifier(path)
    for name, headers, sop_class in (("PET", pet_headers, PET_SOP_CLASS), ("CT", ct_headers, CT_SOP_CLASS)):
        roi = groups[f"Focus 1 (prostate), {name}"].roi
        expected = _nearest_axial(headers, focus.suv_max_lps[2])
        reference = roi.ContentSequence[0].ReferencedSOPSequence[0]
        assert reference.ReferencedSOPInstanceUID == expected.SOPInstanceUID
        assert reference.ReferencedSOPClassUID == sop_class
        assert roi.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
        polygon = roi.value
        assert np.array_equal(polygon[0], polygon[-1]) and len(polygon) >= 5  # closed outline
        assert _inside(polygon, _pixel(expected, focus.suv_max_lps))


def test_focus_numbers_read_as_labels_rounded_with_site_and_text(tmp_path: Path) -> None:
    analysis = make_analysis_with_findings()
    path, _, _, _ = _build(tmp_path, analysis)
    focus = analysis.findings.foci[0]
    group = _by_identifier(path)["Focus 1 (prostate), PET"]
    assert group.finding_type == codes.SCT.Lesion
    found = [(m.name.meaning, m.value, m.unit.value) for m in group.get_measurements()]
    assert found == [
        ("SUVbw max", pytest.approx(round(focus.suv_max, 2)), "g/ml{SUVbw}"),
        ("SUVbw peak", pytest.approx(11.8), "g/ml{SUVbw}"),
        ("Volume", pytest.approx(round(focus.volume_ml, 1)), "ml"),
        ("miPSMA", pytest.approx(2.0), "{score}"),
        ("SUVbw mean", pytest.approx(round(focus.suv_mean, 2)), "g/ml{SUVbw}"),
    ]
    assert len(found) <= 5  # OHIF prints five label lines
    for measurement in group.get_measurements():
        assert [s.value for s in measurement.finding_sites] == [codes.SCT.Prostate]
    suvmax = group.get_measurements(name=hd.sr.CodedConcept("SUVBW_MAX", "99LOCAL", "SUVbw max"))[0]
    assert suvmax.derivation == codes.SCT.Maximum
    assert suvmax.unit == hd.sr.CodedConcept("g/ml{SUVbw}", "UCUM", "Standardized Uptake Value body weight")
    peak = group.get_measurements(name=hd.sr.CodedConcept("SUVBW_PEAK", "99LOCAL", "SUVbw peak"))[0]
    assert peak.derivation == codes.DCM.PeakValueWithinROI
    volume = group.get_measurements(name=codes.SCT.Volume)[0]
    assert volume.method == codes.DCM.SumOfSegmentedVoxelMethodForVolume
    assert [i.value for i in _items(group, "Relation to urinary bladder")] == ["separate (27 mm from the bladder)"]
    assert _items(group, "miPSMA assessment")[0].value.startswith(
        "miPSMA 2 (≥ spleen 9.1, < parotid 18.0): SUVmax 14.6 >= spleen")
    assert _items(group, "Finding")[-1].value == (
        "PSMA-avid focus in the prostate; miT2 if judged tumour (extension not assessed)")
    assert _items(group, "Isocontour rule and level")[0].value.startswith(
        f"41 % of SUVbw max; level SUVbw {focus.contour_suv:.2f}")
    assert "1.22 ml averaged" in _items(group, "SUVbw peak method")[0].value
    assert _items(group, "Site determination")[0].value.startswith("prostate: within the usual prostate extent")
    algorithm = _items(group, "Algorithm Name")[0].value
    assert "isocontour" in algorithm
    params = [i.value for i in _items(group, "Algorithm Parameters")]
    assert "isocontour=41 % of SUVbw max" in params
    assert f"isocontour_level_suvbw={focus.contour_suv:.2f}" in params
    second = _by_identifier(path)["Focus 2 (pubic bone), PET"]
    assert "miPSMA" not in [m.name.meaning for m in second.get_measurements()]  # not assessable: no number
    assert "SUVbw peak" not in [m.name.meaning for m in second.get_measurements()]
    for measurement in second.get_measurements():
        assert [s.value for s in measurement.finding_sites] == [hd.sr.CodedConcept("272673000", "SCT", "Bone")]
    assert _items(second, "Finding")[-1].value.startswith("pubic bone: bone uptake (miM1b if metastasis; "
                                                          "unspecific bone uptake is a known [18F]PSMA-1007 pitfall")
    assert _items(second, "Isocontour rule and level")[0].value.startswith(
        "adaptive: background + 50 % of (SUVbw max - background); level SUVbw 1.80 (low contrast")
    assert _items(second, "SUVbw peak method")[0].value == "none: PET voxels too coarse"


def test_private_codes_are_identified_and_the_standard_suvbw_unit_is_used(tmp_path: Path) -> None:
    path, sr, _, _ = _build(tmp_path, make_analysis_with_findings())
    schemes = {item.CodingSchemeDesignator: item for item in sr.CodingSchemeIdentificationSequence}
    assert schemes["99LOCAL"].CodingSchemeName == "psma-node local concepts"
    assert schemes["99LOCAL"].CodingSchemeResponsibleOrganization.startswith("psma-node")
    text = _assert_valid(path)
    assert '"SUVbw max")="13.84" (g/ml{SUVbw},UCUM,' in text and '"SUVmax"' not in text


def test_study_level_answer_is_drawn_with_the_analysed_region(tmp_path: Path) -> None:
    analysis = make_analysis_with_findings(probability=0.83)
    path, _, pet_headers, _ = _build(tmp_path, analysis)
    report = hd.sr.srread(path)
    content = report.content
    observer = content.get_observer_contexts()[0]
    assert observer.observer_type == codes.DCM.Device
    assert observer.observer_identifying_attributes.uid == device_uid(analysis.weights_sha256, "0.1.0")
    procedure = [i for i in content[0].ContentSequence if i.name.meaning == "Procedure reported"]
    assert procedure[0].value == hd.sr.CodedConcept("44139-4", "LN", "PET whole body")
    group = _by_identifier(path)["Analysed region (prostate); AI: recurrence present"]
    assert group.finding_type == codes.DCM.RecurrentMalignancy
    assert [e.value for e in group.get_qualitative_evaluations(name=codes.DCM.RecurrentMalignancy)] == [
        codes.SCT.Present]
    probability = group.get_measurements(name=codes.DCM.ProbabilityOfCancer)
    assert len(probability) == 1 and probability[0].value == pytest.approx(83.0)
    assert probability[0].unit == hd.sr.CodedConcept("%", "UCUM", "percent")  # OHIF prints "83.00 %"
    assert [s.value for s in probability[0].finding_sites] == [codes.SCT.Prostate]
    suv = {m.name.meaning: m.value for m in group.get_measurements()}
    findings = analysis.findings
    assert suv["SUVbw max"] == pytest.approx(findings.region_suv_max)  # the region's own, not focus 1's
    assert suv["SUVbw mean"] == pytest.approx(findings.region_suv_mean)
    assert findings.region_suv_mean != pytest.approx(findings.foci[0].suv_mean)
    params = [i.value for i in _items(group, "Algorithm Parameters")]
    assert any(p.startswith("psa_ng_ml=4.2 (tag") for p in params)
    assert any(p.startswith("prostatectomy=no (given") for p in params)
    assert "threshold=0.5" in params and "model_id=D" in params
    comments = [i.value for i in _items(group, "Comment")]
    assert len(comments) == 2 and comments[0] == "Analysed region (prostate); AI: recurrence present"
    assert "NOT FOR DIAGNOSTIC USE" in comments[1] and "sensitivity 0.57" in comments[1]
    # drawn away from the foci's slices, so its label does not cover theirs
    referenced = group.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
    focus_slices = {_nearest_axial(pet_headers, f.suv_max_lps[2]).SOPInstanceUID for f in analysis.findings.foci}
    assert referenced in {str(h.SOPInstanceUID) for h in pet_headers} and referenced not in focus_slices
    node = [e for e in report.ContributingEquipmentSequence if e.Manufacturer.startswith("psma-node")]
    assert len(node) == 1 and node[0].DeviceUID == observer.observer_identifying_attributes.uid
    assert node[0].PurposeOfReferenceCodeSequence[0].CodeValue == "109102"


def test_document_level_evaluations_carry_answer_category_and_reference_organs(tmp_path: Path) -> None:
    path, _, _, _ = _build(tmp_path, make_analysis_with_findings())
    content = hd.sr.srread(path).content
    container = next(i for i in content[0].ContentSequence if i.name.meaning == "Qualitative Evaluations")
    values = {i.name.meaning: i.value for i in container.ContentSequence if i.value_type.value == "CODE"}
    assert values == {"Recurrent malignancy": codes.SCT.Present}
    texts = [(i.name.meaning, i.value) for i in container.ContentSequence if i.value_type.value == "TEXT"]
    named = dict(texts)
    assert named["AI classifier result"] == (
        "AI classifier: local recurrence PRESENT, probability 0.83 (threshold 0.50)")
    category = named["Rule-based PROMISE V2 category, independent of the AI"]
    assert category.startswith("Rule-based PROMISE V2 suggestion, independent of the AI classifier: miT2u "
                               "(1 focus in the prostate; extension not assessed)")
    assert ("Finding", "Focus 2 (pubic bone): SUVbw max 3.10; pubic bone: bone uptake (miM1b if metastasis; "
            "unspecific bone uptake is a known [18F]PSMA-1007 pitfall)") in texts
    organs = [v for n, v in texts if n == "miPSMA reference organ"]
    assert organs[1].startswith("spleen: SUVbw mean 9.10 (VOI 180 ml); TotalSegmentator spleen mask")
    assert organs[2].startswith("parotid glands: not assessable (no parotid mask)")
    assert any(n == "Comment" and "NOT FOR DIAGNOSTIC USE" in v for n, v in texts)
    assert "Outside validated conditions" not in named


def test_inputs_outside_the_validated_conditions_are_stated_in_the_region_group_and_at_document_level(
        tmp_path: Path) -> None:
    analysis = make_analysis_with_findings()
    analysis.envelope_violations = ["uptake time 240 min > 150 min", "PET reconstructed with /opt/recon/x"]
    path, _, _, _ = _build(tmp_path, analysis)
    _assert_valid(path)
    expected = ("Outside the conditions the model was validated for: uptake time 240 min > 150 min; "
                "PET reconstructed with …")
    group = _by_identifier(path)["Analysed region (prostate); AI: recurrence present"]
    assert [i.value for i in _items(group, "Outside validated conditions")] == [expected]
    container = next(i for i in hd.sr.srread(path).content[0].ContentSequence
                     if i.name.meaning == "Qualitative Evaluations")
    assert [i.value for i in container.ContentSequence if i.name.meaning == "Outside validated conditions"] == [
        expected]


def test_unknown_status_suggests_no_category_and_says_why(tmp_path: Path) -> None:
    analysis = make_analysis_with_findings()
    analysis.findings.local_category = None
    analysis.findings.local_category_note = "miT not suggested: prostatectomy status unknown"
    path, _, _, _ = _build(tmp_path, analysis)
    text = _assert_valid(path)
    container = next(i for i in hd.sr.srread(path).content[0].ContentSequence
                     if i.name.meaning == "Qualitative Evaluations")
    category = next(i.value for i in container.ContentSequence
                    if i.name.meaning == "Rule-based PROMISE V2 category, independent of the AI")
    assert category == ("Rule-based PROMISE V2 suggestion, independent of the AI classifier: miT not suggested: "
                        "prostatectomy status unknown")
    assert "miTr" not in text and "miT2" not in text.replace("miT2 if judged", "")


def test_image_library_lists_exactly_the_images_drawn_on(tmp_path: Path) -> None:
    path, sr, pet_headers, ct_headers = _build(tmp_path, make_analysis_with_findings())
    library = next(i for i in sr.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "111028")
    listed = {item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
              for group in library.ContentSequence for item in group.ContentSequence}
    drawn = {g.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
             for g in _by_identifier(path).values()}
    assert listed == drawn and len(drawn) >= 3
    every = {str(h.SOPInstanceUID) for h in [*pet_headers, *ct_headers]}
    assert drawn <= every


def test_no_focus_still_draws_the_region_with_no_focal_uptake(tmp_path: Path) -> None:
    analysis = make_analysis_with_findings(probability=0.2)
    analysis.findings.foci = []
    analysis.findings.local_category = "miT0"
    path, _, pet_headers, _ = _build(tmp_path, analysis)
    text = _assert_valid(path)
    groups = hd.sr.srread(path).content.get_planar_roi_measurement_groups()
    assert [_label(g) for g in groups] == ["Analysed region (prostate): no focus ≥ SUVbw 4; AI: recurrence absent"]
    group = groups[0]
    assert group.roi.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
    region = analysis.findings.region_mask
    crop = analysis.images.pet_suv_crop
    centre = crop.index_to_lps(np.argwhere(region).mean(axis=0))
    expected = _nearest_axial(pet_headers, float(centre[2]))
    assert group.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == expected.SOPInstanceUID
    assert _inside(group.roi.value, _pixel(expected, tuple(centre)))
    assert [e.value for e in group.get_qualitative_evaluations()] == [codes.SCT.Absent]
    assert [i.value for i in _items(group, "Finding") if i.value_type.value == "TEXT"] == [
        "No focus with SUVbw max ≥ 4 and ≥ 1.5 × local background in the analysed region"]
    container = next(i for i in hd.sr.srread(path).content[0].ContentSequence
                     if i.name.meaning == "Qualitative Evaluations")
    assert any("miT0 (no focus in the prostate / prostate bed)" in str(i.value) for i in container.ContentSequence)
    assert "Analysed region" in text


def test_sr_without_classifier_is_undetermined_with_quantitative_findings(tmp_path: Path) -> None:
    path, _, _, _ = _build(tmp_path, make_analysis_with_findings(classifier_run=False))
    text = _assert_valid(path)
    assert "Undetermined" in text and "Probability of cancer" not in text
    assert "SUVbw max" in text
    group = _by_identifier(path)["Analysed region (prostate); AI: recurrence undetermined"]
    assert [e.value for e in group.get_qualitative_evaluations()] == [codes.SCT.Undetermined]
    assert group.get_measurements(name=codes.DCM.ProbabilityOfCancer) == []
    comment = _items(group, "Comment")[1].value
    assert "Classifier not run: no checkpoint for model D" in comment
    assert "Focus 1 (prostate), PET" in _by_identifier(path)  # the weight-free foci are still drawn


def test_sr_after_prostatectomy_names_the_prostate_bed_with_a_private_code(tmp_path: Path) -> None:
    analysis = make_analysis_with_findings(prostatectomy=True)
    analysis.findings.foci[0].site = analysis.findings.foci[0].site_name = "prostate bed"
    path, _, _, _ = _build(tmp_path, analysis)
    text = _assert_valid(path)
    assert f"({PROSTATE_BED.value},{PROSTATE_BED.scheme_designator},\"Prostate bed\")" in text
    groups = _by_identifier(path)
    assert "Analysed region (prostate bed); AI: recurrence present" in groups
    for measurement in groups["Focus 1 (prostate bed), PET"].get_measurements():
        assert [s.value for s in measurement.finding_sites] == [PROSTATE_BED]


def test_segments_are_referenced_from_their_groups(tmp_path: Path) -> None:
    seg = Dataset()
    seg.SOPClassUID, seg.SOPInstanceUID = SEG_SOP_CLASS, generate_uid()
    seg.StudyInstanceUID, seg.SeriesInstanceUID = make_pet_header().StudyInstanceUID, generate_uid()
    analysis = make_analysis_with_findings()
    pet = make_pet_header(series_uid=analysis.pet_series_uid)
    seg.StudyInstanceUID = pet.StudyInstanceUID
    sr = build_sr(analysis, _evidence(pet), ResultSettings(), series_uid=generate_uid(), sop_uid=generate_uid(),
                  pet_headers=pet_series_headers(analysis.images, pet), ct_headers=_ct_headers(pet),
                  segmentation=seg, segment_numbers={"region": 1, "bladder": 2, "focus-1": 3, "focus-2": 4})
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    _assert_valid(path)
    numbers = {}
    for name, group in _by_identifier(path).items():
        images = [i for i in group[0].ContentSequence if i.ValueType == "IMAGE"]
        assert len(images) == 1 and images[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == seg.SOPInstanceUID
        numbers[name] = int(images[0].ReferencedSOPSequence[0].ReferencedSegmentNumber)
    assert numbers == {"Focus 1 (prostate), PET": 3, "Focus 1 (prostate), CT": 3, "Focus 2 (pubic bone), PET": 4,
                       "Focus 2 (pubic bone), CT": 4, "Analysed region (prostate); AI: recurrence present": 1}
    evidence = [s.ReferencedSOPInstanceUID for series in sr.CurrentRequestedProcedureEvidenceSequence[0]
                .ReferencedSeriesSequence for s in series.ReferencedSOPSequence]
    assert seg.SOPInstanceUID in evidence


def test_without_instance_headers_no_group_is_written_and_the_answer_stays_at_document_level(
        tmp_path: Path) -> None:
    path, _, _, _ = _build(tmp_path, make_analysis(), with_headers=False)
    text = _assert_valid(path)
    assert hd.sr.srread(path).content.get_planar_roi_measurement_groups() == []
    assert "Measurement Group" not in text and "Qualitative Evaluations" in text and "Present" in text


def test_dsr2html_lists_items_separately_under_their_labels(tmp_path: Path) -> None:
    path, sr, _, _ = _build(tmp_path, make_analysis_with_findings())
    assert sr.ContinuityOfContent == "SEPARATE"
    html_path = tmp_path / "sr.html"
    run = subprocess.run([require_tool("dsr2html"), str(path), str(html_path)], capture_output=True, text=True,
                         timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    text = re.sub(r"<[^>]+>", "\n", html_path.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    pairs = list(pairwise(lines))
    assert ("SUVbw max:", "13.84 g/ml{SUVbw}") in pairs and ("Volume:", "2.8 ml") in pairs
    assert ("Comment:", "Focus 1 (prostate), PET") in pairs
    assert ("Recurrent malignancy:", "Present (52101004, SCT)") in pairs


def test_comprehensive_sr_by_configuration_and_as_fallback_copy_are_valid(tmp_path: Path) -> None:
    path, configured, _, _ = _build(tmp_path, make_analysis_with_findings(), "configured.dcm",
                                    sr_storage="comprehensive")
    assert configured.SOPClassUID == COMPREHENSIVE_SR
    _assert_valid(path)
    _, original, _, _ = _build(tmp_path, make_analysis_with_findings(), "original.dcm")
    copy = as_comprehensive(original)
    assert original.SOPClassUID == COMPREHENSIVE_3D_SR
    assert copy.SOPClassUID == COMPREHENSIVE_SR == copy.file_meta.MediaStorageSOPClassUID
    assert copy.SOPInstanceUID == original.SOPInstanceUID
    copy_path = tmp_path / "fallback.dcm"
    copy.save_as(copy_path, enforce_file_format=True)
    _assert_valid(copy_path)


def test_outline_encloses_exactly_the_largest_part_of_the_mask() -> None:
    frame = np.zeros((12, 12), bool)
    frame[2:6, 3:8] = True  # 20 pixels
    frame[6, 8] = True  # touches the block only diagonally: a separate part
    frame[9:11, 1:3] = True
    polygon = outline(frame)
    x, y = polygon[:, 0], polygon[:, 1]
    area = 0.5 * abs(float(np.dot(x[:-1], y[1:]) - np.dot(y[:-1], x[1:])))
    assert area == 20.0
    assert {(float(a), float(b)) for a, b in polygon} == {(3.0, 2.0), (8.0, 2.0), (8.0, 6.0), (3.0, 6.0)}
    single = np.zeros((3, 3), bool)
    single[1, 1] = True
    assert outline(single).tolist() == [[1, 1], [2, 1], [2, 2], [1, 2], [1, 1]]


def test_statement_tells_radiologists_the_classifier_is_missing_without_server_paths(tmp_path: Path) -> None:
    analysis = make_analysis_with_findings(classifier_run=False)
    analysis.classifier_note = ("classifier not installed: weights for model D are not installed in "
                                "/srv/psma/var/models: install them with `psma-node models import FILE --as D`")
    analysis.warnings = [analysis.classifier_note]
    path, _, _, _ = _build(tmp_path, analysis)
    text = hd.sr.srread(path).content
    comment = _items(_by_identifier(path)["Analysed region (prostate); AI: recurrence undetermined"],
                     "Comment")[1].value
    assert "Classifier not run: classifier not installed at this site;" in comment
    assert "/srv" not in str(text) and "psma-node models" not in str(text)


def test_device_uid_changes_with_weights_or_software_and_only_then() -> None:
    base = device_uid("ab" * 32, "0.1.0")
    assert base == device_uid("ab" * 32, "0.1.0")
    assert base != device_uid("cd" * 32, "0.1.0")
    assert base != device_uid("ab" * 32, "0.2.0")
    assert base.startswith("2.25.") and len(base) <= 64
