"""The dashboard and the alert routing against real servers scraping a live run.

A real KRaft broker and ``redis-server``; the simulator as a user starts it
(``python -m simulator``, bursts only when asked for); a streaming run on local Flink
(``python -m beam_pipeline --runner=FlinkRunner --streaming``) with its ``/metrics`` and
Flink's Prometheus reporter; and the monitoring stack of ``python -m paystream_dev monitor``:
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

import json
import os
import subprocess
import sys
import time
import urllib.request
from typing import Any, Callable, Dict, Iterator, List, Tuple

import pytest

from paystream_dev.harness.live import LiveRun
from paystream_dev.harness.ports import free_port
from paystream_dev.harness.services import KafkaBroker, RedisServer
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


def _wait(what: str, check: Callable[[], Any], timeout_s: float, every_s: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(every_s)


def _value(result: List[Dict[str, Any]]) -> float:
    return sum(float(r["value"][1]) for r in result)


class Live:
    """The run, the simulator and the stack watching them."""

    def __init__(self, broker: KafkaBroker, redis: RedisServer, workdir: str) -> None:
        self.topic = f"obs-{int(time.time())}"
        broker.create_topic(self.topic, partitions=2, config={"retention.ms": "-1"})
        self.sim_port, self.flink_port = free_port(), free_port()
        self.run = LiveRun(
            broker,
            redis.url,
            workdir,
            pipeline_args=[
                "--checkpointing_interval=2000",  # offsets committed every 2 s
                f"--flink_metrics_port={self.flink_port}",
            ],
            group=CONSUMER_GROUP,
            topic=self.topic,
            verbose=False,
        )
        self.stack = MonitorStack(
            os.path.join(workdir, "monitor"),
            pipeline=[f"127.0.0.1:{self.run.port}"],
            simulator=[f"127.0.0.1:{self.sim_port}"],
            flink=[f"127.0.0.1:{self.flink_port}"],
            redis_url=redis.url,
            bootstrap_servers=broker.bootstrap_servers,
            time_scale=TIME_SCALE,
            scrape_s=1.0,
        )
        self.sim_log = open(os.path.join(workdir, "simulator.log"), "w", encoding="utf-8")  # noqa: SIM115
        self.simulator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "simulator",
                f"--bootstrap-servers={broker.bootstrap_servers}",
                f"--topic={self.topic}",
                f"--rate={RATE}",
                "--duration=3600",
                "--burst-every=0",
                f"--api-port={self.sim_port}",
            ],
            cwd=ROOT,
            stdout=self.sim_log,
            stderr=subprocess.STDOUT,
        )

    def post(self, path: str) -> Dict[str, Any]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.sim_port}{path}", data=b"{}", method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - 127.0.0.1
            return dict(json.loads(response.read()))

    def close(self) -> None:
        self.simulator.terminate()
        self.simulator.wait(timeout=30)
        self.sim_log.close()
        if self.run.proc is not None and self.run.proc.poll() is None:
            self.run.stop()
        self.stack.stop()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    workdir = str(tmp_path_factory.mktemp("observability"))
    with KafkaBroker() as broker, RedisServer() as redis:
        setup = Live(broker, redis, workdir)
        try:
            setup.stack.start()
            setup.run.start()
            _wait(
                "the run reads and commits its offsets",
                lambda: (
                    setup.stack.query(
                        f'kafka_consumergroup_current_offset{{consumergroup="{CONSUMER_GROUP}"}}'
                    )
                    and setup.run.counters().get("payments_in", 0) > 0
                ),
                timeout_s=240,
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
        empty[:] = [(title, expr) for title, expr in local if not live.stack.query(expr)]
        return not empty

    try:
        _wait("every panel's query answers", answered, timeout_s=120)
    except AssertionError:
        raise AssertionError(f"queries with no series: {empty}; targets: {live.stack.targets()}") from None
    health = live.stack.targets()
    assert set(health.values()) == {"up"}, health
    assert len(health) == 5  # the pipeline, the simulator, redis_exporter, the lag exporter, Flink


def test_an_injected_burst_shows_in_the_fraud_panels(live: Live) -> None:
    fraud_rate = dict(build_dashboard.targets())["Fraud alerts/s"]
    accounts = dict(build_dashboard.targets())["Active fraud accounts"]
    assert _value(live.stack.query("sum(paystream_fraud_alerts_total)")) == 0  # no burst yet
    assert _value(live.stack.query(accounts)) == 0
    assert live.post("/inject/burst") == {"bursts_requested": 1}
    _wait(
        "the burst in the fraud-alert panel", lambda: _value(live.stack.query(fraud_rate)) > 0, timeout_s=90
    )
    _wait(
        "the burst's account in the active fraud accounts",
        lambda: _value(live.stack.query(accounts)) == 1,
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
    assert not _delivered(live.stack.notifications(), LAG_CRITICAL, "firing")  # a healthy run
    live.run.stop()
    stopped = time.monotonic()
    _wait(
        "the lag alert delivered on the critical routes",
        lambda: _delivered(live.stack.notifications(), LAG_CRITICAL, "firing") >= critical_routes,
        timeout_s=180,
    )
    fired_s = time.monotonic() - stopped
    live.run.start()
    restarted = time.monotonic()
    _wait(
        "the resolved notice on the critical routes",
        lambda: _delivered(live.stack.notifications(), LAG_CRITICAL, "resolved") >= critical_routes,
        timeout_s=300,
    )
    resolved_s = time.monotonic() - restarted
    notes = live.stack.notifications()
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
