"""DeduplicateTransactions: one output per id, conflicts dead-lettered, bounded state."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from schemas.records import SourceRef, Transaction
from transforms.deadletter import DEAD_LETTER_TAG
from transforms.dedup import DeduplicateTransactions

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
        out = p | beam.Create(rows) | beam.Map(stamped) | DeduplicateTransactions()
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
        out = p | stream | DeduplicateTransactions(horizon_s=horizon)
        offsets = out.unique | beam.Map(lambda t: t.source.offset)
        assert_that(offsets, equal_to([1, 2][:copies]))


def test_invalid_horizon() -> None:
    with pytest.raises(ValueError):
        DeduplicateTransactions(horizon_s=0)


# Copies of t1 and t2 in source (and event-time) order, horizon 600 s: (id, at_s, amount, offset).
# Offset 5 comes exactly one horizon after t1's first copy, 7 and 9 beyond the horizon of the
# first copy of their epoch (with other content: new payments, not conflicts); 8 conflicts
# with 7, the first copy of t2's second epoch.
_HORIZON_COPIES = [
    ("t1", 0, 1000, 1),
    ("t2", 100, 1000, 2),
    ("t2", 200, 999, 3),
    ("t1", 300, 1000, 4),
    ("t1", 600, 1000, 5),
    ("t1", 900, 1000, 6),
    ("t2", 1000, 999, 7),
    ("t2", 1100, 1000, 8),
    ("t1", 1300, 999, 9),
]
_HORIZON_KEPT, _HORIZON_DEAD = [1, 2, 5, 7, 9], [3, 8]


def test_first_copies_forget_an_id_after_the_horizon() -> None:
    from transforms.dedup import first_copies

    rows = [txn(t, at, amount, offset) for t, at, amount, offset in _HORIZON_COPIES]
    kept, duplicates, conflicts = first_copies(rows, 600 * 1_000_000)
    assert [t.source.offset for t in kept] == _HORIZON_KEPT
    assert [t.source.offset for t in conflicts] == _HORIZON_DEAD
    assert duplicates == len(rows) - len(_HORIZON_KEPT) - len(_HORIZON_DEAD)
    never_forgotten, _, _ = first_copies(rows)  # no horizon: one copy per id
    assert [t.source.offset for t in never_forgotten] == [1, 2]


@pytest.mark.parametrize("path", ["stream", "batch"])
def test_batch_and_stream_paths_apply_the_same_horizon(path: str) -> None:
    """The same copies through ``batch=True`` and through the stateful path on a stream
    whose watermark follows the event times: the same payments kept and dead-lettered."""
    rows = [txn(t, at, amount, offset) for t, at, amount, offset in _HORIZON_COPIES]
    if path == "stream":
        stream = TestStream()
        for row in rows:
            stream = stream.advance_watermark_to(Timestamp(micros=row.event_time_us)).add_elements(
                [stamped(row)]
            )
        options = PipelineOptions()
        options.view_as(StandardOptions).streaming = True
        p = TestPipeline(options=options)
        out = p | stream.advance_watermark_to_infinity() | DeduplicateTransactions(horizon_s=600)
    else:
        p = TestPipeline()
        out = p | beam.Create(rows) | beam.Map(stamped) | DeduplicateTransactions(horizon_s=600, batch=True)
    kept = out.unique | "Kept" >> beam.Map(lambda t: t.source.offset)
    dead = out[DEAD_LETTER_TAG] | "Dead" >> beam.Map(lambda d: (d.reason, d.source.offset))
    assert_that(kept, equal_to(_HORIZON_KEPT), label="kept")
    assert_that(dead, equal_to([("conflicting_duplicate", o) for o in _HORIZON_DEAD]), label="dead")
    p.run().wait_until_finish()
