#!/usr/bin/env python3
"""Build the Grafana dashboard (14 panels in 3 rows) and its provisioning ConfigMap.

    python scripts/build_dashboard.py           # writes k8s-flink/monitoring/grafana-dashboard.json
                                                 # and grafana-dashboard-configmap.yaml
    python scripts/build_dashboard.py --check   # fails if the committed files are stale

Queries use the pipeline's metrics (transforms/telemetry.py), the recording rules of
prometheus-rules.yaml, and standard exporters: kafka-exporter, redis_exporter (with
``--check-keys=fraud:accounts``), cAdvisor, kube-state-metrics, Flink's Prometheus reporter.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "k8s-flink", "monitoring")
DASHBOARD = os.path.join(OUT_DIR, "grafana-dashboard.json")
CONFIGMAP = os.path.join(OUT_DIR, "grafana-dashboard-configmap.yaml")

# (row title, [(panel title, type, unit, [(query, legend)])])
ROWS: List[Tuple[str, List[Tuple[str, str, str, List[Tuple[str, str]]]]]] = [
    (
        "Throughput and latency",
        [
            (
                "Messages/s",
                "timeseries",
                "ops",
                [
                    ("sum(rate(paystream_payments_in_total[1m]))", "pipeline in"),
                    ("sum(rate(simulator_messages_produced_total[1m]))", "simulator out"),
                ],
            ),
            (
                "Kafka consumer lag",
                "timeseries",
                "s",
                [
                    ("paystream:consumer_lag_seconds", "lag (s)"),
                ],
            ),
            (
                "Bundle/batch duration p95",
                "timeseries",
                "s",
                [
                    (
                        "histogram_quantile(0.95, sum by (le, table) (rate(paystream_sink_write_seconds_bucket[5m])))",
                        "{{table}}",
                    ),
                ],
            ),
            (
                "Fraud alerts/s",
                "timeseries",
                "ops",
                [
                    ("sum by (rule) (rate(paystream_fraud_alerts_total[1m]))", "{{rule}}"),
                ],
            ),
            (
                "Active fraud accounts",
                "stat",
                "short",
                [
                    ('sum(redis_key_size{key="fraud:accounts"})', "accounts"),
                ],
            ),
        ],
    ),
    (
        "Data quality and sinks",
        [
            (
                "Redis memory",
                "timeseries",
                "bytes",
                [
                    ("sum(redis_memory_used_bytes)", "used"),
                ],
            ),
            (
                "Dedup effectiveness",
                "gauge",
                "percentunit",
                [
                    ("paystream:dedup_effectiveness:ratio5m", "unique share of valid payments"),
                ],
            ),
            (
                "BigQuery write latency",
                "timeseries",
                "s",
                [
                    (
                        "histogram_quantile(0.95, sum by (le, table) (rate(paystream_sink_write_seconds_bucket[5m])))",
                        "p95 {{table}}",
                    ),
                    (
                        "histogram_quantile(0.99, sum by (le, table) "
                        "(rate(paystream_end_to_end_latency_seconds_bucket[5m])))",
                        "event to row p99 {{table}}",
                    ),
                ],
            ),
            (
                "Failures",
                "timeseries",
                "ops",
                [
                    ("sum by (reason) (rate(paystream_dead_letters_total[5m]))", "dead letters: {{reason}}"),
                    ("sum by (table) (rate(paystream_sink_errors_total[5m]))", "sink errors: {{table}}"),
                    ("sum(increase(flink_jobmanager_job_numRestarts[10m]))", "job restarts (10m)"),
                ],
            ),
            (
                "Backlog",
                "timeseries",
                "short",
                [
                    ("paystream:consumer_lag_messages", "messages behind"),
                ],
            ),
        ],
    ),
    (
        "Platform",
        [
            (
                "Pod CPU",
                "timeseries",
                "cores",
                [
                    (
                        'sum by (pod) (rate(container_cpu_usage_seconds_total{namespace="paystream", container!=""}[5m]))',
                        "{{pod}}",
                    ),
                ],
            ),
            (
                "Pod memory",
                "timeseries",
                "bytes",
                [
                    (
                        'sum by (pod) (container_memory_working_set_bytes{namespace="paystream", container!=""})',
                        "{{pod}}",
                    ),
                ],
            ),
            (
                "Replica count",
                "timeseries",
                "short",
                [
                    (
                        'kube_horizontalpodautoscaler_status_current_replicas{horizontalpodautoscaler="paystream-taskmanager"}',
                        "TaskManagers",
                    ),
                    (
                        'kube_horizontalpodautoscaler_spec_max_replicas{horizontalpodautoscaler="paystream-taskmanager"}',
                        "max",
                    ),
                ],
            ),
            (
                "System health",
                "stat",
                "short",
                [
                    ('sum by (job) (up{namespace="paystream"})', "{{job}} up"),
                ],
            ),
        ],
    ),
]


def dashboard() -> Dict[str, Any]:
    panels: List[Dict[str, Any]] = []
    next_id = 1
    y = 0
    for row_title, row_panels in ROWS:
        panels.append(
            {
                "id": next_id,
                "type": "row",
                "title": row_title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        next_id += 1
        y += 1
        width = 24 // len(row_panels)
        for i, (title, kind, unit, queries) in enumerate(row_panels):
            panels.append(
                {
                    "id": next_id,
                    "type": kind,
                    "title": title,
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "gridPos": {"h": 8, "w": width, "x": i * width, "y": y},
                    "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                    "targets": [
                        {"refId": chr(ord("A") + j), "expr": expr, "legendFormat": legend}
                        for j, (expr, legend) in enumerate(queries)
                    ],
                }
            )
            next_id += 1
        y += 8
    return {
        "uid": "paystream-overview",
        "title": "paystream: payments pipeline",
        "tags": ["paystream", "beam", "flink"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus"}]},
        "panels": panels,
    }


def render() -> Tuple[str, str]:
    text = json.dumps(dashboard(), indent=2) + "\n"
    indented = "".join("    " + line + "\n" for line in text.splitlines())
    configmap = (
        "# Generated by scripts/build_dashboard.py from the same source as grafana-dashboard.json.\n"
        '# Grafana\'s sidecar provisions every ConfigMap labelled grafana_dashboard="1".\n'
        "apiVersion: v1\n"
        "kind: ConfigMap\n"
        "metadata:\n"
        "  name: paystream-grafana-dashboard\n"
        "  namespace: monitoring\n"
        "  labels:\n"
        '    grafana_dashboard: "1"\n'
        "data:\n"
        "  paystream.json: |\n" + indented
    )
    return text, configmap


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if the files are not up to date")
    args = parser.parse_args(argv)
    text, configmap = render()
    if args.check:
        for path, want in ((DASHBOARD, text), (CONFIGMAP, configmap)):
            with open(path, encoding="utf-8") as handle:
                if handle.read() != want:
                    print(f"{path} is stale: run python scripts/build_dashboard.py", file=sys.stderr)
                    return 1
        return 0
    os.makedirs(OUT_DIR, exist_ok=True)
    for path, content in ((DASHBOARD, text), (CONFIGMAP, configmap)):
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(content)
    print(f"wrote {DASHBOARD} and {CONFIGMAP}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
