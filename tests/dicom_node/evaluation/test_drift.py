"""`drift.assess`: the rules on plain rows — one condition per change, raised on the right day."""

from __future__ import annotations

import datetime as dt
import itertools

from db.monitoring import MonitoredResult
from dicom_node.config import MonitoringSettings
from dicom_node.evaluation.drift import assess, baseline_window
from tests.dicom_node.evaluation import drift_scenario as scenario

_ids = itertools.count(1)


def row(
    at: dt.datetime,
    *,
    scanner: str = "SIEMENS Biograph Vision 600",
    software: str = "VG80B",
    weights: str = "D:" + "d0" * 32,
    probability: float = 0.3,
    threshold: float = 0.5,
    verdicts: tuple[str, ...] = (),
    uptake: float = 60.0,
) -> MonitoredResult:
    return MonitoredResult(
        result_id=next(_ids),
        created_at=at,
        scanner=scanner,
        software_versions=software,
        weights=weights,
        positive=probability >= threshold,
        probability=probability,
        verdicts=verdicts,
        envelope_violations=0,
        uptake_time_min=uptake,
        injected_activity_mbq=250.0,
        weight_kg=80.0,
        pet_pixel_spacing_mm=4.0,
        pet_slice_spacing_mm=3.0,
        pet_slice_thickness_mm=3.0,
    )


def scenario_rows() -> list[MonitoredResult]:
    return [
        row(
            m.at,
            scanner=" ".join(m.scanner),
            software=m.software,
            weights=f"D:{m.weights}",
            probability=m.probability,
        )
        for m in scenario.results()
    ]


def test_a_scanner_change_a_shift_in_positive_calls_new_software_and_weights_each_raise_one_condition() -> (
    None
):
    state = assess(scenario_rows(), scenario.SETTINGS, scenario.day(scenario.DAYS))
    found = [(c.kind, c.scanner, c.subject, c.raised_on, c.cleared_on) for c in state.conditions]
    assert found == [
        (
            "statistic",
            "SIEMENS Biograph Vision 600",
            "positive_rate",
            scenario.day(scenario.DRIFT_ALARM_DAY),
            None,
        ),
        (
            "new-scanner",
            "GE MEDICAL SYSTEMS Discovery MI",
            "GE MEDICAL SYSTEMS Discovery MI",
            scenario.day(scenario.NEW_SCANNER_DAY),
            None,
        ),
        (
            "new-software",
            "SIEMENS Biograph Vision 600",
            "VG80C",
            scenario.day(scenario.NEW_SOFTWARE_DAY),
            None,
        ),
        ("new-weights", "", "D:" + scenario.WEIGHTS_NEW, scenario.day(scenario.NEW_WEIGHTS_DAY), None),
    ]
    drift = state.conditions[0]
    assert drift.detail and drift.detail["first_day_outside"] == scenario.day(scenario.SHIFT_DAY).isoformat()
    assert "positive-call rate" in drift.message and "7 days in a row" in drift.message
    a = next(s for s in state.scanners if s.scanner == "SIEMENS Biograph Vision 600")
    assert a.baseline_end == scenario.day(14)
    assert a.series["mean_probability"].baseline is not None
    assert not any(p.outside for p in a.series["mean_probability"].points)
    assert a.series["disagreement_rate"].note == "not recorded in the baseline"


def test_the_day_of_the_alarm_does_not_depend_on_when_it_is_judged() -> None:
    rows = scenario_rows()
    before = assess(rows, scenario.SETTINGS, scenario.day(scenario.DRIFT_ALARM_DAY))
    assert [c.kind for c in before.conditions if c.kind == "statistic"] == []  # day 26 is not complete yet
    on_time = assess(rows, scenario.SETTINGS, scenario.day(scenario.DRIFT_ALARM_DAY + 1))
    (drift,) = [c for c in on_time.conditions if c.kind == "statistic"]
    assert drift.raised_on == scenario.day(scenario.DRIFT_ALARM_DAY)


def test_days_with_too_few_results_neither_count_nor_break_the_run_and_a_day_inside_clears() -> None:
    settings = MonitoringSettings(
        baseline_days=5, baseline_min_results=10, consecutive_days=3, min_daily_results=3
    )
    start = dt.datetime(2025, 1, 1, 8, tzinfo=dt.timezone.utc)
    rows = []
    plan = ["base"] * 5 + ["high", "few", "high", "high", "base", "high"]
    for number, kind in enumerate(plan):
        at = start + dt.timedelta(days=number)
        count = 1 if kind == "few" else 4
        rows += [
            row(at + dt.timedelta(minutes=i), uptake=60.0 if kind != "high" else 95.0) for i in range(count)
        ]
    state = assess(rows, settings, (start + dt.timedelta(days=len(plan))).date())
    (uptake,) = [c for c in state.conditions if c.subject == "uptake_time_min"]
    assert uptake.raised_on == (start + dt.timedelta(days=8)).date()  # high, (few), high, high
    assert uptake.cleared_on == (start + dt.timedelta(days=9)).date()  # back inside


def test_the_baseline_waits_for_enough_results_and_starts_where_configured() -> None:
    days = [dt.date(2025, 1, 1) + dt.timedelta(days=d) for d in (0, 0, 1, 20, 21, 22)]
    settings = MonitoringSettings(baseline_days=7, baseline_min_results=5)
    assert baseline_window(days, settings) == (days[0], dt.date(2025, 1, 23))  # the day after the 5th result
    assert baseline_window(days[:4], settings) == (days[0], None)
    rows = scenario_rows()
    later = MonitoringSettings(baseline_days=14, baseline_min_results=30, baseline_start=scenario.day(20))
    state = assess(rows, later, scenario.day(scenario.DAYS))
    # the shift is the new baseline; the scanner seen on day 28 is within it now, and so are the changes
    assert state.conditions == [] and state.scanners[1].baseline_start == scenario.day(20)


def test_readers_disagreeing_more_often_is_drift_too() -> None:
    settings = MonitoringSettings(
        baseline_days=3,
        baseline_min_results=6,
        consecutive_days=2,
        min_daily_results=2,
        statistics=["disagreement_rate"],
    )
    start = dt.datetime(2025, 1, 1, 8, tzinfo=dt.timezone.utc)
    rows = []
    for number in range(6):
        verdicts = (
            ("agree", "agree", "agree", "disagree") if number < 3 else ("disagree", "modified", "disagree")
        )
        rows += [row(start + dt.timedelta(days=number, minutes=i), verdicts=verdicts) for i in range(3)]
    (alarm,) = assess(rows, settings, (start + dt.timedelta(days=6)).date()).conditions
    assert (alarm.subject, alarm.raised_on) == ("disagreement_rate", (start + dt.timedelta(days=4)).date())


def test_no_results_no_conditions() -> None:
    assert assess([], MonitoringSettings(), dt.date(2025, 1, 1)).conditions == []
