"""Parse and validate raw payment payloads.

``parse_payment`` is a plain function: bytes in, a ``Transaction`` out, or a
``ParseError`` carrying an error class. ``parse_or_dead_letter`` never raises: it gives
the payment or its dead letter, with a masked copy of the payload. The CVV is read only
to validate it and is dropped here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import operator
import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Optional, Tuple, Union

from kernels.codes import ISO_3166_ALPHA2, ISO_4217
from kernels.deadletter import make_dead_letter
from kernels.masking import masked_payload_text
from schemas.payment import MAX_PAYLOAD_BYTES, REQUIRED_FIELDS
from schemas.payment import luhn_checksum_ok as luhn_valid
from schemas.records import DeadLetter, SourceRef, Transaction

__all__ = [
    "MAX_FUTURE_SKEW_S",
    "MAX_PAYLOAD_BYTES",
    "REQUIRED_FIELDS",
    "ParseError",
    "RawPayload",
    "luhn_valid",
    "parse_amount_minor",
    "parse_or_dead_letter",
    "payload_size",
    "parse_event_time_us",
    "parse_payment",
]

_LOG = logging.getLogger(__name__)

# MAX_PAYLOAD_BYTES, REQUIRED_FIELDS and luhn_valid (here the bare Luhn checksum,
# schemas.payment.luhn_checksum_ok) are schemas/payment.py's, re-exported here.
MAX_FUTURE_SKEW_S = 300.0  # event times further ahead are refused (--max_future_skew_s)
MAX_AMOUNT_MINOR = 10**13  # 100 billion in major units: anything above is an error
_ID_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_AMOUNT_RE = re.compile(r"^\d{1,15}(\.\d{1,2})?$")
_CARD_RE = re.compile(r"^\d{12,19}$")
_CVV_RE = re.compile(r"^\d{3,4}$")
_MCC_RE = re.compile(r"^\d{4}$")
_LONG_DIGITS_RE = re.compile(r"\d{12,19}")
_EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[A-Za-z0-9\-]+(\.[A-Za-z0-9\-]+)+$")
_PHONE_RE = re.compile(r"^\+?[\d\s().\-]+$")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# A raw payload and where it came from.
RawPayload = Tuple[bytes, SourceRef]


class ParseError(ValueError):
    """A payload that is not a valid payment. ``reason`` is the error class."""

    def __init__(self, reason: str, message: str, transaction_id: Optional[str] = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.transaction_id = transaction_id


_NO_DIGITS = str.maketrans("", "", "0123456789")


def parse_amount_minor(value: Any) -> int:
    """A positive amount with at most two decimals, in hundredths. Never a float."""
    if isinstance(value, bool):
        raise ParseError("invalid_amount", "amount must be a decimal string or number")
    if isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, Decimal):  # JSON numbers are parsed as Decimal, not float
        amount = value
    elif isinstance(value, str):
        if not _AMOUNT_RE.match(value.strip()):
            raise ParseError("invalid_amount", "amount must look like 12.50 (at most 2 decimals)")
        amount = Decimal(value.strip())
    else:
        raise ParseError("invalid_amount", "amount must be a decimal string or number")
    try:
        if not amount.is_finite():
            raise ParseError("invalid_amount", "amount must be finite")
        scaled = amount * 100
        if scaled != scaled.to_integral_value():
            raise ParseError("invalid_amount", "amount has more than 2 decimal places")
    except InvalidOperation:
        raise ParseError("invalid_amount", "amount is not a number") from None
    minor = int(scaled)
    if minor <= 0:
        raise ParseError("invalid_amount", "amount must be greater than 0")
    if minor >= MAX_AMOUNT_MINOR:
        raise ParseError("invalid_amount", "amount is implausibly large")
    return minor


def parse_event_time_us(value: Any) -> int:
    """RFC 3339 with an explicit offset, to microseconds since the epoch (UTC)."""
    if not isinstance(value, str) or not 10 <= len(value) <= 40:
        raise ParseError("invalid_event_time", "event_time must be an RFC 3339 string")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ParseError("invalid_event_time", "event_time is not RFC 3339") from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ParseError("invalid_event_time", "event_time has no timezone offset")
    if parsed.year < 2000:
        raise ParseError("invalid_event_time", "event_time is before the year 2000")
    since = parsed - _EPOCH
    return since.days * 86_400_000_000 + since.seconds * 1_000_000 + since.microseconds


def _text(
    obj: dict[str, Any], name: str, pattern: Optional[re.Pattern[str]] = None, pii: bool = False
) -> str:
    value = obj[name]
    if not isinstance(value, str):
        raise ParseError("invalid_type", f"{name} must be a string")
    value = value.strip()
    if not value:
        raise ParseError("invalid_field", f"{name} is empty")
    if pattern is not None and not pattern.match(value):
        raise ParseError("invalid_field", f"{name} is malformed")
    if not pii and any(luhn_valid(run) for run in _LONG_DIGITS_RE.findall(value)):
        # A card number where an identifier belongs would leak into every sink.
        raise ParseError("pii_in_field", f"{name} contains what looks like a card number")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_float=Decimal, parse_constant=_reject_constant)
_SCAN = _DECODER.scan_once  # type: ignore[attr-defined]
_REQUIRED = operator.itemgetter(*REQUIRED_FIELDS)
# _ID_RE, _MCC_RE, _CVV_RE and _EMAIL_RE in a row, separated by \x1f (which none of them
# matches: it is white space), with nothing allowed around them (their "$" allows a final
# newline, which _text strips; here a value with any white space is left to _checked_payment)
_ID = r"[A-Za-z0-9._:\-]{1,128}"
_ASCII_DIGITS_12 = re.compile(r"[0-9]{12}")  # the start of what _LONG_DIGITS_RE finds, in ASCII text
_TEXT_FIELDS = re.compile(
    rf"{_ID}\x1f{_ID}\x1f{_ID}\x1f\d{{4}}\x1f\d{{3,4}}\x1f[^@\s]{{1,64}}@[A-Za-z0-9\-]+(\.[A-Za-z0-9\-]+)+"
)


MAX_NESTING = 32  # a payment is one flat object; JSON nested deeper is refused as invalid


def _nesting(text: str) -> int:
    """How deep ``text``'s arrays and objects nest (brackets inside strings do not count)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
            if depth > deepest:
                deepest = depth
        elif ch in "}]":
            depth -= 1
    return deepest


def _decode_json(text: str) -> Any:
    """``json.loads(text)`` with decimals as ``Decimal``: the C scanner straight away on a
    value that fills the text, ``JSONDecoder.decode`` (its exact errors) otherwise.

    Nesting deeper than ``MAX_NESTING`` is a ``ValueError`` whatever the stack allows (the
    decoder's own limit is the interpreter's recursion limit, less the stack in use: the
    same payload would decode in one worker and not in another). Only a text with more
    than that many brackets is scanned for it."""
    if text.count("{") + text.count("[") > MAX_NESTING and _nesting(text) > MAX_NESTING:
        raise ValueError(f"nested deeper than {MAX_NESTING}")
    try:
        obj, end = _SCAN(text, 0)
    except (StopIteration, ValueError):
        end = -1
    if end != len(text):
        return _DECODER.decode(text)
    return obj


def parse_payment(
    raw: bytes,
    source: SourceRef,
    now_us: int,
    max_future_skew_us: int = int(MAX_FUTURE_SKEW_S * 1_000_000),
) -> Transaction:
    """Validate one payload. Raises ``ParseError`` and nothing else for bad input.

    The event time may lie at most ``max_future_skew_us`` after ``now_us``, or after the
    Kafka record's timestamp when that is earlier: a payment is not dated after it was
    sent. (A payment dated days ahead of its neighbours would otherwise move its
    account's clock, and dedup, which remembers ids for a horizon of that clock, would
    forget the copies of the payments before it.)"""
    sent_ms = source.timestamp_ms
    if sent_ms is not None and 0 < sent_ms * 1000 < now_us:
        now_us = sent_ms * 1000
    if not isinstance(raw, (bytes, bytearray)):
        raise ParseError("invalid_type", "payload is not bytes")
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise ParseError("payload_too_large", f"payload is {len(raw)} bytes, over {MAX_PAYLOAD_BYTES}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError("not_utf8", "payload is not valid UTF-8") from None
    try:
        obj = _decode_json(text)
    except (ValueError, RecursionError):
        raise ParseError("invalid_json", "payload is not valid JSON") from None
    if not isinstance(obj, dict):
        raise ParseError("not_an_object", f"payload is a JSON {type(obj).__name__}, not an object")
    txn = _lean_payment(obj, source, now_us + max_future_skew_us)
    if txn is None:  # something is off: the checks one by one, for the exact error
        txn = _checked_payment(obj, source, now_us, max_future_skew_us)
    return txn


def _lean_payment(obj: dict[str, Any], source: SourceRef, latest_us: int) -> Optional[Transaction]:
    """The payment of a well-formed object, checked in one pass; ``None`` at the first doubt.

    It accepts only what ``_checked_payment`` accepts, and returns the same record for it;
    whatever it is unsure of (surrounding space, a number for an amount, a missing field,
    any error) it leaves to ``_checked_payment``, which names the error. No exception is
    raised or caught on the way of a valid payment.
    """
    try:
        (
            transaction_id,
            account_id,
            amount,
            currency,
            card,
            cvv,
            email,
            phone,
            merchant_id,
            merchant_category,
            country,
            event_time,
        ) = _REQUIRED(obj)
    except KeyError:
        return None
    if (
        type(transaction_id) is not str
        or type(account_id) is not str
        or type(merchant_id) is not str
        or type(merchant_category) is not str
        or type(cvv) is not str
        or type(email) is not str
    ):
        return None
    # The identifiers, the category, the CVV and the email in one match (none of them can
    # hold the separator), then one search of the identifiers for a card-like digit run.
    joined = f"{transaction_id}\x1f{account_id}\x1f{merchant_id}\x1f{merchant_category}\x1f{cvv}\x1f{email}"
    if (
        _TEXT_FIELDS.fullmatch(joined) is None
        or _ASCII_DIGITS_12.search(joined, 0, len(transaction_id) + len(account_id) + len(merchant_id) + 2)
        is not None
    ):
        return None
    if type(amount) is str:
        whole, dot, cents = amount.partition(".")
        if not (0 < len(whole) <= 15 and whole.isascii() and whole.isdigit()):
            return None
        if not dot:
            amount_minor = int(whole) * 100
        elif 0 < len(cents) <= 2 and cents.isascii() and cents.isdigit():
            amount_minor = int(whole + cents) * (10 if len(cents) == 1 else 1)
        else:
            return None
    elif type(amount) is Decimal and amount.is_finite():
        scaled = amount * 100
        if scaled != scaled.to_integral_value():
            return None
        amount_minor = int(scaled)
    else:
        return None
    if not 0 < amount_minor < MAX_AMOUNT_MINOR:
        return None
    card_country = obj.get("card_country")
    if (
        type(currency) is not str
        or currency not in ISO_4217
        or type(country) is not str
        or country not in ISO_3166_ALPHA2
        or (
            card_country is not None
            and (type(card_country) is not str or card_country not in ISO_3166_ALPHA2)
        )
        or type(card) is not str
        or not (12 <= len(card) <= 19 and card.isascii() and card.isdigit() and luhn_valid(card))
        or type(phone) is not str
        or phone.strip() is not phone
        or not phone.isascii()
        or not 7 <= len(phone) - len(phone.translate(_NO_DIGITS)) <= 15
        or _PHONE_RE.match(phone) is None
    ):
        return None
    if type(event_time) is not str:
        return None
    event_time_us = _event_time_us(event_time)
    if event_time_us is None:
        return None
    if event_time_us > latest_us:
        return None
    return _transaction(
        (
            transaction_id,
            account_id,
            amount_minor,
            currency,
            card,
            email,
            phone,
            merchant_id,
            merchant_category,
            country,
            card_country,
            event_time_us,
            source,
            _fingerprint(
                transaction_id,
                account_id,
                amount_minor,
                currency,
                merchant_id,
                merchant_category,
                country,
                event_time_us,
            ),
        )
    )


_fromisoformat = datetime.fromisoformat
_SECOND_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}")
_FRACTION_SCALE = (0, 100_000, 10_000, 1_000, 100, 10, 1)
# "YYYY-MM-DDTHH:MM:SS" -> its local time in microseconds since the epoch (as if at UTC):
# the payments of a run fall on a few thousand seconds, so each is parsed once
_SECONDS: dict[str, int] = {}


def _local_second_us(prefix: str) -> Optional[int]:
    """The local time of a "YYYY-MM-DDTHH:MM:SS" prefix, as if at UTC (``None`` if invalid or
    before 2000); remembered."""
    found = _SECONDS.get(prefix)
    if found is None:
        if _SECOND_RE.fullmatch(prefix) is None:
            return None
        try:
            parsed = _fromisoformat(prefix + "+00:00")
        except ValueError:
            return None
        if parsed.year < 2000:
            return None
        since = parsed - _EPOCH
        found = since.days * 86_400_000_000 + since.seconds * 1_000_000
        if len(_SECONDS) >= 100_000:
            _SECONDS.clear()
        _SECONDS[prefix] = found
    return found


def _event_time_us(value: str) -> Optional[int]:
    """``parse_event_time_us(value)``, or ``None`` where that would raise or where ``value``
    has surrounding white space (left to ``parse_event_time_us``, which strips it).

    The usual shape, "YYYY-MM-DDTHH:MM:SS", a fraction of 1 to 6 digits, then "Z" or
    "+HH:MM", is read by hand (its second from ``_SECONDS``); anything else goes through
    ``datetime.fromisoformat`` as in ``parse_event_time_us``.
    """
    base = _SECONDS.get(value[:19])
    if base is None:
        base = _local_second_us(value[:19])
    tail = value[19:]
    if base is not None and tail:
        if tail[-1] == "Z":
            offset_us, fraction = 0, tail[:-1]
        elif len(tail) >= 6 and tail[-3] == ":" and tail[-6] in "+-":
            hours, minutes = tail[-5:-3], tail[-2:]
            if not (hours.isascii() and hours.isdigit() and minutes.isascii() and minutes.isdigit()):
                return _any_event_time_us(value)
            if int(hours) > 23 or int(minutes) > 59:  # fromisoformat's own rules (it takes "+07:60")
                return _any_event_time_us(value)
            offset_us = (int(hours) * 3600 + int(minutes) * 60) * 1_000_000
            if tail[-6] == "-":
                offset_us = -offset_us
            fraction = tail[:-6]
        else:
            return _any_event_time_us(value)
        if not fraction:
            return base - offset_us
        digits = fraction[1:]
        if fraction[0] == "." and 1 <= len(digits) <= 6 and digits.isascii() and digits.isdigit():
            return base + int(digits) * _FRACTION_SCALE[len(digits)] - offset_us
    return _any_event_time_us(value)


def _any_event_time_us(value: str) -> Optional[int]:
    if not 10 <= len(value) <= 40 or value.strip() is not value:
        return None
    try:
        parsed = _fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None or parsed.utcoffset() is None or parsed.year < 2000:
        return None
    since = parsed - _EPOCH
    return since.days * 86_400_000_000 + since.seconds * 1_000_000 + since.microseconds


def _transaction(values: Tuple[Any, ...]) -> Transaction:
    """A ``Transaction`` from its values in field order (``tuple.__new__``: no keyword handling)."""
    return tuple.__new__(Transaction, values)  # type: ignore[no-any-return]


def _fingerprint(
    transaction_id: str,
    account_id: str,
    amount_minor: int,
    currency: str,
    merchant_id: str,
    merchant_category: str,
    country: str,
    event_time_us: int,
) -> str:
    """A hash of a payment's content, to tell an exact copy from a conflicting one."""
    return hashlib.sha256(
        f"{transaction_id}|{account_id}|{amount_minor}|{currency}|{merchant_id}|{merchant_category}|"
        f"{country}|{event_time_us}".encode()
    ).hexdigest()[:32]


def _checked_payment(
    obj: dict[str, Any], source: SourceRef, now_us: int, max_future_skew_us: int
) -> Transaction:
    """Every check in turn, each with its own error: for an object ``_lean_payment`` doubts."""
    raw_id = obj.get("transaction_id")
    txn_id = raw_id if isinstance(raw_id, str) and _ID_RE.match(raw_id) else None
    try:
        missing = [name for name in REQUIRED_FIELDS if obj.get(name) is None]
        if missing:
            raise ParseError("missing_field", "missing required field(s): " + ", ".join(missing))
        transaction_id = _text(obj, "transaction_id", _ID_RE)
        account_id = _text(obj, "account_id", _ID_RE)
        amount_minor = parse_amount_minor(obj["amount"])
        currency = obj["currency"]
        if not isinstance(currency, str) or currency not in ISO_4217:
            raise ParseError("invalid_currency", "currency is not an ISO 4217 code")
        card = obj["card_number"]
        if not isinstance(card, str):
            raise ParseError("invalid_card_number", "card_number must be a string of digits")
        card = card.replace(" ", "").replace("-", "")
        if not _CARD_RE.match(card) or not luhn_valid(card):
            raise ParseError("invalid_card_number", "card_number is not a Luhn-valid 12-19 digit number")
        cvv = obj["cvv"]
        if not isinstance(cvv, str) or not _CVV_RE.match(cvv):
            raise ParseError("invalid_field", "cvv must be 3 or 4 digits")
        email = _text(obj, "email", _EMAIL_RE, pii=True)
        phone = _text(obj, "phone", pii=True)
        if not 7 <= sum(map(str.isdigit, phone)) <= 15 or not _PHONE_RE.match(phone):
            raise ParseError("invalid_field", "phone is not a phone number")
        merchant_id = _text(obj, "merchant_id", _ID_RE)
        merchant_category = _text(obj, "merchant_category", _MCC_RE)
        country = obj["country"]
        if not isinstance(country, str) or country not in ISO_3166_ALPHA2:
            raise ParseError("invalid_country", "country is not an ISO 3166 alpha-2 code")
        card_country = obj.get("card_country")
        if card_country is not None and (
            not isinstance(card_country, str) or card_country not in ISO_3166_ALPHA2
        ):
            raise ParseError("invalid_country", "card_country is not an ISO 3166 alpha-2 code")
        event_time_us = parse_event_time_us(obj["event_time"])
        if event_time_us > now_us + max_future_skew_us:
            raise ParseError("event_time_in_future", "event_time is implausibly far in the future")
    except ParseError as err:
        err.transaction_id = err.transaction_id or txn_id
        raise

    return Transaction(
        transaction_id=transaction_id,
        account_id=account_id,
        amount_minor=amount_minor,
        currency=currency,
        card_number=card,
        email=email,
        phone=phone,
        merchant_id=merchant_id,
        merchant_category=merchant_category,
        country=country,
        card_country=card_country,
        event_time_us=event_time_us,
        source=source,
        fingerprint=_fingerprint(
            transaction_id,
            account_id,
            amount_minor,
            currency,
            merchant_id,
            merchant_category,
            country,
            event_time_us,
        ),
    )


def parse_or_dead_letter(
    raw: bytes, source: SourceRef, now_us: int, max_future_skew_us: int
) -> Union[Transaction, DeadLetter]:
    """The payment of one payload, or its dead letter: never an exception."""
    try:
        return parse_payment(raw, source, now_us, max_future_skew_us)
    except ParseError as err:
        return _dead_letter(err.reason, err.message, raw, source, err.transaction_id)
    except Exception as err:  # a bug must not stop the stream: dead-letter it
        _LOG.exception("parser failed on %s/%s/%s", source.topic, source.partition, source.offset)
        return _dead_letter(
            "internal_error", type(err).__name__, raw if isinstance(raw, bytes) else b"", source, None
        )


def payload_size(raw: Any) -> int:
    """The size a payload is counted with in ``payload_bytes`` (0 for what is not bytes)."""
    return len(raw) if isinstance(raw, (bytes, bytearray)) else 0


def _dead_letter(
    reason: str, message: str, raw: bytes, source: SourceRef, txn_id: Optional[str]
) -> DeadLetter:
    return make_dead_letter("parse", reason, message, source, masked_payload_text(raw), txn_id)
