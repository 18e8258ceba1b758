"""Faults on local Flink streaming, each run checked whole against the simulator's ground truth.

A real KRaft broker, a real redis-server, the pipeline as a user starts it
(``python -m beam_pipeline --runner=FlinkRunner --streaming --source=kafka
--checkpoint_dir=...``) and the live simulator sending while it runs
(``paystream_dev.harness.live.LiveRun``). Each test puts its faults between the run's
steps, and then checks the warehouse and the Redis alert stream: every valid payment
stored once, every malformed one dead-lettered with its reason and Kafka coordinates,
every burst alerted exactly once with one alert id, and no other alert.

* ``kill -9`` of the pipeline's whole process tree (driver, Python workers, job server
  with its Flink, Java workers), at three points, each followed by the same command
  again: it restores the last checkpoint;
* the broker stopped for 30 s and started again;
* Redis down for 2 minutes;
* 100,000 mutated payloads through Kafka, empty and oversized values among them.
"""

from __future__ import annotations

import os
import re
import threading
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

import duckdb
import pytest
from confluent_kafka import Producer

from beam_pipeline.runner_setup import latest_checkpoint
from kernels.parse import parse_or_dead_letter
from paystream_dev.harness.leaks import leaks
from paystream_dev.harness.live import LiveResult, LiveRun, Phase
from paystream_dev.harness.mutate import mutated
from paystream_dev.harness.services import KafkaBroker, RedisServer
from schemas.records import SourceRef
from simulator.generator import GeneratorConfig
from simulator.live import LiveConfig
from simulator.producer import producer_config
from transforms.lists import group_of
from transforms.steps import EngineSettings

CHECKPOINT_MS = 2000


@pytest.fixture(scope="module")
def broker() -> Iterator[KafkaBroker]:
    with KafkaBroker() as b:
        yield b


def _live_run(broker: KafkaBroker, redis_url: str, tmp_path: Any, seed: int, ckdir: Optional[str]) -> LiveRun:
    """A live run for a fault test: warm-up at 200/s, a burst every 40 payments, checkpoints
    every 2 s (kept in ``ckdir``, when given, for a restart to restore)."""
    args = [f"--checkpointing_interval={CHECKPOINT_MS}"]
    if ckdir is not None:
        args.append(f"--checkpoint_dir={ckdir}")
    return LiveRun(
        broker,
        redis_url,
        str(tmp_path),
        args,
        seed=seed,
        warmup_rate=200,
        live=LiveConfig(seed=seed, burst_every=40),
        verbose=False,
    )


def _assert_exact(res: LiveResult) -> None:
    truth, exact = res.truth, res.exact
    assert truth is not None and len(truth.bursts) >= 10 and sum(truth.malformed.values()) > 0
    assert exact["rows"] == exact["valid"] == len(truth.valid_transaction_ids), exact
    assert exact["rows_missing"] == exact["rows_extra"] == exact["rows_twice"] == 0, exact
    assert exact["dead_letters"] == truth.malformed, exact
    assert exact["redis_alerted_once"] == exact["warehouse_alerted_once"] == len(truth.bursts), exact
    assert exact["redis_false"] == exact["warehouse_false"] == 0, exact
    assert exact["ok"]
    conn = duckdb.connect(res.warehouse, read_only=True)
    try:
        # one alert id per burst in the warehouse, the same as in the stream
        stored = dict(conn.execute("SELECT account_id, alert_id FROM fraud_alerts").fetchall())
        offsets = conn.execute(
            "SELECT count(*) FROM dead_letters WHERE source_topic IS NULL OR source_offset IS NULL"
        ).fetchone()
    finally:
        conn.close()
    streamed = {fields["account_id"]: fields["alert_id"] for _, fields in res.alerts}
    assert stored == streamed
    assert offsets == (0,)  # every dead letter has its Kafka coordinates


def _checkpoint_after(directory: str, after: float, timeout_s: float = 300.0) -> Tuple[str, float]:
    """The first checkpoint completed after ``after`` (wall clock): its path and the time
    its ``_metadata`` was written."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = latest_checkpoint(directory)
        if found:
            mtime = os.path.getmtime(os.path.join(found, "_metadata"))
            if mtime > after:
                return found, mtime
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint completed in {directory} within {timeout_s:.0f} s")


def _next_alert(run: LiveRun, timeout_s: float = 120.0) -> float:
    """Wait for the next alert to reach the stream; the time it was read."""
    seen = len(run.reader.entries)
    deadline = time.monotonic() + timeout_s
    while len(run.reader.entries) == seen:
        assert time.monotonic() < deadline, "no alert within the time allowed"
        time.sleep(0.002)
    return run.reader.entries[-1][0]


PRESENT = 'sink_rows_present{table="redis_alerts"}'


def _kill_and_restart(
    run: LiveRun, kills: List[Dict[str, Any]], what: str, ckdir: str, stop_sending: bool = False
) -> None:
    """``kill -9`` now and start again. Noted for the kill: the checkpoint the new run will
    restore (the newest one completed; nothing runs to change it in between) and the alerts
    the stream got after it was written, so decided after its barrier: the restored run
    decides those again, and the Redis sink must find each already there. The run killed
    was the restore of the kill before: its count of those is taken now."""
    at = run.kill()
    if kills:
        kills[-1]["present"] = run.last_counters.get(PRESENT, 0)
    checkpoint = latest_checkpoint(ckdir)
    assert checkpoint is not None
    written = os.path.getmtime(os.path.join(checkpoint, "_metadata"))
    after = [f["alert_id"] for t, f in run.reader.entries if t > written]
    kills.append({"what": what, "at": at, "checkpoint": checkpoint, "after_checkpoint": after})
    if stop_sending:
        run.producer.stop()
    run.start()


def _restored(run: LiveRun, kill: Dict[str, Any]) -> None:
    """The run started again says it restored the checkpoint noted at the kill."""
    found = re.findall(r"resuming from Flink checkpoint (\S+) ", run.log_text(last=True))
    assert found and found[-1].removeprefix("file://") == kill["checkpoint"], (found, kill["checkpoint"])


def test_hard_kill_at_three_points_then_restore(broker: KafkaBroker, tmp_path: Any) -> None:
    """One live run, ``kill -9``-ed three times and started again each time with the same
    ``--checkpoint_dir``: just after a checkpoint completed, about half a second before
    the next one is due, and a moment after an alert reached Redis. The simulator keeps
    sending through the first two kills; before the third restart it stops, so the last
    run must drain what its checkpoint holds with no new input.

    An alert emitted after the restored checkpoint is emitted again by the restored run,
    with the same alert id: the Redis sink finds it already written
    (``sink_rows_present``), and the stream has it once."""
    ckdir = str(tmp_path / "checkpoints")
    kills: List[Dict[str, Any]] = []
    with RedisServer() as server:
        run = _live_run(broker, server.url, tmp_path, 11, ckdir)
        try:
            run.start()
            run.warm_up()
            run.phase(Phase(300, 10))
            # 1. just after a checkpoint completed
            _checkpoint_after(ckdir, time.time())
            _kill_and_restart(run, kills, "just after a checkpoint", ckdir)
            run.warm_up()
            _restored(run, kills[-1])
            run.phase(Phase(300, 10))
            # 2. about half a second before the next checkpoint is due
            _, written = _checkpoint_after(ckdir, time.time())
            time.sleep(max(0.0, written + (CHECKPOINT_MS - 500) / 1000 - time.time()))
            _kill_and_restart(run, kills, "before a checkpoint", ckdir)
            run.warm_up()
            _restored(run, kills[-1])
            run.phase(Phase(300, 10))
            # 3. right after an alert reached Redis; no new input after it
            _next_alert(run)
            _kill_and_restart(run, kills, "while alerting", ckdir, stop_sending=True)
            run.drain(timeout_s=300)
            _restored(run, kills[-1])
        except BaseException:
            run.abort()
            raise
        res = run.finish()
        kills[-1]["present"] = run.last_counters.get(PRESENT, 0)
    summary = [(k["what"], len(k["after_checkpoint"]), k["present"]) for k in kills]
    _assert_exact(res)
    for kill in kills:
        assert kill["present"] >= len(kill["after_checkpoint"]), summary
    # the third kill came right after an alert: that alert was decided after the checkpoint
    assert kills[2]["after_checkpoint"], summary


def _in_background(action: Any) -> threading.Thread:
    thread = threading.Thread(target=action, daemon=True)
    thread.start()
    return thread


def test_broker_stopped_for_30_s(tmp_path: Any) -> None:
    """The broker is stopped (SIGTERM) for 30 s mid-stream and started again on the same
    log dir. The pipeline keeps running (the same process, never restarted), the
    simulator's idempotent producer resends what was not acknowledged, and once the
    broker is back the run drains: exact."""
    with KafkaBroker() as own, RedisServer() as server:
        run = _live_run(own, server.url, tmp_path, 12, None)
        try:
            run.start()
            run.warm_up()
            run.phase(Phase(300, 10))
            outage = _in_background(lambda: own.restart(down_s=30))
            run.phase(Phase(300, 40))
            outage.join(timeout=180)
            assert not outage.is_alive()
            run.phase(Phase(300, 15))
            run.drain(timeout_s=300)
        except BaseException:
            run.abort()
            raise
        res = run.finish()
    assert len(run.logs) == 1  # one pipeline process throughout
    assert run.producer.stats.snapshot(0)["failed"] == 0
    _assert_exact(res)
    # the outage was seen: nothing was read while the broker was down
    down = [s for s in res.samples if s["t"] > 0]
    assert any(b["read"] == a["read"] for a, b in zip(down, down[1:])), "no pause in reading"


def test_redis_down_for_2_minutes(broker: KafkaBroker, tmp_path: Any) -> None:
    """Redis is killed mid-stream and started again 2 minutes later (with its append-only
    file: what it acknowledged survives, as a managed Redis keeps it). The sink retries
    each write with backoff for 60 s (``DEFAULT_RETRY_BUDGET_S``); past it the bundle
    fails, Flink restarts the job from its last checkpoint, the restarted sink waits for
    Redis again in its set-up, and once Redis is back the payments since that checkpoint
    are decided again: their alerts come out with the same ids. Nothing is lost, and each
    alert is in the stream once."""
    server = RedisServer(persist=True).start()
    ckdir = str(tmp_path / "checkpoints")
    run = _live_run(broker, server.url, tmp_path, 13, ckdir)
    try:
        run.start()
        run.warm_up()
        run.phase(Phase(300, 10))
        alerts_before = len(run.reader.entries)
        server.kill()
        run.phase(Phase(300, 120))
        server.start()
        run.phase(Phase(300, 20))
        run.drain(timeout_s=600)
        res = run.finish()
    except BaseException:
        run.abort()
        raise
    finally:
        server.stop()
    assert alerts_before > 0
    log = run.log_text()
    assert "Redis unavailable after" in log and "failing the bundle" in log  # the budget ran out
    assert len(run.logs) == 1  # the same pipeline process throughout: Flink restarted the job
    _assert_exact(res)


FUZZ_EVENTS = 100_000


def _forgettable(sightings: List[Tuple[int, str, str, int]], horizon_us: int) -> int:
    """At most how many later sightings of an id the engine can have forgotten, so that
    the warehouse found the id already stored (``sink_rows_present``).

    * In the id's first account, the book forgets it once the account's clock has moved
      more than the horizon past it. That clock is at most the latest event time of the
      account's payments read so far: those before it in its partition (read in order),
      and any in another (a mutated payload can name an account that is not its key).
    * In another account, the book never saw the id; the id check forgets it once its
      group's clock (every account's payments, in any order) has moved the horizon past.
    """
    groups = EngineSettings().id_keys
    by_partition: Dict[str, Dict[int, int]] = {}
    group_latest: Dict[int, int] = {}
    for p, account, txn_id, t in sightings:
        parts = by_partition.setdefault(account, {})
        parts[p] = max(parts.get(p, t), t)
        g = group_of(txn_id, groups)
        group_latest[g] = max(group_latest.get(g, t), t)
    read: Dict[Tuple[str, int], int] = {}
    first: Dict[str, Tuple[str, int]] = {}
    found = 0
    for p, account, txn_id, t in sightings:
        read[(account, p)] = max(read.get((account, p), t), t)
        if txn_id not in first:
            first[txn_id] = (account, t)
            continue
        first_account, first_t = first[txn_id]
        if account == first_account:
            others = [v for q, v in by_partition[account].items() if q != p]
            clock = max([read[(account, p)], *others])
        else:
            clock = group_latest[group_of(txn_id, groups)]
        found += clock - first_t > horizon_us
    return found


def test_bad_input_through_kafka(broker: KafkaBroker, tmp_path: Any) -> None:
    """100,000 simulator payloads, half of them mutated (``paystream_dev.harness.mutate``: flipped bytes,
    cut short, wrong types, duplicate keys, bad UTF-8, edge amounts, deep nesting, card
    numbers in other fields, empty, null, blank and oversized values), through Kafka into
    a streaming run on local Flink. Records carry the payment's event time as their Kafka
    timestamp, as the simulator sends them. No crash; every payload is accounted for
    (stored, dropped as a duplicate, or dead-lettered with the reason the parser gives it
    and its Kafka coordinates), and the run's own count of payments stored equals the
    rows; no raw card number, email or phone in any table, in Redis or in the run's log.

    It found: a null value or deep nesting raised out of the dead-letter path; a copy of a
    payment dated before its account's clock was stored twice (the warehouse kept one,
    silently); a payment dated days after its sending moved its account's clock, so the
    copies of earlier payments were stored twice."""
    items = list(
        mutated(
            GeneratorConfig(num_events=FUZZ_EVENTS, accounts=20_000, seed=17, include_oversized=False),
            mutate_share=0.5,
            seed=17,
        )
    )
    kinds = {m.mutation for m in items}
    assert kinds >= {"none", "flip", "truncate", "empty", "oversized", "deep", "bad_utf8", "card_elsewhere"}
    assert any(m.payload is None for m in items) and any(m.payload == b"" for m in items)
    topic = f"fuzz-{int(time.time())}"
    limit = 4 * 2**20
    broker.create_topic(topic, partitions=2, config={"retention.ms": "-1", "max.message.bytes": str(limit)})
    producer = Producer(producer_config(broker.bootstrap_servers, {"message.max.bytes": limit}))
    coordinates: Dict[int, Tuple[int, int]] = {}
    errors: List[str] = []

    def delivered(index: int) -> Any:
        def report(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                coordinates[index] = (msg.partition(), msg.offset())

        return report

    for i, m in enumerate(items):
        while True:
            try:
                extra = {"timestamp": m.timestamp_ms} if m.timestamp_ms else {}
                producer.produce(topic, value=m.payload, key=m.key, on_delivery=delivered(i), **extra)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush(120)
    assert not errors and len(coordinates) == FUZZ_EVENTS, errors[:5]

    with RedisServer() as server:
        run = LiveRun(
            broker, server.url, str(tmp_path), [], seed=17, verbose=False, topic=topic, group="fuzz"
        )
        try:
            run.start()
            deadline = time.monotonic() + 900
            while run.counters().get("payments_in", 0) < FUZZ_EVENTS:
                assert run.proc is not None and run.proc.poll() is None, run.log_text()[-3000:]
                assert time.monotonic() < deadline, run.counters()
                time.sleep(1)
            quiet, last = time.monotonic(), run.counters()
            while time.monotonic() - quiet < 10:
                time.sleep(1)
                now = run.counters()
                if now != last:
                    quiet, last = time.monotonic(), now
            counters = run.counters()
            assert run.stop() == 130
        except BaseException:
            run.abort()
            raise
        client = server.client()
        redis_text = []
        for key in client.scan_iter(count=1000):
            redis_text.append(key.decode(errors="replace"))
            kind = client.type(key).decode()
            if kind == "hash":
                redis_text.append(str(client.hgetall(key)))
            elif kind == "stream":
                redis_text.append(str(client.xrange(key)))
            elif kind == "set":
                redis_text.append(str(client.smembers(key)))
            elif kind == "string":
                redis_text.append(str(client.get(key)))
        client.close()
    run.reader.close()

    assert counters.get("payments_in") == FUZZ_EVENTS
    conn = duckdb.connect(run.warehouse, read_only=True)
    try:
        rows = [r[0] for r in conn.execute("SELECT transaction_id FROM payment_transactions").fetchall()]
        letters = conn.execute(
            "SELECT stage, reason, source_partition, source_offset FROM dead_letters"
        ).fetchall()
        dumps = [
            str(conn.execute(f"SELECT * FROM {table}").fetchall())
            for table in ("payment_transactions", "dead_letters", "fraud_alerts")
        ]
    finally:
        conn.close()
    # stored once, dead-lettered once per payload, or dropped as a duplicate: each one counted
    assert len(rows) == len(set(rows))
    coords = [(p, o) for _, _, p, o in letters]
    assert len(coords) == len(set(coords)) and None not in {o for _, o in coords}
    duplicates = counters.get("duplicates_dropped", 0)
    # an id sent again after the dedup horizon (10 min of event time) had forgotten it is a
    # new payment to the books; the warehouse settles it against the stored row: an exact
    # copy is counted as a duplicate, other content is a dead letter
    present = counters.get('sink_rows_present{table="payment_transactions"}', 0)
    assert counters.get('sink_rows{table="payment_transactions"}') == len(rows)
    assert len(rows) + len(letters) + duplicates == FUZZ_EVENTS, (
        len(rows),
        len(letters),
        duplicates,
        present,
    )
    # each payload's fate is the parser's: the same dead letter, or a payment stored or dropped
    now_us = int(time.time() * 1_000_000)
    expected_letters: Dict[Tuple[int, int], str] = {}
    valid_ids = set()
    sightings: List[Tuple[int, str, str, int]] = []  # (partition, account, id, event time), sent order
    for i, m in enumerate(items):
        p, o = coordinates[i]
        out = parse_or_dead_letter(
            m.payload or b"", SourceRef(topic, p, o, None, m.timestamp_ms), now_us, 300_000_000
        )
        if hasattr(out, "reason"):
            expected_letters[(p, o)] = out.reason
            continue
        valid_ids.add(out.transaction_id)
        sightings.append((p, out.account_id, out.transaction_id, out.event_time_us))
    assert present <= _forgettable(sightings, horizon_us=600_000_000), present
    parse_letters = {(p, o): reason for stage, reason, p, o in letters if stage == "parse"}
    assert parse_letters == expected_letters
    assert set(rows) <= valid_ids
    later = len(letters) - len(parse_letters)  # refused after parsing: an id stored with other content
    assert len(rows) + duplicates + later == FUZZ_EVENTS - len(expected_letters)
    # no raw PII anywhere: tables, Redis, the run's log
    pans = {m.card_number for m in items if m.card_number}
    emails = {m.email for m in items if m.email}
    phones = {re.sub(r"\D", "", m.phone) for m in items if m.phone}
    assert len(pans) > 1000 and len(emails) > 1000 and len(phones) > 1000
    for where, text in [
        *zip(("transactions", "dead letters", "alerts"), dumps),
        ("redis", "\n".join(redis_text)),
        ("log", run.log_text()),
    ]:
        assert not leaks(text, pans, emails, phones), (where, leaks(text, pans, emails, phones)[:5])
