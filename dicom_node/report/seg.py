"""The DICOM Segmentation: what was measured, overlaid on the PET the radiologist already has open.

A binary SEG (highdicom) on the analysed PET's own grid, each frame derived from the PET instance it
covers, so viewers overlay it without resampling: the analysed prostate / prostate-bed region, the urinary
bladder that was excluded from it, and one segment per focus (its isocontour), labelled and coded with the
focus's site ("Focus 2: pubic bone, SUVbw max 12.6"; Anatomic Region = Bone). Masks come from the
analysis's crop grid and are mapped onto the source instances by `geometry.mask_to_frames`; instances no
segment touches are not referenced and empty frames are omitted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from highdicom import AlgorithmIdentificationSequence
from highdicom.color import CIELabColor
from highdicom.seg import SegmentAlgorithmTypeValues, Segmentation, SegmentationTypeValues, SegmentDescription
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import ExplicitVRLittleEndian, PositronEmissionTomographyImageStorage

from dicom_node.config import ResultSettings
from dicom_node.report.concepts import PROSTATE_BED, URINARY_BLADDER, identify_local_scheme, site_code
from dicom_node.report.geometry import mask_to_frames, planes
from dicom_node.report.sr import MANUFACTURER, MODEL_NAME, mark_node_equipment, node_equipment
from inference.result import AnalysisResult, Findings, Focus

SERIES_DESCRIPTION = "AI PSMA recurrence SEG - NOT FOR DIAGNOSTIC USE"
CONTENT_LABEL = "NOT FOR DIAG USE"
"""Content Label is a 16-character CS: the full statement is in the description and the image comments."""
CONTENT_DESCRIPTION = "AI result - NOT FOR DIAGNOSTIC USE: region, bladder, foci"
IMAGE_COMMENTS = (
    "AI RESULT - NOT FOR DIAGNOSTIC USE. Research software; segments are the region the AI analysed, the "
    "urinary bladder excluded from it and each PSMA-avid focus as its SUVbw isocontour."
)

REGION_COLOUR = CIELabColor.from_rgb(0, 200, 90)
BLADDER_COLOUR = CIELabColor.from_rgb(240, 210, 0)
FOCUS_COLOURS = [CIELabColor.from_rgb(*rgb) for rgb in ((255, 40, 40), (255, 0, 200), (255, 140, 0), (0, 170, 255))]


@dataclass(frozen=True)
class _Segment:
    key: str
    mask: np.ndarray
    description: SegmentDescription


def _region_code(analysis: AnalysisResult) -> Code:
    """Prostate bed after prostatectomy (private code, as in the SR), else the prostate."""
    return PROSTATE_BED if analysis.region_is_prostate_bed else codes.SCT.Prostate


def _localiser_family(analysis: AnalysisResult) -> Code:
    if "totalsegmentator" in analysis.localisation.method.lower():
        return codes.cid7162.ArtificialIntelligence
    return codes.cid7162.MorphologicalOperations


def _segments(analysis: AnalysisResult, findings: Findings) -> list[_Segment]:
    """Region, bladder and foci with non-empty masks, numbered from 1 in that order."""
    version = f"psma-node {analysis.software_version}"
    region = _region_code(analysis)
    localiser = AlgorithmIdentificationSequence(
        name=f"psma-node localiser ({analysis.localisation.method})"[:64],
        family=_localiser_family(analysis),
        version=version,
        parameters={"organ": analysis.localisation.organ,
                    "region": findings.region_description[:64] or "prostate / prostate bed"},
    )

    def isocontour(focus: Focus) -> AlgorithmIdentificationSequence:
        parameters = {"isocontour": focus.contour_rule[:64]}
        if focus.contour_suv is not None:
            parameters["isocontour_level_suvbw"] = f"{focus.contour_suv:.2f}"
        return AlgorithmIdentificationSequence(name="psma-node SUVbw isocontour",
                                               family=codes.cid7162.NeighborhoodAnalysis, version=version,
                                               parameters=parameters)

    wanted: list[tuple[str, np.ndarray | None, str, Code, Code, Code, AlgorithmIdentificationSequence, CIELabColor]] = [
        ("region", findings.region_mask, f"Analysed region ({region.meaning.lower()})",
         codes.SCT.AnatomicalStructure, region, region, localiser, REGION_COLOUR),
        ("bladder", findings.bladder_mask, "Urinary bladder (excluded)",
         codes.SCT.AnatomicalStructure, URINARY_BLADDER, URINARY_BLADDER, localiser, BLADDER_COLOUR),
    ]
    for index, focus in enumerate(findings.foci):
        label = f"Focus {focus.number}: {focus.where}, SUVbw max {focus.suv_max:.1f}"
        if len(label) > 64:  # Segment Label is an LO
            label = f"Focus {focus.number}: {focus.site}, SUVbw max {focus.suv_max:.1f}"
        wanted.append((f"focus-{focus.number}", focus.mask, label,
                       codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Lesion, site_code(focus),
                       isocontour(focus), FOCUS_COLOURS[index % len(FOCUS_COLOURS)]))
    segments: list[_Segment] = []
    for key, mask, label, category, kind, site, algorithm, colour in wanted:
        if mask is None or not np.any(mask):
            continue
        segments.append(_Segment(key, np.asarray(mask, dtype=bool), SegmentDescription(
            segment_number=len(segments) + 1,
            segment_label=label,
            segmented_property_category=category,
            segmented_property_type=kind,
            algorithm_type=SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            anatomic_regions=[site],
            display_color=colour,
        )))
    return segments


def build_seg(analysis: AnalysisResult, pet_headers: Sequence[Dataset], settings: ResultSettings, *,
              series_uid: str, sop_uid: str, device_uid: str,
              supersedes: str | None = None) -> tuple[Dataset, dict[str, int]] | None:
    """The SEG and its segment numbers by key ("region", "bladder", "focus-1", ...); None when nothing to show.

    `pet_headers` are the analysed PET series' instance headers (no pixels needed); the masks in
    `analysis.findings` lie on the grid of `analysis.images.pet_suv_crop`. `supersedes` is the SOP Instance
    UID of the SEG of the result this one replaces (a SEG has no Predecessor Documents; the comment says it).
    """
    findings = analysis.findings
    if findings is None or analysis.images is None or not pet_headers:
        return None
    segments = _segments(analysis, findings)
    if not segments:
        return None
    grid = analysis.images.pet_suv_crop.array.shape
    for segment in segments:
        if segment.mask.shape != grid:
            raise ValueError(f"{segment.key} mask has shape {segment.mask.shape}, not the PET crop's {grid}")
    affine = analysis.images.pet_suv_crop.affine_lps
    pet_planes = planes(pet_headers)
    frames = [mask_to_frames(segment.mask, affine, pet_planes) for segment in segments]
    touched = set().union(*frames)
    if not touched:
        return None
    sources = [plane.header for plane in sorted(
        (plane for plane in pet_planes if plane.sop_instance_uid in touched),
        key=lambda plane: float(plane.position @ plane.normal))]
    rows, columns = int(sources[0].Rows), int(sources[0].Columns)
    pixels = np.zeros((len(sources), rows, columns, len(segments)), dtype=bool)
    for s, per_instance in enumerate(frames):
        for f, header in enumerate(sources):
            frame = per_instance.get(str(header.SOPInstanceUID))
            if frame is not None:
                pixels[f, :, :, s] = frame
    equipment = node_equipment(analysis.software_version, settings)
    seg = Segmentation(
        source_images=sources,
        pixel_array=pixels,
        segmentation_type=SegmentationTypeValues.BINARY,
        segment_descriptions=[segment.description for segment in segments],
        series_instance_uid=series_uid,
        series_number=settings.seg_series_number,
        sop_instance_uid=sop_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=MODEL_NAME,
        software_versions=analysis.software_version,
        device_serial_number=device_uid[-16:],
        content_label=CONTENT_LABEL,
        content_description=CONTENT_DESCRIPTION,
        transfer_syntax_uid=ExplicitVRLittleEndian,
        omit_empty_frames=True,
        contributing_equipment=[equipment],
    )
    seg.SeriesDescription = SERIES_DESCRIPTION
    seg.ImageComments = IMAGE_COMMENTS + (f" Supersedes the earlier AI SEG {supersedes}." if supersedes else "")
    seg.BodyPartExamined = settings.body_part_examined
    if settings.institution_name:
        seg.InstitutionName = settings.institution_name
    mark_node_equipment(seg, device_uid)
    identify_local_scheme(seg)
    return seg, {segment.key: number for number, segment in enumerate(segments, start=1)}



def warm_up() -> None:
    """Build and discard a 2 x 2 SEG, so that highdicom's lazily loaded tables and code paths (~0.6-2.8 s on
    the first SEG of a process) are paid at worker start instead of inside the first study's publishing."""
    source = Dataset()
    source.SOPClassUID = PositronEmissionTomographyImageStorage
    source.SOPInstanceUID, source.SeriesInstanceUID = "2.25.1", "2.25.2"
    source.StudyInstanceUID, source.FrameOfReferenceUID = "2.25.3", "2.25.4"
    source.Modality, source.PatientID, source.PatientName = "PT", "WARMUP", "WARM^UP"
    source.PatientBirthDate = source.PatientSex = source.StudyDate = source.StudyTime = ""
    source.AccessionNumber = source.ReferringPhysicianName = source.StudyID = ""
    source.Rows = source.Columns = 2
    source.SamplesPerPixel, source.PhotometricInterpretation = 1, "MONOCHROME2"
    source.BitsAllocated = source.BitsStored = 16
    source.HighBit, source.PixelRepresentation = 15, 0
    source.ImagePositionPatient, source.ImageOrientationPatient = [0, 0, 0], [1, 0, 0, 0, 1, 0]
    source.PixelSpacing, source.SliceThickness = [1, 1], 1
    source.PixelData = bytes(8)
    description = SegmentDescription(
        segment_number=1, segment_label="warm-up", segmented_property_category=codes.SCT.Tissue,
        segmented_property_type=codes.SCT.Tissue, algorithm_type=SegmentAlgorithmTypeValues.MANUAL)
    Segmentation(
        source_images=[source], pixel_array=np.ones((1, 2, 2), dtype=bool),
        segmentation_type=SegmentationTypeValues.BINARY, segment_descriptions=[description],
        series_instance_uid="2.25.5", series_number=1, sop_instance_uid="2.25.6", instance_number=1,
        manufacturer=MANUFACTURER, manufacturer_model_name=MODEL_NAME, software_versions="warm-up",
        device_serial_number="warm-up", transfer_syntax_uid=ExplicitVRLittleEndian, omit_empty_frames=True)
