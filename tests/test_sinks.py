"""The sink seam (``transforms/sinks/__init__.py``): one contract, writes recorded the same
way by every sink, the warehouse URL read in one place, one Redis client for both Redis
steps."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from conftest_bigquery import PROJECT, BigQueryEmulator, bq_emulator  # noqa: F401
from test_accounts import txn

import transforms.sinks.duckdb_warehouse as duckdb_sink
from schemas.records import DeadLetter, EnrichedTransaction
from schemas.rows import ALERTS, DEAD_LETTERS, TRANSACTIONS
from transforms.sinks import WAREHOUSES, Sink, open_warehouse

ROOT = Path(__file__).resolve().parent.parent
US = 1_000_000


def test_open_warehouse_reads_every_kind_and_refuses_others(tmp_path: Path) -> None:
    duck = open_warehouse(f"duckdb:{tmp_path}/w.duckdb")
    assert duck.kind == "duckdb" and duck.local_path == f"{tmp_path}/w.duckdb"
    assert isinstance(duck.sink(), Sink)
    big = open_warehouse("bigquery:my-project:paystream")
    assert big.kind == "bigquery" and big.local_path is None and big.facts(None) is None
    assert isinstance(big.sink(), Sink)
    assert set(WAREHOUSES) == {"duckdb", "bigquery"}
    for bad in ("postgres:db", "duckdb", "out.duckdb"):
        with pytest.raises(ValueError, match="unknown --warehouse"):
            open_warehouse(bad)


def test_no_module_reads_a_warehouse_url_by_its_prefix() -> None:
    """``open_warehouse`` is the one place: no ``startswith("duckdb:")`` outside the kind's
    own module (whose parser checks its own prefix)."""
    own = {"duckdb:": "transforms/sinks/duckdb_warehouse.py", "bigquery:": "transforms/sinks/bigquery.py"}
    found = []
    for package in ("beam_pipeline", "transforms", "bench"):
        for path in sorted((ROOT / package).rglob("*.py")):
            where = str(path.relative_to(ROOT))
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "startswith":
                    prefixes = [a.value for a in node.args if isinstance(a, ast.Constant) and a.value in own]
                    found += [f"{where}:{node.lineno} {p}" for p in prefixes if own[p] != where]
    assert found == []


def _payment(i: int, at_us: int) -> EnrichedTransaction:
    return EnrichedTransaction(txn(f"txn-{i}", at_us, offset=i), 12, None, 0, None, False, 0.1)


def _distribution(result: Any, name: str) -> Any:
    found = result.metrics().query(MetricsFilter().with_namespace("paystream").with_name(name))[
        "distributions"
    ]
    assert found, name
    return found[0].committed or found[0].attempted


def test_latency_is_measured_to_the_end_of_the_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``end_to_end_latency_seconds`` is observed once the rows are written: a write that
    takes 0.4 s shows in every latency (it was once observed in the step before the sink)."""
    insert = duckdb_sink._write_payments

    def slow_insert(*args: Any) -> Any:
        time.sleep(0.4)
        return insert(*args)

    monkeypatch.setattr(duckdb_sink, "_write_payments", slow_insert)
    now = int(time.time() * US)
    payments = [_payment(i, now) for i in range(5)]
    letters: List[DeadLetter] = []
    p = beam.Pipeline(options=PipelineOptions(["--direct_num_workers=1"]))
    tables = {
        TRANSACTIONS: p | "Payments" >> beam.Create(payments),
        ALERTS: p | "Alerts" >> beam.Create([]),
        DEAD_LETTERS: p | "Letters" >> beam.Create(letters),
    }
    tables | open_warehouse(f"duckdb:{tmp_path}/w.duckdb").sink()
    result = p.run()
    result.wait_until_finish()
    latency = _distribution(result, "end_to_end_latency_seconds.payment_transactions")
    write = _distribution(result, "sink_write_seconds.payment_transactions")
    assert latency.count == 5
    assert latency.min >= 400  # milliseconds: the write's own 0.4 s is inside every latency
    assert write.min >= 400


def test_the_bigquery_sink_counts_its_rows_as_every_sink_does(
    bq_emulator: BigQueryEmulator,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The summary's ``rows_written`` (``sink_rows``) holds what BigQuery took, per table."""
    dataset = "paystream_counted"
    client = bq_emulator.client()
    client.cloud().create_dataset(dataset)
    (tmp_path / "hmac.key").write_text("7f" * 32 + "\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "simulator.generate",
            "--num-events",
            "500",
            "--seed",
            "5",
            "--out",
            "e.jsonl",
        ],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
    )
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "beam_pipeline",
            "--source=file",
            "--input=e.jsonl",
            "--hmac_key_file=hmac.key",
            f"--warehouse=bigquery:{PROJECT}:{dataset}",
            f"--bq_emulator_host={bq_emulator.endpoint}",
            "--no_summary",
            "--summary_json=summary.json",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    written: Dict[str, int] = json.loads((tmp_path / "summary.json").read_text())["rows_written"]
    stored = {
        table: len(list(client.cloud().list_rows(f"{PROJECT}.{dataset}.{table}")))
        for table in (TRANSACTIONS, ALERTS, DEAD_LETTERS)
    }
    assert all(stored.values())
    assert written == stored


def _counters(result: Any) -> Dict[str, int]:
    found = result.metrics().query(MetricsFilter().with_namespace("paystream"))["counters"]
    return {c.key.metric.name: int(c.committed or c.attempted or 0) for c in found}


def test_duckdb_settles_payments_against_the_table_and_counts_a_replay(tmp_path: Path) -> None:
    """A copy of a stored payment is a duplicate, other content a dead letter; the same
    conflicting copy written again (a replay) leaves the table as it was, and says so."""
    url = f"duckdb:{tmp_path}/w.duckdb"
    now = int(time.time() * US)
    first = _payment(1, now)
    copy = first._replace(txn=first.txn._replace(source=first.txn.source._replace(offset=50)))
    other = first._replace(
        txn=first.txn._replace(
            amount_minor=first.txn.amount_minor + 1, source=copy.txn.source._replace(offset=51)
        )
    )

    def write(payments: List[EnrichedTransaction]) -> Dict[str, int]:
        p = beam.Pipeline(options=PipelineOptions(["--direct_num_workers=1"]))
        tables = {
            TRANSACTIONS: p | "Payments" >> beam.Create(payments),
            ALERTS: p | "Alerts" >> beam.Create([]),
            DEAD_LETTERS: p | "Letters" >> beam.Create([]),
        }
        tables | open_warehouse(url).sink()
        result = p.run()
        result.wait_until_finish()
        return _counters(result)

    assert write([first])["sink_rows.payment_transactions"] == 1
    counts = write([copy, other])
    assert counts.get("sink_rows.payment_transactions", 0) == 0
    assert counts["duplicates_dropped"] == 1 and counts["dead_letters.conflicting_duplicate.dedup"] == 1
    assert counts["sink_rows.dead_letters"] == 1 and counts["sink_rows_present.payment_transactions"] == 2
    replay = write([other])
    assert replay["dead_letters.conflicting_duplicate.dedup"] == 1
    assert replay.get("sink_rows.dead_letters", 0) == 0 and replay["sink_rows_present.dead_letters"] == 1
    rows = duckdb_sink.row_counts(f"{tmp_path}/w.duckdb")
    assert rows == {"payment_transactions": 1, "fraud_alerts": 0, "dead_letters": 1}
