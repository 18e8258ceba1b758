"""The one engine's seams: its settings and their defaults, kernels without Beam, the
public transforms' examples, and one clear line for every bad flag or missing input."""

from __future__ import annotations

import dataclasses
import doctest
import importlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, List

import pytest

from beam_pipeline.options import PaystreamOptions
from transforms.steps import EngineSettings

ROOT = Path(__file__).resolve().parent.parent


def test_the_options_defaults_are_the_engine_settings_defaults() -> None:
    """Defaults are given once: the options read them from ``EngineSettings``, and the
    drivers take ``EngineSettings()`` when given none."""
    assert EngineSettings.from_options(PaystreamOptions([])) == EngineSettings()
    assert EngineSettings().history_ttl_s == 7 * 24 * 3600  # seven days, as the option says
    from kernels.card_testing import CardTestingRule
    from kernels.rules import rules_from_options
    from kernels.velocity import VelocityRule

    all_rules = PaystreamOptions(["--rules=velocity,card_testing"])
    assert rules_from_options(all_rules) == (VelocityRule(), CardTestingRule())  # the rules' own defaults
    changed = EngineSettings.from_options(PaystreamOptions(["--account_keys=3", "--dedup_horizon_s=60"]))
    assert (changed.account_keys, changed.dedup_horizon_s) == (3, 60)


@pytest.mark.parametrize(
    "bad",
    [
        dict(dedup_scope="nowhere"),
        dict(max_future_skew_s=-1),
        dict(dedup_horizon_s=0),
        dict(history_ttl_s=0),
        dict(account_keys=-1),
        dict(batch_groups=0),
    ],
)
def test_the_engine_settings_refuse_what_cannot_run(bad: Any) -> None:
    with pytest.raises(ValueError):
        dataclasses.replace(EngineSettings(), **bad)


def test_importing_the_kernels_and_a_rule_loads_no_beam() -> None:
    kernels = sorted(f"kernels.{p.stem}" for p in (ROOT / "kernels").glob("*.py") if p.stem != "__init__")
    script = (
        "import importlib, sys\n"
        f"for name in {kernels!r}: importlib.import_module(name)\n"
        "from kernels.rules import rule_class\n"
        "rule_class('velocity'); rule_class('card_testing')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'apache_beam'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("module", ["transforms.masking", "transforms.dedup", "transforms.velocity"])
def test_each_public_transform_s_docstring_example_runs(module: str) -> None:
    """Each example runs a pipeline that uses the transform alone and asserts on its output."""
    found = doctest.testmod(importlib.import_module(module), raise_on_error=False, verbose=False)
    assert found.attempted >= 5 and found.failed == 0


def test_flags_only_the_runner_knows_pass_through() -> None:
    """The Flink runner's own flags are defined in its job server, not in Python: they are
    neither misspellings of ours nor removed ones, and reach Beam untouched."""
    from beam_pipeline.options import refuse_unknown_flags

    refuse_unknown_flags(
        [
            "--checkpointing_interval=2000",
            "--max_bundle_time_mills=50",
            "--savepoint_path=/tmp/s",
            "--runner=FlinkRunner",
        ]
    )
    with pytest.raises(ValueError, match="did you mean --account_keys"):
        refuse_unknown_flags(["--acount_keys=3"])


def _run(args: List[str], tmp: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "beam_pipeline", *args, f"--warehouse=duckdb:{tmp}/w.duckdb"],
        cwd=tmp,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "args, says",
    [
        (["--source=file", "--input=/nonexistent/payments.jsonl"], "matches no file"),
        (["--source=file"], "needs --input"),
        (["--source=kafka"], "needs --kafka_bootstrap_servers"),
        (["--source=kafka", "--kafka_bootstrap_servers=127.0.0.1:1"], "is the broker running and reachable?"),
        (["--velocity_impl=windows"], "--velocity_impl is gone"),
        (["--stream_shards=3"], "it is --account_keys now"),
        (["--velocity_treshold=4"], "did you mean --velocity_threshold?"),
        (["--execution_mode=fast"], "invalid choice: 'fast'"),
        (["--account_keys=-1", "--streaming"], "account_keys must be >= 0"),
        (["--num_events=0"], "--num_events must be > 0"),
        (["--rules=velocity,nothing"], "unknown rule 'nothing'"),
    ],
)
def test_a_bad_flag_or_a_missing_input_gets_one_line(args: List[str], says: str, tmp_path: Path) -> None:
    out = _run(args, str(tmp_path))
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    ours = [line for line in out.stderr.splitlines() if line.startswith("paystream: ")]
    assert len(ours) == 1 and says in ours[0], out.stderr[-2000:]
