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
