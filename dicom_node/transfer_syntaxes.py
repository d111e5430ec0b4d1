"""Which transfer syntaxes the node accepts, which it prefers, and when an image counts as lossy-compressed.

A PACS sends what it holds, and many hold PET and CT compressed, some of it lossy: refusing a syntax makes
the study vanish with only a line in the PACS's log, so every syntax such an archive uses is negotiated and
the instances are stored as they arrive. What may not be analysed is decided later, from content, where the
reason reaches the study's timeline and the audit trail: a lossy-compressed PET is refused before analysis
(SUV measured on lossy pixels is not the scanner's), a lossy-compressed CT is analysed and the result says so
(it only places the analysed region and the organs).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLossless,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)


@dataclass(frozen=True)
class Syntax:
    """One accepted transfer syntax: its UID, whether it may lose information, and where it is held."""

    uid: UID
    lossy: bool
    note: str


# pynetdicom answers each proposed presentation context with the first of these the sender proposes (the
# acceptor's order wins). Lossless compressions first: a sender proposing one holds its data that way (dcmtk
# storescu proposes a compressed file's syntax together with the uncompressed ones in one context and cannot
# transcode), and storing as sent is cheapest. Lossy ones last: a sender that holds uncompressed pixels and
# offers a lossy syntax as well must not be asked to compress them lossily for us.
ACCEPTED: tuple[Syntax, ...] = (
    Syntax(JPEG2000Lossless, False, "JPEG 2000 reversible; common in archives"),
    Syntax(JPEGLSLossless, False, "JPEG-LS lossless"),
    Syntax(JPEGLosslessSV1, False, "JPEG lossless, first-order prediction (process 14, SV1); the DICOM "
                                   "default lossless JPEG"),
    Syntax(JPEGLossless, False, "JPEG lossless (process 14), any predictor"),
    Syntax(RLELossless, False, "RLE lossless"),
    Syntax(DeflatedExplicitVRLittleEndian, False, "deflated explicit VR little endian (the data set zipped)"),
    Syntax(ExplicitVRLittleEndian, False, "uncompressed"),
    Syntax(ImplicitVRLittleEndian, False, "uncompressed; the DICOM default every peer supports"),
    Syntax(JPEG2000, True, "JPEG 2000 that may be lossy (irreversible wavelet or truncated code stream); "
                           "lossless only when the instance says Lossy Image Compression 00"),
    Syntax(JPEGLSNearLossless, True, "JPEG-LS near-lossless: each pixel within NEAR of the original"),
    Syntax(JPEGExtended12Bit, True, "JPEG extended (process 2 and 4): lossy DCT, 8 or 12 bit"),
    Syntax(JPEGBaseline8Bit, True, "JPEG baseline (process 1): lossy DCT, 8 bit only; a CT or PET slice in "
                                   "it is refused (A900: their IODs need 16 bit), other classes are stored"),
)
TRANSFER_SYNTAXES: list[str] = [syntax.uid for syntax in ACCEPTED]
"""UIDs in the order the node prefers them."""
LOSSY_TRANSFER_SYNTAXES: frozenset[str] = frozenset(syntax.uid for syntax in ACCEPTED if syntax.lossy)

LOSSY_KEYWORD = "LossyImageCompression"
"""(0028,2110): "01" once an image has been lossy-compressed, at any time before (PS3.3 C.7.6.1.1.5)."""


def lossy_reason(transfer_syntax: str, header: Mapping[str, Any]) -> str | None:
    """Why an instance's pixels may differ from what the scanner reconstructed, or None.

    Lossy when its Lossy Image Compression is "01" (compressed lossily before, even if it travels
    uncompressed now), or when it travels in a syntax that may lose information, unless the instance
    states Lossy Image Compression "00" (a JPEG 2000 code stream can be reversible).
    """
    flag = str(header.get(LOSSY_KEYWORD) or "").strip()
    if flag == "01":
        return "Lossy Image Compression (0028,2110) is 01"
    if transfer_syntax in LOSSY_TRANSFER_SYNTAXES and flag != "00":
        return f"transfer syntax {UID(transfer_syntax).name} ({transfer_syntax})"
    return None


def reference_lines() -> list[str]:
    """The accepted syntaxes and the lossy rule as Markdown, for the configuration reference."""
    lines = [
        "| order | transfer syntax | UID | lossy | note |",
        "|---|---|---|---|---|",
    ]
    for order, syntax in enumerate(ACCEPTED, 1):
        lines.append(f"| {order} | {syntax.uid.name} | `{syntax.uid}` | {'yes' if syntax.lossy else 'no'} "
                     f"| {syntax.note} |")
    return lines
