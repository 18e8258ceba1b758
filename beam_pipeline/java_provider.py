"""The Java pieces of a run on this machine, found without importing the tooling.

A run on this machine may need a Flink job server jar (local Flink) or an expansion
service for ``ReadFromKafka`` and be given neither: they come from a provider registered
under the ``paystream.local_java`` entry point. The project's development package
registers one (``paystream_dev/local_java.py``: Maven Central jars in the project's
cache, a Java worker pool); a cluster run names its own (``--flink_master``,
``--kafka_expansion_service``, ``--kafka_java_worker_address``) and never asks.
"""

from __future__ import annotations

import contextlib
from importlib.metadata import entry_points
from typing import Any, Optional, Protocol

__all__ = ["ENTRY_POINT_GROUP", "LocalJava", "NoLocalJava", "local_java_provider"]

ENTRY_POINT_GROUP = "paystream.local_java"


class LocalJava(Protocol):
    def flink_job_server_jar(self) -> str:
        """The path of a Beam Flink job server jar, fetched if need be."""
        ...

    def kafka_expansion_service(
        self, stack: contextlib.ExitStack, java_worker: Optional[str], runner_native: bool
    ) -> Any:
        """An expansion service for ``ReadFromKafka``; what it starts lives as long as ``stack``."""
        ...


class NoLocalJava(LookupError):
    """No ``paystream.local_java`` provider is installed."""


def local_java_provider() -> LocalJava:
    found = list(entry_points(group=ENTRY_POINT_GROUP))
    if not found:
        raise NoLocalJava(
            f"no {ENTRY_POINT_GROUP!r} entry point is installed: install the project "
            "(pip install -e .) to run Kafka or Flink on this machine, or name a cluster's "
            "(--flink_master, --flink_job_server_jar, --kafka_expansion_service)"
        )
    return found[0].load()()  # type: ignore[no-any-return]
