"""Pipeline metrics, recorded twice: as Beam metrics and as Prometheus metrics.

Beam metrics are what the runner aggregates (the end-of-run summary, the
Flink web UI, Dataflow's Cloud Monitoring). Beam Python metrics do not reach
Prometheus on their own (apache/beam #32895, #19500), so every update also
goes to a process-wide prometheus-client registry, served on ``/metrics`` by
``serve(port)``: by the driver for local runs (its workers run in-process)
and by ``python -m beam_pipeline.worker`` in each Python SDK worker pool on
Flink. Metric names follow Prometheus conventions (``_total``, ``_seconds``,
base units); they are defined in ``schemas.observability.METRICS``, the one list the
dashboard, the alert rules and their tests read. The registry also carries the process's
own ``process_cpu_seconds_total`` and ``process_resident_memory_bytes``. Without
prometheus-client installed, only Beam metrics are kept.
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections import Counter
from functools import partial
from typing import Any, Dict, Optional, Sequence, Tuple

from apache_beam.metrics import Metrics

from schemas.observability import METRIC_NAMESPACE, METRICS, metric_name

__all__ = ["METRICS", "count", "declare", "observe", "observe_many", "prometheus_name", "registry", "serve"]

_NAMESPACE = METRIC_NAMESPACE

_LOCK = threading.Lock()
_PROM: Dict[str, Any] = {}
_REGISTRY: Optional[Any] = None
_SERVED: Dict[int, Any] = {}


prometheus_name = metric_name


def registry() -> Optional[Any]:
    """The process-wide registry (``None`` without prometheus-client)."""
    global _REGISTRY
    with _LOCK:
        if _REGISTRY is None:
            try:
                from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
            except ImportError:  # the [metrics] extra is not installed
                return None
            _REGISTRY = CollectorRegistry()
            # process_cpu_seconds_total, process_resident_memory_bytes, ...: the local
            # equivalent of the dashboard's pod CPU and memory
            ProcessCollector(registry=_REGISTRY)
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


def declare(name: str, **labels: str) -> None:
    """Expose ``name`` with these labels at zero before anything happens, so that a query on
    it (``rate(paystream_sink_errors_total[5m])``) answers 0 rather than nothing."""
    _handle(name, labels)


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


def serve(port: int, host: str = "127.0.0.1") -> Optional[int]:
    """Serve ``/metrics`` on ``host``:``port`` (0: a free port) once per process; returns the port."""
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
