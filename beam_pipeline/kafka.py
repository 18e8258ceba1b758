"""Everything about reading Kafka lives here.

``ReadFromKafka`` is a Java cross-language transform. The consumer reads
``read_committed`` (so an aborted transactional write never shows up),
commits offsets when a bundle is finalised (``commit_offset_in_finalize``,
with auto-commit off), and keeps the record metadata so topic, partition and
offset reach the dead letters.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import apache_beam as beam

from schemas.records import SourceRef
from transforms.parse import RawPayload

__all__ = ["KafkaPayloads", "consumer_config"]


def consumer_config(bootstrap_servers: str, group_id: str) -> Dict[str, str]:
    return {
        "bootstrap.servers": bootstrap_servers,
        "group.id": group_id,
        "isolation.level": "read_committed",
        "enable.auto.commit": "false",
        "auto.offset.reset": "earliest",
    }


def _to_payload(record: Any) -> RawPayload:
    key = record.key.decode("utf-8", errors="replace") if record.key else None
    return (
        bytes(record.value or b""),
        SourceRef(topic=record.topic, partition=int(record.partition), offset=int(record.offset), key=key),
    )


class KafkaPayloads(beam.PTransform):
    """Kafka records -> raw payloads with their coordinates."""

    def __init__(
        self,
        bootstrap_servers: Optional[str],
        topic: str,
        group_id: str,
        max_num_records: Optional[int] = None,
        expansion_service: Optional[str] = None,
        label: Optional[str] = None,
    ) -> None:
        super().__init__(label)
        if not bootstrap_servers:
            raise ValueError("--source=kafka needs --kafka_bootstrap_servers=HOST:PORT")
        if not topic:
            raise ValueError("--source=kafka needs --kafka_topic")
        self._bootstrap_servers = bootstrap_servers
        self._topic = topic
        self._group_id = group_id
        self._max_num_records = max_num_records
        self._expansion_service = expansion_service

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection[RawPayload]:
        from apache_beam.io.kafka import ReadFromKafka

        kwargs: Dict[str, Any] = {}
        if self._max_num_records is not None:
            kwargs["max_num_records"] = self._max_num_records
        if self._expansion_service is not None:
            kwargs["expansion_service"] = self._expansion_service
        return (
            pbegin
            | "ReadFromKafka"
            >> ReadFromKafka(
                consumer_config=consumer_config(self._bootstrap_servers, self._group_id),
                topics=[self._topic],
                with_metadata=True,
                commit_offset_in_finalize=True,
                timestamp_policy=ReadFromKafka.create_time_policy,
                **kwargs,
            )
            | "WithCoordinates" >> beam.Map(_to_payload)
        )
