"""The lean per-payment code gives the results of its plain definitions.

Each fast path is held against the slow, obvious code it replaces, on simulated traffic and
on generated edge cases: parsing (one pass, then the checks one by one for the exact error),
event times, Luhn, prepared HMAC pads, the velocity panes built only where a window can
fire, the payments' columns for the warehouse, the shard lists' column coder and the bulk
histogram update.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from decimal import Decimal
from typing import Any, Dict, List, Optional

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_parse import NOW_US, SRC, good

from kernels.features import AccountHistory, features
from kernels.masking import Tokenizer, _HmacSha256, mask_pan, mask_transaction
from kernels.parse import (
    ParseError,
    _checked_payment,
    _decode_json,
    _event_time_us,
    _lean_payment,
    luhn_valid,
    parse_event_time_us,
    parse_payment,
)
from schemas.records import SourceRef, Transaction
from schemas.rows import transaction_columns, transaction_row
from simulator.generator import GeneratorConfig, generate
from transforms import telemetry
from transforms.lists import RecordList, RecordListCoder

SKEW_US = 300_000_000

GOOD: Dict[str, Any] = good()  # a valid message


def _checked(obj: Dict[str, Any]) -> Optional[Transaction]:
    try:
        return _checked_payment(obj, SRC, NOW_US, SKEW_US)
    except ParseError:
        return None


def _agree(obj: Dict[str, Any]) -> None:
    """The one-pass check accepts only what the checks one by one accept, with the same record."""
    lean = _lean_payment(obj, SRC, NOW_US + SKEW_US)
    if lean is not None:
        assert lean == _checked(obj), obj


@pytest.fixture(scope="module")
def traffic() -> List[bytes]:
    records, _ = generate(GeneratorConfig(num_events=6000, accounts=300, seed=11, include_oversized=False))
    return [r.payload for r in records]


def test_every_simulated_payload_parses_as_the_checks_one_by_one_say(traffic: List[bytes]) -> None:
    lean_accepted = 0
    for payload in traffic:
        try:
            obj = json.loads(payload.decode("utf-8"), parse_float=Decimal)
        except (UnicodeDecodeError, ValueError):
            continue
        if not isinstance(obj, dict):
            continue
        _agree(obj)
        lean_accepted += _lean_payment(obj, SRC, 2**62) is not None
    assert lean_accepted > 0.9 * len(traffic)  # the fast path is the usual one


# Values that sit at the edges of each check: white space and a final newline (which the
# checks strip and their "$" allows), non-ASCII digits, numbers for strings, empty, None.
_TRICKY = st.sampled_from(
    [
        None,
        "",
        " ",
        "\n",
        "12",
        "12.5",
        "12.50",
        "12.505",
        "0.00",
        "007.10",
        " 12.50",
        "12.50\n",
        "١٢",
        "1e3",
        12,
        12.5,
        Decimal("12.50"),
        Decimal("1E+2"),
        True,
        [],
        {},
        "USD",
        "usd",
        "GB",
        "4111111111111111",
        "4111 1111 1111 1111",
        "4111111111111112",
        "٤١١١١١١١١١١١١١١١",
        "123",
        "123\n",
        "12345",
        "5411",
        "5411\n",
        "jane@example.com",
        " jane@example.com",
        "jane@example.com\n",
        "us****@example.com",
        "+1-555-867-5309",
        "+1 (555) 867.5309",
        "555",
        "txn-4111111111111111",
        "txn-0001\n",
        "acct 1",
        "2026-11-24T10:00:05.250Z",
        "2026-11-24T10:00:05Z",
        "2026-11-24T10:00:05.1234567+01:00",
        "2026-11-24T10:00:05.250-08:00",
        "2026-11-24T10:00:05.250+24:00",
        "2026-11-24T10:00:05.250",
        "2026-11-24 10:00:05.250Z",
        "1999-12-31T23:59:59Z",
        "2026-02-30T10:00:05Z",
        "2026-11-24T24:00:00Z",
        "2099-01-01T00:00:00Z",
        "2026-11-24T10:00:05.250Z ",
    ]
)


@settings(max_examples=600, deadline=None)
@given(
    changes=st.dictionaries(st.sampled_from(sorted(GOOD)), _TRICKY, max_size=3),
    dropped=st.lists(st.sampled_from(sorted(GOOD)), max_size=1),
)
def test_one_pass_agrees_with_the_checks_one_by_one(changes: Dict[str, Any], dropped: List[str]) -> None:
    obj = {**GOOD, **changes}
    for name in dropped:
        obj.pop(name, None)
    _agree(obj)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=60))
def test_decoding_agrees_with_json_loads(text: str) -> None:
    try:  # NaN and Infinity are not JSON, as before
        expected: Any = json.loads(text, parse_float=Decimal, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        with pytest.raises((ValueError, RecursionError)):
            _decode_json(text)
        return
    assert _decode_json(text) == expected


def _no_constant(name: str) -> Any:
    raise ValueError(name)


_TIMES = st.builds(
    lambda date, time, fraction, zone, pad: f"{pad}{date}T{time}{fraction}{zone}",
    st.sampled_from(["2026-11-24", "2000-01-01", "1999-12-31", "2026-02-29", "2024-02-29", "2026-1-24"]),
    st.sampled_from(["10:00:05", "23:59:59", "00:00:00", "24:00:00", "10:60:00", "10:00"]),
    st.sampled_from(["", ".1", ".25", ".250", ".2500", ".25000", ".250000", ".2500000", ".", ".x1"]),
    st.sampled_from(
        [
            "Z",
            "z",
            "+00:00",
            "-00:00",
            "+01:00",
            "-08:00",
            "+05:30",
            "+23:59",
            "+24:00",
            "-07:60",
            "+0100",
            "+01",
            "",
            " Z",
        ]
    ),
    st.sampled_from(["", " "]),
)


@settings(max_examples=500, deadline=None)
@given(value=_TIMES)
def test_event_time_by_hand_agrees_with_fromisoformat(value: str) -> None:
    try:
        expected: Optional[int] = parse_event_time_us(value)
    except ParseError:
        expected = None
    got = _event_time_us(value)
    if value.strip() == value:
        assert got == expected, value
    else:  # surrounding white space is left to the checks one by one
        assert got is None, value


def _luhn_by_the_book(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


@settings(max_examples=500, deadline=None)
@given(digits=st.text("0123456789", max_size=19) | st.text("0123456789 -a٣", max_size=19))
def test_luhn_agrees_with_the_textbook_loop(digits: str) -> None:
    assert luhn_valid(digits) == _luhn_by_the_book(digits)


@settings(max_examples=200, deadline=None)
@given(key=st.binary(min_size=16, max_size=150), message=st.binary(max_size=100))
def test_prepared_pads_give_the_hmac(key: bytes, message: bytes) -> None:
    assert _HmacSha256(key).hexdigest(message) == hmac.digest(key, message, hashlib.sha256).hex()


def test_a_card_that_is_not_plain_digits_is_masked_and_tokenized_as_before() -> None:
    tokenizer = Tokenizer(b"k" * 32)
    txn = parse_payment(json.dumps(GOOD).encode(), SRC, NOW_US)
    spaced = txn._replace(card_number="4111 1111 1111 1111")
    masked = mask_transaction(spaced, tokenizer)
    assert masked.card_masked == mask_pan("4111 1111 1111 1111") == "****-****-****-1111"
    assert (
        masked.card_token
        == tokenizer.card("4111 1111 1111 1111")
        == mask_transaction(txn, tokenizer).card_token
    )


def test_columns_store_the_same_rows_as_row_dicts(tmp_path: Any) -> None:
    from schemas.tables import TABLES, column_names
    from transforms.sinks.duckdb_warehouse import (
        _AMOUNT_MINOR,
        _ARROW_TYPES,
        _insert_sql,
        _records_insert_sql,
        connect,
    )

    tokenizer = Tokenizer(b"k" * 32)
    records, _ = generate(GeneratorConfig(num_events=2000, accounts=100, seed=5, include_oversized=False))
    masked, seen = [], set()
    for i, r in enumerate(records):
        try:
            txn = parse_payment(r.payload, SourceRef("file:x", 0, i), 2**62)
        except ParseError:
            continue
        if txn.transaction_id not in seen:
            seen.add(txn.transaction_id)
            masked.append(mask_transaction(txn, tokenizer))
    histories: Dict[str, AccountHistory] = {}
    enriched = []
    for m in masked:
        history = histories.setdefault(m.account_id, AccountHistory())
        enriched.append(features(m, history))
        history.push(m)
    at = 1_795_600_000_123_456
    table = "payment_transactions"
    by_rows, by_columns = connect(str(tmp_path / "rows.duckdb")), connect(str(tmp_path / "columns.duckdb"))
    names = column_names(table)
    rows = [transaction_row(e, at) for e in enriched]
    by_rows.register("batch", pa.table({c: [row[c] for row in rows] for c in names}))
    by_rows.execute(_insert_sql(table, "batch"))
    types = {f.name: _ARROW_TYPES.get(f.type) for f in TABLES[table].fields}
    types[_AMOUNT_MINOR] = pa.int64()
    columns = transaction_columns(enriched, at)
    by_columns.register("batch", pa.table({k: pa.array(v, types[k]) for k, v in columns.items()}))
    by_columns.execute(_records_insert_sql(table, "batch"))
    query = f"SELECT * FROM {table} ORDER BY transaction_id"
    stored = by_rows.execute(query).fetchall()
    assert len(stored) == len(enriched) > 1500
    assert stored == by_columns.execute(query).fetchall()
    with pytest.raises(ValueError):
        transaction_columns([enriched[0]._replace(merchant_category_risk=float("nan"))], at)


def test_record_lists_of_one_class_travel_as_columns(traffic: List[bytes]) -> None:
    impl = RecordListCoder().get_impl()
    txns = RecordList()
    for i, payload in enumerate(traffic[:500]):
        try:
            txns.append(parse_payment(payload, SourceRef._make(("file:x", 0, i, None, None)), 2**62))
        except ParseError:
            pass
    masked = RecordList(mask_transaction(t, Tokenizer(b"k" * 32)) for t in txns)
    with_none = RecordList([*txns[:3], txns[3]._replace(source=None)])  # type: ignore[arg-type]
    for records, form in ((txns, b"C"), (masked, b"C"), (with_none, b"P"), (RecordList(), b"P")):
        encoded = impl.encode(records)
        back = impl.decode(encoded)
        assert encoded[:1] == form
        assert type(back) is RecordList and back == records
        assert [type(r) for r in back] == [type(r) for r in records]
        assert [type(getattr(r, "source", None)) for r in back] == [
            type(getattr(r, "source", None)) for r in records
        ]


def test_bulk_histogram_update_equals_one_observe_per_value() -> None:
    registry = telemetry.registry()
    assert registry is not None, "prometheus-client is part of the test extra"
    rng = random.Random(3)
    values = [rng.choice([0, 1, 256, 257, 511, 512, 4096, 10**6, 2 * 10**6]) for _ in range(400)]

    def sample() -> Dict[str, float]:
        return {
            f"{s.name}{s.labels}": s.value
            for m in registry.collect()
            if m.name == "paystream_payload_bytes"
            for s in m.samples
            if not s.name.endswith("_created")
        }

    def delta(after: Dict[str, float], before: Dict[str, float]) -> Dict[str, float]:
        return {k: v - before[k] for k, v in after.items()}

    before = sample()
    for value in values:
        telemetry.observe("payload_bytes", value)
    middle = sample()
    telemetry.observe_many("payload_bytes", values)
    one_by_one, in_bulk = delta(middle, before), delta(sample(), middle)
    assert len(one_by_one) == 9 and one_by_one["paystream_payload_bytes_sum{}"] == sum(values)
    assert in_bulk == one_by_one


def test_state_pickled_by_the_version_before_restores() -> None:
    """A checkpoint of the version before: a history pickled as its fields."""
    history = AccountHistory.__new__(AccountHistory)
    history.__setstate__({"last_event_time_us": 5, "recent_amounts": [100, 300]})
    assert (history.last_event_time_us, list(history.recent_amounts), history.recent_sum) == (
        5,
        [100, 300],
        400,
    )


def test_merge_lists_joins_the_partial_lists_of_each_key() -> None:
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from transforms.lists import MergeLists, _MergeFn

    merge = _MergeFn()
    acc = merge.add_inputs(merge.add_input(merge.create_accumulator(), [1, 2]), [[3], [4, 5]])
    assert list(merge.extract_output(merge.merge_accumulators([acc, [6]]))) == [1, 2, 3, 4, 5, 6]
    parts = [(0, RecordList([1, 2])), (1, RecordList([3])), (0, RecordList([4])), (1, RecordList())]
    with TestPipeline() as p:
        merged = p | beam.Create(parts) | MergeLists() | beam.MapTuple(lambda shard, xs: (shard, sorted(xs)))
        assert_that(merged, equal_to([(0, [1, 2, 4]), (1, [3])]))
