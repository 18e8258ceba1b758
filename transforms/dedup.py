"""``DeduplicatePayments``: the first copy of each transaction id, for a pipeline of your own.

The paystream graph dedups inside its account step and its id check
(``transforms/steps.py``); this transform applies the same kernel
(``kernels.books.SeenIds``) as a step of its own, keyed by transaction id, with an
event-time timer that forgets an id once the watermark is ``horizon_s`` past it.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional, Tuple

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from kernels.books import DUPLICATE, NEW, SeenIds, conflict_letter
from schemas.records import Transaction
from transforms import telemetry
from transforms.steps import DEAD_LETTER_TAG, EngineSettings

__all__ = ["DeduplicatePayments"]


class _FirstCopyFn(beam.DoFn):
    SEEN = ReadModifyWriteStateSpec("dedup_seen", PickleCoder())
    EXPIRY = TimerSpec("dedup_expiry", TimeDomain.WATERMARK)

    def __init__(self, horizon_us: int) -> None:
        self._horizon_us = horizon_us

    def process(
        self,
        element: Tuple[str, Transaction],
        seen: Any = beam.DoFn.StateParam(SEEN),
        expiry: Any = beam.DoFn.TimerParam(EXPIRY),
    ) -> Iterable[Any]:
        txn = element[1]
        ids = seen.read() or SeenIds()
        # the key is one id: its clock is the latest of its copies, this one included, so a
        # copy is judged by its own event time, the same in batch and streaming
        ids.clock_us = max(ids.clock_us, txn.event_time_us)
        verdict = ids.check(txn.transaction_id, txn.fingerprint, txn.event_time_us, self._horizon_us)
        seen.write(ids)
        if verdict is NEW:
            expiry.set(Timestamp(micros=ids.clock_us + self._horizon_us))
            yield txn
        elif verdict is DUPLICATE:
            telemetry.count("duplicates_dropped")
        else:
            telemetry.count("dead_letters", stage="dedup", reason="conflicting_duplicate")
            yield TaggedOutput(DEAD_LETTER_TAG, conflict_letter(txn, ""))

    @on_timer(EXPIRY)
    def expire(self, seen: Any = beam.DoFn.StateParam(SEEN)) -> None:
        seen.clear()


class DeduplicatePayments(beam.PTransform):
    """``Transaction`` -> the first copy of each ``transaction_id`` (main output) and a
    ``conflicting_duplicate`` dead letter (``dead_letter``) for a copy with other content.

    An exact copy is dropped and counted (``duplicates_dropped``). A copy is one dated at
    most ``horizon_s`` of event time after the first copy; a timer forgets the id once the
    watermark is that far past it. Copies are judged in the order the runner delivers them.
    The payments are keyed by transaction id as they are, PII included: the paystream graph
    masks first and dedups inside its account step (``transforms/steps.py``)::

        >>> import apache_beam as beam
        >>> from apache_beam.testing.util import assert_that, equal_to
        >>> from kernels.parse import parse_payment
        >>> from schemas.records import SourceRef
        >>> from transforms.dedup import DeduplicatePayments
        >>> payload = (b'{"transaction_id": "t-1", "account_id": "a-1", "amount": "12.50", '
        ...     b'"currency": "EUR", "card_number": "4111111111111111", "cvv": "123", '
        ...     b'"email": "user@example.com", "phone": "+1-555-867-5309", "merchant_id": "m-1", '
        ...     b'"merchant_category": "5411", "country": "DE", "event_time": "2026-01-01T00:00:00Z"}')
        >>> txn = parse_payment(payload, SourceRef("demo", 0, 0), now_us=1_767_225_600_000_000)
        >>> with beam.Pipeline() as p:
        ...     out = p | beam.Create([txn, txn]) | DeduplicatePayments()
        ...     _ = assert_that(out.unique | beam.Map(lambda t: t.transaction_id), equal_to(["t-1"]))
    """

    def __init__(
        self, horizon_s: float = EngineSettings.dedup_horizon_s, label: Optional[str] = None
    ) -> None:
        super().__init__(label)
        if horizon_s <= 0:
            raise ValueError("horizon_s must be > 0")
        self._horizon_us = int(horizon_s * 1_000_000)

    def expand(self, payments: beam.PCollection[Transaction]) -> beam.pvalue.DoOutputsTuple:
        return (
            payments
            | "ById" >> beam.Map(lambda t: (t.transaction_id, t)).with_output_types(Tuple[str, Transaction])
            | "FirstCopy"
            >> beam.ParDo(_FirstCopyFn(self._horizon_us)).with_outputs(DEAD_LETTER_TAG, main="unique")
        )
