"""Small synthetic analyses for report and delivery tests: real geometry, known orientation markers.

The CT and PET crops are built directly in the dcm2niix layout (axis 0 towards patient left, axis 1 towards
anterior, axis 2 towards superior) with LPS affines, and carry markers placed on purpose: a bright PET
lesion to the patient's LEFT and slightly ANTERIOR of the centre, and a bone-dense CT rod running towards
the head, so tests can check that the rendered views put each where radiologists expect it.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from sqlalchemy.orm import Session, sessionmaker

from db.models import Instance, Job, Result, Study
from db.session import ensure_schema, make_engine, make_session_factory
from inference.result import (
    AnalysisImages,
    AnalysisResult,
    ClinicalValue,
    Finding,
    Localisation,
    Quantification,
)
from inference.volume import Volume

CENTRE = np.array([10.0, 30.0, -800.0])  # LPS mm of the analysed cube's centre
LESION_OFFSET = np.array([40.0, -30.0, 10.0])  # patient left (+x), anterior (-y), superior (+z)
PET_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.128"
CT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.2"


def _affine(spacing: float, shape: tuple[int, int, int], centre: np.ndarray) -> np.ndarray:
    """LPS affine for the dcm2niix layout: i -> +x (left), j -> -y (anterior), k -> +z (superior)."""
    affine = np.diag([spacing, -spacing, spacing, 1.0])
    half = (np.array(shape) - 1) / 2.0
    affine[:3, 3] = centre - affine[:3, :3] @ half
    return affine


def _lps_grid(shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
    idx = np.indices(shape).reshape(3, -1).astype(float)
    return ((affine[:3, :3] @ idx).T + affine[:3, 3]).reshape(*shape, 3)


def make_images(ct_voxels: int = 50, pet_voxels: int = 50) -> tuple[AnalysisImages, np.ndarray]:
    """CT (HU) and PET (SUV) crops of a 200 mm cube, an attention map, and the lesion position (LPS)."""
    lesion = CENTRE + LESION_OFFSET
    ct_shape = (ct_voxels,) * 3
    ct_affine = _affine(200.0 / ct_voxels, ct_shape, CENTRE)
    p = _lps_grid(ct_shape, ct_affine) - CENTRE
    body = (p[..., 0] / 90.0) ** 2 + (p[..., 1] / 70.0) ** 2 <= 1.0
    ct = np.where(body, 40.0, -1000.0).astype(np.float32)
    rod = (np.abs(p[..., 0] + 50.0) < 8) & (np.abs(p[..., 1] - 20.0) < 8)  # patient right, posterior
    ct[rod & body] = 900.0
    pet_shape = (pet_voxels,) * 3
    pet_affine = _affine(200.0 / pet_voxels, pet_shape, CENTRE)
    q = _lps_grid(pet_shape, pet_affine)
    pet = np.where(((q - CENTRE)[..., 0] / 90.0) ** 2 + ((q - CENTRE)[..., 1] / 70.0) ** 2 <= 1, 0.6, 0.0)
    pet = pet + 14.0 * np.exp(-np.sum((q - lesion) ** 2, axis=-1) / (2 * 6.0 ** 2))
    att_shape = (35, 35, 35)
    att_affine = _affine(180.0 / 35, att_shape, CENTRE)
    a = _lps_grid(att_shape, att_affine)
    attention = np.exp(-np.sum((a - lesion) ** 2, axis=-1) / (2 * 15.0 ** 2)).astype(np.float32)
    box = (tuple(CENTRE - 90.0), tuple(CENTRE + 90.0))
    images = AnalysisImages(
        ct_crop=Volume(ct, ct_affine, modality="CT"),
        pet_suv_crop=Volume(pet.astype(np.float32), pet_affine, modality="PT"),
        attention=Volume(attention, att_affine, modality="attention"),
        crop_box_lps=box,  # type: ignore[arg-type]
    )
    return images, lesion


def make_analysis(classifier_run: bool = True, probability: float = 0.83, prostatectomy: bool = False,
                  with_images: bool = True, pet_series_uid: str = "", ct_series_uid: str = "") -> AnalysisResult:
    images, lesion = make_images() if with_images else (None, CENTRE + LESION_OFFSET)
    finding = (Finding.PRESENT if probability >= 0.5 else Finding.ABSENT) if classifier_run else Finding.UNDETERMINED
    return AnalysisResult(
        finding=finding,
        probability=probability if classifier_run else None,
        threshold=0.5,
        model_id="D" if classifier_run else None,
        weights_sha256=("ab" * 32) if classifier_run else None,
        classifier_run=classifier_run,
        classifier_note="" if classifier_run else "no checkpoint for model D in models_dir",
        software_version="0.1.0",
        psa=ClinicalValue(4.2, "tag", "AdditionalPatientHistory"),
        prostatectomy=ClinicalValue(prostatectomy, "given", "registered via CLI"),
        localisation=Localisation(tuple(CENTRE), "prostate", 0.91, "anatomical"),  # type: ignore[arg-type]
        quantification=Quantification(suv_max=14.6, suv_mean=6.2, focal_volume_ml=2.4,
                                      suv_max_lps=tuple(lesion)),  # type: ignore[arg-type]
        suv_factor=0.00123,
        pet_series_uid=pet_series_uid or generate_uid(),
        ct_series_uid=ct_series_uid or generate_uid(),
        device="cpu",
        timings={"total": 7.9},
        warnings=[],
        images=images,
    )


def make_pet_header(study_uid: str | None = None, series_uid: str | None = None) -> Dataset:
    """A PET instance header as the node stores it: patient, study and series attributes."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = PET_SOP_CLASS
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.PatientName = "Müller^Hans"
    ds.PatientID = "PID-0001"
    ds.PatientBirthDate = "19500101"
    ds.PatientSex = "M"
    ds.PatientAge = "074Y"
    ds.StudyDate = "20240501"
    ds.StudyTime = "101500"
    ds.StudyID = "S1"
    ds.AccessionNumber = "ACC12345"
    ds.ReferringPhysicianName = ""
    ds.Modality = "PT"
    ds.SeriesNumber = 3
    ds.Manufacturer = "Synthetic"
    ds.BodyPartExamined = "WHOLEBODY"
    return ds


def make_sessions(db_url: str) -> sessionmaker[Session]:
    """A migrated database and its session factory."""
    engine = make_engine(db_url)
    ensure_schema(engine, db_url, auto_upgrade=True)
    return make_session_factory(engine)


def seed_study(session: Session, pet_header: Dataset, calling_ae: str = "PACS",
               calling_host: str = "127.0.0.1", ct_slices: int = 3) -> tuple[Study, Result]:
    """A done study with PET/CT instance rows, a job and an (unpublished) result row."""
    pet_series, ct_series = str(pet_header.SeriesInstanceUID), generate_uid()
    study = Study(study_uid=str(pet_header.StudyInstanceUID), accession_number=str(pet_header.AccessionNumber),
                  patient_id=str(pet_header.PatientID), calling_ae=calling_ae, calling_host=calling_host,
                  state="done", pet_series_uid=pet_series, ct_series_uid=ct_series)
    session.add(study)
    session.flush()
    rows = [(pet_series, PET_SOP_CLASS, str(pet_header.SOPInstanceUID), 1)]
    rows += [(pet_series, PET_SOP_CLASS, generate_uid(), 2)]
    rows += [(ct_series, CT_SOP_CLASS, generate_uid(), n) for n in range(1, ct_slices + 1)]
    for series, sop_class, sop_uid, number in rows:
        session.add(Instance(study_id=study.id, study_uid=study.study_uid, series_uid=series,
                             sop_instance_uid=sop_uid, sop_class_uid=sop_class,
                             transfer_syntax_uid=str(ExplicitVRLittleEndian), path=f"/nonexistent/{sop_uid}.dcm",
                             size_bytes=1, sha256="0" * 64, instance_number=number))
    job = Job(study_id=study.id, generation=study.generation or 1, state="done")
    session.add(job)
    session.flush()
    result = Result(study_id=study.id, job_id=job.id, software_version="0.1.0", finding="present")
    session.add(result)
    session.flush()
    return study, result
