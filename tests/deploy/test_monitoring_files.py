"""deploy/prometheus-alerts.yml and deploy/grafana-dashboard.json reference only metrics we export."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from connector.metrics import exported_metric_names
from tests.deploy.promql import balanced, metric_names
from tests.paths import REPO

ALERTS = REPO / "deploy" / "prometheus-alerts.yml"
DASHBOARD = REPO / "deploy" / "grafana-dashboard.json"
# Series Prometheus makes itself for every scrape target, not exported by the connector.
PROMETHEUS_OWN = {"up"}
DURATION = re.compile(r"^[0-9]+(ms|s|m|h|d|w|y)$")


@pytest.fixture(scope="module")
def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    assert set(document) == {"groups"}
    found = [rule for group in document["groups"] for rule in group["rules"]]
    assert all(set(group) <= {"name", "rules", "interval", "labels"} for group in document["groups"])
    return found


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text(encoding="utf-8")))


def rule_named(rules: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    return [rule for rule in rules if metric in metric_names(rule["expr"])]


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    return [
        target["expr"] for panel in all_panels(dashboard["panels"]) for target in panel.get("targets", [])
    ]


# ---- alerts ------------------------------------------------------------------------------------


def test_alert_rules_are_well_formed(rules: list[dict[str, Any]]) -> None:
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        allowed = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
        assert set(rule) <= allowed, rule["alert"]
        assert balanced(rule["expr"]), rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning", "info")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        if "for" in rule:
            assert DURATION.match(rule["for"]), rule["alert"]


def test_alert_rules_use_only_exported_metrics(rules: list[dict[str, Any]]) -> None:
    exported = exported_metric_names() | PROMETHEUS_OWN
    for rule in rules:
        used = metric_names(rule["expr"])
        assert used, f"{rule['alert']}: no metric found in {rule['expr']!r}"
        assert used <= exported, f"{rule['alert']}: unknown {sorted(used - exported)}"


def test_ami_down_alert_fires_after_a_minute(rules: list[dict[str, Any]]) -> None:
    [rule] = rule_named(rules, "ami_connection_status")
    assert rule["expr"].replace(" ", "") == "ami_connection_status==0"
    assert rule["for"] == "1m"


def test_backlog_age_alert_fires_past_ten_minutes(rules: list[dict[str, Any]]) -> None:
    [rule] = rule_named(rules, "cdr_oldest_pending_age_seconds")
    assert rule["expr"].replace(" ", "") == "cdr_oldest_pending_age_seconds>600"


@pytest.mark.parametrize(
    "counter",
    ["cdrs_failed_total", "recordings_failed_total", "api_auth_failures_total", "cdrs_dropped_total"],
)
def test_counter_alerts_watch_increases(rules: list[dict[str, Any]], counter: str) -> None:
    [rule] = rule_named(rules, counter)
    assert re.fullmatch(rf"increase\({counter}\[\d+m\]\) > 0", rule["expr"]), rule["expr"]


def test_disk_and_outbox_alerts_exist(rules: list[dict[str, Any]]) -> None:
    assert any("data_dir_free_bytes <" in rule["expr"] for rule in rule_named(rules, "data_dir_free_bytes"))
    [rule] = rule_named(rules, "outbox_writable")
    assert rule["expr"].replace(" ", "") == "outbox_writable==0"


def test_alert_templates_only_use_known_labels(rules: list[dict[str, Any]]) -> None:
    for rule in rules:
        text = " ".join(rule["annotations"].values())
        assert set(re.findall(r"\$labels\.(\w+)", text)) <= {"instance", "job"}, rule["alert"]


# ---- dashboard ---------------------------------------------------------------------------------


def test_dashboard_is_importable(dashboard: dict[str, Any]) -> None:
    [source] = dashboard["__inputs"]
    assert source["type"] == "datasource" and source["pluginId"] == "prometheus"
    assert dashboard["uid"] and dashboard["title"] and dashboard["id"] is None
    panels = list(all_panels(dashboard["panels"]))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${" + source["name"] + "}"
            assert balanced(target["expr"]), target["expr"]


def test_dashboard_uses_only_exported_metrics(dashboard: dict[str, Any]) -> None:
    exported = exported_metric_names()
    for expr in dashboard_exprs(dashboard):
        used = metric_names(expr)
        assert used, f"no metric found in {expr!r}"
        assert used <= exported, f"unknown {sorted(used - exported)} in {expr!r}"
    for variable in dashboard["templating"]["list"]:
        metric = re.fullmatch(r"label_values\((\w+),\s*\w+\)", variable["definition"])
        assert metric is not None and metric.group(1) in exported


def test_dashboard_shows_what_operators_need(dashboard: dict[str, Any]) -> None:
    used = set().union(*(metric_names(expr) for expr in dashboard_exprs(dashboard)))
    needed = {
        "ami_connection_status",  # AMI status
        "cdrs_received_total", "cdrs_stored_total", "cdrs_sent_total", "asterisk_cdr_filtered_total",  # rates
        "asterisk_cdr_queue_depth", "cdr_oldest_pending_age_seconds", "outbox_oldest_pending_age_seconds",
        "api_request_duration_seconds_bucket",  # latency
        "recordings_detected_total", "recordings_uploaded_total", "recordings_failed_total",
        "recording_queue_depth", "data_dir_free_bytes", "outbox_writable",
    }  # fmt: skip
    assert needed <= used, sorted(needed - used)
    assert any(
        expr.startswith("histogram_quantile(") and "api_request_duration_seconds_bucket" in expr
        for expr in dashboard_exprs(dashboard)
    )
    rates = [expr for expr in dashboard_exprs(dashboard) if "cdrs_sent_total" in expr]
    assert all("rate(" in expr or "increase(" in expr for expr in rates), "counters are shown as rates"


def test_dashboard_shows_every_exported_metric_family(dashboard: dict[str, Any]) -> None:
    # A metric added to connector/metrics.py shows up on the dashboard, or is knowingly left off here.
    used = set().union(*(metric_names(expr) for expr in dashboard_exprs(dashboard)))
    families = {name for name in exported_metric_names() if not name.endswith("_created")}
    histograms = {name.removesuffix("_bucket") for name in families if name.endswith("_bucket")}
    families -= {f"{name}{suffix}" for name in histograms for suffix in ("_bucket", "_sum", "_count")}
    covered = {name for name in families if name in used} | {
        name for name in histograms if any(metric.startswith(name) for metric in used)
    }
    missing = sorted((families | histograms) - covered)
    assert not missing, f"not on the dashboard: {missing}"
