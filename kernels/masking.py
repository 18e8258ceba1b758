"""PII masking and keyed tokens.

Plain functions, tested without a pipeline; ``mask_transaction`` is what every driver
applies to a parsed payment, and ``transforms.masking.MaskPII`` applies it alone.

* card  ``4111111111111111`` -> ``****-****-****-1111`` (last four only)
* email ``user@example.com`` -> ``us****@example.com``
* phone ``+1-555-867-5309``  -> ``1-555-****`` (country and area prefix)
* the CVV is never a field of a parsed record: ``kernels.parse`` drops it.

Tokens are HMAC-SHA256 with a secret key (PCI DSS 4.0 requirement 3.5.1.1:
hashes of a card number must be keyed). Card and email tokens use distinct
derived keys, so the two can never be correlated with each other.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from typing import Any, Optional

from schemas.records import MaskedTransaction, Transaction

__all__ = [
    "MASKED_CARD_PREFIX",
    "KeySource",
    "Tokenizer",
    "load_key",
    "mask_email",
    "mask_identifier",
    "mask_pan",
    "mask_phone",
    "mask_record",
    "mask_text",
    "masked_payload_text",
    "mask_transaction",
]

MASKED_CARD_PREFIX = "****-****-****-"
_MASKED_PAN_RE = re.compile(r"^\*{4}-\*{4}-\*{4}-(\d{4}|\*{4})$")
_MASKED_EMAIL_RE = re.compile(r"^[^@*]{0,2}\*{4}@[^@]*$")
_MASKED_PHONE_RE = re.compile(r"^[\d-]*\*{4}$")
# Digit runs that may be separated by spaces or dashes, as card numbers are written.
# An already-masked card is matched first and kept, so masking stays idempotent.
_DIGIT_GROUPS_RE = re.compile(r"\*{4}-\*{4}-\*{4}-\d{4}(?![ -]?\d)|\d(?:[ -]?\d)+")
_EMAIL_RE = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+")
# A CVV-like key and its value in free text ("cvv": "123", cvc=123): removed whole.
_CVV_PAIR_RE = re.compile(
    r"""["']?\b(?:cvv2?|cvc2?|csc)\b["']?\s*[:=]\s*["']?[^"',}\s]*["']?\s*,?\s*""", re.I
)
_PII_KEYS = {"card_number", "card", "pan", "cvv", "cvc", "cvv2", "email", "phone"}
# Fields of the payment message that carry no PII: kept as they are in dead
# letters (so an operator can find the payment), unless they hold a long digit
# run that could be a card number.
_SAFE_KEYS = {
    "transaction_id",
    "account_id",
    "amount",
    "currency",
    "merchant_id",
    "merchant_category",
    "country",
    "card_country",
    "event_time",
}
_LONG_DIGITS_RE = re.compile(r"\d(?:[ -]?\d){11,}")
_NON_DIGIT_RE = re.compile(r"\D")
_DIGIT_RUN_RE = re.compile(r"\d+")
_MIN_KEY_BYTES = 16


def mask_pan(card_number: str) -> str:
    """``****-****-****-NNNN``: the last four digits only. Idempotent."""
    text = str(card_number)
    if _MASKED_PAN_RE.match(text):
        return text
    digits = _NON_DIGIT_RE.sub("", text)
    last4 = digits[-4:] if len(digits) >= 12 else "****"
    return MASKED_CARD_PREFIX + last4


def mask_email(email: str) -> str:
    """First two characters of the local part, ``****``, then ``@domain``. Idempotent."""
    text = str(email)
    if _MASKED_EMAIL_RE.match(text):
        return text
    local, sep, domain = text.rpartition("@")
    if not sep:
        return "****"
    return local[:2].replace("*", "") + "****@" + domain


def mask_phone(phone: str) -> str:
    """Country and area prefix, then ``****``: ``+1-555-867-5309`` -> ``1-555-****``.

    Without separators only the first four digits are kept. Idempotent.
    """
    text = str(phone)
    if _MASKED_PHONE_RE.match(text):
        return text
    groups = _DIGIT_RUN_RE.findall(text)
    if len(groups) >= 3:
        return "-".join(groups[:2]) + "-****"
    digits = "".join(groups)
    return (digits[:4] + "-****") if len(digits) > 4 else "****"


def _mask_digit_run(match: re.Match[str]) -> str:
    run = match.group(0)
    if run.startswith("*"):
        return run
    digits = _NON_DIGIT_RE.sub("", run)
    if len(digits) >= 12:
        return mask_pan(digits)
    if len(digits) >= 3:
        return "*" * len(run)
    return run


def mask_text(text: str) -> str:
    """Scrub free text: digit runs of 3+ digits (cards, CVVs, phones) and emails.

    Used for payloads that could not be parsed, where we cannot tell which
    number is which. Amounts are lost too; that is the price of never leaking.
    """
    text = _CVV_PAIR_RE.sub("", text)
    text = _EMAIL_RE.sub(lambda m: mask_email(m.group(0)), text)
    return _DIGIT_GROUPS_RE.sub(_mask_digit_run, text)


def _is_safe_scalar(value: Any) -> bool:
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, (int, float)):
        return abs(value) < 10**11
    if isinstance(value, str):
        return len(value) <= 256 and not _LONG_DIGITS_RE.search(value) and not _EMAIL_RE.search(value)
    return False


def _mask_value(key: str, value: Any) -> Any:
    lowered = key.lower()
    if lowered in ("cvv", "cvc", "cvv2"):
        return None
    if lowered in ("card_number", "card", "pan"):
        return mask_pan(str(value))
    if lowered == "email":
        return mask_email(str(value))
    if lowered == "phone":
        return mask_phone(str(value))
    if lowered in _SAFE_KEYS and _is_safe_scalar(value):
        return value
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return mask_record(value)
    if isinstance(value, list):
        return [_mask_value("", v) for v in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) >= 100:
        return mask_text(str(value))
    return value


def mask_identifier(value: Optional[str]) -> Optional[str]:
    """An identifier as a dead letter may keep it: as it is, unless it holds what could be
    a card number or an email (a payload that put one where its id belongs)."""
    if value is None or _is_safe_scalar(value):
        return value
    return mask_text(str(value))


def mask_record(record: dict[str, Any]) -> dict[str, Any]:
    """Mask a (possibly invalid) payment object field by field. Idempotent.

    Known PII fields are masked by kind, CVV-like fields are removed, the
    message's non-PII fields are kept (unless they hold something that looks
    like a card number or an email), every other value is scrubbed with
    ``mask_text``.
    """
    out: dict[str, Any] = {}
    for key, value in record.items():
        masked = _mask_value(str(key), value)
        if masked is None and str(key).lower() in ("cvv", "cvc", "cvv2"):
            continue
        out[mask_text(str(key)) if str(key).lower() not in _PII_KEYS else str(key)] = masked
    return out


def masked_payload_text(raw: Any, limit: int = 4096) -> str:
    """A masked, truncated, printable copy of a raw payload for dead letters.

    Never raises: a payload that is not bytes (a null Kafka value) is empty text, and one
    nested too deep to decode or mask as JSON is masked as text."""
    if not isinstance(raw, (bytes, bytearray)):
        return ""
    text = bytes(raw[: limit * 4]).decode("utf-8", errors="replace")
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        obj = None
    masked: Optional[str] = None
    if isinstance(obj, dict):
        try:
            masked = json.dumps(mask_record(obj), sort_keys=True, ensure_ascii=False)
        except RecursionError:
            masked = None
    if masked is None:
        masked = mask_text(text)
    if len(masked) > limit:
        masked = masked[:limit] + "...[truncated]"
    return masked


def load_key(path: str) -> bytes:
    """Read a secret key file (raw bytes, or hex text). Refuses short keys."""
    with open(path, "rb") as handle:
        data = handle.read().strip()
    try:
        key = bytes.fromhex(data.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        key = data
    if len(key) < _MIN_KEY_BYTES:
        raise ValueError(f"HMAC key in {path} is shorter than {_MIN_KEY_BYTES} bytes")
    return key


class _HmacSha256:
    """HMAC-SHA256 under one key, with the key's inner and outer pads hashed once.

    ``hmac.digest`` pads and hashes the key again for every message; here each token
    costs two copies of a prepared hash and two short updates (RFC 2104, the same digest).
    """

    _BLOCK = 64

    def __init__(self, key: bytes) -> None:
        if len(key) > self._BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(self._BLOCK, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def hexdigest(self, message: bytes) -> str:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()


class Tokenizer:
    """Keyed tokens (HMAC-SHA256) for joins and counts without PII.

    The card and email tokens use keys derived from the secret for their own
    purpose, so a token of one kind can't be matched against another kind.
    Each key is prepared once, when the tokenizer is made (once per worker).
    """

    def __init__(self, key: bytes) -> None:
        if len(key) < _MIN_KEY_BYTES:
            raise ValueError(f"HMAC key must be at least {_MIN_KEY_BYTES} bytes")
        self._card = _HmacSha256(hmac.new(key, b"paystream/card-token/v1", hashlib.sha256).digest())
        self._email = _HmacSha256(hmac.new(key, b"paystream/email-token/v1", hashlib.sha256).digest())

    def card(self, card_number: str) -> str:
        return self.card_digits(_NON_DIGIT_RE.sub("", card_number))

    def card_digits(self, digits: str) -> str:
        """The token of a card number that is digits only (a parsed ``Transaction``'s)."""
        return self._card.hexdigest(digits.encode())

    def email(self, email: str) -> str:
        return self._email.hexdigest(email.strip().lower().encode())


def mask_transaction(txn: Transaction, tokenizer: Tokenizer) -> MaskedTransaction:
    """The masked record; every non-PII field is carried over unchanged.

    A parsed card number is 12-19 ASCII digits, so its mask is the last four and
    its token is taken of it as it is (``mask_pan`` and ``Tokenizer.card`` give the same);
    any other card number goes through them.
    """
    (
        tid,
        account,
        amount,
        currency,
        card,
        email,
        phone,
        merchant,
        mcc,
        country,
        card_country,
        at,
        source,
        _,
    ) = txn
    if 12 <= len(card) <= 19 and card.isascii() and card.isdigit():
        card_masked, card_token = MASKED_CARD_PREFIX + card[-4:], tokenizer.card_digits(card)
    else:
        card_masked, card_token = mask_pan(card), tokenizer.card(card)
    return tuple.__new__(  # type: ignore[no-any-return]
        MaskedTransaction,
        (
            tid,
            account,
            amount,
            currency,
            card_masked,
            card_token,
            mask_email(email),
            tokenizer.email(email),
            mask_phone(phone),
            merchant,
            mcc,
            country,
            card_country,
            at,
            source,
        ),
    )


class KeySource:
    """Where the secret key of the tokens comes from: ``key_path``, a file read where the
    tokenizer is made (on each worker, at setup: the production way, the key never
    enters the pipeline graph), or ``key`` (bytes, for tests). ``check``: read the file
    now too, so a bad key fails while the graph is built, not on a worker."""

    def __init__(self, key: bytes | None = None, key_path: str | None = None, check: bool = True) -> None:
        if (key is None) == (key_path is None):
            raise ValueError("give exactly one of key or key_path")
        if key is not None and (not isinstance(key, bytes) or len(key) < _MIN_KEY_BYTES):
            raise ValueError(f"the secret key must be at least {_MIN_KEY_BYTES} bytes")
        if key_path is not None and check:
            load_key(key_path)
        self._key = key
        self._key_path = key_path

    def tokenizer(self) -> Tokenizer:
        return Tokenizer(self._key if self._key is not None else load_key(str(self._key_path)))
