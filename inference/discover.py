"""Find the PET and the CT series of one examination in a folder of any layout, from content alone.

Files are grouped by SeriesInstanceUID (folder names and file names mean nothing); the PET is the PT series
with the most images, the CT the CT series with the most images sharing the PET's frame of reference.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

_TAGS = ["SeriesInstanceUID", "Modality", "FrameOfReferenceUID", "SOPClassUID"]


class DiscoveryError(ValueError):
    """No usable PET/CT pair in the folder."""


@dataclass
class FoundSeries:
    series_uid: str
    modality: str
    frame_of_reference_uid: str
    paths: list[Path] = field(default_factory=list)


@dataclass
class PetCtPair:
    pet: FoundSeries
    ct: FoundSeries
    notes: list[str] = field(default_factory=list)


def scan_folder(folder: Path) -> tuple[dict[str, FoundSeries], int]:
    """Every DICOM image below `folder` grouped by series; also how many files were not DICOM."""
    series: dict[str, FoundSeries] = {}
    skipped = 0
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_TAGS)
        except (InvalidDicomError, OSError, EOFError, ValueError, TypeError):
            skipped += 1
            continue
        uid = str(getattr(header, "SeriesInstanceUID", "") or "")
        if not uid:
            skipped += 1
            continue
        found = series.setdefault(
            uid,
            FoundSeries(
                uid,
                str(getattr(header, "Modality", "") or ""),
                str(getattr(header, "FrameOfReferenceUID", "") or ""),
            ),
        )
        found.paths.append(path)
    return series, skipped


def find_pet_ct(folder: Path) -> PetCtPair:
    if not Path(folder).is_dir():
        raise DiscoveryError(f"{folder} is not a folder")
    series, skipped = scan_folder(folder)
    notes = [f"{skipped} files that are not DICOM images were ignored"] if skipped else []
    by_modality: dict[str, list[FoundSeries]] = defaultdict(list)
    for found in series.values():
        by_modality[found.modality].append(found)
    pets = sorted(by_modality["PT"], key=lambda s: len(s.paths), reverse=True)
    if not pets:
        kinds = ", ".join(f"{m or '?'} x{len(v)}" for m, v in sorted(by_modality.items())) or "none"
        raise DiscoveryError(f"no PET (modality PT) series in {folder} (series found: {kinds})")
    pet = pets[0]
    if len(pets) > 1:
        notes.append(
            f"{len(pets)} PET series found; using the largest ({len(pet.paths)} images, {pet.series_uid})"
        )
    cts = sorted(
        (s for s in by_modality["CT"] if s.frame_of_reference_uid == pet.frame_of_reference_uid),
        key=lambda s: len(s.paths),
        reverse=True,
    )
    if not cts:
        others = len(by_modality["CT"])
        raise DiscoveryError(
            f"no CT series shares the PET's frame of reference {pet.frame_of_reference_uid or '(none)'} "
            f"in {folder} ({others} CT series with other frames of reference)"
        )
    if len(cts) > 1:
        notes.append(f"{len(cts)} CT series share the PET's frame of reference; using the largest")
    return PetCtPair(pet=pet, ct=cts[0], notes=notes)
