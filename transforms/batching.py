"""Bounded inputs: a key's records through one shuffle, not one state access each.

A step that needs all the records of a key (dedup per transaction id,
features and velocity per account) keeps per-key state in a streaming run.
On a bounded input in batch mode the runner only fires the timers once the
input is exhausted, so the same result comes from having all of a key's
records at once. ``GroupIntoShards`` hashes each key to one of ``shards``
groups and collects each group into a list with a ``CombinePerKey``. Runners
lift the combine: records are appended to a list per shard inside each
bundle, and the shuffle moves a few large pickled lists instead of one
element per record. The step after it runs plain code per shard, built on the
same functions the streaming path calls; ``tests/test_batch_paths.py`` checks
that the two paths agree.

``use_batch`` decides, once per graph, which path a transform expands to.

Timestamps: the records out of a batch path carry the timestamp the grouping
gives them (the end of the global window), not their event time. Every record
holds its event time as a field, and in a batch run no step after these
windows by timestamp; re-stamping each record would cost more than the
step's own work (one window assignment per record on Beam Python).
"""

from __future__ import annotations

import io
import pickle
import zlib
from functools import partial
from typing import Any, Callable, Dict, Generic, Iterable, Iterator, List, Optional, Sequence, Tuple, TypeVar

import apache_beam as beam
from apache_beam.coders import Coder, coder_impl, typecoders

__all__ = [
    "DEFAULT_SHARDS",
    "EXECUTION_MODES",
    "GroupIntoShards",
    "MergeShards",
    "ShardRecords",
    "shard_of",
    "split_into_shards",
    "use_batch",
]

T = TypeVar("T")

DEFAULT_SHARDS = 64
EXECUTION_MODES = ("auto", "batch", "stream")


def shard_of(key: str, shards: int) -> int:
    """A stable shard for ``key`` (the same in every process, unlike ``hash``)."""
    return zlib.crc32(key.encode("utf-8")) % shards


def use_batch(pcoll: beam.PCollection, mode: str, streaming: bool) -> bool:
    """Whether a keyed step takes its batch path: ``auto`` means a bounded input in a batch run."""
    if mode not in EXECUTION_MODES:
        raise ValueError(f"execution mode must be one of {EXECUTION_MODES}, not {mode!r}")
    if mode == "batch":
        if not pcoll.is_bounded:
            raise ValueError("the batch path needs a bounded input")
        return True
    if mode == "stream":
        return False
    return bool(pcoll.is_bounded) and not streaming


class ShardRecords(list):
    """The records of one shard: a list whose coder pickles it whole.

    Beam samples the size of a step's outputs by encoding them. For a list of
    records that would pickle every record one by one (measured: once per
    record, about a tenth of a batch run), so the coder estimates the size
    from the length instead.
    """


_RECORD_SIZE_ESTIMATE = 512  # bytes per record, for Beam's byte counters only


class _RecordPickler(pickle.Pickler):
    """Pickles a ``NamedTuple`` record as its class and its values as a plain tuple.

    Unpickling then rebuilds it with ``tuple.__new__``, in C, where pickle's
    default for a named tuple calls its generated ``__new__`` (Python) for every
    record and every nested record; measured, a third less time per record for
    the two directions together. The records are the same.
    """

    def reducer_override(self, obj: Any) -> Any:
        cls = type(obj)
        if cls.__base__ is tuple and hasattr(cls, "_fields"):
            return tuple.__new__, (cls, tuple(obj))
        return NotImplemented


def _dumps(records: ShardRecords) -> bytes:
    columns = _columns(records)
    if columns is not None:
        buffer = io.BytesIO()
        buffer.write(_COLUMNS)
        pickler = pickle.Pickler(buffer, pickle.HIGHEST_PROTOCOL)
        pickler.fast = True  # no memo: columns hold no cycles, and their values are mostly unique
        pickler.dump(columns)
        return buffer.getvalue()
    buffer = io.BytesIO()
    buffer.write(_PICKLED)
    _RecordPickler(buffer, pickle.HIGHEST_PROTOCOL).dump(records)
    return buffer.getvalue()


def _loads(data: bytes) -> ShardRecords:
    if data[:1] == _COLUMNS:
        return _from_columns(pickle.loads(data[1:]))
    return pickle.loads(data[1:])  # type: ignore[no-any-return]


# A shard list travels as its columns when it holds records of one NamedTuple class, and
# each field that holds a record holds records of one class in every row (nested at any
# depth: a payment's ``SourceRef``, a row's payment), column by column: every step then
# runs in C (``zip``, ``pickle``, ``map``), where the pickler calls back into Python for
# each object of each record (measured: 2-3x less time for the two directions).
# Anything else is pickled whole, records as class plus plain tuple.
_COLUMNS, _PICKLED = b"C", b"P"
# (class, indexes of the fields that are records, columns): a record field's column is
# itself a _Columns
_Columns = Tuple[type, List[int], List[Any]]


def _is_record(value: Any) -> bool:
    return isinstance(value, tuple) and type(value) is not tuple and hasattr(type(value), "_fields")


def _columns(records: Sequence[Any]) -> Optional[_Columns]:
    if not records or not _is_record(records[0]):
        return None
    cls = type(records[0])
    if set(map(type, records)) != {cls}:
        return None
    columns: List[Any] = list(zip(*records))
    nested: List[int] = []
    for index, value in enumerate(records[0]):
        if _is_record(value):
            inner = _columns(columns[index])
            if inner is None:
                return None
            nested.append(index)
            columns[index] = inner
        elif isinstance(value, tuple) and any(map(_is_record, value)):
            return None
    return cls, nested, columns


def _from_columns(encoded: _Columns) -> ShardRecords:
    return ShardRecords(_rows(encoded))


def _rows(encoded: _Columns) -> Iterator[Any]:
    cls, nested, columns = encoded
    for index in nested:
        columns[index] = _rows(columns[index])
    return map(partial(tuple.__new__, cls), zip(*columns))


def _estimate(records: ShardRecords) -> int:
    return 16 + _RECORD_SIZE_ESTIMATE * len(records)


class ShardRecordsCoder(Coder):
    def _create_impl(self) -> coder_impl.CoderImpl:
        return coder_impl.CallbackCoderImpl(_dumps, _loads, size_estimator=_estimate)

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self) -> type:
        return ShardRecords


typecoders.registry.register_coder(ShardRecords, ShardRecordsCoder)


class _CollectFn(beam.CombineFn, Generic[T]):
    """Appends records to a ``ShardRecords`` list, which travels pickled whole."""

    def create_accumulator(self) -> ShardRecords:
        return ShardRecords()

    def add_input(self, acc: ShardRecords, element: T) -> ShardRecords:
        acc.append(element)
        return acc

    def add_inputs(self, acc: ShardRecords, elements: Iterable[T]) -> ShardRecords:
        acc.extend(elements)
        return acc

    def merge_accumulators(self, accs: Iterable[ShardRecords]) -> ShardRecords:
        merged = ShardRecords()
        for acc in accs:
            merged.extend(acc)
        return merged

    def extract_output(self, acc: ShardRecords) -> ShardRecords:
        return acc

    def get_accumulator_coder(self) -> Coder:
        return ShardRecordsCoder()


class _MergeFn(_CollectFn[Any]):
    """Joins the partial lists of one shard into one ``ShardRecords`` list."""

    def add_input(self, acc: ShardRecords, part: List[Any]) -> ShardRecords:
        acc.extend(part)
        return acc

    def add_inputs(self, acc: ShardRecords, parts: Iterable[List[Any]]) -> ShardRecords:
        for part in parts:
            acc.extend(part)
        return acc


class MergeShards(beam.PTransform):
    """``(shard, [T, ...])`` partial lists -> one ``(shard, [T, ...])`` list per shard.

    For steps that shard their records themselves, a chunk at a time: the grouping then
    moves each chunk's few lists, not one element per record.
    """

    def expand(
        self, parts: beam.PCollection[Tuple[int, List[Any]]]
    ) -> beam.PCollection[Tuple[int, List[Any]]]:
        return parts | "Merge" >> beam.CombinePerKey(
            _MergeFn().with_input_types(ShardRecords).with_output_types(ShardRecords)
        ).with_output_types(Tuple[int, ShardRecords])


def split_into_shards(records: Iterable[T], key: Callable[[T], str], shards: int) -> Dict[int, ShardRecords]:
    """The records by ``shard_of(key(record))``, in their order."""
    out: Dict[int, ShardRecords] = {}
    for record in records:
        shard = shard_of(key(record), shards)
        part = out.get(shard)
        if part is None:
            part = out[shard] = ShardRecords()
        part.append(record)
    return out


class GroupIntoShards(beam.PTransform):
    """``T`` -> ``(shard, [T, ...])``: every record of a key lands in the same shard's list."""

    def __init__(self, key: Callable[[Any], str], shards: int = DEFAULT_SHARDS, label: Optional[str] = None):
        super().__init__(label)
        if shards < 1:
            raise ValueError("shards must be >= 1")
        self._key = key
        self._shards = shards

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection[Tuple[int, List[Any]]]:
        if not pcoll.is_bounded:  # the lists are complete only once the input is
            raise ValueError(f"{self.label}: the batch path needs a bounded input")
        key, shards = self._key, self._shards
        return (
            pcoll
            | "KeyByShard"
            >> beam.Map(lambda r: (shard_of(key(r), shards), r)).with_output_types(Tuple[int, Any])
            # The CombineFn carries the output type: the step inside the combine takes its
            # hints from it, not from the composite, and without them the lists reached the
            # next step with the fallback coder, which pickled a whole shard each time Beam
            # sampled an output's size.
            | "Collect"
            >> beam.CombinePerKey(
                _CollectFn().with_input_types(Any).with_output_types(ShardRecords)
            ).with_output_types(Tuple[int, ShardRecords])
        )
