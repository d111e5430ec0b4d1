"""The node's settings become inference's plain options in one adapter, with nothing lost on the way."""

from __future__ import annotations

from pathlib import Path

import dicom_node
from db.clinical import ClinicalRegistration
from dicom_node.config import ClinicalSettings, LocalizerSettings, Settings
from dicom_node.inference_options import (
    analysis_options,
    clinical_rules,
    localizer_options,
    registered_clinical,
)
from inference.clinical import ClinicalRules, RegisteredClinical
from inference.localize import LocalizerOptions


def test_the_settings_default_to_the_published_imputation() -> None:
    rules = clinical_rules(ClinicalSettings())
    assert rules.impute_prostatectomy is True and rules.infer_prostatectomy is False


def test_default_settings_give_the_defaults_inference_uses_on_its_own() -> None:
    assert clinical_rules(ClinicalSettings()) == ClinicalRules()
    assert localizer_options(LocalizerSettings()) == LocalizerOptions()


def test_every_setting_reaches_the_options() -> None:
    settings = Settings.model_validate({
        "models": {"models_dir": "/srv/models", "routing": "by-prostatectomy", "threshold": 0.7,
                   "gradcam": False},
        "localizer": {"kind": "totalsegmentator", "totalsegmentator_command": "/opt/ts",
                      "totalsegmentator_fast": True, "anatomical_grid_mm": 6.0},
        "clinical": {"tags": ["ImageComments"], "impute_psa": 5.0, "infer_prostatectomy": True},
        "assembly": {"allow_different_frame_of_reference": True},
    })
    options = analysis_options(settings, "cpu")
    assert (options.models_dir, options.routing, options.threshold, options.gradcam) == (
        Path("/srv/models"), "by-prostatectomy", 0.7, False)
    assert (options.device, options.software_version) == ("cpu", dicom_node.__version__)
    assert options.localizer == LocalizerOptions(kind="totalsegmentator", totalsegmentator_command="/opt/ts",
                                                 totalsegmentator_fast=True, anatomical_grid_mm=6.0)
    assert options.clinical.tags == ("ImageComments",) and options.clinical.impute_psa == 5.0
    assert options.clinical.infer_prostatectomy and options.allow_different_frame_of_reference


def test_a_database_registration_becomes_the_analysis_input() -> None:
    found = ClinicalRegistration(psa_ng_ml=2.5, prostatectomy=False, detail="PSA registered via cli")
    assert registered_clinical(found) == RegisteredClinical(2.5, False, "PSA registered via cli")
    assert registered_clinical(None) is None
