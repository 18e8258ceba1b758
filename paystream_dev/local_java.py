"""The local Java pieces a run on this machine needs, for ``beam_pipeline.java_provider``.

Registered as the ``paystream.local_java`` entry point (``setup.py``): the pipeline asks
for it only when it runs here and was given no job server jar or expansion service, so
the product never imports this package.
"""

from __future__ import annotations

import contextlib
from typing import Any, Optional

from paystream_dev import local_kafka


class LocalJava:
    """Jars from the project's cache (fetched with Maven on first use), and the services
    started from them."""

    def flink_job_server_jar(self) -> str:
        local_kafka.fetch_beam()
        return str(local_kafka.FLINK_JOB_SERVER_JAR)

    def kafka_expansion_service(
        self, stack: contextlib.ExitStack, java_worker: Optional[str], runner_native: bool
    ) -> Any:
        """An expansion service for ``ReadFromKafka`` (see ``beam_pipeline.kafka``).

        ``runner_native``: the Flink runner's own Beam Java version expands the read with
        ``use_deprecated_read``. Without a ``java_worker`` its Java steps then run inside
        the runner's JVM (EMBEDDED): no Java worker and no gRPC hop per record (measured on
        the floor of bench/streaming.py, 50,000 payments: 5,255/s through an EXTERNAL
        worker, 11,563/s embedded). Otherwise KafkaIO runs in a Java worker pool: the one
        at ``java_worker``, or one started here that lives as long as ``stack``.
        """
        if runner_native:
            environment = "EXTERNAL" if java_worker else "EMBEDDED"
            return local_kafka.expansion_service(
                environment,
                java_worker,
                jar=local_kafka.FLINK_EXPANSION_JAR,
                experiments=["use_deprecated_read"],
            )
        if not java_worker:
            java_worker = stack.enter_context(local_kafka.JavaWorkerPool()).address
        return local_kafka.expansion_service("EXTERNAL", java_worker)


def provider() -> LocalJava:
    return LocalJava()
