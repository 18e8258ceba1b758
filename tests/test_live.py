"""The live simulator against a streaming run on local Flink, checked against its ground truth.

A real KRaft broker, a real redis-server and the pipeline as a user starts it
(``python -m beam_pipeline --runner=FlinkRunner --streaming --source=kafka``): the live
simulator (``simulator.producer.LiveProducer``) sends payments stamped with their send
time, with its bursts, duplicates, late, out-of-order and malformed payloads, while the
run reads them; ``paystream_dev.harness.live`` drives both, stops the run once it has
drained, and compares the warehouse and the Redis alert stream with what was sent.
"""

from __future__ import annotations

import collections
from typing import Any, Iterator

import pytest

from paystream_dev.harness.live import Phase, run_live
from paystream_dev.harness.services import KafkaBroker, RedisServer
from simulator.generator import NORMAL_MIN_GAP_US
from simulator.live import LiveConfig, LiveStream


@pytest.fixture(scope="module")
def broker() -> Iterator[KafkaBroker]:
    with KafkaBroker() as b:
        yield b


def test_live_simulator_against_a_streaming_run(broker: KafkaBroker, tmp_path: Any) -> None:
    with RedisServer() as server:
        res = run_live(
            broker,
            server.url,
            [Phase(300, 25), Phase(600, 15)],  # a rate change on the way, as the REST call makes
            str(tmp_path),
            seed=5,
            warmup_rate=100,
            live=LiveConfig(seed=5, burst_every=100),
            verbose=False,
        )
    truth, exact = res.truth, res.exact
    assert truth is not None and len(truth.bursts) >= 20 and sum(truth.malformed.values()) > 0
    assert exact["rows"] == exact["valid"] == len(truth.valid_transaction_ids)
    assert exact["rows_missing"] == exact["rows_extra"] == exact["rows_twice"] == 0
    assert exact["dead_letters"] == truth.malformed
    assert exact["redis_alerted_once"] == exact["warehouse_alerted_once"] == len(truth.bursts)
    assert exact["redis_false"] == exact["warehouse_false"] == 0
    assert exact["ok"]
    # every valid payment was sent and acknowledged, and its acknowledgement follows its sending
    assert set(truth.sends) == truth.valid_transaction_ids
    assert all(0 < sent <= acked for sent, acked in truth.sends.values())
    # the phases saw their bursts, each alert measured from its crossing payment
    for phase in res.phases:
        assert phase["bursts"] > 0 and phase["missing"] == 0 and phase["p50_ms"] is not None


def test_live_stream_keeps_the_velocity_ground_truth_at_any_rate() -> None:
    """Only burst accounts ever have 3 valid payments within 60 s of event time, whatever the
    rate and its changes; bursts are 3 to 6 payments, their crossing is the third sent."""
    stream = LiveStream(LiveConfig(seed=3, burst_every=50))
    t, sent = 1_800_000_000_000_000, []
    for rate, seconds in ((200, 100), (3000, 20), (50, 200)):
        for _ in range(int(rate * seconds)):
            t += int(1_000_000 / rate)
            sent.append(stream.take(t))
    truth = stream.truth()
    times = collections.defaultdict(list)
    seen = set()
    order = collections.defaultdict(list)
    planned = {rec.account_id for rec in sent if rec.burst_id}  # includes bursts cut off at the end
    for rec in sent:
        if rec.kind == "valid" and rec.transaction_id not in seen:
            seen.add(rec.transaction_id)
            times[rec.account_id].append(rec.event_time_us)
            order[rec.account_id].append(rec.transaction_id)
        assert rec.kind != "valid" or rec.event_time_us <= t
    bursts = {b.account_id: b for b in truth.bursts}
    assert len(bursts) == len(truth.bursts) > 50
    for account, ts in times.items():
        ts.sort()
        three = any(ts[i + 2] - ts[i] < 60_000_000 for i in range(len(ts) - 2))
        assert three == (account in bursts), account
        if account not in planned:
            assert all(b - a >= NORMAL_MIN_GAP_US for a, b in zip(ts, ts[1:]))
    for account, b in bursts.items():
        assert 3 <= len(b.transaction_ids) <= 6
        assert b.crossing_transaction_id == order[account][2]
    assert seen == truth.valid_transaction_ids
    assert truth.duplicates > 0 and truth.late > 0 and set(truth.malformed) >= {"invalid_json", "not_utf8"}
