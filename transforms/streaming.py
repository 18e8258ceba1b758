"""The streaming driver: one stateful step per shard of accounts, deciding on arrival.

    (payload, SourceRef)
      -> ParseAndMask   parse_or_dead_letter, mask_transaction; keyed by a stable shard of
                        the transaction id (``dedup_scope="global"``) or of the account
                                                                           -> dead letters
      -> Ids            (global scope) ``IdBook`` per id shard: a copy of an id seen on
                        another account is a conflict; re-keyed by account shard
                                                                           -> dead letters
      -> Accounts       ``AccountBook.decide`` per payment: dedup, features, velocity,
                        alert, all in ``process()``                        -> rows, alerts,
                                                                              dead letters

Masking happens before the first grouping, so no raw card number, email or phone crosses
a shuffle or reaches runner state. Keys are ``shard_of(account, shards)``: a shard's
books are one state value, read from Beam's state cache
(``--max_cache_memory_usage_mb``) and written back once per bundle. With ``shards=0``
each account is a key of its own (one state value per account: more state requests,
smaller writes; ``bench/streaming.py`` measures both).

Expiry needs no timer per payment: each key has one event-time timer, set when its
state is created and moved forward when it fires, that drops the books whose account
has been idle past ``AccountBook.idle_after_us`` (and prunes the id shards) and is set
again for the latest of the books it kept.

What a runner does with this: see "Runner paths" in the README.
"""

from __future__ import annotations

import time
from typing import Any, Dict, Iterable, NamedTuple, Optional, Tuple

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from schemas.records import DeadLetter, EnrichedTransaction, FraudAlert, MaskedTransaction, Transaction
from transforms import telemetry
from transforms.accounts import DUPLICATE, NEW, AccountBook, IdBook, conflict_letter
from transforms.batching import DEFAULT_SHARDS, shard_of
from transforms.deadletter import DEAD_LETTER_TAG
from transforms.masking import MaskPII, mask_transaction
from transforms.parse import ParseCounts, RawPayload, parse_or_dead_letter, payload_size
from transforms.velocity import VelocityRule

__all__ = ["DEDUP_SCOPES", "StreamingOutputs", "StreamingPayments"]

DEDUP_SCOPES = ("global", "account")
ALERTS_TAG = "alerts"
_US = 1_000_000


class StreamingOutputs(NamedTuple):
    transactions: beam.PCollection[EnrichedTransaction]
    alerts: beam.PCollection[FraudAlert]
    dead_letters: beam.PCollection[DeadLetter]


class Books(dict):
    """A key's account books (account id -> ``AccountBook``), weighed by their number."""

    __slots__ = ()

    def cache_weight(self) -> int:
        return 256 + 1024 * len(self)


def _weigh_state_cheaply() -> None:
    """Make Beam's state cache weigh our state values by their own estimate.

    The cache weighs each value it stores with ``objsize``, which gathers the globals of
    every loaded module first: about 1 ms per call with Beam[gcp] loaded, and a state
    write calls it twice (clear, then append). Per key and bundle that cost more than the
    payments did (measured in bench/streaming.py: the cache on was slower than off). Values
    whose items have ``cache_weight()`` (``Books``, ``IdBook``) are weighed by it; anything
    else by Beam's own function. Done once per worker process, at a step's setup.
    """
    try:
        from apache_beam.runners.worker import statecache
    except ImportError:
        return
    deep = statecache.get_deep_size
    if getattr(deep, "paystream_weigher", False):
        return

    def get_deep_size(*objs: Any) -> int:
        if len(objs) == 1 and type(objs[0]) is list:
            items = objs[0]
            if not items:
                return 64
            if all(hasattr(type(item), "cache_weight") for item in items):
                return 64 + sum(item.cache_weight() for item in items)
        return deep(*objs)

    get_deep_size.paystream_weigher = True  # type: ignore[attr-defined]
    statecache.get_deep_size = get_deep_size


def _key(value: str, shards: int) -> Any:
    return shard_of(value, shards) if shards else value


class _ParseAndMaskFn(beam.DoFn):
    def __init__(self, mask: MaskPII, max_future_skew_s: float, shards: int, by_id: bool) -> None:
        self._mask = mask.tokenizer_fn()
        self._max_future_skew_us = int(max_future_skew_s * _US)
        self._shards = shards
        self._by_id = by_id
        self._counts = ParseCounts()
        self._sizes: list = []

    def setup(self) -> None:
        self._mask.setup()

    def start_bundle(self) -> None:
        self._counts = ParseCounts()
        self._sizes = []

    def process(self, element: RawPayload) -> Iterable[Any]:
        raw, source = element
        self._sizes.append(payload_size(raw))
        result = parse_or_dead_letter(raw, source, int(time.time() * _US), self._max_future_skew_us)
        if not isinstance(result, Transaction):
            self._counts.add(1, 0)
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, result)
            return
        self._counts.add(1, 1)
        masked = mask_transaction(result, self._mask.tokenizer())
        key = result.transaction_id if self._by_id else result.account_id
        yield _key(key, self._shards), (masked, result.fingerprint)

    def finish_bundle(self) -> None:
        self._counts.flush()
        telemetry.observe_many("payload_bytes", self._sizes)
        self._sizes = []


def _count_verdicts(new: int, duplicates: int, conflicts: int) -> None:
    if new:
        telemetry.count("payments_unique", new)
    if duplicates:
        telemetry.count("duplicates_dropped", duplicates)
    if conflicts:
        telemetry.count("dead_letters", conflicts, stage="dedup", reason="conflicting_duplicate")


class _IdsFn(beam.DoFn):
    """Global dedup: one ``IdBook`` per shard of transaction ids."""

    BOOK = ReadModifyWriteStateSpec("ids_book", PickleCoder())
    EXPIRY = TimerSpec("ids_expiry", TimeDomain.WATERMARK)

    def __init__(self, horizon_s: float, shards: int) -> None:
        self._horizon_us = int(horizon_s * _US)
        self._shards = shards

    def setup(self) -> None:
        _weigh_state_cheaply()

    def process(
        self,
        element: Tuple[Any, Tuple[MaskedTransaction, str]],
        book_state: Any = beam.DoFn.StateParam(BOOK),
        expiry: Any = beam.DoFn.TimerParam(EXPIRY),
    ) -> Iterable[Any]:
        txn, fingerprint = element[1]
        book: Optional[IdBook] = book_state.read()
        if book is None:
            book = IdBook()
            expiry.set(Timestamp(micros=txn.event_time_us + self._horizon_us))
        verdict = book.check(txn.transaction_id, fingerprint, txn.event_time_us, self._horizon_us)
        book_state.write(book)
        if verdict is NEW:
            yield _key(txn.account_id, self._shards), element[1]
        elif verdict is DUPLICATE:
            _count_verdicts(0, 1, 0)
        else:
            _count_verdicts(0, 0, 1)
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, conflict_letter(txn, ""))

    @on_timer(EXPIRY)
    def expire(
        self,
        fired_at: Any = beam.DoFn.TimestampParam,
        book_state: Any = beam.DoFn.StateParam(BOOK),
        expiry: Any = beam.DoFn.TimerParam(EXPIRY),
    ) -> None:
        book: Optional[IdBook] = book_state.read()
        if book is None:
            return
        book.clock_us = max(book.clock_us, fired_at.micros)
        book.prune(self._horizon_us)
        if book.seen:
            book_state.write(book)
            expiry.set(Timestamp(micros=book.clock_us + self._horizon_us))
        else:
            book_state.clear()


class _AccountsFn(beam.DoFn):
    """Every payment of a key's accounts decided in ``process()``; one expiry timer per key."""

    BOOKS = ReadModifyWriteStateSpec("accounts_books", PickleCoder())
    EXPIRY = TimerSpec("accounts_expiry", TimeDomain.WATERMARK)

    def __init__(self, rule: VelocityRule, horizon_s: float, history_ttl_s: float) -> None:
        self._rule = rule
        self._horizon_us = int(horizon_s * _US)
        self._ttl_us = int(history_ttl_s * _US)
        self._counts = [0, 0, 0, 0]  # new, duplicates, conflicts, alerts

    def setup(self) -> None:
        _weigh_state_cheaply()

    def start_bundle(self) -> None:
        self._counts = [0, 0, 0, 0]

    def process(
        self,
        element: Tuple[Any, Tuple[MaskedTransaction, str]],
        books_state: Any = beam.DoFn.StateParam(BOOKS),
        expiry: Any = beam.DoFn.TimerParam(EXPIRY),
    ) -> Iterable[Any]:
        txn, fingerprint = element[1]
        books: Optional[Books] = books_state.read()
        fresh = books is None
        if books is None:
            books = Books()
        book = books.get(txn.account_id)
        if book is None:
            book = books[txn.account_id] = AccountBook()
        verdict, row, alert = book.decide(txn, fingerprint, self._rule, self._horizon_us, self._ttl_us)
        if fresh:
            expiry.set(Timestamp(micros=book.idle_after_us(self._horizon_us, self._ttl_us, self._rule)))
        books_state.write(books)
        counts = self._counts
        if verdict is NEW:
            counts[0] += 1
            yield row
            if alert is not None:
                counts[3] += 1
                yield beam.pvalue.TaggedOutput(ALERTS_TAG, alert)
        elif verdict is DUPLICATE:
            counts[1] += 1
        else:
            counts[2] += 1
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, conflict_letter(txn, " on this account"))

    def finish_bundle(self) -> None:
        new, duplicates, conflicts, alerts = self._counts
        _count_verdicts(new, duplicates, conflicts)
        if new:
            telemetry.count("payments_enriched", new)
        if alerts:
            telemetry.count("fraud_alerts", alerts)
        self._counts = [0, 0, 0, 0]

    @on_timer(EXPIRY)
    def expire(
        self,
        fired_at: Any = beam.DoFn.TimestampParam,
        books_state: Any = beam.DoFn.StateParam(BOOKS),
        expiry: Any = beam.DoFn.TimerParam(EXPIRY),
    ) -> None:
        books: Optional[Dict[str, AccountBook]] = books_state.read()
        if books is None:
            return
        now = fired_at.micros
        rule, horizon, ttl = self._rule, self._horizon_us, self._ttl_us
        idle = {a: b.idle_after_us(horizon, ttl, rule) for a, b in books.items()}
        kept = Books((a, b) for a, b in books.items() if idle[a] > now)
        if kept:
            books_state.write(kept)
            # the latest of them: one firing per round (a watermark at the end of a bounded
            # input fires the timer at once, again and again, if it moved in small steps)
            expiry.set(Timestamp(micros=max(idle[a] for a in kept)))
        else:
            books_state.clear()


class StreamingPayments(beam.PTransform):
    """Raw payloads (a stream) -> rows, alerts, dead letters, each decided on arrival."""

    def __init__(
        self,
        rule: VelocityRule,
        key: Optional[bytes] = None,
        key_path: Optional[str] = None,
        check_key: bool = True,
        max_future_skew_s: float = 300.0,
        horizon_s: float = 600.0,
        history_ttl_s: float = 86_400.0,
        shards: int = DEFAULT_SHARDS,
        dedup_scope: str = "global",
        label: Optional[str] = None,
    ) -> None:
        super().__init__(label)
        if shards < 0:
            raise ValueError("shards must be >= 0 (0: a key per account)")
        if dedup_scope not in DEDUP_SCOPES:
            raise ValueError(f"dedup_scope must be one of {DEDUP_SCOPES}, not {dedup_scope!r}")
        if horizon_s <= 0 or history_ttl_s <= 0:
            raise ValueError("horizon_s and history_ttl_s must be > 0")
        self._mask = MaskPII(key=key, key_path=key_path, check_key=check_key)
        self._rule = rule
        self._max_future_skew_s = max_future_skew_s
        self._horizon_s = horizon_s
        self._ttl_s = history_ttl_s
        self._shards = shards
        self._global = dedup_scope == "global"

    def expand(self, raw: beam.PCollection[RawPayload]) -> StreamingOutputs:  # type: ignore[override]
        parsed = raw | "ParseAndMask" >> beam.ParDo(
            _ParseAndMaskFn(self._mask, self._max_future_skew_s, self._shards, self._global)
        ).with_outputs(DEAD_LETTER_TAG, main="masked")
        dead = [parsed[DEAD_LETTER_TAG]]
        masked = parsed.masked
        if self._global:
            ids = masked | "Ids" >> beam.ParDo(_IdsFn(self._horizon_s, self._shards)).with_outputs(
                DEAD_LETTER_TAG, main="first"
            )
            dead.append(ids[DEAD_LETTER_TAG])
            masked = ids.first
        decided = masked | "Accounts" >> beam.ParDo(
            _AccountsFn(self._rule, self._horizon_s, self._ttl_s)
        ).with_outputs(DEAD_LETTER_TAG, ALERTS_TAG, main="transactions")
        dead.append(decided[DEAD_LETTER_TAG])
        return StreamingOutputs(
            transactions=decided.transactions,
            alerts=decided[ALERTS_TAG],
            dead_letters=tuple(dead) | "DeadLetters" >> beam.Flatten(),
        )
