"""Structured logging: one JSON object per line, with context fields, and never a patient name.

Patient-identifying values belong in the audit database where admins can see them, not in log files that
are shipped around; `PatientNameFilter` scrubs anything passed under a patient-ish key. Python's warnings
(PyTorch's too, e.g. "... does not have a deterministic implementation" from Grad-CAM's backward pass on a
GPU) would print raw lines between the JSON ones and repeat for every study: `WarningsToLog` makes each kind
one structured event, once per process.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, TextIO

from dicom_node.config import LoggingSettings

_PHI_KEYS = {"patient_name", "PatientName", "patient_birth_date", "PatientBirthDate", "patients_name"}
_RESERVED = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class PatientNameFilter(logging.Filter):
    """Drops patient-identifying extras from every record before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key in _PHI_KEYS:
            if key in record.__dict__:
                record.__dict__[key] = "<redacted>"
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                payload[key] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{k}={v}" for k, v in record.__dict__.items() if k not in _RESERVED and not k.startswith("_")
        )
        base = f"{self.formatTime(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        text = f"{base} {extras}".rstrip()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class WarningsToLog:
    """`warnings.showwarning` for the node's processes: a warning the filters let through becomes one
    WARNING event of the "py.warnings" logger, the first time its kind (category and the code line that
    raised it) occurs in this process; repeats are dropped, whatever filter a library installed."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, str, int]] = set()
        self._lock = threading.Lock()

    def __call__(self, message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: TextIO | None = None, line: str | None = None) -> None:
        kind = (category.__name__, filename, lineno)
        with self._lock:
            if kind in self._seen:
                return
            self._seen.add(kind)
        logging.getLogger("py.warnings").warning("python warning", extra={
            "category": category.__name__, "warning": str(message), "source": f"{filename}:{lineno}"})


def configure_logging(settings: LoggingSettings) -> None:
    """Route every logger of the node (and pynetdicom's) and Python's warnings to stderr and optionally a
    file."""
    formatter: logging.Formatter = JsonFormatter() if settings.format == "json" else TextFormatter()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if settings.file is not None:
        Path(settings.file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(settings.file))
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(PatientNameFilter())
        root.addHandler(handler)
    root.setLevel(settings.level)
    quiet = max(logging.WARNING, logging.getLevelName(settings.level))
    for library in ("pynetdicom", "highdicom"):  # their INFO lines narrate every PDU / copied module
        logging.getLogger(library).setLevel(quiet)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    if not isinstance(warnings.showwarning, WarningsToLog):
        warnings.showwarning = WarningsToLog()
