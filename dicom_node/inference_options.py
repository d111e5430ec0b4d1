"""The one place where the node's settings become the plain option objects `inference/` takes.

`inference/` knows nothing of the node (see docs/architecture.md): it defines typed option dataclasses, and
this adapter fills them from `Settings`, the node's version and the device the entry point resolved. It
also turns what the database holds for a study (`db.clinical.ClinicalRegistration`) into the analysis'
`RegisteredClinical`, so that `db/` and `inference/` need not know each other either.
"""

from __future__ import annotations

from pathlib import Path

import dicom_node
from db.clinical import ClinicalRegistration
from dicom_node.config import ClinicalSettings, LocalizerSettings, Settings
from inference.analysis import AnalysisOptions
from inference.clinical import ClinicalRules, RegisteredClinical
from inference.localize import LocalizerOptions


def clinical_rules(settings: ClinicalSettings) -> ClinicalRules:
    return ClinicalRules(
        tags=tuple(settings.tags),
        psa_pattern=settings.psa_pattern,
        prostatectomy_pattern=settings.prostatectomy_pattern,
        no_prostatectomy_pattern=settings.no_prostatectomy_pattern,
        impute_psa=settings.impute_psa,
        impute_prostatectomy=settings.impute_prostatectomy,
        infer_prostatectomy=settings.infer_prostatectomy,
        site_tracer=settings.site_tracer,
    )


def localizer_options(settings: LocalizerSettings) -> LocalizerOptions:
    return LocalizerOptions(
        kind=settings.kind,
        totalsegmentator_home=settings.totalsegmentator_home,
        totalsegmentator_command=settings.totalsegmentator_command,
        totalsegmentator_fast=settings.totalsegmentator_fast,
        totalsegmentator_timeout_seconds=settings.totalsegmentator_timeout_seconds,
        anatomical_grid_mm=settings.anatomical_grid_mm,
    )


def analysis_options(settings: Settings, device: str) -> AnalysisOptions:
    """`device` is what `inference.network.resolve_device(settings.models.device)` chose, as a name."""
    models = settings.models
    return AnalysisOptions(
        models_dir=Path(models.models_dir),
        routing=models.routing,
        default_model=models.default_model,
        threshold=models.threshold,
        device=device,
        software_version=dicom_node.__version__,
        expected_sha256=dict(models.expected_sha256),
        gradcam=models.gradcam,
        gradcam_layer=models.gradcam_layer,
        clinical=clinical_rules(settings.clinical),
        localizer=localizer_options(settings.localizer),
        allow_different_frame_of_reference=settings.assembly.allow_different_frame_of_reference,
    )


def registered_clinical(found: ClinicalRegistration | None) -> RegisteredClinical | None:
    """What the database holds for the study, as the analysis takes it (None: nothing registered)."""
    if found is None:
        return None
    return RegisteredClinical(
        psa_ng_ml=found.psa_ng_ml, prostatectomy=found.prostatectomy, detail=found.detail
    )
