"""The Terraform under ``terraform/``, checked offline.

- ``terraform fmt -check -recursive`` with a terraform CLI built from source;
- every ``.tf`` file parsed with python-hcl2, and checked: the BigQuery tables against
  ``schemas/tables.py`` (TABLES) and the ``schemas/bigquery/*.json`` files they are read from,
  typed and described variables, deletion protection on by default, no primitive roles, no secret
  values, version pins, module wiring (arguments, outputs, ``var.``/``local.`` references), and
  every resource's arguments and blocks against the google/google-beta 6.50.0 provider schema;
- checkov, once per session, with every skip justified inline;
- ``terraform init``: the provider registry is not reachable here, so the test asserts that init
  gets as far as installing the local modules and fails only on registry.terraform.io, and
  records that ``terraform validate`` did not run. Where the registry answers, it runs validate;
- ``terraform validate`` in every module and example with a schema-only stand-in provider
  (``terraform/tools/schemaprovider``): Terraform's own checks against the rebuilt 6.50.0
  schema, not the real provider's.

The tools come from ``terraform/tools.sh`` (terraform, checkov in its own virtualenv, the provider
schema, the stand-in provider), which the session fixture runs; it returns at once when they are
in ``.cache/``. terraform/README.md says what each check does and does not cover.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

try:
    import hcl2
    from hcl2 import SerializationOptions
except ImportError as exc:  # pragma: no cover - says what to install instead of a bare error
    raise ImportError("tests/test_terraform.py needs python-hcl2>=8.1 (pip install -e '.[test]')") from exc

from schemas.tables import TABLES

ROOT = Path(__file__).resolve().parent.parent
TF = ROOT / "terraform"
CACHE = ROOT / ".cache"
SCHEMA_DIR = ROOT / "schemas" / "bigquery"

MODULES = ("bigquery", "storage", "gke", "redis", "kafka", "iam", "secrets", "dataflow", "network")
EXAMPLES = ("dev", "prod")
META_ARGS = {"count", "for_each", "depends_on", "provider", "lifecycle"}
MODULE_META_ARGS = {"source", "version", "count", "for_each", "depends_on", "providers"}
PRIMITIVE_ROLES = {"roles/owner", "roles/editor", "roles/viewer"}
_HCL = SerializationOptions(with_comments=False, explicit_blocks=True, strip_string_quotes=True)


# ---------------------------------------------------------------------------------------------
# Tools and parsed configuration


@dataclass(frozen=True)
class Tools:
    terraform: Path
    checkov: Path
    provider_schema: Path
    schema_provider: Path


@pytest.fixture(scope="session")
def tools() -> Tools:
    result = subprocess.run(
        ["bash", str(TF / "tools.sh")], capture_output=True, text=True, timeout=1200, cwd=ROOT
    )
    assert result.returncode == 0, f"terraform/tools.sh failed:\n{result.stdout}\n{result.stderr}"
    found = Tools(
        terraform=CACHE / "bin" / "terraform",
        checkov=CACHE / "checkov-venv" / "bin" / "checkov",
        provider_schema=CACHE / "terraform" / "google-provider-schema.json",
        schema_provider=CACHE / "bin" / "terraform-provider-schemaonly",
    )
    for path in (found.terraform, found.checkov, found.provider_schema, found.schema_provider):
        assert path.exists(), f"terraform/tools.sh did not produce {path}"
    return found


def _tf_env(tmp: Path) -> dict[str, str]:
    cli_config = tmp / "terraformrc"
    cli_config.write_text("", encoding="utf-8")
    env = dict(os.environ)
    env.update(
        TF_CLI_CONFIG_FILE=str(cli_config),  # the machine's may point at a missing file
        TF_DATA_DIR=str(tmp / "tf-data"),  # nothing written into the work tree
        TF_IN_AUTOMATION="1",
        TF_INPUT="0",
        CHECKPOINT_DISABLE="1",
    )
    return env


def _run(
    cmd: Sequence[str | Path], cwd: Path, env: dict[str, str] | None = None, timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def _tf_files() -> list[Path]:
    return sorted(p for p in TF.rglob("*.tf") if ".terraform" not in p.parts)


def _load(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        parsed: dict[str, Any] = hcl2.load(handle, serialization_options=_HCL)
        return parsed


@pytest.fixture(scope="session")
def parsed() -> dict[Path, dict[str, Any]]:
    """Every .tf file under terraform/, parsed with python-hcl2."""
    files = _tf_files()
    assert len(files) >= 4 * len(MODULES) + 4, f"too few .tf files: {files}"
    return {path: _load(path) for path in files}


def _labelled(doc: dict[str, Any], kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(label, body) of each ``kind "label" {...}`` block (variable, output, module)."""
    for entry in doc.get(kind, []):
        yield from entry.items()


def _resources(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(type, name, body) of each resource block."""
    for entry in doc.get("resource", []):
        for rtype, named in entry.items():
            for name, body in named.items():
                yield rtype, name, body


def _locals(doc: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for block in doc.get("locals", []):
        out.update({k: v for k, v in block.items() if k != "__is_block__"})
    return out


@dataclass
class ModuleDir:
    """One Terraform module (a directory) with its declarations."""

    path: Path
    docs: dict[Path, dict[str, Any]]

    def all(self, kind: str) -> dict[str, dict[str, Any]]:
        return {label: body for doc in self.docs.values() for label, body in _labelled(doc, kind)}

    @property
    def variables(self) -> dict[str, dict[str, Any]]:
        return self.all("variable")

    @property
    def outputs(self) -> dict[str, dict[str, Any]]:
        return self.all("output")

    @property
    def modules(self) -> dict[str, dict[str, Any]]:
        return self.all("module")

    @property
    def locals(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for doc in self.docs.values():
            out.update(_locals(doc))
        return out

    @property
    def resources(self) -> list[tuple[str, str, dict[str, Any]]]:
        return [r for doc in self.docs.values() for r in _resources(doc)]


@pytest.fixture(scope="session")
def module_dirs(parsed: dict[Path, dict[str, Any]]) -> dict[Path, ModuleDir]:
    dirs: dict[Path, ModuleDir] = {}
    for path, doc in parsed.items():
        dirs.setdefault(path.parent, ModuleDir(path.parent, {})).docs[path] = doc
    return dirs


def _strings(value: Any) -> Iterator[str]:
    """Every string inside a parsed value (keys of blocks excluded)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _expressions(value: Any) -> Iterator[str]:
    """Strings that hold a Terraform expression or template (``${...}``), not plain text."""
    return (s for s in _strings(value) if "${" in s)


# ---------------------------------------------------------------------------------------------
# terraform fmt


def test_terraform_fmt_check_recursive(tools: Tools, tmp_path: Path) -> None:
    env = _tf_env(tmp_path)
    result = _run([tools.terraform, "fmt", "-check", "-recursive", "-diff", "-no-color", TF], ROOT, env)
    assert result.returncode == 0, f"terraform fmt would change:\n{result.stdout}{result.stderr}"

    # The same binary does flag a badly formatted file (so a pass above means something).
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "main.tf").write_text('variable "x" {\ntype=string\n}\n', encoding="utf-8")
    flagged = _run([tools.terraform, "fmt", "-check", "-recursive", bad], tmp_path, env)
    assert flagged.returncode != 0 and "main.tf" in flagged.stdout


# ---------------------------------------------------------------------------------------------
# Layout and pins


@pytest.mark.parametrize("module", MODULES)
def test_module_layout(module: str) -> None:
    folder = TF / "modules" / module
    for name in ("main.tf", "variables.tf", "outputs.tf", "versions.tf"):
        assert (folder / name).is_file(), f"modules/{module}/{name} is missing"


def test_root_and_examples_layout() -> None:
    for name in ("main.tf", "variables.tf", "outputs.tf", "versions.tf", "README.md", "tools.sh"):
        assert (TF / name).is_file(), f"terraform/{name} is missing"
    for example in EXAMPLES:
        folder = TF / "examples" / example
        for name in ("main.tf", "variables.tf", "outputs.tf", "versions.tf", "terraform.tfvars.example"):
            assert (folder / name).is_file(), f"examples/{example}/{name} is missing"


def test_versions_pinned(module_dirs: dict[Path, ModuleDir]) -> None:
    for folder, module in module_dirs.items():
        versions = module.docs.get(folder / "versions.tf")
        assert versions is not None, f"{folder.relative_to(ROOT)} has no versions.tf"
        (terraform,) = versions["terraform"]
        assert terraform["required_version"] == ">= 1.5", folder
        (providers,) = terraform["required_providers"]
        providers = {k: v for k, v in providers.items() if k != "__is_block__"}
        assert providers, f"{folder}: no required_providers"
        for name, spec in providers.items():
            assert name in {"google", "google-beta"}, f"{folder}: unexpected provider {name}"
            assert spec == {"source": f"hashicorp/{name}", "version": "~> 6.50"}, (folder, name, spec)


# ---------------------------------------------------------------------------------------------
# BigQuery: one source of truth with schemas/


@pytest.fixture(scope="session")
def bigquery(module_dirs: dict[Path, ModuleDir]) -> ModuleDir:
    return module_dirs[TF / "modules" / "bigquery"]


def test_bigquery_tables_are_exactly_tables_py(
    module_dirs: dict[Path, ModuleDir], bigquery: ModuleDir
) -> None:
    tables = [
        (folder, rtype, name, body)
        for folder, module in module_dirs.items()
        for rtype, name, body in module.resources
        if rtype == "google_bigquery_table"
    ]
    assert [(folder, name) for folder, _, name, _ in tables] == [(bigquery.path, "this")], (
        "all BigQuery tables come from one for_each resource in modules/bigquery"
    )
    body = tables[0][3]
    assert body["for_each"] == "${local.tables}"
    declared = bigquery.locals["tables"]
    assert set(declared) == set(TABLES)
    for name, spec in TABLES.items():
        table = declared[name]
        assert table["partition_field"] == spec.partition_field, name
        assert tuple(table["clustering"]) == spec.cluster_fields, name
        assert table["primary_key"] == spec.primary_key, name
        assert table["description"] == spec.description, name

    assert body["table_id"] == "${each.key}"
    (partitioning,) = body["time_partitioning"]
    assert partitioning["type"] == "DAY" == TABLES["payment_transactions"].partition_type
    assert partitioning["field"] == "${each.value.partition_field}"
    assert body["clustering"] == "${each.value.clustering}"
    (constraints,) = body["table_constraints"]
    (primary_key,) = constraints["primary_key"]
    assert primary_key["columns"] == ["${each.value.primary_key}"]
    # The columns are the repository's JSON schema files, read with file().
    assert body["schema"] == '${file("${local.schema_dir}/${each.key}.json")}'


def _path_module_default(expression: str) -> str:
    match = re.fullmatch(r'\$\{coalesce\(var\.\w+, "\$\{path\.module\}/(?P<rel>[^"$]+)"\)\}', expression)
    assert match, f'expected coalesce(var.X, "${{path.module}}/..."), got {expression}'
    return match["rel"]


def test_bigquery_schema_files_are_the_repositorys(
    module_dirs: dict[Path, ModuleDir], bigquery: ModuleDir
) -> None:
    # Default of the module itself, relative to modules/bigquery ...
    module_default = (bigquery.path / _path_module_default(bigquery.locals["schema_dir"])).resolve()
    assert module_default == SCHEMA_DIR
    assert bigquery.variables["schema_dir"].get("default") is None
    # ... and what the root module passes, relative to terraform/.
    root_call = module_dirs[TF].modules["bigquery"]
    assert root_call["source"] == "./modules/bigquery"
    assert (TF / _path_module_default(root_call["schema_dir"])).resolve() == SCHEMA_DIR

    for name, spec in TABLES.items():
        path = SCHEMA_DIR / f"{name}.json"
        assert path.is_file(), path
        # The file Terraform reads holds exactly the columns schemas/tables.py loads.
        assert json.loads(path.read_text(encoding="utf-8")) == [f.to_json() for f in spec.fields]


def test_bigquery_dataset_keeps_its_contents(bigquery: ModuleDir) -> None:
    (dataset,) = [body for rtype, _, body in bigquery.resources if rtype == "google_bigquery_dataset"]
    assert dataset["delete_contents_on_destroy"] is False
    (table,) = [body for rtype, _, body in bigquery.resources if rtype == "google_bigquery_table"]
    assert table["deletion_protection"] == "${var.deletion_protection}"
    # CMEK is optional and applied to the dataset and every table when a key is given.
    assert [next(iter(d)) for d in dataset["dynamic"]] == ["default_encryption_configuration"]
    assert [next(iter(d)) for d in table["dynamic"]] == ["encryption_configuration"]


# ---------------------------------------------------------------------------------------------
# Variables and safe defaults


def test_every_variable_has_a_type_and_a_description(parsed: dict[Path, dict[str, Any]]) -> None:
    problems = []
    count = 0
    for path, doc in parsed.items():
        for name, body in _labelled(doc, "variable"):
            count += 1
            if "type" not in body:
                problems.append(f"{path.relative_to(ROOT)}: variable {name} has no type")
            description = body.get("description")
            if not isinstance(description, str) or len(description.strip()) < 10:
                problems.append(f"{path.relative_to(ROOT)}: variable {name} has no description")
    assert count > 100, count
    assert not problems, "\n".join(problems)


def test_every_output_is_described(parsed: dict[Path, dict[str, Any]]) -> None:
    missing = [
        f"{path.relative_to(ROOT)}: output {name}"
        for path, doc in parsed.items()
        for name, body in _labelled(doc, "output")
        if not str(body.get("description", "")).strip()
    ]
    assert not missing, missing


def test_deletion_protection_is_on_by_default(
    parsed: dict[Path, dict[str, Any]], module_dirs: dict[Path, ModuleDir]
) -> None:
    variables = [
        (path, body)
        for path, doc in parsed.items()
        for name, body in _labelled(doc, "variable")
        if name == "deletion_protection"
    ]
    # The root module, bigquery, gke, secrets and the dev example have one.
    assert len(variables) >= 5, variables
    for path, body in variables:
        assert body["type"] == "bool", path
        assert body.get("default") is True, (
            f"{path.relative_to(ROOT)}: deletion_protection must default to true"
        )

    # Wherever it is set, it is a literal true or passed through from such a variable.
    uses = []
    for folder, module in module_dirs.items():
        for rtype, name, body in module.resources:
            if "deletion_protection" in body:
                uses.append((folder, f"{rtype}.{name}", body["deletion_protection"]))
        for name, body in module.modules.items():
            if "deletion_protection" in body:
                uses.append((folder, f"module.{name}", body["deletion_protection"]))
    assert len(uses) >= 6, uses
    for folder, where, value in uses:
        assert value in (True, "${var.deletion_protection}"), f"{folder}: {where} sets {value}"

    # Nothing is force-destroyed: the bucket keeps its objects.
    (bucket,) = [
        body
        for rtype, _, body in module_dirs[TF / "modules" / "storage"].resources
        if rtype == "google_storage_bucket"
    ]
    assert bucket["force_destroy"] is False
    assert bucket["uniform_bucket_level_access"] is True
    assert bucket["public_access_prevention"] == "enforced"
    assert bucket["versioning"] == [{"enabled": True, "__is_block__": True}]
    prefixes = [rule["condition"][0].get("matches_prefix") for rule in bucket["lifecycle_rule"]]
    assert ["${var.temp_prefix}"] in prefixes, "temp/ files expire"
    assert any("days_since_noncurrent_time" in rule["condition"][0] for rule in bucket["lifecycle_rule"])


def test_redis_has_auth_and_tls(module_dirs: dict[Path, ModuleDir]) -> None:
    (redis,) = [body for _, _, body in module_dirs[TF / "modules" / "redis"].resources]
    assert redis["auth_enabled"] is True
    assert redis["transit_encryption_mode"] == "SERVER_AUTHENTICATION"
    assert redis["authorized_network"] == "${var.authorized_network}"


def test_kafka_can_use_an_existing_cluster(module_dirs: dict[Path, ModuleDir]) -> None:
    kafka = module_dirs[TF / "modules" / "kafka"]
    assert kafka.variables["create_kafka"]["default"] is True
    assert kafka.variables["existing_bootstrap_servers"]["type"] == "string"
    types = {rtype: body for rtype, _, body in kafka.resources}
    assert set(types) == {"google_managed_kafka_cluster", "google_managed_kafka_topic"}
    for body in types.values():
        assert body["count"] == "${var.create_kafka ? 1 : 0}"
    assert kafka.variables["topic"]["default"] == "payments"
    output = kafka.outputs["bootstrap_servers"]
    assert "var.existing_bootstrap_servers" in output["value"]
    assert output["precondition"], "create_kafka = false without servers must be refused"


def test_dataflow_is_off_by_default(module_dirs: dict[Path, ModuleDir]) -> None:
    root = module_dirs[TF]
    assert root.variables["enable_dataflow"]["default"] is False
    assert root.modules["dataflow"]["count"] == "${var.enable_dataflow ? 1 : 0}"
    (job,) = module_dirs[TF / "modules" / "dataflow"].resources
    assert job[0] == "google_dataflow_flex_template_job"
    assert job[2]["provider"] in ("google-beta", "${google-beta}")


def test_no_primitive_roles_and_scoped_grants(
    module_dirs: dict[Path, ModuleDir], parsed: dict[Path, Any]
) -> None:
    for path, doc in parsed.items():
        for text in _strings(doc):
            for role in PRIMITIVE_ROLES:
                assert not re.search(rf"{re.escape(role)}\b", text), f"{path.relative_to(ROOT)}: {role}"
    iam = module_dirs[TF / "modules" / "iam"]
    by_type = {rtype: body for rtype, _, body in iam.resources}
    # Data access is granted on the one dataset, bucket and secrets, not on the project.
    assert by_type["google_bigquery_dataset_iam_member"]["role"] == "roles/bigquery.dataEditor"
    assert by_type["google_bigquery_dataset_iam_member"]["dataset_id"] == "${var.dataset_id}"
    assert by_type["google_storage_bucket_iam_member"]["role"] == "roles/storage.objectAdmin"
    assert by_type["google_storage_bucket_iam_member"]["bucket"] == "${var.bucket_name}"
    assert by_type["google_secret_manager_secret_iam_member"]["role"] == "roles/secretmanager.secretAccessor"
    project_roles = set(re.findall(r"roles/[\w.]+", json.dumps(iam.locals["project_roles"])))
    assert project_roles, "project roles not found"
    for role in (
        "roles/bigquery.dataEditor",
        "roles/storage.objectAdmin",
        "roles/secretmanager.secretAccessor",
    ):
        assert role not in project_roles, f"{role} must not be granted on the project"
    assert "roles/managedkafka.client" in project_roles
    assert by_type["google_service_account_iam_member"]["role"] in {
        "roles/iam.workloadIdentityUser",
        "roles/iam.serviceAccountUser",
    }


def test_secrets_are_created_empty(
    parsed: dict[Path, dict[str, Any]], module_dirs: dict[Path, ModuleDir]
) -> None:
    for path, doc in parsed.items():
        for rtype, name, body in _resources(doc):
            assert rtype != "google_secret_manager_secret_version", (
                f"{path}: {rtype}.{name} puts a value in code"
            )
            assert "secret_data" not in body, f"{path}: {rtype}.{name}"
    secrets = module_dirs[TF / "modules" / "secrets"]
    assert set(secrets.variables["secret_ids"]["default"]) == {"hmac_key", "redis_auth", "kafka_sasl"}


def test_tfvars_examples_parse_and_set_only_declared_variables(module_dirs: dict[Path, ModuleDir]) -> None:
    for example in EXAMPLES:
        folder = TF / "examples" / example
        values = _load(folder / "terraform.tfvars.example")
        declared = module_dirs[folder].variables
        assert set(values) <= set(declared), set(values) - set(declared)
        required = {name for name, body in declared.items() if "default" not in body}
        assert required <= set(values), required - set(values)


# ---------------------------------------------------------------------------------------------
# Wiring: what `terraform validate` would check between modules, done on the parsed files


_VAR = re.compile(r"(?<![\w.])var\.([A-Za-z_][\w-]*)")
_LOCAL = re.compile(r"(?<![\w.])local\.([A-Za-z_][\w-]*)")
_MODULE_OUT = re.compile(r"(?<![\w.])module\.([A-Za-z_][\w-]*)(?:\[[^\]]*\])?\.([A-Za-z_][\w-]*)")
_RESOURCE_REF = re.compile(
    r"(?<![\w.])(google_[a-z0-9_]+)\.([A-Za-z_][\w-]*)(?:\[[^\]]*\])?(?:\.([a-z_][a-z0-9_]*))?"
)


def test_references_and_module_calls_resolve(module_dirs: dict[Path, ModuleDir]) -> None:
    problems: list[str] = []
    for folder, module in module_dirs.items():
        where = folder.relative_to(ROOT)
        variables, locals_ = set(module.variables), set(module.locals)
        resources = {(rtype, name) for rtype, name, _ in module.resources}
        calls = module.modules
        for doc in module.docs.values():
            for text in _expressions(doc):
                problems += [
                    f"{where}: var.{v} is not declared" for v in _VAR.findall(text) if v not in variables
                ]
                problems += [
                    f"{where}: local.{v} is not declared" for v in _LOCAL.findall(text) if v not in locals_
                ]
                for name, output in _MODULE_OUT.findall(text):
                    if name not in calls:
                        problems.append(f"{where}: module.{name} is not declared")
                        continue
                    called = module_dirs.get((folder / calls[name]["source"]).resolve())
                    if called is None or output not in called.outputs:
                        problems.append(f"{where}: module.{name} has no output {output}")
                for rtype, name, _attr in _RESOURCE_REF.findall(text):
                    if (rtype, name) not in resources:
                        problems.append(f"{where}: {rtype}.{name} is not declared here")
        for name, call in calls.items():
            target = (folder / call["source"]).resolve()
            called = module_dirs.get(target)
            if called is None:
                problems.append(f"{where}: module {name}: no module at {call['source']}")
                continue
            args = set(call) - MODULE_META_ARGS - {"__is_block__"}
            problems += [
                f"{where}: module {name}: unknown argument {a}" for a in sorted(args - set(called.variables))
            ]
            required = {v for v, body in called.variables.items() if "default" not in body}
            problems += [f"{where}: module {name}: missing {v}" for v in sorted(required - args)]
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------------------------
# Resources against the provider schema (hashicorp/google and google-beta 6.50.0)


def _check_block(body: dict[str, Any], schema: dict[str, Any], where: str, top: bool) -> list[str]:
    """Arguments and blocks of one (nested) block against its schema; required ones present."""
    attributes, block_types = schema.get("attributes", {}), schema.get("block_types", {})
    settable = {name for name, spec in attributes.items() if spec.get("required") or spec.get("optional")}
    problems: list[str] = []
    present: set[str] = set()
    for key, value in body.items():
        if key == "__is_block__" or (top and key in META_ARGS):
            continue
        if key == "dynamic":
            for entry in value:
                for label, dyn in entry.items():
                    if label not in block_types:
                        problems.append(f"{where}: no block {label!r}")
                        continue
                    present.add(label)
                    for content in dyn.get("content", []):
                        problems += _check_block(
                            content, block_types[label]["block"], f"{where}.{label}", False
                        )
            continue
        present.add(key)
        is_block = (
            isinstance(value, list)
            and value
            and all(isinstance(v, dict) and v.get("__is_block__") for v in value)
        )
        if is_block:
            if key not in block_types:
                problems.append(f"{where}: no block {key!r}")
                continue
            for item in value:
                problems += _check_block(item, block_types[key]["block"], f"{where}.{key}", False)
        elif key not in settable:
            problems.append(f"{where}: no argument {key!r}")
    for name, spec in attributes.items():
        if spec.get("required") and name not in present:
            problems.append(f"{where}: required {name!r} is missing")
    for name, spec in block_types.items():
        if spec.get("min_items", 0) > 0 and name not in present:
            problems.append(f"{where}: required block {name!r} is missing")
    return problems


def test_resources_match_the_provider_schema(tools: Tools, module_dirs: dict[Path, ModuleDir]) -> None:
    """Quick, precise messages for what the stand-in validate below also catches."""
    schema = json.loads(tools.provider_schema.read_text(encoding="utf-8"))
    assert {s["version"] for s in schema["sources"]} == {"16.12.1"}, schema["sources"]
    providers = {
        name: schema["provider_schemas"][f"registry.terraform.io/hashicorp/{name}"]["resource_schemas"]
        for name in ("google", "google-beta")
    }
    problems: list[str] = []
    checked = 0
    for folder, module in module_dirs.items():
        declared = {(rtype, name): body for rtype, name, body in module.resources}
        for (rtype, name), body in declared.items():
            where = f"{folder.relative_to(ROOT)}: {rtype}.{name}"
            provider = "google-beta" if "google-beta" in str(body.get("provider", "")) else "google"
            if rtype not in providers[provider]:
                problems.append(f"{where}: not a {provider} resource")
                continue
            problems += _check_block(body, providers[provider][rtype]["block"], where, True)
            checked += 1
        # Attributes read from resources exist in their schema.
        for doc in module.docs.values():
            for text in _expressions(doc):
                for rtype, name, attr in _RESOURCE_REF.findall(text):
                    if not attr or (rtype, name) not in declared:
                        continue
                    provider = (
                        "google-beta"
                        if "google-beta" in str(declared[rtype, name].get("provider", ""))
                        else "google"
                    )
                    block = providers[provider].get(rtype, {}).get("block", {})
                    if block and attr not in {*block["attributes"], *block["block_types"]}:
                        problems.append(f"{folder.relative_to(ROOT)}: {rtype}.{name} has no attribute {attr}")
    assert not problems, "\n".join(problems)
    assert checked >= 25, checked


# ---------------------------------------------------------------------------------------------
# checkov


_SKIP = re.compile(r"#\s*checkov:skip=(?P<id>CKV2?_[A-Z]+_\d+)(?::(?P<reason>.*))?")

# Checks the design relies on; each must be evaluated and pass (not be skipped).
MUST_PASS = {
    "CKV_GCP_7": "no legacy ABAC",
    "CKV_GCP_12": "network policy",
    "CKV_GCP_20": "master authorized networks",
    "CKV_GCP_25": "private cluster",
    "CKV_GCP_64": "private nodes",
    "CKV_GCP_69": "GKE metadata server (Workload Identity)",
    "CKV_GCP_70": "release channel",
    "CKV_GCP_71": "shielded nodes",
    "CKV_GCP_9": "node auto-repair",
    "CKV_GCP_10": "node auto-upgrade",
    "CKV_GCP_29": "uniform bucket-level access",
    "CKV_GCP_78": "bucket versioning",
    "CKV_GCP_114": "public access prevention",
    "CKV_GCP_95": "Redis AUTH",
    "CKV_GCP_97": "Redis in-transit encryption",
    "CKV_GCP_121": "BigQuery deletion protection",
    "CKV_GCP_15": "dataset not public",
    "CKV_GCP_117": "no basic roles on the project",
}


@pytest.fixture(scope="session")
def checkov_report(tools: Tools) -> dict[str, Any]:
    """One checkov run over terraform/ for the whole session (it takes several seconds)."""
    result = _run(
        [
            tools.checkov,
            "-d",
            "terraform",
            "--framework",
            "terraform",
            "--skip-download",
            "--compact",
            "-o",
            "json",
        ],
        ROOT,
        timeout=600,
    )
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(
            f"checkov printed no JSON (exit {result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    if isinstance(report, list):  # one entry per framework
        (report,) = report
    report["returncode"] = result.returncode
    return report


def test_checkov_passes(checkov_report: dict[str, Any]) -> None:
    summary = checkov_report["summary"]
    failed = [
        f"{c['check_id']} {c['check_name']}: {c['resource']} ({c['file_path']})"
        for c in checkov_report["results"]["failed_checks"]
    ]
    assert not failed, "checkov failed:\n" + "\n".join(failed)
    assert summary["parsing_errors"] == 0, summary
    assert checkov_report["returncode"] == 0
    assert summary["resource_count"] >= 25, summary
    passed = {c["check_id"] for c in checkov_report["results"]["passed_checks"]}
    missing = {cid: what for cid, what in MUST_PASS.items() if cid not in passed}
    assert not missing, f"checks that must run and pass: {missing}"


def test_checkov_skips_are_inline_and_justified(checkov_report: dict[str, Any]) -> None:
    inline: dict[str, list[str]] = {}
    for path in _tf_files():
        for line in path.read_text(encoding="utf-8").splitlines():
            match = _SKIP.search(line)
            if match:
                reason = (match["reason"] or "").strip()
                assert len(reason) >= 20, f"{path.relative_to(ROOT)}: skip of {match['id']} needs a reason"
                inline.setdefault(match["id"], []).append(str(path.relative_to(TF)))
    skipped = {c["check_id"] for c in checkov_report["results"]["skipped_checks"]}
    # Every skip checkov applied is one of ours, and none of ours is stale.
    assert skipped == set(inline), {"skipped": sorted(skipped), "inline": sorted(inline)}
    for check in checkov_report["results"]["skipped_checks"]:
        assert check["check_result"].get("suppress_comment", "").strip(), check["check_id"]


# ---------------------------------------------------------------------------------------------
# terraform init / validate


def test_terraform_init_and_validate(tools: Tools, tmp_path: Path, record_property: Any) -> None:
    """Where the registry answers: init and validate. Here it does not, which is asserted and recorded."""
    work = tmp_path / "repo"
    shutil.copytree(TF, work / "terraform", ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))
    shutil.copytree(SCHEMA_DIR, work / "schemas" / "bigquery")
    example = work / "terraform" / "examples" / "dev"
    env = _tf_env(tmp_path)

    init = _run(
        [tools.terraform, "init", "-backend=false", "-input=false", "-no-color"], example, env, timeout=600
    )
    # The local modules were found and installed either way (the configuration tree loads).
    for module in MODULES:
        assert f"- paystream.{module} in ../../modules/{module}" in init.stdout, init.stdout

    if init.returncode == 0:
        validate = _run([tools.terraform, "validate", "-no-color"], example, env)
        assert validate.returncode == 0, validate.stdout + validate.stderr
        record_property("terraform_validate", "passed")
        return

    error = init.stderr
    assert "Failed to query available provider packages" in error, error
    assert "registry.terraform.io" in error, error
    # No other error: one per provider, both about the registry.
    assert error.count("Error: ") == 2 and error.count("could not connect to registry.terraform.io") == 2, (
        error
    )
    # The configuration itself loads: terraform lists its provider requirements.
    providers = _run([tools.terraform, "providers", "-no-color"], example, env)
    assert providers.returncode == 0, providers.stderr
    assert "module.paystream" in providers.stdout and "hashicorp/google-beta" in providers.stdout
    reason = next(line for line in error.splitlines() if "registry.terraform.io" in line).strip()
    record_property(
        "terraform_validate", f"not run: terraform init cannot reach the provider registry ({reason})"
    )
    warnings.warn(
        "terraform validate not run: the provider registry (registry.terraform.io) is unreachable "
        "here; terraform/README.md says what is checked instead",
        stacklevel=1,
    )


# ---------------------------------------------------------------------------------------------
# terraform validate with a schema-only stand-in provider
#
# Not the real provider: terraform/tools/schemaprovider serves the google/google-beta 6.50.0
# schema rebuilt from the cdktf packages and accepts whatever fits it. Terraform itself then
# checks arguments, blocks, value types, references, module wiring, variable validations and
# functions. What the real provider adds (conflicting arguments, allowed values) is not checked.

VALIDATE_DIRS = [".", "examples/dev", "examples/prod", *(f"modules/{m}" for m in MODULES)]


@dataclass(frozen=True)
class Workspace:
    repo: Path
    env: dict[str, str]


def _workspace(tools: Tools, base: Path) -> Workspace:
    repo = base / "repo"
    shutil.copytree(TF, repo / "terraform", ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))
    shutil.copytree(SCHEMA_DIR, repo / "schemas" / "bigquery")
    mirror = base / "mirror" / "registry.terraform.io" / "hashicorp"
    for name in ("google", "google-beta"):
        folder = mirror / name / "6.50.0" / "linux_amd64"
        folder.mkdir(parents=True)
        shutil.copy2(tools.schema_provider, folder / f"terraform-provider-{name}_v6.50.0")
    env = _tf_env(base)
    Path(env["TF_CLI_CONFIG_FILE"]).write_text(
        "provider_installation {\n"
        f'  filesystem_mirror {{\n    path    = "{base / "mirror"}"\n'
        '    include = ["registry.terraform.io/hashicorp/google", "registry.terraform.io/hashicorp/google-beta"]\n'
        "  }\n}\n",
        encoding="utf-8",
    )
    env["PAYSTREAM_PROVIDER_SCHEMA"] = str(tools.provider_schema)
    return Workspace(repo, env)


def _init_and_validate(tools: Tools, ws: Workspace, folder: Path) -> subprocess.CompletedProcess[str]:
    env = dict(ws.env, TF_DATA_DIR=str(folder / ".terraform"))
    init = _run([tools.terraform, "init", "-backend=false", "-input=false", "-no-color"], folder, env)
    assert init.returncode == 0, init.stdout + init.stderr
    assert re.search(r"Installed hashicorp/google(-beta)? v6\.50\.0", init.stdout), init.stdout
    return _run([tools.terraform, "validate", "-no-color"], folder, env)


@pytest.fixture(scope="session")
def workspace(tools: Tools, tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return _workspace(tools, tmp_path_factory.mktemp("tf-validate"))


@pytest.mark.parametrize("folder", VALIDATE_DIRS)
def test_terraform_validate_with_schema_only_provider(
    tools: Tools, workspace: Workspace, folder: str
) -> None:
    result = _init_and_validate(tools, workspace, workspace.repo / "terraform" / folder)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "The configuration is valid" in result.stdout


def test_schema_only_validate_catches_a_type_error(tools: Tools, tmp_path: Path) -> None:
    ws = _workspace(tools, tmp_path)
    main = ws.repo / "terraform" / "modules" / "redis" / "main.tf"
    text = main.read_text(encoding="utf-8")
    assert "auth_enabled            = true" in text
    main.write_text(
        text.replace("auth_enabled            = true", 'auth_enabled            = "yes"'), encoding="utf-8"
    )
    result = _init_and_validate(tools, ws, main.parent)
    assert result.returncode != 0
    assert 'Inappropriate value for attribute "auth_enabled": a bool is required' in result.stderr
