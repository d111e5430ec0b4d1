"""How pages show values: the Jinja environment with its filters and the disclaimer every page carries.

Filters live here, not in templates, so that a timestamp or a size reads the same on every page.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from fastapi.templating import Jinja2Templates
from pydicom.uid import ComprehensiveSRStorage, SegmentationStorage

from db import queries
from dicom_node import __version__
from dicom_node.config import Settings

TEMPLATES = Path(__file__).resolve().parent / "templates"
DISCLAIMER = "Research software: results are NOT FOR DIAGNOSTIC USE."
STRUCTURED_REPORT_ROOT = ComprehensiveSRStorage.rsplit(".", 1)[0] + "."
"""Every SR storage SOP class (1.2.840.10008.5.1.4.1.1.88.x) starts with this."""


def when(value: dt.datetime | None) -> str:
    """A timestamp as UTC text (the database hands back aware UTC datetimes)."""
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else ""


def size(value: int | float | None) -> str:
    """Bytes in the largest unit that keeps the number short."""
    amount = float(value or 0)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if amount < 1024 or unit == "TB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return ""


def kind(sop_class_uid: str | None) -> str:
    """What a result object is, from its SOP class: structured report, segmentation or secondary capture."""
    uid = sop_class_uid or ""
    if uid.startswith(STRUCTURED_REPORT_ROOT):
        return "SR"
    if uid == SegmentationStorage:
        return "SEG"
    return "SC" if uid in queries.SECONDARY_CAPTURE_CLASSES else uid


def percent(value: float | None) -> str:
    """A probability as a percentage with one decimal."""
    return "" if value is None else f"{100 * value:.1f} %"


def make_templates(settings: Settings) -> Jinja2Templates:
    """The page templates with the filters and the globals (disclaimer, version, AE title) they use."""
    templates = Jinja2Templates(directory=str(TEMPLATES))
    templates.env.filters.update(when=when, size=size, percent=percent, kind=kind)
    templates.env.globals.update(disclaimer=DISCLAIMER, version=__version__, ae_title=settings.node.ae_title)
    return templates
