"""The end-of-run summary (beam_pipeline/summary.py), built without running a pipeline."""

from __future__ import annotations

import io
from typing import Any, Dict, Optional

import pytest

from beam_pipeline import summary as summary_mod
from beam_pipeline.options import PaystreamOptions


class _NoMetrics:
    def query(self, _filter: Any) -> Dict[str, Any]:
        return {"counters": []}


class _Result:
    def metrics(self) -> _NoMetrics:
        return _NoMetrics()


class _Warehouse:
    def facts(self, valid_ids: Optional[set]) -> Dict[str, Any]:
        return {
            "rows": {"payment_transactions": 10, "fraud_alerts": 1, "dead_letters": 0},
            "alerts_by_rule": {"velocity": 1},
            "top_accounts": [("acct-000001", 1, 4)],
            "alerts": [],
        }

    def describe(self) -> str:
        return "/tmp/w.duckdb"


@pytest.mark.parametrize("window_s", [30, 60, 90])
def test_summary_names_the_runs_velocity_window(monkeypatch: pytest.MonkeyPatch, window_s: int) -> None:
    monkeypatch.setattr(summary_mod, "open_warehouse", lambda _url: _Warehouse())
    opts = PaystreamOptions([f"--velocity_window_s={window_s}", "--warehouse=duckdb:/tmp/w.duckdb"])
    built = summary_mod.build_summary(_Result(), opts, None, 1.0)  # type: ignore[arg-type]
    assert built["velocity_window_s"] == window_s
    out = io.StringIO()
    summary_mod.print_summary(built, out)
    text = out.getvalue()
    assert f"acct-000001 (1 alert, max 4 in {window_s} s)" in text
    if window_s != 60:
        assert "in 60 s" not in text


def test_the_summary_says_when_payments_or_tables_do_not_add_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read = stored + dead letters + duplicates, and each figure equals what its table
    gained: the summary prints either as a MISMATCH when it fails."""
    monkeypatch.setattr(summary_mod, "open_warehouse", lambda _url: _Warehouse())
    opts = PaystreamOptions(["--warehouse=duckdb:/tmp/w.duckdb"])
    before = {"payment_transactions": 0, "fraud_alerts": 0, "dead_letters": 0}

    def summary(counts: Dict[str, int]) -> str:
        monkeypatch.setattr(summary_mod, "counters", lambda _result: counts)
        built = summary_mod.build_summary(_Result(), opts, None, 1.0, before)  # type: ignore[arg-type]
        out = io.StringIO()
        summary_mod.print_summary(built, out)
        return out.getvalue()

    exact = {
        "payments_in": 13,
        "sink_rows.payment_transactions": 10,
        "duplicates_dropped": 3,
        "fraud_alerts.velocity": 1,
    }
    text = summary(exact)
    assert "MISMATCH" not in text and "accounted for       every payment read" in text
    assert "this run added      payment_transactions +10, fraud_alerts +1, dead_letters +0\n" in text
    # a payment that vanished: read 14, accounted 13
    assert "accounted for       13 of 14 read  <-- MISMATCH" in summary(dict(exact, payments_in=14))
    # a figure that is not its table's: 9 stored said, 10 rows gained
    text = summary(dict(exact, payments_in=12, **{"sink_rows.payment_transactions": 9}))
    assert "<-- MISMATCH with the counts" in text
