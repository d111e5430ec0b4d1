"""Generate one synthetic [18F]PSMA PET/CT study on disk, with the ground truth a test can check against."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dicom_node.synth.acquisition import plan_acquisition, tracer_family
from dicom_node.synth.dicom_writer import (
    TRANSFER_SYNTAXES,
    VENDORS,
    SeriesWriter,
    StudyHeader,
    ct_base,
    ds_text,
    pet_base,
    tracer_code,
)
from dicom_node.synth.imaging import Grid, axial_grid, ct_slice, pet_fwhm, pet_suv_volume
from dicom_node.synth.phantom import SITE_FOCI, Lesion, Phantom, Variations, build_phantom

log = logging.getLogger(__name__)

MIN_EXTENT_MM = 150.0
PET_INT16_MAX = 32767


@dataclass
class SynthOptions:
    """What to generate; the same options (and seed) always give the same bytes and UIDs.

    UIDs derive from all options, so two variants of one seed never collide; patient ID, accession, anatomy
    and timing derive from the seed alone. `ct_fov_mm`/`pet_fov_mm` set the in-plane fields of view.
    """

    seed: int = 0
    recurrence: bool = True
    prostatectomy: bool = False
    psa: float | None = 3.2
    ct_matrix: int = 512
    pet_matrix: int = 200
    extent_mm: float = 600.0
    ct_slice_mm: float = 3.0
    pet_slice_mm: float = 4.0
    ct_fov_mm: float = 500.0
    pet_fov_mm: float = 600.0
    vendor: str = "siemens"
    transfer_syntax: str = "explicit"
    tracer: str = "PSMA-1007"
    nodal_lesions: int = 0
    extra_foci: int = 0
    near_bladder_focus: bool = False
    near_bladder_gap_mm: float = 8.0
    """Gap between the near-bladder focus and the bladder wall; 0 makes it touch."""
    site_foci: tuple[str, ...] = ()
    """Foci at named sites: "pubic_bone", "rectal_wall", "seminal_vesicle" (phantom.SITE_FOCI)."""
    bladder_suv: float | None = None
    """Urine SUV instead of the drawn one (e.g. 30 for a hot bladder)."""
    spleen_suv: float | None = None
    """Spleen SUV instead of the drawn one (e.g. above the parotid glands)."""
    tracer_as_code: bool = False
    """Name the tracer only by its Radiopharmaceutical Code Sequence (CID 4021), not as text."""
    patient_id: str | None = None
    accession: str | None = None
    study_uid: str | None = None
    write_clinical_history: bool = True

    def validate(self) -> None:
        if self.vendor not in VENDORS:
            raise ValueError(f"vendor {self.vendor!r} unknown; choose one of {sorted(VENDORS)}")
        if self.transfer_syntax not in TRANSFER_SYNTAXES:
            raise ValueError(f"transfer syntax {self.transfer_syntax!r} unknown; choose one of "
                             f"{sorted(TRANSFER_SYNTAXES)}")
        if self.extent_mm < MIN_EXTENT_MM:
            raise ValueError(f"extent_mm {self.extent_mm} too small: at least {MIN_EXTENT_MM} mm "
                             "covers the pelvis")
        for name in ("ct_matrix", "pet_matrix"):
            if not 16 <= getattr(self, name) <= 1024:
                raise ValueError(f"{name} must be between 16 and 1024")
        for name in ("ct_slice_mm", "pet_slice_mm", "ct_fov_mm", "pet_fov_mm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.nodal_lesions < 0:
            raise ValueError("nodal_lesions must be >= 0")
        if not 0 <= self.extra_foci <= 5:
            raise ValueError("extra_foci must be between 0 and 5")
        if self.psa is not None and self.psa < 0:
            raise ValueError("psa must be >= 0 ng/ml")
        if not self.tracer.strip():
            raise ValueError("tracer must not be empty")
        unknown = [site for site in self.site_foci if site not in SITE_FOCI]
        if unknown:
            raise ValueError(f"site_foci {unknown} unknown; choose from {', '.join(SITE_FOCI)}")
        if self.near_bladder_gap_mm < 0:
            raise ValueError("near_bladder_gap_mm must be >= 0")
        for name in ("bladder_suv", "spleen_suv"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive")
        if self.tracer_as_code and tracer_code(self.tracer) is None:
            raise ValueError(f"tracer {self.tracer!r} has no code the generator knows, so it cannot be written "
                             "as a code only")


@dataclass
class GroundTruth:
    """What the study contains, in patient LPS mm; `ct_shape`/`pet_shape` are [columns, rows, slices]."""

    study_uid: str
    pet_series_uid: str
    ct_series_uid: str
    frame_of_reference_uid: str
    accession_number: str
    patient_id: str
    patient_name: str
    prostate_centroid_lps: list[float] | None
    prostate_bed_centroid_lps: list[float] | None
    bladder_centroid_lps: list[float]
    lesion_center_lps: list[float] | None
    lesion_suv_max: float | None
    lesion_target_suv_max: float | None
    lesion_radius_mm: float | None
    nodal_lesions: list[dict[str, Any]]
    psa: float | None
    prostatectomy: bool
    recurrence: bool
    suv_factor: float
    patient_weight_kg: float
    injected_dose_bq: float
    half_life_s: float
    injection_datetime: str
    scan_start_datetime: str
    tracer: str
    vendor: str
    transfer_syntax: str
    units: str
    philips_suv_scale_factor: float | None
    philips_activity_scale_factor: float | None
    ct_shape: list[int]
    pet_shape: list[int]
    ct_spacing_mm: list[float]
    pet_spacing_mm: list[float]
    z_range_mm: list[float]
    pet_fwhm_mm: float
    n_ct_files: int
    n_pet_files: int
    clinical_history: str | None
    seed: int
    options: dict[str, Any] = field(default_factory=dict)
    foci: list[dict[str, Any]] = field(default_factory=list)
    """Every focus of the analysed region: the recurrence first, then extra, near-bladder and site foci (their
    `kind` names the site: prostate, prostate_bed, near_bladder, pubic_bone, rectal_wall, seminal_vesicle)."""
    organs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Segmentable organs by TotalSegmentator name: SUV, whether in the field of view, their solids."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def load(cls, path: Path) -> GroundTruth:
        data = json.loads(Path(path).read_text())
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def _uid(key: str, *parts: object) -> str:
    return str(generate_uid(entropy_srcs=["psma-node-synth", key, *map(str, parts)]))


def clinical_history(options: SynthOptions) -> str | None:
    if not options.write_clinical_history:
        return None
    status = "status post radical prostatectomy" if options.prostatectomy else "no prostatectomy"
    if options.psa is None:
        return status
    return f"PSA {options.psa:g} ng/ml; {status}"


def _round3(values: tuple[float, float, float] | None) -> list[float] | None:
    return None if values is None else [round(float(v), 3) for v in values]


def _lesion_peak(suv: np.ndarray, grid: Grid, lesion: Lesion) -> float:
    """Highest written SUV among voxels whose centre lies within the lesion (or its nearest voxels)."""
    reach = max(lesion.radius, grid.pixel_mm, grid.slice_mm)
    kz = np.abs(grid.zs - lesion.center[2]) <= reach
    ky = np.abs(grid.ys - lesion.center[1]) <= reach
    kx = np.abs(grid.xs - lesion.center[0]) <= reach
    block = suv[np.ix_(kz, ky, kx)]
    dz = (grid.zs[kz] - lesion.center[2])[:, None, None]
    dy = (grid.ys[ky] - lesion.center[1])[None, :, None]
    dx = (grid.xs[kx] - lesion.center[0])[None, None, :]
    near = dz**2 + dy**2 + dx**2 <= reach**2
    return round(float(block[near].max()), 4)


def _focus_truth(written: np.ndarray, grid: Grid, lesion: Lesion) -> dict[str, Any]:
    return {
        "kind": lesion.kind, "center_lps": _round3(lesion.center), "radius_mm": round(lesion.radius, 3),
        "volume_ml": round(4.0 / 3.0 * np.pi * lesion.radius**3 / 1000.0, 3),
        "target_suv_max": round(lesion.target_suv_max, 3), "suv_max": _lesion_peak(written, grid, lesion),
    }


def _organ_truth(phantom: Phantom, z_range: tuple[float, float]) -> dict[str, dict[str, Any]]:
    """Each organ's tissue SUV, whether any of it lies in the scanned z range, and its solids."""
    out: dict[str, dict[str, Any]] = {}
    for name, solids in phantom.organs.items():
        in_view = any(s.z_range()[1] >= z_range[0] and s.z_range()[0] <= z_range[1] for s in solids)
        out[name] = {
            "suv": round(phantom.organ_suv(name), 4),
            "in_field_of_view": in_view,
            "solids": [
                {"center_lps": _round3(s.center), "radii_mm": [round(float(r), 3) for r in s.radii],
                 "angle_rad": s.angle, "end_lps": _round3(s.end)}
                for s in solids
            ],
        }
    return out


def generate_study(out_dir: Path, options: SynthOptions) -> GroundTruth:
    """Write out_dir/CT/*.dcm, out_dir/PT/*.dcm and out_dir/ground_truth.json; return the ground truth."""
    options.validate()
    out_dir = Path(out_dir)
    key = json.dumps(asdict(options), sort_keys=True)
    seed = int(options.seed)
    rng = np.random.default_rng([seed, 0])
    family = tracer_family(options.tracer)
    variations = Variations(extra_foci=options.extra_foci, near_bladder_focus=options.near_bladder_focus,
                            near_bladder_gap_mm=options.near_bladder_gap_mm, site_foci=tuple(options.site_foci),
                            bladder_suv=options.bladder_suv, spleen_suv=options.spleen_suv)
    phantom = build_phantom(rng, prostatectomy=options.prostatectomy, recurrence=options.recurrence,
                            nodal_lesions=options.nodal_lesions, tracer_family=family,
                            extra=np.random.default_rng([seed, 4]), sites=np.random.default_rng([seed, 5]),
                            variations=variations)
    acquisition = plan_acquisition(rng, seed, options.tracer, options.extent_mm)
    fwhm = pet_fwhm(rng)
    identity = np.random.default_rng([seed, 9])
    patient_id = options.patient_id or f"SYN{int(identity.integers(0, 10**8)):08d}"
    accession = options.accession or f"A{int(identity.integers(0, 10**9)):09d}"
    birth_date = (f"{1940 + int(identity.integers(0, 25))}{int(identity.integers(1, 13)):02d}"
                  f"{int(identity.integers(1, 29)):02d}")
    vendor = VENDORS[options.vendor]
    header = StudyHeader(
        study_uid=options.study_uid or _uid(key, "study"),
        frame_of_reference_uid=_uid(key, "frame-of-reference"),
        ct_series_uid=_uid(key, "ct-series"),
        pet_series_uid=_uid(key, "pet-series"),
        patient_name=f"SYNTH^PSMA{seed}",
        patient_id=patient_id,
        patient_birth_date=birth_date,
        accession_number=accession,
        study_id=str(1 + seed % 100000),
        history=clinical_history(options),
        vendor=vendor,
        tracer=options.tracer,
        acquisition=acquisition,
        transfer_syntax=options.transfer_syntax,
        body_part="PELVIS" if options.extent_mm <= 300 else "WHOLEBODY",
        tracer_as_code=options.tracer_as_code,
    )

    z_low = -min(150.0, 0.4 * options.extent_mm)
    extent = options.extent_mm
    ct_grid = axial_grid(options.ct_matrix, options.ct_fov_mm, z_low, extent, options.ct_slice_mm)
    pet_grid = axial_grid(options.pet_matrix, options.pet_fov_mm, z_low, extent, options.pet_slice_mm)

    # Slices and the PET volume are independent (each seeded on its own), so threads build them side by
    # side: the numpy work and the file writes release the GIL. The bytes do not depend on the order.
    with ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 1))) as pool:
        suv = pool.submit(pet_suv_volume, phantom, pet_grid, seed, fwhm)
        n_ct = _write_ct(out_dir / "CT", header, phantom, ct_grid, seed, key, pool)
        written, philips = _write_pet(out_dir / "PT", header, suv.result(), pet_grid, key, rng)

    recurrence = next((les for les in phantom.lesions if les.kind not in ("nodal", *SITE_FOCI)), None)
    nodes = [
        {"center_lps": _round3(les.center), "radius_mm": round(les.radius, 3),
         "suv_max": _lesion_peak(written, pet_grid, les), "target_suv_max": round(les.target_suv_max, 3),
         "side": "left" if les.center[0] > 0 else "right"}
        for les in phantom.lesions if les.kind == "nodal"
    ]
    truth = GroundTruth(
        study_uid=header.study_uid,
        pet_series_uid=header.pet_series_uid,
        ct_series_uid=header.ct_series_uid,
        frame_of_reference_uid=header.frame_of_reference_uid,
        accession_number=accession,
        patient_id=patient_id,
        patient_name=header.patient_name,
        prostate_centroid_lps=_round3(phantom.prostate_center),
        prostate_bed_centroid_lps=_round3(phantom.prostate_bed_center),
        bladder_centroid_lps=_round3(phantom.bladder_center) or [],
        lesion_center_lps=_round3(recurrence.center) if recurrence else None,
        lesion_suv_max=_lesion_peak(written, pet_grid, recurrence) if recurrence else None,
        lesion_target_suv_max=round(recurrence.target_suv_max, 3) if recurrence else None,
        lesion_radius_mm=round(recurrence.radius, 3) if recurrence else None,
        nodal_lesions=nodes,
        psa=options.psa,
        prostatectomy=options.prostatectomy,
        recurrence=recurrence is not None,
        suv_factor=acquisition.suv_factor,
        patient_weight_kg=acquisition.weight_kg,
        injected_dose_bq=acquisition.dose_bq,
        half_life_s=acquisition.nuclide.half_life_s,
        injection_datetime=acquisition.injection.isoformat(),
        scan_start_datetime=acquisition.scan_start.isoformat(),
        tracer=options.tracer,
        vendor=options.vendor,
        transfer_syntax=options.transfer_syntax,
        units=vendor.pet_units,
        philips_suv_scale_factor=philips[0] if philips else None,
        philips_activity_scale_factor=philips[1] if philips else None,
        ct_shape=[ct_grid.xs.size, ct_grid.ys.size, ct_grid.zs.size],
        pet_shape=[pet_grid.xs.size, pet_grid.ys.size, pet_grid.zs.size],
        ct_spacing_mm=[ct_grid.pixel_mm, ct_grid.pixel_mm, ct_grid.slice_mm],
        pet_spacing_mm=[pet_grid.pixel_mm, pet_grid.pixel_mm, pet_grid.slice_mm],
        z_range_mm=[z_low, z_low + options.extent_mm],
        pet_fwhm_mm=fwhm,
        n_ct_files=n_ct,
        n_pet_files=pet_grid.zs.size,
        clinical_history=header.history,
        seed=seed,
        options=json.loads(json.dumps(asdict(options))),  # tuples as the JSON file holds them: lists
        foci=[_focus_truth(written, pet_grid, les) for les in phantom.lesions if les.kind != "nodal"],
        organs=_organ_truth(phantom, (z_low, z_low + options.extent_mm)),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "ground_truth.json").write_text(truth.to_json())
    log.info("synthetic study written", extra={"out_dir": str(out_dir), "ct_files": n_ct,
                                                "pet_files": pet_grid.zs.size, "seed": seed})
    return truth


def _fresh_folder(folder: Path, prefix: str) -> None:
    """Create the series folder; drop our own files of an earlier run so no stale slice survives."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(f"{prefix}_*.dcm"):
        stale.unlink()


def _write_ct(folder: Path, header: StudyHeader, phantom: Phantom, grid: Grid, seed: int, key: str,
              pool: Executor) -> int:
    _fresh_folder(folder, "CT")
    writer = SeriesWriter(ct_base(header, grid.ys.size, grid.xs.size, grid.pixel_mm, grid.slice_mm),
                          header.transfer_syntax)
    origin_x, origin_y = float(grid.xs[0]), float(grid.ys[0])
    n = grid.zs.size

    def write_slice(k: int) -> None:
        instance = n - k
        z = float(grid.zs[k])
        ds = Dataset()
        ds.SOPInstanceUID = _uid(key, "ct", instance)
        ds.InstanceNumber = instance
        ds.ImagePositionPatient = [ds_text(origin_x), ds_text(origin_y), ds_text(z)]
        ds.SliceLocation = ds_text(z)
        writer.write(folder / f"CT_{instance:04d}.dcm", ds, ct_slice(phantom, grid, k, seed))

    for done in [pool.submit(write_slice, k) for k in range(n - 1, -1, -1)]:
        done.result()  # re-raises a slice's error
    return n


def _write_pet(folder: Path, header: StudyHeader, suv: np.ndarray, grid: Grid, key: str,
               rng: np.random.Generator) -> tuple[np.ndarray, tuple[float, float] | None]:
    """Write the PET slices; return the SUV the headers actually encode, and Philips' scale factors."""
    _fresh_folder(folder, "PT")
    acq = header.acquisition
    factor = acq.suv_factor
    philips: tuple[float, float] | None = None
    to_stored_units = 1.0 / factor
    if header.vendor.pet_units == "CNTS":
        activity_scale = float(ds_text(round(float(rng.uniform(1.5, 1.7)), 6)))
        philips = (float(ds_text(factor * activity_scale)), activity_scale)
        to_stored_units = 1.0 / philips[0]
    n = grid.zs.size
    base = pet_base(header, grid.ys.size, grid.xs.size, grid.pixel_mm, grid.slice_mm, n, philips)
    writer = SeriesWriter(base, header.transfer_syntax)
    origin_x, origin_y = float(grid.xs[0]), float(grid.ys[0])
    written = np.empty_like(suv)
    bed_length = (grid.zs[-1] - grid.zs[0] + grid.slice_mm) / acq.n_beds
    voxel_ml = grid.pixel_mm * grid.pixel_mm * grid.slice_mm / 1000.0
    for k in range(n - 1, -1, -1):
        instance = n - k
        z = float(grid.zs[k])
        bed = min(acq.n_beds - 1, int((z - grid.zs[0] + grid.slice_mm / 2) // bed_length))
        values = suv[k].astype(np.float64) * to_stored_units
        peak = float(values.max())
        slope = float(ds_text(peak / PET_INT16_MAX)) if peak > 0 else 1.0
        stored = np.clip(np.rint(values / slope), 0, PET_INT16_MAX).astype(np.int16)
        written[k] = stored.astype(np.float64) * slope / to_stored_units
        start = acq.bed_start(bed)
        ds = Dataset()
        ds.SOPInstanceUID = _uid(key, "pet", instance)
        ds.InstanceNumber = instance
        ds.ImageIndex = instance
        ds.ImagePositionPatient = [ds_text(origin_x), ds_text(origin_y), ds_text(z)]
        ds.SliceLocation = ds_text(z)
        ds.AcquisitionDate = start.strftime("%Y%m%d")
        ds.AcquisitionTime = start.strftime("%H%M%S")
        ds.FrameReferenceTime = ds_text(round(acq.frame_reference_ms(bed), 3))
        ds.DecayFactor = ds_text(round(acq.decay_factor(bed), 6))
        ds.RescaleSlope = ds_text(slope)
        bq = float(suv[k].sum(dtype=np.float64)) / factor * voxel_ml
        ds.PrimaryPromptsCountsAccumulated = int(bq * acq.bed_seconds * 0.01)
        writer.write(folder / f"PT_{instance:04d}.dcm", ds, stored)
    return written, philips

