"""Proofs that a study's PET and CT have fully arrived, and the decision what to do with a study now.

DICOM has no "series complete" message. PET is countable: Image Index runs 1..Number of Slices (times Number
of Time Slices for dynamic series), so a PET is complete exactly when those values have all arrived. CT is not
countable; contiguous instance numbers, evenly spaced slices without a gap and coverage of the PET's extent
are the evidence. With proof, a study is ready after a short settle window; without it, a quiet period and a
ceiling apply, and what is missing is said in the reason.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field
from typing import Any, Literal

from dicom_node.config import AssemblySettings
from dicom_node.series_selection import Selection, SeriesSummary, as_list, covers

GAP_FACTOR = 1.5
"""A step between CT slices longer than this many median steps is a gap (missing slices)."""
EVEN_TOLERANCE = 0.1
"""Steps within this fraction of the median step count as even spacing."""


class ProofStatus(str, enum.Enum):
    COMPLETE = "complete"
    MISSING = "missing"
    INCONSISTENT = "inconsistent"
    UNPROVABLE = "unprovable"


@dataclass(frozen=True)
class Proof:
    status: ProofStatus
    detail: str

    @property
    def complete(self) -> bool:
        return self.status is ProofStatus.COMPLETE

    @property
    def defective(self) -> bool:
        """Evidence that something is missing or wrong (as opposed to merely unprovable)."""
        return self.status in (ProofStatus.MISSING, ProofStatus.INCONSISTENT)


def pet_proof(pet: SeriesSummary) -> Proof:
    """Received Image Index values exactly {1..N*T} => complete; gaps => missing; others => inconsistent."""
    slices = pet.number_of_slices
    if not slices or pet.image_index_count < pet.count:
        return Proof(
            ProofStatus.UNPROVABLE, "PET: no Number of Slices / Image Index, completeness cannot be proven"
        )
    series_type = [str(v).upper() for v in as_list(pet.header.get("SeriesType"))]
    kind = series_type[0] if series_type else "STATIC"
    if kind == "GATED":
        return Proof(
            ProofStatus.UNPROVABLE, "PET: gated series, completeness cannot be proven by Image Index"
        )
    # Number of Time Slices counts only for DYNAMIC series (GE writes one for static ones as well).
    frames = (pet.number_of_time_slices or 1) if kind == "DYNAMIC" else 1
    expected = slices * frames
    low, high = pet.min_image_index or 0, pet.max_image_index or 0
    if low < 1 or high > expected:
        return Proof(
            ProofStatus.INCONSISTENT,
            f"PET: Image Index {low}..{high} outside 1..{expected} (Number of Slices {slices}"
            + (f" x {frames} time slices)" if frames > 1 else ")"),
        )
    duplicates = pet.count - pet.distinct_image_index
    if duplicates:
        return Proof(
            ProofStatus.INCONSISTENT, f"PET: {duplicates} instance(s) repeat an Image Index already received"
        )
    missing = expected - pet.distinct_image_index
    if missing:
        return Proof(ProofStatus.MISSING, f"PET: {missing} of {expected} slices missing")
    return Proof(ProofStatus.COMPLETE, f"PET: all {expected} slices (Image Index 1..{expected})")


def ct_proof(ct: SeriesSummary, pet: SeriesSummary | None) -> Proof:
    """Contiguous instance numbers, even spacing without a gap, and coverage of the PET's z-extent."""
    positions = ct.positions
    if len(positions) < 2 or len(positions) != ct.count:
        return Proof(ProofStatus.UNPROVABLE, "CT: slice positions unknown, completeness cannot be proven")
    steps = [b - a for a, b in zip(positions, positions[1:])]
    if min(steps) <= 1e-3:
        return Proof(ProofStatus.INCONSISTENT, "CT: two or more slices at the same position")
    median = sorted(steps)[len(steps) // 2]
    gaps = [(a, b) for a, b in zip(positions, positions[1:]) if b - a > GAP_FACTOR * median]
    if gaps:
        a, b = gaps[0]
        lost = sum(round((y - x) / median) - 1 for x, y in gaps)
        return Proof(
            ProofStatus.MISSING,
            f"CT: about {lost} slice(s) missing ({len(gaps)} gap(s), first between "
            f"z={a:.1f} and z={b:.1f} mm at {median:.2f} mm spacing)",
        )
    if max(abs(s - median) for s in steps) > EVEN_TOLERANCE * median:
        return Proof(ProofStatus.UNPROVABLE, "CT: uneven slice spacing, completeness cannot be proven")
    numbers_contiguous = (
        ct.instance_number_count == ct.count
        and ct.distinct_instance_number == ct.count
        and ct.max_instance_number is not None
        and ct.min_instance_number is not None
        and ct.max_instance_number - ct.min_instance_number + 1 == ct.count
    )
    if not numbers_contiguous:
        return Proof(ProofStatus.UNPROVABLE, "CT: instance numbers not contiguous, completeness unproven")
    if pet is not None and not covers(ct, pet):
        pet_range = pet.z_range or (float("nan"), float("nan"))
        return Proof(
            ProofStatus.UNPROVABLE,
            f"CT: z {positions[0]:.1f}..{positions[-1]:.1f} mm does not cover the PET's "
            f"{pet_range[0]:.1f}..{pet_range[1]:.1f} mm",
        )
    return Proof(
        ProofStatus.COMPLETE, f"CT: {ct.count} contiguous slices at {median:.2f} mm covering the PET"
    )


@dataclass
class Decision:
    """What to do with a receiving study now; `recheck_at` says when the answer can change by itself."""

    action: Literal["wait", "queue", "reject"]
    rule: str
    reason: str
    recheck_at: dt.datetime | None = None
    proven: bool = False
    flags: dict[str, Any] = field(default_factory=dict)


def decide(
    selection: Selection,
    pet: Proof | None,
    ct: Proof | None,
    *,
    all_pets_complete: bool,
    first_received_at: dt.datetime,
    last_received_at: dt.datetime,
    now: dt.datetime,
    settings: AssemblySettings,
    handed_over: bool = False,
) -> Decision:
    """Apply the rules in order: content proof + settle; else quiet period or ceiling; say which fired.

    `handed_over`: every association that delivered to the study was released after its last instance,
    and none is open. The settle window waits for stragglers of a sender still connected, so it is skipped
    then; should more data come after all, the study reopens and the new result supersedes.
    """
    settle_at = last_received_at + dt.timedelta(seconds=0.0 if handed_over else settings.settle_seconds)
    quiet_at = last_received_at + dt.timedelta(seconds=settings.quiet_seconds)
    ceiling_at = first_received_at + dt.timedelta(seconds=settings.ceiling_seconds)
    fallback_at = min(quiet_at, ceiling_at)
    fallback_rule = "ceiling" if ceiling_at <= quiet_at else "quiet-period"
    if not selection.ok:
        reason = selection.reason or "no analysable PET/CT pair"
        if all_pets_complete and selection.pet is None:
            # Every PET present is provably whole and none is acceptable: waiting longer changes nothing,
            # and should more data come after all, the study reopens.
            if now >= settle_at:
                return Decision("reject", "selection", reason, proven=True)
            return Decision("wait", "settle", reason, recheck_at=settle_at, proven=True)
        if now >= fallback_at:
            return Decision("reject", f"selection after {fallback_rule}", reason)
        return Decision("wait", "waiting-for-series", reason, recheck_at=fallback_at)
    assert pet is not None and ct is not None
    evidence = f"{pet.detail}; {ct.detail}"
    if pet.complete and ct.complete:
        if now >= settle_at:
            flags = {"settle": "skipped: the sender released its association"} if handed_over else {}
            return Decision("queue", "content-proof", evidence, proven=True, flags=flags)
        return Decision("wait", "settle", evidence, recheck_at=settle_at, proven=True)
    if now < fallback_at:
        return Decision("wait", "waiting-for-proof", evidence, recheck_at=fallback_at)
    defects = [p.detail for p in (pet, ct) if p.defective]
    inconsistent = [p.detail for p in (pet, ct) if p.status is ProofStatus.INCONSISTENT]
    if inconsistent or (defects and not settings.process_incomplete):
        return Decision("reject", fallback_rule, "; ".join(defects))
    flags = {"incomplete": defects} if defects else {}
    return Decision("queue", fallback_rule, evidence, flags=flags)
