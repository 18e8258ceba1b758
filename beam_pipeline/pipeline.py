"""The one paystream graph, and how it is run.

    source -> parse and check -> mask -> per account: dedup, features, velocity
           -> payment_transactions, fraud_velocity_alerts, dead_letters

The per-payment kernels live under ``transforms/``; ``build_graph`` drives them with
one of two drivers: the batch driver for a bounded input in a batch run
(``transforms/bounded.py``) and the streaming driver otherwise
(``transforms/streaming.py``: one keyed step per shard of accounts, deciding each
payment on arrival). The older per-step path (``DeduplicateTransactions``,
``EnrichFeatures``, ``VelocityFraud``) remains for ``--redis_dedup`` and
``--velocity_impl=windows`` (README, "Streaming on Flink"). ``read_source`` and ``write_outputs`` are the two seams; ``run`` resolves
options, picks the runner and prints the summary. Runner-specific details live here
and in ``beam_pipeline.kafka``, nowhere else.
"""

from __future__ import annotations

import contextlib
import gc
import glob
import logging
import os
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions, StandardOptions
from apache_beam.runners.runner import PipelineResult

from beam_pipeline.kafka import KafkaPayloads, ReadPlan, commit_stop_offsets, plan_read
from beam_pipeline.kafka import expansion_service as kafka_expansion_service
from beam_pipeline.options import PaystreamOptions
from beam_pipeline.sources import FileLines, SimulatedPayloads
from schemas.records import DeadLetter, EnrichedTransaction, FraudAlert
from schemas.rows import alert_row, dead_letter_row, transaction_row
from simulator.generator import GeneratorConfig
from transforms import telemetry
from transforms.batching import GroupIntoShards, use_batch
from transforms.bounded import DEFAULT_CHUNK, BoundedPayments
from transforms.deadletter import DEAD_LETTER_TAG
from transforms.dedup import DeduplicateTransactions
from transforms.enrich import EnrichFeatures
from transforms.masking import MaskPII
from transforms.parse import ParseTransactions, RawPayload
from transforms.velocity import VelocityFraud, VelocityRule

__all__ = [
    "GraphOutputs",
    "NothingToRead",
    "RunOutcome",
    "build_graph",
    "read_source",
    "redis_target",
    "resolve_key_file",
    "run",
    "write_outputs",
    "write_redis",
]

_LOG = logging.getLogger(__name__)


@dataclass
class GraphOutputs:
    transactions: beam.PCollection[EnrichedTransaction]
    alerts: beam.PCollection[FraudAlert]
    dead_letters: beam.PCollection[DeadLetter]


def velocity_impl(options: PipelineOptions) -> str:
    """``--velocity_impl``, with ``auto`` resolved: ``state`` (the account books) on every
    runner. ``windows`` (Beam's windowing, the per-step path) only when asked for: no
    runner needs it, and on streaming Flink the windowed count held its alerts back behind
    a stuck watermark in every trial (docs/kafka-without-docker.md)."""
    chosen = options.view_as(PaystreamOptions).velocity_impl
    return "state" if chosen == "auto" else chosen


def build_graph(
    raw: beam.PCollection[RawPayload],
    opts: PaystreamOptions,
    key: Optional[bytes] = None,
    key_path: Optional[str] = None,
    judge_until_us: Optional[int] = None,
    check_key: bool = True,
) -> GraphOutputs:
    """Raw payloads -> enriched rows, alerts, dead letters.

    When ``--execution_mode`` resolves to batch (a bounded source in a batch run),
    the batch driver runs (``transforms/bounded.py``), or with ``--redis_dedup`` the
    keyed steps' batch paths (``transforms/batching.py``).
    """
    batch = use_batch(raw, opts.execution_mode, bool(opts.view_as(StandardOptions).streaming))
    shards = opts.batch_shards
    if batch and not opts.redis_dedup:
        # The batch driver: chunks of payloads through the same kernels, two groupings of
        # lists (transforms/bounded.py). Redis dedup is a step of its own between dedup
        # and masking, so with it the per-element batch path below runs.
        chunks = raw | "Chunks" >> beam.BatchElements(
            min_batch_size=DEFAULT_CHUNK, max_batch_size=DEFAULT_CHUNK
        )
        rule = VelocityRule(
            opts.velocity_threshold, opts.velocity_window_s, opts.velocity_period_s, opts.allowed_lateness_s
        )
        out = chunks | "Payments" >> BoundedPayments(
            rule,
            key=key,
            key_path=key_path,
            check_key=check_key,
            max_future_skew_s=opts.max_future_skew_s,
            shards=shards,
            horizon_s=opts.dedup_horizon_s,
            history_ttl_s=opts.history_ttl_s,
            dedup_scope=opts.dedup_scope,
        )
        return GraphOutputs(transactions=out.transactions, alerts=out.alerts, dead_letters=out.dead_letters)
    if not batch and not opts.redis_dedup and velocity_impl(opts) == "state":
        from transforms.streaming import StreamingPayments

        out = raw | "Payments" >> StreamingPayments(
            VelocityRule(
                opts.velocity_threshold,
                opts.velocity_window_s,
                opts.velocity_period_s,
                opts.allowed_lateness_s,
            ),
            key=key,
            key_path=key_path,
            check_key=check_key,
            max_future_skew_s=opts.max_future_skew_s,
            horizon_s=opts.dedup_horizon_s,
            history_ttl_s=opts.history_ttl_s,
            shards=opts.stream_shards,
            dedup_scope=opts.dedup_scope,
        )
        return GraphOutputs(transactions=out.transactions, alerts=out.alerts, dead_letters=out.dead_letters)
    parsed = raw | "Parse" >> ParseTransactions(
        max_future_skew_s=opts.max_future_skew_s, stamp_event_time=not batch
    )
    unique = parsed.transactions | "Deduplicate" >> DeduplicateTransactions(
        horizon_s=opts.dedup_horizon_s, batch=batch, shards=shards
    )
    kept = unique.unique
    dead_parts = [parsed[DEAD_LETTER_TAG], unique[DEAD_LETTER_TAG]]
    if opts.redis_dedup:  # across restarts too: see transforms/redis_dedup.py for what it keeps
        from transforms.redis_dedup import RedisDeduplicate

        seen = kept | "RedisDeduplicate" >> RedisDeduplicate(
            redis_target(opts), key_prefix=opts.redis_key_prefix, ttl_s=opts.redis_dedup_ttl_s
        )
        kept = seen.unique
        dead_parts.append(seen[DEAD_LETTER_TAG])
    masked = kept | "MaskPII" >> MaskPII(key=key, key_path=key_path, check_key=check_key)
    enrich = EnrichFeatures(history_ttl_s=opts.history_ttl_s, batch=batch, shards=shards)
    velocity = VelocityFraud(
        threshold=opts.velocity_threshold,
        size_s=opts.velocity_window_s,
        period_s=opts.velocity_period_s,
        allowed_lateness_s=opts.allowed_lateness_s,
        impl=velocity_impl(opts),
        judge_until_us=judge_until_us,
        batch=batch,
        shards=shards,
    )
    if batch:
        # Both per-account steps group by account: one grouping feeds both (each of
        # their own would shuffle every payment again).
        accounts = masked | "ShardByAccount" >> GroupIntoShards(lambda t: t.account_id, shards)
        enriched = accounts | "Enrich" >> enrich.on_shards()
        alerts = accounts | "VelocityFraud" >> velocity.on_shards()
    else:
        enriched = masked | "Enrich" >> enrich
        alerts = masked | "VelocityFraud" >> velocity
    dead = tuple(dead_parts) | "DeadLetters" >> beam.Flatten()
    return GraphOutputs(transactions=enriched, alerts=alerts, dead_letters=dead)


def simulator_config(opts: PaystreamOptions) -> GeneratorConfig:
    if opts.num_events <= 0:
        raise ValueError("--num_events must be > 0")
    return GeneratorConfig(num_events=opts.num_events, accounts=opts.sim_accounts, seed=opts.sim_seed)


def read_source(
    p: beam.Pipeline,
    opts: PaystreamOptions,
    kafka_service: Any = None,
    kafka_plan: Optional[ReadPlan] = None,
    runner_native: bool = False,
) -> beam.PCollection[RawPayload]:
    if opts.source == "simulator":
        return p | "Simulator" >> SimulatedPayloads(simulator_config(opts))
    if opts.source == "file":
        return p | "File" >> FileLines(opts.input)
    max_records = opts.kafka_max_num_records
    if opts.kafka_until_end and kafka_plan is not None:
        max_records = kafka_plan.records_to_end
    return p | "Kafka" >> KafkaPayloads(
        opts.kafka_bootstrap_servers,
        opts.kafka_topic,
        opts.kafka_consumer_group,
        expansion_service=kafka_service,
        max_num_records=max_records,
        start_read_time_ms=kafka_plan.start_read_time_ms if kafka_plan is not None else None,
        runner_native=runner_native,
    )


def kafka_replay_s(opts: PaystreamOptions) -> float:
    if opts.kafka_replay_s is not None:
        return max(0.0, opts.kafka_replay_s)
    return float(opts.velocity_window_s + opts.allowed_lateness_s)


class NoStreamingRunner(ValueError):
    """``--streaming --source=kafka`` on the DirectRunner, and local Flink cannot be had."""


def local_streaming_runner(argv: List[str]) -> Tuple[List[str], Optional[str]]:
    """``argv`` with a runner that can stream Kafka, and a note saying so (None: unchanged).

    Beam's streaming DirectRunner cannot run a cross-language read (ReadFromKafka is
    Java): it fails with a stack trace. So a streaming Kafka run on the DirectRunner
    (the default runner) goes to local Flink, embedded in this process with its job
    server jar from the project's cache. When that jar cannot be had, the run stops
    at once with a message naming the flags that work.
    """
    options = PipelineOptions(argv)
    std = options.view_as(StandardOptions)
    opts = options.view_as(PaystreamOptions)
    if not (std.streaming and opts.source == "kafka"):
        return argv, None
    if (std.runner or "DirectRunner").lower() not in ("directrunner", "direct"):
        return argv, None
    try:
        from beam_pipeline.local_kafka import fetch_beam

        fetch_beam()
    except Exception as err:  # noqa: BLE001 - any failure to get the jar ends the run the same way
        raise NoStreamingRunner(
            "--streaming --source=kafka cannot run on the DirectRunner (Beam's streaming "
            "DirectRunner does not run the cross-language Kafka read), and local Flink is not "
            f"available here ({type(err).__name__}: {err}). Use --runner=FlinkRunner with "
            "--flink_master=HOST:PORT or --flink_job_server_jar=PATH, or read the topic in batch: "
            "drop --streaming and add --kafka_until_end."
        ) from None
    kept = list(argv)
    while "--runner" in kept:  # "--runner DirectRunner", as two words
        at = kept.index("--runner")
        del kept[at : at + 2]
    kept = [a for a in kept if not a.startswith("--runner=")]
    note = (
        "runner: local Flink (embedded), for --streaming --source=kafka: Beam's streaming "
        "DirectRunner cannot run the cross-language Kafka read"
    )
    return [*kept, "--runner=FlinkRunner"], note


def flink_streaming(options: PipelineOptions) -> bool:
    std = options.view_as(StandardOptions)
    return bool(std.streaming) and (std.runner or "").lower() in ("flinkrunner", "flink")


# What a streaming run on Flink needs, each kept when the user gives it: checkpoints (Kafka
# offsets are committed when one completes) and state kept in files (the account books
# outgrow Flink's 5 MB in-memory checkpoint limit within minutes). Bundles close after
# 20,000 payments or 50 ms (the runner's option is maxBundleTimeMills): measured with
# `python -m bench.streaming --settings` (README, "Live latency"), 50 ms gave alerts in
# Redis 307 ms after their payment at p50 (708 ms p99) at 1,000 live payments/s, where 500
# ms gave 1,575 ms (2,888 ms), and 5,614 payments/s on a pre-filled topic against 4,566.
# A 256 MB Python state cache keeps each key's ledger token read once per worker.
FLINK_STREAMING_DEFAULTS = {
    "checkpointing_interval": "10000",
    "state_backend": "filesystem",
    "max_bundle_size": "20000",
    "max_bundle_time_mills": "50",
    "max_cache_memory_usage_mb": "256",
}


def latest_checkpoint(directory: str) -> Optional[str]:
    """The newest completed Flink checkpoint under ``directory`` (``<job>/chk-<n>/_metadata``)."""
    found = glob.glob(os.path.join(directory, "*", "chk-*", "_metadata"))
    return os.path.dirname(max(found, key=os.path.getmtime)) if found else None


def flink_streaming_args(argv: List[str], scratch_dir: str) -> Tuple[List[str], Optional[str]]:
    """``argv`` with what a Flink streaming run lacks, and the checkpoint it resumes from.

    ``FLINK_STREAMING_DEFAULTS`` fill in what the user did not give. With
    ``--checkpoint_dir``, checkpoints are kept there when the job is stopped, and
    a new run restores the newest one: the Kafka offsets and all keyed state
    (dedup, enrichment, velocity) as they were, so nothing is replayed. Without
    it, checkpoints go to ``scratch_dir`` and die with the run.
    """
    options = PipelineOptions(argv)
    if not flink_streaming(options):
        return argv, None
    given = {arg.split("=", 1)[0].lstrip("-") for arg in argv if arg.startswith("--")}
    extra = [f"--{name}={value}" for name, value in FLINK_STREAMING_DEFAULTS.items() if name not in given]
    directory = options.view_as(PaystreamOptions).checkpoint_dir
    resumed: Optional[str] = None
    if directory:
        directory = os.path.abspath(directory)
        os.makedirs(directory, exist_ok=True)
        extra += [
            f"--state_backend_storage_path=file://{directory}",
            "--externalized_checkpoints_enabled",
            "--retain_externalized_checkpoints_on_cancellation",
        ]
        if "savepoint_path" not in given:
            resumed = latest_checkpoint(directory)
            if resumed:
                extra.append(f"--savepoint_path=file://{resumed}")
    elif "state_backend_storage_path" not in given:
        extra.append(f"--state_backend_storage_path=file://{os.path.abspath(scratch_dir)}")
    if "savepoint_path" in given:
        at = next(i for i, a in enumerate(argv) if a.split("=", 1)[0] == "--savepoint_path")
        resumed = argv[at].split("=", 1)[1] if "=" in argv[at] else argv[at + 1]
    return [*argv, *extra], resumed


def local_flink_conf(options: PipelineOptions, scratch_dir: str, entries: Dict[str, str]) -> bool:
    """Give the embedded local Flink these settings of its own (``flink-conf.yaml``).

    The local job server reads Flink's configuration from ``FLINK_CONF_DIR``, so the
    entries go into a file there, beside whatever configuration the user already has
    (their value of the same key is replaced). The job server is started after this, by
    this process, and inherits the variable. A remote cluster keeps its own
    configuration: nothing is written, and False is returned.
    """
    from apache_beam.options.pipeline_options import FlinkRunnerOptions

    if options.view_as(FlinkRunnerOptions).flink_master not in (None, "[auto]", "[local]"):
        return False
    conf_dir = os.path.join(scratch_dir, "flink-conf")
    os.makedirs(conf_dir, exist_ok=True)
    lines: List[str] = []
    user_dir = os.environ.get("FLINK_CONF_DIR")
    user_conf = os.path.join(user_dir, "flink-conf.yaml") if user_dir else None
    if (
        user_conf
        and os.path.exists(user_conf)
        and os.path.abspath(user_dir or "") != os.path.abspath(conf_dir)
    ):
        with open(user_conf, encoding="utf-8") as handle:
            lines = [line.rstrip("\n") for line in handle if line.split(":", 1)[0].strip() not in entries]
    lines += [f"{key}: {value}" for key, value in entries.items()]
    with open(os.path.join(conf_dir, "flink-conf.yaml"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    os.environ["FLINK_CONF_DIR"] = conf_dir
    return True


def restore_on_local_flink(
    options: PipelineOptions, checkpoint: str, scratch_dir: str, entries: Optional[Dict[str, str]] = None
) -> None:
    """Make the embedded local Flink restore ``checkpoint`` (with ``entries`` of its own).

    Beam 2.62's Flink runner reads ``--savepoint_path`` only when it submits to a
    remote cluster; for ``[local]`` it is ignored without a word and the job
    starts with empty state. So the restore path goes into the local Flink's own
    configuration (``local_flink_conf``).
    """
    uri = checkpoint if "://" in checkpoint else f"file://{os.path.abspath(checkpoint)}"
    local_flink_conf(options, scratch_dir, {**(entries or {}), "execution.savepoint.path": uri})


def runner_defaults(options: PipelineOptions) -> None:
    """Local Flink without set-up: the job server jar from our cache, LOOPBACK Python workers."""
    std = options.view_as(StandardOptions)
    if (std.runner or "").lower() not in ("flinkrunner", "flink"):
        return
    from apache_beam.options.pipeline_options import FlinkRunnerOptions, PortableOptions

    flink = options.view_as(FlinkRunnerOptions)
    if flink.flink_master in (None, "[auto]", "[local]"):
        flink.flink_master = "[local]"
        if not flink.flink_job_server_jar:
            from beam_pipeline.local_kafka import FLINK_JOB_SERVER_JAR, fetch_beam

            fetch_beam()
            flink.flink_job_server_jar = str(FLINK_JOB_SERVER_JAR)
        portable = options.view_as(PortableOptions)
        if not portable.environment_type:
            portable.environment_type = "LOOPBACK"


def _now_us() -> int:
    return int(time.time() * 1_000_000)


class _RowFn(beam.DoFn):
    """A record to its table's row, stamped with the processing time; measures the latency
    from the payment's event time (the crossing payment's, for an alert) to here, observed
    for the bundle at its end."""

    def __init__(self, table: str) -> None:
        self._table = table
        self._latencies: List[float] = []

    def start_bundle(self) -> None:
        self._latencies = []

    def process(self, record: Any) -> Iterable[Dict[str, Any]]:
        now = _now_us()
        if self._table == "payment_transactions":
            self._latencies.append((now - record.txn.event_time_us) / 1e6)
            yield transaction_row(record, now)
        elif self._table == "fraud_velocity_alerts":
            self._latencies.append((now - record.crossing_txn_time_us) / 1e6)
            yield alert_row(record, now)
        else:
            yield dead_letter_row(record, now)

    def finish_bundle(self) -> None:
        telemetry.observe_many("end_to_end_latency_seconds", self._latencies, table=self._table)
        self._latencies = []


_ROW_STEPS = {
    "payment_transactions": ("transactions", "TransactionRows"),
    "fraud_velocity_alerts": ("alerts", "AlertRows"),
    "dead_letters": ("dead_letters", "DeadLetterRows"),
}


def to_rows(
    outputs: GraphOutputs, tables: Iterable[str] = tuple(_ROW_STEPS)
) -> Dict[str, beam.PCollection[Dict[str, Any]]]:
    """The tables' rows; the ingestion time is the processing time of the row."""
    rows = {}
    for table in tables:
        output, label = _ROW_STEPS[table]
        rows[table] = getattr(outputs, output) | label >> beam.ParDo(_RowFn(table))
    return rows


def write_outputs(outputs: GraphOutputs, warehouse: str, opts: Optional[PaystreamOptions] = None) -> None:
    """The sink seam: every warehouse kind takes the same three row collections.

    ``opts`` carries the BigQuery settings (``--bq_*``); without it BigQuery gets the defaults.
    """
    if warehouse.startswith("duckdb:"):
        from transforms.sinks.duckdb_warehouse import (
            WriteToDuckDB,
            WriteTransactionsToDuckDB,
            parse_duckdb_target,
        )

        path = parse_duckdb_target(warehouse)
        # payments as records, column by column (no row dict); alerts and dead letters as rows
        outputs.transactions | "Write payment_transactions" >> WriteTransactionsToDuckDB(path)
        for table, pcoll in to_rows(outputs, ("fraud_velocity_alerts", "dead_letters")).items():
            pcoll | f"Write {table}" >> WriteToDuckDB(path, table)
        return
    rows = to_rows(outputs)
    if warehouse.startswith("bigquery:"):
        from transforms.sinks.bigquery import WriteToBigQueryWarehouse, emulator_client, parse_bigquery_target

        target = parse_bigquery_target(warehouse)
        bq = opts if opts is not None else PipelineOptions([]).view_as(PaystreamOptions)
        rows | "Write bigquery" >> WriteToBigQueryWarehouse(
            target,
            method=bq.bq_write_method,
            triggering_frequency_s=bq.bq_triggering_frequency_s,
            batch_size=bq.bq_batch_size,
            test_client=emulator_client(bq.bq_emulator_host, target.project),
        )
        return
    raise ValueError(f"unknown --warehouse {warehouse!r}; supported: duckdb:PATH, bigquery:PROJECT:DATASET")


def redis_target(opts: PaystreamOptions) -> Any:
    """``--redis_url`` and ``--redis_password_file`` as a ``RedisTarget`` (ValueError if unusable)."""
    if not opts.redis_url:
        raise ValueError("--redis_dedup needs --redis_url")
    from transforms.sinks.redis_alerts import RedisTarget

    return RedisTarget(opts.redis_url, password_file=opts.redis_password_file)


def write_redis(outputs: GraphOutputs, opts: PaystreamOptions) -> None:
    """The Redis seam, beside ``write_outputs``: alerts to Redis when ``--redis_url`` is set."""
    if not opts.redis_url:
        return
    from transforms.sinks.redis_alerts import DEFAULT_BATCH_SIZE, WriteAlertsToRedis

    batch_size = opts.redis_batch_size
    if batch_size is None:  # streaming: an alert goes out when decided, not at the bundle's end
        streaming = bool(opts.view_as(StandardOptions).streaming)
        batch_size = 1 if streaming else DEFAULT_BATCH_SIZE
    outputs.alerts | "Write redis_alerts" >> WriteAlertsToRedis(
        redis_target(opts),
        key_prefix=opts.redis_key_prefix,
        alert_ttl_s=opts.redis_alert_ttl_s,
        stream_maxlen=opts.redis_stream_maxlen,
        batch_size=batch_size,
    )


def resolve_key_file(opts: PaystreamOptions, remote: bool = False) -> str:
    """The HMAC key file: the option, or for a local DuckDB run one made beside it.

    ``remote``: the graph is built here and run elsewhere (an application jar): the
    file exists only where the workers run (a mounted secret), so it is not opened here.
    """
    if opts.hmac_key_file:
        if not remote and not os.path.exists(opts.hmac_key_file):
            raise ValueError(f"--hmac_key_file {opts.hmac_key_file} does not exist")
        return opts.hmac_key_file
    if not opts.warehouse.startswith("duckdb:"):
        raise ValueError("--hmac_key_file is required unless the warehouse is a local DuckDB file")
    from transforms.sinks.duckdb_warehouse import parse_duckdb_target

    path = os.path.join(os.path.dirname(os.path.abspath(parse_duckdb_target(opts.warehouse))), "hmac.key")
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
        _LOG.warning("created a local HMAC key at %s; production runs pass --hmac_key_file", path)
    return path


def _runner(options: PipelineOptions) -> Any:
    """The DirectRunner means Beam's in-process runners, chosen explicitly.

    Batch graphs run on the FnApiRunner and streaming graphs on the
    BundleBasedDirectRunner. Beam's DirectRunner would first try to download
    and start Prism; we skip that so a run behaves the same on every machine
    (pass ``--runner=PrismRunner`` to use Prism).
    """
    std = options.view_as(StandardOptions)
    name = (std.runner or "DirectRunner").lower()
    if name not in ("directrunner", "direct"):
        return std.runner
    if std.streaming:
        from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner

        return BundleBasedDirectRunner()
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner, worker_handlers
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    # The in-process worker's user-state cache weighs every value it stores
    # with objsize, which walks the globals of every loaded module: with
    # Beam[gcp] loaded that is ~1 ms per state write, 4-5x the cost of the
    # whole stateful step. Reads go to the runner's in-memory state either
    # way, so the cache buys nothing here; it is turned off.
    worker_handlers.STATE_CACHE_SIZE_MB = 0

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    return fn_runner.FnApiRunner(
        provision_info=fn_runner.ExtendedProvisionInfo(
            beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)
        )
    )


# Collect the youngest generation every this many net allocations (Python's default: 700).
_GC_YOUNG_THRESHOLD = 1_000_000


@contextlib.contextmanager
def _quiet_gc() -> Iterator[None]:
    """Python's cyclic collector, tuned for a run that executes in this process.

    The local runners execute the graph here and allocate a few containers per
    record at every step. With the default thresholds the collector ran about
    2,700 times on 50,000 payments, 17 of them full passes over every object of
    the interpreter (Beam, DuckDB, pyarrow and our modules included): measured,
    a sixth of the run's CPU time. The objects that exist when the run starts
    (modules, the graph) are moved out of the collector's reach
    (``gc.freeze``), and the youngest generation is collected every
    ``_GC_YOUNG_THRESHOLD`` allocations instead of 700. Cycles are still
    collected, only in fewer, larger passes; the previous settings come back
    when the run ends.

    Why a million: the records are named tuples, which the collector never
    untracks (it untracks plain tuples only), so every young collection walks
    every record made since the last one, and the survivors again in the
    older generations. At 50,000 the collector took 1.0 of 8.7 CPU seconds of
    a 200,000-payment batch run; at a million, 0.13, with the same peak memory.
    """
    previous = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(_GC_YOUNG_THRESHOLD, previous[1], previous[2])
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        gc.unfreeze()


class NothingToRead(Exception):
    """A bounded Kafka run found no records to read."""


@dataclass
class RunOutcome:
    result: PipelineResult
    elapsed_s: float
    summary: Optional[Dict[str, Any]]


def run(argv: Optional[List[str]] = None) -> RunOutcome:
    """Build the graph from command-line flags, run it to completion, summarise."""
    from beam_pipeline.summary import build_summary, print_summary
    from simulator.generator import GroundTruth, generate
    from transforms.progress import Ticker

    args = list(sys.argv[1:] if argv is None else argv)
    args, runner_note = local_streaming_runner(args)
    if runner_note:
        print(runner_note, file=sys.stderr, flush=True)
    checkpoints: Optional[tempfile.TemporaryDirectory[str]] = None
    resumed_from: Optional[str] = None
    if flink_streaming(PipelineOptions(args)):
        checkpoints = tempfile.TemporaryDirectory(prefix="paystream-checkpoints-")  # gone after the run
        args, resumed_from = flink_streaming_args(args, checkpoints.name)
    options = PipelineOptions(args)
    opts = options.view_as(PaystreamOptions)
    if checkpoints is not None:
        entries = {"execution.buffer-timeout": f"{max(0, opts.flink_buffer_timeout_ms)} ms"}
        if resumed_from:
            restore_on_local_flink(options, resumed_from, checkpoints.name, entries)
            _LOG.warning("resuming from Flink checkpoint %s (offsets and state)", resumed_from)
        else:
            local_flink_conf(options, checkpoints.name, entries)
    options.view_as(SetupOptions).save_main_session = False
    from apache_beam.options.pipeline_options import PortableOptions

    remote = bool(options.view_as(PortableOptions).output_executable_path)
    key_path = resolve_key_file(opts, remote)

    truth: Optional[GroundTruth] = None
    total: Optional[int] = None
    if opts.source == "simulator":
        config = simulator_config(opts)
        _, truth = generate(config)  # deterministic: the same payments the pipeline makes
        total = config.num_events
    elif opts.truth:
        import json

        with open(opts.truth, encoding="utf-8") as handle:
            truth = GroundTruth.from_json(json.load(handle))

    runner_defaults(options)
    if opts.metrics_port is not None:
        port = telemetry.serve(opts.metrics_port)
        print(f"metrics: http://127.0.0.1:{port}/metrics", file=sys.stderr, flush=True)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        kafka_service = None
        native_read = False
        plan: Optional[ReadPlan] = None
        if opts.source == "kafka":
            if not opts.kafka_bootstrap_servers:
                raise ValueError("--source=kafka needs --kafka_bootstrap_servers=HOST:PORT")
            total = opts.kafka_max_num_records
            # A run restored from a Flink checkpoint has its offsets and state: no replay.
            replay_s = 0.0 if resumed_from else kafka_replay_s(opts)
            if opts.kafka_until_end or opts.kafka_max_num_records or replay_s > 0:
                # Asks the broker where the group stands: not for an unbounded run without
                # replay (e.g. building a Flink application jar, where no broker is at hand).
                plan = plan_read(
                    opts.kafka_bootstrap_servers,
                    opts.kafka_topic,
                    opts.kafka_consumer_group,
                    replay_s,
                    None if opts.kafka_until_end else opts.kafka_max_num_records,
                )
            if plan is not None and plan.start_read_time_ms is not None:
                _LOG.warning(
                    "group %s resumes %.0f s of event time before its committed offsets (--kafka_replay_s)",
                    opts.kafka_consumer_group,
                    replay_s,
                )
            if opts.kafka_until_end and plan is not None:
                total = plan.records_to_end
                if total == 0:
                    raise NothingToRead(
                        f"group {opts.kafka_consumer_group} is at the end of {opts.kafka_topic}"
                    )
            runner_name = (options.view_as(StandardOptions).runner or "").lower()
            native_read = flink_streaming(options) and not opts.kafka_expansion_service
            if runner_name not in ("dataflowrunner", "dataflow"):
                kafka_service = kafka_expansion_service(
                    stack,
                    opts.kafka_expansion_service,
                    opts.kafka_java_worker_address,
                    runner_native=native_read,
                )
            # On Dataflow, Beam's own expansion service and Java container run KafkaIO: Dataflow
            # workers have the container runtime our local runs lack.
        pipeline = beam.Pipeline(runner=_runner(options), options=options)
        raw = read_source(pipeline, opts, kafka_service, plan, runner_native=native_read)
        judge_until_us = None
        if plan is not None and plan.last_read_time_ms is not None:
            # A read that stops mid-topic: bursts the stream's watermark would not yet have
            # passed are left to the next run (which replays them, see --kafka_replay_s).
            judge_until_us = plan.last_read_time_ms * 1000 - opts.allowed_lateness_s * 1_000_000
        outputs = build_graph(
            raw, opts, key_path=key_path, judge_until_us=judge_until_us, check_key=not remote
        )
        write_outputs(outputs, opts.warehouse, opts)
        write_redis(outputs, opts)
        with Ticker(total=total), _quiet_gc():
            result = pipeline.run()
            try:
                result.wait_until_finish()
            except KeyboardInterrupt:
                with contextlib.suppress(Exception):  # best effort: the runner may be gone already
                    result.cancel()
                raise
        if plan is not None and (opts.kafka_until_end or opts.kafka_max_num_records):
            commit_stop_offsets(
                opts.kafka_bootstrap_servers, opts.kafka_topic, opts.kafka_consumer_group, plan
            )
    elapsed = time.monotonic() - started
    if opts.metrics_port is not None and opts.metrics_linger_s > 0:
        time.sleep(opts.metrics_linger_s)  # let a scraper collect the final values

    summary = None
    if opts.summary or opts.summary_json:
        summary = build_summary(result, opts, truth, elapsed)
        summary["runner"] = runner_note or (options.view_as(StandardOptions).runner or "DirectRunner")
        if opts.summary:
            print_summary(summary)
        if opts.summary_json:
            import json

            with open(opts.summary_json, "w", encoding="utf-8") as handle:
                json.dump(summary, handle, indent=2, sort_keys=True)
    return RunOutcome(result=result, elapsed_s=elapsed, summary=summary)
