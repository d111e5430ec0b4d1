"""The analysed PET/CT series around the synthetic crop, and hand-made PROMISE findings on that crop.

`synthetic.make_images` gives crops only; the SEG and the SR's image coordinates need the PET instances
the crop was cut from. `pet_series_headers` makes that series (a larger grid holding the crop as a
sub-block at a known offset, DICOM rows running posterior as usual, so the crop's row flip is exercised),
and `make_findings` puts a region, a bladder and two foci on the crop grid, the bright focus where the
synthetic PET lesion is. `seed_analysed_series` stores both series as files with their instance rows, as
the node holds them when it publishes.
"""

from __future__ import annotations

from copy import deepcopy
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from sqlalchemy import delete
from sqlalchemy.orm import Session

from db.models import Instance, Study
from inference.result import AnalysisImages, AnalysisResult, Findings, Focus, ReferenceOrgan
from inference.volume import Volume
from tests.dicom_node.report.synthetic import CENTRE, CT_SOP_CLASS, LESION_OFFSET, make_analysis

CROP_OFFSET = (8, 5, 12)
"""Index of the crop's first voxel (column, flipped row, slice) in the full PET grid."""
FULL_MARGIN = (14, 9, 20)
"""How many columns / rows / slices the full grid has beyond the crop."""
SECOND_FOCUS_OFFSET = np.array([-20.0, -10.0, -16.0])
BLADDER_OFFSET = np.array([0.0, 0.0, 45.0])


def pet_series_headers(images: AnalysisImages, pet_header: Dataset) -> list[Dataset]:
    """Headers of every instance of the PET series the crop of `images` was cut from, slice order shuffled."""
    return series_headers(images.pet_suv_crop, pet_header)


def ct_series_headers(images: AnalysisImages, pet_header: Dataset, series_uid: str) -> list[Dataset]:
    """The same for the CT series (same patient, study and frame of reference as the PET)."""
    template = deepcopy(pet_header)
    template.SOPClassUID, template.Modality, template.SeriesInstanceUID = CT_SOP_CLASS, "CT", series_uid
    return series_headers(images.ct_crop, template)


def series_headers(crop: Volume, template: Dataset) -> list[Dataset]:
    """Headers of a series on a grid holding `crop` at CROP_OFFSET, attributes copied from `template`."""
    columns, rows, slices = (int(n + m) for n, m in zip(crop.array.shape, FULL_MARGIN))
    affine = crop.affine_lps.copy()
    affine[:3, 3] = crop.affine_lps[:3, 3] - crop.affine_lps[:3, :3] @ np.array(CROP_OFFSET, dtype=float)
    row_spacing = float(np.linalg.norm(affine[:3, 1]))
    column_spacing = float(np.linalg.norm(affine[:3, 0]))
    row_direction = affine[:3, 0] / column_spacing
    column_direction = -affine[:3, 1] / row_spacing
    headers = []
    for k in np.random.default_rng(7).permutation(slices):
        header = deepcopy(template)
        header.SOPInstanceUID = generate_uid()
        header.InstanceNumber = int(k) + 1
        top_left = affine[:3, :3] @ np.array([0.0, rows - 1.0, k]) + affine[:3, 3]  # row 0 is the flipped last j
        header.ImagePositionPatient = [float(v) for v in top_left]
        header.ImageOrientationPatient = [float(v) for v in (*row_direction, *column_direction)]
        header.PixelSpacing = [row_spacing, column_spacing]
        header.SliceThickness = float(np.linalg.norm(affine[:3, 2]))
        header.Rows, header.Columns = rows, columns
        header.SamplesPerPixel, header.PhotometricInterpretation = 1, "MONOCHROME2"
        header.BitsAllocated, header.BitsStored, header.HighBit, header.PixelRepresentation = 16, 16, 15, 0
        headers.append(header)
    return headers


def write_headers(headers: list[Dataset], folder: Path) -> dict[str, Path]:
    """The headers as DICOM files (with a blank image, so they are complete instances), by SOPInstanceUID."""
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for header in headers:
        ds = deepcopy(header)
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        if "Rows" in ds and "PixelData" not in ds:
            ds.PixelData = np.zeros((ds.Rows, ds.Columns), np.uint16).tobytes()
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths[str(ds.SOPInstanceUID)] = path
    return paths


def _sphere(images: AnalysisImages, centre: np.ndarray, radius_mm: float) -> np.ndarray:
    crop = images.pet_suv_crop
    index = np.indices(crop.array.shape).reshape(3, -1).T
    lps = crop.index_to_lps(index).reshape(*crop.array.shape, 3)
    return np.sum((lps - centre) ** 2, axis=-1) <= radius_mm**2


def make_findings(images: AnalysisImages) -> Findings:
    """Region around the lesion minus a bladder above it; focus 1 = the 41 % isocontour of the PET lesion."""
    lesion = CENTRE + LESION_OFFSET
    pet = images.pet_suv_crop.array
    bladder = _sphere(images, lesion + BLADDER_OFFSET, 18.0)
    region = _sphere(images, lesion, 40.0) & ~bladder
    hot = _sphere(images, lesion, 15.0)
    focus_mask = hot & (pet >= 0.41 * float(pet[hot].max()))
    second_mask = _sphere(images, lesion + SECOND_FOCUS_OFFSET, 5.0) & region
    voxel_ml = float(np.prod(images.pet_suv_crop.spacing)) / 1000.0
    first = (float(lesion[0]), float(lesion[1]), float(lesion[2]))
    second = tuple(float(v) for v in lesion + SECOND_FOCUS_OFFSET)
    foci = [
        Focus(number=1, suv_max=float(pet[focus_mask].max()), suv_peak=11.8, suv_mean=float(pet[focus_mask].mean()),
              volume_ml=float(focus_mask.sum()) * voxel_ml, suv_max_lps=first, centroid_lps=first,
              bladder_relation="separate", bladder_distance_mm=27.0, mipsma=2,
              mipsma_note="SUVmax 14.6 >= spleen SUVmean 9.1, < parotid SUVmean 18.0", mask=focus_mask,
              contour_suv=round(0.41 * float(pet[focus_mask].max()), 2), contour_rule="41 % of SUVbw max",
              contour_note="41 % of SUVbw max", background_suv=0.6, suv_peak_ml=1.22,
              suv_peak_note="highest mean of a 1 cm³ sphere (19 voxels = 1.22 ml): 1.22 ml averaged",
              site="prostate", site_name="prostate", site_evidence="within the usual prostate extent",
              call="PSMA-avid focus in the prostate; miT2 if judged tumour (extension not assessed)",
              category_hint="miT2 if judged tumour", mipsma_evidence="miPSMA 2 (≥ spleen 9.1, < parotid 18.0)"),
        Focus(number=2, suv_max=3.1, suv_peak=None, suv_mean=2.4, volume_ml=float(second_mask.sum()) * voxel_ml,
              suv_max_lps=second, centroid_lps=second,  # type: ignore[arg-type]
              bladder_relation="separate", bladder_distance_mm=60.0, mipsma=None,
              mipsma_note="not assessable: no parotid gland mask", mask=second_mask, contour_suv=1.8,
              contour_rule="adaptive: background + 50 % of (SUVbw max - background)",
              contour_note="low contrast: 41 % of SUVbw max (1.27) is below 1.5 x local background 1.0",
              background_suv=1.0, suv_peak_note="none: PET voxels too coarse", site="bone",
              site_name="pubic bone", site_evidence="CT median 300 HU within 4 mm of the SUVmax: bone",
              call=("pubic bone: bone uptake (miM1b if metastasis; unspecific bone uptake is a known "
                    "[18F]PSMA-1007 pitfall)"),
              category_hint="miM1b if metastasis", mipsma_evidence="miPSMA ≥ 2 (≥ spleen 9.1; no parotid)"),
    ]
    return Findings(
        foci=foci,
        references=[ReferenceOrgan("blood pool", 1.6, "TotalSegmentator aorta mask, eroded 2 voxels", volume_ml=14.2),
                    ReferenceOrgan("spleen", 9.1, "TotalSegmentator spleen mask", volume_ml=180.0),
                    ReferenceOrgan("parotid glands", None, "not found", note="no parotid mask")],
        mipsma_assessable=True, mipsma_note="", local_category="miT2u",
        local_category_note="Rule-based PROMISE V2 suggestion, independent of the classifier: prostate in situ",
        region_description="sphere of 40 mm around the prostate centre; bladder excluded (80 ml incl. margin)",
        isocontour_fraction=0.41, region_mask=region, bladder_mask=bladder,
        region_suv_max=round(float(pet[region].max()), 2), region_suv_mean=round(float(pet[region].mean()), 2),
        region_volume_ml=round(float(region.sum()) * voxel_ml, 1),
    )


def make_analysis_with_findings(**kwargs: object) -> AnalysisResult:
    """`make_analysis` plus findings on its crop."""
    analysis = make_analysis(**kwargs)  # type: ignore[arg-type]
    assert analysis.images is not None
    analysis.findings = make_findings(analysis.images)
    return analysis


def seed_analysed_series(session: Session, study: Study, pet: Dataset, folder: Path,
                         **analysis_options: object) -> tuple[AnalysisResult, list[Dataset], list[Dataset]]:
    """Replace the seeded instance rows by whole PET and CT series stored as files, and findings on them.

    The PET series' first header is `pet` itself (its geometry is set here), as the worker passes one of
    the analysed instances as the source of patient and study attributes.
    """
    analysis = make_analysis_with_findings(pet_series_uid=study.pet_series_uid, ct_series_uid=study.ct_series_uid,
                                           **analysis_options)
    assert analysis.images is not None
    pet_headers = pet_series_headers(analysis.images, pet)
    pet_headers[0].SOPInstanceUID = pet.SOPInstanceUID
    for keyword in ("InstanceNumber", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
                    "SliceThickness", "Rows", "Columns"):
        setattr(pet, keyword, pet_headers[0][keyword].value)
    ct_headers = ct_series_headers(analysis.images, pet, str(study.ct_series_uid))
    session.execute(delete(Instance).where(Instance.study_id == study.id))
    for headers in (pet_headers, ct_headers):
        for uid, path in write_headers(headers, folder / headers[0].Modality).items():
            header = next(h for h in headers if h.SOPInstanceUID == uid)
            session.add(Instance(study_id=study.id, study_uid=study.study_uid, series_uid=header.SeriesInstanceUID,
                                 sop_instance_uid=uid, sop_class_uid=header.SOPClassUID,
                                 transfer_syntax_uid=str(ExplicitVRLittleEndian), path=str(path),
                                 size_bytes=path.stat().st_size, sha256="0" * 64,
                                 instance_number=int(header.InstanceNumber)))
    session.flush()
    return analysis, pet_headers, ct_headers
