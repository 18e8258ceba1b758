"""``python -m beam_pipeline.worker --service_port 50000 --metrics_port 9102``

The Python SDK worker pool for portable runners (the sidecar beside each
Flink TaskManager, EXTERNAL environment), with the pipeline's Prometheus
metrics served from the same process. Unlike Beam's own
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
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m beam_pipeline.worker", description=__doc__)
    parser.add_argument("--service_port", type=int, default=50000, help="worker pool gRPC port")
    parser.add_argument("--metrics_port", type=int, default=9102, help="Prometheus /metrics port")
    parser.add_argument(
        "--data_buffer_time_limit_ms",
        type=int,
        default=0,
        help="send each step's output to the runner at least this often, ms (Beam's "
        "data_buffer_time_limit_ms; default 0: at 1 MB or at the bundle's end)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    from apache_beam.runners.worker.worker_pool_main import BeamFnExternalWorkerPoolServicer

    from transforms import telemetry

    port = telemetry.serve(args.metrics_port)
    from beam_pipeline.runner_setup import element_safe_time_flush

    limit = args.data_buffer_time_limit_ms
    if limit > 0:
        element_safe_time_flush()
    address, server = BeamFnExternalWorkerPoolServicer.start(
        use_process=False, port=args.service_port, data_buffer_time_limit_ms=limit
    )
    print(f"paystream worker pool at {address}; metrics on :{port}/metrics", flush=True)
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
