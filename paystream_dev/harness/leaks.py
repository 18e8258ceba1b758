"""Raw PII in a text: the card numbers, emails and phones a run was sent, looked for in what
it wrote or showed (tables, Redis, logs, the console's page and API)."""

from __future__ import annotations

import re
from typing import Iterable, List, Set

__all__ = ["leaks"]

_PAN = re.compile(r"\d(?:[ -]?\d){11,22}")
_EMAIL = re.compile(r"[^\s\"'@<>(),;:\\]+@[^\s\"'@<>(),;:\\]+")
_PHONE = re.compile(r"\+?\d[\d\-. ()]{5,}\d")


def leaks(text: str, pans: Iterable[str], emails: Iterable[str], phones: Iterable[str]) -> List[str]:
    """The raw card numbers, emails and phones of ``text`` (by their digits, for the
    numbers: spaced or dashed copies count). ``phones`` are digits only."""
    pan_set: Set[str] = set(pans)
    email_set, phone_set = set(emails), set(phones)
    found = []
    for m in _PAN.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        if any(digits[i:j] in pan_set for i in range(len(digits)) for j in (i + 13, i + 16, i + 19)):
            found.append("card " + m.group()[-4:])
    found += ["email" for m in _EMAIL.finditer(text) if m.group() in email_set]
    found += ["phone" for m in _PHONE.finditer(text) if re.sub(r"\D", "", m.group()) in phone_set]
    return found
