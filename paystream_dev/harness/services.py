"""The local services tests and benches run against: a ``redis-server``, a Kafka broker,
and the Python worker pool of a run on a Flink cluster (``WorkerPool``).

``RedisServer`` starts one ``redis-server`` on 127.0.0.1, ready when it answers PING; it
can crash it and start it again on the same port. ``KafkaBroker`` is the single-node
KRaft broker of ``paystream_dev.local_kafka`` (the same class, named here so that the
harness is one place to import from).

``redis-server`` comes from the Debian package of the same name (``make system-deps``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from typing import TYPE_CHECKING, Any, List, Optional

from paystream_dev.harness.ports import free_port
from paystream_dev.harness.wait import wait_for
from paystream_dev.local_kafka import KafkaBroker

if TYPE_CHECKING:
    import redis

__all__ = ["KafkaBroker", "RedisServer", "WorkerPool"]


class RedisServer:
    """One ``redis-server`` on 127.0.0.1, its files (and its log, ``redis.log``) in
    ``workdir``: a temporary directory of its own, removed at ``stop()``, when none is given.

    No persistence, unless ``persist``: then every write is in the append-only file before
    it is acknowledged (``appendfsync always``), so a server killed and started again
    (``kill()``, ``start()``: same port, same data) has lost nothing it acknowledged.
    ``requirepass`` sets a password. ``with RedisServer() as server:`` starts it and stops
    it at the end; ``server.url`` is its address.
    """

    def __init__(
        self,
        workdir: Optional[str] = None,
        persist: bool = False,
        requirepass: Optional[str] = None,
        port: int = 0,
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
        self.binary = binary
        self._own_dir = workdir is None
        self.workdir = tempfile.mkdtemp(prefix="redis-local-") if workdir is None else workdir
        self.persist = persist
        self.requirepass = requirepass
        self.port = port
        self.proc: Optional[subprocess.Popen] = None
        self.logfile = os.path.join(self.workdir, "redis.log")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, **kwargs: Any) -> redis.Redis:
        """A redis-py client of this server (``kwargs`` go to ``redis.Redis``)."""
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, password=self.requirepass, **kwargs)

    def _args(self) -> List[str]:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.workdir]
        args += ["--logfile", self.logfile, "--daemonize", "no", "--save", ""]
        if self.persist:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        if self.requirepass:
            args += ["--requirepass", self.requirepass]
        return args

    def start(self, timeout_s: float = 15.0) -> RedisServer:
        """Start on ``self.port`` and wait until it answers PING. The first start without a
        port takes a free one, and another if that one was taken meanwhile; a start again
        after ``kill()`` keeps the port."""
        for _ in range(5):
            chosen = not self.port
            if chosen:
                self.port = free_port()
            self.proc = subprocess.Popen(self._args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if self._wait_ready(timeout_s):
                return self
            self._end()
            if not chosen:
                break
            self.port = 0
        raise RuntimeError(f"redis-server did not become ready on port {self.port}; see {self.logfile}")

    def _wait_ready(self, timeout_s: float) -> bool:
        import redis

        deadline = time.monotonic() + timeout_s
        probe = self.client(socket_timeout=1, socket_connect_timeout=1)
        try:
            while time.monotonic() < deadline:
                if self.proc is None or self.proc.poll() is not None:
                    return False
                try:
                    if probe.ping():
                        return True
                except redis.exceptions.ConnectionError:
                    pass  # not listening yet, or loading its append-only file (BusyLoadingError)
                time.sleep(0.02)
            return False
        finally:
            probe.close()

    def kill(self) -> None:
        """Crash it (SIGKILL): no shutdown save, connections reset; clients see refused
        connections until ``start()``."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def _end(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        """SIGTERM (SIGKILL 30 s later); its own temporary directory goes too."""
        self._end()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class WorkerPool:
    """The Python worker pool (``python -m beam_pipeline.worker``, the TaskManagers'
    sidecar) on 127.0.0.1: ``address`` is the run's ``--environment_config``; its
    ``/metrics`` (the DoFns run here) on ``metrics_port``. ``kill()`` is ``kill -9``;
    ``start()`` again uses the same ports."""

    def __init__(self, log_path: str, service_port: int = 0, metrics_port: int = 0) -> None:
        self.log_path = log_path
        self.service_port = service_port or free_port()
        self.metrics_port = metrics_port or free_port()
        self.proc: Optional[subprocess.Popen] = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.service_port}"

    def start(self, timeout_s: float = 60.0) -> WorkerPool:
        import sys

        with open(self.log_path, "a", encoding="utf-8") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "beam_pipeline.worker",
                    f"--service_port={self.service_port}",
                    f"--metrics_port={self.metrics_port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        proc = self.proc
        wait_for(
            f"the worker pool to listen (see {self.log_path})",
            lambda: "paystream worker pool at" in self._log() or proc.poll() is not None,
            timeout_s,
            every_s=0.2,
        )
        if proc.poll() is not None:
            raise RuntimeError(f"the worker pool exited (rc={proc.returncode}); see {self.log_path}")
        return self

    def _log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM (it closes its server), SIGKILL after 30 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> WorkerPool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
