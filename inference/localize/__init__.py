"""Where the 200 mm analysis cube is centred: the prostate, or the urinary bladder when there is none.

Two interchangeable localisers: `anatomical` (default, needs no weights: bony landmarks and tissue densities
on a coarse CT grid) and `totalsegmentator` (the published method, run in a subprocess).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from inference.result import Localisation
from inference.volume import Series


class LocalisationError(ValueError):
    """The CT does not allow a trustworthy centre; the message says what was missing and where it looked."""


class Localizer(Protocol):
    def locate(self, ct: Series, pet: Series | None = None) -> Localisation:
        """Centre of the prostate (or bladder) in LPS mm, or LocalisationError."""
        ...


@dataclass(frozen=True)
class LocalizerOptions:
    """Which localiser runs and how (the node builds this from its `localizer` settings)."""

    kind: Literal["anatomical", "totalsegmentator"] = "anatomical"
    totalsegmentator_home: Path = Path("~/.totalsegmentator")
    totalsegmentator_command: str = "TotalSegmentator"
    totalsegmentator_fast: bool = False
    totalsegmentator_timeout_seconds: float = 1800.0
    anatomical_grid_mm: float = 4.0


def make_localizer(options: LocalizerOptions) -> Localizer:
    """The localiser the options name."""
    if options.kind == "totalsegmentator":
        from inference.localize.totalsegmentator import TotalSegmentatorLocalizer

        return TotalSegmentatorLocalizer(
            command=options.totalsegmentator_command,
            home=options.totalsegmentator_home.expanduser(),
            fast=options.totalsegmentator_fast,
            timeout_seconds=options.totalsegmentator_timeout_seconds,
        )
    from inference.localize.anatomical import AnatomicalLocalizer

    return AnatomicalLocalizer(grid_mm=options.anatomical_grid_mm)
