"""``MaskPII``: parsed payments in, masked payments out, for a pipeline of your own.

The drivers of the paystream graph mask as they parse (``transforms/steps.py``); this
transform applies the same kernel (``kernels.masking.mask_transaction``) as a step of
its own.
"""

from __future__ import annotations

from typing import Iterable, Optional

import apache_beam as beam

from kernels.masking import KeySource, Tokenizer, mask_transaction
from schemas.records import MaskedTransaction, Transaction

__all__ = ["MaskPII"]


class _MaskFn(beam.DoFn):
    def __init__(self, keys: KeySource) -> None:
        self._keys = keys
        self._tokenizer: Optional[Tokenizer] = None

    def setup(self) -> None:
        self._tokenizer = self._keys.tokenizer()  # the key file is read here, on the worker

    def process(self, txn: Transaction) -> Iterable[MaskedTransaction]:
        assert self._tokenizer is not None, "setup() reads the key"
        yield mask_transaction(txn, self._tokenizer)


class MaskPII(beam.PTransform):
    """``Transaction`` -> ``MaskedTransaction``: the card as ``****-****-****-1111``, the
    email as ``us****@example.com``, the phone as ``1-555-****``, with keyed HMAC-SHA256
    tokens of the card and the email (each under its own derived key). The CVV is never
    a field of a ``Transaction``.

    Give ``key_path`` (a file read by each worker at setup; checked now unless
    ``check_key`` is false) or ``key`` (bytes, at least 16)::

        >>> import apache_beam as beam
        >>> from apache_beam.testing.util import assert_that, equal_to
        >>> from kernels.parse import parse_payment
        >>> from schemas.records import SourceRef
        >>> from transforms.masking import MaskPII
        >>> payload = (b'{"transaction_id": "t-1", "account_id": "a-1", "amount": "12.50", '
        ...     b'"currency": "EUR", "card_number": "4111111111111111", "cvv": "123", '
        ...     b'"email": "user@example.com", "phone": "+1-555-867-5309", "merchant_id": "m-1", '
        ...     b'"merchant_category": "5411", "country": "DE", "event_time": "2026-01-01T00:00:00Z"}')
        >>> txn = parse_payment(payload, SourceRef("demo", 0, 0), now_us=1_767_225_600_000_000)
        >>> with beam.Pipeline() as p:
        ...     masked = p | beam.Create([txn]) | MaskPII(key=b"0123456789abcdef")
        ...     _ = assert_that(
        ...         masked | beam.Map(lambda m: (m.card_masked, m.email_masked, m.phone_masked)),
        ...         equal_to([("****-****-****-1111", "us****@example.com", "1-555-****")]))
    """

    def __init__(
        self,
        key: bytes | None = None,
        key_path: str | None = None,
        check_key: bool = True,
        label: str | None = None,
    ) -> None:
        super().__init__(label)
        self._keys = KeySource(key, key_path, check_key)

    def expand(self, pcoll: beam.PCollection[Transaction]) -> beam.PCollection[MaskedTransaction]:
        return pcoll | "Mask" >> beam.ParDo(_MaskFn(self._keys)).with_output_types(MaskedTransaction)
