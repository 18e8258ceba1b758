"""Deterministic generator of card-payment messages with labelled injections.

``generate(config)`` returns the records in emission order and a
``GroundTruth`` that says what was injected:

* **valid** payments: one UTF-8 JSON object each (see ``MESSAGE_FIELDS``).
  Every account keeps one card, CVV, e-mail, phone and home country.
* **velocity bursts** (the fraud ground truth): 3 to 6 payments of one account
  within ``BURST_MAX_SPAN_US``, with no other payment of that account within
  ``BURST_ISOLATION_US`` of the burst. Outside its burst, consecutive payments
  of an account are at least ``NORMAL_MIN_GAP_US`` apart, so no account ever
  has 3 payments inside a 60 s span except its burst.
* **duplicates**: valid payloads re-emitted byte-identical a few positions later.
* **malformed** payloads, one kind per ``MALFORMED_KINDS`` entry, mapped to the
  dead-letter reason the parser assigns.
* **late** payments, emitted 5 to 30 s of event time after their place. The rest
  of the output is in event-time order, shuffled locally by up to 2 s.

Everything comes from ``random.Random`` streams seeded from ``config.seed``,
so the same config always yields byte-identical output. Times are integers in
microseconds since the Unix epoch, UTC (the convention of ``schemas.records``).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from itertools import accumulate, pairwise
from typing import Any

from schemas.payment import MAX_PAYLOAD_BYTES, REQUIRED_FIELDS, luhn_complete, luhn_valid

__all__ = [
    "BURST_ISOLATION_US",
    "BURST_MAX_SIZE",
    "BURST_MAX_SPAN_US",
    "BURST_MIN_SIZE",
    "CURRENCIES",
    "MALFORMED_KINDS",
    "MAX_PAYLOAD_BYTES",
    "MESSAGE_FIELDS",
    "NORMAL_MIN_GAP_US",
    "PII_FIELDS",
    "RECORD_KINDS",
    "REQUIRED_FIELDS",
    "Burst",
    "GeneratorConfig",
    "GroundTruth",
    "SimRecord",
    "generate",
    "iter_payloads",
    "luhn_complete",
    "luhn_valid",
]

# --------------------------------------------------------------------------- constants

#: Fields of a valid message, in the order they are serialised: the required ones, with the
#: optional card_country before the event time.
MESSAGE_FIELDS: tuple[str, ...] = (*REQUIRED_FIELDS[:-1], "card_country", REQUIRED_FIELDS[-1])

#: Fields whose raw values must never leave the pipeline unmasked.
PII_FIELDS: tuple[str, ...] = ("card_number", "cvv", "email", "phone")

#: Values of ``SimRecord.kind``.
RECORD_KINDS: tuple[str, ...] = ("valid", "duplicate", "malformed")

#: The currencies valid messages use (all with two minor digits).
CURRENCIES: tuple[str, ...] = ("USD", "EUR", "GBP", "CAD", "AUD", "CHF")

# MAX_PAYLOAD_BYTES (the largest payload the parser accepts; ``oversized`` records are just
# over it), REQUIRED_FIELDS and the Luhn functions are schemas/payment.py's, re-exported here.

#: The required fields a ``missing_field`` record lacks one of (schemas.payment.REQUIRED_FIELDS).
_MISSING_FIELD_CHOICES: tuple[str, ...] = tuple(
    f
    for f in REQUIRED_FIELDS
    if f in {"account_id", "amount", "currency", "card_number", "merchant_id", "event_time"}
)

#: Malformed kind -> the dead-letter reason the parser assigns to it.
MALFORMED_KINDS: dict[str, str] = {
    "not_json": "invalid_json",
    "truncated_json": "invalid_json",
    "json_array": "not_an_object",
    "missing_field": "missing_field",
    "bad_luhn": "invalid_card_number",
    "non_positive_amount": "invalid_amount",
    "too_many_decimals": "invalid_amount",
    "bad_currency": "invalid_currency",
    "naive_timestamp": "invalid_event_time",
    "future_timestamp": "event_time_in_future",
    "not_utf8": "not_utf8",
    "oversized": "payload_too_large",
}

BURST_MIN_SIZE = 3
BURST_MAX_SIZE = 6
#: Last minus first event time of a burst is at most this.
BURST_MAX_SPAN_US = 30_000_000
#: A burst account has no other payment within this distance of its burst.
BURST_ISOLATION_US = 150_000_000
#: Consecutive non-burst payments of one account are at least this far apart.
NORMAL_MIN_GAP_US = 70_000_000

_MS = 1_000  # microseconds per millisecond: the generator works in whole ms
_ISOLATION_GAP_MS = BURST_ISOLATION_US // _MS + 1_000
_NORMAL_GAP_MS = NORMAL_MIN_GAP_US // _MS
_MIN_SPAN_MS = 300_000
_SPAN_SLACK = 1.25
_JITTER_MS = 2_000
_LATE_MIN_MS, _LATE_MAX_MS = 5_000, 30_000
_DUPLICATE_MAX_DISTANCE = 8
_NUMERIC_AMOUNT_RATE = 0.10
_UTC_SUFFIX_RATE = 0.85
_SAME_CARD_COUNTRY_RATE = 0.90
_DOMESTIC_MERCHANT_RATE = 0.85
_LOCAL_CURRENCY_RATE = 0.85
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MIN_EVENTS_FOR_ALL_KINDS = 200

# --------------------------------------------------------------------------- reference data


@dataclass(frozen=True)
class _Country:
    code: str
    weight: int
    currency: str
    dial: str
    areas: tuple[str, ...]
    utc_offsets_min: tuple[int, ...]  # local offsets in late November


_COUNTRIES: tuple[_Country, ...] = (
    _Country("US", 34, "USD", "1", ("555",), (-300, -360, -480)),
    _Country("GB", 12, "GBP", "44", (), (0,)),
    _Country("DE", 9, "EUR", "49", ("30", "40", "89"), (60,)),
    _Country("FR", 8, "EUR", "33", ("1", "4"), (60,)),
    _Country("CA", 7, "CAD", "1", ("555",), (-300, -480)),
    _Country("AU", 6, "AUD", "61", (), (660,)),
    _Country("NL", 5, "EUR", "31", ("20",), (60,)),
    _Country("ES", 5, "EUR", "34", ("91",), (60,)),
    _Country("IT", 5, "EUR", "39", ("06", "02"), (60,)),
    _Country("IE", 3, "EUR", "353", ("1",), (0,)),
    _Country("CH", 3, "CHF", "41", ("44",), (60,)),
)
_COUNTRY = {c.code: c for c in _COUNTRIES}
_COUNTRY_CODES = [c.code for c in _COUNTRIES]
_COUNTRY_CUM = list(accumulate(c.weight for c in _COUNTRIES))

# Ofcom drama ranges (area, exchange, first digit of the line) and ACMA fictional ranges.
_GB_FICTIONAL = (
    ("20", "7946", "0"),
    ("161", "496", "0"),
    ("113", "496", "0"),
    ("117", "496", "0"),
    ("121", "496", "0"),
    ("131", "496", "0"),
    ("141", "496", "0"),
    ("151", "496", "0"),
    ("29", "2018", "0"),
)
_AU_FICTIONAL = (("2", "5550"), ("3", "7010"))


@dataclass(frozen=True)
class _Category:
    mcc: str
    weight: int
    median_cents: int
    high_risk: bool


_CATEGORIES: tuple[_Category, ...] = (
    _Category("5411", 20, 4_500, False),  # grocery stores
    _Category("5812", 15, 3_800, False),  # restaurants
    _Category("5814", 10, 1_100, False),  # fast food
    _Category("5541", 10, 5_000, False),  # service stations
    _Category("4111", 8, 350, False),  # commuter transport
    _Category("5999", 8, 3_000, False),  # miscellaneous retail
    _Category("5311", 5, 7_000, False),  # department stores
    _Category("5912", 5, 2_000, False),  # drug stores
    _Category("4121", 4, 2_200, False),  # taxis
    _Category("7011", 3, 18_000, False),  # hotels
    _Category("5732", 5, 22_000, True),  # electronics
    _Category("5967", 2, 2_500, True),  # direct marketing, inbound telemarketing
    _Category("7995", 2, 6_000, True),  # gambling
    _Category("4829", 3, 15_000, True),  # money transfer
)

_FIRST_NAMES = (
    "jane", "john", "maria", "li", "ahmed", "sofia", "lukas", "emma", "noah", "olivia",
    "liam", "mia", "lucas", "chloe", "mateo", "amelie", "hugo", "ines", "oscar", "freya",
    "arjun", "yuki", "omar", "elena", "pablo", "nora", "finn", "zoe", "leon", "aisha",
)  # fmt: skip
_LAST_NAMES = (
    "doe", "smith", "garcia", "muller", "rossi", "martin", "brown", "dubois", "jansen", "silva",
    "kowalski", "novak", "murphy", "walsh", "tanaka", "khan", "schmidt", "lopez", "moreau", "weber",
    "taylor", "wilson", "fischer", "bianchi", "costa", "kelly", "meyer", "ferrari", "lambert", "roux",
)  # fmt: skip
_EMAIL_DOMAINS = (
    "example.com",
    "example.org",
    "example.net",
    "mail.example",
    "shop.example",
    "inbox.test",
)

# --------------------------------------------------------------------------- public types


@dataclass(frozen=True)
class GeneratorConfig:
    """What to generate. Invalid values raise ``ValueError`` on construction.

    ``num_events`` counts every emitted record (valid + duplicates + malformed).
    ``bursts=None`` means ``max(3, num_events // 200)``, lowered to what fits
    when the run is tiny; an explicit count that cannot fit is an error.
    ``malformed_rate > 0`` with ``num_events >= 200`` guarantees one record of
    every malformed kind. At most one ``oversized`` record (1 MiB) is emitted.
    """

    num_events: int = 3000
    accounts: int = 500
    seed: int = 42
    start: datetime = datetime(2026, 11, 24, 10, 0, 0, tzinfo=UTC)
    duplicate_rate: float = 0.05
    malformed_rate: float = 0.01
    late_rate: float = 0.01
    bursts: int | None = None
    include_oversized: bool = True

    def __post_init__(self) -> None:
        if self.num_events < 0:
            raise ValueError(f"num_events must be >= 0, got {self.num_events}")
        if self.accounts < 1:
            raise ValueError(f"accounts must be >= 1, got {self.accounts}")
        if self.start.tzinfo is None or self.start.utcoffset() is None:
            raise ValueError("start must be a timezone-aware datetime")
        for name in ("duplicate_rate", "malformed_rate", "late_rate"):
            rate = getattr(self, name)
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {rate}")
        if self.bursts is not None and self.bursts < 0:
            raise ValueError(f"bursts must be >= 0, got {self.bursts}")
        _plan_counts(self)  # raises if an explicit burst count cannot fit


@dataclass(frozen=True, slots=True)
class SimRecord:
    """One emitted payload and its label.

    ``kind`` is one of ``RECORD_KINDS``. ``transaction_id`` is the id written in
    the payload (for a malformed record too; never one of a valid record).
    ``event_time_us`` is the instant the payload's ``event_time`` denotes, or
    None when it has none that parses with an offset. A duplicate carries the
    labels of the record it copies (``late`` included).
    """

    payload: bytes
    kind: str
    transaction_id: str | None
    malformed_kind: str | None
    burst_id: str | None
    late: bool
    event_time_us: int | None
    account_id: str | None = None  # the Kafka key; None only if the payload names no account


@dataclass(frozen=True)
class Burst:
    """One injected velocity burst; ``transaction_ids`` in event-time order.

    ``crossing_transaction_id``: the payment whose arrival makes the burst reach the
    threshold (its third in sending order), when the sender knows it (the live simulator).
    """

    burst_id: str
    account_id: str
    first_time_us: int
    last_time_us: int
    transaction_ids: tuple[str, ...]
    crossing_transaction_id: str | None = None


@dataclass
class GroundTruth:
    """What a run injected, for checking a pipeline's outputs.

    ``malformed`` maps dead-letter reason -> count. ``late`` counts valid
    records (not their duplicates) labelled late. ``pii`` maps each of
    ``PII_FIELDS`` to every raw value emitted anywhere, malformed records included.
    ``sends`` maps a valid payment's id to when it was sent and when Kafka acknowledged
    it (microseconds since the epoch; 0 while unacknowledged), for a live run.
    """

    valid_transaction_ids: set[str]
    duplicates: int
    malformed: dict[str, int]
    bursts: list[Burst]
    late: int
    pii: dict[str, set[str]]
    sends: dict[str, tuple[int, int]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict (sets become sorted lists)."""
        return {
            "valid_transaction_ids": sorted(self.valid_transaction_ids),
            "duplicates": self.duplicates,
            "malformed": dict(sorted(self.malformed.items())),
            "bursts": [
                {
                    "burst_id": b.burst_id,
                    "account_id": b.account_id,
                    "first_time_us": b.first_time_us,
                    "last_time_us": b.last_time_us,
                    "transaction_ids": list(b.transaction_ids),
                    **(
                        {"crossing_transaction_id": b.crossing_transaction_id}
                        if b.crossing_transaction_id is not None
                        else {}
                    ),
                }
                for b in self.bursts
            ],
            "late": self.late,
            "pii": {k: sorted(v) for k, v in sorted(self.pii.items())},
            **({"sends": {k: list(v) for k, v in self.sends.items()}} if self.sends else {}),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GroundTruth:
        """The inverse of ``to_json``."""
        return cls(
            valid_transaction_ids=set(data["valid_transaction_ids"]),
            duplicates=int(data["duplicates"]),
            malformed={str(k): int(v) for k, v in data["malformed"].items()},
            bursts=[
                Burst(
                    burst_id=b["burst_id"],
                    account_id=b["account_id"],
                    first_time_us=int(b["first_time_us"]),
                    last_time_us=int(b["last_time_us"]),
                    transaction_ids=tuple(b["transaction_ids"]),
                    crossing_transaction_id=b.get("crossing_transaction_id"),
                )
                for b in data["bursts"]
            ],
            late=int(data["late"]),
            pii={k: set(v) for k, v in data["pii"].items()},
            sends={k: (int(v[0]), int(v[1])) for k, v in data.get("sends", {}).items()},
        )


# --------------------------------------------------------------------------- entities


@dataclass(frozen=True)
class _Account:
    account_id: str
    card_number: str
    cvv: str
    email: str
    phone: str
    home_country: str
    card_country: str


@dataclass(frozen=True)
class _Merchant:
    merchant_id: str
    category: _Category
    country: str


def _digits(rng: random.Random, n: int) -> str:
    return f"{rng.randrange(10**n):0{n}d}"


def _new_card(rng: random.Random) -> tuple[str, str]:
    """A Luhn-valid card number and its CVV: mostly 16-digit Visa/Mastercard."""
    r = rng.random()
    if r < 0.55:
        prefix = "4" + _digits(rng, 14)
    elif r < 0.85:
        prefix = str(rng.randint(51, 55)) + _digits(rng, 13)
    elif r < 0.95:
        card = luhn_complete(rng.choice(("34", "37")) + _digits(rng, 12))
        return card, _digits(rng, 4)
    else:
        head = rng.choice(("4", "6011"))
        prefix = head + _digits(rng, 18 - len(head))
    return luhn_complete(prefix), _digits(rng, 3)


def _new_phone(rng: random.Random, country: _Country) -> str:
    """``+CC-AREA-XXX-XXXX`` in a fictional range where the country has one."""
    if country.code == "GB":
        area, exchange, lead = rng.choice(_GB_FICTIONAL)
        return f"+44-{area}-{exchange}-{lead}{_digits(rng, 3)}"
    if country.code == "AU":
        area, exchange = rng.choice(_AU_FICTIONAL)
        return f"+61-{area}-{exchange}-{_digits(rng, 4)}"
    area = rng.choice(country.areas)
    return f"+{country.dial}-{area}-{rng.randint(200, 999)}-{_digits(rng, 4)}"


def _unique(make: Callable[[], str], used: set[str], attempts: int = 20) -> str:
    """A value from ``make()`` not in ``used`` (a repeat only if none is found)."""
    value = make()
    for _ in range(attempts):
        if value not in used:
            break
        value = make()
    used.add(value)
    return value


def _pick_country(rng: random.Random) -> _Country:
    return _COUNTRIES[rng.choices(range(len(_COUNTRIES)), cum_weights=_COUNTRY_CUM)[0]]


def _new_email(rng: random.Random, first: str, last: str) -> str:
    return f"{first}.{last}{rng.randint(1, 9999)}@{rng.choice(_EMAIL_DOMAINS)}"


def _make_account(
    rng: random.Random, account_id: str, cards: set[str], emails: set[str], phones: set[str]
) -> _Account:
    """One account with a card not in ``cards`` (and, while the ranges last, a new e-mail and phone)."""
    home = _pick_country(rng)
    card, cvv = _new_card(rng)
    while card in cards:
        card, cvv = _new_card(rng)
    cards.add(card)
    first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
    if rng.random() < _SAME_CARD_COUNTRY_RATE:
        card_country = home.code
    else:
        card_country = rng.choice([c for c in _COUNTRY_CODES if c != home.code])
    return _Account(
        account_id=account_id,
        card_number=card,
        cvv=cvv,
        email=_unique(partial(_new_email, rng, first, last), emails),
        phone=_unique(partial(_new_phone, rng, home), phones),
        home_country=home.code,
        card_country=card_country,
    )


def _make_accounts(rng: random.Random, count: int) -> list[_Account]:
    """Accounts with distinct cards and (while the ranges last) distinct e-mails and phones."""
    cards: set[str] = set()
    emails: set[str] = set()
    phones: set[str] = set()
    return [_make_account(rng, f"acct-{i + 1:06d}", cards, emails, phones) for i in range(count)]


def _make_merchants(rng: random.Random, count: int) -> list[_Merchant]:
    """Merchants with every country and every category represented at least once."""
    cum = list(accumulate(cat.weight for cat in _CATEGORIES))
    countries = list(_COUNTRIES) + [_pick_country(rng) for _ in range(count)]
    categories = list(_CATEGORIES) + [
        _CATEGORIES[rng.choices(range(len(_CATEGORIES)), cum_weights=cum)[0]] for _ in range(count)
    ]
    total = max(count, len(_COUNTRIES), len(_CATEGORIES))
    return [_Merchant(f"m-{i + 1:05d}", categories[i], countries[i].code) for i in range(total)]


# --------------------------------------------------------------------------- planning


def _malformed_kinds(include_oversized: bool) -> list[str]:
    return [k for k in MALFORMED_KINDS if include_oversized or k != "oversized"]


def _plan_counts(config: GeneratorConfig) -> tuple[int, int, int, int]:
    """(valid, duplicates, malformed, bursts) for ``config``; raises if bursts cannot fit."""
    n = config.num_events
    n_mal = round(n * config.malformed_rate) if config.malformed_rate > 0 else 0
    if config.malformed_rate > 0 and n >= _MIN_EVENTS_FOR_ALL_KINDS:
        n_mal = max(n_mal, len(_malformed_kinds(config.include_oversized)))
    rest = n - n_mal
    n_valid = round(rest / (1.0 + config.duplicate_rate))
    n_dup = min(rest - n_valid, n_valid)  # every duplicate copies a distinct valid record
    n_valid = rest - n_dup
    fits = min(config.accounts, n_valid // BURST_MIN_SIZE)
    if config.bursts is None:
        n_bursts = min(max(3, n // 200), fits)
    else:
        if config.bursts > fits:
            raise ValueError(
                f"{config.bursts} bursts do not fit: at most {fits} with "
                f"{n_valid} valid events and {config.accounts} accounts"
            )
        n_bursts = config.bursts
    return n_valid, n_dup, n_mal, n_bursts


@dataclass
class _Event:
    """One valid payment while it is being built."""

    time_ms: int
    account: int
    burst: int  # -1 outside bursts
    member: int


def _burst_sizes(rng: random.Random, n_bursts: int, n_valid: int) -> list[int]:
    sizes = [rng.randint(BURST_MIN_SIZE, BURST_MAX_SIZE) for _ in range(n_bursts)]
    excess = sum(sizes) - n_valid
    i = 0
    while excess > 0:  # tiny runs: shrink bursts towards the minimum size
        if sizes[i % n_bursts] > BURST_MIN_SIZE:
            sizes[i % n_bursts] -= 1
            excess -= 1
        i += 1
    return sizes


def _timeline(
    rng: random.Random,
    n_accounts: int,
    normal_counts: list[int],
    burst_of: dict[int, int],
    burst_sizes: list[int],
) -> tuple[list[_Event], int]:
    """Event times (ms from start) for every account; returns events and the span.

    Each account's items (single payments, and its burst as one block) are laid
    out in a random order with the minimum gaps between them, then spread
    uniformly over the span: sample sorted offsets in the free room and add the
    cumulative minimum widths, the usual way to draw points with a minimum spacing.
    """
    burst_len = [rng.randint(2_000, BURST_MAX_SPAN_US // _MS) for _ in burst_sizes]
    layouts: list[tuple[int, list[int], int]] = []  # account, items, required ms
    max_required = 0
    for a in range(n_accounts):
        items = [-1] * normal_counts[a]
        b = burst_of.get(a)
        if b is not None:
            items.insert(rng.randint(0, len(items)), b)
        if not items:
            continue
        required = 0
        for prev, cur in pairwise(items):
            gap = _NORMAL_GAP_MS if prev < 0 and cur < 0 else _ISOLATION_GAP_MS
            required += gap + (burst_len[prev] if prev >= 0 else 0)
        if items[-1] >= 0:
            required += burst_len[items[-1]]
        layouts.append((a, items, required))
        max_required = max(max_required, required)

    span = max(_MIN_SPAN_MS, math.ceil(max_required * _SPAN_SLACK))
    events: list[_Event] = []
    for a, items, required in layouts:
        free = span - required
        rand = rng.random
        offsets = sorted(int(rand() * (free + 1)) for _ in items)
        shift = 0
        for idx, (item, offset) in enumerate(zip(items, offsets)):
            if idx:
                prev = items[idx - 1]
                gap = _NORMAL_GAP_MS if prev < 0 and item < 0 else _ISOLATION_GAP_MS
                shift += gap + (burst_len[prev] if prev >= 0 else 0)
            t = offset + shift
            if item < 0:
                events.append(_Event(t, a, -1, 0))
                continue
            length, size = burst_len[item], burst_sizes[item]
            inner = sorted(rng.sample(range(1, length), size - 2))
            for m, dt in enumerate([0, *inner, length]):
                events.append(_Event(t + dt, a, item, m))
    return events, span


# --------------------------------------------------------------------------- payload fields


_TZ_CACHE: dict[int, timezone] = {}


def _format_time(time_us: int, offset_min: int | None, naive: bool = False) -> str:
    """RFC 3339: ``...Z`` when ``offset_min`` is None, else the same instant at that offset."""
    dt = _EPOCH + timedelta(microseconds=time_us)
    spec = "milliseconds" if time_us % _MS == 0 else "microseconds"
    if offset_min is None:
        text = dt.isoformat(timespec=spec)[:-6]
        return text if naive else text + "Z"
    tz = _TZ_CACHE.get(offset_min)
    if tz is None:
        tz = _TZ_CACHE[offset_min] = timezone(timedelta(minutes=offset_min))
    text = dt.astimezone(tz).isoformat(timespec=spec)
    return text[:-6] if naive else text


def _format_cents(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    cents = abs(cents)
    return f"{sign}{cents // 100}.{cents % 100:02d}"


def _amount_value(rng: random.Random, cents: int) -> str | float:
    """Mostly a 2-decimal string; sometimes a JSON number (12.5, 40)."""
    if rng.random() >= _NUMERIC_AMOUNT_RATE:
        return _format_cents(cents)
    return cents // 100 if cents % 100 == 0 else cents / 100


def _draw_cents(rng: random.Random, median_cents: int) -> int:
    return max(1, min(900_000, round(median_cents * math.exp(rng.gauss(0.0, 0.8)))))


def _currency(rng: random.Random, merchant_country: str) -> str:
    if rng.random() < _LOCAL_CURRENCY_RATE:
        return _COUNTRY[merchant_country].currency
    return rng.choice(("USD", "USD", "EUR", "GBP"))


def _event_offset(rng: random.Random, merchant_country: str) -> int | None:
    if rng.random() < _UTC_SUFFIX_RATE:
        return None
    return rng.choice(_COUNTRY[merchant_country].utc_offsets_min)


def _message(
    txn_id: str,
    account: _Account,
    amount: str | float,
    currency: str,
    merchant: _Merchant,
    event_time: str,
) -> dict[str, Any]:
    return {
        "transaction_id": txn_id,
        "account_id": account.account_id,
        "amount": amount,
        "currency": currency,
        "card_number": account.card_number,
        "cvv": account.cvv,
        "email": account.email,
        "phone": account.phone,
        "merchant_id": merchant.merchant_id,
        "merchant_category": merchant.category.mcc,
        "country": merchant.country,
        "card_country": account.card_country,
        "event_time": event_time,
    }


_ENCODE = json.JSONEncoder(separators=(",", ":")).encode


def _dumps(obj: object) -> bytes:
    return _ENCODE(obj).encode("utf-8")


_LONG_DIGIT_RUN = re.compile(r"[0-9]{12}")


def _txn_id(seed: int, namespace: str, counter: int) -> str:
    """``txn-`` + 20 hex chars from the seed and a counter.

    Ids with 12 or more decimal digits in a row are re-drawn: such a run could
    be Luhn-valid, and the parser rejects identifiers that look like a card number.
    """
    key = f"paystream-sim:{seed}:{namespace}:{counter}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    redraw = 0
    while _LONG_DIGIT_RUN.search(digest):
        redraw += 1
        digest = hashlib.sha256(f"{key}:{redraw}".encode()).hexdigest()[:20]
    return "txn-" + digest


# --------------------------------------------------------------------------- malformed


def _malformed(
    kind: str,
    rng: random.Random,
    obj: dict[str, Any],
    time_us: int,
    offset: int | None,
    future_us: int,
) -> tuple[bytes, int | None]:
    """The payload of one malformed record built from a valid-looking ``obj``.

    Mutates ``obj`` so that afterwards it holds exactly the fields whose raw
    values the payload contains. Returns the payload and its event time (or None).
    """
    if kind == "not_json":
        values = {k: str(v) for k, v in obj.items()}
        style = rng.randrange(3)
        if style == 0:  # form-encoded
            text = "&".join(f"{k}={v}" for k, v in values.items())
        elif style == 1:  # a Python dict repr
            text = "{" + ", ".join(f"'{k}': '{v}'" for k, v in values.items()) + "}"
        else:  # a CSV line
            text = ",".join(values.values())
        return text.encode("utf-8"), None
    if kind == "truncated_json":
        full = _dumps(obj)
        cut = rng.randint(full.index(b'"merchant_id"'), len(full) - 2)
        return full[:cut], None
    if kind == "json_array":
        return b"[" + _dumps(obj) + b"]", time_us
    if kind == "missing_field":
        dropped = rng.choice(_MISSING_FIELD_CHOICES)
        del obj[dropped]
        return _dumps(obj), None if dropped == "event_time" else time_us
    if kind == "bad_luhn":
        card = obj["card_number"]
        obj["card_number"] = card[:-1] + str((int(card[-1]) + rng.randint(1, 9)) % 10)
        return _dumps(obj), time_us
    if kind == "non_positive_amount":
        obj["amount"] = rng.choice(("0.00", "-" + _format_cents(_draw_cents(rng, 3000)), 0, -5))
        return _dumps(obj), time_us
    if kind == "too_many_decimals":
        cents = _draw_cents(rng, 3000)
        obj["amount"] = f"{_format_cents(cents)}{rng.randint(1, 9)}"
        return _dumps(obj), time_us
    if kind == "bad_currency":
        obj["currency"] = rng.choice(("XYZ", "EURO", "US$", "ABC"))
        return _dumps(obj), time_us
    if kind == "naive_timestamp":
        obj["event_time"] = _format_time(time_us, offset, naive=True)
        return _dumps(obj), None
    if kind == "future_timestamp":
        obj["event_time"] = _format_time(future_us, offset)
        return _dumps(obj), future_us
    if kind == "not_utf8":
        full = _dumps(obj)
        marker = b'"merchant_id":"'
        at = full.index(marker) + len(marker)
        return full[:at] + b"\xff\xfe" + full[at:], time_us
    if kind == "oversized":
        obj["note"] = ""
        room = MAX_PAYLOAD_BYTES - len(_dumps(obj)) + rng.randint(1, 64)
        filler = "Customer note: please deliver to the side door. "
        obj["note"] = (filler * (room // len(filler) + 1))[:room]
        payload = _dumps(obj)
        del obj["note"]
        return payload, time_us
    raise ValueError(f"unknown malformed kind {kind!r}")


def _valid_records(
    rng: random.Random,
    events: list[_Event],
    accounts: list[_Account],
    merchants: list[_Merchant],
    seed: int,
    start_us: int,
    n_bursts: int,
) -> tuple[list[SimRecord], list[list[str]]]:
    """One valid record per event (in ``events`` order) and each burst's transaction ids.

    Payments go mostly to merchants of the account's home country. Bursts use one
    to three high-risk merchants and either card-testing amounts (0.50 to 5.00)
    or large ones.
    """
    domestic: dict[str, list[_Merchant]] = {c.code: [] for c in _COUNTRIES}
    for m in merchants:
        domestic[m.country].append(m)
    risky = [m for m in merchants if m.category.high_risk]
    burst_merchants = [
        [rng.choice(risky)] if rng.random() < 0.6 else rng.sample(risky, min(3, len(risky)))
        for _ in range(n_bursts)
    ]
    burst_small = [rng.random() < 0.5 for _ in range(n_bursts)]
    burst_ids = [f"burst-{b + 1:05d}" for b in range(n_bursts)]
    burst_txns: list[list[str]] = [[] for _ in range(n_bursts)]
    valid: list[SimRecord] = []
    for counter, ev in enumerate(events):
        account = accounts[ev.account]
        if ev.burst >= 0:
            merchant = rng.choice(burst_merchants[ev.burst])
            cents = rng.randint(50, 500) if burst_small[ev.burst] else rng.randint(15_000, 90_000)
        else:
            if rng.random() < _DOMESTIC_MERCHANT_RATE and domestic[account.home_country]:
                merchant = rng.choice(domestic[account.home_country])
            else:
                merchant = rng.choice(merchants)
            cents = _draw_cents(rng, merchant.category.median_cents)
        time_us = start_us + ev.time_ms * _MS
        txn_id = _txn_id(seed, "valid", counter)
        obj = _message(
            txn_id,
            account,
            _amount_value(rng, cents),
            _currency(rng, merchant.country),
            merchant,
            _format_time(time_us, _event_offset(rng, merchant.country)),
        )
        burst_id = None
        if ev.burst >= 0:
            burst_id = burst_ids[ev.burst]
            burst_txns[ev.burst].append(txn_id)
        valid.append(
            SimRecord(_dumps(obj), "valid", txn_id, None, burst_id, False, time_us, account.account_id)
        )
    return valid, burst_txns


def _emission_keys(
    rng: random.Random, events: list[_Event], n_bursts: int, late_rate: float
) -> tuple[list[int], list[int], list[list[int]]]:
    """Sort keys (ms) that set the emission order of ``events``.

    A key is the event time plus up to 2 s of jitter; late events get 5 to 30 s
    instead. Burst members take their burst's keys in event-time order, except
    one burst in three, whose members get them shuffled. Returns the keys, the
    indexes of late events and the member indexes of each burst.
    """
    rand = rng.random
    keys = [ev.time_ms + int(rand() * (_JITTER_MS + 1)) for ev in events]
    normal_idx = [i for i, ev in enumerate(events) if ev.burst < 0]
    late_idx = sorted(rng.sample(normal_idx, round(len(normal_idx) * late_rate)))
    for i in late_idx:
        keys[i] = events[i].time_ms + rng.randint(_LATE_MIN_MS, _LATE_MAX_MS)
    members: list[list[int]] = [[] for _ in range(n_bursts)]
    for i, ev in enumerate(events):
        if ev.burst >= 0:
            members[ev.burst].append(i)
    for b, idx in enumerate(members):  # idx is in event-time order
        burst_keys = sorted(keys[i] for i in idx)
        for j in range(1, len(burst_keys)):  # distinct keys: a shuffle really reorders
            burst_keys[j] = max(burst_keys[j], burst_keys[j - 1] + 1)
        if b % 3 == 2:
            in_order = list(burst_keys)
            while burst_keys == in_order:
                rng.shuffle(burst_keys)
        for i, k in zip(idx, burst_keys):
            keys[i] = k
    return keys, late_idx, members


def _malformed_records(
    rng: random.Random,
    config: GeneratorConfig,
    count: int,
    accounts: list[_Account],
    merchants: list[_Merchant],
    valid_ids: set[str],
    start_us: int,
    span_ms: int,
    last_ms: int,
) -> Iterator[tuple[int, SimRecord, dict[str, Any]]]:
    """``count`` malformed records: (sort key in ms, record, fields it holds).

    With 200 or more events, every kind appears once before kinds are drawn at
    random; ``oversized`` (1 MiB) appears at most once.
    """
    kinds = _malformed_kinds(config.include_oversized)
    planned = list(kinds) if config.num_events >= _MIN_EVENTS_FOR_ALL_KINDS else []
    planned = planned[:count]
    common = [k for k in kinds if k != "oversized"]
    planned += [rng.choice(common) for _ in range(count - len(planned))]
    rng.shuffle(planned)
    last_us = start_us + last_ms * _MS
    for j, kind in enumerate(planned):
        txn_id = _txn_id(config.seed, "malformed", j)
        bump = 0
        while txn_id in valid_ids:  # 80-bit ids: practically never
            bump += 1
            txn_id = _txn_id(config.seed, f"malformed-{bump}", j)
        account = accounts[rng.randrange(len(accounts))]
        merchant = rng.choice(merchants)
        t_ms = rng.randint(0, span_ms)
        rec, obj = _malformed_record(rng, kind, txn_id, account, merchant, start_us + t_ms * _MS, last_us)
        yield t_ms + rng.randint(0, _JITTER_MS), rec, obj


def _malformed_record(
    rng: random.Random,
    kind: str,
    txn_id: str,
    account: _Account,
    merchant: _Merchant,
    time_us: int,
    latest_us: int,
) -> tuple[SimRecord, dict[str, Any]]:
    """A malformed record of ``kind`` made from a valid-looking message at ``time_us``, and
    the fields whose raw values its payload holds. A future time lies decades after
    ``latest_us``: 'in the future' whatever day the parser's clock says it is."""
    offset = _event_offset(rng, merchant.country)
    future_us = latest_us + 50 * 365 * 86_400_000_000 + rng.randint(0, 600_000) * _MS
    obj = _message(
        txn_id,
        account,
        _format_cents(_draw_cents(rng, merchant.category.median_cents)),
        _currency(rng, merchant.country),
        merchant,
        _format_time(time_us, offset),
    )
    payload, event_us = _malformed(kind, rng, obj, time_us, offset, future_us)
    return SimRecord(payload, "malformed", txn_id, kind, None, False, event_us, account.account_id), obj


def _with_duplicates(rng: random.Random, base: list[SimRecord], count: int) -> tuple[list[SimRecord], int]:
    """``base`` with byte-identical copies of ``count`` valid records, 1 to 8 places later."""
    valid_positions = [p for p, rec in enumerate(base) if rec.kind == "valid"]
    after: dict[int, list[SimRecord]] = {}
    chosen = sorted(rng.sample(valid_positions, min(count, len(valid_positions))))
    for p in chosen:
        q = min(p + rng.randint(1, _DUPLICATE_MAX_DISTANCE), len(base) - 1)
        after.setdefault(q, []).append(_relabel(base[p], kind="duplicate"))
    records: list[SimRecord] = []
    for p, rec in enumerate(base):
        records.append(rec)
        records.extend(after.get(p, ()))
    return records, len(chosen)


# --------------------------------------------------------------------------- generate


def generate(config: GeneratorConfig) -> tuple[list[SimRecord], GroundTruth]:
    """All records of a run in emission order, and what was injected."""
    n_valid, n_dup, n_mal, n_bursts = _plan_counts(config)
    seed = config.seed

    def stream(name: str) -> random.Random:
        return random.Random(f"paystream-sim:{seed}:{name}")

    start_us = (config.start - _EPOCH) // timedelta(microseconds=1)
    accounts = _make_accounts(stream("accounts"), config.accounts)
    merchants = _make_merchants(stream("merchants"), max(60, min(2_000, config.accounts)))

    # --- who pays when
    rng = stream("timeline")
    burst_accounts = rng.sample(range(config.accounts), n_bursts)
    burst_of = {a: b for b, a in enumerate(burst_accounts)}
    sizes = _burst_sizes(rng, n_bursts, n_valid)
    normal_counts = [0] * config.accounts
    for a in rng.choices(
        range(config.accounts), [rng.uniform(0.5, 1.5) for _ in accounts], k=n_valid - sum(sizes)
    ):
        normal_counts[a] += 1
    events, span_ms = _timeline(rng, config.accounts, normal_counts, burst_of, sizes)
    events.sort(key=lambda e: (e.time_ms, e.account, e.member))

    valid, burst_txns = _valid_records(
        stream("fields"), events, accounts, merchants, seed, start_us, n_bursts
    )
    burst_ids = [f"burst-{b + 1:05d}" for b in range(n_bursts)]
    pii: dict[str, set[str]] = {f: set() for f in PII_FIELDS}
    emitted_accounts = {ev.account for ev in events}

    keys, late_idx, members = _emission_keys(stream("order"), events, n_bursts, config.late_rate)
    for i in late_idx:
        valid[i] = _relabel(valid[i], late=True)
    ordered = [(k, i, rec) for i, (k, rec) in enumerate(zip(keys, valid))]
    valid_ids = {r.transaction_id for r in valid if r.transaction_id is not None}
    last_ms = max((e.time_ms for e in events), default=span_ms)
    malformed_counts: dict[str, int] = {}
    for t_ms, rec, fields in _malformed_records(
        stream("malformed"),
        config,
        n_mal,
        accounts,
        merchants,
        valid_ids,
        start_us,
        span_ms,
        last_ms,
    ):
        ordered.append((t_ms, len(ordered), rec))
        reason = MALFORMED_KINDS[str(rec.malformed_kind)]
        malformed_counts[reason] = malformed_counts.get(reason, 0) + 1
        for f in PII_FIELDS:
            if f in fields:
                pii[f].add(fields[f])
    ordered.sort(key=lambda item: (item[0], item[1]))
    records, n_duplicated = _with_duplicates(stream("duplicates"), [r for _, _, r in ordered], n_dup)

    for a in sorted(emitted_accounts):
        account = accounts[a]
        pii["card_number"].add(account.card_number)
        pii["cvv"].add(account.cvv)
        pii["email"].add(account.email)
        pii["phone"].add(account.phone)
    bursts = []
    for b in range(n_bursts):
        idx = members[b]
        bursts.append(
            Burst(
                burst_id=burst_ids[b],
                account_id=accounts[burst_accounts[b]].account_id,
                first_time_us=start_us + events[idx[0]].time_ms * _MS,
                last_time_us=start_us + events[idx[-1]].time_ms * _MS,
                transaction_ids=tuple(burst_txns[b]),
            )
        )
    truth = GroundTruth(
        valid_transaction_ids=valid_ids,
        duplicates=n_duplicated,
        malformed=dict(sorted(malformed_counts.items())),
        bursts=bursts,
        late=len(late_idx),
        pii=pii,
    )
    return records, truth


def _relabel(rec: SimRecord, *, kind: str | None = None, late: bool | None = None) -> SimRecord:
    return SimRecord(
        payload=rec.payload,
        kind=rec.kind if kind is None else kind,
        transaction_id=rec.transaction_id,
        malformed_kind=rec.malformed_kind,
        burst_id=rec.burst_id,
        late=rec.late if late is None else late,
        event_time_us=rec.event_time_us,
        account_id=rec.account_id,
    )


def iter_payloads(config: GeneratorConfig) -> Iterator[bytes]:
    """The payloads of ``generate(config)`` in emission order."""
    records, _ = generate(config)
    for rec in records:
        yield rec.payload
