#!/usr/bin/env bash
# Soak: the whole pipeline for MINUTES minutes on the dev stack's Postgres
# and a fresh Kafka node (see bench/stack.sh), to show that the write path's
# cost per check stays flat over hours, not only in a 60 s benchmark.
#   SITES=1500 INTERVAL=1s MINUTES=60 bench/soak.sh     (make soak)
# Each minute it prints: rows/s persisted, the share of checks up (the
# target answers every site), the skipped share (and how many
# were shed), the persisters' mean write time per batch and per row, WAL
# bytes per row, Postgres
# row writes per check (and the scheduler progress' share of them), the
# sizes of the raw and rollup tables, and sitewatch's RSS. At the end:
# minutes 2-11 against the last 10 (WAL per row, write time), slots without
# a row and duplicated rows, and bytes per site-hour of each rollup.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
SITES=${SITES:-1500}
INTERVAL=${INTERVAL:-1s}
MINUTES=${MINUTES:-60}
PORT=${PORT:-18090}
ADMIN=${ADMIN:-127.0.0.1:9791}
BROKER=${BROKER:-fresh}
RUN="soak$(date +%s)"
DB=sw_soak
PSQL=(psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U sitewatch)
source bench/stack.sh
sql() { "${PSQL[@]}" -d "$DB" -At -F ' ' -c "$1"; }
metric() { curl -s "http://$ADMIN/metrics" | awk -v n="$1" '$1 == n {print $2; f=1} END {if (!f) print 0}'; }
parts() { echo "(SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_inherits i
          JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = '$1'::regclass)"; }
# Inserts + updates of the tables a check writes (all partitions), and the
# scheduler progress tables' part of them.
writes() { sql "SELECT coalesce(sum(n_tup_ins + n_tup_upd), 0),
        coalesce(sum(n_tup_ins + n_tup_upd) FILTER (WHERE relname LIKE 'schedule_%'), 0)
    FROM pg_stat_user_tables WHERE relname ~ '^(check_results|rollup_|schedule_)'"; }
wal() { sql "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint"; }

for _ in $(seq 120); do curl -sf "http://$ADMIN/metrics" >/dev/null && break; sleep 0.5; done
out="$dir/minutes.tsv"
echo "== soak: $SITES sites every $INTERVAL for $MINUTES min, $(nproc) cores (log: $dir)"
printf '%6s %8s %7s %8s %6s %9s %8s %10s %10s %9s %9s %9s %8s %8s\n' minute rows/s up skipped shed write_ms us/row WAL_B/row writes/chk progress% raw_MB min_MB hour_MB RSS_MB \
    | tee "$out"
t_prev=$(date -u +%FT%T.%3NZ); e_prev=$(date +%s.%N); w_prev=$(wal); read -r wr_prev pr_prev < <(writes)
ws_prev=$(metric sitewatch_persister_write_seconds_sum); wc_prev=$(metric sitewatch_persister_write_seconds_count)
br_prev=$(metric sitewatch_persister_batch_rows_sum)
start=$t_prev
for minute in $(seq "$MINUTES"); do
    sleep 60
    kill -0 "$sw" || die "sitewatch exited (see $dir/sitewatch.log)"
    t=$(date -u +%FT%T.%3NZ); e=$(date +%s.%N); w=$(wal); read -r wr pr < <(writes)
    ws=$(metric sitewatch_persister_write_seconds_sum); wc=$(metric sitewatch_persister_write_seconds_count)
    br=$(metric sitewatch_persister_batch_rows_sum)
    read -r rows skipped shed checked up < <(sql "SELECT count(*), count(*) FILTER (WHERE outcome = 'skipped'),
        (SELECT coalesce(sum(slots), 0) FROM schedule_gaps WHERE reason = 'load_shed'
            AND recorded_at >= '$t_prev' AND recorded_at < '$t'), count(*) FILTER (WHERE outcome <> 'skipped'),
        count(*) FILTER (WHERE outcome = 'up')
        FROM check_results WHERE persisted_at >= '$t_prev' AND persisted_at < '$t'")
    # The bench target answers every site: a soak of failing checks
    # measures another write path (as the first soaks did, their sites on
    # a port nothing served).
    [ "$minute" -gt 1 ] || [ "$up" -gt 0 ] || die "no check came back up in minute 1: is the bench target on the sites' port? (see $dir)"
    read -r raw rmin rhour < <(sql "SELECT $(parts check_results), $(parts rollup_minute), $(parts rollup_hour_closed)")
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$sw/status")
    awk -v m="$minute" -v rows="$rows" -v sk="$skipped" -v shed="$shed" -v chk="$checked" \
        -v ws="$(awk -v a="$ws" -v b="$ws_prev" 'BEGIN {print a-b}')" -v br="$(awk -v a="$br" -v b="$br_prev" 'BEGIN {print a-b}')" -v wc="$((${wc%.*} - ${wc_prev%.*}))" \
        -v wal="$((w - w_prev))" -v wr="$((wr - wr_prev))" -v pr="$((pr - pr_prev))" \
        -v raw="$raw" -v rmin="$rmin" -v rhour="$rhour" -v rss="$rss" -v up="$up" \
        -v secs="$(awk -v a="$e" -v b="$e_prev" 'BEGIN {print a-b}')" 'BEGIN {
        printf "%6d %8.0f %6.1f%% %7.2f%% %6d %9.1f %8.0f %10.0f %10.2f %8.3f%% %9.1f %9.1f %8.1f %8.1f\n",
            m, rows/secs, chk ? 100*up/chk : 0, rows ? 100*sk/rows : 0, shed, wc ? 1000*ws/wc : 0, br ? 1e6*ws/br : 0, rows ? wal/rows : 0,
            chk ? wr/chk : 0, wr ? 100*pr/wr : 0, raw/1048576, rmin/1048576, rhour/1048576, rss/1024 }' \
        | tee -a "$out"
    t_prev=$t; e_prev=$e; w_prev=$w; wr_prev=$wr; pr_prev=$pr; ws_prev=$ws; wc_prev=$wc; br_prev=$br
done
kill -TERM "$sw"; wait "$sw" || true

echo "== summary"
awk -v n="$MINUTES" 'NR > 1 { m=$1; if (m >= 2 && m <= 11) { a++; aw+=$8; at+=$6; ar+=$7 } if (m > n-10) { b++; bw+=$8; bt+=$6; brr+=$7 } }
  END { if (a && b && n >= 12) printf "minutes 2-11 vs last 10: WAL per row %.0f -> %.0f B (%.2fx), write time %.1f -> %.1f ms per batch (%.2fx), %.0f -> %.0f us per row (%.2fx)\n",
        aw/a, bw/b, (bw/b)/(aw/a), at/a, bt/b, (at ? (bt/b)/(at/a) : 0), ar/a, brr/b, (ar ? (brr/b)/(ar/a) : 0);
        else print "(minutes 2-11 vs last 10: needs MINUTES >= 12)" }' "$out"
sql "SELECT format('rows: %s (%s%% up), skipped %s%% (%s deadline_exceeded, %s missed_slot); shed slots: %s',
        count(*), round(100.0 * count(*) FILTER (WHERE outcome = 'up') / greatest(count(*), 1), 2),
        round(100.0 * count(*) FILTER (WHERE outcome = 'skipped') / greatest(count(*), 1), 3),
        count(*) FILTER (WHERE error_kind = 'deadline_exceeded'),
        count(*) FILTER (WHERE error_kind = 'missed_slot'),
        (SELECT coalesce(sum(slots), 0) FROM schedule_gaps WHERE reason = 'load_shed'))
     FROM check_results"
# Each site's slots, rows and shed runs, from its first to a minute before
# the end: a gap larger than the interval is a slot without either.
sql "WITH slots AS (
        SELECT site, scheduled_at AS at FROM check_results
        UNION ALL
        SELECT site, generate_series(from_at, to_at - interval '1 millisecond', interval '$INTERVAL')
        FROM schedule_gaps WHERE reason = 'load_shed')
     SELECT format('slots without a row or shed run: %s; duplicated rows: %s',
        coalesce(sum(round(gap / iv) - 1) FILTER (WHERE gap > iv * 1.5), 0),
        (SELECT count(*) FROM (SELECT 1 FROM check_results GROUP BY site, scheduled_at HAVING count(*) > 1) d))
     FROM (SELECT extract(epoch FROM at - lag(at) OVER w) AS gap,
                  extract(epoch FROM interval '$INTERVAL') AS iv
           FROM slots WHERE at < now() - interval '1 minute'
           WINDOW w AS (PARTITION BY site ORDER BY at)) g"
# Hour rows are summed when their hour closes (migration V18): a row of
# rollup_hour_closed is one site-hour.
sql "SELECT format('rollup_minute: %s B per site-hour (%s rows); rollup_hour_closed: %s B per site-hour (%s rows, %s site-hours marked to sum again)',
        round($(parts rollup_minute) / greatest(sites * hours, 1)), (SELECT count(*) FROM rollup_minute),
        round($(parts rollup_hour_closed) / greatest((SELECT count(*) FROM rollup_hour_closed), 1)),
        (SELECT count(*) FROM rollup_hour_closed), (SELECT count(*) FROM rollup_hour_dirty))
     FROM (SELECT count(DISTINCT site) AS sites,
                  extract(epoch FROM max(scheduled_at) - min(scheduled_at)) / 3600 AS hours
           FROM check_results) s"
