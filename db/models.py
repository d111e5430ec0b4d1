"""Tables of the node: what was received, what each study is doing, jobs, results, deliveries, audit.

The stages of the node talk to each other only through these rows (and the storage folder), which is what
lets the receiver, the workers and the sender run in different processes or on different machines.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from db.clock import utcnow
from db.states import JobState, OutboxState, StudyState
from db.types import UTCDateTime


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, dt.datetime: UTCDateTime(), dt.date: Date()}


class Study(Base):
    """One DICOM study as the node sees it; `generation` grows each time new data reopens it."""

    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(64), unique=True)
    accession_number: Mapped[str | None] = mapped_column(String(64), index=True)
    patient_id: Mapped[str | None] = mapped_column(String(64), index=True)
    patient_name: Mapped[str | None] = mapped_column(String(324))
    study_date: Mapped[str | None] = mapped_column(String(8))
    calling_ae: Mapped[str | None] = mapped_column(String(16))
    calling_host: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default=StudyState.RECEIVING.value, index=True)
    state_reason: Mapped[str | None] = mapped_column(Text)
    generation: Mapped[int] = mapped_column(Integer, default=1)
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    pet_series_uid: Mapped[str | None] = mapped_column(String(64))
    ct_series_uid: Mapped[str | None] = mapped_column(String(64))
    first_received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_received_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    completeness_proven_at: Mapped[dt.datetime | None] = mapped_column()
    # instance_count and last_received_at as they were when assembly decided this study (complete/rejected):
    # any difference later means new data arrived, and the study reopens. Comparing values, not clocks,
    # keeps this right across machines and for rows committed just after the decision.
    assessed_instance_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    assessed_received_at: Mapped[dt.datetime | None] = mapped_column()
    state_changed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    purged_at: Mapped[dt.datetime | None] = mapped_column()

    instances: Mapped[list["Instance"]] = relationship(back_populates="study")


class Instance(Base):
    """A stored DICOM instance (one revision); header fields later stages need, read without pixels."""

    __tablename__ = "instances"
    __table_args__ = (
        UniqueConstraint("sop_instance_uid", "revision", name="uq_instance_revision"),
        Index("ix_instances_series", "series_uid"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    study_uid: Mapped[str] = mapped_column(String(64), index=True)
    series_uid: Mapped[str] = mapped_column(String(64))
    sop_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    revision: Mapped[int] = mapped_column(Integer, default=1)
    current: Mapped[bool] = mapped_column(Boolean, default=True)
    path: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    analysable: Mapped[bool] = mapped_column(Boolean, default=True)
    missing_file: Mapped[bool] = mapped_column(Boolean, default=False)
    modality: Mapped[str | None] = mapped_column(String(16))
    frame_of_reference_uid: Mapped[str | None] = mapped_column(String(64))
    instance_number: Mapped[int | None] = mapped_column(Integer)
    image_index: Mapped[int | None] = mapped_column(Integer)
    number_of_slices: Mapped[int | None] = mapped_column(Integer)
    number_of_time_slices: Mapped[int | None] = mapped_column(Integer)
    slice_position: Mapped[float | None] = mapped_column(Float)
    header: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    calling_ae: Mapped[str | None] = mapped_column(String(16))
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    study: Mapped[Study] = relationship(back_populates="instances")


class Job(Base):
    """One analysis of one generation of a study; claimed by a worker under a renewable lease."""

    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("study_id", "generation", name="uq_job_generation"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    generation: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default=JobState.QUEUED.value, index=True)
    pet_series_uid: Mapped[str | None] = mapped_column(String(64))
    ct_series_uid: Mapped[str | None] = mapped_column(String(64))
    worker_id: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column()
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column()
    finished_at: Mapped[dt.datetime | None] = mapped_column()
    error: Mapped[str | None] = mapped_column(Text)
    timings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    flags: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Result(Base):
    """What an analysis concluded, with full provenance; a newer result supersedes an older one."""

    __tablename__ = "results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    model_id: Mapped[str | None] = mapped_column(String(32))
    weights_sha256: Mapped[str | None] = mapped_column(String(64))
    software_version: Mapped[str] = mapped_column(String(32))
    probability: Mapped[float | None] = mapped_column(Float)
    finding: Mapped[str] = mapped_column(String(16))
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    sr_sop_instance_uid: Mapped[str | None] = mapped_column(String(64))
    sc_series_uid: Mapped[str | None] = mapped_column(String(64))
    superseded_by_id: Mapped[int | None] = mapped_column(ForeignKey("results.id"))


class OutboxItem(Base):
    """One object to deliver to one destination; the file exists before the first attempt."""

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("sop_instance_uid", "destination", name="uq_outbox_object_destination"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    result_id: Mapped[int | None] = mapped_column(ForeignKey("results.id"), index=True)
    study_uid: Mapped[str] = mapped_column(String(64), index=True)
    destination: Mapped[str] = mapped_column(String(64), index=True)
    path: Mapped[str] = mapped_column(Text)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    sop_instance_uid: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default=OutboxState.PENDING.value, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[dt.datetime | None] = mapped_column()
    confirmed_at: Mapped[dt.datetime | None] = mapped_column()
    sent_as_sop_class_uid: Mapped[str | None] = mapped_column(String(64))
    retry_window_start: Mapped[dt.datetime | None] = mapped_column()


class ClinicalInfo(Base):
    """PSA / prostatectomy registered for an accession (CLI or HTTP), newest row wins."""

    __tablename__ = "clinical_info"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    accession_number: Mapped[str | None] = mapped_column(String(64), index=True)
    patient_id: Mapped[str | None] = mapped_column(String(64), index=True)
    psa_ng_ml: Mapped[float | None] = mapped_column(Float)
    prostatectomy: Mapped[bool | None] = mapped_column(Boolean)
    source: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class WorkerHeartbeat(Base):
    """Liveness of worker processes, for health pages and for noticing dead workers."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    host: Mapped[str] = mapped_column(String(128))
    pid: Mapped[int] = mapped_column(Integer)
    device: Mapped[str | None] = mapped_column(String(32))
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    current_job_id: Mapped[int | None] = mapped_column(Integer)


class DashboardSession(Base):
    """A dashboard login: its cookie names the row and logout deletes it, so an old cookie opens nothing.

    The id is the SHA-256 of the cookie's session id: reading this table does not let anyone log in."""

    __tablename__ = "dashboard_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_name: Mapped[str] = mapped_column(String(128), index=True)
    peer: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)


class AuditEvent(Base):
    """Append-only trail: nothing in the product updates or deletes these rows."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_category_time", "category", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    category: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16), default="ok")
    reason: Mapped[str | None] = mapped_column(Text)
    study_uid: Mapped[str | None] = mapped_column(String(64), index=True)
    series_uid: Mapped[str | None] = mapped_column(String(64))
    sop_instance_uid: Mapped[str | None] = mapped_column(String(64))
    actor: Mapped[str | None] = mapped_column(String(128))
    peer: Mapped[str | None] = mapped_column(String(128))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class ResultDescriptors(Base):
    """The inputs and settings one result was made under, read from the headers the analysis already had.

    One row per result, written in the worker's transaction with the result: what `evaluate` filters on and
    what drift monitoring watches (scanner, software, acquisition, patient and model descriptors). Typed
    columns rather than JSON so that both databases filter and group them alike."""

    __tablename__ = "result_descriptors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("results.id"), unique=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    manufacturer: Mapped[str | None] = mapped_column(String(64))
    scanner_model: Mapped[str | None] = mapped_column(String(64), index=True)
    software_versions: Mapped[str | None] = mapped_column(String(128))
    reconstruction_method: Mapped[str | None] = mapped_column(String(128))
    convolution_kernel: Mapped[str | None] = mapped_column(String(128))
    tracer: Mapped[str | None] = mapped_column(String(128))
    pet_voxel_mm: Mapped[list[float] | None] = mapped_column(JSON)
    """Row spacing, column spacing and slice spacing of the PET grid (mm)."""
    pet_slice_thickness_mm: Mapped[float | None] = mapped_column(Float)
    injected_activity_mbq: Mapped[float | None] = mapped_column(Float)
    uptake_time_min: Mapped[float | None] = mapped_column(Float)
    weight_kg: Mapped[float | None] = mapped_column(Float)
    psa_ng_ml: Mapped[float | None] = mapped_column(Float)
    psa_source: Mapped[str | None] = mapped_column(String(16))
    prostatectomy: Mapped[bool | None] = mapped_column(Boolean)
    prostatectomy_source: Mapped[str | None] = mapped_column(String(16))
    model_id: Mapped[str | None] = mapped_column(String(32))
    weights_sha256: Mapped[str | None] = mapped_column(String(64))
    threshold: Mapped[float | None] = mapped_column(Float)
    probability: Mapped[float | None] = mapped_column(Float)
    positive: Mapped[bool | None] = mapped_column(Boolean)
    """probability ≥ threshold; None when the classifier did not run."""
    results_mode: Mapped[str] = mapped_column(String(8), default="live")
    """live | shadow: whether the result went to clinical destinations."""
    envelope_violations: Mapped[list[str]] = mapped_column(JSON, default=list)
    """Plain-language reasons the inputs lie outside the validated envelope; empty when inside."""


class ReaderAssessment(Base):
    """A reader's verdict on one result. Append-only: a correction is a new row; per reader the latest counts."""

    __tablename__ = "reader_assessments"
    __table_args__ = (Index("ix_reader_assessments_result_reader", "result_id", "reader"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("results.id"), index=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    reader: Mapped[str] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(String(16))
    """dashboard | api | dicom"""
    verdict: Mapped[str] = mapped_column(String(16))
    """agree | disagree | modified"""
    reader_finding: Mapped[str] = mapped_column(String(16))
    """present | absent | indeterminate: the reader's own finding for local recurrence."""
    reason: Mapped[str | None] = mapped_column(String(48))
    comment: Mapped[str | None] = mapped_column(Text)
    seen_ai_before_report: Mapped[bool | None] = mapped_column(Boolean)
    assessed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str | None] = mapped_column(String(128))
    """Who entered it (dashboard user, API token, calling AE), which may differ from the reader."""
    sop_instance_uid: Mapped[str | None] = mapped_column(String(64), unique=True)
    """The reader's SR, for source dicom: a re-sent SR is recognised and not recorded twice."""


class ReferenceStandard(Base):
    """What turned out to be true for a study. History kept: the newest row counts."""

    __tablename__ = "reference_standards"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    recurrence: Mapped[bool] = mapped_column(Boolean)
    method: Mapped[str] = mapped_column(String(24))
    """histopathology | imaging-follow-up | psa-response | composite | other"""
    reference_date: Mapped[dt.date | None] = mapped_column(Date)
    source: Mapped[str | None] = mapped_column(String(128))
    channel: Mapped[str] = mapped_column(String(16))
    """How it got in: dashboard | api | csv."""
    actor: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)


class MonitoringAlarm(Base):
    """A drift or novelty alarm, raised once per kind, scanner and subject; cleared when it no longer holds."""

    __tablename__ = "monitoring_alarms"
    __table_args__ = (
        UniqueConstraint("kind", "scanner", "subject", "raised_on", name="uq_monitoring_alarm"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    """statistic | new-scanner | new-software | new-weights"""
    scanner: Mapped[str] = mapped_column(String(128), default="")
    subject: Mapped[str] = mapped_column(String(128))
    """The statistic's name, or the new scanner / software version / weights digest."""
    raised_on: Mapped[dt.date] = mapped_column(Date)
    message: Mapped[str] = mapped_column(Text)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    cleared_at: Mapped[dt.datetime | None] = mapped_column()
