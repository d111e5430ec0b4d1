"""The series writer's files are byte for byte what pydicom's `dcmwrite` writes for the same dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

from dicom_node.synth.acquisition import plan_acquisition
from dicom_node.synth.dicom_writer import (
    IMPLEMENTATION_VERSION_NAME,
    TRANSFER_SYNTAXES,
    VENDORS,
    SeriesWriter,
    StudyHeader,
    ct_base,
    pet_base,
)


def _header(vendor: str, transfer_syntax: str) -> StudyHeader:
    return StudyHeader(
        study_uid="1.2.826.0.1.3680043.8.498.1",  # odd length: padded with NUL
        frame_of_reference_uid="1.2.826.0.1.3680043.8.498.22",
        ct_series_uid="1.2.826.0.1.3680043.8.498.333",
        pet_series_uid="1.2.826.0.1.3680043.8.498.4444",
        patient_name="SYNTH^PSMA7",
        patient_id="SYN0000007",
        patient_birth_date="19500101",
        accession_number="A123",
        study_id="8",
        history="PSA 3.2 ng/ml; no prostatectomy",  # odd length: padded with a space
        vendor=VENDORS[vendor],
        tracer="PSMA-1007",
        acquisition=plan_acquisition(np.random.default_rng(7), 7, "PSMA-1007", 600.0),
        transfer_syntax=transfer_syntax,
        body_part="WHOLEBODY",
    )


def _pydicom_bytes(
    base: Dataset, own: Dataset, pixels: np.ndarray, transfer_syntax: str, path: Path
) -> bytes:
    ds = Dataset()
    ds.update(base)
    ds.update(own)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    meta.TransferSyntaxUID = TRANSFER_SYNTAXES[transfer_syntax]
    ds.file_meta = meta
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OW"
    ds.save_as(path, enforce_file_format=True)
    return path.read_bytes()


@pytest.mark.parametrize("transfer_syntax", ["explicit", "implicit"])
@pytest.mark.parametrize("vendor", sorted(VENDORS))
def test_series_writer_matches_pydicom_byte_for_byte(
    tmp_path: Path, vendor: str, transfer_syntax: str
) -> None:
    header = _header(vendor, transfer_syntax)
    rng = np.random.default_rng(1)
    philips = (0.000123456, 1.6) if vendor == "philips" else None
    cases = [
        (ct_base(header, 24, 32, 1.5625, 3.0), rng.integers(0, 4095, (24, 32)).astype(np.uint16)),
        (pet_base(header, 16, 16, 4.0, 4.0, 9, philips), rng.integers(0, 32767, (16, 16)).astype(np.int16)),
    ]
    for n, (base, pixels) in enumerate(cases):
        own = Dataset()
        own.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.5{n}"
        own.InstanceNumber = 3
        own.ImagePositionPatient = ["-249.51", "-249.51", "-147"]
        own.SliceLocation = "-147"
        if base.Modality == "PT":
            own.ImageIndex = 3
            own.AcquisitionDate = "20240102"
            own.RescaleSlope = "0.00123"
            own.PrimaryPromptsCountsAccumulated = 474161
        ours = tmp_path / f"ours{n}.dcm"
        SeriesWriter(base, transfer_syntax).write(ours, own, pixels)
        reference = _pydicom_bytes(base, own, pixels, transfer_syntax, tmp_path / f"ref{n}.dcm")
        assert ours.read_bytes() == reference


def test_a_slice_may_not_repeat_a_shared_element(tmp_path: Path) -> None:
    base = ct_base(_header("siemens", "explicit"), 4, 4, 1.0, 1.0)
    own = Dataset()
    own.SOPInstanceUID = "1.2.3"
    own.Rows = 8
    with pytest.raises(ValueError, match="must not repeat"):
        SeriesWriter(base, "explicit").write(tmp_path / "x.dcm", own, np.zeros((4, 4), np.uint16))
