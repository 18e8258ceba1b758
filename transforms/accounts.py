"""Each payment decided as it arrives, by the state of its account: dedup, features,
velocity count and alert, in one step.

    AccountBook.decide(payment)  ->  (verdict, enriched row, alert or None)

An account's payments are decided in the order they are read. The producer keys every
record by its account (``simulator/producer.py``), so one account's payments share a
Kafka partition and are read in its order: a replay reads them in the same order and
gives the same rows, the same alerts and the same alert ids. A batch run decides them in
that order too (sorted by where they were read: partition and offset, or file and line),
through the same ``AccountBook`` (``transforms/bounded.py``), so both give equal results.

What one payment does, in order (``AccountBook.decide``):

* **Dedup.** A transaction id the account has seen within ``horizon_us`` of its latest
  event time is a copy: the same fingerprint is a duplicate, dropped and counted; a
  different one is a conflict, which goes to the dead letters. A copy of an id seen on
  *another* account is caught by ``IdBook`` (see ``AccountSteps``).
* **Features.** ``transforms.enrich.features`` against the payments decided before it
  (the history restarts after ``history_ttl_us`` of event time without payments).
* **Velocity.** The payment is counted into the windows ``SlidingWindows(size, period)``
  assigns it (``window_starts``, checked against Beam's ``SlidingWindows.assign`` in the
  tests). The windows that now hold ``threshold`` payments or more form its *run*. A run
  that touches (within one period) a run already alerted extends it and raises nothing;
  otherwise it raises one alert, at once, on this payment: the crossing payment. The
  alert id is derived from the account, the rule and the run's first window start.
* **Late and out-of-order payments.** The account's clock is the latest event time it
  has seen. A window is closed once its end plus ``allowed_lateness`` is behind that
  clock: a payment is not counted in closed windows (its row is still written, with its
  features). An out-of-order payment inside open windows counts as any other: it can
  complete a run (and be the crossing payment) or extend one.

Nothing waits for the watermark: rows and alerts leave the step as soon as the payment
is decided. The watermark only frees memory: ``AccountSteps`` drops an account's book
once the watermark is ``idle_us`` past its clock (a batch run never drops one; the two
differ only for a payment that arrives after its account was idle that long).
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Tuple, Union

from schemas.records import DeadLetter, EnrichedTransaction, FraudAlert, MaskedTransaction
from transforms import telemetry
from transforms.deadletter import make_dead_letter
from transforms.enrich import AccountHistory, features
from transforms.rules import Rule, Rules, as_rules

__all__ = [
    "AccountBook",
    "IdBook",
    "NEW",
    "DUPLICATE",
    "CONFLICT",
    "Pending",
    "conflict_letter",
    "decide_all_in_order",
    "decide_in_order",
]

_US = 1_000_000
NEW, DUPLICATE, CONFLICT = "new", "duplicate", "conflict"
DEDUP_SCOPES = ("global", "account")  # where a copy of a transaction id is looked for


class Pending(NamedTuple):
    """A masked payment on its way to its account's book, with its content's fingerprint
    (which tells an exact copy from a conflicting one)."""

    txn: MaskedTransaction
    fingerprint: str


def conflict_letter(txn: MaskedTransaction, where: str) -> DeadLetter:
    """The dead letter of a copy whose id was seen before with different content."""
    summary = json.dumps(
        {
            "transaction_id": txn.transaction_id,
            "account_id": txn.account_id,
            "amount_minor": txn.amount_minor,
            "currency": txn.currency,
            "card_number": txn.card_masked,
            "email": txn.email_masked,
            "phone": txn.phone_masked,
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


class IdBook:
    """The ids of a shard of transaction ids: the first copy's fingerprint and account.

    Catches a copy sent again with a *different* account, which the account's own book
    cannot see. ``clock_us`` is the latest event time the shard has seen; an id is
    remembered until the clock is ``horizon_us`` past the clock when it was seen, then
    forgotten (in ``prune``) and no longer caught.
    """

    __slots__ = ("seen", "clock_us")

    def __init__(self) -> None:
        self.seen: Dict[str, Tuple[str, int]] = {}
        self.clock_us = -(2**62)

    def check(self, txn_id: str, fingerprint: str, event_time_us: int, horizon_us: int) -> str:
        first = self.seen.get(txn_id)
        if event_time_us > self.clock_us:
            self.clock_us = event_time_us
        if first is not None and first[1] >= self.clock_us - horizon_us:
            return DUPLICATE if first[0] == fingerprint else CONFLICT
        self.seen[txn_id] = (fingerprint, self.clock_us)  # as AccountBook: from when it was seen
        return NEW

    def prune(self, horizon_us: int) -> None:
        oldest = self.clock_us - horizon_us
        self.seen = {k: v for k, v in self.seen.items() if v[1] >= oldest}

    def __getstate__(self) -> Tuple[Dict[str, Tuple[str, int]], int]:
        return self.seen, self.clock_us

    def __setstate__(self, state: Tuple[Dict[str, Tuple[str, int]], int]) -> None:
        self.seen, self.clock_us = state


class AccountBook:
    """Everything paystream remembers of one account: the ids it has seen, its feature
    history, and the state each fraud rule keeps of it (``transforms/rules.py``)."""

    __slots__ = ("seen", "history", "rule_states", "clock_us")

    def __init__(self) -> None:
        # transaction id -> (fingerprint, the clock when it was seen: its event time or later)
        self.seen: Dict[str, Tuple[str, int]] = {}
        self.history = AccountHistory()
        self.rule_states: List[Any] = []  # one per rule of the run, in its order
        self.clock_us = -(2**62)  # the latest event time seen

    def __getstate__(self) -> Tuple[Any, ...]:
        return self.seen, self.history, self.rule_states, self.clock_us

    def __setstate__(self, state: Tuple[Any, ...]) -> None:
        if len(state) == 5:  # a book checkpointed before the rule seam: velocity's held and runs
            self.seen, self.history, held, runs, self.clock_us = state
            self.rule_states = [[held, runs]]
            return
        self.seen, self.history, self.rule_states, self.clock_us = state

    def decide(
        self,
        txn: MaskedTransaction,
        fingerprint: str,
        rule: Rule,
        horizon_us: int,
        history_ttl_us: int,
    ) -> Tuple[str, Optional[EnrichedTransaction], Optional[FraudAlert]]:
        """``decide_all`` for one rule: the payment's verdict, row and the alert it raises."""
        verdict, row, alerts = self.decide_all(txn, fingerprint, as_rules(rule), horizon_us, history_ttl_us)
        return verdict, row, (alerts[0] if alerts else None)

    def decide_all(
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
        clock = self.clock_us
        first = self.seen.get(txn.transaction_id)
        if first is not None and first[1] >= clock - horizon_us:
            return (DUPLICATE if first[0] == fingerprint else CONFLICT), None, ()
        # remembered for the horizon from when it was seen: a payment dated long before the
        # clock (late, or a copy with its date damaged) is still caught when sent again
        self.seen[txn.transaction_id] = (fingerprint, max(at, clock))
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
        if at > clock:
            self.clock_us = at
            if len(self.seen) > 16:
                self._forget_ids(horizon_us)
        return NEW, row, alerts

    def _forget_ids(self, horizon_us: int) -> None:
        oldest = self.clock_us - horizon_us
        self.seen = {k: v for k, v in self.seen.items() if v[1] >= oldest}

    def prune(self, rules: Union[Rule, Rules], horizon_us: int) -> None:
        """Forget what can no longer change a decision (never changes one)."""
        self._forget_ids(horizon_us)
        for rule, state in zip(as_rules(rules), self.rule_states):
            rule.prune(state, self.clock_us)

    def idle_after_us(self, horizon_us: int, history_ttl_us: int, rules: Union[Rule, Rules]) -> int:
        """After this event time nothing of the account can change a decision but a copy
        or a late payment: the book may be dropped."""
        return self.clock_us + max(horizon_us, history_ttl_us, as_rules(rules).keep_us())


def decide_all_in_order(
    records: Iterable[Tuple[MaskedTransaction, str]],
    rules: Rules,
    horizon_us: int,
    history_ttl_us: int,
) -> Iterable[Tuple[str, MaskedTransaction, Optional[EnrichedTransaction], Tuple[FraudAlert, ...]]]:
    """Every payment of a complete list decided by its account's book, in the order read,
    with the alerts its rules raise."""
    books: Dict[str, AccountBook] = {}
    for txn, fingerprint in sorted(records, key=_read_order):
        book = books.get(txn.account_id)
        if book is None:
            book = books[txn.account_id] = AccountBook()
        verdict, row, alerts = book.decide_all(txn, fingerprint, rules, horizon_us, history_ttl_us)
        yield verdict, txn, row, alerts


def decide_in_order(
    records: Iterable[Tuple[MaskedTransaction, str]],
    rule: Rule,
    horizon_us: int,
    history_ttl_us: int,
) -> Iterable[Tuple[str, MaskedTransaction, Optional[EnrichedTransaction], Optional[FraudAlert]]]:
    """``decide_all_in_order`` for one rule: each payment with the alert it raises, if any."""
    for verdict, txn, row, alerts in decide_all_in_order(records, as_rules(rule), horizon_us, history_ttl_us):
        yield verdict, txn, row, (alerts[0] if alerts else None)


def _read_order(record: Tuple[MaskedTransaction, str]) -> Any:
    return record[0].source


def check_ids(
    book: IdBook, rows: Iterable[EnrichedTransaction], horizon_us: int
) -> Tuple[int, int, List[EnrichedTransaction], List[EnrichedTransaction]]:
    """(stored, seen again, conflicts, rows to store) for rows checked in this order: an id
    stored for another account is a conflict; for the same account (a replay after the
    account's book was dropped) it is not stored again."""
    kept: List[EnrichedTransaction] = []
    conflicts: List[EnrichedTransaction] = []
    again = 0
    for row in rows:
        txn = row.txn
        verdict = book.check(txn.transaction_id, txn.account_id, txn.event_time_us, horizon_us)
        if verdict is NEW:
            kept.append(row)
        elif verdict is DUPLICATE:
            again += 1
        else:
            conflicts.append(row)
    return len(kept), again, conflicts, kept


def count_stored(new: int, again: int, conflicts: int) -> None:
    if again:
        telemetry.count("duplicates_dropped", again)
    if conflicts:
        telemetry.count("dead_letters", conflicts, stage="dedup", reason="conflicting_duplicate")


def count_decided(new: int, duplicates: int, conflicts: int, alerts: Dict[str, int]) -> None:
    """The counters of payments decided by their books (both drivers, once per list or
    bundle); ``alerts``: how many each rule kind raised."""
    if new:
        telemetry.count("payments_unique", new)
        telemetry.count("payments_enriched", new)
    count_stored(0, duplicates, conflicts)
    for kind, n in alerts.items():
        if n:
            telemetry.count("fraud_alerts", n, rule=kind)
