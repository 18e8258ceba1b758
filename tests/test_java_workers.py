"""The Java worker pool's gRPC side: each StartWorker gets a process of its own, configured the
way Beam's FnHarness reads its environment, and StopWorker ends it.

The "JVM" here is a small script that records what it was given and waits, so the test can
read it back; the real FnHarness runs in the Kafka tests (tests/test_kafka_e2e.py)."""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from typing import Any, Dict, Iterator

import grpc
import pytest
from apache_beam.portability.api import beam_fn_api_pb2, beam_fn_api_pb2_grpc, endpoints_pb2
from google.protobuf import text_format

from paystream_dev.harness.ports import free_port
from paystream_dev.java_workers import HARNESS_MAIN, JavaHarnessPool, serve

FAKE_JAVA = """#!{python}
import json, os, sys, time
keys = ("HARNESS_ID", "CONTROL_API_SERVICE_DESCRIPTOR", "LOGGING_API_SERVICE_DESCRIPTOR", "PIPELINE_OPTIONS")
record = {{"argv": sys.argv[1:], "pid": os.getpid(), **{{k: os.environ.get(k) for k in keys}}}}
with open(os.path.join({out!r}, os.environ["HARNESS_ID"] + ".json"), "w") as f:
    json.dump(record, f)
time.sleep(600)
"""


@pytest.fixture()
def pool(tmp_path: Any) -> Iterator[Dict[str, Any]]:
    java = tmp_path / "java"
    java.write_text(FAKE_JAVA.format(python=sys.executable, out=str(tmp_path)))
    java.chmod(java.stat().st_mode | stat.S_IXUSR)
    harnesses = JavaHarnessPool("/jars/harness.jar", java=str(java), heap="256m")
    port = free_port()
    server = serve(harnesses, port)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield {"pool": harnesses, "stub": beam_fn_api_pb2_grpc.BeamFnExternalWorkerPoolStub(channel)}
    finally:
        channel.close()
        server.stop(grace=None)
        harnesses.stop_all()


def _started(out: Any, worker_id: str, timeout_s: float = 30) -> Dict[str, Any]:
    path = out / f"{worker_id}.json"
    deadline = time.monotonic() + timeout_s
    while not path.exists() or not path.stat().st_size:
        assert time.monotonic() < deadline, f"worker {worker_id} never started"
        time.sleep(0.05)
    time.sleep(0.05)  # the record is written in one call; let it close
    return json.loads(path.read_text())


def _request(worker_id: str, control_port: int) -> Any:
    return beam_fn_api_pb2.StartWorkerRequest(
        worker_id=worker_id,
        control_endpoint=endpoints_pb2.ApiServiceDescriptor(url=f"localhost:{control_port}"),
        logging_endpoint=endpoints_pb2.ApiServiceDescriptor(url="localhost:4001"),
    )


def test_every_worker_gets_its_own_process_configured_like_fnharness(
    pool: Dict[str, Any], tmp_path: Any
) -> None:
    stub, harnesses = pool["stub"], pool["pool"]
    assert stub.StartWorker(_request("1-10", 4000)).error == ""
    first = _started(tmp_path, "1-10")
    assert first["argv"] == ["-Xmx256m", "-cp", "/jars/harness.jar", HARNESS_MAIN]
    control = text_format.Parse(first["CONTROL_API_SERVICE_DESCRIPTOR"], endpoints_pb2.ApiServiceDescriptor())
    logging_ = text_format.Parse(
        first["LOGGING_API_SERVICE_DESCRIPTOR"], endpoints_pb2.ApiServiceDescriptor()
    )
    assert (control.url, logging_.url) == ("localhost:4000", "localhost:4001")
    assert json.loads(first["PIPELINE_OPTIONS"]) == {"options": {}}

    # the first worker stops; the next one starts all the same, in a new process
    stub.StopWorker(beam_fn_api_pb2.StopWorkerRequest(worker_id="1-10"))
    deadline = time.monotonic() + 30
    while harnesses.running():
        assert time.monotonic() < deadline, "the stopped worker is still running"
        time.sleep(0.05)
    assert stub.StartWorker(_request("2-10", 4002)).error == ""
    second = _started(tmp_path, "2-10")
    assert second["HARNESS_ID"] == "2-10" and "localhost:4002" in second["CONTROL_API_SERVICE_DESCRIPTOR"]
    assert harnesses.running() == 1


def test_a_worker_that_cannot_start_is_reported_to_the_runner(tmp_path: Any) -> None:
    harnesses = JavaHarnessPool("/jars/harness.jar", java=str(tmp_path / "no-such-java"))
    port = free_port()
    server = serve(harnesses, port)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = beam_fn_api_pb2_grpc.BeamFnExternalWorkerPoolStub(channel)
            response = stub.StartWorker(_request("1-1", 4000))
        assert "no-such-java" in response.error
        assert harnesses.running() == 0
    finally:
        server.stop(grace=None)


def test_stop_all_ends_every_worker(pool: Dict[str, Any], tmp_path: Any) -> None:
    stub, harnesses = pool["stub"], pool["pool"]
    pids = []
    for worker_id in ("a", "b"):
        stub.StartWorker(_request(worker_id, 4000))
        pids.append(_started(tmp_path, worker_id)["pid"])
    assert harnesses.running() == 2
    harnesses.stop_all()
    for pid in pids:  # terminated and reaped: the pid is gone
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
