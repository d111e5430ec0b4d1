"""deploy/prometheus/psma-node-alerts.yml: well-formed alerting rules on metrics the node really exports.

promtool is not installed here, so the file's structure is checked as Prometheus reads it (groups of rules,
each with alert, expr, labels and annotations, `for` a duration), and every metric an expression names is
looked up in a scrape of a node database holding an open alarm.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session, sessionmaker

from db.monitoring import Condition, sync_alarms
from db.session import transaction
from dicom_node.metrics import make_registry
from tests.support.node import REPO
from tests.support.settings import make_settings

RULES = REPO / "deploy" / "prometheus" / "psma-node-alerts.yml"
DURATION = re.compile(r"^\d+(ms|s|m|h|d|w|y)$")
METRIC = re.compile(r"\b(psma_node_[a-z_]+)\b")


def rules() -> list[dict]:  # type: ignore[type-arg]
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    assert set(document) == {"groups"}
    found = []
    for group in document["groups"]:
        assert set(group) == {"name", "rules"} and group["rules"]
        found += group["rules"]
    return found


def test_every_rule_has_what_prometheus_and_alertmanager_need() -> None:
    names = [rule["alert"] for rule in rules()]
    assert len(names) == len(set(names))
    for rule in rules():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in ("info", "warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert "for" not in rule or DURATION.match(rule["for"]), rule["alert"]
        assert rule["expr"].count("(") == rule["expr"].count(")") and rule["expr"].count("{") == rule[
            "expr"
        ].count("}")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_every_metric_the_rules_name_is_exported(
    sessions: sessionmaker[Session], db_url: str, tmp_path: Path
) -> None:
    with transaction(sessions) as session:
        sync_alarms(
            session,
            [
                Condition(
                    "statistic",
                    "SIEMENS Biograph Vision 600",
                    "positive_rate",
                    dt.date(2025, 3, 29),
                    "drifted",
                )
            ],
            now=dt.datetime.now(dt.timezone.utc),
            actor="tests",
        )
    scraped = generate_latest(make_registry(make_settings(tmp_path, db_url), sessions)).decode()
    families = {family.name for family in text_string_to_metric_families(scraped)}
    named = {name for rule in rules() for name in METRIC.findall(rule["expr"])}
    assert "psma_node_monitoring_alarm" in named
    assert named <= families, named - families
    assert (
        'psma_node_monitoring_alarm{kind="statistic",scanner="SIEMENS Biograph Vision 600",'
        'subject="positive_rate"} 1.0'
    ) in scraped
