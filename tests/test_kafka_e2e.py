"""Kafka in, for real: a local KRaft broker, the simulator producing, the pipeline reading.

The broker is started by ``paystream_dev.local_kafka`` (jars from Maven
Central, fetched into ``.cache/`` by ``.ci/run``); ``ReadFromKafka`` runs
through our expansion service and Java worker pool, with no Docker. Each run
drains the topic and is checked against the simulator's ground truth:
nothing lost, nothing duplicated, every burst alerted once.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import duckdb
import pytest

from paystream_dev.harness.live import committed_and_end, counters
from paystream_dev.harness.ports import free_port
from paystream_dev.harness.processes import stop_tree
from paystream_dev.harness.services import KafkaBroker
from paystream_dev.local_kafka import FLINK_EXPANSION_JAR, JavaWorkerPool
from simulator.generator import GeneratorConfig, GroundTruth
from simulator.producer import PaymentProducer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_EVENTS = 1200


@pytest.fixture(scope="module")
def broker() -> Iterator[KafkaBroker]:
    with KafkaBroker() as b:
        yield b


def _new_topic_and_producer(
    broker: KafkaBroker, partitions: int, seed: int, rate: float, events: int = N_EVENTS
) -> Tuple[str, PaymentProducer]:
    """A fresh topic, and a producer of ``events`` simulator payments for it (not yet started)."""
    topic = f"payments-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic, partitions=partitions, config={"retention.ms": "-1"})
    producer = PaymentProducer(
        broker.bootstrap_servers,
        topic,
        rate=rate,
        generator=GeneratorConfig(seed=seed, accounts=events // 4, include_oversized=False),
        num_events=events,
    )
    return topic, producer


def _produce(
    broker: KafkaBroker, partitions: int, seed: int, events: int = N_EVENTS
) -> Tuple[str, GroundTruth]:
    topic, producer = _new_topic_and_producer(broker, partitions, seed, rate=20_000, events=events)
    report = producer.run()
    assert report["produced"] == events and report["failed"] == 0, report
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
        alerts = conn.execute("SELECT account_id, transaction_ids FROM fraud_alerts").fetchall()
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


class _StreamingRun:
    """``python -m beam_pipeline`` as a streaming job in a child process, watched through its
    Prometheus counters (``--metrics_port``) and stopped with SIGTERM, as a supervisor stops
    it."""

    def __init__(self, args: List[str], cwd: str, log: str, env: Optional[Dict[str, str]] = None) -> None:
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {}))
        self.port = free_port()
        self._log = open(log, "w", encoding="utf-8")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "beam_pipeline", *args, f"--metrics_port={self.port}"],
            cwd=cwd,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def counters(self) -> Dict[str, float]:
        """``name`` or ``name{labels}`` -> value, e.g. ``sink_rows{table="payment_transactions"}``;
        empty while it is not serving yet."""
        return counters(self.port, timeout_s=5)

    def settled(self, read: int) -> bool:
        """All ``read`` payments are through: every unique one enriched and stored."""
        c = self.counters()
        unique = c.get("payments_unique", -1)
        return (
            c.get("payments_in") == read
            and c.get("payments_valid") == unique + c.get("duplicates_dropped", 0)
            and c.get("payments_enriched") == unique
            and c.get('sink_rows{table="payment_transactions"}') == unique
        )

    def quiet_for(self, seconds: float) -> Callable[[], bool]:
        """A condition: the counters have not changed for ``seconds``."""
        last: Dict[str, Any] = {"counters": None, "since": time.monotonic()}

        def quiet() -> bool:
            now = self.counters()
            if now != last["counters"]:
                last.update(counters=now, since=time.monotonic())
            return bool(now) and time.monotonic() - last["since"] >= seconds

        return quiet

    def wait_for(self, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert self.proc.poll() is None, f"the run ended early ({what}): {self.tail()}"
            assert time.monotonic() < deadline, (
                f"timed out waiting for {what}: {self.counters()} {self.tail()}"
            )
            time.sleep(1)

    def _end(self) -> int:
        """SIGTERM, as a supervisor stops a run (its tree killed if still running 2 minutes later)."""
        rc = stop_tree(self.proc, grace_s=120)
        if not self._log.closed:
            self._log.close()
        return rc

    def stop(self) -> None:
        rc = self._end()
        assert rc == 130, f"rc={rc}: {self.tail()}"  # stopped, not crashed

    def __enter__(self) -> _StreamingRun:
        return self

    def __exit__(self, *exc: Any) -> None:
        """A run the test did not stop (it failed first) ends with its runner."""
        self._end()

    def text(self) -> str:
        """The run's whole log so far."""
        if not self._log.closed:
            self._log.flush()
        with open(self._log.name, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def tail(self) -> str:
        return self.text()[-3000:]


def _streaming_args(broker: KafkaBroker, topic: str, group: str, warehouse: str) -> List[str]:
    """A streaming run on local Flink. The simulator packs about 17 minutes of event time into
    seconds of sending, and a reader that has caught up moves its watermark to the wall clock
    (KafkaIO's create-time policy), so payments still in flight behind it are minutes late:
    the velocity rule is given an hour of lateness, like a batch run that sees it all."""
    return [
        *_kafka_args(broker, topic, group, warehouse),
        "--runner=FlinkRunner",
        "--parallelism=2",
        "--streaming",
        "--allowed_lateness_s=3600",
    ]


def test_streaming_on_flink_while_the_producer_sends(broker: KafkaBroker, tmp_path: Any) -> None:
    """An unbounded streaming run on local Flink, started while the simulator sends 100
    payments/s: once it has drained the topic, the warehouse equals the ground truth. (Flink
    starts in longer than the 12 s of sending, so the run finds most of the topic written.)

    Drained means: the group's committed offsets are at the end of the topic, every payment
    is read, every unique one enriched and stored, and every burst alerted (the run's own
    counters, scraped from ``--metrics_port``)."""
    topic, producer = _new_topic_and_producer(broker, partitions=2, seed=47, rate=100)
    producer.prepare()  # the ground truth is known once the (single) block is generated
    truth = producer.truth
    assert truth is not None
    report: Dict[str, Any] = {}
    sender = threading.Thread(target=lambda: report.update(producer.run()), daemon=True)
    warehouse = str(tmp_path / "streaming.duckdb")
    with _StreamingRun(
        _streaming_args(broker, topic, "streaming", warehouse), str(tmp_path), str(tmp_path / "run.log")
    ) as run:
        sender.start()
        sender.join(timeout=120)
        assert report.get("produced") == N_EVENTS and report.get("failed") == 0, report

        def drained() -> bool:
            committed, end = committed_and_end(broker, topic, "streaming")
            alerts = run.counters().get('sink_rows{table="fraud_alerts"}', 0)
            return committed == end and run.settled(N_EVENTS) and alerts >= len(truth.bursts)

        run.wait_for(drained, 600, "the run to drain the topic")
        run.stop()
    _check_against_truth(warehouse, truth)


def _stored(warehouse: str, table: str) -> int:
    conn = duckdb.connect(warehouse, read_only=True)
    try:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        return int(row[0]) if row else 0
    finally:
        conn.close()


RESTART_EVENTS = 3000


def test_streaming_restart_on_flink_in_the_middle_of_the_topic(
    broker: KafkaBroker, tmp_path: Any, request: Any
) -> None:
    """A streaming run on local Flink is stopped (SIGTERM) in the middle of the topic, and a
    second run with the same ``--checkpoint_dir`` resumes from the first one's last
    checkpoint: its Kafka offsets and its keyed state (dedup, enrichment, velocity). Once the
    second run has drained, every valid payment is stored exactly once and every burst
    alerted once.

    The first half of the topic is written before the first run starts and the second half
    only once it has stopped, so the first run stops in the middle however fast it reads.
    (A run that catches up with an idle producer moves its watermark to the wall clock, so
    the simulator's event times, compressed into the sending time, are late for the second
    run: the hour of lateness of ``_streaming_args`` covers them.)

    Both runs use one Java worker pool, as a Flink task manager's sidecar serves a job that
    is restarted: the second run needs a new Java worker after the first one's has stopped
    (Beam's ExternalWorkerService could not start it, and the second run hung)."""
    topic, producer = _new_topic_and_producer(broker, 2, seed=53, rate=20_000, events=RESTART_EVENTS)
    report = producer.run(max_records=RESTART_EVENTS // 2)
    assert report["produced"] == RESTART_EVENTS // 2 and report["failed"] == 0, report
    warehouse = str(tmp_path / "restart.duckdb")
    pool = JavaWorkerPool(jar=FLINK_EXPANSION_JAR).start()
    request.addfinalizer(pool.stop)
    args = [
        *_streaming_args(broker, topic, "restart", warehouse),
        f"--checkpoint_dir={tmp_path / 'checkpoints'}",
        "--checkpointing_interval=2000",
        f"--kafka_java_worker_address={pool.address}",
    ]
    # the runner's own log (Flink's restore, task failures, restarts) goes into each run's log
    flink_log = {"PAYSTREAM_BEAM_LOG_LEVEL": "INFO"}
    with _StreamingRun(args, str(tmp_path), str(tmp_path / "first.log"), flink_log) as first:
        first.wait_for(
            lambda: (
                first.counters().get('sink_rows{table="payment_transactions"}', 0) >= RESTART_EVENTS // 4
                and committed_and_end(broker, topic, "restart")[0] > 0
            ),
            600,
            "a quarter of the rows stored and a committed checkpoint",
        )
        first.stop()
    report = producer.run()
    assert report["produced"] == RESTART_EVENTS and report["failed"] == 0, report
    truth = producer.truth
    assert truth is not None
    committed, end = committed_and_end(broker, topic, "restart")
    assert 0 < committed and end == RESTART_EVENTS, (committed, end)
    rows_before = _stored(warehouse, "payment_transactions")
    alerts_before = _stored(warehouse, "fraud_alerts")
    assert 0 < rows_before < len(truth.valid_transaction_ids)  # stopped in the middle
    rows_left = len(truth.valid_transaction_ids) - rows_before
    alerts_left = len(truth.bursts) - alerts_before

    with _StreamingRun(args, str(tmp_path), str(tmp_path / "second.log"), flink_log) as second:

        def drained() -> bool:
            c = second.counters()
            return (
                committed_and_end(broker, topic, "restart")[0] == end
                and c.get('sink_rows{table="payment_transactions"}', 0) >= rows_left
                and c.get('sink_rows{table="fraud_alerts"}', 0) >= alerts_left
            )

        # (rows it writes again after the checkpoint count too, hence the quiet period)
        second.wait_for(drained, 600, "the second run to drain the topic")
        second.wait_for(second.quiet_for(15), 300, "the second run's counters to settle")
        read_again = second.counters().get("payments_in", 0)
        second.stop()
        log = second.text()
    # Flink itself restored the first run's last checkpoint (not only our line saying so)
    restored = re.search(r"Restoring job \w+ from Savepoint \d+ .* located at file:(\S+)", log)
    assert restored and "resuming from Flink checkpoint" in log, log[-3000:]
    assert restored.group(1).startswith(str(tmp_path / "checkpoints")), restored.group(1)
    # the second run took over from the first one's last checkpoint, not from the beginning
    # (it reads nothing at all when the first had read the whole topic before it: then all
    # it stores comes out of the restored state); what it reads again after that checkpoint,
    # dedup and the idempotent sinks absorb
    assert read_again < end, read_again
    _check_against_truth(warehouse, truth)
