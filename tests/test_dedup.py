"""Dedup: the one kernel (``SeenIds``) and ``DeduplicatePayments`` alone: one output per
id, conflicts dead-lettered, bounded state."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from kernels.books import CONFLICT, DUPLICATE, NEW, SeenIds
from schemas.records import SourceRef, Transaction
from transforms.dedup import DeduplicatePayments
from transforms.steps import DEAD_LETTER_TAG

T0 = 1_795_514_400_000_000


def txn(tid: str, at_s: int = 0, amount: int = 1000, offset: int = 0) -> Transaction:
    return Transaction(
        transaction_id=tid,
        account_id="acct-1",
        amount_minor=amount,
        currency="USD",
        card_number="4111111111111111",
        email="jane@example.com",
        phone="+1-555-867-5309",
        merchant_id="m-1",
        merchant_category="5411",
        country="US",
        card_country="US",
        event_time_us=T0 + at_s * 1_000_000,
        source=SourceRef("payments", 0, offset),
        fingerprint=f"{tid}:{amount}",
    )


def stamped(t: Transaction) -> TimestampedValue:
    return TimestampedValue(t, Timestamp(micros=t.event_time_us))


def test_exact_duplicates_are_dropped_and_conflicts_dead_lettered() -> None:
    rows = [
        txn("t1", offset=1),
        txn("t1", offset=2),
        txn("t2", offset=3),
        txn("t1", offset=4),
        txn("t3", offset=5),
        txn("t3", amount=999, offset=6),
    ]
    with TestPipeline() as p:
        out = p | beam.Create(rows) | beam.Map(stamped) | DeduplicatePayments()
        ids = out.unique | "Ids" >> beam.Map(lambda t: t.transaction_id)
        dead = out[DEAD_LETTER_TAG] | "Dead" >> beam.Map(
            lambda d: (
                d.reason,
                d.transaction_id,
                "4111111111111111" in d.masked_payload,
                "jane@example.com" in d.masked_payload,
            )
        )
        assert_that(ids, equal_to(["t1", "t2", "t3"]), label="unique")
        assert_that(dead, equal_to([("conflicting_duplicate", "t3", False, False)]), label="dead")


def _streamed(horizon_s: float, gap_s: int) -> list:
    """t1 at 0 s, watermark moves past gap_s, t1 again: kept iff the state expired."""
    stream = (
        TestStream()
        .advance_watermark_to(Timestamp(micros=T0))
        .add_elements([stamped(txn("t1", 0, offset=1))])
        .advance_watermark_to(Timestamp(micros=T0 + gap_s * 1_000_000))
        .add_elements([stamped(txn("t1", gap_s, offset=2))])
        .advance_watermark_to_infinity()
    )
    return [stream, horizon_s]


@pytest.mark.parametrize(
    "horizon_s, gap_s, copies",
    [
        pytest.param(600, 300, 1, id="inside-horizon-dropped"),
        pytest.param(600, 900, 2, id="after-horizon-state-expired"),
    ],
)
def test_state_expires_after_the_horizon(horizon_s: float, gap_s: int, copies: int) -> None:
    stream, horizon = _streamed(horizon_s, gap_s)
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with TestPipeline(options=options) as p:
        out = p | stream | DeduplicatePayments(horizon_s=horizon)
        offsets = out.unique | beam.Map(lambda t: t.source.offset)
        assert_that(offsets, equal_to([1, 2][:copies]))


def test_invalid_horizon() -> None:
    with pytest.raises(ValueError):
        DeduplicatePayments(horizon_s=0)


# Copies of t1 and t2 in the order read, horizon 600 s: (id, at_s, amount, offset), and what
# ``SeenIds`` says. The clock is the latest event time of a *new* payment; a copy is judged
# against the clock before it. Offset 5 is one horizon after t1's first copy but the clock
# is still 100 s (copies don't move it); 6 moves it past the horizon of t1's first copy,
# so 7 is new again; 8 conflicts with 6.
_HORIZON_COPIES = [
    ("t1", 0, 1000, 1, NEW),
    ("t2", 100, 1000, 2, NEW),
    ("t2", 200, 999, 3, CONFLICT),
    ("t1", 600, 1000, 4, DUPLICATE),
    ("t3", 900, 1000, 5, NEW),
    ("t2", 1000, 999, 6, NEW),
    ("t1", 1100, 999, 7, NEW),
    ("t2", 1200, 1000, 8, CONFLICT),
]


def test_seen_ids_forget_an_id_a_horizon_after_the_clock_passed_it() -> None:
    ids = SeenIds()
    verdicts = [
        ids.check(t, str(amount), at * 1_000_000, 600 * 1_000_000) for t, at, amount, _, _ in _HORIZON_COPIES
    ]
    assert verdicts == [v for *_, v in _HORIZON_COPIES]
    ids.check("t0", "x", 0, 600 * 1_000_000)  # dated long before the clock: remembered from now
    ids.clock_us += 500 * 1_000_000
    ids.prune(600 * 1_000_000)  # clock 1600 s: what was seen before 1000 s goes (t3, at 900 s)
    assert sorted(ids.seen) == ["t0", "t1", "t2"] and ids.seen["t0"] == ("x", 1100 * 1_000_000)


# Copies of t1 and t2 in source (and event-time) order, horizon 600 s: (id, at_s, amount,
# offset). For DeduplicatePayments a copy is one dated at most the horizon after the first
# copy of its id: 5 (650 s) and 9 (1300 s) come later than that after t1's first copy (0 s,
# then 650 s), so they are new; 8 conflicts with 7, the first copy of t2's second epoch.
_PAYMENT_COPIES = [
    ("t1", 0, 1000, 1),
    ("t2", 100, 1000, 2),
    ("t2", 200, 999, 3),
    ("t1", 300, 1000, 4),
    ("t1", 650, 1000, 5),
    ("t1", 900, 1000, 6),
    ("t2", 1000, 999, 7),
    ("t2", 1100, 1000, 8),
    ("t1", 1300, 999, 9),
]
_PAYMENT_KEPT, _PAYMENT_DEAD = [1, 2, 5, 7, 9], [3, 8]


@pytest.mark.parametrize("run", ["batch", "stream"])
def test_deduplicate_payments_gives_the_same_in_batch_and_streaming(run: str) -> None:
    """The same copies in a batch run and on a stream whose watermark follows the event
    times (where the timer forgets ids): the same payments kept and dead-lettered."""
    rows = [txn(t, at, amount, offset) for t, at, amount, offset in _PAYMENT_COPIES]
    if run == "stream":
        stream = TestStream()
        for row in rows:
            stream = stream.advance_watermark_to(Timestamp(micros=row.event_time_us)).add_elements(
                [stamped(row)]
            )
        options = PipelineOptions()
        options.view_as(StandardOptions).streaming = True
        p = TestPipeline(options=options)
        out = p | stream.advance_watermark_to_infinity() | DeduplicatePayments(horizon_s=600)
    else:
        p = TestPipeline()
        out = p | beam.Create(rows) | DeduplicatePayments(horizon_s=600)
    kept = out.unique | "Kept" >> beam.Map(lambda t: t.source.offset)
    dead = out[DEAD_LETTER_TAG] | "Dead" >> beam.Map(lambda d: (d.reason, d.source.offset))
    assert_that(kept, equal_to(_PAYMENT_KEPT), label="kept")
    assert_that(dead, equal_to([("conflicting_duplicate", o) for o in _PAYMENT_DEAD]), label="dead")
    p.run().wait_until_finish()
