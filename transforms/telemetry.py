"""Pipeline metrics, recorded twice: as Beam metrics and as Prometheus metrics.

Beam metrics are what the runner aggregates (the end-of-run summary, the
Flink web UI, Dataflow's Cloud Monitoring). Beam Python metrics do not reach
Prometheus on their own (apache/beam #32895, #19500), so every update also
goes to a process-wide prometheus-client registry, served on ``/metrics`` by
``serve(port)``: by the driver for local runs (its workers run in-process)
and by ``python -m beam_pipeline.worker`` in each Python SDK worker pool on
Flink. Metric names follow Prometheus conventions (``_total``, ``_seconds``,
base units); ``METRICS`` is the list the dashboard and alert tests check
against. Without prometheus-client installed, only Beam metrics are kept.
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections import Counter
from functools import partial
from typing import Any, Dict, Optional, Sequence, Tuple

from apache_beam.metrics import Metrics

__all__ = ["METRICS", "count", "observe", "observe_many", "prometheus_name", "registry", "serve"]

_NAMESPACE = "paystream"
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

_LOCK = threading.Lock()
_PROM: Dict[str, Any] = {}
_REGISTRY: Optional[Any] = None
_SERVED: Dict[int, Any] = {}


def prometheus_name(name: str) -> str:
    kind = METRICS[name][0]
    base = f"{_NAMESPACE}_{name}"
    return base + "_total" if kind == "counter" else base


def registry() -> Optional[Any]:
    """The process-wide registry (``None`` without prometheus-client)."""
    global _REGISTRY
    with _LOCK:
        if _REGISTRY is None:
            try:
                from prometheus_client import CollectorRegistry, Counter, Histogram
            except ImportError:  # the [metrics] extra is not installed
                return None
            _REGISTRY = CollectorRegistry()
            for name, (kind, doc, labels, buckets) in METRICS.items():
                base = f"{_NAMESPACE}_{name}"
                if kind == "counter":
                    _PROM[name] = Counter(base, doc, labels, registry=_REGISTRY)
                else:
                    _PROM[name] = Histogram(base, doc, labels, buckets=buckets, registry=_REGISTRY)
        return _REGISTRY


def _beam_name(name: str, labels: Dict[str, str]) -> str:
    return name if not labels else name + "." + ".".join(labels[k] for k in sorted(labels))


# (name, labels) -> (Beam metric, Prometheus child or None). Beam's delegating metrics
# find the current step's container on each update, so one object serves every step;
# looking them up per record cost more than the step's own work.
_HANDLES: Dict[Tuple[str, Tuple[Tuple[str, str], ...]], Tuple[Any, Any]] = {}


def _handle(name: str, labels: Dict[str, str]) -> Tuple[Any, Any]:
    key = (name, tuple(sorted(labels.items())))
    found = _HANDLES.get(key)
    if found is None:
        kind = METRICS[name][0]
        beam_name = _beam_name(name, labels)
        beam_metric = (
            Metrics.counter(_NAMESPACE, beam_name)
            if kind == "counter"
            else Metrics.distribution(_NAMESPACE, beam_name)
        )
        prom = None
        if registry() is not None:
            metric = _PROM[name]
            prom = metric.labels(**labels) if labels else metric
        found = _HANDLES[key] = (beam_metric, prom)
    return found


def count(name: str, n: int = 1, **labels: str) -> None:
    beam_metric, prom = _handle(name, labels)
    beam_metric.inc(n)
    if prom is not None:
        prom.inc(n)


def observe(name: str, value: float, **labels: str) -> None:
    beam_metric, prom = _handle(name, labels)
    beam_metric.update(int(value * 1000))
    if prom is not None:
        prom.observe(value)


def observe_many(name: str, values: Sequence[float], **labels: str) -> None:
    """``observe(name, v)`` for each of ``values``, with the same result, in bulk.

    Beam's distribution takes each value (a compiled call). The Prometheus histogram
    takes its sum once and each bucket's count once: its ``observe`` runs a Python loop
    over the buckets for every value. ``tests/test_kernels.py`` checks that both ways
    expose the same histogram.
    """
    if not values:
        return
    beam_metric, prom = _handle(name, labels)
    update = beam_metric.update
    for value in values:
        update(int(value * 1000))
    if prom is None:
        return
    bounds = getattr(prom, "_upper_bounds", None)
    buckets = getattr(prom, "_buckets", None)
    total = getattr(prom, "_sum", None)
    if bounds is None or buckets is None or total is None or math.isnan(sum(values)):
        # not the client this was written for, or a NaN (which observe() counts in no bucket)
        for value in values:
            prom.observe(value)
        return
    found = Counter(map(partial(bisect_left, bounds), values))  # the first bound >= the value
    for index, n in found.items():
        buckets[index].inc(n)
    total.inc(sum(values))


def serve(port: int, host: str = "0.0.0.0") -> Optional[int]:
    """Serve ``/metrics`` on ``port`` (0: a free one) once per process; returns the port."""
    reg = registry()
    if reg is None:
        return None
    from prometheus_client import start_http_server

    with _LOCK:
        if port in _SERVED and port != 0:
            return port
        server, _thread = start_http_server(port, addr=host, registry=reg)
        bound = int(server.server_address[1])
        _SERVED[bound] = server
        return bound
