"""``python -m paystream_dev demo``: a live run to watch, in one command; Ctrl-C stops it.

It starts, on 127.0.0.1:

* a local Kafka broker (``paystream_dev.local_kafka``) with a ``payments`` topic;
* a ``redis-server``;
* the simulator (``python -m simulator``) at ``--rate`` payments per second. Its REST API
  changes the rate (``POST /config/rate``) and starts a fraud burst (``POST /inject/burst``);
* a streaming run on local Flink (``python -m beam_pipeline --runner=FlinkRunner --streaming``),
  into a DuckDB warehouse and Redis;
* the console (``python -m beam_pipeline.console``), and prints its address.

Everything lives in ``--dir`` (``.cache/demo``) and stops with Ctrl-C, the run last. It
needs what ``make deps`` installs: the Kafka and Flink jars, ``redis-server``, the console's
chart library.

``Demo`` is the same sequence for a caller: ``tests/test_console.py`` drives it on free
ports.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, List, Optional, Sequence

from paystream_dev.harness.live import LiveRun
from paystream_dev.harness.ports import free_port
from paystream_dev.harness.processes import stop_tree
from paystream_dev.harness.services import KafkaBroker, RedisServer
from paystream_dev.harness.wait import wait_for
from schemas.observability import CONSUMER_GROUP

__all__ = ["Demo", "main"]

ROOT = Path(__file__).resolve().parent.parent
TOPIC = "payments"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - 127.0.0.1
            return True
    except OSError:
        return False


class Demo:
    """The broker, Redis, the simulator, the streaming run and the console, in ``workdir``."""

    def __init__(
        self,
        workdir: str | os.PathLike,
        rate: float = 300.0,
        console_port: int = 8050,
        simulator_port: int = 8088,
        burst_every: int = 200,
        console_args: Sequence[str] = (),
        pipeline_args: Sequence[str] = (),
        verbose: bool = True,
        truth: Optional[str] = None,
    ) -> None:
        self.dir = Path(workdir).resolve()
        self.rate = rate
        self.console_port = console_port or free_port()
        self.simulator_port = simulator_port or free_port()
        self.burst_every = burst_every
        self.console_args = list(console_args)
        self.pipeline_args = list(pipeline_args)
        self.verbose = verbose
        self.truth = truth  # the simulator writes what it sent here when it stops
        self.broker: Optional[KafkaBroker] = None
        self.redis: Optional[RedisServer] = None
        self.run: Optional[LiveRun] = None
        self.simulator: Optional[subprocess.Popen] = None
        self.console: Optional[subprocess.Popen] = None
        self._logs: List[Any] = []

    @property
    def console_url(self) -> str:
        return f"http://127.0.0.1:{self.console_port}/"

    @property
    def simulator_url(self) -> str:
        return f"http://127.0.0.1:{self.simulator_port}"

    def say(self, text: str) -> None:
        if self.verbose:
            print(text, flush=True)

    def _spawn(self, name: str, cmd: List[str]) -> subprocess.Popen:
        log = open(self.dir / f"{name}.log", "w", encoding="utf-8")  # noqa: SIM115 - closed at stop()
        self._logs.append(log)
        env = dict(
            os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        )
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def start(self) -> Demo:
        if self.dir.exists():
            shutil.rmtree(self.dir)  # a demo starts afresh: topic, warehouse, alerts
        self.dir.mkdir(parents=True)
        self.say("demo: starting a Kafka broker and redis-server")
        self.broker = KafkaBroker(str(self.dir / "kafka")).start()
        self.broker.create_topic(TOPIC, partitions=2, config={"retention.ms": "-1"})
        (self.dir / "redis").mkdir()
        self.redis = RedisServer(str(self.dir / "redis")).start()
        self.simulator = self._spawn(
            "simulator",
            [
                sys.executable,
                "-m",
                "simulator",
                f"--bootstrap-servers={self.broker.bootstrap_servers}",
                f"--topic={TOPIC}",
                f"--rate={self.rate:g}",
                "--duration=86400",
                f"--burst-every={self.burst_every}",
                f"--api-port={self.simulator_port}",
                *([f"--truth={self.truth}"] if self.truth else []),
            ],
        )
        self.say(f"demo: simulator at {self.rate:g} payments/s, API {self.simulator_url}")
        self.run = LiveRun(
            self.broker,
            self.redis.url,
            str(self.dir),
            pipeline_args=self.pipeline_args,
            group=CONSUMER_GROUP,
            topic=TOPIC,
            verbose=False,
        )
        self.run.start()
        self.say("demo: streaming run on local Flink starting (about a minute)")
        self.console = self._spawn(
            "console",
            [
                sys.executable,
                "-m",
                "beam_pipeline.console",
                f"--metrics_url=http://127.0.0.1:{self.run.port}/metrics",
                f"--redis_url={self.redis.url}",
                f"--bootstrap_servers={self.broker.bootstrap_servers}",
                f"--kafka_consumer_group={CONSUMER_GROUP}",
                f"--port={self.console_port}",
                *self.console_args,
            ],
        )
        return self

    def wait_ready(self, timeout_s: float = 300.0) -> None:
        """Until the console answers and the run reads payments."""
        assert self.run is not None and self.console is not None

        def console_up() -> bool:
            if self.console is not None and self.console.poll() is not None:
                raise RuntimeError(
                    f"the console ended (rc={self.console.returncode}); see {self.dir}/console.log"
                )
            return _answers(self.console_url + "static/console.css")

        wait_for("the console", console_up, 60)
        self.say(f"demo: console {self.console_url}")

        def reading() -> bool:
            assert self.run is not None and self.run.proc is not None
            if self.run.proc.poll() is not None:
                raise RuntimeError(f"the run ended (rc={self.run.proc.returncode}); see {self.run.logs[-1]}")
            return self.run.counters().get("payments_in", 0) > 0

        wait_for("the run reading payments", reading, timeout_s)
        self.say("demo: the run is reading; Ctrl-C stops everything")

    def inject_burst(self) -> int:
        request = urllib.request.Request(self.simulator_url + "/inject/burst", data=b"{}", method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - 127.0.0.1
            return int(json.loads(response.read())["bursts_requested"])

    def stop_simulator(self) -> None:
        """SIGTERM: the simulator stops sending and writes its ground truth (``truth``)."""
        if self.simulator is not None and self.simulator.poll() is None:
            stop_tree(self.simulator)

    def stop(self) -> None:
        self.stop_simulator()
        if self.console is not None and self.console.poll() is None:
            stop_tree(self.console)
        if self.run is not None and self.run.proc is not None and self.run.proc.poll() is None:
            counters = self.run.counters()
            self.run.stop()
            self.say(
                f"demo: stopped. read {counters.get('payments_in', 0):,.0f} payloads, "
                f"raised {sum(v for k, v in counters.items() if k.startswith('fraud_alerts')):,.0f} fraud alerts; "
                f"warehouse {self.run.warehouse}"
            )
        if self.redis is not None:
            self.redis.stop()
        if self.broker is not None:
            self.broker.stop()
        for log in self._logs:
            log.close()

    def __enter__(self) -> Demo:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m paystream_dev demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default=str(ROOT / ".cache" / "demo"))
    ap.add_argument("--rate", type=float, default=300.0, help="payments per second (default 300)")
    ap.add_argument("--port", type=int, default=8050, help="the console's port (default 8050)")
    ap.add_argument(
        "--simulator-port", type=int, default=8088, help="the simulator's API port (default 8088)"
    )
    args = ap.parse_args(argv)
    demo = Demo(args.dir, rate=args.rate, console_port=args.port, simulator_port=args.simulator_port)
    try:
        demo.start()
        demo.wait_ready()
        print(
            f"\n  console    {demo.console_url}\n"
            f"  a burst    curl -X POST {demo.simulator_url}/inject/burst\n"
            f"  the rate   curl -X POST {demo.simulator_url}/config/rate -d '{{\"messages_per_second\": 1000}}'\n",
            flush=True,
        )
        while True:
            time.sleep(1)
            for name, proc in (("console", demo.console), ("simulator", demo.simulator)):
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"the {name} ended (rc={proc.returncode}); see {demo.dir}/{name}.log")
            if demo.run is not None and demo.run.proc is not None and demo.run.proc.poll() is not None:
                raise RuntimeError(f"the run ended (rc={demo.run.proc.returncode}); see {demo.run.logs[-1]}")
    except KeyboardInterrupt:
        print("\ndemo: stopping", flush=True)
        return 0
    except (RuntimeError, TimeoutError) as err:
        print(f"demo: {err}", file=sys.stderr)
        return 1
    finally:
        demo.stop()
