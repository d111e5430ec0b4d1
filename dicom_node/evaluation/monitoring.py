"""Running drift monitoring: read the history, judge it (`drift.assess`), store what is new as alarms.

`serve` calls `monitoring_tick` on a schedule (monitoring.tick_seconds); `psma-node monitoring run` calls
`run_monitoring` at once. The clock is a parameter, so tests replay months of backdated results day by day.
Every alarm raised or cleared is an audit event (category `monitoring`) and a log line; the banner, the
Prometheus gauge and `monitoring status` read the alarm rows.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from db.clock import utcnow
from db.models import MonitoringAlarm
from db.monitoring import monitored_results, sync_alarms
from db.session import transaction
from dicom_node.config import Settings
from dicom_node.evaluation.drift import MonitoringState, assess

log = logging.getLogger(__name__)


@dataclass
class MonitoringRun:
    state: MonitoringState
    raised: list[MonitoringAlarm]
    cleared: list[MonitoringAlarm]


def current_state(session: Session, settings: Settings, now: dt.datetime) -> MonitoringState:
    """What monitoring concludes from the history up to `now` (reads only)."""
    rows = monitored_results(session, until=now)
    return assess(rows, settings.monitoring, now.astimezone(dt.timezone.utc).date())


def run_monitoring(
    settings: Settings,
    sessions: sessionmaker[Session],
    *,
    now: dt.datetime | None = None,
    actor: str | None = None,
) -> MonitoringRun:
    """Judge the history up to `now` and store new alarms and clearances in one transaction."""
    now = now or utcnow()
    actor = actor or f"system:monitoring@{os.uname().nodename}"
    with transaction(sessions) as session:
        state = current_state(session, settings, now)
        raised, cleared = sync_alarms(session, state.conditions, now=now, actor=actor)
    for alarm in raised:
        log.warning(
            "monitoring alarm raised",
            extra={
                "kind": alarm.kind,
                "scanner": alarm.scanner,
                "subject": alarm.subject,
                "raised_on": alarm.raised_on.isoformat(),
                "alarm": alarm.message,
            },
        )
    for alarm in cleared:
        log.info(
            "monitoring alarm cleared",
            extra={
                "kind": alarm.kind,
                "scanner": alarm.scanner,
                "subject": alarm.subject,
            },
        )
    return MonitoringRun(state, raised, cleared)


def monitoring_tick(
    settings: Settings, sessions: sessionmaker[Session], clock: Callable[[], dt.datetime] = utcnow
) -> None:
    """Scheduled by `serve` when monitoring is enabled: one evaluation; a failure is logged and the next tick
    tries again."""
    try:
        run_monitoring(settings, sessions, now=clock())
    except IntegrityError:
        log.info("monitoring: another process stored the same alarm first; judged again next tick")
    except Exception:
        log.exception("monitoring run failed")
