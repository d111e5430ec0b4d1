"""The states a study, a job and a delivery can be in.

Plain enums apart from the mapped tables, so that the quick commands (`studies list`, `outbox list`) can
offer them as choices without importing the ORM.
"""

from __future__ import annotations

import enum


class StudyState(str, enum.Enum):
    RECEIVING = "receiving"
    COMPLETE = "complete"
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    REJECTED = "rejected"


class JobState(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class OutboxState(str, enum.Enum):
    PENDING = "pending"
    SENDING = "sending"
    DELIVERED = "delivered"
    CONFIRMED = "confirmed"
    FAILED = "failed"
