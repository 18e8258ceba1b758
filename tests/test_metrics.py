"""Live Prometheus metrics: scrape /metrics while a local run goes and watch them move."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any, Dict, List, Optional

from prometheus_client.parser import text_string_to_metric_families

from paystream_dev.harness.ports import free_port
from transforms import telemetry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _scrape(url: str) -> Optional[Dict[str, float]]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    values: Dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_total"):
                values[sample.name] = values.get(sample.name, 0.0) + sample.value
    return values


def test_metrics_move_while_the_pipeline_runs(tmp_path: Any) -> None:
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "beam_pipeline",
            "--num_events=20000",
            "--sim_accounts=3000",
            "--metrics_port=0",
            "--metrics_linger_s=4",
            f"--warehouse=duckdb:{tmp_path}/w.duckdb",
            "--no_summary",
        ],
        cwd=str(tmp_path),
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    url: List[str] = []
    found = threading.Event()

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            match = re.search(r"metrics: (http://\S+/metrics)", line)
            if match:
                url.append(match.group(1))
                found.set()

    threading.Thread(target=read_stderr, daemon=True).start()
    assert found.wait(120), "the run never announced its metrics endpoint"
    scrapes: List[Dict[str, float]] = []
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        got = _scrape(url[0])
        if got:
            scrapes.append(got)
        time.sleep(0.25)
    assert proc.wait(60) == 0

    def total(s: Dict[str, float], name: str) -> float:
        return s.get(telemetry.prometheus_name(name), 0.0)

    progress = {(total(s, "payments_in"), total(s, "sink_rows")) for s in scrapes}
    assert len(progress) >= 3, progress  # the counters moved while the run went on
    final = scrapes[-1]  # taken while the driver lingered after the run
    assert total(final, "payments_in") == 20000
    assert total(final, "payments_in") == (
        total(final, "payments_unique") + total(final, "duplicates_dropped") + total(final, "dead_letters")
    )
    assert total(final, "payments_valid") == total(final, "payments_unique") + total(
        final, "duplicates_dropped"
    )
    assert total(final, "fraud_alerts") > 0
    assert total(final, "sink_rows") == (
        total(final, "payments_unique") + total(final, "fraud_alerts") + total(final, "dead_letters")
    )


def test_metric_names_follow_prometheus_conventions() -> None:
    for name, (kind, doc, _labels, _buckets) in telemetry.METRICS.items():
        full = telemetry.prometheus_name(name)
        assert re.fullmatch(r"paystream_[a-z_]+", full) and doc
        assert full.endswith("_total") == (kind == "counter")
        if kind == "histogram" and "latency" in name or "write" in name:
            assert full.endswith("_seconds")


def test_flink_worker_pool_serves_the_pipelines_metrics(tmp_path: Any) -> None:
    """On Flink the Python code runs in the SDK worker pool: its /metrics has the pipeline's counters."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    service_port, metrics_port = free_port(), free_port()
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "beam_pipeline.worker",
            f"--service_port={service_port}",
            f"--metrics_port={metrics_port}",
        ],
        cwd=str(tmp_path),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert worker.stdout is not None
        for line in worker.stdout:  # readiness: the pool says it listens
            if "worker pool at" in line:
                break
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "beam_pipeline",
                "--runner=FlinkRunner",
                "--environment_type=EXTERNAL",
                f"--environment_config=localhost:{service_port}",
                "--num_events=1000",
                f"--warehouse=duckdb:{tmp_path}/w.duckdb",
                "--no_summary",
            ],
            cwd=str(tmp_path),
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        scraped = _scrape(f"http://127.0.0.1:{metrics_port}/metrics")
        assert scraped is not None
        assert scraped[telemetry.prometheus_name("payments_in")] == 1000
        assert scraped[telemetry.prometheus_name("fraud_alerts")] > 0
        assert scraped[telemetry.prometheus_name("payments_in")] == (
            scraped[telemetry.prometheus_name("payments_unique")]
            + scraped[telemetry.prometheus_name("duplicates_dropped")]
            + scraped[telemetry.prometheus_name("dead_letters")]
        )
    finally:
        worker.terminate()
        worker.wait(30)
