"""Warehouse table specs, loaded from the BigQuery JSON schemas shipped in this package.

The files in ``schemas/`` are the one source of truth:

* ``bigquery/<table>.json`` holds each table's columns (BigQuery's own JSON schema format, which
  ``bq mk --schema``, Terraform's ``schema = file(...)`` and Beam's ``WriteToBigQuery`` read).
  Everything else about columns here is derived from them: the ``{"fields": [...]}`` schema for
  Beam, the DuckDB DDL of the local warehouse, and the BigQuery DDL in ``schema.sql`` (checked by
  ``tests/test_schemas.py``; print it with ``python -m schemas.tables``).
* ``schema.sql`` holds the analysis views. Each view's SELECT sits between ``-- view: <name>`` and
  ``-- end view`` and is written in SQL that both BigQuery and DuckDB accept; tables are referred
  to as ``${project}.${dataset}.<table>`` in backticks, which :func:`analysis_views` rewrites to the
  bare local name for DuckDB.
* ``payment.schema.json`` is the JSON Schema of the Kafka message (see :func:`payment_message_schema`).

Time zone: the views cast TIMESTAMP columns to DATE. BigQuery does that in UTC; DuckDB in the
session's ``TimeZone``, so a DuckDB connection must run ``SET TimeZone = 'UTC'`` first
(:func:`duckdb_bootstrap_sql` starts with it).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from string import Template
from typing import Any

__all__ = [
    "Field",
    "TableSpec",
    "TABLES",
    "bq_schema",
    "column_names",
    "duckdb_type",
    "duckdb_ddl",
    "duckdb_comments_sql",
    "duckdb_insert_sql",
    "duckdb_insert_json_sql",
    "duckdb_insert_select_sql",
    "duckdb_views_ddl",
    "duckdb_bootstrap_sql",
    "values_in_column_order",
    "bigquery_sql_type",
    "bigquery_table_ddl",
    "schema_sql",
    "render_schema_sql",
    "analysis_views",
    "payment_message_schema",
]

_PACKAGE = __package__ or "schemas"

BQ_TYPES = frozenset({"STRING", "NUMERIC", "INTEGER", "FLOAT", "BOOLEAN", "TIMESTAMP"})
BQ_MODES = frozenset({"REQUIRED", "NULLABLE", "REPEATED"})

_DUCKDB_TYPES: Mapping[str, str] = {
    "STRING": "VARCHAR",
    "NUMERIC": "DECIMAL(38,9)",  # BigQuery NUMERIC is exactly DECIMAL(38, 9)
    "INTEGER": "BIGINT",
    "FLOAT": "DOUBLE",
    "BOOLEAN": "BOOLEAN",
    "TIMESTAMP": "TIMESTAMPTZ",
}

# Canonical GoogleSQL spellings of the legacy type names used in the JSON schema files.
_BIGQUERY_SQL_TYPES: Mapping[str, str] = {
    "STRING": "STRING",
    "NUMERIC": "NUMERIC",
    "INTEGER": "INT64",
    "FLOAT": "FLOAT64",
    "BOOLEAN": "BOOL",
    "TIMESTAMP": "TIMESTAMP",
}

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$", re.ASCII)
_PROJECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:._-]*$", re.ASCII)
_DATASET = re.compile(r"^[A-Za-z0-9_]+$", re.ASCII)
_VIEW_BLOCK = re.compile(
    r"^-- view: (?P<name>\w+)[ \t]*\n(?P<body>.*?)^-- end view[ \t]*$", re.MULTILINE | re.DOTALL
)
_QUALIFIED_TABLE = re.compile(r"`\$\{project\}\.\$\{dataset\}\.(?P<table>\w+)`")


@dataclass(frozen=True)
class Field:
    """One column, as in a BigQuery JSON schema file."""

    name: str
    type: str
    mode: str
    description: str

    def __post_init__(self) -> None:
        if not _IDENTIFIER.match(self.name):
            raise ValueError(f"invalid column name {self.name!r}")
        if self.type not in BQ_TYPES:
            raise ValueError(f"column {self.name}: unsupported type {self.type!r}")
        if self.mode not in BQ_MODES:
            raise ValueError(f"column {self.name}: unsupported mode {self.mode!r}")
        if not self.description.strip():
            raise ValueError(f"column {self.name}: description is empty")

    @property
    def required(self) -> bool:
        return self.mode == "REQUIRED"

    @property
    def repeated(self) -> bool:
        return self.mode == "REPEATED"

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Field:
        keys = set(obj)
        if keys != {"name", "type", "mode", "description"}:
            raise ValueError(
                f"field {obj.get('name')!r}: expected name/type/mode/description, got {sorted(keys)}"
            )
        return cls(
            name=str(obj["name"]),
            type=str(obj["type"]),
            mode=str(obj["mode"]),
            description=str(obj["description"]),
        )

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "type": self.type, "mode": self.mode, "description": self.description}


@dataclass(frozen=True)
class TableSpec:
    """A warehouse table: its columns (from ``bigquery/<name>.json``) and physical layout."""

    name: str
    fields: tuple[Field, ...]
    primary_key: str
    partition_field: str
    cluster_fields: tuple[str, ...]
    description: str
    partition_type: str = "DAY"

    def __post_init__(self) -> None:
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"table {self.name}: duplicate column names")
        by_name = {f.name: f for f in self.fields}
        pk = by_name.get(self.primary_key)
        if pk is None or not pk.required:
            raise ValueError(f"table {self.name}: primary key {self.primary_key!r} must be a REQUIRED column")
        part = by_name.get(self.partition_field)
        if part is None or part.type != "TIMESTAMP" or part.repeated:
            raise ValueError(
                f"table {self.name}: partition field {self.partition_field!r} must be a TIMESTAMP column"
            )
        if self.partition_type != "DAY":
            raise ValueError(f"table {self.name}: only DAY partitioning is supported")
        if not 1 <= len(self.cluster_fields) <= 4 or any(c not in by_name for c in self.cluster_fields):
            raise ValueError(
                f"table {self.name}: 1 to 4 existing cluster fields needed, got {self.cluster_fields}"
            )

    @property
    def column_names(self) -> list[str]:
        return [f.name for f in self.fields]

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.name} has no column {name!r}")


def _read_text(*parts: str) -> str:
    resource = resources.files(_PACKAGE)
    for part in parts:  # one part per joinpath: Python 3.11 takes no more
        resource = resource.joinpath(part)
    return resource.read_text(encoding="utf-8")


def _load_fields(table: str) -> tuple[Field, ...]:
    raw = json.loads(_read_text("bigquery", f"{table}.json"))
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"bigquery/{table}.json must be a non-empty JSON list of fields")
    return tuple(Field.from_json(obj) for obj in raw)


def _spec(
    name: str, *, primary_key: str, partition_field: str, cluster_fields: Sequence[str], description: str
) -> TableSpec:
    return TableSpec(
        name=name,
        fields=_load_fields(name),
        primary_key=primary_key,
        partition_field=partition_field,
        cluster_fields=tuple(cluster_fields),
        description=description,
    )


TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        _spec(
            "payment_transactions",
            primary_key="transaction_id",
            partition_field="event_time",
            cluster_fields=["account_id"],
            description=(
                "Deduplicated card payments with PII masked or tokenised and per-account features; "
                "one row per transaction_id."
            ),
        ),
        _spec(
            "fraud_alerts",
            primary_key="alert_id",
            partition_field="window_start",
            cluster_fields=["account_id"],
            description=(
                "One row per burst a fraud rule found on an account (rule: which rule, with its parameters), "
                "e.g. velocity: too many payments within one sliding event-time window."
            ),
        ),
        _spec(
            "dead_letters",
            primary_key="dead_letter_id",
            partition_field="received_at",
            cluster_fields=["reason", "stage"],
            description=(
                "Records the pipeline could not process (parse, dedup or sink errors), "
                "with a PII-masked copy of the payload."
            ),
        ),
    )
}


def _table(name: str) -> TableSpec:
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"unknown table {name!r}; known: {sorted(TABLES)}") from None


def column_names(name: str) -> list[str]:
    """The table's column names, in schema order."""
    return _table(name).column_names


def bq_schema(name: str) -> dict[str, Any]:
    """The table schema in the ``{"fields": [...]}`` form Beam's ``WriteToBigQuery`` accepts."""
    return {"fields": [f.to_json() for f in _table(name).fields]}


# ---------------------------------------------------------------------------------------------
# DuckDB (local warehouse)


def duckdb_type(field: Field) -> str:
    base = _DUCKDB_TYPES[field.type]
    return f"{base}[]" if field.repeated else base


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def duckdb_ddl(name: str) -> str:
    """``CREATE TABLE IF NOT EXISTS`` for the table in DuckDB (REQUIRED → NOT NULL, PRIMARY KEY)."""
    spec = _table(name)
    lines = [f"  {f.name} {duckdb_type(f)}{' NOT NULL' if f.required else ''}," for f in spec.fields]
    lines.append(f"  PRIMARY KEY ({spec.primary_key})")
    return f"CREATE TABLE IF NOT EXISTS {spec.name} (\n" + "\n".join(lines) + "\n)"


def duckdb_comments_sql(name: str) -> list[str]:
    """``COMMENT ON`` statements carrying the table and column descriptions into DuckDB."""
    spec = _table(name)
    out = [f"COMMENT ON TABLE {spec.name} IS {_sql_string(spec.description)}"]
    out += [f"COMMENT ON COLUMN {spec.name}.{f.name} IS {_sql_string(f.description)}" for f in spec.fields]
    return out


def duckdb_insert_sql(name: str, *, ignore_duplicates: bool = True) -> str:
    """Parameterised INSERT (``?`` per column, in :func:`column_names` order) for ``executemany``.

    Use with :func:`values_in_column_order` on rows from :mod:`schemas.rows`; DuckDB casts the
    RFC 3339 strings to TIMESTAMPTZ and the decimal strings to DECIMAL. With
    ``ignore_duplicates`` a row whose primary key exists already is skipped (replays).
    """
    cols = column_names(name)
    return f"{_insert_verb(ignore_duplicates)} {name} ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})"


def duckdb_insert_json_sql(name: str, path: str, *, ignore_duplicates: bool = True) -> str:
    """INSERT of a newline-delimited JSON file of rows from :mod:`schemas.rows`, typed by the schema."""
    spec = _table(name)
    columns = ", ".join(f"{_sql_string(f.name)}: {_sql_string(duckdb_type(f))}" for f in spec.fields)
    return (
        f"{_insert_verb(ignore_duplicates)} {spec.name} BY NAME SELECT * FROM read_json({_sql_string(path)}, "
        f"format = 'newline_delimited', columns = {{{columns}}})"
    )


def duckdb_insert_select_sql(
    name: str,
    relation: str,
    *,
    ignore_duplicates: bool = True,
    expressions: Mapping[str, str] | None = None,
    returning: str | None = None,
) -> str:
    """INSERT of every row of ``relation`` (a table, view or registered Arrow batch), each
    column cast to the table's DuckDB type: what the DuckDB sink executes
    (``transforms/sinks/duckdb_warehouse.py``).

    ``relation`` holds the columns by name; ``expressions`` gives the SQL that computes a
    column from the relation's columns instead (e.g. ``amount`` from ``amount_minor``);
    ``returning`` names a column whose value the statement returns for each row inserted.
    """
    spec = _table(name)
    if not _IDENTIFIER.match(relation):
        raise ValueError(f"invalid relation name {relation!r}")
    given = dict(expressions or {})
    unknown = sorted(set(given) - set(spec.column_names))
    if unknown:
        raise ValueError(f"table {name}: no columns {unknown}")
    casts = ", ".join(
        f"CAST({given.get(f.name, f.name)} AS {duckdb_type(f)}) AS {f.name}" for f in spec.fields
    )
    if returning is not None and returning not in spec.column_names:
        raise ValueError(f"table {name}: no column {returning!r}")
    tail = f" RETURNING {returning}" if returning else ""
    return f"{_insert_verb(ignore_duplicates)} {spec.name} BY NAME SELECT {casts} FROM {relation}{tail}"


def _insert_verb(ignore_duplicates: bool) -> str:
    """With ``ignore_duplicates`` a row whose primary key exists already is skipped (replays)."""
    return "INSERT OR IGNORE INTO" if ignore_duplicates else "INSERT INTO"


def values_in_column_order(name: str, row: Mapping[str, Any]) -> list[Any]:
    """The row's values in column order; raises ``ValueError`` unless it has exactly the columns."""
    cols = column_names(name)
    if set(row) != set(cols):
        missing = sorted(set(cols) - set(row))
        extra = sorted(set(row) - set(cols))
        raise ValueError(f"row for {name}: missing columns {missing}, unknown columns {extra}")
    return [row[c] for c in cols]


def duckdb_views_ddl() -> list[str]:
    """``CREATE OR REPLACE VIEW`` statements for the analysis views of ``schema.sql``."""
    return [f"CREATE OR REPLACE VIEW {name} AS\n{body}" for name, body in analysis_views().items()]


def duckdb_bootstrap_sql() -> list[str]:
    """Everything a fresh local warehouse needs: UTC session, tables, comments, views."""
    out = ["SET TimeZone = 'UTC'"]
    out += [duckdb_ddl(name) for name in TABLES]
    for name in TABLES:
        out += duckdb_comments_sql(name)
    out += duckdb_views_ddl()
    return out


# ---------------------------------------------------------------------------------------------
# BigQuery DDL and analysis views (schema.sql)


def bigquery_sql_type(field: Field) -> str:
    base = _BIGQUERY_SQL_TYPES[field.type]
    return f"ARRAY<{base}>" if field.repeated else base


def _bq_string(text: str) -> str:
    # Double-quoted GoogleSQL literal; ``$`` doubled so that schema.sql stays a string.Template.
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "$$")
    return f'"{escaped}"'


def bigquery_table_ddl(name: str) -> str:
    """The table's ``CREATE TABLE IF NOT EXISTS`` statement as it appears in ``schema.sql``.

    The table is named ``${project}.${dataset}.<name>``; fill those in with :func:`render_schema_sql`.
    """
    spec = _table(name)
    lines = [
        f"  {f.name} {bigquery_sql_type(f)}{' NOT NULL' if f.required else ''}"
        f" OPTIONS(description={_bq_string(f.description)}),"
        for f in spec.fields
    ]
    lines.append(f"  PRIMARY KEY ({spec.primary_key}) NOT ENFORCED")
    return (
        f"CREATE TABLE IF NOT EXISTS `${{project}}.${{dataset}}.{spec.name}`\n(\n"
        + "\n".join(lines)
        + f"\n)\nPARTITION BY DATE({spec.partition_field})\n"
        + f"CLUSTER BY {', '.join(spec.cluster_fields)}\n"
        + f"OPTIONS(description={_bq_string(spec.description)});"
    )


def schema_sql() -> str:
    """The raw text of ``schema.sql`` (with ``${project}`` / ``${dataset}`` placeholders)."""
    return _read_text("schema.sql")


def render_schema_sql(project: str, dataset: str) -> str:
    """``schema.sql`` for one BigQuery dataset, ready for ``bq query --use_legacy_sql=false``."""
    _check_target(project, dataset)
    return Template(schema_sql()).substitute(project=project, dataset=dataset)


def _check_target(project: str, dataset: str) -> None:
    if not _PROJECT.match(project):
        raise ValueError(f"invalid BigQuery project id {project!r}")
    if not _DATASET.match(dataset):
        raise ValueError(f"invalid BigQuery dataset id {dataset!r}")


def analysis_views(project: str | None = None, dataset: str | None = None) -> dict[str, str]:
    """View name → SELECT body, from the ``-- view:`` / ``-- end view`` blocks of ``schema.sql``.

    Without arguments the tables are the bare local names (for DuckDB); with ``project`` and
    ``dataset`` they are fully qualified BigQuery names.
    """
    if (project is None) != (dataset is None):
        raise ValueError("give both project and dataset, or neither")
    if project is not None and dataset is not None:
        _check_target(project, dataset)
    views: dict[str, str] = {}
    for match in _VIEW_BLOCK.finditer(schema_sql()):
        name, body = match["name"], match["body"].strip()
        if name in views:
            raise ValueError(f"schema.sql: view {name} defined twice")
        for table in _QUALIFIED_TABLE.findall(body):
            if table not in TABLES:
                raise ValueError(f"schema.sql: view {name} reads unknown table {table}")
        if project is None:
            body = _QUALIFIED_TABLE.sub(lambda m: m["table"], body)
            if "`" in body:
                raise ValueError(f"schema.sql: view {name} has a backtick DuckDB cannot read")
        else:
            body = _QUALIFIED_TABLE.sub(lambda m: f"`{project}.{dataset}.{m['table']}`", body)
        if "${" in body or ";" in body:
            raise ValueError(f"schema.sql: view {name} has a stray placeholder or ';'")
        views[name] = body
    if not views:
        raise ValueError("schema.sql defines no views")
    return views


# ---------------------------------------------------------------------------------------------
# Message schema


def payment_message_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the Kafka message value, as a fresh dict."""
    schema: dict[str, Any] = json.loads(_read_text("payment.schema.json"))
    return schema


def main(argv: Sequence[str] | None = None) -> int:
    """Print the CREATE TABLE part of ``schema.sql`` (regenerate it after editing a JSON schema)."""
    del argv
    sys.stdout.write("\n\n".join(bigquery_table_ddl(name) for name in TABLES) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
