"""MaskPII: the plain masking functions, their properties, and the composite."""

from __future__ import annotations

import json
import re

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels.masking import (
    Tokenizer,
    load_key,
    mask_email,
    mask_pan,
    mask_phone,
    mask_record,
    mask_text,
    mask_transaction,
    masked_payload_text,
)
from schemas.records import MaskedTransaction, SourceRef, Transaction
from simulator.generator import luhn_complete
from transforms.masking import MaskPII

KEY = bytes(range(32))


@pytest.mark.parametrize(
    "raw, masked",
    [
        pytest.param("4111111111111111", "****-****-****-1111", id="visa-16"),
        pytest.param("4111 1111 1111 1111", "****-****-****-1111", id="spaced"),
        pytest.param("378282246310005", "****-****-****-0005", id="amex-15"),
        pytest.param("6011000990139424", "****-****-****-9424", id="discover"),
        pytest.param("****-****-****-9999", "****-****-****-9999", id="already-masked"),
        pytest.param("12345", "****-****-****-****", id="too-short-keeps-nothing"),
    ],
)
def test_mask_pan(raw: str, masked: str) -> None:
    assert mask_pan(raw) == masked


@pytest.mark.parametrize(
    "raw, masked",
    [
        ("user@example.com", "us****@example.com"),
        ("a@example.com", "a****@example.com"),
        ("us****@example.com", "us****@example.com"),
        ("no-at-sign", "****"),
    ],
)
def test_mask_email(raw: str, masked: str) -> None:
    assert mask_email(raw) == masked


@pytest.mark.parametrize(
    "raw, masked",
    [
        ("+1-555-867-5309", "1-555-****"),
        ("1-555-867-5309", "1-555-****"),
        ("+44-20-7946-0958", "44-20-****"),
        ("+15558675309", "1555-****"),
        ("1-555-****", "1-555-****"),
    ],
)
def test_mask_phone(raw: str, masked: str) -> None:
    assert mask_phone(raw) == masked


def test_mask_text_scrubs_cards_cvvs_and_emails() -> None:
    text = "garbage 4111-1111-1111-1111 cvv=123 mail jane.doe@example.com ok 12"
    out = mask_text(text)
    assert "4111-1111-1111" not in out and out.count("1111") == 1
    assert "123" not in out
    assert "jane.doe@" not in out and "ja****@example.com" in out
    assert out.endswith("ok 12")


def test_mask_record_drops_cvv_and_keeps_message_fields() -> None:
    record = {
        "transaction_id": "txn-1",
        "amount": "12.50",
        "event_time": "2026-11-24T10:00:00Z",
        "card_number": "4111111111111111",
        "cvv": "123",
        "email": "jane@example.com",
        "phone": "+1-555-867-5309",
        "note": "card 5555555555554444",
    }
    out = mask_record(record)
    assert "cvv" not in out
    assert out["card_number"] == "****-****-****-1111"
    assert out["transaction_id"] == "txn-1" and out["amount"] == "12.50"
    assert out["event_time"] == "2026-11-24T10:00:00Z"
    assert "5555555555554444" not in out["note"]


def test_safe_field_holding_a_card_number_is_masked() -> None:
    out = mask_record({"transaction_id": "4111111111111111"})
    assert out["transaction_id"] == "****-****-****-1111"


def test_masked_payload_text_is_truncated_and_masked() -> None:
    raw = json.dumps({"card_number": "4111111111111111", "note": "x" * 10_000}).encode()
    text = masked_payload_text(raw, limit=200)
    assert "4111111111111111" not in text and "truncated" in text and len(text) < 300


def test_tokens_are_keyed_distinct_and_stable() -> None:
    a, b = Tokenizer(KEY), Tokenizer(bytes(reversed(KEY)))
    assert a.card("4111111111111111") == a.card("4111 1111 1111 1111")
    assert a.card("4111111111111111") != b.card("4111111111111111")
    assert a.email("Jane@Example.com") == a.email("jane@example.com")
    # card and email tokens use different derived keys: equal inputs never collide
    assert a.card("4111111111111111") != a.email("4111111111111111")
    import hashlib

    assert a.card("4111111111111111") != hashlib.sha256(b"4111111111111111").hexdigest()


def test_short_key_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        Tokenizer(b"short")
    path = tmp_path / "k"
    path.write_text("abcd")
    with pytest.raises(ValueError):
        load_key(str(path))
    path.write_text(KEY.hex())
    assert load_key(str(path)) == KEY


def test_maskpii_needs_exactly_one_key_source() -> None:
    with pytest.raises(ValueError):
        MaskPII()
    with pytest.raises(ValueError):
        MaskPII(key=KEY, key_path="/nonexistent")
    with pytest.raises(ValueError):
        MaskPII(key=b"short")


# --- properties -------------------------------------------------------------------------


cards = (
    st.integers(min_value=11, max_value=18)
    .flatmap(lambda n: st.text("0123456789", min_size=n, max_size=n))
    .map(luhn_complete)
)
emails = st.from_regex(r"[a-z][a-z0-9.]{0,15}@[a-z]{2,10}\.(com|org|net)", fullmatch=True)
phones = st.from_regex(r"\+[1-9]\d{0,2}-\d{2,3}-\d{3}-\d{4}", fullmatch=True)


def _txn(card: str, email: str, phone: str) -> Transaction:
    return Transaction(
        transaction_id="txn-1",
        account_id="acct-1",
        amount_minor=1250,
        currency="USD",
        card_number=card,
        email=email,
        phone=phone,
        merchant_id="m-1",
        merchant_category="5411",
        country="US",
        card_country="GB",
        event_time_us=1_795_514_400_000_000,
        source=SourceRef("payments", 3, 42, "acct-1"),
        fingerprint="f",
    )


@settings(max_examples=200, deadline=None)
@given(card=cards, email=emails, phone=phones)
def test_masked_transaction_keeps_only_last_four_and_no_pii(card: str, email: str, phone: str) -> None:
    masked = mask_transaction(_txn(card, email, phone), Tokenizer(KEY))
    text = json.dumps(masked._asdict(), default=str)
    assert card not in text
    # no run of the card's digits longer than its last four survives anywhere
    for run in re.findall(r"\d{5,}", text):
        assert run not in card
    assert email not in text and phone not in text
    assert masked.card_masked == "****-****-****-" + card[-4:]
    # every non-PII field is unchanged
    txn = _txn(card, email, phone)
    for name in (
        "transaction_id",
        "account_id",
        "amount_minor",
        "currency",
        "merchant_id",
        "merchant_category",
        "country",
        "card_country",
        "event_time_us",
        "source",
    ):
        assert getattr(masked, name) == getattr(txn, name)


@settings(max_examples=200, deadline=None)
@given(card=cards, email=emails, phone=phones)
def test_masking_is_idempotent(card: str, email: str, phone: str) -> None:
    assert mask_pan(mask_pan(card)) == mask_pan(card)
    assert mask_email(mask_email(email)) == mask_email(email)
    assert mask_phone(mask_phone(phone)) == mask_phone(phone)
    record = {"card_number": card, "email": email, "phone": phone, "cvv": "123", "note": card}
    assert mask_record(mask_record(record)) == mask_record(record)


@settings(max_examples=200, deadline=None)
@given(card=cards, junk=st.text(max_size=50))
def test_mask_text_never_leaves_a_card(card: str, junk: str) -> None:
    out = mask_text(junk + " " + card + " " + junk)
    assert card not in out
    for run in re.findall(r"\d+", out):
        assert len(run) <= 4 or run not in card


# --- the composite ------------------------------------------------------------------------


def test_maskpii_composite() -> None:
    txns = [_txn("4111111111111111", "jane@example.com", "+1-555-867-5309")]
    tok = Tokenizer(KEY)
    expected = [mask_transaction(t, tok) for t in txns]
    with TestPipeline() as p:
        out = p | beam.Create(txns) | MaskPII(key=KEY)
        assert_that(out, equal_to(expected))
    assert isinstance(expected[0], MaskedTransaction)
    assert expected[0].email_masked == "ja****@example.com"
    assert expected[0].phone_masked == "1-555-****"
