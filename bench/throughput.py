"""Throughput of the paystream graph beside a plain-Python reference and a textbook Beam graph.

    python -m bench.throughput [--events 200000] [--accounts 10000] [--skip-textbook]
                               [--stream-events 5000] [--flink-events 50000]

One generated input (5 % duplicates, 1 % malformed, injected bursts), written once to a
JSON-lines file, read by every variant, each in its own process (so peak memory and CPU
time are its own):

  (a) reference  the same logic in a plain Python loop: our validator, a dict for dedup, our
                 masking, features in event-time order, the velocity rule (``BurstTracker``)
                 over hand-computed sliding windows: the limit;
  (b) textbook   Beam: ReadFromText -> Map(parse+mask) -> GroupByKey dedup ->
                 WindowInto(SlidingWindows(60, 5)) -> CombinePerKey(count): the baseline;
  (c) paystream  ``python -m beam_pipeline --source=file`` as a user runs it, writing the
                 DuckDB warehouse: on the DirectRunner in batch (the keyed steps take their
                 batch paths) and in streaming mode (``--streaming``: per-key state and
                 timers), and on local Flink with parallelism 2.

Prints payments/s, the ratio to (a) and (b), CPU seconds and peak RSS; asserts that every
paystream run stores the same payments, dead letters, duplicates and alert ids as (a) on
the same input; writes bench/results/throughput.json. Alert latency in streaming runs is
measured by ``python -m bench.alert_latency``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def reference(path: str) -> Dict[str, Any]:
    """(a) the plain-Python limit: the same checks and rules, no framework."""
    from schemas.records import SourceRef
    from transforms.enrich import AccountHistory, features
    from transforms.masking import Tokenizer, mask_transaction
    from transforms.parse import ParseError, parse_payment
    from transforms.velocity import BurstTracker, VelocityRule

    rule = VelocityRule()
    tokenizer = Tokenizer(b"k" * 32)
    now_us = int(time.time() * 1e6)
    seen: Dict[str, str] = {}
    masked = []
    dead = 0
    duplicates = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip(b"\n")
            if not line.strip():
                continue
            try:
                txn = parse_payment(line, SourceRef("file", 0, number), now_us)
            except ParseError:
                dead += 1
                continue
            first = seen.get(txn.transaction_id)
            if first is None:
                seen[txn.transaction_id] = txn.fingerprint
                masked.append(mask_transaction(txn, tokenizer))
            elif first == txn.fingerprint:
                duplicates += 1
            else:
                dead += 1
    histories: Dict[str, AccountHistory] = {}
    trackers: Dict[str, BurstTracker] = {}
    for m in sorted(masked, key=lambda t: (t.event_time_us, t.transaction_id)):
        h = histories.setdefault(m.account_id, AccountHistory())
        features(m, h)
        h.push(m)
        trackers.setdefault(m.account_id, BurstTracker()).add_payment(
            (m.event_time_us, m.transaction_id), rule
        )
    alerts = []
    for account, tracker in trackers.items():
        found, _ = tracker.evaluate(account, rule, 2**62)
        alerts.extend(a.alert_id for a in found)
    elapsed = time.perf_counter() - started
    return {
        "seconds": elapsed,
        "cpu_seconds": time.process_time() - cpu_started,
        "stored": len(masked),
        "dead_letters": dead,
        "duplicates": duplicates,
        "alert_ids": sorted(alerts),
    }


def textbook(path: str) -> Dict[str, Any]:
    """(b) the textbook graph the issue measured (~740 payments/s here)."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.transforms.window import SlidingWindows, TimestampedValue

    from beam_pipeline.pipeline import _runner
    from transforms.masking import mask_email, mask_pan
    from transforms.parse import ParseError, parse_event_time_us

    def parse(line: bytes) -> List[Dict[str, Any]]:
        try:
            obj = json.loads(line)
            obj["ts"] = parse_event_time_us(obj["event_time"]) / 1e6
            obj["card_number"] = mask_pan(str(obj["card_number"]))
            obj["email"] = mask_email(str(obj["email"]))
            obj.pop("cvv", None)
            return [obj] if obj.get("transaction_id") and obj.get("account_id") else []
        except (ValueError, KeyError, TypeError, ParseError):
            return []

    options = PipelineOptions([])
    started, cpu_started = time.perf_counter(), time.process_time()
    pipeline = beam.Pipeline(runner=_runner(options), options=options)
    (
        pipeline
        | beam.io.ReadFromText(path, coder=beam.coders.BytesCoder())
        | "ParseMask" >> beam.FlatMap(parse)
        | "ById" >> beam.Map(lambda o: (o["transaction_id"], o))
        | "Dedup" >> beam.GroupByKey()
        | "First" >> beam.Map(lambda kv: next(iter(kv[1])))
        | "Stamp" >> beam.Map(lambda o: TimestampedValue((o["account_id"], 1), o["ts"]))
        | "Windows" >> beam.WindowInto(SlidingWindows(60, 5))
        | "Count" >> beam.CombinePerKey(sum)
        | "Firing" >> beam.Filter(lambda kv: kv[1] >= 3)
    )
    pipeline.run().wait_until_finish()
    return {"seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu_started}


VARIANT_ARGS: Dict[str, List[str]] = {
    "batch": [],
    "stream": ["--streaming"],
    "flink": ["--runner=FlinkRunner", "--parallelism=2"],
}


def paystream(path: str, workdir: str, variant: str) -> Dict[str, Any]:
    """(c) our graph, as a user runs it: ``python -m beam_pipeline --source=file``."""
    import duckdb

    warehouse = os.path.join(workdir, f"{variant}.duckdb")
    summary = os.path.join(workdir, f"{variant}-summary.json")
    key = os.path.join(workdir, "hmac.key")
    if not os.path.exists(key):
        with open(key, "w", encoding="utf-8") as handle:
            handle.write("6b" * 32)
    env = dict(os.environ, PYTHONPATH=ROOT)
    started = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "beam_pipeline",
            "--source=file",
            f"--input={path}",
            f"--warehouse=duckdb:{warehouse}",
            f"--hmac_key_file={key}",
            f"--summary_json={summary}",
            "--no_summary",
            *VARIANT_ARGS[variant],
        ],
        env=env,
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"paystream {variant} failed:\n{proc.stderr[-3000:]}")
    conn = duckdb.connect(warehouse, read_only=True)
    try:
        stored = conn.execute("SELECT count(*) FROM payment_transactions").fetchone()[0]
        dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
        alerts = sorted(r[0] for r in conn.execute("SELECT alert_id FROM fraud_velocity_alerts").fetchall())
    finally:
        conn.close()
    with open(summary, encoding="utf-8") as handle:
        duplicates = json.load(handle)["duplicates_dropped"]
    return {
        "seconds": elapsed,
        "stored": stored,
        "dead_letters": dead,
        "duplicates": duplicates,
        "alert_ids": alerts,
    }


def _child(variant: str, path: str, workdir: str, out: str) -> None:
    if variant == "reference":
        result = reference(path)
    elif variant == "textbook":
        result = textbook(path)
    else:
        result = paystream(path, workdir, variant)
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    # The reference and the textbook graph time their own work in-process; a paystream run is
    # timed as a whole process (its start-up included), like its wall clock.
    result.setdefault("cpu_seconds", children.ru_utime + children.ru_stime)
    result["peak_rss_mb"] = max(own.ru_maxrss, children.ru_maxrss) / 1024
    with open(out, "w", encoding="utf-8") as handle:
        json.dump(result, handle)


def run_variant(variant: str, path: str, workdir: str, events: int) -> Dict[str, Any]:
    out = os.path.join(workdir, f"{variant}-{events}.json")
    print(f"  running {variant} on {events:,} payments ...", flush=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.throughput",
            "--child",
            variant,
            "--input",
            path,
            "--workdir",
            workdir,
            "--out",
            out,
        ],
        check=True,
        cwd=ROOT,
    )
    with open(out, encoding="utf-8") as handle:
        result = json.load(handle)
    result["events"] = events
    result["rate"] = events / result["seconds"]
    print(
        f"    {result['rate']:,.0f} payments/s ({result['seconds']:.1f} s, {result['cpu_seconds']:.1f} CPU s)"
    )
    return result


def _write_input(path: str, payloads: List[bytes]) -> None:
    with open(path, "wb") as handle:
        for payload in payloads:
            handle.write(payload + b"\n")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument(
        "--stream-events",
        type=int,
        default=5_000,
        help="payments for the streaming DirectRunner run (it manages hundreds per second); 0: skip",
    )
    parser.add_argument(
        "--flink-events", type=int, default=50_000, help="payments for the local Flink run; 0: skip"
    )
    parser.add_argument("--skip-textbook", action="store_true", help="the baseline takes minutes at 200k")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "throughput.json"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.input, args.workdir, args.out)
        return 0

    from simulator.generator import GeneratorConfig, generate

    workdir = tempfile.mkdtemp(prefix="paystream-bench-")
    records, truth = generate(
        GeneratorConfig(num_events=args.events, accounts=args.accounts, include_oversized=False)
    )
    payloads = [r.payload for r in records]
    inputs: Dict[int, str] = {}
    for n in {args.events, args.stream_events, args.flink_events} - {0}:
        n = min(n, args.events)
        inputs[n] = os.path.join(workdir, f"payments-{n}.jsonl")
        _write_input(inputs[n], payloads[:n])
    print(
        f"input: {args.events:,} payments, {args.accounts:,} accounts, {len(truth.bursts)} bursts, "
        f"5 % duplicates, 1 % malformed -> {workdir}"
    )
    plan = [("reference", args.events), ("batch", args.events)]
    if not args.skip_textbook:
        plan.append(("textbook", args.events))
    for variant, n in (("stream", args.stream_events), ("flink", args.flink_events)):
        if n:
            plan.append((variant, min(n, args.events)))
    results: Dict[str, Dict[str, Any]] = {}
    for variant, n in plan:
        results[variant] = run_variant(variant, inputs[n], workdir, n)
    # Same results: each paystream run against the reference on the same input.
    references: Dict[int, Dict[str, Any]] = {args.events: results["reference"]}
    for variant, n in plan:
        if variant in ("reference", "textbook"):
            continue
        if n not in references:
            references[n] = run_variant("reference", inputs[n], workdir, n)
        ref, ours = references[n], results[variant]
        for key in ("stored", "dead_letters", "duplicates", "alert_ids"):
            if ref[key] != ours[key]:
                raise AssertionError(f"reference and paystream {variant} differ on {key} ({n:,} payments)")
    assert len(results["batch"]["alert_ids"]) == len(truth.bursts)

    def cpu_rate(r: Dict[str, Any]) -> float:
        return r["events"] / r["cpu_seconds"]

    ref_rate, ref_cpu = results["reference"]["rate"], cpu_rate(results["reference"])
    tb_rate = results["textbook"]["rate"] if "textbook" in results else float("nan")
    tb_cpu = cpu_rate(results["textbook"]) if "textbook" in results else float("nan")
    print()
    print(f"{'':<24}{'':>10}{'--- wall clock ---':>38}{'--- per CPU second ---':>38}")
    print(
        f"{'variant':<24}{'payments':>10}{'payments/s':>12}{'vs ref':>10}{'vs textbook':>16}"
        f"{'payments/s':>12}{'vs ref':>10}{'vs textbook':>16}{'peak RSS MB':>13}"
    )
    labels = {
        "reference": "reference (plain Python)",
        "textbook": "textbook Beam graph",
        "batch": "paystream, batch",
        "stream": "paystream, streaming",
        "flink": "paystream, Flink p=2",
    }
    for name, r in results.items():
        cpu = cpu_rate(r)
        print(
            f"{labels[name]:<24}{r['events']:>10,}{r['rate']:>12,.0f}{r['rate'] / ref_rate:>10.1%}"
            f"{r['rate'] / tb_rate:>15.1f}x{cpu:>12,.0f}{cpu / ref_cpu:>10.1%}{cpu / tb_cpu:>15.1f}x"
            f"{r['peak_rss_mb']:>13,.0f}"
        )
    checked = ", ".join(f"{labels[v]} ({n:,})" for v, n in plan if v not in ("reference", "textbook"))
    print(
        f"\nsame results as the reference on the same input: {checked}. Full input: "
        f"{results['batch']['stored']:,} payments stored, {results['batch']['dead_letters']} dead letters, "
        f"{results['batch']['duplicates']:,} duplicates, {len(results['batch']['alert_ids'])} alerts (= bursts)."
    )
    print(
        "Paystream rates include each run's start-up (interpreter, imports, pipeline construction; "
        "Flink's job server), the reference and textbook rates only their own work. The streaming and "
        "Flink rows run on a prefix of the input, so their start-up weighs more. CPU seconds count every "
        "process of a paystream run (Flink: the job server's JVM too); on a shared machine they are the "
        "steadier measure."
    )
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump(
            {
                "events": args.events,
                "accounts": args.accounts,
                "results": {
                    k: {kk: vv for kk, vv in v.items() if kk != "alert_ids"} for k, v in results.items()
                },
            },
            handle,
            indent=2,
        )
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
