"""The features of a payment from its account's history (``kernels/features.py``)."""

from __future__ import annotations

from kernels.features import HISTORY_SIZE, AccountHistory, features, merchant_category_risk
from schemas.records import MaskedTransaction, SourceRef

T0 = 1_795_514_400_000_000  # 10:00 UTC


def txn(
    tid: str,
    at_s: float,
    amount: int,
    account: str = "a",
    mcc: str = "5411",
    card_country: str | None = "US",
    country: str = "US",
) -> MaskedTransaction:
    return MaskedTransaction(
        transaction_id=tid,
        account_id=account,
        amount_minor=amount,
        currency="USD",
        card_masked="****-****-****-1111",
        card_token="c",
        email_masked="ja****@example.com",
        email_token="e",
        phone_masked="1-555-****",
        merchant_id="m-1",
        merchant_category=mcc,
        country=country,
        card_country=card_country,
        event_time_us=T0 + int(at_s * 1_000_000),
        source=SourceRef("payments", 0, 0),
    )


def test_first_payment_has_no_history() -> None:
    e = features(txn("t1", 0, 1000), AccountHistory())
    assert e.amount_to_recent_mean is None and e.seconds_since_prev_txn is None
    assert e.recent_txn_count == 0 and e.hour_of_day_utc == 10


def test_features_against_history() -> None:
    h = AccountHistory()
    for i, amount in enumerate([1000, 3000]):
        h.push(txn(f"h{i}", i * 60, amount))
    e = features(txn("t", 150, 4000, mcc="7995", card_country="GB"), h)
    assert e.amount_to_recent_mean == 2.0 and e.recent_txn_count == 2
    assert e.seconds_since_prev_txn == 90.0
    assert e.cross_border is True and e.merchant_category_risk == merchant_category_risk("7995") > 0.5
    assert features(txn("t", 0, 1, card_country=None), h).cross_border is None


def test_history_is_bounded() -> None:
    h = AccountHistory()
    for i in range(HISTORY_SIZE * 3):
        h.push(txn(f"h{i}", i, 100 + i))
    assert len(h.recent_amounts) == HISTORY_SIZE
