"""The simulator's pacing and REST API, without Kafka."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any, Dict, List

import pytest

from simulator.api import ControlServer
from simulator.pacing import Pacer


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_pacer_holds_the_rate_and_changes_at_once() -> None:
    clock = FakeClock()
    pacer = Pacer(1000, clock=clock)
    sent = 0
    for _ in range(100):  # one second in 10 ms ticks
        clock.now += 0.01
        n = pacer.allowance()
        pacer.sent(n)
        sent += n
    assert 990 <= sent <= 1001
    pacer.set_rate(20_000)
    clock.now += 0.01
    assert 195 <= pacer.allowance() <= 201  # the next tick already runs at the new rate


def test_pacer_does_not_burst_after_a_stall() -> None:
    clock = FakeClock()
    pacer = Pacer(1000, clock=clock)
    clock.now += 30  # the producer was stuck for 30 s
    assert pacer.allowance() <= 1001


def test_pacer_refuses_negative_rates() -> None:
    with pytest.raises(ValueError):
        Pacer(-1)
    with pytest.raises(ValueError):
        Pacer(1).set_rate(-5)


def _call(url: str, body: Dict[str, Any] | None = None) -> tuple[int, Dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_rest_api_changes_the_rate_and_reports_stats() -> None:
    pacer = Pacer(1000)
    calls: List[float] = []

    def set_rate(rate: float) -> None:
        calls.append(rate)
        pacer.set_rate(rate)

    server = ControlServer(
        stats=lambda: {"produced": 7, "current_rate": pacer.rate}, set_rate=set_rate
    ).start()
    try:
        assert _call(server.address + "/stats") == (200, {"produced": 7, "current_rate": 1000.0})
        assert _call(server.address + "/config/rate", {"messages_per_second": 5000})[0] == 200
        assert pacer.rate == 5000 and calls == [5000.0]
        assert _call(server.address + "/stats")[1]["current_rate"] == 5000.0
        for bad in (
            {"messages_per_second": -1},
            {"messages_per_second": "fast"},
            {},
            {"messages_per_second": True},
        ):
            code, body = _call(server.address + "/config/rate", bad)
            assert code == 400 and "error" in body
        assert pacer.rate == 5000
        assert _call(server.address + "/nope")[0] == 404
    finally:
        server.stop()


def test_rest_api_injects_a_burst_into_a_stream_without_bursts_of_its_own() -> None:
    """``--burst-every 0``: no burst until ``POST /inject/burst``; each one asked for starts
    one, which the ground truth counts (so the pipeline must alert it once)."""
    from simulator.live import LiveConfig, LiveStream

    stream = LiveStream(LiveConfig(seed=7, burst_every=0))
    t = 1_800_000_000_000_000

    def run(seconds: int, rate: int = 200) -> None:
        nonlocal t
        for _ in range(seconds * rate):
            t += 1_000_000 // rate
            stream.take(t)

    run(30)
    assert stream.truth().bursts == []
    server = ControlServer(
        stats=lambda: {}, set_rate=lambda r: None, inject_burst=stream.inject_burst
    ).start()
    try:
        assert _call(server.address + "/inject/burst", {}) == (200, {"bursts_requested": 1})
        assert _call(server.address + "/inject/burst", {}) == (200, {"bursts_requested": 2})
    finally:
        server.stop()
    run(40)  # a burst spans at most 10 s
    bursts = stream.truth().bursts
    assert len(bursts) == 2 and len({b.account_id for b in bursts}) == 2
    run(30)
    assert len(stream.truth().bursts) == 2
    with pytest.raises(ValueError):
        LiveConfig(burst_every=-1)


def test_rest_api_without_injection_refuses_it() -> None:
    server = ControlServer(stats=lambda: {}, set_rate=lambda r: None).start()
    try:
        assert _call(server.address + "/inject/burst", {})[0] == 404
    finally:
        server.stop()
