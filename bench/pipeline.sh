#!/usr/bin/env bash
# End-to-end benchmark on the dev stack (make up): scheduler -> Kafka ->
# checker -> Kafka -> persisters -> Postgres, one process with every role,
# against the bench target. Prints persisted checks/s after warm-up,
# scheduler lateness, slot-to-row latency, CPU of sitewatch, the broker and
# Postgres, sitewatch's peak RSS, rows per transaction, and slots without a
# row / duplicated rows.
#   SITES=27000 INTERVAL=5s DURATION=60 WARMUP=20 bench/pipeline.sh
# (the defaults: about 5,400 checks/s, what 2 cores carry with the broker,
# Postgres and the target on the same machine; see BENCHMARKS.md).
# The run gets a fresh Apache Kafka node of its own (scripts/kafka-server,
# empty data, port $BENCH_KAFKA_PORT), so a dev broker's other work does not
# share its CPU. BROKER=dev uses the dev stack's broker instead.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
SITES=${SITES:-27000}
INTERVAL=${INTERVAL:-5s}
DURATION=${DURATION:-60}
WARMUP=${WARMUP:-20}
PORT=${PORT:-18080}
ADMIN=${ADMIN:-127.0.0.1:9790}
BROKER=${BROKER:-fresh}
RUN="bench$(date +%s)"
DB=sw_bench
PSQL=(psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U sitewatch)

source bench/stack.sh

# CPU seconds (user + system) of a set of processes.
cpu() { local t=0 p; for p in "$@"; do
    [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done; echo "$t"; }
# scripts/kafka-server execs the JVM: its pid is the broker's.
broker=${broker_pid:-$(cat "$DATA/kafka/pid" 2>/dev/null || true)}
pg() { pgrep -f "postgres" -u postgres 2>/dev/null || pgrep -f "postgres: " ; }

# Where Postgres's work goes within the window: row writes per table,
# WAL (and its full-page images), checkpoints, and, where the cluster loads
# pg_stat_statements (shared_preload_libraries; not by default: it cost
# the persisters here), time per statement.
# Checkpoints: pg_stat_checkpointer from PostgreSQL 17, pg_stat_bgwriter before.
if [ "$("${PSQL[@]}" -d "$DB" -At -c "SHOW server_version_num")" -ge 170000 ]; then
    checkpoints="(SELECT num_timed + num_requested FROM pg_stat_checkpointer)"
else
    checkpoints="(SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter)"
fi
statements=$("${PSQL[@]}" -d "$DB" -At -c "SELECT count(*) FROM pg_settings
    WHERE name = 'shared_preload_libraries' AND setting LIKE '%pg_stat_statements%'")
pg_mark() {
    "${PSQL[@]}" -d "$DB" <<SQL
CREATE TABLE bench_mark AS
SELECT coalesce(i.inhparent, t.relid)::regclass::text AS rel,
       sum(n_tup_ins) AS ins, sum(n_tup_upd) AS upd, sum(n_tup_hot_upd) AS hot, sum(n_tup_del) AS del,
       sum(autovacuum_count) AS vac
FROM pg_stat_user_tables t LEFT JOIN pg_inherits i ON i.inhrelid = t.relid GROUP BY 1;
CREATE TABLE bench_mark_wal AS
SELECT w.wal_records, w.wal_fpi, w.wal_bytes, $checkpoints AS checkpoints
FROM pg_stat_wal w;
SQL
    if [ "$statements" = 1 ]; then
        "${PSQL[@]}" -d "$DB" -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" \
            -c "SELECT pg_stat_statements_reset()" >/dev/null
    fi
}
pg_report() {
    "${PSQL[@]}" -d "$DB" <<SQL
\\echo Postgres within the window: rows written per table
SELECT coalesce(i.inhparent, t.relid)::regclass::text AS "table",
       sum(n_tup_ins) - min(m.ins) AS inserted, sum(n_tup_upd) - min(m.upd) AS updated,
       round(100.0 * (sum(n_tup_hot_upd) - min(m.hot)) / nullif(sum(n_tup_upd) - min(m.upd), 0)) AS "hot %",
       sum(n_tup_del) - min(m.del) AS deleted, sum(autovacuum_count) - min(m.vac) AS autovacuums
FROM pg_stat_user_tables t LEFT JOIN pg_inherits i ON i.inhrelid = t.relid
JOIN bench_mark m ON m.rel = coalesce(i.inhparent, t.relid)::regclass::text
GROUP BY 1 HAVING sum(n_tup_ins) + sum(n_tup_upd) + sum(n_tup_del) > min(m.ins) + min(m.upd) + min(m.del)
ORDER BY sum(n_tup_ins) + sum(n_tup_upd) DESC;
SELECT w.wal_records - m.wal_records AS wal_records, w.wal_fpi - m.wal_fpi AS full_page_images,
       pg_size_pretty(w.wal_bytes - m.wal_bytes) AS wal,
       $checkpoints - m.checkpoints AS checkpoints
FROM pg_stat_wal w, bench_mark_wal m;
SQL
    if [ "$statements" = 1 ]; then
        "${PSQL[@]}" -d "$DB" <<SQL
\\echo Postgres within the window: statements by total time (pg_stat_statements)
SELECT round(total_exec_time / 1000) AS "total s", calls, rows,
       round((total_exec_time / calls)::numeric, 1) AS "mean ms",
       left(regexp_replace(query, '\\s+', ' ', 'g'), 90) AS query
FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
WHERE d.datname = current_database() ORDER BY total_exec_time DESC LIMIT 10;
SQL
    fi
}

# Every 2 s from the start: the checked share, the backlogs (messages) of
# the checkers and of the persisters, checks done and rows written, for the
# timeline printed at the end.
(while kill -0 "$sw" 2>/dev/null; do
    curl -s --max-time 1 "http://$ADMIN/metrics" | awk -v t="$SECONDS" '
      /^sitewatch_scheduler_checked_share / {share=$2}
      /^sitewatch_consumer_lag_messages/ { if ($1 ~ /-checker"/) c+=$2; else if ($1 ~ /-persister-/) p+=$2 }
      /^sitewatch_checks_total/ { if ($1 !~ /skipped/) done+=$2; else sk+=$2 }
      /^sitewatch_persister_rows_total/ {rows+=$2}
      END { if (rows != "") printf "%d %s %d %d %d %d %d\n", t, share == "" ? 1 : share, c, p, done, sk, rows }' || true
    sleep 2
done) >"$dir/timeline.txt" 2>/dev/null & pids+=($!)
started=$SECONDS

sleep "$WARMUP"
# Whole-machine busy time from /proc/stat (user+nice+system+irq+softirq+steal).
busy() { awk '/^cpu / {print $2+$3+$4+$7+$8+$9}' /proc/stat; }
pg_mark
t0=$(date -u +%FT%T.%3NZ); c0=$(cpu $sw); b0=$(cpu $broker); p0=$(cpu $(pg)); g0=$(cpu $tgt); m0=$(busy); s0=$SECONDS
sleep $((DURATION - WARMUP))
t1=$(date -u +%FT%T.%3NZ); c1=$(cpu $sw); b1=$(cpu $broker); p1=$(cpu $(pg)); g1=$(cpu $tgt); m1=$(busy); secs=$((SECONDS - s0))
pg_report >"$dir/pg.txt" 2>&1 || true
rss=$(awk '/VmHWM/ {print $2}' "/proc/$sw/status")
now_rss=$(awk '/VmRSS/ {print $2}' "/proc/$sw/status")
curl -s "http://$ADMIN/metrics" >"$dir/metrics.txt"
kill -TERM "$sw"; wait "$sw" || true
ticks=$(getconf CLK_TCK)

echo "== end to end: $SITES sites every $INTERVAL, ${DURATION}s (${WARMUP}s warm-up), $(nproc) cores"
awk -v s="$secs" -v t="$ticks" -v c="$((c1 - c0))" -v b="$((b1 - b0))" -v p="$((p1 - p0))" -v g="$((g1 - g0))" -v m="$((m1 - m0))" -v cores="$(nproc)" -v r="$rss" -v n="$now_rss" -v sites="$SITES" 'BEGIN {
  printf "CPU: sitewatch %.0f%%, broker %.0f%%, postgres %.0f%%, bench target %.0f%% (of one core); machine %.0f%% busy\n", 100*c/t/s, 100*b/t/s, 100*p/t/s, 100*g/t/s, 100*m/t/s/cores
  printf "sitewatch RSS: %.1f MB at the end (%.2f KB per site), peak %.1f MB\n", n/1024, n/sites, r/1024 }'
# Histogram quantiles from the Prometheus buckets (upper bounds).
q() { awk -v name="$1" -v q="$2" '
  $1 ~ "^"name"_bucket" { match($1, /le="[^"]*"/); le=substr($1, RSTART+4, RLENGTH-5); n++; les[n]=le; cnt[n]=$2 }
  END { total=cnt[n]; for (i=1;i<=n;i++) if (cnt[i] >= q*total) { print les[i]; exit } }' "$dir/metrics.txt"; }
echo "scheduler lateness: p50 <= $(q sitewatch_scheduler_lateness_seconds 0.5) s, p99 <= $(q sitewatch_scheduler_lateness_seconds 0.99) s, max <= $(q sitewatch_scheduler_lateness_seconds 1.0) s (bucket bounds)"
awk '/^sitewatch_persister_batch_rows_sum/ {s=$2} /^sitewatch_persister_batch_rows_count/ {c=$2}
     END { if (c) printf "rows per Postgres transaction: %.0f (%d transactions)\n", s/c, c }' "$dir/metrics.txt"
"${PSQL[@]}" -d "$DB" -At -F ' ' <<SQL
SELECT format('persisted: %s rows/s, %s checked/s (%s rows in the window, %s skipped)',
              round(count(*) / extract(epoch FROM '$t1'::timestamptz - '$t0'::timestamptz)),
              round(count(*) FILTER (WHERE outcome <> 'skipped')
                    / extract(epoch FROM '$t1'::timestamptz - '$t0'::timestamptz)),
              count(*), count(*) FILTER (WHERE outcome = 'skipped'))
FROM check_results WHERE persisted_at >= '$t0' AND persisted_at < '$t1';
SELECT format('slot to row: p50 %s ms, p99 %s ms',
              round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)),
              round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)))
FROM (SELECT extract(epoch FROM persisted_at - scheduled_at) * 1000 AS ms FROM check_results
      WHERE outcome <> 'skipped' AND scheduled_at >= '$t0' AND scheduled_at < '$t1') x;
-- Shed slots due within the window: a run covers a site's shed slots
-- within one minute, so the runs of the minutes the window starts and ends
-- in count only in part.
SELECT format('shed: %s slots/s (%s slots due in the window, from %s runs, schedule_gaps)',
              round(count(*) / extract(epoch FROM '$t1'::timestamptz - '$t0'::timestamptz)),
              count(*), count(DISTINCT (site, from_at)))
FROM (SELECT site, from_at, generate_series(from_at, to_at - interval '1 millisecond', interval '$INTERVAL') AS at
      FROM schedule_gaps WHERE reason = 'load_shed' AND to_at > '$t0' AND from_at < '$t1') x
WHERE at >= '$t0' AND at < '$t1';
-- Every slot between a site's first and last one in the window has a row
-- or is in a shed run: gaps larger than the interval are slots without
-- either, a slot twice is a duplicate.
WITH slots AS (
    SELECT site, scheduled_at AS at FROM check_results
    WHERE scheduled_at >= '$t0' AND scheduled_at < '$t1'
    UNION ALL
    SELECT site, at FROM (
        SELECT site, generate_series(from_at, to_at - interval '1 millisecond', interval '$INTERVAL') AS at
        FROM schedule_gaps WHERE reason = 'load_shed' AND to_at > '$t0' AND from_at < '$t1') x
    WHERE at >= '$t0' AND at < '$t1')
SELECT format('slots without a row or shed run: %s; duplicated slots: %s',
              coalesce(sum(round(gap / iv) - 1) FILTER (WHERE gap > iv * 1.5), 0),
              (SELECT count(*) FROM (SELECT 1 FROM slots GROUP BY site, at HAVING count(*) > 1) d))
FROM (SELECT extract(epoch FROM at - lag(at) OVER w) AS gap,
             extract(epoch FROM interval '$INTERVAL') AS iv
      FROM slots WINDOW w AS (PARTITION BY site ORDER BY at)) g;
SQL
cat "$dir/pg.txt"
echo "timeline (every 10 s from the start): s, checked share, checkers' backlog, persisters' backlog, checked/s, skipped/s, rows/s"
awk -v s0="$started" '{ t=$1-s0; if (n && t - lt >= 10) { dt=t-lt; printf "%4d %5.2f %8d %8d %7.0f %7.0f %7.0f\n", t, $2, $3, $4, ($5-ld)/dt, ($6-lk)/dt, ($7-lr)/dt; lt=t; ld=$5; lk=$6; lr=$7 } if (!n) { n=1; lt=t; ld=$5; lk=$6; lr=$7 } }' "$dir/timeline.txt"

# Beside blackbox_exporter's probe-only rate, measured now on the same
# machine (the pipeline above has stopped): COMPARE=0 skips it.
if [ "${COMPARE:-1}" = 1 ]; then
    checked=$("${PSQL[@]}" -d "$DB" -At -c "SELECT round(count(*) FILTER (WHERE outcome <> 'skipped')
        / extract(epoch FROM '$t1'::timestamptz - '$t0'::timestamptz)) FROM check_results
        WHERE persisted_at >= '$t0' AND persisted_at < '$t1'")
    kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true
    PORT=$((PORT + 1)) bench/probe.sh >"$dir/probe.txt" 2>&1 || true
    tail -4 "$dir/probe.txt"
    # The last row: plain HTTP to IP literals, the pipeline's own work.
    bb=$(awk '$1 == "blackbox_exporter" {b = $2} END {print b}' "$dir/probe.txt")
    awk -v c="$checked" -v b="$bb" 'BEGIN { if (b > 0) printf "end to end: %d checked/s = %.2fx blackbox_exporter probe-only (%d probes/s, bench/probe.sh just now)\n", c, c/b, b }'
fi
