"""Same options and seed give the same bytes and UIDs; another seed gives another patient."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pydicom

from dicom_node.synth import SynthOptions, generate_study
from tests.support.dicom import SMALL


def _fingerprint(folder: Path) -> list[tuple[str, str, str]]:
    rows = []
    for path in sorted(folder.glob("*/*.dcm")):
        ds = pydicom.dcmread(path)
        rows.append((path.name, ds.SOPInstanceUID, hashlib.sha256(ds.PixelData).hexdigest()))
    return rows


def test_same_seed_gives_identical_uids_and_pixels(tmp_path: Path) -> None:
    options = SynthOptions(seed=7, nodal_lesions=1, **SMALL)  # type: ignore[arg-type]
    first = generate_study(tmp_path / "a", options)
    second = generate_study(tmp_path / "b", options)
    assert first == second
    assert _fingerprint(tmp_path / "a") == _fingerprint(tmp_path / "b")
    files_a = sorted((tmp_path / "a").glob("*/*.dcm"))
    files_b = sorted((tmp_path / "b").glob("*/*.dcm"))
    assert [p.read_bytes() for p in files_a] == [p.read_bytes() for p in files_b]


def test_other_seed_gives_other_study_and_geometry(tmp_path: Path) -> None:
    a = generate_study(tmp_path / "a", SynthOptions(seed=1, **SMALL))  # type: ignore[arg-type]
    b = generate_study(tmp_path / "b", SynthOptions(seed=2, **SMALL))  # type: ignore[arg-type]
    assert a.study_uid != b.study_uid and a.patient_id != b.patient_id
    assert a.prostate_centroid_lps != b.prostate_centroid_lps
    assert a.lesion_target_suv_max != b.lesion_target_suv_max


def test_regenerating_into_the_same_folder_leaves_no_stale_slices(tmp_path: Path) -> None:
    generate_study(tmp_path, SynthOptions(**{**SMALL, "extent_mm": 300.0}))  # type: ignore[arg-type]
    truth = generate_study(tmp_path, SynthOptions(**SMALL))  # type: ignore[arg-type]
    assert len(list((tmp_path / "CT").glob("*.dcm"))) == truth.n_ct_files
    assert len(list((tmp_path / "PT").glob("*.dcm"))) == truth.n_pet_files
