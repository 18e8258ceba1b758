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
import tempfile
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
    # prometheus-client's process collector, in the pipeline's registry
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
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


# -- one definition of every name (schemas.observability)


def _flag(args: List[str], name: str) -> List[str]:
    return [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=") or a.startswith(f"-{name}=")]


def test_the_sink_the_dashboard_and_the_exporter_name_the_same_keys() -> None:
    """The Redis keys the sink writes are the ones redis_exporter watches and the dashboard
    reads: each taken from the files Kubernetes gets, and from the docs that show them."""
    from beam_pipeline.options import PaystreamOptions
    from transforms.sinks.redis_alerts import RedisTarget, WriteAlertsToRedis

    prefix = PaystreamOptions([]).view_as(PaystreamOptions).redis_key_prefix
    sink = WriteAlertsToRedis(RedisTarget("redis://127.0.0.1:1"), key_prefix=prefix)._fn._keys
    with open(os.path.join(MON, "redis-exporter.yaml"), encoding="utf-8") as handle:
        deployment = next(d for d in yaml.safe_load_all(handle) if d["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert _flag(args, "check-keys") == [sink.accounts]
    assert _flag(args, "check-streams") == [sink.stream]
    dashboard_keys = {
        key
        for panel in _dashboard()["panels"]
        for target in panel.get("targets", [])
        for key in re.findall(r'redis_key_size\{key="([^"]+)"\}', target["expr"])
    }
    assert dashboard_keys == {sink.accounts}
    for doc in ("k8s-flink/README.md", "k8s-flink/monitoring/README.md", "README.md", "docs/operations.md"):
        with open(os.path.join(ROOT, doc), encoding="utf-8") as handle:
            for named in re.findall(r"--check-keys=([\w:]+)", handle.read()):
                assert named == sink.accounts, (doc, named)


def test_the_queries_select_the_group_and_namespace_the_run_uses() -> None:
    from beam_pipeline.options import PaystreamOptions

    group = PaystreamOptions([]).view_as(PaystreamOptions).kafka_consumer_group
    with open(os.path.join(ROOT, "k8s-flink", "image", "pipeline-options.txt"), encoding="utf-8") as handle:
        assert f"--kafka_consumer_group={group}" in handle.read().split()
    with open(os.path.join(MON, "prometheus-rules.yaml"), encoding="utf-8") as handle:
        rules = handle.read()
    assert set(re.findall(r'consumergroup="([^"]+)"', rules)) == {group}
    exprs = [t["expr"] for p in _dashboard()["panels"] for t in p.get("targets", [])]
    namespaces = {n for e in exprs + [rules] for n in re.findall(r'namespace="([^"]+)"', e)}
    with open(os.path.join(ROOT, "k8s-flink", "base", "kustomization.yaml"), encoding="utf-8") as handle:
        assert namespaces == {yaml.safe_load(handle)["namespace"]}


def test_the_local_stack_runs_the_production_rules_and_routes_faster() -> None:
    """``python -m paystream_dev monitor --time-scale``: the same rules and routes, every
    duration scaled, every Slack and PagerDuty receiver a webhook on the same route."""
    from paystream_dev.monitor import alertmanager_config, prometheus_rules, scale_duration

    assert scale_duration("5m", 1 / 30) == "10s" and scale_duration("4h", 1 / 30) == "480s"
    assert scale_duration("10s", 1 / 30) == "1s" and scale_duration("5m", 1) == "5m"
    with pytest.raises(ValueError):
        scale_duration("5 minutes", 0.5)
    with open(os.path.join(MON, "prometheus-rules.yaml"), encoding="utf-8") as handle:
        production = yaml.safe_load(handle)
    fast = prometheus_rules(1 / 30, scrape_s=1.0)
    assert prometheus_rules(1.0) == production
    for group, fast_group in zip(production["groups"], fast["groups"]):
        for rule, fast_rule in zip(group["rules"], fast_group["rules"]):
            assert fast_rule.get("labels") == rule.get("labels")
            assert re.sub(r"\[\w+\]", "[]", fast_rule["expr"]) == re.sub(r"\[\w+\]", "[]", rule["expr"])
            if "for" in rule:
                assert fast_rule["for"] == scale_duration(rule["for"], 1 / 30)
    lag = next(
        r for g in fast["groups"] for r in g["rules"] if r.get("alert") == "PaystreamConsumerLagCritical"
    )
    assert lag["for"] == "10s" and lag["expr"] == "paystream:consumer_lag_seconds > 300"
    windows = re.findall(r"\[(\w+)\]", " ".join(r["expr"] for g in fast["groups"] for r in g["rules"]))
    assert windows and min(int(w[:-1]) for w in windows) >= 4  # at least four scrapes

    with open(os.path.join(MON, "alertmanager.yaml"), encoding="utf-8") as handle:
        routes = yaml.safe_load(handle)
    local = alertmanager_config("http://127.0.0.1:1", 1 / 30)
    assert local["inhibit_rules"] == routes["inhibit_rules"]
    assert [r.get("matchers") for r in local["route"]["routes"]] == [
        r.get("matchers") for r in routes["route"]["routes"]
    ]
    assert local["route"]["group_interval"] == "10s" and local["route"]["group_wait"] == "1s"
    hooks = {r["name"]: [h["url"] for h in r["webhook_configs"]] for r in local["receivers"]}
    assert hooks == {
        "payment-alerts": ["http://127.0.0.1:1/payment-alerts/slack"],
        "critical-alerts": [
            "http://127.0.0.1:1/critical-alerts/slack",
            "http://127.0.0.1:1/critical-alerts/pagerduty",
        ],
        "fraud-detection": ["http://127.0.0.1:1/fraud-detection/slack"],
    }
    assert all(h["send_resolved"] for r in local["receivers"] for h in r["webhook_configs"])
    amtool = _tool("amtool")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "alertmanager.yml")
        with open(path, "w", encoding="utf-8") as handle:
            yaml.safe_dump(local, handle)
        check = subprocess.run([amtool, "check-config", path], capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, check.stdout + check.stderr
