"""The batch driver: a bounded input, a chunk of payloads at a time, through every kernel.

    chunks of (payload, SourceRef)
      -> ParseChunks   parse_or_dead_letter and mask_transaction per payload; a chunk's
                       payments split by account shard                     -> dead letters
      -> ByAccount     MergeShards: one list per account shard
      -> Decide        AccountBook.decide over each account's payments in the order read
                       (transforms/accounts.py)                            -> alerts,
                                                                              dead letters
      -> ById          (dedup_scope="global") MergeShards of the rows by transaction-id
      -> CheckIds      shard; check_ids in the order read                  -> dead letters
      -> rows

The same kernels and the same order as the streaming driver (``transforms/streaming.py``);
only the driving differs. A streaming step receives a bundle's payments per key and keeps
its books in state. Here a payment is an element of a list from the source to the last
step: the groupings move each chunk's few lists per shard, and Beam's per-element work
(about as much as our own per payment on Beam Python) is paid per chunk and per shard. No
raw PII crosses a grouping: payments are masked as they are parsed.

What comes out equals the streaming driver on the same input
(``tests/test_batch_paths.py::test_whole_graph_batch_equals_stream``).
"""

from __future__ import annotations

import time
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Tuple, Union

import apache_beam as beam
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from schemas.records import DeadLetter, EnrichedTransaction, FraudAlert, MaskedTransaction, Transaction
from transforms import telemetry
from transforms.accounts import (
    DEDUP_SCOPES,
    DUPLICATE,
    NEW,
    IdBook,
    Pending,
    check_ids,
    conflict_letter,
    count_decided,
    count_stored,
    decide_all_in_order,
)
from transforms.batching import DEFAULT_SHARDS, MergeShards, split_into_shards
from transforms.deadletter import DEAD_LETTER_TAG
from transforms.masking import MaskPII, mask_transaction
from transforms.parse import ParseCounts, RawPayload, parse_or_dead_letter, payload_size
from transforms.rules import Rule, Rules, as_rules, kind_of

__all__ = ["DEFAULT_CHUNK", "BoundedOutputs", "BoundedPayments"]

DEFAULT_CHUNK = 2000  # payloads per element from the source to the first grouping
ALERTS_TAG = "alerts"


class BoundedOutputs(NamedTuple):
    transactions: beam.PCollection[EnrichedTransaction]
    alerts: beam.PCollection[FraudAlert]
    dead_letters: beam.PCollection[DeadLetter]


def _pair_account(pair: Tuple[MaskedTransaction, str]) -> str:
    return pair[0].account_id


def _row_id(row: EnrichedTransaction) -> str:
    return row.txn.transaction_id


def _row_source(row: EnrichedTransaction) -> Any:
    return row.txn.source


class _ParseChunkFn(beam.DoFn):
    """Parse and mask a chunk; (masked payment, fingerprint) pairs split by account shard."""

    def __init__(self, mask: MaskPII, max_future_skew_s: float, shards: int) -> None:
        self._mask = mask.tokenizer_fn()  # reads the key at setup, as MaskPII's own step does
        self._max_future_skew_us = int(max_future_skew_s * 1_000_000)
        self._shards = shards
        self._counts = ParseCounts()

    def setup(self) -> None:
        self._mask.setup()

    def start_bundle(self) -> None:
        self._counts = ParseCounts()

    def process(self, chunk: List[RawPayload]) -> Iterable[Any]:
        now_us = int(time.time() * 1_000_000)
        tokenizer = self._mask.tokenizer()
        valid: List[Pending] = []
        for raw, source in chunk:
            result = parse_or_dead_letter(raw, source, now_us, self._max_future_skew_us)
            if isinstance(result, Transaction):
                valid.append(Pending(mask_transaction(result, tokenizer), result.fingerprint))
            else:
                yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, result)
        self._counts.add(len(chunk), len(valid))
        telemetry.observe_many("payload_bytes", [payload_size(raw) for raw, _ in chunk])
        yield from split_into_shards(valid, _pair_account, self._shards).items()

    def finish_bundle(self) -> None:
        self._counts.flush()


class _DecideFn(beam.DoFn):
    """Each account's payments decided by its ``AccountBook``, in the order read: what the
    streaming step decides as they arrive (``transforms/streaming.py``). With the id check
    to come, rows leave split by transaction-id shard."""

    def __init__(self, rules: Rules, horizon_us: int, history_ttl_us: int, id_shards: int) -> None:
        self._rules = rules
        self._horizon_us = horizon_us
        self._ttl_us = history_ttl_us
        self._id_shards = id_shards

    def process(self, shard: Tuple[int, List[Tuple[MaskedTransaction, str]]]) -> Iterable[Any]:
        new = duplicates = conflicts = 0
        alerts: Dict[str, int] = {}
        rows: List[EnrichedTransaction] = []
        decided = decide_all_in_order(shard[1], self._rules, self._horizon_us, self._ttl_us)
        for verdict, txn, row, raised in decided:
            if verdict is NEW:
                new += 1
                rows.append(row)  # type: ignore[arg-type]
                for alert in raised:
                    kind = kind_of(alert)
                    alerts[kind] = alerts.get(kind, 0) + 1
                    yield beam.pvalue.TaggedOutput(
                        ALERTS_TAG, TimestampedValue(alert, Timestamp(micros=alert.crossing_txn_time_us))
                    )
            elif verdict is DUPLICATE:
                duplicates += 1
            else:
                conflicts += 1
                yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, conflict_letter(txn, " on this account"))
        if self._id_shards:
            yield from split_into_shards(rows, _row_id, self._id_shards).items()
        else:
            yield from rows
        count_decided(new, duplicates, conflicts, alerts)


class _CheckIdsFn(beam.DoFn):
    """The id check of the streaming driver over an id shard's rows, in the order read."""

    def __init__(self, horizon_us: int) -> None:
        self._horizon_us = horizon_us

    def process(self, shard: Tuple[int, List[EnrichedTransaction]]) -> Iterable[Any]:
        rows = sorted(shard[1], key=_row_source)
        new, again, conflicts, kept = check_ids(IdBook(), rows, self._horizon_us)
        yield from kept
        for row in conflicts:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, conflict_letter(row.txn, " for another account"))
        count_stored(new, again, len(conflicts))


class BoundedPayments(beam.PTransform):
    """Chunks of raw payloads (a bounded input, a batch run) -> rows, alerts, dead letters.

    The key is given as to ``MaskPII`` and checked the same way; ``rules`` (one rule or
    several, ``transforms/rules.py``), ``horizon_s``
    and ``history_ttl_s`` as to ``StreamingPayments``.
    """

    def __init__(
        self,
        rules: Union[Rule, Rules],
        key: Optional[bytes] = None,
        key_path: Optional[str] = None,
        check_key: bool = True,
        max_future_skew_s: float = 300.0,
        shards: int = DEFAULT_SHARDS,
        horizon_s: float = 600.0,
        history_ttl_s: float = 86_400.0,
        dedup_scope: str = "global",
        label: Optional[str] = None,
    ) -> None:
        super().__init__(label)
        if dedup_scope not in DEDUP_SCOPES:
            raise ValueError(f"dedup_scope must be one of {DEDUP_SCOPES}, not {dedup_scope!r}")
        self._global = dedup_scope == "global"
        if shards < 1:
            raise ValueError("shards must be >= 1")
        if max_future_skew_s < 0:
            raise ValueError("max_future_skew_s must be >= 0")
        self._mask = MaskPII(key=key, key_path=key_path, check_key=check_key)
        self._rules = as_rules(rules)
        self._max_future_skew_s = max_future_skew_s
        self._shards = shards
        self._horizon_us = int(horizon_s * 1_000_000)
        self._ttl_us = int(history_ttl_s * 1_000_000)

    def expand(self, chunks: beam.PCollection[List[RawPayload]]) -> BoundedOutputs:  # type: ignore[override]
        if not chunks.is_bounded:  # the lists are complete only once the input is
            raise ValueError(f"{self.label}: the batch driver needs a bounded input")
        parsed = chunks | "ParseChunks" >> beam.ParDo(
            _ParseChunkFn(self._mask, self._max_future_skew_s, self._shards)
        ).with_outputs(DEAD_LETTER_TAG, main="masked")
        id_shards = self._shards if self._global else 0
        decided = (
            parsed.masked
            | "ByAccount" >> MergeShards()
            | "Decide"
            >> beam.ParDo(_DecideFn(self._rules, self._horizon_us, self._ttl_us, id_shards)).with_outputs(
                DEAD_LETTER_TAG, ALERTS_TAG, main="transactions"
            )
        )
        dead = [parsed[DEAD_LETTER_TAG], decided[DEAD_LETTER_TAG]]
        rows = decided.transactions
        if self._global:
            checked = (
                rows
                | "ById" >> MergeShards()
                | "CheckIds"
                >> beam.ParDo(_CheckIdsFn(self._horizon_us)).with_outputs(DEAD_LETTER_TAG, main="stored")
            )
            dead.append(checked[DEAD_LETTER_TAG])
            rows = checked.stored
        return BoundedOutputs(
            transactions=rows,
            alerts=decided[ALERTS_TAG],
            dead_letters=tuple(dead) | "DeadLetters" >> beam.Flatten(),
        )
