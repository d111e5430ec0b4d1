"""`psma-node evaluate --json` and `--html`: every figure against an independent computation on the same rows
(SQLite and a real PostgreSQL), and the edge cases (nothing to evaluate, no positives)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy.orm import Session, sessionmaker

from db.session import transaction
from dicom_node.cli.main import cli
from tests.db.seed_cases import REFERENCE_AFTER_DAYS, CaseSpec, mixed_cohort, seed_case, seed_unanalysed
from tests.dicom_node.evaluation import independent

THRESHOLD = 0.5


def _config(tmp_path: Path, db_url: str) -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"database": {"url": db_url}}))
    return config


def _evaluate(config: Path, *args: str) -> dict:  # type: ignore[type-arg]
    outcome = CliRunner().invoke(cli, ["--config", str(config), "evaluate", "--json", *args])
    assert outcome.exit_code == 0, outcome.output
    return json.loads(outcome.stdout)


def test_every_figure_of_json_and_html_matches_an_independent_computation(
    sessions: sessionmaker[Session], db_url: str, tmp_path: Path
) -> None:
    specs = mixed_cohort()
    with transaction(sessions) as session:
        seeded = [seed_case(session, spec) for spec in specs]
        seed_unanalysed(session, "rejected", "no PET series in the study")
        seed_unanalysed(session, "rejected", "PET: mixed Rows/Columns")
    report = tmp_path / "out" / "report.html"
    got = _evaluate(_config(tmp_path, db_url), "--html", str(report))

    included = [s for s in specs if s.probability is not None and s.reference is not None]
    expected = independent.expected_for(specs, THRESHOLD)
    assert got["threshold"] == THRESHOLD
    assert got["confusion"] == expected["confusion"][0]
    for name in ("sensitivity", "specificity", "ppv", "npv", "accuracy", "balanced_accuracy", "auc", "brier"):
        independent.assert_figure(got[name], expected[name])

    counts = got["counts"]
    assert counts["received"] == len(specs) + 2 and counts["analysed"] == len(specs)
    assert counts["rejected_by_reason"] == {"no PET series in the study": 1, "PET": 1}
    assert counts["with_classifier_output"] == sum(1 for s in specs if s.probability is not None)
    assert counts["with_reference"] == sum(1 for s in specs if s.reference is not None)
    assert counts["included"] == len(included)
    assert got["verification_bias"]["risk"] is True
    assert got["reference_timing"]["median_days"] == REFERENCE_AFTER_DAYS
    assert got["reference_timing"]["studies"] == len(included)
    assert got["published"]["confusion"] == {"tp": 63, "fp": 10, "tn": 79, "fn": 48}
    assert {c["metric"]: c["published"] for c in got["comparison"]} == {
        "accuracy": 0.71,
        "balanced_accuracy": 0.728,
        "sensitivity": 0.568,
        "specificity": 0.888,
    }
    for comparison in got["comparison"]:
        low, high = got[comparison["metric"]]["ci95"]
        assert comparison["local_interval_excludes_published"] is not (low <= comparison["published"] <= high)

    # readers: each reader's one reading per result; pairs where the reader said present / absent
    readings = [(spec, r) for spec in specs for r in spec.readings]
    assert got["readers"]["assessments"] == len(readings)
    agree = sum(1 for _, r in readings if r.verdict == "agree")
    independent.assert_figure(got["readers"]["agreement_rate"], independent.wilson(agree, len(readings)))
    definite = [(s, r) for s, r in readings if r.finding != "indeterminate" and s.probability is not None]
    ai = [float(s.probability or 0) >= THRESHOLD for s, _ in definite]
    reader = [r.finding == "present" for _, r in definite]
    independent.assert_figure(got["readers"]["kappa"], independent.kappa(ai, reader))
    overrides = sum(1 for a, r in zip(ai, reader, strict=True) if a != r)
    independent.assert_figure(got["readers"]["override_rate"], independent.wilson(overrides, len(definite)))

    # a subgroup: the scanner
    vision = [s for s in included if s.scanner_model == "Biograph Vision 600"]
    (group,) = [g for g in got["subgroups"]["scanner"] if g["label"] == "SIEMENS Biograph Vision 600"]
    sub = independent.expected_for(vision, THRESHOLD)
    assert group["included"] == len(vision)
    independent.assert_figure(group["sensitivity"], sub["sensitivity"])
    independent.assert_figure(group["auc"], sub["auc"])

    # the HTML report: self-contained, same numbers in its metrics table, plots inline
    text = report.read_text(encoding="utf-8")
    assert "NOT FOR DIAGNOSTIC USE" in text and 'src="data:image/png;base64,' in text
    assert not re.search(r'(src|href)="(https?:)?//', text)
    independent.assert_metrics_table(text, expected)
    assert f'<td class="num" id="tp">{expected["confusion"][0]["tp"]}</td>' in text
    assert len(seeded) == len(specs)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_an_empty_node_gives_zero_counts_and_null_figures(
    db_url: str, tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    got = _evaluate(_config(tmp_path, db_url))
    assert got["counts"]["received"] == 0 and got["counts"]["included"] == 0
    for name in ("sensitivity", "specificity", "ppv", "npv", "accuracy", "balanced_accuracy", "auc"):
        assert got[name] == {"value": None, "ci95": None}, name
    assert got["readers"]["kappa"] == {"value": None, "ci95": None}
    assert got["roc"] == [] and got["verification_bias"]["risk"] is False
    text = CliRunner().invoke(cli, ["--config", str(_config(tmp_path, db_url)), "evaluate"]).output
    assert "No study has both a classifier output and a reference standard" in text


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_without_recurrences_sensitivity_and_auc_are_null(
    db_url: str, tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    with transaction(sessions) as session:
        for probability in (0.2, 0.7, 0.4):
            seed_case(session, CaseSpec(probability, reference=False))
    got = _evaluate(_config(tmp_path, db_url))
    assert got["sensitivity"] == {"value": None, "ci95": None}
    assert got["auc"] == {"value": None, "ci95": None}
    assert got["balanced_accuracy"] == {"value": None, "ci95": None}
    independent.assert_figure(got["specificity"], independent.wilson(2, 3))
    assert {c["metric"]: c["local_interval_excludes_published"] for c in got["comparison"]}[
        "sensitivity"
    ] is None


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_filters_and_threshold_change_the_cohort_and_the_calls(
    db_url: str, tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    with transaction(sessions) as session:
        seed_case(session, CaseSpec(0.45, reference=True, scanner_model="Biograph mCT"))
        seed_case(session, CaseSpec(0.8, reference=True))
    config = _config(tmp_path, db_url)
    assert _evaluate(config, "--threshold", "0.4")["confusion"]["tp"] == 2
    narrowed = _evaluate(config, "--scanner", "SIEMENS Biograph mCT")
    assert narrowed["counts"]["in_cohort"] == 1 and narrowed["counts"]["excluded_by_filter"] == 1
    assert narrowed["filters"]["scanner"] == "SIEMENS Biograph mCT"
    bad = CliRunner().invoke(cli, ["--config", str(config), "evaluate", "--since", "yesterday"])
    assert bad.exit_code == 2 and "neither an ISO date/time" in bad.output
    backwards = CliRunner().invoke(
        cli, ["--config", str(config), "evaluate", "--since", "2025-03-01", "--until", "2025-02-01"])
    assert backwards.exit_code == 2 and "--since must be before --until" in backwards.output
