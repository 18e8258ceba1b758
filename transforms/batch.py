"""The batch driver: a bounded input, in lists grouped by account, through the shared steps.

    raw payloads
      -> ParseAndMask   in chunks of ``CHUNK`` payloads; each chunk's payments split by
                        account group (``split_by_key``)                 -> dead letters
      -> Accounts       MergeLists: one list per account group; its payments decided by
                        their books in event-time order                 -> alerts,
                                                                           dead letters
      -> Ids            MergeLists of the rows by transaction-id group; checked in
                        event-time order                                -> dead letters
      -> rows

The step bodies are the streaming driver's (``transforms/steps.py``); the driving and the
order differ. A bounded input has no late data: each account's payments are decided in
event-time order and every id is remembered for the whole input
(``kernels.books.decide_in_event_time``), so the tables are a function of the input, not
of the order of its lines. The streaming driver decides in arrival order; the two agree
on input read in event-time order per account (``kernels/books.py``, "The order of
decisions"; ``tests/test_batch_paths.py``).

Here a payment is an element of a list from the source to the last step: the groupings
move each chunk's few lists per group, and Beam's per-element work (about as much as our
own per payment on Beam Python) is paid per chunk and per group.
"""

from __future__ import annotations

from typing import Any, Iterable, List, Tuple

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput

from kernels.books import FOREVER, Pending, SeenIds, check_ids, decide_in_event_time, row_event_order
from kernels.parse import RawPayload
from kernels.rules import Rules
from schemas.records import EnrichedTransaction
from transforms import telemetry
from transforms.lists import MergeLists, split_by_key
from transforms.steps import (
    ALERTS_TAG,
    DEAD_LETTER_TAG,
    DecideCounts,
    EngineSettings,
    ParseStepFn,
    PaymentsDriver,
    decided_outputs,
    id_check_outputs,
)

__all__ = ["CHUNK", "BatchPayments"]

CHUNK = 2000  # payloads per element from the source to the first grouping


def _account(pending: Pending) -> str:
    return pending.txn.account_id


def _row_id(row: EnrichedTransaction) -> str:
    return row.txn.transaction_id


class _ParseChunkFn(ParseStepFn):
    """A chunk of payloads parsed and masked; the payments split by account group."""

    def process(self, chunk: List[RawPayload]) -> Iterable[Any]:
        valid: List[Pending] = []
        for out in self._body.parse_all(chunk):
            if type(out) is Pending:
                valid.append(out)
            else:
                yield TaggedOutput(DEAD_LETTER_TAG, out)
        yield from split_by_key(valid, _account, self._groups).items()


class _DecideFn(beam.DoFn):
    """A group's payments decided by their books in event-time order, every id
    remembered (``kernels.books.decide_in_event_time``); with the id check to come, the
    rows leave split by transaction-id group."""

    def __init__(self, rules: Rules, settings: EngineSettings) -> None:
        self._rules = rules
        self._settings = settings

    def setup(self) -> None:
        for rule in self._rules:  # each rule's alert rate reads 0, not nothing, before its first alert
            telemetry.declare("fraud_alerts", rule=rule.kind)

    def process(self, group: Tuple[int, List[Pending]]) -> Iterable[Any]:
        counts, settings = DecideCounts(), self._settings
        rows: List[EnrichedTransaction] = []
        decided = decide_in_event_time(group[1], self._rules, settings.history_ttl_us)
        for out in decided_outputs(decided, counts):
            if type(out) is TaggedOutput:
                yield out
            else:
                rows.append(out)
        if self._settings.global_ids:
            yield from split_by_key(rows, _row_id, self._settings.batch_groups).items()
        else:
            yield from rows
        counts.flush()


class _CheckIdsFn(beam.DoFn):
    """A group's rows checked in event-time order, every id remembered: the first use of
    an id by event time is stored, a use by another account is a conflict."""

    def process(self, group: Tuple[int, List[EnrichedTransaction]]) -> Iterable[Any]:
        rows = sorted(group[1], key=row_event_order)
        yield from id_check_outputs(*check_ids(SeenIds(), rows, FOREVER))


class BatchPayments(PaymentsDriver):
    """Raw payloads (a bounded input, a batch run) -> rows, alerts, dead letters.

    Arguments as ``PaymentsDriver``'s (``transforms/steps.py``); ``settings.batch_groups``
    is how many lists the accounts and the ids are grouped into (each list is held in
    memory at once).
    """

    def expand(self, raw: beam.PCollection[RawPayload]) -> Any:
        if not raw.is_bounded:  # the lists are complete only once the input is
            raise ValueError(f"{self.label}: the batch driver needs a bounded input")
        return super().expand(raw)

    def parse_step(self) -> beam.PTransform:
        settings = self._settings
        return _ChunkAndParse(_ParseChunkFn(self._keys, settings.max_future_skew_s, settings.batch_groups))

    def accounts_step(self) -> beam.PTransform:
        return _MergeThen(
            _DecideFn(self._rules, self._settings), (DEAD_LETTER_TAG, ALERTS_TAG), "transactions"
        )

    def ids_step(self) -> beam.PTransform:
        return _MergeThen(_CheckIdsFn(), (DEAD_LETTER_TAG,), "stored")


class _ChunkAndParse(beam.PTransform):
    def __init__(self, fn: _ParseChunkFn) -> None:
        super().__init__()
        self._fn = fn

    def expand(self, raw: beam.PCollection[RawPayload]) -> Any:
        chunks = raw | "Chunks" >> beam.BatchElements(min_batch_size=CHUNK, max_batch_size=CHUNK)
        return chunks | "Parse" >> beam.ParDo(self._fn).with_outputs(DEAD_LETTER_TAG, main="masked")


class _MergeThen(beam.PTransform):
    """The partial lists of each key merged, then ``fn`` over each whole list."""

    def __init__(self, fn: beam.DoFn, tags: Tuple[str, ...], main: str) -> None:
        super().__init__()
        self._fn, self._tags, self._main = fn, tags, main

    def expand(self, parts: beam.PCollection[Any]) -> Any:
        merged = parts | "Merge" >> MergeLists()
        return merged | "Decide" >> beam.ParDo(self._fn).with_outputs(*self._tags, main=self._main)
