"""Per-minute figures of a live run: the RSS and CPU seconds of each process, the lag, and
the alert latency, sampled while ``LiveRun`` sends (``bench.soak`` and the live part of
``bench.streaming`` print them)."""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import psutil

from paystream_dev.harness.live import LiveResult, LiveRun, Phase, percentile
from paystream_dev.harness.processes import RssSampler, tree
from paystream_dev.harness.services import KafkaBroker, RedisServer

__all__ = [
    "Watched",
    "fmt",
    "per_minute",
    "pipeline_rss",
    "print_minutes",
    "round1",
    "run_watched",
    "watch_processes",
]


def _pipeline_split(run: LiveRun) -> Tuple[Callable[[], List[int]], Callable[[], List[int]]]:
    """Two pid functions over the pipeline's tree: its Python processes, its JVMs (a tree
    split for ``RssSampler.watch``)."""

    def pipeline() -> List[psutil.Process]:
        if run.proc is None or run.proc.poll() is not None:
            return []
        return tree(run.proc.pid)

    def is_java(proc: psutil.Process) -> bool:
        try:
            return "java" in os.path.basename(proc.exe() or proc.name())
        except psutil.Error:
            return False

    return (lambda: [p.pid for p in pipeline() if not is_java(p)]), (
        lambda: [p.pid for p in pipeline() if is_java(p)]
    )


def watch_processes(run: LiveRun, broker: KafkaBroker, server: RedisServer) -> RssSampler:
    """RSS and CPU of each process of a live run, sampled each second once started: the
    pipeline's Python, its JVM, the broker, redis-server, and this process."""
    rss = RssSampler(every_s=1.0, t0=run.t0)
    python, jvm = _pipeline_split(run)
    rss.watch("pipeline Python", python)
    rss.watch("pipeline JVM (Flink)", jvm)
    broker_pid = broker.pid
    rss.watch("Kafka broker", lambda: [broker_pid] if broker_pid else [])
    redis_pids = [server.proc.pid] if server.proc is not None else []
    rss.watch("redis-server", lambda: redis_pids)
    rss.watch("simulator + reader", lambda: [os.getpid()])
    return rss


class Watched(NamedTuple):
    """A finished live run, its processes' samples, and where each phase began (seconds
    since the run's ``t0``, wall-clock time): what ``per_minute`` reads."""

    run: LiveRun
    result: LiveResult
    rss: RssSampler
    starts: List[Tuple[float, float]]


def run_watched(
    broker: KafkaBroker,
    server: RedisServer,
    workdir: str,
    phases: Sequence[Phase],
    pipeline_args: Sequence[str],
    seed: int,
    drain_timeout_s: float = 300.0,
) -> Watched:
    """``LiveRun`` through ``phases`` (start, warm up, the phases, drain, finish), with
    each process's RSS and CPU sampled throughout (``watch_processes``)."""
    run = LiveRun(broker, server.url, workdir, pipeline_args, seed=seed)
    rss = watch_processes(run, broker, server)
    starts: List[Tuple[float, float]] = []
    try:
        run.start()
        rss.start()
        run.warm_up()
        for phase in phases:
            starts.append((time.monotonic() - run.t0, time.time()))
            run.phase(phase)
        run.drain(timeout_s=drain_timeout_s)
    except BaseException:
        run.abort()
        rss.stop()
        raise
    result = run.finish()
    rss.stop()
    return Watched(run, result, rss, starts)


def per_minute(
    run: LiveRun, rss: RssSampler, start_t: float, start_wall: float, minutes: int
) -> List[Dict[str, Any]]:
    """One row per whole minute of the steady phase."""
    truth = run.producer.truth
    arrived: Dict[str, float] = {}
    for at, fields in run.reader.entries:
        arrived.setdefault(fields["account_id"], at)
    latency: Dict[int, List[float]] = {}
    missing: Dict[int, int] = {}
    for b in truth.bursts:
        assert b.crossing_transaction_id is not None
        acked = truth.sends.get(b.crossing_transaction_id, (0, 0))[1] / 1e6
        m = int((acked - start_wall) // 60)
        if not 0 <= m < minutes:
            continue
        if b.account_id in arrived:
            latency.setdefault(m, []).append((arrived[b.account_id] - acked) * 1000)
        else:
            missing[m] = missing.get(m, 0) + 1
    rows = []
    for m in range(minutes):
        lo, hi = start_t + 60 * m, start_t + 60 * (m + 1)
        lag = [s["lag"] for s in run.samples if lo <= s["t"] < hi]
        peaks: Dict[str, int] = {}
        for t, row in rss.samples:
            if lo <= t < hi:
                for name, value in row.items():
                    peaks[name] = max(peaks.get(name, 0), value)
        lat = latency.get(m, [])
        used = [cpu for t, cpu in rss.cpu if t < hi]
        before = [cpu for t, cpu in rss.cpu if t < lo]
        cpu_s = {
            name: round(seconds - (before[-1].get(name, 0.0) if before else 0.0), 1)
            for name, seconds in (used[-1].items() if used and len(used) > len(before) else ())
        }
        rows.append(
            {
                "minute": m + 1,
                "rss_mb": {name: round(v / 2**20, 1) for name, v in peaks.items()},
                "rss_total_mb": round(sum(peaks.values()) / 2**20, 1),
                "cpu_s": cpu_s,  # CPU seconds each process used in the minute
                "lag_max": max(lag) if lag else None,
                "lag_end": lag[-1] if lag else None,
                "alerts": len(lat),
                "missing": missing.get(m, 0),
                "p50_ms": round1(percentile(lat, 50)),
                "p95_ms": round1(percentile(lat, 95)),
                "p99_ms": round1(percentile(lat, 99)),
                "max_ms": round1(max(lat) if lat else None),
            }
        )
    return rows


def round1(v: Optional[float]) -> Optional[float]:
    return None if v is None else round(v, 1)


def pipeline_rss(row: Dict[str, Any]) -> float:
    """The pipeline's own RSS in a minute's row: its Python processes and its JVM (not the
    broker, Redis, or this process, whose ground truth grows with every payment sent)."""
    return sum(v for name, v in row["rss_mb"].items() if name.startswith("pipeline"))


def fmt(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:,.0f}"


def print_minutes(rows: List[Dict[str, Any]]) -> None:
    """The per-minute table (RSS, lag, alert latency) and the CPU table."""
    f = fmt
    names = sorted({n for r in rows for n in r["rss_mb"]})
    short = {n: n.split(" (")[0][:16] for n in names}
    print("\nper minute (RSS: peak MB in the minute; lag: payments; latency: ms)")
    print(
        f"{'min':>3} "
        + " ".join(f"{short[n]:>16}" for n in names)
        + f" {'all':>7} {'lag max':>8} {'lag end':>8} {'alerts':>6} {'p50':>6} {'p95':>6} {'p99':>6} {'max':>6}"
    )

    for r in rows:
        print(
            f"{r['minute']:>3} "
            + " ".join(f"{f(r['rss_mb'].get(n)):>16}" for n in names)
            + f" {f(r['rss_total_mb']):>7} {f(r['lag_max']):>8} {f(r['lag_end']):>8} {r['alerts']:>6} "
            f"{f(r['p50_ms']):>6} {f(r['p95_ms']):>6} {f(r['p99_ms']):>6} {f(r['max_ms']):>6}"
        )
    cpu_names = sorted({n for r in rows for n in r.get("cpu_s", {})})
    if cpu_names:
        print("\nCPU seconds per minute, per process (60 = one core busy)")
        print(f"{'min':>3} " + " ".join(f"{short.get(n, n[:16]):>16}" for n in cpu_names))
        for r in rows:
            cpu = r.get("cpu_s", {})
            print(f"{r['minute']:>3} " + " ".join(f"{f(cpu.get(n)):>16}" for n in cpu_names))
