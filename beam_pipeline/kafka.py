"""Everything about reading Kafka lives here.

``ReadFromKafka`` is a Java cross-language transform. Without Docker its Java
side runs in a Beam Java worker pool that we start (an EXTERNAL environment),
with an expansion service built from Maven Central jars (the
``paystream.local_java`` provider, ``beam_pipeline.java_provider``;
``docs/kafka-without-docker.md``): the same
recipe works on the DirectRunner and on Flink. Pass
``--kafka_expansion_service=HOST:PORT`` to use a running expansion service
instead (a cluster's).

The consumer reads ``read_committed`` (an aborted transactional write never
shows up), commits offsets when a bundle is finalised
(``commit_offset_in_finalize``, with auto-commit off), uses the records'
create time as event-time watermark (the simulator sets it to the payment's
event time), and keeps the record metadata so topic, partition and offset
reach the dead letters.

Streaming on Flink reads through Flink's own Kafka source instead of the
splittable DoFn (``runner_native``): KafkaIO is expanded by the Flink
runner's own Beam Java version with ``use_deprecated_read``, so the read is
a ``Read(UnboundedSource)`` the runner translates itself. Offsets are then
part of Flink's checkpoints and committed when one completes, and the
watermark advances with the data. With the splittable read of a newer
expansion service, local Flink 1.19 (Beam 2.62) restarted the job after
every checkpoint with offset commits on, and held the watermark at its
minimum (``docs/kafka-without-docker.md``).

A streaming Flink job run with ``--checkpoint_dir`` restores its last
checkpoint when started again (``beam_pipeline.runner_setup.flink_streaming_args``).
Restarts without a runner checkpoint (the DirectRunner, or a new Flink job
without one) lose the velocity and dedup state. ``plan_read`` then
rewinds the group's committed position by ``--kafka_replay_s`` of event time
(default: one velocity window plus the allowed lateness), so a burst that
straddles the restart is seen whole; the replayed payments are written again
with the same keys, which the idempotent sinks ignore, and an alert raised
again has the same ``alert_id``.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Tuple

import apache_beam as beam
import numpy as np

from beam_pipeline.java_provider import local_java_provider
from beam_pipeline.options import PaystreamOptions
from kernels.parse import RawPayload
from schemas.records import SourceRef

__all__ = [
    "KafkaPayloads",
    "KafkaRun",
    "NothingToRead",
    "ReadPlan",
    "commit_stop_offsets",
    "consumer_config",
    "expansion_service",
    "kafka_replay_s",
    "plan_read",
]

_LOG = logging.getLogger(__name__)


def consumer_config(bootstrap_servers: str, group_id: str) -> Dict[str, str]:
    return {
        "bootstrap.servers": bootstrap_servers,
        "group.id": group_id,
        "isolation.level": "read_committed",
        "enable.auto.commit": "false",
        "auto.offset.reset": "earliest",
    }


@dataclass(frozen=True)
class ReadPlan:
    """Where a run starts, and how many records lie between there and the end of the topic."""

    start_read_time_ms: Optional[int]  # None: the group's committed offsets (or the earliest)
    records_to_end: int
    resumed: bool  # the group had committed offsets
    # Where a bounded run stops, per partition, when that is known (a drain to the end, or
    # one partition): committed by ``commit_stop_offsets`` once the run has finished.
    stop_offsets: Optional[Dict[int, int]] = None


def _timestamp_at(consumer: Any, topic: str, partition: int, offset: int) -> Optional[int]:
    from confluent_kafka import TopicPartition

    consumer.assign([TopicPartition(topic, partition, offset)])
    msg = consumer.poll(15)
    if msg is None or msg.error() is not None:
        return None
    return int(msg.timestamp()[1])


def plan_read(
    bootstrap_servers: str,
    topic: str,
    group_id: str,
    replay_s: float,
    max_num_records: Optional[int] = None,
) -> ReadPlan:
    """Look at the group's committed offsets and the topic's end, with the Kafka client."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": group_id,
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        try:
            meta = consumer.list_topics(topic, timeout=15).topics.get(topic)
        except KafkaException as err:
            raise ValueError(
                f"could not read topic {topic!r} from Kafka at --kafka_bootstrap_servers="
                f"{bootstrap_servers} ({err.args[0].str()}): is the broker running and reachable?"
            ) from None
        if meta is None or meta.error is not None:
            raise ValueError(f"Kafka topic {topic!r} not found at {bootstrap_servers}")
        parts = [TopicPartition(topic, p) for p in sorted(meta.partitions)]
        committed = {tp.partition: tp.offset for tp in _committed(consumer, parts)}
        bounds = {tp.partition: consumer.get_watermark_offsets(tp, timeout=15) for tp in parts}
        resumed = any(off >= 0 for off in committed.values())
        start = {p: (committed[p] if committed[p] >= 0 else low) for p, (low, _) in bounds.items()}
        start_ms: Optional[int] = None
        if resumed and replay_s > 0:
            # The event time of the first record not yet consumed, per partition.
            times = [
                t
                for p, (_, high) in bounds.items()
                if start[p] < high and (t := _timestamp_at(consumer, topic, p, start[p])) is not None
            ]
            if times:
                start_ms = min(times) - int(replay_s * 1000)
                found = consumer.offsets_for_times(
                    [TopicPartition(topic, tp.partition, start_ms) for tp in parts], timeout=15
                )
                start = {
                    tp.partition: (tp.offset if tp.offset >= 0 else bounds[tp.partition][1]) for tp in found
                }
        total = sum(high - start[p] for p, (_, high) in bounds.items())
        stops: Optional[Dict[int, int]] = None
        if max_num_records is None:
            stops = {p: high for p, (_, high) in bounds.items()}
        elif len(parts) == 1:
            p = parts[0].partition
            stops = {p: min(start[p] + max_num_records, bounds[p][1])}
        return ReadPlan(start_ms, total, resumed, stops)
    finally:
        consumer.close()


def commit_stop_offsets(bootstrap_servers: str, topic: str, group_id: str, plan: ReadPlan) -> None:
    """After a bounded run has finished, commit where it stopped (never moving a group back).

    KafkaIO commits on bundle finalisation, asynchronously: the last commit of a bounded run
    can be lost when the pipeline ends first (seen in CI: a drained group later resumed 600
    records early). The run's sinks have written everything by now, so this commit is safe.
    """
    if not plan.stop_offsets:
        return
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": bootstrap_servers, "group.id": group_id, "enable.auto.commit": False}
    )
    try:
        parts = [TopicPartition(topic, p) for p in sorted(plan.stop_offsets)]
        current = {tp.partition: tp.offset for tp in _committed(consumer, parts)}
        ahead = [
            TopicPartition(topic, p, off) for p, off in plan.stop_offsets.items() if off > current.get(p, -1)
        ]
        if ahead:
            consumer.commit(offsets=ahead, asynchronous=False)
    finally:
        consumer.close()


def _committed(consumer: Any, parts: List[Any], deadline_s: float = 60.0) -> List[Any]:
    """The group's committed offsets; retried while the group coordinator comes up.

    (A fresh broker creates its offsets topic on first use and answers
    NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS meanwhile.)
    """
    import time

    from confluent_kafka import KafkaError, KafkaException

    waiting = {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
    }
    give_up = time.monotonic() + deadline_s
    while True:
        try:
            return list(consumer.committed(parts, timeout=15))
        except KafkaException as err:
            error = err.args[0]
            if not (error.retriable() or error.code() in waiting) or time.monotonic() > give_up:
                raise
            time.sleep(0.5)  # a retry delay, not a readiness guess: the error says "not yet"


def expansion_service(
    stack: contextlib.ExitStack,
    address: Optional[str] = None,
    java_worker: Optional[str] = None,
    runner_native: bool = False,
) -> Any:
    """The expansion service for ``ReadFromKafka``: a given address, or a local one.

    A local one comes from the ``paystream.local_java`` provider
    (``beam_pipeline.java_provider``) and runs KafkaIO's Java side in a Beam Java worker
    pool: the one at ``java_worker`` (HOST:PORT: on Kubernetes, the TaskManager's Java
    worker-pool sidecar, baked into an application jar), or else one started here that
    lives as long as ``stack``. ``runner_native``: the Flink runner's own Beam Java
    version expands the read with ``use_deprecated_read`` (see the module docstring).
    """
    if address:
        return address
    return local_java_provider().kafka_expansion_service(stack, java_worker, runner_native)


def kafka_replay_s(opts: PaystreamOptions) -> float:
    """How far before its committed offsets a run without a restored checkpoint starts."""
    if opts.kafka_replay_s is not None:
        return max(0.0, opts.kafka_replay_s)
    return float(opts.velocity_window_s + opts.allowed_lateness_s)


class NothingToRead(Exception):
    """A bounded Kafka run found no records to read."""


class KafkaRun:
    """A run's Kafka read, as steps around the run: ``prepare`` before it (where the group
    stands, how much to read, the expansion service), ``read`` in the graph, ``commit``
    after it (where a bounded run stopped)."""

    def __init__(
        self, opts: PaystreamOptions, plan: Optional[ReadPlan], service: Any, native: bool, replay_s: float
    ) -> None:
        self.opts = opts
        self.plan = plan
        self.service = service
        self.native = native
        self.replay_s = replay_s

    @classmethod
    def prepare(
        cls,
        opts: PaystreamOptions,
        stack: contextlib.ExitStack,
        *,
        resumed: bool,
        flink_streaming: bool,
        local_expansion: bool,
    ) -> KafkaRun:
        """``resumed``: the run restores a Flink checkpoint (its offsets and state: no
        replay). ``flink_streaming``: the read is Flink's own (``runner_native``), unless an
        expansion service is given. ``local_expansion``: the runner cannot expand KafkaIO
        itself (every runner but Dataflow, whose workers run Beam's own Java container)."""
        if not opts.kafka_bootstrap_servers:
            raise ValueError("--source=kafka needs --kafka_bootstrap_servers=HOST:PORT")
        replay_s = 0.0 if resumed else kafka_replay_s(opts)
        plan: Optional[ReadPlan] = None
        if opts.kafka_until_end or opts.kafka_max_num_records or replay_s > 0:
            # Asks the broker where the group stands: not for an unbounded run without
            # replay (e.g. building a Flink application jar, where no broker is at hand).
            plan = plan_read(
                opts.kafka_bootstrap_servers,
                opts.kafka_topic,
                opts.kafka_consumer_group,
                replay_s,
                None if opts.kafka_until_end else opts.kafka_max_num_records,
            )
        if plan is not None and plan.start_read_time_ms is not None:
            _LOG.warning(
                "group %s resumes %.0f s of event time before its committed offsets (--kafka_replay_s)",
                opts.kafka_consumer_group,
                replay_s,
            )
        if opts.kafka_until_end and plan is not None and plan.records_to_end == 0:
            raise NothingToRead(f"group {opts.kafka_consumer_group} is at the end of {opts.kafka_topic}")
        native = flink_streaming and not opts.kafka_expansion_service
        service = None
        if local_expansion:
            service = expansion_service(
                stack, opts.kafka_expansion_service, opts.kafka_java_worker_address, runner_native=native
            )
        return cls(opts, plan, service, native, replay_s)

    @property
    def total(self) -> Optional[int]:
        """How many records the run reads, when it is bounded."""
        if self.opts.kafka_until_end and self.plan is not None:
            return self.plan.records_to_end
        return self.opts.kafka_max_num_records

    def read(self) -> KafkaPayloads:
        opts, plan = self.opts, self.plan
        return KafkaPayloads(
            opts.kafka_bootstrap_servers,
            opts.kafka_topic,
            opts.kafka_consumer_group,
            expansion_service=self.service,
            max_num_records=self.total,
            start_read_time_ms=plan.start_read_time_ms if plan is not None else None,
            runner_native=self.native,
        )

    def commit(self) -> None:
        """After the run: a bounded run commits where it stopped (``commit_stop_offsets``)."""
        opts = self.opts
        if self.plan is not None and (opts.kafka_until_end or opts.kafka_max_num_records):
            commit_stop_offsets(
                opts.kafka_bootstrap_servers, opts.kafka_topic, opts.kafka_consumer_group, self.plan
            )


# ``ReadFromKafka``'s external configuration as the Flink runner's Beam Java (2.62) knows it:
# Beam Python 2.77 also sends ``dynamic_read_poll_interval_seconds`` and the
# ``consumer_factory_fn_*`` fields, which 2.62 refuses ("missing a setter"). Declared in the
# functional form: the payload's schema is inferred from these types at run time, and this
# module's postponed annotations would hand it strings.
_RunnerNativeReadConfig = NamedTuple(  # noqa: UP014
    "_RunnerNativeReadConfig",
    [
        ("consumer_config", Mapping[str, str]),
        ("topics", List[str]),
        ("key_deserializer", str),
        ("value_deserializer", str),
        ("start_read_time", Optional[int]),
        ("max_num_records", Optional[int]),
        ("max_read_time", Optional[int]),
        ("commit_offset_in_finalize", bool),
        ("timestamp_policy", str),
        ("consumer_polling_timeout", Optional[int]),
        ("redistribute", Optional[bool]),
        ("redistribute_num_keys", Optional[np.int32]),
        ("allow_duplicates", Optional[bool]),
    ],
)


def _to_payload(record: Any) -> RawPayload:
    key = record.key.decode("utf-8", errors="replace") if record.key else None
    timestamp = getattr(record, "timestamp", None)
    return (
        bytes(record.value or b""),
        SourceRef(
            topic=record.topic,
            partition=int(record.partition),
            offset=int(record.offset),
            key=key,
            timestamp_ms=int(timestamp) if timestamp is not None and int(timestamp) > 0 else None,
        ),
    )


class KafkaPayloads(beam.PTransform):
    """Kafka records -> raw payloads with their coordinates."""

    def __init__(
        self,
        bootstrap_servers: Optional[str],
        topic: str,
        group_id: str,
        expansion_service: Any,
        max_num_records: Optional[int] = None,
        start_read_time_ms: Optional[int] = None,
        runner_native: bool = False,
        label: Optional[str] = None,
    ) -> None:
        super().__init__(label)
        if not bootstrap_servers:
            raise ValueError("--source=kafka needs --kafka_bootstrap_servers=HOST:PORT")
        if not topic:
            raise ValueError("--source=kafka needs --kafka_topic")
        if max_num_records is not None and max_num_records <= 0:
            raise ValueError("max_num_records must be > 0")
        self._bootstrap_servers = bootstrap_servers
        self._topic = topic
        self._group_id = group_id
        self._expansion_service = expansion_service
        self._max_num_records = max_num_records
        self._start_read_time_ms = start_read_time_ms
        self._runner_native = runner_native

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection[RawPayload]:
        from apache_beam.io.kafka import ReadFromKafka

        if self._runner_native:
            from apache_beam.transforms.external import ExternalTransform, NamedTupleBasedPayloadBuilder

            config = _RunnerNativeReadConfig(
                consumer_config=consumer_config(self._bootstrap_servers, self._group_id),
                topics=[self._topic],
                key_deserializer=ReadFromKafka.byte_array_deserializer,
                value_deserializer=ReadFromKafka.byte_array_deserializer,
                start_read_time=self._start_read_time_ms,
                max_num_records=self._max_num_records,
                max_read_time=None,
                commit_offset_in_finalize=True,
                timestamp_policy=ReadFromKafka.create_time_policy,
                consumer_polling_timeout=2,
                redistribute=False,
                redistribute_num_keys=np.int32(0),
                allow_duplicates=False,
            )
            read = ExternalTransform(
                ReadFromKafka.URN_WITH_METADATA,
                NamedTupleBasedPayloadBuilder(config),
                self._expansion_service,
            )
            return pbegin | "ReadFromKafka" >> read | "WithCoordinates" >> beam.Map(_to_payload)

        kwargs: Dict[str, Any] = {}
        if self._expansion_service is not None:
            kwargs["expansion_service"] = self._expansion_service
        if self._max_num_records is not None:
            kwargs["max_num_records"] = self._max_num_records
        if self._start_read_time_ms is not None:
            kwargs["start_read_time"] = self._start_read_time_ms
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


class GroupLag:
    """A consumer group's committed offsets against the partitions' ends, read when asked:
    ``read()`` gives {(topic, partition): (committed, end)} for every partition the group
    has committed, found among the broker's topics.

    It asks with a consumer of the group that never joins it (offset fetches and watermark
    queries, each answered before the call returns), so it moves nothing of the group.
    Not AdminClient: its futures, once abandoned by a timeout, crashed librdkafka's thread
    here. One caller at a time (a lock), as a consumer is not shared between threads.
    """

    def __init__(self, bootstrap_servers: str, group: str, timeout_s: float = 5.0) -> None:
        import threading

        from confluent_kafka import Consumer

        self.group = group
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._consumer = Consumer(
            {"bootstrap.servers": bootstrap_servers, "group.id": group, "enable.auto.commit": False}
        )

    def read(self) -> Dict[Tuple[str, int], Tuple[int, int]]:
        from confluent_kafka import TopicPartition

        with self._lock:
            consumer, timeout = self._consumer, self.timeout_s
            topics = consumer.list_topics(timeout=timeout).topics
            parts = [
                TopicPartition(name, p)
                for name, meta in sorted(topics.items())
                if not name.startswith("__")
                for p in sorted(meta.partitions)
            ]
            out: Dict[Tuple[str, int], Tuple[int, int]] = {}
            if not parts:
                return out
            for tp in consumer.committed(parts, timeout=timeout):
                if tp.offset >= 0:
                    _low, high = consumer.get_watermark_offsets(
                        TopicPartition(tp.topic, tp.partition), timeout=timeout
                    )
                    out[(tp.topic, tp.partition)] = (tp.offset, high)
            return out

    def close(self) -> None:
        with self._lock:
            self._consumer.close()
