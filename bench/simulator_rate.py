"""Can the simulator sustain a requested rate to a real local broker, and follow a rate change?

    python -m bench.simulator_rate [--rate 20000] [--seconds 15] [--partitions 4]

Starts a KRaft broker (python -m paystream_dev), then in one process:

1. reference: the same payloads produced as fast as the client allows (no pacing),
   the ceiling of this machine;
2. the simulator paced at ``--rate`` for ``--seconds``: requested vs achieved;
3. a live change through the REST API (``POST /config/rate``) to ``--change-to``:
   the time until the measured rate (250 ms windows) is within 20 % of the new
   target.

Prints a table and writes ``bench/results/simulator_rate.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import urllib.request
import uuid
from typing import Any, Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from paystream_dev.harness.services import KafkaBroker  # noqa: E402
from simulator.api import ControlServer  # noqa: E402
from simulator.generator import GeneratorConfig, generate  # noqa: E402
from simulator.producer import PaymentProducer, producer_config  # noqa: E402


def reference_rate(bootstrap: str, topic: str, payloads: List[bytes]) -> float:
    from confluent_kafka import Producer

    producer = Producer(producer_config(bootstrap))
    started = time.monotonic()
    for payload in payloads:
        while True:
            try:
                producer.produce(topic, payload)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush(60)
    return len(payloads) / (time.monotonic() - started)


def paced_run(
    bootstrap: str, topic: str, rate: float, seconds: float, change_to: Optional[float]
) -> Dict[str, Any]:
    config = GeneratorConfig(num_events=1000, accounts=500, include_oversized=False, seed=11)
    producer = PaymentProducer(bootstrap, topic, rate, config, duration_s=seconds)
    server = ControlServer(
        stats=lambda: producer.stats.snapshot(producer.pacer.rate), set_rate=producer.pacer.set_rate
    ).start()
    samples: List[tuple] = []  # (t, sent)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            with producer.stats.lock:
                samples.append((time.monotonic(), producer.stats.sent))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    runner = threading.Thread(target=lambda: result.update(producer.run()), daemon=True)
    result: Dict[str, Any] = {}
    print("  generating payments ahead of the run ...", flush=True)
    sampler.start()
    runner.start()
    changed_at = None
    half = seconds / 2
    last_print = 0.0
    while runner.is_alive():
        time.sleep(0.1)
        if producer.stats.sent == 0:
            continue  # still generating the first block
        elapsed = time.monotonic() - producer.stats.started
        if change_to is not None and changed_at is None and elapsed >= half and producer.stats.sent > 0:
            req = urllib.request.Request(
                server.address + "/config/rate",
                data=json.dumps({"messages_per_second": change_to}).encode(),
                method="POST",
            )
            with urllib.request.urlopen(req, timeout=5) as resp:
                assert resp.status == 200
            changed_at = time.monotonic()
        if elapsed - last_print >= 1.0:
            last_print = elapsed
            print(f"  [{elapsed:5.1f}s] sent {producer.stats.sent:,}", flush=True)
    done.set()
    server.stop()

    def rate_between(t0: float, t1: float) -> float:
        inside = [s for s in samples if t0 <= s[0] <= t1]
        if len(inside) < 2:
            return 0.0
        return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])

    start = producer.stats.started
    steady_end = changed_at if changed_at is not None else samples[-1][0]
    out: Dict[str, Any] = {
        "requested": rate,
        "achieved_steady": rate_between(start + 1.0, steady_end),  # skip the first second
        "produced": result.get("produced", 0),
        "failed": result.get("failed", 0),
        "errors": result.get("errors", {}),
    }
    if changed_at is not None and change_to is not None:
        settle = None
        t = changed_at
        while t + 0.1 <= samples[-1][0]:
            window = rate_between(t, t + 0.25)
            if abs(window - change_to) <= 0.2 * change_to:
                settle = t + 0.25 - changed_at
                break
            t += 0.02
        out["changed_to"] = change_to
        out["achieved_after_change"] = rate_between(changed_at + 1.0, samples[-1][0])
        out["change_effective_s"] = settle
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.simulator_rate", description=__doc__)
    parser.add_argument("--rate", type=float, default=20_000)
    parser.add_argument("--change-to", type=float, default=5_000)
    parser.add_argument("--seconds", type=float, default=16)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "simulator_rate.json"))
    args = parser.parse_args(argv)

    with KafkaBroker() as broker:
        topic = f"bench-{uuid.uuid4().hex[:8]}"
        broker.create_topic(topic, partitions=args.partitions, config={"retention.ms": "-1"})
        print(f"broker {broker.bootstrap_servers}, topic {topic} ({args.partitions} partitions)")
        records, _ = generate(GeneratorConfig(num_events=100_000, accounts=20_000, include_oversized=False))
        payloads = [r.payload for r in records]
        print("reference: unpaced produce of 100,000 payments ...", flush=True)
        ref = reference_rate(broker.bootstrap_servers, topic, payloads)
        print(
            f"paced: {args.rate:,.0f} msg/s for {args.seconds:.0f} s, then {args.change_to:,.0f} msg/s",
            flush=True,
        )
        paced = paced_run(broker.bootstrap_servers, topic, args.rate, args.seconds, args.change_to)

    rows = [
        ("reference (unpaced client)", "-", f"{ref:,.0f}", "-"),
        (
            "simulator, steady",
            f"{paced['requested']:,.0f}",
            f"{paced['achieved_steady']:,.0f}",
            f"{paced['achieved_steady'] / paced['requested']:.1%}",
        ),
        (
            "simulator, after REST change",
            f"{paced.get('changed_to', 0):,.0f}",
            f"{paced.get('achieved_after_change', 0):,.0f}",
            f"{paced.get('achieved_after_change', 0) / max(paced.get('changed_to', 1), 1):.1%}",
        ),
    ]
    print()
    print(f"{'run':<30}{'requested/s':>14}{'achieved/s':>14}{'of requested':>15}")
    for row in rows:
        print(f"{row[0]:<30}{row[1]:>14}{row[2]:>14}{row[3]:>15}")
    effective = paced.get("change_effective_s")
    print(
        f"rate change took effect in {effective:.2f} s"
        if effective is not None
        else "rate change: never settled within 20 %"
    )
    print(
        f"produced {paced['produced']:,}, failed {paced['failed']} {paced['errors'] or ''}; "
        f"reference ceiling {ref:,.0f} msg/s"
    )
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump({"reference_msgs_per_s": ref, **paced}, handle, indent=2)
    ok = (
        paced["achieved_steady"] >= 0.95 * args.rate
        and effective is not None
        and effective <= 1.0
        and paced["failed"] == 0
    )
    print(
        "PASS" if ok else "FAIL", "(>= 95 % of the requested rate, change effective within 1 s, no failures)"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
