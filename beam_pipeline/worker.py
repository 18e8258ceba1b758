"""``python -m beam_pipeline.worker --service_port 50000 --metrics_port 9102``

The Python SDK worker pool for portable runners (the sidecar beside each
Flink TaskManager, EXTERNAL environment), with the pipeline's Prometheus
metrics served from the same process. Both listen on 127.0.0.1 unless told otherwise
(``--host``, ``--metrics_host``): in a pod the TaskManager reaches the pool on localhost,
and only the metrics need the pod's address, for Prometheus. Unlike Beam's own
``worker_pool_main`` (one subprocess per SDK harness), the harnesses run as
threads of this process, so every DoFn's ``transforms.telemetry`` update
lands in the one registry that Prometheus scrapes on ``--metrics_port``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any, List, Optional, Tuple


def start_pool(host: str, port: int, data_buffer_time_limit_ms: int) -> Tuple[str, Any]:
    """Beam's worker pool (``BeamFnExternalWorkerPoolServicer.start``, which listens on
    every interface), with its harnesses as threads of this process, on ``host``."""
    import grpc
    from apache_beam.portability.api import beam_fn_api_pb2_grpc
    from apache_beam.runners.worker.worker_pool_main import BeamFnExternalWorkerPoolServicer
    from apache_beam.utils import thread_pool_executor

    server = grpc.server(
        thread_pool_executor.shared_unbounded_instance(),
        options=[("grpc.http2.max_pings_without_data", 0), ("grpc.http2.max_ping_strikes", 0)],
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    if not bound:
        raise OSError(f"the worker pool cannot listen on {host}:{port}")
    pool = BeamFnExternalWorkerPoolServicer(
        use_process=False, data_buffer_time_limit_ms=data_buffer_time_limit_ms
    )
    beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(pool, server)
    server.start()
    return f"{host}:{bound}", server


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m beam_pipeline.worker", description=__doc__)
    parser.add_argument("--service_port", type=int, default=50000, help="worker pool gRPC port")
    parser.add_argument("--host", default="127.0.0.1", help="address the worker pool listens on")
    parser.add_argument("--metrics_port", type=int, default=9102, help="Prometheus /metrics port")
    parser.add_argument("--metrics_host", default="127.0.0.1", help="address /metrics listens on")
    parser.add_argument(
        "--data_buffer_time_limit_ms",
        type=int,
        default=0,
        help="send each step's output to the runner at least this often, ms (Beam's "
        "data_buffer_time_limit_ms; default 0: at 1 MB or at the bundle's end)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    from transforms import telemetry

    port = telemetry.serve(args.metrics_port, args.metrics_host)
    from beam_pipeline.runner_setup import element_safe_time_flush

    limit = args.data_buffer_time_limit_ms
    if limit > 0:
        element_safe_time_flush()
    address, server = start_pool(args.host, args.service_port, limit)
    print(f"paystream worker pool at {address}; metrics on {args.metrics_host}:{port}/metrics", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    server.stop(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
