"""Throughput of the paystream graph beside a plain-Python reference and a textbook Beam graph.

    python -m bench.throughput [--events 200000] [--accounts 10000] [--skip-textbook]

One generated input (5 % duplicates, 1 % malformed, injected bursts), written once to a
JSON-lines file, read by every variant, each in its own process (so peak memory is its own):

  (a) reference  the same logic in a plain Python loop: our validator, a set for dedup, our
                 masking, features in event-time order, the velocity rule (``BurstTracker``)
                 over hand-computed sliding windows: the limit;
  (b) textbook   Beam: ReadFromText -> Map(parse+mask) -> GroupByKey dedup ->
                 WindowInto(SlidingWindows(60, 5)) -> CombinePerKey(count): the baseline;
  (c) paystream  ``python -m beam_pipeline --source=file`` on the DirectRunner (batch).

Prints payments/s, the ratio to (a) and (b), peak RSS; asserts that (a) and (c) agree on the
stored payments, the dead letters and every alert id; writes bench/results/throughput.json.
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
    started = time.perf_counter()
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
    started = time.perf_counter()
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
    return {"seconds": time.perf_counter() - started}


def paystream(path: str, workdir: str) -> Dict[str, Any]:
    """(c) our graph, as a user runs it."""
    import duckdb

    warehouse = os.path.join(workdir, "bench.duckdb")
    summary = os.path.join(workdir, "summary.json")
    env = dict(os.environ, PYTHONPATH=ROOT)
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "beam_pipeline",
            "--source=file",
            f"--input={path}",
            f"--warehouse=duckdb:{warehouse}",
            f"--summary_json={summary}",
            "--no_summary",
        ],
        check=True,
        env=env,
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    elapsed = time.perf_counter() - started
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
    result = {
        "reference": lambda: reference(path),
        "textbook": lambda: textbook(path),
        "paystream": lambda: paystream(path, workdir),
    }[variant]()
    result["peak_rss_mb"] = (
        max(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
        )
        / 1024
    )
    with open(out, "w", encoding="utf-8") as handle:
        json.dump(result, handle)


def run_variant(variant: str, path: str, workdir: str) -> Dict[str, Any]:
    out = os.path.join(workdir, f"{variant}.json")
    print(f"  running {variant} ...", flush=True)
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
        return json.load(handle)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--accounts", type=int, default=10_000)
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
    path = os.path.join(workdir, "payments.jsonl")
    records, truth = generate(
        GeneratorConfig(num_events=args.events, accounts=args.accounts, include_oversized=False)
    )
    with open(path, "wb") as handle:
        for r in records:
            handle.write(r.payload + b"\n")
    print(
        f"input: {args.events:,} payments, {args.accounts:,} accounts, {len(truth.bursts)} bursts -> {path}"
    )
    results: Dict[str, Dict[str, Any]] = {}
    for variant in ("reference", "paystream") + (() if args.skip_textbook else ("textbook",)):
        results[variant] = run_variant(variant, path, workdir)

    ref, ours = results["reference"], results["paystream"]
    for key in ("stored", "dead_letters", "duplicates", "alert_ids"):
        assert ref[key] == ours[key], f"reference and paystream differ on {key}"
    assert len(ours["alert_ids"]) == len(truth.bursts)

    print()
    print(f"{'variant':<12}{'payments/s':>12}{'vs reference':>14}{'vs textbook':>13}{'peak RSS MB':>13}")
    for name, r in results.items():
        rate = args.events / r["seconds"]
        vs_ref = rate / (args.events / ref["seconds"])
        vs_tb = (
            (rate / (args.events / results["textbook"]["seconds"])) if "textbook" in results else float("nan")
        )
        print(f"{name:<12}{rate:>12,.0f}{vs_ref:>13.1%}{vs_tb:>12.1f}x{r['peak_rss_mb']:>13,.0f}")
    print(
        f"\nsame results: {ours['stored']:,} payments, {ours['dead_letters']} dead letters, "
        f"{ours['duplicates']:,} duplicates, {len(ours['alert_ids'])} alerts (= bursts) in (a) and (c)"
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
