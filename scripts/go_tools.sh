#!/usr/bin/env bash
# Go tools the deployment tests need, built from the Go module proxy into .cache/bin
# (idempotent). kustomize builds the k8s-flink overlays.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$root/.cache/bin"
mkdir -p "$bin"
if [ ! -x "$bin/kustomize" ]; then
  echo "== go install kustomize"
  GOBIN="$bin" GOFLAGS=-mod=mod go install sigs.k8s.io/kustomize/kustomize/v5@v5.7.1
fi
"$bin/kustomize" version
