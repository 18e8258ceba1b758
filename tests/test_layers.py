"""The product imports none of the development tooling, and the layers point one way.

The product is ``beam_pipeline``, ``transforms``, ``kernels``, ``schemas`` and ``simulator``. The
development package ``paystream_dev`` (a local broker, Maven jar fetching, Java worker
pools) reaches the product only through the ``paystream.local_java`` entry point
(``beam_pipeline/java_provider.py``).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
from import_scan import imports

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("beam_pipeline", "transforms", "kernels", "schemas", "simulator")
# Each layer may import only the layers after it (and itself).
LAYERS = ("beam_pipeline", "transforms", "kernels", "schemas")


def _product_files() -> Iterator[Path]:
    for package in PRODUCT:
        yield from sorted((ROOT / package).rglob("*.py"))


def test_no_product_module_imports_the_development_package() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in _product_files()
        for line, name, _ in imports(path, ROOT)
        if name == "paystream_dev" or name.startswith("paystream_dev.")
    ]
    assert found == []


def test_the_scan_sees_an_import_of_the_development_package(tmp_path: Path) -> None:
    """The scan above can fail: each way of importing is seen."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import paystream_dev.local_kafka\n"
        "from paystream_dev import java_workers\n"
        "def f():\n"
        "    from paystream_dev.local_kafka import KafkaBroker\n"
        "    importlib.import_module('paystream_dev.local_java')\n"
    )
    assert [name for _, name, _ in imports(probe, tmp_path)] == [
        "paystream_dev.local_kafka",
        "paystream_dev",
        "paystream_dev.local_kafka",
        "paystream_dev.local_java",
    ]


@pytest.mark.parametrize("layer", LAYERS[1:])
def test_lower_layers_do_not_import_upper_ones(layer: str) -> None:
    upper = LAYERS[: LAYERS.index(layer)]
    found = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in sorted((ROOT / layer).rglob("*.py"))
        for line, name, _ in imports(path, ROOT)
        if name.split(".")[0] in upper
    ]
    assert found == []


def test_a_run_loads_no_development_module(tmp_path: Path) -> None:
    """A whole local run (simulator, DuckDB) with every product module imported leaves
    ``paystream_dev`` unloaded: nothing reaches it at import or run time."""
    modules = sorted(
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for path in _product_files()
        if path.name != "__main__.py"
    )
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "from beam_pipeline.pipeline import run\n"
        f"run(['--num_events=300', '--warehouse=duckdb:{tmp_path}/w.duckdb', '--no_summary'])\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'paystream_dev')\n"
        "print('LOADED', loaded)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "LOADED []" in out.stdout


def test_the_local_java_provider_is_found_through_its_entry_point() -> None:
    from beam_pipeline.java_provider import local_java_provider

    provider = local_java_provider()
    assert type(provider).__module__ == "paystream_dev.local_java"
    assert callable(provider.flink_job_server_jar) and callable(provider.kafka_expansion_service)


@pytest.mark.parametrize("module", ["beam_pipeline/graph.py", "beam_pipeline/pipeline.py"])
def test_the_graph_and_the_run_steps_know_no_runner_names(module: str) -> None:
    """Runner names live in the runner setup (and the Kafka read): no string in the graph or
    in ``run`` names a runner."""
    names = ("direct", "flink", "dataflow", "prism", "spark", "samza")
    tree = ast.parse((ROOT / module).read_text(encoding="utf-8"))
    found = [
        f"{module}:{node.lineno} {node.value!r}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and "\n" not in node.value  # docstrings and comments may say where a runner matters
        and any(name in node.value.lower() for name in names)
    ]
    assert found == []


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "scripts").glob("*.py")))
def test_every_script_starts(script: str) -> None:
    """Each script imports what it needs (a module moved is a script broken) and answers ``--help``."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]


def test_every_bench_module_imports() -> None:
    names = sorted(f"bench.{p.stem}" for p in (ROOT / "bench").glob("*.py") if p.stem != "__init__")
    out = subprocess.run(
        [sys.executable, "-c", f"import importlib\nfor m in {names!r}: importlib.import_module(m)"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
