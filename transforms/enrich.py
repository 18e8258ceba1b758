"""Features a fraud model would use, computed per account in event-time order.

``AccountHistory`` and ``features()`` are plain code, tested without a
pipeline. ``EnrichFeatures`` buffers each account's payments and releases
them in event-time order when the watermark passes them, so every feature is
the same whatever order the payments arrived in (and in batch, where the
watermark jumps to the end, the whole history is sorted). History expires
after ``history_ttl_s`` of event time without payments.
"""

from __future__ import annotations

import operator
from collections import deque
from typing import Any, Deque, Dict, Iterable, List, Optional, Tuple

import apache_beam as beam
from apache_beam.coders import PickleCoder, VarIntCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (
    BagStateSpec,
    ReadModifyWriteStateSpec,
    TimerSpec,
    on_timer,
)
from apache_beam.utils.timestamp import Timestamp

from schemas.records import EnrichedTransaction, MaskedTransaction
from transforms import telemetry
from transforms.batching import DEFAULT_SHARDS, GroupIntoShards

__all__ = [
    "HISTORY_SIZE",
    "MCC_RISK",
    "AccountHistory",
    "EnrichFeatures",
    "EnrichShards",
    "enrich_in_order",
    "enrich_shard",
    "features",
    "merchant_category_risk",
]

HISTORY_SIZE = 20

# Static risk of merchant category codes, 0 (low) to 1 (high). Categories with
# quick cash-out or weak chargeback rights score high; unknown codes 0.3.
MCC_RISK = {
    "4829": 0.9,  # money transfer
    "6051": 0.9,  # quasi-cash, crypto
    "7995": 0.85,  # gambling
    "5967": 0.8,  # direct marketing, inbound teleservices
    "5732": 0.6,  # electronics
    "5944": 0.6,  # jewellery
    "4722": 0.5,  # travel agencies
    "5999": 0.4,  # miscellaneous retail
    "5812": 0.15,  # restaurants
    "5541": 0.2,  # service stations
    "4111": 0.1,  # commuter transport
    "5411": 0.1,  # grocery stores
}
_UNKNOWN_MCC_RISK = 0.3


def merchant_category_risk(mcc: str) -> float:
    return MCC_RISK.get(mcc, _UNKNOWN_MCC_RISK)


class AccountHistory:
    """What we remember of an account: its last payment time and recent amounts.

    The last ``HISTORY_SIZE`` amounts and their sum, kept as they change: each
    payment costs the same however long the history (integers, so the sum is exact).
    """

    __slots__ = ("last_event_time_us", "recent_amounts", "recent_sum")

    def __init__(self) -> None:
        self.last_event_time_us: Optional[int] = None
        self.recent_amounts: Deque[int] = deque(maxlen=HISTORY_SIZE)
        self.recent_sum = 0

    def push(self, txn: MaskedTransaction) -> None:
        if self.last_event_time_us is None or txn.event_time_us >= self.last_event_time_us:
            self.last_event_time_us = txn.event_time_us
        amounts = self.recent_amounts
        if len(amounts) == HISTORY_SIZE:
            self.recent_sum -= amounts[0]
        amounts.append(txn.amount_minor)
        self.recent_sum += txn.amount_minor

    def __getstate__(self) -> Tuple[Optional[int], List[int]]:
        return self.last_event_time_us, list(self.recent_amounts)

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):  # pickled before the rolling sum, as its fields
            state = (state.get("last_event_time_us"), state.get("recent_amounts", []))
        self.last_event_time_us = state[0]
        self.recent_amounts = deque(state[1], maxlen=HISTORY_SIZE)
        self.recent_sum = sum(self.recent_amounts)


def features(txn: MaskedTransaction, history: AccountHistory) -> EnrichedTransaction:
    """The features of ``txn`` given the account's history *before* it."""
    n = len(history.recent_amounts)
    last = history.last_event_time_us
    return tuple.__new__(  # type: ignore[no-any-return]
        EnrichedTransaction,
        (
            txn,
            (txn.event_time_us // 3_600_000_000) % 24,
            round(txn.amount_minor / (history.recent_sum / n), 6) if n else None,
            n,
            (txn.event_time_us - last) / 1e6 if last is not None else None,
            (txn.card_country != txn.country) if txn.card_country else None,
            merchant_category_risk(txn.merchant_category),
        ),
    )


# event time, then id: the order an account's payments are enriched in
_order = operator.attrgetter("event_time_us", "transaction_id")


def enrich_in_order(records: Iterable[MaskedTransaction]) -> Iterable[EnrichedTransaction]:
    """Every payment with its features, each account's payments in event-time order.

    What the stateful path releases when the watermark passes all of them (a
    batch run, whose timers fire at its end): one history per account, no expiry.
    """
    histories: Dict[str, AccountHistory] = {}
    for txn in sorted(records, key=_order):
        history = histories.get(txn.account_id)
        if history is None:
            history = histories[txn.account_id] = AccountHistory()
        yield features(txn, history)
        history.push(txn)


def enrich_shard(shard: Tuple[int, List[MaskedTransaction]]) -> Iterable[EnrichedTransaction]:
    """``enrich_in_order`` over a shard's complete list of accounts, counted."""
    yield from enrich_in_order(shard[1])  # not re-stamped: see "Timestamps" in transforms/batching.py
    telemetry.count("payments_enriched", len(shard[1]))


class _EnrichFn(beam.DoFn):
    """One event-time timer per account drives both release and expiry.

    (Runners may fire different timers of one key in any order, so a second
    expiry timer could clear the history before an earlier release.)
    """

    # State and timer names are unique across the graph: the FnApiRunner mixes up
    # timers of the same name and key when it fuses two stateful steps into one
    # stage (seen with Beam 2.77: the other step's timers silently never fired).
    BUFFER = BagStateSpec("enrich_buffer", PickleCoder())
    HISTORY = ReadModifyWriteStateSpec("enrich_history", PickleCoder())
    TIMER_AT = ReadModifyWriteStateSpec("enrich_timer_at_us", VarIntCoder())
    WAKE = TimerSpec("enrich_wake", TimeDomain.WATERMARK)

    def __init__(self, history_ttl_s: float) -> None:
        self._ttl_us = int(history_ttl_s * 1_000_000)

    def process(
        self,
        element: Tuple[str, MaskedTransaction],
        buffer: Any = beam.DoFn.StateParam(BUFFER),
        timer_at: Any = beam.DoFn.StateParam(TIMER_AT),
        wake: Any = beam.DoFn.TimerParam(WAKE),
    ) -> None:
        _, txn = element
        buffer.add(txn)
        pending = timer_at.read()
        if pending is None or txn.event_time_us < pending:
            timer_at.write(txn.event_time_us)
            wake.set(Timestamp(micros=txn.event_time_us))

    @on_timer(WAKE)
    def release(
        self,
        fired_at: Any = beam.DoFn.TimestampParam,
        buffer: Any = beam.DoFn.StateParam(BUFFER),
        history_state: Any = beam.DoFn.StateParam(HISTORY),
        timer_at: Any = beam.DoFn.StateParam(TIMER_AT),
        wake: Any = beam.DoFn.TimerParam(WAKE),
    ) -> Iterable[EnrichedTransaction]:
        limit = fired_at.micros
        pending = sorted(buffer.read(), key=_order)
        ready = [t for t in pending if t.event_time_us <= limit]
        rest = [t for t in pending if t.event_time_us > limit]
        history: AccountHistory = history_state.read() or AccountHistory()
        for txn in ready:
            yield features(txn, history)
            history.push(txn)
            telemetry.count("payments_enriched")
        if ready:
            buffer.clear()
            for txn in rest:
                buffer.add(txn)
        if rest:
            next_at = rest[0].event_time_us
        elif history.last_event_time_us is not None and history.last_event_time_us + self._ttl_us > limit:
            next_at = history.last_event_time_us + self._ttl_us  # come back to forget it
        else:
            next_at = None
        if next_at is None:
            history_state.clear()
            timer_at.clear()
        else:
            history_state.write(history)
            timer_at.write(next_at)
            wake.set(Timestamp(micros=next_at))


class EnrichShards(beam.PTransform):
    """``(shard, [MaskedTransaction])`` of ``GroupIntoShards`` by account -> ``EnrichedTransaction``.

    The batch path's step after the grouping, on its own so that one grouping by
    account can feed both per-account steps (``beam_pipeline.graph.build_graph``).
    """

    def expand(
        self, shards: beam.PCollection[Tuple[int, List[MaskedTransaction]]]
    ) -> beam.PCollection[EnrichedTransaction]:
        return shards | "InEventTimeOrder" >> beam.FlatMap(enrich_shard).with_output_types(
            EnrichedTransaction
        )


class EnrichFeatures(beam.PTransform):
    """``MaskedTransaction`` -> ``EnrichedTransaction`` (see ``schemas/bigquery``).

    ``batch``: the input is bounded and complete; accounts are grouped in
    ``shards`` lists and enriched with ``enrich_in_order`` (see ``transforms/batching.py``).
    """

    def __init__(
        self,
        history_ttl_s: float = 7 * 24 * 3600.0,
        batch: bool = False,
        shards: int = DEFAULT_SHARDS,
        label: Optional[str] = None,
    ) -> None:
        super().__init__(label)
        if history_ttl_s <= 0:
            raise ValueError("history_ttl_s must be > 0")
        self._history_ttl_s = history_ttl_s
        self._batch = batch
        self._shards = shards

    def on_shards(self) -> EnrichShards:
        """The batch path's step for records already grouped by account (``GroupIntoShards``)."""
        return EnrichShards()

    def expand(self, pcoll: beam.PCollection[MaskedTransaction]) -> beam.PCollection[EnrichedTransaction]:
        if self._batch:  # GroupIntoShards refuses an unbounded input
            return (
                pcoll
                | "ShardByAccount" >> GroupIntoShards(lambda t: t.account_id, self._shards)
                | "Enrich" >> self.on_shards()
            )
        return (
            pcoll
            | "KeyByAccount"
            >> beam.Map(lambda t: (t.account_id, t)).with_output_types(Tuple[str, MaskedTransaction])
            | "InEventTimeOrder"
            >> beam.ParDo(_EnrichFn(self._history_ttl_s)).with_output_types(EnrichedTransaction)
        )
