"""The batch driver: a bounded input, a chunk of payloads at a time, through every kernel.

    chunks of (payload, SourceRef)
      -> ParseChunks         parse_or_dead_letter per payload; the valid payments of a
                             chunk split by transaction-id shard           -> dead letters
      -> ById                MergeShards: one list per transaction-id shard
      -> FirstCopiesAndMask  IdBook over each id shard in the order read, then
                             mask_transaction; split by account shard      -> dead letters
      -> ByAccount           MergeShards: one list per account shard
      -> Decide              AccountBook.decide over each account's payments in the
                             order read (transforms/accounts.py)           -> rows, alerts

The per-payment functions are the ones every other path runs (``transforms/parse.py``,
``dedup.py``, ``masking.py``, ``enrich.py``, ``velocity.py``); only the driving differs.
A streaming step receives a payment as an element and keeps per-key state. Here a
payment is an element of a list from the source to the last step: the two groupings move
each chunk's few lists per shard, and Beam's per-element work (about as much as our own
per payment on Beam Python) is paid per chunk and per shard. Raw PII crosses only the
first grouping, as in the per-element batch path; masked records cross the second.

What comes out equals the per-element batch path and the streaming path on the same
input (``tests/test_batch_paths.py``).
"""

from __future__ import annotations

import time
from typing import Any, Iterable, List, NamedTuple, Optional, Tuple

import apache_beam as beam
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from schemas.records import DeadLetter, EnrichedTransaction, FraudAlert, MaskedTransaction, Transaction
from transforms import telemetry
from transforms.accounts import DUPLICATE, NEW, IdBook, decide_in_order
from transforms.batching import DEFAULT_SHARDS, MergeShards, split_into_shards
from transforms.deadletter import DEAD_LETTER_TAG
from transforms.dedup import conflict_dead_letter
from transforms.masking import MaskPII, mask_transaction
from transforms.parse import ParseCounts, RawPayload, parse_or_dead_letter, payload_size
from transforms.velocity import VelocityRule

__all__ = ["DEFAULT_CHUNK", "BoundedOutputs", "BoundedPayments"]

DEFAULT_CHUNK = 2000  # payloads per element from the source to the first grouping
ALERTS_TAG = "alerts"


class BoundedOutputs(NamedTuple):
    transactions: beam.PCollection[EnrichedTransaction]
    alerts: beam.PCollection[FraudAlert]
    dead_letters: beam.PCollection[DeadLetter]


def _transaction_id(txn: Transaction) -> str:
    return txn.transaction_id


def _account(txn: MaskedTransaction) -> str:
    return txn.account_id


def _source_order(txn: Transaction) -> Any:
    return txn.source


class _ParseChunkFn(beam.DoFn):
    def __init__(self, max_future_skew_s: float, shards: int) -> None:
        self._max_future_skew_us = int(max_future_skew_s * 1_000_000)
        self._shards = shards
        self._counts = ParseCounts()

    def start_bundle(self) -> None:
        self._counts = ParseCounts()

    def process(self, chunk: List[RawPayload]) -> Iterable[Any]:
        now_us = int(time.time() * 1_000_000)
        valid: List[Transaction] = []
        for raw, source in chunk:
            result = parse_or_dead_letter(raw, source, now_us, self._max_future_skew_us)
            if isinstance(result, Transaction):
                valid.append(result)
            else:
                yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, result)
        self._counts.add(len(chunk), len(valid))
        telemetry.observe_many("payload_bytes", [payload_size(raw) for raw, _ in chunk])
        yield from split_into_shards(valid, _transaction_id, self._shards).items()

    def finish_bundle(self) -> None:
        self._counts.flush()


class _FirstCopiesAndMaskFn(beam.DoFn):
    """The first copy of each id (``IdBook``, in the order read), masked, by account shard."""

    def __init__(self, mask: MaskPII, shards: int, horizon_us: int) -> None:
        self._mask = mask.tokenizer_fn()  # reads the key at setup, as MaskPII's own step does
        self._shards = shards
        self._horizon_us = horizon_us

    def setup(self) -> None:
        self._mask.setup()

    def process(self, shard: Tuple[int, List[Transaction]]) -> Iterable[Any]:
        book = IdBook()
        kept: List[Transaction] = []
        duplicates = 0
        for txn in sorted(shard[1], key=_source_order):
            verdict = book.check(txn.transaction_id, txn.fingerprint, txn.event_time_us, self._horizon_us)
            if verdict is NEW:
                kept.append(txn)
            elif verdict is DUPLICATE:
                duplicates += 1
            else:
                telemetry.count("dead_letters", stage="dedup", reason="conflicting_duplicate")
                yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, conflict_dead_letter(txn))
        if duplicates:
            telemetry.count("duplicates_dropped", duplicates)
        tokenizer = self._mask.tokenizer()
        masked = [mask_transaction(txn, tokenizer) for txn in kept]
        yield from split_into_shards(masked, _account, self._shards).items()


class _DecideFn(beam.DoFn):
    """Each account's payments decided by its ``AccountBook``, in the order read: what the
    streaming step decides as they arrive (``transforms/streaming.py``)."""

    def __init__(self, rule: VelocityRule, horizon_us: int, history_ttl_us: int) -> None:
        self._rule = rule
        self._horizon_us = horizon_us
        self._ttl_us = history_ttl_us

    def process(self, shard: Tuple[int, List[MaskedTransaction]]) -> Iterable[Any]:
        new = alerts = 0
        records = ((txn, "") for txn in shard[1])  # no copies left: the id step took them
        for verdict, _, row, alert in decide_in_order(records, self._rule, self._horizon_us, self._ttl_us):
            if verdict is NEW:
                new += 1
                yield row
                if alert is not None:
                    alerts += 1
                    yield beam.pvalue.TaggedOutput(
                        ALERTS_TAG, TimestampedValue(alert, Timestamp(micros=alert.crossing_txn_time_us))
                    )
        telemetry.count("payments_unique", new)
        telemetry.count("payments_enriched", new)
        if alerts:
            telemetry.count("fraud_alerts", alerts)


class BoundedPayments(beam.PTransform):
    """Chunks of raw payloads (a bounded input, a batch run) -> rows, alerts, dead letters.

    The key is given as to ``MaskPII`` and checked the same way; ``rule``, ``horizon_s``
    and ``history_ttl_s`` as to ``StreamingPayments``.
    """

    def __init__(
        self,
        rule: VelocityRule,
        key: Optional[bytes] = None,
        key_path: Optional[str] = None,
        check_key: bool = True,
        max_future_skew_s: float = 300.0,
        shards: int = DEFAULT_SHARDS,
        horizon_s: float = 600.0,
        history_ttl_s: float = 86_400.0,
        label: Optional[str] = None,
    ) -> None:
        super().__init__(label)
        if shards < 1:
            raise ValueError("shards must be >= 1")
        if max_future_skew_s < 0:
            raise ValueError("max_future_skew_s must be >= 0")
        self._mask = MaskPII(key=key, key_path=key_path, check_key=check_key)
        self._rule = rule
        self._max_future_skew_s = max_future_skew_s
        self._shards = shards
        self._horizon_us = int(horizon_s * 1_000_000)
        self._ttl_us = int(history_ttl_s * 1_000_000)

    def expand(self, chunks: beam.PCollection[List[RawPayload]]) -> BoundedOutputs:  # type: ignore[override]
        if not chunks.is_bounded:  # the lists are complete only once the input is
            raise ValueError(f"{self.label}: the batch driver needs a bounded input")
        parsed = chunks | "ParseChunks" >> beam.ParDo(
            _ParseChunkFn(self._max_future_skew_s, self._shards)
        ).with_outputs(DEAD_LETTER_TAG, main="transactions")
        unique = (
            parsed.transactions
            | "ById" >> MergeShards()
            | "FirstCopiesAndMask"
            >> beam.ParDo(_FirstCopiesAndMaskFn(self._mask, self._shards, self._horizon_us)).with_outputs(
                DEAD_LETTER_TAG, main="masked"
            )
        )
        judged = (
            unique.masked
            | "ByAccount" >> MergeShards()
            | "Decide"
            >> beam.ParDo(_DecideFn(self._rule, self._horizon_us, self._ttl_us)).with_outputs(
                ALERTS_TAG, main="transactions"
            )
        )
        dead = (parsed[DEAD_LETTER_TAG], unique[DEAD_LETTER_TAG]) | "DeadLetters" >> beam.Flatten()
        return BoundedOutputs(
            transactions=judged.transactions,
            alerts=judged[ALERTS_TAG],
            dead_letters=dead,
        )
