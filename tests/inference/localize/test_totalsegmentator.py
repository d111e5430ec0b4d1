"""The published TotalSegmentator call contract and its mask-to-centre rule, with a fake executable."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from inference.localize import LocalisationError, LocalizerOptions, make_localizer
from inference.localize.anatomical import AnatomicalLocalizer
from inference.localize.totalsegmentator import TotalSegmentatorLocalizer, centre_from_masks
from inference.volume import Series
from tests.inference.localize.dicom_files import axial_affine, write_series

AFFINE_RAS = np.array([[-2.0, 0, 0, 50.0], [0, -2.0, 0, 40.0], [0, 0, 3.0, -100.0], [0, 0, 0, 1]])

FAKE = """#!{python}
import json, os, sys
import nibabel as nib, numpy as np
args = sys.argv[1:]
out = args[args.index("-o") + 1]
image = nib.load(args[args.index("-i") + 1])
json.dump({{"argv": args, "home": os.environ.get("TOTALSEG_HOME_DIR"), "shape": list(image.shape),
           "affine": image.affine.tolist()}}, open({record!r}, "w"))
os.makedirs(out, exist_ok=True)
prostate = np.zeros(image.shape, np.uint8)
bladder = np.zeros(image.shape, np.uint8)
{masks}
nib.save(nib.Nifti1Image(prostate, image.affine), os.path.join(out, "prostate.nii.gz"))
nib.save(nib.Nifti1Image(bladder, image.affine), os.path.join(out, "urinary_bladder.nii.gz"))
sys.exit({exit_code})
"""


def _masks(folder: Path, prostate: tuple | None, bladder: tuple | None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, box in (("prostate", prostate), ("urinary_bladder", bladder)):
        mask = np.zeros((20, 20, 10), np.uint8)
        if box is not None:
            mask[box] = 1
        nib.save(nib.Nifti1Image(mask, AFFINE_RAS), str(folder / f"{name}.nii.gz"))
    return folder


def test_prostate_mask_centre_in_lps(tmp_path: Path) -> None:
    out = _masks(tmp_path, (slice(4, 7), slice(10, 12), slice(2, 4)), (slice(0, 2), slice(0, 2), slice(0, 2)))

    result = centre_from_masks(out)

    ras = AFFINE_RAS @ np.array([5.0, 10.5, 2.5, 1.0])
    assert result.organ == "prostate"
    np.testing.assert_allclose(result.center_lps, [-ras[0], -ras[1], ras[2]])
    assert result.method == "totalsegmentator"


def test_empty_prostate_mask_falls_back_to_bladder(tmp_path: Path) -> None:
    out = _masks(tmp_path, None, (slice(10, 14), slice(2, 4), slice(6, 7)))

    result = centre_from_masks(out)

    ras = AFFINE_RAS @ np.array([11.5, 2.5, 6.0, 1.0])
    assert result.organ == "bladder"
    np.testing.assert_allclose(result.center_lps, [-ras[0], -ras[1], ras[2]])
    assert "prostate mask empty" in result.detail


def test_both_masks_empty_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LocalisationError, match="neither a prostate nor a urinary bladder"):
        centre_from_masks(_masks(tmp_path, None, None))


def _fake(tmp_path: Path, masks: str, exit_code: int = 0) -> tuple[Path, Path, Path]:
    record = tmp_path / "record.json"
    script = tmp_path / "bin" / "FakeTotalSegmentator"
    script.parent.mkdir()
    script.write_text(FAKE.format(python=sys.executable, record=str(record), masks=masks, exit_code=exit_code))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    home = tmp_path / "home"
    (home / "nnunet" / "results").mkdir(parents=True)
    (home / "nnunet" / "results" / "Dataset291_TotalSegmentator_part1_organs_1559subj").mkdir()
    return script, home, record


def _ct(tmp_path: Path) -> Series:
    array = np.full((16, 12, 8), 40.0)
    return Series.scan(write_series(tmp_path / "ct", array, axial_affine((2.0, 2.0, 3.0), (-10.0, -20.0, -30.0)),
                                    intercept=-1024))


@pytest.mark.parametrize("fast", [False, True])
def test_runs_totalsegmentator_in_subprocess_with_published_arguments(tmp_path: Path, fast: bool) -> None:
    script, home, record = _fake(tmp_path, "prostate[3:5, 4:6, 2:4] = 1")
    ct = _ct(tmp_path)
    localizer = make_localizer(
        LocalizerOptions(kind="totalsegmentator", totalsegmentator_command=str(script),
                          totalsegmentator_home=home, totalsegmentator_fast=fast)
    )

    result = localizer.locate(ct)

    call = json.loads(record.read_text())
    assert call["argv"][0] == "-i" and call["argv"][1].endswith("ct.nii.gz")
    assert call["argv"][2] == "-o"
    assert call["argv"][4:7] == ["--roi_subset", "prostate", "urinary_bladder"]
    assert ("--fast" in call["argv"]) == fast
    assert call["home"] == str(home)
    assert call["shape"] == [16, 12, 8]
    np.testing.assert_allclose(call["affine"], ct.read().affine_ras, atol=1e-4)
    expected = ct.read().index_to_lps([3.5, 4.5, 2.5])
    assert result.organ == "prostate"
    np.testing.assert_allclose(result.center_lps, expected, atol=1e-3)


def test_missing_executable_says_how_to_install(tmp_path: Path) -> None:
    localizer = TotalSegmentatorLocalizer(command=str(tmp_path / "nowhere" / "TotalSegmentator"), home=tmp_path)
    with pytest.raises(LocalisationError, match="not found: install it with `pip install TotalSegmentator`"):
        localizer.locate(_ct(tmp_path))


def test_missing_weights_says_where_to_put_them(tmp_path: Path) -> None:
    script, _, _ = _fake(tmp_path, "")
    empty_home = tmp_path / "empty-home"
    localizer = TotalSegmentatorLocalizer(command=str(script), home=empty_home)
    with pytest.raises(LocalisationError, match=f"weights missing in {empty_home}/nnunet/results: .*`total` task"):
        localizer.locate(_ct(tmp_path))


def test_failing_run_is_reported_with_its_exit_code(tmp_path: Path) -> None:
    script, home, _ = _fake(tmp_path, "print('CUDA out of memory', file=sys.stderr)", exit_code=3)
    localizer = TotalSegmentatorLocalizer(command=str(script), home=home)
    with pytest.raises(LocalisationError, match=r"TotalSegmentator failed \(exit 3\): CUDA out of memory"):
        localizer.locate(_ct(tmp_path))


def test_default_settings_give_the_anatomical_localiser() -> None:
    assert isinstance(make_localizer(LocalizerOptions()), AnatomicalLocalizer)
