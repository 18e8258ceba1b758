"""The streaming driver: one stateful step per shard of accounts, deciding on arrival.

    (payload, SourceRef)
      -> ParseAndMask   parse_or_dead_letter, mask_transaction; keyed by a stable shard
                        of the account                                     -> dead letters
      -> Accounts       ``AccountBook.decide`` per payment: dedup, features, velocity,
                        alert, all in ``process()``                        -> alerts,
                                                                              dead letters
      -> Ids            (``dedup_scope="global"``) ``IdBook`` per shard of transaction
                        ids, on the rows: a payment whose id was stored for another
                        account is a conflict, and its row is not written  -> dead letters
      -> rows

Masking happens before the first grouping, so no raw card number, email or phone crosses
a shuffle or reaches runner state. Keys are ``shard_of(account, shards)``: a shard's
books are kept as a ledger (``_Ledger``): a log of the books each bundle changed, read
back only when this process has no current copy, so a bundle writes what it changed,
not the whole shard. With ``shards=0`` each account is a key of its own (more state
requests per bundle; ``bench/streaming.py`` measured both).

Order: an account's payments reach its step in the order of their Kafka partition: the
source's subtask for that partition parses them and sends them down one channel. The id
check comes after the account step, not before it: between two keyed steps an account's
payments would travel through different subtasks (one per id shard) and lose that
order. The price: a copy sent with another account has been counted in that account's
features and windows before its row is refused.

Between steps a bundle's payments travel as one list per key (``_Lists``).

Expiry needs no timer per payment: each key has one event-time timer, set when its
state is created and moved forward when it fires, that drops the books whose account
has been idle past ``AccountBook.idle_after_us`` (and prunes the id shards) and is set
again for the latest of the books it kept.

What a runner does with this: see "Streaming on Flink" in the README.
"""

from __future__ import annotations

import pickle
import random
import time
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Tuple, Union

import apache_beam as beam
from apache_beam.coders import BytesCoder, PickleCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from schemas.records import DeadLetter, EnrichedTransaction, FraudAlert, MaskedTransaction, Transaction
from transforms import telemetry
from transforms.accounts import (
    DEDUP_SCOPES,
    DUPLICATE,
    NEW,
    AccountBook,
    IdBook,
    Pending,
    check_ids,
    conflict_letter,
    count_decided,
    count_stored,
)
from transforms.batching import DEFAULT_SHARDS, ShardRecords, shard_of
from transforms.deadletter import DEAD_LETTER_TAG
from transforms.masking import MaskPII, mask_transaction
from transforms.parse import ParseCounts, RawPayload, parse_or_dead_letter, payload_size
from transforms.rules import Rule, Rules, as_rules, kind_of

__all__ = ["StreamingOutputs", "StreamingPayments"]

ALERTS_TAG = "alerts"
_US = 1_000_000


class StreamingOutputs(NamedTuple):
    transactions: beam.PCollection[EnrichedTransaction]
    alerts: beam.PCollection[FraudAlert]
    dead_letters: beam.PCollection[DeadLetter]


class Books(dict):
    """A key's account books (account id -> ``AccountBook``)."""

    __slots__ = ()


def _weigh_state_cheaply() -> None:
    """Make Beam's state cache weigh our state values by a cheap estimate.

    The cache weighs a key's whole cached value again at every write (a bag append puts
    the extended list back), with ``objsize``, which gathers the globals of every loaded
    module first: about 1 ms per call with Beam[gcp] loaded (measured in
    bench/streaming.py: the cache on was slower than off). Our values are the ledgers'
    entries (pickled bytes) and tokens (pairs of ints): those are weighed by their
    length; anything else by Beam's own function. Done once per worker process, at a
    step's setup.
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
            if all(type(item) is bytes for item in items):
                return 64 + sum(33 + len(item) for item in items)
            if all(type(item) is tuple and len(item) == 2 for item in items):
                return 64 + 120 * len(items)
        return deep(*objs)

    get_deep_size.paystream_weigher = True  # type: ignore[attr-defined]
    statecache.get_deep_size = get_deep_size


# --- keyed state as a ledger -----------------------------------------------------------

_FULL, _CHANGES = 0, 1
# A key's log is compacted into one full value after this many entries: a bundle then
# writes the whole value once in this many bundles, and a cold read replays at most this
# many entries.
COMPACT_AFTER = 32
# (step, key) -> (token, value): each key's current value as this process last wrote it.
_CURRENT: Dict[Tuple[str, Any], Tuple[int, Any]] = {}


class _Ledger:
    """A key's state value kept as a log of changes, read through this process's own copy.

    Written back whole, a shard's books cost every bundle in proportion to all the books
    of the shard, not to the payments of the bundle: after a minute at 1,000 payments/s
    they were 9 MB to pickle (0.27 s) for bundles of a few hundred payments, and the
    figure grows with the accounts. So each bundle appends to the key's log (a bag) only
    the entries it changed, pickled then (a snapshot), and writes a token naming the
    new version; this process keeps the value it wrote under that token. A bundle that
    finds its token current uses the kept value; any other (a new process, a restore, a
    retried bundle whose first attempt was not committed) replays the log. Every
    ``COMPACT_AFTER`` entries the log is replaced by the whole value.

    ``apply(value, changes)`` merges one entry of changes into a value.
    """

    LOG = BagStateSpec("ledger", BytesCoder())
    TOKEN = ReadModifyWriteStateSpec("ledger_token", PickleCoder())

    def __init__(self, step: str, apply: Callable[[Any, Any], None]) -> None:
        self._step = step
        self._apply = apply

    def read(self, key: Any, token_state: Any, log_state: Any) -> Tuple[Any, Optional[Tuple[int, int]]]:
        """(the value or None, its token)."""
        token = token_state.read()
        if token is None:
            return None, None
        # taken out while the caller changes it: a failure before ``write`` leaves no copy
        kept = _CURRENT.pop((self._step, key), None)
        if kept is not None and kept[0] == token[0]:
            return kept[1], token
        value = None
        for blob in log_state.read():
            kind, body = pickle.loads(blob)
            if kind == _FULL:
                value = body
            else:
                self._apply(value, body)
        return value, token

    def write(
        self,
        key: Any,
        value: Any,
        changes: Any,
        token: Optional[Tuple[int, int]],
        token_state: Any,
        log_state: Any,
    ) -> None:
        """Record ``value``, of which ``changes`` (None: all of it) is what changed."""
        entries = 0 if token is None else token[1]
        if changes is None or token is None or entries >= COMPACT_AFTER:
            log_state.clear()
            log_state.add(pickle.dumps((_FULL, value), protocol=pickle.HIGHEST_PROTOCOL))
            entries = 1
        else:
            log_state.add(pickle.dumps((_CHANGES, changes), protocol=pickle.HIGHEST_PROTOCOL))
            entries += 1
        new = random.getrandbits(62)
        token_state.write((new, entries))
        _CURRENT[(self._step, key)] = (new, value)

    def clear(self, key: Any, token_state: Any, log_state: Any) -> None:
        log_state.clear()
        token_state.clear()
        _CURRENT.pop((self._step, key), None)


def _apply_books(books: Any, changes: Dict[str, AccountBook]) -> None:
    books.update(changes)


def _apply_ids(book: IdBook, changes: Tuple[Dict[str, Tuple[str, int]], int]) -> None:
    seen, clock_us = changes
    book.seen.update(seen)
    book.clock_us = max(book.clock_us, clock_us)


_BOOKS_LEDGER = _Ledger("accounts", _apply_books)
_IDS_LEDGER = _Ledger("ids", _apply_ids)


def _key(value: str, shards: int) -> Any:
    return shard_of(value, shards) if shards else value


class _Lists:
    """A bundle's payments, one list per key, and the earliest timestamp among its inputs.

    Between two steps, a bundle's payments travel as one ``(key, ShardRecords)`` element
    per key, emitted when the bundle finishes: the runner then moves, encodes and keys
    tens of elements per bundle instead of one per payment (on Flink the JVM's side of
    each element cost more than our Python, ``bench/streaming.py``). A key's list keeps
    the order the payments were read in. The lists leave stamped with the earliest input
    timestamp of the bundle, which the runner's watermark has not yet passed.
    """

    __slots__ = ("lists", "earliest")

    def __init__(self) -> None:
        self.lists: Dict[Any, ShardRecords] = {}
        self.earliest: Optional[Timestamp] = None

    def add(self, key: Any, item: Any, timestamp: Timestamp) -> None:
        part = self.lists.get(key)
        if part is None:
            part = self.lists[key] = ShardRecords()
        part.append(item)
        if self.earliest is None or timestamp < self.earliest:
            self.earliest = timestamp

    def drain(self) -> Iterable[WindowedValue]:
        if self.earliest is not None:
            at, window = self.earliest, (GlobalWindow(),)
            for entry in self.lists.items():
                yield WindowedValue(entry, at, window)
        self.lists = {}
        self.earliest = None


class _ParseAndMaskFn(beam.DoFn):
    def __init__(self, mask: MaskPII, max_future_skew_s: float, shards: int) -> None:
        self._mask = mask.tokenizer_fn()
        self._max_future_skew_us = int(max_future_skew_s * _US)
        self._shards = shards
        self._counts = ParseCounts()
        self._sizes: list = []

    def setup(self) -> None:
        self._mask.setup()

    def start_bundle(self) -> None:
        self._counts = ParseCounts()
        self._sizes = []
        self._out = _Lists()

    def process(self, element: RawPayload, timestamp: Any = beam.DoFn.TimestampParam) -> Iterable[Any]:
        raw, source = element
        self._sizes.append(payload_size(raw))
        result = parse_or_dead_letter(raw, source, int(time.time() * _US), self._max_future_skew_us)
        if not isinstance(result, Transaction):
            self._counts.add(1, 0)
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, result)
            return
        self._counts.add(1, 1)
        masked = mask_transaction(result, self._mask.tokenizer())
        self._out.add(_key(result.account_id, self._shards), Pending(masked, result.fingerprint), timestamp)

    def finish_bundle(self) -> Iterable[WindowedValue]:
        self._counts.flush()
        telemetry.observe_many("payload_bytes", self._sizes)
        self._sizes = []
        yield from self._out.drain()


class _IdsFn(beam.DoFn):
    """Global dedup, on the rows: one ``IdBook`` per shard of transaction ids."""

    LOG, TOKEN = _Ledger.LOG, _Ledger.TOKEN
    EXPIRY = TimerSpec("ids_expiry", TimeDomain.WATERMARK)

    def __init__(self, horizon_s: float) -> None:
        self._horizon_us = int(horizon_s * _US)

    def setup(self) -> None:
        _weigh_state_cheaply()

    def process(
        self,
        element: Tuple[Any, List[EnrichedTransaction]],
        log: Any = beam.DoFn.StateParam(LOG),
        token_state: Any = beam.DoFn.StateParam(TOKEN),
        expiry: Any = beam.DoFn.TimerParam(EXPIRY),
    ) -> Iterable[Any]:
        key = element[0]
        book, token = _IDS_LEDGER.read(key, token_state, log)
        if book is None:
            book = IdBook()
            expiry.set(Timestamp(micros=element[1][0].txn.event_time_us + self._horizon_us))
        new, again, conflicts, rows = check_ids(book, element[1], self._horizon_us)
        seen = book.seen
        changes = ({r.txn.transaction_id: seen[r.txn.transaction_id] for r in rows}, book.clock_us)
        _IDS_LEDGER.write(key, book, changes, token, token_state, log)
        yield from rows
        for row in conflicts:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, conflict_letter(row.txn, " for another account"))
        count_stored(new, again, len(conflicts))

    @on_timer(EXPIRY)
    def expire(
        self,
        key: Any = beam.DoFn.KeyParam,
        fired_at: Any = beam.DoFn.TimestampParam,
        log: Any = beam.DoFn.StateParam(LOG),
        token_state: Any = beam.DoFn.StateParam(TOKEN),
        expiry: Any = beam.DoFn.TimerParam(EXPIRY),
    ) -> None:
        book, token = _IDS_LEDGER.read(key, token_state, log)
        if book is None:
            return
        book.clock_us = max(book.clock_us, fired_at.micros)
        book.prune(self._horizon_us)
        if book.seen:
            _IDS_LEDGER.write(key, book, None, token, token_state, log)  # pruned: written whole
            expiry.set(Timestamp(micros=book.clock_us + self._horizon_us))
        else:
            _IDS_LEDGER.clear(key, token_state, log)


class _AccountsFn(beam.DoFn):
    """Every payment of a key's accounts decided in ``process()``; one expiry timer per key."""

    LOG, TOKEN = _Ledger.LOG, _Ledger.TOKEN
    EXPIRY = TimerSpec("accounts_expiry", TimeDomain.WATERMARK)

    def __init__(self, rules: Rules, horizon_s: float, history_ttl_s: float, id_shards: int) -> None:
        self._rules = rules
        self._horizon_us = int(horizon_s * _US)
        self._ttl_us = int(history_ttl_s * _US)
        self._id_shards = id_shards  # > 0: rows go on to the id check, in lists by id shard
        self._counts: List[Any] = [0, 0, 0, {}]  # new, duplicates, conflicts, alerts by rule kind

    def setup(self) -> None:
        _weigh_state_cheaply()

    def start_bundle(self) -> None:
        self._counts = [0, 0, 0, {}]
        self._rows = _Lists()

    def process(
        self,
        element: Tuple[Any, List[Tuple[MaskedTransaction, str]]],
        timestamp: Any = beam.DoFn.TimestampParam,
        log: Any = beam.DoFn.StateParam(LOG),
        token_state: Any = beam.DoFn.StateParam(TOKEN),
        expiry: Any = beam.DoFn.TimerParam(EXPIRY),
    ) -> Iterable[Any]:
        id_shards, rows = self._id_shards, self._rows
        key = element[0]
        books, token = _BOOKS_LEDGER.read(key, token_state, log)
        fresh = books is None
        if books is None:
            books = Books()
        changed = Books()
        rules, horizon, ttl, counts = self._rules, self._horizon_us, self._ttl_us, self._counts
        book = None
        for txn, fingerprint in element[1]:
            book = books.get(txn.account_id)
            if book is None:
                book = books[txn.account_id] = AccountBook()
            changed[txn.account_id] = book
            verdict, row, alerts = book.decide_all(txn, fingerprint, rules, horizon, ttl)
            if verdict is NEW:
                counts[0] += 1
                if id_shards:
                    rows.add(shard_of(txn.transaction_id, id_shards), row, timestamp)
                else:
                    yield row
                for alert in alerts:
                    kind = kind_of(alert)
                    counts[3][kind] = counts[3].get(kind, 0) + 1
                    yield beam.pvalue.TaggedOutput(ALERTS_TAG, alert)
            elif verdict is DUPLICATE:
                counts[1] += 1
            else:
                counts[2] += 1
                yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, conflict_letter(txn, " on this account"))
        if fresh and book is not None:
            expiry.set(Timestamp(micros=book.idle_after_us(horizon, ttl, rules)))
        _BOOKS_LEDGER.write(key, books, changed, token, token_state, log)

    def finish_bundle(self) -> Iterable[WindowedValue]:
        count_decided(*self._counts)
        self._counts = [0, 0, 0, {}]
        yield from self._rows.drain()

    @on_timer(EXPIRY)
    def expire(
        self,
        key: Any = beam.DoFn.KeyParam,
        fired_at: Any = beam.DoFn.TimestampParam,
        log: Any = beam.DoFn.StateParam(LOG),
        token_state: Any = beam.DoFn.StateParam(TOKEN),
        expiry: Any = beam.DoFn.TimerParam(EXPIRY),
    ) -> None:
        books, token = _BOOKS_LEDGER.read(key, token_state, log)
        if books is None:
            return
        now = fired_at.micros
        rules, horizon, ttl = self._rules, self._horizon_us, self._ttl_us
        idle = {a: b.idle_after_us(horizon, ttl, rules) for a, b in books.items()}
        kept = Books((a, b) for a, b in books.items() if idle[a] > now)
        if kept:
            _BOOKS_LEDGER.write(key, kept, None, token, token_state, log)  # pruned: written whole
            # the latest of them: one firing per round (a watermark at the end of a bounded
            # input fires the timer at once, again and again, if it moved in small steps)
            expiry.set(Timestamp(micros=max(idle[a] for a in kept)))
        else:
            _BOOKS_LEDGER.clear(key, token_state, log)


class StreamingPayments(beam.PTransform):
    """Raw payloads (a stream) -> rows, alerts, dead letters, each decided on arrival."""

    def __init__(
        self,
        rules: Union[Rule, Rules],
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
        self._rules = as_rules(rules)
        self._max_future_skew_s = max_future_skew_s
        self._horizon_s = horizon_s
        self._ttl_s = history_ttl_s
        self._shards = shards
        self._global = dedup_scope == "global"

    def expand(self, raw: beam.PCollection[RawPayload]) -> StreamingOutputs:  # type: ignore[override]
        lists = beam.typehints.Tuple[Any, ShardRecords]
        parsed = raw | "ParseAndMask" >> beam.ParDo(
            _ParseAndMaskFn(self._mask, self._max_future_skew_s, self._shards)
        ).with_outputs(DEAD_LETTER_TAG, main="masked")
        parsed.masked.element_type = lists
        id_shards = (self._shards or DEFAULT_SHARDS) if self._global else 0
        decided = parsed.masked | "Accounts" >> beam.ParDo(
            _AccountsFn(self._rules, self._horizon_s, self._ttl_s, id_shards)
        ).with_outputs(DEAD_LETTER_TAG, ALERTS_TAG, main="transactions")
        dead = [parsed[DEAD_LETTER_TAG], decided[DEAD_LETTER_TAG]]
        rows = decided.transactions
        if self._global:
            rows.element_type = lists
            checked = rows | "Ids" >> beam.ParDo(_IdsFn(self._horizon_s)).with_outputs(
                DEAD_LETTER_TAG, main="stored"
            )
            dead.append(checked[DEAD_LETTER_TAG])
            rows = checked.stored
        return StreamingOutputs(
            transactions=rows,
            alerts=decided[ALERTS_TAG],
            dead_letters=tuple(dead) | "DeadLetters" >> beam.Flatten(),
        )
