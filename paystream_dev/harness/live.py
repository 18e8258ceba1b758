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

The steps are ``LiveRun``'s, for a caller to put something between them: the fault
tests (``tests/test_faults.py``) kill the pipeline's tree and start it again, restart the
broker, take Redis away. ``reference_xread_ms`` measures the floor of the latency
measurement: an entry written with ``XADD``, read by the same kind of reader.

Also here, for any run watched from outside: ``counters`` (a run's Prometheus counters,
scraped from its ``--metrics_port``), ``committed_and_end`` (a consumer group's committed
offsets beside the topic's end), ``percentile`` and ``slope``.

Used by ``bench/streaming.py --live`` / ``--memory`` / ``--settings``, ``bench/soak.py``,
``tests/test_live.py``, ``tests/test_faults.py`` and ``tests/test_kafka_e2e.py``.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union, cast

from paystream_dev.harness.ports import free_port
from paystream_dev.harness.processes import TreeRss, kill_tree, stop_tree
from paystream_dev.local_kafka import KafkaBroker
from simulator.generator import GroundTruth
from simulator.live import LiveConfig
from simulator.producer import LiveProducer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

__all__ = [
    "AlertReader",
    "LiveResult",
    "LiveRun",
    "Phase",
    "committed_and_end",
    "counters",
    "percentile",
    "reference_xread_ms",
    "run_live",
    "slope",
]

_METRIC = re.compile(r"^paystream_(\w+)_total(?:\{(.*)\})? (\S+)$", re.M)


def counters(port: int, timeout_s: float = 2.0) -> Dict[str, float]:
    """The Prometheus counters a run serves on ``port`` (its ``--metrics_port``), by
    ``name`` or ``name{labels}`` without the ``paystream_`` prefix and ``_total`` suffix,
    e.g. ``sink_rows{table="payment_transactions"}``; empty while nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    return {(f"{n}{{{labels}}}" if labels else n): float(v) for n, labels, v in _METRIC.findall(text)}


@dataclass(frozen=True)
class Phase:
    """A phase of a live run: the simulator's rate (payments/s) for ``seconds``."""

    rate: float
    seconds: float


def percentile(values: Sequence[float], q: float) -> Optional[float]:
    """The nearest-rank percentile (q in 0..100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


_XReadReply = List[Tuple[bytes, List[Tuple[bytes, Dict[bytes, bytes]]]]]


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
        last: Union[str, bytes] = "0-0"
        while not self._stop.is_set():
            try:
                # redis-py types a reply as sync or async: this client's is a list of streams
                got = cast(_XReadReply, self._client.xread({self._stream: last}, block=100, count=1000))
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
    warehouse: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.exact.get("ok"))


def _pipeline_cmd(
    broker: KafkaBroker,
    topic: str,
    warehouse: str,
    redis_url: str,
    port: int,
    group: str,
    extra: Sequence[str],
) -> List[str]:
    return [
        sys.executable,
        "-m",
        "beam_pipeline",
        "--runner=FlinkRunner",
        "--streaming",
        "--source=kafka",
        f"--kafka_bootstrap_servers={broker.bootstrap_servers}",
        f"--kafka_topic={topic}",
        f"--kafka_consumer_group={group}",
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
        stored_alerts = [r[0] for r in conn.execute("SELECT account_id FROM fraud_alerts").fetchall()]
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


def committed_and_end(broker: KafkaBroker, topic: str, group: str) -> Tuple[int, int]:
    """The group's committed offsets and the topic's end, summed over partitions."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": group})
    try:
        partitions = consumer.list_topics(topic, timeout=15).topics[topic].partitions
        parts = [TopicPartition(topic, p) for p in sorted(partitions)]
        committed = sum(max(tp.offset, 0) for tp in consumer.committed(parts, timeout=15))
        end = sum(consumer.get_watermark_offsets(tp, timeout=15)[1] for tp in parts)
        return committed, end
    finally:
        consumer.close()


def slope(points: List[Tuple[float, float]]) -> float:
    """Least-squares slope of y over x (0 for fewer than 2 points)."""
    if len(points) < 2:
        return 0.0
    mx = statistics.fmean(x for x, _ in points)
    my = statistics.fmean(y for _, y in points)
    den = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else 0.0


class LiveRun:
    """One live run, step by step: a fresh topic, the pipeline (which may be killed and
    started again with the same flags), the live simulator, the alert reader.

    ``run_live`` is the usual sequence (start, warm up, phases, drain, finish); the fault
    tests put their faults between the steps. The pipeline's flags are fixed at the
    start, so a pipeline started again after ``kill()`` is the same command (with
    ``--checkpoint_dir`` among ``pipeline_args``, it restores the last checkpoint). With
    ``topic``, the pipeline reads that topic, filled by the caller, and the live
    simulator is not started.

    ``samples`` (one a second) carry ``lag``: payments acknowledged minus payments read;
    once the pipeline has been started again, it re-reads from its checkpoint, and ``lag``
    is then the topic's end minus the group's committed offsets (committed at each
    checkpoint).
    """

    def __init__(
        self,
        broker: KafkaBroker,
        redis_url: str,
        workdir: str,
        pipeline_args: Sequence[str] = (),
        seed: int = 1,
        warmup_rate: float = 100.0,
        live: Optional[LiveConfig] = None,
        verbose: bool = True,
        group: str = "live",
        topic: Optional[str] = None,
        metrics_port: Optional[int] = None,
    ) -> None:
        self.broker = broker
        self.group = group
        if topic is None:
            topic = f"live-{seed}-{int(time.time())}"
            broker.create_topic(topic, partitions=2, config={"retention.ms": "-1"})
        self.topic = topic
        self.workdir = workdir
        self.warehouse = os.path.join(workdir, f"{self.topic}.duckdb")
        self.port = free_port()
        # where the run's counters are: the driver's, or (Python workers in a worker pool
        # of a Flink cluster) the pool's
        self.metrics_port = metrics_port or self.port
        self.cmd = _pipeline_cmd(
            broker, self.topic, self.warehouse, redis_url, self.port, group, pipeline_args
        )
        self.warmup_rate = warmup_rate
        self.verbose = verbose
        self.reader = AlertReader(redis_url, "paystream:alerts:stream")
        self.producer = LiveProducer(
            broker.bootstrap_servers,
            self.topic,
            warmup_rate,
            live or LiveConfig(seed=seed),
            duration_s=86_400.0,
        )
        self._sender = threading.Thread(target=self.producer.run, name="live-simulator", daemon=True)
        self.samples: List[Dict[str, float]] = []
        self.rss: List[Tuple[float, int]] = []
        self.phases: List[Dict[str, Any]] = []
        self.logs: List[str] = []
        self.proc: Optional[subprocess.Popen] = None
        self._rss: Optional[TreeRss] = None
        self._log: Any = None
        self._read_before = 0.0  # payments read by the pipelines killed before this one
        self.last_counters: Dict[str, float] = {}
        # lag from the group's committed offsets, not from the payments read: once a run
        # has restored a checkpoint (started again, or restarted by its cluster), it reads
        # some payments twice
        self.lag_from_offsets = False
        self.t0 = time.monotonic()

    # -- the pipeline
    def start(self) -> None:
        """Start the pipeline (again)."""
        assert self.proc is None or self.proc.poll() is not None, "the pipeline is running"
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        log_path = os.path.join(self.workdir, f"{self.topic}-{len(self.logs) + 1}.log")
        self.logs.append(log_path)
        self._log = open(log_path, "w", encoding="utf-8")
        self.proc = subprocess.Popen(
            self.cmd, cwd=self.workdir, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )
        self._rss = TreeRss(self.proc.pid, every_s=0.5, t0=self.t0)

    def kill(self) -> float:
        """``kill -9`` of the pipeline's whole process tree at once: the driver with its
        Python workers, the job server and its Flink, any Java worker it started. Returns
        the wall-clock time of the kill; ``last_counters`` are the run's counters just
        before it."""
        assert self.proc is not None
        self.last_counters = self.counters()
        self._read_before += self.last_counters.get("payments_in", 0.0)
        at = time.time()
        kill_tree(self.proc.pid)
        self.proc.wait(timeout=30)
        self._closed()
        return at

    def stop(self) -> int:
        """SIGTERM, as a supervisor stops a run; returns its exit code (130: stopped)."""
        assert self.proc is not None
        rc = stop_tree(self.proc)
        self._closed()
        return rc

    def _closed(self) -> None:
        if self._rss is not None:
            self._rss.stop()
            self.rss.extend(self._rss.totals())
            self._rss = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_text(self, last: bool = False) -> str:
        """The logs of every pipeline started so far, one after the other (``last``: of
        the latest only)."""
        if self._log is not None:
            self._log.flush()
        out = []
        for path in self.logs[-1:] if last else self.logs:
            with open(path, encoding="utf-8", errors="replace") as handle:
                out.append(handle.read())
        return "\n".join(out)

    def counters(self) -> Dict[str, float]:
        return counters(self.metrics_port)

    @property
    def where_logs(self) -> str:
        """The latest pipeline's log; the run's directory when it started none (a job on a
        cluster)."""
        return self.logs[-1] if self.logs else self.workdir

    # -- measuring
    def say(self, text: str) -> None:
        if self.verbose:
            print(text, flush=True)

    def sample(self) -> Dict[str, float]:
        """One sample: acknowledged, read (over all the pipelines started), lag, RSS."""
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"the pipeline ended early (rc={self.proc.returncode}); see {self.where_logs}")
        c = self.counters()
        acked = self.producer.stats.snapshot(0)["produced"]
        rss = sum(self._rss.samples[-1][1].values()) if self._rss is not None and self._rss.samples else 0
        s = {
            "t": round(time.monotonic() - self.t0, 2),
            "wall": time.time(),
            "acked": acked,
            "read": self._read_before + c.get("payments_in", 0.0),
            "rss_mb": round(rss / 2**20, 1),
            "rate": self.producer.pacer.rate,
            "alerts": len(self.reader.entries),
        }
        if len(self.logs) > 1 or self.lag_from_offsets:  # a run restored re-reads from its checkpoint
            committed, end = self.committed_and_end()
            s["lag"] = end - committed
        else:
            s["lag"] = s["acked"] - s["read"]
        self.samples.append(s)
        return s

    def committed_and_end(self) -> Tuple[int, int]:
        return committed_and_end(self.broker, self.topic, self.group)

    # -- the steps
    def warm_up(self, timeout_s: float = 300.0) -> None:
        """Send at the warm-up rate until the pipeline (just started) reads what is sent."""
        if not self._sender.is_alive():
            self._sender.start()
        t0 = time.monotonic()
        caught_up_since: Optional[float] = None
        while True:
            s = self.sample()
            if self.counters().get("payments_in", 0) > 0 and s["lag"] <= 3 * self.warmup_rate:
                caught_up_since = caught_up_since or time.monotonic()
                if time.monotonic() - caught_up_since >= 5:
                    break
            else:
                caught_up_since = None
            if time.monotonic() - t0 > timeout_s:
                raise RuntimeError(
                    f"the pipeline did not catch up within {timeout_s:.0f} s: {s}; see {self.where_logs}"
                )
            time.sleep(1)
        self.say(f"  warmed up after {time.monotonic() - t0:.0f} s (read {s['read']:.0f})")

    def phase(self, phase: Phase, tick: Optional[Callable[[LiveRun, float], None]] = None) -> None:
        """Send at ``phase.rate`` for ``phase.seconds``; ``tick(self, elapsed_s)`` is called
        about every 0.1 s (a fault test's hook), samples are taken each second."""
        self.producer.pacer.set_rate(phase.rate)
        start_wall, start = time.time(), time.monotonic()
        first = len(self.samples)
        next_sample = start + 1
        while (now := time.monotonic()) < start + phase.seconds:
            if tick is not None:
                tick(self, now - start)
            if now >= next_sample:
                next_sample += 1
                if self.proc is None or self.proc.poll() is None:
                    s = self.sample()
                    if self.verbose:  # one progress line, rewritten each second
                        print(
                            f"\r  {phase.rate:,.0f}/s: {now - start:5.0f}/{phase.seconds:.0f} s | "
                            f"acked {s['acked']:>9,.0f} | read {s['read']:>9,.0f} | lag {s['lag']:>7,.0f} | "
                            f"alerts {s['alerts']:>5} | RSS {s['rss_mb']:,.0f} MB",
                            end="",
                            flush=True,
                        )
            time.sleep(0.1 if tick is not None else max(0.0, min(1.0, next_sample - time.monotonic())))
        self.phases.append(
            {
                "rate": phase.rate,
                "seconds": phase.seconds,
                "from": start_wall,
                "to": time.time(),
                "first": first,
            }
        )
        self.say("")

    def drain(self, timeout_s: float = 300.0, quiet_s: float = 5.0) -> None:
        """Stop the simulator and wait until the pipeline is through: every payment read
        (after a restart: the group's committed offsets at the end of the topic), every
        burst alerted, and the counters still for ``quiet_s``."""
        self.producer.stop()
        self._sender.join(timeout=120)
        truth = self.producer.truth
        stable_since, last = time.monotonic(), None
        deadline = time.monotonic() + timeout_s
        while True:
            s = self.sample()
            c = self.counters()
            now = (s["read"], len(self.reader.entries), c.get('sink_rows{table="payment_transactions"}'))
            if now != last:
                stable_since, last = time.monotonic(), now
            if (
                s["lag"] <= 0
                and len(self.reader.entries) >= len(truth.bursts)
                and time.monotonic() - stable_since >= quiet_s
            ):
                break
            if time.monotonic() > deadline:
                self.say(f"  not drained within {timeout_s:.0f} s: {s}")
                break
            time.sleep(1)
        self.say(f"  drained: read {s['read']:.0f} of {s['acked']:.0f}, {len(self.reader.entries)} alerts")

    def finish(self) -> LiveResult:
        """Stop the pipeline and the reader; the check against the ground truth, and each
        phase's figures."""
        if self.proc is None or self.proc.poll() is None:
            self.last_counters = self.counters()
        try:
            if self.proc is None:
                rc = 130  # no driver: a job the caller started on a cluster, and stops
            elif self.proc.poll() is None:
                rc = self.stop()
            else:
                rc = self.proc.returncode
        finally:
            self.producer.stop()
            self.reader.close()
        if rc != 130:
            raise RuntimeError(f"the pipeline did not stop cleanly (rc={rc}); see {self.where_logs}")
        truth = self.producer.truth
        exact = _check(self.warehouse, truth, self.reader.entries)
        return LiveResult(
            phases=[_phase_figures(p, truth, self.reader.entries, self.samples) for p in self.phases],
            exact=exact,
            samples=self.samples,
            rss=self.rss,
            truth=truth,
            log=self.logs[-1] if self.logs else "",
            alerts=self.reader.entries,
            warehouse=self.warehouse,
        )

    def abort(self) -> None:
        """End everything (a failed step): the simulator, the pipeline's tree, the reader."""
        self.producer.stop()
        if self.proc is not None and self.proc.poll() is None:
            stop_tree(self.proc)
        self._closed()
        self.reader.close()


def _phase_figures(
    p: Dict[str, Any],
    truth: GroundTruth,
    alerts: List[Tuple[float, Dict[str, str]]],
    samples: List[Dict[str, float]],
) -> Dict[str, Any]:
    """A phase's alert latencies (bursts whose crossing payment was acknowledged in it) and lag."""
    p = dict(p)
    arrived: Dict[str, float] = {}
    for at, fields in alerts:
        arrived.setdefault(fields["account_id"], at)
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
        read_per_s=round((rows[-1]["read"] - rows[0]["read"]) / max(rows[-1]["t"] - rows[0]["t"], 1e-9), 1)
        if len(rows) > 1
        else None,
        lag_end=lag[-1][1] if lag else None,
        lag_max=max(v for _, v in lag) if lag else None,
        lag_slope_per_s=round(slope(half), 2),
    )
    return p


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
    """Start, warm up, the phases, drain, finish."""
    run = LiveRun(broker, redis_url, workdir, pipeline_args, seed, warmup_rate, live, verbose)
    try:
        run.start()
        run.warm_up()
        for phase in phases:
            run.phase(phase)
        run.drain()
    except BaseException:
        run.abort()
        raise
    return run.finish()


def _ms(seconds: Optional[float]) -> Optional[float]:
    return None if seconds is None else round(seconds * 1000, 1)


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
