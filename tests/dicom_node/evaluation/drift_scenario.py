"""Five weeks of backdated results with known changes, for the drift tests.

Scanner A (SIEMENS Biograph Vision 600) sends 10 studies a day. Until day 19, 3 of 10 are called positive
(probability 0.9) and 7 negative (0.3); from day 20 on, 8 are positive (0.55) and 2 negative (0.2). The mean
probability stays 0.48 throughout, so only the positive-call rate drifts: outside its baseline's interval
from day 20, the 7th day in a row is day 26. Scanner B (GE Discovery MI) first sends on day 28, scanner A's
software changes on day 30 and its model weights on day 32. The baseline is 14 days.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from dicom_node.config import MonitoringSettings

START = dt.datetime(2025, 3, 3, tzinfo=dt.timezone.utc)
DAYS = 36
SHIFT_DAY, DRIFT_ALARM_DAY, NEW_SCANNER_DAY, NEW_SOFTWARE_DAY, NEW_WEIGHTS_DAY = 20, 26, 28, 30, 32
SCANNER_A = ("SIEMENS", "Biograph Vision 600")
SCANNER_B = ("GE MEDICAL SYSTEMS", "Discovery MI")
WEIGHTS_OLD, WEIGHTS_NEW = "d0" * 32, "e1" * 32
SETTINGS = MonitoringSettings(baseline_days=14, baseline_min_results=30)


def day(number: int) -> dt.date:
    return (START + dt.timedelta(days=number)).date()


@dataclass(frozen=True)
class Made:
    """One result of the scenario."""

    at: dt.datetime
    scanner: tuple[str, str]
    software: str
    weights: str
    probability: float


def results() -> list[Made]:
    made = []
    for number in range(DAYS):
        base = START + dt.timedelta(days=number, hours=8)
        shifted = number >= SHIFT_DAY
        probabilities = [0.55] * 8 + [0.2] * 2 if shifted else [0.9] * 3 + [0.3] * 7
        software = "VG80C" if number >= NEW_SOFTWARE_DAY else "VG80B"
        weights = WEIGHTS_NEW if number >= NEW_WEIGHTS_DAY else WEIGHTS_OLD
        for index, probability in enumerate(probabilities):
            made.append(
                Made(base + dt.timedelta(minutes=20 * index), SCANNER_A, software, weights, probability)
            )
        if number >= NEW_SCANNER_DAY:
            for index in range(5):
                made.append(
                    Made(
                        base + dt.timedelta(hours=4, minutes=index),
                        SCANNER_B,
                        "5.1",
                        WEIGHTS_OLD,
                        0.3 if index else 0.9,
                    )
                )
    return made
