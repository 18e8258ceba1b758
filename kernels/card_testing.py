"""Card testing: several small payments on one card within a few minutes.

Whoever holds a list of stolen card numbers tries each with a payment too small to be
noticed before spending with the ones that work. The rule: ``count`` or more payments
under ``max_amount`` on one card token (``MaskedTransaction.card_token``) of one account
within ``window_s`` seconds of event time raise one alert, on the payment that makes the
count (the crossing payment)::

    --rules=velocity,card_testing --card_testing_count=4 --card_testing_max_amount=2.00
    --card_testing_window_s=600

Each small payment is counted with the small payments of its card in the window that
ends at it. A burst is one alert: a small payment within ``window_s`` after the last one
of an alerted burst on that card extends the burst and raises nothing. The alert id comes
from the account, the rule, the card token and the first counted payment, so a replay in
the same order gives the same id. A small payment dated more than ``window_s`` before the
account's clock (the latest event time it has seen) is not counted.

The amount is compared in the payment's own currency's minor units (2.00 is 200 of
them): a currency without minor units would need its own rule. The key is the account,
as for every rule (``kernels/rules.py``): the same card on two accounts is two cards.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, Dict, List, Optional

from kernels.rules import alert_id, rule_params_json
from schemas.records import FraudAlert, MaskedTransaction

__all__ = ["CardTestingRule"]

_US = 1_000_000
_LAST = "\U0010ffff"  # sorts after every transaction id: (t, _LAST) follows every (t, id)


@dataclass(frozen=True)
class CardTestingRule:
    """``count`` payments under ``max_amount_minor`` on one card within ``window_s``."""

    count: int = 4
    max_amount_minor: int = 200
    window_s: int = 600

    kind: ClassVar[str] = "card_testing"

    def __post_init__(self) -> None:
        if self.count < 2:
            raise ValueError("--card_testing_count must be >= 2")
        if self.max_amount_minor <= 0:
            raise ValueError("--card_testing_max_amount must be > 0")
        if self.window_s <= 0:
            raise ValueError("--card_testing_window_s must be > 0")

    @property
    def name(self) -> str:
        amount = f"{self.max_amount_minor // 100}.{self.max_amount_minor % 100:02d}"
        return f"card_testing:{self.count} under {amount} in {self.window_s}s"

    @staticmethod
    def add_options(group: Any) -> None:
        group.add_argument(
            "--card_testing_count",
            type=int,
            default=_DEFAULT.count,
            help="small payments on one card within the window that raise an alert (default %(default)s)",
        )
        group.add_argument(
            "--card_testing_max_amount",
            default=f"{_DEFAULT.max_amount_minor / 100:.2f}",
            help="a payment under this amount is small, in its currency (default %(default)s)",
        )
        group.add_argument(
            "--card_testing_window_s",
            type=int,
            default=_DEFAULT.window_s,
            help="the card-testing window, seconds of event time (default %(default)s)",
        )

    @classmethod
    def from_options(cls, opts: Any) -> CardTestingRule:
        try:
            minor = Decimal(str(opts.card_testing_max_amount)) * 100
        except InvalidOperation:
            raise ValueError(
                f"--card_testing_max_amount {opts.card_testing_max_amount!r} is not an amount"
            ) from None
        if minor != minor.to_integral_value():
            raise ValueError("--card_testing_max_amount has at most two decimals")
        return cls(opts.card_testing_count, int(minor), opts.card_testing_window_s)

    def params(self) -> Dict[str, Any]:
        return {"count": self.count, "max_amount_minor": self.max_amount_minor, "window_s": self.window_s}

    def new_state(self) -> Dict[str, List[Any]]:
        """card token -> [small payments as (event_time_us, transaction_id), sorted;
        alerted bursts as [first, last, alert id]]."""
        return {}

    def keep_us(self) -> int:
        return 2 * self.window_s * _US

    def observe(
        self, state: Dict[str, List[Any]], txn: MaskedTransaction, clock: int
    ) -> Optional[FraudAlert]:
        if txn.amount_minor >= self.max_amount_minor:
            return None
        at, window_us = txn.event_time_us, self.window_s * _US
        if at <= clock - window_us:
            return None  # more than a window late
        card = state.get(txn.card_token)
        if card is not None and at > clock and len(card[0]) > 16:
            self.prune(state, at)
            card = state.get(txn.card_token)
        if card is None:
            card = state[txn.card_token] = [[], []]
        small, bursts = card
        insort(small, (at, txn.transaction_id))
        for burst in bursts:
            if burst[0] - window_us <= at <= burst[1] + window_us:
                burst[0], burst[1] = min(burst[0], at), max(burst[1], at)
                return None  # part of a burst already alerted
        # the card's small payments in the window that ends at this one: (at - window, at]
        inside = small[bisect_right(small, (at - window_us, _LAST)) : bisect_right(small, (at, _LAST))]
        if len(inside) < self.count:
            return None
        first = inside[0][0]
        alert = alert_id(txn.account_id, self.name, txn.card_token, first)
        bursts.append([first, at, alert])
        return FraudAlert(
            alert_id=alert,
            account_id=txn.account_id,
            rule=self.name,
            threshold=self.count,
            window_start_us=first,
            window_end_us=first + window_us,
            first_txn_time_us=first,
            crossing_txn_time_us=at,
            matched_count=len(inside),
            transaction_ids=tuple(p[1] for p in inside[: self.count]),
            rule_params=rule_params_json(self.params()),
        )

    def prune(self, state: Dict[str, List[Any]], clock: int) -> None:
        """Forget the small payments and bursts no payment can be counted with any more
        (a payment more than a window late is not counted)."""
        oldest = clock - 2 * self.window_s * _US
        for token in list(state):
            small, bursts = state[token]
            del small[: bisect_left(small, (oldest,))]
            state[token][1] = [b for b in bursts if b[1] >= oldest]
            if not small and not state[token][1]:
                del state[token]


_DEFAULT = CardTestingRule()  # the flags' defaults are the rule's
