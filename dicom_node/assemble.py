"""Study assembly: on every scheduler tick, decide which receiving studies are complete and queue them.

Cheap per tick: one query lists the receiving studies; a study's series are summarised with aggregate
queries only when its instance count or last arrival changed since the previous tick (kept in memory per
database); otherwise only the time rules (settle, quiet, ceiling) are re-applied to the cached proofs. A
second query finds settled studies that received data since they were decided, and reopens them.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import ColumnElement, distinct, func, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from db import audit
from db.clock import utcnow
from db.models import Instance, Job, Study, StudyState
from db.session import transaction
from dicom_node.completeness import Decision, Proof, ct_proof, decide, pet_proof
from dicom_node.config import Settings
from dicom_node.jobs import cancel_older_jobs
from dicom_node.patient_identity import IDENTITY_ATTRIBUTES, LABELS
from dicom_node.readiness import waiting_note
from dicom_node.series_selection import LAYOUT_KEYWORDS, Selection, SeriesSummary, select_series
from dicom_node.study_state import reopen_candidates, transition
from dicom_node.transfer_syntaxes import LOSSY_KEYWORD, lossy_reason
from dicom_node.wake import JOBS, ring_on_commit

log = logging.getLogger(__name__)


def usable_instances(study_id: int) -> tuple[ColumnElement[bool], ...]:
    """The study's instances assembly looks at: current, analysable, with their file present."""
    return (
        Instance.study_id == study_id,
        Instance.current.is_(True),
        Instance.analysable.is_(True),
        Instance.missing_file.is_(False),
    )


def load_series(session: Session, study_id: int) -> list[SeriesSummary]:
    """Summaries of the study's series from its current, analysable, present instances."""
    usable = usable_instances(study_id)
    rows = session.execute(
        select(
            Instance.series_uid,
            func.max(Instance.modality),
            func.max(Instance.sop_class_uid),
            func.max(Instance.frame_of_reference_uid),
            func.count(),
            func.count(Instance.image_index),
            func.count(distinct(Instance.image_index)),
            func.min(Instance.image_index),
            func.max(Instance.image_index),
            func.max(Instance.number_of_slices),
            func.max(Instance.number_of_time_slices),
            func.count(Instance.instance_number),
            func.count(distinct(Instance.instance_number)),
            func.min(Instance.instance_number),
            func.max(Instance.instance_number),
            func.min(Instance.slice_position),
            func.max(Instance.slice_position),
            func.min(Instance.id),
        )
        .where(*usable)
        .group_by(Instance.series_uid)
    ).all()
    if not rows:
        return []
    headers: dict[int, dict[str, Any]] = dict(
        session.execute(
            select(Instance.id, Instance.header).where(Instance.id.in_([row[-1] for row in rows]))
        ).all()
    )
    positions: dict[str, list[float]] = {}
    ct_series = [row[0] for row in rows if row[1] == "CT"]
    if ct_series:
        for series_uid, position in session.execute(
            select(Instance.series_uid, Instance.slice_position)
            .where(*usable, Instance.series_uid.in_(ct_series), Instance.slice_position.is_not(None))
            .order_by(Instance.slice_position)
        ):
            assert position is not None  # the query excludes NULL positions
            positions.setdefault(series_uid, []).append(float(position))
    return [
        SeriesSummary(
            series_uid=row[0],
            modality=row[1],
            sop_class_uid=row[2],
            frame_of_reference_uid=row[3],
            count=row[4],
            image_index_count=row[5],
            distinct_image_index=row[6],
            min_image_index=row[7],
            max_image_index=row[8],
            number_of_slices=row[9],
            number_of_time_slices=row[10],
            instance_number_count=row[11],
            distinct_instance_number=row[12],
            min_instance_number=row[13],
            max_instance_number=row[14],
            min_position=row[15],
            max_position=row[16],
            header=dict(headers.get(row[-1]) or {}),
            positions=tuple(positions.get(row[0], ())),
        )
        for row in rows
    ]


def load_layouts(session: Session, study_id: int) -> dict[str, dict[str, tuple[int | None, int | None]]]:
    """Per series, the lowest and highest value of each pixel-layout attribute over its usable instances.

    Read from the header JSON, which costs more than the column aggregates of `load_series`: run once,
    when a study is about to be decided, not on every tick.
    """
    values = [Instance.header[keyword].as_integer() for keyword in LAYOUT_KEYWORDS]
    rows = session.execute(
        select(Instance.series_uid, *(f(v) for v in values for f in (func.min, func.max)))
        .where(*usable_instances(study_id))
        .group_by(Instance.series_uid)
    ).all()
    return {
        row[0]: {keyword: (row[1 + 2 * n], row[2 + 2 * n]) for n, keyword in enumerate(LAYOUT_KEYWORDS)}
        for row in rows
    }


def load_lossy(session: Session, study_id: int) -> dict[str, dict[str, int]]:
    """Per series, its lossy-compressed usable instances counted by reason (`transfer_syntaxes.lossy_reason`:
    the syntax they arrived in, or their Lossy Image Compression). Read once, like `load_layouts`."""
    flag = Instance.header[LOSSY_KEYWORD].as_string()
    rows = session.execute(
        select(Instance.series_uid, Instance.transfer_syntax_uid, flag, func.count())
        .where(*usable_instances(study_id))
        .group_by(Instance.series_uid, Instance.transfer_syntax_uid, flag)
    ).all()
    lossy: dict[str, dict[str, int]] = {}
    for series_uid, transfer_syntax, value, count in rows:
        reason = lossy_reason(transfer_syntax, {LOSSY_KEYWORD: value})
        if reason is not None:
            counts = lossy.setdefault(series_uid, {})
            counts[reason] = counts.get(reason, 0) + count
    return lossy


def patient_conflict(session: Session, study_id: int) -> str | None:
    """Why the study's instances cannot be one patient's, or None.

    Compares the salted identity hashes the receiver stores (never names): an attribute with more than one
    value among the current instances is named, with how many instances of which modality carry each value.
    Instances without the attribute are not compared.
    """
    current = (Instance.study_id == study_id, Instance.current.is_(True))
    hashes = {keyword: Instance.header[key].as_string() for keyword, key in IDENTITY_ATTRIBUTES.items()}
    counts = session.execute(
        select(*(func.count(distinct(value)) for value in hashes.values())).where(*current)
    ).one()
    differing = [keyword for keyword, count in zip(hashes, counts) if count > 1]
    if not differing:
        return None
    parts = []
    for keyword in differing:
        value = hashes[keyword]
        groups = session.execute(
            select(value, Instance.modality, func.count())
            .where(*current, value.is_not(None))
            .group_by(value, Instance.modality)
            .order_by(value, Instance.modality)
        ).all()
        per_value: dict[str, list[str]] = {}
        for digest, modality, count in groups:
            per_value.setdefault(digest, []).append(f"{count} {modality or 'other'}")
        described = "; ".join(
            f"value {n}: {', '.join(found)} instance(s)" for n, found in enumerate(per_value.values(), 1)
        )
        parts.append(f"{LABELS[keyword]} differs ({len(per_value)} values: {described})")
    return "instances of more than one patient in one study: " + "; ".join(parts)


@dataclass
class Assessment:
    """The content-derived part of a study's evaluation; valid while `key` is unchanged."""

    key: tuple[int, dt.datetime, int]
    selection: Selection
    pet: Proof | None
    ct: Proof | None
    all_pets_complete: bool
    proven_at: dt.datetime | None
    series: list[SeriesSummary]
    verified: bool = False
    """Patient identity and pixel layouts checked (done once, when the study is about to be decided)."""


def assess(
    series: list[SeriesSummary],
    settings: Settings,
    key: tuple[int, dt.datetime, int],
    now: dt.datetime,
    previous: Assessment | None,
) -> Assessment:
    selection = select_series(series, settings.assembly)
    pet = pet_proof(selection.pet) if selection.pet is not None else None
    ct = ct_proof(selection.ct, selection.pet) if selection.ct is not None else None
    pets = [s for s in series if s.modality == "PT"]
    all_pets_complete = bool(pets) and all(pet_proof(s).complete for s in pets)
    proven = pet is not None and ct is not None and pet.complete and ct.complete
    proven_at = (
        (previous.proven_at if previous is not None and previous.proven_at else now) if proven else None
    )
    return Assessment(key, selection, pet, ct, all_pets_complete, proven_at, series)


def reopen(session: Session, study: Study, *, reason: str, rule: str, actor: str | None = None) -> bool:
    """Back to receiving with the next generation; jobs of the old generation are cancelled.

    A result of the old generation stays (audit trail) and is superseded when the new analysis finishes.
    """
    previous_state = study.state
    if not transition(
        session,
        study,
        StudyState.RECEIVING,
        reason=reason,
        rule=rule,
        actor=actor,
        previous_state=previous_state,
    ):
        return False
    cancelled = cancel_older_jobs(session, study, f"study reopened: {reason}")
    if cancelled:
        log.info("jobs cancelled by reopening", extra={"study_uid": study.study_uid, "job_ids": cancelled})
    return True


class Assembler:
    """The assembly stage: its memory of what each receiving study looked like at the previous tick, and of
    which studies a sender has handed over (the receiver reports associations ending: `association_closed`).

    One per node, built and wired by `serve`; a new one (a restart) starts with empty memory and only
    re-reads what the database says, so tests build their own.
    """

    def __init__(self) -> None:
        self.seen: dict[int, Assessment] = {}
        self.released_at: dict[int, dt.datetime] = {}
        self._released_lock = threading.Lock()
        # Set by `serve`: the studies open associations are delivering now, and how to wake assembly.
        self.delivering: Callable[[], set[int]] = set
        self.on_handover: Callable[[], None] = lambda: None

    def association_closed(self, study_ids: Iterable[int], released: bool) -> None:
        """An association that delivered instances of `study_ids` ended (released, or aborted/dropped)."""
        now = utcnow()
        with self._released_lock:
            for study_id in study_ids:
                if released:
                    self.released_at[study_id] = now
                else:  # an aborted sender may well send again: keep the settle window
                    self.released_at.pop(study_id, None)
        if released:
            self.on_handover()

    def handed_over(self, study_id: int, last_received_at: dt.datetime) -> bool:
        """Released after the study's last instance, and no open association is delivering to it."""
        with self._released_lock:
            released = self.released_at.get(study_id)
        return released is not None and released >= last_received_at and study_id not in self.delivering()

    def tick(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        """Reopen studies with new data; judge the receiving studies' completeness; queue the ready ones."""
        self.reopen_changed(sessions)
        with sessions() as session:
            studies = session.scalars(select(Study).where(Study.state == StudyState.RECEIVING.value)).all()
        for study_id in set(self.seen) - {s.id for s in studies}:
            del self.seen[study_id]
        with self._released_lock:
            for study_id in set(self.released_at) - {s.id for s in studies}:
                del self.released_at[study_id]
        for study in studies:
            study_id, study_uid = study.id, study.study_uid
            try:
                self.judge(settings, sessions, study)
            except (OperationalError, IntegrityError) as exc:
                # Lost a race with the receiver or another assembler: the next tick sees the new state.
                log.info("assembly deferred", extra={"study_uid": study_uid, "error": str(exc)[:200]})
                self.seen.pop(study_id, None)
            except Exception:
                # One study's surprise must not stall the others; it is retried on the next tick.
                log.exception("assembly failed for a study", extra={"study_uid": study_uid})
                self.seen.pop(study_id, None)

    def reopen_changed(self, sessions: sessionmaker[Session]) -> None:
        with sessions() as session:
            changed = session.scalars(reopen_candidates()).all()
        for study in changed:
            with transaction(sessions) as session:
                session.add(study)
                new = study.instance_count - study.assessed_instance_count
                reason = (
                    f"{new} new instance(s) after the study was {study.state}"
                    if new > 0
                    else f"instance(s) re-sent with different content after the study was {study.state}"
                )
                reopen(session, study, reason=reason, rule="new-data")

    def judge(self, settings: Settings, sessions: sessionmaker[Session], study: Study) -> None:
        now = utcnow()
        last = study.last_received_at
        key = (study.instance_count, last, study.generation)
        previous = self.seen.get(study.id)
        if previous is None or previous.key != key:
            with sessions() as session:
                series = load_series(session, study.id)
            previous = self.seen[study.id] = assess(series, settings, key, now, previous)
        handed_over = self.handed_over(study.id, last)
        decision = self.completeness_decision(previous, study, last, now, settings, handed_over=handed_over)
        if decision.action != "wait" and not previous.verified:
            previous, decision = self.verify(sessions, study, previous, settings, now, handed_over)
        if decision.action == "wait":
            return
        self.record(sessions, study, previous, decision)
        if study.state == StudyState.QUEUED.value:
            self.note_waiting(settings, sessions, study)

    @staticmethod
    def note_waiting(settings: Settings, sessions: sessionmaker[Session], study: Study) -> None:
        """A job queued while no worker is ready (the node is starting, or its workers are down) waits: its
        study's timeline says for what, instead of showing a silent gap until a worker claims it."""
        with transaction(sessions) as session:
            note = waiting_note(settings, session)
            if note is None:
                return
            job_id = session.scalar(select(func.max(Job.id)).where(Job.study_id == study.id))
            audit.record(session, "job", "waiting", outcome="warning", reason=note, study_uid=study.study_uid,
                         job_id=job_id)
        log.info("job waits for a worker", extra={"study_uid": study.study_uid, "job_id": job_id,
                                                   "reason": note})

    def verify(
        self,
        sessions: sessionmaker[Session],
        study: Study,
        assessment: Assessment,
        settings: Settings,
        now: dt.datetime,
        handed_over: bool,
    ) -> tuple[Assessment, Decision]:
        """Before deciding: one patient only, series whose slices stack, no lossy PET; else reject or
        re-select.

        A study naming two patients is refused whatever else it holds: no more data can mend it. A series
        with mixed pixel layouts, or a lossy-compressed PET, is dropped from selection, which may then pick
        another or refuse; a lossy-compressed CT stays usable and the job's flags say so.
        """
        with sessions() as session:
            conflict = patient_conflict(session, study.id)
            layouts = load_layouts(session, study.id) if conflict is None else {}
            lossy = load_lossy(session, study.id) if conflict is None else {}
        if conflict is not None:
            assessment.verified = True
            return assessment, Decision("reject", "patient-conflict", conflict)
        series = [replace(s, layout=layouts.get(s.series_uid, {}), lossy=lossy.get(s.series_uid, {}))
                  for s in assessment.series]
        checked = assess(series, settings, assessment.key, now, assessment)
        checked.verified = True
        self.seen[study.id] = checked
        last = study.last_received_at
        decision = self.completeness_decision(checked, study, last, now, settings, handed_over=handed_over)
        return checked, decision

    @staticmethod
    def completeness_decision(
        previous: Assessment,
        study: Study,
        last: dt.datetime,
        now: dt.datetime,
        settings: Settings,
        handed_over: bool = False,
    ) -> Decision:
        return decide(
            previous.selection,
            previous.pet,
            previous.ct,
            all_pets_complete=previous.all_pets_complete,
            first_received_at=study.first_received_at,
            last_received_at=last,
            now=now,
            settings=settings.assembly,
            handed_over=handed_over,
        )

    def record(
        self, sessions: sessionmaker[Session], study: Study, previous: Assessment, decision: Decision
    ) -> None:
        """Record the decision: rejected with its reason, or complete with a queued job."""
        assessed = (study.instance_count, study.last_received_at)
        with transaction(sessions) as session:
            session.add(study)
            if decision.action == "reject":
                transition(
                    session,
                    study,
                    StudyState.REJECTED,
                    reason=decision.reason,
                    rule=decision.rule,
                    assessed=assessed,
                    selection=previous.selection.flags,
                )
            else:
                self.queue(session, study, previous, decision, assessed)
        self.seen.pop(study.id, None)

    @staticmethod
    def queue(
        session: Session,
        study: Study,
        assessment: Assessment,
        decision: Decision,
        assessed: tuple[int, dt.datetime],
    ) -> None:
        selection = assessment.selection
        assert selection.pet is not None and selection.ct is not None
        flags = {**selection.flags, **decision.flags, "rule": decision.rule}
        if not transition(
            session,
            study,
            StudyState.COMPLETE,
            reason=decision.reason,
            rule=decision.rule,
            assessed=assessed,
            pet_series_uid=selection.pet.series_uid,
            ct_series_uid=selection.ct.series_uid,
            flags=flags,
        ):
            return
        study.pet_series_uid = selection.pet.series_uid
        study.ct_series_uid = selection.ct.series_uid
        study.completeness_proven_at = assessment.proven_at
        job = Job(
            study_id=study.id,
            generation=study.generation,
            pet_series_uid=selection.pet.series_uid,
            ct_series_uid=selection.ct.series_uid,
            flags=flags,
        )
        session.add(job)
        session.flush()
        audit.record(
            session,
            "job",
            "queued",
            study_uid=study.study_uid,
            job_id=job.id,
            generation=study.generation,
            flags=flags,
        )
        ring_on_commit(session, JOBS)  # an idle worker starts it when this commits
        transition(
            session,
            study,
            StudyState.QUEUED,
            reason=f"job {job.id} queued",
            rule="job-created",
            job_id=job.id,
        )
