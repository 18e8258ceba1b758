"""Features a fraud model would use, from an account's history before each payment.

``features(payment, history)`` gives the enriched row; ``AccountHistory`` is what an
account's book keeps for it (``kernels/books.py``): the latest payment time and the last
``HISTORY_SIZE`` payments decided (their times, and their amounts with a rolling sum).
Each feature is documented in ``schemas/bigquery/payment_transactions.json``.

"Before" is the order the book decides in: event-time order in a bounded run, arrival
order in a streaming run. A payment that arrives after a later-dated one (out of order)
is measured against what was decided before it, and never gets a negative gap:

* ``seconds_since_prev_txn``: seconds from the latest of the last ``HISTORY_SIZE``
  payments dated at or before it; NULL when none is (the account's first payment, or a
  payment older than all of them).
* ``recent_txn_count``, ``amount_to_recent_mean``: over the last ``HISTORY_SIZE``
  payments decided before it.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Deque, List, Optional, Tuple

from schemas.records import EnrichedTransaction, MaskedTransaction

__all__ = ["HISTORY_SIZE", "MCC_RISK", "AccountHistory", "features", "merchant_category_risk"]

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
    """What we remember of an account: its latest payment time, and the times and amounts
    of its last ``HISTORY_SIZE`` payments.

    The amounts' sum is kept as they change: each payment costs the same however long
    the history (integers, so the sum is exact).
    """

    __slots__ = ("last_event_time_us", "recent_amounts", "recent_sum", "recent_times")

    def __init__(self) -> None:
        self.last_event_time_us: Optional[int] = None
        self.recent_amounts: Deque[int] = deque(maxlen=HISTORY_SIZE)
        self.recent_times: Deque[int] = deque(maxlen=HISTORY_SIZE)
        self.recent_sum = 0

    def previous_time_us(self, at: int) -> Optional[int]:
        """The latest time of the recent payments dated at or before ``at``, if any."""
        last = self.last_event_time_us
        if last is None or last <= at:
            return last  # in order: the latest of all
        earlier = [t for t in self.recent_times if t <= at]
        return max(earlier) if earlier else None

    def push(self, txn: MaskedTransaction) -> None:
        if self.last_event_time_us is None or txn.event_time_us >= self.last_event_time_us:
            self.last_event_time_us = txn.event_time_us
        self.recent_times.append(txn.event_time_us)
        amounts = self.recent_amounts
        if len(amounts) == HISTORY_SIZE:
            self.recent_sum -= amounts[0]
        amounts.append(txn.amount_minor)
        self.recent_sum += txn.amount_minor

    def __getstate__(self) -> Tuple[Optional[int], List[int], List[int]]:
        return self.last_event_time_us, list(self.recent_amounts), list(self.recent_times)

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):  # pickled before the rolling sum, as its fields
            state = (state.get("last_event_time_us"), state.get("recent_amounts", []))
        self.last_event_time_us = state[0]
        self.recent_amounts = deque(state[1], maxlen=HISTORY_SIZE)
        self.recent_sum = sum(self.recent_amounts)
        # pickled before the times were kept: the latest stands for them
        times = state[2] if len(state) > 2 else [t for t in (state[0],) if t is not None]
        self.recent_times = deque(times, maxlen=HISTORY_SIZE)


def features(txn: MaskedTransaction, history: AccountHistory) -> EnrichedTransaction:
    """The features of ``txn`` given the account's history *before* it."""
    n = len(history.recent_amounts)
    last = history.last_event_time_us
    if last is not None and last > txn.event_time_us:  # out of order
        last = history.previous_time_us(txn.event_time_us)
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
