"""Parsing: validation rules, properties over arbitrary input, and the drivers' first step."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Dict, Set

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels.masking import KeySource
from kernels.parse import (
    MAX_PAYLOAD_BYTES,
    ParseError,
    parse_amount_minor,
    parse_event_time_us,
    parse_or_dead_letter,
    parse_payment,
)
from kernels.velocity import VelocityRule
from schemas.records import SourceRef
from transforms.batch import BatchPayments
from transforms.steps import EngineSettings
from transforms.streaming import StreamingPayments

NOW_US = 1_795_600_000_000_000  # 2026-11-25T08:26:40Z
SRC = SourceRef("payments", 2, 17, "acct-1")


def good(**overrides: Any) -> Dict[str, Any]:
    msg: Dict[str, Any] = {
        "transaction_id": "txn-0001",
        "account_id": "acct-1",
        "amount": "12.50",
        "currency": "USD",
        "card_number": "4111111111111111",
        "cvv": "123",
        "email": "jane@example.com",
        "phone": "+1-555-867-5309",
        "merchant_id": "m-1",
        "merchant_category": "5411",
        "country": "US",
        "card_country": "GB",
        "event_time": "2026-11-24T10:00:05.250Z",
    }
    msg.update(overrides)
    return {k: v for k, v in msg.items() if v is not ...}


def raw(msg: Any) -> bytes:
    return json.dumps(msg).encode()


def test_valid_payment() -> None:
    txn = parse_payment(raw(good()), SRC, NOW_US)
    assert txn.transaction_id == "txn-0001" and txn.amount_minor == 1250
    assert txn.event_time_us == 1_795_514_405_250_000
    assert txn.card_country == "GB" and txn.source == SRC
    assert not hasattr(txn, "cvv")


def test_json_number_amount_is_exact() -> None:
    payload = raw(good()).replace(b'"amount": "12.50"', b'"amount": 12.5')
    assert b'"amount": 12.5,' in payload
    assert parse_payment(payload, SRC, NOW_US).amount_minor == 1250
    with pytest.raises(ParseError):
        parse_payment(payload.replace(b"12.5,", b"12.505,"), SRC, NOW_US)


@pytest.mark.parametrize(
    "payload, reason",
    [
        pytest.param(b"x" * (MAX_PAYLOAD_BYTES + 1), "payload_too_large", id="over-1MiB"),
        pytest.param(b'{"a": "\xff\xfe"}', "not_utf8", id="not-utf8"),
        pytest.param(b'{"transaction_id": "t1", ', "invalid_json", id="truncated"),
        pytest.param(b"NaN", "invalid_json", id="nan"),
        pytest.param(b"[1, 2]", "not_an_object", id="array"),
        pytest.param(raw(good(cvv=...)), "missing_field", id="no-cvv"),
        pytest.param(raw(good(event_time=None)), "missing_field", id="null-time"),
        pytest.param(raw(good(amount="0.00")), "invalid_amount", id="zero"),
        pytest.param(raw(good(amount="-5.00")), "invalid_amount", id="negative"),
        pytest.param(raw(good(amount="12.505")), "invalid_amount", id="three-places"),
        pytest.param(raw(good(amount="1e3")), "invalid_amount", id="exponent-string"),
        pytest.param(raw(good(amount=True)), "invalid_amount", id="bool"),
        pytest.param(raw(good(currency="XYZ")), "invalid_currency", id="not-iso4217"),
        pytest.param(raw(good(currency="usd")), "invalid_currency", id="lower-case"),
        pytest.param(raw(good(card_number="4111111111111112")), "invalid_card_number", id="luhn"),
        pytest.param(raw(good(card_number="41111111111")), "invalid_card_number", id="11-digits"),
        pytest.param(raw(good(card_number=4111111111111111)), "invalid_card_number", id="number"),
        pytest.param(raw(good(cvv="12")), "invalid_field", id="short-cvv"),
        pytest.param(raw(good(email="jane")), "invalid_field", id="email"),
        pytest.param(raw(good(phone="call me")), "invalid_field", id="phone"),
        pytest.param(raw(good(merchant_category="54")), "invalid_field", id="mcc"),
        pytest.param(raw(good(country="XX")), "invalid_country", id="country"),
        pytest.param(raw(good(card_country="ZZ")), "invalid_country", id="card-country"),
        pytest.param(raw(good(event_time="2026-11-24T10:00:05")), "invalid_event_time", id="naive"),
        pytest.param(raw(good(event_time="yesterday")), "invalid_event_time", id="garbage-time"),
        pytest.param(raw(good(event_time="2036-11-24T10:00:05Z")), "event_time_in_future", id="future"),
        pytest.param(raw(good(transaction_id=12)), "invalid_type", id="id-not-string"),
        pytest.param(raw(good(merchant_id="4111111111111111")), "pii_in_field", id="card-in-merchant"),
    ],
)
def test_invalid_payloads(payload: bytes, reason: str) -> None:
    with pytest.raises(ParseError) as err:
        parse_payment(payload, SRC, NOW_US)
    assert err.value.reason == reason


def test_transaction_id_is_kept_on_errors() -> None:
    with pytest.raises(ParseError) as err:
        parse_payment(raw(good(amount="-1")), SRC, NOW_US)
    assert err.value.transaction_id == "txn-0001"


def test_a_card_number_sent_as_the_transaction_id_is_masked_in_the_dead_letter() -> None:
    """Found by the bad-input test through Kafka: the dead letter kept the raw card number in
    its transaction_id column (the masked payload beside it was masked)."""
    for txn_id in ("4111111111111111", "4111 1111 1111 1111", "card 4111-1111-1111-1111", "jo@example.com"):
        letter = parse_or_dead_letter(raw(good(transaction_id=txn_id, amount="-1")), SRC, NOW_US, 300_000_000)
        kept_id = letter.transaction_id or ""
        assert "4111" * 3 not in kept_id.replace(" ", "").replace("-", "") and "jo@" not in kept_id
        if txn_id.isdigit():  # an id the parser keeps: kept masked
            assert kept_id == "****-****-****-1111"
    kept = parse_or_dead_letter(raw(good(amount="-1")), SRC, NOW_US, 300_000_000)
    assert kept.transaction_id == "txn-0001"


def test_event_time_offsets_are_normalised_to_utc() -> None:
    assert parse_event_time_us("2026-11-24T11:00:05.250+01:00") == parse_event_time_us(
        "2026-11-24T10:00:05.250Z"
    )


def test_amount_rules() -> None:
    assert parse_amount_minor("0.01") == 1
    assert parse_amount_minor(40) == 4000
    with pytest.raises(ParseError):
        parse_amount_minor(12.5)  # a float never reaches here: JSON numbers are Decimals


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_raise_anything_but_parse_error(data: bytes) -> None:
    try:
        parse_payment(data, SRC, NOW_US)
    except ParseError as err:
        assert err.reason


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(list(good())), json_values, max_size=13))
def test_arbitrary_objects_never_raise_anything_but_parse_error(obj: Dict[str, Any]) -> None:
    merged = {**good(), **obj}
    try:
        parse_payment(json.dumps(merged).encode(), SRC, NOW_US)
    except ParseError as err:
        assert err.reason


@pytest.mark.parametrize(
    "payload, reason",
    [
        (None, {"invalid_type"}),  # a null Kafka value
        (b'{"a": ' * 100_000 + b"1" + b"}" * 100_000, {"invalid_json"}),  # deeper than any parser
        # below the interpreter's recursion limit: refused the same way, whatever the stack
        (b'{"a": ' * 990 + b"1" + b"}" * 990, {"invalid_json"}),
        (b'{"a": ' * 33 + b"1" + b"}" * 33, {"invalid_json"}),
        (b'{"a": "' + b"{" * 5000 + b'"}', {"missing_field"}),  # brackets in a string: flat
        (b"[" * 50_000 + b"]" * 50_000, {"invalid_json"}),
    ],
)
def test_dead_letter_of_a_null_or_a_deeply_nested_payload(payload: Any, reason: Set[str]) -> None:
    """The dead letter's masked copy is made without raising (it once raised TypeError on a
    null value, RecursionError on deep nesting, out of ``parse_or_dead_letter``)."""
    letter = parse_or_dead_letter(payload, SRC, NOW_US, 300_000_000)
    assert letter.reason in reason and len(letter.masked_payload) <= 4096 + len("...[truncated]")


def test_a_payment_dated_after_its_kafka_record_is_in_the_future() -> None:
    """Dated more than the skew after the record's timestamp (its sending), it is refused,
    however far the wall clock is ahead (a topic read days later)."""
    sent_ms = 1_795_000_000_000  # a week before NOW_US
    at = lambda s: datetime.fromtimestamp(sent_ms / 1000 + s, UTC).isoformat()  # noqa: E731
    src = SourceRef("payments", 0, 1, "acct-1", sent_ms)
    assert (
        parse_payment(raw(good(event_time=at(299))), src, NOW_US).event_time_us == (sent_ms + 299_000) * 1000
    )
    with pytest.raises(ParseError) as err:
        parse_payment(raw(good(event_time=at(301))), src, NOW_US)
    assert err.value.reason == "event_time_in_future"
    # no record timestamp, or one after the wall clock: the wall clock decides
    assert parse_payment(raw(good(event_time=at(3600))), SourceRef("p", 0, 1), NOW_US)
    later = SourceRef("p", 0, 1, None, NOW_US // 1000 + 86_400_000)
    with pytest.raises(ParseError):
        parse_payment(
            raw(good(event_time=datetime.fromtimestamp(NOW_US / 1e6 + 400, UTC).isoformat())),
            later,
            NOW_US,
        )


DRIVERS = [pytest.param(BatchPayments, id="batch"), pytest.param(StreamingPayments, id="stream")]
KEYS = KeySource(key=b"k" * 32)


@pytest.mark.parametrize("driver", DRIVERS)
def test_the_first_step_routes_good_and_bad(driver: Any) -> None:
    payloads = [
        (raw(good(event_time="2026-11-24T10:00:05Z")), SourceRef("payments", 0, 1)),
        (b"not json 4111111111111111 cvv 123", SourceRef("payments", 0, 2)),
        (raw(good(transaction_id="txn-2", amount="0")), SourceRef("payments", 1, 9, "acct-1")),
    ]
    with TestPipeline() as p:
        out = p | beam.Create(payloads) | driver(VelocityRule(), KEYS)
        ids = out.transactions | "Ids" >> beam.Map(lambda r: (r.txn.transaction_id, r.txn.card_masked))
        dead = out.dead_letters | "Dead" >> beam.Map(
            lambda d: (
                d.reason,
                d.source.partition,
                d.source.offset,
                d.transaction_id,
                "4111111111111111" in d.masked_payload,
                "123" in d.masked_payload,
            )
        )
        assert_that(ids, equal_to([("txn-0001", "****-****-****-1111")]), label="valid")
        assert_that(
            dead,
            equal_to(
                [("invalid_json", 0, 2, None, False, False), ("invalid_amount", 1, 9, "txn-2", False, False)]
            ),
            label="dead",
        )


@pytest.mark.parametrize("driver", DRIVERS)
def test_the_first_step_counts_every_payload(driver: Any) -> None:
    """Counters are added in batches inside a bundle (``_COUNT_EVERY``) and exact at its end."""
    from beam_pipeline.summary import counters
    from transforms.steps import _COUNT_EVERY

    valid = 2 * _COUNT_EVERY + 7
    payloads = [
        (raw(good(transaction_id=f"txn-{i}", event_time="2026-11-24T10:00:05Z")), SourceRef("payments", 0, i))
        for i in range(valid)
    ]
    payloads += [(b"{not json", SourceRef("payments", 0, valid + i)) for i in range(3)]
    p = TestPipeline()
    out = p | beam.Create(payloads) | driver(VelocityRule(), KEYS)
    assert_that(out.transactions | beam.combiners.Count.Globally(), equal_to([valid]))
    result = p.run()
    result.wait_until_finish()
    found = counters(result)
    assert found["payments_in"] == valid + 3
    assert found["payments_valid"] == valid
    assert found["dead_letters.invalid_json.parse"] == 3


def test_negative_skew_is_refused() -> None:
    with pytest.raises(ValueError):
        EngineSettings(max_future_skew_s=-1)


def test_parse_and_the_generator_share_one_definition_of_the_message_rules() -> None:
    """Luhn, the payload limit and the required fields: schemas/payment.py's, in both."""
    import kernels.parse as parse
    import schemas.payment as payment
    import simulator.generator as generator

    assert parse.MAX_PAYLOAD_BYTES is generator.MAX_PAYLOAD_BYTES is payment.MAX_PAYLOAD_BYTES
    assert parse.REQUIRED_FIELDS is generator.REQUIRED_FIELDS is payment.REQUIRED_FIELDS
    assert generator.luhn_valid is payment.luhn_valid
    assert generator.luhn_complete is payment.luhn_complete
    # The parser's name is the bare checksum (tests/test_kernels.py pins it to the textbook
    # loop on any string); the generator's adds "ASCII digits, at least two".
    assert parse.luhn_valid is payment.luhn_checksum_ok
    assert set(generator._MISSING_FIELD_CHOICES) <= set(payment.REQUIRED_FIELDS)


@settings(max_examples=300, deadline=None)
@given(digits=st.text("0123456789", max_size=19) | st.text("0123456789 -a٣", max_size=19))
def test_the_strict_luhn_check_is_the_checksum_on_ascii_digits(digits: str) -> None:
    from schemas.payment import luhn_checksum_ok, luhn_complete, luhn_valid

    strict = len(digits) >= 2 and digits.isascii() and digits.isdigit() and luhn_checksum_ok(digits)
    assert luhn_valid(digits) == strict
    if digits.isascii() and digits.isdigit() and digits:
        assert luhn_valid(luhn_complete(digits))
