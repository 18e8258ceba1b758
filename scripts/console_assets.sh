#!/usr/bin/env bash
# The console's chart library, uPlot, from the npm registry (npm pack), into
# beam_pipeline/console/static/vendor/ (not committed). Idempotent; `make deps` runs it.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
version="1.6.32"
integrity="sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw=="
vendor="$root/beam_pipeline/console/static/vendor"
stamp="$vendor/uplot-$version"
if [ -f "$stamp" ] && [ -f "$vendor/uPlot.iife.min.js" ] && [ -f "$vendor/uPlot.min.css" ]; then
  echo "== console assets: uPlot $version present"
  exit 0
fi
command -v npm >/dev/null || { echo "scripts/console_assets.sh: npm is needed (Node.js)" >&2; exit 1; }
work="$root/.cache/npm"
mkdir -p "$work" "$vendor"
echo "== npm pack uplot@$version"
tarball="$(cd "$work" && npm pack --silent "uplot@$version")"
got="$(python3 -c 'import base64, hashlib, sys; print("sha512-" + base64.b64encode(hashlib.sha512(open(sys.argv[1], "rb").read()).digest()).decode())' "$work/$tarball")"
if [ "$got" != "$integrity" ]; then
  echo "scripts/console_assets.sh: $tarball does not match the registry's integrity $integrity" >&2
  exit 1
fi
tar -xzf "$work/$tarball" -C "$work" package/dist/uPlot.iife.min.js package/dist/uPlot.min.css package/LICENSE
cp "$work/package/dist/uPlot.iife.min.js" "$work/package/dist/uPlot.min.css" "$vendor/"
cp "$work/package/LICENSE" "$vendor/uPlot.LICENSE"
rm -rf "$work/package"
touch "$stamp"
echo "== console assets: uPlot $version in $vendor"
