#!/usr/bin/env bash
# Debian packages the tests need, installed with apt-get when one is missing (idempotent: a
# machine that has them all installs nothing and asks no package index).
#
#   redis-server             the Redis sink and dedup tests (tests/conftest_redis.py)
#   prometheus               promtool: the alert rules and their unit tests; prometheus: the
#                            local monitoring stack (python -m paystream_dev monitor)
#   prometheus-alertmanager  amtool: the Alertmanager routing; the stack's Alertmanager
#   prometheus-redis-exporter  the stack's redis_exporter
#   maven                    mvn: the Kafka broker, expansion service and Flink job server jars
#   chromium, chromium-driver  the console's test, in a real headless browser
#
# Java 17 and Go are expected on the machine (they are not Debian packages here).
set -euo pipefail

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v promtool >/dev/null || need+=(prometheus)
command -v amtool >/dev/null || need+=(prometheus-alertmanager)
command -v prometheus-redis-exporter >/dev/null || need+=(prometheus-redis-exporter)
command -v mvn >/dev/null || need+=(maven)
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)

if [ ${#need[@]} -eq 0 ]; then
  echo "== system packages: all present (redis-server, prometheus, alertmanager, redis_exporter, mvn, chromium)"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  sudo=""
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo="sudo -n"
  else
    {
      echo "scripts/system_deps.sh: these Debian packages are missing: ${need[*]}"
      echo "  Installing them needs root. Run once, then run the test command again:"
      echo "    sudo apt-get update && sudo apt-get install -y --no-install-recommends ${need[*]}"
    } >&2
    exit 1
  fi
else
  sudo=""
fi
echo "== apt-get install ${need[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
for tool in redis-server promtool amtool prometheus-redis-exporter mvn chromium chromedriver; do
  command -v "$tool" >/dev/null || { echo "scripts/system_deps.sh: $tool still missing after apt-get" >&2; exit 1; }
done
