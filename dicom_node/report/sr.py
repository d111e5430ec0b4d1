"""The Structured Report: an IHE AI Results style TID 1500 Imaging Measurement Report, built with highdicom.

One study-level measurement group carries the answer (recurrent malignancy Present / Absent / Undetermined
at the prostate or prostate bed, with the probability), the regional SUV measurements, the algorithm with
the exact parameters and clinical values it used and where each came from, and the research-use statement
with the published performance. The observer is the device (the model), whose Device UID changes with the
weights, so a reader years later can tell which model produced which result.
"""

from __future__ import annotations

import hashlib
import uuid
from copy import deepcopy

from highdicom import ContributingEquipment
from highdicom.sr import (
    AlgorithmIdentification,
    Comprehensive3DSR,
    ComprehensiveSR,
    DeviceObserverIdentifyingAttributes,
    FindingSite,
    Measurement,
    MeasurementReport,
    MeasurementsAndQualitativeEvaluations,
    ObservationContext,
    ObserverContext,
    QualitativeEvaluation,
    TextContentItem,
    TrackingIdentifier,
)
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import UID, generate_uid

from dicom_node.config import ResultSettings
from dicom_node.report.render import BANNER, PUBLISHED_PERFORMANCE
from inference.result import AnalysisResult, ClinicalValue, Finding

COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
MANUFACTURER = "psma-node (research software)"
MODEL_NAME = "psma-node PSMA PET/CT local recurrence"
ALGORITHM_NAME = "Local recurrence DenseNet121 (Korb et al., Cancers 2025)"
SERIES_DESCRIPTION = "AI PSMA recurrence SR - NOT FOR DIAGNOSTIC USE"
TRACKING_IDENTIFIER = "PSMA local recurrence (study level)"

PROCEDURE_PET_WHOLE_BODY = Code("44139-4", "LN", "PET whole body")
PROSTATE_BED = Code("PROSTATE_BED", "99LOCAL", "Prostate bed")
SUV_BW = Code("126401", "DCM", "SUVbw")
UNIT_NONE = Code("1", "UCUM", "no units")
UNIT_G_PER_ML = Code("g/ml", "UCUM", "g/ml")
UNIT_ML = Code("ml", "UCUM", "ml")

FINDING_CODES = {
    Finding.PRESENT: codes.SCT.Present,
    Finding.ABSENT: codes.SCT.Absent,
    Finding.UNDETERMINED: codes.SCT.Undetermined,
}


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
        f"cube_centre_lps_mm={','.join(f'{c:.1f}' for c in loc.center_lps)} ({loc.organ}, {loc.method}, "
        f"confidence {loc.confidence:.2f})",
        f"suvbw_factor={analysis.suv_factor:.6g}",
        f"device={analysis.device}",
    ]
    return params


def statement(analysis: AnalysisResult) -> str:
    """The research-use statement and the published performance, plus why the classifier did not run."""
    published = analysis.published_performance
    parts = [BANNER.replace("–", "-") + ".",
             f"Published performance (Korb et al., Cancers 2025): {published}" if published
             else PUBLISHED_PERFORMANCE]
    if not analysis.classifier_run:
        parts.append(f"Classifier not run: {analysis.classifier_note or 'no classification model installed'}; "
                     "the finding is Undetermined and only the quantitative findings are reported.")
    elif analysis.classifier_note:
        parts.append(analysis.classifier_note)
    parts.extend(f"Warning: {w}" for w in analysis.warnings)
    return " ".join(parts)


def finding_site(analysis: AnalysisResult) -> FindingSite:
    """Prostate bed after prostatectomy (private code; no standard one exists), else the prostate."""
    if analysis.prostatectomy.value is True:
        return FindingSite(anatomic_location=PROSTATE_BED)
    return FindingSite(anatomic_location=codes.SCT.Prostate)


def build_sr(analysis: AnalysisResult, evidence: list[Dataset], settings: ResultSettings, *,
             series_uid: str, sop_uid: str, previous: list[Dataset] | None = None) -> Dataset:
    """The SR document; `evidence[0]` is the PET header (patient and study attributes come from it)."""
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
    site = finding_site(analysis)
    finding = analysis.finding if analysis.classifier_run else Finding.UNDETERMINED
    measurements: list[Measurement] = []
    if analysis.classifier_run and analysis.probability is not None:
        measurements.append(Measurement(
            name=codes.DCM.ProbabilityOfCancer, value=float(analysis.probability), unit=UNIT_NONE,
            algorithm_id=algorithm, finding_sites=[site],
        ))
    quant = analysis.quantification
    if quant is not None:
        measurements.append(Measurement(name=SUV_BW, value=float(quant.suv_max), unit=UNIT_G_PER_ML,
                                        derivation=codes.SCT.Maximum, finding_sites=[site]))
        measurements.append(Measurement(name=SUV_BW, value=float(quant.suv_mean), unit=UNIT_G_PER_ML,
                                        derivation=codes.SCT.Mean, finding_sites=[site]))
        measurements.append(Measurement(name=codes.SCT.Volume, value=float(quant.focal_volume_ml), unit=UNIT_ML,
                                        finding_sites=[site]))
    group = MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=generate_uid(), identifier=TRACKING_IDENTIFIER),
        finding_type=codes.DCM.RecurrentMalignancy,
        algorithm_id=algorithm,
        finding_sites=[site],
        measurements=measurements or None,
        qualitative_evaluations=[QualitativeEvaluation(codes.DCM.RecurrentMalignancy, FINDING_CODES[finding])],
    )
    group[0].ContentSequence.append(TextContentItem(
        name=codes.DCM.Comment, value=statement(analysis), relationship_type="CONTAINS",
    ))
    report = MeasurementReport(
        observation_context=ObservationContext(observer_device_context=observer),
        procedure_reported=PROCEDURE_PET_WHOLE_BODY,
        imaging_measurements=[group],
    )
    equipment = ContributingEquipment(
        manufacturer=MANUFACTURER,
        purpose_of_reference=codes.DCM.ProcessingEquipment,
        manufacturer_model_name=MODEL_NAME,
        software_versions=analysis.software_version,
        institution_name=settings.institution_name or None,
        contribution_description="AI analysis; NOT FOR DIAGNOSTIC USE",
    )
    iod = Comprehensive3DSR if settings.sr_storage == "comprehensive3d" else ComprehensiveSR
    sr = iod(
        evidence=evidence,
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
    mark_node_equipment(sr, uid)
    return sr


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
