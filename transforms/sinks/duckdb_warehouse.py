"""The embedded warehouse: the three tables in one DuckDB file.

Tables and views are created from ``schemas/`` (the same definitions as the
BigQuery tables). Payments go in as records, column by column
(``WriteTransactionsToDuckDB``), alerts and dead letters as rows, in one batch per
bundle.

* **Payments are settled against the table.** A payment whose id the table already
  holds is not written again: with the same content (``kernels.books.content_of``) it
  is an exact copy, counted as a duplicate; with other content it is a
  ``conflicting_duplicate`` dead letter, written to ``dead_letters`` in the same
  transaction. This is what catches a copy sent after the dedup horizon had forgotten
  its id, and a replay after a restore. Only the rows inserted count as stored
  (``sink_rows``).
* **Alerts and dead letters** go in with ``INSERT OR IGNORE`` on their primary key: their
  ids come from what they are about, so a replay leaves the same rows (the rows found
  already there are counted in ``sink_rows_present``).

DuckDB allows one writing process per file: this sink is for runners that execute in
one process (the DirectRunner); distributed runs use BigQuery.
"""

from __future__ import annotations

import contextlib
import operator
import os
import threading
import time
from typing import Any, Dict, List, Mapping, Optional, Set, Tuple

import apache_beam as beam
import duckdb
import pyarrow as pa

from kernels.books import settle_against_stored, stored_conflict_letter
from schemas.records import EnrichedTransaction
from schemas.rows import (
    ALERTS,
    DEAD_LETTERS,
    ROW_OF,
    TRANSACTIONS,
    event_time_of,
    rfc3339_to_us,
    transaction_columns,
)
from schemas.tables import TABLES, column_names, duckdb_bootstrap_sql, duckdb_insert_select_sql, duckdb_type
from transforms import telemetry
from transforms.progress import bump
from transforms.sinks import Sink, Warehouse, record_settled, record_write

__all__ = [
    "DuckDBSink",
    "DuckDBWarehouse",
    "WriteToDuckDB",
    "WriteTransactionsToDuckDB",
    "connect",
    "parse_duckdb_target",
]

_LOCK = threading.Lock()
_CONNECTIONS: Dict[str, duckdb.DuckDBPyConnection] = {}


def parse_duckdb_target(target: str) -> str:
    """``duckdb:PATH`` -> PATH."""
    if not target.startswith("duckdb:") or len(target) <= len("duckdb:"):
        raise ValueError(f"not a DuckDB warehouse target: {target!r} (expected duckdb:PATH)")
    return target[len("duckdb:") :]


def connect(path: str) -> duckdb.DuckDBPyConnection:
    """One shared connection per file and process, with the tables and views created."""
    path = os.path.abspath(path)
    with _LOCK:
        conn = _CONNECTIONS.get(path)
        if conn is None:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            conn = duckdb.connect(path)
            for statement in duckdb_bootstrap_sql():
                conn.execute(statement)
            _CONNECTIONS[path] = conn
        return conn


def _insert_sql(table: str, relation: str) -> str:
    """The rows of ``relation`` into ``table``, replays ignored (``schemas.tables``)."""
    return duckdb_insert_select_sql(table, relation)


class _WriteFn(beam.DoFn):
    """Records of one table -> its rows (``schemas.rows.ROW_OF``), one batch per bundle."""

    def __init__(self, path: str, table: str) -> None:
        self._path = path
        self._table = table
        self._records: List[Any] = []

    def setup(self) -> None:
        self._conn = connect(self._path)  # fails fast on a bad path or a locked file
        self._columns = column_names(self._table)
        self._values_of = operator.itemgetter(*self._columns)
        self._row_of = ROW_OF[self._table]
        self._sql = _insert_sql(self._table, "paystream_batch")

    def start_bundle(self) -> None:
        self._records = []

    def _column_values(self, rows: List[Dict[str, Any]]) -> List[Any]:
        """The rows column by column (a row lacking a column gives None there)."""
        try:  # every row has every column: one C call per row, one transposition
            return list(zip(*map(self._values_of, rows)))
        except KeyError:
            return [[row.get(c) for row in rows] for c in self._columns]

    def process(self, record: Any) -> None:
        self._records.append(record)

    def finish_bundle(self) -> None:
        records, self._records = self._records, []
        if not records:
            return
        started = time.monotonic()
        now_us = int(time.time() * 1_000_000)
        rows = [self._row_of(record, now_us) for record in records]
        batch = pa.table(dict(zip(self._columns, self._column_values(rows))))
        inserted = _insert(self._conn, self._sql, batch, self._table)
        bump(self._table, len(rows))
        times = (event_time_of(self._table, record) for record in records)
        record_write(self._table, inserted, started, [t for t in times if t is not None])


# Arrow types of the columns of ``transaction_columns`` (times in microseconds since the
# epoch, the amount in hundredths), so DuckDB parses no text on the way in.
_ARROW_TYPES = {
    "STRING": pa.string(),
    "INTEGER": pa.int64(),
    "FLOAT": pa.float64(),
    "BOOLEAN": pa.bool_(),
    "TIMESTAMP": pa.timestamp("us", tz="UTC"),
}
_AMOUNT_MINOR = "amount_minor"
# A batch run's bundle can hold every payment: written this many at a time, the records
# and their Arrow batch need a bounded amount of memory.
_RECORDS_PER_WRITE = 20_000


def _records_insert_sql(table: str, relation: str) -> str:
    """``_insert_sql`` for a batch of ``transaction_columns``: the amount from its hundredths;
    the ids of the rows inserted are returned."""
    amounts = {  # exact: DECIMAL * DECIMAL is a DECIMAL
        f.name: f"CAST({_AMOUNT_MINOR} AS {duckdb_type(f)}) * 0.01"
        for f in TABLES[table].fields
        if f.type == "NUMERIC"
    }
    return duckdb_insert_select_sql(table, relation, expressions=amounts, returning=TABLES[table].primary_key)


class _WriteTransactionsFn(beam.DoFn):
    """``EnrichedTransaction`` records -> ``payment_transactions``, a typed Arrow batch per
    bundle (``transaction_columns``): no row dict, no timestamp or decimal text. Each batch
    is settled against the table (the module's docstring) in one transaction. Measures
    the latency from each payment's event time to its row being written."""

    TABLE = "payment_transactions"

    def __init__(self, path: str) -> None:
        self._path = path
        self._records: List[EnrichedTransaction] = []

    def setup(self) -> None:
        self._conn = connect(self._path)
        self._sql = _records_insert_sql(self.TABLE, "paystream_batch")
        types = {f.name: _ARROW_TYPES.get(f.type) for f in TABLES[self.TABLE].fields}
        types[_AMOUNT_MINOR] = pa.int64()
        self._types = types

    def start_bundle(self) -> None:
        self._records = []

    def process(self, record: EnrichedTransaction) -> None:
        self._records.append(record)
        if len(self._records) >= _RECORDS_PER_WRITE:
            self._write()

    def finish_bundle(self) -> None:
        self._write()

    def _write(self) -> None:
        records, self._records = self._records, []
        if not records:
            return
        started = time.monotonic()
        now_us = int(time.time() * 1_000_000)
        # copies within the batch settled against their first; the rest against the table
        ids = [r.txn.transaction_id for r in records]
        conflicts: List[EnrichedTransaction] = []
        if len(set(ids)) == len(ids):
            first, copies = records, 0
        else:
            first, copies, conflicts = settle_against_stored(records, {})
        columns = transaction_columns(first, now_us)
        batch = pa.table({name: pa.array(values, self._types[name]) for name, values in columns.items()})
        inserted, copies_found, conflicts, letters_new = _write_payments(
            self._conn, self._sql, batch, first, conflicts, now_us
        )
        copies += copies_found
        record_settled(self.TABLE, copies, len(conflicts))
        stored_now = first if inserted is None else [r for r in first if r.txn.transaction_id in inserted]
        bump(self.TABLE, len(stored_now))
        record_write(self.TABLE, len(stored_now), started, [r.txn.event_time_us for r in stored_now])
        if conflicts:
            bump(DEAD_LETTERS, len(conflicts))
            if len(conflicts) > letters_new:  # a replay's letters, written before
                telemetry.count("sink_rows_present", len(conflicts) - letters_new, table=DEAD_LETTERS)
            record_write(DEAD_LETTERS, letters_new, started)


def _write_payments(
    conn: duckdb.DuckDBPyConnection,
    sql: str,
    batch: pa.Table,
    rows: List[EnrichedTransaction],
    conflicts: List[EnrichedTransaction],
    now_us: int,
) -> Tuple[Optional[Set[str]], int, List[EnrichedTransaction], int]:
    """``rows`` (one per id, as ``batch``) settled against the table and written, in one
    transaction under the process's DuckDB lock, with the dead letters of ``conflicts``
    and of those found: (the ids inserted, None when all were; exact copies found, every
    conflict, the dead letters new to their table). A failure is counted and raised (the
    runner retries the bundle)."""
    copies, conflicts = 0, list(conflicts)
    with _LOCK:
        cursor = conn.cursor()
        try:
            cursor.begin()
            cursor.register("paystream_batch", batch)
            returned = cursor.execute(sql).fetchnumpy()[TABLES[TRANSACTIONS].primary_key]
            cursor.unregister("paystream_batch")
            inserted: Optional[Set[str]] = None  # None: every row
            if len(returned) < len(rows):
                inserted = set(returned.tolist())
            present = [r for r in rows if inserted is not None and r.txn.transaction_id not in inserted]
            if present:
                stored = _stored_content(cursor, [r.txn.transaction_id for r in present])
                _, copies, found = settle_against_stored(present, stored)
                conflicts += found
            letters = [stored_conflict_letter(r.txn) for r in conflicts]
            letters_new = 0
            if letters:
                rows_of = [ROW_OF[DEAD_LETTERS](x, now_us) for x in letters]
                letters_new = _insert_rows(cursor, DEAD_LETTERS, rows_of)
            cursor.commit()
        except Exception:
            telemetry.count("sink_errors", table=TRANSACTIONS)
            with contextlib.suppress(Exception):
                cursor.rollback()
            raise
        finally:
            cursor.close()
    return inserted, copies, conflicts, letters_new


def _stored_content(cursor: duckdb.DuckDBPyConnection, ids: List[str]) -> Dict[str, Any]:
    """transaction id -> ``content_of`` its stored row, for ``ids`` the table holds (a
    list of constants: DuckDB looks each up in the primary key's index)."""
    marks = ", ".join("?" * len(ids))
    found = cursor.execute(
        "SELECT transaction_id, account_id, CAST(amount * 100 AS BIGINT), currency, merchant_id, "
        f"merchant_category, country, epoch_us(event_time) FROM payment_transactions "
        f"WHERE transaction_id IN ({marks})",
        ids,
    ).fetchall()
    return {row[0]: tuple(row[1:]) for row in found}


def _insert(conn: duckdb.DuckDBPyConnection, sql: str, batch: pa.Table, table: str) -> int:
    """One batch into its table, under the process's DuckDB lock: how many rows were new. A
    failure is counted and raised (the runner retries the bundle). Rows whose key the
    table already holds are left as they are, and counted in ``sink_rows_present``: a
    replay."""
    with _LOCK:
        cursor = conn.cursor()
        try:
            cursor.register("paystream_batch", batch)
            inserted = cursor.execute(sql).fetchone()
            cursor.unregister("paystream_batch")
            new = int(inserted[0]) if inserted else batch.num_rows
            if batch.num_rows > new:
                telemetry.count("sink_rows_present", batch.num_rows - new, table=table)
            return new
        except Exception:
            telemetry.count("sink_errors", table=table)
            raise
        finally:
            cursor.close()


def _insert_rows(cursor: duckdb.DuckDBPyConnection, table: str, rows: List[Dict[str, Any]]) -> int:
    """Rows of ``table`` (``schemas.rows.ROW_OF``) in, replays ignored: how many were new."""
    names = column_names(table)
    batch = pa.table({c: [row.get(c) for row in rows] for c in names})
    cursor.register("paystream_rows", batch)
    try:
        inserted = cursor.execute(_insert_sql(table, "paystream_rows")).fetchone()
    finally:
        cursor.unregister("paystream_rows")
    return int(inserted[0]) if inserted else len(rows)


class WriteTransactionsToDuckDB(beam.PTransform):
    """``EnrichedTransaction`` records -> ``payment_transactions`` in a DuckDB file."""

    def __init__(self, path: str, label: Optional[str] = None) -> None:
        super().__init__(label)
        self._path = os.path.abspath(path)

    def expand(self, records: beam.PCollection[EnrichedTransaction]) -> beam.pvalue.PDone:
        records | "Insert" >> beam.ParDo(_WriteTransactionsFn(self._path))
        return beam.pvalue.PDone(records.pipeline)


class WriteToDuckDB(beam.PTransform):
    """Records of one table (``schemas.rows.ROW_OF``) -> the table in a DuckDB file."""

    def __init__(self, path: str, table: str, label: Optional[str] = None) -> None:
        super().__init__(label)
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}; known: {sorted(TABLES)}")
        self._path = os.path.abspath(path)
        self._table = table

    def expand(self, records: beam.PCollection[Any]) -> beam.pvalue.PDone:
        records | "Insert" >> beam.ParDo(_WriteFn(self._path, self._table))
        return beam.pvalue.PDone(records.pipeline)


class DuckDBSink(Sink):
    """The graph's tables -> one DuckDB file; DuckDB refuses no row: no dead letters (``PDone``)."""

    tables = (TRANSACTIONS, ALERTS, DEAD_LETTERS)

    def __init__(self, path: str, label: Optional[str] = None) -> None:
        super().__init__(label)
        self._path = os.path.abspath(path)

    def expand(self, tables: Mapping[str, beam.PCollection[Any]]) -> Any:
        for table, records in tables.items():
            if table == TRANSACTIONS:  # column by column from the records: no row dict
                records | f"Write {table}" >> WriteTransactionsToDuckDB(self._path)
            else:
                records | f"Write {table}" >> WriteToDuckDB(self._path, table)
        return beam.pvalue.PDone(next(iter(tables.values())).pipeline)


class DuckDBWarehouse(Warehouse):
    """``duckdb:PATH``: the tables in one local file (the DirectRunner's warehouse)."""

    kind = "duckdb"

    @property
    def local_path(self) -> str:
        return parse_duckdb_target(self.url)

    def sink(self, opts: Any = None) -> Sink:
        return DuckDBSink(self.local_path)

    def facts(self, valid_ids: Optional[set]) -> Optional[Dict[str, Any]]:
        return warehouse_facts(self.local_path, valid_ids)

    def row_counts(self) -> Optional[Dict[str, int]]:
        return row_counts(self.local_path)

    def describe(self) -> str:
        return self.local_path


def row_counts(path: str) -> Dict[str, int]:
    """Rows per table now (none for a file not yet made), without keeping the file open:
    a run's workers may need to open it next."""
    path = os.path.abspath(path)
    tables = (TRANSACTIONS, ALERTS, DEAD_LETTERS)
    with _LOCK:
        conn = _CONNECTIONS.get(path)
    if conn is None and not os.path.exists(path):
        return dict.fromkeys(tables, 0)
    own = conn is None
    cursor = duckdb.connect(path, read_only=True) if own else conn.cursor()  # type: ignore[union-attr]
    try:
        known = {r[0] for r in cursor.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        return {
            t: (cursor.execute(f"SELECT count(*) FROM {t}").fetchone() or (0,))[0] if t in known else 0
            for t in tables
        }
    finally:
        cursor.close()


def warehouse_facts(path: str, valid_ids: Optional[set]) -> Dict[str, Any]:
    """Row counts, alerts by rule kind, the accounts with the most velocity alerts, and the
    velocity alerts (what the simulator's bursts are scored against), read back after a run."""
    conn = connect(path).cursor()
    try:
        facts: Dict[str, Any] = {"path": path}
        facts["rows"] = {
            table: (conn.execute(f"SELECT count(*) FROM {table}").fetchone() or (0,))[0]
            for table in (TRANSACTIONS, ALERTS, DEAD_LETTERS)
        }
        facts["alerts_by_rule"] = dict(
            conn.execute(
                "SELECT split_part(rule, ':', 1) AS kind, count(*) FROM fraud_alerts GROUP BY kind ORDER BY kind"
            ).fetchall()
        )
        facts["top_accounts"] = conn.execute(
            "SELECT account_id, count(*) AS alerts, max(matched_count) AS max_in_window "
            "FROM fraud_alerts WHERE split_part(rule, ':', 1) = 'velocity' GROUP BY account_id "
            "ORDER BY alerts DESC, max_in_window DESC, account_id LIMIT 5"
        ).fetchall()
        alerts = conn.execute(
            "SELECT account_id, strftime(first_txn_time, '%Y-%m-%dT%H:%M:%S.%fZ'), "
            "strftime(crossing_txn_time, '%Y-%m-%dT%H:%M:%S.%fZ'), transaction_ids "
            "FROM fraud_alerts WHERE split_part(rule, ':', 1) = 'velocity'"
        ).fetchall()
        facts["alerts"] = [
            (a, rfc3339_to_us(f), rfc3339_to_us(c))
            for a, f, c, ids in alerts
            if valid_ids is None or any(i in valid_ids for i in ids)
        ]
        return facts
    finally:
        conn.close()
