"""Drift and novelty, judged from the results alone: pure functions of the monitored rows, the settings and
the day, so that evaluating the same history gives the same alarms whenever it runs.

Per scanner, each statistic (docs/monitoring.md lists them) is reduced to one value per day. A scanner's
baseline is its first `baseline_days` days (from `baseline_start` when set), extended until it holds
`baseline_min_results` results. After it, a completed day with at least `min_daily_results` observations
is judged against the interval the baseline predicts for a day of that many observations:
- a rate (0/1 observations): the central 95 % binomial interval at the baseline's rate (`binom.interval`);
- a mean: the baseline mean ± 1.96 baseline standard deviations / √n.
An alarm is raised on the `consecutive_days`-th judged day in a row outside the interval, and cleared on the
first judged day back inside; days with too few observations neither count nor break the run. A scanner,
a software version on a known scanner, or model weights first seen after the baseline raise a novelty alarm
on the day they first appear.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Literal

from scipy.stats import binom

from db.monitoring import STATISTIC_KIND, Condition, MonitoredResult
from dicom_node.config import MonitoringSettings
from dicom_node.evaluation.statistics import Z95
from dicom_node.evaluation.vocabulary import Verdict

AGREE = Verdict.AGREE.value
TOLERANCE = 1e-9
"""Relative slack when comparing a daily mean with a zero-width interval (a constant descriptor)."""


@dataclass(frozen=True)
class Statistic:
    name: str
    label: str
    kind: Literal["rate", "mean"]
    unit: str
    observe: Callable[[MonitoredResult], list[float]]

    @property
    def title(self) -> str:
        """The label with its unit: `uptake time (min)`."""
        return f"{self.label} ({self.unit})" if self.unit else self.label

    def show(self, value: float) -> str:
        return f"{value:.3g} {self.unit}".rstrip()


def _value(getter: Callable[[MonitoredResult], float | None]) -> Callable[[MonitoredResult], list[float]]:
    def observe(row: MonitoredResult) -> list[float]:
        value = getter(row)
        return [] if value is None else [float(value)]

    return observe


def _disagreements(row: MonitoredResult) -> list[float]:
    return [0.0 if verdict == AGREE else 1.0 for verdict in row.verdicts]


STATISTICS: dict[str, Statistic] = {
    s.name: s
    for s in (
        Statistic(
            "positive_rate",
            "positive-call rate",
            "rate",
            "",
            _value(lambda r: None if r.positive is None else float(r.positive)),
        ),
        Statistic("mean_probability", "mean probability", "mean", "", _value(lambda r: r.probability)),
        Statistic("disagreement_rate", "reader disagreement rate", "rate", "", _disagreements),
        Statistic(
            "envelope_violation_rate",
            "out-of-envelope rate",
            "rate",
            "",
            _value(lambda r: float(r.envelope_violations > 0)),
        ),
        Statistic("uptake_time_min", "uptake time", "mean", "min", _value(lambda r: r.uptake_time_min)),
        Statistic(
            "injected_activity_mbq",
            "injected activity",
            "mean",
            "MBq",
            _value(lambda r: r.injected_activity_mbq),
        ),
        Statistic("weight_kg", "patient weight", "mean", "kg", _value(lambda r: r.weight_kg)),
        Statistic(
            "pet_pixel_spacing_mm",
            "PET pixel spacing",
            "mean",
            "mm",
            _value(lambda r: r.pet_pixel_spacing_mm),
        ),
        Statistic(
            "pet_slice_spacing_mm",
            "PET slice spacing",
            "mean",
            "mm",
            _value(lambda r: r.pet_slice_spacing_mm),
        ),
        Statistic(
            "pet_slice_thickness_mm",
            "PET slice thickness",
            "mean",
            "mm",
            _value(lambda r: r.pet_slice_thickness_mm),
        ),
    )
}


@dataclass(frozen=True)
class SeriesPoint:
    """One day of a monitored statistic; low and high are the interval the baseline allows (None when the
    day had too few observations to be judged)."""

    day: dt.date
    value: float
    low: float | None
    high: float | None
    outside: bool


@dataclass(frozen=True)
class Baseline:
    """What a statistic looked like while the baseline lasted."""

    observations: int
    value: float
    spread: float
    """Standard deviation of the observations (for a rate: √(p(1-p)))."""

    def interval(self, statistic: Statistic, n: int) -> tuple[float, float]:
        """The 95 % interval for the value of a day with `n` observations."""
        if statistic.kind == "rate":
            low, high = binom.interval(0.95, n, self.value)
            return float(low) / n, float(high) / n
        half = Z95 * self.spread / math.sqrt(n)
        return self.value - half, self.value + half


def _outside(value: float, interval: tuple[float, float]) -> bool:
    low, high = interval
    slack = TOLERANCE * max(1.0, abs(low), abs(high))
    return value < low - slack or value > high + slack


@dataclass
class StatisticSeries:
    statistic: Statistic
    baseline: Baseline | None
    points: list[SeriesPoint] = field(default_factory=list)
    note: str = ""


@dataclass
class ScannerMonitoring:
    scanner: str
    results: int
    first_day: dt.date
    baseline_start: dt.date
    baseline_end: dt.date | None
    """First day after the baseline; None while the baseline is still collecting results."""
    baseline_results: int
    series: dict[str, StatisticSeries] = field(default_factory=dict)


@dataclass
class MonitoringState:
    """What monitoring concluded at `today`: every condition found, and the series behind them."""

    today: dt.date
    conditions: list[Condition]
    scanners: list[ScannerMonitoring]


def baseline_window(days: Sequence[dt.date], settings: MonitoringSettings) -> tuple[dt.date, dt.date | None]:
    """(first day, first day after the baseline) of sorted result days; None while it is incomplete."""
    start = days[0]
    end = start + dt.timedelta(days=settings.baseline_days)
    inside = sum(1 for day in days if day < end)
    if inside >= settings.baseline_min_results:
        return start, end
    if len(days) < settings.baseline_min_results:
        return start, None
    return start, days[settings.baseline_min_results - 1] + dt.timedelta(days=1)


def _baseline(statistic: Statistic, rows: Sequence[MonitoredResult]) -> Baseline | None:
    values = [v for row in rows for v in statistic.observe(row)]
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    if statistic.kind == "rate":
        spread = math.sqrt(mean * (1 - mean))
    else:
        spread = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return Baseline(len(values), mean, spread)


def _daily(statistic: Statistic, rows: Sequence[MonitoredResult]) -> dict[dt.date, list[float]]:
    days: dict[dt.date, list[float]] = {}
    for row in rows:
        values = statistic.observe(row)
        if values:
            days.setdefault(row.day, []).extend(values)
    return days


def _drift(
    statistic: Statistic,
    scanner: str,
    run: Sequence[SeriesPoint],
    interval: tuple[float, float],
    observations: int,
    baseline: Baseline,
    settings: MonitoringSettings,
) -> Condition:
    """The condition for a run of days outside the interval, raised on its last day."""
    first, last = run[0], run[-1]
    show = statistic.show
    return Condition(
        kind=STATISTIC_KIND,
        scanner=scanner,
        subject=statistic.name,
        raised_on=last.day,
        message=(
            f"{statistic.label} on {scanner} outside its baseline's 95 % interval for "
            f"{settings.consecutive_days} days in a row ({first.day.isoformat()} to {last.day.isoformat()}): "
            f"{show(last.value)} on the last day, expected {show(interval[0])} to {show(interval[1])} "
            f"for {observations} observations (baseline {show(baseline.value)})"
        ),
        detail={
            "statistic": statistic.name,
            "first_day_outside": first.day.isoformat(),
            "values": [round(p.value, 6) for p in run],
            "baseline_value": baseline.value,
            "baseline_observations": baseline.observations,
            "interval": list(interval),
        },
    )


def _judge(
    statistic: Statistic,
    scanner: str,
    rows: Sequence[MonitoredResult],
    baseline_end: dt.date,
    baseline: Baseline,
    today: dt.date,
    settings: MonitoringSettings,
) -> tuple[list[SeriesPoint], list[Condition]]:
    """The daily series after the baseline, and the drift episodes in it."""
    points: list[SeriesPoint] = []
    conditions: list[Condition] = []
    run: list[SeriesPoint] = []
    episode: Condition | None = None
    for day, values in sorted(_daily(statistic, rows).items()):
        if day < baseline_end or day >= today:
            continue
        value = sum(values) / len(values)
        if len(values) < settings.min_daily_results:
            points.append(SeriesPoint(day, value, None, None, False))
            continue
        interval = baseline.interval(statistic, len(values))
        point = SeriesPoint(day, value, interval[0], interval[1], _outside(value, interval))
        points.append(point)
        if not point.outside:
            if episode is not None:
                conditions[-1] = replace(episode, cleared_on=day)
                episode = None
            run = []
            continue
        run.append(point)
        if len(run) == settings.consecutive_days and episode is None:
            episode = _drift(statistic, scanner, run, interval, len(values), baseline, settings)
            conditions.append(episode)
    return points, conditions


def _scanner(
    scanner: str, rows: list[MonitoredResult], today: dt.date, settings: MonitoringSettings
) -> tuple[ScannerMonitoring, list[Condition]]:
    start, end = baseline_window([row.day for row in rows], settings)
    in_baseline = [row for row in rows if end is None or row.day < end]
    state = ScannerMonitoring(scanner, len(rows), rows[0].day, start, end, len(in_baseline))
    conditions: list[Condition] = []
    for name in settings.statistics:
        statistic = STATISTICS[name]
        if end is None:
            state.series[name] = StatisticSeries(
                statistic,
                None,
                note=f"baseline collecting: {len(rows)} of {settings.baseline_min_results} results",
            )
            continue
        baseline = _baseline(statistic, in_baseline)
        if baseline is None:
            state.series[name] = StatisticSeries(statistic, None, note="not recorded in the baseline")
            continue
        points, found = _judge(statistic, scanner, rows, end, baseline, today, settings)
        state.series[name] = StatisticSeries(statistic, baseline, points)
        conditions.extend(found)
    return state, conditions


def _novelties(
    kind: str,
    rows: Sequence[MonitoredResult],
    known_until: dt.date | None,
    subject: Callable[[MonitoredResult], str | None],
    describe: Callable[[str, dt.date], str],
    scanner: str | None,
) -> list[Condition]:
    """Subjects first seen on or after `known_until` (those seen before it are the baseline's). The
    conditions name `scanner`, or, when it is None, the subject itself (a new scanner)."""
    first_seen: dict[str, dt.date] = {}
    for row in rows:
        value = subject(row)
        if value is not None:
            first_seen.setdefault(value, row.day)
    if known_until is None:
        return []
    return [
        Condition(
            kind, value if scanner is None else scanner, value, day, describe(value, day),
            detail={"first_seen": day.isoformat()},
        )
        for value, day in sorted(first_seen.items(), key=lambda item: (item[1], item[0]))
        if day >= known_until
    ]


def _new_software(scanner: str, version: str, day: dt.date) -> str:
    return f"new software version {version!r} on {scanner}: first result {day.isoformat()}"


def _short_weights(weights: str) -> str:
    model, _, digest = weights.partition(":")
    return f"{model} {digest[:12]}"


def assess(rows: Sequence[MonitoredResult], settings: MonitoringSettings, today: dt.date) -> MonitoringState:
    """Every drift and novelty condition in the history `rows` (oldest first), as of the start of `today`."""
    if settings.baseline_start is not None:
        rows = [row for row in rows if row.day >= settings.baseline_start]
    rows = sorted(rows, key=lambda row: (row.created_at, row.result_id))
    if not rows:
        return MonitoringState(today, [], [])
    _, node_baseline_end = baseline_window([row.day for row in rows], settings)
    conditions = _novelties(
        "new-scanner",
        rows,
        node_baseline_end,
        lambda r: r.scanner,
        lambda s, day: (
            f"new scanner {s}: first result {day.isoformat()}; its statistics are judged once its own "
            "baseline is complete, and the model's validation does not cover it until a local one does"
        ),
        scanner=None,
    )
    conditions += _novelties(
        "new-weights",
        rows,
        node_baseline_end,
        lambda r: r.weights,
        lambda w, day: (
            f"new model weights {_short_weights(w)}: first result {day.isoformat()}; earlier local "
            "performance figures do not apply to them"
        ),
        scanner="",
    )
    scanners: list[ScannerMonitoring] = []
    by_scanner: dict[str, list[MonitoredResult]] = {}
    for row in rows:
        by_scanner.setdefault(row.scanner, []).append(row)
    for scanner, scanner_rows in sorted(by_scanner.items()):
        state, found = _scanner(scanner, scanner_rows, today, settings)
        scanners.append(state)
        conditions += found
        conditions += _novelties(
            "new-software",
            scanner_rows,
            state.baseline_end,
            lambda r: r.software_versions,
            partial(_new_software, scanner),
            scanner=scanner,
        )
    conditions.sort(key=lambda c: (c.raised_on, c.kind, c.scanner, c.subject))
    return MonitoringState(today, conditions, scanners)
