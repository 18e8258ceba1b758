#!/usr/bin/env python3
"""Kafka + Beam Java pieces without Docker: fetch jars with Maven, run a local KRaft broker.

One entry point for everything local-Kafka (see docs/kafka-without-docker.md):

    python -m paystream_dev fetch            # kafka broker + Beam Java jars into .cache/ (idempotent)
    python -m paystream_dev fetch-kafka      # only the broker jars   -> .cache/kafka/lib
    python -m paystream_dev fetch-beam       # only the Beam jars     -> .cache/beam/
    python -m paystream_dev start --dir D    # start a broker, print its bootstrap address
    python -m paystream_dev stop --dir D     # stop it (SIGTERM, then SIGKILL after a timeout)
    python -m paystream_dev status --dir D

From Python / pytest:

    from paystream_dev.local_kafka import KafkaBroker
    with KafkaBroker() as broker:            # temp dir, free ports on 127.0.0.1
        broker.create_topic("payments", partitions=2)
        broker.bootstrap_servers             # "127.0.0.1:PORT"

Beam's Java artifacts at 2.77.0 are not served by the Maven mirror reachable here (nor is the shaded
`beam-sdks-java-io-expansion-service` after 2.43.0, nor any `beam-runners-flink-*-job-server`), so
`fetch-beam` resolves the unshaded modules with `mvn dependency:copy-dependencies` and writes small
"manifest-only" jars (Main-Class + Class-Path) that `java -jar` can start, exactly what Beam's own
`JavaJarServer.make_classpath_jar` does:

    .cache/beam/expansion/beam-kafka-expansion-service.jar   (ExpansionService, KafkaIO, Java harness; Beam 2.73.0)
    .cache/beam/flink/beam-flink-1.19-job-server.jar         (FlinkJobServerDriver, embedded Flink 1.19; Beam 2.62.0)
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from pathlib import Path

from paystream_dev.harness.ports import free_port

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("PAYSTREAM_CACHE", REPO / ".cache"))

KAFKA_VERSION = os.environ.get("PAYSTREAM_KAFKA_VERSION", "4.1.1")
# Newest versions whose full dependency trees resolve from the reachable Maven mirror (see docs).
BEAM_EXPANSION_JAVA_VERSION = os.environ.get("PAYSTREAM_BEAM_EXPANSION_VERSION", "2.73.0")
BEAM_FLINK_JAVA_VERSION = os.environ.get("PAYSTREAM_BEAM_FLINK_VERSION", "2.62.0")
FLINK_VERSION = "1.19"
FLINK_RUNTIME_VERSION = "1.19.0"  # the Flink that beam-runners-flink-1.19 depends on
KAFKA_CLIENTS_FOR_BEAM = "3.9.1"
JAMM = "com.github.jbellis:jamm:0.4.0"

KAFKA_LIB = CACHE / "kafka" / "lib"
EXPANSION_DIR = CACHE / "beam" / "expansion"
EXPANSION_JAR = EXPANSION_DIR / "beam-kafka-expansion-service.jar"
FLINK_DIR = CACHE / "beam" / "flink"
FLINK_JOB_SERVER_JAR = FLINK_DIR / f"beam-flink-{FLINK_VERSION}-job-server.jar"
# Same classpath as the job server: an expansion service whose Java classes match the Flink JVM's, for
# --defaultEnvironmentType=EMBEDDED (KafkaIO then runs inside the Flink JVM).
FLINK_EXPANSION_JAR = FLINK_DIR / "beam-kafka-expansion-service-embedded.jar"

# --------------------------------------------------------------------------- Maven fetching

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>paystream.local</groupId><artifactId>{artifact}</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
{deps}
  </dependencies>
</project>
"""
# KafkaIO's pom pulls Confluent's schema-registry artifacts from packages.confluent.io, which is not
# reachable (and not needed for byte-array/string reads): exclude them everywhere.
_NO_CONFLUENT = (
    "<exclusions><exclusion><groupId>io.confluent</groupId><artifactId>*</artifactId>"
    "</exclusion></exclusions>"
)


def _dep(coord: str, exclude_confluent: bool = False) -> str:
    g, a, v = coord.split(":")
    excl = _NO_CONFLUENT if exclude_confluent else ""
    return (
        f"    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version>{excl}</dependency>"
    )


def _mvn_copy_deps(workdir: Path, artifact: str, coords: list[str]) -> Path:
    """Resolve coords (+ runtime deps) with Maven into workdir/lib. Skips if lib/.complete exists."""
    lib = workdir / "lib"
    stamp = lib / ".complete"
    pom_text = _POM.format(artifact=artifact, deps="\n".join(_dep(c, True) for c in coords))
    if stamp.exists() and stamp.read_text() == pom_text:
        return lib
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "pom.xml").write_text(pom_text)
    if lib.exists():
        shutil.rmtree(lib)
    cmd = [
        "mvn",
        "-B",
        "-q",
        "-f",
        str(workdir / "pom.xml"),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={lib}",
    ]
    print("+", " ".join(cmd), file=sys.stderr)
    res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if res.returncode != 0:
        sys.stderr.write(res.stdout[-4000:])
        raise RuntimeError(f"mvn failed resolving {coords}")
    stamp.write_text(pom_text)
    return lib


def _wrap(line: str) -> list[str]:
    # Manifest lines are at most 72 bytes; continuation lines start with one space.
    return [line[:70]] + [" " + line[i : i + 69] for i in range(70, len(line), 69)]


# Java 17 module opens that Flink's own launch scripts pass (env.java.opts.all); without
# java.util, checkpoints fail in Kryo: "Unable to make field private final java.lang.Object[]
# java.util.Arrays$ArrayList.a accessible: module java.base does not "opens java.util"".
# `java -jar` honours an Add-Opens manifest attribute of the main jar (JDK 9+).
FLINK_ADD_OPENS = [
    "java.base/java.lang",
    "java.base/java.lang.reflect",
    "java.base/java.net",
    "java.base/java.io",
    "java.base/java.nio",
    "java.base/sun.nio.ch",
    "java.base/java.text",
    "java.base/java.time",
    "java.base/java.util",
    "java.base/java.util.concurrent",
    "java.base/java.util.concurrent.atomic",
    "java.base/java.util.concurrent.locks",
]


def _manifest_jar(jar: Path, main_class: str, lib: Path, add_opens: list[str] | None = None) -> Path:
    """Write a jar holding only a manifest: Main-Class + Class-Path of every jar in lib (relative)."""
    entries = sorted(p.relative_to(jar.parent).as_posix() for p in lib.glob("*.jar"))
    lines = ["Manifest-Version: 1.0", f"Main-Class: {main_class}", "Created-By: paystream_dev"]
    lines += _wrap("Class-Path: " + " ".join(entries))
    if add_opens:
        lines += _wrap("Add-Opens: " + " ".join(add_opens))
    text = "\r\n".join(lines) + "\r\n\r\n"
    tmp = jar.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w") as zf:
        zf.writestr("META-INF/MANIFEST.MF", text)
    tmp.replace(jar)
    return jar


def fetch_kafka() -> Path:
    """Broker jars (kafka_2.13 + runtime deps + a log4j2 slf4j binding) into .cache/kafka/lib."""
    return _mvn_copy_deps(
        CACHE / "kafka",
        "kafka-broker",
        [
            f"org.apache.kafka:kafka_2.13:{KAFKA_VERSION}",
            "org.apache.logging.log4j:log4j-slf4j-impl:2.24.3",
        ],
    )


def fetch_beam() -> dict[str, Path]:
    """Expansion service (KafkaIO + Java harness for the loopback worker) and a Flink job server."""
    v = BEAM_EXPANSION_JAVA_VERSION
    lib = _mvn_copy_deps(
        EXPANSION_DIR,
        "beam-kafka-expansion",
        [
            f"org.apache.beam:beam-sdks-java-expansion-service:{v}",
            f"org.apache.beam:beam-sdks-java-io-kafka:{v}",
            f"org.apache.beam:beam-sdks-java-harness:{v}",
            f"org.apache.kafka:kafka-clients:{KAFKA_CLIENTS_FOR_BEAM}",
            # 'provided' in the harness pom, but FnHarness needs it (Caches -> org.github.jamm.MemoryMeter)
            JAMM,
            "org.slf4j:slf4j-simple:2.0.16",
        ],
    )
    _manifest_jar(EXPANSION_JAR, "org.apache.beam.sdk.expansion.service.ExpansionService", lib)
    fv = BEAM_FLINK_JAVA_VERSION
    flib = _mvn_copy_deps(
        FLINK_DIR,
        "beam-flink-job-server",
        [
            f"org.apache.beam:beam-runners-flink-{FLINK_VERSION}:{fv}",
            # For EMBEDDED Java environments (Java harness inside the Flink JVM):
            f"org.apache.beam:beam-sdks-java-harness:{fv}",
            f"org.apache.beam:beam-sdks-java-io-kafka:{fv}",
            f"org.apache.kafka:kafka-clients:{KAFKA_CLIENTS_FOR_BEAM}",
            # Streaming state in RocksDB, off the JVM heap, checkpointed incrementally, as
            # the production cluster keeps it (in flink-dist there, not in the runner's jars)
            f"org.apache.flink:flink-statebackend-rocksdb:{FLINK_RUNTIME_VERSION}",
            # Flink's Prometheus reporter (--flink_metrics_port). Its 1.19.0 is not served where
            # we fetch from; 1.19.1 carries its Prometheus client inside, needs nothing else
            # that the runtime lacks, and loads in the 1.19.0 runtime
            "org.apache.flink:flink-metrics-prometheus:1.19.1",
            JAMM,
            "org.slf4j:slf4j-simple:1.7.36",
        ],
    )
    _manifest_jar(
        FLINK_JOB_SERVER_JAR, "org.apache.beam.runners.flink.FlinkJobServerDriver", flib, FLINK_ADD_OPENS
    )
    _manifest_jar(FLINK_EXPANSION_JAR, "org.apache.beam.sdk.expansion.service.ExpansionService", flib)
    return {
        "expansion_jar": EXPANSION_JAR,
        "flink_job_server_jar": FLINK_JOB_SERVER_JAR,
        "flink_expansion_jar": FLINK_EXPANSION_JAR,
    }


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


# --------------------------------------------------------------------------- broker


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    return str(Path(home) / "bin" / "java") if home else "java"


_LOG4J2 = """status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.file.ref = FILE
"""


class KafkaBroker:
    """Single-node KRaft broker (broker+controller) on 127.0.0.1, data in a fresh log dir.

    Readiness = a real metadata request answered (confluent_kafka AdminClient.list_topics), polled
    until a deadline; the JVM's exit is detected while waiting.
    """

    def __init__(
        self,
        workdir: str | os.PathLike | None = None,
        port: int | None = None,
        controller_port: int | None = None,
        heap: str = "512m",
        log_level: str = "WARN",
        start_timeout: float = 90.0,
    ):
        self._own_dir = workdir is None
        self.dir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="kafka-local-"))
        self.port = port or free_port()
        self.controller_port = controller_port or free_port()
        self.heap = heap
        self.log_level = log_level
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    # -- lifecycle
    def _write_config(self) -> Path:
        data = self.dir / "data"
        if data.exists():
            shutil.rmtree(data)
        data.mkdir(parents=True)
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(data),
            "num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "log.flush.interval.messages": "9223372036854775807",
        }
        cfg = self.dir / "server.properties"
        cfg.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.dir / "log4j2.properties").write_text(
            _LOG4J2.format(log=self.dir / "server.log", level=self.log_level)
        )
        return cfg

    def _java_cmd(self, main: str, *args: str) -> list[str]:
        return [
            _java(),
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
            "-Djava.awt.headless=true",
            "-cp",
            str(KAFKA_LIB / "*"),
            main,
            *args,
        ]

    def start(self) -> KafkaBroker:
        lib = fetch_kafka()
        assert lib == KAFKA_LIB
        self.dir.mkdir(parents=True, exist_ok=True)
        cfg = self._write_config()
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        fmt = subprocess.run(
            # "--cluster-id=ID": a base64url id may start with "-", which argparse4j would take for a flag.
            self._java_cmd(
                "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "--config", str(cfg)
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=120,
        )
        if fmt.returncode != 0:
            raise RuntimeError(f"kafka StorageTool format failed:\n{fmt.stdout[-3000:]}")
        return self._launch()

    def _launch(self) -> KafkaBroker:
        """Start the JVM on the formatted log dir and wait until it answers."""
        cfg = self.dir / "server.properties"
        out = open(self.dir / "broker.out", "ab")
        self.proc = subprocess.Popen(
            self._java_cmd("kafka.Kafka", str(cfg)),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self.proc.pid
        try:
            self.wait_ready(self.start_timeout)
        except BaseException:
            self.stop()
            raise
        (self.dir / "broker.json").write_text(
            json.dumps(
                {
                    "pid": self.pid,
                    "bootstrap_servers": self.bootstrap_servers,
                    "controller_port": self.controller_port,
                }
            )
        )
        return self

    def restart(self, down_s: float, hard: bool = False) -> None:
        """Stop the broker (SIGTERM, or SIGKILL when ``hard``), keep it down for ``down_s``,
        then start it again on the same ports and log dir: its topics, records and
        committed offsets are as it left them (a hard stop loses what was not yet
        written to the log)."""
        assert self.pid is not None and self._alive(), "the broker is not running"
        os.kill(self.pid, signal.SIGKILL if hard else signal.SIGTERM)
        deadline = time.monotonic() + 60
        while self._alive() and time.monotonic() < deadline:
            if self.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=0.2)
        if self._alive():
            os.kill(self.pid, signal.SIGKILL)
            if self.proc is not None:
                self.proc.wait(timeout=30)
        time.sleep(down_s)
        self._launch()

    def _alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        if self.pid is None:
            return False
        try:
            os.kill(self.pid, 0)
            return True
        except ProcessLookupError:
            return False

    def wait_ready(self, timeout: float) -> None:
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + timeout
        admin = AdminClient(
            {"bootstrap.servers": self.bootstrap_servers, "socket.timeout.ms": 2000, "log_level": 0}
        )
        last = None
        while time.monotonic() < deadline:
            if not self._alive():
                tail = (self.dir / "broker.out").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"kafka broker exited early:\n{tail}")
            try:
                md = admin.list_topics(timeout=2)  # a real Metadata request; blocks up to 2 s
                if md.brokers:
                    return
            except Exception as e:  # KafkaException(_TRANSPORT / _TIMED_OUT) until the broker listens
                last = e
        raise TimeoutError(f"broker {self.bootstrap_servers} not ready after {timeout}s: {last}")

    def stop(self, timeout: float = 30.0) -> None:
        if self.pid is None or not self._alive():
            self._reap()
            return
        os.kill(self.pid, signal.SIGTERM)  # kafka.Kafka shuts down cleanly on SIGTERM
        deadline = time.monotonic() + timeout
        while self._alive() and time.monotonic() < deadline:
            if self.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=0.2)
            else:
                time.sleep(0.2)  # polling a foreign pid for exit, not a readiness check
        if self._alive():
            os.kill(self.pid, signal.SIGKILL)
        self._reap()

    def _reap(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(Exception):
                self.proc.wait(timeout=10)
        with contextlib.suppress(FileNotFoundError):
            (self.dir / "broker.json").unlink()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- helpers
    def create_topic(
        self, name: str, partitions: int = 1, config: dict | None = None, timeout: float = 30.0
    ) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers})
        fut = admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
            operation_timeout=timeout,
        )
        fut[name].result(timeout)
        # Wait until metadata shows every partition with a leader.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            t = admin.list_topics(topic=name, timeout=5).topics.get(name)
            if (
                t
                and t.error is None
                and len(t.partitions) == partitions
                and all(p.leader >= 0 for p in t.partitions.values())
            ):
                return
        raise TimeoutError(f"topic {name} has no leaders after {timeout}s")

    @classmethod
    def attach(cls, workdir: str | os.PathLike) -> KafkaBroker:
        """A handle on a broker started earlier (e.g. by the CLI) in workdir."""
        info = json.loads((Path(workdir) / "broker.json").read_text())
        b = cls(
            workdir,
            port=int(info["bootstrap_servers"].rsplit(":", 1)[1]),
            controller_port=info["controller_port"],
        )
        b._own_dir = False
        b.pid = info["pid"]
        return b


# --------------------------------------------------------------------------- Beam helpers


class JavaWorkerPool:
    """A Beam Java SDK worker pool (``paystream_dev.java_workers``) on 127.0.0.1.

    Runners reach it through an EXTERNAL environment: start the expansion service with
    --defaultEnvironmentType=EXTERNAL --defaultEnvironmentConfig=<address>. It runs the Java harness of
    the expansion jar's Beam version, so the runner's own Beam Java version does not matter, each
    worker in a JVM of its own (Beam's ExternalWorkerService can't start a worker again once one has
    stopped; see ``paystream_dev.java_workers``).
    """

    def __init__(
        self, port: int | None = None, heap: str = "1g", jar: Path | None = None, start_timeout: float = 60.0
    ):
        self.port = port or free_port()
        self.heap = heap
        self.jar = jar or EXPANSION_JAR
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self.log = Path(tempfile.mkstemp(prefix="java-worker-pool-", suffix=".log")[1])

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> JavaWorkerPool:
        fetch_beam()
        cmd = [
            sys.executable,
            "-m",
            "paystream_dev.java_workers",
            f"--port={self.port}",
            f"--jar={self.jar}",
            f"--java={_java()}",
            f"--heap={self.heap}",
        ]
        root = str(Path(__file__).resolve().parent.parent)
        env = dict(
            os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
        )
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"Java worker pool exited:\n{self.log.read_text(errors='replace')[-3000:]}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                # gRPC server not bound yet: wait for the process to change state, bounded.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=0.2)
        self.stop()
        raise TimeoutError(f"Java worker pool not listening on {self.address} after {self.start_timeout}s")

    def stop(self) -> None:
        from paystream_dev.java_workers import stop_process

        if self.proc is not None:
            stop_process(self.proc, grace_s=15)

    def __enter__(self) -> JavaWorkerPool:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def expansion_service(
    env: str = "LOOPBACK",
    config: str | None = None,
    jar: Path | None = None,
    experiments: list[str] | None = None,
):
    """A JavaJarExpansionService for KafkaIO built from the cached classpath jar.

    env="LOOPBACK": no extra args; inside `with beam.Pipeline(...)` Beam adds --alsoStartLoopbackWorker
        and the Java transforms run in the expansion JVM. Works on the Python DirectRunner (FnApiRunner
        prefers the EXTERNAL loopback entry of the AnyOf environment). NOT on Flink: the Java runner
        takes the first AnyOf entry, i.e. DOCKER.
    env="EXTERNAL": config = address of a `JavaWorkerPool`. Works on Flink (and on the DirectRunner).
    env="EMBEDDED": Java harness inside the runner JVM: only when the runner's Beam Java version equals
        the expansion service's (here: not the case, see docs/kafka-without-docker.md).
    """
    from apache_beam.transforms.external import JavaJarExpansionService

    fetch_beam()
    args = []
    if env.upper() != "LOOPBACK":
        args.append(f"--defaultEnvironmentType={env.upper()}")
        if config:
            args.append(f"--defaultEnvironmentConfig={config}")
    # Experiments given to the expansion JVM apply when KafkaIO expands, e.g. use_deprecated_read
    # (the Python pipeline's --experiments do not reach KafkaIO.Read.expand on this path).
    args += [f"--experiments={e}" for e in experiments or []]
    return JavaJarExpansionService(str(jar or EXPANSION_JAR), append_args=args)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("fetch")
    sub.add_parser("fetch-kafka")
    sub.add_parser("fetch-beam")
    for name in ("start", "stop", "status"):
        p = sub.add_parser(name)
        p.add_argument("--dir", required=True)
        if name == "start":
            p.add_argument("--port", type=int)
            p.add_argument("--topic", action="append", default=[], help="NAME[:PARTITIONS], may repeat")
    a = ap.parse_args(argv)
    if a.cmd in ("fetch", "fetch-kafka"):
        print(f"kafka lib: {fetch_kafka()} ({du(KAFKA_LIB) / 2**20:.0f} MiB)")
    if a.cmd in ("fetch", "fetch-beam"):
        for k, v in fetch_beam().items():
            print(f"{k}: {v}")
        print(f"beam cache: {du(CACHE / 'beam') / 2**20:.0f} MiB")
    if a.cmd == "start":
        d = Path(a.dir)
        if (d / "broker.json").exists() and KafkaBroker.attach(d)._alive():
            print(KafkaBroker.attach(d).bootstrap_servers)
            return 0
        b = KafkaBroker(d, port=a.port)
        b._own_dir = False
        b.start()
        b.proc = None  # leave it running after we exit
        for t in a.topic:
            name, _, parts = t.partition(":")
            b.create_topic(name, int(parts or 1))
        print(b.bootstrap_servers)
    elif a.cmd == "stop":
        d = Path(a.dir)
        if not (d / "broker.json").exists():
            print("not running")
            return 0
        KafkaBroker.attach(d).stop()
        print("stopped")
    elif a.cmd == "status":
        d = Path(a.dir)
        if (d / "broker.json").exists() and KafkaBroker.attach(d)._alive():
            print(f"running {KafkaBroker.attach(d).bootstrap_servers}")
        else:
            print("not running")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
