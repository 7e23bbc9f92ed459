#!/usr/bin/env bash
# The status page at 1,000 listed sites on the dev stack (make bench-status):
# 90 days of hour rollups (2.16 M rows), a recent result per site and some
# incidents are written straight into Postgres, then `sitewatch run --role
# api` serves the page. Prints how long rendering takes (Postgres and
# templates, once per refresh), the page's size, and what readers wait for
# /status: sequential requests, concurrent ones, and requests right after
# the refresh expired (the stale page is served while the next renders).
#   SITES=1000 bench/status_page.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
SITES=${SITES:-1000}
REQUESTS=${REQUESTS:-500}
API=${API:-127.0.0.1:18095}
ADMIN=${ADMIN:-127.0.0.1:9795}
DB=sw_status
RUN="status$(date +%s)"
PSQL=(psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U sitewatch)
sql() { "${PSQL[@]}" -d "$DB" -At -F ' ' -c "$1"; }

cargo build --release --quiet --bin sitewatch
"${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
dir=$(mktemp -d)
{
    cat <<TOML
[postgres]
url = "postgres://sitewatch@127.0.0.1:$PG_PORT/$DB"
pool_size = 4
[kafka]
brokers = "127.0.0.1:$KAFKA_PORT"
group_prefix = "$RUN"
[kafka.topics]
created = "${RUN}_created"
succeeded = "${RUN}_succeeded"
failed = "${RUN}_failed"
dlq = "${RUN}_dlq"
[admin]
listen = "$ADMIN"
[api]
listen = "$API"
[log]
level = "warn,sitewatch::api::status=debug"
[status_page]
enabled = true
title = "$SITES sites"
refresh = "30s"
TOML
    for g in $(seq 0 $(((SITES - 1) / 100))); do
        printf '[[status_page.groups]]\nname = "Group %d"\nsites = [' "$g"
        for i in $(seq $((g * 100)) $((g * 100 + 99))); do
            [ "$i" -lt "$SITES" ] && printf '"site-%05d", ' "$i"
        done
        printf ']\n'
    done
    for i in $(seq 0 $((SITES - 1))); do
        printf '[[sites]]\nname = "site-%05d"\nurl = "https://site-%05d.example.com/health"\n' "$i" "$i"
    done
} >"$dir/sitewatch.toml"
target/release/sitewatch migrate --config "$dir/sitewatch.toml" >/dev/null

echo "== seeding $SITES sites x 90 days of hour rollups"
t0=$(date +%s)
sql "SELECT sitewatch_ensure_partitions(current_date - 95, current_date + 1)" >/dev/null
# Closed hours (migration V18: the hour under way is read from the minutes).
sql "INSERT INTO rollup_hour_closed (site, bucket, checks, up, degraded, down, skipped, rt_sketch)
     SELECT format('site-%s', lpad(s::text, 5, '0')), h, 60, 60 - d, 0, d, 0, k.sk
     FROM generate_series(0, $SITES - 1) s,
          generate_series(date_trunc('hour', now()) - interval '90 days', date_trunc('hour', now()) - interval '1 hour', interval '1 hour') h,
          LATERAL (SELECT CASE WHEN random() < 0.01 THEN 6 ELSE 0 END AS d) dd,
          (SELECT sitewatch_sketch_of(ARRAY[18, 22, 25, 31, 40, 95]::float8[]) AS sk) k" >/dev/null
sql "INSERT INTO check_results (check_id, site, url, scheduled_at, outcome, status_code, response_time_ms)
     SELECT gen_random_uuid(), format('site-%s', lpad(s::text, 5, '0')), 'https://x/', now() - interval '20 s',
            CASE WHEN s % 97 = 0 THEN 'down' ELSE 'up' END, 200, 25
     FROM generate_series(0, $SITES - 1) s" >/dev/null
sql "INSERT INTO incidents (site, opened_at, resolved_at, cause, first_failing_check, last_failing_check, failures)
     SELECT format('site-%s', lpad((s * 13 % $SITES)::text, 5, '0')), now() - s * interval '5 hours',
            CASE WHEN s % 5 = 0 THEN NULL ELSE now() - s * interval '5 hours' + interval '20 minutes' END,
            'timeout: no answer', gen_random_uuid(), gen_random_uuid(), 3
     FROM generate_series(1, 60) s ON CONFLICT DO NOTHING" >/dev/null
sql "ANALYZE" >/dev/null
echo "   $(sql "SELECT count(*) FROM rollup_hour") hour rows in $(( $(date +%s) - t0 )) s"

target/release/sitewatch run --role api --config "$dir/sitewatch.toml" 2>"$dir/sitewatch.log" & sw=$!
trap 'kill $sw 2>/dev/null || true' EXIT
for _ in $(seq 600); do curl -sf -o /dev/null "http://$API/status" && break; sleep 0.1; done
grep -q "status page rendered" "$dir/sitewatch.log" || { cat "$dir/sitewatch.log"; die "no status page"; }

stats() { sort -n | awk '{ v[NR] = $1 * 1000 } END {
    printf "n %d  p50 %.1f ms  p95 %.1f ms  p99 %.1f ms  max %.1f ms\n", NR, v[int(NR*0.5)+1], v[int(NR*0.95)+1], v[int(NR*0.99)+1], v[NR] }'; }
get() { curl -s -o /dev/null -H 'Accept-Encoding: gzip' -w '%{time_total}\n' "http://$API$1"; }

raw=$(curl -s "http://$API/status" | wc -c)
gz=$(curl -s -H 'Accept-Encoding: gzip' "http://$API/status" | wc -c)
echo "== /status with $SITES listed sites, $(nproc) cores"
echo "page: $raw bytes, $gz gzip; rendered in (ms, Postgres + templates + gzip, once per refresh):"
grep -o 'ms=[0-9]*' "$dir/sitewatch.log" | head -3 | tr '\n' ' '; echo
printf 'sequential, gzip:       '; for _ in $(seq "$REQUESTS"); do get /status; done | stats
printf 'sequential, identity:   '; for _ in $(seq 100); do curl -s -o /dev/null -w '%{time_total}\n' "http://$API/status"; done | stats
printf '16 at once, gzip:       '; seq "$REQUESTS" | xargs -P 16 -I{} curl -s -o /dev/null -H 'Accept-Encoding: gzip' -w '%{time_total}\n' "http://$API/status" | stats
echo "waiting 31 s for the refresh to expire ..."; sleep 31
printf 'after expiry (stale served while the next renders): '; for _ in $(seq 100); do get /status; done | stats
printf '/status.json:           '; for _ in $(seq 100); do get /status.json; done | stats
printf '/status/sites/site-00007 (first is a render): '; for _ in $(seq 100); do get /status/sites/site-00007; done | stats
printf '/badges/site-00007/uptime/30d.svg: '; for _ in $(seq 100); do get /badges/site-00007/uptime/30d.svg; done | stats
echo "renders seen: $(grep -c 'status page rendered' "$dir/sitewatch.log"): $(grep -o 'ms=[0-9]*' "$dir/sitewatch.log" | tr '\n' ' ')"
