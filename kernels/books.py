"""The books: what paystream remembers of an account and of transaction ids, and each
payment decided by them, in one call.

    AccountBook.decide(payment, ...)  ->  (verdict, enriched row, alerts)

**The order of decisions.** A book decides its account's payments one after another;
which order depends on the run:

* **A streaming run** decides them in the order they arrive (``decide_each``). The
  producer keys every record by its account (``simulator/producer.py``), so one
  account's payments share a Kafka partition and arrive in its order: a replay gives the
  same rows, alerts and alert ids. A payment that arrives late is judged by the rules'
  lateness (``--allowed_lateness_s``), and an id is remembered for ``horizon_us`` of
  event time.
* **A bounded run** (the batch driver) decides them in event-time order
  (``decide_in_event_time``; ``event_order``: ties by transaction id, then content, then
  read order), with a horizon that never forgets (``FOREVER``): nothing is late, every
  copy in the input is caught, and the answer depends on the input, not on the order of
  its lines.

The two give the same tables when each account's payments are read in event-time order
(no two of one account at the same time, but copies), every copy of an id comes within
the horizon, and a transaction id used by another account is read after the first use
(``tests/test_batch_paths.py``).

What one payment does, in order (``AccountBook.decide``):

* **Dedup** (``SeenIds``, the one dedup kernel). A transaction id seen within
  ``horizon_us`` of the latest event time seen before it is a copy: the same fingerprint
  is a duplicate, dropped and counted; a different one is a conflict, which goes to the
  dead letters. A copy of an id seen on *another* account is caught by the id check, a
  ``SeenIds`` per group of transaction ids that marks each id with its account
  (``check_ids``). A copy the books have forgotten is caught where the rows are written
  (``settle_against_stored``).
* **Features.** ``kernels.features.features`` against the payments decided before it
  (the history restarts after ``history_ttl_us`` of event time without payments).
* **Rules.** Every fraud rule of the run counts the payment into its state of the
  account and may raise an alert at once (``kernels/rules.py``; velocity:
  ``kernels/velocity.py``).
* **The clock.** The account's clock is the latest event time it has seen; a rule is
  told the clock before the payment, so a late payment is judged against it.

Nothing waits for the watermark: rows and alerts leave the step as soon as the payment
is decided. The watermark only frees memory: the streaming driver drops an account's
book once the watermark is ``idle_after_us`` past its clock.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import deque
from typing import Any, Deque, Dict, Iterable, Iterator, List, NamedTuple, Optional, Tuple, Union, cast

from kernels.deadletter import make_dead_letter
from kernels.features import AccountHistory, features
from kernels.masking import mask_email, mask_pan, mask_phone
from kernels.rules import Rules
from schemas.records import DeadLetter, EnrichedTransaction, FraudAlert, MaskedTransaction, Transaction

__all__ = [
    "CONFLICT",
    "DEDUP_SCOPES",
    "DUPLICATE",
    "NEW",
    "AccountBook",
    "Pending",
    "SeenIds",
    "FOREVER",
    "check_ids",
    "conflict_letter",
    "content_of",
    "settle_against_stored",
    "stored_conflict_letter",
    "decide_each",
    "decide_in_event_time",
    "decide_in_order",
    "event_order",
    "id_mark",
    "read_order",
    "row_event_order",
]

_US = 1_000_000
FOREVER = 2**62  # a horizon that never forgets: a bounded run's dedup covers its whole input
NEW, DUPLICATE, CONFLICT = "new", "duplicate", "conflict"
DEDUP_SCOPES = ("global", "account")  # where a copy of a transaction id is looked for


class Pending(NamedTuple):
    """A masked payment on its way to its account's book, with its content's fingerprint
    (which tells an exact copy from a conflicting one)."""

    txn: MaskedTransaction
    fingerprint: str


def conflict_letter(txn: Union[MaskedTransaction, Transaction], where: str) -> DeadLetter:
    """The dead letter of a copy whose id was seen before with different content (the
    payment masked, if it is not yet)."""
    if type(txn) is MaskedTransaction:
        masked = cast(MaskedTransaction, txn)
        card, email, phone = masked.card_masked, masked.email_masked, masked.phone_masked
    else:  # anything else is masked here: a raw field never reaches a dead letter
        raw = cast(Transaction, txn)
        card, email, phone = mask_pan(raw.card_number), mask_email(raw.email), mask_phone(raw.phone)
    summary = json.dumps(
        {
            "transaction_id": txn.transaction_id,
            "account_id": txn.account_id,
            "amount_minor": txn.amount_minor,
            "currency": txn.currency,
            "card_number": card,
            "email": email,
            "phone": phone,
            "merchant_id": txn.merchant_id,
            "event_time_us": txn.event_time_us,
        },
        sort_keys=True,
    )
    return make_dead_letter(
        "dedup",
        "conflicting_duplicate",
        f"transaction_id seen before with different content{where}",
        txn.source,
        summary,
        txn.transaction_id,
    )


class SeenIds:
    """Transaction ids seen within a horizon of event time, each with a mark that tells a
    copy from a conflict (an account's book marks an id with the payment's fingerprint;
    the id check with its account).

    ``clock_us`` is the latest event time seen. An id is a copy while its first sighting
    is within ``horizon_us`` of the clock as it was before the copy; an id is remembered
    from when it was seen (its event time, or the clock if that is later), so a payment
    dated long before the clock is still caught when sent again.

    Forgetting costs what is forgotten: an id is remembered from ``max(event time,
    clock)``, which never decreases, so the ids in the order they were seen are also in
    the order they will be forgotten. Each time the clock moves on, the ids it has left
    behind by more than the horizon go, oldest first, and the rest are not looked at: the
    ids held are those of one horizon, never two.
    """

    __slots__ = ("seen", "clock_us", "_order")

    def __init__(self) -> None:
        self.seen: Dict[str, Tuple[str, int]] = {}  # id -> (mark, when it was seen)
        self.clock_us = -(2**62)
        self._order: Deque[str] = deque()  # the ids in the order they were seen

    def check(self, txn_id: str, mark: str, event_time_us: int, horizon_us: int) -> str:
        """``NEW`` (now remembered), ``DUPLICATE`` (same mark) or ``CONFLICT``."""
        clock = self.clock_us
        first = self.seen.get(txn_id)
        if first is not None and first[1] >= clock - horizon_us:
            return DUPLICATE if first[0] == mark else CONFLICT
        self.seen[txn_id] = (mark, event_time_us if event_time_us > clock else clock)
        self._order.append(txn_id)
        if event_time_us > clock:
            self.clock_us = event_time_us
            if horizon_us < FOREVER:
                self._forget_before(event_time_us - horizon_us)
        return NEW

    def _forget_before(self, oldest: int) -> None:
        order, seen = self._order, self.seen
        while order:
            txn_id = order[0]
            entry = seen.get(txn_id)
            if entry is not None and entry[1] >= oldest:
                return
            order.popleft()
            if entry is not None:
                del seen[txn_id]

    def prune(self, horizon_us: int) -> None:
        """Forget the ids the clock has left behind by more than the horizon."""
        oldest = self.clock_us - horizon_us
        self.restore({k: v for k, v in self.seen.items() if v[1] >= oldest}, self.clock_us)

    def restore(self, seen: Dict[str, Tuple[str, int]], clock_us: int) -> None:
        """Hold ``seen`` (read back from state), in the order the ids are forgotten."""
        if any(a[1] > b[1] for a, b in zip(seen.values(), itertools.islice(seen.values(), 1, None))):
            seen = dict(sorted(seen.items(), key=_seen_at))
        self.seen, self.clock_us, self._order = seen, clock_us, deque(seen)

    def __getstate__(self) -> Tuple[Dict[str, Tuple[str, int]], int]:
        return self.seen, self.clock_us

    def __setstate__(self, state: Tuple[Dict[str, Tuple[str, int]], int]) -> None:
        self.restore(*state)


def _seen_at(item: Tuple[str, Tuple[str, int]]) -> int:
    return item[1][1]


class AccountBook:
    """Everything paystream remembers of one account: the ids it has seen (and its clock,
    the latest event time), its feature history, and the state each fraud rule keeps of
    it (``kernels/rules.py``)."""

    __slots__ = ("ids", "history", "rule_states")

    def __init__(self) -> None:
        self.ids = SeenIds()
        self.history = AccountHistory()
        self.rule_states: List[Any] = []  # one per rule of the run, in its order

    def __getstate__(self) -> Tuple[Any, ...]:
        return self.ids.seen, self.history, self.rule_states, self.ids.clock_us

    def __setstate__(self, state: Tuple[Any, ...]) -> None:
        self.ids = SeenIds()
        if len(state) == 5:  # a book checkpointed before the rule seam: velocity's held and runs
            seen, self.history, held, runs, clock = state
            self.rule_states = [[held, runs]]
        else:
            seen, self.history, self.rule_states, clock = state
        self.ids.restore(seen, clock)

    def decide(
        self,
        txn: MaskedTransaction,
        fingerprint: str,
        rules: Rules,
        horizon_us: int,
        history_ttl_us: int,
    ) -> Tuple[str, Optional[EnrichedTransaction], Tuple[FraudAlert, ...]]:
        """This payment's verdict (``NEW``, ``DUPLICATE``, ``CONFLICT``); for a new one its
        row and the alerts its rules raise, in the rules' order."""
        at = txn.event_time_us
        clock = self.ids.clock_us
        verdict = self.ids.check(txn.transaction_id, fingerprint, at, horizon_us)
        if verdict is not NEW:
            return verdict, None, ()
        history = self.history
        if history.last_event_time_us is not None and at - history.last_event_time_us > history_ttl_us:
            history = self.history = AccountHistory()  # idle longer than the TTL: a fresh history
        row = features(txn, history)
        history.push(txn)
        states = self.rule_states
        if len(states) != len(rules):
            states = self.rule_states = [rule.new_state() for rule in rules]
        alerts: Tuple[FraudAlert, ...] = ()
        for rule, state in zip(rules, states):
            alert = rule.observe(state, txn, clock)
            if alert is not None:
                alerts += (alert,)
        return NEW, row, alerts

    def idle_after_us(self, horizon_us: int, history_ttl_us: int, rules: Rules) -> int:
        """After this event time nothing of the account can change a decision but a copy
        or a late payment: the book may be dropped."""
        return self.ids.clock_us + max(horizon_us, history_ttl_us, rules.keep_us())


def decide_each(
    books: Dict[str, AccountBook],
    payments: Iterable[Tuple[MaskedTransaction, str]],
    rules: Rules,
    horizon_us: int,
    history_ttl_us: int,
    changed: Optional[Dict[str, AccountBook]] = None,
) -> Iterator[Tuple[str, MaskedTransaction, Optional[EnrichedTransaction], Tuple[FraudAlert, ...]]]:
    """Each (payment, fingerprint) decided by its account's book in ``books``, in the
    order given; a missing book is made. ``changed``, when given, gets every book used."""
    for txn, fingerprint in payments:
        book = books.get(txn.account_id)
        if book is None:
            book = books[txn.account_id] = AccountBook()
        if changed is not None:
            changed[txn.account_id] = book
        verdict, row, alerts = book.decide(txn, fingerprint, rules, horizon_us, history_ttl_us)
        yield verdict, txn, row, alerts


def decide_in_order(
    records: Iterable[Tuple[MaskedTransaction, str]],
    rules: Rules,
    horizon_us: int,
    history_ttl_us: int,
) -> Iterator[Tuple[str, MaskedTransaction, Optional[EnrichedTransaction], Tuple[FraudAlert, ...]]]:
    """A complete list decided by fresh books in the order read (``SourceRef``: partition
    and offset, or file and line), whatever the list's order: what the streaming driver
    does with payments that arrive in the order read."""
    return decide_each({}, sorted(records, key=read_order), rules, horizon_us, history_ttl_us)


def read_order(record: Tuple[Any, ...]) -> Any:
    """Where a (payment, ...) pair was read: its ``SourceRef``."""
    return record[0].source


def event_order(record: Tuple[MaskedTransaction, str]) -> Tuple[Any, ...]:
    """A (payment, fingerprint) pair's place in a bounded run: event time, then transaction
    id, then content (the fingerprint), then where it was read. Only exact copies tie up
    to the last, and they give the same row: the order of the lines changes nothing."""
    txn = record[0]
    return txn.event_time_us, txn.transaction_id, record[1], txn.source


def row_event_order(row: EnrichedTransaction) -> Tuple[Any, ...]:
    """A row's place in a bounded run's id check: event time, transaction id, account,
    where it was read (a transaction id reaches the id check once per account)."""
    txn = row.txn
    return txn.event_time_us, txn.transaction_id, txn.account_id, txn.source


def decide_in_event_time(
    records: Iterable[Tuple[MaskedTransaction, str]], rules: Rules, history_ttl_us: int
) -> Iterator[Tuple[str, MaskedTransaction, Optional[EnrichedTransaction], Tuple[FraudAlert, ...]]]:
    """A complete list decided by fresh books in event-time order (``event_order``),
    remembering every id (``FOREVER``): what the batch driver does with a bounded input."""
    return decide_each({}, sorted(records, key=event_order), rules, FOREVER, history_ttl_us)


def check_ids(
    ids: SeenIds, rows: Iterable[EnrichedTransaction], horizon_us: int
) -> Tuple[List[EnrichedTransaction], int, List[Tuple[EnrichedTransaction, str]]]:
    """(rows to store, copies seen again, conflicts with where they conflict) for rows
    checked in this order against ids marked by their account and content
    (``id_mark``): an id stored for another account, or for this account with other
    content (a copy its account's book had forgotten), is a conflict; with the same
    account and content it is a copy, not stored again (a replay after the account's
    book was dropped)."""
    kept: List[EnrichedTransaction] = []
    conflicts: List[Tuple[EnrichedTransaction, str]] = []
    again = 0
    seen = ids.seen
    for row in rows:
        txn = row.txn
        mark = id_mark(txn)
        verdict = ids.check(txn.transaction_id, mark, txn.event_time_us, horizon_us)
        if verdict is NEW:
            kept.append(row)
        elif verdict is DUPLICATE:
            again += 1
        else:
            first = seen[txn.transaction_id][0]
            if first == txn.account_id:  # marked by its account alone (a book of an older version)
                again += 1
                continue
            same_account = first.partition(_MARK_SEP)[0] == txn.account_id
            conflicts.append((row, " on this account" if same_account else " for another account"))
    return kept, again, conflicts


_MARK_SEP = "\x1f"


def id_mark(txn: MaskedTransaction) -> str:
    """How the id check marks a transaction id: the account, and a digest of the content."""
    content = (
        f"{txn.amount_minor}|{txn.currency}|{txn.merchant_id}|{txn.merchant_category}|{txn.country}|"
        f"{txn.event_time_us}"
    )
    return f"{txn.account_id}{_MARK_SEP}{hashlib.blake2b(content.encode(), digest_size=8).hexdigest()}"


# --- the warehouse's own check --------------------------------------------------------
# The books forget an id after the horizon; the warehouse does not. Every payment row is
# settled against the rows the table holds before it is written, on what its content
# fingerprint covers (``kernels.parse``): the same content is a copy, counted; other
# content a conflict, dead-lettered.

Content = Tuple[str, int, str, str, str, str, int]


def content_of(txn: MaskedTransaction) -> Content:
    """What tells an exact copy from a conflicting one: the fields the payment's
    fingerprint hashes, but for its id (``kernels.parse._fingerprint``), all stored in
    ``payment_transactions``."""
    return (
        txn.account_id,
        txn.amount_minor,
        txn.currency,
        txn.merchant_id,
        txn.merchant_category,
        txn.country,
        txn.event_time_us,
    )


def settle_against_stored(
    rows: Iterable[EnrichedTransaction], stored: Dict[str, Content]
) -> Tuple[List[EnrichedTransaction], int, List[EnrichedTransaction]]:
    """(rows to write, exact copies, conflicts) for rows about to be written to a table
    that holds ``stored`` (transaction id -> ``content_of`` its row), in this order; the
    rows to write are added to ``stored``, so a second copy in ``rows`` is settled
    against the first."""
    new: List[EnrichedTransaction] = []
    conflicts: List[EnrichedTransaction] = []
    copies = 0
    for row in rows:
        txn = row.txn
        content = content_of(txn)
        first = stored.get(txn.transaction_id)
        if first is None:
            stored[txn.transaction_id] = content
            new.append(row)
        elif first == content:
            copies += 1
        else:
            conflicts.append(row)
    return new, copies, conflicts


def stored_conflict_letter(txn: MaskedTransaction) -> DeadLetter:
    """The dead letter of a row whose id the warehouse holds with other content."""
    return conflict_letter(txn, " in the warehouse (beyond the dedup horizon)")
