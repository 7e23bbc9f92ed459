-- sitewatch schema, version 5: rollups per site per minute and per hour,
-- maintained in the same statement that writes the raw rows (never by
-- rescanning them), and dropped by partition like the raw rows.
--
-- Response times are kept as the list of values (float8[]), not as a
-- histogram: a minute holds a handful of checks per site, an hour at most
-- 3,600, so the list is small, merges by concatenation, and gives exactly
-- the percentiles the raw rows give.

-- True on a row whose real result replaced a `skipped` placeholder: that is
-- how the rollups tell a replacement (one count moves from skipped to the
-- outcome) from a new row. Metadata-only: no table rewrite.
ALTER TABLE check_results ADD COLUMN replaced_placeholder boolean NOT NULL DEFAULT false;

CREATE TABLE rollup_minute (
    site      text        NOT NULL,
    bucket    timestamptz NOT NULL,
    checks    integer     NOT NULL,   -- up + degraded + down
    up        integer     NOT NULL,
    degraded  integer     NOT NULL,
    down      integer     NOT NULL,
    skipped   integer     NOT NULL,
    rt_ms     float8[]    NOT NULL,   -- response times of the checks with one
    PRIMARY KEY (site, bucket)
) PARTITION BY RANGE (bucket);

CREATE TABLE rollup_hour (LIKE rollup_minute INCLUDING ALL) PARTITION BY RANGE (bucket);

-- Partitions: daily for minutes (kept as long as raw rows), monthly for
-- hours (kept `retention.rollups`). Replaces version 1's function, which
-- created the raw rows' partitions only.
CREATE OR REPLACE FUNCTION sitewatch_ensure_partitions(from_day date, to_day date)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    d       date := from_day;
    m       date;
    part    text;
    created integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('sitewatch_ensure_partitions'));
    WHILE d <= to_day LOOP
        FOREACH part IN ARRAY ARRAY['check_results', 'rollup_minute'] LOOP
            IF to_regclass(part || '_' || to_char(d, 'YYYYMMDD')) IS NULL THEN
                EXECUTE format(
                    'CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                    part || '_' || to_char(d, 'YYYYMMDD'), part,
                    d::timestamp AT TIME ZONE 'UTC',
                    (d + 1)::timestamp AT TIME ZONE 'UTC');
                IF part = 'check_results' THEN
                    created := created + 1;
                END IF;
            END IF;
        END LOOP;
        m := date_trunc('month', d)::date;
        IF to_regclass('rollup_hour_' || to_char(m, 'YYYYMM')) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF rollup_hour FOR VALUES FROM (%L) TO (%L)',
                'rollup_hour_' || to_char(m, 'YYYYMM'),
                m::timestamp AT TIME ZONE 'UTC',
                (m + interval '1 month')::timestamp AT TIME ZONE 'UTC');
        END IF;
        d := d + 1;
    END LOOP;
    RETURN created;
END;
$$;

-- Drops rollup partitions: minute partitions of days before `minutes_before`,
-- hour partitions of months that end on or before `hours_before`.
CREATE FUNCTION sitewatch_drop_rollups_before(minutes_before date, hours_before date)
RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    part text;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('sitewatch_ensure_partitions'));
    FOR part IN
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'rollup_minute'::regclass
          AND c.relname ~ '^rollup_minute_[0-9]{8}$'
          AND to_date(substr(c.relname, 15), 'YYYYMMDD') < minutes_before
        UNION ALL
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'rollup_hour'::regclass
          AND c.relname ~ '^rollup_hour_[0-9]{6}$'
          AND (to_date(substr(c.relname, 13), 'YYYYMM') + interval '1 month')::date <= hours_before
        ORDER BY 1
    LOOP
        EXECUTE format('DROP TABLE %I', part);
        RETURN NEXT part;
    END LOOP;
END;
$$;

-- Partitions for the days the raw rows already have (none in a new database).
SELECT sitewatch_ensure_partitions(first_day, last_day)
FROM (SELECT min(to_date(substr(c.relname, 15), 'YYYYMMDD')) AS first_day,
             max(to_date(substr(c.relname, 15), 'YYYYMMDD')) AS last_day
      FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
      WHERE i.inhparent = 'check_results'::regclass
        AND c.relname ~ '^check_results_[0-9]{8}$') days
WHERE first_day IS NOT NULL;

-- Rows written before this version, rolled up once.
INSERT INTO rollup_minute
SELECT site, date_trunc('minute', scheduled_at),
       count(*) FILTER (WHERE outcome <> 'skipped'),
       count(*) FILTER (WHERE outcome = 'up'),
       count(*) FILTER (WHERE outcome = 'degraded'),
       count(*) FILTER (WHERE outcome = 'down'),
       count(*) FILTER (WHERE outcome = 'skipped'),
       coalesce(array_agg(response_time_ms) FILTER (WHERE response_time_ms IS NOT NULL), '{}')
FROM check_results GROUP BY 1, 2;
INSERT INTO rollup_hour
SELECT site, date_trunc('hour', bucket), sum(checks), sum(up), sum(degraded), sum(down),
       sum(skipped), coalesce(array_agg(t) FILTER (WHERE t IS NOT NULL), '{}')
FROM rollup_minute LEFT JOIN LATERAL unnest(rt_ms) t ON true
GROUP BY 1, 2;

-- Uptime over long windows, from the hour rollups: 8,760 rows per site and
-- year, whatever the check interval. Uptime counts up and degraded.
CREATE VIEW site_uptime_long AS
SELECT h.site,
       w.label AS window,
       sum(h.checks) AS checks,
       sum(h.up + h.degraded) AS up,
       sum(h.down) AS down,
       sum(h.skipped) AS skipped,
       round(100.0 * sum(h.up + h.degraded) / NULLIF(sum(h.checks), 0), 3) AS uptime_pct
FROM (VALUES ('30 days', INTERVAL '30 days'),
             ('90 days', INTERVAL '90 days'),
             ('365 days', INTERVAL '365 days')) AS w(label, span)
JOIN rollup_hour h ON h.bucket >= date_trunc('hour', now() - w.span)
GROUP BY h.site, w.label;

-- Percentiles of one rollup row, for queries such as
--   SELECT bucket, p.* FROM rollup_hour, sitewatch_percentiles(rt_ms) p WHERE site = 'x'
CREATE FUNCTION sitewatch_percentiles(rt float8[],
                                      OUT p50 float8, OUT p95 float8, OUT p99 float8)
LANGUAGE sql IMMUTABLE AS $$
    SELECT percentile_cont(0.50) WITHIN GROUP (ORDER BY t),
           percentile_cont(0.95) WITHIN GROUP (ORDER BY t),
           percentile_cont(0.99) WITHIN GROUP (ORDER BY t)
    FROM unnest(rt) t
$$;
