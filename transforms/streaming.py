"""The streaming driver: the shared steps with the books in keyed state, on arrival.

    raw payloads
      -> ParseAndMask   each payload parsed and masked as it comes; a bundle's payments
                        leave as one list per key, a stable group of accounts
                        (``account_keys``; 0: a key per account)         -> dead letters
      -> Accounts       each payment decided by its account's book in ``process()``;
                        the key's books kept as a ledger (``_Ledger``)   -> alerts,
                                                                            dead letters
      -> Ids            (``dedup_scope="global"``) one ``SeenIds`` per group of
                        transaction ids, on the rows                     -> dead letters
      -> rows

The step bodies are the batch driver's (``transforms/steps.py``). A key's books are kept
as a ledger: a log of the books each bundle changed, read back only when this process
has no current copy, so a bundle writes what it changed, not the whole group; the log is
compacted once its changes outweigh the whole value. The books are kept pickled
(``Books``), and the ids are forgotten as the clock passes their horizon
(``kernels.books.SeenIds``).

Order: an account's payments reach its step in the order of their Kafka partition: the
source's subtask for that partition parses them and sends them down one channel. The id
check comes after the account step, not before it: between two keyed steps an account's
payments would travel through different subtasks (one per id group) and lose that
order. The price: a copy sent with another account has been counted in that account's
features and windows before its row is refused.

Expiry needs no timer per payment: each key has one event-time timer, set when its
state is created and moved forward when it fires, that drops the books whose account
has been idle past ``AccountBook.idle_after_us`` and is set again for the latest of the
books it kept; the id check's timer frees the ids of a group that no payment reaches
any more.

What a runner does with this: docs/performance.md, "Streaming on Flink".
"""

from __future__ import annotations

import io
import itertools
import pickle
import random
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import apache_beam as beam
from apache_beam.coders import BytesCoder, PickleCoder
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from kernels.books import AccountBook, Pending, SeenIds, check_ids, decide_each
from kernels.parse import RawPayload
from kernels.rules import Rules
from schemas.records import EnrichedTransaction
from transforms import telemetry
from transforms.lists import RecordList, group_of
from transforms.steps import (
    ALERTS_TAG,
    DEAD_LETTER_TAG,
    DecideCounts,
    EngineSettings,
    ParseStepFn,
    PaymentsDriver,
    decided_outputs,
    id_check_outputs,
)

__all__ = ["StreamingPayments"]

_US = 1_000_000


# id(list) -> (items weighed, their weight, id of the first item): a ledger's cached log is
# one list that Beam extends in place and weighs again at every append
_WEIGHED: Dict[int, Tuple[int, int, int]] = {}
_WEIGHED_MAX = 4096


def _weigh_state_cheaply() -> None:
    """Make Beam's state cache weigh our state values by a cheap estimate.

    The cache weighs a key's whole cached value again at every write (a bag append puts
    the extended list back), with ``objsize``, which gathers the globals of every loaded
    module first: about 1 ms per call with Beam[gcp] loaded (measured in
    bench/streaming.py: the cache on was slower than off). Our values are the ledgers'
    entries (pickled bytes) and tokens (tuples of ints): those are weighed by their
    length; anything else by Beam's own function. A log is weighed once per entry: the
    weight of the entries already weighed is kept (``_WEIGHED``), or an append would cost
    in proportion to the whole log (at 2,000 payments/s its share of the Python
    worker's time grew fivefold from minute 1 to minute 4). Done once per worker process,
    at a step's setup.
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
            if type(items[0]) is bytes:
                return _weigh_log(items) or deep(*objs)
            if all(type(item) is tuple and len(item) in (2, 4) for item in items):
                return 64 + 160 * len(items)
        return deep(*objs)

    get_deep_size.paystream_weigher = True  # type: ignore[attr-defined]
    statecache.get_deep_size = get_deep_size


def _weigh_log(items: List[Any]) -> int:
    """The weight of a list of bytes, counting only the items not weighed before (0: not
    all bytes)."""
    known = _WEIGHED.get(id(items))
    if known is not None and known[0] <= len(items) and known[2] == id(items[0]):
        done, weight = known[0], known[1]
    else:
        done, weight = 0, 64
    for item in itertools.islice(items, done, None):
        if type(item) is not bytes:
            return 0
        weight += 33 + len(item)
    if len(_WEIGHED) >= _WEIGHED_MAX:
        _WEIGHED.clear()
    _WEIGHED[id(items)] = (len(items), weight, id(items[0]))
    return weight


# --- keyed state as a ledger -----------------------------------------------------------

_FULL, _CHANGES = 0, 1
# A key's log is compacted into one whole value once the changes logged since the last
# whole value weigh more than it (and more than this floor): writing the whole value
# then costs no more than the changes did, so a bundle's cost stays proportional to the
# bundle, and the log holds at most about twice the live state.
COMPACT_FLOOR = 256 * 1024
# (step, key) -> (token, value): each key's current value as this process last wrote it.
_CURRENT: Dict[Tuple[str, Any], Tuple[int, Any]] = {}


class _Unpickler(pickle.Unpickler):
    """Reads ledgers written before the kernels moved out of ``transforms`` too."""

    _MOVED = {
        ("transforms.accounts", "AccountBook"): ("kernels.books", "AccountBook"),
        ("transforms.accounts", "IdBook"): ("kernels.books", "SeenIds"),  # same state
        ("transforms.enrich", "AccountHistory"): ("kernels.features", "AccountHistory"),
    }

    def find_class(self, module: str, name: str) -> Any:
        return super().find_class(*self._MOVED.get((module, name), (module, name)))


def _loads(blob: bytes) -> Any:
    return _Unpickler(io.BytesIO(blob)).load()


class _Ledger:
    """A key's state value kept as a log of changes, read through this process's own copy.

    Written back whole, a key's books cost every bundle in proportion to all the books
    of the key, not to the payments of the bundle: after a minute at 1,000 payments/s
    they were 9 MB to pickle (0.27 s) for bundles of a few hundred payments, and the
    figure grows with the accounts. So each bundle appends to the key's log (a bag) only
    the entries it changed, pickled then (a snapshot), and writes a token naming the
    new version; this process keeps the value it wrote under that token. A bundle that
    finds its token current uses the kept value; any other (a new process, a restore, a
    retried bundle whose first attempt was not committed) replays the log. Once the
    changes logged outweigh the last whole value (``COMPACT_FLOOR``), the log is
    replaced by the whole value.

    ``apply(value, changes)`` merges one entry of changes into a value; ``settle(value)``,
    when given, finishes a value replayed from the log (and returns it).
    """

    LOG = BagStateSpec("ledger", BytesCoder())
    TOKEN = ReadModifyWriteStateSpec("ledger_token", PickleCoder())

    def __init__(
        self, step: str, apply: Callable[[Any, Any], None], settle: Optional[Callable[[Any], Any]] = None
    ) -> None:
        self._step = step
        self._apply = apply
        self._settle = settle

    def read(self, key: Any, token_state: Any, log_state: Any) -> Tuple[Any, Optional[Tuple[int, ...]]]:
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
            kind, body = _loads(blob)
            if kind == _FULL:
                value = body
            else:
                self._apply(value, body)
        if self._settle is not None and value is not None:
            value = self._settle(value)
        return value, token

    def write(
        self,
        key: Any,
        value: Any,
        changes: Any,
        token: Optional[Tuple[int, ...]],
        token_state: Any,
        log_state: Any,
    ) -> None:
        """Record ``value``, of which ``changes`` (None: all of it) is what changed.

        The token is (version, entries in the log, bytes logged since the whole value,
        bytes of the whole value); a token of an older version (two fields) makes the
        next write whole."""
        entry = None
        if changes is not None and token is not None and len(token) == 4:
            _, entries, logged, whole = token
            entry = pickle.dumps((_CHANGES, changes), protocol=pickle.HIGHEST_PROTOCOL)
            logged += len(entry)
            if logged > max(whole, COMPACT_FLOOR):
                entry = None
        if entry is None:
            log_state.clear()
            whole = len(blob := pickle.dumps((_FULL, value), protocol=pickle.HIGHEST_PROTOCOL))
            log_state.add(blob)
            entries, logged = 1, 0
        else:
            log_state.add(entry)
            entries += 1
        new = random.getrandbits(62)
        token_state.write((new, entries, logged, whole))
        _CURRENT[(self._step, key)] = (new, value)

    def clear(self, key: Any, token_state: Any, log_state: Any) -> None:
        log_state.clear()
        token_state.clear()
        _CURRENT.pop((self._step, key), None)


class Books(dict):
    """A key's account books, each pickled (account id -> the bytes of its ``AccountBook``).

    Kept as bytes, a book costs its pickled size in memory (about a third of the
    objects' size), the collector never walks it, and the whole value pickles at the
    speed of a copy; a bundle unpickles the books its payments need."""

    __slots__ = ()


def _apply_books(books: Any, changes: Dict[str, Any]) -> None:
    books.update(changes)


def _settle_books(books: Dict[str, Any]) -> Books:
    """Books replayed from a log: those written as objects (by an older version) pickled."""
    return Books((account, book if type(book) is bytes else _dumps(book)) for account, book in books.items())


def _dumps(book: AccountBook) -> bytes:
    return pickle.dumps(book, protocol=pickle.HIGHEST_PROTOCOL)


def _apply_ids(ids: SeenIds, changes: Tuple[Dict[str, Tuple[str, int]], int]) -> None:
    seen, clock_us = changes
    ids.seen.update(seen)
    ids.clock_us = max(ids.clock_us, clock_us)


def _settle_ids(ids: SeenIds) -> SeenIds:
    ids.restore(ids.seen, ids.clock_us)  # in the order they are forgotten
    return ids


_BOOKS_LEDGER = _Ledger("accounts", _apply_books, _settle_books)
_IDS_LEDGER = _Ledger("ids", _apply_ids, _settle_ids)


def _key(value: str, keys: int) -> Any:
    return group_of(value, keys) if keys else value


class _Lists:
    """A bundle's payments, one list per key, and the earliest timestamp among its inputs.

    Between two steps, a bundle's payments travel as one ``(key, RecordList)`` element
    per key, emitted when the bundle finishes: the runner then moves, encodes and keys
    tens of elements per bundle instead of one per payment (on Flink the JVM's side of
    each element cost more than our Python, ``bench/streaming.py``). A key's list keeps
    the order the payments were read in, and a key gets one list per bundle: a runner
    need not keep the order of two elements of one key from one bundle (the streaming
    DirectRunner does not), so lists sent before the bundle's end could reorder an
    account's payments. The lists leave stamped with the earliest input timestamp of the
    bundle, which the runner's watermark has not yet passed.
    """

    __slots__ = ("lists", "earliest")

    def __init__(self) -> None:
        self.lists: Dict[Any, RecordList] = {}
        self.earliest: Optional[Timestamp] = None

    def add(self, key: Any, item: Any, timestamp: Timestamp) -> None:
        part = self.lists.get(key)
        if part is None:
            part = self.lists[key] = RecordList()
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


class _ParseAndMaskFn(ParseStepFn):
    """Each payload parsed and masked as it comes; lists by account key leave at the bundle's end."""

    def start_bundle(self) -> None:
        super().start_bundle()
        self._out = _Lists()

    def process(self, element: RawPayload, timestamp: Any = beam.DoFn.TimestampParam) -> Iterable[Any]:
        raw, source = element
        out = self._body.parse(raw, source, int(time.time() * _US))
        if type(out) is Pending:
            self._out.add(_key(out.txn.account_id, self._groups), out, timestamp)
        else:
            yield TaggedOutput(DEAD_LETTER_TAG, out)

    def finish_bundle(self) -> Iterable[WindowedValue]:
        super().finish_bundle()
        yield from self._out.drain()


class _AccountsFn(beam.DoFn):
    """Every payment of a key's accounts decided in ``process()``; one expiry timer per key."""

    LOG, TOKEN = _Ledger.LOG, _Ledger.TOKEN
    EXPIRY = TimerSpec("accounts_expiry", TimeDomain.WATERMARK)

    def __init__(self, rules: Rules, settings: EngineSettings) -> None:
        self._rules = rules
        self._settings = settings
        # > 0: rows go on to the id check, in lists by id group
        self._id_groups = settings.id_keys if settings.global_ids else 0

    def setup(self) -> None:
        _weigh_state_cheaply()
        for rule in self._rules:  # each rule's alert rate reads 0, not nothing, before its first alert
            telemetry.declare("fraud_alerts", rule=rule.kind)

    def start_bundle(self) -> None:
        self._counts = DecideCounts()
        self._rows = _Lists()

    def process(
        self,
        element: Tuple[Any, List[Pending]],
        timestamp: Any = beam.DoFn.TimestampParam,
        log: Any = beam.DoFn.StateParam(LOG),
        token_state: Any = beam.DoFn.StateParam(TOKEN),
        expiry: Any = beam.DoFn.TimerParam(EXPIRY),
    ) -> Iterable[Any]:
        key, payments = element
        blobs, token = _BOOKS_LEDGER.read(key, token_state, log)
        fresh = blobs is None
        if blobs is None:
            blobs = Books()
        books: Dict[str, AccountBook] = {}
        for pending in payments:
            account = pending.txn.account_id
            if account not in books and account in blobs:
                books[account] = pickle.loads(blobs[account])
        id_groups, rows = self._id_groups, self._rows
        settings = self._settings
        decided = decide_each(books, payments, self._rules, settings.horizon_us, settings.history_ttl_us)
        for out in decided_outputs(decided, self._counts):
            if type(out) is TaggedOutput:
                yield out
            elif id_groups:
                rows.add(group_of(out.txn.transaction_id, id_groups), out, timestamp)
            else:
                yield out
        changed = {account: _dumps(book) for account, book in books.items()}
        blobs.update(changed)
        if fresh and changed:
            expiry.set(Timestamp(micros=self._idle_after(books[payments[-1].txn.account_id])))
        _BOOKS_LEDGER.write(key, blobs, changed, token, token_state, log)

    def _idle_after(self, book: AccountBook) -> int:
        settings = self._settings
        return book.idle_after_us(settings.horizon_us, settings.history_ttl_us, self._rules)

    def finish_bundle(self) -> Iterable[WindowedValue]:
        self._counts.flush()
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
        blobs, token = _BOOKS_LEDGER.read(key, token_state, log)
        if blobs is None:
            return
        now = fired_at.micros
        idle = {a: self._idle_after(pickle.loads(b)) for a, b in blobs.items()}
        kept = Books((a, b) for a, b in blobs.items() if idle[a] > now)
        if kept:
            _BOOKS_LEDGER.write(key, kept, None, token, token_state, log)  # pruned: written whole
            # the latest of them: one firing per round (a watermark at the end of a bounded
            # input fires the timer at once, again and again, if it moved in small steps)
            expiry.set(Timestamp(micros=max(idle[a] for a in kept)))
        else:
            _BOOKS_LEDGER.clear(key, token_state, log)


class _IdsFn(beam.DoFn):
    """The id check, on the rows: one ``SeenIds`` per group of transaction ids."""

    LOG, TOKEN = _Ledger.LOG, _Ledger.TOKEN
    EXPIRY = TimerSpec("ids_expiry", TimeDomain.WATERMARK)

    def __init__(self, horizon_us: int) -> None:
        self._horizon_us = horizon_us

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
        ids, token = _IDS_LEDGER.read(key, token_state, log)
        if ids is None:
            ids = SeenIds()
            expiry.set(Timestamp(micros=element[1][0].txn.event_time_us + self._horizon_us))
        kept, again, conflicts = check_ids(ids, element[1], self._horizon_us)
        seen = ids.seen
        marks = ((r.txn.transaction_id, seen.get(r.txn.transaction_id)) for r in kept)
        changes = ({txn_id: mark for txn_id, mark in marks if mark is not None}, ids.clock_us)
        _IDS_LEDGER.write(key, ids, changes, token, token_state, log)
        yield from id_check_outputs(kept, again, conflicts)

    @on_timer(EXPIRY)
    def expire(
        self,
        key: Any = beam.DoFn.KeyParam,
        fired_at: Any = beam.DoFn.TimestampParam,
        log: Any = beam.DoFn.StateParam(LOG),
        token_state: Any = beam.DoFn.StateParam(TOKEN),
        expiry: Any = beam.DoFn.TimerParam(EXPIRY),
    ) -> None:
        ids, token = _IDS_LEDGER.read(key, token_state, log)
        if ids is None:
            return
        ids.clock_us = max(ids.clock_us, fired_at.micros)
        ids.prune(self._horizon_us)
        if ids.seen:
            _IDS_LEDGER.write(key, ids, None, token, token_state, log)  # pruned: written whole
            expiry.set(Timestamp(micros=ids.clock_us + self._horizon_us))
        else:
            _IDS_LEDGER.clear(key, token_state, log)


class StreamingPayments(PaymentsDriver):
    """Raw payloads (a stream) -> rows, alerts, dead letters, each decided on arrival.

    Arguments as ``PaymentsDriver``'s (``transforms/steps.py``); ``settings.account_keys``
    is how many keys the accounts are spread over (0: a key per account).
    """

    def list_type(self) -> Any:
        return beam.typehints.Tuple[Any, RecordList]

    def parse_step(self) -> beam.PTransform:
        settings = self._settings
        fn = _ParseAndMaskFn(self._keys, settings.max_future_skew_s, settings.account_keys)
        return beam.ParDo(fn).with_outputs(DEAD_LETTER_TAG, main="masked")

    def accounts_step(self) -> beam.PTransform:
        fn = _AccountsFn(self._rules, self._settings)
        return beam.ParDo(fn).with_outputs(DEAD_LETTER_TAG, ALERTS_TAG, main="transactions")

    def ids_step(self) -> beam.PTransform:
        return beam.ParDo(_IdsFn(self._settings.horizon_us)).with_outputs(DEAD_LETTER_TAG, main="stored")
