"""When an instance counts as lossy-compressed: its Lossy Image Compression, else the syntax it arrived in."""

from __future__ import annotations

from dicom_node.transfer_syntaxes import ACCEPTED, TRANSFER_SYNTAXES, lossy_reason

J2K = "1.2.840.10008.1.2.4.91"
EXPLICIT = "1.2.840.10008.1.2.1"


def test_lossy_image_compression_01_is_lossy_in_any_syntax() -> None:
    reason = lossy_reason(EXPLICIT, {"LossyImageCompression": "01"})
    assert reason == "Lossy Image Compression (0028,2110) is 01"


def test_a_lossy_syntax_is_lossy_unless_the_instance_says_00() -> None:
    assert lossy_reason(J2K, {}) == f"transfer syntax JPEG 2000 Image Compression ({J2K})"
    assert lossy_reason(J2K, {"LossyImageCompression": "00"}) is None  # a reversible JPEG 2000 code stream
    assert lossy_reason("1.2.840.10008.1.2.4.90", {}) is None


def test_every_lossless_syntax_is_preferred_to_every_lossy_one() -> None:
    lossy = [syntax.lossy for syntax in ACCEPTED]
    assert lossy == sorted(lossy) and TRANSFER_SYNTAXES[-1] == "1.2.840.10008.1.2.4.50"
