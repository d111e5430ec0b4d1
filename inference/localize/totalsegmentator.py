"""The published centre: TotalSegmentator's prostate mask, else its urinary bladder mask.

TotalSegmentator runs in a subprocess because its Python API calls torch.set_num_threads(1) for the whole
process; its weights cannot be downloaded on air-gapped hospital machines, so their absence is reported
with the way to install them instead of letting it try the network.
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

from inference.localize import LocalisationError
from inference.result import Localisation
from inference.volume import Series, VolumeError

log = logging.getLogger(__name__)

ROIS = ("prostate", "urinary_bladder")
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

    def locate(self, ct: Series, pet: Series | None = None) -> Localisation:
        executable = self._executable()
        with tempfile.TemporaryDirectory(prefix="totalseg-") as work:
            nifti = Path(work) / "ct.nii.gz"
            _write_nifti(ct, nifti)
            out_dir = Path(work) / "masks"
            argv = [executable, "-i", str(nifti), "-o", str(out_dir), "--roi_subset", *ROIS]
            if self.fast:
                argv.append("--fast")
            env = dict(os.environ, TOTALSEG_HOME_DIR=str(self.home))
            log.info("running TotalSegmentator", extra={"argv": argv[1:], "home": str(self.home)})
            try:
                done = subprocess.run(
                    argv, env=env, capture_output=True, text=True, timeout=self.timeout_seconds, check=False
                )
            except subprocess.TimeoutExpired as exc:
                raise LocalisationError(f"TotalSegmentator took longer than {self.timeout_seconds:g} s") from exc
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
                raise LocalisationError(f"TotalSegmentator failed (exit {done.returncode}): {' | '.join(tail)}")
            return centre_from_masks(out_dir)


def _write_nifti(ct: Series, path: Path) -> None:
    """The CT as dcm2niix would write it (same layout, RAS affine), int16 when the rescale allows."""
    try:
        volume = ct.read(dtype=np.int16)
    except VolumeError:
        volume = ct.read()
    nib.save(nib.Nifti1Image(volume.array, volume.affine_ras), str(path))
