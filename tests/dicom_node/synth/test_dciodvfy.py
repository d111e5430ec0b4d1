"""Generated CT and PET objects pass dicom3tools' IOD verifier without a single error, for every vendor."""

from __future__ import annotations

import subprocess

import pytest

from tests.support.dicom import StudyMaker
from tests.support.tools import require_tool


@pytest.mark.parametrize("vendor", ["siemens", "ge", "philips"])
@pytest.mark.parametrize("transfer_syntax", ["explicit", "implicit"])
def test_ct_and_pet_verify_without_errors(small_study: StudyMaker,
                                          vendor: str, transfer_syntax: str) -> None:
    dciodvfy = require_tool("dciodvfy")
    folder, _ = small_study(vendor=vendor, transfer_syntax=transfer_syntax, nodal_lesions=1)
    files = [sorted((folder / modality).glob("*.dcm")) for modality in ("CT", "PT")]
    for path in [series[i] for series in files for i in (0, len(series) // 2, -1)]:
        result = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60)
        output = result.stdout + result.stderr
        iod = "CTImage" if path.parent.name == "CT" else "PETImage"
        assert iod in output, output
        errors = [line for line in output.splitlines() if line.startswith("Error")]
        assert errors == [], f"{path.name}: {errors}"


@pytest.mark.parametrize("transfer_syntax", ["jpeg2000", "rle"])
def test_compressed_objects_verify_without_errors(small_study: StudyMaker,
                                                  transfer_syntax: str) -> None:
    dciodvfy = require_tool("dciodvfy")
    folder, _ = small_study(transfer_syntax=transfer_syntax)
    for path in (sorted((folder / "CT").glob("*.dcm"))[5], sorted((folder / "PT").glob("*.dcm"))[5]):
        result = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60)
        errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]
        assert errors == [], f"{path.name}: {errors}"
