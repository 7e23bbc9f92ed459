#!/usr/bin/env bash
# End-to-end benchmark on the dev stack (make up): scheduler -> Kafka ->
# checker -> Kafka -> persisters -> Postgres, one process with every role,
# against the bench target. Prints persisted checks/s after warm-up,
# scheduler lateness, slot-to-row latency, CPU of sitewatch, the broker and
# Postgres, sitewatch's peak RSS, rows per transaction, and slots without a
# row / duplicated rows.
#   SITES=2000 INTERVAL=1s DURATION=60 WARMUP=15 bench/pipeline.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
SITES=${SITES:-2000}
INTERVAL=${INTERVAL:-1s}
DURATION=${DURATION:-60}
WARMUP=${WARMUP:-15}
PORT=${PORT:-18080}
ADMIN=${ADMIN:-127.0.0.1:9790}
RUN="bench$(date +%s)"
DB=sw_bench
PSQL=(psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U sitewatch)

cargo build --release --quiet --bin sitewatch --bin sitewatch-bench
"${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
dir=$(mktemp -d)
cat >"$dir/base.toml" <<TOML
[postgres]
url = "postgres://sitewatch@127.0.0.1:$PG_PORT/$DB"
pool_size = 8
[kafka]
brokers = "127.0.0.1:$KAFKA_PORT"
group_prefix = "$RUN"
partitions = 6
[kafka.topics]
created = "${RUN}_created"
succeeded = "${RUN}_succeeded"
failed = "${RUN}_failed"
dlq = "${RUN}_dlq"
[scheduler]
min_interval = "100ms"
coordination = "none"
[checker]
concurrency = 512
[persister]
batch_size = 5000
batch_timeout = "100ms"
[admin]
listen = "$ADMIN"
[log]
level = "warn"
TOML
target/release/sitewatch-bench config --sites "$SITES" --interval "$INTERVAL" --timeout 900ms \
    --base "$dir/base.toml" >"$dir/sitewatch.toml"

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
target/release/sitewatch-bench target --port "$PORT" >/dev/null 2>&1 & pids+=($!)
target/release/sitewatch run --config "$dir/sitewatch.toml" 2>"$dir/sitewatch.log" & sw=$!
pids+=($sw)

# CPU seconds (user + system) of a set of processes.
cpu() { local t=0 p; for p in "$@"; do
    [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done; echo "$t"; }
broker=$(pgrep -f "tansu.*:$KAFKA_PORT" | head -1)
pg() { pgrep -f "postgres" -u postgres 2>/dev/null || pgrep -f "postgres: " ; }

sleep "$WARMUP"
t0=$(date -u +%FT%T.%3NZ); c0=$(cpu $sw); b0=$(cpu $broker); p0=$(cpu $(pg)); s0=$SECONDS
sleep $((DURATION - WARMUP))
t1=$(date -u +%FT%T.%3NZ); c1=$(cpu $sw); b1=$(cpu $broker); p1=$(cpu $(pg)); secs=$((SECONDS - s0))
rss=$(awk '/VmHWM/ {print $2}' "/proc/$sw/status")
now_rss=$(awk '/VmRSS/ {print $2}' "/proc/$sw/status")
curl -s "http://$ADMIN/metrics" >"$dir/metrics.txt"
kill -TERM "$sw"; wait "$sw" || true
ticks=$(getconf CLK_TCK)

echo "== end to end: $SITES sites every $INTERVAL, ${DURATION}s (${WARMUP}s warm-up), $(nproc) cores"
awk -v s="$secs" -v t="$ticks" -v c="$((c1 - c0))" -v b="$((b1 - b0))" -v p="$((p1 - p0))" -v r="$rss" -v n="$now_rss" -v sites="$SITES" 'BEGIN {
  printf "CPU: sitewatch %.0f%%, broker %.0f%%, postgres %.0f%% (of one core)\n", 100*c/t/s, 100*b/t/s, 100*p/t/s
  printf "sitewatch RSS: %.1f MB at the end (%.2f KB per site), peak %.1f MB\n", n/1024, n/sites, r/1024 }'
# Histogram quantiles from the Prometheus buckets (upper bounds).
q() { awk -v name="$1" -v q="$2" '
  $1 ~ "^"name"_bucket" { match($1, /le="[^"]*"/); le=substr($1, RSTART+4, RLENGTH-5); n++; les[n]=le; cnt[n]=$2 }
  END { total=cnt[n]; for (i=1;i<=n;i++) if (cnt[i] >= q*total) { print les[i]; exit } }' "$dir/metrics.txt"; }
echo "scheduler lateness: p50 <= $(q sitewatch_scheduler_lateness_seconds 0.5) s, p99 <= $(q sitewatch_scheduler_lateness_seconds 0.99) s, max <= $(q sitewatch_scheduler_lateness_seconds 1.0) s (bucket bounds)"
awk '/^sitewatch_persister_batch_rows_sum/ {s=$2} /^sitewatch_persister_batch_rows_count/ {c=$2}
     END { if (c) printf "rows per Postgres transaction: %.0f (%d transactions)\n", s/c, c }' "$dir/metrics.txt"
"${PSQL[@]}" -d "$DB" -At -F ' ' <<SQL
SELECT format('persisted: %s checks/s (%s rows in the window, %s skipped)',
              round(count(*) / extract(epoch FROM '$t1'::timestamptz - '$t0'::timestamptz)),
              count(*), count(*) FILTER (WHERE outcome = 'skipped'))
FROM check_results WHERE persisted_at >= '$t0' AND persisted_at < '$t1';
SELECT format('slot to row: p50 %s ms, p99 %s ms',
              round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)),
              round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)))
FROM (SELECT extract(epoch FROM persisted_at - scheduled_at) * 1000 AS ms FROM check_results
      WHERE outcome <> 'skipped' AND scheduled_at >= '$t0' AND scheduled_at < '$t1') x;
-- Every slot between a site's first and last row in the window has a row:
-- gaps larger than the interval are slots without a row.
SELECT format('slots without a row: %s; duplicated rows: %s',
              coalesce(sum(round(gap / iv) - 1) FILTER (WHERE gap > iv * 1.5), 0),
              (SELECT count(*) FROM (SELECT 1 FROM check_results GROUP BY site, scheduled_at HAVING count(*) > 1) d))
FROM (SELECT extract(epoch FROM scheduled_at - lag(scheduled_at) OVER w) AS gap,
             extract(epoch FROM interval '$INTERVAL') AS iv
      FROM check_results WHERE scheduled_at >= '$t0' AND scheduled_at < '$t1'
      WINDOW w AS (PARTITION BY site ORDER BY scheduled_at)) g;
SQL
