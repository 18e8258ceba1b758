#!/usr/bin/env bash
# The BigQuery emulator the BigQuery sink tests run against (tests/conftest_bigquery.py),
# installed into the project cache (idempotent: skipped when already there).
#
#   .cache/bqemulator-venv   PyPI `bqemulator` (DuckDB-backed; serves the REST API that Beam's
#                            sink and google-cloud-bigquery use) in its own virtualenv: it needs
#                            duckdb 1.5.5, the project uses duckdb>=1.1,<3 (2.x here), and one
#                            environment cannot hold both.
#   .cache/bqemulator-home   the HOME the emulator runs with. At start it runs `INSTALL spatial`,
#                            which downloads the extension unless it is already in
#                            $HOME/.duckdb/extensions: it is put there from the PyPI package
#                            duckdb-extension-spatial (no network needed at run time).
#
# Start it with: HOME=.cache/bqemulator-home .cache/bqemulator-venv/bin/bqemulator start \
#   --rest-port 9050 --grpc-port 0 --project my-project
set -euo pipefail

BQEMULATOR_VERSION="${BQEMULATOR_VERSION:-1.4.0}"
DUCKDB_VERSION="1.5.5" # bqemulator's pin range and the spatial extension package must agree

root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.cache/bqemulator-venv"
home="$root/.cache/bqemulator-home"
python="${PYTHON:-python3}"
ext="$home/.duckdb/extensions/v$DUCKDB_VERSION/linux_amd64/spatial.duckdb_extension"

installed="$("$venv/bin/bqemulator" --version 2>/dev/null || true)"
if [[ "$installed" == *"$BQEMULATOR_VERSION"* ]] && [ -s "$ext" ]; then
  echo "== bqemulator $BQEMULATOR_VERSION: $venv/bin/bqemulator"
  exit 0
fi
echo "== pip install bqemulator==$BQEMULATOR_VERSION (duckdb $DUCKDB_VERSION) into $venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  "bqemulator==$BQEMULATOR_VERSION" "duckdb==$DUCKDB_VERSION" \
  "duckdb-extension-spatial==$DUCKDB_VERSION" "duckdb-extensions==$DUCKDB_VERSION" numpy
mkdir -p "$home"
HOME="$home" "$venv/bin/python" -c 'from duckdb_extensions import import_extension; import_extension("spatial")'
[ -s "$ext" ] || { echo "scripts/bqemulator.sh: spatial extension missing at $ext" >&2; exit 1; }
"$venv/bin/bqemulator" --version
