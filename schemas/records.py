"""Typed records that flow through the paystream graph.

These NamedTuples are the in-pipeline shape of the message schema
(``payment.schema.json``) and of the warehouse tables (``bigquery/*.json``).
``tests/test_schemas.py`` checks that the three stay in step.

Times are integers in microseconds since the Unix epoch, UTC: exact, cheap to
encode, and free of naive-datetime mistakes. Money is an integer number of
minor units (hundredths): the message carries a decimal string, never a float.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

__all__ = [
    "SourceRef",
    "Transaction",
    "MaskedTransaction",
    "EnrichedTransaction",
    "FraudAlert",
    "DeadLetter",
]


class SourceRef(NamedTuple):
    """Where a raw payload came from: Kafka coordinates, or a file and line."""

    topic: str
    partition: int
    offset: int
    key: Optional[str] = None
    # the Kafka record's timestamp (ms) when the source has one: a payment dated more than
    # the allowed skew after it was sent is refused as in the future (kernels/parse.py)
    timestamp_ms: Optional[int] = None


class Transaction(NamedTuple):
    """A validated payment. Holds raw PII: it never leaves the graph unmasked.

    The CVV is not a field: it is discarded while parsing.
    """

    transaction_id: str
    account_id: str
    amount_minor: int
    currency: str
    card_number: str
    email: str
    phone: str
    merchant_id: str
    merchant_category: str
    country: str
    card_country: Optional[str]
    event_time_us: int
    source: SourceRef
    fingerprint: str  # hash of the canonical content, to tell conflicting duplicates apart


class MaskedTransaction(NamedTuple):
    """A payment after ``MaskPII``: no field can reveal the card, email or phone."""

    transaction_id: str
    account_id: str
    amount_minor: int
    currency: str
    card_masked: str
    card_token: str
    email_masked: str
    email_token: str
    phone_masked: str
    merchant_id: str
    merchant_category: str
    country: str
    card_country: Optional[str]
    event_time_us: int
    source: SourceRef


class EnrichedTransaction(NamedTuple):
    """A masked payment with its features (``kernels/features.py``): one warehouse row."""

    txn: MaskedTransaction
    hour_of_day_utc: int
    amount_to_recent_mean: Optional[float]
    recent_txn_count: int
    seconds_since_prev_txn: Optional[float]
    cross_border: Optional[bool]
    merchant_category_risk: float


class FraudAlert(NamedTuple):
    """One burst of one account, found by one rule (``kernels/rules.py``).

    ``rule``: the rule's kind with its parameters (``velocity:3 in 60s/5s``);
    ``rule_params``: the parameters as JSON. ``threshold`` payments within the window
    starting at ``window_start_us`` make the burst; ``matched_count`` is the most the rule
    counted in one window of it; ``transaction_ids`` are the ``threshold`` earliest.
    """

    alert_id: str
    account_id: str
    rule: str
    threshold: int
    window_start_us: int
    window_end_us: int
    first_txn_time_us: int
    crossing_txn_time_us: int
    matched_count: int
    transaction_ids: Tuple[str, ...]
    rule_params: str = "{}"


class DeadLetter(NamedTuple):
    """A record that could not be processed. ``masked_payload`` is never the raw one."""

    dead_letter_id: str
    stage: str
    reason: str
    message: str
    source: SourceRef
    masked_payload: str
    transaction_id: Optional[str] = None
