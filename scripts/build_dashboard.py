#!/usr/bin/env python3
"""Build the Grafana dashboard (14 panels in 3 rows), its provisioning ConfigMap and the
redis_exporter Deployment, from the names of ``schemas/observability.py``.

    python scripts/build_dashboard.py           # writes k8s-flink/monitoring/grafana-dashboard.json,
                                                 # grafana-dashboard-configmap.yaml, redis-exporter.yaml
    python scripts/build_dashboard.py --check   # fails if the committed files are stale

Queries use the pipeline's metrics (``schemas.observability.METRICS``), the recording rules of
prometheus-rules.yaml, and standard exporters: kafka-exporter, redis_exporter (watching the
keys of ``schemas.observability.RedisKeys``), Flink's Prometheus reporter and, on Kubernetes
only, cAdvisor and kube-state-metrics. ``targets()`` lists the queries by what they need;
``tests/test_observability_live.py`` sends every one that needs no Kubernetes to a real
Prometheus.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from schemas.observability import (  # noqa: E402
    CONSUMER_GROUP,
    K8S_NAMESPACE,
    TASKMANAGER_HPA,
    RedisKeys,
    metric_name,
    redis_exporter_args,
)

OUT_DIR = os.path.join(ROOT, "k8s-flink", "monitoring")
DASHBOARD = os.path.join(OUT_DIR, "grafana-dashboard.json")
CONFIGMAP = os.path.join(OUT_DIR, "grafana-dashboard-configmap.yaml")
EXPORTER = os.path.join(OUT_DIR, "redis-exporter.yaml")
REDIS_EXPORTER_IMAGE = "oliver006/redis_exporter:v1.45.0"  # the version Debian's package runs in CI

KEYS = RedisKeys()
GROUP = f'consumergroup="{CONSUMER_GROUP}"'
NS = f'namespace="{K8S_NAMESPACE}"'
HPA = f'horizontalpodautoscaler="{TASKMANAGER_HPA}"'
KUBERNETES = "kubernetes"  # a target that only Kubernetes' exporters (cAdvisor, kube-state-metrics) answer


m = metric_name  # short, for the queries below


# A target: (query, legend, what it needs beyond the pipeline, Kafka, Redis and Flink).
Target = Tuple[str, str, str]
# A panel: (title, type, unit, description, targets).
Panel = Tuple[str, str, str, str, List[Target]]

ROWS: List[Tuple[str, List[Panel]]] = [
    (
        "Throughput and latency",
        [
            (
                "Messages/s",
                "timeseries",
                "ops",
                "Payloads the pipeline reads, beside the messages the simulator has Kafka acknowledge.",
                [
                    (f"sum(rate({m('payments_in')}[1m]))", "pipeline in", ""),
                    ("sum(rate(simulator_messages_produced_total[1m]))", "simulator out", ""),
                ],
            ),
            (
                "Kafka consumer lag",
                "timeseries",
                "s",
                "Messages behind, divided by the rate the consumer group reads them (kafka-exporter).",
                [
                    ("paystream:consumer_lag_seconds", "lag (s)", ""),
                ],
            ),
            (
                "Bundle/batch duration p95",
                "timeseries",
                "s",
                "Duration of one batched write, per sink table.",
                [
                    (
                        f"histogram_quantile(0.95, sum by (le, table) (rate({m('sink_write_seconds', '_bucket')}[5m])))",
                        "{{table}}",
                        "",
                    ),
                ],
            ),
            (
                "Fraud alerts/s",
                "timeseries",
                "ops",
                "Fraud alerts raised, per rule.",
                [
                    (f"sum by (rule) (rate({m('fraud_alerts')}[1m]))", "{{rule}}", ""),
                ],
            ),
            (
                "Active fraud accounts",
                "stat",
                "short",
                f"Accounts ever alerted: the size of the Redis set {KEYS.accounts} (redis_exporter).",
                [
                    (f'sum(redis_key_size{{key="{KEYS.accounts}"}})', "accounts", ""),
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
                "Memory used by the alerts' Redis (redis_exporter).",
                [
                    ("sum(redis_memory_used_bytes)", "used", ""),
                ],
            ),
            (
                "Dedup effectiveness",
                "gauge",
                "percentunit",
                "Share of valid payments that are not duplicates.",
                [
                    ("paystream:dedup_effectiveness:ratio5m", "unique share of valid payments", ""),
                ],
            ),
            (
                "BigQuery write latency",
                "timeseries",
                "s",
                "Warehouse write duration p95, and event time to row p99, per table.",
                [
                    (
                        f"histogram_quantile(0.95, sum by (le, table) (rate({m('sink_write_seconds', '_bucket')}[5m])))",
                        "p95 {{table}}",
                        "",
                    ),
                    (
                        "histogram_quantile(0.99, sum by (le, table) "
                        f"(rate({m('end_to_end_latency_seconds', '_bucket')}[5m])))",
                        "event to row p99 {{table}}",
                        "",
                    ),
                ],
            ),
            (
                "Failures",
                "timeseries",
                "ops",
                "Dead letters per reason, failed sink writes per table, Flink job restarts.",
                [
                    (f"sum by (reason) (rate({m('dead_letters')}[5m]))", "dead letters: {{reason}}", ""),
                    (f"sum by (table) (rate({m('sink_errors')}[5m]))", "sink errors: {{table}}", ""),
                    ("sum(increase(flink_jobmanager_job_numRestarts[10m]))", "job restarts (10m)", ""),
                ],
            ),
            (
                "Backlog",
                "timeseries",
                "short",
                "Messages the consumer group has not read yet (kafka-exporter).",
                [
                    ("paystream:consumer_lag_messages", "messages behind", ""),
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
                "Per pod: needs Kubernetes (cAdvisor). Per process: the pipeline's own "
                "process CPU, anywhere.",
                [
                    (
                        f'sum by (pod) (rate(container_cpu_usage_seconds_total{{{NS}, container!=""}}[5m]))',
                        "{{pod}}",
                        KUBERNETES,
                    ),
                    (
                        f"sum by (job, instance) (rate(process_cpu_seconds_total{{{NS}}}[5m]))",
                        "{{job}} {{instance}}",
                        "",
                    ),
                ],
            ),
            (
                "Pod memory",
                "timeseries",
                "bytes",
                "Per pod: needs Kubernetes (cAdvisor). Per process: the pipeline's own "
                "process RSS, anywhere.",
                [
                    (
                        f'sum by (pod) (container_memory_working_set_bytes{{{NS}, container!=""}})',
                        "{{pod}}",
                        KUBERNETES,
                    ),
                    (
                        f"sum by (job, instance) (process_resident_memory_bytes{{{NS}}})",
                        "{{job}} {{instance}}",
                        "",
                    ),
                ],
            ),
            (
                "Replica count",
                "timeseries",
                "short",
                "TaskManagers and the autoscaler's maximum: needs Kubernetes (kube-state-metrics).",
                [
                    (
                        f"kube_horizontalpodautoscaler_status_current_replicas{{{HPA}}}",
                        "TaskManagers",
                        KUBERNETES,
                    ),
                    (f"kube_horizontalpodautoscaler_spec_max_replicas{{{HPA}}}", "max", KUBERNETES),
                ],
            ),
            (
                "System health",
                "stat",
                "short",
                "Scrape targets up, per job: the pipeline, the simulator, the exporters, Flink.",
                [
                    (f"sum by (job) (up{{{NS}}})", "{{job}} up", ""),
                ],
            ),
        ],
    ),
]


def targets(needs: str = "") -> List[Tuple[str, str]]:
    """Every (panel title, query) whose target needs ``needs`` ("": nothing beyond the
    pipeline, Kafka, Redis and Flink; ``KUBERNETES``)."""
    return [
        (title, expr)
        for _row, panels in ROWS
        for title, _kind, _unit, _doc, queries in panels
        for expr, _legend, need in queries
        if need == needs
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
        for i, (title, kind, unit, doc, queries) in enumerate(row_panels):
            panels.append(
                {
                    "id": next_id,
                    "type": kind,
                    "title": title,
                    "description": doc,
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "gridPos": {"h": 8, "w": width, "x": i * width, "y": y},
                    "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                    "targets": [
                        {"refId": chr(ord("A") + j), "expr": expr, "legendFormat": legend}
                        for j, (expr, legend, _need) in enumerate(queries)
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


def redis_exporter() -> str:
    """redis_exporter's Deployment and Service, its flags from ``schemas.observability``."""
    args = "".join(f"            - {arg}\n" for arg in redis_exporter_args())
    return (
        "# Generated by scripts/build_dashboard.py: the flags name the Redis keys of\n"
        "# schemas/observability.py, the ones the alert sink writes and the dashboard reads.\n"
        "# REDIS_ADDR (the pipeline's --redis_url) and the password come from the Secret\n"
        "# paystream-secrets (k8s-flink/README.md).\n"
        "apiVersion: apps/v1\n"
        "kind: Deployment\n"
        "metadata:\n"
        "  name: paystream-redis-exporter\n"
        f"  namespace: {K8S_NAMESPACE}\n"
        "  labels: {app: paystream-redis-exporter}\n"
        "spec:\n"
        "  replicas: 1\n"
        "  selector:\n"
        "    matchLabels: {app: paystream-redis-exporter}\n"
        "  template:\n"
        "    metadata:\n"
        "      labels: {app: paystream-redis-exporter}\n"
        "    spec:\n"
        "      securityContext: {runAsNonRoot: true, runAsUser: 59000}\n"
        "      containers:\n"
        "        - name: redis-exporter\n"
        f"          image: {REDIS_EXPORTER_IMAGE}\n"
        "          args:\n" + args + "          env:\n"
        "            - name: REDIS_ADDR\n"
        "              valueFrom: {secretKeyRef: {name: paystream-secrets, key: redis-url}}\n"
        "            - name: REDIS_PASSWORD\n"
        "              valueFrom: {secretKeyRef: {name: paystream-secrets, key: redis-password}}\n"
        "          ports:\n"
        "            - {name: metrics, containerPort: 9121}\n"
        "          resources:\n"
        "            requests: {cpu: 50m, memory: 32Mi}\n"
        "            limits: {memory: 64Mi}\n"
        "          securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true}\n"
        "---\n"
        "apiVersion: v1\n"
        "kind: Service\n"
        "metadata:\n"
        "  name: paystream-redis-exporter\n"
        f"  namespace: {K8S_NAMESPACE}\n"
        "  labels: {app: paystream-redis-exporter}\n"
        "spec:\n"
        "  selector: {app: paystream-redis-exporter}\n"
        "  ports:\n"
        "    - {name: metrics, port: 9121, targetPort: metrics}\n"
    )


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
        for path, want in ((DASHBOARD, text), (CONFIGMAP, configmap), (EXPORTER, redis_exporter())):
            with open(path, encoding="utf-8") as handle:
                if handle.read() != want:
                    print(f"{path} is stale: run python scripts/build_dashboard.py", file=sys.stderr)
                    return 1
        return 0
    os.makedirs(OUT_DIR, exist_ok=True)
    for path, content in ((DASHBOARD, text), (CONFIGMAP, configmap), (EXPORTER, redis_exporter())):
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(content)
    print(f"wrote {DASHBOARD}, {CONFIGMAP} and {EXPORTER}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
