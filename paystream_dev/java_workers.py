"""A Beam Java SDK worker pool that starts every worker in a JVM of its own.

Runners reach Java transforms (KafkaIO) through an EXTERNAL environment: they
ask a worker pool at ``host:port`` to start an SDK harness (``StartWorker``)
and the harness connects back to the runner's control and logging endpoints.

Beam's own pool, ``org.apache.beam.fn.harness.ExternalWorkerService``, runs
every harness as a thread of one JVM, and all of them share one scheduled
executor taken from the pool's pipeline options. The first harness to shut
down (Flink restarting a failed task, a job cancelled and restarted, an idle
environment released) shuts that executor down, and from then on every new
harness fails at start with ``RejectedExecutionException``: the runner waits
for it forever and the Kafka read hangs. Seen on local Flink when a restored
job restarted a task (Beam 2.62).

This pool keeps the same gRPC service but starts ``FnHarness`` in a new JVM
per worker, configured through the environment variables Beam's Java
container uses (``HARNESS_ID``, ``CONTROL_API_SERVICE_DESCRIPTOR``,
``LOGGING_API_SERVICE_DESCRIPTOR``, ``PIPELINE_OPTIONS``), and stops it on
``StopWorker``. A worker that dies takes nothing with it.

    python -m paystream_dev java-workers --port=50001 --jar=beam-kafka-expansion-service-embedded.jar

``paystream_dev.local_kafka.JavaWorkerPool`` starts it for local runs; the
Kubernetes task managers run it as the ``java-worker`` sidecar.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import traceback
from concurrent import futures
from typing import Any, Dict, List, Optional

__all__ = ["JavaHarnessPool", "serve", "stop_process", "main"]

_LOG = logging.getLogger(__name__)
HARNESS_MAIN = "org.apache.beam.fn.harness.FnHarness"


def _descriptor(endpoint: Any) -> str:
    """An ``ApiServiceDescriptor`` as the text format ``FnHarness`` parses."""
    from google.protobuf import text_format

    return text_format.MessageToString(endpoint, as_one_line=True)


class JavaHarnessPool:
    """``BeamFnExternalWorkerPool``: one ``java ... FnHarness`` process per started worker."""

    def __init__(self, jar: str, java: str = "java", heap: str = "1g") -> None:
        self.jar = jar
        self.java = java
        self.heap = heap
        self._workers: Dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()

    def command(self) -> List[str]:
        return [self.java, f"-Xmx{self.heap}", "-cp", self.jar, HARNESS_MAIN]

    def StartWorker(self, request: Any, context: Any) -> Any:  # noqa: N802 (gRPC method name)
        from apache_beam.portability.api import beam_fn_api_pb2

        env = dict(
            os.environ,
            HARNESS_ID=request.worker_id,
            CONTROL_API_SERVICE_DESCRIPTOR=_descriptor(request.control_endpoint),
            LOGGING_API_SERVICE_DESCRIPTOR=_descriptor(request.logging_endpoint),
            PIPELINE_OPTIONS=json.dumps({"options": {}}),
        )
        try:
            proc = subprocess.Popen(self.command(), env=env, stdin=subprocess.DEVNULL)
        except OSError:
            return beam_fn_api_pb2.StartWorkerResponse(error=traceback.format_exc())
        with self._lock:
            self._reap()
            self._workers[request.worker_id] = proc
        _LOG.info("started Java worker %s (pid %d)", request.worker_id, proc.pid)
        return beam_fn_api_pb2.StartWorkerResponse()

    def StopWorker(self, request: Any, context: Any) -> Any:  # noqa: N802 (gRPC method name)
        from apache_beam.portability.api import beam_fn_api_pb2

        with self._lock:
            proc = self._workers.pop(request.worker_id, None)
        if proc is not None:
            _LOG.info("stopping Java worker %s", request.worker_id)
            threading.Thread(target=stop_process, args=(proc,), daemon=True).start()
        return beam_fn_api_pb2.StopWorkerResponse()

    def _reap(self) -> None:
        for worker_id, proc in list(self._workers.items()):
            if proc.poll() is not None:
                del self._workers[worker_id]

    def running(self) -> int:
        with self._lock:
            self._reap()
            return len(self._workers)

    def stop_all(self) -> None:
        with self._lock:
            procs, self._workers = list(self._workers.values()), {}
        for proc in procs:
            stop_process(proc)


def stop_process(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM, and SIGKILL if ``proc`` has not ended after ``grace_s``."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=grace_s)


def serve(pool: JavaHarnessPool, port: int, host: str = "127.0.0.1") -> Any:
    """Start the gRPC server for ``pool`` on ``host:port``; returns the started server."""
    import grpc
    from apache_beam.portability.api import beam_fn_api_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(pool, server)  # type: ignore[arg-type]
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise OSError(f"cannot bind the Java worker pool to {host}:{port}")
    server.start()
    return server


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m paystream_dev java-workers", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 in a pod's sidecar)")
    parser.add_argument("--jar", required=True, help="a Beam Java jar with the harness and the transforms")
    parser.add_argument("--java", default=shutil.which("java") or "java")
    parser.add_argument("--heap", default="1g", help="-Xmx of each worker JVM")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    pool = JavaHarnessPool(args.jar, java=args.java, heap=args.heap)
    server = serve(pool, args.port, args.host)
    _LOG.info("Java worker pool at %s:%d (%s)", args.host, args.port, args.jar)
    stopped = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopped.set())
    stopped.wait()
    server.stop(grace=None)
    pool.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
