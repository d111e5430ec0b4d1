"""The Structured Report: a TID 1500 Imaging Measurement Report that viewers draw on the analysed images.

Every measurement group is a TID 1410 planar-ROI group bound to one image by a 2-D SCOORD, because OHIF
(and most viewers) draw only measurements that name an image and break on groups that do not:

- one group per PSMA-avid focus on the exact PET instance through its SUVmax (the focus's isocontour on
  that slice as a closed POLYLINE), and the same focus on the CT image nearest that position, each with its
  own Tracking Identifier/UID and NUMs whose concept names read as labels ("SUVbw max", "SUVbw peak",
  "Volume", "miPSMA", "SUVbw mean"), the focus's site as Finding Site, what it may mean, how its site,
  contour and SUVpeak were found, and a reference to the focus's SEG segment when a SEG was built;
- one group for the analysed region (its outline on a PET slice near its centre that no focus is drawn
  on) that carries the study-level answer: recurrent malignancy Present / Absent / Undetermined, the
  probability (in %) when the classifier ran, the region's own SUVbw max and mean, the algorithm with every
  parameter, whether the inputs lie outside the conditions the model was validated for, and the
  research-use statement. With no focus its label says so, with the detection thresholds.

Tracking Identifiers are written as OHIF writes them (its tool name) with the first NUM INFERRED FROM the
outline, so OHIF offers to track the findings and lists them in its Measurements panel; the readable name
of each finding ("Focus 1 (prostate), PET") is the group's first Comment, which OHIF uses as the label.

Document-level Qualitative Evaluations (TID 1500 row 12, ignored by OHIF's measurement parser) repeat the
answer for text-only viewers: the classifier's result and, as a separate item, the rule-based PROMISE V2
local category (independent of the classifier), each focus, and the miPSMA reference organs.
All containers are SEPARATE (PS3.3 C.18.8): the items are distinct observations, not one running sentence,
so dsr2html lists them instead of gluing them together. The observer is the device (the model), whose Device
UID changes with the weights, so a reader years later can tell which model produced which result.

Longer than most modules (over 600 lines) because the template is one tree: each group's content depends on
the ones beside it (tracking UIDs, image library, evidence), and split across files it could no longer be
read against TID 1500 and OHIF's parser in one pass.
"""

from __future__ import annotations

import hashlib
import logging
import math
import uuid
from collections.abc import Mapping, Sequence
from copy import deepcopy

import numpy as np
from highdicom import ContributingEquipment
from highdicom.sr import (
    AlgorithmIdentification,
    CodeContentItem,
    Comprehensive3DSR,
    ComprehensiveSR,
    ContainerContentItem,
    CoordinatesForMeasurement,
    DeviceObserverIdentifyingAttributes,
    FindingSite,
    GraphicTypeValues,
    ImageContentItem,
    ImageLibraryEntryDescriptors,
    ImageRegion,
    Measurement,
    MeasurementReport,
    MeasurementsAndQualitativeEvaluations,
    ObservationContext,
    ObserverContext,
    PlanarROIMeasurementsAndQualitativeEvaluations,
    QualitativeEvaluation,
    SourceImageForRegion,
    TextContentItem,
    TrackingIdentifier,
)
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import UID, Comprehensive3DSRStorage, ComprehensiveSRStorage, generate_uid

from dicom_node.config import ResultSettings
from dicom_node.report.geometry import (
    GeometryError, ImagePlane, ImagePoint, mask_to_frames, nearest_instance, planes)
from dicom_node.report.concepts import (
    PEAK_VALUE_WITHIN_ROI,
    PROSTATE_BED,
    SUM_OF_SEGMENTED_VOXELS,
    SUVBW_MAX,
    SUVBW_MEAN,
    SUVBW_PEAK,
    UNIT_PERCENT,
    UNIT_SUVBW,
    identify_local_scheme,
    site_code,
)
from dicom_node.report.render import (
    BANNER,
    NOT_INSTALLED,
    PUBLISHED_PERFORMANCE,
    ai_headline,
    category_summary,
    envelope_line,
    for_radiologists,
    reference_summary,
)
from inference.result import AnalysisResult, ClinicalValue, Finding, Findings, Focus

log = logging.getLogger(__name__)

COMPREHENSIVE_3D_SR = Comprehensive3DSRStorage
COMPREHENSIVE_SR = ComprehensiveSRStorage
MANUFACTURER = "psma-node (research software)"
MODEL_NAME = "psma-node PSMA PET/CT local recurrence"
ALGORITHM_NAME = "Local recurrence DenseNet121 (Korb et al., Cancers 2025)"
ISOCONTOUR_ALGORITHM = "PSMA focus SUVbw isocontour (PROMISE V2 measures)"
SERIES_DESCRIPTION = "AI PSMA recurrence SR - NOT FOR DIAGNOSTIC USE"

OHIF_TRACKING_PREFIX = "Cornerstone3DTools@^0.1.0"
"""How OHIF/cornerstone name the tool of a measurement in its Tracking Identifier (it tracks only those)."""
PROCEDURE_PET_WHOLE_BODY = Code("44139-4", "LN", "PET whole body")
LOCAL = "99LOCAL"
MIPSMA = Code("MIPSMA", LOCAL, "miPSMA")
BLADDER_RELATION = Code("BLADDER_RELATION", LOCAL, "Relation to urinary bladder")
FOCUS_POSITION = Code("FOCUS_POSITION", LOCAL, "SUVbw max position (LPS mm)")
FOCUS_SITE = Code("FOCUS_SITE", LOCAL, "Site determination")
ISOCONTOUR = Code("ISOCONTOUR", LOCAL, "Isocontour rule and level")
SUVBW_PEAK_METHOD = Code("SUVBW_PEAK_METHOD", LOCAL, "SUVbw peak method")
LOCAL_CATEGORY = Code("LOCAL_CATEGORY", LOCAL, "Rule-based PROMISE V2 category, independent of the AI")
AI_RESULT = Code("AI_RESULT", LOCAL, "AI classifier result")
OUTSIDE_VALIDATION = Code("OUTSIDE_VALIDATION", LOCAL, "Outside validated conditions")
SPILL_OVER = Code("SPILL_OVER", LOCAL, "Urine spill-over")
REFERENCE_ORGAN = Code("REFERENCE_ORGAN", LOCAL, "miPSMA reference organ")
MIPSMA_ASSESSMENT = Code("MIPSMA_ASSESSMENT", LOCAL, "miPSMA assessment")
IMAGING_MEASUREMENTS = "126010"
QUALITATIVE_EVALUATIONS = Code("C0034375", "UMLS", "Qualitative Evaluations")
UNIT_SCORE = Code("{score}", "UCUM", "score")
UNIT_ML = Code("ml", "UCUM", "ml")

FINDING_CODES = {
    Finding.PRESENT: codes.SCT.Present,
    Finding.ABSENT: codes.SCT.Absent,
    Finding.UNDETERMINED: codes.SCT.Undetermined,
}
DEFAULT_REGION_RADIUS_MM = 25.0
"""Radius of the circle drawn for the analysed region when no region mask is available."""


def device_uid(weights_sha256: str | None, software_version: str) -> str:
    """A 2.25 UID that changes whenever the weights or the software change, and only then."""
    digest = hashlib.sha256(f"{weights_sha256 or 'no-model'}|{software_version}".encode()).digest()
    return f"2.25.{uuid.UUID(bytes=digest[:16]).int}"


def _shown(value: ClinicalValue, unit: str = "") -> str:
    if isinstance(value.value, bool):
        text = "yes" if value.value else "no"
    elif value.value is None:
        text = "unknown"
    else:
        text = f"{value.value:g}{unit}"
    detail = f": {value.detail}" if value.detail else ""
    return f"{text} ({value.source}{detail})"


def algorithm_parameters(analysis: AnalysisResult) -> list[str]:
    """Everything the number depends on, as name=value strings (TID 4019 Algorithm Parameters)."""
    loc = analysis.localisation
    params = [
        f"model_id={analysis.model_id or 'none'}",
        f"weights_sha256={analysis.weights_sha256 or 'none'}",
        f"classifier_run={'yes' if analysis.classifier_run else 'no'}",
        f"threshold={analysis.threshold:g}",
        f"psa_ng_ml={_shown(analysis.psa)}",
        f"prostatectomy={_shown(analysis.prostatectomy)}",
        (f"cube_centre_lps_mm={','.join(f'{c:.1f}' for c in loc.center_lps)} ({loc.organ}, {loc.method}, "
         f"confidence {loc.confidence:.2f})"),
        f"suvbw_factor={analysis.suv_factor:.6g}",
        f"device={analysis.device}",
    ]
    if analysis.findings is not None:
        params.append(f"isocontour_fraction_of_suvmax={analysis.findings.isocontour_fraction:g}")
    return params


def statement(analysis: AnalysisResult) -> str:
    """The research-use statement and the published performance, plus why the classifier did not run."""
    published = analysis.published_performance
    parts = [BANNER.replace("–", "-") + ".",
             f"Published performance (Korb et al., Cancers 2025): {published}" if published
             else PUBLISHED_PERFORMANCE]
    note = for_radiologists(analysis.classifier_note)  # no server paths or commands: those are the admin's
    if analysis.classifier_note.startswith(NOT_INSTALLED.split(" at ")[0]):
        note = NOT_INSTALLED
    if not analysis.classifier_run:
        parts.append(f"Classifier not run: {note or 'no classification model installed'}; "
                     "the finding is Undetermined and only the quantitative findings are reported.")
    elif note:
        parts.append(note)
    parts.extend(f"Warning: {for_radiologists(warning)}" for warning in analysis.warnings
                 if warning != analysis.classifier_note)
    return " ".join(parts)


def region_code(analysis: AnalysisResult) -> Code:
    """The analysed region: prostate bed after prostatectomy (private code; PS3.16 has none), else prostate."""
    return PROSTATE_BED if analysis.region_is_prostate_bed else codes.SCT.Prostate


def finding_site(analysis: AnalysisResult) -> FindingSite:
    return FindingSite(anatomic_location=region_code(analysis))


def round_suv(value: float) -> float:
    """SUVs to 0.01 g/ml: the calibration and reconstruction do not support more."""
    return round(float(value), 2)


def round_volume(value_ml: float) -> float:
    """Volumes to 0.1 ml (about one PET voxel), small foci to 0.01 ml so they do not read as 0."""
    return round(float(value_ml), 1) if value_ml >= 1.0 else round(float(value_ml), 2)


# --- outlines on one image -------------------------------------------------------------------------------


def outline(frame: np.ndarray) -> np.ndarray:
    """The outer boundary of the largest connected part of a 2-D mask, as a closed polyline in SCOORD units.

    The boundary runs along pixel edges: pixel (row r, column c) covers SCOORD x in [c, c+1] and y in
    [r, r+1] (its centre is at c+0.5, r+0.5), so the outline encloses exactly the masked pixels.
    Returns (N, 2) column/row points whose last point repeats the first; collinear points are dropped.
    """
    mask = np.pad(np.asarray(frame, dtype=bool), 1)
    rows, cols = np.nonzero(mask[1:-1, 1:-1])
    if rows.size == 0:
        raise ValueError("empty mask has no outline")
    edges: dict[tuple[int, int], list[tuple[int, int]]] = {}

    def add(start: tuple[int, int], end: tuple[int, int]) -> None:
        edges.setdefault(start, []).append(end)

    for r, c in zip(rows.tolist(), cols.tolist()):
        pr, pc = r + 1, c + 1
        if not mask[pr - 1, pc]:
            add((c, r), (c + 1, r))  # top edge, left to right (clockwise on screen)
        if not mask[pr, pc + 1]:
            add((c + 1, r), (c + 1, r + 1))
        if not mask[pr + 1, pc]:
            add((c + 1, r + 1), (c, r + 1))
        if not mask[pr, pc - 1]:
            add((c, r + 1), (c, r))
    loops: list[list[tuple[int, int]]] = []
    while edges:
        start = next(iter(edges))
        loop = [start]
        point = start
        direction = (0, 0)
        while True:
            ends = edges[point]
            if len(ends) > 1 and direction != (0, 0):
                # Diagonally touching pixels: turn right (clockwise) to stay on this component's boundary.
                right = (-direction[1], direction[0])
                ends.sort(key=lambda e: 0 if (e[0] - point[0], e[1] - point[1]) == right else 1)
            end = ends.pop(0)
            if not ends:
                del edges[point]
            direction = (end[0] - point[0], end[1] - point[1])
            point = end
            if point == start:
                break
            loop.append(point)
        loops.append(loop)
    best = max(loops, key=lambda lp: abs(_area(lp)))
    simplified = [p for i, p in enumerate(best) if not _collinear(best[i - 1], p, best[(i + 1) % len(best)])]
    simplified.append(simplified[0])
    return np.array(simplified, dtype=np.float32)


def _area(loop: list[tuple[int, int]]) -> float:
    x = np.array([p[0] for p in loop], dtype=float)
    y = np.array([p[1] for p in loop], dtype=float)
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _collinear(a: tuple[int, int], b: tuple[int, int], c: tuple[int, int]) -> bool:
    return (b[0] - a[0]) * (c[1] - b[1]) - (b[1] - a[1]) * (c[0] - b[0]) == 0


def _circle(point: ImagePoint, radius_mm: float) -> tuple[GraphicTypeValues, np.ndarray]:
    spacing = ImagePlane.of(point.header).column_spacing
    radius = max(radius_mm / spacing, 1.0)
    data = np.array([[point.column, point.row], [point.column + radius, point.row]], dtype=np.float32)
    return GraphicTypeValues.CIRCLE, data


def _sphere_radius_mm(volume_ml: float) -> float:
    return (3.0 * max(volume_ml, 0.0) * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)


def _region_on(point: ImagePoint, mask: np.ndarray | None, affine: np.ndarray | None,
               radius_mm: float) -> tuple[ImageRegion, CoordinatesForMeasurement]:
    """The mask's outline on the instance of `point` (or a circle of `radius_mm` around the point), as the
    group's Image Region and as the coordinates its first NUM is INFERRED FROM (what OHIF's hydration and
    Measurements panel read)."""
    graphic_type, data = GraphicTypeValues.CIRCLE, None
    if mask is not None and affine is not None:
        frames = mask_to_frames(mask, affine, [point.header])
        frame = frames.get(point.sop_instance_uid)
        if frame is not None and frame.any():
            graphic_type, data = GraphicTypeValues.POLYLINE, outline(frame)
    if data is None:
        graphic_type, data = _circle(point, radius_mm)
    source = SourceImageForRegion(point.sop_class_uid, point.sop_instance_uid)
    return (ImageRegion(graphic_type=graphic_type, graphic_data=data, source_image=source),
            CoordinatesForMeasurement(graphic_type=graphic_type, graphic_data=data, source_image=source))


# --- groups ----------------------------------------------------------------------------------------------


def _focus_measurements(focus: Focus) -> list[Measurement]:
    """At most five NUMs (OHIF prints five label lines), most useful first; each carries the focus's site."""
    sites = [FindingSite(anatomic_location=site_code(focus))]
    values = [
        Measurement(name=SUVBW_MAX, value=round_suv(focus.suv_max), unit=UNIT_SUVBW,
                    derivation=codes.SCT.Maximum, finding_sites=sites),
    ]
    if focus.suv_peak is not None:
        values.append(Measurement(name=SUVBW_PEAK, value=round_suv(focus.suv_peak), unit=UNIT_SUVBW,
                                  derivation=PEAK_VALUE_WITHIN_ROI, finding_sites=sites))
    values.append(Measurement(name=codes.SCT.Volume, value=round_volume(focus.volume_ml), unit=UNIT_ML,
                              method=SUM_OF_SEGMENTED_VOXELS, finding_sites=sites))
    if focus.mipsma is not None:
        values.append(Measurement(name=MIPSMA, value=float(focus.mipsma), unit=UNIT_SCORE,
                                  finding_sites=sites))
    values.append(Measurement(name=SUVBW_MEAN, value=round_suv(focus.suv_mean), unit=UNIT_SUVBW,
                              derivation=codes.SCT.Mean, finding_sites=sites))
    return values


def _text(name: Code, value: str) -> TextContentItem:
    return TextContentItem(name=name, value=value[:1024], relationship_type="CONTAINS")


def _focus_texts(focus: Focus) -> list[TextContentItem]:
    """What the focus may mean, and how its site, contour, SUVpeak and score were found."""
    relation = focus.bladder_relation
    if focus.bladder_distance_mm is not None:
        relation += f" ({focus.bladder_distance_mm:.0f} mm from the bladder)"
    contour = f"{focus.contour_rule}; level SUVbw {focus.contour_suv:.2f}" if focus.contour_suv is not None \
        else focus.contour_rule
    items = [
        _text(codes.DCM.Finding, focus.call or f"PSMA-avid focus ({focus.where})"),
        _text(FOCUS_SITE, f"{focus.where}: {focus.site_evidence}" if focus.site_evidence else focus.where),
        _text(ISOCONTOUR, f"{contour} ({focus.contour_note})" if focus.contour_note else contour),
        _text(SUVBW_PEAK_METHOD, focus.suv_peak_note or "not computed"),
        _text(FOCUS_POSITION, ",".join(f"{c:.1f}" for c in focus.suv_max_lps)),
        _text(BLADDER_RELATION, relation),
        _text(MIPSMA_ASSESSMENT, (f"{focus.mipsma_evidence}: " if focus.mipsma_evidence else "")
              + (focus.mipsma_note or "not assessable")),
    ]
    return items


def _segment_reference(segmentation: Dataset | None, numbers: Mapping[str, int] | None,
                       key: str) -> ImageContentItem | None:
    if segmentation is None or not numbers or key not in numbers:
        return None
    return ImageContentItem(
        name=codes.DCM.ReferencedSegment,
        referenced_sop_class_uid=str(segmentation.SOPClassUID),
        referenced_sop_instance_uid=str(segmentation.SOPInstanceUID),
        referenced_segment_numbers=int(numbers[key]),
        relationship_type="CONTAINS",
    )


def _tracking(region: ImageRegion) -> TrackingIdentifier:
    """A Tracking Identifier as OHIF writes it, so OHIF offers to track the finding (Measurements panel).

    OHIF picks the annotation tool from this text; the readable name of the finding is the group's first
    Comment, which OHIF shows as the measurement's label.
    """
    tool = "PlanarFreehandROI" if region.graphic_type == GraphicTypeValues.POLYLINE else "CircleROI"
    return TrackingIdentifier(uid=generate_uid(), identifier=f"{OHIF_TRACKING_PREFIX}:{tool}")


def _label(group: PlanarROIMeasurementsAndQualitativeEvaluations, text: str) -> None:
    """The finding's readable name as the group's first Comment, right after its tracking items."""
    item = TextContentItem(name=codes.DCM.Comment, value=text, relationship_type="CONTAINS")
    content = group[0].ContentSequence
    tracking = ("112039", "112040")  # Tracking Identifier, Tracking Unique Identifier
    at = max(i for i, c in enumerate(content) if c.ConceptNameCodeSequence[0].CodeValue in tracking) + 1
    content.insert(at, item)


def _infer_first_num_from(group: PlanarROIMeasurementsAndQualitativeEvaluations,
                          where: CoordinatesForMeasurement) -> None:
    """The group's first NUM INFERRED FROM its outline: OHIF's hydration (Measurements panel) reads it there.

    highdicom refuses this in TID 1410, but TID 300 allows it and it repeats the group's own Image Region.
    """
    for item in group[0].ContentSequence:
        if item.ValueType == "NUM":
            if "ContentSequence" not in item:
                item.ContentSequence = []
            item.ContentSequence.append(where)
            return


def _append(group: PlanarROIMeasurementsAndQualitativeEvaluations, items: Sequence[object]) -> None:
    for item in items:
        if item is not None:
            group[0].ContentSequence.append(item)


def _isocontour_algorithm(analysis: AnalysisResult, focus: Focus) -> AlgorithmIdentification:
    """What delineated and measured this focus (weight-free, so it runs with or without the classifier),
    with the contour rule and level it got."""
    findings = analysis.findings
    detection = (f"detection=SUVbw max >= {findings.min_suv:g} and >= {findings.min_contrast:g} x local "
                 "background" if findings is not None else "detection=unknown")
    parameters = [detection, f"isocontour={focus.contour_rule}"]
    if focus.contour_suv is not None:
        parameters.append(f"isocontour_level_suvbw={focus.contour_suv:.2f}")
    if focus.background_suv is not None:
        parameters.append(f"local_background_suvbw={focus.background_suv:.2f}")
    parameters += ["volume=voxel count x voxel volume (126030, DCM)",
                   "suvbw_peak=1 cm3 sphere, voxel centres inside, highest mean centred in the focus "
                   f"(IBSI 0F91), excluded voxels left out; {focus.suv_peak_ml or 0:g} ml averaged",
                   f"suvbw_factor={analysis.suv_factor:.6g}"]
    return AlgorithmIdentification(
        name=ISOCONTOUR_ALGORITHM, version=f"psma-node {analysis.software_version}", parameters=parameters,
    )


def _focus_groups(analysis: AnalysisResult, focus: Focus, pet_headers: Sequence[ImagePlane],
                  ct_headers: Sequence[ImagePlane],
                  segment: ImageContentItem | None) -> list[PlanarROIMeasurementsAndQualitativeEvaluations]:
    """The focus on the PET slice through its SUVmax, and on the CT image nearest that position."""
    crop = analysis.images.pet_suv_crop if analysis.images is not None else None
    affine = crop.affine_lps if crop is not None else None
    radius = _sphere_radius_mm(focus.volume_ml)
    groups = []
    for modality, headers in (("PET", pet_headers), ("CT", ct_headers)):
        if not headers:
            continue
        point = nearest_instance(headers, focus.suv_max_lps)
        region, where = _region_on(point, focus.mask, affine, radius)
        group = PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=_tracking(region),
            referenced_region=region,
            finding_type=codes.SCT.Lesion,
            algorithm_id=_isocontour_algorithm(analysis, focus),
            measurements=_focus_measurements(focus),
        )
        _infer_first_num_from(group, where)
        _label(group, f"Focus {focus.number} ({focus.where}), {modality}")
        _append(group, [*_focus_texts(focus), segment])
        groups.append(group)
    return groups


def _region_centre(analysis: AnalysisResult, findings: Findings | None) -> tuple[float, float, float]:
    """Centre of the analysed region mask, else the localiser's cube centre."""
    crop = analysis.images.pet_suv_crop if analysis.images is not None else None
    mask = findings.region_mask if findings is not None else None
    if mask is not None and crop is not None and mask.any():
        centre_index = np.argwhere(mask).mean(axis=0)
        lps = crop.affine_lps[:3, :3] @ centre_index + crop.affine_lps[:3, 3]
        return tuple(float(v) for v in lps)  # type: ignore[return-value]
    return analysis.localisation.center_lps


def _away_from_foci(pet_headers: Sequence[ImagePlane], centre_lps: Sequence[float],
                    findings: Findings | None) -> ImagePoint:
    """The PET image nearest `centre_lps` that no focus is drawn on, so labels do not cover each other."""
    taken = {nearest_instance(pet_headers, f.suv_max_lps).sop_instance_uid
             for f in (findings.foci if findings is not None else [])}
    point = nearest_instance(pet_headers, centre_lps)
    if point.sop_instance_uid in taken:
        by_distance = sorted(pet_headers, key=lambda h: abs(nearest_instance([h], centre_lps).distance_mm))
        free = [h for h in by_distance if h.sop_instance_uid not in taken]
        if free:
            point = nearest_instance(free[:1], centre_lps)
    return point


def _result_group(analysis: AnalysisResult, algorithm: AlgorithmIdentification,
                  pet_headers: Sequence[ImagePlane],
                  segment: ImageContentItem | None) -> PlanarROIMeasurementsAndQualitativeEvaluations:
    """The analysed region on a PET slice near its centre, carrying the study-level answer."""
    findings = analysis.findings
    site = finding_site(analysis)
    name = region_code(analysis).meaning.lower()
    finding = analysis.finding if analysis.classifier_run else Finding.UNDETERMINED
    crop = analysis.images.pet_suv_crop if analysis.images is not None else None
    point = _away_from_foci(pet_headers, _region_centre(analysis, findings), findings)
    no_focus = findings is not None and not findings.foci
    threshold = f": no focus ≥ SUVbw {findings.min_suv:g}" if findings is not None and no_focus else ""
    identifier = (f"Analysed region ({name}){threshold}"
                  + f"; AI: recurrence {finding.value}")  # the label says the answer, not just the question
    region, where = _region_on(point, findings.region_mask if findings is not None else None,
                               crop.affine_lps if crop is not None else None, DEFAULT_REGION_RADIUS_MM)
    measurements: list[Measurement] = []
    if analysis.classifier_run and analysis.probability is not None:
        measurements.append(Measurement(
            name=codes.DCM.ProbabilityOfCancer, value=round(100.0 * float(analysis.probability), 1),
            unit=UNIT_PERCENT, algorithm_id=algorithm, finding_sites=[site],
        ))
    if findings is not None and findings.region_suv_max is not None:  # the region's own values, not a focus's
        measurements.append(Measurement(name=SUVBW_MAX, value=round_suv(findings.region_suv_max), unit=UNIT_SUVBW,
                                        derivation=codes.SCT.Maximum, finding_sites=[site]))
    if findings is not None and findings.region_suv_mean is not None:
        measurements.append(Measurement(name=SUVBW_MEAN, value=round_suv(findings.region_suv_mean),
                                        unit=UNIT_SUVBW, derivation=codes.SCT.Mean, finding_sites=[site]))
    group = PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(region),
        referenced_region=region,
        finding_type=codes.DCM.RecurrentMalignancy,
        algorithm_id=algorithm,
        measurements=measurements or None,
        qualitative_evaluations=[QualitativeEvaluation(codes.DCM.RecurrentMalignancy,
                                                       FINDING_CODES[finding])],
    )
    _infer_first_num_from(group, where)
    _label(group, identifier)
    texts: list[object] = []
    envelope = envelope_line(analysis)
    if envelope:
        texts.append(_text(OUTSIDE_VALIDATION, envelope))
    if findings is not None and no_focus:
        texts.append(_text(codes.DCM.Finding, findings.no_focus_statement))
    if findings is not None and findings.spill_note:
        texts.append(_text(SPILL_OVER, findings.spill_note))
    texts.append(TextContentItem(name=codes.DCM.Comment, value=statement(analysis),
                                 relationship_type="CONTAINS"))
    _append(group, [*texts, segment])
    return group


def _document_evaluations(analysis: AnalysisResult) -> ContainerContentItem:
    """TID 1500 Qualitative Evaluations: the answer and the PROMISE summary for text-only viewers."""
    finding = analysis.finding if analysis.classifier_run else Finding.UNDETERMINED
    container = ContainerContentItem(name=QUALITATIVE_EVALUATIONS, relationship_type="CONTAINS",
                                     is_content_continuous=False)
    items: list[object] = [CodeContentItem(name=codes.DCM.RecurrentMalignancy, value=FINDING_CODES[finding],
                                           relationship_type="CONTAINS"),
                           _text(AI_RESULT, ai_headline(analysis))]
    envelope = envelope_line(analysis)
    if envelope:
        items.append(_text(OUTSIDE_VALIDATION, envelope))
    findings = analysis.findings
    if findings is not None:
        items.append(_text(LOCAL_CATEGORY, category_summary(findings) + (
            f". {findings.local_category_note}" if findings.local_category is not None else "")))
        for focus in findings.foci:
            items.append(_text(codes.DCM.Finding, f"Focus {focus.number} ({focus.where}): SUVbw max "
                                                  f"{round_suv(focus.suv_max):.2f}; {focus.call}"))
        if not findings.foci:
            items.append(_text(codes.DCM.Finding,
                               f"{findings.no_focus_statement} ({findings.region_description})"))
        if findings.spill_note:
            items.append(_text(SPILL_OVER, findings.spill_note))
        items.append(_text(MIPSMA_ASSESSMENT, findings.mipsma_note or (
            "miPSMA score assessable" if findings.mipsma_assessable else "miPSMA score not assessable")))
        for organ in findings.references:
            items.append(_text(REFERENCE_ORGAN, f"{reference_summary(organ)}; {organ.method}"))
    items.append(TextContentItem(name=codes.DCM.Comment, value=statement(analysis),
                                 relationship_type="CONTAINS"))
    container.ContentSequence = items
    return container


def _placeholder_group() -> MeasurementsAndQualitativeEvaluations:
    return MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=generate_uid(), identifier="removed"))


def _separate_containers(items: Sequence[Dataset]) -> None:
    for item in items:
        if item.get("ValueType") == "CONTAINER":
            item.ContinuityOfContent = "SEPARATE"
        if "ContentSequence" in item:
            _separate_containers(item.ContentSequence)


def build_sr(analysis: AnalysisResult, evidence: list[Dataset], settings: ResultSettings, *,
             series_uid: str, sop_uid: str, previous: list[Dataset] | None = None,
             pet_headers: Sequence[Dataset] = (), ct_headers: Sequence[Dataset] = (),
             segmentation: Dataset | None = None,
             segment_numbers: Mapping[str, int] | None = None) -> Dataset:
    """The SR document; `evidence[0]` is the PET header (patient and study attributes come from it).

    `pet_headers`/`ct_headers` are the analysed instances' headers (no pixels): the groups are drawn on
    them. Without PET headers nothing can be drawn, so the report then has no measurement groups at all
    (a group without image coordinates breaks OHIF) and carries the answer only as document-level content.
    """
    uid = device_uid(analysis.weights_sha256, analysis.software_version)
    observer = ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=uid,
            name=f"{ALGORITHM_NAME}, model {analysis.model_id or 'none'}",
            manufacturer_name=MANUFACTURER,
            model_name=MODEL_NAME,
        ),
    )
    algorithm = AlgorithmIdentification(
        name=ALGORITHM_NAME,
        version=f"psma-node {analysis.software_version}; model {analysis.model_id or 'none'}",
        parameters=algorithm_parameters(analysis),
    )
    groups: list[PlanarROIMeasurementsAndQualitativeEvaluations] = []
    referenced: dict[str, Dataset] = {}
    if pet_headers:
        try:  # foci first: OHIF opens the SR on its first measurement, the hottest focus
            pet_planes = planes(pet_headers)  # parsed once: every focus searches all of them
            ct_planes = planes(ct_headers) if ct_headers else []
            for focus in (analysis.findings.foci if analysis.findings is not None else []):
                groups.extend(_focus_groups(
                    analysis, focus, pet_planes, ct_planes,
                    _segment_reference(segmentation, segment_numbers, f"focus-{focus.number}")))
            groups.append(_result_group(analysis, algorithm, pet_planes,
                                        _segment_reference(segmentation, segment_numbers, "region")))
        except GeometryError as error:
            log.warning("SR drawn without image regions", extra={"reason": str(error)})
            groups = []
        headers = {str(h.SOPInstanceUID): h for h in [*pet_headers, *ct_headers]}
        for group in groups:
            for sop in _referenced_sops(group):
                if sop in headers and _describable(headers[sop]):
                    referenced[sop] = headers[sop]
    report = MeasurementReport(
        observation_context=ObservationContext(observer_device_context=observer),
        procedure_reported=PROCEDURE_PET_WHOLE_BODY,
        imaging_measurements=groups or [_placeholder_group()],
        referenced_images=list(referenced.values()) or None,
    )
    if not groups:  # highdicom insists on one group; a group without coordinates would break OHIF
        report[0].ContentSequence = [item for item in report[0].ContentSequence
                                     if item.ConceptNameCodeSequence[0].CodeValue != IMAGING_MEASUREMENTS]
    report[0].ContentSequence.append(_document_evaluations(analysis))
    equipment = node_equipment(analysis.software_version, settings)
    iod = Comprehensive3DSR if settings.sr_storage == "comprehensive3d" else ComprehensiveSR
    sr = iod(
        evidence=_complete_evidence(evidence, groups, [*pet_headers, *ct_headers], segmentation),
        content=report,
        series_instance_uid=series_uid,
        series_number=settings.sr_series_number,
        sop_instance_uid=sop_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
        institution_name=settings.institution_name or None,
        previous_versions=previous or None,
        contributing_equipment=[equipment],
        specific_character_set="ISO_IR 192",
    )
    sr.SeriesDescription = SERIES_DESCRIPTION
    sr.ManufacturerModelName = MODEL_NAME
    sr.SoftwareVersions = analysis.software_version
    sr.ContinuityOfContent = "SEPARATE"
    _separate_containers(sr.ContentSequence)
    mark_node_equipment(sr, uid)
    identify_local_scheme(sr)
    return sr


def _complete_evidence(evidence: list[Dataset], groups: Sequence[Dataset], headers: Sequence[Dataset],
                       segmentation: Dataset | None) -> list[Dataset]:
    """The given evidence plus every image and SEG the content references (highdicom insists on it)."""
    known = {str(item.SOPInstanceUID) for item in evidence}
    by_uid = {str(h.SOPInstanceUID): h for h in headers}
    wanted = [sop for group in groups for sop in _referenced_sops(group)]
    extra = [by_uid[sop] for sop in dict.fromkeys(wanted) if sop in by_uid and sop not in known]
    if segmentation is not None and str(segmentation.SOPInstanceUID) not in known and groups and any(
            item.get("ValueType") == "IMAGE" for group in groups for item in group[0].ContentSequence):
        extra.append(segmentation)
    return [*evidence, *extra]


def _describable(header: Dataset) -> bool:
    """Whether highdicom can make an Image Library entry for the image (it needs e.g. SliceThickness)."""
    try:
        ImageLibraryEntryDescriptors(header)
    except (AttributeError, TypeError, ValueError) as error:
        log.warning("image left out of the SR's Image Library",
                     extra={"sop_instance_uid": str(header.get("SOPInstanceUID", "")), "reason": str(error)})
        return False
    return True


def _referenced_sops(group: PlanarROIMeasurementsAndQualitativeEvaluations) -> list[str]:
    found = []
    for item in group[0].ContentSequence:
        if item.get("ValueType") == "SCOORD":
            for child in item.ContentSequence:
                for ref in child.get("ReferencedSOPSequence", []):
                    found.append(str(ref.ReferencedSOPInstanceUID))
    return found


def node_equipment(software_version: str, settings: ResultSettings) -> ContributingEquipment:
    """The node as Contributing Equipment of every result object (its Device UID is set afterwards)."""
    return ContributingEquipment(
        manufacturer=MANUFACTURER,
        purpose_of_reference=codes.DCM.ProcessingEquipment,
        manufacturer_model_name=MODEL_NAME,
        software_versions=software_version,
        institution_name=settings.institution_name or None,
        contribution_description="AI analysis; NOT FOR DIAGNOSTIC USE",
    )


def mark_node_equipment(dataset: Dataset, uid: str) -> None:
    """Give the node's Contributing Equipment item its Device UID (highdicom has no parameter for it)."""
    for item in dataset.ContributingEquipmentSequence:
        if item.get("Manufacturer") == MANUFACTURER:
            item.DeviceUID = uid


def as_comprehensive(sr: Dataset) -> Dataset:
    """A copy of a Comprehensive 3D SR relabelled as Comprehensive SR (same content; no SCOORD3D used)."""
    copy = deepcopy(sr)
    copy.SOPClassUID = COMPREHENSIVE_SR
    if hasattr(copy, "file_meta"):
        copy.file_meta.MediaStorageSOPClassUID = UID(COMPREHENSIVE_SR)
    return copy
