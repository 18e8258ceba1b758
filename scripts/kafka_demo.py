#!/usr/bin/env python3
"""The whole thing against Kafka, locally, in one command.

    python scripts/kafka_demo.py [--runner direct|flink] [--num-events 5000] [--rate 5000]

Starts a KRaft broker on 127.0.0.1 (jars from Maven Central, cached in
.cache/), produces simulator payments with the idempotent producer, runs the
pipeline with ``--source=kafka`` until it has drained the topic, prints the
pipeline's summary scored against the simulator's ground truth, and stops the
broker. Results stay in ``paystream-out/kafka.duckdb``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from paystream_dev.local_kafka import KafkaBroker  # noqa: E402
from simulator.generator import GeneratorConfig  # noqa: E402
from simulator.producer import PaymentProducer  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python scripts/kafka_demo.py", description=__doc__.split("\n\n")[1]
    )
    parser.add_argument("--runner", choices=("direct", "flink"), default="direct")
    parser.add_argument("--num-events", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=5000)
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--warehouse", default="duckdb:paystream-out/kafka.duckdb")
    args = parser.parse_args(argv)

    print("starting a local Kafka broker ...", flush=True)
    with KafkaBroker() as broker:
        topic = f"payments-{uuid.uuid4().hex[:6]}"
        broker.create_topic(topic, partitions=args.partitions, config={"retention.ms": "-1"})
        print(f"broker {broker.bootstrap_servers}, topic {topic} ({args.partitions} partitions)", flush=True)
        producer = PaymentProducer(
            broker.bootstrap_servers,
            topic,
            rate=args.rate,
            generator=GeneratorConfig(include_oversized=False),
            num_events=args.num_events,
        )
        report = producer.run(
            lambda s: print(f"  produced {s['produced']:,} ({s['achieved_rate']:,.0f}/s)", flush=True)
        )
        print(f"produced {report['produced']:,} payments, {report['failed']} failed", flush=True)
        assert producer.truth is not None
        truth_path = os.path.join(tempfile.mkdtemp(prefix="paystream-demo-"), "truth.json")
        with open(truth_path, "w", encoding="utf-8") as handle:
            json.dump(producer.truth.to_json(), handle)
        cmd = [
            sys.executable,
            "-m",
            "beam_pipeline",
            "--source=kafka",
            f"--kafka_bootstrap_servers={broker.bootstrap_servers}",
            f"--kafka_topic={topic}",
            "--kafka_until_end",
            f"--warehouse={args.warehouse}",
            f"--truth={truth_path}",
        ]
        if args.runner == "flink":
            cmd += ["--runner=FlinkRunner", "--parallelism=2"]
        print("running: " + " ".join(cmd[1:]), flush=True)
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        return subprocess.call(cmd, env=env)


if __name__ == "__main__":
    sys.exit(main())
