"""What the console shows, read from what a run already exposes. It keeps no state of its
own that the run does not have.

* **The pipeline's metrics** (its ``--metrics_port``, or the worker pool's on Flink),
  scraped every second: payments in, stored and dead-lettered per second; dead letters by
  reason; the alert latency p50 and p99 (``end_to_end_latency_seconds{table="redis_alerts"}``,
  from a payment's event time to its alert in Redis, over the last 10 s); sink errors.
* **Kafka**: the consumer group's lag, committed offsets against partition ends
  (``beam_pipeline.kafka.GroupLag``).
* **Redis**: the alert stream (``schemas.observability.RedisKeys``), for the alerts as they
  arrive and the top accounts by alerts.

Each part's health comes from the same reads: Kafka answers, the runner serves its metrics
and reads, Redis answers PING, the warehouse's writes go on without errors. A part that
fails is shown as down with the reason, and the others go on.

Alerts carry ids, the rule and times; the console passes on only the fields of
``ALERT_FIELDS``, which hold no card number, email or phone.
"""

from __future__ import annotations

import collections
import math
import threading
import time
import urllib.request
from typing import Any, Deque, Dict, Iterator, List, Optional, Sequence, Tuple

from schemas.observability import CONSUMER_GROUP, REDIS_KEY_PREFIX, RedisKeys, metric_name
from schemas.rows import ALERTS as FRAUD_ALERTS
from schemas.rows import DEAD_LETTERS, TRANSACTIONS

__all__ = ["ALERT_FIELDS", "Sources", "parse_metrics", "quantile"]

ALERT_FIELDS = (
    "alert_id",
    "account_id",
    "rule",
    "matched_count",
    "threshold",
    "window_start",
    "window_end",
    "crossing_txn_time",
    "detected_at",
)
REDIS_ALERTS = "redis_alerts"  # the Redis sink's table label
WAREHOUSE_TABLES = (TRANSACTIONS, FRAUD_ALERTS, DEAD_LETTERS)
HISTORY_S = 180  # seconds of samples kept, for the charts
LATENCY_WINDOW_S = 10.0
RATE_WINDOW_S = 5.0
STALE_S = 30.0  # a part with no sign of life for this long is down

Sample = Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]


def parse_metrics(text: str) -> Sample:
    """Prometheus text exposition as {(name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    out: Sample = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def _sum(sample: Sample, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in sample.items() if n == name and want <= set(ls))


def _by(sample: Sample, name: str, label: str) -> Dict[str, float]:
    out: Dict[str, float] = collections.defaultdict(float)
    for (n, ls), v in sample.items():
        if n == name:
            out[dict(ls).get(label, "")] += v
    return dict(out)


def quantile(q: float, buckets: Sequence[Tuple[float, float]]) -> Optional[float]:
    """``histogram_quantile``: the q-quantile of cumulative (upper bound, count) buckets,
    interpolated linearly inside the bucket it falls in; None without observations."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside > 0 else 1.0)
        lower, below = bound, count
    return lower


class Sources:
    """The reads, one thread polling them every ``interval_s``; ``snapshot()`` is the
    latest view. ``alerts()`` follows the Redis alert stream for one page."""

    def __init__(
        self,
        metrics_url: Optional[str],
        redis_url: Optional[str],
        bootstrap_servers: Optional[str] = None,
        group: str = CONSUMER_GROUP,
        redis_key_prefix: str = REDIS_KEY_PREFIX,
        interval_s: float = 1.0,
    ) -> None:
        self.metrics_url = metrics_url
        self.redis_url = redis_url
        self.bootstrap_servers = bootstrap_servers
        self.group = group
        self.keys = RedisKeys(redis_key_prefix)
        self.interval_s = interval_s
        self.samples: Deque[Tuple[float, Sample]] = collections.deque()
        self.lag: Deque[Tuple[float, int]] = collections.deque()
        self.health: Dict[str, Dict[str, Any]] = {}
        self.top: List[Dict[str, Any]] = []
        self._last_read: Tuple[float, float] = (0.0, -1.0)  # (when payments_in last moved, its value)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="console-sources", daemon=True)
        self._lag_reader: Any = None

    # -- the poller
    def start(self) -> Sources:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.poll()
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))

    def poll(self) -> None:
        now = time.time()
        health = {
            "runner": self._poll_metrics(now),
            "kafka": self._poll_kafka(now),
            "redis": self._poll_redis(),
        }
        health["warehouse"] = self._warehouse_health(now, health["runner"])
        with self._lock:
            self.health = health

    def _poll_metrics(self, now: float) -> Dict[str, Any]:
        if not self.metrics_url:
            return {"state": "unknown", "detail": "no --metrics_url"}
        try:
            with urllib.request.urlopen(self.metrics_url, timeout=2) as response:  # noqa: S310 - a run's /metrics
                sample = parse_metrics(response.read().decode("utf-8", "replace"))
        except Exception as err:  # noqa: BLE001 - down is a state to show, not a crash
            return {"state": "down", "detail": f"metrics not served: {_reason(err)}"}
        read = _sum(sample, metric_name("payments_in"))
        with self._lock:
            self.samples.append((now, sample))
            while self.samples and self.samples[0][0] < now - HISTORY_S:
                self.samples.popleft()
            if read != self._last_read[1]:
                self._last_read = (now, read)
            moved_at = self._last_read[0]
        lag = self.lag[-1][1] if self.lag else None
        if now - moved_at > STALE_S and lag:
            return {"state": "down", "detail": f"nothing read for {now - moved_at:.0f} s, {lag:,} behind"}
        return {"state": "ok", "detail": f"{read:,.0f} payloads read"}

    def _poll_kafka(self, now: float) -> Dict[str, Any]:
        if not self.bootstrap_servers:
            return {"state": "unknown", "detail": "no --bootstrap_servers"}
        try:
            if self._lag_reader is None:
                from beam_pipeline.kafka import GroupLag

                self._lag_reader = GroupLag(self.bootstrap_servers, self.group, timeout_s=2.0)
            parts = self._lag_reader.read()
        except Exception as err:  # noqa: BLE001
            return {"state": "down", "detail": f"broker not answering: {_reason(err)}"}
        behind = sum(max(end - committed, 0) for committed, end in parts.values())
        with self._lock:
            self.lag.append((now, behind))
            while self.lag and self.lag[0][0] < now - HISTORY_S:
                self.lag.popleft()
        return {"state": "ok", "detail": f"group {self.group}: {behind:,} behind"}

    def _poll_redis(self) -> Dict[str, Any]:
        if not self.redis_url:
            return {"state": "unknown", "detail": "no --redis_url"}
        try:
            client = self._redis()
            client.ping()
            recent = client.xrevrange(self.keys.stream, count=2000)
        except Exception as err:  # noqa: BLE001
            return {"state": "down", "detail": f"not answering: {_reason(err)}"}
        counts = collections.Counter(fields.get("account_id", "") for _id, fields in recent)
        with self._lock:
            self.top = [{"account_id": a, "alerts": n} for a, n in counts.most_common(10) if a]
        return {"state": "ok", "detail": f"{len(recent):,} recent alerts"}

    def _redis(self, timeout_s: float = 2.0) -> Any:
        import redis

        return redis.Redis.from_url(
            self.redis_url or "",
            decode_responses=True,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
        )

    def _warehouse_health(self, now: float, runner: Dict[str, Any]) -> Dict[str, Any]:
        with self._lock:
            samples = list(self.samples)
        if runner["state"] != "ok" or len(samples) < 2:
            return {"state": "unknown", "detail": "no metrics"}
        old = next((s for t, s in samples if t >= now - STALE_S), samples[0][1])
        new = samples[-1][1]
        errors = sum(
            _sum(new, metric_name("sink_errors"), table=t) - _sum(old, metric_name("sink_errors"), table=t)
            for t in WAREHOUSE_TABLES
        )
        rows = _sum(new, metric_name("sink_rows"), table=TRANSACTIONS)
        if errors > 0:
            return {"state": "down", "detail": f"{errors:.0f} failed writes in {STALE_S:.0f} s"}
        return {"state": "ok", "detail": f"{rows:,.0f} payments stored"}

    # -- the views
    def snapshot(self) -> Dict[str, Any]:
        with self._lock:
            samples = list(self.samples)
            lag = list(self.lag)
            health = dict(self.health)
            top = list(self.top)
        series: Dict[str, List[Any]] = {"t": [], "in": [], "stored": [], "dead": [], "p50": [], "p99": []}
        for i in range(1, len(samples)):
            t, s = samples[i]
            series["t"].append(round(t, 3))
            for key, value in self._rates(samples, i).items():
                series[key].append(value)
            p50, p99 = self._latency(samples, i)
            series["p50"].append(p50)
            series["p99"].append(p99)
        last = samples[-1][1] if samples else {}
        totals = {
            "in": _sum(last, metric_name("payments_in")),
            "stored": _sum(last, metric_name("sink_rows"), table=TRANSACTIONS),
            "dead": _sum(last, metric_name("dead_letters")),
            "duplicates": _sum(last, metric_name("duplicates_dropped")),
            "alerts": _sum(last, metric_name("fraud_alerts")),
        }
        reasons = {k: v for k, v in _by(last, metric_name("dead_letters"), "reason").items() if v}
        return {
            "at": time.time(),
            "now": {k: (v[-1] if v else None) for k, v in series.items() if k != "t"},
            "series": series,
            "totals": totals,
            "lag": {"t": [round(t, 3) for t, _ in lag], "messages": [n for _, n in lag]},
            "dead_letters": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
            "top_accounts": top,
            "health": health,
        }

    def _rates(self, samples: List[Tuple[float, Sample]], i: int) -> Dict[str, Optional[float]]:
        t, new = samples[i]
        t0, old = samples[_window_start(samples, i, RATE_WINDOW_S)]
        span = max(t - t0, 1e-9)

        def rate(name: str, **labels: str) -> float:
            return round(max(_sum(new, name, **labels) - _sum(old, name, **labels), 0.0) / span, 1)

        return {
            "in": rate(metric_name("payments_in")),
            "stored": rate(metric_name("sink_rows"), table=TRANSACTIONS),
            "dead": rate(metric_name("dead_letters")),
        }

    def _latency(
        self, samples: List[Tuple[float, Sample]], i: int
    ) -> Tuple[Optional[float], Optional[float]]:
        new = samples[i][1]
        old = samples[_window_start(samples, i, LATENCY_WINDOW_S)][1]
        name = metric_name("end_to_end_latency_seconds", "_bucket")
        buckets = []
        for (n, ls), v in new.items():
            labels = dict(ls)
            if n == name and labels.get("table") == REDIS_ALERTS:
                bound = float(labels["le"])
                buckets.append((bound, v - old.get((n, ls), 0.0)))
        p50, p99 = quantile(0.5, buckets), quantile(0.99, buckets)
        return (
            None if p50 is None else round(p50 * 1000, 1),
            None if p99 is None else round(p99 * 1000, 1),
        )

    def alerts(self, backlog: int = 20, block_ms: int = 1000) -> Iterator[Optional[Dict[str, str]]]:
        """The last ``backlog`` alerts, then each new one as it is written; ``None`` while
        waiting (a keep-alive) and while Redis is away (it is retried)."""
        last = "$"
        sent_backlog = False
        while not self._stop.is_set():
            try:
                client = self._redis(timeout_s=block_ms / 1000 + 2)
                if not sent_backlog:
                    recent = client.xrevrange(self.keys.stream, count=backlog)
                    for entry_id, fields in reversed(recent):
                        yield _alert(entry_id, fields)
                    last = recent[0][0] if recent else "$"
                    sent_backlog = True
                found = client.xread({self.keys.stream: last}, block=block_ms, count=100)
            except Exception:  # noqa: BLE001 - Redis away: keep the page, try again
                yield None
                time.sleep(1.0)
                continue
            if not found:
                yield None
                continue
            for entry_id, fields in found[0][1]:
                last = entry_id
                yield _alert(entry_id, fields)


def _window_start(samples: List[Tuple[float, Sample]], i: int, window_s: float) -> int:
    """The sample a window of ``window_s`` ending at sample ``i`` starts from: the latest
    one at least ``window_s`` older, or the first (and never ``i`` itself, when i > 0)."""
    t = samples[i][0]
    j = i - 1
    while j > 0 and samples[j][0] > t - window_s:
        j -= 1
    return j


def _alert(entry_id: str, fields: Dict[str, str]) -> Dict[str, str]:
    out = {k: fields[k] for k in ALERT_FIELDS if k in fields}
    out["entry_id"] = entry_id
    return out


def _reason(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    return text if len(text) < 120 else text[:117] + "..."
