"""Every name that a dashboard, an alert rule or an exporter reads, defined once.

The pipeline writes these names and the monitoring reads them, so each is defined here and
nowhere else:

* **Metrics** (``METRICS``): the pipeline's Prometheus metrics. ``transforms.telemetry`` records
  them; ``metric_name`` gives the exposed name (``paystream_payments_in_total``).
* **Redis keys** (``RedisKeys``): the keys the alert sink writes under ``--redis_key_prefix``.
  redis_exporter watches the accounts set and the alert stream
  (``redis_exporter_args``).
* **Labels and Kubernetes names** that the queries select on: the consumer group, the
  namespace, the TaskManager autoscaler.

``scripts/build_dashboard.py`` builds the dashboard and the redis_exporter Deployment from this
module. ``tests/test_monitoring.py`` fails if the dashboard, the exporter's arguments, the alert
rules or the sink name something else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

__all__ = [
    "CONSUMER_GROUP",
    "K8S_NAMESPACE",
    "METRICS",
    "METRIC_NAMESPACE",
    "REDIS_KEY_PREFIX",
    "RedisKeys",
    "TASKMANAGER_HPA",
    "metric_name",
    "redis_exporter_args",
]

METRIC_NAMESPACE = "paystream"
REDIS_KEY_PREFIX = "paystream:"
CONSUMER_GROUP = "paystream"  # --kafka_consumer_group's default; kafka-exporter's consumergroup label
K8S_NAMESPACE = "paystream"  # the namespace label of every scraped paystream target
TASKMANAGER_HPA = "paystream-taskmanager"

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400)
_WRITE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

# name -> (kind, help, label names, histogram buckets)
METRICS: Dict[str, Tuple[str, str, Tuple[str, ...], Tuple[float, ...]]] = {
    "payments_in": ("counter", "Raw payloads read from the source", (), ()),
    "payments_valid": ("counter", "Payloads that parsed into a valid payment", (), ()),
    "payments_unique": ("counter", "Payments kept by de-duplication", (), ()),
    "duplicates_dropped": ("counter", "Exact duplicate payments dropped", (), ()),
    "dead_letters": (
        "counter",
        "Records sent to the dead letters, by stage and reason",
        ("stage", "reason"),
        (),
    ),
    "payments_enriched": ("counter", "Payments with features computed", (), ()),
    "fraud_alerts": ("counter", "Fraud alerts raised, by rule kind (velocity, card_testing)", ("rule",), ()),
    "sink_rows": ("counter", "Rows written, by sink table", ("table",), ()),
    "sink_errors": ("counter", "Failed sink writes, by sink table", ("table",), ()),
    "sink_rows_present": (
        "counter",
        "Rows a sink found already written and did not write again (a replay, or a copy after the dedup horizon)",
        ("table",),
        (),
    ),
    "sink_write_seconds": ("histogram", "Duration of one batched sink write", ("table",), _WRITE_BUCKETS),
    "end_to_end_latency_seconds": (
        "histogram",
        "Event time of a payment to its row being written",
        ("table",),
        _LATENCY_BUCKETS,
    ),
    "payload_bytes": ("histogram", "Size of raw payloads", (), (256, 512, 1024, 4096, 65536, 1048576)),
}


def metric_name(name: str, suffix: str = "") -> str:
    """The exposed name of ``METRICS[name]``: ``paystream_<name>``, ``_total`` for a counter;
    ``suffix`` (``_bucket``, ``_sum``, ``_count``) for a histogram's series."""
    kind = METRICS[name][0]
    base = f"{METRIC_NAMESPACE}_{name}"
    return base + "_total" if kind == "counter" else base + suffix


@dataclass(frozen=True)
class RedisKeys:
    """The Redis keys of the alert sink under ``prefix`` (``--redis_key_prefix``)."""

    prefix: str = REDIS_KEY_PREFIX

    @property
    def accounts(self) -> str:
        """A set: every account ever alerted."""
        return f"{self.prefix}fraud:accounts"

    @property
    def stream(self) -> str:
        """A stream: one entry per alert."""
        return f"{self.prefix}alerts:stream"

    @property
    def channel(self) -> str:
        """A pub/sub channel: one message per alert."""
        return f"{self.prefix}alerts"

    def alert(self, alert_id: str) -> str:
        return f"{self.prefix}alert:{alert_id}"

    def streamed(self, alert_id: str) -> str:
        return f"{self.prefix}alert:{alert_id}:streamed"


def redis_exporter_args(keys: RedisKeys = RedisKeys()) -> List[str]:
    """redis_exporter's flags: the accounts set's size (``redis_key_size{key=...}``) and the
    alert stream's length (``redis_stream_length{stream=...}``)."""
    return [f"--check-keys={keys.accounts}", f"--check-streams={keys.stream}"]
