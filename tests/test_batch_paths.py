"""The batch paths of the keyed steps give exactly what their streaming paths give.

``transforms/batching.py``: on a bounded input in a batch run, dedup, enrich and
velocity group their records into shards and run plain code per shard instead
of per-key state and timers. These tests run both paths on the same simulated
traffic (every injection: duplicates, conflicts, bursts, out-of-order and late
payments) and compare, step by step and for the whole graph.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any, Dict, List, Tuple

import apache_beam as beam
import duckdb
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from schemas.records import MaskedTransaction, SourceRef, Transaction
from simulator.generator import GeneratorConfig, generate
from transforms.batching import GroupIntoShards, shard_of, use_batch
from transforms.deadletter import DEAD_LETTER_TAG
from transforms.dedup import DeduplicateTransactions, first_copies
from transforms.enrich import EnrichFeatures, enrich_in_order
from transforms.masking import Tokenizer, mask_transaction
from transforms.parse import ParseError, parse_payment
from transforms.velocity import VelocityFraud, VelocityRule, judge_bursts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = b"k" * 32


def _traffic(num_events: int = 1500, accounts: int = 60) -> Tuple[List[Transaction], int]:
    """Parsed payments of one simulator run, in emission order, and its burst count."""
    records, truth = generate(GeneratorConfig(num_events=num_events, accounts=accounts, seed=11))
    now_us = max(r.event_time_us for r in records if r.event_time_us) + 10**9 if records else 0
    out = []
    for i, record in enumerate(records):
        try:
            out.append(parse_payment(record.payload, SourceRef("sim", 0, i), now_us))
        except ParseError:
            continue
    # Conflicting copies (same id, other content), later in the source than the original.
    for n, original in enumerate(out[10:400:40]):
        out.append(
            original._replace(
                amount_minor=original.amount_minor + 1,
                fingerprint="conflict-" + original.fingerprint,
                source=SourceRef("sim", 0, len(records) + n),
            )
        )
    return out, len(truth.bursts)


TRAFFIC, BURSTS = _traffic()


def _stamped(t: object) -> TimestampedValue:
    return TimestampedValue(t, Timestamp(micros=t.event_time_us))  # type: ignore[attr-defined]


def _masked() -> List[MaskedTransaction]:
    tokenizer = Tokenizer(KEY)
    kept, _, _ = first_copies(TRAFFIC)
    return [mask_transaction(t, tokenizer) for t in kept]


def test_use_batch_follows_boundedness_and_the_run_mode() -> None:
    with TestPipeline() as p:
        bounded = p | beam.Create([1])
        assert use_batch(bounded, "auto", streaming=False)
        assert not use_batch(bounded, "auto", streaming=True)
        assert not use_batch(bounded, "stream", streaming=False)
        assert use_batch(bounded, "batch", streaming=True)
        with pytest.raises(ValueError):
            use_batch(bounded, "fast", streaming=False)


def test_a_batch_path_refuses_an_unbounded_input() -> None:
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    p = TestPipeline(options=options)
    stream = p | TestStream().add_elements([_stamped(TRAFFIC[0])])
    for step in (DeduplicateTransactions(batch=True), EnrichFeatures(batch=True), VelocityFraud(batch=True)):
        with pytest.raises(ValueError, match="bounded"):
            stream | step


def test_shards_are_stable_and_keep_a_key_together() -> None:
    assert shard_of("acct-000001", 64) == shard_of("acct-000001", 64)
    assert {shard_of(f"acct-{i}", 8) for i in range(200)} == set(range(8))
    with TestPipeline() as p:
        grouped = (
            p
            | beam.Create([("a", 1), ("b", 2), ("a", 3), ("c", 4)])
            | GroupIntoShards(lambda kv: kv[0], shards=2)
            | beam.Map(lambda s: sorted(s[1]))
        )
        # every key's records in one list, whatever the shard count
        expected = {}
        for key, value in [("a", 1), ("b", 2), ("a", 3), ("c", 4)]:
            expected.setdefault(shard_of(key, 2), []).append((key, value))
        assert_that(grouped, equal_to([sorted(v) for v in expected.values()]))
    with pytest.raises(ValueError):
        GroupIntoShards(lambda r: r, shards=0)


def test_shard_lists_round_trip_their_records_with_their_classes() -> None:
    from transforms.batching import ShardRecords, ShardRecordsCoder
    from transforms.dedup import _conflict
    from transforms.enrich import AccountHistory, features

    masked = _masked()[:50]
    enriched = [features(m, AccountHistory()) for m in masked]
    letters = [_conflict(t).value for t in TRAFFIC[:5]]
    records = ShardRecords([*TRAFFIC[:50], *masked, *enriched, *letters, ("a", 1), [1, "b"]])
    coder = ShardRecordsCoder()
    impl = coder.get_impl()
    back = impl.decode(impl.encode(records))
    assert type(back) is ShardRecords and back == records
    assert [type(r) for r in back] == [type(r) for r in records]
    assert {type(r.source) for r in back[:50]} == {SourceRef}
    assert {type(r.txn) for r in back[100:150]} == {MaskedTransaction}


@pytest.mark.parametrize("batch,shards", [(False, 0), (True, 1), (True, 7), (True, 64)])
def test_dedup_paths_keep_one_copy_per_id_and_dead_letter_conflicts(batch: bool, shards: int) -> None:
    kept, duplicates, conflicts = first_copies(TRAFFIC)
    assert duplicates > 0 and conflicts, "the traffic must hold exact and conflicting duplicates"
    step = DeduplicateTransactions(batch=True, shards=shards) if batch else DeduplicateTransactions()
    with TestPipeline() as p:
        out = p | beam.Create(TRAFFIC) | beam.Map(_stamped) | step
        if batch:  # the earliest copy in the source is the one kept
            unique = out.unique | "Key" >> beam.Map(lambda t: (t.transaction_id, t.source.offset))
            dead = out[DEAD_LETTER_TAG] | "Dead" >> beam.Map(lambda d: (d.reason, d.source.offset))
            assert_that(unique, equal_to([(t.transaction_id, t.source.offset) for t in kept]), label="u")
            want = [("conflicting_duplicate", t.source.offset) for t in conflicts]
            assert_that(dead, equal_to(want), label="d")
        else:  # the first copy to arrive is kept: compare ids
            unique = out.unique | "Key" >> beam.Map(lambda t: t.transaction_id)
            dead = out[DEAD_LETTER_TAG] | "Dead" >> beam.Map(lambda d: (d.reason, d.transaction_id))
            assert_that(unique, equal_to([t.transaction_id for t in kept]), label="u")
            want_ids = [("conflicting_duplicate", t.transaction_id) for t in conflicts]
            assert_that(dead, equal_to(want_ids), label="d")


@pytest.mark.parametrize("batch", [False, True])
def test_enrich_paths_equal_the_plain_function(batch: bool) -> None:
    masked = _masked()
    expected = list(enrich_in_order(masked))
    assert len(expected) == len(masked)
    with TestPipeline() as p:
        out = p | beam.Create(masked) | beam.Map(_stamped) | EnrichFeatures(batch=batch, shards=5)
        assert_that(out, equal_to(expected))


@pytest.mark.parametrize("judge_until", [None, "middle"])
@pytest.mark.parametrize("path", ["batch", "state", "windows"])
def test_velocity_paths_equal_the_plain_function(path: str, judge_until: object) -> None:
    masked = _masked()
    times = sorted(m.event_time_us for m in masked)
    until = times[len(times) // 2] if judge_until == "middle" else None
    refs = [(m.account_id, (m.event_time_us, m.transaction_id)) for m in masked]
    expected = judge_bursts(refs, VelocityRule(), until)
    if until is None:
        assert len(expected) == BURSTS
    else:
        assert 0 < len(expected) < BURSTS
    kwargs = {"batch": True, "shards": 3} if path == "batch" else {"impl": path}
    with TestPipeline() as p:
        out = p | beam.Create(masked) | beam.Map(_stamped) | VelocityFraud(judge_until_us=until, **kwargs)
        assert_that(out, equal_to(expected))


def _table_rows(path: str) -> Dict[str, List[str]]:
    skip = {"ingested_at", "detected_at", "received_at"}  # processing time of each write
    conn = duckdb.connect(path, read_only=True)
    try:
        out = {}
        for table in ("payment_transactions", "fraud_alerts", "dead_letters"):
            cols = [r[0] for r in conn.execute(f"DESCRIBE {table}").fetchall() if r[0] not in skip]
            out[table] = sorted(
                repr(r) for r in conn.execute(f"SELECT {', '.join(cols)} FROM {table}").fetchall()
            )
        return out
    finally:
        conn.close()


def _whole_graph_tables(work: str, runs: Dict[str, List[str]], timeout_s: float) -> Dict[str, Any]:
    """``python -m beam_pipeline`` once per run (its flags), on the same simulated input: the
    tables each wrote."""
    key = os.path.join(work, "hmac.key")
    with open(key, "w", encoding="utf-8") as handle:
        handle.write("ab" * 32)
    env = dict(os.environ, PYTHONPATH=ROOT)
    tables = {}
    for mode, flags in runs.items():
        warehouse = os.path.join(work, f"{mode}.duckdb")
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "beam_pipeline",
                "--num_events=2500",
                "--sim_accounts=150",
                *flags,
                f"--warehouse=duckdb:{warehouse}",
                f"--hmac_key_file={key}",
                "--no_summary",
            ],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        tables[mode] = _table_rows(warehouse)
    return tables


def test_whole_graph_batch_equals_stream(tmp_path: object) -> None:
    """``python -m beam_pipeline`` with each execution mode: the same three tables."""
    modes = {mode: [f"--execution_mode={mode}"] for mode in ("batch", "stream")}
    tables = _whole_graph_tables(str(tmp_path), modes, timeout_s=900)
    assert {t: len(r) for t, r in tables["batch"].items()} == {t: len(r) for t, r in tables["stream"].items()}
    assert all(tables["batch"].values())
    assert tables["batch"] == tables["stream"]


def test_whole_graph_batch_equals_a_streaming_run(tmp_path: object) -> None:
    """As above, with the stream side a real streaming run (``--streaming``: Beam's
    streaming DirectRunner, the BundleBasedDirectRunner; ``beam_pipeline.profile``)."""
    runs = {"batch": ["--execution_mode=batch"], "stream": ["--execution_mode=stream", "--streaming"]}
    tables = _whole_graph_tables(str(tmp_path), runs, timeout_s=300)
    assert all(tables["batch"].values())
    assert tables["batch"] == tables["stream"]
