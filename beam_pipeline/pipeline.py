"""``run``: one paystream run, from its command line to its summary, as a short list of steps.

setup    = runner_setup(argv)       the runner and what it needs (beam_pipeline.runner_setup)
kafka    = KafkaRun.prepare(...)    where the group stands, what to read (beam_pipeline.kafka)
graph    = build_graph(read_source) the graph (beam_pipeline.graph)
write_outputs(graph)                every sink takes the tables (transforms.sinks)
run to the end; kafka.commit()      a bounded read commits where it stopped
summary                             counts, the warehouse read back, the ground truth
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

import apache_beam as beam
from apache_beam.runners.runner import PipelineResult

from beam_pipeline.graph import build_graph, read_source, write_outputs
from beam_pipeline.kafka import KafkaRun, NothingToRead
from beam_pipeline.options import PaystreamOptions
from beam_pipeline.runner_setup import make_runner, quiet_gc, runner_setup
from transforms import telemetry
from transforms.sinks import open_warehouse

__all__ = ["NothingToRead", "RunOutcome", "run"]


@dataclass
class RunOutcome:
    result: PipelineResult
    elapsed_s: float
    summary: Optional[Dict[str, Any]]


def run(argv: Optional[List[str]] = None) -> RunOutcome:
    """Build the graph from command-line flags, run it to completion, summarise."""
    from beam_pipeline.summary import ground_truth, report

    with contextlib.ExitStack() as stack:
        setup = stack.enter_context(runner_setup(list(sys.argv[1:] if argv is None else argv)))
        opts = setup.opts
        truth, total = ground_truth(opts)
        _serve_metrics(opts)
        started = time.monotonic()
        kafka = None
        if opts.source == "kafka":
            kafka = KafkaRun.prepare(
                opts,
                stack,
                resumed=bool(setup.resumed_from),
                flink_streaming=setup.flink_streaming,
                local_expansion=setup.local_expansion,
            )
            total = kafka.total
        pipeline = beam.Pipeline(runner=make_runner(setup.options), options=setup.options)
        outputs = build_graph(
            read_source(pipeline, opts, kafka, check_input=not setup.remote),
            opts,
            key_path=setup.key_path,
            check_key=not setup.remote,
        )
        write_outputs(outputs, opts)
        before = None
        if (opts.summary or opts.summary_json) and not setup.remote and not setup.cluster:
            before = open_warehouse(opts.warehouse).row_counts()  # what the run adds to
        setup.announce()
        result = _run_to_end(pipeline, total, setup.stop_elsewhere, setup.describe_elsewhere)
        if kafka is not None:
            kafka.commit()
    elapsed = time.monotonic() - started
    if opts.metrics_port is not None and opts.metrics_linger_s > 0:
        time.sleep(opts.metrics_linger_s)  # let a scraper collect the final values
    summary = report(result, opts, truth, elapsed, setup.label, before)
    return RunOutcome(result=result, elapsed_s=elapsed, summary=summary)


def _serve_metrics(opts: PaystreamOptions) -> None:
    if opts.metrics_port is not None:
        port = telemetry.serve(opts.metrics_port)
        print(f"metrics: http://127.0.0.1:{port}/metrics", file=sys.stderr, flush=True)


def _run_to_end(
    pipeline: beam.Pipeline,
    total: Optional[int],
    stop_elsewhere: Callable[[], None],
    describe: Optional[Callable[[], str]] = None,
) -> PipelineResult:
    """Run with a progress line, the collector quiet; Ctrl-C cancels the job, and
    ``stop_elsewhere`` stops what runs outside this process (a job on a cluster)."""
    from transforms.progress import Ticker

    with Ticker(total=total, describe=describe), quiet_gc():
        result = pipeline.run()
        try:
            result.wait_until_finish()
        except KeyboardInterrupt:
            with contextlib.suppress(Exception):  # best effort: the runner may be gone already
                result.cancel()
            stop_elsewhere()
            raise
    return result
