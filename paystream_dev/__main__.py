"""``python -m paystream_dev COMMAND``: the one entry point of the development tooling.

fetch | fetch-kafka | fetch-beam     Java artifacts into the cache (mvn, idempotent)
start | stop | status --dir D        a local KRaft broker
java-workers --port=P --jar=J ...    the Java worker pool (the image's java-worker sidecar)
flink start | stop | status | add-taskmanager | kill-taskmanager --dir D
                                       a real Flink cluster from PyPI (session or application)
monitor start | stop | status          Prometheus, Alertmanager and exporters for a local run
demo                                   a live run with its console in the browser (Ctrl-C stops it)
"""

from __future__ import annotations

import sys
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "java-workers":
        from paystream_dev.java_workers import main as java_workers

        return java_workers(args[1:])
    if args and args[0] == "demo":
        from paystream_dev.demo import main as demo

        return demo(args[1:])
    if args and args[0] == "flink":
        from paystream_dev.flink_cluster import main as flink

        return flink(args[1:])
    if args and args[0] == "monitor":
        from paystream_dev.monitor import main as monitor

        return monitor(args[1:])
    from paystream_dev.local_kafka import main as local_kafka

    return local_kafka(args)


if __name__ == "__main__":
    sys.exit(main())
