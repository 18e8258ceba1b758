"""Each driver equals the books in a plain loop; on input in event-time order they agree.

``transforms/batch.py`` groups a bounded input into lists by account and decides them in
event-time order, remembering every id; ``transforms/streaming.py`` keeps the books in
keyed state and decides on arrival. Both run the steps of ``transforms/steps.py``. These
tests run both on the same simulated traffic (every injection: duplicates, malformed
payloads, bursts, out-of-order and late payments, plus conflicting copies on the same
and on other accounts) and compare each with the kernels in a plain loop in its order.
Then they run the whole graph both ways on traffic in event-time order per account,
where the two agree (``kernels/books.py``, "The order of decisions").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta
from typing import Any, Dict, List, Tuple

import apache_beam as beam
import duckdb
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to

from beam_pipeline.graph import use_batch_driver
from beam_pipeline.options import PaystreamOptions
from kernels.books import (
    FOREVER,
    NEW,
    Pending,
    SeenIds,
    check_ids,
    conflict_letter,
    decide_in_event_time,
    decide_in_order,
    read_order,
    row_event_order,
)
from kernels.card_testing import CardTestingRule
from kernels.masking import KeySource, Tokenizer, mask_transaction
from kernels.parse import parse_or_dead_letter
from kernels.rules import Rules
from kernels.velocity import VelocityRule
from schemas.records import MaskedTransaction, SourceRef
from simulator.generator import GeneratorConfig, generate
from transforms.batch import BatchPayments
from transforms.lists import MergeLists, RecordList, RecordListCoder, group_of, split_by_key
from transforms.steps import EngineSettings
from transforms.streaming import StreamingPayments

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = b"k" * 32
RULES = Rules((VelocityRule(), CardTestingRule()))


def _with_conflicts(records: List[Any]) -> List[bytes]:
    """The payloads of simulator records, with conflicting copies (same id, other content;
    on the same account and on another) a few payloads after their first, dated a second
    after it."""
    payloads = [r.payload for r in records]
    for n, at in enumerate(range(400, 10, -40)):
        try:
            message = json.loads(payloads[at])
            if n % 2:
                message["amount"] = "1.01"
            else:
                message["account_id"] = "acct-elsewhere"
            later = datetime.fromisoformat(message["event_time"]) + timedelta(seconds=1)
            message["event_time"] = later.isoformat()
        except (ValueError, TypeError, KeyError, AttributeError):
            continue
        payloads.insert(at + 3, json.dumps(message).encode())
    return payloads


def _traffic(num_events: int = 1500, accounts: int = 60) -> Tuple[List[Tuple[bytes, SourceRef]], int]:
    """Raw payloads of one simulator run, in emission order, with conflicting copies; its
    burst count."""
    records, truth = generate(GeneratorConfig(num_events=num_events, accounts=accounts, seed=11))
    payloads = _with_conflicts(records)
    return [(payload, SourceRef("sim", 0, i)) for i, payload in enumerate(payloads)], len(truth.bursts)


def in_event_time_order(records: List[Any]) -> List[Any]:
    """Simulator records in event-time order (a stable sort: a copy stays after its first;
    a malformed record keeps its place after the one before it)."""
    keyed, last = [], 0
    for i, record in enumerate(records):
        last = record.event_time_us if record.event_time_us is not None else last
        keyed.append((last, i, record))
    return [record for _, _, record in sorted(keyed, key=lambda k: k[:2])]


TRAFFIC, BURSTS = _traffic()


def _expected(settings: EngineSettings, id_groups: int, event_time: bool) -> Dict[str, List[Any]]:
    """The kernels in a plain loop, in event-time order (a bounded run) or in the order
    read (a streaming run that receives the payments in that order)."""
    tokenizer, now_us = Tokenizer(KEY), int(time.time() * 1_000_000)
    pending, letters = [], []
    for raw, source in TRAFFIC:
        result = parse_or_dead_letter(raw, source, now_us, int(settings.max_future_skew_s * 1_000_000))
        if hasattr(result, "fingerprint"):
            pending.append(Pending(mask_transaction(result, tokenizer), result.fingerprint))
        else:
            letters.append(result)
    rows, alerts = [], []
    if event_time:
        decided = decide_in_event_time(pending, RULES, settings.history_ttl_us)
    else:
        decided = decide_in_order(pending, RULES, settings.horizon_us, settings.history_ttl_us)
    for verdict, txn, row, raised in decided:
        if verdict is NEW:
            rows.append(row)
            alerts.extend(raised)
        elif verdict != "duplicate":
            letters.append(conflict_letter(txn, " on this account"))
    if settings.global_ids:
        stored = []
        order, horizon = (row_event_order, FOREVER) if event_time else (read_order, settings.horizon_us)
        for group in split_by_key(
            sorted(rows, key=order), lambda r: r.txn.transaction_id, id_groups
        ).values():
            kept, _, conflicts = check_ids(SeenIds(), group, horizon)
            stored.extend(kept)
            letters.extend(conflict_letter(r.txn, where) for r, where in conflicts)
        rows = stored
    return {"rows": rows, "alerts": alerts, "letters": letters}


@pytest.mark.parametrize(
    "driver, settings, id_groups",
    [
        pytest.param(BatchPayments, EngineSettings(batch_groups=1), 1, id="batch-1-group"),
        pytest.param(BatchPayments, EngineSettings(batch_groups=7), 7, id="batch-7-groups"),
        pytest.param(BatchPayments, EngineSettings(dedup_scope="account"), 0, id="batch-account-scope"),
        pytest.param(StreamingPayments, EngineSettings(), 8, id="stream-8-keys"),
        # a key per account, and no id check: which copy on another account reaches the id
        # check first is the order of the keys' bundles, not the order read
        pytest.param(
            StreamingPayments,
            EngineSettings(account_keys=0, dedup_scope="account"),
            0,
            id="stream-a-key-per-account",
        ),
    ],
)
def test_each_driver_equals_the_books_in_its_order(
    driver: Any, settings: EngineSettings, id_groups: int
) -> None:
    """The batch driver equals the books in event-time order; the streaming driver, fed
    in the order read, the books in that order."""
    expected = _expected(settings, id_groups, event_time=driver is BatchPayments)
    assert len(expected["alerts"]) >= BURSTS > 0
    assert any(letter.reason == "conflicting_duplicate" for letter in expected["letters"])
    with TestPipeline() as p:
        out = p | beam.Create(TRAFFIC) | driver(RULES, KeySource(key=KEY), settings)
        assert_that(out.transactions, equal_to(expected["rows"]), label="rows")
        assert_that(out.alerts, equal_to(expected["alerts"]), label="alerts")
        assert_that(out.dead_letters, equal_to(expected["letters"]), label="dead letters")


def test_the_driver_follows_boundedness_and_the_run_mode() -> None:
    def batch(mode: str, streaming: bool, pcoll: Any) -> bool:
        opts = PaystreamOptions([f"--execution_mode={mode}"] + (["--streaming"] if streaming else []))
        return use_batch_driver(pcoll, opts)

    with TestPipeline() as p:
        bounded = p | beam.Create([1])
        assert batch("auto", False, bounded)
        assert not batch("auto", True, bounded)
        assert not batch("stream", False, bounded)
        assert batch("batch", True, bounded)


def test_the_batch_driver_refuses_an_unbounded_input() -> None:
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    p = TestPipeline(options=options)
    stream = p | TestStream().add_elements([TRAFFIC[0]])
    with pytest.raises(ValueError, match="bounded"):
        stream | BatchPayments(RULES, KeySource(key=KEY))
    with pytest.raises(ValueError, match="bounded"):
        use_batch_driver(stream, PaystreamOptions(["--execution_mode=batch"]))


def test_groups_are_stable_and_keep_a_key_together() -> None:
    assert group_of("acct-000001", 64) == group_of("acct-000001", 64)
    assert {group_of(f"acct-{i}", 8) for i in range(200)} == set(range(8))
    records = [("a", 1), ("b", 2), ("a", 3), ("c", 4)]
    parts = [split_by_key(records[:2], lambda kv: kv[0], 2), split_by_key(records[2:], lambda kv: kv[0], 2)]
    with TestPipeline() as p:
        merged = (
            p
            | beam.Create([item for part in parts for item in part.items()])
            | MergeLists()
            | beam.Map(lambda kv: sorted(kv[1]))
        )
        # every key's records in one list, whatever the group count
        expected: Dict[int, List[Any]] = {}
        for key, value in records:
            expected.setdefault(group_of(key, 2), []).append((key, value))
        assert_that(merged, equal_to([sorted(v) for v in expected.values()]))


def test_record_lists_round_trip_their_records_with_their_classes() -> None:
    from kernels.features import AccountHistory, features

    parsed = [parse_or_dead_letter(raw, src, 2**62, 0) for raw, src in TRAFFIC[:200]]
    txns = [t for t in parsed if hasattr(t, "fingerprint")][:50]
    tokenizer = Tokenizer(KEY)
    masked = [mask_transaction(t, tokenizer) for t in txns]
    enriched = [features(m, AccountHistory()) for m in masked]
    letters = [conflict_letter(m, "") for m in masked[:5]]
    records = RecordList([*txns, *masked, *enriched, *letters, ("a", 1), [1, "b"]])
    impl = RecordListCoder().get_impl()
    back = impl.decode(impl.encode(records))
    assert type(back) is RecordList and back == records
    assert [type(r) for r in back] == [type(r) for r in records]
    assert {type(r.source) for r in back[: len(txns)]} == {SourceRef}
    assert {type(r.txn) for r in enriched} == {MaskedTransaction}


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
    """``python -m beam_pipeline`` once per run (its flags), on the same input: simulated
    traffic with conflicting copies, in event-time order per account (the condition under
    which a streaming run agrees with a bounded one). The tables each wrote."""
    key = os.path.join(work, "hmac.key")
    with open(key, "w", encoding="utf-8") as handle:
        handle.write("ab" * 32)
    records, _ = generate(GeneratorConfig(num_events=2500, accounts=150))
    source = os.path.join(work, "in-order.jsonl")
    with open(source, "wb") as handle:
        for payload in _with_conflicts(in_event_time_order(records)):
            handle.write(payload.replace(b"\n", b" ") + b"\n")
    env = dict(os.environ, PYTHONPATH=ROOT)
    tables = {}
    for mode, flags in runs.items():
        warehouse = os.path.join(work, f"{mode}.duckdb")
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "beam_pipeline",
                "--source=file",
                f"--input={source}",
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
    streaming DirectRunner, the BundleBasedDirectRunner; ``beam_pipeline.runner_setup``)."""
    runs = {"batch": ["--execution_mode=batch"], "stream": ["--execution_mode=stream", "--streaming"]}
    tables = _whole_graph_tables(str(tmp_path), runs, timeout_s=300)
    assert all(tables["batch"].values())
    assert tables["batch"] == tables["stream"]
