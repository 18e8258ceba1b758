"""The one paystream graph: raw payloads in, the three tables out, written to the sinks.

    source -> ParseAndMask -> Accounts (dedup, features, fraud rules) -> Ids
           -> payment_transactions, fraud_alerts, dead_letters -> sinks

``build_graph`` runs the steps (``transforms/steps.py``) with one of two drivers: the
batch driver for a bounded input in a batch run (``transforms/batch.py``) and the
streaming driver otherwise (``transforms/streaming.py``). ``read_source`` and
``write_outputs`` are the two seams: a source gives raw payloads
(``beam_pipeline.sources``, ``beam_pipeline.kafka``), and every sink takes the tables
(``transforms.sinks``). Nothing here knows which runner runs the graph
(``beam_pipeline.runner_setup`` does).
"""

from __future__ import annotations

from typing import List, Optional

import apache_beam as beam
from apache_beam.options.pipeline_options import StandardOptions

from beam_pipeline.kafka import KafkaRun
from beam_pipeline.options import PaystreamOptions
from beam_pipeline.sources import FileLines, SimulatedPayloads
from kernels.masking import KeySource
from kernels.parse import RawPayload
from kernels.rules import rules_from_options
from schemas.records import DeadLetter
from simulator.generator import GeneratorConfig
from transforms.batch import BatchPayments
from transforms.sinks import Sink, open_warehouse
from transforms.steps import EngineSettings, PaymentOutputs
from transforms.streaming import StreamingPayments

__all__ = [
    "build_graph",
    "read_source",
    "simulator_config",
    "sinks",
    "write_outputs",
]


def use_batch_driver(raw: beam.PCollection[RawPayload], opts: PaystreamOptions) -> bool:
    """``--execution_mode``: ``auto`` means the batch driver for a bounded input in a batch run."""
    mode = opts.execution_mode
    if mode == "batch" and not raw.is_bounded:
        raise ValueError("--execution_mode=batch needs a bounded source (--source=file or simulator)")
    if mode != "auto":
        return mode == "batch"
    return bool(raw.is_bounded) and not opts.view_as(StandardOptions).streaming


def build_graph(
    raw: beam.PCollection[RawPayload],
    opts: PaystreamOptions,
    key: Optional[bytes] = None,
    key_path: Optional[str] = None,
    check_key: bool = True,
) -> PaymentOutputs:
    """Raw payloads -> enriched rows, alerts, dead letters, by the batch or the streaming
    driver (``use_batch_driver``)."""
    driver = BatchPayments if use_batch_driver(raw, opts) else StreamingPayments
    keys = KeySource(key, key_path, check_key)
    return raw | "Payments" >> driver(rules_from_options(opts), keys, EngineSettings.from_options(opts))


def simulator_config(opts: PaystreamOptions) -> GeneratorConfig:
    if opts.num_events <= 0:
        raise ValueError("--num_events must be > 0")
    return GeneratorConfig(num_events=opts.num_events, accounts=opts.sim_accounts, seed=opts.sim_seed)


def read_source(
    p: beam.Pipeline, opts: PaystreamOptions, kafka: Optional[KafkaRun] = None, check_input: bool = True
) -> beam.PCollection[RawPayload]:
    """The payloads of ``--source``: the simulator, a file (``check_input``: it must exist
    here), or Kafka (read as ``kafka`` planned)."""
    if opts.source == "simulator":
        return p | "Simulator" >> SimulatedPayloads(simulator_config(opts))
    if opts.source == "file":
        return p | "File" >> FileLines(opts.input, check=check_input)
    if kafka is None:
        raise ValueError("--source=kafka is read through a KafkaRun (beam_pipeline.kafka)")
    return p | "Kafka" >> kafka.read()


def sinks(opts: PaystreamOptions) -> List[Sink]:
    """The run's sinks: the warehouse (``--warehouse``), and Redis when ``--redis_url`` is set."""
    chosen = [open_warehouse(opts.warehouse).sink(opts)]
    if opts.redis_url:
        from transforms.sinks.redis_alerts import DEFAULT_BATCH_SIZE, RedisAlertSink, WriteAlertsToRedis
        from transforms.sinks.redis_client import RedisTarget

        batch_size = opts.redis_batch_size
        if batch_size is None:  # streaming: an alert goes out when decided, not at the bundle's end
            streaming = bool(opts.view_as(StandardOptions).streaming)
            batch_size = 1 if streaming else DEFAULT_BATCH_SIZE
        chosen.append(
            RedisAlertSink(
                WriteAlertsToRedis(
                    RedisTarget(opts.redis_url, password_file=opts.redis_password_file),
                    key_prefix=opts.redis_key_prefix,
                    alert_ttl_s=opts.redis_alert_ttl_s,
                    stream_maxlen=opts.redis_stream_maxlen,
                    batch_size=batch_size,
                )
            )
        )
    return chosen


def write_outputs(outputs: PaymentOutputs, opts: PaystreamOptions) -> List[beam.PCollection[DeadLetter]]:
    """Every sink of the run gets the tables it writes; returned: the dead letters of the
    sinks that can refuse a row (each has written its own already)."""
    tables = outputs.tables()
    letters = []
    for sink in sinks(opts):
        written = {t: tables[t] for t in sink.tables} | f"Write {type(sink).__name__}" >> sink
        if isinstance(written, beam.PCollection):
            letters.append(written)
    return letters
