"""One examination from DICOM files to a typed result: read, SUV, localise, crop, quantify, classify.

Reads only what it needs: headers of both series, then just the slices of the 200 mm cube (plus whatever
the localiser reads). Without installed weights it still reports the weight-free quantification and says
that the classifier is not installed; every other failure is an `AnalysisError` naming the stage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inference.attention import DEFAULT_TARGET_LAYER, AttentionError, gradcam_map, to_patient
from inference.checkpoints import CheckpointError, WeightsMissing, load_model
from inference.clinical import (
    ClinicalRules,
    RegisteredClinical,
    resolve_prostatectomy,
    resolve_psa,
    resolve_tracer,
)
from inference.findings import FindingsOptions, build_findings, quantification_from
from inference.focus_site import SiteContext, bladder_base
from inference.localize import LocalisationError, LocalizerOptions, make_localizer
from inference.model_specs import (
    CUBE_HALF_WIDTH_MM,
    NOT_FOR_CLINICAL_USE,
    ModelSpec,
    UnknownModel,
    get_spec,
    route,
)
from inference.network import make_deterministic, predict
from inference.preprocess import PreprocessError, crop, cube_box, model_input
from inference.quantify import QuantifyError, QuantifyOptions, analysed_region, quantify
from inference.reference_organs import reference_scorer
from inference.result import (
    AnalysisImages,
    AnalysisResult,
    Finding,
    Findings,
    Localisation,
    Quantification,
    known_prostatectomy,
    operated_for_report,
)
from inference.suv import SUVError, suv_factor, to_suv
from inference.volume import Series, Volume, VolumeError

log = logging.getLogger(__name__)


class AnalysisError(RuntimeError):
    """The examination cannot be analysed; `stage` says where (read, suv, localise, preprocess, model)."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(f"{stage}: {message}")
        self.stage = stage
        self.reason = message


@dataclass
class AnalysisOptions:
    """Everything an analysis depends on besides the images: plain typed values.

    `device` is a device already chosen by `inference.network.resolve_device` ("cpu" or "cuda"): each
    entry point resolves the configured preference once and passes the result in. `software_version` is
    the caller's version, written into every result.
    """

    models_dir: Path
    routing: str = "published-test"
    default_model: str = "D"
    threshold: float = 0.5
    device: str = "cpu"
    software_version: str = "unspecified"
    expected_sha256: dict[str, str] = field(default_factory=dict)
    gradcam: bool = True
    gradcam_layer: str = DEFAULT_TARGET_LAYER
    clinical: ClinicalRules = field(default_factory=ClinicalRules)
    localizer: LocalizerOptions = field(default_factory=LocalizerOptions)
    quantify: QuantifyOptions = field(default_factory=QuantifyOptions)
    allow_different_frame_of_reference: bool = False
    findings: FindingsOptions = field(default_factory=FindingsOptions)


@contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = round(timings.get(stage, 0.0) + time.perf_counter() - start, 4)


def _locate(
    ct: Series, pet: Series, options: AnalysisOptions, center_lps: tuple[float, float, float] | None
) -> Localisation:
    if center_lps is not None:
        center = tuple(float(v) for v in center_lps)
        if len(center) != 3 or not all(np.isfinite(center)):
            raise AnalysisError("localise", f"centre must be three finite LPS millimetres, got {center_lps}")
        return Localisation(
            center, "given", 1.0, "given", "centre given by the caller; localiser not run",  # type: ignore[arg-type]
            reference_note="no localiser ran (the centre was given), so no reference-organ masks",
        )
    try:
        return make_localizer(options.localizer).locate(ct, pet)
    except LocalisationError as exc:
        raise AnalysisError("localise", str(exc)) from exc


def _read_cube(series: Series, center: tuple[float, float, float], label: str) -> Volume:
    """Only the slices of the cube are decoded; then the in-plane range is cut."""
    box = cube_box(series.affine_lps, series.shape, center)
    if box.empty:
        raise AnalysisError(
            "preprocess",
            f"the {2 * CUBE_HALF_WIDTH_MM:.0f} mm cube around {np.round(center, 1).tolist()} (LPS mm) "
            f"does not overlap the {label} (index range {box.lower}..{box.upper} of {series.shape})",
        )
    return crop(series.read(box.k_range), box, k_offset=box.k_range[0])


def _model_arrays(
    spec: ModelSpec, ct: Series, pet: Series, ct_crop: Volume, pet_suv_crop: Volume, factor: float
) -> tuple[np.ndarray, np.ndarray, Volume]:
    """CT and PET as the spec wants them, and the PET grid they came from (for Grad-CAM)."""
    if spec.region == "cube":
        pet_values = (
            pet_suv_crop.array if spec.pet_units == "suv" else pet_suv_crop.array / np.float32(factor)
        )
        return ct_crop.array, pet_values, pet_suv_crop
    whole_pet = pet.read()
    pet_values = whole_pet.array * np.float32(factor) if spec.pet_units == "suv" else whole_pet.array
    return ct.read().array, pet_values, whole_pet


def analyse(
    pet_paths: Sequence[Path],
    ct_paths: Sequence[Path],
    options: AnalysisOptions,
    *,
    registered: RegisteredClinical | None = None,
    center_lps: tuple[float, float, float] | None = None,
    model_id: str | None = None,
) -> AnalysisResult:
    """Analyse one PET/CT examination; see the module docstring for what is read and when."""
    timings: dict[str, float] = {}
    warnings: list[str] = []
    try:
        with _timed(timings, "read"):
            pet = Series.scan(pet_paths)
            ct = Series.scan(ct_paths)
    except VolumeError as exc:
        raise AnalysisError("read", str(exc)) from exc
    warnings += pet.notes + ct.notes
    _check_pair(pet, ct, warnings, options.allow_different_frame_of_reference)

    try:
        with _timed(timings, "suv"):
            factor = suv_factor(pet.headers)
    except SUVError as exc:
        raise AnalysisError("suv", str(exc)) from exc

    with _timed(timings, "localise"):
        localisation = _locate(ct, pet, options, center_lps)
    center = localisation.center_lps

    header_sources = [pet.headers[0], ct.headers[0]]
    psa = resolve_psa(registered, header_sources, options.clinical)
    prostatectomy = resolve_prostatectomy(registered, header_sources, options.clinical, localisation.organ)
    try:
        spec = get_spec(
            model_id or route(options.routing, options.default_model, bool(prostatectomy.value)),
            options.expected_sha256,
        )
    except (UnknownModel, ValueError) as exc:
        raise AnalysisError("model", str(exc)) from exc

    try:
        with _timed(timings, "read"):
            ct_crop = _read_cube(ct, center, "CT")
            pet_crop = _read_cube(pet, center, "PET")
        with _timed(timings, "suv"):
            pet_suv_crop = Volume(
                to_suv(pet_crop.array, factor), pet_crop.affine_lps, pet_crop.series_uid, "PT"
            )
        del pet_crop
    except VolumeError as exc:
        raise AnalysisError("read", str(exc)) from exc

    quantification: Quantification | None = None
    findings: Findings | None = None
    try:
        with _timed(timings, "quantify"):
            analysed = analysed_region(pet_suv_crop, ct_crop, center, localisation.organ, options.quantify)
        with _timed(timings, "references"):
            tracer = resolve_tracer(pet.headers[0], options.clinical.site_tracer)
            scorer = reference_scorer(pet, factor.factor, localisation, tracer)
        with _timed(timings, "findings"):
            sites = SiteContext(
                ct=ct_crop,
                centre_lps=np.asarray(analysed.centre_lps, dtype=float),
                operated=operated_for_report(prostatectomy, localisation.organ),
                bladder_base_lps=bladder_base(analysed.bladder, pet_suv_crop),
                masks={m.organ: m for m in localisation.site_masks},
            )
            findings = build_findings(
                pet_suv_crop, analysed, scorer, sites, known_prostatectomy(prostatectomy), options.findings
            )
        with _timed(timings, "quantify"):
            quantification = (
                quantification_from(findings.foci[0], analysed) if findings.foci
                else quantify(pet_suv_crop, ct_crop, center, localisation.organ, options.quantify, analysed)
            )
    except QuantifyError as exc:
        warnings.append(f"quantification not possible: {exc}")

    try:
        with _timed(timings, "preprocess"):
            ct_values, pet_values, pet_grid = _model_arrays(
                spec, ct, pet, ct_crop, pet_suv_crop, factor.factor
            )
            tensor = model_input(spec, ct_values, pet_values, psa.value, prostatectomy.value)  # type: ignore[arg-type]
            del ct_values, pet_values
    except (PreprocessError, VolumeError) as exc:
        raise AnalysisError("preprocess", str(exc)) from exc

    device = torch.device(options.device)

    result = AnalysisResult(
        finding=Finding.UNDETERMINED,
        probability=None,
        threshold=options.threshold,
        model_id=spec.id,
        weights_sha256=None,
        classifier_run=False,
        classifier_note="",
        software_version=options.software_version,
        psa=psa,
        prostatectomy=prostatectomy,
        localisation=localisation,
        quantification=quantification,
        suv_factor=float(factor.factor),
        pet_series_uid=pet.series_uid,
        ct_series_uid=ct.series_uid,
        device=str(device),
        timings=timings,
        warnings=warnings,
        images=AnalysisImages(
            ct_crop=ct_crop,
            pet_suv_crop=pet_suv_crop,
            crop_box_lps=(
                tuple(float(c - CUBE_HALF_WIDTH_MM) for c in center),  # type: ignore[arg-type]
                tuple(float(c + CUBE_HALF_WIDTH_MM) for c in center),  # type: ignore[arg-type]
            ),
        ),
        model_input=tensor,
        model_description=spec.description,
        published_performance=f"{spec.published_accuracy}. {NOT_FOR_CLINICAL_USE}",
        suv_notes=list(factor.notes),
        findings=findings,
        series_headers={pet.series_uid: list(pet.headers), ct.series_uid: list(ct.headers)},
    )
    _classify(result, spec, tensor, pet_grid, options, device)
    log.info(
        "analysis finished",
        extra={
            "pet_series_uid": pet.series_uid,
            "model_id": spec.id,
            "finding": result.finding.value,
            "probability": result.probability,
            "organ": localisation.organ,
            "timings": timings,
        },
    )
    return result


def _check_pair(pet: Series, ct: Series, warnings: list[str], allow_different_frame: bool) -> None:
    """PT and CT, in one Frame of Reference: only then do their coordinates demonstrably coincide.

    A Spatial Registration object is not read; `allow_different_frame` (the site's explicit opt-in)
    analyses the pair anyway and the result carries a warning saying so.
    """
    if pet.modality != "PT":
        raise AnalysisError("read", f"the PET series has modality {pet.modality!r}, expected PT")
    if ct.modality != "CT":
        raise AnalysisError("read", f"the CT series has modality {ct.modality!r}, expected CT")
    pet_for = str(getattr(pet.headers[0], "FrameOfReferenceUID", ""))
    ct_for = str(getattr(ct.headers[0], "FrameOfReferenceUID", ""))
    if pet_for and pet_for == ct_for:
        return
    if not allow_different_frame:
        raise AnalysisError(
            "read",
            "PET and CT are in different Frames of Reference (or one has none), so their coordinates are not "
            "shown to coincide; not analysed (assembly.allow_different_frame_of_reference opts in)",
        )
    warnings.append(
        "PET and CT are in different Frames of Reference: analysed only because "
        "assembly.allow_different_frame_of_reference is on, assuming their coordinates coincide "
        "(no registration was checked)"
    )


def _classify(
    result: AnalysisResult,
    spec: ModelSpec,
    tensor: np.ndarray,
    pet_grid: Volume,
    options: AnalysisOptions,
    device: Any,
) -> None:
    """Fill the classifier's part of the result, or say why it did not run."""
    try:
        with _timed(result.timings, "load_model"):
            loaded = load_model(options.models_dir, spec, device)
    except WeightsMissing as exc:
        log.warning("classifier weights not installed", extra={"model_id": spec.id})
        result.classifier_note = f"classifier not installed: {exc}"
        result.warnings.append(result.classifier_note)
        return
    except CheckpointError as exc:
        raise AnalysisError("model", str(exc)) from exc
    make_deterministic()
    with _timed(result.timings, "forward"):
        prediction = predict(loaded.net, tensor, device)
    result.probability = prediction.probability
    result.classifier_run = True
    result.weights_sha256 = loaded.sha256
    result.finding = Finding.PRESENT if prediction.probability >= options.threshold else Finding.ABSENT
    result.classifier_note = (
        f"model {spec.id} (DenseNet121, weights sha256 {loaded.sha256[:16]}...) on {device}: "
        f"p(local recurrence) = {prediction.probability:.3f}, threshold {options.threshold:g}"
    )
    if not options.gradcam or result.images is None:
        return
    try:
        with _timed(result.timings, "gradcam"):
            heat = gradcam_map(loaded.net, tensor, device, options.gradcam_layer)
            result.images.attention = to_patient(heat, spec, pet_grid)
    except AttentionError as exc:
        result.warnings.append(f"attention map not computed: {exc}")
