"""Lists of records between the steps: how the drivers amortise Beam's per-element cost.

Both drivers move payments between their steps as lists, one per key
(``split_by_key``), not one element per payment: the runner then moves, encodes and
keys a few lists per bundle. A ``RecordList`` travels with its own coder, which sends
a list of records of one ``NamedTuple`` class column by column. ``MergeLists`` joins
the partial lists of each key into one (the batch driver's grouping: a lifted combine,
so the shuffle moves a few large lists).

``group_of`` is the stable hash both drivers group by (an account, or a transaction id,
into one of ``groups``).
"""

from __future__ import annotations

import io
import pickle
import zlib
from functools import partial
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, TypeVar

import apache_beam as beam
from apache_beam.coders import Coder, coder_impl, typecoders

__all__ = ["MergeLists", "RecordList", "RecordListCoder", "group_of", "split_by_key"]

T = TypeVar("T")


def group_of(key: str, groups: int) -> int:
    """A stable group for ``key`` (the same in every process, unlike ``hash``)."""
    return zlib.crc32(key.encode("utf-8")) % groups


class RecordList(list):
    """A list of records: its coder sends it whole, as columns where it can.

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


def _dumps(records: RecordList) -> bytes:
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


def _loads(data: bytes) -> RecordList:
    if data[:1] == _COLUMNS:
        return _from_columns(pickle.loads(data[1:]))
    return pickle.loads(data[1:])  # type: ignore[no-any-return]


# A list travels as its columns when it holds records of one NamedTuple class, and
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


def _from_columns(encoded: _Columns) -> RecordList:
    return RecordList(_rows(encoded))


def _rows(encoded: _Columns) -> Iterator[Any]:
    cls, nested, columns = encoded
    for index in nested:
        columns[index] = _rows(columns[index])
    return map(partial(tuple.__new__, cls), zip(*columns))


def _estimate(records: RecordList) -> int:
    return 16 + _RECORD_SIZE_ESTIMATE * len(records)


class RecordListCoder(Coder):
    def _create_impl(self) -> coder_impl.CoderImpl:
        return coder_impl.CallbackCoderImpl(_dumps, _loads, size_estimator=_estimate)

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self) -> type:
        return RecordList


typecoders.registry.register_coder(RecordList, RecordListCoder)


class _MergeFn(beam.CombineFn):
    """Joins the partial lists of one key into one ``RecordList``, which travels whole."""

    def create_accumulator(self) -> RecordList:
        return RecordList()

    def add_input(self, acc: RecordList, part: List[Any]) -> RecordList:
        acc.extend(part)
        return acc

    def add_inputs(self, acc: RecordList, parts: Iterable[List[Any]]) -> RecordList:
        for part in parts:
            acc.extend(part)
        return acc

    def merge_accumulators(self, accs: Iterable[RecordList]) -> RecordList:
        merged = RecordList()
        for acc in accs:
            merged.extend(acc)
        return merged

    def extract_output(self, acc: RecordList) -> RecordList:
        return acc

    def get_accumulator_coder(self) -> Coder:
        return RecordListCoder()


class MergeLists(beam.PTransform):
    """``(key, [T, ...])`` partial lists -> one ``(key, [T, ...])`` list per key.

    For steps that split their records by key themselves, a chunk at a time: the grouping then
    moves each chunk's few lists, not one element per record.
    """

    def expand(
        self, parts: beam.PCollection[Tuple[int, List[Any]]]
    ) -> beam.PCollection[Tuple[int, List[Any]]]:
        return parts | "Merge" >> beam.CombinePerKey(
            _MergeFn().with_input_types(RecordList).with_output_types(RecordList)
        ).with_output_types(Tuple[int, RecordList])


def split_by_key(records: Iterable[T], key: Callable[[T], str], groups: int) -> Dict[int, RecordList]:
    """The records by ``group_of(key(record), groups)``, in their order."""
    out: Dict[int, RecordList] = {}
    for record in records:
        group = group_of(key(record), groups)
        part = out.get(group)
        if part is None:
            part = out[group] = RecordList()
        part.append(record)
    return out
