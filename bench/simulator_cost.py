"""What the load generator costs: CPU of ``python -m simulator --rate R``, per 1,000 payments/s.

    python -m bench.simulator_cost [--rates 1000,5000] [--seconds 90] [--warmup 45]

Starts a KRaft broker (``paystream_dev``), then for each rate, one after the other:

1. **reference**: a lean loop in a child process: the client with the simulator's live
   settings producing ready-made payloads at the rate, a tick's payloads at a time (the
   least a paced Python producer can cost here);
2. **simulator**: ``python -m simulator --rate R --duration S``, as a user runs it (each
   payment made when it is sent, its truth recorded, the REST API up).

Each process's CPU seconds (all its threads, from ``/proc``) are read from ``--warmup``
seconds in to the end: the simulator makes a new account for almost every payment until
its first accounts may pay again (about 30 s), then reuses them. Prints the two side by
side and writes ``bench/results/simulator_cost.json``. The goal: the simulator at most
0.10 of a core per 1,000 payments/s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results", "simulator_cost.json")
_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat", encoding="ascii").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _share(cmd: List[str], seconds: float, warmup: float, label: str) -> float:
    """Share of a core ``cmd`` uses from ``warmup`` s to ``seconds - 2`` s of its run."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        started = time.monotonic()
        _wait_until(started + warmup, label)
        cpu0, at0 = _cpu_s(proc.pid), time.monotonic()
        _wait_until(started + seconds - 2, label)
        cpu1, at1 = _cpu_s(proc.pid), time.monotonic()
    finally:
        proc.wait(timeout=seconds + 60)
    return (cpu1 - cpu0) / (at1 - at0)


def _wait_until(deadline: float, label: str) -> None:
    while (left := deadline - time.monotonic()) > 0:
        print(f"\r  {label}: {left:5.0f} s left ", end="", file=sys.stderr, flush=True)
        time.sleep(min(1.0, left))
    print("\r" + " " * 60 + "\r", end="", file=sys.stderr, flush=True)


def lean(bootstrap: str, topic: str, rate: float, seconds: float) -> None:
    """The reference: ready-made payloads, paced by the simulator's ``Pacer``, produced with
    the live producer's settings (``simulator.producer``)."""
    from confluent_kafka import Producer

    from simulator.generator import GeneratorConfig, generate
    from simulator.pacing import Pacer
    from simulator.producer import producer_config

    records, _ = generate(GeneratorConfig(num_events=20_000, accounts=2_000, include_oversized=False))
    payloads = [(r.payload, (r.account_id or "").encode()) for r in records]
    producer = Producer(producer_config(bootstrap, {"linger.ms": 2}))
    pacer = Pacer(rate)
    deadline, i = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        allowed = pacer.allowance()
        if not allowed:
            producer.poll(0)
            pacer.wait_tick()
            continue
        for _ in range(allowed):
            payload, key = payloads[i % len(payloads)]
            producer.produce(topic, payload, key=key)
            i += 1
        pacer.sent(allowed)
        producer.poll(0)
    producer.flush(30)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.simulator_cost", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rates", default="1000,5000")
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--warmup", type=float, default=45.0)
    parser.add_argument(
        "--lean", nargs=4, metavar=("BOOTSTRAP", "TOPIC", "RATE", "SECONDS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.lean:
        lean(args.lean[0], args.lean[1], float(args.lean[2]), float(args.lean[3]))
        return 0
    if args.seconds - 2 <= args.warmup:
        parser.error("--seconds must exceed --warmup by more than 2")

    from paystream_dev.local_kafka import KafkaBroker

    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    rows: List[Dict[str, Any]] = []
    with KafkaBroker() as broker:
        for n in range(len(rates)):
            for side in ("lean", "sim"):
                broker.create_topic(f"{side}-{n}", partitions=2)
        time.sleep(3)
        for n, rate in enumerate(rates):
            print(
                f"[{n + 1}/{len(rates)}] {rate:,.0f} payments/s for {args.seconds:.0f} s, each ...",
                flush=True,
            )
            seconds = f"{args.seconds:g}"
            reference = _share(
                [
                    sys.executable,
                    "-m",
                    "bench.simulator_cost",
                    "--lean",
                    broker.bootstrap_servers,
                    f"lean-{n}",
                    str(rate),
                    seconds,
                ],
                args.seconds,
                args.warmup,
                "reference",
            )
            simulator = _share(
                [
                    sys.executable,
                    "-m",
                    "simulator",
                    "--rate",
                    str(rate),
                    "--duration",
                    seconds,
                    "--bootstrap-servers",
                    broker.bootstrap_servers,
                    "--topic",
                    f"sim-{n}",
                    "--api-port",
                    "0",
                ],
                args.seconds,
                args.warmup,
                "simulator",
            )
            rows.append({"rate": rate, "reference": reference, "simulator": simulator})
            print(f"    reference {reference:.3f} of a core, simulator {simulator:.3f}", flush=True)
    print()
    print(
        f"{'rate/s':>8}  {'reference per 1,000/s':>22}  {'simulator per 1,000/s':>22}  {'vs reference':>12}  goal"
    )
    for row in rows:
        per = 1000 / row["rate"]
        ref, sim = row["reference"] * per, row["simulator"] * per
        verdict = "met" if sim <= 0.10 else "NOT met"
        print(f"{row['rate']:>8,.0f}  {ref:>22.3f}  {sim:>22.3f}  {sim / ref:>11.1f}x  <= 0.10: {verdict}")
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w", encoding="utf-8") as handle:
        json.dump({"seconds": args.seconds, "warmup": args.warmup, "runs": rows}, handle, indent=2)
    print(f"results: {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
