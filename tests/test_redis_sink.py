"""The Redis alert sink, against a real ``redis-server``.

* alerts land under the right keys, with the right TTLs, in the stream and on the channel;
* the same input twice leaves the same Redis state (every key, value and stream entry);
* a Redis crash and restart in the middle of a run loses no alert and stops nothing;
* the whole pipeline with ``--redis_url`` puts exactly the warehouse's alerts in Redis.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from typing import Any, Dict, List

import apache_beam as beam
import pytest
import redis
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from conftest_redis import redis_prefix, redis_server  # noqa: F401

from paystream_dev.harness.services import RedisServer
from schemas.records import FraudAlert, SourceRef, Transaction
from schemas.rows import rfc3339_to_us
from transforms.sinks.redis_alerts import (
    AlertKeys,
    RedisTarget,
    WriteAlertsToRedis,
    alert_fields,
    backoff_delays,
)

_US = 1_000_000
_T0 = 1_795_000_000 * _US  # 2026-11-18, a whole second


def make_alerts(n: int, tag: str = "a") -> List[FraudAlert]:
    out = []
    for i in range(n):
        start = _T0 + i * 5 * _US
        out.append(
            FraudAlert(
                alert_id=hashlib.sha256(f"{tag}:{i}".encode()).hexdigest()[:32],
                account_id=f"acct-{i % 97:06d}",
                rule="velocity:3 in 60s/5s",
                threshold=3,
                window_start_us=start,
                window_end_us=start + 60 * _US,
                first_txn_time_us=start + 1 * _US,
                crossing_txn_time_us=start + 9 * _US,
                matched_count=3 + i % 3,
                transaction_ids=tuple(f"txn-{tag}-{i}-{k}" for k in range(3)),
            )
        )
    return out


def write_alerts(alerts: List[FraudAlert], sink: WriteAlertsToRedis, slow_s: float = 0.0) -> Any:
    """Run a batch pipeline Create(alerts) -> sink; returns the finished result (for metrics)."""
    p = TestPipeline(options=PipelineOptions(["--direct_num_workers=1"]))
    pcoll = p | beam.Create(alerts, reshuffle=False)
    if slow_s:
        pcoll = pcoll | "Slow" >> beam.Map(lambda a: (time.sleep(slow_s), a)[1])
    pcoll | sink
    result = p.run()
    result.wait_until_finish()
    return result


def counter(result: Any, name: str) -> int:
    found = result.metrics().query(MetricsFilter().with_namespace("paystream").with_name(name))["counters"]
    return sum(int(c.committed or c.attempted or 0) for c in found)


def dump(client: redis.Redis, prefix: str) -> Dict[str, Any]:
    """Every key under ``prefix`` with its value; TTLs only as "has one" (they count down)."""
    out: Dict[str, Any] = {}
    for raw in sorted(client.scan_iter(match=prefix + "*", count=1000)):
        key = raw.decode()
        kind = client.type(raw).decode()
        if kind == "string":
            value: Any = client.get(raw)
        elif kind == "hash":
            value = sorted(client.hgetall(raw).items())
        elif kind == "set":
            value = sorted(client.smembers(raw))
        elif kind == "stream":
            value = [(eid, sorted(fields.items())) for eid, fields in client.xrange(raw)]
        else:
            raise AssertionError(f"unexpected type {kind} at {key}")
        out[key] = (kind, value, client.ttl(raw) > 0)
    return out


def decoded(fields: Dict[bytes, bytes]) -> Dict[str, str]:
    return {k.decode(): v.decode() for k, v in fields.items()}


# --- plain functions -------------------------------------------------------------------------


def test_backoff_is_exponential_and_bounded() -> None:
    delays = backoff_delays(60.0)
    assert delays[:4] == [0.05, 0.1, 0.2, 0.4]
    assert max(delays) == 5.0
    assert 55.0 <= sum(delays) <= 60.0
    assert backoff_delays(0.0) == []


def test_target_refuses_a_password_in_the_url_and_other_schemes() -> None:
    with pytest.raises(ValueError, match="password_file"):
        RedisTarget("redis://:secret@127.0.0.1:6379/0")
    with pytest.raises(ValueError, match="redis://"):
        RedisTarget("http://127.0.0.1:6379")
    RedisTarget("rediss://cache.internal:6380/0")  # TLS is fine


def _txn(txn_id: str, fingerprint: str, offset: int, topic: str = "payments") -> Transaction:
    return Transaction(
        transaction_id=txn_id,
        account_id="acct-000001",
        amount_minor=1250,
        currency="EUR",
        card_number="4111111111111111",
        email="jane@example.com",
        phone="+1-555-867-5309",
        merchant_id="m-00001",
        merchant_category="5411",
        country="DE",
        card_country="DE",
        event_time_us=_T0,
        source=SourceRef(topic, 0, offset),
        fingerprint=fingerprint,
    )


# --- the alert sink ----------------------------------------------------------------------------


def test_alerts_land_under_their_keys_with_ttls_in_the_stream_and_on_the_channel(
    redis_server: RedisServer,  # noqa: F811
    redis_prefix: str,  # noqa: F811
) -> None:
    alerts = make_alerts(40)
    keys = AlertKeys(redis_prefix)
    client = redis_server.client()
    subscriber = client.pubsub()
    subscriber.subscribe(keys.channel)
    assert subscriber.get_message(timeout=5)["type"] == "subscribe"

    started_us = int(time.time() * _US)
    sink = WriteAlertsToRedis(
        RedisTarget(redis_server.url), key_prefix=redis_prefix, alert_ttl_s=3600, batch_size=7
    )
    result = write_alerts(alerts, sink)
    finished_us = int(time.time() * _US)

    assert {m.decode() for m in client.smembers(keys.accounts)} == {a.account_id for a in alerts}
    for alert in alerts:
        stored = decoded(client.hgetall(keys.alert(alert.alert_id)))
        detected_us = rfc3339_to_us(stored["detected_at"])
        assert started_us <= detected_us <= finished_us
        assert stored == alert_fields(alert, detected_us)
        assert json.loads(stored["transaction_ids"]) == list(alert.transaction_ids)
        assert 3600 - 120 <= client.ttl(keys.alert(alert.alert_id)) <= 3600
        assert 3600 - 120 <= client.ttl(keys.streamed(alert.alert_id)) <= 3600

    entries = client.xrange(keys.stream)
    assert len(entries) == len(alerts)
    by_id = {decoded(fields)["alert_id"]: decoded(fields) for _, fields in entries}
    assert set(by_id) == {a.alert_id for a in alerts}
    for alert in alerts:
        assert by_id[alert.alert_id] == decoded(client.hgetall(keys.alert(alert.alert_id)))
    assert client.ttl(keys.stream) == -1 and client.ttl(keys.accounts) == -1  # shared, no expiry

    messages = []
    deadline = time.monotonic() + 5
    while len(messages) < len(alerts) and time.monotonic() < deadline:
        msg = subscriber.get_message(timeout=0.5)
        if msg and msg["type"] == "message":
            messages.append(json.loads(msg["data"]))
    assert sorted(m["alert_id"] for m in messages) == sorted(a.alert_id for a in alerts)
    assert all(isinstance(m["transaction_ids"], list) for m in messages)
    assert subscriber.get_message(timeout=0.3) is None  # one message per alert, no more
    assert counter(result, "sink_rows.redis_alerts") == len(alerts)
    assert counter(result, "sink_errors.redis_alerts") == 0
    subscriber.close()
    client.close()


def test_stream_is_capped(redis_server: RedisServer, redis_prefix: str) -> None:  # noqa: F811
    alerts = make_alerts(600, tag="cap")
    write_alerts(alerts, WriteAlertsToRedis(RedisTarget(redis_server.url), redis_prefix, stream_maxlen=50))
    client = redis_server.client()
    # MAXLEN ~ trims whole stream nodes (100 entries by default): near 50, far below 600.
    assert 50 <= client.xlen(AlertKeys(redis_prefix).stream) <= 150
    assert len(list(client.scan_iter(match=f"{redis_prefix}alert:*:streamed"))) == 600
    client.close()


def test_the_same_input_twice_leaves_the_same_state(
    redis_server: RedisServer,  # noqa: F811
    redis_prefix: str,  # noqa: F811
) -> None:
    alerts = make_alerts(120, tag="idem")
    target = RedisTarget(redis_server.url)
    client = redis_server.client()
    subscriber = client.pubsub()
    subscriber.subscribe(AlertKeys(redis_prefix).channel)
    subscriber.get_message(timeout=5)

    write_alerts(alerts, WriteAlertsToRedis(target, redis_prefix, batch_size=50))
    first = dump(client, redis_prefix)
    published_first = _drain(subscriber)
    time.sleep(0.01)  # a rewrite would change detected_at
    write_alerts(list(reversed(alerts)), WriteAlertsToRedis(target, redis_prefix, batch_size=33))
    second = dump(client, redis_prefix)
    published_second = _drain(subscriber)

    assert len(first) == 2 + 2 * len(alerts)  # accounts set, stream, a hash and a guard per alert
    assert second == first
    assert published_first == len(alerts) and published_second == 0
    subscriber.close()
    client.close()


def _drain(subscriber: Any) -> int:
    n = 0
    while True:
        msg = subscriber.get_message(timeout=0.5)
        if msg is None:
            return n
        n += msg["type"] == "message"


def test_a_redis_restart_mid_run_loses_no_alert(tmp_path: Any) -> None:
    """Crash redis-server (SIGKILL) while the sink writes, restart it on the same port after
    1.5 s. The sink retries with backoff; afterwards every alert is there exactly once."""
    server = RedisServer(str(tmp_path), persist=True).start()  # AOF, fsync always: survives a crash
    alerts = make_alerts(1500, tag="restart")
    keys = AlertKeys("restart:")
    state: Dict[str, Any] = {}

    def crash_and_restart() -> None:
        probe = server.client(socket_timeout=1)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            written = probe.xlen(keys.stream)
            if written >= 150:
                break
            time.sleep(0.005)
        probe.close()
        state["written_at_crash"] = written
        server.kill()
        time.sleep(1.5)
        server.start()
        state["restarted"] = True

    chaos = threading.Thread(target=crash_and_restart, daemon=True)
    chaos.start()
    try:
        result = write_alerts(
            alerts, WriteAlertsToRedis(RedisTarget(server.url), "restart:", batch_size=20), slow_s=0.003
        )
        chaos.join(30)
        assert state.get("restarted"), "the restart did not happen"
        # The crash landed mid-run, and the sink had to retry through it.
        assert 150 <= state["written_at_crash"] < len(alerts)
        assert counter(result, "sink_errors.redis_alerts") >= 1

        client = server.client()
        assert client.xlen(keys.stream) == len(alerts)
        streamed = [decoded(f)["alert_id"] for _, f in client.xrange(keys.stream)]
        assert sorted(streamed) == sorted(a.alert_id for a in alerts)  # each exactly once
        for alert in alerts:
            assert client.hget(keys.alert(alert.alert_id), "alert_id") == alert.alert_id.encode()
        assert client.scard(keys.accounts) == len({a.account_id for a in alerts})
        client.close()
    finally:
        chaos.join(30)
        server.stop()


def test_password_from_file_and_wrong_password_fails_at_setup(tmp_path: Any) -> None:
    password_file = tmp_path / "redis.pass"
    password_file.write_text("s3cret-for-tests\n")
    wrong_file = tmp_path / "wrong.pass"
    wrong_file.write_text("nope\n")
    with RedisServer(str(tmp_path), requirepass="s3cret-for-tests") as server:
        write_alerts(make_alerts(3), WriteAlertsToRedis(RedisTarget(server.url, str(password_file)), "pw:"))
        assert server.client().xlen("pw:alerts:stream") == 3
        started = time.monotonic()
        with pytest.raises(Exception, match="(?i)auth|password"):
            write_alerts(make_alerts(3), WriteAlertsToRedis(RedisTarget(server.url, str(wrong_file)), "pw:"))
        assert time.monotonic() - started < 20  # not retried for a minute: it fails fast
