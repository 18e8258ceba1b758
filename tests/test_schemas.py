"""The schema files, the SQL, the DuckDB warehouse and the typed records all agree.

Sources of truth: ``schemas/bigquery/*.json`` (columns), ``schemas/payment.schema.json`` (message),
``schemas/schema.sql`` (views). Everything else is checked against them here.
"""

from __future__ import annotations

import copy
import json
import re
import time
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import duckdb
import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

import schemas
from schemas.records import (
    DeadLetter,
    EnrichedTransaction,
    FraudAlert,
    MaskedTransaction,
    SourceRef,
    Transaction,
)
from schemas.rows import (
    alert_row,
    dead_letter_row,
    minor_to_numeric,
    rfc3339_to_us,
    transaction_row,
    us_to_rfc3339,
)
from schemas.tables import (
    TABLES,
    Field,
    TableSpec,
    analysis_views,
    bigquery_table_ddl,
    bq_schema,
    column_names,
    duckdb_bootstrap_sql,
    duckdb_ddl,
    duckdb_insert_json_sql,
    duckdb_insert_sql,
    duckdb_views_ddl,
    payment_message_schema,
    render_schema_sql,
    schema_sql,
    values_in_column_order,
)

SCHEMA_DIR = Path(schemas.__file__).parent
UTC = UTC
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TABLE_NAMES = ["payment_transactions", "fraud_alerts", "dead_letters"]
VIEW_NAMES = {"v_top_fraud_accounts_24h", "v_dedup_ratio", "v_dead_letters_by_reason"}


def us(dt: datetime) -> int:
    return (dt - EPOCH) // timedelta(microseconds=1)


def load_json_fields(table: str) -> list[dict[str, Any]]:
    """Read a BigQuery schema file straight from disk, independently of schemas.tables."""
    fields: list[dict[str, Any]] = json.loads((SCHEMA_DIR / "bigquery" / f"{table}.json").read_text("utf-8"))
    return fields


# ---------------------------------------------------------------------------------------------
# The contract: the columns the brief fixes, exactly. (name, type, mode)

R, N, REP = "REQUIRED", "NULLABLE", "REPEATED"
CONTRACT: dict[str, list[tuple[str, str, str]]] = {
    "payment_transactions": [
        ("transaction_id", "STRING", R),
        ("account_id", "STRING", R),
        ("amount", "NUMERIC", R),
        ("currency", "STRING", R),
        ("card_masked", "STRING", R),
        ("card_token", "STRING", R),
        ("email_masked", "STRING", R),
        ("email_token", "STRING", R),
        ("phone_masked", "STRING", R),
        ("merchant_id", "STRING", R),
        ("merchant_category", "STRING", R),
        ("country", "STRING", R),
        ("card_country", "STRING", N),
        ("event_time", "TIMESTAMP", R),
        ("hour_of_day_utc", "INTEGER", R),
        ("amount_to_recent_mean", "FLOAT", N),
        ("recent_txn_count", "INTEGER", R),
        ("seconds_since_prev_txn", "FLOAT", N),
        ("cross_border", "BOOLEAN", N),
        ("merchant_category_risk", "FLOAT", R),
        ("source_topic", "STRING", N),
        ("source_partition", "INTEGER", N),
        ("source_offset", "INTEGER", N),
        ("ingested_at", "TIMESTAMP", R),
    ],
    "fraud_alerts": [
        ("alert_id", "STRING", R),
        ("account_id", "STRING", R),
        ("rule", "STRING", R),
        ("rule_params", "STRING", R),
        ("threshold", "INTEGER", R),
        ("window_start", "TIMESTAMP", R),
        ("window_end", "TIMESTAMP", R),
        ("first_txn_time", "TIMESTAMP", R),
        ("crossing_txn_time", "TIMESTAMP", R),
        ("matched_count", "INTEGER", R),
        ("transaction_ids", "STRING", REP),
        ("detected_at", "TIMESTAMP", R),
    ],
    "dead_letters": [
        ("dead_letter_id", "STRING", R),
        ("stage", "STRING", R),
        ("reason", "STRING", R),
        ("message", "STRING", R),
        ("source_topic", "STRING", N),
        ("source_partition", "INTEGER", N),
        ("source_offset", "INTEGER", N),
        ("source_key", "STRING", N),
        ("masked_payload", "STRING", R),
        ("transaction_id", "STRING", N),
        ("received_at", "TIMESTAMP", R),
    ],
}
LAYOUT = {
    "payment_transactions": ("transaction_id", "event_time", ("account_id",)),
    "fraud_alerts": ("alert_id", "window_start", ("account_id",)),
    "dead_letters": ("dead_letter_id", "received_at", ("reason", "stage")),
}


@pytest.mark.parametrize("table", TABLE_NAMES)
def test_json_file_is_a_described_bigquery_field_list(table: str) -> None:
    fields = load_json_fields(table)
    assert [(f["name"], f["type"], f["mode"]) for f in fields] == CONTRACT[table]
    for f in fields:
        assert set(f) == {"name", "type", "mode", "description"}, f
        assert isinstance(f["description"], str) and len(f["description"].strip()) >= 10, f["name"]
        assert len(f["description"]) <= 1024, f["name"]  # BigQuery's limit


def test_tables_registry_and_layout() -> None:
    assert list(TABLES) == TABLE_NAMES
    for name, (pk, part, cluster) in LAYOUT.items():
        spec = TABLES[name]
        assert spec.name == name
        assert [f.to_json() for f in spec.fields] == load_json_fields(name)
        assert column_names(name) == [c for c, _, _ in CONTRACT[name]]
        assert (spec.primary_key, spec.partition_field, spec.cluster_fields) == (pk, part, cluster)
        assert spec.partition_type == "DAY"
        assert spec.description.strip()


def test_bq_schema_is_accepted_by_beam() -> None:
    from apache_beam.io.gcp import bigquery_tools

    for name in TABLE_NAMES:
        schema = bq_schema(name)
        assert schema == {"fields": load_json_fields(name)}
        table_schema = bigquery_tools.get_bq_tableschema(schema)  # type: ignore[no-untyped-call]
        assert [(f.name, f.type, f.mode) for f in table_schema.fields] == CONTRACT[name]
    bq_schema("dead_letters")["fields"].clear()  # callers get a copy
    assert bq_schema("dead_letters")["fields"]


def test_specs_reject_inconsistent_definitions() -> None:
    good = Field("id", "STRING", "REQUIRED", "An id.")
    ts = Field("ts", "TIMESTAMP", "REQUIRED", "A time.")
    with pytest.raises(ValueError):
        Field("x", "STRING", "REQUIRED", " ")
    with pytest.raises(ValueError):
        Field("x", "INT64", "REQUIRED", "legacy type names only")
    with pytest.raises(ValueError):
        TableSpec("t", (good, ts), "missing", "ts", ("id",), "d")
    with pytest.raises(ValueError):
        TableSpec("t", (good, ts), "id", "id", ("id",), "d")  # partition on a STRING
    with pytest.raises(ValueError):
        TableSpec("t", (good, ts), "id", "ts", ("nope",), "d")
    with pytest.raises(KeyError):
        column_names("no_such_table")


# ---------------------------------------------------------------------------------------------
# schema.sql, parsed on its own terms

_SQL_TYPES = {
    "STRING": "STRING",
    "NUMERIC": "NUMERIC",
    "INT64": "INTEGER",
    "FLOAT64": "FLOAT",
    "BOOL": "BOOLEAN",
    "TIMESTAMP": "TIMESTAMP",
}
_STR = r'"((?:[^"\\]|\\.)*)"'
_CREATE_TABLE = re.compile(
    r"CREATE TABLE IF NOT EXISTS `\$\{project\}\.\$\{dataset\}\.(\w+)`\s*\(\n(.*?)\n\)\s*"
    r"PARTITION BY DATE\((\w+)\)\s*CLUSTER BY ([\w, ]+?)\s*OPTIONS\(description=" + _STR + r"\);",
    re.DOTALL,
)
_COLUMN = re.compile(
    r"^\s*(\w+)\s+(ARRAY<(\w+)>|\w+)(\s+NOT NULL)?\s+OPTIONS\(description=" + _STR + r"\),?\s*$"
)
_PK = re.compile(r"^\s*PRIMARY KEY \((\w+)\) NOT ENFORCED\s*$")
_CREATE_VIEW = re.compile(
    r"CREATE OR REPLACE VIEW `\$\{project\}\.\$\{dataset\}\.(\w+)`\s*OPTIONS\(description="
    + _STR
    + r"\)\s*AS\s*-- view: (\w+)\n.*?-- end view\s*;",
    re.DOTALL,
)


def _unescape(literal: str) -> str:
    return re.sub(r"\\(.)", r"\1", literal).replace("$$", "$")


def parse_schema_sql(text: str) -> dict[str, dict[str, Any]]:
    tables: dict[str, dict[str, Any]] = {}
    for name, body, part, cluster, description in _CREATE_TABLE.findall(text):
        columns: list[tuple[str, str, str, str]] = []
        pk = None
        for line in body.splitlines():
            if m := _PK.match(line):
                pk = m[1]
                continue
            m = _COLUMN.match(line)
            assert m, f"{name}: cannot parse column line {line!r}"
            col, sql_type, element, not_null, desc = m.groups()
            if element:
                assert not not_null, f"{name}.{col}: ARRAY columns cannot be NOT NULL"
                columns.append((col, _SQL_TYPES[element], "REPEATED", _unescape(desc)))
            else:
                columns.append(
                    (col, _SQL_TYPES[sql_type], "REQUIRED" if not_null else "NULLABLE", _unescape(desc))
                )
        tables[name] = {
            "columns": columns,
            "primary_key": pk,
            "partition": part,
            "cluster": tuple(c.strip() for c in cluster.split(",")),
            "description": _unescape(description),
        }
    return tables


def test_schema_sql_tables_match_json_files() -> None:
    text = schema_sql()
    assert text == (SCHEMA_DIR / "schema.sql").read_text("utf-8")
    parsed = parse_schema_sql(text)
    assert len(re.findall(r"^CREATE TABLE", text, re.MULTILINE)) == len(parsed) == 3
    assert list(parsed) == TABLE_NAMES
    for name, table in parsed.items():
        assert table["columns"] == [
            (f["name"], f["type"], f["mode"], f["description"]) for f in load_json_fields(name)
        ]
        pk, part, cluster = LAYOUT[name]
        assert (table["primary_key"], table["partition"], table["cluster"]) == (pk, part, cluster)
        assert table["description"] == TABLES[name].description


def test_schema_sql_tables_are_the_generated_ones() -> None:
    text = schema_sql()
    for name in TABLE_NAMES:
        assert bigquery_table_ddl(name) in text, (
            f"schema.sql is stale for {name}: paste the output of `python -m schemas.tables`"
        )


def test_schema_sql_views_are_described_and_marked() -> None:
    text = schema_sql()
    views = _CREATE_VIEW.findall(text)
    assert {v[0] for v in views} == VIEW_NAMES == set(analysis_views())
    for name, description, marker in views:
        assert name == marker
        assert description.strip()
    assert len(re.findall(r"^-- view:", text, re.M)) == len(re.findall(r"^-- end view", text, re.M)) == 3


def test_render_schema_sql_fills_every_placeholder() -> None:
    sql = render_schema_sql("my-project", "paystream_ds")
    assert "${" not in sql and "$$" not in sql
    assert "`my-project.paystream_ds.payment_transactions`" in sql
    qualified = analysis_views("my-project", "paystream_ds")
    assert "`my-project.paystream_ds.fraud_alerts`" in qualified["v_top_fraud_accounts_24h"]
    for body in qualified.values():
        assert body in sql  # the BigQuery views run exactly the SELECT text DuckDB runs
    with pytest.raises(ValueError):
        render_schema_sql("p`; DROP", "ds")
    with pytest.raises(ValueError):
        analysis_views("my-project")


def test_view_bodies_are_portable() -> None:
    bigquery_only = re.compile(
        r"\b(TIMESTAMP_SUB|TIMESTAMP_ADD|DATE_SUB|SAFE_DIVIDE|FORMAT_TIMESTAMP|EXTRACT|IFNULL|QUALIFY)\b",
        re.I,
    )
    for name, body in analysis_views().items():
        assert body.lstrip().upper().startswith("SELECT"), name
        assert not bigquery_only.search(body), name
        assert "`" not in body and "${" not in body and ";" not in body, name


# ---------------------------------------------------------------------------------------------
# DuckDB DDL ↔ JSON

_DUCKDB_CATALOG_TYPES = {
    "STRING": "VARCHAR",
    "NUMERIC": "DECIMAL(38,9)",
    "INTEGER": "BIGINT",
    "FLOAT": "DOUBLE",
    "BOOLEAN": "BOOLEAN",
    "TIMESTAMP": "TIMESTAMP WITH TIME ZONE",
}


@pytest.mark.parametrize("table", TABLE_NAMES)
def test_duckdb_ddl_matches_json(table: str) -> None:
    ddl = duckdb_ddl(table)
    assert ddl.startswith(f"CREATE TABLE IF NOT EXISTS {table} (")
    assert ddl.rstrip().endswith(f"PRIMARY KEY ({TABLES[table].primary_key})\n)")
    con = duckdb.connect()
    for stmt in duckdb_bootstrap_sql():
        con.execute(stmt)
    con.execute(ddl)  # IF NOT EXISTS: idempotent
    rows = con.execute(
        "SELECT column_name, data_type, is_nullable, comment FROM duckdb_columns() "
        "WHERE table_name = ? ORDER BY column_index",
        [table],
    ).fetchall()
    expected = []
    for f in load_json_fields(table):
        dtype = _DUCKDB_CATALOG_TYPES[f["type"]] + ("[]" if f["mode"] == "REPEATED" else "")
        expected.append((f["name"], dtype, f["mode"] != "REQUIRED", f["description"]))
    assert rows == expected
    pk = con.execute(
        "SELECT constraint_column_names FROM duckdb_constraints() "
        "WHERE table_name = ? AND constraint_type = 'PRIMARY KEY'",
        [table],
    ).fetchall()
    assert pk == [([TABLES[table].primary_key],)]
    assert con.execute("SELECT comment FROM duckdb_tables() WHERE table_name = ?", [table]).fetchone() == (
        TABLES[table].description,
    )


# ---------------------------------------------------------------------------------------------
# records.py ↔ tables and message schema

_RENAMES = {"amount_minor": "amount"}


def _column_for(field_name: str) -> str:
    name = _RENAMES.get(field_name, field_name)
    return name[: -len("_us")] if name.endswith("_us") else name


def _is_optional(hint: Any) -> bool:
    return get_origin(hint) is Union and type(None) in get_args(hint)


def _bare(hint: Any) -> Any:
    if _is_optional(hint):
        (inner,) = [a for a in get_args(hint) if a is not type(None)]
        return inner
    return hint


def _record_columns(record: type, source_parts: tuple[str, ...]) -> dict[str, tuple[str, set[str]]]:
    """Column name → (mode, allowed BigQuery types) implied by a record's type hints."""
    out: dict[str, tuple[str, set[str]]] = {}
    for name, hint in get_type_hints(record).items():
        if name == "txn":
            out.update(_record_columns(MaskedTransaction, source_parts))
            continue
        if name == "source":
            # SourceRef fields are always set in-pipeline; the columns stay NULLABLE for rows
            # written by other producers (backfills).
            source_hints = get_type_hints(SourceRef)
            for part in source_parts:
                bq = "STRING" if _bare(source_hints[part]) is str else "INTEGER"
                out[f"source_{part}"] = ("NULLABLE", {bq})
            continue
        bare = _bare(hint)
        if get_origin(bare) is tuple:
            mode, allowed = "REPEATED", {"STRING"}
        else:
            mode = "NULLABLE" if _is_optional(hint) else "REQUIRED"
            if name.endswith("_us"):
                allowed = {"TIMESTAMP"}
            elif name == "amount_minor":
                allowed = {"NUMERIC"}
            else:
                allowed = {str: {"STRING"}, int: {"INTEGER"}, float: {"FLOAT"}, bool: {"BOOLEAN"}}[bare]
        out[_column_for(name)] = (mode, allowed)
    return out


RECORD_FOR_TABLE = {
    "payment_transactions": (EnrichedTransaction, ("topic", "partition", "offset"), "ingested_at"),
    "fraud_alerts": (FraudAlert, (), "detected_at"),
    "dead_letters": (DeadLetter, ("topic", "partition", "offset", "key"), "received_at"),
}


@pytest.mark.parametrize("table", TABLE_NAMES)
def test_records_agree_with_tables(table: str) -> None:
    record, source_parts, written_at = RECORD_FOR_TABLE[table]
    implied = _record_columns(record, source_parts)
    implied[written_at] = ("REQUIRED", {"TIMESTAMP"})  # the row function's time argument
    fields = {f["name"]: f for f in load_json_fields(table)}
    assert set(implied) == set(fields)
    for name, (mode, allowed) in implied.items():
        assert fields[name]["mode"] == mode, name
        assert fields[name]["type"] in allowed, name


def test_records_agree_with_message_schema() -> None:
    schema = payment_message_schema()
    props = schema["properties"]
    implied = {
        _column_for(name): not _is_optional(hint)
        for name, hint in get_type_hints(Transaction).items()
        if name not in {"source", "fingerprint"}  # added by the parser, not in the message
    }
    implied["cvv"] = True  # required in the message, dropped at parse time
    assert set(props) == set(implied)
    assert set(schema["required"]) == {name for name, required in implied.items() if required}
    assert "cvv" not in Transaction._fields and "cvv" not in MaskedTransaction._fields
    for table in TABLE_NAMES:
        assert "cvv" not in column_names(table) and "card_number" not in column_names(table)


# ---------------------------------------------------------------------------------------------
# The message JSON Schema

GOOD_MESSAGE: dict[str, Any] = {
    "transaction_id": "txn-000001",
    "account_id": "acct-42",
    "amount": "12.50",
    "currency": "EUR",
    "card_number": "4111111111111111",
    "cvv": "123",
    "email": "user@example.com",
    "phone": "1-555-123-4567",
    "merchant_id": "m-7",
    "merchant_category": "5411",
    "country": "DE",
    "event_time": "2026-11-24T10:00:05.250+00:00",
    "card_country": "FR",
}


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = payment_message_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def test_message_schema_is_documented() -> None:
    schema = payment_message_schema()
    assert schema.get("additionalProperties", True) is not False
    assert schema["description"].strip()
    for name, prop in schema["properties"].items():
        assert len(prop.get("description", "").strip()) >= 10, name
    assert schema["examples"] == [GOOD_MESSAGE]


def _with(**changes: Any) -> dict[str, Any]:
    msg = copy.deepcopy(GOOD_MESSAGE)
    for key, value in changes.items():
        if value is _DROP:
            msg.pop(key)
        else:
            msg[key] = value
    return msg


_DROP = object()


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(GOOD_MESSAGE, id="example"),
        pytest.param(_with(amount=12.5), id="amount-number"),
        pytest.param(_with(amount="7"), id="amount-integer-string"),
        pytest.param(_with(amount="0.01"), id="amount-one-cent"),
        pytest.param(_with(card_country=_DROP), id="no-card-country"),
        pytest.param(_with(card_country=None), id="null-card-country"),
        pytest.param(_with(event_time="2026-11-24T15:30:05+05:30"), id="offset"),
        pytest.param(_with(event_time="2026-11-24T10:00:05Z"), id="zulu-no-fraction"),
        pytest.param(_with(card_number="411111111111", cvv="1234"), id="12-digit-card-4-digit-cvv"),
        pytest.param(_with(phone="+44 20 7946 0958"), id="intl-phone"),
        pytest.param(_with(extra_field={"nested": 1}, schema_version=3), id="extra-fields-allowed"),
    ],
)
def test_message_schema_accepts(validator: jsonschema.protocols.Validator, message: dict[str, Any]) -> None:
    validator.validate(message)


BAD_MESSAGES = [
    *[pytest.param(_with(**{k: _DROP}), id=f"missing-{k}") for k in GOOD_MESSAGE if k != "card_country"],
    pytest.param(_with(transaction_id=""), id="empty-id"),
    pytest.param(_with(account_id=42), id="numeric-account"),
    pytest.param(_with(amount="12.345"), id="amount-3-decimals"),
    pytest.param(_with(amount="1,00"), id="amount-comma"),
    pytest.param(_with(amount="-5.00"), id="amount-negative-string"),
    pytest.param(_with(amount="0.00"), id="amount-zero-string"),
    pytest.param(_with(amount=0), id="amount-zero"),
    pytest.param(_with(amount=-1.5), id="amount-negative"),
    pytest.param(_with(amount=[12]), id="amount-list"),
    pytest.param(_with(currency="eur"), id="currency-lower"),
    pytest.param(_with(currency="EURO"), id="currency-4"),
    pytest.param(_with(card_number="4111-1111-1111-1111"), id="card-dashes"),
    pytest.param(_with(card_number="41111111111"), id="card-11-digits"),
    pytest.param(_with(card_number="4" * 20), id="card-20-digits"),
    pytest.param(_with(card_number=4111111111111111), id="card-number-type"),
    pytest.param(_with(cvv="12"), id="cvv-2"),
    pytest.param(_with(cvv="12345"), id="cvv-5"),
    pytest.param(_with(cvv=123), id="cvv-int"),
    pytest.param(_with(email="user.example.com"), id="email-no-at"),
    pytest.param(_with(phone="call me"), id="phone-text"),
    pytest.param(_with(merchant_category="541"), id="mcc-3"),
    pytest.param(_with(merchant_category="5411a"), id="mcc-5"),
    pytest.param(_with(country="DEU"), id="country-3"),
    pytest.param(_with(country="de"), id="country-lower"),
    pytest.param(_with(card_country="fr"), id="card-country-lower"),
    pytest.param(_with(event_time="2026-11-24T10:00:05"), id="time-naive"),
    pytest.param(_with(event_time="2026-11-24 10:00:05Z"), id="time-space"),
    pytest.param(_with(event_time="1764000000"), id="time-epoch"),
    pytest.param(_with(event_time="2026-13-24T10:00:05Z"), id="time-month-13"),
    pytest.param("not an object", id="not-object"),
]


@pytest.mark.parametrize("message", BAD_MESSAGES)
def test_message_schema_rejects(validator: jsonschema.protocols.Validator, message: Any) -> None:
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(message)


def test_patterns_reject_a_trailing_newline(validator: jsonschema.protocols.Validator) -> None:
    """Python's re lets ``$`` match before a final newline; the schema's patterns must not."""
    patterned = [k for k, v in payment_message_schema()["properties"].items() if "pattern" in json.dumps(v)]
    assert len(patterned) >= 9
    for key in patterned:
        with pytest.raises(jsonschema.ValidationError):
            validator.validate(_with(**{key: GOOD_MESSAGE[key] + "\n"}))


_TIME_SAMPLES = [
    ("2026-11-24T10:00:05.250000Z", True),
    ("2026-11-24t10:00:05z", True),
    ("2026-11-24T10:00:05.123456789-08:00", True),
    ("2026-11-24T10:00:05+14:00", True),
    ("2026-11-24T10:00:05", False),
    ("2026-11-24 10:00:05Z", False),
    ("2026-11-24T10:00Z", False),
    ("2026-11-24T10:00:05.Z", False),
    ("2026-11-24T10:00:05+0100", False),
    ("26-11-24T10:00:05Z", False),
    (" 2026-11-24T10:00:05Z", False),
    ("2026-11-24T10:00:05Z\n", False),
]


@pytest.mark.parametrize(("text", "ok"), _TIME_SAMPLES)
def test_event_time_pattern_and_parser_agree(text: str, ok: bool) -> None:
    pattern = payment_message_schema()["properties"]["event_time"]["pattern"]
    assert (re.search(pattern, text) is not None) is ok
    if ok:
        rfc3339_to_us(text)
    else:
        with pytest.raises(ValueError):
            rfc3339_to_us(text)


# ---------------------------------------------------------------------------------------------
# Time and money conversions


def test_timestamp_conversions() -> None:
    t = us(datetime(2026, 11, 24, 10, 0, 5, 250000, tzinfo=UTC))
    assert us_to_rfc3339(t) == "2026-11-24T10:00:05.250000Z"
    assert us_to_rfc3339(0) == "1970-01-01T00:00:00.000000Z"
    assert us_to_rfc3339(-1) == "1969-12-31T23:59:59.999999Z"
    assert rfc3339_to_us("2026-11-24T10:00:05.250000Z") == t
    assert rfc3339_to_us("2026-11-24T11:00:05.25+01:00") == t
    assert rfc3339_to_us("2026-11-24T05:30:05.250-04:30") == t
    assert rfc3339_to_us("2026-11-24T10:00:05.2500009Z") == t  # truncated past microseconds
    for bad in [
        "2026-02-30T00:00:00Z",
        "2026-11-24T24:00:00Z",
        "2026-11-24T10:60:00Z",
        "2026-12-31T23:59:60Z",
        "2026-11-24T10:00:00+24:00",
    ]:
        with pytest.raises(ValueError):
            rfc3339_to_us(bad)
    with pytest.raises(TypeError):
        us_to_rfc3339(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        us_to_rfc3339(10**18)  # past year 9999


@given(
    st.integers(min_value=us(datetime(1, 1, 2, tzinfo=UTC)), max_value=us(datetime(9999, 12, 30, tzinfo=UTC)))
)
def test_timestamp_round_trip(value: int) -> None:
    text = us_to_rfc3339(value)
    assert text == (EPOCH + timedelta(microseconds=value)).isoformat(timespec="microseconds").replace(
        "+00:00", "Z"
    )
    assert rfc3339_to_us(text) == value


@given(
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)),
    st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59),
)
def test_offsets_parse_like_datetime(local: datetime, offset_minutes: int) -> None:
    aware = local.replace(tzinfo=timezone(timedelta(minutes=offset_minutes)))
    assert rfc3339_to_us(aware.isoformat()) == us(aware.astimezone(UTC))


def test_minor_to_numeric() -> None:
    assert minor_to_numeric(1250) == "12.50"
    assert minor_to_numeric(1) == "0.01"
    assert minor_to_numeric(0) == "0.00"
    assert minor_to_numeric(123456789012) == "1234567890.12"
    with pytest.raises(ValueError):
        minor_to_numeric(-1)
    with pytest.raises(TypeError):
        minor_to_numeric(True)


# ---------------------------------------------------------------------------------------------
# Rows from sample records

DAY1 = datetime(2026, 11, 24, tzinfo=UTC)


def masked(
    txn_id: str, account: str, amount_minor: int, at: datetime, card_country: str | None = "FR"
) -> MaskedTransaction:
    return MaskedTransaction(
        transaction_id=txn_id,
        account_id=account,
        amount_minor=amount_minor,
        currency="EUR",
        card_masked="****-****-****-1111",
        card_token="a" * 64,
        email_masked="us****@example.com",
        email_token="b" * 64,
        phone_masked="1-555-****",
        merchant_id="m-7",
        merchant_category="5411",
        country="DE",
        card_country=card_country,
        event_time_us=us(at),
        source=SourceRef("payments", 3, 1000 + amount_minor, key=account),
    )


def first_txn(txn_id: str, account: str, amount_minor: int, at: datetime) -> EnrichedTransaction:
    return EnrichedTransaction(
        masked(txn_id, account, amount_minor, at, card_country=None), at.hour, None, 0, None, None, 0.2
    )


def later_txn(txn_id: str, account: str, amount_minor: int, at: datetime) -> EnrichedTransaction:
    return EnrichedTransaction(masked(txn_id, account, amount_minor, at), at.hour, 2.5, 3, 42.5, True, 1)


def alert(alert_id: str, account: str, window_start: datetime) -> FraudAlert:
    start = us(window_start)
    return FraudAlert(
        alert_id=alert_id,
        account_id=account,
        rule="velocity:3 in 60s/5s",
        threshold=3,
        window_start_us=start,
        window_end_us=start + 60_000_000,
        first_txn_time_us=start + 1_000_000,
        crossing_txn_time_us=start + 30_500_000,
        matched_count=4,
        transaction_ids=(f"{alert_id}-a", f"{alert_id}-b", f"{alert_id}-c"),
    )


def dead(dl_id: str, stage: str, reason: str, txn_id: str | None = None) -> DeadLetter:
    return DeadLetter(
        dl_id,
        stage,
        reason,
        f"{reason}: bad input",
        SourceRef("payments", 0, 7),
        '{"card_number": "************1111"}',
        txn_id,
    )


_ROW_TIME = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z$")
_ROW_TYPES: dict[str, Any] = {"STRING": str, "INTEGER": int, "FLOAT": float, "BOOLEAN": bool}


def assert_row_conforms(table: str, row: dict[str, Any]) -> None:
    assert list(row) == column_names(table)
    json.dumps(row, allow_nan=False)
    for f in load_json_fields(table):
        value = row[f["name"]]
        if f["mode"] == "REPEATED":
            assert isinstance(value, list) and all(isinstance(v, str) for v in value), f["name"]
        elif value is None:
            assert f["mode"] == "NULLABLE", f["name"]
        elif f["type"] == "TIMESTAMP":
            assert _ROW_TIME.match(value), (f["name"], value)
        elif f["type"] == "NUMERIC":
            assert re.fullmatch(r"[0-9]+\.[0-9]{2}", value), (f["name"], value)
        else:
            expected = _ROW_TYPES[f["type"]]
            assert type(value) is expected, (f["name"], value)  # bool is not an INTEGER here


def test_transaction_row() -> None:
    e = later_txn("t2", "acct-1", 1250, DAY1 + timedelta(hours=10, seconds=5, microseconds=250000))
    row = transaction_row(e, us(DAY1 + timedelta(hours=11)))
    assert_row_conforms("payment_transactions", row)
    assert row["amount"] == "12.50"
    assert row["event_time"] == "2026-11-24T10:00:05.250000Z"
    assert row["ingested_at"] == "2026-11-24T11:00:00.000000Z"
    assert (row["source_topic"], row["source_partition"], row["source_offset"]) == ("payments", 3, 2250)
    assert row["merchant_category_risk"] == 1.0 and isinstance(row["merchant_category_risk"], float)
    first = transaction_row(first_txn("t1", "acct-1", 5, DAY1), 0)
    assert_row_conforms("payment_transactions", first)
    assert first["amount"] == "0.05"
    assert [
        first[c] for c in ("card_country", "amount_to_recent_mean", "seconds_since_prev_txn", "cross_border")
    ] == [None] * 4
    assert first["recent_txn_count"] == 0
    with pytest.raises(ValueError):
        transaction_row(e._replace(amount_to_recent_mean=float("nan")), 0)


def test_alert_and_dead_letter_rows() -> None:
    a = alert_row(alert("al-1", "acct-1", DAY1), us(DAY1) + 90_000_000)
    assert_row_conforms("fraud_alerts", a)
    assert a["transaction_ids"] == ["al-1-a", "al-1-b", "al-1-c"]
    assert (a["window_start"], a["window_end"]) == (
        "2026-11-24T00:00:00.000000Z",
        "2026-11-24T00:01:00.000000Z",
    )
    assert a["crossing_txn_time"] == "2026-11-24T00:00:30.500000Z"
    d = dead_letter_row(dead("dl-1", "parse", "SchemaError"), us(DAY1))
    assert_row_conforms("dead_letters", d)
    assert (d["source_key"], d["transaction_id"]) == (None, None)
    d2 = dead_letter_row(
        dead("dl-2", "dedup", "ConflictingDuplicate", "t9")._replace(source=SourceRef("p", 1, 2, "k")), 0
    )
    assert (
        d2["source_topic"],
        d2["source_partition"],
        d2["source_offset"],
        d2["source_key"],
        d2["transaction_id"],
    ) == ("p", 1, 2, "k", "t9")


# ---------------------------------------------------------------------------------------------
# The local warehouse, end to end


def _connect(path: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(path))
    con.execute("SET TimeZone = 'Asia/Tokyo'")  # the bootstrap must make dates UTC regardless
    for stmt in duckdb_bootstrap_sql():
        con.execute(stmt)
    return con


def test_duckdb_warehouse_end_to_end(tmp_path: Path) -> None:
    db = tmp_path / "warehouse.duckdb"
    con = _connect(db)
    now = datetime.now(UTC)
    ingested = us(now)

    # payment_transactions via parameterised executemany; day 1 ends 30 minutes before midnight UTC
    # (already day 2 in Tokyo).
    txns = [
        first_txn("t1", "acct-1", 1250, DAY1 + timedelta(hours=10, seconds=5, microseconds=250000)),
        later_txn("t2", "acct-1", 99, DAY1 + timedelta(hours=23, minutes=30)),
        later_txn("t3", "acct-2", 100000, DAY1 + timedelta(days=1, hours=1)),
    ]
    insert = duckdb_insert_sql("payment_transactions")
    tx_rows = [transaction_row(t, ingested) for t in txns]
    con.executemany(insert, [values_in_column_order("payment_transactions", r) for r in tx_rows])
    con.executemany(insert, [values_in_column_order("payment_transactions", tx_rows[0])])  # replay: ignored
    with pytest.raises(duckdb.ConstraintException):
        con.execute(
            duckdb_insert_sql("payment_transactions", ignore_duplicates=False),
            values_in_column_order("payment_transactions", tx_rows[0]),
        )

    # fraud_alerts via read_json of newline-delimited rows (one duplicate line)
    alerts = [
        alert("al-1", "acct-1", now - timedelta(hours=1)),
        alert("al-2", "acct-1", now - timedelta(hours=3)),
        alert("al-3", "acct-2", now - timedelta(hours=2)),
        alert("al-4", "acct-3", now - timedelta(hours=48)),  # outside the 24 h view
    ]
    alerts_file = tmp_path / "alerts's.jsonl"  # a quote in the path must not break the SQL
    lines = [json.dumps(alert_row(a, ingested)) for a in alerts]
    alerts_file.write_text("\n".join([*lines, lines[0]]) + "\n", encoding="utf-8")
    con.execute(duckdb_insert_json_sql("fraud_alerts", str(alerts_file)))

    # dead_letters via executemany
    dls = [
        (dead("d1", "parse", "SchemaError"), DAY1 + timedelta(hours=1)),
        (dead("d2", "parse", "SchemaError"), DAY1 + timedelta(hours=23, minutes=59)),
        (dead("d3", "parse", "LuhnError"), DAY1 + timedelta(hours=2)),
        (dead("d4", "dedup", "ConflictingDuplicate", "t1"), DAY1 + timedelta(days=1)),
    ]
    con.executemany(
        duckdb_insert_sql("dead_letters"),
        [values_in_column_order("dead_letters", dead_letter_row(d, us(at))) for d, at in dls],
    )
    with pytest.raises(ValueError):
        values_in_column_order("dead_letters", {**dead_letter_row(dls[0][0], 0), "cvv": "123"})
    con.close()

    con = _connect(db)  # reopen the file: everything persisted, session reset
    assert con.execute("SELECT count(*) FROM payment_transactions").fetchone() == (3,)
    assert con.execute("SELECT count(*) FROM fraud_alerts").fetchone() == (4,)

    [(amount, event_time, card_country, ratio, cross_border, ingested_at, offset)] = con.execute(
        "SELECT amount, event_time, card_country, amount_to_recent_mean, cross_border, ingested_at, source_offset "
        "FROM payment_transactions WHERE transaction_id = 't1'"
    ).fetchall()
    assert amount == Decimal("12.50")
    assert event_time == datetime(2026, 11, 24, 10, 0, 5, 250000, tzinfo=UTC)
    assert (card_country, ratio, cross_border, offset) == (None, None, None, 2250)
    assert ingested_at == EPOCH + timedelta(microseconds=ingested)
    assert con.execute(
        "SELECT amount, cross_border FROM payment_transactions WHERE transaction_id = 't3'"
    ).fetchone() == (Decimal("1000.00"), True)
    [(ids, window_start)] = con.execute(
        "SELECT transaction_ids, window_start FROM fraud_alerts WHERE alert_id = 'al-1'"
    ).fetchall()
    assert ids == ["al-1-a", "al-1-b", "al-1-c"]
    assert window_start == EPOCH + timedelta(microseconds=us(now - timedelta(hours=1)))

    top = con.execute(
        "SELECT account_id, alert_count, matched_count FROM v_top_fraud_accounts_24h"
    ).fetchall()
    assert top == [("acct-1", 2, 4), ("acct-2", 1, 4)]

    dedup = con.execute("SELECT * FROM v_dedup_ratio").fetchall()
    assert dedup == [(date(2026, 11, 24), 2, 2, 0, 1.0), (date(2026, 11, 25), 1, 1, 0, 1.0)]

    by_reason = con.execute("SELECT * FROM v_dead_letters_by_reason").fetchall()
    assert by_reason == [
        (date(2026, 11, 24), "SchemaError", 2, 2),
        (date(2026, 11, 24), "LuhnError", 1, 1),
        (date(2026, 11, 25), "ConflictingDuplicate", 1, 1),
    ]
    con.close()


def test_dedup_ratio_counts_duplicates(tmp_path: Path) -> None:
    """The warehouse PK keeps DuckDB free of duplicates; BigQuery has none, so check the math there."""
    rows = [transaction_row(first_txn(f"t{i}", "a", 100, DAY1 + timedelta(hours=i)), 0) for i in range(3)]
    rows.append(rows[0])
    rows.append(rows[0])
    path = tmp_path / "dups.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    # Same columns, no primary key: what the BigQuery table (PK NOT ENFORCED) can hold.
    con.execute(duckdb_ddl("payment_transactions").replace(",\n  PRIMARY KEY (transaction_id)", ""))
    con.execute(duckdb_insert_json_sql("payment_transactions", str(path), ignore_duplicates=False))
    result = con.execute(analysis_views()["v_dedup_ratio"]).fetchall()
    assert result == [(date(2026, 11, 24), 5, 3, 2, pytest.approx(0.6))]


def test_duckdb_views_ddl_creates_the_views() -> None:
    con = duckdb.connect()
    for name in TABLE_NAMES:
        con.execute(duckdb_ddl(name))
    for stmt in duckdb_views_ddl():
        con.execute(stmt)
    names = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    assert names == VIEW_NAMES
    for name in VIEW_NAMES:
        assert con.execute(f"SELECT * FROM {name}").fetchall() == []


def test_bootstrap_is_idempotent() -> None:
    con = duckdb.connect()
    for _ in range(2):
        for stmt in duckdb_bootstrap_sql():
            con.execute(stmt)
    assert con.execute("SELECT current_setting('TimeZone')").fetchone() == ("UTC",)


def test_rows_can_be_timed() -> None:
    """Sanity: converting a row is cheap enough for a per-element DoFn (well under 1 ms)."""
    e = later_txn("t", "a", 1, DAY1)
    start = time.perf_counter()
    for _ in range(1000):
        transaction_row(e, 0)
    assert (time.perf_counter() - start) / 1000 < 1e-3


# ---------------------------------------------------------------------------------------------
# The DuckDB sink writes with this module's SQL


def test_insert_select_sql_casts_every_column_and_checks_its_arguments() -> None:
    from schemas.tables import duckdb_insert_select_sql

    sql = duckdb_insert_select_sql("dead_letters", "batch")
    assert sql.startswith("INSERT OR IGNORE INTO dead_letters BY NAME SELECT CAST(")
    assert sql.endswith(" FROM batch")
    assert sql.count("CAST(") == len(column_names("dead_letters"))
    assert duckdb_insert_select_sql("dead_letters", "batch", ignore_duplicates=False).startswith(
        "INSERT INTO dead_letters "
    )
    computed = duckdb_insert_select_sql("payment_transactions", "b", expressions={"amount": "x * 0.01"})
    assert "CAST(x * 0.01 AS DECIMAL(38,9)) AS amount" in computed
    with pytest.raises(ValueError):
        duckdb_insert_select_sql("dead_letters", "b", expressions={"cvv": "1"})
    with pytest.raises(ValueError):
        duckdb_insert_select_sql("dead_letters", "b; DROP TABLE dead_letters")


def _string_constants(tree: Any) -> list[str]:
    """Every string in the module's code (docstrings left out)."""
    import ast

    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings
    ]


def test_duckdb_sink_executes_the_insert_sql_of_schemas_tables(tmp_path: Path) -> None:
    import ast

    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline

    from schemas.tables import duckdb_insert_select_sql
    from transforms.sinks import duckdb_warehouse as sink

    tree = ast.parse(Path(sink.__file__).read_text(encoding="utf-8"))
    assert not [s for s in _string_constants(tree) if re.search(r"\bINSERT\b", s)]  # no SQL of its own

    path = str(tmp_path / "w.duckdb")
    for table in ("fraud_alerts", "dead_letters"):
        fn = sink._WriteFn(path, table)
        fn.setup()
        assert fn._sql == duckdb_insert_select_sql(table, "paystream_batch")
    txns = sink._WriteTransactionsFn(path)
    txns.setup()
    assert txns._sql == duckdb_insert_select_sql(
        "payment_transactions",
        "paystream_batch",
        expressions={"amount": "CAST(amount_minor AS DECIMAL(38,9)) * 0.01"},
        returning="transaction_id",
    )

    records = {
        "payment_transactions": [
            first_txn("t1", "acct-1", 1250, DAY1 + timedelta(hours=10)),
            later_txn("t2", "acct-1", 99, DAY1 + timedelta(hours=11)),
        ],
        "fraud_alerts": [alert("al-1", "acct-1", DAY1)],
        "dead_letters": [dead("d1", "parse", "invalid_json")],
    }
    for _ in range(2):  # the second run is a replay: the same rows
        with TestPipeline() as p:
            tables = {t: p | f"Create {t}" >> beam.Create(rs) for t, rs in records.items()}
            _ = tables | sink.DuckDBSink(path)
    conn = sink.connect(path).cursor()
    try:
        counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone() for t in records}
        assert counts == {"payment_transactions": (2,), "fraud_alerts": (1,), "dead_letters": (1,)}
        amounts = conn.execute(
            "SELECT transaction_id, amount FROM payment_transactions ORDER BY 1"
        ).fetchall()
        assert amounts == [("t1", Decimal("12.50")), ("t2", Decimal("0.99"))]
        assert conn.execute("SELECT transaction_ids FROM fraud_alerts").fetchone() == (
            ["al-1-a", "al-1-b", "al-1-c"],
        )
    finally:
        conn.close()


def test_required_fields_are_the_message_schemas() -> None:
    from schemas.payment import MAX_PAYLOAD_BYTES, REQUIRED_FIELDS

    required = payment_message_schema()["required"]
    assert sorted(REQUIRED_FIELDS) == sorted(required) and len(set(REQUIRED_FIELDS)) == len(required)
    assert set(REQUIRED_FIELDS) <= set(payment_message_schema()["properties"])
    assert MAX_PAYLOAD_BYTES == 1_048_576  # Kafka's default max.message.bytes
