"""Streaming on local Flink: throughput on one pre-filled Kafka topic (paystream beside a
plain loop, the runner's floor and Quix Streams), and live alert latency and memory.

    python -m bench.streaming [--events 50000] [--only a,b,c,d]       # throughput
    python -m bench.streaming --live [--live-phases 1000:120,5000:120]  # live latency
    python -m bench.streaming --memory [--memory-run 2000:600]         # RSS per minute
    python -m bench.streaming --settings                               # latency vs settings

The live parts run the live simulator against ``python -m beam_pipeline`` streaming on
local Flink (``paystream_dev/harness/live.py`` says what is measured and how); each prints
the figures beside a reference measured in the same process: the time for an entry written
with ``XADD`` to be read by the same ``XREAD`` reader (the floor of the measurement).

One local Kafka broker (``paystream_dev.local_kafka``), one topic of 2 partitions filled
once by the simulator (``simulator.producer``: keyed by account, with its duplicates,
malformed payloads and bursts), then each variant reads the whole topic with a consumer
group of its own:

  (a) plain     a confluent-kafka consumer loop in this process running our kernels:
                ``parse_or_dead_letter``, ``mask_transaction`` and the account step's
                ``AccountBook.decide`` (dedup, features, velocity, alert), nothing else:
                the plain-Python limit of our own code;
  (b) floor     a trivial Beam graph on the same runner as (c): Kafka -> json.loads ->
                count (``bench/streaming_floor.py``);
  (c) paystream ``python -m beam_pipeline --runner=FlinkRunner --streaming
                --source=kafka`` writing the DuckDB warehouse and Redis alerts, as a user
                runs it (extra flags: ``--paystream-args``);
  (d) quix      Quix Streams doing the same work (``bench/quix_peer.py``, in a virtualenv
                this bench makes under ``.cache/bench-venv``): JSON parse and checks, dedup
                with per-account state, HMAC card token and masks, a 60 s sliding count
                per account.

Each child is watched through its Prometheus counters (or its progress lines, for the
peer): payments/s is measured from the first payment read to the last one done, start-up
(process start to first read) is reported apart. Peak RSS is that of the child's whole
process tree (JVMs and Python workers included), sampled every 0.2 s. Prints a table
with each variant's ratio to (a) and to (d); writes ``bench/results/streaming.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from paystream_dev.harness.live import Phase, counters, reference_xread_ms, run_live  # noqa: E402
from paystream_dev.harness.ports import free_port  # noqa: E402
from paystream_dev.harness.processes import TreeRss, stop_tree  # noqa: E402
from paystream_dev.harness.services import KafkaBroker, RedisServer  # noqa: E402
from simulator.generator import GeneratorConfig, GroundTruth  # noqa: E402
from simulator.producer import PaymentProducer  # noqa: E402

RESULTS = os.path.join(ROOT, "bench", "results", "streaming.json")
QUIX_VERSION = "3.28.0"
QUIX_VENV = os.path.join(ROOT, ".cache", "bench-venv")


def watch_child(
    name: str,
    cmd: List[str],
    port: int,
    started: Callable[[Dict[str, float]], bool],
    done: Callable[[Dict[str, float]], bool],
    progress: Callable[[Dict[str, float]], float],
    total: int,
    timeout_s: float,
    log: str,
    env: Optional[Dict[str, str]] = None,
) -> Dict[str, Any]:
    """Run ``cmd``, poll its counters until ``done``; first read to done is the measure."""
    child_env = dict(
        os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {})
    )
    with open(log, "w", encoding="utf-8") as out:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=child_env, stdout=out, stderr=subprocess.STDOUT)
        rss = TreeRss(proc.pid)
        first: Optional[float] = None
        last_print = 0.0
        result: Dict[str, Any] = {"variant": name}
        try:
            while True:
                now = time.monotonic()
                if proc.poll() is not None:
                    raise RuntimeError(f"{name}: the run ended early (rc={proc.returncode}); see {log}")
                if now - t0 > timeout_s:
                    raise RuntimeError(f"{name}: timed out after {timeout_s:.0f} s; see {log}")
                c = counters(port)
                if first is None and c and started(c):
                    first = time.monotonic()
                if first is not None and done(c):
                    end = time.monotonic()
                    break
                if now - last_print >= 2:
                    last_print = now
                    doneness = progress(c) if c else 0
                    print(f"\r  {name}: {doneness:>7.0f}/{total} after {now - t0:5.1f} s", end="", flush=True)
                # Every scrape costs the run (Prometheus' HTTP server in its process): at 50 ms
                # it took about 5 % of the pipeline's Python time (py-spy).
                time.sleep(0.25)
        finally:
            peak = rss.stop()
            stop_tree(proc)
        print(f"\r  {name}: {total}/{total} after {end - t0:5.1f} s" + " " * 10, flush=True)
        result.update(
            startup_s=round(first - t0, 2),
            run_s=round(end - first, 3),
            payments_per_s=round(total / (end - first), 1),
            peak_rss_mb=round(peak / 2**20, 1),
            counters=c,
        )
        return result


def fill_topic(broker: KafkaBroker, topic: str, events: int, seed: int) -> GroundTruth:
    broker.create_topic(topic, partitions=2, config={"retention.ms": "-1"})
    producer = PaymentProducer(
        broker.bootstrap_servers,
        topic,
        rate=200_000,
        generator=GeneratorConfig(seed=seed, accounts=max(1, events // 4), include_oversized=False),
        num_events=events,
    )
    report = producer.run()
    if report["produced"] != events or report["failed"]:
        raise RuntimeError(f"the topic was not filled: {report}")
    assert producer.truth is not None
    return producer.truth


def variant_floor(
    broker: KafkaBroker, topic: str, events: int, work: str, runner_args: List[str]
) -> Dict[str, Any]:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "bench.streaming_floor",
        f"--kafka_bootstrap_servers={broker.bootstrap_servers}",
        f"--kafka_topic={topic}",
        "--kafka_consumer_group=bench-floor",
        f"--metrics_port={port}",
        "--warehouse=duckdb:" + os.path.join(work, "floor.duckdb"),
        *runner_args,
    ]
    return watch_child(
        "(b) floor",
        cmd,
        port,
        started=lambda c: c.get("payments_in", 0) > 0,
        done=lambda c: c.get("payments_in", 0) >= events,
        progress=lambda c: c.get("payments_in", 0),
        total=events,
        timeout_s=900,
        log=os.path.join(work, "floor.log"),
    )


def variant_paystream(
    broker: KafkaBroker,
    topic: str,
    events: int,
    truth: GroundTruth,
    work: str,
    runner_args: List[str],
    redis_url: Optional[str],
    extra: List[str],
    group: str = "bench-paystream",
) -> Dict[str, Any]:
    port = free_port()
    warehouse = os.path.join(work, f"{group}.duckdb")
    cmd = [
        sys.executable,
        "-m",
        "beam_pipeline",
        "--source=kafka",
        f"--kafka_bootstrap_servers={broker.bootstrap_servers}",
        f"--kafka_topic={topic}",
        f"--kafka_consumer_group={group}",
        f"--warehouse=duckdb:{warehouse}",
        f"--metrics_port={port}",
        "--allowed_lateness_s=3600",
        *runner_args,
        *extra,
    ]
    if redis_url:
        cmd.append(f"--redis_url={redis_url}")
    unique = len(truth.valid_transaction_ids)
    bursts = len(truth.bursts)
    rows = 'sink_rows{table="payment_transactions"}'
    alerts = 'sink_rows{table="fraud_alerts"}'
    result = watch_child(
        "(c) paystream",
        cmd,
        port,
        started=lambda c: c.get("payments_in", 0) > 0,
        done=lambda c: c.get(rows, 0) >= unique and c.get(alerts, 0) >= bursts,
        progress=lambda c: c.get("payments_in", 0),
        total=events,
        timeout_s=1800,
        log=os.path.join(work, f"{group}.log"),
    )
    result["warehouse"] = warehouse
    return result


def variant_plain(broker: KafkaBroker, topic: str, events: int) -> Dict[str, Any]:
    """(a) a confluent-kafka consumer loop in this process, running our kernels."""
    from confluent_kafka import Consumer

    from kernels.books import NEW, AccountBook, SeenIds
    from kernels.masking import Tokenizer, mask_transaction
    from kernels.parse import parse_or_dead_letter
    from kernels.rules import Rules
    from kernels.velocity import VelocityRule
    from schemas.records import SourceRef, Transaction

    rules = Rules((VelocityRule(allowed_lateness_s=3600),))
    horizon, ttl = 600 * 1_000_000, 86_400 * 1_000_000
    tokenizer = Tokenizer(b"k" * 32)
    ids, books = SeenIds(), {}  # type: SeenIds, Dict[str, AccountBook]
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "group.id": "bench-plain",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    t0 = time.monotonic()
    consumer.subscribe([topic])
    read = rows = alerts = 0
    first: Optional[float] = None
    try:
        while read < events:
            for msg in consumer.consume(10_000, timeout=1.0):
                if msg.error() is not None:
                    continue
                if first is None:
                    first, cpu_first = time.monotonic(), time.process_time()
                read += 1
                source = SourceRef(msg.topic(), msg.partition(), msg.offset(), None, msg.timestamp()[1])
                txn = parse_or_dead_letter(msg.value(), source, int(time.time() * 1_000_000), 300_000_000)
                if not isinstance(txn, Transaction):
                    continue
                if ids.check(txn.transaction_id, txn.fingerprint, txn.event_time_us, horizon) is not NEW:
                    continue
                masked = mask_transaction(txn, tokenizer)
                book = books.get(txn.account_id)
                if book is None:
                    book = books[txn.account_id] = AccountBook()
                verdict, _, raised = book.decide(masked, txn.fingerprint, rules, horizon, ttl)
                rows += verdict is NEW
                alerts += len(raised)
    finally:
        consumer.close()
    end = time.monotonic()
    assert first is not None
    return {
        "variant": "(a) plain",
        "startup_s": round(first - t0, 2),
        "run_s": round(end - first, 3),
        "payments_per_s": round(events / (end - first), 1),
        "cpu_s": round(time.process_time() - cpu_first, 2),
        "peak_rss_mb": None,
        "rows": rows,
        "alerts": alerts,
    }


def ensure_quix_venv() -> str:
    """A virtualenv with Quix Streams, made once under .cache (the peer's deps are not ours)."""
    python = os.path.join(QUIX_VENV, "bin", "python")
    if not os.path.exists(python):
        print(f"making {QUIX_VENV} with quixstreams=={QUIX_VERSION} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", QUIX_VENV], check=True)
    check = subprocess.run(
        [python, "-c", "import quixstreams; print(quixstreams.__version__)"], capture_output=True, text=True
    )
    if check.returncode != 0 or check.stdout.strip() != QUIX_VERSION:
        subprocess.run([python, "-m", "pip", "install", "-q", f"quixstreams=={QUIX_VERSION}"], check=True)
    return python


def variant_quix(broker: KafkaBroker, topic: str, events: int, work: str) -> Dict[str, Any]:
    """(d) Quix Streams doing the same work (bench/quix_peer.py), as the peer."""
    python = ensure_quix_venv()
    out = os.path.join(work, "quix.json")
    cmd = [
        python,
        os.path.join(ROOT, "bench", "quix_peer.py"),
        "--bootstrap",
        broker.bootstrap_servers,
        "--topic",
        topic,
        "--events",
        str(events),
        "--out",
        out,
    ]
    with open(os.path.join(work, "quix.log"), "w", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, cwd=work, stdout=log, stderr=subprocess.STDOUT)
        rss = TreeRss(proc.pid)
        print("  (d) quix: running ...", flush=True)
        rc = proc.wait(timeout=1800)
        peak = rss.stop()
    if rc != 0:
        raise RuntimeError(f"(d) quix failed (rc={rc}); see {work}/quix.log")
    with open(out, encoding="utf-8") as handle:
        got = json.load(handle)
    run_s = got["last"] - got["first"]
    return {
        "variant": "(d) quix",
        "startup_s": round(got["first"] - got["started"], 2),
        "run_s": round(run_s, 3),
        "payments_per_s": round(events / run_s, 1),
        "peak_rss_mb": round(peak / 2**20, 1),
        "counts": {k: got[k] for k in ("n", "valid", "unique", "windows")},
    }


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--only", default="a,b,c,d", help="variants to run, e.g. b,c")
    parser.add_argument("--paystream-args", default="", help="extra flags for (c), space-separated")
    parser.add_argument("--live", action="store_true", help="the live part: alert latency per phase")
    parser.add_argument(
        "--live-phases", default="1000:120,5000:120", help="RATE:SECONDS,... (default %(default)s)"
    )
    parser.add_argument("--memory", action="store_true", help="the memory part: RSS per minute")
    parser.add_argument("--memory-run", default="2000:600", help="RATE:SECONDS (default %(default)s)")
    parser.add_argument(
        "--settings",
        action="store_true",
        help="latency and payments/s at 1,000/s for each setting in SETTINGS",
    )
    args = parser.parse_args(argv)
    if args.live or args.memory or args.settings:
        _live_parts(args)
        return
    only = set(args.only.split(","))
    runner_args = ["--runner=FlinkRunner", "--streaming"]  # the defaults: one subtask per step
    results: List[Dict[str, Any]] = []
    work = tempfile.mkdtemp(prefix="paystream-bench-")
    print(f"work dir: {work}", flush=True)
    with KafkaBroker() as broker:
        topic = "payments"
        t = time.monotonic()
        truth = fill_topic(broker, topic, args.events, args.seed)
        print(f"topic filled: {args.events} payments in {time.monotonic() - t:.1f} s", flush=True)
        if "a" in only:
            results.append(variant_plain(broker, topic, args.events))
        if "b" in only:
            results.append(variant_floor(broker, topic, args.events, work, runner_args))
        if "c" in only:
            with RedisServer() as server:
                results.append(
                    variant_paystream(
                        broker,
                        topic,
                        args.events,
                        truth,
                        work,
                        runner_args,
                        server.url,
                        args.paystream_args.split(),
                    )
                )
        if "d" in only:
            results.append(variant_quix(broker, topic, args.events, work))
    by = {r["variant"][:3]: r["payments_per_s"] for r in results}
    print(
        f"\n{args.events:,} payments, one topic of 2 partitions; payments/s from the first read to the last "
        "payment done"
    )
    print(
        f"{'variant':<16} {'payments/s':>11} {'/ (a)':>7} {'/ (d)':>7} {'start-up':>9} {'run':>8} {'peak RSS':>9}"
    )
    for r in results:
        ra = f"{r['payments_per_s'] / by['(a)']:.2f}" if "(a)" in by else "-"
        rd = f"{r['payments_per_s'] / by['(d)']:.2f}" if "(d)" in by else "-"
        rss = f"{r['peak_rss_mb']:.0f} MB" if r.get("peak_rss_mb") else "(this)"
        print(
            f"{r['variant']:<16} {r['payments_per_s']:>11,.0f} {ra:>7} {rd:>7} {r['startup_s']:>8.1f}s "
            f"{r['run_s']:>7.1f}s {rss:>9}"
        )
    if "(c)" in by:
        verdicts = [f"(c) {'meets' if by['(c)'] >= 5000 else 'misses'} 5,000/s"]
        if "(d)" in by:
            verdicts.append(f"{'meets' if by['(c)'] >= 0.4 * by['(d)'] else 'misses'} 40 % of (d)")
        print("; ".join(verdicts))
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w", encoding="utf-8") as handle:
        json.dump({"events": args.events, "results": results}, handle, indent=2)
    shutil.rmtree(work, ignore_errors=True)


# --- the live parts: --live, --memory, --settings ------------------------------------------------

LIVE_RESULTS = os.path.join(ROOT, "bench", "results", "streaming_live.json")


def rss_per_minute(rss: List[Tuple[float, int]], since_s: float = 0.0) -> List[float]:
    """Peak RSS (MB) of each whole minute after ``since_s``."""
    out: Dict[int, int] = {}
    for t, b in rss:
        if t >= since_s:
            m = int((t - since_s) // 60)
            out[m] = max(out.get(m, 0), b)
    return [round(out[m] / 2**20, 1) for m in sorted(out)]


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
    """The live simulator through ``phases``: alert latency, lag, exactness; per minute of
    each phase the alert latency, RSS, lag and CPU seconds of each process
    (``paystream_dev.harness.minutes``)."""
    from paystream_dev.harness.minutes import per_minute, print_minutes, run_watched

    work = tempfile.mkdtemp(prefix="paystream-live-")
    print(f"work dir: {work}; pipeline flags: {' '.join(pipeline_args) or '(defaults)'}", flush=True)
    with KafkaBroker() as broker, RedisServer() as server:
        reference = reference_xread_ms(server.url)
        run, res, rss, starts = run_watched(broker, server, work, phases, pipeline_args, seed)
    minutes = []
    for phase, (start_t, start_wall) in zip(phases, starts):
        rows = per_minute(run, rss, start_t, start_wall, max(1, int(phase.seconds // 60)))
        print(f"\n{phase.rate:,.0f}/s, per minute:")
        print_minutes(rows)
        minutes.append(rows)
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
        "minutes": minutes,
        "exact": res.exact,
        "reference": reference,
    }


def bench_memory(rate: float, seconds: float, pipeline_args: Sequence[str], seed: int = 2) -> Dict[str, Any]:
    """One long phase: peak RSS of the pipeline's process tree per minute."""
    work = tempfile.mkdtemp(prefix="paystream-memory-")
    with KafkaBroker() as broker, RedisServer() as server:
        res = run_live(broker, server.url, [Phase(rate, seconds)], work, pipeline_args, seed=seed)
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


# Each row: a name and the flags it gives (the rest are the defaults, FLINK_STREAMING_DEFAULTS).
SETTINGS = [
    (
        "bundles 1 s, buffers 100 ms, Redis per bundle",
        ["--max_bundle_time_mills=1000", "--flink_buffer_timeout_ms=100", "--redis_batch_size=500"],
    ),
    ("bundles 500 ms, buffers 10 ms, Redis per alert", []),
    ("bundles 100 ms, 8 account keys", ["--max_bundle_time_mills=100", "--account_keys=8"]),
    ("bundles 50 ms, 8 account keys", ["--max_bundle_time_mills=50", "--account_keys=8"]),
]


def _settings(extra: List[str], events: int, seed: int) -> List[Dict[str, Any]]:
    """Each setting: live alert latency at 1,000/s, and payments/s on a pre-filled topic."""
    rows = []
    work = tempfile.mkdtemp(prefix="paystream-settings-")
    for name, flags in SETTINGS:
        print(f"\n--- {name}: live at 1,000/s", flush=True)
        live = bench_live([Phase(1000, 60)], [*flags, *extra])
        print(f"--- {name}: throughput on {events:,} pre-filled payments", flush=True)
        with KafkaBroker() as broker, RedisServer() as server:
            truth = fill_topic(broker, "payments", events, seed)
            thr = variant_paystream(
                broker,
                "payments",
                events,
                truth,
                work,
                ["--runner=FlinkRunner", "--parallelism=2", "--streaming"],
                server.url,
                [*flags, *extra],
            )
        rows.append({"setting": name, "flags": flags, "live": live, "payments_per_s": thr["payments_per_s"]})
    shutil.rmtree(work, ignore_errors=True)
    return rows


def _live_parts(args: argparse.Namespace) -> None:
    extra = args.paystream_args.split()
    out: Dict[str, Any] = {}
    if os.path.exists(LIVE_RESULTS):
        with open(LIVE_RESULTS, encoding="utf-8") as handle:
            out = json.load(handle)
    if args.live:
        phases = [Phase(float(r), float(s)) for r, s in (p.split(":") for p in args.live_phases.split(","))]
        out["live"] = bench_live(phases, extra)
    if args.memory:
        rate, seconds = (float(v) for v in args.memory_run.split(":"))
        out["memory"] = bench_memory(rate, seconds, extra)
    if args.settings:
        rows = _settings(extra, args.events, args.seed)
        print(
            "\nby setting: live alert latency at 1,000 payments/s (60 s), and payments/s on a pre-filled topic"
        )
        print(f"{'setting':<48} {'p50 ms':>7} {'p99 ms':>7} {'lag max':>8} {'exact':>6} {'payments/s':>11}")
        for row in rows:
            p = row["live"]["phases"][0]
            print(
                f"{row['setting']:<48} {p['p50_ms'] or 0:>7,.0f} {p['p99_ms'] or 0:>7,.0f} {p['lag_max'] or 0:>8,.0f} "
                f"{'yes' if row['live']['exact']['ok'] else 'NO':>6} {row['payments_per_s']:>11,.0f}"
            )
        out["settings"] = rows
    os.makedirs(os.path.dirname(LIVE_RESULTS), exist_ok=True)
    with open(LIVE_RESULTS, "w", encoding="utf-8") as handle:
        json.dump(out, handle, indent=2)


if __name__ == "__main__":
    main()
