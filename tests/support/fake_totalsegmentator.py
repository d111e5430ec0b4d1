"""A stand-in TotalSegmentator executable that draws masks from a synthetic study's ground truth.

The node's TotalSegmentator localiser writes the CT as NIfTI, runs the executable and reads the masks it
writes; with this stand-in that whole path runs for real, only the segmentation itself is replaced: each
requested structure is rasterised from the generator's ground truth (`ground_truth.json`, key `organs`:
ellipsoids and elliptic tubes in LPS mm) onto the exact grid of the NIfTI it receives. A structure the
study does not contain (a prostate after prostatectomy, organs beyond the scanned range) gives an empty
mask, as TotalSegmentator does.

Use in a test::

    from tests.support.fake_totalsegmentator import install_fake_totalsegmentator
    fake = install_fake_totalsegmentator(tmp_path / "totalseg", study_root / "ground_truth.json")
    options = LocalizerOptions(kind="totalsegmentator", totalsegmentator_command=str(fake.executable),
                               totalsegmentator_home=fake.home)

One stand-in can serve several studies (a node receiving a table of them): pass a list of ground-truth
files; each call then picks the study whose CT it was given, recognised by the CT's voxel count and the sum
of its Hounsfield units (read from the study's CT files at install time).

`head_task=False` leaves out the `head_glands_cavities` weights, so the localiser reports the parotid
glands as not installed. Every call is appended to `fake.calls` (JSON lines: argv and TOTALSEG_HOME_DIR).
"""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom

REPO_ROOT = Path(__file__).resolve().parents[2]
TOTAL_WEIGHTS = ("Dataset291_TotalSegmentator_part1_organs_1559subj",
                 "Dataset292_TotalSegmentator_part2_vertebrae_1532subj",
                 "Dataset293_TotalSegmentator_part3_cardiac_1559subj",
                 "Dataset294_TotalSegmentator_part4_muscles_1559subj",
                 "Dataset298_TotalSegmentator_total_6mm_1559subj")
HEAD_WEIGHTS = "Dataset775_head_glands_cavities_492subj"
HEAD_STRUCTURES = ("parotid_gland_left", "parotid_gland_right")

WRAPPER = """#!{python}
import sys
sys.path.insert(0, {root!r})
from tests.support.fake_totalsegmentator import main
sys.exit(main(sys.argv[1:], {truth!r}, {calls!r}))
"""


@dataclass(frozen=True)
class FakeTotalSegmentator:
    executable: Path
    home: Path
    calls: Path

    def recorded(self) -> list[dict[str, Any]]:
        """The calls made so far (argv without the program name, and the home directory passed)."""
        if not self.calls.exists():
            return []
        return [json.loads(line) for line in self.calls.read_text().splitlines() if line]


def ct_fingerprint(ct_folder: Path) -> list[int]:
    """Voxel count and sum of Hounsfield units of a CT series: what tells the stand-in's studies apart."""
    voxels = total = 0
    for path in sorted(ct_folder.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        voxels += hu.size
        total += int(np.rint(hu).astype(np.int64).sum())
    return [voxels, total]


def install_fake_totalsegmentator(
    folder: Path, truth: Path | Sequence[Path], *, head_task: bool = True
) -> FakeTotalSegmentator:
    """Write the executable wrapper and a TotalSegmentator home whose weights folders look installed.

    `truth` is one study's ground_truth.json, or several (the CT folder beside each identifies its calls).
    """
    folder.mkdir(parents=True, exist_ok=True)
    executable = folder / "bin" / "TotalSegmentator"
    executable.parent.mkdir(exist_ok=True)
    calls = folder / "calls.jsonl"
    truths = [Path(truth)] if isinstance(truth, (str, Path)) else [Path(t) for t in truth]
    index = folder / "studies.json"
    index.write_text(json.dumps([
        {"truth": str(t), "fingerprint": ct_fingerprint(t.parent / "CT") if len(truths) > 1 else None}
        for t in truths
    ]))
    executable.write_text(WRAPPER.format(python=sys.executable, root=str(REPO_ROOT), truth=str(index),
                                         calls=str(calls)))
    executable.chmod(executable.stat().st_mode | stat.S_IXUSR)
    home = folder / "home"
    for weights in TOTAL_WEIGHTS:
        (home / "nnunet" / "results" / weights).mkdir(parents=True, exist_ok=True)
    if head_task:
        (home / "nnunet" / "results" / HEAD_WEIGHTS).mkdir(parents=True, exist_ok=True)
    return FakeTotalSegmentator(executable, home, calls)


def _inside(solid: dict[str, Any], lps: np.ndarray) -> np.ndarray:
    """Whether each LPS point lies in the solid (the phantom's own ellipsoid / elliptic-tube rule)."""
    center = np.array(solid["center_lps"])
    radii = np.array(solid["radii_mm"])
    angle = float(solid.get("angle_rad") or 0.0)
    x, y, z = lps[:, 0], lps[:, 1], lps[:, 2]
    if solid.get("end_lps") is None:
        scale2 = 1.0 - ((z - center[2]) / radii[2]) ** 2
        cx = np.full_like(z, center[0])
        cy = np.full_like(z, center[1])
    else:
        end = np.array(solid["end_lps"])
        dz = end[2] - center[2]
        t = (z - center[2]) / dz if dz else np.zeros_like(z)
        scale2 = np.where((t >= 0) & (t <= 1), 1.0, -1.0)
        cx = center[0] + t * (end[0] - center[0])
        cy = center[1] + t * (end[1] - center[1])
    dx, dy = x - cx, y - cy
    cos, sin = np.cos(angle), np.sin(angle)
    u = (dx * cos + dy * sin) / radii[0]
    v = (dy * cos - dx * sin) / radii[1]
    return (scale2 > 0) & (u * u + v * v <= np.maximum(scale2, 0.0))


def _reach(solid: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """An LPS box around the solid."""
    center = np.array(solid["center_lps"])
    radii = np.array(solid["radii_mm"], dtype=float)
    pad = float(max(radii[:2]))
    if solid.get("end_lps") is None:
        return center - max(pad, radii[2]), center + max(pad, radii[2])
    end = np.array(solid["end_lps"])
    return np.minimum(center, end) - pad, np.maximum(center, end) + pad


def rasterise(
    solids: list[dict[str, Any]], shape: tuple[int, int, int], affine_ras: np.ndarray
) -> np.ndarray:
    """The union of the solids on a NIfTI grid (voxel centres, RAS affine)."""
    mask = np.zeros(shape, dtype=np.uint8)
    to_index = np.linalg.inv(affine_ras)
    for solid in solids:
        low, high = _reach(solid)
        corners = np.array(
            [[a, b, c] for a in (low[0], high[0]) for b in (low[1], high[1]) for c in (low[2], high[2])]
        )
        ras = np.c_[-corners[:, 0], -corners[:, 1], corners[:, 2], np.ones(8)]
        index = (to_index @ ras.T).T[:, :3]
        lo = np.maximum(np.floor(index.min(axis=0)).astype(int), 0)
        hi = np.minimum(np.ceil(index.max(axis=0)).astype(int) + 1, np.array(shape))
        if np.any(hi <= lo):
            continue
        grid = np.indices(tuple(hi - lo)).reshape(3, -1).T + lo
        ras_points = (affine_ras[:3, :3] @ grid.T).T + affine_ras[:3, 3]
        lps = ras_points * np.array([-1.0, -1.0, 1.0])
        inside = _inside(solid, lps)
        mask[tuple(grid[inside].T)] = 1
    return mask


def _study_truth(index_path: Path, image: Any) -> Path:
    """The ground truth of the study whose CT this is (the only one, or the one with its fingerprint)."""
    studies = json.loads(index_path.read_text())
    if len(studies) == 1:
        return Path(studies[0]["truth"])
    data = np.rint(image.get_fdata()).astype(np.int64)
    fingerprint = [int(data.size), int(data.sum())]
    for study in studies:
        if study["fingerprint"] == fingerprint:
            return Path(study["truth"])
    raise SystemExit(f"stand-in TotalSegmentator: no study with CT fingerprint {fingerprint}")


def main(argv: list[str], truth_path: str, calls_path: str) -> int:
    """Behave like `TotalSegmentator -i CT.nii.gz -o OUT [--roi_subset ...] [-ta TASK] [--fast]`."""
    with open(calls_path, "a") as calls:
        calls.write(json.dumps({"argv": argv, "home": os.environ.get("TOTALSEG_HOME_DIR")}) + "\n")
    image = nib.load(argv[argv.index("-i") + 1])
    out = Path(argv[argv.index("-o") + 1])
    task = argv[argv.index("-ta") + 1] if "-ta" in argv else "total"
    if task == "head_glands_cavities":
        names: list[str] = list(HEAD_STRUCTURES)
    elif "--roi_subset" in argv:
        start = argv.index("--roi_subset") + 1
        names = []
        for value in argv[start:]:
            if value.startswith("-"):
                break
            names.append(value)
    else:
        print(f"stand-in TotalSegmentator: give --roi_subset or -ta head_glands_cavities (got task {task})",
              file=sys.stderr)
        return 2
    organs = json.loads(_study_truth(Path(truth_path), image).read_text()).get("organs", {})
    out.mkdir(parents=True, exist_ok=True)
    shape = tuple(int(n) for n in image.shape[:3])
    for name in names:
        solids = organs.get(name, {}).get("solids", [])
        mask = rasterise(solids, shape, image.affine)  # type: ignore[arg-type]
        nib.save(nib.Nifti1Image(mask, image.affine), str(out / f"{name}.nii.gz"))
    return 0
