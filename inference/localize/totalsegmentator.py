"""The published centre: TotalSegmentator's prostate mask, else its urinary bladder mask.

TotalSegmentator runs in a subprocess because its Python API calls torch.set_num_threads(1) for the whole
process; its weights cannot be downloaded on air-gapped hospital machines, so their absence is reported
with the way to install them instead of letting it try the network.

The same run supplies the reference organs of the PROMISE V2 miPSMA score (inference/reference_organs.py)
and the masks that name where a focus lies (inference/focus_site.py). `total` is five models; structures
of a part are asked for only when its weights are installed (the `--fast` model holds every class), so a
site with the published run's weights alone keeps working offline:

- part 1, organs (Dataset291, always): prostate, urinary bladder, colon (site: rectum/bowel), spleen, liver;
- part 3, cardiac (Dataset293): the aorta, for the blood pool;
- part 2, vertebrae (Dataset292): T5-T10, which delimit the descending thoracic aorta used as blood pool
  (the abdominal aorta picks up spill-over from the kidneys and para-aortic nodes), and the sacrum (site);
- part 4, muscles and bones (Dataset294): the hip bones (site).

The parotid glands are not part of `total`: TotalSegmentator (2.3 and later) segments them in the separate,
openly licensed `head_glands_cavities` task (weights Dataset775_head_glands_cavities_492subj; outputs
parotid_gland_left/right.nii.gz; `--roi_subset` and `--fast` do not apply to it). That second run happens
only when its weights are installed; otherwise the parotid glands are reported as not assessable.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import cast

import nibabel as nib
import numpy as np
from scipy import ndimage

from inference.localize import LocalisationError
from inference.result import Localisation, OrganMask, ReferenceOrganName
from inference.volume import Series, VolumeError

log = logging.getLogger(__name__)

ROIS = ("prostate", "urinary_bladder", "colon", "spleen", "liver")
"""`total` structures of its organs part (Dataset291): centre, site and two reference organs."""
AORTA_WEIGHTS = "Dataset293_TotalSegmentator_part3_cardiac_1559subj"
"""The aorta is in part 3 of `total` (1.5 mm run)."""
VERTEBRAE_WEIGHTS = "Dataset292_TotalSegmentator_part2_vertebrae_1532subj"
BLOOD_POOL_LEVELS = ("vertebrae_T5", "vertebrae_T6", "vertebrae_T7", "vertebrae_T8", "vertebrae_T9",
                     "vertebrae_T10")
"""The descending thoracic aorta between the top of T5 and the bottom of T10 is the blood-pool VOI: below the
arch, above the diaphragm, away from the kidneys."""
BONES_WEIGHTS = "Dataset294_TotalSegmentator_part4_muscles_1559subj"
SITE_STRUCTURES = ("prostate", "colon", "sacrum", "hip_left", "hip_right")
"""Masks that name where a focus lies (inference/focus_site.py), as far as they were asked for."""
HEAD_TASK = "head_glands_cavities"
HEAD_WEIGHTS = "Dataset775_head_glands_cavities_492subj"
REFERENCE_FILES: dict[ReferenceOrganName, tuple[str, ...]] = {
    "blood pool": ("aorta",),
    "spleen": ("spleen",),
    "liver": ("liver",),
    "parotid glands": ("parotid_gland_left", "parotid_gland_right"),
}
INSTALL_HINT = (
    "install it with `pip install TotalSegmentator` (version 2.x) and put the weights of its `total` task "
    "(Apache-2.0) into {home}/nnunet/results: on a machine with internet run `TotalSegmentator` once (or "
    "`totalseg_download_weights -t total`) and copy that folder, or import a downloaded zip with "
    "`totalseg_import_weights -i <zip>` where available"
)


def mask_centre(mask_path: Path) -> tuple[np.ndarray, int] | None:
    """Mean voxel index of a NIfTI mask mapped to LPS mm with the mask's own affine; None when empty."""
    image = cast(nib.Nifti1Image, nib.load(str(mask_path)))
    voxels = np.argwhere(np.asanyarray(image.dataobj) > 0)
    if voxels.size == 0:
        return None
    ras = image.affine @ np.append(voxels.mean(axis=0), 1.0)
    return np.array([-ras[0], -ras[1], ras[2]]), int(len(voxels))


def centre_from_masks(out_dir: Path) -> Localisation:
    """Prostate mask centre if the mask is non-empty, else the bladder's (the published rule)."""
    counts: dict[str, int] = {}
    for organ, roi in (("prostate", "prostate"), ("bladder", "urinary_bladder")):
        path = out_dir / f"{roi}.nii.gz"
        if not path.exists():
            raise LocalisationError(f"TotalSegmentator wrote no {path.name} in {out_dir}")
        found = mask_centre(path)
        if found is None:
            counts[roi] = 0
            continue
        centre, voxels = found
        detail = f"{roi} mask {voxels} voxels" + ("".join(f"; {k} mask empty" for k in counts))
        return Localisation(
            center_lps=(float(centre[0]), float(centre[1]), float(centre[2])),
            organ=organ,  # type: ignore[arg-type]
            confidence=0.9,
            method="totalsegmentator",
            detail=detail,
        )
    raise LocalisationError("TotalSegmentator found neither a prostate nor a urinary bladder in the CT")


def _flip_lps() -> np.ndarray:
    return np.diag([-1.0, -1.0, 1.0, 1.0])


def _read_mask(path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = cast(nib.Nifti1Image, nib.load(str(path)))
    return np.asanyarray(image.dataobj) > 0, image.affine


def _boxed(organ: str, union: np.ndarray, affine_ras: np.ndarray, source: str) -> OrganMask:
    """The mask cut to its bounding box, with an LPS affine; or an empty-mask note."""
    if not union.any():
        return OrganMask(organ, None, None, source,
                         note="empty mask: the organ is outside the CT field of view or was not found")
    points = np.argwhere(union)
    low, high = points.min(axis=0), points.max(axis=0) + 1
    shift = np.eye(4)
    shift[:3, 3] = low
    box = union[low[0]:high[0], low[1]:high[1], low[2]:high[2]].copy()
    return OrganMask(organ, box, _flip_lps() @ affine_ras @ shift, f"{source} ({int(box.sum())} voxels)")


def organ_mask(organ: str, folder: Path, names: tuple[str, ...], task: str) -> OrganMask:
    """Union of the named masks, cut to its bounding box, with an LPS affine; or why there is none.

    With more than one file (the parotid glands), each file is also kept as a part of its own.
    """
    source = f"TotalSegmentator task {task}, " + " + ".join(f"{n}.nii.gz" for n in names)
    masks: list[tuple[str, np.ndarray]] = []
    affine: np.ndarray | None = None
    for name in names:
        path = folder / f"{name}.nii.gz"
        if not path.exists():
            return OrganMask(organ, None, None, source, note=f"TotalSegmentator wrote no {path.name}")
        data, affine = _read_mask(path)
        masks.append((name, data))
    assert affine is not None
    found = _boxed(organ, np.any([m for _, m in masks], axis=0), affine, source)
    if len(masks) > 1:
        found.parts = [_boxed(name, data, affine, f"TotalSegmentator task {task}, {name}.nii.gz")
                       for name, data in masks]
    return found


def descending_thoracic_aorta(folder: Path) -> OrganMask:
    """The blood-pool VOI: the aorta between the top of T5 and the bottom of T10 (same run), in each axial
    slice only the cross-section closest to the spine, so the ascending aorta and the arch stay out."""
    source = "TotalSegmentator task total, aorta.nii.gz"
    aorta_path = folder / "aorta.nii.gz"
    if not aorta_path.exists():
        return OrganMask("blood pool", None, None, source, note="TotalSegmentator wrote no aorta.nii.gz")
    aorta, affine = _read_mask(aorta_path)
    levels = np.zeros(aorta.shape, dtype=bool)
    for name in BLOOD_POOL_LEVELS:
        path = folder / f"{name}.nii.gz"
        if not path.exists():
            return OrganMask("blood pool", None, None, source,
                             note=f"TotalSegmentator wrote no {path.name}: T5-T10 cannot be delimited")
        levels |= _read_mask(path)[0]
    if not levels.any():
        return OrganMask("blood pool", None, None, source,
                         note="vertebrae T5-T10 not found: the thoracic aorta is outside the CT field of view")
    slice_axis = int(np.argmax(np.abs(affine[2, :3])))
    others = tuple(axis for axis in range(3) if axis != slice_axis)
    covered = np.flatnonzero(levels.any(axis=others))
    segment = np.zeros(aorta.shape, dtype=bool)
    for k in range(int(covered.min()), int(covered.max()) + 1):
        plane = np.take(aorta, k, axis=slice_axis)
        labels, count = ndimage.label(plane)
        if count == 0:
            continue
        index = np.arange(1, count + 1)
        centres = np.array(ndimage.center_of_mass(plane, labels, index)).reshape(-1, 2)
        voxel = np.zeros((count, 3))
        voxel[:, others[0]], voxel[:, others[1]], voxel[:, slice_axis] = centres[:, 0], centres[:, 1], k
        posterior = -(voxel @ affine[1, :3].T + affine[1, 3])  # LPS y = -RAS y: larger is more posterior
        chosen = labels == index[int(np.argmax(posterior))]
        target = [slice(None)] * 3
        target[slice_axis] = slice(k, k + 1)
        segment[tuple(target)] = np.expand_dims(chosen, slice_axis)
    z = [float((affine @ np.array([0.0, 0.0, 0.0, 1.0]) + affine[:, slice_axis] * k)[2])
         for k in (int(covered.min()), int(covered.max()))]
    how = (f"{source}: descending thoracic aorta from the top of T5 to the bottom of T10 (vertebra masks of "
           f"the same run, z {min(z):.0f} to {max(z):.0f} mm), per slice the cross-section nearest the spine")
    if not segment.any():
        return OrganMask("blood pool", None, None, how, note="no aorta between T5 and T10")
    return _boxed("blood pool", segment, affine, how)


class TotalSegmentatorLocalizer:
    """Runs `TotalSegmentator --roi_subset prostate urinary_bladder` on the CT written as NIfTI."""

    def __init__(self, command: str, home: Path, fast: bool = False, timeout_seconds: float = 1800.0) -> None:
        self.command = command
        self.home = Path(home)
        self.fast = fast
        self.timeout_seconds = timeout_seconds

    def _executable(self) -> str:
        executable = shutil.which(self.command)
        if executable is None:
            raise LocalisationError(
                f"TotalSegmentator executable {self.command!r} not found: " + INSTALL_HINT.format(home=self.home)
            )
        results = self.home / "nnunet" / "results"
        if not results.is_dir() or not any(results.iterdir()):
            raise LocalisationError(
                f"TotalSegmentator weights missing in {results}: " + INSTALL_HINT.format(home=self.home)
            )
        return executable

    def _run(self, argv: list[str]) -> str | None:
        """Run one TotalSegmentator call; the failure message, or None when it succeeded."""
        env = dict(os.environ, TOTALSEG_HOME_DIR=str(self.home))
        log.info("running TotalSegmentator", extra={"argv": argv[1:], "home": str(self.home)})
        try:
            done = subprocess.run(
                argv, env=env, capture_output=True, text=True, timeout=self.timeout_seconds, check=False
            )
        except subprocess.TimeoutExpired:
            return f"TotalSegmentator took longer than {self.timeout_seconds:g} s"
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
            return f"TotalSegmentator failed (exit {done.returncode}): {' | '.join(tail)}"
        return None

    def _installed(self, weights: str) -> bool:
        return self.fast or (self.home / "nnunet" / "results" / weights).is_dir()

    def locate(self, ct: Series, pet: Series | None = None) -> Localisation:
        executable = self._executable()
        with tempfile.TemporaryDirectory(prefix="totalseg-") as work:
            nifti = Path(work) / "ct.nii.gz"
            _write_nifti(ct, nifti)
            out_dir = Path(work) / "masks"
            with_aorta, with_vertebrae = self._installed(AORTA_WEIGHTS), self._installed(VERTEBRAE_WEIGHTS)
            with_bones = self._installed(BONES_WEIGHTS)
            rois = [*ROIS, *(["aorta"] if with_aorta else []),
                    *([*BLOOD_POOL_LEVELS, "sacrum"] if with_vertebrae else []),
                    *(["hip_left", "hip_right"] if with_bones else [])]
            argv = [executable, "-i", str(nifti), "-o", str(out_dir), "--roi_subset", *rois]
            if self.fast:
                argv.append("--fast")
            failure = self._run(argv)
            if failure is not None:
                raise LocalisationError(failure)
            localisation = centre_from_masks(out_dir)
            localisation.reference_masks = [
                self._blood_pool(out_dir, with_aorta, with_vertebrae),
                organ_mask("spleen", out_dir, REFERENCE_FILES["spleen"], "total"),
                organ_mask("liver", out_dir, REFERENCE_FILES["liver"], "total"),
                self._parotids(executable, nifti, Path(work) / "head"),
            ]
            localisation.site_masks = [organ_mask(name, out_dir, (name,), "total")
                                       for name in SITE_STRUCTURES if name in rois]
            return localisation

    def _blood_pool(self, out_dir: Path, with_aorta: bool, with_vertebrae: bool) -> OrganMask:
        source = "TotalSegmentator task total, aorta.nii.gz"
        if not with_aorta:
            return OrganMask("blood pool", None, None, source, note=(
                f"the part of the TotalSegmentator total task that segments the aorta (weights "
                f"{AORTA_WEIGHTS}) is not installed"
            ))
        if not with_vertebrae:
            return OrganMask("blood pool", None, None, source, note=(
                f"the descending thoracic aorta (T5-T10) cannot be delimited: the vertebra part of the "
                f"TotalSegmentator total task (weights {VERTEBRAE_WEIGHTS}) is not installed"
            ))
        return descending_thoracic_aorta(out_dir)

    def _parotids(self, executable: str, nifti: Path, out_dir: Path) -> OrganMask:
        """Parotid glands from the `head_glands_cavities` task, when its weights are installed."""
        names = REFERENCE_FILES["parotid glands"]
        source = f"TotalSegmentator task {HEAD_TASK}"
        if not (self.home / "nnunet" / "results" / HEAD_WEIGHTS).is_dir():
            return OrganMask("parotid glands", None, None, source, note=(
                f"the TotalSegmentator {HEAD_TASK} task (weights {HEAD_WEIGHTS}) is not installed"
            ))
        failure = self._run([executable, "-i", str(nifti), "-o", str(out_dir), "-ta", HEAD_TASK])
        if failure is not None:
            return OrganMask("parotid glands", None, None, source, note=failure)
        return organ_mask("parotid glands", out_dir, names, HEAD_TASK)


def _write_nifti(ct: Series, path: Path) -> None:
    """The CT as dcm2niix would write it (same layout, RAS affine), int16 when the rescale allows."""
    try:
        volume = ct.read(dtype=np.int16)
    except VolumeError:
        volume = ct.read()
    nib.save(nib.Nifti1Image(volume.array, volume.affine_ras), str(path))
