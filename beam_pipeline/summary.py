"""The end-of-run summary: what was read, kept, dropped, alerted, and how well."""

from __future__ import annotations

import json
import sys
from typing import Any, Dict, List, Optional, TextIO, Tuple

from apache_beam.metrics.metric import MetricsFilter
from apache_beam.runners.runner import PipelineResult

from beam_pipeline.options import PaystreamOptions
from schemas.rows import ALERTS, DEAD_LETTERS, TRANSACTIONS
from transforms.sinks import open_warehouse

__all__ = [
    "DEMO_COMMAND",
    "build_summary",
    "counters",
    "ground_truth",
    "print_summary",
    "report",
    "score_alerts",
]

# A live run with its console (python -m paystream_dev demo, once its Java, Debian and npm
# pieces are installed), named at the end of every summary.
DEMO_COMMAND = "make live-demo"


def counters(result: PipelineResult) -> Dict[str, int]:
    """The run's ``paystream`` counters (committed where the runner has them)."""
    out: Dict[str, int] = {}
    query = result.metrics().query(MetricsFilter().with_namespace("paystream"))
    for counter in query["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        out[counter.key.metric.name] = out.get(counter.key.metric.name, 0) + int(value or 0)
    return out


def score_alerts(alerts: List[Tuple[str, int, int]], bursts: List[Any]) -> Dict[str, Any]:
    """Match alerts ``(account, first_txn_us, crossing_us)`` to labelled bursts.

    An alert matches a burst of the same account when its crossing payment
    lies inside the burst. Precision: alerts that match a burst; recall:
    bursts with at least one alert; ``exactly_once``: bursts with exactly one.
    """
    per_burst = {b.burst_id: 0 for b in bursts}
    matched_alerts = 0
    by_account: Dict[str, List[Any]] = {}
    for b in bursts:
        by_account.setdefault(b.account_id, []).append(b)
    for account, _first, crossing in alerts:
        hit = [b for b in by_account.get(account, []) if b.first_time_us <= crossing <= b.last_time_us]
        if hit:
            matched_alerts += 1
            for b in hit:
                per_burst[b.burst_id] += 1
    n_alerts, n_bursts = len(alerts), len(bursts)
    return {
        "bursts": n_bursts,
        "alerts": n_alerts,
        "true_positives": matched_alerts,
        "false_positives": n_alerts - matched_alerts,
        "missed_bursts": sum(1 for v in per_burst.values() if v == 0),
        "bursts_alerted_more_than_once": sum(1 for v in per_burst.values() if v > 1),
        "precision": matched_alerts / n_alerts if n_alerts else 1.0,
        "recall": sum(1 for v in per_burst.values() if v > 0) / n_bursts if n_bursts else 1.0,
    }


def build_summary(
    result: PipelineResult,
    opts: PaystreamOptions,
    truth: Any,
    elapsed_s: float,
    before: Optional[Dict[str, int]] = None,
) -> Dict[str, Any]:
    """The run's figures from its counters; with the warehouse readable here, its tables
    read back, and (``before``: rows per table before the run) what each gained."""
    c = counters(result)
    dead: Dict[str, int] = {}
    for k, v in c.items():  # dead_letters.<reason>.<stage>
        if k.startswith("dead_letters.") and v:
            reason = k.split(".")[1]
            dead[reason] = dead.get(reason, 0) + v
    summary: Dict[str, Any] = {
        "source": opts.source,
        "elapsed_s": round(elapsed_s, 2),
        "payments_read": c.get("payments_in", 0),
        "payments_valid": c.get("payments_valid", 0),
        "payments_unique": c.get("payments_unique", 0),  # new to the books
        "payments_stored": c.get(f"sink_rows.{TRANSACTIONS}", 0),  # rows the warehouse took
        "duplicates_dropped": c.get("duplicates_dropped", 0),  # by the books and the warehouse
        "dead_letters_by_reason": dict(sorted(dead.items())),
        "dead_letters": sum(dead.values()),
        "alerts_raised": sum(v for k, v in c.items() if k.startswith("fraud_alerts.")),  # by rule
        "rows_written": {k.split(".", 1)[1]: v for k, v in c.items() if k.startswith("sink_rows.")},
        "warehouse": opts.warehouse,
        "velocity_window_s": opts.velocity_window_s,
    }
    # every payload read is exactly one of: a stored row, a dead letter, a counted duplicate
    summary["accounted"] = summary["payments_read"] == (
        summary["payments_stored"] + summary["dead_letters"] + summary["duplicates_dropped"]
    )
    if elapsed_s > 0:
        summary["payments_per_s"] = round(summary["payments_read"] / elapsed_s, 1)
    valid_ids = set(truth.valid_transaction_ids) if truth is not None else None
    facts = open_warehouse(opts.warehouse).facts(valid_ids)
    if facts is not None:
        summary["warehouse_rows"] = facts["rows"]
        if before is not None:
            summary["tables_gained"] = {t: n - before.get(t, 0) for t, n in facts["rows"].items()}
            summary["tables_match"] = summary["tables_gained"] == _expected_gains(summary, c)
        summary["alerts_by_rule"] = facts["alerts_by_rule"]
        summary["top_accounts"] = [
            {"account_id": a, "alerts": n, "max_in_window": m} for a, n, m in facts["top_accounts"]
        ]
        if truth is not None:
            summary["detection"] = score_alerts(facts["alerts"], truth.bursts)
    if truth is not None:
        summary["ground_truth"] = {
            "valid_unique": len(truth.valid_transaction_ids),
            "duplicates_injected": truth.duplicates,
            "malformed_injected": dict(sorted(truth.malformed.items())),
            "bursts": len(truth.bursts),
        }
    return summary


def _expected_gains(summary: Dict[str, Any], c: Dict[str, int]) -> Dict[str, int]:
    """What the run's own figures say each table gained: the stored payments; the alerts
    and dead letters raised, less those a replay found already there."""

    def present(table: str) -> int:
        return c.get(f"sink_rows_present.{table}", 0)

    return {
        TRANSACTIONS: summary["payments_stored"],
        ALERTS: summary["alerts_raised"] - present(ALERTS),
        DEAD_LETTERS: summary["dead_letters"] - present(DEAD_LETTERS),
    }


def print_summary(s: Dict[str, Any], out: TextIO = sys.stdout) -> None:
    w = out.write
    w("\n=== paystream run summary ===\n")
    if s.get("runner"):
        w(f"runner              {s['runner']}\n")
    w(
        f"source              {s['source']}  ({s['elapsed_s']} s"
        + (f", {s['payments_per_s']:,.0f} payments/s" if "payments_per_s" in s else "")
        + ")\n"
    )
    w(f"payments read       {s['payments_read']}  (valid {s['payments_valid']})\n")
    w(f"stored              {s['payments_stored']}\n")
    w(f"duplicates dropped  {s['duplicates_dropped']}\n")
    w(f"dead letters        {s['dead_letters']}\n")
    for reason, n in s["dead_letters_by_reason"].items():
        w(f"  {reason:<22}{n}\n")
    if s["accounted"]:
        w("accounted for       every payment read: stored, dead-lettered or a duplicate\n")
    else:
        counted = s["payments_stored"] + s["dead_letters"] + s["duplicates_dropped"]
        w(f"accounted for       {counted} of {s['payments_read']} read  <-- MISMATCH\n")
    by_rule = s.get("alerts_by_rule") or {}
    kinds = f" ({', '.join(f'{k} {n}' for k, n in by_rule.items())})" if len(by_rule) > 1 else ""
    w(f"fraud alerts        {s['alerts_raised']}{kinds}\n")
    if s.get("top_accounts"):
        window = s.get("velocity_window_s")  # the run's --velocity_window_s
        in_window = f" in {window} s" if window is not None else " in a window"
        w(
            "top accounts        "
            + ", ".join(
                f"{t['account_id']} ({t['alerts']} alert, max {t['max_in_window']}{in_window})"
                for t in s["top_accounts"][:3]
            )
            + "\n"
        )
    gt = s.get("ground_truth")
    if gt:
        w("--- against the simulator's labels ---\n")
        w(f"duplicates          injected {gt['duplicates_injected']}, dropped {s['duplicates_dropped']}\n")
        w(
            f"malformed           injected {sum(gt['malformed_injected'].values())}, "
            f"dead-lettered {s['dead_letters']}\n"
        )
        for reason, n in gt["malformed_injected"].items():
            got = s["dead_letters_by_reason"].get(reason, 0)
            w(f"  {reason:<22}injected {n}, dead-lettered {got}{'' if got == n else '  <-- MISMATCH'}\n")
        d = s.get("detection")
        if d:
            w(
                f"bursts              {d['bursts']} injected, {d['alerts']} alerts, "
                f"{d['missed_bursts']} missed, {d['bursts_alerted_more_than_once']} alerted twice, "
                f"{d['false_positives']} false\n"
            )
            w(f"precision / recall  {d['precision']:.3f} / {d['recall']:.3f}\n")
    if "warehouse_rows" in s:
        path = open_warehouse(s["warehouse"]).describe()
        w("--- results ---\n")
        w(
            f"warehouse           {path}  (tables: "
            + ", ".join(f"{t} {n}" for t, n in s["warehouse_rows"].items())
            + ")\n"
        )
        if "tables_gained" in s:
            gained = ", ".join(f"{t} +{n}" for t, n in s["tables_gained"].items())
            w(
                f"this run added      {gained}{'' if s['tables_match'] else '  <-- MISMATCH with the counts'}\n"
            )
        w(
            f"query it            python -m beam_pipeline.query --warehouse {s['warehouse']} "
            '"SELECT * FROM v_dead_letters_by_reason"\n'
        )
    elif s.get("warehouse"):
        w("--- results ---\n")
        w(f"warehouse           {s['warehouse']}\n")
    w(f"watch it live       {DEMO_COMMAND}  (simulator, streaming run, console at http://127.0.0.1:8050/)\n")
    w("\n")
    out.flush()


def ground_truth(opts: PaystreamOptions) -> Tuple[Any, Optional[int]]:
    """What the run should find, when it is known, and how many payments it reads: the
    simulator's own (deterministic: the same payments the pipeline makes), or ``--truth``."""
    from simulator.generator import GroundTruth, generate

    if opts.source == "simulator":
        from beam_pipeline.graph import simulator_config

        config = simulator_config(opts)
        _, truth = generate(config)
        return truth, config.num_events
    if opts.truth:
        with open(opts.truth, encoding="utf-8") as handle:
            return GroundTruth.from_json(json.load(handle)), None
    return None, None


def report(
    result: PipelineResult,
    opts: PaystreamOptions,
    truth: Any,
    elapsed_s: float,
    runner: str,
    before: Optional[Dict[str, int]] = None,
) -> Optional[Dict[str, Any]]:
    """The summary, printed (``--summary``) and written (``--summary_json``) as asked."""
    if not (opts.summary or opts.summary_json):
        return None
    summary = build_summary(result, opts, truth, elapsed_s, before)
    summary["runner"] = runner
    if opts.summary:
        print_summary(summary)
    if opts.summary_json:
        with open(opts.summary_json, "w", encoding="utf-8") as handle:
            json.dump(summary, handle, indent=2, sort_keys=True)
    return summary
