"""A real ``redis-server`` for the tests: free port on 127.0.0.1, ready when it answers PING.

``RedisServer`` starts and stops one server process (and can crash and restart it on the
same port, for the restart test). ``redis_server`` is the session-scoped fixture: no
persistence (``--save '' --appendonly no``), stopped at the end of the session;
``redis_prefix`` gives each test its own key prefix and deletes its keys afterwards.
Import both into a test module. ``redis-server`` comes from the Debian package of the
same name; without it the tests fail and say so.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from typing import Iterator, List, Optional

import pytest
import redis

__all__ = ["RedisServer", "free_port", "redis_prefix", "redis_server"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One ``redis-server`` on 127.0.0.1; ``persist`` turns on an fsync-always AOF in ``workdir``."""

    def __init__(
        self, workdir: str, persist: bool = False, requirepass: Optional[str] = None, port: int = 0
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (apt-get install -y redis-server)")
        self.binary = binary
        self.workdir = workdir
        self.persist = persist
        self.requirepass = requirepass
        self.port = port
        self.proc: Optional[subprocess.Popen] = None
        self.logfile = os.path.join(workdir, "redis.log")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.requirepass, **kwargs)  # type: ignore[arg-type]

    def _args(self) -> List[str]:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            self.workdir,
            "--logfile",
            self.logfile,
            "--daemonize",
            "no",
            "--save",
            "",
        ]
        if self.persist:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        if self.requirepass:
            args += ["--requirepass", self.requirepass]
        return args

    def start(self, timeout_s: float = 15.0) -> RedisServer:
        """Start on ``self.port`` (a free one the first time) and wait for PING."""
        for _ in range(5):
            if not self.port:
                self.port = free_port()
            self.proc = subprocess.Popen(self._args(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if self._wait_ready(timeout_s):
                return self
            self.stop()
            self.port = 0  # the port was taken meanwhile: try another one
        raise RuntimeError(f"redis-server did not become ready; see {self.logfile}")

    def _wait_ready(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        probe = self.client(socket_timeout=1, socket_connect_timeout=1)
        try:
            while time.monotonic() < deadline:
                if self.proc is None or self.proc.poll() is not None:
                    return False
                try:
                    if probe.ping():
                        return True
                except redis.exceptions.BusyLoadingError:
                    pass  # loading its AOF: not ready yet
                except redis.exceptions.ConnectionError:
                    pass
                time.sleep(0.02)
            return False
        finally:
            probe.close()

    def kill(self) -> None:
        """Crash it (SIGKILL): no shutdown save, connections reset."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(str(tmp_path_factory.mktemp("redis"))) as server:
        yield server


@pytest.fixture
def redis_prefix(redis_server: RedisServer) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis_server.client()
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
