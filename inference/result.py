"""What an analysis returns: the typed contract between `inference/` and the node's report stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

import numpy as np

from inference.volume import Volume


class Finding(str, Enum):
    PRESENT = "present"
    ABSENT = "absent"
    UNDETERMINED = "undetermined"


Provenance = Literal["given", "tag", "imputed", "inferred"]


@dataclass
class ClinicalValue:
    """A metadata value fed to the model and where it came from (registered, DICOM tag, imputed, inferred)."""

    value: float | bool | None
    source: Provenance
    detail: str = ""


@dataclass
class Localisation:
    center_lps: tuple[float, float, float]
    organ: Literal["prostate", "bladder", "given"]
    confidence: float
    method: str
    detail: str = ""


@dataclass
class Quantification:
    """Weight-free findings in the prostate / prostate-bed region, bladder excluded."""

    suv_max: float
    suv_mean: float
    focal_volume_ml: float
    suv_max_lps: tuple[float, float, float] | None = None
    suv_peak_region_note: str = ""


@dataclass
class AnalysisImages:
    """Images the Secondary Capture is drawn from, each a Volume in patient geometry."""

    ct_crop: Volume
    pet_suv_crop: Volume
    attention: Volume | None = None
    crop_box_lps: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None


@dataclass
class AnalysisResult:
    finding: Finding
    probability: float | None
    threshold: float
    model_id: str | None
    weights_sha256: str | None
    classifier_run: bool
    classifier_note: str
    software_version: str
    psa: ClinicalValue
    prostatectomy: ClinicalValue
    localisation: Localisation
    quantification: Quantification | None
    suv_factor: float
    pet_series_uid: str
    ct_series_uid: str
    device: str
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    images: AnalysisImages | None = None
    model_input: np.ndarray | None = None
