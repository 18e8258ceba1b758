"""The books: what paystream remembers of an account and of transaction ids, and each
payment decided by them, in the order read, in one call.

    AccountBook.decide(payment, ...)  ->  (verdict, enriched row, alerts)

An account's payments are decided in the order they are read. The producer keys every
record by its account (``simulator/producer.py``), so one account's payments share a
Kafka partition and are read in its order: a replay reads them in the same order and
gives the same rows, the same alerts and the same alert ids. A batch run decides them in
that order too (sorted by where they were read: partition and offset, or file and line),
through the same ``AccountBook`` (``transforms/batch.py``), so both drivers give equal
results.

What one payment does, in order (``AccountBook.decide``):

* **Dedup** (``SeenIds``, the one dedup kernel). A transaction id seen within
  ``horizon_us`` of the latest event time seen before it is a copy: the same fingerprint
  is a duplicate, dropped and counted; a different one is a conflict, which goes to the
  dead letters. A copy of an id seen on *another* account is caught by the id check, a
  ``SeenIds`` per group of transaction ids that marks each id with its account
  (``check_ids``).
* **Features.** ``kernels.features.features`` against the payments decided before it
  (the history restarts after ``history_ttl_us`` of event time without payments).
* **Rules.** Every fraud rule of the run counts the payment into its state of the
  account and may raise an alert at once (``kernels/rules.py``; velocity:
  ``kernels/velocity.py``).
* **The clock.** The account's clock is the latest event time it has seen; a rule is
  told the clock before the payment, so a late payment is judged against it.

Nothing waits for the watermark: rows and alerts leave the step as soon as the payment
is decided. The watermark only frees memory: the streaming driver drops an account's
book once the watermark is ``idle_after_us`` past its clock (a batch run never drops
one; the two differ only for a payment that arrives after its account was idle that
long).
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterable, Iterator, List, NamedTuple, Optional, Tuple, Union, cast

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
    "check_ids",
    "conflict_letter",
    "decide_each",
    "decide_in_order",
    "read_order",
]

_US = 1_000_000
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
    """

    __slots__ = ("seen", "clock_us")

    def __init__(self) -> None:
        self.seen: Dict[str, Tuple[str, int]] = {}  # id -> (mark, when it was seen)
        self.clock_us = -(2**62)

    def check(self, txn_id: str, mark: str, event_time_us: int, horizon_us: int) -> str:
        """``NEW`` (now remembered), ``DUPLICATE`` (same mark) or ``CONFLICT``."""
        clock = self.clock_us
        first = self.seen.get(txn_id)
        if first is not None and first[1] >= clock - horizon_us:
            return DUPLICATE if first[0] == mark else CONFLICT
        self.seen[txn_id] = (mark, event_time_us if event_time_us > clock else clock)
        if event_time_us > clock:
            self.clock_us = event_time_us
        return NEW

    def prune(self, horizon_us: int) -> None:
        """Forget the ids the clock has left behind by more than the horizon."""
        oldest = self.clock_us - horizon_us
        self.seen = {k: v for k, v in self.seen.items() if v[1] >= oldest}

    def __getstate__(self) -> Tuple[Dict[str, Tuple[str, int]], int]:
        return self.seen, self.clock_us

    def __setstate__(self, state: Tuple[Dict[str, Tuple[str, int]], int]) -> None:
        self.seen, self.clock_us = state


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
            self.ids.seen, self.history, held, runs, self.ids.clock_us = state
            self.rule_states = [[held, runs]]
            return
        self.ids.seen, self.history, self.rule_states, self.ids.clock_us = state

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
        if at > clock and len(self.ids.seen) > 16:
            self.ids.prune(horizon_us)  # an account's few ids; the id check prunes by its timer
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
    and offset, or file and line), whatever the list's order: what the batch driver does."""
    return decide_each({}, sorted(records, key=read_order), rules, horizon_us, history_ttl_us)


def read_order(record: Tuple[Any, ...]) -> Any:
    """Where a (payment, ...) pair was read: its ``SourceRef``."""
    return record[0].source


def check_ids(
    ids: SeenIds, rows: Iterable[EnrichedTransaction], horizon_us: int
) -> Tuple[List[EnrichedTransaction], int, List[EnrichedTransaction]]:
    """(rows to store, copies seen again, conflicts) for rows checked in this order
    against ids marked by their account: an id stored for another account is a
    conflict; for the same account (a replay after the account's book was dropped) it
    is not stored again."""
    kept: List[EnrichedTransaction] = []
    conflicts: List[EnrichedTransaction] = []
    again = 0
    for row in rows:
        txn = row.txn
        verdict = ids.check(txn.transaction_id, txn.account_id, txn.event_time_us, horizon_us)
        if verdict is NEW:
            kept.append(row)
        elif verdict is DUPLICATE:
            again += 1
        else:
            conflicts.append(row)
    return kept, again, conflicts
