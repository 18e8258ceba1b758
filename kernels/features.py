"""Features a fraud model would use, from an account's history before each payment.

``features(payment, history)`` gives the enriched row; ``AccountHistory`` is what an
account's book keeps for it (``kernels/books.py``): the last payment time and the last
``HISTORY_SIZE`` amounts with their rolling sum. Each feature is documented in
``schemas/bigquery/payment_transactions.json``.
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
