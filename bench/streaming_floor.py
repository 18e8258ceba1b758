"""The runner's floor for ``bench/streaming.py``: Kafka -> decode -> count, and nothing else.

    python -m bench.streaming_floor --kafka_bootstrap_servers=H:P --kafka_topic=T \
        --metrics_port=P [runner flags, as for python -m beam_pipeline]

The same read as paystream (``KafkaPayloads``), the same runner set-up (local Flink,
checkpoints, bundles, Python workers: ``beam_pipeline.runner_setup``), then one step that
decodes each payload with ``json.loads`` and counts it as ``payments_in``: what any graph
on this runner pays before doing any work of its own.
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Any, List, Optional

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipeline import runner_setup as paystream
from beam_pipeline.kafka import KafkaPayloads
from beam_pipeline.kafka import expansion_service as kafka_expansion_service
from beam_pipeline.options import PaystreamOptions
from transforms import telemetry


class _DecodeAndCount(beam.DoFn):
    def __init__(self) -> None:
        self._n = 0

    def start_bundle(self) -> None:
        self._n = 0

    def process(self, payload: Any) -> None:
        try:
            json.loads(payload[0])
        except ValueError:  # the simulator's malformed payloads count too
            pass
        self._n += 1

    def finish_bundle(self) -> None:
        telemetry.count("payments_in", self._n)


def main(argv: Optional[List[str]] = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="paystream-floor-") as scratch, contextlib.ExitStack() as stack:
        args, _ = paystream.flink_streaming_args(args, scratch)
        options = PipelineOptions(args)
        opts = options.view_as(PaystreamOptions)
        paystream.runner_defaults(options)
        telemetry.serve(opts.metrics_port)
        if True:
            native = paystream.flink_streaming(options) and not opts.kafka_expansion_service
            service = kafka_expansion_service(
                stack, opts.kafka_expansion_service, opts.kafka_java_worker_address, runner_native=native
            )
            p = beam.Pipeline(runner=paystream.make_runner(options), options=options)
            (
                p
                | "Kafka"
                >> KafkaPayloads(
                    opts.kafka_bootstrap_servers,
                    opts.kafka_topic,
                    opts.kafka_consumer_group,
                    expansion_service=service,
                    runner_native=native,
                )
                | "DecodeAndCount" >> beam.ParDo(_DecodeAndCount())
            )
            p.run().wait_until_finish()


if __name__ == "__main__":
    main()
