"""The one ``PipelineOptions`` subclass of paystream.

Read it with ``options.view_as(PaystreamOptions)``. Flags Beam knows
(``--runner``, ``--streaming``, ...) pass through to Beam untouched.
"""

from __future__ import annotations

import argparse
import difflib
from typing import List, NoReturn

from apache_beam.options.pipeline_options import PipelineOptions

from kernels.rules import DEFAULT_RULES, RULES, add_rule_options
from kernels.velocity import VelocityRule
from schemas.observability import CONSUMER_GROUP, REDIS_KEY_PREFIX
from transforms.steps import EngineSettings

__all__ = ["DEFAULT_WAREHOUSE", "PaystreamOptions", "SOURCES", "refuse_unknown_flags"]

SOURCES = ("simulator", "file", "kafka")
DEFAULT_WAREHOUSE = "duckdb:paystream-out/paystream.duckdb"
# The defaults are given once: the engine's by EngineSettings (transforms/steps.py), the
# velocity rule's by VelocityRule (kernels/velocity.py).
_ENGINE = EngineSettings()
_VELOCITY = VelocityRule()


class PaystreamOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser) -> None:  # type: ignore[no-untyped-def]
        src = parser.add_argument_group("source")
        src.add_argument(
            "--source",
            choices=SOURCES,
            default="simulator",
            help="where payments come from (default: the in-process simulator)",
        )
        src.add_argument("--input", default=None, help="JSON-lines file or glob, for --source=file")
        src.add_argument(
            "--num_events",
            type=int,
            default=3000,
            help="payments the simulator emits, all injections included (default 3000)",
        )
        src.add_argument("--sim_seed", type=int, default=42, help="simulator seed (default 42)")
        src.add_argument("--sim_accounts", type=int, default=500, help="simulator accounts (default 500)")
        src.add_argument(
            "--truth",
            default=None,
            help="ground-truth JSON written by `python -m simulator.generate`, to score a file run",
        )

        kafka = parser.add_argument_group("kafka")
        kafka.add_argument("--kafka_bootstrap_servers", default=None, help="Kafka bootstrap servers")
        kafka.add_argument("--kafka_topic", default="payments", help="Kafka topic (default payments)")
        kafka.add_argument("--kafka_consumer_group", default=CONSUMER_GROUP, help="Kafka consumer group")
        kafka.add_argument(
            "--kafka_max_num_records",
            type=int,
            default=None,
            help="stop the Kafka read after this many records (bounded runs, tests)",
        )
        kafka.add_argument(
            "--kafka_java_worker_address",
            default=None,
            help="HOST:PORT of the Beam Java worker pool that runs KafkaIO (default: start one "
            "locally; on Kubernetes: the TaskManager sidecar, e.g. localhost:50001)",
        )
        kafka.add_argument(
            "--kafka_until_end",
            default=False,
            action="store_true",
            help="read from where the group stopped to the topic's current end, then finish "
            "(a bounded catch-up run)",
        )
        kafka.add_argument(
            "--kafka_replay_s",
            type=float,
            default=None,
            help="when the group has committed offsets, start this much event time earlier, so "
            "state lost in a restart is rebuilt (default: velocity window + allowed lateness; 0: off)",
        )
        kafka.add_argument(
            "--checkpoint_dir",
            default=None,
            help="streaming on Flink: keep checkpoints in this directory when the job stops, and "
            "resume a new run from the newest one (Kafka offsets and all state; no replay)",
        )
        kafka.add_argument(
            "--flink_buffer_timeout_ms",
            type=int,
            default=10,
            help="streaming on local Flink: how long a network buffer waits to fill before it is "
            "sent between steps (Flink's execution.buffer-timeout; Flink's own default is 100)",
        )
        kafka.add_argument(
            "--kafka_expansion_service",
            default=None,
            help="address of a running Java expansion service for ReadFromKafka",
        )

        proc = parser.add_argument_group("processing")
        proc.add_argument(
            "--hmac_key_file",
            default=None,
            help="file holding the secret key for card/email tokens (hex or raw, >= 16 bytes). "
            "Local DuckDB runs without it create one beside the warehouse.",
        )
        proc.add_argument(
            "--dedup_horizon_s",
            type=float,
            default=_ENGINE.dedup_horizon_s,
            help="event-time horizon of de-duplication, seconds (default %(default)s)",
        )
        proc.add_argument(
            "--max_future_skew_s",
            type=float,
            default=_ENGINE.max_future_skew_s,
            help="event times further than this in the future are dead-lettered (default %(default)s)",
        )
        proc.add_argument(
            "--rules",
            default=DEFAULT_RULES,
            help=f"the fraud rules of the run, comma-separated, from: {', '.join(RULES)} "
            f"(default {DEFAULT_RULES}; kernels/rules.py)",
        )
        proc.add_argument(
            "--velocity_threshold",
            type=int,
            default=_VELOCITY.threshold,
            help="payments per window that raise an alert (default %(default)s)",
        )
        proc.add_argument(
            "--velocity_window_s",
            type=int,
            default=_VELOCITY.size_s,
            help="sliding window size, seconds (default %(default)s)",
        )
        proc.add_argument(
            "--velocity_period_s",
            type=int,
            default=_VELOCITY.period_s,
            help="sliding window period, seconds (default %(default)s)",
        )
        proc.add_argument(
            "--execution_mode",
            choices=("auto", "batch", "stream"),
            default="auto",
            help="which driver runs the steps: stream = the books in keyed state, each payment "
            "decided on arrival; batch = a bounded input grouped into lists by account (same "
            "results); auto = batch for a bounded source in a batch run",
        )
        proc.add_argument(
            "--batch_groups",
            type=int,
            default=_ENGINE.batch_groups,
            help="batch: the lists accounts and transaction ids are grouped into; each is held in "
            "memory at once (default %(default)s)",
        )
        proc.add_argument(
            "--account_keys",
            type=int,
            default=_ENGINE.account_keys,
            help="streaming: keys of the account step, each a stable group of accounts whose books "
            "are kept as one ledger (default %(default)s; at least the parallelism it should use; "
            "0: a key per account)",
        )
        proc.add_argument(
            "--dedup_scope",
            choices=("global", "account"),
            default=_ENGINE.dedup_scope,
            help="global: a transaction id sent again on another account is a conflict too "
            "(one more keyed step, by transaction id); account: copies are looked for within "
            "the account only",
        )
        proc.add_argument(
            "--allowed_lateness_s",
            type=int,
            default=_VELOCITY.allowed_lateness_s,
            help="lateness accepted by the velocity windows, seconds (default %(default)s)",
        )
        proc.add_argument(
            "--history_ttl_s",
            type=float,
            default=_ENGINE.history_ttl_s,
            help="event time after which an idle account's feature history is forgotten, seconds "
            "(default %(default)s: 7 days)",
        )

        rds = parser.add_argument_group("redis")
        rds.add_argument(
            "--redis_url",
            default=None,
            help="write fraud alerts to this Redis (redis://HOST:PORT/DB, or rediss:// for TLS); "
            "off when absent. The password goes in --redis_password_file, never in the URL",
        )
        rds.add_argument(
            "--redis_password_file",
            default=None,
            help="file holding the Redis password (AUTH), read by each worker at setup",
        )
        rds.add_argument(
            "--redis_key_prefix",
            default=REDIS_KEY_PREFIX,
            help="prefix of every Redis key (default paystream:)",
        )
        rds.add_argument(
            "--redis_alert_ttl_s",
            type=int,
            default=7 * 24 * 3600,
            help="expiry of each alert's hash and replay guard, seconds (default 7 days)",
        )
        rds.add_argument(
            "--redis_stream_maxlen",
            type=int,
            default=100_000,
            help="approximate length cap of the alerts stream (XADD MAXLEN ~, default 100000)",
        )
        rds.add_argument(
            "--redis_batch_size",
            type=int,
            default=None,
            help="alerts per Redis round trip (default: 1 when streaming, each alert written as it "
            "is decided; 500 in batch runs)",
        )

        out = parser.add_argument_group("output")
        out.add_argument(
            "--warehouse",
            default=DEFAULT_WAREHOUSE,
            help="where rows go: duckdb:PATH or bigquery:PROJECT:DATASET (default %(default)s)",
        )

        bq = parser.add_argument_group("bigquery")
        bq.add_argument(
            "--bq_write_method",
            choices=("STREAMING_INSERTS", "STORAGE_WRITE_API"),
            default="STREAMING_INSERTS",
            help="how rows reach BigQuery: STREAMING_INSERTS (insert ids = primary keys; default) or "
            "STORAGE_WRITE_API (a Java cross-language transform: Dataflow, not the emulator)",
        )
        bq.add_argument(
            "--bq_triggering_frequency_s",
            type=float,
            default=None,
            help="flush batched streaming inserts at least this often, seconds (off: one shuffle "
            "per bundle); the commit interval of STORAGE_WRITE_API in streaming runs",
        )
        bq.add_argument(
            "--bq_batch_size",
            type=int,
            default=500,
            help="rows per streaming insert request, and ids per lookup of the stored payments (default 500, at most 10000)",
        )
        bq.add_argument(
            "--bq_emulator_host",
            default=None,
            help="HOST:PORT (or http://HOST:PORT) of a BigQuery emulator to write to instead of "
            "BigQuery, e.g. the bqemulator of scripts/bqemulator.sh (tests, local runs)",
        )
        out.add_argument(
            "--summary",
            default=True,
            action="store_true",
            help="print the end-of-run summary (default on)",
        )
        out.add_argument("--no_summary", dest="summary", action="store_false")
        out.add_argument("--summary_json", default=None, help="also write the summary as JSON to this path")
        out.add_argument(
            "--metrics_port",
            type=int,
            default=None,
            help="serve Prometheus /metrics on this port while the pipeline runs (0: a free port)",
        )
        out.add_argument(
            "--flink_metrics_port",
            default=None,
            help="local Flink only: serve Flink's own metrics (Prometheus reporter) on this port "
            "or range, e.g. 9249 or 9249-9259 (the first free one is taken); off when absent",
        )
        out.add_argument(
            "--metrics_linger_s",
            type=float,
            default=0.0,
            help="keep /metrics up this long after the run, for a last scrape",
        )
        add_rule_options(parser)  # each fraud rule's own flags (kernels/rules.py)


# Flags that are gone, and what to give instead.
REMOVED_FLAGS = {
    "--velocity_impl": "the account books are the one engine: drop it",
    "--redis_dedup": "dedup is the account books' and the id check's (docs/decisions.md): drop it",
    "--redis_dedup_ttl_s": "dedup is the account books' and the id check's (docs/decisions.md): drop it",
    "--stream_shards": "it is --account_keys now",
    "--batch_shards": "it is --batch_groups now",
}


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ValueError(message)


def refuse_unknown_flags(argv: List[str]) -> None:
    """ValueError, in one line, for a removed flag, a flag that looks like a misspelt one of
    ours, or a value a flag refuses (Beam would drop the first two with a warning, and print
    its whole usage for the third). Any other flag passes through to Beam: the Flink
    runner's own (``--checkpointing_interval``, ...) are known only to its job server."""
    from apache_beam.options.pipeline_options import _BeamArgumentParser

    parser = _OneLineParser(allow_abbrev=False)
    PaystreamOptions._add_argparse_args(parser)
    _, unknown = parser.parse_known_args(argv)
    ours = [flag for action in parser._actions for flag in action.option_strings]
    beams = _BeamArgumentParser(allow_abbrev=False)
    for cls in _all_options_classes():
        cls._add_argparse_args(beams)  # type: ignore[attr-defined]
    known = {flag for action in beams._actions for flag in action.option_strings}
    for arg in unknown:
        flag = arg.split("=", 1)[0]
        if not flag.startswith("--") or flag in known:
            continue
        if flag in REMOVED_FLAGS:
            raise ValueError(f"{flag} is gone: {REMOVED_FLAGS[flag]}")
        close = difflib.get_close_matches(flag, ours, n=1, cutoff=0.85)
        if close:
            raise ValueError(
                f"unknown option {flag}: did you mean {close[0]}? (`python -m beam_pipeline --help`)"
            )


def _all_options_classes() -> List[type]:
    found: List[type] = []
    pending = list(PipelineOptions.__subclasses__())
    while pending:
        cls = pending.pop()
        if cls not in found:
            found.append(cls)
            pending.extend(cls.__subclasses__())
    return found
