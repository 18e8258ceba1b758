"""``python -m simulator --rate 1000 --duration 300 --bootstrap-servers HOST:PORT --topic payments``

Produces live simulator payments to Kafka, serving a REST API while it runs:
``POST /config/rate {"messages_per_second": N}``, ``POST /inject/burst`` and ``GET /stats``
(and ``GET /metrics`` for Prometheus). Prints a progress line per second and the
achieved rate at the end.

Each payment is made as it is sent and its event time is the time it is sent
(``simulator.live``); the injections (bursts, late, out of order, duplicates,
malformed) are placed relative to now, and ``--truth`` records each payment's send
and acknowledgement time. ``--backfill`` sends generated blocks instead, minutes of
event time in seconds (``simulator.generator``), to fill a topic fast.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from typing import Any, Dict, List, Optional

from simulator.api import ControlServer
from simulator.generator import GeneratorConfig
from simulator.live import LiveConfig

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m simulator", description=__doc__.split("\n\n")[1])
    p.add_argument("--bootstrap-servers", required=True, help="Kafka bootstrap servers, HOST:PORT[,...]")
    p.add_argument("--topic", default="payments")
    p.add_argument("--rate", type=float, default=1000.0, help="messages per second (default 1000)")
    p.add_argument(
        "--duration", type=float, default=None, help="seconds to run (default: until --num-events)"
    )
    p.add_argument("--num-events", type=int, default=None, help="stop after this many messages")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--accounts", type=int, default=500, help="--backfill: accounts per generated block (at least)"
    )
    p.add_argument(
        "--burst-every",
        type=int,
        default=LiveConfig.burst_every,
        help=f"live: one payment in N starts a velocity burst (default {LiveConfig.burst_every}; "
        "0: only the bursts POST /inject/burst asks for)",
    )
    p.add_argument("--api-host", default="127.0.0.1")
    p.add_argument("--api-port", type=int, default=8088, help="REST API port (0: a free one)")
    p.add_argument("--truth", default=None, help="write the ground truth of what was sent to this JSON file")
    p.add_argument(
        "--backfill",
        action="store_true",
        help="send generated blocks (minutes of event time in seconds) instead of live payments",
    )
    return p


def _metrics(producer: Any) -> Any:
    """Prometheus exposition of the producer's figures, if prometheus-client is installed."""
    try:
        from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
        from prometheus_client.exposition import CONTENT_TYPE_LATEST
    except ImportError:  # the [metrics] extra is not installed
        return None
    registry = CollectorRegistry()
    produced = Counter("simulator_messages_produced", "Messages acknowledged by Kafka", registry=registry)
    failed = Counter("simulator_messages_failed", "Messages Kafka refused or timed out", registry=registry)
    target = Gauge("simulator_target_rate_messages_per_second", "Requested rate", registry=registry)
    seen = {"produced": 0, "failed": 0}

    def render() -> Any:
        snap = producer.stats.snapshot(producer.pacer.rate)
        produced.inc(snap["produced"] - seen["produced"])
        failed.inc(snap["failed"] - seen["failed"])
        seen.update(produced=snap["produced"], failed=snap["failed"])
        target.set(snap["current_rate"])
        return generate_latest(registry), CONTENT_TYPE_LATEST

    return render


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.duration is None and args.num_events is None:
        print("give --duration, --num-events, or both", file=sys.stderr)
        return 2
    from simulator.producer import LiveProducer, PaymentProducer

    producer: PaymentProducer
    if args.backfill:
        # No oversized payload: the broker itself refuses messages over its limit (1 MiB).
        gen = GeneratorConfig(seed=args.seed, accounts=args.accounts, include_oversized=False)
        producer = PaymentProducer(
            args.bootstrap_servers,
            args.topic,
            args.rate,
            gen,
            num_events=args.num_events,
            duration_s=args.duration,
        )
    else:
        producer = LiveProducer(
            args.bootstrap_servers,
            args.topic,
            args.rate,
            LiveConfig(seed=args.seed, burst_every=args.burst_every),
            num_events=args.num_events,
            duration_s=args.duration,
        )
    server = ControlServer(
        stats=lambda: producer.stats.snapshot(producer.pacer.rate),
        set_rate=producer.pacer.set_rate,
        metrics=_metrics(producer),
        host=args.api_host,
        port=args.api_port,
        inject_burst=producer.stream.inject_burst if isinstance(producer, LiveProducer) else None,
    ).start()
    signal.signal(signal.SIGTERM, lambda *_: producer.stop())
    print(f"simulator: producing to {args.topic} at {args.rate:,.0f} msg/s; API {server.address}", flush=True)

    def progress(s: Dict[str, Any]) -> None:
        print(
            f"[{s['elapsed_s']:7.1f}s] produced {s['produced']:>9,} | failed {s['failed']} | "
            f"target {s['current_rate']:,.0f}/s | achieved {s['achieved_rate']:,.0f}/s",
            flush=True,
        )

    try:
        report = producer.run(progress)
    except KeyboardInterrupt:
        producer.stop()
        report = producer.stats.snapshot(producer.pacer.rate)
    finally:
        server.stop()
    print(
        f"simulator: done. produced {report['produced']:,}, failed {report['failed']}, "
        f"achieved {report['achieved_rate']:,.0f} msg/s over {report['elapsed_s']:.1f} s",
        flush=True,
    )
    if args.truth and producer.truth is not None:
        if args.backfill and (args.num_events is None or report["produced"] != args.num_events):
            print(
                "simulator: the run stopped inside a generated block; the ground truth "
                "describes the whole block",
                file=sys.stderr,
            )
        with open(args.truth, "w", encoding="utf-8") as handle:
            json.dump(producer.truth.to_json(), handle)
    return 0 if report["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
