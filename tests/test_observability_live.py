"""The dashboard and the alert routing against real servers scraping a live run.

The run of ``paystream_dev.demo.Demo`` (what ``python -m paystream_dev demo`` runs): a real
KRaft broker and ``redis-server``, the simulator as a user starts it (``python -m
simulator``, bursts only when asked for), a streaming run on local Flink (``python -m
beam_pipeline --runner=FlinkRunner --streaming``) with its ``/metrics`` and Flink's
Prometheus reporter. Beside it, the monitoring stack of ``python -m paystream_dev monitor``:
Debian's Prometheus, Alertmanager and redis_exporter, the consumer-lag exporter and the
webhook standing in for Slack and PagerDuty. The stack runs the production rules and routes
with their durations times 1/30 (a five-minute ``for:`` takes 10 s).

In order, on one run:

1. every query of every panel that needs no Kubernetes answers, through Prometheus's HTTP
   API, with at least one series;
2. a burst injected through the simulator's REST API shows in the fraud panels;
3. the pipeline stopped mid-stream makes the consumer-lag alert fire. Alertmanager delivers
   it on the critical route (Slack and PagerDuty), and warnings only on the warning route.
   With the pipeline back, the resolved notice arrives.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from paystream_dev.demo import Demo
from paystream_dev.harness.live import LiveRun
from paystream_dev.harness.ports import free_port
from paystream_dev.harness.wait import wait_for
from paystream_dev.monitor import MonitorStack
from schemas.observability import CONSUMER_GROUP

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import build_dashboard  # noqa: E402

RATE = 200  # payments per second
TIME_SCALE = 1 / 30
# The panels with a query only Kubernetes answers (cAdvisor, kube-state-metrics). The first
# two also have a query of the pipeline's own process metrics, which must answer here.
KUBERNETES_PANELS = {"Pod CPU", "Pod memory", "Replica count"}
LAG_CRITICAL = "PaystreamConsumerLagCritical"


def _value(result: List[Dict[str, Any]]) -> float:
    return sum(float(r["value"][1]) for r in result)


class Live:
    """The run and the simulator (``paystream_dev.demo.Demo``), and the stack watching them."""

    def __init__(self, workdir: str) -> None:
        self.flink_port = free_port()
        self.demo = Demo(
            os.path.join(workdir, "demo"),
            rate=RATE,
            console_port=free_port(),
            simulator_port=free_port(),
            burst_every=0,  # bursts only when injected
            pipeline_args=[
                "--checkpointing_interval=2000",  # offsets committed every 2 s
                f"--flink_metrics_port={self.flink_port}",
            ],
            verbose=False,
        )
        self.workdir = workdir
        self.stack: Optional[MonitorStack] = None

    @property
    def monitor(self) -> MonitorStack:
        assert self.stack is not None
        return self.stack

    @property
    def run(self) -> LiveRun:
        assert self.demo.run is not None
        return self.demo.run

    def start(self) -> None:
        self.demo.start()
        assert self.demo.broker is not None and self.demo.redis is not None
        self.stack = MonitorStack(
            os.path.join(self.workdir, "monitor"),
            pipeline=[f"127.0.0.1:{self.run.port}"],
            simulator=[f"127.0.0.1:{self.demo.simulator_port}"],
            flink=[f"127.0.0.1:{self.flink_port}"],
            redis_url=self.demo.redis.url,
            bootstrap_servers=self.demo.broker.bootstrap_servers,
            time_scale=TIME_SCALE,
            scrape_s=1.0,
        ).start()

    def close(self) -> None:
        if self.stack is not None:
            self.stack.stop()
        self.demo.stop()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    setup = Live(str(tmp_path_factory.mktemp("observability")))
    try:
        setup.start()
        stack = setup.stack
        assert stack is not None
        wait_for(
            "the run reads and commits its offsets",
            lambda: (
                stack.query(f'kafka_consumergroup_current_offset{{consumergroup="{CONSUMER_GROUP}"}}')
                and setup.run.counters().get("payments_in", 0) > 0
            ),
            timeout_s=240,
            every_s=1.0,
        )
        yield setup
    finally:
        setup.close()


def test_every_panel_query_answers(live: Live) -> None:
    local = build_dashboard.targets()
    assert {title for title, _ in build_dashboard.targets(build_dashboard.KUBERNETES)} == KUBERNETES_PANELS
    assert len({title for title, _ in local}) == 14 - 1  # all but "Replica count" have a local query
    empty: List[Tuple[str, str]] = []

    def answered() -> bool:
        empty[:] = [(title, expr) for title, expr in local if not live.monitor.query(expr)]
        return not empty

    try:
        wait_for("every panel's query answers", answered, timeout_s=120)
    except TimeoutError:
        raise AssertionError(f"queries with no series: {empty}; targets: {live.monitor.targets()}") from None
    health = live.monitor.targets()
    assert set(health.values()) == {"up"}, health
    assert len(health) == 5  # the pipeline, the simulator, redis_exporter, the lag exporter, Flink


def test_an_injected_burst_shows_in_the_fraud_panels(live: Live) -> None:
    fraud_rate = dict(build_dashboard.targets())["Fraud alerts/s"]
    accounts = dict(build_dashboard.targets())["Active fraud accounts"]
    assert _value(live.monitor.query("sum(paystream_fraud_alerts_total)")) == 0  # no burst yet
    assert _value(live.monitor.query(accounts)) == 0
    assert live.demo.inject_burst() == 1
    wait_for(
        "the burst in the fraud-alert panel", lambda: _value(live.monitor.query(fraud_rate)) > 0, timeout_s=90
    )
    wait_for(
        "the burst's account in the active fraud accounts",
        lambda: _value(live.monitor.query(accounts)) == 1,
        30,
    )


def _delivered(notes: List[Dict[str, Any]], alertname: str, status: str) -> set:
    return {
        f"{n['receiver']}/{n['kind']}"
        for n in notes
        if any(a["alertname"] == alertname and a["status"] == status for a in n["alerts"])
    }


def test_the_lag_alert_fires_routes_and_resolves(live: Live) -> None:
    critical_routes = {"critical-alerts/slack", "critical-alerts/pagerduty", "payment-alerts/slack"}
    assert not _delivered(live.monitor.notifications(), LAG_CRITICAL, "firing")  # a healthy run
    live.run.stop()
    stopped = time.monotonic()
    wait_for(
        "the lag alert delivered on the critical routes",
        lambda: _delivered(live.monitor.notifications(), LAG_CRITICAL, "firing") >= critical_routes,
        timeout_s=180,
    )
    fired_s = time.monotonic() - stopped
    live.run.start()
    restarted = time.monotonic()
    wait_for(
        "the resolved notice on the critical routes",
        lambda: _delivered(live.monitor.notifications(), LAG_CRITICAL, "resolved") >= critical_routes,
        timeout_s=300,
    )
    resolved_s = time.monotonic() - restarted
    notes = live.monitor.notifications()
    # critical and warning apart: no warning on the critical receiver, every warning on the
    # warning route (the run, at 200/s, is under the 5K/s throughput floor: a warning fires)
    severities: Dict[str, set] = {}
    for n in notes:
        for a in n["alerts"]:
            severities.setdefault(f"{n['receiver']}/{n['kind']}", set()).add(a["severity"])
    assert severities.get("critical-alerts/slack") == {"critical"}
    assert severities.get("critical-alerts/pagerduty") == {"critical"}
    assert "warning" in severities.get("payment-alerts/slack", set())
    assert "fraud-detection/slack" not in severities  # no fraud storm: one burst is not 100/s
    print(
        f"lag alert: delivered {fired_s:.0f} s after the stop, resolved {resolved_s:.0f} s after the restart"
    )
