"""Fraud-alert latency: from the pipeline receiving the payment that crosses the velocity
threshold to the alert being readable in Redis, at a paced input rate.

    python -m bench.alert_latency [--rates 1000 5000] [--seconds 10] [--bursts-per-s 20]

What runs, in one process:

1. a local ``redis-server`` on a free port, no persistence (``paystream_dev.harness.services``);
2. the reference: the same alert written with a raw redis-py pipeline
   (SADD + HSET + EXPIRE + XADD + PUBLISH, one round trip), and with the sink's own
   Lua script (one EVALSHA), each timed from the write to a pub/sub subscriber
   receiving the message;
3. for each rate: the whole paystream graph (``build_graph`` + the DuckDB warehouse +
   the Redis alert sink) in streaming mode on the DirectRunner
   (``BundleBasedDirectRunner``). The source is a ``TestStream`` fed live from a
   ``TestStreamService`` (gRPC) that offers payments at the requested rate in 100 ms
   blocks (``--tick-ms``), each followed by a watermark advance to the block's event time (event time
   = the time the payment is offered). Background payments come from enough accounts
   that none has 3 in 70 s; ``--bursts-per-s`` accounts each pay 3 times 200 ms apart,
   and the third payment crosses the threshold.

A step right after the source stamps when each crossing payment *entered the
pipeline*; a subscriber on ``{prefix}alerts`` stamps when each alert arrives. The
table gives p50/p99/max of arrival - entry, of arrival - offer (which adds the
time a payment waited for the runner to pull it: that is where a runner that cannot
keep up shows) and of arrival - the alert reaching the sink (the sink's own share),
the achieved input rate (payments through the first step per second), and missed
alerts.

Why the DirectRunner can only be measured this way, and what the numbers mean, is
printed with the table (see ``NOTES``). Results go to ``bench/results/alert_latency.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import apache_beam as beam  # noqa: E402
import redis  # noqa: E402
from apache_beam.coders import BytesCoder, TupleCoder, VarIntCoder  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402
from apache_beam.portability.api import beam_runner_api_pb2  # noqa: E402
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner  # noqa: E402
from apache_beam.testing.test_stream import TestStream  # noqa: E402
from apache_beam.testing.test_stream_service import TestStreamServiceController  # noqa: E402

from beam_pipeline.graph import build_graph, write_outputs  # noqa: E402
from beam_pipeline.options import PaystreamOptions  # noqa: E402
from paystream_dev.harness.services import RedisServer  # noqa: E402
from schemas.records import SourceRef  # noqa: E402
from schemas.rows import rfc3339_to_us  # noqa: E402
from simulator.generator import GeneratorConfig, generate  # noqa: E402
from transforms.sinks.redis_alerts import ALERT_SCRIPT, AlertKeys, script_call  # noqa: E402
from transforms.telemetry import registry  # noqa: E402

_US = 1_000_000
TICK_S = 0.1  # default block length (--tick-ms)
BURST_GAP_S = 0.2
Event = beam_runner_api_pb2.TestStreamPayload.Event
TimestampedElement = beam_runner_api_pb2.TestStreamPayload.TimestampedElement
ELEMENT_CODER = TupleCoder([VarIntCoder(), BytesCoder()])

NOTES = """\
Notes on the measurement:
- The Python DirectRunner runs streaming pipelines on the BundleBasedDirectRunner, which
  executes every bundle on ONE worker thread (executor.py: NUM_WORKERS = 1). Its cost per
  element and per bundle, for a graph with three stateful steps and event-time timers,
  sets the ceiling; when the requested rate is above it, the source is pulled late,
  "achieved/s" falls below "requested/s", and latency measures the backlog, not Redis.
- A splittable-DoFn source (the usual paced unbounded source) does not work there in
  Beam 2.77: the streaming overrides fail ("Transform node ...ProcessKeyedElements/
  GroupByKey... was not replaced as expected"), and even when forced, sdf_direct_runner.py
  holds the output watermark at -infinity while the restriction is unfinished, so no
  event-time timer (dedup, velocity) would fire before the source ends. Hence a live
  TestStream (gRPC TestStreamService): it carries real watermark advances.
- Prism (which runs streaming with parallel workers) is not used: it is downloaded on
  first use, and this project does not let Beam fetch it (README, "Decisions").
- "from entry" starts when the crossing payment left the source step; "from offer"
  starts when the source offered it (its event time), so it includes the wait for the
  runner to pull it; "sink only" starts when the alert reached the Redis sink's
  process() (its detected_at), so it is the bundle's buffering plus the write."""


class Subscriber:
    """Records (arrival time, message) for every message on a channel."""

    def __init__(self, port: int, channel: str) -> None:
        self.client = redis.Redis(port=port)
        self.pubsub = self.client.pubsub()
        self.pubsub.subscribe(channel)
        while True:
            msg = self.pubsub.get_message(timeout=5)
            if msg and msg["type"] == "subscribe":
                break
        self.received: List[Tuple[float, Dict[str, Any]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self.pubsub.get_message(timeout=0.05)
            if msg and msg["type"] == "message":
                self.received.append((time.time(), json.loads(msg["data"])))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.pubsub.close()
        self.client.close()


def percentiles(values: List[float]) -> Dict[str, Optional[float]]:
    if not values:
        return {"p50": None, "p99": None, "max": None, "n": 0}
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return {"p50": statistics.median(ordered), "p99": p99, "max": ordered[-1], "n": len(ordered)}


# --- the reference ---------------------------------------------------------------------------


def _sample_alerts(n: int) -> List[Any]:
    from schemas.records import FraudAlert

    t0 = 1_795_000_000 * _US
    return [
        FraudAlert(
            alert_id=f"{i:032x}",
            account_id=f"acct-ref-{i:06d}",
            rule="velocity:3 in 60s/5s",
            threshold=3,
            window_start_us=t0,
            window_end_us=t0 + 60 * _US,
            first_txn_time_us=t0 + _US,
            crossing_txn_time_us=t0 + 2 * _US,
            matched_count=3,
            transaction_ids=(f"txn-{i}-0", f"txn-{i}-1", f"txn-{i}-2"),
        )
        for i in range(n)
    ]


def reference_latency(port: int, n: int) -> Dict[str, Dict[str, Optional[float]]]:
    """Write one alert, wait until the subscriber has it; raw commands vs the sink's script."""
    from transforms.sinks.redis_alerts import alert_fields, alert_message

    out: Dict[str, Dict[str, Optional[float]]] = {}
    client = redis.Redis(port=port)
    for name in ("raw", "script"):
        keys = AlertKeys(f"ref-{name}:")
        sub = client.pubsub()
        sub.subscribe(keys.channel)
        sub.get_message(timeout=5)
        script = client.register_script(ALERT_SCRIPT)
        samples = []
        for alert in _sample_alerts(n):
            now_us = int(time.time() * _US)
            started = time.perf_counter()
            pipe = client.pipeline(transaction=False)
            if name == "raw":
                fields = alert_fields(alert, now_us)
                pipe.sadd(keys.accounts, alert.account_id)
                pipe.hset(keys.alert(alert.alert_id), mapping=fields)  # type: ignore[arg-type]
                pipe.expire(keys.alert(alert.alert_id), 7 * 24 * 3600)
                pipe.xadd(keys.stream, fields, maxlen=100_000, approximate=True)  # type: ignore[arg-type]
                pipe.publish(keys.channel, alert_message(alert, now_us))
            else:
                rkeys, args = script_call(keys, alert, now_us, 7 * 24 * 3600, 100_000)
                script(keys=rkeys, args=args, client=pipe)
            pipe.execute()
            while True:
                msg = sub.get_message(timeout=1)
                if msg is None:
                    raise RuntimeError("reference message did not arrive")
                if msg["type"] == "message":
                    break
            samples.append(time.perf_counter() - started)
        sub.close()
        out[name] = percentiles(samples)
    client.close()
    return out


# --- the paced source ------------------------------------------------------------------------


@dataclass
class Plan:
    """Payments in offer order: (offset, offset_s from start, payload prefix, payload suffix)."""

    rate: float
    seconds: float
    payments: List[Tuple[int, float, bytes, bytes]] = field(default_factory=list)
    crossing: Dict[str, int] = field(default_factory=dict)  # burst account -> crossing offset


def make_plan(rate: float, seconds: float, bursts_per_s: float, seed: int) -> Plan:
    rng = random.Random(seed)
    records, _ = generate(GeneratorConfig(num_events=400, seed=seed, include_oversized=False))
    templates = [json.loads(r.payload) for r in records if r.kind == "valid"]
    n = int(rate * seconds)
    times = [i / rate for i in range(n)]
    # Background accounts: each pays at most twice in any 70 s, so only the bursts alert.
    n_accounts = max(1000, int(rate * 70 / 2) + 1)
    accounts = [f"acct-bg-{i % n_accounts:07d}" for i in range(n)]
    n_bursts = int(bursts_per_s * max(0.0, seconds - 1.0))
    slots = sorted(rng.sample(range(n - int(rate)), n_bursts)) if n_bursts else []
    plan = Plan(rate, seconds)
    for b, slot in enumerate(slots):
        account = f"acct-burst-{b:05d}"
        for k in range(3):
            # the k-th payment of the burst replaces a background payment 200 ms later
            i = min(n - 1, slot + int(k * BURST_GAP_S * rate))
            while accounts[i].startswith("acct-burst-"):
                i += 1
            accounts[i] = account
            if k == 2:
                plan.crossing[account] = i
    for i in range(n):
        t = dict(templates[i % len(templates)])
        t["transaction_id"] = f"txn-bench-{seed}-{i:08d}"
        t["account_id"] = accounts[i]
        t["event_time"] = "@TIME@"
        prefix, suffix = json.dumps(t, separators=(",", ":")).encode().split(b'"@TIME@"')
        plan.payments.append((i, times[i], prefix + b'"', b'"' + suffix))
    return plan


def _rfc3339(us: int) -> bytes:
    secs, micros = divmod(us, _US)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)).encode() + b".%06dZ" % micros


class PacedPayments:
    """The TestStreamService's reader: blocks of payments, each then a watermark advance.

    Each block is offered when it is due by the wall clock; the service's gRPC thread
    queues what the runner has not pulled yet, so a slow runner reads a backlog (with
    the original event times). ``offered_us[offset]`` is each payment's scheduled offer
    time, which is also its event time.
    """

    def __init__(self, plan: Plan, tick_s: float = TICK_S) -> None:
        self.plan = plan
        self.tick_s = tick_s
        self.offered_us: Dict[int, int] = {}
        self.started_at: Optional[float] = None
        self.finished_at: Optional[float] = None

    def read_multiple(self, _keys: Any) -> Iterator[Any]:
        start = time.time() + 0.2
        self.started_at = start
        payments = self.plan.payments
        i = 0
        block = 0
        while i < len(payments):
            due = start + (block + 1) * self.tick_s
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
            elements = []
            while i < len(payments) and payments[i][1] < (block + 1) * self.tick_s:
                offset, at_s, prefix, suffix = payments[i]
                us = int((start + at_s) * _US)
                self.offered_us[offset] = us
                payload = prefix + _rfc3339(us) + suffix
                elements.append(
                    TimestampedElement(encoded_element=ELEMENT_CODER.encode((offset, payload)), timestamp=us)
                )
                i += 1
            if elements:
                yield Event(element_event=Event.AddElements(elements=elements))
            # nothing offered later has an earlier event time than the end of this block
            yield Event(watermark_event=Event.AdvanceWatermark(new_watermark=int(due * _US)))
            block += 1
        self.finished_at = time.time()


ENTERED: Dict[int, float] = {}  # offset -> time the payment left the source step (same process)


class _Entered(beam.DoFn):
    def process(self, element: Tuple[int, bytes]) -> Iterator[Tuple[bytes, SourceRef]]:
        offset, payload = element
        ENTERED[offset] = time.time()
        yield payload, SourceRef(topic="bench", partition=0, offset=offset)


def run_rate(
    redis_url: str, port: int, rate: float, seconds: float, bursts_per_s: float, tick_s: float = TICK_S
) -> Dict[str, Any]:
    plan = make_plan(rate, seconds, bursts_per_s, seed=int(rate))
    prefix = f"bench-{int(rate)}-{int(time.time())}:"
    subscriber = Subscriber(port, AlertKeys(prefix).channel)
    reader = PacedPayments(plan, tick_s)
    service = TestStreamServiceController(reader)
    service.start()
    workdir = tempfile.mkdtemp(prefix="alert-latency-")
    key_file = os.path.join(workdir, "hmac.key")
    with open(key_file, "w", encoding="utf-8") as handle:
        handle.write("11" * 32 + "\n")
    ENTERED.clear()
    options = PipelineOptions(
        [
            "--streaming",
            f"--warehouse=duckdb:{os.path.join(workdir, 'bench.duckdb')}",
            f"--hmac_key_file={key_file}",
            f"--redis_url={redis_url}",
            f"--redis_key_prefix={prefix}",
        ]
    )
    opts = options.view_as(PaystreamOptions)
    print(
        f"  {rate:,.0f}/s for {seconds:.0f} s: {len(plan.payments):,} payments, "
        f"{len(plan.crossing)} bursts ...",
        flush=True,
    )
    started = time.time()
    try:
        p = beam.Pipeline(runner=BundleBasedDirectRunner(), options=options)
        raw = (
            p
            | "Payments" >> TestStream(coder=ELEMENT_CODER, endpoint=service.endpoint)
            | "Entered" >> beam.ParDo(_Entered())
        )
        outputs = build_graph(raw, opts, key_path=key_file)
        write_outputs(outputs, opts)
        result = p.run()
        result.wait_until_finish()
    finally:
        service.stop()
    finished = time.time()
    time.sleep(0.2)
    subscriber.close()
    shutil.rmtree(workdir, ignore_errors=True)

    from_entry, from_offer, in_sink = [], [], []
    alerted = set()
    for arrived, message in subscriber.received:
        offset = plan.crossing.get(message["account_id"])
        if offset is None or offset not in ENTERED:
            continue
        alerted.add(message["account_id"])
        from_entry.append(arrived - ENTERED[offset])
        from_offer.append(arrived - reader.offered_us[offset] / _US)
        # detected_at: when the alert reached the sink's process() (the sink stamps it)
        in_sink.append(arrived - rfc3339_to_us(message["detected_at"]) / _US)
    entered = sorted(ENTERED.values())
    ingest_span = entered[-1] - (reader.started_at or started) if entered else 0.0
    return {
        "requested_per_s": rate,
        "payments": len(plan.payments),
        "entered": len(entered),
        # payments that left the source step, over the time from the first offer to the last entry
        "achieved_per_s": len(entered) / ingest_span if ingest_span > 0 else None,
        "drained_after_s": finished - (reader.finished_at or finished),
        "bursts": len(plan.crossing),
        "alerts": len(subscriber.received),
        "missed": len(plan.crossing) - len(alerted),
        "from_entry_s": percentiles(from_entry),
        "from_offer_s": percentiles(from_offer),
        "in_sink_s": percentiles(in_sink),
    }


def _ms(value: Optional[float]) -> str:
    return "-" if value is None else f"{value * 1000:,.1f}"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[1000.0, 5000.0])
    parser.add_argument("--seconds", type=float, default=10.0, help="input duration per rate")
    parser.add_argument("--bursts-per-s", type=float, default=20.0)
    parser.add_argument("--reference-n", type=int, default=2000)
    parser.add_argument("--tick-ms", type=float, default=TICK_S * 1000, help="source block length")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "alert_latency.json"))
    args = parser.parse_args(argv)
    registry()  # create the Prometheus registry up front, not inside the first bundle

    server = RedisServer().start()
    try:
        print(
            f"redis-server {server.url}; reference ({args.reference_n} alerts one at a time) ...", flush=True
        )
        ref = reference_latency(server.port, args.reference_n)
        runs = [
            run_rate(server.url, server.port, r, args.seconds, args.bursts_per_s, args.tick_ms / 1000)
            for r in args.rates
        ]
    finally:
        server.stop()

    header = (
        f"{'run':<52}{'requested/s':>12}{'achieved/s':>12}{'alerts':>8}{'missed':>8}"
        f"{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}"
    )
    print()
    print(header)
    for name, label in (
        ("raw", "reference: redis-py SADD+HSET+EXPIRE+XADD+PUBLISH"),
        ("script", "reference: sink script (1 EVALSHA)"),
    ):
        r = ref[name]
        print(
            f"{label:<52}{'-':>12}{'-':>12}{r['n']:>8}{'-':>8}{_ms(r['p50']):>10}{_ms(r['p99']):>10}{_ms(r['max']):>10}"
        )
    for run in runs:
        for key, what in (
            ("from_entry_s", "from entry"),
            ("from_offer_s", "from offer"),
            ("in_sink_s", "sink only"),
        ):
            r = run[key]
            label = f"pipeline, streaming DirectRunner, {what}"
            achieved = run["achieved_per_s"]
            print(
                f"{label:<52}{run['requested_per_s']:>12,.0f}{(achieved or 0):>12,.0f}{run['alerts']:>8}"
                f"{run['missed']:>8}{_ms(r['p50']):>10}{_ms(r['p99']):>10}{_ms(r['max']):>10}"
            )
        print(f"{'':<52}(drained {run['drained_after_s']:.1f} s after the last payment was offered)")
    print()
    print(NOTES)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump({"reference": ref, "runs": runs, "seconds": args.seconds}, handle, indent=2, sort_keys=True)
    return 0


if __name__ == "__main__":
    # Run through the importable module, so the DoFns pickle by reference and ENTERED,
    # written by the pipeline's step, is the dict this process reads.
    from bench import alert_latency

    sys.exit(alert_latency.main())
