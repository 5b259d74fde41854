"""The chart's alerts and dashboard: promtool checks the rules and runs their unit tests (one scenario per alert,
helm/tests/alerts.test.yaml), the chart renders them behind their switches, and no alert or dashboard panel names
a metric that layerfill does not export.

Exported names come from the prometheus_client registry after importing every module of the package (so a
metric defined anywhere counts, and a renamed or removed one is caught wherever it was used), expanded to the
sample names Prometheus stores (a counter `x` is scraped as `x_total`, a histogram as `x_bucket/_sum/_count`,
an info as `x_info`). The rules and panels are scanned for every `layerfill_*` and `kube_*` identifier: a static
scan, so a name inside a regex matcher would not be seen (none is used: tests below keep names literal)."""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

from layerfill.devstack.paths import default_paths
from tests.support.helm import CHART, REPO, find, render

pytestmark = pytest.mark.unit

RULES = CHART / "files" / "prometheus-rules.yaml"
DASHBOARD = CHART / "files" / "grafana-dashboard.json"
RULE_TESTS = REPO / "helm" / "tests" / "alerts.test.yaml"

# Exported by kube-state-metrics, not by layerfill (the exit-75 restart alert).
KUBE_STATE_METRICS = frozenset(
    {"kube_pod_container_status_last_terminated_exitcode", "kube_pod_container_status_restarts_total"}
)
_NAME = re.compile(r"\b(?:layerfill|kube)_[a-z0-9_]+\b")
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "gauge": ("",),
    "unknown": ("",),
}


def promtool() -> str:
    """The promtool that devstack/install.py pins (`layerfill devstack up` installs it), else one on PATH."""
    pinned = default_paths().bin / "promtool"
    if pinned.exists():
        return str(pinned)
    found = shutil.which("promtool")
    if not found:
        pytest.fail("promtool is not installed: run `layerfill devstack up` (devstack/install.py installs it)")
    return found


# The package and the top-level folders installed under it (pyproject's package-dir): their modules are not found
# by walking layerfill/ alone.
PACKAGE_ROOTS = ("layerfill", "layerfill.consumers", "layerfill.producers", "layerfill.devstack")


def exported_metric_names() -> set[str]:
    for root in PACKAGE_ROOTS:
        for mod in pkgutil.walk_packages(importlib.import_module(root).__path__, f"{root}."):
            if ".migrations" not in mod.name and not mod.name.endswith("__main__"):
                importlib.import_module(mod.name)
    names = set()
    for family in REGISTRY.collect():
        names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
    return {n for n in names if n.startswith("layerfill_")}


def exported_family_names() -> set[str]:
    """Metric names as prose uses them (`layerfill_scanner_scan_seconds` for the histogram): for annotations."""
    exported_metric_names()
    return {f.name for f in REGISTRY.collect() if f.name.startswith("layerfill_")}


def _rules() -> dict[str, Any]:
    return yaml.safe_load(RULES.read_text())


def _alerts() -> list[dict[str, Any]]:
    return [r for g in _rules()["groups"] for r in g["rules"] if "alert" in r]


def _dashboard_exprs() -> list[tuple[str, str]]:
    out = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        out += [(panel["title"], t["expr"]) for t in panel.get("targets", [])]
    return out


def test_promtool_checks_the_rules() -> None:
    res = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in res.stdout


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    res = subprocess.run(
        [promtool(), "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout + res.stderr


def test_every_alert_has_a_scenario_where_it_fires() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {
        case["alertname"]
        for t in tests
        for case in t.get("alert_rule_test", [])
        if case.get("exp_alerts")  # a case that expects the alert, not only silence
    }
    assert fired == {a["alert"] for a in _alerts()}
    for alert in _alerts():
        assert alert["labels"]["severity"] in ("warning", "critical")
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]


def test_the_issue_names_an_alert_for_each_signal() -> None:
    exprs = {a["alert"]: a["expr"] for a in _alerts()}
    assert "dead_letters_total" in exprs["LayerfillDeadLettering"]
    assert "delta(" in exprs["LayerfillConsumerLagGrowing"]
    assert r"\\.retry" in exprs["LayerfillRetryTopicBacklog"]
    assert "== 75" in exprs["LayerfillStuckTransactionRestarts"]
    assert 'code=~"5.."' in exprs["LayerfillBridgeErrors"]
    assert 'code="429"' in exprs["LayerfillUpstreamRateLimited"]
    assert "layerfill_scanner_consumer_lag" in exprs["LayerfillScanBacklog"]


def test_alerts_and_dashboard_name_only_exported_metrics() -> None:
    exported = exported_metric_names()
    # The scan itself must see what it checks: some well-known names of each component.
    assert {
        "layerfill_fetcher_fetched_bytes_total",
        "layerfill_scanner_new_vulnerabilities_total",
        "layerfill_bridge_requests_total",
        "layerfill_build_info",
        "layerfill_kafka_broker_rtt_seconds",
        "layerfill_fetcher_fill_seconds_bucket",
    } <= exported
    assert "layerfill_fetcher_bytes_fetched_total" not in exported  # renamed (unit last)
    assert "layerfill_scanner_vulnerabilities_total" not in exported  # replaced (counted every rescan)
    allowed = exported | KUBE_STATE_METRICS
    used: dict[str, set[str]] = {}
    for alert in _alerts():
        for name in _NAME.findall(alert["expr"]):
            used.setdefault(name, set()).add(f"alert {alert['alert']}")
        for name in _NAME.findall(json.dumps(alert["annotations"])):
            if name not in exported_family_names():  # prose may name a histogram by its family
                used.setdefault(name, set()).add(f"annotation of {alert['alert']}")
    for title, expr in _dashboard_exprs():
        for name in _NAME.findall(expr):
            used.setdefault(name, set()).add(f"panel {title!r}")
    unknown = {name: sorted(where) for name, where in used.items() if name not in allowed}
    assert not unknown, f"metrics not exported by layerfill: {unknown}"


def test_a_wildcard_annotation_in_a_summary_names_real_metrics_too() -> None:
    # Annotations say `layerfill_*_dead_letters_total`: the scan must not take the stem for a metric name.
    assert _NAME.findall("see layerfill_*_retries_total") == []


def test_dashboard_is_grafana_json_with_a_datasource_variable() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "layerfill" and dash["templating"]["list"][0]["type"] == "datasource"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    exprs = _dashboard_exprs()
    assert len(exprs) >= 20
    for _title, expr in exprs:
        assert expr.count("(") == expr.count(")")


def test_chart_renders_rule_and_dashboard_only_when_switched_on(tmp_path: Path) -> None:
    objects = render()
    assert not [o for o in objects if o["kind"] == "PrometheusRule"]
    assert not [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-dashboard")]
    values = tmp_path / "values.yaml"
    values.write_text(
        "metrics:\n  prometheusRule:\n    enabled: true\n    labels: {release: kube-prometheus-stack}\n"
        "  grafanaDashboard:\n    enabled: true\n    annotations: {grafana_folder: layerfill}\n"
    )
    objects = render(values)
    rule = find(objects, "PrometheusRule", "lf-layerfill")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    # The rules reach Prometheus exactly as promtool tested them: Helm leaves {{ $labels.x }} alone.
    assert rule["spec"] == _rules()
    cm = find(objects, "ConfigMap", "lf-layerfill-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "layerfill"}
    assert json.loads(cm["data"]["layerfill.json"]) == json.loads(DASHBOARD.read_text())
