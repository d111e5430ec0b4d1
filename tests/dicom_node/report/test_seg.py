"""The DICOM SEG: valid, every segment's codes read back, frames on the right PET instances and pixels.

The expected pixel positions are computed here independently of `dicom_node.report.geometry`: a crop voxel
(i, j, k) is column i + offset, row (Rows - 1) - (j + offset) of the instance at slice k + offset.
"""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dicom_node.report.seg import SERIES_DESCRIPTION, build_seg
from inference.result import AnalysisResult, ClinicalValue
from tests.dicom_node.report.synthetic import make_analysis, make_pet_header
from tests.support.settings import make_settings
from tests.dicom_node.report.synthetic_findings import (
    CROP_OFFSET,
    make_analysis_with_findings,
    pet_series_headers,
)
from tests.dicom_node.report.validation import dciodvfy_errors

DEVICE_UID = "2.25.123456789012345678901234567890"


def _build(tmp_path: Path, analysis: AnalysisResult, **results: object) -> tuple[Path, dict[str, int], list[Dataset]]:
    pet = make_pet_header(series_uid=analysis.pet_series_uid)
    assert analysis.images is not None
    headers = pet_series_headers(analysis.images, pet)
    settings = make_settings(tmp_path, "sqlite://", **results)
    built = build_seg(analysis, headers, settings.results, series_uid=generate_uid(), sop_uid=generate_uid(),
                      device_uid=DEVICE_UID)
    assert built is not None
    seg, numbers = built
    path = tmp_path / "seg.dcm"
    seg.save_as(path, enforce_file_format=True)
    return path, numbers, headers


def _expected_frames(mask: np.ndarray, headers: list[Dataset]) -> dict[str, np.ndarray]:
    by_slice = {int(h.InstanceNumber) - 1: h for h in headers}
    rows, columns = int(headers[0].Rows), int(headers[0].Columns)
    frames: dict[str, np.ndarray] = {}
    for i, j, k in np.argwhere(mask):
        header = by_slice[k + CROP_OFFSET[2]]
        frame = frames.setdefault(str(header.SOPInstanceUID), np.zeros((rows, columns), bool))
        frame[rows - 1 - (j + CROP_OFFSET[1]), i + CROP_OFFSET[0]] = True
    return frames


def test_seg_passes_dciodvfy_and_carries_the_research_statement(tmp_path: Path) -> None:
    path, _, headers = _build(tmp_path, make_analysis_with_findings(), seg_series_number=9977)

    assert dciodvfy_errors(path) == []
    seg = hd.seg.segread(path)
    assert seg.SeriesDescription == SERIES_DESCRIPTION and seg.SeriesDescription.startswith("AI")
    assert "NOT FOR DIAGNOSTIC USE" in seg.SeriesDescription
    assert "NOT FOR DIAGNOSTIC USE" in seg.ImageComments and "NOT FOR DIAGNOSTIC USE" in seg.ContentDescription
    assert seg.SeriesNumber == 9977
    assert seg.SegmentationType == "BINARY"
    assert seg.StudyInstanceUID == headers[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == headers[0].FrameOfReferenceUID


def test_every_segment_reads_back_with_its_codes_algorithm_and_colour(tmp_path: Path) -> None:
    analysis = make_analysis_with_findings()
    path, numbers, _ = _build(tmp_path, analysis)

    assert numbers == {"region": 1, "bladder": 2, "focus-1": 3, "focus-2": 4}
    seg = hd.seg.segread(path)
    expected = {
        "region": (("91723000", "SCT"), ("41216001", "SCT"), ("41216001", "SCT")),
        "bladder": (("91723000", "SCT"), ("89837001", "SCT"), ("89837001", "SCT")),
        "focus-1": (("49755003", "SCT"), ("52988006", "SCT"), ("41216001", "SCT")),
        "focus-2": (("49755003", "SCT"), ("52988006", "SCT"), ("272673000", "SCT")),  # its site: bone
    }
    colours = set()
    for key, (category, kind, region) in expected.items():
        description = seg.get_segment_description(numbers[key])
        code = description.segmented_property_category
        assert (code.value, code.scheme_designator) == category, key
        code = description.segmented_property_type
        assert (code.value, code.scheme_designator) == kind, key
        assert [(c.value, c.scheme_designator) for c in description.anatomic_regions] == [region], key
        assert description.algorithm_type == hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
        algorithm = description.algorithm_identification[0]
        assert algorithm.AlgorithmName and algorithm.AlgorithmVersion == "psma-node 0.1.0"
        assert algorithm.AlgorithmFamilyCodeSequence[0].CodeValue
        assert description.segment_label
        colours.add(tuple(description.RecommendedDisplayCIELabValue))
    assert len(colours) == 4
    first = seg.get_segment_description(numbers["focus-1"])
    assert first.segment_label == "Focus 1: prostate, SUVbw max 13.8"
    assert seg.get_segment_description(numbers["focus-2"]).segment_label == "Focus 2: pubic bone, SUVbw max 3.1"
    algorithm = first.algorithm_identification[0]
    assert "isocontour" in algorithm.AlgorithmName
    parameters = {p.split("=")[0]: p.split("=", 1)[1] for p in algorithm.AlgorithmParameters.split(",")}
    assert parameters["isocontour"] == "41 % of SUVbw max" and parameters["isocontour_level_suvbw"] == (
        f"{analysis.findings.foci[0].contour_suv:.2f}")
    schemes = {item.CodingSchemeDesignator for item in seg.CodingSchemeIdentificationSequence}
    assert "99LOCAL" in schemes


def test_frames_reference_the_pet_instances_and_pixels_land_where_the_crop_mask_was(tmp_path: Path) -> None:
    analysis = make_analysis_with_findings()
    assert analysis.findings is not None
    path, numbers, headers = _build(tmp_path, analysis)
    seg = hd.seg.segread(path)
    masks = {"region": analysis.findings.region_mask, "bladder": analysis.findings.bladder_mask}
    masks |= {f"focus-{f.number}": f.mask for f in analysis.findings.foci}
    expected = {key: _expected_frames(mask, headers) for key, mask in masks.items()}  # type: ignore[arg-type]

    referenced = {uid for _, _, uid in seg.get_source_image_uids()}
    touched = set().union(*expected.values())
    assert referenced == touched
    assert {uid for item in seg.ReferencedSeriesSequence for uid in
            (i.ReferencedSOPInstanceUID for i in item.ReferencedInstanceSequence)} == touched
    assert seg.NumberOfFrames == sum(len(frames) for frames in expected.values())  # empty frames omitted

    for key, frames in expected.items():
        uids = sorted(frames)
        pixels = seg.get_pixels_by_source_instance(uids, segment_numbers=[numbers[key]])
        for uid, got in zip(uids, pixels[..., 0]):
            assert np.array_equal(got.astype(bool), frames[uid]), (key, uid)


def test_focus_outline_contains_the_pet_lesion_voxel(tmp_path: Path) -> None:
    analysis = make_analysis_with_findings()
    path, numbers, headers = _build(tmp_path, analysis)
    seg = hd.seg.segread(path)
    assert analysis.images is not None
    pet = analysis.images.pet_suv_crop.array
    i, j, k = np.unravel_index(int(np.argmax(pet)), pet.shape)
    header = next(h for h in headers if int(h.InstanceNumber) - 1 == k + CROP_OFFSET[2])

    pixels = seg.get_pixels_by_source_instance([str(header.SOPInstanceUID)], segment_numbers=[numbers["focus-1"]])

    assert pixels[0, int(header.Rows) - 1 - (j + CROP_OFFSET[1]), i + CROP_OFFSET[0], 0]


def test_prostate_bed_region_uses_the_private_code_as_the_sr_does(tmp_path: Path) -> None:
    analysis = make_analysis_with_findings(prostatectomy=True)
    path, numbers, _ = _build(tmp_path, analysis)

    seg = hd.seg.segread(path)
    region = seg.get_segment_description(numbers["region"])
    assert (region.segmented_property_type.value, region.segmented_property_type.scheme_designator) == (
        "PROSTATE_BED", "99LOCAL")
    assert region.segment_label == "Analysed region (prostate bed)"
    assert dciodvfy_errors(path) == []


def test_missing_bladder_and_empty_focus_masks_are_left_out_and_numbers_stay_consecutive(tmp_path: Path) -> None:
    analysis = make_analysis_with_findings()
    assert analysis.findings is not None
    analysis.findings.bladder_mask = None
    analysis.findings.foci[0].mask = np.zeros_like(analysis.findings.foci[0].mask)

    path, numbers, _ = _build(tmp_path, analysis)

    assert numbers == {"region": 1, "focus-2": 2}
    assert len(hd.seg.segread(path).SegmentSequence) == 2


@pytest.mark.parametrize("change", ["no findings", "no images"])
def test_nothing_to_segment_gives_no_seg(change: str) -> None:
    analysis = make_analysis() if change == "no findings" else make_analysis_with_findings()
    if change == "no images":
        headers = pet_series_headers(analysis.images, make_pet_header())  # type: ignore[arg-type]
        analysis.images = None
    else:
        headers = pet_series_headers(analysis.images, make_pet_header())  # type: ignore[arg-type]
    settings = make_settings(Path("/nonexistent"), "sqlite://", create_dirs=False)
    assert build_seg(analysis, headers, settings.results, series_uid=generate_uid(), sop_uid=generate_uid(),
                     device_uid=DEVICE_UID) is None


def test_clinical_value_of_unknown_prostatectomy_keeps_the_prostate_code(tmp_path: Path) -> None:
    analysis = make_analysis_with_findings()
    analysis.prostatectomy = ClinicalValue(None, "imputed")
    path, numbers, _ = _build(tmp_path, analysis)
    region = hd.seg.segread(path).get_segment_description(numbers["region"])
    assert region.segmented_property_type.value == "41216001"


def test_mask_on_another_grid_is_refused_by_name(tmp_path: Path) -> None:
    analysis = make_analysis_with_findings()
    assert analysis.findings is not None and analysis.findings.region_mask is not None
    analysis.findings.region_mask = analysis.findings.region_mask[:-1]
    pet = make_pet_header(series_uid=analysis.pet_series_uid)
    headers = pet_series_headers(analysis.images, pet)  # type: ignore[arg-type]
    settings = make_settings(tmp_path, "sqlite://")
    with pytest.raises(ValueError, match="region mask has shape"):
        build_seg(analysis, headers, settings.results, series_uid=generate_uid(), sop_uid=generate_uid(),
                  device_uid=DEVICE_UID)
