#!/usr/bin/env python3
"""Prove Beam Python ReadFromKafka against a real local broker, without Docker.

    python scripts/kafka_probe.py --runner direct            # Python DirectRunner (FnApiRunner)
    python scripts/kafka_probe.py --runner flink             # FlinkRunner, embedded local Flink 1.19
    python scripts/kafka_probe.py --runner both -n 1000 --partitions 2

Steps: start a KRaft broker (python -m paystream_dev), produce N JSON messages with confluent-kafka
(enable.idempotence=true, acks=all, producer-set CreateTime timestamps), then read them back with
ReadFromKafka(with_metadata=True, commit_offset_in_finalize=True, max_num_records=N,
timestamp_policy=create_time_policy) and check: count == N, distinct (partition, offset) == N, every
element's Beam event timestamp == the producer-set timestamp, and event-time FixedWindows counts add
up to N. Prints one JSON line per runner with timings.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from paystream_dev import local_kafka as kafka_local  # noqa: E402
from paystream_dev.local_kafka import KafkaBroker  # noqa: E402

BASE_TS_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: producer-set event time of message 0
STEP_MS = 100  # message i has event time BASE + i*100 ms -> 10 per second
WINDOW_S = 10


def produce(bootstrap: str, topic: str, n: int) -> float:
    from confluent_kafka import Producer

    t0 = time.monotonic()
    errors: list = []
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
        }
    )

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)

    for i in range(n):
        ts = BASE_TS_MS + i * STEP_MS
        v = {"payment_id": f"p{i:06d}", "account": f"acct-{i % 37}", "amount_cents": 100 + i, "ts": ts}
        p.produce(
            topic,
            key=f"acct-{i % 37}".encode(),
            value=json.dumps(v).encode(),
            timestamp=ts,
            on_delivery=on_delivery,
        )
        p.poll(0)
    left = p.flush(30)
    if left or errors:
        raise RuntimeError(f"produce failed: {left} undelivered, errors={errors[:3]}")
    return time.monotonic() - t0


# ---------------------------------------------------------------- pipeline


def consumer_config(bootstrap: str, group: str) -> dict:
    return {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "isolation.level": "read_committed",
        "enable.auto.commit": "false",
        "auto.offset.reset": "earliest",
    }


def build(p, bootstrap: str, topic: str, n: int, expansion_service, out_prefix: str, group: str):
    import apache_beam as beam
    from apache_beam.io.kafka import ReadFromKafka
    from apache_beam.transforms.window import FixedWindows

    class Check(beam.DoFn):
        def process(self, row, ts=beam.DoFn.TimestampParam):
            v = json.loads(bytes(row.value))
            ts_ms = int(round(ts.micros / 1000))
            yield {
                "p": row.partition,
                "o": row.offset,
                "ts_ok": ts_ms == v["ts"] == row.timestamp,
                "type": row.timestampTypeName,
            }

    recs = (
        p
        | "ReadFromKafka"
        >> ReadFromKafka(
            consumer_config=consumer_config(bootstrap, group),
            topics=[topic],
            with_metadata=True,
            commit_offset_in_finalize=True,
            max_num_records=n,
            timestamp_policy=ReadFromKafka.create_time_policy,
            expansion_service=expansion_service,
        )
        | "Check" >> beam.ParDo(Check())
    )

    summary = (
        recs
        | "One" >> beam.Map(lambda r: ("all", r))
        | "Group" >> beam.GroupByKey()
        | "Summ"
        >> beam.MapTuple(
            lambda _, rs: json.dumps(
                {
                    "count": len(rs := list(rs)),
                    "distinct_offsets": len({(r["p"], r["o"]) for r in rs}),
                    "ts_ok": sum(r["ts_ok"] for r in rs),
                    "timestamp_types": sorted({r["type"] for r in rs}),
                    "partitions": sorted({r["p"] for r in rs}),
                }
            )
        )
    )
    summary | "WriteSummary" >> beam.io.WriteToText(out_prefix + "-summary", shard_name_template="")

    windows = (
        recs
        | "Window" >> beam.WindowInto(FixedWindows(WINDOW_S))
        | "PerWindow" >> beam.CombineGlobally(beam.combiners.CountCombineFn()).without_defaults()
        | "Fmt" >> beam.Map(lambda c, w=beam.DoFn.WindowParam: f"{int(w.start)}\t{c}")
    )
    windows | "WriteWindows" >> beam.io.WriteToText(out_prefix + "-windows", shard_name_template="")


def run_one(
    runner: str,
    broker: KafkaBroker,
    topic: str,
    n: int,
    env: str,
    parallelism: int,
    workdir: Path,
    deprecated_read: bool,
    timeout: float,
) -> dict:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    out = str(workdir / f"out-{runner}-{env}")
    group = f"probe-{runner}-{env}-{int(time.time())}"
    t0 = time.monotonic()  # includes every JVM start-up: worker pool, expansion service, job server
    with contextlib.ExitStack() as stack:
        config = None
        if env.upper() == "EXTERNAL":
            config = stack.enter_context(kafka_local.JavaWorkerPool()).address
        if env.upper() == "EMBEDDED":
            # Java harness inside the Flink JVM: expansion service built from the Flink classpath so
            # that both sides have the same Beam Java version (2.62.0 here).
            es = kafka_local.expansion_service(env, jar=kafka_local.FLINK_EXPANSION_JAR)
        else:
            es = kafka_local.expansion_service(env, config)
        if runner == "direct":
            args = ["--runner=DirectRunner"]
        else:
            args = [
                "--runner=FlinkRunner",
                "--flink_master=[local]",
                f"--flink_job_server_jar={kafka_local.FLINK_JOB_SERVER_JAR}",
                f"--parallelism={parallelism}",
                "--environment_type=LOOPBACK",
                f"--job_server_timeout={int(timeout)}",
            ]
            if deprecated_read:
                args += ["--experiments=use_deprecated_read"]
        with beam.Pipeline(options=PipelineOptions(args)) as p:
            build(p, broker.bootstrap_servers, topic, n, es, out, group)
    elapsed = time.monotonic() - t0
    summary = json.loads(Path(out + "-summary").read_text())
    win = [line.split("\t") for line in Path(out + "-windows").read_text().splitlines()]
    summary.update(
        {
            "runner": runner,
            "java_env": env,
            "seconds": round(elapsed, 1),
            "windows": len(win),
            "window_total": sum(int(c) for _, c in win),
            "committed": committed_offsets(broker.bootstrap_servers, group, topic),
        }
    )
    return summary


def run_streaming(
    broker: KafkaBroker,
    topic: str,
    n: int,
    env: str,
    parallelism: int,
    workdir: Path,
    deprecated_read: bool,
    timeout: float,
    commit: bool = True,
) -> dict:
    """Unbounded read (no max_num_records) on Flink --streaming; stop once every event-time window
    has fired with all N records, or at the timeout, then cancel the job."""
    import apache_beam as beam
    from apache_beam.io.kafka import ReadFromKafka
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.transforms.window import FixedWindows

    elems_file = workdir / f"stream-{env}-{deprecated_read}-elements.txt"
    wins_file = workdir / f"stream-{env}-{deprecated_read}-windows.txt"
    group = f"probe-stream-{env}-{int(time.time())}"

    def append(path):
        def fn(line):
            with open(path, "a") as f:
                f.write(line + "\n")

        return fn

    t0 = time.monotonic()
    result = None
    with contextlib.ExitStack() as stack:
        config = None
        if env.upper() == "EXTERNAL":
            config = stack.enter_context(kafka_local.JavaWorkerPool()).address
        es = kafka_local.expansion_service(
            env, config, experiments=["use_deprecated_read"] if deprecated_read else None
        )
        args = [
            "--runner=FlinkRunner",
            "--flink_master=[local]",
            f"--flink_job_server_jar={kafka_local.FLINK_JOB_SERVER_JAR}",
            f"--parallelism={parallelism}",
            "--environment_type=LOOPBACK",
            "--streaming",
            "--checkpointing_interval=5000",
        ]
        if deprecated_read:
            args.append("--experiments=use_deprecated_read")
        p = beam.Pipeline(options=PipelineOptions(args))
        recs = p | ReadFromKafka(
            consumer_config=consumer_config(broker.bootstrap_servers, group),
            topics=[topic],
            with_metadata=True,
            commit_offset_in_finalize=commit,
            timestamp_policy=ReadFromKafka.create_time_policy,
            expansion_service=es,
        )
        (
            recs
            | "Elem" >> beam.Map(lambda r: f"{r.partition}\t{r.offset}")
            | "WE" >> beam.Map(append(str(elems_file)))
        )
        (
            recs
            | beam.WindowInto(FixedWindows(WINDOW_S))
            | beam.CombineGlobally(beam.combiners.CountCombineFn()).without_defaults()
            | beam.Map(lambda c, w=beam.DoFn.WindowParam: f"{int(w.start)}\t{c}")
            | "WW" >> beam.Map(append(str(wins_file)))
        )
        result = p.run()
        deadline = time.monotonic() + timeout
        first_elem_s = None
        total = 0
        while time.monotonic() < deadline:
            # Poll the output files once a second (progress of a running job, not a readiness check;
            # calling result.wait_until_finish(duration=...) repeatedly breaks the portable job
            # service's state stream: "ValueError: Internal gRPC call error 8").
            time.sleep(1)
            if str(result.state) in ("FAILED", "CANCELLED", "DONE", "PipelineState.FAILED"):
                raise RuntimeError(f"streaming job ended early: {result.state}")
            if first_elem_s is None and elems_file.exists():
                first_elem_s = round(time.monotonic() - t0, 1)
            if wins_file.exists():
                total = sum(int(line.split("\t")[1]) for line in wins_file.read_text().splitlines())
                if total >= n:
                    break
        elapsed = time.monotonic() - t0
        with contextlib.suppress(Exception):
            result.cancel()
    elems = elems_file.read_text().splitlines() if elems_file.exists() else []
    return {
        "runner": "flink-streaming",
        "java_env": env,
        "use_deprecated_read": deprecated_read,
        "commit_offset_in_finalize": commit,
        "elements": len(elems),
        "distinct_offsets": len(set(elems)),
        "window_total": total,
        "windows": len(wins_file.read_text().splitlines()) if wins_file.exists() else 0,
        "first_element_s": first_elem_s,
        "seconds": round(elapsed, 1),
        "committed": committed_offsets(broker.bootstrap_servers, group, topic),
        "ok": len(set(elems)) == n == total,
    }


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict:
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient

    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic=topic, timeout=10)
    parts = [TopicPartition(topic, p) for p in md.topics[topic].partitions]
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        return {tp.partition: tp.offset for tp in c.committed(parts, timeout=10)}
    finally:
        c.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runner", choices=["direct", "flink", "both"], default="both")
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--partitions", type=int, default=2)
    ap.add_argument("--direct-env", default="LOOPBACK", help="Java env on the DirectRunner")
    ap.add_argument("--flink-env", default="EXTERNAL", help="Java env on Flink: EXTERNAL (works) or EMBEDDED")
    ap.add_argument("--parallelism", type=int, default=2)
    ap.add_argument("--deprecated-read", action="store_true", help="--experiments=use_deprecated_read")
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--streaming", action="store_true", help="Flink only: unbounded read, --streaming")
    ap.add_argument("--no-commit", action="store_true", help="streaming: commit_offset_in_finalize=False")
    ap.add_argument("-v", action="store_true")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if a.v else logging.WARNING)

    workdir = Path(tempfile.mkdtemp(prefix="kafka-probe-"))
    t0 = time.monotonic()
    with KafkaBroker(workdir / "broker") as broker:
        t_broker = time.monotonic() - t0
        topic = "payments-probe"
        broker.create_topic(topic, a.partitions)
        t_prod = produce(broker.bootstrap_servers, topic, a.n)
        print(
            json.dumps(
                {
                    "broker_start_s": round(t_broker, 1),
                    "produce_s": round(t_prod, 2),
                    "n": a.n,
                    "partitions": a.partitions,
                    "bootstrap": broker.bootstrap_servers,
                }
            ),
            flush=True,
        )
        ok = True
        for runner in ["direct", "flink"] if a.runner == "both" else [a.runner]:
            env = a.direct_env if runner == "direct" else a.flink_env
            try:
                if a.streaming and runner == "flink":
                    r = run_streaming(
                        broker,
                        topic,
                        a.n,
                        env,
                        a.parallelism,
                        workdir,
                        a.deprecated_read,
                        a.timeout,
                        commit=not a.no_commit,
                    )
                else:
                    r = run_one(
                        runner, broker, topic, a.n, env, a.parallelism, workdir, a.deprecated_read, a.timeout
                    )
                    r["ok"] = r["count"] == a.n == r["distinct_offsets"] == r["ts_ok"] == r["window_total"]
            except Exception as e:  # report and go on to the next runner
                logging.exception("%s failed", runner)
                r = {
                    "runner": runner,
                    "java_env": env,
                    "ok": False,
                    "error": f"{type(e).__name__}: {e}"[:2000],
                }
            ok &= r["ok"]
            print(json.dumps(r), flush=True)
    shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
