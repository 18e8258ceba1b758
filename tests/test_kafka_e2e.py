"""Kafka in, for real: a local KRaft broker, the simulator producing, the pipeline reading.

The broker is started by ``beam_pipeline.local_kafka`` (jars from Maven
Central, fetched into ``.cache/`` by ``.ci/run``); ``ReadFromKafka`` runs
through our expansion service and Java worker pool, with no Docker. Each run
drains the topic and is checked against the simulator's ground truth:
nothing lost, nothing duplicated, every burst alerted once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from typing import Any, Dict, Iterator, List, Tuple

import duckdb
import pytest

from beam_pipeline.local_kafka import KafkaBroker
from simulator.generator import GeneratorConfig, GroundTruth
from simulator.producer import PaymentProducer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_EVENTS = 1200


@pytest.fixture(scope="module")
def broker() -> Iterator[KafkaBroker]:
    with KafkaBroker() as b:
        yield b


def _produce(broker: KafkaBroker, partitions: int, seed: int) -> Tuple[str, GroundTruth]:
    topic = f"payments-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic, partitions=partitions, config={"retention.ms": "-1"})
    producer = PaymentProducer(
        broker.bootstrap_servers,
        topic,
        rate=20_000,
        generator=GeneratorConfig(seed=seed, accounts=300, include_oversized=False),
        num_events=N_EVENTS,
    )
    report = producer.run()
    assert report["produced"] == N_EVENTS and report["failed"] == 0, report
    assert producer.truth is not None
    return topic, producer.truth


@pytest.fixture(scope="module")
def produced(broker: KafkaBroker) -> Tuple[str, GroundTruth]:
    return _produce(broker, partitions=2, seed=21)


def _pipeline(args: List[str], cwd: str) -> Dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    summary = os.path.join(cwd, f"summary-{uuid.uuid4().hex[:6]}.json")
    proc = subprocess.run(
        [sys.executable, "-m", "beam_pipeline", *args, f"--summary_json={summary}"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    with open(summary, encoding="utf-8") as handle:
        return json.load(handle)


def _kafka_args(broker: KafkaBroker, topic: str, group: str, warehouse: str) -> List[str]:
    return [
        "--source=kafka",
        f"--kafka_bootstrap_servers={broker.bootstrap_servers}",
        f"--kafka_topic={topic}",
        f"--kafka_consumer_group={group}",
        f"--warehouse=duckdb:{warehouse}",
    ]


def _check_against_truth(warehouse: str, truth: GroundTruth) -> None:
    conn = duckdb.connect(warehouse, read_only=True)
    try:
        ids = [r[0] for r in conn.execute("SELECT transaction_id FROM payment_transactions").fetchall()]
        assert len(ids) == len(set(ids))
        missing = set(truth.valid_transaction_ids) - set(ids)
        extra = set(ids) - set(truth.valid_transaction_ids)
        assert not missing and not extra, (len(missing), len(extra))
        reasons = dict(conn.execute("SELECT reason, count(*) FROM dead_letters GROUP BY reason").fetchall())
        assert reasons == truth.malformed
        offsets = conn.execute(
            "SELECT count(*) FROM dead_letters WHERE source_topic IS NULL OR source_offset IS NULL"
        ).fetchone()
        assert offsets == (0,)  # Kafka coordinates reach the dead letters
        alerts = conn.execute("SELECT account_id, transaction_ids FROM fraud_velocity_alerts").fetchall()
        assert sorted(a for a, _ in alerts) == sorted(b.account_id for b in truth.bursts)
        for account, txn_ids in alerts:
            burst = next(b for b in truth.bursts if b.account_id == account)
            assert set(txn_ids) <= set(burst.transaction_ids)
    finally:
        conn.close()


def test_direct_runner_reads_kafka_exactly(
    broker: KafkaBroker, produced: Tuple[str, GroundTruth], tmp_path: Any
) -> None:
    topic, truth = produced
    warehouse = str(tmp_path / "direct.duckdb")
    summary = _pipeline(
        [*_kafka_args(broker, topic, "direct", warehouse), "--kafka_until_end"], str(tmp_path)
    )
    assert summary["payments_read"] == N_EVENTS
    _check_against_truth(warehouse, truth)


def test_flink_runner_reads_kafka_exactly(
    broker: KafkaBroker, produced: Tuple[str, GroundTruth], tmp_path: Any
) -> None:
    topic, truth = produced
    warehouse = str(tmp_path / "flink.duckdb")
    _pipeline(
        [
            *_kafka_args(broker, topic, "flink", warehouse),
            "--kafka_until_end",
            "--runner=FlinkRunner",
            "--parallelism=2",
        ],
        str(tmp_path),
    )
    _check_against_truth(warehouse, truth)


def test_restart_in_the_middle_of_the_topic(broker: KafkaBroker, tmp_path: Any) -> None:
    topic, truth = _produce(broker, partitions=1, seed=33)
    warehouse = str(tmp_path / "restart.duckdb")
    args = _kafka_args(broker, topic, "restarted", warehouse)
    first = _pipeline([*args, f"--kafka_max_num_records={N_EVENTS // 2}"], str(tmp_path))
    assert first["payments_read"] == N_EVENTS // 2
    conn = duckdb.connect(warehouse, read_only=True)
    stored_first = conn.execute("SELECT count(*) FROM payment_transactions").fetchone()
    conn.close()
    assert stored_first is not None and 0 < stored_first[0] < len(truth.valid_transaction_ids)
    second = _pipeline([*args, "--kafka_until_end"], str(tmp_path))
    # the second run starts before where the first stopped (replay), and drains the topic
    assert second["payments_read"] > N_EVENTS - N_EVENTS // 2
    _check_against_truth(warehouse, truth)
    nothing = subprocess.run(
        [sys.executable, "-m", "beam_pipeline", *args, "--kafka_until_end", "--kafka_replay_s=0"],
        cwd=str(tmp_path),
        env=dict(os.environ, PYTHONPATH=ROOT),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert nothing.returncode == 0 and "nothing to read" in nothing.stdout
