"""The one paystream graph: raw payloads in, the three tables out, written to the sinks.

    source -> parse and check -> mask -> per account: dedup, features, fraud rules
           -> payment_transactions, fraud_alerts, dead_letters -> sinks

The per-payment kernels live under ``transforms/``; ``build_graph`` drives them with
one of two drivers: the batch driver for a bounded input in a batch run
(``transforms/bounded.py``) and the streaming driver otherwise
(``transforms/streaming.py``: one keyed step per shard of accounts, deciding each
payment on arrival). The older per-step path (``DeduplicateTransactions``,
``EnrichFeatures``, ``VelocityFraud``) remains for ``--redis_dedup`` and
``--velocity_impl=windows`` (README, "Streaming on Flink").

``read_source`` and ``write_outputs`` are the two seams: a source gives raw payloads
(``beam_pipeline.sources``, ``beam_pipeline.kafka``), and every sink takes the tables
(``transforms.sinks``). Nothing here knows which runner runs the graph
(``beam_pipeline.profile`` does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from beam_pipeline.kafka import KafkaRun
from beam_pipeline.options import PaystreamOptions
from beam_pipeline.sources import FileLines, SimulatedPayloads
from schemas.records import DeadLetter, EnrichedTransaction, FraudAlert
from schemas.rows import ALERTS, DEAD_LETTERS, TRANSACTIONS
from simulator.generator import GeneratorConfig
from transforms.batching import GroupIntoShards, use_batch
from transforms.bounded import DEFAULT_CHUNK, BoundedPayments
from transforms.deadletter import DEAD_LETTER_TAG
from transforms.dedup import DeduplicateTransactions
from transforms.enrich import EnrichFeatures
from transforms.masking import MaskPII
from transforms.parse import ParseTransactions, RawPayload
from transforms.rules import rules_from_options
from transforms.sinks import Sink, open_warehouse
from transforms.velocity import VelocityFraud

__all__ = [
    "GraphOutputs",
    "build_graph",
    "read_source",
    "redis_target",
    "simulator_config",
    "sinks",
    "write_outputs",
]


@dataclass
class GraphOutputs:
    transactions: beam.PCollection[EnrichedTransaction]
    alerts: beam.PCollection[FraudAlert]
    dead_letters: beam.PCollection[DeadLetter]

    def tables(self) -> Dict[str, beam.PCollection[Any]]:
        """The outputs by the table they fill: what every sink takes."""
        return {TRANSACTIONS: self.transactions, ALERTS: self.alerts, DEAD_LETTERS: self.dead_letters}


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
    rules = rules_from_options(opts)
    # What both drivers of the account books take: the key, the checks, the horizons.
    books = dict(
        key=key,
        key_path=key_path,
        check_key=check_key,
        max_future_skew_s=opts.max_future_skew_s,
        horizon_s=opts.dedup_horizon_s,
        history_ttl_s=opts.history_ttl_s,
        dedup_scope=opts.dedup_scope,
    )
    if batch and not opts.redis_dedup:
        # The batch driver: chunks of payloads through the same kernels, two groupings of
        # lists (transforms/bounded.py). Redis dedup is a step of its own between dedup
        # and masking, so with it the per-element batch path below runs.
        chunks = raw | "Chunks" >> beam.BatchElements(
            min_batch_size=DEFAULT_CHUNK, max_batch_size=DEFAULT_CHUNK
        )
        out = chunks | "Payments" >> BoundedPayments(rules, shards=shards, **books)
        return GraphOutputs(transactions=out.transactions, alerts=out.alerts, dead_letters=out.dead_letters)
    if not batch and not opts.redis_dedup and velocity_impl(opts) == "state":
        from transforms.streaming import StreamingPayments

        out = raw | "Payments" >> StreamingPayments(rules, shards=opts.stream_shards, **books)
        return GraphOutputs(transactions=out.transactions, alerts=out.alerts, dead_letters=out.dead_letters)
    if [rule.kind for rule in rules] != ["velocity"]:
        raise ValueError(
            "--redis_dedup and --velocity_impl=windows run the velocity rule alone (the per-step "
            f"path); --rules={opts.rules} needs the account steps: drop those flags"
        )
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
    p: beam.Pipeline, opts: PaystreamOptions, kafka: Optional[KafkaRun] = None
) -> beam.PCollection[RawPayload]:
    """The payloads of ``--source``: the simulator, a file, or Kafka (read as ``kafka`` planned)."""
    if opts.source == "simulator":
        return p | "Simulator" >> SimulatedPayloads(simulator_config(opts))
    if opts.source == "file":
        return p | "File" >> FileLines(opts.input)
    if kafka is None:
        raise ValueError("--source=kafka is read through a KafkaRun (beam_pipeline.kafka)")
    return p | "Kafka" >> kafka.read()


def redis_target(opts: PaystreamOptions) -> Any:
    """``--redis_url`` and ``--redis_password_file`` as a ``RedisTarget`` (ValueError if unusable)."""
    if not opts.redis_url:
        raise ValueError("--redis_dedup needs --redis_url")
    from transforms.redis_client import RedisTarget

    return RedisTarget(opts.redis_url, password_file=opts.redis_password_file)


def sinks(opts: PaystreamOptions) -> List[Sink]:
    """The run's sinks: the warehouse (``--warehouse``), and Redis when ``--redis_url`` is set."""
    chosen = [open_warehouse(opts.warehouse).sink(opts)]
    if opts.redis_url:
        from transforms.sinks.redis_alerts import DEFAULT_BATCH_SIZE, RedisAlertSink, WriteAlertsToRedis

        batch_size = opts.redis_batch_size
        if batch_size is None:  # streaming: an alert goes out when decided, not at the bundle's end
            streaming = bool(opts.view_as(StandardOptions).streaming)
            batch_size = 1 if streaming else DEFAULT_BATCH_SIZE
        chosen.append(
            RedisAlertSink(
                WriteAlertsToRedis(
                    redis_target(opts),
                    key_prefix=opts.redis_key_prefix,
                    alert_ttl_s=opts.redis_alert_ttl_s,
                    stream_maxlen=opts.redis_stream_maxlen,
                    batch_size=batch_size,
                )
            )
        )
    return chosen


def write_outputs(outputs: GraphOutputs, opts: PaystreamOptions) -> List[beam.PCollection[DeadLetter]]:
    """Every sink of the run gets the tables it writes; returned: the dead letters of the
    sinks that can refuse a row (each has written its own already)."""
    tables = outputs.tables()
    letters = []
    for sink in sinks(opts):
        written = {t: tables[t] for t in sink.tables} | f"Write {type(sink).__name__}" >> sink
        if isinstance(written, beam.PCollection):
            letters.append(written)
    return letters
