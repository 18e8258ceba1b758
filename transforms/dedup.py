"""Exactly one output per ``transaction_id`` within an event-time horizon.

State per transaction id is one short fingerprint, cleared by an event-time
timer once the watermark passes the first copy's event time plus the
horizon, so memory stays bounded however long the stream runs (the reason
Beam's own ``Deduplicate`` takes a duration). A second copy with the same
content is dropped and counted; a second copy with *different* content is a
conflict and goes to the dead letters, because silently keeping either one
would hide a producer bug.
"""

from __future__ import annotations

import json
import operator
from typing import Any, Dict, Iterable, List, Optional, Tuple

import apache_beam as beam
from apache_beam.coders import StrUtf8Coder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Duration

from schemas.records import DeadLetter, Transaction
from transforms import telemetry
from transforms.batching import DEFAULT_SHARDS, GroupIntoShards
from transforms.deadletter import DEAD_LETTER_TAG, make_dead_letter
from transforms.masking import mask_email, mask_pan, mask_phone

__all__ = ["DeduplicateTransactions", "conflict_dead_letter", "dedup_shard", "first_copies", "masked_summary"]


def masked_summary(txn: Transaction) -> str:
    """A PII-masked JSON summary of a payment, for dead letters of the dedup steps."""
    return json.dumps(
        {
            "transaction_id": txn.transaction_id,
            "account_id": txn.account_id,
            "amount_minor": txn.amount_minor,
            "currency": txn.currency,
            "card_number": mask_pan(txn.card_number),
            "email": mask_email(txn.email),
            "phone": mask_phone(txn.phone),
            "merchant_id": txn.merchant_id,
            "event_time_us": txn.event_time_us,
        },
        sort_keys=True,
    )


def conflict_dead_letter(txn: Transaction) -> DeadLetter:
    """The dead letter of a copy whose id was seen before with different content."""
    return make_dead_letter(
        "dedup",
        "conflicting_duplicate",
        "transaction_id seen before with different content",
        txn.source,
        masked_summary(txn),
        txn.transaction_id,
    )


def _conflict(txn: Transaction) -> beam.pvalue.TaggedOutput:
    return beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, conflict_dead_letter(txn))


# Where a copy was read (Kafka partition and offset, or file and line): SourceRef compares
# by topic, partition and offset, then key, which is the same for the same coordinates.
_source_order = operator.attrgetter("source")


def first_copies(
    records: List[Transaction], horizon_us: Optional[int] = None
) -> Tuple[List[Transaction], int, List[Transaction]]:
    """(first copies, exact duplicates dropped, conflicting copies), in source order.

    The first copy of an id is the earliest in its source (Kafka partition and
    offset, or file and line): in a batch run that is the order a streaming run
    would have read them in. With ``horizon_us``, a copy whose event time is
    ``horizon_us`` or more after the first copy's is a new first copy, as on the
    streaming path, whose state of the id expires when the watermark reaches the
    first copy's time plus the horizon (``_DedupFn``); without it, ids are never
    forgotten.
    """
    seen: Dict[str, Tuple[str, int]] = {}
    kept: List[Transaction] = []
    conflicts: List[Transaction] = []
    duplicates = 0
    for txn in sorted(records, key=_source_order):
        first = seen.get(txn.transaction_id)
        if first is None or (horizon_us is not None and txn.event_time_us - first[1] >= horizon_us):
            seen[txn.transaction_id] = (txn.fingerprint, txn.event_time_us)
            kept.append(txn)
        elif first[0] == txn.fingerprint:
            duplicates += 1
        else:
            conflicts.append(txn)
    return kept, duplicates, conflicts


def dedup_shard(
    records: List[Transaction], horizon_us: Optional[int] = None
) -> Tuple[List[Transaction], List[DeadLetter]]:
    """The first copies of a complete group of ids, and the dead letters of the conflicting
    copies, counted: what the stateful path gives on a stream in event-time order, its
    state of an id expiring ``horizon_us`` after the id's first copy (``first_copies``)."""
    kept, duplicates, conflicts = first_copies(records, horizon_us)
    telemetry.count("payments_unique", len(kept))
    telemetry.count("duplicates_dropped", duplicates)
    if conflicts:
        telemetry.count("dead_letters", len(conflicts), stage="dedup", reason="conflicting_duplicate")
    return kept, [conflict_dead_letter(t) for t in conflicts]


def _dedup_shard(shard: Tuple[int, List[Transaction]], horizon_us: Optional[int] = None) -> Iterable[object]:
    kept, dead = dedup_shard(shard[1], horizon_us)
    yield from kept  # not re-stamped: see "Timestamps" in transforms/batching.py
    for letter in dead:
        yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, letter)


class _DedupFn(beam.DoFn):
    SEEN = ReadModifyWriteStateSpec("dedup_seen", StrUtf8Coder())
    EXPIRY = TimerSpec("dedup_expiry", TimeDomain.WATERMARK)

    def __init__(self, horizon_s: float) -> None:
        self._horizon = Duration(micros=int(horizon_s * 1_000_000))

    def process(
        self,
        element: Tuple[str, Transaction],
        timestamp: Any = beam.DoFn.TimestampParam,
        seen: Any = beam.DoFn.StateParam(SEEN),
        expiry: Any = beam.DoFn.TimerParam(EXPIRY),
    ) -> Iterable[object]:
        _, txn = element
        first: Optional[str] = seen.read()
        if first is None:
            seen.write(txn.fingerprint)
            expiry.set(timestamp + self._horizon)
            telemetry.count("payments_unique")
            yield txn
        elif first == txn.fingerprint:
            telemetry.count("duplicates_dropped")
        else:
            telemetry.count("dead_letters", stage="dedup", reason="conflicting_duplicate")
            yield _conflict(txn)

    @on_timer(EXPIRY)
    def expire(self, seen: Any = beam.DoFn.StateParam(SEEN)) -> None:
        seen.clear()


class DeduplicateTransactions(beam.PTransform):
    """``Transaction`` -> unique ``Transaction`` (main) and conflicts (``dead_letter``).

    ``batch``: the input is bounded and complete (see ``transforms/batching.py``):
    ids are grouped in ``shards`` lists and de-duplicated with ``first_copies``
    under the same ``horizon_s``: a copy ``horizon_s`` or more of event time after
    the first is a new payment, as on the streaming path, whose state has expired then.
    """

    def __init__(
        self,
        horizon_s: float = 600.0,
        batch: bool = False,
        shards: int = DEFAULT_SHARDS,
        label: Optional[str] = None,
    ) -> None:
        super().__init__(label)
        if horizon_s <= 0:
            raise ValueError("horizon_s must be > 0")
        self._horizon_s = horizon_s
        self._batch = batch
        self._shards = shards

    def expand(self, pcoll: beam.PCollection[Transaction]) -> beam.pvalue.DoOutputsTuple:
        if self._batch:  # GroupIntoShards refuses an unbounded input
            return (
                pcoll
                | "ShardById" >> GroupIntoShards(lambda t: t.transaction_id, self._shards)
                | "FirstCopies"
                >> beam.FlatMap(_dedup_shard, int(self._horizon_s * 1_000_000)).with_outputs(
                    DEAD_LETTER_TAG, main="unique"
                )
            )
        return (
            pcoll
            | "KeyByTransactionId"
            >> beam.Map(lambda t: (t.transaction_id, t)).with_output_types(Tuple[str, Transaction])
            | "KeepFirst"
            >> beam.ParDo(_DedupFn(self._horizon_s)).with_outputs(DEAD_LETTER_TAG, main="unique")
        )
