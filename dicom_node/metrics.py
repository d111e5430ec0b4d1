"""Prometheus metrics derived from the database at scrape time.

Receiving, analysis and sending run in different processes (and possibly on different machines), so
in-process counters would each see only a part. The database sees everything: this collector turns the
rows (instances, audit events, studies, jobs and their timings, outbox, worker heartbeats) into metric
families on every scrape. Counters are therefore exact totals over what the database holds.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from db.clock import utcnow
from db.models import AuditEvent, Instance, Job, JobState, OutboxItem, Study
from db.monitoring import ALARM_KINDS, open_alarms
from db.queries import FAILED_OUTCOMES, count_by, studies_by_state, workers
from dicom_node.config import Settings

log = logging.getLogger(__name__)

PREFIX = "psma_node"
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
REASON_MAX = 60


def reason_class(reason: str | None) -> str:
    """A bounded label for a refusal reason: its text up to the first colon (details follow the colon)."""
    if not reason:
        return "unspecified"
    return reason.split(":", 1)[0].strip()[:REASON_MAX] or "unspecified"


def histogram(name: str, doc: str, label: str, samples: dict[str, list[float]]) -> HistogramMetricFamily:
    """A histogram family built from raw observations, one series per label value."""
    family = HistogramMetricFamily(name, doc, labels=[label])
    for key, values in sorted(samples.items()):
        buckets = [(str(bound), float(sum(1 for v in values if v <= bound))) for bound in LATENCY_BUCKETS]
        buckets.append(("+Inf", float(len(values))))
        family.add_metric([key], buckets, sum_value=float(sum(values)))
    return family


def _seconds(start: dt.datetime | None, end: dt.datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max((end - start).total_seconds(), 0.0)


class NodeCollector(Collector):
    """Reads the node's tables on each scrape (a handful of aggregate queries)."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions

    def describe(self) -> Iterable[Metric]:
        return []  # families depend on the data; describing them would run the queries at registration

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        up = GaugeMetricFamily(f"{PREFIX}_database_up", "1 if the database answered this scrape.")
        try:
            with self.sessions() as session:
                families = list(self._families(session))
        except SQLAlchemyError as exc:
            log.warning(
                "metrics scrape could not read the database", extra={"error": str(exc).splitlines()[0]}
            )
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up
        yield from families
        took = GaugeMetricFamily(f"{PREFIX}_scrape_duration_seconds", "Time spent reading the database.")
        took.add_metric([], time.perf_counter() - started)
        yield took

    def _families(self, session: Session) -> Iterator[Metric]:
        yield from self._received(session)
        yield from self._audit(session)
        yield from self._studies(session)
        yield from self._jobs(session)
        yield from self._outbox(session)
        yield from self._workers(session)
        yield from self._monitoring(session)

    def _received(self, session: Session) -> Iterator[Metric]:
        instances = CounterMetricFamily(
            f"{PREFIX}_instances_received", "Instances stored, by modality.", labels=["modality"]
        )
        size = CounterMetricFamily(
            f"{PREFIX}_received_bytes", "Bytes of instances stored, by modality.", labels=["modality"]
        )
        rows = session.execute(
            select(Instance.modality, func.count(), func.coalesce(func.sum(Instance.size_bytes), 0)).group_by(
                Instance.modality
            )
        )
        for modality, count, total in rows:
            instances.add_metric([modality or "unknown"], float(count))
            size.add_metric([modality or "unknown"], float(total))
        yield instances
        yield size
        last = GaugeMetricFamily(
            f"{PREFIX}_last_instance_timestamp_seconds", "Unix time of the newest stored instance."
        )
        newest = session.scalar(select(func.max(Instance.received_at)))
        if newest is not None:
            last.add_metric([], newest.timestamp())
        yield last

    def _audit(self, session: Session) -> Iterator[Metric]:
        events = CounterMetricFamily(
            f"{PREFIX}_audit_events", "Audit events by category and outcome.", labels=["category", "outcome"]
        )
        count: float
        for category, outcome, count in session.execute(
            select(AuditEvent.category, AuditEvent.outcome, func.count()).group_by(
                AuditEvent.category, AuditEvent.outcome
            )
        ):
            events.add_metric([category, outcome], float(count))
        yield events

        refusals = CounterMetricFamily(
            f"{PREFIX}_refusals",
            "Refused or rejected inputs by category and reason.",
            labels=["category", "reason"],
        )
        counted: dict[tuple[str, str], float] = {}
        for category, reason, count in session.execute(
            select(AuditEvent.category, AuditEvent.reason, func.count())
            .where(AuditEvent.outcome.in_(("refused", "rejected")))
            .group_by(AuditEvent.category, AuditEvent.reason)
        ):
            key = (category, reason_class(reason))
            counted[key] = counted.get(key, 0.0) + float(count)
        for (category, reason), count in sorted(counted.items()):
            refusals.add_metric([category, reason], count)
        yield refusals

        deliveries = CounterMetricFamily(
            f"{PREFIX}_delivery_attempts", "Delivery attempts by outcome.", labels=["outcome"]
        )
        for outcome, count in session.execute(
            select(AuditEvent.outcome, func.count())
            .where(AuditEvent.category == "delivery")
            .group_by(AuditEvent.outcome)
        ):
            deliveries.add_metric([outcome], float(count))
        yield deliveries

        failures = CounterMetricFamily(
            f"{PREFIX}_failures", "Audit events whose outcome is a failure.", labels=["category"]
        )
        for category, count in session.execute(
            select(AuditEvent.category, func.count())
            .where(AuditEvent.outcome.in_(FAILED_OUTCOMES))
            .group_by(AuditEvent.category)
        ):
            failures.add_metric([category], float(count))
        yield failures

    def _studies(self, session: Session) -> Iterator[Metric]:
        studies = GaugeMetricFamily(f"{PREFIX}_studies", "Studies by state.", labels=["state"])
        for state, count in sorted(studies_by_state(session).items()):
            studies.add_metric([state], float(count))
        yield studies
        purged = GaugeMetricFamily(f"{PREFIX}_studies_purged", "Studies whose images retention deleted.")
        purged.add_metric(
            [], float(session.scalar(select(func.count()).where(Study.purged_at.is_not(None))) or 0)
        )
        yield purged

    def _jobs(self, session: Session) -> Iterator[Metric]:
        by_state = count_by(session, Job.state)
        jobs = GaugeMetricFamily(f"{PREFIX}_jobs", "Analysis jobs by state.", labels=["state"])
        for state in JobState:
            jobs.add_metric([state.value], float(by_state.get(state.value, 0)))
        yield jobs
        depth = GaugeMetricFamily(f"{PREFIX}_queue_depth", "Jobs waiting for a worker.")
        depth.add_metric([], float(by_state.get(JobState.QUEUED.value, 0)))
        yield depth

        stages: dict[str, list[float]] = {}
        rows = session.execute(
            select(Job.created_at, Job.started_at, Job.finished_at, Job.timings).where(
                Job.state == JobState.DONE.value
            )
        )
        value: float | None
        for created, started, finished, timings in rows:
            for key, value in _numeric(timings):
                stages.setdefault(key, []).append(value)
            for key, value in (
                ("queue_wait", _seconds(created, started)),
                ("job_total", _seconds(started, finished)),
            ):
                if value is not None:
                    stages.setdefault(key, []).append(value)
        yield histogram(
            f"{PREFIX}_stage_seconds",
            "Stage latencies of finished jobs (job timings, queue wait, whole job).",
            "stage",
            stages,
        )

    def _outbox(self, session: Session) -> Iterator[Metric]:
        outbox = GaugeMetricFamily(
            f"{PREFIX}_outbox_items",
            "Result objects by delivery state and destination.",
            labels=["state", "destination"],
        )
        for state, destination, count in session.execute(
            select(OutboxItem.state, OutboxItem.destination, func.count()).group_by(
                OutboxItem.state, OutboxItem.destination
            )
        ):
            outbox.add_metric([state, destination], float(count))
        yield outbox

    def _workers(self, session: Session) -> Iterator[Metric]:
        stale_after = dt.timedelta(seconds=worker_stale_seconds(self.settings))
        rows = workers(session, stale_after=stale_after)
        alive = GaugeMetricFamily(
            f"{PREFIX}_workers", "Registered worker processes by liveness.", labels=["liveness"]
        )
        alive.add_metric(["alive"], float(sum(1 for w in rows if w.alive)))
        alive.add_metric(["stale"], float(sum(1 for w in rows if not w.alive)))
        yield alive
        age = GaugeMetricFamily(
            f"{PREFIX}_worker_heartbeat_age_seconds",
            "Seconds since each worker's heartbeat.",
            labels=["worker"],
        )
        now = utcnow()
        for w in rows:
            age.add_metric([w.id], max((now - w.heartbeat_at).total_seconds(), 0.0))
        yield age

    def _monitoring(self, session: Session) -> Iterator[Metric]:
        alarms = open_alarms(session)
        each = GaugeMetricFamily(
            f"{PREFIX}_monitoring_alarm",
            "1 for each open drift or novelty alarm (docs/monitoring.md); cleared alarms disappear.",
            labels=["kind", "scanner", "subject"],
        )
        for alarm in alarms:
            each.add_metric([alarm.kind, alarm.scanner, alarm.subject], 1.0)
        yield each
        total = GaugeMetricFamily(
            f"{PREFIX}_monitoring_alarms_open", "Open drift and novelty alarms by kind.", labels=["kind"]
        )
        for kind in ALARM_KINDS:
            total.add_metric([kind], float(sum(1 for alarm in alarms if alarm.kind == kind)))
        yield total


def _numeric(timings: Any) -> Iterator[tuple[str, float]]:
    if not isinstance(timings, dict):
        return
    for key, value in timings.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            yield str(key), float(value)


def worker_stale_seconds(settings: Settings) -> float:
    """A worker that has not beaten for two lease periods has lost its jobs: count it as dead."""
    return 2 * settings.workers.lease_seconds


def make_registry(settings: Settings, sessions: sessionmaker[Session]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(settings, sessions))
    return registry
