"""De-duplication across pipeline restarts, in Redis (``--redis_dedup``).

``DeduplicateTransactions`` keeps its state in the runner: a restart without a
checkpoint (the DirectRunner, a Flink job started without a savepoint) forgets
it, and so does any copy that arrives after ``--dedup_horizon_s``. This step
runs after it and remembers each ``transaction_id`` in Redis for
``--redis_dedup_ttl_s`` (default 24 h)::

    SET {prefix}txn:<transaction_id> <record> NX GET EX <ttl>

one command per payment, pipelined in one round trip per bundle (or per
``batch_size`` payments). ``<record>`` is the first copy's content fingerprint
and source coordinates (topic, partition, offset). When the key already
existed, ``GET`` returns it and the payment is:

* **new** (no key): kept;
* **a replay** (same coordinates: the same Kafka record or file line read
  again): kept;
* **a duplicate** (same content, other coordinates: the producer sent it again):
  dropped and counted in ``duplicates_dropped``;
* **a conflict** (same id, other content): sent to the dead letters as
  ``conflicting_duplicate``, as ``DeduplicateTransactions`` does.

Guarantees, and why replays are kept. After a restart the pipeline re-reads
``--kafka_replay_s`` of input before the committed offsets so that the
velocity windows and the feature history, which live in runner state, are
rebuilt. Dropping those replayed payments here would starve the rebuild: a
burst that straddles the restart would lose its first payments and go
unalerted. So a replayed record passes, and what it produces again has the
same keys (``transaction_id``, ``alert_id``, ``dead_letter_id``), which the
idempotent sinks ignore. What this step adds is that a payment *re-sent* with
new coordinates within the TTL never reaches enrichment, the velocity rule or
the warehouse a second time, across restarts and beyond the in-pipeline
horizon. A re-run over the same file is a replay (same lines), so it leaves
the warehouse as it was; the same payments arriving in another file are
duplicates.

The key is written before the payment is processed downstream: if the bundle
fails later and the runner retries it, the retry sees its own coordinates and
keeps the payment (a replay), so nothing is lost. Keys expire after the TTL,
so Redis memory is bounded by the payment rate times the TTL. ``SET ... NX
GET`` needs Redis 7.0 or later. Connection errors are retried with
exponential backoff for up to 60 s (``sink_errors{table="redis_dedup"}``),
then the bundle fails.
"""

from __future__ import annotations

import json
import time
from typing import Any, Iterable, List, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.transforms.window import BoundedWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from schemas.records import Transaction
from transforms import telemetry
from transforms.deadletter import DEAD_LETTER_TAG, make_dead_letter
from transforms.dedup import masked_summary
from transforms.redis_client import DEFAULT_RETRY_BUDGET_S, BatchedRedisFn, RedisTarget

__all__ = ["RedisDeduplicate", "Verdict", "dedup_value", "judge"]

TABLE = "redis_dedup"
DEFAULT_TTL_S = 24 * 3600


class Verdict:
    NEW = "new"
    REPLAY = "replay"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"


def dedup_value(txn: Transaction) -> str:
    """What the key holds: the first copy's fingerprint and coordinates (no PII)."""
    s = txn.source
    return json.dumps([txn.fingerprint, s.topic, s.partition, s.offset], separators=(",", ":"))


def judge(txn: Transaction, previous: Optional[bytes | str]) -> str:
    """The verdict for ``txn`` given what ``SET NX GET`` returned (``None``: the key was new)."""
    if previous is None:
        return Verdict.NEW
    if isinstance(previous, bytes):
        previous = previous.decode("utf-8", "replace")
    try:
        fingerprint, topic, partition, offset = json.loads(previous)
    except (ValueError, TypeError):
        # Not a value this step wrote (an older layout, or a stray key): same id, content unknown.
        return Verdict.DUPLICATE
    if fingerprint != txn.fingerprint:
        return Verdict.CONFLICT
    s = txn.source
    if (topic, partition, offset) == (s.topic, s.partition, s.offset):
        return Verdict.REPLAY
    return Verdict.DUPLICATE


class _RedisDedupFn(BatchedRedisFn):
    table = TABLE

    def __init__(
        self, target: RedisTarget, prefix: str, ttl_s: int, batch_size: int, retry_budget_s: float
    ) -> None:
        super().__init__(target, batch_size, retry_budget_s)
        self._prefix = prefix
        self._ttl_s = ttl_s

    def process(
        self,
        txn: Transaction,
        timestamp: Any = beam.DoFn.TimestampParam,
        window: Any = beam.DoFn.WindowParam,
    ) -> Iterable[Any]:
        yield from self._add((txn, timestamp, window))

    def finish_bundle(self) -> Iterable[Any]:
        yield from self._flush()

    def _describe(self, batch: Sequence[Tuple[Transaction, Timestamp, BoundedWindow]]) -> str:
        return f"batch of {len(batch)} (first {batch[0][0].transaction_id})"

    def _send(self, pipe: Any, batch: Sequence[Tuple[Transaction, Timestamp, BoundedWindow]]) -> None:
        for txn, _, _ in batch:
            key = f"{self._prefix}txn:{txn.transaction_id}"
            pipe.set(key, dedup_value(txn), nx=True, get=True, ex=self._ttl_s)

    def _sent(
        self,
        batch: Sequence[Tuple[Transaction, Timestamp, BoundedWindow]],
        previous: List[Any],
        started: float,
    ) -> Sequence[Any]:
        telemetry.observe("sink_write_seconds", time.monotonic() - started, table=TABLE)
        out: List[Any] = []
        for (txn, timestamp, window), prev in zip(batch, previous):
            verdict = judge(txn, prev)
            if verdict in (Verdict.NEW, Verdict.REPLAY):
                out.append(WindowedValue(txn, timestamp, (window,)))
            elif verdict == Verdict.DUPLICATE:
                telemetry.count("duplicates_dropped")
            else:
                telemetry.count("dead_letters", stage="dedup", reason="conflicting_duplicate")
                letter = make_dead_letter(
                    "dedup",
                    "conflicting_duplicate",
                    "transaction_id seen in an earlier run with different content",
                    txn.source,
                    masked_summary(txn),
                    txn.transaction_id,
                )
                out.append(
                    beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, WindowedValue(letter, timestamp, (window,)))
                )
        return out


class RedisDeduplicate(beam.PTransform):
    """``Transaction`` -> ``Transaction`` not seen in Redis (main ``unique``) and conflicts
    (``dead_letter``). Use after ``DeduplicateTransactions``."""

    def __init__(
        self,
        target: RedisTarget,
        key_prefix: str = "paystream:",
        ttl_s: float = DEFAULT_TTL_S,
        batch_size: int = 500,
        retry_budget_s: float = DEFAULT_RETRY_BUDGET_S,
        label: Optional[str] = None,
    ) -> None:
        super().__init__(label)
        if not isinstance(target, RedisTarget):
            raise ValueError("target must be a RedisTarget")
        if ttl_s < 1:
            raise ValueError("--redis_dedup_ttl_s must be >= 1")
        if batch_size <= 0:
            raise ValueError("batch_size must be > 0")
        self._fn = _RedisDedupFn(target, key_prefix, int(ttl_s), batch_size, retry_budget_s)

    def expand(self, pcoll: beam.PCollection[Transaction]) -> beam.pvalue.DoOutputsTuple:
        return pcoll | "SetIfAbsent" >> beam.ParDo(self._fn).with_outputs(DEAD_LETTER_TAG, main="unique")
