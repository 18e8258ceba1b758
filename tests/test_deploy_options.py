"""Every pipeline option a deployment passes is one the pipeline accepts.

Checked: the Flink application jar's options (k8s-flink/image/pipeline-options.txt), the
FlinkDeployment's job args, the worker-pool sidecar's command, and the Dataflow flex template's
parameters (dataflow/metadata.json, generated and kept up to date).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import List

import pytest
import yaml
from apache_beam.options.pipeline_options import PipelineOptions

import beam_pipeline.options  # noqa: F401  (registers PaystreamOptions)
from beam_pipeline.worker import main as worker_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _all_subclasses(cls: type) -> List[type]:
    out = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


def unknown_flags(flags: List[str]) -> List[str]:
    from apache_beam.options.pipeline_options import _BeamArgumentParser

    parser = _BeamArgumentParser(allow_abbrev=False)
    for cls in _all_subclasses(PipelineOptions):
        cls._add_argparse_args(parser)  # type: ignore[attr-defined]
    try:
        _, unknown = parser.parse_known_args(flags)
    except (SystemExit, Exception):  # argparse refuses a value (e.g. outside the choices)
        return list(flags)
    return unknown


def test_the_checker_rejects_unknown_flags() -> None:
    assert unknown_flags(["--runner=FlinkRunner", "--velocity_threshold=3"]) == []
    assert unknown_flags(["--velocity_treshold=3"]) == ["--velocity_treshold=3"]
    assert unknown_flags(["--dedup_scope=fast"])  # a value outside the choices is refused too


def _flink_image_options() -> List[str]:
    with open(os.path.join(ROOT, "k8s-flink", "image", "pipeline-options.txt"), encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip() and not line.startswith("#")]


def test_flink_application_jar_options() -> None:
    flags = _flink_image_options()
    assert not unknown_flags(flags)
    assert "--source=kafka" in flags and "--streaming" in flags


def test_flinkdeployment_job_args_and_sidecar() -> None:
    with open(os.path.join(ROOT, "k8s-flink", "base", "flinkdeployment.yaml"), encoding="utf-8") as handle:
        flink = yaml.safe_load(handle)
    assert not unknown_flags(list(flink["spec"]["job"]["args"]))
    containers = {c["name"]: c for c in flink["spec"]["taskManager"]["podTemplate"]["spec"]["containers"]}
    command = containers["python-worker"]["command"]
    assert command[:3] == ["python3", "-m", "beam_pipeline.worker"]
    with pytest.raises(SystemExit) as exit_info:  # the worker's own parser accepts the args
        worker_main([*command[3:], "--help"])
    assert exit_info.value.code == 0
    # the sidecar ports are the ones the application jar's environments point at
    flags = _flink_image_options()
    assert "--environment_config=127.0.0.1:50000" in flags and "--service_port=50000" in command
    # the pool listens on 127.0.0.1 (the TaskManager shares the pod), /metrics on the pod's address
    assert "--host=0.0.0.0" not in command and "--metrics_host=0.0.0.0" in command
    # the Kafka read is Flink's own source in the TaskManager, from usrlib/: no Java worker
    assert not any(flag.startswith("--kafka_java_worker_address") for flag in flags)


def test_dataflow_metadata_is_current_and_accepted() -> None:
    check = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "build_flex_metadata.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr
    with open(os.path.join(ROOT, "dataflow", "metadata.json"), encoding="utf-8") as handle:
        params = json.load(handle)["parameters"]
    assert params and all(p["helpText"] for p in params)
    for param in params:
        name = param["name"]
        if "regexes" in param:
            value = param["regexes"][0].strip("^$()").split("|")[0]
            candidates = [[f"--{name}={value}"]]
        else:
            candidates = [[f"--{name}=1"], [f"--{name}"], [f"--{name}=bigquery:p:d"]]
        assert any(not unknown_flags(c) for c in candidates), name


def test_setup_packages_the_product_not_the_bench() -> None:
    """setup.py's ``find_packages(include=...)``, evaluated here: no ``bench`` package ships."""
    import ast

    from setuptools import find_packages

    tree = ast.parse(open(os.path.join(ROOT, "setup.py"), encoding="utf-8").read())
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "find_packages"
    ]
    assert len(calls) == 1
    kwargs = {k.arg: ast.literal_eval(k.value) for k in calls[0].keywords}
    assert not calls[0].args and set(kwargs) <= {"include", "exclude"}
    packages = find_packages(where=ROOT, **kwargs)
    assert not [p for p in packages if p == "bench" or p.startswith("bench.")]
    for product in ("beam_pipeline", "transforms", "transforms.sinks", "schemas", "simulator"):
        assert product in packages
