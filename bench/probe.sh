#!/usr/bin/env bash
# Probe-only benchmark: sitewatch's checker against the bench target, then
# the same load through blackbox_exporter, printed side by side.
#   CHECKS=20000 CONCURRENCY=64 bench/probe.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CHECKS=${CHECKS:-20000}
CONCURRENCY=${CONCURRENCY:-64}
PORT=${PORT:-18080}
BB_PORT=${BB_PORT:-9115}

if ! command -v prometheus-blackbox-exporter >/dev/null; then
    echo "[bench] installing prometheus-blackbox-exporter (Debian package)"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus-blackbox-exporter >/dev/null
fi
cargo build --release --quiet --bin sitewatch-bench
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
target/release/sitewatch-bench target --port "$PORT" >/dev/null 2>&1 & pids+=($!)
prometheus-blackbox-exporter --config.file=bench/blackbox.yml \
    --web.listen-address="127.0.0.1:$BB_PORT" --log.level=error >/dev/null 2>&1 & pids+=($!)
for _ in $(seq 50); do
    curl -sf "127.0.0.1:$BB_PORT/-/healthy" >/dev/null && curl -sf "127.0.0.2:$PORT/site/0" >/dev/null && break
    sleep 0.1
done
echo "machine: $(nproc) cores, $(uname -r)"
target/release/sitewatch-bench probe --port "$PORT" --checks "$CHECKS" \
    --concurrency "$CONCURRENCY" --blackbox "127.0.0.1:$BB_PORT"
