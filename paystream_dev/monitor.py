"""The monitoring of a local run, on real servers: ``python -m paystream_dev monitor start``.

    python -m paystream_dev monitor start --dir .cache/monitor [--pipeline 127.0.0.1:9102]
        [--simulator 127.0.0.1:8088] [--flink 127.0.0.1:9249] [--redis-url redis://127.0.0.1:6379]
        [--bootstrap-servers 127.0.0.1:9092] [--time-scale 1]
    python -m paystream_dev monitor status --dir .cache/monitor
    python -m paystream_dev monitor stop --dir .cache/monitor

``start`` runs, on 127.0.0.1 and free ports, each a process of its own that stays up after
the command returns:

* **Prometheus** (Debian's ``prometheus``) scraping the pipeline's ``/metrics``
  (``--metrics_port``), the simulator's, redis_exporter, the consumer-lag exporter and Flink's
  Prometheus reporter (``--flink_metrics_port`` on a local run). It evaluates the rules of
  ``k8s-flink/monitoring/prometheus-rules.yaml`` and sends alerts to
* **Alertmanager** (Debian's ``prometheus-alertmanager``) with the routes of
  ``k8s-flink/monitoring/alertmanager.yaml``. Each Slack and PagerDuty receiver becomes a
  webhook on the same route, at ``/<receiver>/slack`` or ``/<receiver>/pagerduty``, of
* **a local webhook**, standing in for Slack and PagerDuty. It prints each notification
  and appends it to ``notifications.jsonl`` in ``--dir``.
* **redis_exporter** (Debian's ``prometheus-redis-exporter``) with the flags of
  ``schemas.observability.redis_exporter_args``.
* **the consumer-lag exporter**, kafka-exporter's metrics (``kafka_consumergroup_lag``,
  ``kafka_consumergroup_current_offset``, ``kafka_topic_partition_current_offset``) read
  from the broker on each scrape. kafka-exporter itself is neither a Debian package nor
  served by the Go module proxy.

Every target carries ``namespace="paystream"``, as Kubernetes' service discovery labels
the production targets, so the dashboard's queries run unchanged.

``--time-scale`` multiplies every duration of the rules and the routes: ``for:``, range
windows, ``group_wait``, ``group_interval``, ``repeat_interval``. The default, 1, keeps
production's timings; ``tests/test_observability_live.py`` runs at 1/30, so a five-minute
``for:`` becomes 10 s. Thresholds, expressions, labels and routes are unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

import yaml

from paystream_dev.harness.ports import free_port
from schemas.observability import (
    CONSUMER_GROUP,
    K8S_NAMESPACE,
    REDIS_KEY_PREFIX,
    RedisKeys,
    redis_exporter_args,
)

__all__ = ["MonitorStack", "alertmanager_config", "main", "prometheus_rules", "scale_duration"]

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "k8s-flink" / "monitoring"
RULES = MONITORING / "prometheus-rules.yaml"
ROUTES = MONITORING / "alertmanager.yaml"
STATE = "monitor.json"
NOTIFICATIONS = "notifications.jsonl"

PROMETHEUS = "prometheus"
ALERTMANAGER = "prometheus-alertmanager"
REDIS_EXPORTER = "prometheus-redis-exporter"
_DEBIAN = {
    PROMETHEUS: "prometheus",
    ALERTMANAGER: "prometheus-alertmanager",
    REDIS_EXPORTER: "prometheus-redis-exporter",
}

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w)")
_RANGE = re.compile(r"\[(\w+)\]")


# --------------------------------------------------------------------------- configuration


def _seconds(text: str) -> float:
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(int(n) * _UNITS[u] for n, u in parts)


def scale_duration(text: str, scale: float, floor_s: float = 1.0) -> str:
    """A Prometheus duration times ``scale``, in whole seconds, at least ``floor_s``."""
    if scale == 1:
        return text
    return f"{max(round(_seconds(text) * scale), int(floor_s))}s"


def prometheus_rules(scale: float = 1.0, scrape_s: float = 5.0) -> Dict[str, Any]:
    """The production rules, their durations times ``scale``. A range window keeps at
    least four scrapes, so ``rate()`` always has points to work with."""
    with open(RULES, encoding="utf-8") as handle:
        doc = yaml.safe_load(handle)
    if scale == 1:
        return dict(doc)
    window_floor = 4 * scrape_s
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule["expr"] = _RANGE.sub(
                lambda m: f"[{scale_duration(m.group(1), scale, window_floor)}]", str(rule["expr"])
            )
            if "for" in rule:
                rule["for"] = scale_duration(rule["for"], scale)
    return dict(doc)


def alertmanager_config(webhook: str, scale: float = 1.0) -> Dict[str, Any]:
    """The production routes and inhibitions; every Slack and PagerDuty config of a
    receiver becomes a webhook to ``{webhook}/<receiver>/slack`` or ``/pagerduty``, which
    also gets the resolved notices; durations times ``scale``."""
    with open(ROUTES, encoding="utf-8") as handle:
        doc = yaml.safe_load(handle)

    def scale_route(route: Dict[str, Any]) -> None:
        for key in ("group_wait", "group_interval", "repeat_interval"):
            if key in route:
                route[key] = scale_duration(route[key], scale)
        for child in route.get("routes", []):
            scale_route(child)

    if scale != 1:
        doc["route"].setdefault("group_wait", "30s")
        doc["route"].setdefault("group_interval", "5m")
        doc["route"].setdefault("repeat_interval", "4h")
        scale_route(doc["route"])
        if "resolve_timeout" in doc.get("global", {}):
            doc["global"]["resolve_timeout"] = scale_duration(doc["global"]["resolve_timeout"], scale)
    receivers = []
    for receiver in doc["receivers"]:
        name = receiver["name"]
        hooks = [
            {"url": f"{webhook}/{name}/{kind}", "send_resolved": True}
            for kind, key in (("slack", "slack_configs"), ("pagerduty", "pagerduty_configs"))
            for _config in receiver.get(key, [])
        ]
        receivers.append({"name": name, "webhook_configs": hooks})
    doc["receivers"] = receivers
    return dict(doc)


def prometheus_config(
    targets: Mapping[str, Sequence[str]], rules_file: str, alertmanager: str, scrape_s: float
) -> Dict[str, Any]:
    return {
        "global": {"scrape_interval": f"{scrape_s:g}s", "evaluation_interval": f"{scrape_s:g}s"},
        "rule_files": [rules_file],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [
            {
                "job_name": job,
                "scrape_timeout": f"{min(scrape_s, 10):g}s",
                "static_configs": [{"targets": list(addresses), "labels": {"namespace": K8S_NAMESPACE}}],
            }
            for job, addresses in targets.items()
            if addresses
        ],
    }


# --------------------------------------------------------------------------- the exporters


class LagCollector:
    """kafka-exporter's consumer-group metrics, read from the broker at each scrape."""

    def __init__(self, bootstrap_servers: str, groups: Sequence[str]) -> None:
        from beam_pipeline.kafka import GroupLag

        self.readers = [GroupLag(bootstrap_servers, group) for group in groups]

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import GaugeMetricFamily

        lag = GaugeMetricFamily(
            "kafka_consumergroup_lag",
            "Messages the group has not committed, per partition",
            labels=["consumergroup", "topic", "partition"],
        )
        current = GaugeMetricFamily(
            "kafka_consumergroup_current_offset",
            "The group's committed offset, per partition",
            labels=["consumergroup", "topic", "partition"],
        )
        ends = GaugeMetricFamily(
            "kafka_topic_partition_current_offset",
            "The partition's end offset",
            labels=["topic", "partition"],
        )
        found = {}
        for reader in self.readers:
            try:
                found[reader.group] = reader.read()
            except Exception as err:  # noqa: BLE001 - a broker away: no series
                print(f"lag exporter: group {reader.group}: {err}", file=sys.stderr, flush=True)
        seen = set()
        for group, parts in found.items():
            for (topic, partition), (committed, end) in sorted(parts.items()):
                labels = [group, topic, str(partition)]
                current.add_metric(labels, committed)
                lag.add_metric(labels, max(end - committed, 0))
                if (topic, partition) not in seen:
                    seen.add((topic, partition))
                    ends.add_metric([topic, str(partition)], end)
        return [lag, current, ends]


class Notifications:
    """What the webhook received, in order, kept in a JSON-lines file."""

    def __init__(self, path: Path, echo: bool = True) -> None:
        self.path = path
        self.echo = echo
        self._lock = threading.Lock()

    def add(self, receiver: str, kind: str, body: Dict[str, Any]) -> None:
        alerts = [
            {
                "alertname": a.get("labels", {}).get("alertname", ""),
                "severity": a.get("labels", {}).get("severity", ""),
                "status": a.get("status", ""),
            }
            for a in body.get("alerts", [])
        ]
        entry = {
            "at": time.time(),
            "receiver": receiver,
            "kind": kind,
            "status": body.get("status"),
            "alerts": alerts,
        }
        with self._lock, open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
        if self.echo:
            names = ", ".join(sorted({a["alertname"] for a in alerts}))
            print(
                f"webhook: [{str(body.get('status', '')).upper()}] {names} -> {receiver}/{kind}", flush=True
            )


def read_notifications(path: Path) -> List[Dict[str, Any]]:
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _webhook_handler(notes: Notifications) -> type:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet by design
            return

        def _reply(self, code: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            parts = [p for p in urllib.parse.urlparse(self.path).path.split("/") if p]
            if len(parts) != 2 or parts[1] not in ("slack", "pagerduty"):
                self._reply(404, {"error": "POST /<receiver>/slack or /<receiver>/pagerduty"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                self._reply(400, {"error": "not JSON"})
                return
            notes.add(parts[0], parts[1], body)
            self._reply(200, {"ok": True})

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/notifications":
                self._reply(200, read_notifications(notes.path))
            else:
                self._reply(404, {"error": "GET /notifications"})

    return Handler


def serve(
    workdir: Path, lag_port: int, webhook_port: int, bootstrap_servers: str, groups: Sequence[str]
) -> int:
    """The consumer-lag exporter and the webhook, in this process, until SIGTERM."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    registry.register(LagCollector(bootstrap_servers, groups))  # type: ignore[arg-type]
    lag_server, _ = start_http_server(lag_port, addr="127.0.0.1", registry=registry)
    hook = ThreadingHTTPServer(
        ("127.0.0.1", webhook_port), _webhook_handler(Notifications(workdir / NOTIFICATIONS))
    )
    hook.daemon_threads = True
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threading.Thread(target=hook.serve_forever, name="webhook", daemon=True).start()
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    hook.shutdown()
    lag_server.shutdown()
    return 0


# --------------------------------------------------------------------------- the stack


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise FileNotFoundError(
            f"{name} is not installed: apt-get install {_DEBIAN[name]} (make system-deps installs it)"
        )
    return path


def _get(url: str, timeout_s: float = 2.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - 127.0.0.1 only
        return bytes(response.read())


class MonitorStack:
    """Prometheus, Alertmanager, redis_exporter, the lag exporter and the webhook, for the
    run whose addresses are given; its files, logs and ``monitor.json`` in ``workdir``."""

    def __init__(
        self,
        workdir: str | os.PathLike,
        pipeline: Sequence[str] = ("127.0.0.1:9102",),
        simulator: Sequence[str] = ("127.0.0.1:8088",),
        flink: Sequence[str] = ("127.0.0.1:9249",),
        redis_url: str = "redis://127.0.0.1:6379",
        bootstrap_servers: str = "127.0.0.1:9092",
        groups: Sequence[str] = (CONSUMER_GROUP,),
        redis_prefix: str = REDIS_KEY_PREFIX,
        time_scale: float = 1.0,
        scrape_s: float = 5.0,
    ) -> None:
        self.dir = Path(workdir).resolve()
        self.pipeline, self.simulator, self.flink = list(pipeline), list(simulator), list(flink)
        self.redis_url = redis_url
        self.bootstrap_servers = bootstrap_servers
        self.groups = list(groups)
        self.redis_prefix = redis_prefix
        self.time_scale = time_scale
        self.scrape_s = scrape_s
        self.ports: Dict[str, int] = {}
        self.pids: Dict[str, int] = {}
        self._procs: Dict[str, subprocess.Popen] = {}  # the ones this process started

    # -- addresses
    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['prometheus']}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['alertmanager']}"

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['webhook']}"

    # -- life
    def _write_configs(self) -> Dict[str, Path]:
        self.dir.mkdir(parents=True, exist_ok=True)
        files = {name: self.dir / f"{name}.yml" for name in ("prometheus", "rules", "alertmanager")}
        rules = prometheus_rules(self.time_scale, self.scrape_s)
        routes = alertmanager_config(self.webhook_url, self.time_scale)
        targets = {
            "paystream-pipeline": self.pipeline,
            "simulator": self.simulator,
            "redis-exporter": [f"127.0.0.1:{self.ports['redis_exporter']}"],
            "kafka-exporter": [f"127.0.0.1:{self.ports['lag_exporter']}"],
            "flink": self.flink,
        }
        config = prometheus_config(
            targets, str(files["rules"]), f"127.0.0.1:{self.ports['alertmanager']}", self.scrape_s
        )
        for name, doc in (("prometheus", config), ("rules", rules), ("alertmanager", routes)):
            with open(files[name], "w", encoding="utf-8") as handle:
                yaml.safe_dump(doc, handle, sort_keys=False)
        return files

    def _spawn(self, name: str, cmd: List[str]) -> None:
        log = open(self.dir / f"{name}.log", "wb")  # noqa: SIM115 - the child keeps it
        env = dict(
            os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        )
        proc = subprocess.Popen(
            cmd, cwd=self.dir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self._procs[name] = proc
        self.pids[name] = proc.pid

    def start(self, timeout_s: float = 60.0) -> MonitorStack:
        binaries = {name: _binary(name) for name in (PROMETHEUS, ALERTMANAGER, REDIS_EXPORTER)}
        self.ports = {
            name: free_port()
            for name in ("prometheus", "alertmanager", "redis_exporter", "lag_exporter", "webhook")
        }
        files = self._write_configs()
        (self.dir / NOTIFICATIONS).unlink(missing_ok=True)
        env_python = [sys.executable, "-m", "paystream_dev", "monitor", "serve", "--dir", str(self.dir)]
        self._spawn(
            "exporters",
            env_python
            + [
                f"--lag-port={self.ports['lag_exporter']}",
                f"--webhook-port={self.ports['webhook']}",
                f"--bootstrap-servers={self.bootstrap_servers}",
                *(f"--group={g}" for g in self.groups),
            ],
        )
        self._spawn(
            "redis_exporter",
            [
                binaries[REDIS_EXPORTER],
                f"-redis.addr={self.redis_url}",
                f"-web.listen-address=127.0.0.1:{self.ports['redis_exporter']}",
                *redis_exporter_args(RedisKeys(self.redis_prefix)),
            ],
        )
        self._spawn(
            "alertmanager",
            [
                binaries[ALERTMANAGER],
                f"--config.file={files['alertmanager']}",
                f"--storage.path={self.dir / 'alertmanager-data'}",
                f"--web.listen-address=127.0.0.1:{self.ports['alertmanager']}",
                "--cluster.listen-address=",
            ],
        )
        self._spawn(
            "prometheus",
            [
                binaries[PROMETHEUS],
                f"--config.file={files['prometheus']}",
                f"--storage.tsdb.path={self.dir / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{self.ports['prometheus']}",
                "--storage.tsdb.retention.time=2d",
            ],
        )
        self._save()
        self.wait_ready(timeout_s)
        return self

    def _save(self) -> None:
        state = {"ports": self.ports, "pids": self.pids, "time_scale": self.time_scale}
        (self.dir / STATE).write_text(json.dumps(state, indent=2))

    @classmethod
    def attach(cls, workdir: str | os.PathLike) -> MonitorStack:
        stack = cls(workdir)
        state = json.loads((stack.dir / STATE).read_text())
        stack.ports, stack.pids, stack.time_scale = state["ports"], state["pids"], state["time_scale"]
        return stack

    def _ready(self) -> Dict[str, bool]:
        checks = {
            "prometheus": f"{self.prometheus_url}/-/ready",
            "alertmanager": f"{self.alertmanager_url}/-/ready",
            "redis_exporter": f"http://127.0.0.1:{self.ports['redis_exporter']}/metrics",
            "exporters": f"{self.webhook_url}/notifications",
        }
        out = {}
        for name, url in checks.items():
            try:
                _get(url)
                out[name] = True
            except (OSError, urllib.error.URLError):
                out[name] = False
        return out

    def alive(self) -> Dict[str, bool]:
        out = {}
        for name, pid in self.pids.items():
            proc = self._procs.get(name)
            if proc is not None:
                out[name] = proc.poll() is None
                continue
            try:
                os.kill(pid, 0)
                out[name] = True
            except OSError:
                out[name] = False
        return out

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            ready = self._ready()
            if all(ready.values()):
                return
            dead = [name for name, up in self.alive().items() if not up]
            if dead or time.monotonic() > deadline:
                self.stop()
                why = f"{', '.join(dead)} exited" if dead else f"not ready in {timeout_s:.0f} s: {ready}"
                raise RuntimeError(f"monitoring stack: {why}; see the logs in {self.dir}")
            time.sleep(0.2)

    def stop(self, timeout_s: float = 15.0) -> None:
        for pid in self.pids.values():
            try:
                os.killpg(pid, signal.SIGTERM)
            except OSError:
                pass
        deadline = time.monotonic() + timeout_s
        while any(self.alive().values()) and time.monotonic() < deadline:
            time.sleep(0.1)  # polling pids that may not be our children
        for pid in self.pids.values():
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
        (self.dir / STATE).unlink(missing_ok=True)

    def __enter__(self) -> MonitorStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- reading
    def query(self, expr: str) -> List[Dict[str, Any]]:
        """Prometheus's answer to an instant query: its ``result`` list."""
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        body = json.loads(_get(url, timeout_s=10))
        if body.get("status") != "success":
            raise RuntimeError(f"query {expr!r}: {body}")
        return list(body["data"]["result"])

    def targets(self) -> Dict[str, str]:
        """Each scrape target's health, by job and address."""
        body = json.loads(_get(f"{self.prometheus_url}/api/v1/targets"))
        return {
            f"{t['labels']['job']} {t['labels']['instance']}": t["health"]
            for t in body["data"]["activeTargets"]
        }

    def notifications(self) -> List[Dict[str, Any]]:
        return read_notifications(self.dir / NOTIFICATIONS)

    def describe(self) -> str:
        return "\n".join(
            [
                f"Prometheus    {self.prometheus_url}  (alerts: {self.prometheus_url}/alerts)",
                f"Alertmanager  {self.alertmanager_url}",
                f"webhook       {self.webhook_url}/notifications  (Slack and PagerDuty stand-in)",
                f"logs          {self.dir}",
            ]
        )


# --------------------------------------------------------------------------- the command


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m paystream_dev monitor",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    start = sub.add_parser("start", help="start the stack and print its addresses")
    start.add_argument("--dir", default=str(ROOT / ".cache" / "monitor"))
    start.add_argument(
        "--pipeline", action="append", help="a run's --metrics_port, HOST:PORT (127.0.0.1:9102)"
    )
    start.add_argument("--simulator", action="append", help="the simulator's API, HOST:PORT (127.0.0.1:8088)")
    start.add_argument(
        "--flink", action="append", help="Flink's Prometheus reporter, HOST:PORT (127.0.0.1:9249)"
    )
    start.add_argument("--redis-url", default="redis://127.0.0.1:6379")
    start.add_argument("--redis-key-prefix", default=REDIS_KEY_PREFIX)
    start.add_argument("--bootstrap-servers", default="127.0.0.1:9092")
    start.add_argument("--group", action="append", help=f"consumer groups to watch ({CONSUMER_GROUP})")
    start.add_argument(
        "--time-scale", type=float, default=1.0, help="durations of rules and routes times this"
    )
    start.add_argument("--scrape-interval", type=float, default=5.0, help="seconds")
    for name in ("stop", "status"):
        p = sub.add_parser(name)
        p.add_argument("--dir", default=str(ROOT / ".cache" / "monitor"))
    srv = sub.add_parser("serve", help="(internal) the lag exporter and the webhook")
    srv.add_argument("--dir", required=True)
    srv.add_argument("--lag-port", type=int, required=True)
    srv.add_argument("--webhook-port", type=int, required=True)
    srv.add_argument("--bootstrap-servers", required=True)
    srv.add_argument("--group", action="append", default=[])
    a = ap.parse_args(argv)
    workdir = Path(a.dir)
    if a.cmd == "serve":
        return serve(workdir, a.lag_port, a.webhook_port, a.bootstrap_servers, a.group or [CONSUMER_GROUP])
    running = (workdir / STATE).exists() and any(MonitorStack.attach(workdir).alive().values())
    if a.cmd == "start":
        if running:
            print(f"already running:\n{MonitorStack.attach(workdir).describe()}")
            return 0
        stack = MonitorStack(
            workdir,
            pipeline=a.pipeline or ["127.0.0.1:9102"],
            simulator=a.simulator or ["127.0.0.1:8088"],
            flink=a.flink or ["127.0.0.1:9249"],
            redis_url=a.redis_url,
            bootstrap_servers=a.bootstrap_servers,
            groups=a.group or [CONSUMER_GROUP],
            redis_prefix=a.redis_key_prefix,
            time_scale=a.time_scale,
            scrape_s=a.scrape_interval,
        ).start()
        print(stack.describe())
        return 0
    if not running:
        print("not running")
        return 0 if a.cmd == "stop" else 1
    stack = MonitorStack.attach(workdir)
    if a.cmd == "stop":
        stack.stop()
        print("stopped")
        return 0
    print(stack.describe())
    for target, health in sorted(stack.targets().items()):
        print(f"  {health:8} {target}")
    return 0
