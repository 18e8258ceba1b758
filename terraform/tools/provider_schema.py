"""Rebuild the schemas of the Google Terraform providers from their cdktf bindings, offline.

The Terraform provider registry is not reachable here, so ``terraform init`` cannot install
hashicorp/google. The ``cdktf-cdktf-provider-google`` and ``-google-beta`` packages on PyPI are
generated from those providers' own schemas (16.12.1 from provider 6.50.0) and ship them as a jsii
assembly. This script turns the assembly back into the layout of ``terraform providers schema
-json``: every resource's arguments (name, type, required or optional), nested blocks (list
nesting, with at most one item for a single block) and the attributes it exports (typed
``dynamic``, computed).

It is an approximation: sets are read as lists, object-typed arguments as ``dynamic``, and the
provider's own checks (conflicting arguments, allowed values) are not there. It is used by
``tests/test_terraform.py`` (argument names, required arguments, exported attributes) and by the
schema-only stand-in provider in ``terraform/tools/schemaprovider`` that lets ``terraform
validate`` run.

    python terraform/tools/provider_schema.py OUT.json WHEEL.whl [WHEEL.whl ...]
"""

from __future__ import annotations

import io
import json
import re
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

_DOC_LINK = re.compile(
    r"/providers/hashicorp/(?P<provider>google(?:-beta)?)/[^/]+/docs/(?P<kind>resources|data-sources)/"
    r"(?P<name>[a-z0-9_]+)#(?P<attr>[a-z0-9_]+)"
)
_PROVIDER_LINK = re.compile(r"/providers/hashicorp/google(?:-beta)?/[^/]+/docs#(?P<attr>[a-z0-9_]+)")
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")
_PRIMITIVES = {"string": "string", "number": "number", "boolean": "bool", "any": "dynamic", "json": "dynamic"}
# Getters of cdktf classes that are not provider attributes.
_INTERNAL = {"internalValue", "tfResourceType", "terraformResourceType", "fqn", "friendlyUniqueId"}


def _snake(name: str) -> str:
    return _CAMEL.sub("_", name).lower()


def load_assembly(wheel: Path) -> dict[str, Any]:
    with zipfile.ZipFile(wheel) as whl:
        tgz = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(whl.read(tgz)), mode="r:gz") as tar:
            member = tar.extractfile("package/.jsii")
            if member is None:
                raise ValueError(f"{wheel}: no package/.jsii in {tgz}")
            assembly: dict[str, Any] = json.load(member)
            return assembly


class _Converter:
    def __init__(self, assembly: dict[str, Any]) -> None:
        self.types: dict[str, Any] = assembly["types"]

    def is_struct(self, fqn: str) -> bool:
        spec = self.types.get(fqn)
        return bool(spec and spec.get("datatype"))

    def kind_of(self, ref: dict[str, Any]) -> tuple[str, Any]:
        """("attr", cty type) or ("block", (struct fqn, many))."""
        if "primitive" in ref:
            return "attr", _PRIMITIVES.get(ref["primitive"], "dynamic")
        if "fqn" in ref:
            fqn = ref["fqn"]
            return ("block", (fqn, False)) if self.is_struct(fqn) else ("attr", "dynamic")
        if "union" in ref:
            members = [m for m in ref["union"]["types"] if m.get("fqn") != "cdktf.IResolvable"]
            return self.kind_of(members[0]) if len(members) == 1 else ("attr", "dynamic")
        if "collection" in ref:
            kind, inner = self.kind_of(ref["collection"]["elementtype"])
            if kind == "block":
                return "block", (inner[0], True)
            outer = "map" if ref["collection"]["kind"] == "map" else "list"
            return "attr", [outer, inner]
        return "attr", "dynamic"

    def block(self, fqn: str, output_class: str | None, depth: int = 0) -> dict[str, Any]:
        attributes: dict[str, Any] = {}
        block_types: dict[str, Any] = {}
        for prop in self.types[fqn].get("properties", []):
            link = _DOC_LINK.search(prop.get("docs", {}).get("remarks", ""))
            name = link["attr"] if link else _snake(prop["name"])
            required = not prop.get("optional", False)
            kind, detail = self.kind_of(prop["type"])
            if kind == "block" and depth < 16:
                nested, many = detail
                block_types[name] = {
                    "nesting_mode": "list",
                    "min_items": 1 if required else 0,
                    **({} if many else {"max_items": 1}),
                    "block": self.block(nested, f"{nested}OutputReference", depth + 1),
                }
            else:
                attributes[name] = {"type": detail if kind == "attr" else "dynamic"}
                attributes[name]["required" if required else "optional"] = True
        # Attributes a block or resource exports beyond its arguments (ids, endpoints, ...).
        for prop in self.types.get(output_class or "", {}).get("properties", []):
            if prop.get("static") or prop["name"].endswith("Input") or prop["name"] in _INTERNAL:
                continue
            name = _snake(prop["name"])
            if name not in attributes and name not in block_types:
                attributes[name] = {"type": "dynamic", "computed": True}
        return {"attributes": attributes, "block_types": block_types}


def extract(assembly: dict[str, Any]) -> dict[str, Any]:
    """The provider's schema, in the layout of ``terraform providers schema -json``."""
    conv = _Converter(assembly)
    out: dict[str, Any] = {"resource_schemas": {}, "data_source_schemas": {}}
    for fqn, spec in conv.types.items():
        if not (spec.get("datatype") and fqn.endswith("Config")):
            continue
        cls_fqn = fqn[: -len("Config")]
        base = conv.types.get(cls_fqn, {}).get("base")
        remarks = " ".join(p.get("docs", {}).get("remarks", "") for p in spec.get("properties", []))
        if base == "cdktf.TerraformProvider":
            block = conv.block(fqn, None)
            block["attributes"].pop("alias", None)  # a meta-argument, not the provider's
            out["provider"] = {"version": 0, "block": block}
            continue
        if base not in ("cdktf.TerraformResource", "cdktf.TerraformDataSource"):
            continue
        links = {(m["kind"], m["name"]) for m in _DOC_LINK.finditer(remarks)}
        if len(links) != 1:
            continue
        ((kind, name),) = links
        name = name if name.startswith("google_") else f"google_{name}"
        block = conv.block(fqn, cls_fqn)
        block["attributes"]["id"] = {"type": "string", "optional": True, "computed": True}
        key = "data_source_schemas" if kind == "data-sources" else "resource_schemas"
        out[key][name] = {"version": 0, "block": block}
    if "provider" not in out:
        raise ValueError(f"{assembly['name']}: no provider configuration found")
    return out


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        sys.stderr.write(__doc__ or "")
        return 2
    out = Path(argv[0])
    merged: dict[str, Any] = {"format_version": "1.0", "sources": [], "provider_schemas": {}}
    for wheel in map(Path, argv[1:]):
        assembly = load_assembly(wheel)
        provider = "google-beta" if assembly["name"].endswith("-beta") else "google"
        merged["sources"].append(
            {"wheel": wheel.name, "assembly": assembly["name"], "version": assembly["version"]}
        )
        merged["provider_schemas"][f"registry.terraform.io/hashicorp/{provider}"] = extract(assembly)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(merged, sort_keys=True), encoding="utf-8")
    for address, schema in merged["provider_schemas"].items():
        print(
            f"{out}: {address}: {len(schema['resource_schemas'])} resources, "
            f"{len(schema['data_source_schemas'])} data sources"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
