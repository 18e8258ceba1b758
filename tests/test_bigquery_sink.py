"""The BigQuery sink against a real emulator (``bqemulator``, see ``conftest_bigquery``).

* The whole pipeline runs on one generated input twice: into the emulator
  (``--warehouse=bigquery:...``) and into DuckDB, with the same HMAC key. The emulator's
  tables have the columns of ``schemas/bigquery/*.json`` with their partitioning and
  clustering, and hold the same rows as DuckDB (the ingestion-time columns aside).
* The composite alone, on a row BigQuery rejects: it becomes a ``dead_letters`` row with
  BigQuery's own error, masked.
* The streaming insert ids sent to BigQuery are the primary keys.
* Payments are settled against the table: a second run's exact copy of a stored payment is
  counted as a duplicate, a copy with other content becomes a ``conflicting_duplicate``
  dead letter, and neither is written; a shard's payments are settled across its lookups,
  and a streaming run (``TestStream``) settles each batch.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pickle
import re
import subprocess
import sys
from decimal import Decimal
from types import SimpleNamespace
from typing import Any, Dict, List, Tuple

import apache_beam as beam
import duckdb
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from conftest_bigquery import PROJECT, BigQueryEmulator, bq_dataset, bq_emulator  # noqa: F401

from kernels.masking import mask_text
from kernels.parse import luhn_valid
from schemas.records import EnrichedTransaction, MaskedTransaction, SourceRef
from schemas.rows import DEAD_LETTERS, TRANSACTIONS, transaction_row
from schemas.tables import TABLES, bq_schema
from transforms.sinks.bigquery import (
    BigQuerySink,
    BigQueryTarget,
    EmulatorClient,
    SettleAgainstBigQuery,
    WriteTableToBigQuery,
    WriteToBigQueryWarehouse,
    _SettleFn,
    emulator_client,
    insert_id,
    parse_bigquery_target,
    table_parameters,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INGESTION_COLUMNS = {
    "payment_transactions": "ingested_at",
    "fraud_alerts": "detected_at",
    "dead_letters": "received_at",
}
CARD = "4111111111111111"


# ---------------------------------------------------------------------------------------------
# Without the emulator


def test_target_parsing_and_build_time_errors() -> None:
    target = parse_bigquery_target("bigquery:my-project:paystream")
    assert (target.project, target.dataset) == ("my-project", "paystream")
    assert target.table_spec("dead_letters") == "my-project:paystream.dead_letters"
    for bad in (
        "bigquery:",
        "bigquery:my-project",
        "bigquery:my-project:",
        "bq:p:d",
        "bigquery:my-project:a-b",
    ):
        with pytest.raises(ValueError):
            parse_bigquery_target(bad)
    with pytest.raises(ValueError, match="unknown table"):
        WriteTableToBigQuery(target, "payments")
    with pytest.raises(ValueError, match="write method"):
        WriteToBigQueryWarehouse(target, method="FILE_LOADS")
    with pytest.raises(ValueError, match="triggering_frequency_s"):
        WriteToBigQueryWarehouse(target, triggering_frequency_s=0)
    with pytest.raises(ValueError, match="emulator"):
        WriteToBigQueryWarehouse(
            target, method="STORAGE_WRITE_API", test_client=EmulatorClient("http://127.0.0.1:9", "p")
        )
    with pytest.raises(ValueError, match="endpoint"):
        EmulatorClient("127.0.0.1:9050/x", "p")


def test_tables_are_partitioned_and_clustered_as_schema_sql_says() -> None:
    sql = open(os.path.join(ROOT, "schemas", "schema.sql"), encoding="utf-8").read()
    for table in TABLES:
        params = table_parameters(table)
        part, cluster = params["timePartitioning"]["field"], ", ".join(params["clustering"]["fields"])
        assert params["timePartitioning"]["type"] == "DAY"
        assert re.search(
            rf"\.{table}`\n\(.*?\)\nPARTITION BY DATE\({part}\)\nCLUSTER BY {cluster}\n", sql, re.DOTALL
        ), table


def test_insert_ids_are_the_primary_keys() -> None:
    assert insert_id("payment_transactions", {"transaction_id": "txn-1"}) == "txn-1"
    assert insert_id("fraud_alerts", {"alert_id": "a-1"}) == "a-1"
    assert insert_id("dead_letters", {"dead_letter_id": "d-1"}) == "d-1"


def test_emulator_client_pickles_without_its_clients() -> None:
    client = emulator_client("127.0.0.1:9050", "p")
    assert client is not None and emulator_client(None, "p") is None
    client.api()  # made locally, must not travel with the graph
    copy = pickle.loads(pickle.dumps(client))
    assert (copy.endpoint, copy.project, copy._apitools, copy._cloud) == (
        "http://127.0.0.1:9050",
        "p",
        None,
        None,
    )


# ---------------------------------------------------------------------------------------------
# The pipeline into the emulator and into DuckDB


def _run(args: List[str], cwd: str) -> None:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, f"{args[0]} failed:\n{proc.stderr[-4000:]}"


def _norm(value: Any) -> Any:
    """One comparable form for both warehouses' values."""
    if isinstance(value, dt.datetime):
        assert value.tzinfo is not None, "naive timestamp"
        return value.astimezone(dt.UTC)
    if isinstance(value, Decimal):
        return value.normalize()
    if isinstance(value, (list, tuple)):
        return tuple(_norm(v) for v in value)
    return value


def _duckdb_rows(path: str, table: str) -> List[Tuple[Any, ...]]:
    cols = [c for c in TABLES[table].column_names if c != INGESTION_COLUMNS[table]]
    conn = duckdb.connect(path, read_only=True)
    try:
        conn.execute("SET TimeZone = 'UTC'")
        rows = conn.execute(f"SELECT {', '.join(cols)} FROM {table}").fetchall()
    finally:
        conn.close()
    return sorted((tuple(_norm(v) for v in row) for row in rows), key=repr)


def _bigquery_rows(client: EmulatorClient, dataset: str, table: str) -> List[Tuple[Any, ...]]:
    cols = [c for c in TABLES[table].column_names if c != INGESTION_COLUMNS[table]]
    rows = client.cloud().list_rows(f"{client.project}.{dataset}.{table}")
    return sorted((tuple(_norm(row[c]) for c in cols) for row in rows), key=repr)


@pytest.fixture(scope="module")
def both_runs(bq_emulator: BigQueryEmulator, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, str]:  # noqa: F811
    """One input, two runs: into a new emulator dataset and into a DuckDB file."""
    cwd = str(tmp_path_factory.mktemp("bqruns"))
    with open(os.path.join(cwd, "hmac.key"), "w", encoding="utf-8") as handle:
        handle.write("7f" * 32 + "\n")
    _run(["simulator.generate", "--num-events", "600", "--seed", "11", "--out", "events.jsonl"], cwd)
    dataset = "paystream_e2e"
    client = bq_emulator.client()
    client.cloud().create_dataset(dataset)
    common = ["--source=file", "--input=events.jsonl", "--hmac_key_file=hmac.key", "--no_summary"]
    _run(
        [
            "beam_pipeline",
            *common,
            f"--warehouse=bigquery:{PROJECT}:{dataset}",
            f"--bq_emulator_host={bq_emulator.endpoint}",
        ],
        cwd,
    )
    _run(["beam_pipeline", *common, "--warehouse=duckdb:out.duckdb"], cwd)
    return {"dataset": dataset, "duckdb": os.path.join(cwd, "out.duckdb")}


@pytest.mark.parametrize("table", sorted(TABLES))
def test_pipeline_creates_the_tables_of_schemas_dir(
    bq_emulator: BigQueryEmulator,  # noqa: F811
    both_runs: Dict[str, str],
    table: str,
) -> None:
    client = bq_emulator.client()
    found = client.cloud().get_table(f"{PROJECT}.{both_runs['dataset']}.{table}")
    with open(os.path.join(ROOT, "schemas", "bigquery", f"{table}.json"), encoding="utf-8") as handle:
        declared = [(f["name"], f["type"], f["mode"]) for f in json.load(handle)]
    assert [(f.name, f.field_type, f.mode) for f in found.schema] == declared
    spec = TABLES[table]
    assert found.time_partitioning is not None
    assert (found.time_partitioning.type_, found.time_partitioning.field) == ("DAY", spec.partition_field)
    assert found.clustering_fields == list(spec.cluster_fields)


@pytest.mark.parametrize("table", sorted(TABLES))
def test_pipeline_rows_in_bigquery_equal_the_duckdb_rows(
    bq_emulator: BigQueryEmulator,  # noqa: F811
    both_runs: Dict[str, str],
    table: str,
) -> None:
    in_bigquery = _bigquery_rows(bq_emulator.client(), both_runs["dataset"], table)
    in_duckdb = _duckdb_rows(both_runs["duckdb"], table)
    assert in_duckdb, f"the DuckDB run wrote no {table}"
    assert len(in_bigquery) == len(in_duckdb)
    assert in_bigquery == in_duckdb


def test_pipeline_wrote_no_raw_card_number(bq_emulator: BigQueryEmulator, both_runs: Dict[str, str]) -> None:  # noqa: F811
    client = bq_emulator.client()
    for table in TABLES:
        text = "\n".join(
            repr(dict(r)) for r in client.cloud().list_rows(f"{PROJECT}.{both_runs['dataset']}.{table}")
        )
        runs = re.findall(r"(?<![0-9A-Za-z])\d{12,19}(?![0-9A-Za-z])", text)
        assert not [r for r in runs if luhn_valid(r)], table
        assert "cvv" not in text.lower(), table


# ---------------------------------------------------------------------------------------------
# The composite alone: a row BigQuery rejects, and the insert ids


def _payment(transaction_id: str, **fields: Any) -> EnrichedTransaction:
    txn = MaskedTransaction(
        transaction_id=transaction_id,
        account_id="acct-000001",
        amount_minor=1250,
        currency="EUR",
        card_masked="****-****-****-1111",
        card_token="ab" * 32,
        email_masked="ja****@example.com",
        email_token="cd" * 32,
        phone_masked="1-555-****",
        merchant_id="m-00042",
        merchant_category="5411",
        country="DE",
        card_country="FR",
        event_time_us=1_795_000_000_000_000,
        source=SourceRef("payments", 3, 1234, "acct-000001"),
    )
    return EnrichedTransaction(txn._replace(**fields), 10, None, 0, None, True, 0.2)


def _payment_row(transaction_id: str, **overrides: Any) -> Dict[str, Any]:
    return {**transaction_row(_payment(transaction_id), 1_795_000_001_000_000), **overrides}


class _RecordingClient(EmulatorClient):
    """The emulator client, also noting each insert id it sends (in a file: bundles may run anywhere)."""

    def __init__(self, endpoint: str, project: str, log_path: str) -> None:
        super().__init__(endpoint, project)
        self.log_path = log_path

    def __getstate__(self) -> Dict[str, Any]:
        return {**super().__getstate__(), "log_path": self.log_path}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__init__(state["endpoint"], state["project"], state["log_path"])  # type: ignore[misc]

    def insert_rows_json(self, table: Any, json_rows: Any, **kwargs: Any) -> Any:
        with open(self.log_path, "a", encoding="utf-8") as handle:
            for row, row_id in zip(json_rows, kwargs.get("row_ids") or []):
                handle.write(json.dumps([str(table), row_id, row.get("transaction_id")]) + "\n")
        return super().insert_rows_json(table, json_rows, **kwargs)


@pytest.mark.parametrize("frequency_s", [None, 1.0], ids=["shuffled", "batched"])
def test_a_row_bigquery_rejects_becomes_a_masked_dead_letter(
    bq_emulator: BigQueryEmulator,  # noqa: F811
    bq_dataset: str,  # noqa: F811
    tmp_path: Any,
    frequency_s: Any,
) -> None:
    good = _payment_row("txn-good")
    # A type BigQuery cannot convert (INTEGER column), next to a raw card number where the
    # masked one belongs: the sink must never store it, even in a rejected row.
    bad = _payment_row("txn-bad", hour_of_day_utc="ten o'clock", merchant_id=f"card {CARD}")
    target = parse_bigquery_target(f"bigquery:{PROJECT}:{bq_dataset}")
    log_path = str(tmp_path / "insert_ids.jsonl")
    client = _RecordingClient(bq_emulator.endpoint, PROJECT, log_path)

    with TestPipeline() as p:
        rows = p | beam.Create([good, bad])
        letters = {"payment_transactions": rows} | WriteToBigQueryWarehouse(
            target, triggering_frequency_s=frequency_s, test_client=client
        )
        if frequency_s is None:
            # With batching (GroupIntoBatches, processing-time timers) the DirectRunner picks the
            # BundleBasedDirectRunner, where this assert_that saw an empty output although the
            # dead letter reached the table (checked below for both variants); not explained yet.
            assert_that(
                letters | beam.Map(lambda d: (d.stage, d.reason, d.transaction_id, d.source)),
                equal_to([("sink", "bigquery_rejected", "txn-bad", SourceRef("payments", 3, 1234))]),
            )

    # What BigQuery itself says about that row, asked directly.
    cloud = bq_emulator.client().cloud()
    errors = cloud.insert_rows_json(
        f"{PROJECT}.{bq_dataset}.payment_transactions", [bad], row_ids=[None], skip_invalid_rows=True
    )
    assert errors and errors[0]["errors"], "the emulator accepted a row with a bad INTEGER"
    bq_error = errors[0]["errors"][0]

    stored = [r["transaction_id"] for r in cloud.list_rows(f"{PROJECT}.{bq_dataset}.payment_transactions")]
    assert stored == ["txn-good"]
    letters_rows = [dict(r) for r in cloud.list_rows(f"{PROJECT}.{bq_dataset}.dead_letters")]
    assert len(letters_rows) == 1
    letter = letters_rows[0]
    assert (letter["stage"], letter["reason"], letter["transaction_id"]) == (
        "sink",
        "bigquery_rejected",
        "txn-bad",
    )
    assert (letter["source_topic"], letter["source_partition"], letter["source_offset"]) == (
        "payments",
        3,
        1234,
    )
    assert mask_text(bq_error["message"]) in letter["message"]
    assert letter["message"].startswith("payment_transactions: invalid")
    payload = json.loads(letter["masked_payload"])
    assert payload["transaction_id"] == "txn-bad" and payload["hour_of_day_utc"] == "ten o'clock"
    everything = repr(letter)
    assert CARD not in everything and "4111" not in everything.replace("****-****-****-1111", "")

    # The insert ids sent were the transaction ids, for the table's rows as for the dead letter's.
    with open(log_path, encoding="utf-8") as handle:
        sent = [json.loads(line) for line in handle]
    payments = [(row_id, txn) for table, row_id, txn in sent if table.endswith(".payment_transactions")]
    assert sorted(payments) == [("txn-bad", "txn-bad"), ("txn-good", "txn-good")]
    dead = [row_id for table, row_id, _ in sent if table.endswith(".dead_letters")]
    assert dead == [letter["dead_letter_id"]]


# ---------------------------------------------------------------------------------------------
# Payments settled against the table


def _counters(result: Any) -> Dict[str, int]:
    found = result.metrics().query(MetricsFilter().with_namespace("paystream"))["counters"]
    return {c.key.metric.name: c.committed or c.attempted for c in found}


def _sink_run(
    target: BigQueryTarget, client: EmulatorClient, payments: List[EnrichedTransaction], out: str
) -> Tuple[Dict[str, int], List[Any]]:
    """``payments`` through the sink in one pipeline run: its counters, and the sink's dead
    letters (written to ``out`` by the run: bundles may run anywhere)."""
    p = beam.Pipeline(options=PipelineOptions(["--direct_num_workers=1"]))
    tables = {
        TRANSACTIONS: p | "Payments" >> beam.Create(payments),
        DEAD_LETTERS: p | "Letters" >> beam.Create([]),
    }
    letters = tables | BigQuerySink(WriteToBigQueryWarehouse(target, test_client=client))
    _ = (
        letters
        | beam.Map(lambda d: json.dumps([d.stage, d.reason, d.transaction_id, list(d.source)]))
        | beam.io.WriteToText(out, shard_name_template="")
    )
    result = p.run()
    result.wait_until_finish()
    with open(out, encoding="utf-8") as handle:
        return _counters(result), [json.loads(line) for line in handle]


def test_payments_are_settled_against_what_the_table_holds(
    bq_emulator: BigQueryEmulator,  # noqa: F811
    bq_dataset: str,  # noqa: F811
    tmp_path: Any,
) -> None:
    """A second run's copies of stored payments, as the books let them through once the
    horizon forgot their ids: an exact copy is counted, a copy with another amount is a
    ``conflicting_duplicate`` dead letter; neither is written, a new payment is."""
    target = parse_bigquery_target(f"bigquery:{PROJECT}:{bq_dataset}")
    client = bq_emulator.client()
    at = 1_795_000_000_123_456  # microseconds must survive the round trip
    first = [
        _payment("txn-a", event_time_us=at, amount_minor=1250, source=SourceRef("payments", 0, 10)),
        _payment("txn-b", event_time_us=at + 1, amount_minor=999, source=SourceRef("payments", 1, 11)),
        _payment("txn-c", event_time_us=at + 2, amount_minor=1, source=SourceRef("payments", 2, 12)),
    ]
    counters, letters = _sink_run(target, client, first, str(tmp_path / "letters-1"))
    assert letters == []
    assert counters.get("sink_rows.payment_transactions") == 3
    assert not counters.get("duplicates_dropped") and not counters.get(
        "sink_rows_present.payment_transactions"
    )

    copy = first[0]._replace(txn=first[0].txn._replace(source=SourceRef("payments", 0, 5010)))
    conflict = first[1]._replace(
        txn=first[1].txn._replace(amount_minor=1000, source=SourceRef("payments", 1, 5011))
    )
    new = _payment("txn-d", event_time_us=at + 3, source=SourceRef("payments", 2, 5012))
    counters, letters = _sink_run(target, client, [copy, conflict, new], str(tmp_path / "letters-2"))

    cloud = client.cloud()
    stored = {
        r["transaction_id"]: (r["amount"], r["source_offset"])
        for r in cloud.list_rows(f"{PROJECT}.{bq_dataset}.payment_transactions")
    }
    assert len(list(cloud.list_rows(f"{PROJECT}.{bq_dataset}.payment_transactions"))) == 4
    assert stored == {
        "txn-a": (Decimal("12.50"), 10),
        "txn-b": (Decimal("9.99"), 11),
        "txn-c": (Decimal("0.01"), 12),
        "txn-d": (Decimal("12.50"), 5012),
    }
    dead = [dict(r) for r in cloud.list_rows(f"{PROJECT}.{bq_dataset}.dead_letters")]
    assert [(d["stage"], d["reason"], d["transaction_id"], d["source_offset"]) for d in dead] == [
        ("dedup", "conflicting_duplicate", "txn-b", 5011)
    ]
    assert '"amount_minor": 1000' in dead[0]["masked_payload"]
    assert letters == [["dedup", "conflicting_duplicate", "txn-b", ["payments", 1, 5011, None, None]]]
    assert counters.get("duplicates_dropped") == 1
    assert counters.get("dead_letters.conflicting_duplicate.dedup") == 1
    assert counters.get("sink_rows_present.payment_transactions") == 2
    assert counters.get("sink_rows.payment_transactions") == 1
    assert counters.get("sink_rows.dead_letters") == 1


class _Lookups:
    """A ``google.cloud.bigquery.Client`` for the lookup alone: answers from ``rows`` and
    notes the ids each query asked for."""

    def __init__(self, rows: List[Dict[str, Any]]) -> None:
        self.rows = rows
        self.asked: List[List[str]] = []

    def query(self, sql: str, job_config: Any) -> Any:
        assert "IN UNNEST(@ids)" in sql
        ids = list(job_config.query_parameters[0].values)
        self.asked.append(ids)
        return SimpleNamespace(result=lambda: [r for r in self.rows if r["transaction_id"] in ids])


def test_a_shard_is_settled_across_its_lookups() -> None:
    """A shard's payments are looked up ``batch_size`` at a time, each id once, and a copy is
    settled against the first even when they fall in different lookups."""
    at = 1_795_000_000_123_456
    stored = {
        "transaction_id": "txn-a",
        "account_id": "acct-000001",
        "amount": Decimal("12.500000000"),
        "currency": "EUR",
        "merchant_id": "m-00042",
        "merchant_category": "5411",
        "country": "DE",
        "event_time": dt.datetime.fromtimestamp(at // 1_000_000, dt.UTC).replace(microsecond=at % 1_000_000),
    }
    a, x, y = (_payment(i, event_time_us=at) for i in ("txn-a", "txn-x", "txn-y"))
    x_copy = x._replace(txn=x.txn._replace(source=SourceRef("payments", 3, 99)))
    x_other = x._replace(txn=x.txn._replace(amount_minor=1, source=SourceRef("payments", 3, 100)))
    fn = _SettleFn(parse_bigquery_target("bigquery:my-project:d"), 2, None)
    fn._client = lookups = _Lookups([stored])
    out = list(fn.process((7, [a, x, x_copy, y, x_other])))
    assert lookups.asked == [["txn-a", "txn-x"], ["txn-y"]]
    assert [o for o in out if isinstance(o, EnrichedTransaction)] == [x, y]
    letters = [(o.tag, o.value.reason, o.value.source) for o in out if not isinstance(o, EnrichedTransaction)]
    assert letters == [(SettleAgainstBigQuery.CONFLICTS, "conflicting_duplicate", x_other.txn.source)]


def test_a_streaming_run_settles_each_batch(
    bq_emulator: BigQueryEmulator,  # noqa: F811
    bq_dataset: str,  # noqa: F811
    tmp_path: Any,
) -> None:
    """The streaming variant (``GroupIntoBatches``, flushed by time): batches looked up as
    they come, copies within one batch settled against each other."""
    from google.cloud import bigquery

    cloud = bq_emulator.client().cloud()
    table = f"{PROJECT}.{bq_dataset}.payment_transactions"
    fields = [bigquery.SchemaField.from_api_repr(f) for f in bq_schema("payment_transactions")["fields"]]
    cloud.create_table(bigquery.Table(table, schema=fields))
    assert cloud.insert_rows_json(table, [_payment_row("txn-a"), _payment_row("txn-b")]) == []
    out = str(tmp_path / "settled")

    def note(record: Any, kind: str) -> None:
        with open(out, "a", encoding="utf-8") as handle:
            handle.write(json.dumps([kind, getattr(record, "txn", record).transaction_id]) + "\n")

    events = (
        TestStream()
        .add_elements(
            [_payment("txn-a", source=SourceRef("payments", 3, 7)), _payment("txn-b", amount_minor=5)]
        )
        .advance_processing_time(5)
        .add_elements([_payment("txn-c"), _payment("txn-c", source=SourceRef("payments", 3, 9))])
        .advance_processing_time(5)
        .advance_watermark_to_infinity()
    )
    target = parse_bigquery_target(f"bigquery:{PROJECT}:{bq_dataset}")
    with beam.Pipeline(options=PipelineOptions(["--streaming"])) as p:
        settled = p | events | SettleAgainstBigQuery(target, test_client=bq_emulator.client())
        settled.new | "New" >> beam.Map(note, "new")
        settled[SettleAgainstBigQuery.CONFLICTS] | "Conflicts" >> beam.Map(note, "conflict")
    with open(out, encoding="utf-8") as handle:
        assert sorted(json.loads(line) for line in handle) == [["conflict", "txn-b"], ["new", "txn-c"]]
