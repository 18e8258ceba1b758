#!/usr/bin/env bash
# Tools the Terraform checks need (tests/test_terraform.py), installed into the project cache
# .cache/ (idempotent: each step is skipped when its result is already there).
#
#   terraform  built from source with `go install` (the Go module proxy; HashiCorp's release
#              downloads are not reachable here) into .cache/bin/terraform
#   checkov    in its own virtualenv .cache/checkov-venv (its pins would downgrade packaging,
#              boto3 and networkx in the project's environment)
#   schema     the google and google-beta provider schemas (6.50.0), rebuilt from the cdktf
#              binding packages on PyPI, into .cache/terraform/google-provider-schema.json
#   schemaprovider
#              a schema-only stand-in for those providers (terraform/tools/schemaprovider, Go),
#              into .cache/bin/terraform-provider-schemaonly, so that `terraform validate` runs
#
# Terraform 1.8.5 is the newest release whose go.mod has no replace directives: from 1.9 on,
# `go install github.com/hashicorp/terraform@v1.x` fails ("The go.mod file for the module
# providing named packages contains one or more replace directives"). It needs Go >= 1.22;
# with an older Go, GOTOOLCHAIN=auto fetches a newer toolchain from the module proxy.
set -euo pipefail

TERRAFORM_VERSION="${TERRAFORM_VERSION:-1.8.5}"
CHECKOV_VERSION="${CHECKOV_VERSION:-3.3.30}"
CDKTF_GOOGLE_VERSION="${CDKTF_GOOGLE_VERSION:-16.12.1}" # generated from hashicorp/google 6.50.0

root="$(cd "$(dirname "$0")/.." && pwd)"
cache="$root/.cache"
bin="$cache/bin"
python="${PYTHON:-python3}"
mkdir -p "$bin" "$cache/terraform"

# 1. terraform
installed="$("$bin/terraform" version -json 2>/dev/null || true)"
if [[ "$installed" == *"\"terraform_version\": \"$TERRAFORM_VERSION\""* ]]; then
  echo "== terraform $TERRAFORM_VERSION: $bin/terraform"
else
  go="$(command -v go || true)"
  [ -n "$go" ] || go=/usr/local/go/bin/go
  if [ ! -x "$go" ]; then
    echo "terraform/tools.sh: Go is needed to build terraform (none on PATH or in /usr/local/go)" >&2
    exit 1
  fi
  echo "== go install github.com/hashicorp/terraform@v$TERRAFORM_VERSION ($("$go" version))"
  start=$SECONDS
  GOBIN="$bin" CGO_ENABLED=0 "$go" install -trimpath \
    -ldflags "-s -w -X github.com/hashicorp/terraform/version.dev=no" \
    "github.com/hashicorp/terraform@v$TERRAFORM_VERSION"
  echo "== terraform built in $((SECONDS - start)) s"
fi

# 2. checkov
venv="$cache/checkov-venv"
if [ -x "$venv/bin/checkov" ] && [ "$("$venv/bin/checkov" --version 2>/dev/null)" = "$CHECKOV_VERSION" ]; then
  echo "== checkov $CHECKOV_VERSION: $venv/bin/checkov"
else
  echo "== pip install checkov==$CHECKOV_VERSION into $venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "checkov==$CHECKOV_VERSION"
fi

# 3. provider schema
schema="$cache/terraform/google-provider-schema.json"
if [ -s "$schema" ] && [ "$schema" -nt "$root/terraform/tools/provider_schema.py" ] &&
  grep -q "\"version\": \"$CDKTF_GOOGLE_VERSION\"" "$schema"; then
  echo "== provider schema: $schema"
else
  wheels="$(mktemp -d)"
  trap 'rm -rf "$wheels"' EXIT
  echo "== pip download cdktf-cdktf-provider-google{,-beta}==$CDKTF_GOOGLE_VERSION"
  "$python" -m pip download --quiet --disable-pip-version-check --no-deps -d "$wheels" \
    "cdktf-cdktf-provider-google==$CDKTF_GOOGLE_VERSION" \
    "cdktf-cdktf-provider-google-beta==$CDKTF_GOOGLE_VERSION"
  "$python" "$root/terraform/tools/provider_schema.py" "$schema" "$wheels"/*.whl
fi

# 4. schema-only stand-in provider
src="$root/terraform/tools/schemaprovider"
provider="$bin/terraform-provider-schemaonly"
if [ -x "$provider" ] && [ -z "$(find "$src" -newer "$provider" -type f)" ]; then
  echo "== schema-only provider: $provider"
else
  go="$(command -v go || echo /usr/local/go/bin/go)"
  echo "== go build terraform/tools/schemaprovider"
  (cd "$src" && CGO_ENABLED=0 "$go" build -trimpath -buildvcs=false -o "$provider" .)
fi
