"""The sink seam: every sink takes the graph's records by table and returns its dead letters.

    tables = {"payment_transactions": ..., "fraud_alerts": ..., "dead_letters": ...}
    letters = tables | "Write warehouse" >> open_warehouse(url).sink(opts)

* ``Sink`` is the contract: a ``PTransform`` from ``{table: PCollection of records}`` (the
  records of ``schemas.records``: ``EnrichedTransaction``, ``FraudAlert``, ``DeadLetter``)
  to a ``PCollection`` of the sink's own dead letters (rows the store refused, already
  written where the sink can write them), or ``PDone`` for a sink that refuses nothing (no
  empty source is added to a streaming job). Each sink turns records into its rows itself
  (``schemas.rows``), so a columnar store can skip the row dicts.
* ``record_write`` is how every sink records a write: ``sink_rows`` and
  ``sink_write_seconds`` by table, and ``end_to_end_latency_seconds`` from each record's
  event time to the end of the write.
* ``open_warehouse(url)`` is the one place a warehouse URL is read: ``duckdb:PATH`` or
  ``bigquery:PROJECT:DATASET``. A new kind registers in ``WAREHOUSES``.

Adding a sink: a module here with a ``Sink`` subclass that calls ``record_write`` after
each write (``docs/architecture.md``, "Adding a sink").
"""

from __future__ import annotations

import importlib
import time
from typing import Any, Dict, Iterable, Mapping, Optional

import apache_beam as beam

from transforms import telemetry

__all__ = ["WAREHOUSES", "Sink", "Warehouse", "open_warehouse", "record_settled", "record_write"]


def record_write(table: str, rows: int, started: float, event_times_us: Iterable[int] = ()) -> None:
    """A finished write of ``rows`` rows to ``table`` that began at ``started``
    (``time.monotonic()``); ``event_times_us``: the event times of the records written."""
    if rows <= 0:
        return
    telemetry.count("sink_rows", rows, table=table)
    telemetry.declare("sink_errors", table=table)
    telemetry.observe("sink_write_seconds", time.monotonic() - started, table=table)
    now_us = time.time() * 1_000_000
    latencies = [(now_us - at) / 1e6 for at in event_times_us]
    if latencies:
        telemetry.observe_many("end_to_end_latency_seconds", latencies, table=table)


def record_settled(table: str, copies: int, conflicts: int) -> None:
    """Rows a warehouse found its table already held (``kernels.books.settle_against_stored``):
    ``copies`` exact copies, counted as duplicates; ``conflicts`` with other content, counted
    as the dead letters they become. Both are ``sink_rows_present``."""
    if copies:
        telemetry.count("duplicates_dropped", copies)
    if conflicts:
        telemetry.count("dead_letters", conflicts, stage="dedup", reason="conflicting_duplicate")
    if copies + conflicts:
        telemetry.count("sink_rows_present", copies + conflicts, table=table)


class Sink(beam.PTransform):
    """``{table: records}`` -> the sink's dead letters, or ``PDone``. ``tables``: those it writes."""

    tables: tuple = ()

    def expand(self, tables: Mapping[str, beam.PCollection[Any]]) -> Any:
        raise NotImplementedError


class Warehouse:
    """Where the tables go: a URL of one kind (``duckdb:``, ``bigquery:``)."""

    kind = ""

    def __init__(self, url: str) -> None:
        self.url = url

    @property
    def local_path(self) -> Optional[str]:
        """A file on this machine that holds the tables, if the warehouse is one."""
        return None

    def sink(self, opts: Any = None) -> Sink:
        raise NotImplementedError

    def facts(self, valid_ids: Optional[set]) -> Optional[Dict[str, Any]]:
        """Row counts and checks read back after a run, when the warehouse is readable here."""
        return None

    def row_counts(self) -> Optional[Dict[str, int]]:
        """Rows per table, when the warehouse is readable here: taken before a run, so the
        summary can compare what the run counted with what its tables gained."""
        return None

    def describe(self) -> str:
        return self.url


# kind -> "module:class" of its ``Warehouse``, imported when a URL of that kind is opened
WAREHOUSES: Dict[str, str] = {
    "duckdb": "transforms.sinks.duckdb_warehouse:DuckDBWarehouse",
    "bigquery": "transforms.sinks.bigquery:BigQueryWarehouse",
}


def open_warehouse(url: str) -> Warehouse:
    kind = url.split(":", 1)[0]
    if ":" not in url or kind not in WAREHOUSES:
        raise ValueError(f"unknown --warehouse {url!r}; supported: duckdb:PATH, bigquery:PROJECT:DATASET")
    module, name = WAREHOUSES[kind].split(":")
    warehouse: Warehouse = getattr(importlib.import_module(module), name)(url)
    return warehouse
