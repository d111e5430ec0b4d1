"""Every transfer syntax decodes (pydicom + pylibjpeg) to exactly the pixels of the uncompressed study."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicom_node.synth.dicom_writer import TRANSFER_SYNTAXES
from tests.support.dicom import StudyMaker


def _pixels(folder: Path, modality: str) -> tuple[list[str], list[np.ndarray]]:
    datasets = [pydicom.dcmread(p) for p in sorted((folder / modality).glob("*.dcm"))]
    return [str(ds.file_meta.TransferSyntaxUID) for ds in datasets], [ds.pixel_array for ds in datasets]


@pytest.mark.parametrize("transfer_syntax", ["implicit", "jpeg2000", "rle"])
def test_transfer_syntax_decodes_to_same_pixels(small_study: StudyMaker,
                                                transfer_syntax: str) -> None:
    reference, _ = small_study()
    folder, truth = small_study(transfer_syntax=transfer_syntax)
    assert truth.transfer_syntax == transfer_syntax
    for modality in ("CT", "PT"):
        syntaxes, pixels = _pixels(folder, modality)
        assert set(syntaxes) == {TRANSFER_SYNTAXES[transfer_syntax]}
        _, expected = _pixels(reference, modality)
        assert len(pixels) == len(expected)
        for got, want in zip(pixels, expected):
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)


def test_compressed_files_are_smaller(small_study: StudyMaker) -> None:
    plain, _ = small_study()
    for syntax in ("jpeg2000", "rle"):
        folder, _ = small_study(transfer_syntax=syntax)
        size = sum(p.stat().st_size for p in folder.glob("CT/*.dcm"))
        assert size < sum(p.stat().st_size for p in plain.glob("CT/*.dcm"))
