"""Rows for drift monitoring: every current result with what it was made from, and the alarm table.

`monitored_results` hands `dicom_node.evaluation.drift` plain rows (no ORM objects), and `sync_alarms` stores
what drift concluded: a condition becomes one alarm row and one audit event when first seen, and is cleared
(another audit event) when it no longer holds. Whether a condition is new is decided against the stored
rows, so evaluating the same history again, at any time and any number of times, raises nothing twice.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.audit import record
from db.cohort import scanner_label
from db.models import MonitoringAlarm, Result, ResultDescriptors
from db.outcomes import latest_assessments

NOVELTY_KINDS = ("new-scanner", "new-software", "new-weights")
STATISTIC_KIND = "statistic"
ALARM_KINDS = (STATISTIC_KIND, *NOVELTY_KINDS)


@dataclass(frozen=True)
class MonitoredResult:
    """One current result as monitoring watches it (descriptors as recorded when it was made)."""

    result_id: int
    created_at: dt.datetime
    scanner: str
    software_versions: str | None
    weights: str | None
    """`model_id:sha256` of the weights that made it; None when the classifier did not run."""
    positive: bool | None
    probability: float | None
    verdicts: tuple[str, ...]
    """Each reader's latest verdict on this result."""
    envelope_violations: int
    uptake_time_min: float | None
    injected_activity_mbq: float | None
    weight_kg: float | None
    pet_pixel_spacing_mm: float | None
    pet_slice_spacing_mm: float | None
    pet_slice_thickness_mm: float | None

    @property
    def day(self) -> dt.date:
        return self.created_at.astimezone(dt.timezone.utc).date()


def _spacing(voxel: Any, index: int) -> float | None:
    try:
        return float(voxel[index])
    except (TypeError, ValueError, IndexError, KeyError):
        return None


def monitored_results(session: Session, *, until: dt.datetime | None = None) -> list[MonitoredResult]:
    """Current (non-superseded) results that have descriptors, oldest first, made before `until`."""
    query = (
        select(Result, ResultDescriptors)
        .join(ResultDescriptors, ResultDescriptors.result_id == Result.id)
        .where(Result.superseded_by_id.is_(None))
        .order_by(Result.created_at, Result.id)
    )
    if until is not None:
        query = query.where(Result.created_at < until)
    pairs = list(session.execute(query).tuples())
    verdicts: dict[int, list[str]] = {}
    for result_id, rows in latest_assessments(session, [result.id for result, _ in pairs]).items():
        verdicts[result_id] = [row.verdict for row in rows]
    return [
        MonitoredResult(
            result_id=result.id,
            created_at=result.created_at,
            scanner=scanner_label(d.manufacturer, d.scanner_model),
            software_versions=d.software_versions,
            weights=f"{d.model_id or result.model_id}:{d.weights_sha256 or result.weights_sha256}"
            if (d.weights_sha256 or result.weights_sha256)
            else None,
            positive=d.positive,
            probability=d.probability if d.probability is not None else result.probability,
            verdicts=tuple(verdicts.get(result.id, ())),
            envelope_violations=len(d.envelope_violations or ()),
            uptake_time_min=d.uptake_time_min,
            injected_activity_mbq=d.injected_activity_mbq,
            weight_kg=d.weight_kg,
            pet_pixel_spacing_mm=_spacing(d.pet_voxel_mm, 0),
            pet_slice_spacing_mm=_spacing(d.pet_voxel_mm, 2),
            pet_slice_thickness_mm=d.pet_slice_thickness_mm,
        )
        for result, d in pairs
    ]


@dataclass(frozen=True)
class Condition:
    """Something monitoring found: a drift episode or a novelty, with the day it was raised (and cleared)."""

    kind: str
    scanner: str
    subject: str
    raised_on: dt.date
    message: str
    cleared_on: dt.date | None = None
    detail: dict[str, Any] | None = None


def open_alarms(session: Session) -> list[MonitoringAlarm]:
    """Alarms not cleared yet, oldest first: what the banner, the gauge and `monitoring status` show."""
    return list(
        session.scalars(
            select(MonitoringAlarm)
            .where(MonitoringAlarm.cleared_at.is_(None))
            .order_by(MonitoringAlarm.raised_on, MonitoringAlarm.id)
        )
    )


def recent_alarms(session: Session, *, limit: int = 100) -> list[MonitoringAlarm]:
    """Every alarm, newest first (open and cleared), for the monitoring page."""
    return list(
        session.scalars(
            select(MonitoringAlarm)
            .order_by(MonitoringAlarm.raised_on.desc(), MonitoringAlarm.id.desc())
            .limit(limit)
        )
    )


AUDIT_PREFIX = {"alarm-raised": "", "alarm-cleared": "no longer holds: ", "alarm-acknowledged": "acknowledged: "}


def _audit_alarm(session: Session, alarm: MonitoringAlarm, action: str, actor: str, **detail: Any) -> None:
    record(
        session,
        "monitoring",
        action,
        outcome="warning" if action == "alarm-raised" else "ok",
        reason=AUDIT_PREFIX[action] + alarm.message,
        actor=actor,
        alarm_id=alarm.id,
        kind=alarm.kind,
        scanner=alarm.scanner,
        subject=alarm.subject,
        raised_on=alarm.raised_on.isoformat(),
        **detail,
    )


def sync_alarms(
    session: Session, conditions: Sequence[Condition], *, now: dt.datetime, actor: str
) -> tuple[list[MonitoringAlarm], list[MonitoringAlarm]]:
    """Store new conditions as alarms and clear open alarms that no longer hold; (raised, cleared).

    A novelty is raised once per kind, scanner and subject, ever. A drift episode is raised unless an alarm
    for the same statistic and scanner is open, or one was already raised on the same day (an alarm an
    admin acknowledged stays acknowledged for the rest of its episode). An episode that began and ended
    between two evaluations (the node was down) is still recorded, raised and cleared at once."""
    stored = list(session.scalars(select(MonitoringAlarm)))
    raised: list[MonitoringAlarm] = []
    cleared: list[MonitoringAlarm] = []
    for condition in conditions:
        key = (condition.kind, condition.scanner, condition.subject)
        same = [a for a in stored if (a.kind, a.scanner, a.subject) == key]
        if condition.kind in NOVELTY_KINDS:
            if same:
                continue
        elif any(a.cleared_at is None or a.raised_on == condition.raised_on for a in same):
            continue
        alarm = MonitoringAlarm(
            kind=condition.kind,
            scanner=condition.scanner,
            subject=condition.subject,
            raised_on=condition.raised_on,
            message=condition.message,
            detail=dict(condition.detail or {}),
            created_at=now,
        )
        session.add(alarm)
        session.flush()
        _audit_alarm(session, alarm, "alarm-raised", actor)
        stored.append(alarm)
        raised.append(alarm)
        if condition.cleared_on is not None:  # an episode that began and ended between two evaluations
            alarm.cleared_at = now
            _audit_alarm(session, alarm, "alarm-cleared", actor, cleared_on=condition.cleared_on.isoformat())
            cleared.append(alarm)
    still_open = {
        (c.kind, c.scanner, c.subject)
        for c in conditions
        if c.kind == STATISTIC_KIND and c.cleared_on is None
    }
    for alarm in stored:
        if (alarm.kind == STATISTIC_KIND and alarm.cleared_at is None and alarm not in raised
                and (alarm.kind, alarm.scanner, alarm.subject) not in still_open):
            alarm.cleared_at = now
            _audit_alarm(session, alarm, "alarm-cleared", actor)
            cleared.append(alarm)
    return raised, cleared


def acknowledge(
    session: Session, alarm_id: int, *, actor: str, note: str | None, now: dt.datetime
) -> MonitoringAlarm:
    """An admin closes an alarm (a novelty that was checked, a shift that is understood); audited."""
    alarm = session.get(MonitoringAlarm, alarm_id)
    if alarm is None:
        raise LookupError(f"no monitoring alarm {alarm_id}")
    if alarm.cleared_at is not None:
        raise ValueError(f"monitoring alarm {alarm_id} was already cleared at {alarm.cleared_at.isoformat()}")
    alarm.cleared_at = now
    alarm.detail = {**(alarm.detail or {}), "acknowledged_by": actor, "acknowledged_note": note}
    _audit_alarm(session, alarm, "alarm-acknowledged", actor, note=note)
    return alarm
