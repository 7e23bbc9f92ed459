#!/usr/bin/env bash
# Memory of a scheduler-only daemon on N sites (dev stack: make up): its RSS
# every STEP seconds for DURATION seconds, and the parse high-water mark.
#   SITES=100000 DURATION=60 STEP=10 bench/memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
SITES=${SITES:-100000}
DURATION=${DURATION:-60}
STEP=${STEP:-10}
DB=sw_memory
RUN="mem$(date +%s)"
PSQL=(psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U sitewatch)

cargo build --release --quiet --bin sitewatch --bin sitewatch-bench
"${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
dir=$(mktemp -d)
cat >"$dir/base.toml" <<TOML
[postgres]
url = "postgres://sitewatch@127.0.0.1:$PG_PORT/$DB"
[kafka]
brokers = "127.0.0.1:$KAFKA_PORT"
group_prefix = "$RUN"
[kafka.topics]
created = "${RUN}_created"
succeeded = "${RUN}_succeeded"
failed = "${RUN}_failed"
dlq = "${RUN}_dlq"
[scheduler]
coordination = "none"
[admin]
listen = "127.0.0.1:9792"
[log]
level = "warn"
TOML
target/release/sitewatch-bench config --sites "$SITES" --interval 60s --timeout 5s \
    --base "$dir/base.toml" >"$dir/sitewatch.toml"
echo "== scheduler-only daemon on $SITES sites ($(du -h "$dir/sitewatch.toml" | cut -f1) of config)"
target/release/sitewatch run --role scheduler --config "$dir/sitewatch.toml" 2>"$dir/log" & sw=$!
trap 'kill "$sw" 2>/dev/null || true' EXIT
for ((t = STEP; t <= DURATION; t += STEP)); do
    sleep "$STEP"
    awk -v t="$t" '/VmRSS/ {r=$2} /VmHWM/ {h=$2} END {printf "t=%3ds  RSS %.1f MB  (high-water %.1f MB)\n", t, r/1024, h/1024}' "/proc/$sw/status"
done
kill -TERM "$sw"; wait "$sw" || true
