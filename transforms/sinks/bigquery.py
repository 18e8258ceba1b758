"""The three tables to BigQuery: ``--warehouse=bigquery:PROJECT:DATASET``.

``BigQuerySink`` settles the payments against the table (``SettleAgainstBigQuery``), makes
the rows of ``schemas.rows`` per table, and ``WriteToBigQueryWarehouse`` writes each table
with Beam's BigQuery sink:

* **Tables.** Columns come from ``schemas/bigquery/<table>.json`` (through
  ``schemas.tables.bq_schema``); partitioned by day of the table's time column and clustered
  as ``schemas.tables.TABLES`` says (``schema.sql`` and Terraform use the same specs);
  ``CREATE_IF_NEEDED`` and ``WRITE_APPEND``. The dataset itself must exist (Terraform makes
  it).
* **STREAMING_INSERTS** (the default ``--bq_write_method``). Each row's insert id is its
  primary key (``transaction_id``, ``alert_id``, ``dead_letter_id``), so a retried insert
  or a replayed input within BigQuery's de-duplication window does not add a row.
  ``WriteToBigQuery`` itself gives every row a random id (a uuid per bundle and a counter)
  and has no parameter for our own, so this method runs Beam's ``BigQueryWriteFn``, the
  DoFn that ``WriteToBigQuery`` runs for streaming inserts, behind the same shuffle that
  commits the ids, with the same table creation, retries and failed-row outputs.
  ``--bq_triggering_frequency_s`` batches rows per table with
  ``GroupIntoBatches.WithShardedKey`` (flushed at least that often).
* **STORAGE_WRITE_API** goes through ``beam.io.WriteToBigQuery`` (exactly-once stream
  offsets, no insert ids). It is a cross-language Java transform: it needs Beam's GCP
  expansion service and a Java environment, which Dataflow provides; it has no endpoint
  option, so it cannot be tested against the emulator here.
* **Payments are settled against the table**, for both methods. The dedup books forget an
  id after ``--dedup_horizon_s``; the table does not. Payments are keyed by a stable hash of
  their transaction id into one of 32 shards, so all copies of an id meet in one. A bounded
  batch run groups each shard whole (``GroupByKey``); a streaming run batches it
  (``GroupIntoBatches``, flushed at least every 2 s). Each ``--bq_batch_size`` payments of a
  group or batch are looked up in one query (``transaction_id IN UNNEST(@ids)`` on
  ``payment_transactions``; a table not created yet holds none). A payment whose id the
  table holds is not written: with the same content (``kernels.books.content_of``) it is an
  exact copy, counted as a duplicate; with other content a ``conflicting_duplicate`` dead
  letter, written to ``dead_letters`` with the graph's own and returned with the sink's.
  The payments of one group or batch are settled against each other too, the first met
  kept. Only rows written count in ``sink_rows``.

  The one gap, in streaming runs: the query sees the rows BigQuery holds, streaming-buffer
  rows included (Storage Write API rows once the write flushes or commits their stream). A
  row settled as new is written after a shuffle, up to ``--bq_triggering_frequency_s`` of
  batching and, with the Storage Write API, its commit. A copy of its id in a later batch of
  its shard, looked up before that write is visible, is passed as new as well: neither is
  counted as a duplicate or a conflict, both count in ``sink_rows``. With
  ``STREAMING_INSERTS`` both carry the id as insert id, and BigQuery's best-effort
  de-duplication (about a minute) usually keeps the insert that arrives first, whatever its
  content, so a conflicting copy can be lost without a dead letter; when it does not, and
  always with ``STORAGE_WRITE_API``, the table holds the id twice. The books catch a copy
  within the horizon, so this takes two copies more than the horizon apart in event time
  reaching the sink within one write latency: a replay of a backlog that spans more than
  the horizon, read faster than live.
* **Rejected rows.** Rows BigQuery refuses (``failed_rows_with_errors``) become
  ``dead_letters`` rows: stage ``sink``, reason ``bigquery_rejected``, BigQuery's error as
  the message (scrubbed with ``mask_text``: BigQuery quotes the bad value), and the row,
  masked and truncated like every other dead letter's payload. They are written to the
  ``dead_letters`` table by a second write; what that one rejects is counted
  (``sink_errors``) and logged by id, never with the payload.

**Emulators.** Beam's BigQuery sink has no endpoint option (apache/beam #23598). The one
override is ``EmulatorClient`` (made by ``emulator_client``), passed as the sink's
``test_client`` only when ``--bq_emulator_host`` is set.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import itertools
import json
import logging
import random
import re
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import apache_beam as beam
from apache_beam.io.gcp.bigquery import BigQueryDisposition, BigQueryWriteFn, WriteToBigQuery
from apache_beam.io.gcp.bigquery_tools import RetryStrategy
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.transforms.util import ReshufflePerKey

from kernels.books import Content, settle_against_stored, stored_conflict_letter
from kernels.masking import mask_text, masked_payload_text
from schemas.records import DeadLetter, EnrichedTransaction, SourceRef
from schemas.rows import ALERTS, DEAD_LETTERS, ROW_OF, TRANSACTIONS, dead_letter_row, rfc3339_to_us
from schemas.tables import TABLES, bq_schema
from transforms import telemetry
from transforms.lists import group_of
from transforms.sinks import Sink, Warehouse, record_settled, record_write

__all__ = [
    "BigQuerySink",
    "BigQueryTarget",
    "BigQueryWarehouse",
    "EmulatorClient",
    "REJECTED_REASON",
    "SINK_STAGE",
    "SettleAgainstBigQuery",
    "WRITE_METHODS",
    "WriteTableToBigQuery",
    "WriteToBigQueryWarehouse",
    "emulator_client",
    "insert_id",
    "parse_bigquery_target",
    "rejected_row_dead_letter",
    "stored_contents",
    "table_parameters",
]

_LOG = logging.getLogger(__name__)

WRITE_METHODS = ("STREAMING_INSERTS", "STORAGE_WRITE_API")
SINK_STAGE = "sink"
REJECTED_REASON = "bigquery_rejected"
_MESSAGE_LIMIT = 1024
_SHARDS_PER_TABLE = 50
_SETTLE_SHARDS = 32  # transaction id shards of the lookup: its parallelism in a streaming run
_SETTLE_FLUSH_S = 2.0  # a streaming run looks a shard's payments up at least this often
_PROJECT = re.compile(r"^[a-z0-9][a-z0-9.:-]{0,98}[a-z0-9]$")  # GCP ids, domain-scoped ones, emulator names
_DATASET = re.compile(r"^[A-Za-z0-9_]{1,1024}$")
_ENDPOINT = re.compile(r"^https?://[^/\s]+$")


@dataclass(frozen=True)
class BigQueryTarget:
    """A dataset: ``project:dataset``; ``table_spec(t)`` is Beam's ``project:dataset.table``."""

    project: str
    dataset: str

    def table_spec(self, table: str) -> str:
        return f"{self.project}:{self.dataset}.{table}"


def parse_bigquery_target(target: str) -> BigQueryTarget:
    """``bigquery:PROJECT:DATASET`` -> ``BigQueryTarget`` (ValueError when malformed)."""
    if not target.startswith("bigquery:"):
        raise ValueError(f"not a BigQuery warehouse target: {target!r} (expected bigquery:PROJECT:DATASET)")
    project, sep, dataset = target[len("bigquery:") :].rpartition(":")
    if not sep or not _PROJECT.match(project) or not _DATASET.match(dataset):
        raise ValueError(f"invalid BigQuery warehouse target {target!r} (expected bigquery:PROJECT:DATASET)")
    return BigQueryTarget(project, dataset)


def table_parameters(table: str) -> Dict[str, Any]:
    """Partitioning and clustering of a table, as ``tables.insert`` takes them."""
    spec = TABLES[table]
    return {
        "timePartitioning": {"type": spec.partition_type, "field": spec.partition_field},
        "clustering": {"fields": list(spec.cluster_fields)},
    }


def insert_id(table: str, row: Mapping[str, Any]) -> str:
    """The row's streaming insert id: its primary key."""
    return str(row[TABLES[table].primary_key])


# ---------------------------------------------------------------------------------------------
# The emulator override


class EmulatorClient:
    """Beam's BigQuery ``test_client``, talking to an emulator at ``endpoint``.

    ``BigQueryWrapper(client=...)`` uses the one object two ways: as the apitools
    ``BigqueryV2`` client (``tables.Get``/``Insert``, ``datasets``, ``tabledata``, ``jobs``)
    and as ``google.cloud.bigquery.Client`` (``insert_rows_json``). Both real clients point at
    ``endpoint`` with anonymous credentials. They are made on first use, on the worker, and
    are not pickled with the graph.
    """

    def __init__(self, endpoint: str, project: str) -> None:
        endpoint = endpoint.rstrip("/")
        if not _ENDPOINT.match(endpoint):
            raise ValueError(f"emulator endpoint must be http(s)://HOST:PORT, got {endpoint!r}")
        if not project:
            raise ValueError("emulator project must not be empty")
        self.endpoint = endpoint
        self.project = project
        self._apitools: Any = None
        self._cloud: Any = None

    def __getstate__(self) -> Dict[str, Any]:
        return {"endpoint": self.endpoint, "project": self.project}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__init__(state["endpoint"], state["project"])  # type: ignore[misc]

    def api(self) -> Any:
        """The apitools ``BigqueryV2`` client on the emulator."""
        if self._apitools is None:
            from apache_beam.io.gcp.internal.clients.bigquery import BigqueryV2

            self._apitools = BigqueryV2(
                url=f"{self.endpoint}/bigquery/v2/", get_credentials=False, response_encoding="utf8"
            )
        return self._apitools

    def cloud(self) -> Any:
        """A ``google.cloud.bigquery.Client`` on the emulator."""
        if self._cloud is None:
            try:
                from google.api_core.client_options import ClientOptions
                from google.auth.credentials import AnonymousCredentials
                from google.cloud import bigquery
            except ImportError as err:  # pragma: no cover - apache-beam[gcp] brings it
                raise ImportError("the BigQuery sink needs: pip install 'paystream[gcp]'") from err
            self._cloud = bigquery.Client(
                project=self.project,
                credentials=AnonymousCredentials(),
                client_options=ClientOptions(api_endpoint=self.endpoint),
            )
        return self._cloud

    # The apitools side, as BigQueryWrapper reads it.
    @property
    def tables(self) -> Any:
        return self.api().tables

    @property
    def datasets(self) -> Any:
        return self.api().datasets

    @property
    def tabledata(self) -> Any:
        return self.api().tabledata

    @property
    def jobs(self) -> Any:
        return self.api().jobs

    # The google-cloud-bigquery side.
    def insert_rows_json(self, table: Any, json_rows: Any, **kwargs: Any) -> Any:
        return self.cloud().insert_rows_json(table, json_rows, **kwargs)

    def close(self) -> None:
        if self._cloud is not None:
            self._cloud.close()
        self._cloud = None
        self._apitools = None


def emulator_client(endpoint: Optional[str], project: str) -> Optional[EmulatorClient]:
    """The client override for ``--bq_emulator_host``; ``None`` (the real BigQuery) without one."""
    if not endpoint:
        return None
    if "://" not in endpoint:
        endpoint = f"http://{endpoint}"
    return EmulatorClient(endpoint, project)


# ---------------------------------------------------------------------------------------------
# Rejected rows -> dead letters


def _error_text(errors: Any) -> str:
    """BigQuery's per-row errors (a list of ``{reason, location, message}``, or a string)."""
    if isinstance(errors, str):
        text = errors
    elif isinstance(errors, list):
        parts = []
        for err in errors:
            if isinstance(err, Mapping):
                where = f" at {err['location']}" if err.get("location") else ""
                parts.append(f"{err.get('reason') or 'error'}{where}: {err.get('message') or ''}".strip())
            else:
                parts.append(str(err))
        text = "; ".join(parts)
    else:
        text = str(errors)
    text = mask_text(text) or "rejected without a message"
    return text if len(text) <= _MESSAGE_LIMIT else text[:_MESSAGE_LIMIT] + "...[truncated]"


def rejected_row_dead_letter(table: str, row: Mapping[str, Any], errors: Any) -> DeadLetter:
    """A row BigQuery refused, as a dead letter: BigQuery's error, the row masked and truncated.

    A payment row keeps its source coordinates; other rows name their table and id. The
    dead letter id depends only on the table, the row's id and the reason, so a replay
    gives the same one.
    """
    spec = TABLES[table]
    row_id = row.get(spec.primary_key)
    if table == "payment_transactions" and row.get("source_topic") is not None:
        source = SourceRef(
            topic=str(row["source_topic"]),
            partition=int(row.get("source_partition") or 0),
            offset=int(row.get("source_offset") or 0),
        )
    else:
        source = SourceRef(topic=f"bigquery:{table}", partition=0, offset=0, key=None)
    txn_id = row.get("transaction_id")
    ident = "|".join((SINK_STAGE, REJECTED_REASON, table, str(row_id)))
    return DeadLetter(
        dead_letter_id=hashlib.sha256(ident.encode()).hexdigest()[:32],
        stage=SINK_STAGE,
        reason=REJECTED_REASON,
        message=f"{table}: {_error_text(errors)}",
        source=source,
        masked_payload=masked_payload_text(json.dumps(dict(row), sort_keys=True, default=str).encode()),
        transaction_id=str(txn_id) if isinstance(txn_id, str) and table == "payment_transactions" else None,
    )


def _table_of(destination: Any) -> str:
    """``project:dataset.table`` (or a TableReference) -> ``table``."""
    table_id = getattr(destination, "tableId", None)
    if table_id is None:
        table_id = str(destination).rsplit(".", 1)[-1]
    return str(table_id)


class _RejectedToDeadLetter(beam.DoFn):
    """``(destination, row, errors)`` from the sink -> ``DeadLetter``."""

    def process(self, failed: Any) -> Iterable[DeadLetter]:
        if isinstance(failed, Mapping):  # the Storage Write API's shape
            destination, row, errors = "", failed.get("failed_row") or {}, failed.get("error_message")
            table = next((t for t in TABLES if TABLES[t].primary_key in row), "unknown")
        else:
            destination, row, errors = failed[0], failed[1], failed[2]
            table = _table_of(destination)
        if table not in TABLES:
            table = next((t for t in TABLES if TABLES[t].primary_key in row), table)
        letter = rejected_row_dead_letter(table, row, errors) if table in TABLES else None
        if letter is None:
            telemetry.count("sink_errors", table="unknown")
            _LOG.error("BigQuery rejected a row of an unknown table %s", destination)
            return
        telemetry.count("dead_letters", stage=SINK_STAGE, reason=REJECTED_REASON)
        _LOG.warning("BigQuery rejected %s row %s", table, row.get(TABLES[table].primary_key))
        yield letter


class _LostDeadLetter(beam.DoFn):
    """A dead letter BigQuery refused too: nowhere left to write it, so count and log its id."""

    def process(self, failed: Any) -> None:
        row = failed.get("failed_row", {}) if isinstance(failed, Mapping) else failed[1]
        telemetry.count("sink_errors", table="dead_letters")
        _LOG.error("BigQuery rejected sink dead letter %s; it is lost", row.get("dead_letter_id"))


class _DeadLetterRows(beam.DoFn):
    def process(self, letter: DeadLetter) -> Iterable[Dict[str, Any]]:
        import time

        yield dead_letter_row(letter, int(time.time() * 1_000_000))


# ---------------------------------------------------------------------------------------------
# Payments settled against the table

_LOOKUP = (
    "SELECT transaction_id, account_id, amount, currency, merchant_id, merchant_category, country, "
    "event_time FROM `{table}` WHERE transaction_id IN UNNEST(@ids) ORDER BY ingested_at"
)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_US = dt.timedelta(microseconds=1)


def _stored_content(row: Mapping[str, Any]) -> Content:
    """A ``payment_transactions`` row as BigQuery returns it -> ``kernels.books.content_of``."""
    amount = row["amount"] if isinstance(row["amount"], Decimal) else Decimal(str(row["amount"]))
    event_time = row["event_time"]
    if event_time.tzinfo is None:
        event_time = event_time.replace(tzinfo=dt.UTC)
    return (
        row["account_id"],
        int(amount.scaleb(2)),
        row["currency"],
        row["merchant_id"],
        row["merchant_category"],
        row["country"],
        (event_time - _EPOCH) // _ONE_US,
    )


def stored_contents(client: Any, target: BigQueryTarget, ids: Iterable[str]) -> Dict[str, Content]:
    """Transaction id -> ``content_of`` its row, for those of ``ids`` that
    ``payment_transactions`` holds (its first row of an id, by ``ingested_at``); nothing
    when the table does not exist. ``client``: a ``google.cloud.bigquery.Client``."""
    from google.api_core.exceptions import NotFound
    from google.cloud import bigquery

    table = f"{target.project}.{target.dataset}.{TRANSACTIONS}"
    config = bigquery.QueryJobConfig(
        query_parameters=[bigquery.ArrayQueryParameter("ids", "STRING", sorted(set(ids)))],
        use_query_cache=False,
    )
    stored: Dict[str, Content] = {}
    try:
        for row in client.query(_LOOKUP.format(table=table), job_config=config).result():
            stored.setdefault(row["transaction_id"], _stored_content(row))
    except NotFound:
        return {}
    return stored


class _SettleFn(beam.DoFn):
    """``(shard, payments)`` -> the payments whose ids the table does not hold (main) and a
    dead letter for each it holds with other content (``CONFLICTS``). One query per
    ``batch_size`` payments, for the ids not met before in the call; the payments of one
    call are settled against each other."""

    def __init__(
        self, target: BigQueryTarget, batch_size: int, test_client: Optional[EmulatorClient]
    ) -> None:
        self._target = target
        self._batch_size = batch_size
        self._test_client = test_client
        self._client: Any = None

    def setup(self) -> None:
        if self._test_client is not None:
            self._client = self._test_client.cloud()
        else:
            from google.cloud import bigquery

            self._client = bigquery.Client(project=self._target.project)

    def process(self, shard: Tuple[int, Iterable[EnrichedTransaction]]) -> Iterable[Any]:
        stored: Dict[str, Content] = {}
        payments = iter(shard[1])
        while batch := list(itertools.islice(payments, self._batch_size)):
            unseen = {row.txn.transaction_id for row in batch} - stored.keys()
            if unseen:
                stored.update(stored_contents(self._client, self._target, unseen))
            new, copies, conflicts = settle_against_stored(batch, stored)
            record_settled(TRANSACTIONS, copies, len(conflicts))
            yield from new
            for row in conflicts:
                yield beam.pvalue.TaggedOutput(
                    SettleAgainstBigQuery.CONFLICTS, stored_conflict_letter(row.txn)
                )

    def teardown(self) -> None:
        if self._test_client is not None:
            self._test_client.close()
        elif self._client is not None:
            self._client.close()
        self._client = None


class SettleAgainstBigQuery(beam.PTransform):
    """``EnrichedTransaction`` -> those whose ids ``payment_transactions`` does not hold yet
    (the main output) and the ``conflicting_duplicate`` dead letters of those it holds with
    other content (``CONFLICTS``); exact copies are counted and dropped (``record_settled``).

    Payments are keyed by a shard of their id. A bounded batch run groups each shard whole
    (``GroupByKey``: all of a run's copies of an id meet in one call); a streaming run
    batches it (``GroupIntoBatches``, flushed at least every ``_SETTLE_FLUSH_S``), whose
    processing-time timer would move a batch run off the DirectRunner's FnApiRunner.
    """

    CONFLICTS = "conflicts"

    def __init__(
        self,
        target: BigQueryTarget,
        batch_size: int = 500,
        test_client: Optional[EmulatorClient] = None,
        label: Optional[str] = None,
    ) -> None:
        super().__init__(label)
        self._target = target
        self._batch_size = batch_size
        self._client = test_client

    def expand(self, payments: beam.PCollection[EnrichedTransaction]) -> beam.pvalue.DoOutputsTuple:
        keyed = payments | "ByIdShard" >> beam.Map(
            lambda row: (group_of(row.txn.transaction_id, _SETTLE_SHARDS), row)
        ).with_output_types(Tuple[int, Any])
        if payments.is_bounded and not payments.pipeline.options.view_as(StandardOptions).streaming:
            shards = keyed | "Group" >> beam.GroupByKey()
        else:
            shards = keyed | "Batch" >> beam.GroupIntoBatches(
                self._batch_size, max_buffering_duration_secs=_SETTLE_FLUSH_S
            )
        settle = _SettleFn(self._target, self._batch_size, self._client)
        return shards | "Settle" >> beam.ParDo(settle).with_outputs(self.CONFLICTS, main="new")


# ---------------------------------------------------------------------------------------------
# The writes


def _random_shard(kv: Tuple[str, Any]) -> Tuple[Tuple[str, int], Any]:
    return (kv[0], random.randrange(_SHARDS_PER_TABLE)), kv[1]


# The column each table's end-to-end latency is measured from (``schemas.rows.event_time_of``)
_EVENT_COLUMN = {TRANSACTIONS: "event_time", ALERTS: "crossing_txn_time"}


class _RecordedWriteFn(BigQueryWriteFn):
    """Beam's streaming-insert DoFn; each insert recorded as every sink records its writes
    (``transforms.sinks.record_write``): the rows BigQuery took, the insert's duration."""

    def __init__(self, table: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._paystream_table = table

    def _flush_batch(self, destination: Any) -> Any:
        buffered = self._rows_buffer[destination]
        column = _EVENT_COLUMN.get(self._paystream_table)
        times: List[int] = []
        if column is not None:
            for (row, _), _ in buffered:
                with contextlib.suppress(Exception):  # a row BigQuery will refuse anyway
                    times.append(rfc3339_to_us(row[column]))
        started = time.monotonic()
        out = list(super()._flush_batch(destination))
        failed = sum(1 for o in out if getattr(o, "tag", None) == BigQueryWriteFn.FAILED_ROWS_WITH_ERRORS)
        record_write(self._paystream_table, len(buffered) - failed, started, times if not failed else ())
        return out


class WriteTableToBigQuery(beam.PTransform):
    """Rows of one table -> BigQuery; the output is ``failed_rows_with_errors``.

    ``method`` is ``STREAMING_INSERTS`` (insert ids = primary keys) or ``STORAGE_WRITE_API``.
    ``triggering_frequency_s`` batches streaming inserts per table (and is the Storage Write
    API's commit interval in streaming runs). ``test_client`` is Beam's client override,
    i.e. an ``EmulatorClient``, or ``None`` for BigQuery itself.
    """

    def __init__(
        self,
        target: BigQueryTarget,
        table: str,
        method: str = "STREAMING_INSERTS",
        triggering_frequency_s: Optional[float] = None,
        batch_size: int = 500,
        test_client: Optional[EmulatorClient] = None,
        label: Optional[str] = None,
    ) -> None:
        super().__init__(label)
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}; known: {sorted(TABLES)}")
        if method not in WRITE_METHODS:
            raise ValueError(f"unknown BigQuery write method {method!r}; known: {', '.join(WRITE_METHODS)}")
        if triggering_frequency_s is not None and triggering_frequency_s <= 0:
            raise ValueError("triggering_frequency_s must be > 0")
        if batch_size <= 0 or batch_size > 10_000:
            raise ValueError("batch_size must be 1 to 10000 (BigQuery's limit per insertAll)")
        if method == "STORAGE_WRITE_API" and test_client is not None:
            raise ValueError("STORAGE_WRITE_API has no endpoint override: it cannot write to an emulator")
        self._target = target
        self._table = table
        self._method = method
        self._frequency = triggering_frequency_s
        self._batch_size = batch_size
        self._client = test_client

    def expand(self, rows: beam.PCollection[Dict[str, Any]]) -> beam.PCollection[Any]:
        spec = self._target.table_spec(self._table)
        if self._method == "STORAGE_WRITE_API":
            result = rows | "WriteToBigQuery" >> WriteToBigQuery(
                spec,
                schema=bq_schema(self._table),
                create_disposition=BigQueryDisposition.CREATE_IF_NEEDED,
                write_disposition=BigQueryDisposition.WRITE_APPEND,
                method=WriteToBigQuery.Method.STORAGE_WRITE_API,
                triggering_frequency=self._frequency,
                additional_bq_parameters=table_parameters(self._table),
            )
            return result.failed_rows_with_errors
        table = self._table
        keyed = rows | "WithInsertIds" >> beam.Map(lambda row: (spec, (row, insert_id(table, row))))
        if self._frequency is not None:
            batched = (
                keyed
                | "Batch"
                >> beam.GroupIntoBatches.WithShardedKey(
                    self._batch_size, max_buffering_duration_secs=self._frequency
                )
                | "DropShard" >> beam.Map(lambda kv: (kv[0].key, kv[1]))
            )
        else:  # commits the ids before the insert, as WriteToBigQuery does
            batched = (
                keyed
                | "Shard" >> beam.Map(_random_shard)
                | "CommitInsertIds" >> ReshufflePerKey()
                | "DropShard" >> beam.Map(lambda kv: (kv[0][0], kv[1]))
            )
        outputs = batched | "StreamInsertRows" >> beam.ParDo(
            _RecordedWriteFn(
                self._table,
                batch_size=self._batch_size,
                schema=bq_schema(self._table),
                create_disposition=BigQueryDisposition.CREATE_IF_NEEDED,
                write_disposition=BigQueryDisposition.WRITE_APPEND,
                kms_key=None,
                retry_strategy=RetryStrategy.RETRY_ON_TRANSIENT_ERROR,
                test_client=self._client,
                additional_bq_parameters=table_parameters(self._table),
                with_batched_input=self._frequency is not None,
            )
        ).with_outputs(BigQueryWriteFn.FAILED_ROWS, BigQueryWriteFn.FAILED_ROWS_WITH_ERRORS, main="main")
        return outputs[BigQueryWriteFn.FAILED_ROWS_WITH_ERRORS]


class WriteToBigQueryWarehouse(beam.PTransform):
    """``{table: rows}`` for the three tables -> BigQuery; rejected rows -> ``dead_letters``.

    The output is the sink's own dead letters (one per rejected row).
    """

    def __init__(
        self,
        target: BigQueryTarget,
        method: str = "STREAMING_INSERTS",
        triggering_frequency_s: Optional[float] = None,
        batch_size: int = 500,
        test_client: Optional[EmulatorClient] = None,
        label: Optional[str] = None,
    ) -> None:
        super().__init__(label)
        self._args = (target, method, triggering_frequency_s, batch_size, test_client)
        self._writer("dead_letters")  # validates the arguments now, at graph build time

    def _writer(self, table: str) -> WriteTableToBigQuery:
        target, method, frequency, batch_size, client = self._args
        return WriteTableToBigQuery(target, table, method, frequency, batch_size, client)

    def settle(self) -> SettleAgainstBigQuery:
        """The step that settles payments against this warehouse's table before the write."""
        target, _, _, batch_size, client = self._args
        return SettleAgainstBigQuery(target, batch_size, client)

    def expand(self, rows: Mapping[str, beam.PCollection[Dict[str, Any]]]) -> beam.PCollection[DeadLetter]:
        unknown = set(rows) - set(TABLES)
        if unknown:
            raise ValueError(f"no such tables: {sorted(unknown)}")
        rejected: List[beam.PCollection[Any]] = [
            pcoll | f"Write {table}" >> self._writer(table) for table, pcoll in rows.items()
        ]
        letters = (
            tuple(rejected)
            | "AllRejected" >> beam.Flatten()
            | "RejectedToDeadLetters" >> beam.ParDo(_RejectedToDeadLetter())
        )
        lost = (
            letters
            | "SinkDeadLetterRows" >> beam.ParDo(_DeadLetterRows())
            | "Write sink dead_letters" >> self._writer("dead_letters")
        )
        lost | "CountLost" >> beam.ParDo(_LostDeadLetter())
        return letters


class _Rows(beam.DoFn):
    """A table's records -> its rows, stamped with the time they leave for BigQuery."""

    def __init__(self, table: str) -> None:
        self._row_of = ROW_OF[table]

    def process(self, record: Any) -> Iterable[Dict[str, Any]]:
        yield self._row_of(record, int(time.time() * 1_000_000))


class BigQuerySink(Sink):
    """The graph's tables -> BigQuery (``WriteToBigQueryWarehouse``), the payments settled
    against the table first (``SettleAgainstBigQuery``). The output: the dead letters of the
    conflicting copies and of the rows BigQuery refused, already written to ``dead_letters``."""

    tables = (TRANSACTIONS, ALERTS, DEAD_LETTERS)

    def __init__(self, write: WriteToBigQueryWarehouse, label: Optional[str] = None) -> None:
        super().__init__(label)
        self._write = write

    def expand(self, tables: Mapping[str, beam.PCollection[Any]]) -> beam.PCollection[DeadLetter]:
        records = dict(tables)
        conflicts = None
        if TRANSACTIONS in records:
            settled = records[TRANSACTIONS] | f"Settle {TRANSACTIONS}" >> self._write.settle()
            records[TRANSACTIONS], conflicts = settled.new, settled[SettleAgainstBigQuery.CONFLICTS]
            if DEAD_LETTERS in records:
                conflicts_too = (records[DEAD_LETTERS], conflicts)
                records[DEAD_LETTERS] = conflicts_too | "With conflict letters" >> beam.Flatten()
            else:
                records[DEAD_LETTERS] = conflicts
        rows = {
            table: pcoll | f"{table} rows" >> beam.ParDo(_Rows(table)) for table, pcoll in records.items()
        }
        rejected = rows | "Write bigquery" >> self._write
        if conflicts is None:
            return rejected
        return (conflicts, rejected) | "Sink dead letters" >> beam.Flatten()


class BigQueryWarehouse(Warehouse):
    """``bigquery:PROJECT:DATASET``; ``--bq_*`` choose the write method and the batching,
    ``--bq_emulator_host`` an emulator instead of BigQuery."""

    kind = "bigquery"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.target = parse_bigquery_target(url)

    def sink(self, opts: Any = None) -> Sink:
        if opts is None:  # the defaults: streaming inserts to BigQuery itself
            return BigQuerySink(WriteToBigQueryWarehouse(self.target))
        return BigQuerySink(
            WriteToBigQueryWarehouse(
                self.target,
                method=opts.bq_write_method,
                triggering_frequency_s=opts.bq_triggering_frequency_s,
                batch_size=opts.bq_batch_size,
                test_client=emulator_client(opts.bq_emulator_host, self.target.project),
            )
        )
