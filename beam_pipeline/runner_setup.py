"""The runner setup: which runner runs the graph, and what it needs to run it well.

``runner_setup(argv)`` turns the command line into a ``RunnerSetup``: the runner (a
streaming Kafka run on the DirectRunner goes to local Flink), Flink's streaming defaults
and the checkpoint a run restores, the local Flink's own configuration, the HMAC key
file, and the runner object itself (``make_runner``). Runner names are known here and
in ``beam_pipeline.kafka`` (how a Kafka read is expanded on each), nowhere else: the
graph (``beam_pipeline.graph``) is the same on every runner.
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
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from apache_beam.options.pipeline_options import (
    DebugOptions,
    FlinkRunnerOptions,
    GoogleCloudOptions,
    JobServerOptions,
    PipelineOptions,
    PortableOptions,
    SetupOptions,
    StandardOptions,
)

from beam_pipeline.java_provider import local_java_provider
from beam_pipeline.options import PaystreamOptions, refuse_unknown_flags
from transforms.sinks import open_warehouse

__all__ = [
    "FLINK_STREAMING_DEFAULTS",
    "NoStreamingRunner",
    "RunnerSetup",
    "flink_cluster",
    "flink_streaming",
    "flink_streaming_args",
    "latest_checkpoint",
    "local_flink_conf",
    "local_streaming_runner",
    "make_runner",
    "quiet_gc",
    "resolve_key_file",
    "restore_on_local_flink",
    "runner_setup",
    "runner_defaults",
]

_LOG = logging.getLogger(__name__)


def runner_name(options: PipelineOptions) -> str:
    return (options.view_as(StandardOptions).runner or "DirectRunner").lower().removesuffix("runner")


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
    if runner_name(options) != "direct":
        return argv, None
    try:
        local_java_provider().flink_job_server_jar()
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


LOCAL_MASTERS = (None, "[auto]", "[local]")


def flink_cluster(options: PipelineOptions) -> Optional[str]:
    """The Flink cluster this run submits its job to (``--flink_master=HOST:PORT``); None for
    local Flink, and for an application jar (it runs wherever it is started)."""
    if runner_name(options) != "flink" or options.view_as(PortableOptions).output_executable_path:
        return None
    master = options.view_as(FlinkRunnerOptions).flink_master
    return None if master in LOCAL_MASTERS else str(master)


def flink_streaming(options: PipelineOptions) -> bool:
    return bool(options.view_as(StandardOptions).streaming) and runner_name(options) == "flink"


# What a streaming run on Flink needs, each kept when the user gives it: checkpoints (Kafka
# offsets are committed when one completes) and state in RocksDB (off the JVM heap,
# checkpointed incrementally: ``state.backend.incremental`` in the local Flink's
# configuration; the production cluster sets the same in k8s-flink). Bundles close after
# 20,000 payments or 25 ms (the runner's option is maxBundleTimeMills): a payment waits for
# its bundle's end at each Python step, and each bundle costs the Python worker a fixed
# price. Measured with `python -m bench.soak` at 2,000 payments/s (docs/performance.md,
# "Steady under load"): 25 ms gave alert p50 about 100 ms where 50 ms gave 180-190 ms (one
# subtask per step) and 500 ms 1.1-1.3 s.
# A 64 MB Python state cache keeps each key's ledger token read once per worker (the logs it
# also holds, read only after a restore, are evicted as it fills).
FLINK_STREAMING_DEFAULTS = {
    "checkpointing_interval": "10000",
    "state_backend": "rocksdb",
    "max_bundle_size": "20000",
    "max_bundle_time_mills": "25",
    "max_cache_memory_usage_mb": "64",
}


# What an application jar leaves to the cluster's configuration (interval, state backend,
# where checkpoints go).
CLUSTER_CHECKPOINTING = ("checkpointing_interval", "state_backend")


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
    it, checkpoints go to ``scratch_dir`` and die with the run; on a cluster, to the
    cluster's own ``state.checkpoints.dir`` (a directory of this process would be gone
    before the job is, and every TaskManager must reach it).
    """
    options = PipelineOptions(argv)
    if not flink_streaming(options):
        return argv, None
    cluster = flink_cluster(options)
    jar = bool(options.view_as(PortableOptions).output_executable_path)
    given = {arg.split("=", 1)[0].lstrip("-") for arg in argv if arg.startswith("--")}
    # An application jar takes its checkpointing from the cluster that runs it (the
    # FlinkDeployment's flinkConfiguration): options baked in here would override it
    owned = CLUSTER_CHECKPOINTING if jar else ()
    extra = [
        f"--{name}={value}"
        for name, value in FLINK_STREAMING_DEFAULTS.items()
        if name not in given and name not in owned
    ]
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
    elif jar:
        pass  # the cluster's state.checkpoints.dir
    elif "state_backend_storage_path" not in given and cluster:
        from beam_pipeline.flink_rest import FlinkRest

        try:
            configured = FlinkRest(cluster).config().get("state.checkpoints.dir")
        except OSError as err:  # refused, unreachable, timed out (URLError is an OSError)
            raise ValueError(
                f"could not reach the Flink cluster at --flink_master={cluster}: {err}"
            ) from None
        if not configured:
            raise ValueError(
                f"the Flink cluster at {cluster} has no state.checkpoints.dir: pass "
                "--checkpoint_dir=DIR, a directory every TaskManager can reach"
            )
        extra.append(f"--state_backend_storage_path={configured}")
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
    if options.view_as(FlinkRunnerOptions).flink_master not in LOCAL_MASTERS:
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


PROMETHEUS_REPORTER_FACTORY = "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"

# The heap of the local Flink's JVM (the job server): its state is off the heap (RocksDB).
LOCAL_FLINK_HEAP = "1g"


def runner_defaults(options: PipelineOptions) -> None:
    """Flink without set-up: the job server jar from our cache; local Flink with LOOPBACK
    Python workers; an application jar that runs where it is started."""
    if runner_name(options) != "flink":
        return
    flink = options.view_as(FlinkRunnerOptions)
    portable = options.view_as(PortableOptions)
    if portable.output_executable_path or flink_cluster(options):
        if not flink.flink_job_server_jar:
            # Beam would otherwise fetch the job server of its own default Flink (2.x),
            # which does not speak to a 1.19 cluster
            flink.flink_job_server_jar = local_java_provider().flink_job_server_jar()
        if portable.output_executable_path:
            # The jar's job takes the execution environment of the cluster that starts it
            # ([local] would make it start a Flink of its own, which a cluster refuses)
            flink.flink_master = "[auto]"
        elif not portable.environment_type:
            raise ValueError(
                f"--flink_master={flink.flink_master} runs the Python steps on the cluster's "
                "TaskManagers: say where, with --environment_type=EXTERNAL "
                "--environment_config=HOST:PORT (a worker pool: python -m beam_pipeline.worker) "
                "or --environment_type=LOOPBACK (in this process, which must then outlive the job)"
            )
        return
    if flink.flink_master in LOCAL_MASTERS:
        flink.flink_master = "[local]"
        if not flink.flink_job_server_jar:
            flink.flink_job_server_jar = local_java_provider().flink_job_server_jar()
        if not portable.environment_type:
            portable.environment_type = "LOOPBACK"
        if portable.environment_type == "LOOPBACK" and flink.parallelism in (None, -1):
            # LOOPBACK workers are threads of this process, under one GIL: a second subtask
            # per step adds bundles (and their cost) but no Python capacity (measured in
            # docs/performance.md, "Steady under load")
            flink.parallelism = 1
        server = options.view_as(JobServerOptions)
        properties = list(server.job_server_jvm_properties or [])
        if not any(p.startswith("-Xmx") for p in properties):
            # the state is in RocksDB, off the heap: a heap without a cap only grows
            server.job_server_jvm_properties = [*properties, f"-Xmx{LOCAL_FLINK_HEAP}"]


def resolve_key_file(opts: PaystreamOptions, remote: bool = False) -> str:
    """The HMAC key file: the option, or for a local DuckDB run one made beside it.

    ``remote``: the graph is built here and run elsewhere (an application jar): the
    file exists only where the workers run (a mounted secret), so it is not opened here.
    """
    if opts.hmac_key_file:
        if not remote and not os.path.exists(opts.hmac_key_file):
            raise ValueError(f"--hmac_key_file {opts.hmac_key_file} does not exist")
        return opts.hmac_key_file
    local = open_warehouse(opts.warehouse).local_path
    if local is None:
        raise ValueError("--hmac_key_file is required unless the warehouse is a local DuckDB file")
    path = os.path.join(os.path.dirname(os.path.abspath(local)), "hmac.key")
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
        _LOG.warning("created a local HMAC key at %s; production runs pass --hmac_key_file", path)
    return path


def make_runner(options: PipelineOptions) -> Any:
    """The DirectRunner means Beam's in-process runners, chosen explicitly.

    Batch graphs run on the FnApiRunner and streaming graphs on the
    BundleBasedDirectRunner. Beam's DirectRunner would first try to download
    and start Prism; we skip that so a run behaves the same on every machine
    (pass ``--runner=PrismRunner`` to use Prism).
    """
    std = options.view_as(StandardOptions)
    if runner_name(options) != "direct":
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


def element_safe_time_flush() -> None:
    """Make the Python SDK's time-based output flush cut only between elements.

    With ``data_buffer_time_limit_ms`` the SDK's output stream is flushed by a timer
    thread (``data_plane.TimeBasedBufferingClosableOutputStream``) under a lock that the
    writing of an element does not take, so a flush can send half an element. The Java
    runner then fails the bundle (``EOFException`` in ``BeamFnDataInboundObserver``, seen
    here as "Multiplexer hanging up" and "Unknown process bundle instruction id") and
    the job restarts, again and again. Here every element is written under that lock, so
    a flush comes before or after it. Done once per process; harmless without the
    experiment (the size-based stream has no such lock).
    """
    from apache_beam.runners.worker import bundle_processor

    op = bundle_processor.DataOutputOperation
    if getattr(op.process, "paystream_element_safe", False):
        return

    def process(self: Any, windowed_value: Any) -> None:
        stream = self.output_stream
        lock = getattr(stream, "_flush_lock", None)
        if lock is None:
            self.windowed_coder_impl.encode_to_stream(windowed_value, stream, True)
        else:
            with lock:
                self.windowed_coder_impl.encode_to_stream(windowed_value, stream, True)
        stream.maybe_flush()

    process.paystream_element_safe = True  # type: ignore[attr-defined]
    process.__wrapped_beam__ = op.process  # type: ignore[attr-defined]
    op.process = process  # type: ignore[method-assign]


def job_server_stops_cleanly() -> None:
    """Make Beam's job server JVM go when the run stops, always.

    Beam's ``SubprocessJobServer.stop`` removes its temporary directory before it stops
    the JVM; when a part of that directory is already gone (the job server deletes the
    staged artifacts of a job it submitted to a cluster), ``rmtree`` raises, and the JVM
    is left running under PID 1. Here the JVM is stopped first, and the directory is
    removed without raising. Done once per process.
    """
    import shutil

    from apache_beam.runners.portability.job_server import SubprocessJobServer

    if getattr(SubprocessJobServer.stop, "paystream_stops_cleanly", False):
        return

    def stop(self: Any) -> Any:
        try:
            return self._server.stop() if self._server is not None else None
        finally:
            if self._local_temp_root:
                shutil.rmtree(self._local_temp_root, ignore_errors=True)
                self._local_temp_root = None

    stop.paystream_stops_cleanly = True  # type: ignore[attr-defined]
    SubprocessJobServer.stop = stop  # type: ignore[method-assign]


def data_time_limit_ms(options: PipelineOptions) -> int:
    """The run's ``data_buffer_time_limit_ms`` experiment (0: none): Beam's, which makes the
    runner and the Python workers send a step's data every so many ms instead of at 1 MB
    or at the bundle's end."""
    return int(options.view_as(DebugOptions).lookup_experiment("data_buffer_time_limit_ms", 0))


# Collect the youngest generation every this many net allocations (Python's default: 700).
_GC_YOUNG_THRESHOLD = 1_000_000


@contextlib.contextmanager
def quiet_gc() -> Iterator[None]:
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


@dataclass
class RunnerSetup:
    """How this run runs: its options, completed; what the runner needs; where it resumes."""

    options: PipelineOptions
    opts: PaystreamOptions
    key_path: str
    remote: bool  # the graph is built here and run elsewhere (a Flink application jar)
    cluster: Optional[str]  # the Flink cluster the job is submitted to (--flink_master)
    resumed_from: Optional[str]  # the Flink checkpoint this run restores
    note: Optional[str]  # why the runner is not the one asked for

    @property
    def runner(self) -> str:
        return runner_name(self.options)

    @property
    def label(self) -> str:
        return self.note or (self.options.view_as(StandardOptions).runner or "DirectRunner")

    @property
    def flink_streaming(self) -> bool:
        return flink_streaming(self.options)

    @property
    def job_name(self) -> Optional[str]:
        return self.options.view_as(GoogleCloudOptions).job_name

    def announce(self) -> None:
        """Say where the job runs, when that is not this process."""
        if self.cluster:
            print(
                f"job {self.job_name} on the Flink cluster at {self.cluster} (Web UI there); "
                "stopping this run cancels it",
                file=sys.stderr,
                flush=True,
            )

    def stop_elsewhere(self) -> None:
        """Cancel the run's job on its cluster, through the REST API: Beam's cancel does
        not reach a job on a remote cluster, and a stopped run's job would outlive it."""
        from beam_pipeline.flink_rest import FlinkRest

        if self.cluster is None or not self.job_name:
            return
        try:
            cancelled = FlinkRest(self.cluster).cancel_named(self.job_name)
        except OSError as err:  # the cluster is gone or does not answer
            print(
                f"paystream: could not cancel job {self.job_name} on {self.cluster} ({err}): "
                "cancel it in the Web UI",
                file=sys.stderr,
                flush=True,
            )
            return
        if cancelled:
            print(f"paystream: cancelled Flink job {cancelled}", file=sys.stderr, flush=True)

    @property
    def describe_elsewhere(self) -> Optional[Callable[[], str]]:
        """The progress line of a run whose steps do not run in this process (None: this
        process's counts): a job on a cluster, from its REST API; an application jar."""
        from beam_pipeline.flink_rest import FlinkRest

        if self.remote:
            jar = self.options.view_as(PortableOptions).output_executable_path
            return lambda: f"writing the application jar {jar}"
        if self.cluster is None or not self.job_name:
            return None
        rest, name = FlinkRest(self.cluster), self.job_name
        return lambda: rest.describe(name)

    @property
    def local_expansion(self) -> bool:
        """Cross-language transforms (KafkaIO) are expanded here, not by the runner: on
        every runner but Dataflow, whose workers run Beam's own Java container."""
        return self.runner != "dataflow"


@contextlib.contextmanager
def runner_setup(argv: List[str]) -> Iterator[RunnerSetup]:
    """The runner setup of a run from its command line; checkpoints of a run without
    ``--checkpoint_dir`` live in a scratch directory that goes when the block ends."""
    refuse_unknown_flags(list(argv))
    args, note = local_streaming_runner(list(argv))
    if note:
        print(note, file=sys.stderr, flush=True)
    with contextlib.ExitStack() as stack:
        resumed_from: Optional[str] = None
        scratch: Optional[str] = None
        if flink_streaming(PipelineOptions(args)):
            scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="paystream-checkpoints-"))
            args, resumed_from = flink_streaming_args(args, scratch)
        options = PipelineOptions(args)
        opts = options.view_as(PaystreamOptions)
        if scratch is not None:
            entries = {
                "execution.buffer-timeout": f"{max(0, opts.flink_buffer_timeout_ms)} ms",
                # RocksDB (the default state backend) checkpoints only what changed
                "state.backend.incremental": "true",
            }
            if opts.flink_metrics_port:
                # Flink's own metrics (numRestarts, checkpoints, records in/out, the job's Beam
                # counters) at http://127.0.0.1:PORT/metrics, as the cluster serves them on 9249;
                # the reporter is on the job server's classpath (paystream_dev.local_kafka)
                entries["metrics.reporter.prom.factory.class"] = PROMETHEUS_REPORTER_FACTORY
                entries["metrics.reporter.prom.port"] = str(opts.flink_metrics_port)
            if resumed_from:
                restore_on_local_flink(options, resumed_from, scratch, entries)
                _LOG.warning("resuming from Flink checkpoint %s (offsets and state)", resumed_from)
            else:
                local_flink_conf(options, scratch, entries)
        if data_time_limit_ms(options) > 0:
            element_safe_time_flush()  # for the workers of this process (LOOPBACK)
        options.view_as(SetupOptions).save_main_session = False
        runner_defaults(options)
        remote = bool(options.view_as(PortableOptions).output_executable_path)
        key_path = resolve_key_file(opts, remote)
        cluster = flink_cluster(options)
        if runner_name(options) == "flink":
            job_server_stops_cleanly()
        if cluster and not options.view_as(GoogleCloudOptions).job_name:
            # the name the run finds its job by on the cluster, to cancel it
            options.view_as(GoogleCloudOptions).job_name = f"paystream-{secrets.token_hex(4)}"
        yield RunnerSetup(options, opts, key_path, remote, cluster, resumed_from, note)
