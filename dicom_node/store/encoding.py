"""Is a data set encoded as negotiated, and structurally whole, the way other DICOM software reads it?

pydicom reads leniently: explicit VR where implicit was negotiated, unknown VR codes, truncated values and
broken sequence items all load without complaint, and a file stored that way is unreadable for dcmtk and
most viewers. These checks run on the received bytes and the unconverted elements (no value conversion,
no pixel decoding), before anything is stored.
"""

from __future__ import annotations

import struct
from typing import Any

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian
from pydicom.valuerep import VR

from dicom_node.store.file_meta import dataset_start
from dicom_node.store.status import STATUS_CANNOT_UNDERSTAND, STATUS_WRONG_ENCODING, InstanceRefused

UNDEFINED_LENGTH = 0xFFFFFFFF
_VR_NAMES = frozenset(vr.value for vr in VR)
_VR_CODES = frozenset(name.encode("ascii") for name in _VR_NAMES)

def check_structure(ds: Dataset, data: bytes, transfer_syntax: str) -> None:
    """Refuse what pydicom reads quietly but other DICOM software cannot: a value shorter than its declared
    length or a last element header cut in two (a truncated stream); an unknown VR code, which pydicom
    reads with a 2-byte length where dcmtk (and PS3.5 7.1.2) expect a 4-byte one; broken sequence items.
    One pass over the top-level elements, unconverted."""
    explicit = transfer_syntax != ImplicitVRLittleEndian
    # A deflated data set's element offsets are those of the inflated stream, not of `data`.
    offsets = transfer_syntax != DeflatedExplicitVRLittleEndian
    end: int | None = 0
    last = None
    for tag, raw in ds.items():
        if not isinstance(raw, RawDataElement):  # an undefined-length sequence, parsed (leniently) already
            end = None
            if offsets and raw.VR == "SQ" and raw.is_undefined_length:
                _check_sequence(data, tag, getattr(raw, "file_tell", None), None, explicit)
            continue
        if explicit and raw.VR not in _VR_NAMES:
            found = f"({raw.VR!r})" if raw.VR else "(not explicit VR data)"
            raise InstanceRefused(STATUS_CANNOT_UNDERSTAND, f"element {tag} has no valid VR {found}")
        if raw.length == UNDEFINED_LENGTH or raw.value_tell is None:
            end = None  # encapsulated pixel data: its end is not known here
            continue
        end, last = raw.value_tell + raw.length, tag
        if isinstance(raw.value, bytes) and len(raw.value) < raw.length:
            raise InstanceRefused(
                STATUS_CANNOT_UNDERSTAND,
                f"dataset truncated: element {tag} declares {raw.length} bytes, {len(raw.value)} present",
            )
        if offsets and raw.VR == "SQ":
            _check_sequence(data, tag, raw.value_tell, end, explicit)
    if offsets and end and last is not None and 0 < len(data) - end < 8:
        raise InstanceRefused(
            STATUS_CANNOT_UNDERSTAND,
            f"dataset truncated: {len(data) - end} bytes of a cut element header after element {last}",
        )


class _Malformed(Exception):
    """A sequence whose structure other DICOM software cannot parse."""


_ITEM, _ITEM_END, _SEQUENCE_END = (0xFFFE, 0xE000), (0xFFFE, 0xE00D), (0xFFFE, 0xE0DD)
_LONG_LENGTH_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR",
                              b"UT", b"UV"})
_MAX_NESTING = 16


def _walk_items(buf: bytes, pos: int, limit: int | None, explicit: bool, depth: int) -> int:
    """Check the items of a sequence starting at `pos` (up to `limit`, or to its delimiter when its
    length is undefined); returns the position after it."""
    if depth > _MAX_NESTING:
        raise _Malformed(f"sequences nested deeper than {_MAX_NESTING}")
    while limit is None or pos < limit:
        if pos + 8 > len(buf):
            raise _Malformed("a sequence runs past the end of the data set")
        group, element, length = struct.unpack_from("<HHL", buf, pos)
        pos += 8
        if (group, element) == _SEQUENCE_END and limit is None:
            return pos
        if (group, element) != _ITEM:
            raise _Malformed(f"({group:04X},{element:04X}) found where a sequence item belongs")
        if length == UNDEFINED_LENGTH:
            pos = _walk_elements(buf, pos, None, explicit, depth)
        else:
            end = pos + length
            if end > (len(buf) if limit is None else limit):
                raise _Malformed("a sequence item is longer than its sequence")
            _walk_elements(buf, pos, end, explicit, depth)
            pos = end
    return pos


def _walk_elements(buf: bytes, pos: int, limit: int | None, explicit: bool, depth: int) -> int:
    """Check the elements of one sequence item; returns the position after it."""
    while limit is None or pos < limit:
        if pos + 8 > len(buf):
            raise _Malformed("a sequence item runs past the end of the data set")
        group, element = struct.unpack_from("<HH", buf, pos)
        if (group, element) == _ITEM_END and limit is None:
            return pos + 8
        vr = buf[pos + 4:pos + 6] if explicit else b""
        if not explicit:
            length = struct.unpack_from("<L", buf, pos + 4)[0]
            pos += 8
        elif vr not in _VR_CODES:
            raise _Malformed(f"element ({group:04X},{element:04X}) in a sequence item has no valid VR ({vr!r})")
        elif vr in _LONG_LENGTH_VRS:
            if pos + 12 > len(buf):
                raise _Malformed("a sequence item runs past the end of the data set")
            length = struct.unpack_from("<L", buf, pos + 8)[0]
            pos += 12
        else:
            length = struct.unpack_from("<H", buf, pos + 6)[0]
            pos += 8
        if length == UNDEFINED_LENGTH:
            pos = _walk_items(buf, pos, None, explicit, depth + 1)
            continue
        end = pos + length
        if end > (len(buf) if limit is None else limit):
            raise _Malformed(f"element ({group:04X},{element:04X}) is longer than its sequence item")
        if vr == b"SQ":
            _walk_items(buf, pos, end, explicit, depth + 1)
        pos = end
    return pos


def _check_sequence(data: bytes, tag: Any, start: int | None, end: int | None, explicit: bool) -> None:
    """pydicom reads past broken sequence items (a wrong item tag, an element overrunning its item) that
    dcmtk refuses: walk the sequence's structure in the received bytes."""
    if start is None:
        return
    try:
        _walk_items(data, start, end, explicit, 1)
    except _Malformed as exc:
        raise InstanceRefused(STATUS_CANNOT_UNDERSTAND, f"malformed sequence {tag}: {exc}") from None


def check_encoding(data: bytes, transfer_syntax: str) -> None:
    """The data set must be encoded as the negotiated transfer syntax says: pydicom silently reads explicit
    VR where implicit was negotiated (and the reverse), dcmtk and most viewers cannot; such a file is
    unreadable, so it is refused rather than acknowledged."""
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        return  # compressed bytes: inflated (and so checked) by pydicom's reading
    start = dataset_start(data)
    if start is None or len(data) < start + 8:
        return
    explicit = data[start + 4:start + 6] in _VR_CODES
    implicit_negotiated = transfer_syntax == ImplicitVRLittleEndian
    if not explicit and start + 8 + int.from_bytes(data[start + 4:start + 8], "little") > len(data):
        return  # not a plausible implicit VR element either: garbage, left to the structure checks
    if explicit == implicit_negotiated:
        found = "explicit" if explicit else "implicit"
        raise InstanceRefused(
            STATUS_WRONG_ENCODING,
            f"data set is encoded with {found} VR but the negotiated transfer syntax is "
            f"{UID(transfer_syntax).name} ({transfer_syntax}); stored this way it would be unreadable",
        )

