"""Dead-letter records: one shape for every stage's bad output."""

from __future__ import annotations

import hashlib
from typing import Optional

from kernels.masking import mask_identifier
from schemas.records import DeadLetter, SourceRef

__all__ = ["make_dead_letter"]


def make_dead_letter(
    stage: str,
    reason: str,
    message: str,
    source: SourceRef,
    masked_payload: str,
    transaction_id: Optional[str] = None,
) -> DeadLetter:
    """A dead letter whose id depends only on where it came from and why.

    A replay of the same input gives the same ``dead_letter_id``, so the sinks
    can write idempotently. The transaction id is kept unless it holds what could be a
    card number or an email: then it is masked as free text is.
    """
    transaction_id = mask_identifier(transaction_id)
    ident = "|".join(
        (stage, reason, source.topic, str(source.partition), str(source.offset), transaction_id or "")
    )
    return DeadLetter(
        dead_letter_id=hashlib.sha256(ident.encode()).hexdigest()[:32],
        stage=stage,
        reason=reason,
        message=message,
        source=source,
        masked_payload=masked_payload,
        transaction_id=transaction_id,
    )
