"""A real Flink cluster on this machine: the distribution from PyPI, the production configuration.

    python -m paystream_dev flink fetch                     # FLINK_HOME into .cache/flink (pip, idempotent)
    python -m paystream_dev flink app-jar --options F --out D  # the application jar + usrlib (the image's)
    python -m paystream_dev flink start --dir D [--taskmanagers N]
    python -m paystream_dev flink add-taskmanager --dir D
    python -m paystream_dev flink kill-taskmanager --dir D [--id tm-2] [--graceful]
    python -m paystream_dev flink status --dir D
    python -m paystream_dev flink stop --dir D

``start`` runs a session cluster: a JobManager and N TaskManagers on 127.0.0.1, on free ports,
and prints the address to pass as ``--flink_master`` (the Web UI is at the same address).
``start --application JAR_DIR`` runs the application cluster that Kubernetes runs: the
pipeline's application jar and the Beam jars in ``usrlib/`` (``paystream_dev.flink_app``),
Flink's reactive scheduler, the job started by the JobManager itself.

**The distribution.** Flink 1.19.3, the version the runner's Flink 1.19 speaks, comes from
PyPI: the ``apache-flink`` wheel carries ``bin/`` and ``conf/``, the ``apache-flink-libraries``
sdist ``lib/`` (flink-dist, with RocksDB), ``opt/`` and ``plugins/``. ``fetch_flink``
downloads both with pip and lays them out as a FLINK_HOME once.

**The configuration is production's.** Each cluster's ``config.yaml`` starts from the
``flinkConfiguration`` of ``k8s-flink/base/flinkdeployment.yaml`` (``deployment_conf``) and
changes only what a single machine must (``LOCAL_CHANGES``): addresses and ports on
127.0.0.1, checkpoints and savepoints in the cluster's directory instead of a bucket, no
Kubernetes high availability, memory sized for a laptop. A session cluster has no reactive
scheduler (Flink refuses it outside application mode).

Each cluster lives in its own directory: a FLINK_HOME of its own (``bin/`` copied,
``lib/`` linked to the cached distribution, its own ``conf/``, ``log/`` and ``usrlib/``),
the TaskManagers' scratch directories, the checkpoints, and ``cluster.json`` with the
processes' pids, so another command can find them.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Optional

from beam_pipeline.flink_rest import FlinkRest
from paystream_dev.harness.ports import free_port
from paystream_dev.harness.wait import wait_for
from paystream_dev.local_kafka import CACHE, REPO

__all__ = [
    "APPLICATION_ENTRY_CLASS",
    "FLINK_DIST_VERSION",
    "FLINK_HOME",
    "FlinkCluster",
    "cluster_conf",
    "deployment_conf",
    "fetch_flink",
    "main",
]

FLINK_DIST_VERSION = "1.19.3"
FLINK_CACHE = CACHE / "flink"
FLINK_HOME = FLINK_CACHE / f"flink-{FLINK_DIST_VERSION}"
DEPLOYMENT = REPO / "k8s-flink" / "base" / "flinkdeployment.yaml"
APPLICATION_ENTRY_CLASS = "org.apache.beam.runners.flink.FlinkPipelineRunner"


# --------------------------------------------------------------------------- the distribution


def _layout(wheel: Path, sdist: Path, home: Path) -> None:
    """``home`` as a FLINK_HOME from the apache-flink wheel and the apache-flink-libraries sdist."""
    part = home.with_name(home.name + ".part")
    if part.exists():
        shutil.rmtree(part)
    for sub in ("bin", "conf", "lib", "opt", "plugins"):
        (part / sub).mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as whl:
        for info in whl.infolist():
            for prefix, sub in (("pyflink/bin/", "bin"), ("pyflink/conf/", "conf")):
                if info.filename.startswith(prefix) and not info.is_dir():
                    dest = part / sub / info.filename[len(prefix) :]
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with whl.open(info) as src, open(dest, "wb") as out:
                        shutil.copyfileobj(src, out)
                    if sub == "bin":  # the zip does not keep the scripts' mode
                        dest.chmod(dest.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            # <top>/deps/{lib,opt,plugins,bin}/...; bin/ has bash-java-utils.jar, which
            # config.sh needs to read config.yaml
            if len(parts) < 4 or parts[1] != "deps" or parts[2] not in ("lib", "opt", "plugins", "bin"):
                continue
            if not member.isfile():
                continue
            dest = part.joinpath(parts[2], *parts[3:])
            dest.parent.mkdir(parents=True, exist_ok=True)
            packed = tar.extractfile(member)
            assert packed is not None
            with packed, open(dest, "wb") as out:
                shutil.copyfileobj(packed, out)
    if home.exists():
        shutil.rmtree(home)
    part.rename(home)


def fetch_flink() -> Path:
    """FLINK_HOME of Flink ``FLINK_DIST_VERSION``, from PyPI with pip, laid out once."""
    marker = FLINK_HOME / ".complete"
    if marker.exists() and marker.read_text() == FLINK_DIST_VERSION:
        return FLINK_HOME
    download = FLINK_CACHE / "download"
    download.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--disable-pip-version-check",
        "--no-deps",
        "--dest",
        str(download),
        f"apache-flink=={FLINK_DIST_VERSION}",
        f"apache-flink-libraries=={FLINK_DIST_VERSION}",
    ]
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)
    wheel = Path(glob.glob(str(download / f"apache_flink-{FLINK_DIST_VERSION}-*.whl"))[0])
    sdist = download / f"apache-flink-libraries-{FLINK_DIST_VERSION}.tar.gz"
    _layout(wheel, sdist, FLINK_HOME)
    marker.write_text(FLINK_DIST_VERSION)
    shutil.rmtree(download)  # 230 MB that the layout no longer needs
    return FLINK_HOME


# --------------------------------------------------------------------------- the configuration


def deployment_conf(path: Path = DEPLOYMENT) -> Dict[str, str]:
    """The ``flinkConfiguration`` the Kubernetes operator gives the production cluster."""
    import yaml

    with open(path, encoding="utf-8") as handle:
        doc = yaml.safe_load(handle)
    return {str(k): str(v) for k, v in doc["spec"]["flinkConfiguration"].items()}


# What a cluster on one machine changes of production's configuration, and why; every other
# key is production's (tests/test_flink_cluster.py holds the two to this).
LOCAL_CHANGES = {
    "high-availability.type": "dropped: Kubernetes HA needs Kubernetes",
    "high-availability.storageDir": "dropped: with high availability",
    "state.checkpoints.dir": "the cluster's directory, not a bucket",
    "state.savepoints.dir": "the cluster's directory, not a bucket",
    "metrics.reporter.prom.factory.class": "dropped: Flink's Prometheus reporter binds every interface",
    "metrics.reporter.prom.port": "dropped: with the reporter",
    "scheduler-mode": "application clusters only: Flink refuses reactive mode in a session cluster",
}


def cluster_conf(workdir: Path, rest_port: int, rpc_port: int, application: bool) -> Dict[str, str]:
    """A local cluster's configuration: production's, with ``LOCAL_CHANGES``."""
    conf = deployment_conf()
    for key in (
        "high-availability.type",
        "high-availability.storageDir",
        "metrics.reporter.prom.factory.class",
        "metrics.reporter.prom.port",
    ):
        conf.pop(key, None)
    if not application:
        conf.pop("scheduler-mode", None)
    conf.update(
        {
            "state.checkpoints.dir": f"file://{workdir / 'checkpoints'}",
            "state.savepoints.dir": f"file://{workdir / 'savepoints'}",
            # one machine: everything on 127.0.0.1, on free ports
            "jobmanager.rpc.address": "127.0.0.1",
            "jobmanager.rpc.port": str(rpc_port),
            "jobmanager.bind-host": "127.0.0.1",
            "taskmanager.bind-host": "127.0.0.1",
            "taskmanager.host": "127.0.0.1",
            "rest.address": "127.0.0.1",
            "rest.bind-address": "127.0.0.1",
            "rest.port": str(rest_port),
            "blob.server.port": "0",
            # the pods' sizes (spec.jobManager/taskManager.resource) on a laptop
            "jobmanager.memory.process.size": "1g",
            "taskmanager.memory.process.size": "1536m",
            # pid files and logs of this cluster only (Flink's default pid dir is /tmp, shared)
            "env.pid.dir": str(workdir / "run"),
            "env.log.dir": str(workdir / "home" / "log"),
        }
    )
    return conf


def _java_opts(home: Path) -> str:
    """The JVM flags Flink's own config.yaml ships (``--add-opens`` for Java 17)."""
    import yaml

    with open(home / "conf" / "config.yaml", encoding="utf-8") as handle:
        shipped = yaml.safe_load(handle)
    return str(shipped["env"]["java"]["opts"]["all"])


# --------------------------------------------------------------------------- the cluster


class FlinkCluster:
    """A JobManager and TaskManagers on 127.0.0.1, in ``workdir``.

    ``application``: a directory holding the pipeline's application jar and the jars it
    needs (``paystream_dev.flink_app.build``): they go in ``usrlib/`` and the JobManager
    starts the job itself, in reactive mode. Without it, a session cluster.
    """

    def __init__(self, workdir: str | os.PathLike, application: Optional[str | os.PathLike] = None) -> None:
        self.dir = Path(workdir).resolve()
        self.application = Path(application).resolve() if application else None
        self.home = self.dir / "home"
        self.rest_port = 0
        self.jobmanager: Optional[int] = None
        self.taskmanagers: Dict[str, int] = {}
        self._next_tm = 1

    # -- state shared between commands
    @property
    def state_file(self) -> Path:
        return self.dir / "cluster.json"

    def _save(self) -> None:
        self.state_file.write_text(
            json.dumps(
                {
                    "rest_port": self.rest_port,
                    "application": str(self.application) if self.application else None,
                    "jobmanager": self.jobmanager,
                    "taskmanagers": self.taskmanagers,
                    "next_tm": self._next_tm,
                },
                indent=1,
            )
        )

    @classmethod
    def attach(cls, workdir: str | os.PathLike) -> FlinkCluster:
        """The cluster started in ``workdir`` (by this process or another)."""
        cluster = cls(workdir)
        state = json.loads(cluster.state_file.read_text())
        cluster.rest_port = int(state["rest_port"])
        cluster.application = Path(state["application"]) if state["application"] else None
        cluster.jobmanager = state["jobmanager"]
        cluster.taskmanagers = {k: int(v) for k, v in state["taskmanagers"].items()}
        cluster._next_tm = int(state["next_tm"])
        return cluster

    @property
    def address(self) -> str:
        """``--flink_master``; the Web UI is at http:// this address."""
        return f"127.0.0.1:{self.rest_port}"

    @property
    def web_ui(self) -> str:
        return f"http://{self.address}/"

    # -- the home and the configuration
    def _prepare(self) -> None:
        dist = fetch_flink()
        if self.home.exists():
            shutil.rmtree(self.home)
        # bin/ is copied: config.sh takes FLINK_HOME from where its scripts really are
        shutil.copytree(dist / "bin", self.home / "bin")
        # lib/ holds links: Flink finds usrlib/ beside lib/ (application mode)
        (self.home / "lib").mkdir(parents=True)
        for jar in sorted((dist / "lib").iterdir()):
            (self.home / "lib" / jar.name).symlink_to(jar)
        for sub in ("opt", "plugins"):
            (self.home / sub).symlink_to(dist / sub)
        for sub in ("conf", "log", "usrlib"):
            (self.home / sub).mkdir()
        for name in ("log4j-console.properties", "log4j.properties", "logback-console.xml", "logback.xml"):
            shutil.copy(dist / "conf" / name, self.home / "conf" / name)
        if self.application is not None:
            for jar in sorted(self.application.glob("*.jar")):
                (self.home / "usrlib" / jar.name).symlink_to(jar)
        for sub in ("run", "checkpoints", "savepoints", "tmp"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self.rest_port = free_port()
        conf = cluster_conf(self.dir, self.rest_port, free_port(), self.application is not None)
        conf["env.java.opts.all"] = _java_opts(dist)
        import yaml

        with open(self.home / "conf" / "config.yaml", "w", encoding="utf-8") as handle:
            yaml.safe_dump(conf, handle, sort_keys=True, width=10_000)

    def _env(self) -> Dict[str, str]:
        env = dict(os.environ)
        env.pop("FLINK_CONF_DIR", None)
        env.pop("FLINK_HOME", None)
        env["FLINK_LIB_DIR"] = str(self.home / "lib")
        return env

    def _spawn(self, name: str, cmd: List[str]) -> int:
        out = open(self.home / "log" / f"{name}.out", "ab")
        proc = subprocess.Popen(
            cmd, cwd=self.dir, env=self._env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        out.close()
        return proc.pid  # the JVM: the scripts exec it

    # -- REST
    def rest(self, path: str, method: str = "GET", timeout_s: float = 5.0) -> Any:
        """A call of the cluster's REST API (the client a run uses, ``beam_pipeline.flink_rest``)."""
        return FlinkRest(self.address).call(path, method, timeout_s)

    def _answers(self) -> bool:
        try:
            self.rest("/overview", timeout_s=2)
            return True
        except (OSError, urllib.error.URLError):
            return False

    def registered(self) -> List[str]:
        return [tm["id"] for tm in self.rest("/taskmanagers")["taskmanagers"]]

    # -- lifecycle
    def start(self, taskmanagers: int = 1, timeout_s: float = 120.0) -> FlinkCluster:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._prepare()
        if self.application is None:
            cmd = [str(self.home / "bin" / "jobmanager.sh"), "start-foreground"]
        else:
            cmd = [
                str(self.home / "bin" / "standalone-job.sh"),
                "start-foreground",
                "--job-classname",
                APPLICATION_ENTRY_CLASS,
            ]
        self.jobmanager = self._spawn("jobmanager", cmd)
        self._save()
        try:
            wait_for(
                "the JobManager's REST API",
                lambda: not self._alive(self.jobmanager) or self._answers(),
                timeout_s,
            )
            if not self._alive(self.jobmanager):
                raise RuntimeError(f"the JobManager exited; see {self.home / 'log'}")
            for _ in range(taskmanagers):
                self.add_taskmanager(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def add_taskmanager(self, timeout_s: float = 120.0) -> str:
        """Start one more TaskManager and wait until the JobManager has it; returns its id."""
        tm_id = f"tm-{self._next_tm}"
        self._next_tm += 1
        tmp = self.dir / "tmp" / tm_id
        tmp.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(self.home / "bin" / "taskmanager.sh"),
            "start-foreground",
            "-D",
            f"taskmanager.resource-id={tm_id}",
            "-D",
            f"io.tmp.dirs={tmp}",
        ]
        self.taskmanagers[tm_id] = self._spawn(tm_id, cmd)
        self._save()
        wait_for(f"TaskManager {tm_id} to register", lambda: tm_id in self.registered(), timeout_s)
        return tm_id

    def kill_taskmanager(self, tm_id: Optional[str] = None, graceful: bool = False) -> str:
        """``kill -9`` of a TaskManager (``graceful``: SIGTERM, as Kubernetes scales down):
        ``tm_id``, or the newest. Returns its id."""
        if not self.taskmanagers:
            raise RuntimeError("no TaskManager is running")
        tm_id = tm_id or list(self.taskmanagers)[-1]
        pid = self.taskmanagers.pop(tm_id)
        self._end(pid, signal.SIGTERM if graceful else signal.SIGKILL)
        self._save()
        return tm_id

    def stop(self) -> None:
        """Every process of the cluster, TaskManagers first."""
        for tm_id in list(self.taskmanagers):
            self._end(self.taskmanagers.pop(tm_id), signal.SIGTERM)
        if self.jobmanager is not None:
            self._end(self.jobmanager, signal.SIGTERM)
            self.jobmanager = None
        if self.state_file.exists():
            self.state_file.unlink()

    @staticmethod
    def _alive(pid: Optional[int]) -> bool:
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        with contextlib.suppress(ChildProcessError):
            done, _ = os.waitpid(pid, os.WNOHANG)
            return done == 0
        return True

    def _end(self, pid: int, sig: int, grace_s: float = 30.0) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)  # its own session: the JVM and anything it started
        try:
            wait_for(f"process {pid} to end", lambda: not self._alive(pid), grace_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            wait_for(f"process {pid} to end", lambda: not self._alive(pid), 30)

    def jobmanager_running(self) -> bool:
        return self._alive(self.jobmanager)

    def __enter__(self) -> FlinkCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- jobs
    def jobs(self) -> List[Dict[str, Any]]:
        return FlinkRest(self.address).jobs()

    def running_job(self) -> Optional[Dict[str, Any]]:
        running = [j for j in self.jobs() if j["state"] == "RUNNING"]
        return running[0] if running else None

    def job(self, job_id: str) -> Dict[str, Any]:
        return dict(self.rest(f"/jobs/{job_id}"))

    def job_running(self, job_id: str, parallelism: Optional[int] = None) -> bool:
        """Every task of the job running (at ``parallelism``, when given)."""
        detail = self.job(job_id)
        if detail["state"] != "RUNNING":
            return False
        for vertex in detail["vertices"]:
            if vertex["status"] != "RUNNING":
                return False
            if parallelism is not None and vertex["parallelism"] != parallelism:
                return False
        return True

    def taskmanager_of(self, job_id: str) -> List[str]:
        """The TaskManagers running the job's tasks."""
        found: List[str] = []
        for vertex in self.job(job_id)["vertices"]:
            for tm in self.rest(f"/jobs/{job_id}/vertices/{vertex['id']}/taskmanagers")["taskmanagers"]:
                if tm["taskmanager-id"] not in found:
                    found.append(tm["taskmanager-id"])
        return found

    def cancel(self, job_id: str) -> None:
        self.rest(f"/jobs/{job_id}?mode=cancel", method="PATCH")

    def status(self) -> str:
        overview = self.rest("/overview")
        lines = [
            f"Flink {overview['flink-version']} {'application' if self.application else 'session'} cluster "
            f"at {self.web_ui}",
            f"  TaskManagers {overview['taskmanagers']} ({', '.join(self.registered())}), "
            f"slots {overview['slots-available']} free of {overview['slots-total']}",
        ]
        for job in self.jobs():
            lines.append(f"  job {job['jid']} {job['state']}: {job['name']}")
        return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m paystream_dev flink",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("fetch", help="Flink's distribution into .cache/flink")
    app = sub.add_parser("app-jar", help="the application jar and the jars it needs (the image's usrlib/)")
    app.add_argument(
        "--options", required=True, help="an options file (k8s-flink/image/pipeline-options.txt)"
    )
    app.add_argument("--out", required=True, help="the directory (the image: /opt/flink/usrlib)")
    app.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="--KEY=VALUE",
        help="an option in place of the file's (--no-KEY drops it); may repeat",
    )
    for name in ("start", "stop", "status", "add-taskmanager", "kill-taskmanager"):
        cmd = sub.add_parser(name)
        cmd.add_argument("--dir", required=True, help="the cluster's directory")
        if name == "start":
            cmd.add_argument("--taskmanagers", type=int, default=2)
            cmd.add_argument(
                "--application",
                metavar="JAR_DIR",
                help="an application cluster running this directory's application jar (reactive mode)",
            )
        if name == "kill-taskmanager":
            cmd.add_argument("--id", help="which (default: the newest)")
            cmd.add_argument("--graceful", action="store_true", help="SIGTERM instead of kill -9")
    args = parser.parse_args(argv)
    if args.cmd == "fetch":
        print(f"FLINK_HOME: {fetch_flink()}")
        return 0
    if args.cmd == "app-jar":
        from paystream_dev.flink_app import build, read_options, with_changes

        options = with_changes(read_options(Path(args.options)), args.set)
        print(f"application jar: {build(Path(args.out), options)}")
        return 0
    workdir = Path(args.dir)
    running = (workdir / "cluster.json").exists()
    if args.cmd == "start":
        if running and FlinkCluster._alive(FlinkCluster.attach(workdir).jobmanager):
            print(FlinkCluster.attach(workdir).status())
            return 0
        cluster = FlinkCluster(workdir, args.application).start(args.taskmanagers)
        print(cluster.status())
        print(f"flink master: --flink_master={cluster.address}")
        return 0
    if not running:
        print("not running")
        return 1 if args.cmd == "status" else 0
    cluster = FlinkCluster.attach(workdir)
    if args.cmd == "stop":
        cluster.stop()
        print("stopped")
    elif args.cmd == "status":
        print(cluster.status())
    elif args.cmd == "add-taskmanager":
        print(f"started {cluster.add_taskmanager()}")
    elif args.cmd == "kill-taskmanager":
        print(
            f"{'stopped' if args.graceful else 'killed'} {cluster.kill_taskmanager(args.id, args.graceful)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
