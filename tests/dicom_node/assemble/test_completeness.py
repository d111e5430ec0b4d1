"""Completeness proofs (PET counted by Image Index, CT by spacing and numbering) and the timing rules."""

from __future__ import annotations

import dataclasses
import datetime as dt

from dicom_node.completeness import ProofStatus, ct_proof, decide, pet_proof
from dicom_node.config import AssemblySettings
from dicom_node.series_selection import select_series
from tests.dicom_node.assemble.rows import ct_summary, pet_summary

T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.timezone.utc)
CT_POSITIONS = [-104.0 + 2.0 * n for n in range(101)]


def test_pet_with_every_image_index_is_complete() -> None:
    assert pet_proof(pet_summary(slices=300)).status is ProofStatus.COMPLETE


def test_pet_with_gaps_says_how_many_slices_are_missing() -> None:
    received = [i for i in range(1, 301) if i % 25 != 0]
    proof = pet_proof(pet_summary(slices=300, received=received))
    assert proof.status is ProofStatus.MISSING and proof.detail == "PET: 12 of 300 slices missing"


def test_dynamic_pet_counts_time_slices() -> None:
    dynamic = ["DYNAMIC", "IMAGE"]
    pet = dataclasses.replace(
        pet_summary(slices=10, received=range(1, 31), SeriesType=dynamic), number_of_time_slices=3
    )
    assert pet_proof(pet).status is ProofStatus.COMPLETE
    partial = dataclasses.replace(
        pet_summary(slices=10, received=range(1, 21), SeriesType=dynamic), number_of_time_slices=3
    )
    assert pet_proof(partial).detail == "PET: 10 of 30 slices missing"


def test_time_slices_of_a_static_series_are_ignored() -> None:
    # GE writes Number of Time Slices (e.g. 6, one per bed) on STATIC series too: Image Index is still 1..N.
    pet = dataclasses.replace(
        pet_summary(slices=267, SeriesType=["STATIC", "IMAGE"]), number_of_time_slices=6
    )
    assert pet_proof(pet).status is ProofStatus.COMPLETE


def test_pet_image_index_out_of_range_or_repeated_is_inconsistent() -> None:
    assert pet_proof(pet_summary(slices=10, received=range(1, 12))).status is ProofStatus.INCONSISTENT
    repeated = dataclasses.replace(pet_summary(slices=10), count=11, image_index_count=11)
    assert pet_proof(repeated).status is ProofStatus.INCONSISTENT


def test_pet_without_number_of_slices_is_unprovable() -> None:
    pet = dataclasses.replace(pet_summary(), number_of_slices=None)
    assert pet_proof(pet).status is ProofStatus.UNPROVABLE


def test_contiguous_evenly_spaced_covering_ct_is_complete() -> None:
    assert ct_proof(ct_summary(CT_POSITIONS), pet_summary()).status is ProofStatus.COMPLETE


def test_ct_with_a_gap_is_missing_slices() -> None:
    positions = [z for n, z in enumerate(CT_POSITIONS) if n not in (40, 41, 42)]
    proof = ct_proof(ct_summary(positions), pet_summary())
    assert proof.status is ProofStatus.MISSING and "about 3 slice(s) missing" in proof.detail


def test_ct_not_covering_the_pet_or_with_numbering_gaps_is_unprovable() -> None:
    assert ct_proof(ct_summary(CT_POSITIONS[:60]), pet_summary()).status is ProofStatus.UNPROVABLE
    numbers = list(range(1, 101)) + [150]
    assert ct_proof(ct_summary(CT_POSITIONS, numbers), pet_summary()).status is ProofStatus.UNPROVABLE


def _decide(pet, ct, *, now: float, last: float = 0.0, first: float = 0.0, **settings):  # type: ignore[no-untyped-def]
    options = AssemblySettings(**settings)
    selection = select_series([s for s in (pet, ct) if s is not None], options)
    return decide(
        selection,
        pet_proof(selection.pet) if selection.pet else None,
        ct_proof(selection.ct, selection.pet) if selection.ct else None,
        all_pets_complete=pet is not None and pet_proof(pet).complete,
        first_received_at=T0 + dt.timedelta(seconds=first),
        last_received_at=T0 + dt.timedelta(seconds=last),
        now=T0 + dt.timedelta(seconds=now),
        settings=options,
    )


def test_proven_study_is_queued_after_the_settle_window_only() -> None:
    pet, ct = pet_summary(), ct_summary(CT_POSITIONS)
    waiting = _decide(pet, ct, now=1.0)
    assert waiting.action == "wait" and waiting.recheck_at == T0 + dt.timedelta(seconds=2)
    ready = _decide(pet, ct, now=2.0)
    assert ready.action == "queue" and ready.rule == "content-proof" and ready.proven


def test_missing_pet_slices_wait_for_quiet_then_reject_with_the_count() -> None:
    pet = pet_summary(slices=300, received=[i for i in range(1, 301) if i % 25 != 0])
    ct = ct_summary([-104.0 + 2.0 * n for n in range(700)])
    assert _decide(pet, ct, now=59.0).action == "wait"
    rejected = _decide(pet, ct, now=60.0)
    assert rejected.action == "reject" and rejected.rule == "quiet-period"
    assert rejected.reason == "PET: 12 of 300 slices missing"


def test_process_incomplete_analyses_at_quiet_with_a_flag() -> None:
    pet = pet_summary(slices=50, received=range(1, 50))
    decision = _decide(pet, ct_summary(CT_POSITIONS), now=60.0, process_incomplete=True)
    assert decision.action == "queue" and decision.flags["incomplete"] == ["PET: 1 of 50 slices missing"]


def test_trickling_study_is_judged_at_the_ceiling() -> None:
    pet = pet_summary(slices=50, received=range(1, 50))
    decision = _decide(pet, ct_summary(CT_POSITIONS), now=900.0, last=899.0, first=0.0)
    assert decision.action == "reject" and decision.rule == "ceiling"


def test_unprovable_ct_is_accepted_after_the_quiet_period() -> None:
    ct = ct_summary(CT_POSITIONS, numbers=list(range(1, 101)) + [150])
    assert _decide(pet_summary(), ct, now=30.0).action == "wait"
    decision = _decide(pet_summary(), ct, now=60.0)
    assert decision.action == "queue" and decision.rule == "quiet-period"


def test_complete_unacceptable_pet_is_rejected_without_waiting_for_quiet() -> None:
    decision = _decide(pet_summary(tracer="FDG"), ct_summary(CT_POSITIONS), now=2.0)
    assert decision.action == "reject" and "tracer is FDG" in decision.reason


def test_ct_only_study_is_rejected_after_the_quiet_period() -> None:
    assert _decide(None, ct_summary(CT_POSITIONS), now=59.0).action == "wait"
    decision = _decide(None, ct_summary(CT_POSITIONS), now=60.0)
    assert decision.action == "reject" and decision.reason == "no PET series in the study"
