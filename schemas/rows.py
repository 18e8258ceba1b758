"""Records → warehouse rows: JSON-able dicts with exactly the columns of ``bigquery/<table>.json``.

Pure functions, no I/O. The same rows feed BigQuery (``WriteToBigQuery``, which takes TIMESTAMP as
an RFC 3339 string and NUMERIC as a decimal string) and the local DuckDB warehouse
(``schemas.tables.duckdb_insert_sql`` / ``duckdb_insert_json_sql``).

Conventions: TIMESTAMP → ``"YYYY-MM-DDTHH:MM:SS.ffffffZ"`` (UTC, always six fraction digits);
NUMERIC → decimal string with two places; REPEATED → list; FLOAT → finite float (``ValueError``
for NaN/inf, which JSON cannot carry); times in the records are integer microseconds since the
epoch, UTC.
"""

from __future__ import annotations

import math
import re
from datetime import date
from typing import Any, Callable, Optional, Sequence

from .records import DeadLetter, EnrichedTransaction, FraudAlert

__all__ = [
    "ALERTS",
    "DEAD_LETTERS",
    "ROW_OF",
    "TRANSACTIONS",
    "event_time_of",
    "transaction_columns",
    "transaction_row",
    "alert_row",
    "dead_letter_row",
    "us_to_rfc3339",
    "rfc3339_to_us",
    "minor_to_numeric",
]

_US_PER_SECOND = 1_000_000
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()

# Same grammar as the "event_time" pattern of payment.schema.json (the tests keep them in step):
# RFC 3339 date-time, 'T' separator, optional fraction, mandatory offset.
_RFC3339 = re.compile(
    r"^(?P<y>[0-9]{4})-(?P<mo>[0-9]{2})-(?P<d>[0-9]{2})[Tt]"
    r"(?P<h>[0-9]{2}):(?P<mi>[0-9]{2}):(?P<s>[0-9]{2})(?:\.(?P<frac>[0-9]+))?"
    r"(?:(?P<z>[Zz])|(?P<sign>[+-])(?P<oh>[0-9]{2}):(?P<om>[0-9]{2}))"
)


def us_to_rfc3339(us: int) -> str:
    """Microseconds since the epoch → ``"2026-11-24T10:00:05.250000Z"`` (exact, UTC)."""
    if isinstance(us, bool) or not isinstance(us, int):
        raise TypeError(f"expected int microseconds, got {type(us).__name__}")
    seconds, micros = divmod(us, _US_PER_SECOND)
    prefix = _SECOND_PREFIXES.get(seconds)
    if prefix is None:
        days, seconds_of_day = divmod(seconds, 86_400)
        try:
            day = date.fromordinal(_EPOCH_ORDINAL + days)
        except (ValueError, OverflowError):
            raise ValueError(f"timestamp out of range: {us} us") from None
        hours, rest = divmod(seconds_of_day, 3600)
        minutes, secs = divmod(rest, 60)
        prefix = f"{day.year:04d}-{day.month:02d}-{day.day:02d}T{hours:02d}:{minutes:02d}:{secs:02d}."
        if len(_SECOND_PREFIXES) >= 65_536:
            _SECOND_PREFIXES.clear()
        _SECOND_PREFIXES[seconds] = prefix
    return f"{prefix}{micros:06d}Z"


# whole seconds since the epoch -> "YYYY-MM-DDTHH:MM:SS.": a run's rows fall on a few
# thousand seconds, so each is formatted once
_SECOND_PREFIXES: dict[int, str] = {}


def rfc3339_to_us(s: str) -> int:
    """RFC 3339 date-time with offset → microseconds since the epoch (UTC).

    Fraction digits past microseconds are truncated. A missing offset (naive time), a space
    separator, a leap second or any out-of-range part raises ``ValueError``.
    """
    m = _RFC3339.fullmatch(s)
    if m is None:
        raise ValueError(f"not an RFC 3339 date-time with offset: {s!r}")
    day = date(int(m["y"]), int(m["mo"]), int(m["d"]))  # ValueError on a bad date
    hours, minutes, seconds = int(m["h"]), int(m["mi"]), int(m["s"])
    if hours > 23 or minutes > 59 or seconds > 59:
        raise ValueError(f"time of day out of range: {s!r}")
    offset_s = 0
    if m["z"] is None:
        oh, om = int(m["oh"]), int(m["om"])
        if oh > 23 or om > 59:
            raise ValueError(f"UTC offset out of range: {s!r}")
        offset_s = (oh * 3600 + om * 60) * (1 if m["sign"] == "+" else -1)
    frac_us = int((m["frac"] or "")[:6].ljust(6, "0"))
    local_s = (day.toordinal() - _EPOCH_ORDINAL) * 86_400 + hours * 3600 + minutes * 60 + seconds
    return (local_s - offset_s) * _US_PER_SECOND + frac_us


def minor_to_numeric(amount_minor: int) -> str:
    """Integer minor units → NUMERIC decimal string with two places (1250 → ``"12.50"``)."""
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
        raise TypeError(f"expected int minor units, got {type(amount_minor).__name__}")
    if amount_minor < 0:
        raise ValueError(f"negative amount: {amount_minor}")
    major, minor = divmod(amount_minor, 100)
    return f"{major}.{minor:02d}"


def _float(value: float, column: str) -> float:
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{column} is not finite: {out}")
    return out


def transaction_row(e: EnrichedTransaction, ingested_at_us: int) -> dict[str, Any]:
    """One ``payment_transactions`` row."""
    txn, hour, ratio, count, gap, cross_border, risk = e
    (
        transaction_id,
        account_id,
        amount_minor,
        currency,
        card_masked,
        card_token,
        email_masked,
        email_token,
        phone_masked,
        merchant_id,
        merchant_category,
        country,
        card_country,
        event_time_us,
        source,
    ) = txn
    return {
        "transaction_id": transaction_id,
        "account_id": account_id,
        "amount": minor_to_numeric(amount_minor),
        "currency": currency,
        "card_masked": card_masked,
        "card_token": card_token,
        "email_masked": email_masked,
        "email_token": email_token,
        "phone_masked": phone_masked,
        "merchant_id": merchant_id,
        "merchant_category": merchant_category,
        "country": country,
        "card_country": card_country,
        "event_time": us_to_rfc3339(event_time_us),
        "hour_of_day_utc": int(hour),
        "amount_to_recent_mean": None if ratio is None else _float(ratio, "amount_to_recent_mean"),
        "recent_txn_count": int(count),
        "seconds_since_prev_txn": None if gap is None else _float(gap, "seconds_since_prev_txn"),
        "cross_border": None if cross_border is None else bool(cross_border),
        "merchant_category_risk": _float(risk, "merchant_category_risk"),
        "source_topic": source.topic,
        "source_partition": source.partition,
        "source_offset": source.offset,
        "ingested_at": us_to_rfc3339(ingested_at_us),
    }


def transaction_columns(
    records: Sequence[EnrichedTransaction], ingested_at_us: int
) -> dict[str, Sequence[Any]]:
    """The ``payment_transactions`` rows of ``records``, column by column, for a columnar
    sink: the values ``transaction_row`` gives, with two differences of form. The times
    (``event_time``, ``ingested_at``) are microseconds since the epoch, and the amount is
    ``amount_minor``, in hundredths, instead of ``amount``. The same checks raise
    ``ValueError``.
    """
    if not records:
        return {}
    txns, hours, ratios, counts, gaps, cross_border, risks = zip(*records)
    (
        transaction_ids,
        account_ids,
        amounts,
        currencies,
        cards_masked,
        card_tokens,
        emails_masked,
        email_tokens,
        phones_masked,
        merchant_ids,
        merchant_categories,
        countries,
        card_countries,
        event_times,
        sources,
    ) = zip(*txns)
    topics, partitions, offsets, *_rest = zip(*sources)
    if min(amounts) < 0:
        raise ValueError(f"negative amount: {min(amounts)}")
    for name, values in (
        ("amount_to_recent_mean", ratios),
        ("seconds_since_prev_txn", gaps),
        ("merchant_category_risk", risks),
    ):
        if not all(map(math.isfinite, filter(_not_none, values))):
            raise ValueError(f"{name} is not finite")
    return {
        "transaction_id": transaction_ids,
        "account_id": account_ids,
        "amount_minor": amounts,
        "currency": currencies,
        "card_masked": cards_masked,
        "card_token": card_tokens,
        "email_masked": emails_masked,
        "email_token": email_tokens,
        "phone_masked": phones_masked,
        "merchant_id": merchant_ids,
        "merchant_category": merchant_categories,
        "country": countries,
        "card_country": card_countries,
        "event_time": event_times,
        "hour_of_day_utc": hours,
        "amount_to_recent_mean": ratios,
        "recent_txn_count": counts,
        "seconds_since_prev_txn": gaps,
        "cross_border": cross_border,
        "merchant_category_risk": risks,
        "source_topic": topics,
        "source_partition": partitions,
        "source_offset": offsets,
        "ingested_at": (ingested_at_us,) * len(records),
    }


def _not_none(value: Any) -> bool:
    return value is not None


def alert_row(a: FraudAlert, detected_at_us: int) -> dict[str, Any]:
    """One ``fraud_alerts`` row."""
    return {
        "alert_id": a.alert_id,
        "account_id": a.account_id,
        "rule": a.rule,
        "rule_params": a.rule_params,
        "threshold": int(a.threshold),
        "window_start": us_to_rfc3339(a.window_start_us),
        "window_end": us_to_rfc3339(a.window_end_us),
        "first_txn_time": us_to_rfc3339(a.first_txn_time_us),
        "crossing_txn_time": us_to_rfc3339(a.crossing_txn_time_us),
        "matched_count": int(a.matched_count),
        "transaction_ids": list(a.transaction_ids),
        "detected_at": us_to_rfc3339(detected_at_us),
    }


def dead_letter_row(d: DeadLetter, received_at_us: int) -> dict[str, Any]:
    """One ``dead_letters`` row."""
    return {
        "dead_letter_id": d.dead_letter_id,
        "stage": d.stage,
        "reason": d.reason,
        "message": d.message,
        "source_topic": d.source.topic,
        "source_partition": d.source.partition,
        "source_offset": d.source.offset,
        "source_key": d.source.key,
        "masked_payload": d.masked_payload,
        "transaction_id": d.transaction_id,
        "received_at": us_to_rfc3339(received_at_us),
    }


# The graph's three outputs, by table: each table's records and how one becomes its row.
TRANSACTIONS, ALERTS, DEAD_LETTERS = "payment_transactions", "fraud_alerts", "dead_letters"
ROW_OF: dict[str, Callable[[Any, int], dict[str, Any]]] = {
    TRANSACTIONS: transaction_row,
    ALERTS: alert_row,
    DEAD_LETTERS: dead_letter_row,
}


def event_time_of(table: str, record: Any) -> Optional[int]:
    """The event time a record's end-to-end latency is measured from: the payment's, the
    crossing payment's for an alert; none for a dead letter."""
    if table == TRANSACTIONS:
        return int(record.txn.event_time_us)
    if table == ALERTS:
        return int(record.crossing_txn_time_us)
    return None
