"""A real BigQuery emulator for the tests: PyPI ``bqemulator`` on 127.0.0.1, on a free port.

``BigQueryEmulator`` starts and stops one emulator process, from the virtualenv that
``scripts/bqemulator.sh`` makes (``make deps`` runs it; the fixture runs it too when the
virtualenv is missing). It is ready when ``GET /readyz`` answers 200 (DuckDB and the catalog
respond). ``bq_emulator`` is the session-scoped fixture; ``bq_dataset`` gives each test its own
uuid-named dataset and deletes it afterwards. Import both into a test module. If the emulator
cannot be installed or started, the tests fail and say why, with the end of its log.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from typing import Iterator, Optional

import pytest

from paystream_dev.harness.ports import free_port
from transforms.sinks.bigquery import EmulatorClient

__all__ = ["BigQueryEmulator", "PROJECT", "bq_dataset", "bq_emulator"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, ".cache", "bqemulator-venv")
HOME = os.path.join(ROOT, ".cache", "bqemulator-home")
PROJECT = "paystream-test"
_START_BUDGET_S = 120.0


class BigQueryEmulator:
    """One ``bqemulator`` process, in-memory (``--ephemeral``), REST on 127.0.0.1:``port``."""

    def __init__(self, workdir: str, project: str = PROJECT) -> None:
        self.workdir = workdir
        self.project = project
        self.port = 0
        self.proc: Optional[subprocess.Popen] = None
        self.logfile = os.path.join(workdir, "bqemulator.log")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> EmulatorClient:
        return EmulatorClient(self.endpoint, self.project)

    def _log_tail(self) -> str:
        try:
            with open(self.logfile, encoding="utf-8", errors="replace") as handle:
                return handle.read()[-3000:]
        except OSError as err:
            return f"(no log: {err})"

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint}/readyz", timeout=2) as resp:
                body = json.loads(resp.read().decode())
                return resp.status == 200 and body.get("status") == "ok"
        except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
            return False

    def start(self) -> None:
        binary = os.path.join(VENV, "bin", "bqemulator")
        if not os.access(binary, os.X_OK):
            install = subprocess.run(
                ["bash", os.path.join(ROOT, "scripts", "bqemulator.sh")],
                capture_output=True,
                text=True,
                timeout=900,
            )
            if install.returncode != 0:
                pytest.fail(
                    f"scripts/bqemulator.sh failed:\n{install.stdout[-2000:]}\n{install.stderr[-3000:]}"
                )
        self.port = free_port()
        env = dict(os.environ, HOME=HOME)
        with open(self.logfile, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    "start",
                    "--rest-host",
                    "127.0.0.1",
                    "--rest-port",
                    str(self.port),
                    "--grpc-host",
                    "127.0.0.1",
                    "--grpc-port",
                    "0",
                    "--ephemeral",
                    "--project",
                    self.project,
                    "--log-level",
                    "warning",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.workdir,
            )
        deadline = time.monotonic() + _START_BUDGET_S
        while not self._ready():
            if self.proc.poll() is not None:
                pytest.fail(f"bqemulator exited with {self.proc.returncode}:\n{self._log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"bqemulator not ready after {_START_BUDGET_S:.0f} s:\n{self._log_tail()}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=20)
        self.proc = None


@pytest.fixture(scope="session")
def bq_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BigQueryEmulator]:
    emulator = BigQueryEmulator(str(tmp_path_factory.mktemp("bqemulator")))
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def bq_dataset(bq_emulator: BigQueryEmulator) -> Iterator[str]:
    """A new dataset in the emulator for one test, deleted with its tables afterwards."""
    name = f"paystream_{uuid.uuid4().hex[:12]}"
    client = bq_emulator.client()
    client.cloud().create_dataset(name)
    try:
        yield name
    finally:
        client.cloud().delete_dataset(name, delete_contents=True, not_found_ok=True)
        client.close()
