"""Monitoring as code: alert rules (promtool), Alertmanager routing (amtool), the dashboard.

promtool and amtool come from Debian's ``prometheus`` and ``prometheus-alertmanager``
packages, installed by ``.ci/run``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from typing import Any, Dict, List, Set

import pytest
import yaml

from transforms import telemetry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MON = os.path.join(ROOT, "k8s-flink", "monitoring")

# Metrics of standard exporters the dashboard and rules may use.
STANDARD = {
    # kafka-exporter
    "kafka_consumergroup_lag",
    "kafka_consumergroup_current_offset",
    "kafka_topic_partition_current_offset",
    # redis_exporter
    "redis_memory_used_bytes",
    "redis_key_size",
    # cAdvisor
    "container_cpu_usage_seconds_total",
    "container_memory_working_set_bytes",
    "container_spec_memory_limit_bytes",
    "container_cpu_cfs_throttled_periods_total",
    "container_cpu_cfs_periods_total",
    # kube-state-metrics
    "kube_horizontalpodautoscaler_status_current_replicas",
    "kube_horizontalpodautoscaler_spec_max_replicas",
    # Flink's Prometheus reporter; Prometheus itself
    "flink_jobmanager_job_numRestarts",
    "up",
}
PROMQL_WORDS = {
    "sum",
    "rate",
    "by",
    "without",
    "histogram_quantile",
    "clamp_min",
    "deriv",
    "increase",
    "max",
    "min",
    "avg",
    "count",
    "le",
    "on",
    "ignoring",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
}


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, (
        f"{name} is not installed (Debian: prometheus / prometheus-alertmanager; .ci/run installs them)"
    )
    return path


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=MON, capture_output=True, text=True, timeout=120)


def exported() -> Set[str]:
    names = set()
    for name, (kind, *_rest) in telemetry.METRICS.items():
        full = telemetry.prometheus_name(name)
        names |= {full} if kind == "counter" else {full + s for s in ("_bucket", "_sum", "_count")}
    return names | {
        "simulator_messages_produced_total",
        "simulator_messages_failed_total",
        "simulator_target_rate_messages_per_second",
    }


def recording_rules() -> Set[str]:
    with open(os.path.join(MON, "prometheus-rules.yaml"), encoding="utf-8") as handle:
        groups = yaml.safe_load(handle)["groups"]
    return {r["record"] for g in groups for r in g["rules"] if "record" in r}


def metric_names(expr: str) -> Set[str]:
    expr = re.sub(r'"[^"]*"', '""', expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"(?<![A-Za-z_:])\d+(\.\d+)?([eE][-+]?\d+)?", "0", expr)  # numbers, 1e-9 too
    tokens = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr))
    labels = set(re.findall(r"by \(([^)]*)\)", expr))
    label_names = {t.strip() for group in labels for t in group.split(",")}
    return {t for t in tokens if t not in PROMQL_WORDS and t not in label_names}


def test_rules_are_valid_and_every_alert_is_unit_tested() -> None:
    promtool = _tool("promtool")
    check = _run(promtool, "check", "rules", "prometheus-rules.yaml")
    assert check.returncode == 0, check.stdout + check.stderr
    result = _run(promtool, "test", "rules", "prometheus-rules.test.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    with open(os.path.join(MON, "prometheus-rules.yaml"), encoding="utf-8") as handle:
        alerts = {r["alert"] for g in yaml.safe_load(handle)["groups"] for r in g["rules"] if "alert" in r}
    with open(os.path.join(MON, "prometheus-rules.test.yaml"), encoding="utf-8") as handle:
        tests = yaml.safe_load(handle)["tests"]
    firing: Set[str] = set()
    quiet: Set[str] = set()
    for t in tests:
        for case in t["alert_rule_test"]:
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert alerts == firing == quiet, (alerts - firing, alerts - quiet)
    assert len(alerts) == 11


def test_rules_use_known_metrics() -> None:
    with open(os.path.join(MON, "prometheus-rules.yaml"), encoding="utf-8") as handle:
        rules = [r for g in yaml.safe_load(handle)["groups"] for r in g["rules"]]
    known = exported() | STANDARD | recording_rules()
    for rule in rules:
        unknown = metric_names(rule["expr"]) - known
        assert not unknown, (rule.get("alert") or rule.get("record"), unknown)


def test_alertmanager_config_and_routing() -> None:
    amtool = _tool("amtool")
    check = _run(amtool, "check-config", "alertmanager.yaml")
    assert check.returncode == 0, check.stdout + check.stderr

    def receivers(*labels: str) -> List[str]:
        out = _run(amtool, "config", "routes", "test", "--config.file=alertmanager.yaml", *labels)
        return out.stdout.strip().split(",")

    assert receivers("severity=warning", "alertname=PaystreamThroughputLow") == ["payment-alerts"]
    assert receivers("severity=critical", "alertname=PaystreamTaskFailures") == [
        "payment-alerts",
        "critical-alerts",
    ]
    assert receivers("severity=critical", "category=fraud", "alertname=PaystreamFraudAlertStorm") == [
        "payment-alerts",
        "critical-alerts",
        "fraud-detection",
    ]
    with open(os.path.join(MON, "alertmanager.yaml"), encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    for receiver in config["receivers"]:
        for slack in receiver.get("slack_configs", []):
            assert "api_url" not in slack and slack["api_url_file"].startswith("/etc/alertmanager/secrets/")
        for pd in receiver.get("pagerduty_configs", []):
            assert "routing_key" not in pd and "service_key" not in pd and pd["routing_key_file"]
    critical = next(r for r in config["receivers"] if r["name"] == "critical-alerts")
    assert critical["pagerduty_configs"]


def _dashboard() -> Dict[str, Any]:
    with open(os.path.join(MON, "grafana-dashboard.json"), encoding="utf-8") as handle:
        return json.load(handle)


def test_dashboard_has_14_panels_in_3_rows_on_known_metrics() -> None:
    panels = _dashboard()["panels"]
    rows = [p for p in panels if p["type"] == "row"]
    graphs = [p for p in panels if p["type"] != "row"]
    assert len(rows) == 3 and len(graphs) == 14
    titles = {p["title"] for p in graphs}
    for wanted in (
        "Messages/s",
        "Kafka consumer lag",
        "Bundle/batch duration p95",
        "Fraud alerts/s",
        "Active fraud accounts",
        "Redis memory",
        "Dedup effectiveness",
        "Pod CPU",
        "Pod memory",
        "Replica count",
        "BigQuery write latency",
        "Failures",
        "Backlog",
        "System health",
    ):
        assert wanted in titles
    known = exported() | STANDARD | recording_rules()
    for panel in graphs:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            unknown = metric_names(target["expr"]) - known
            assert not unknown, (panel["title"], unknown)


def test_dashboard_files_are_generated_and_in_sync() -> None:
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "build_dashboard.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    with open(os.path.join(MON, "grafana-dashboard-configmap.yaml"), encoding="utf-8") as handle:
        configmap = yaml.safe_load(handle)
    assert configmap["kind"] == "ConfigMap" and configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["paystream.json"]) == _dashboard()


@pytest.mark.parametrize(
    "expr, names",
    [
        (
            'sum by (pod) (rate(container_cpu_usage_seconds_total{namespace="x"}[5m]))',
            {"container_cpu_usage_seconds_total"},
        ),
        ("paystream:consumer_lag_seconds > 300", {"paystream:consumer_lag_seconds"}),
    ],
)
def test_metric_name_extraction(expr: str, names: Set[str]) -> None:
    assert metric_names(expr) == names
