"""Where the 200 mm analysis cube is centred: the prostate, or the urinary bladder when there is none.

Two interchangeable localisers: `anatomical` (default, needs no weights: bony landmarks and tissue densities
on a coarse CT grid) and `totalsegmentator` (the published method, run in a subprocess).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from inference.result import Localisation
from inference.volume import Series

if TYPE_CHECKING:
    from dicom_node.config import LocalizerSettings


class LocalisationError(ValueError):
    """The CT does not allow a trustworthy centre; the message says what was missing and where it looked."""


class Localizer(Protocol):
    def locate(self, ct: Series, pet: Series | None = None) -> Localisation:
        """Centre of the prostate (or bladder) in LPS mm, or LocalisationError."""
        ...


def make_localizer(settings: LocalizerSettings) -> Localizer:
    """The localiser the configuration names."""
    if settings.kind == "totalsegmentator":
        from inference.localize.totalsegmentator import TotalSegmentatorLocalizer

        return TotalSegmentatorLocalizer(
            command=settings.totalsegmentator_command,
            home=settings.totalsegmentator_home.expanduser(),
            fast=settings.totalsegmentator_fast,
            timeout_seconds=settings.totalsegmentator_timeout_seconds,
        )
    from inference.localize.anatomical import AnatomicalLocalizer

    return AnatomicalLocalizer(grid_mm=settings.anatomical_grid_mm)
