"""What a payment message must be, beyond its JSON Schema (``payment.schema.json``): the
one definition shared by the parser (``kernels/parse.py``) and the simulator
(``simulator/generator.py``).

* ``MAX_PAYLOAD_BYTES``: the largest message value accepted.
* ``REQUIRED_FIELDS``: the fields a message must have, in the order the parser reads them
  (the schema's ``required`` list; ``tests/test_schemas.py`` checks they agree).
* The Luhn check digit of a card number: ``luhn_checksum_ok`` (the bare checksum, fast on
  ASCII digits), ``luhn_valid`` (a card-number-like string of ASCII digits that passes it)
  and ``luhn_complete`` (a prefix with its check digit).
"""

from __future__ import annotations

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "REQUIRED_FIELDS",
    "luhn_checksum_ok",
    "luhn_complete",
    "luhn_sum",
    "luhn_valid",
]

MAX_PAYLOAD_BYTES = 1024 * 1024  # Kafka's default max.message.bytes

REQUIRED_FIELDS: tuple[str, ...] = (
    "transaction_id",
    "account_id",
    "amount",
    "currency",
    "card_number",
    "cvv",
    "email",
    "phone",
    "merchant_id",
    "merchant_category",
    "country",
    "event_time",
)

# Luhn on ASCII digits in C: the digits in even places from the right are mapped to their
# doubled value less 9 above 9, and the sum of a digit string's bytes, less 48 for each,
# is the sum of its digits.
_LUHN_DOUBLED = str.maketrans("0123456789", "0246813579")


def luhn_sum(digits: str) -> int:
    """The Luhn sum of ``digits``, doubling every second digit from the right; each
    character counts as its code less 48 (its value, for ASCII digits)."""
    if digits.isascii() and digits.isdigit():
        odd, even = digits[-1::-2].encode(), digits[-2::-2].translate(_LUHN_DOUBLED).encode()
        return sum(odd) + sum(even) - 48 * len(digits)
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total


def luhn_checksum_ok(digits: str) -> bool:
    """The Luhn checksum of a string of digits (no check that they are digits, or enough)."""
    return luhn_sum(digits) % 10 == 0


def _is_ascii_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def luhn_valid(digits: str) -> bool:
    """True if ``digits`` (ASCII digits only, at least two) passes the Luhn check."""
    return len(digits) >= 2 and _is_ascii_digits(digits) and luhn_checksum_ok(digits)


def luhn_complete(prefix: str) -> str:
    """``prefix`` followed by the Luhn check digit that makes it valid."""
    if not prefix or not _is_ascii_digits(prefix):
        raise ValueError("prefix must be a non-empty string of ASCII digits")
    check = (10 - luhn_sum(prefix + "0") % 10) % 10
    return prefix + str(check)
