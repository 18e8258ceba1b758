"""Live runs: the live simulator against a streaming pipeline, measured from outside it.

``run_live`` starts ``python -m beam_pipeline`` streaming from a fresh topic (local Flink,
parallelism 2, DuckDB warehouse, Redis alerts), warms it up at a low rate until it reads
what is sent, then runs the live simulator (``simulator.producer.LiveProducer``) through
the given phases of rate and duration, changing the rate as the REST call does.

* **Alert latency** of a burst: from Kafka's acknowledgement of its crossing payment
  (the third sent; the simulator's ground truth has its acknowledgement time) to the
  alert being read with ``XREAD`` on ``{prefix}alerts:stream`` by a reader in this
  process that blocks on the stream. Bursts count in the phase their crossing
  payment was acknowledged in.
* **Lag**: payments Kafka acknowledged minus payments the pipeline read
  (``payments_in``, scraped from ``--metrics_port``), sampled each second.
* **RSS**: of the pipeline's whole process tree (the driver with its Python workers,
  the Flink JVM), sampled every 0.5 s.

Once the simulator stops, the run drains and is stopped with SIGTERM; then the
warehouse and the Redis stream are checked against the ground truth: every valid
payment stored once, every malformed one dead-lettered with its reason, every burst
alerted exactly once, and no other alert.

Used by ``bench/streaming.py --live`` / ``--memory`` and by ``tests/test_live.py``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from beam_pipeline.local_kafka import KafkaBroker, free_port
from bench.streaming import TreeRss, _stop_tree, counters
from simulator.generator import GroundTruth
from simulator.live import LiveConfig
from simulator.producer import LiveProducer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LATENCY_FIRST: List[str] = []

__all__ = ["AlertReader", "LiveResult", "Phase", "run_live", "percentile"]


@dataclass(frozen=True)
class Phase:
    rate: float
    seconds: float


def percentile(values: Sequence[float], q: float) -> Optional[float]:
    """The nearest-rank percentile (q in 0..100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


class AlertReader:
    """Reads every entry of a Redis stream as it arrives (``XREAD BLOCK``), stamping each."""

    def __init__(self, redis_url: str, stream: str) -> None:
        import redis

        self._client = redis.Redis.from_url(redis_url)
        self._stream = stream
        self.entries: List[Tuple[float, Dict[str, str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alert-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last = "0-0"
        while not self._stop.is_set():
            try:
                got = self._client.xread({self._stream: last}, block=100, count=1000)
            except Exception:  # noqa: BLE001 - Redis briefly away: try again
                time.sleep(0.1)
                continue
            now = time.time()
            for _key, entries in got or []:
                for entry_id, fields in entries:
                    last = entry_id
                    self.entries.append((now, {k.decode(): v.decode() for k, v in fields.items()}))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._client.close()


@dataclass
class LiveResult:
    phases: List[Dict[str, Any]]
    exact: Dict[str, Any]
    samples: List[Dict[str, float]] = field(default_factory=list)  # one per second
    rss: List[Tuple[float, int]] = field(default_factory=list)
    truth: Optional[GroundTruth] = None
    log: str = ""
    alerts: List[Tuple[float, Dict[str, str]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.exact.get("ok"))


def _pipeline_cmd(
    broker: KafkaBroker, topic: str, warehouse: str, redis_url: str, port: int, extra: Sequence[str]
) -> List[str]:
    return [
        sys.executable,
        "-m",
        "beam_pipeline",
        "--runner=FlinkRunner",
        "--parallelism=2",
        "--streaming",
        "--source=kafka",
        f"--kafka_bootstrap_servers={broker.bootstrap_servers}",
        f"--kafka_topic={topic}",
        "--kafka_consumer_group=live",
        f"--warehouse=duckdb:{warehouse}",
        f"--redis_url={redis_url}",
        f"--metrics_port={port}",
        *extra,
    ]


def _check(warehouse: str, truth: GroundTruth, alerts: List[Tuple[float, Dict[str, str]]]) -> Dict[str, Any]:
    """The warehouse and the Redis stream against the ground truth."""
    import duckdb

    conn = duckdb.connect(warehouse, read_only=True)
    try:
        ids = [r[0] for r in conn.execute("SELECT transaction_id FROM payment_transactions").fetchall()]
        reasons = dict(conn.execute("SELECT reason, count(*) FROM dead_letters GROUP BY reason").fetchall())
        stored_alerts = [
            r[0] for r in conn.execute("SELECT account_id FROM fraud_velocity_alerts").fetchall()
        ]
    finally:
        conn.close()
    valid = truth.valid_transaction_ids
    bursts = {b.account_id for b in truth.bursts}
    streamed: Dict[str, int] = {}
    for _, fields in alerts:
        streamed[fields["account_id"]] = streamed.get(fields["account_id"], 0) + 1
    warehoused: Dict[str, int] = {}
    for account in stored_alerts:
        warehoused[account] = warehoused.get(account, 0) + 1
    out = {
        "valid": len(valid),
        "rows": len(ids),
        "rows_missing": len(valid - set(ids)),
        "rows_extra": len(set(ids) - valid),
        "rows_twice": len(ids) - len(set(ids)),
        "dead_letters": reasons,
        "malformed": dict(truth.malformed),
        "bursts": len(bursts),
        "redis_alerted_once": sum(1 for a in bursts if streamed.get(a) == 1),
        "redis_missed": sum(1 for a in bursts if a not in streamed),
        "redis_twice": sum(1 for a in bursts if streamed.get(a, 0) > 1),
        "redis_false": sum(n for a, n in streamed.items() if a not in bursts),
        "warehouse_alerted_once": sum(1 for a in bursts if warehoused.get(a) == 1),
        "warehouse_false": sum(n for a, n in warehoused.items() if a not in bursts),
    }
    out["ok"] = (
        out["rows_missing"] == out["rows_extra"] == out["rows_twice"] == 0
        and reasons == truth.malformed
        and out["redis_alerted_once"] == out["warehouse_alerted_once"] == len(bursts)
        and out["redis_false"] == out["warehouse_false"] == 0
    )
    return out


def _slope(points: List[Tuple[float, float]]) -> float:
    """Least-squares slope of y over x (0 for fewer than 2 points)."""
    if len(points) < 2:
        return 0.0
    mx = statistics.fmean(x for x, _ in points)
    my = statistics.fmean(y for _, y in points)
    den = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else 0.0


def run_live(
    broker: KafkaBroker,
    redis_url: str,
    phases: Sequence[Phase],
    workdir: str,
    pipeline_args: Sequence[str] = (),
    seed: int = 1,
    warmup_rate: float = 100.0,
    live: Optional[LiveConfig] = None,
    verbose: bool = True,
) -> LiveResult:
    topic = f"live-{seed}-{int(time.time())}"
    broker.create_topic(topic, partitions=2, config={"retention.ms": "-1"})
    warehouse = os.path.join(workdir, f"{topic}.duckdb")
    log_path = os.path.join(workdir, f"{topic}.log")
    port = free_port()
    cmd = _pipeline_cmd(broker, topic, warehouse, redis_url, port, pipeline_args)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    reader = AlertReader(redis_url, "paystream:alerts:stream")
    log = open(log_path, "w", encoding="utf-8")
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    rss = TreeRss(proc.pid, every_s=0.5)
    producer = LiveProducer(
        broker.bootstrap_servers, topic, warmup_rate, live or LiveConfig(seed=seed), duration_s=86_400.0
    )
    sender = threading.Thread(target=producer.run, name="live-simulator", daemon=True)
    samples: List[Dict[str, float]] = []
    t0 = time.monotonic()

    def say(text: str) -> None:
        if verbose:
            print(text, flush=True)

    def sample() -> Dict[str, float]:
        if proc.poll() is not None:
            raise RuntimeError(f"the pipeline ended early (rc={proc.returncode}); see {log_path}")
        c = counters(port)
        acked = producer.stats.snapshot(0)["produced"]
        s = {
            "t": round(time.monotonic() - t0, 2),
            "wall": time.time(),
            "acked": acked,
            "read": c.get("payments_in", 0.0),
            "rss_mb": round((rss.samples[-1][1] if rss.samples else 0) / 2**20, 1),
            "rate": producer.pacer.rate,
        }
        s["lag"] = s["acked"] - s["read"]
        samples.append(s)
        return s

    phase_out: List[Dict[str, Any]] = []
    try:
        sender.start()
        # warm-up: the job starts (Flink: 20-40 s) and catches up with the low rate
        caught_up_since: Optional[float] = None
        while True:
            s = sample()
            if s["read"] > 0 and s["lag"] <= 3 * warmup_rate:  # within about 3 s
                caught_up_since = caught_up_since or time.monotonic()
                if time.monotonic() - caught_up_since >= 5:
                    break
            else:
                caught_up_since = None
            if time.monotonic() - t0 > 300:
                raise RuntimeError(f"the pipeline did not catch up within 300 s: {s}; see {log_path}")
            time.sleep(1)
        say(f"  warmed up after {time.monotonic() - t0:.0f} s (read {s['read']:.0f})")
        for phase in phases:
            producer.pacer.set_rate(phase.rate)
            start_wall = time.time()
            end = time.monotonic() + phase.seconds
            first = len(samples)
            while time.monotonic() < end:
                time.sleep(1)
                s = sample()
                if verbose:  # one progress line, rewritten each second
                    print(
                        f"\r  {phase.rate:,.0f}/s: {s['t'] - samples[first]['t']:5.0f}/{phase.seconds:.0f} s | "
                        f"acked {s['acked']:>9,.0f} | read {s['read']:>9,.0f} | lag {s['lag']:>7,.0f} | "
                        f"alerts {len(reader.entries):>5} | RSS {s['rss_mb']:,.0f} MB",
                        end="",
                        flush=True,
                    )
            phase_out.append(
                {
                    "rate": phase.rate,
                    "seconds": phase.seconds,
                    "from": start_wall,
                    "to": time.time(),
                    "first": first,
                }
            )
            say("")
        producer.stop()
        sender.join(timeout=120)
        truth = producer.truth
        # drain: everything sent is read, and the counters stop moving
        stable_since, last = time.monotonic(), None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            s = sample()
            now = (s["read"], len(reader.entries))
            if now != last:
                stable_since, last = time.monotonic(), now
            if (
                s["lag"] <= 0
                and len(reader.entries) >= len(truth.bursts)
                and time.monotonic() - stable_since >= 5
            ):
                break
            time.sleep(1)
        say(f"  drained: read {s['read']:.0f} of {s['acked']:.0f}, {len(reader.entries)} alerts")
    finally:
        producer.stop()
        rc = _stop_tree(proc)
        rss.stop()
        reader.close()
        log.close()
    if rc != 130:
        raise RuntimeError(f"the pipeline did not stop cleanly (rc={rc}); see {log_path}")
    exact = _check(warehouse, truth, reader.entries)
    arrived: Dict[str, float] = {}
    for at, fields in reader.entries:
        arrived.setdefault(fields["account_id"], at)
    for p in phase_out:
        latencies: List[float] = []
        missing = 0
        for b in truth.bursts:
            assert b.crossing_transaction_id is not None
            acked_us = truth.sends.get(b.crossing_transaction_id, (0, 0))[1]
            if not p["from"] * 1e6 <= acked_us < p["to"] * 1e6:
                continue
            if b.account_id in arrived:
                latencies.append(arrived[b.account_id] - acked_us / 1e6)
            else:
                missing += 1
        rows = [r for r in samples[p.pop("first") :] if p["from"] <= r["wall"] <= p["to"]]
        lag = [(r["t"], r["lag"]) for r in rows]
        half = lag[len(lag) // 2 :]
        p.update(
            bursts=len(latencies) + missing,
            missing=missing,
            p50_ms=_ms(percentile(latencies, 50)),
            p95_ms=_ms(percentile(latencies, 95)),
            p99_ms=_ms(percentile(latencies, 99)),
            max_ms=_ms(max(latencies) if latencies else None),
            read_per_s=round(
                (rows[-1]["read"] - rows[0]["read"]) / max(rows[-1]["t"] - rows[0]["t"], 1e-9), 1
            )
            if len(rows) > 1
            else None,
            lag_end=lag[-1][1] if lag else None,
            lag_max=max(v for _, v in lag) if lag else None,
            lag_slope_per_s=round(_slope(half), 2),
        )
    return LiveResult(
        phases=phase_out,
        exact=exact,
        samples=samples,
        rss=rss.samples,
        truth=truth,
        log=log_path,
        alerts=reader.entries,
    )


def _ms(seconds: Optional[float]) -> Optional[float]:
    return None if seconds is None else round(seconds * 1000, 1)


def rss_per_minute(rss: List[Tuple[float, int]], since_s: float = 0.0) -> List[float]:
    """Peak RSS (MB) of each whole minute after ``since_s``."""
    out: Dict[int, int] = {}
    for t, b in rss:
        if t >= since_s:
            m = int((t - since_s) // 60)
            out[m] = max(out.get(m, 0), b)
    return [round(out[m] / 2**20, 1) for m in sorted(out)]


# --- the live parts of bench/streaming.py ---------------------------------------------------

RESULTS = os.path.join(ROOT, "bench", "results", "streaming_live.json")


def reference_xread_ms(redis_url: str, n: int = 200) -> Dict[str, Optional[float]]:
    """The measurement's floor: XADD an entry, time until the blocking reader has it."""
    import redis

    client = redis.Redis.from_url(redis_url)
    stream = f"bench-reference-{int(time.time() * 1000)}"
    reader = AlertReader(redis_url, stream)
    samples: List[float] = []
    try:
        for i in range(n):
            before = len(reader.entries)
            started = time.time()
            client.xadd(stream, {"account_id": f"ref-{i}"})
            while len(reader.entries) == before:
                time.sleep(0.0005)
            samples.append(reader.entries[-1][0] - started)
            time.sleep(0.005)
    finally:
        reader.close()
        client.delete(stream)
        client.close()
    return {"p50_ms": _ms(percentile(samples, 50)), "p99_ms": _ms(percentile(samples, 99))}


def _phase_line(p: Dict[str, Any]) -> str:
    def f(v: Optional[float]) -> str:
        return "-" if v is None else f"{v:,.0f}"

    return (
        f"{p['rate']:>8,.0f} {p['seconds']:>5.0f} {f(p.get('read_per_s')):>9} {p['bursts']:>6} "
        f"{p['missing']:>5} {f(p['p50_ms']):>7} {f(p['p95_ms']):>7} {f(p['p99_ms']):>7} {f(p['max_ms']):>7} "
        f"{f(p['lag_end']):>8} {f(p['lag_max']):>8} {p['lag_slope_per_s']:>+8.1f}"
    )


PHASE_HEADER = (
    f"{'rate/s':>8} {'s':>5} {'read/s':>9} {'bursts':>6} {'miss':>5} {'p50 ms':>7} {'p95 ms':>7} "
    f"{'p99 ms':>7} {'max ms':>7} {'lag end':>8} {'lag max':>8} {'lag/s':>8}"
)


def _exact_line(e: Dict[str, Any]) -> str:
    return (
        f"exact: {'yes' if e['ok'] else 'NO'} | rows {e['rows']:,} of {e['valid']:,} valid "
        f"(missing {e['rows_missing']}, extra {e['rows_extra']}, twice {e['rows_twice']}) | dead letters "
        f"{'as injected' if e['dead_letters'] == e['malformed'] else 'DIFFER'} | bursts {e['bursts']}: "
        f"Redis once {e['redis_alerted_once']}, missed {e['redis_missed']}, twice {e['redis_twice']}, "
        f"false {e['redis_false']}; warehouse once {e['warehouse_alerted_once']}, false {e['warehouse_false']}"
    )


def bench_live(phases: Sequence[Phase], pipeline_args: Sequence[str], seed: int = 1) -> Dict[str, Any]:
    """The live simulator through ``phases``: alert latency, lag, exactness."""
    import tempfile

    from bench.streaming import RedisServer

    work = tempfile.mkdtemp(prefix="paystream-live-")
    print(f"work dir: {work}; pipeline flags: {' '.join(pipeline_args) or '(defaults)'}", flush=True)
    with KafkaBroker() as broker, RedisServer() as redis_url:
        reference = reference_xread_ms(redis_url)
        res = run_live(broker, redis_url, phases, work, pipeline_args, seed=seed)
    print("\nalert latency: Kafka ack of the crossing payment -> XREAD of its alert; lag: acked - read")
    print(PHASE_HEADER)
    for p in res.phases:
        print(_phase_line(p))
    print(
        f"reference (XADD -> XREAD, same reader): p50 {reference['p50_ms']} ms, p99 {reference['p99_ms']} ms"
    )
    print(_exact_line(res.exact))
    return {
        "pipeline_args": list(pipeline_args),
        "phases": res.phases,
        "exact": res.exact,
        "reference": reference,
    }


def bench_memory(rate: float, seconds: float, pipeline_args: Sequence[str], seed: int = 2) -> Dict[str, Any]:
    """One long phase: peak RSS of the pipeline's process tree per minute."""
    import tempfile

    from bench.streaming import RedisServer

    work = tempfile.mkdtemp(prefix="paystream-memory-")
    with KafkaBroker() as broker, RedisServer() as redis_url:
        res = run_live(broker, redis_url, [Phase(rate, seconds)], work, pipeline_args, seed=seed)
    start = next(s["t"] for s in res.samples if s["rate"] == rate)
    minutes = rss_per_minute(res.rss, since_s=start)[: int(seconds // 60)]
    after_first = minutes[1:]
    spread = None
    if after_first:
        mid = statistics.median(after_first)
        spread = round(100 * max(abs(m - mid) for m in after_first) / mid, 1)
    print(f"\npeak RSS of the pipeline's process tree per minute at {rate:,.0f}/s (MB):")
    print("  " + "  ".join(f"{m:,.0f}" for m in minutes))
    print(
        f"after the first minute: within +/-{spread} % of their median"
        + (" (meets +/-10 %)" if spread is not None and spread <= 10 else " (misses +/-10 %)")
    )
    print(_phase_line(res.phases[0]))
    print(_exact_line(res.exact))
    return {
        "rate": rate,
        "seconds": seconds,
        "rss_mb_per_minute": minutes,
        "spread_pct": spread,
        "phase": res.phases[0],
        "exact": res.exact,
    }
