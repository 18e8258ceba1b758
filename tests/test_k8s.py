"""k8s-flink/: every object validates offline (Kubernetes schemas, the operator's CRD), both
overlays build with kustomize, and yamllint is clean."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from typing import Any, Dict, List

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K8S = os.path.join(ROOT, "k8s-flink")
CRD = os.path.join(K8S, "crds", "flinkdeployments.flink.apache.org-v1-operator-1.15.0.yml")
K8S_VERSION = "1.30.0"


def _kustomize() -> str:
    local = os.path.join(ROOT, ".cache", "bin", "kustomize")
    path = local if os.path.exists(local) else shutil.which("kustomize")
    assert path, "kustomize is missing: bash scripts/go_tools.sh builds it (.ci/run does)"
    return path


def build(overlay: str) -> List[Dict[str, Any]]:
    out = subprocess.run(
        [_kustomize(), "build", os.path.join(K8S, "overlays", overlay)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def _crd_schema() -> Dict[str, Any]:
    with open(CRD, encoding="utf-8") as handle:
        crd = yaml.safe_load(handle)
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1beta1")
    schema = _strict(version["schema"]["openAPIV3Schema"])
    # The API server supplies these for every object; the CRD schema leaves them out.
    schema["properties"].update(
        apiVersion={"type": "string", "enum": ["flink.apache.org/v1beta1"]},
        kind={"type": "string", "enum": ["FlinkDeployment"]},
        metadata={"type": "object"},
    )
    return schema


def _strict(schema: Any) -> Any:
    """Kubernetes prunes unknown fields; for a test we reject them, so a typo fails."""
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items() if not k.startswith("x-kubernetes")}
        if schema.get("type") == "object" and "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_overlay_builds_and_every_object_validates(overlay: str) -> None:
    docs = build(overlay)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        [
            "Namespace",
            "ServiceAccount",
            "Role",
            "RoleBinding",
            "FlinkDeployment",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "NetworkPolicy",
            "NetworkPolicy",
        ]
    )
    schema = _crd_schema()
    for doc in docs:
        if doc["kind"] == "FlinkDeployment":
            jsonschema.validate(doc, schema)
        else:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_crd_validation_catches_mistakes() -> None:
    docs = build("prod")
    flink = next(d for d in docs if d["kind"] == "FlinkDeployment")
    schema = _crd_schema()
    bad = yaml.safe_load(yaml.safe_dump(flink))
    bad["spec"]["job"]["upgradeMode"] = "savepoints"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    typo = yaml.safe_load(yaml.safe_dump(flink))
    typo["spec"]["taskManger"] = {"replicas": 2}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(typo, schema)


def test_production_settings() -> None:
    docs = {d["kind"] + "/" + d["metadata"]["name"]: d for d in build("prod")}
    flink = docs["FlinkDeployment/paystream"]["spec"]
    assert flink["job"]["upgradeMode"] == "savepoint"
    conf = flink["flinkConfiguration"]
    assert conf["high-availability.type"] == "kubernetes" and conf["scheduler-mode"] == "reactive"
    assert conf["state.savepoints.dir"].startswith("gs://") and conf["state.checkpoints.dir"].startswith(
        "gs://"
    )
    hpa = docs["HorizontalPodAutoscaler/paystream-taskmanager"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 20)
    assert hpa["scaleTargetRef"]["kind"] == "FlinkDeployment"
    assert {m["type"] for m in hpa["metrics"]} == {"Resource", "External"}
    containers = flink["taskManager"]["podTemplate"]["spec"]["containers"]
    for c in containers:
        assert c["resources"]["requests"] and c["resources"]["limits"], c["name"]
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert "prod" in c["image"]
    # the Kafka read runs inside the TaskManager (tests/test_flink_cluster.py): no Java worker
    assert {c["name"] for c in containers} == {"python-worker"}
    policies = [d for k, d in docs.items() if k.startswith("NetworkPolicy/")]
    assert any(
        p["spec"]["podSelector"] == {} and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        for p in policies
    )
    assert "PodDisruptionBudget/paystream-taskmanager" in docs
    role = docs["Role/paystream-flink-ha"]
    assert all(r["resources"] != ["*"] and "*" not in r["verbs"] for r in role["rules"])


def test_yamllint_is_clean() -> None:
    files = [f for f in glob.glob(os.path.join(K8S, "**", "*.y*ml"), recursive=True) if "/crds/" not in f]
    config = "{extends: default, rules: {line-length: {max: 150}, document-start: disable, comments: {min-spaces-from-content: 1}, truthy: {check-keys: false}, braces: {max-spaces-inside: 1}, brackets: {max-spaces-inside: 1}}}"
    out = subprocess.run(
        ["yamllint", "-s", "-d", config, *files], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr
