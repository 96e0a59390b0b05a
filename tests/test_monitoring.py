"""The alerting rules and the Grafana dashboard shipped in deploy/.

- `promtool check rules` passes on deploy/prometheus/alerts.yml and `promtool test rules`
  on tests/prometheus/*_test.yml, where every alert has series that fire it and
  series that do not.
- Every alert has a severity, a summary and a runbook that is a section of the operator
  guide.
- The rules and the dashboard ask only for metrics the service exports (app/metrics.py).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped,unused-ignore]
from prometheus_client.metrics import MetricWrapperBase

import app.metrics
from tests.support.promtool import promtool

ROOT = Path(__file__).resolve().parents[1]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = sorted((ROOT / "tests" / "prometheus").glob("*_test.yml"))
DASHBOARD = ROOT / "deploy" / "grafana" / "codat-webhooks.json"
OPERATOR_GUIDE = ROOT / "docs" / "operator-guide.md"
SEVERITIES = {"critical", "warning"}
# Series Prometheus makes itself, not the service.
PROMETHEUS_SERIES = {"up"}
# What the issue asks the alerts to watch and the dashboard to show, by metric.
ALERTED_METRICS = {
    "up",
    "codat_dead_total",
    "codat_missed_webhooks_total",
    "codat_queue_oldest_due_age_seconds",
    "codat_client_paused",
    "codat_last_webhook_received_timestamp_seconds",
    "codat_active_companies",
    "codat_data_types_overdue",
    "codat_notifications_oldest_undelivered_age_seconds",
}
DASHBOARD_METRICS = {
    "codat_queue_depth",  # queue
    "codat_work_processed_total",  # throughput
    "codat_api_calls_total",  # Codat calls by status
    "codat_client_paused",  # pause
    "codat_data_types_overdue",  # freshness
}

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
}


def exported_series() -> set[str]:
    """The names of the series the service's metrics (app/metrics.py) are exposed as."""
    names: set[str] = set()
    for metric in vars(app.metrics).values():
        if isinstance(metric, MetricWrapperBase):
            for family in metric.describe():
                names |= {family.name + suffix for suffix in _SUFFIXES[family.type]}
    return names


_GROUPING = r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The series a PromQL expression selects: the identifiers left once strings, label
    matchers, ranges, grouping clauses, functions and operators are taken out."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', "", expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(_GROUPING, "", text)
    found = re.findall(r"(?<![\w$.])([A-Za-z_:][\w:]*)(?![\w:]*\s*\()", text)
    return {name for name in found if name.lower() not in _KEYWORDS}


def test_metric_names_finds_series_and_nothing_else() -> None:
    expr = (
        'time() - max by (queue) (codat_a{job=~"x|y"}) > 26 * 3600 and on() '
        "histogram_quantile(0.5, sum without (le) (rate(codat_b_bucket[$__rate_interval])))"
        ' or absent(up{job="w"}) unless codat_c offset 5m'
    )
    assert metric_names(expr) == {"codat_a", "codat_b_bucket", "up", "codat_c"}


def alert_rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(ALERTS.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"] if "alert" in rule]


def guide_anchors() -> set[str]:
    """The anchors GitHub gives the guide's headings."""
    anchors = set()
    for line in OPERATOR_GUIDE.read_text().splitlines():
        heading = re.match(r"^#+\s+(.*)$", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
            anchors.add(slug)
    return anchors


def test_promtool_checks_the_rules() -> None:
    result = promtool("check", "rules", ALERTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    assert ALERT_TESTS
    result = promtool("test", "rules", *ALERT_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(ALERT_TESTS)


def test_every_alert_has_a_severity_a_summary_and_a_runbook_in_the_guide() -> None:
    rules = alert_rules()
    assert len(rules) == len({rule["alert"] for rule in rules}), "alert names are unique"
    anchors = guide_anchors()
    for rule in rules:
        name = rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, name
        annotations = rule["annotations"]
        assert annotations["summary"].strip(), name
        page, _, anchor = annotations["runbook_url"].partition("#")
        assert page == "docs/operator-guide.md", name
        assert anchor == name.lower() and anchor in anchors, f"{name}: no section #{anchor}"


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    cases: dict[str, list[bool]] = {}
    for path in ALERT_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                cases.setdefault(case["alertname"], []).append(bool(case["exp_alerts"]))
    for rule in alert_rules():
        outcomes = cases.get(rule["alert"], [])
        assert True in outcomes, f"{rule['alert']}: no series fires it"
        assert False in outcomes, f"{rule['alert']}: no series that does not fire it"


def test_the_alerts_watch_only_exported_metrics_and_every_one_asked_for() -> None:
    known = exported_series() | PROMETHEUS_SERIES
    used: set[str] = set()
    for rule in alert_rules():
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        assert names <= known, f"{rule['alert']}: not exported: {names - known}"
        used |= names
    assert used >= ALERTED_METRICS, ALERTED_METRICS - used


def panels(node: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' panels included."""
    found = []
    for panel in node.get("panels", []):
        found.append(panel)
        found += panels(panel)
    return found


def test_the_dashboard_shows_only_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    known = exported_series()
    used: set[str] = set()
    graphs = [panel for panel in panels(dashboard) if panel["type"] != "row"]
    assert graphs
    for panel in graphs:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names, f"{panel['title']}: {target['expr']}"
            assert names <= known, f"{panel['title']}: not exported: {names - known}"
            used |= names
    assert used >= DASHBOARD_METRICS, DASHBOARD_METRICS - used
    # Importable as it is: a unique id per panel, the data source chosen on import.
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids))
    assert dashboard["uid"] and dashboard["title"]
    sources = {json.dumps(p["datasource"], sort_keys=True) for p in graphs}
    assert sources == {json.dumps({"type": "prometheus", "uid": "${datasource}"}, sort_keys=True)}
