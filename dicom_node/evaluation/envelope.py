"""Is a result inside the conditions the model was validated for? Plain-language reasons when it is not.

The envelope (`envelope:` in the configuration) names the tracer, the PET grid, the uptake time, the injected
activity and the scanners; each descriptor outside it gives one sentence such as "uptake time 240 min >
150 min", shown in the SR, the SC and on the dashboard, stored with the result and counted. A descriptor the
headers do not give is not flagged: the envelope judges what is known, the descriptors row shows what was not.
"""

from __future__ import annotations

from dicom_node.config import EnvelopeSettings
from dicom_node.evaluation.descriptors import Descriptors


def _number(value: float) -> str:
    return f"{value:.4g}"


def _outside(label: str, value: float | None, bounds: tuple[float, float], unit: str) -> list[str]:
    if value is None:
        return []
    low, high = bounds
    if value > high:
        return [f"{label} {_number(value)} {unit} > {_number(high)} {unit}"]
    if value < low:
        return [f"{label} {_number(value)} {unit} < {_number(low)} {unit}"]
    return []


def _named(value: str | None, allowed: list[str]) -> bool:
    """`allowed` empty (anything goes), or one of its entries is a case-insensitive part of `value`."""
    if not allowed:
        return True
    return value is not None and any(entry.lower() in value.lower() for entry in allowed)


def check(descriptors: Descriptors, envelope: EnvelopeSettings) -> list[str]:
    """Why `descriptors` lie outside `envelope`, one plain sentence each; empty when inside (or disabled)."""
    if not envelope.enabled:
        return []
    reasons: list[str] = []
    if descriptors.tracer is not None and not _named(descriptors.tracer, envelope.tracers):
        reasons.append(f"tracer {descriptors.tracer!r} is not {' or '.join(envelope.tracers)}")
    if descriptors.pet_voxel_mm is not None:
        row, column, step = descriptors.pet_voxel_mm
        for spacing in sorted({row, column}):
            reasons += _outside("PET voxel size (in-plane)", spacing, envelope.pet_voxel_mm, "mm")
        reasons += _outside("PET voxel size (between slices)", step, envelope.pet_voxel_mm, "mm")
    reasons += _outside("PET slice thickness", descriptors.pet_slice_thickness_mm,
                        envelope.pet_slice_thickness_mm, "mm")
    reasons += _outside("uptake time", descriptors.uptake_time_min, envelope.uptake_time_min, "min")
    reasons += _outside("injected activity", descriptors.injected_activity_mbq, envelope.injected_activity_mbq,
                        "MBq")
    scanner = descriptors.scanner
    if envelope.scanners and not _named(scanner, envelope.scanners):
        named = f"scanner {scanner!r} is not" if scanner else "scanner not named in the headers:"
        reasons.append(f"{named} one validated here ({', '.join(envelope.scanners)})")
    return reasons
