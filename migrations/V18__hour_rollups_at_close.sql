-- sitewatch schema, version 18: hour rollups are summed once, from the
-- minute rollups, when the hour closes; the open hour is read from the
-- minute rollups.
--
-- Why: up to version 17 every batch upserted each of its sites' hour rows
-- (counts and the V10 sketch) besides their minute rows. The sketch is
-- bounded, but an hour row holds up to ~1,000 buckets where a minute row
-- holds a few, so rewriting it cost more as the hour filled: in a soak of
-- 27,000 sites every 5 s the persister's cost per row went from 154 to about
-- 280 µs within the hour and fell back at the hour change (BENCHMARKS.md).
-- Now a check writes its raw row and its minute row only, whatever the hour
-- already holds.
--
-- How:
-- * `rollup_hour` (the table) becomes `rollup_hour_closed`, holding the
--   hours before `rollup_hour_progress.summed_until`;
-- * `rollup_hour` is now a view: those closed rows, and every later hour
--   summed from `rollup_minute` at query time (at most 60 rows a site);
--   reads and the views built on it (site_uptime_long, site_uptime_daily)
--   see the same rows as before;
-- * `sitewatch_close_hours(grace)` marks the hours that ended `grace` ago
--   closed (`rollup_hour_watermark.closed_until`), `sitewatch_sum_hour()`
--   then sums one closed
--   hour from its minute rows into `rollup_hour_closed` and moves
--   `summed_until` past it, in one transaction (the persister role calls
--   them every minute, see src/store/hours.rs);
-- * a result written later for a closed hour (a late result, a placeholder
--   replaced, a shed run) marks its (site, hour) in `rollup_hour_dirty`, in
--   the same statement as its minute row; `sitewatch_resum_hours(n)` sums
--   marked site-hours again from their minute rows.
--
-- Why no count is lost or counted twice: a writer reads `closed_until` with
-- FOR SHARE in the statement that writes its minute rows. Either it locked
-- the row first, and then closing the hour (an UPDATE of that row, after a
-- table lock that queues new writers behind it: row share locks alone
-- would let writers overtake a waiting UPDATE for ever) waits for its
-- transaction, so the sum of that hour, which starts after the
-- close commits, sees its minute rows; or the close committed first, and
-- the locking read returns the new value (READ COMMITTED re-reads a row
-- updated by a committed transaction), so the writer marks the site-hour.
-- A re-sum replaces the hour row by the sum of the minute rows committed
-- before it starts: it deletes its marks first (waiting on a writer that
-- holds one) and sums in a later statement, with a later snapshot.
--
-- Hours are UTC hours whatever the session's TimeZone (date_trunc(.., 'UTC')).

-- A faster sketch aggregate: rows are concatenated (cheap) and merged only
-- when the state holds 4,096 elements and at the end, instead of a merge
-- per row. The state stays bounded (a merge leaves at most ~1,000), so a
-- year of hour rows costs linear time. Same state type and result.
CREATE OR REPLACE FUNCTION sitewatch_sketch_compact(s int8[]) RETURNS int8[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT sitewatch_sketch_merge(s, '{}')
$$;

CREATE OR REPLACE FUNCTION sitewatch_sketch_add(state int8[], s int8[]) RETURNS int8[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN cardinality(state) >= 4096 THEN sitewatch_sketch_merge(state, s)
                ELSE state || s END
$$;

CREATE OR REPLACE AGGREGATE sitewatch_sketch_agg(int8[]) (
    SFUNC = sitewatch_sketch_add, STYPE = int8[], INITCOND = '{}',
    FINALFUNC = sitewatch_sketch_compact,
    COMBINEFUNC = sitewatch_sketch_add, PARALLEL = SAFE
);

ALTER TABLE rollup_hour RENAME TO rollup_hour_closed;

-- One row each. Hours before `closed_until` are closed: a write into one
-- marks it dirty (writers lock this row). Hours before `summed_until`
-- (never after `closed_until`) are in rollup_hour_closed; it is in a table
-- of its own, which writers never lock. From this migration on, the hour
-- under way is read from the minute rows, so its rows in the table are
-- dropped: they are the sum of its minute rows (versions 5 to 17 wrote
-- both in one statement).
CREATE TABLE rollup_hour_watermark (
    only_row     boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    closed_until timestamptz NOT NULL
);
CREATE TABLE rollup_hour_progress (
    only_row     boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    summed_until timestamptz NOT NULL
);
INSERT INTO rollup_hour_watermark (closed_until) VALUES (date_trunc('hour', now(), 'UTC'));
INSERT INTO rollup_hour_progress (summed_until) VALUES (date_trunc('hour', now(), 'UTC'));
DELETE FROM rollup_hour_closed WHERE bucket >= date_trunc('hour', now(), 'UTC');

-- Summing an hour, and reading the hours not summed yet, select minute
-- rows by time across sites: without this a sum at 23:05 read the whole
-- day's partition. Rows arrive in bucket order, so a block range index
-- stays small and exact enough.
CREATE INDEX rollup_minute_bucket ON rollup_minute USING brin (bucket)
    WITH (pages_per_range = 32, autosummarize = on);

-- Site-hours written after their hour closed, to be summed again.
CREATE TABLE rollup_hour_dirty (
    site      text        NOT NULL,
    bucket    timestamptz NOT NULL,
    marked_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site, bucket)
);

CREATE VIEW rollup_hour AS
SELECT site, bucket, checks, up, degraded, down, skipped, rt_sketch
FROM rollup_hour_closed
WHERE bucket < (SELECT summed_until FROM rollup_hour_progress)
UNION ALL
SELECT site, date_trunc('hour', bucket, 'UTC'), sum(checks)::integer, sum(up)::integer,
       sum(degraded)::integer, sum(down)::integer, sum(skipped)::integer,
       sitewatch_sketch_agg(rt_sketch)
FROM rollup_minute
WHERE bucket >= (SELECT summed_until FROM rollup_hour_progress)
GROUP BY 1, 2;

-- Views on the old table now read the new view (same definitions as V5 and
-- V16; a view is bound to the table, not to its name).
CREATE OR REPLACE VIEW site_uptime_long AS
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

CREATE OR REPLACE VIEW site_uptime_daily AS
SELECT site,
       (bucket AT TIME ZONE 'UTC')::date AS day,
       sum(checks) AS checks,
       sum(up + degraded) AS up,
       sum(degraded) AS degraded,
       sum(down) AS down,
       sum(skipped) AS skipped,
       round(100.0 * sum(up + degraded) / NULLIF(sum(checks), 0), 3) AS uptime_pct
FROM rollup_hour
GROUP BY 1, 2;

-- Closes the hours that ended at least `grace` ago; returns `closed_until`.
-- Its own transaction: the sums must start after it commits. Nothing is
-- locked or written when no hour is due (the persister calls it every
-- minute).
CREATE FUNCTION sitewatch_close_hours(grace interval) RETURNS timestamptz
LANGUAGE plpgsql AS $$
DECLARE
    target timestamptz := date_trunc('hour', now() - grace, 'UTC');
    closed timestamptz;
BEGIN
    SELECT closed_until INTO closed FROM rollup_hour_watermark;
    IF closed >= target THEN
        RETURN closed;
    END IF;
    -- EXCLUSIVE conflicts with the ROW SHARE lock of a writer's FOR SHARE:
    -- writers that come now queue behind this, those under way are waited for.
    LOCK TABLE rollup_hour_watermark IN EXCLUSIVE MODE;
    UPDATE rollup_hour_watermark SET closed_until = target
    WHERE closed_until < target;
    RETURN target;
END;
$$;

-- Sums the first closed hour not summed yet into rollup_hour_closed and
-- moves `summed_until` past it; returns that hour, or NULL when there is
-- none (or another instance is summing). Sums replace rows: summing an
-- hour twice gives the same rows.
CREATE FUNCTION sitewatch_sum_hour() RETURNS timestamptz
LANGUAGE plpgsql AS $$
DECLARE
    h timestamptz;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('sitewatch_sum_hour')) THEN
        RETURN NULL;
    END IF;
    SELECT p.summed_until INTO h FROM rollup_hour_progress p, rollup_hour_watermark w
    WHERE p.summed_until < w.closed_until;
    IF h IS NULL THEN
        RETURN NULL;
    END IF;
    INSERT INTO rollup_hour_closed AS r
        (site, bucket, checks, up, degraded, down, skipped, rt_sketch)
    SELECT site, h, sum(checks), sum(up), sum(degraded), sum(down), sum(skipped),
           sitewatch_sketch_agg(rt_sketch)
    FROM rollup_minute
    WHERE bucket >= h AND bucket < h + interval '1 hour'
    GROUP BY site
    ON CONFLICT (site, bucket) DO UPDATE SET
        checks = excluded.checks, up = excluded.up, degraded = excluded.degraded,
        down = excluded.down, skipped = excluded.skipped, rt_sketch = excluded.rt_sketch;
    UPDATE rollup_hour_progress SET summed_until = h + interval '1 hour';
    RETURN h;
END;
$$;

-- Sums again up to `batch` marked site-hours of summed hours; returns how
-- many. Marks a writer holds are left for the next call (SKIP LOCKED).
CREATE FUNCTION sitewatch_resum_hours(batch integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    sites   text[];
    buckets timestamptz[];
BEGIN
    WITH taken AS (
        DELETE FROM rollup_hour_dirty
        WHERE ctid = ANY (ARRAY(
            SELECT ctid FROM rollup_hour_dirty
            WHERE bucket < (SELECT summed_until FROM rollup_hour_progress)
            ORDER BY site, bucket LIMIT batch
            FOR UPDATE SKIP LOCKED))
        RETURNING site, bucket)
    SELECT array_agg(site), array_agg(bucket) INTO sites, buckets FROM taken;
    IF sites IS NULL THEN
        RETURN 0;
    END IF;
    -- A new statement: a snapshot taken after the marks' writers committed.
    INSERT INTO rollup_hour_closed AS r
        (site, bucket, checks, up, degraded, down, skipped, rt_sketch)
    SELECT x.site, x.bucket, coalesce(sum(m.checks), 0), coalesce(sum(m.up), 0),
           coalesce(sum(m.degraded), 0), coalesce(sum(m.down), 0),
           coalesce(sum(m.skipped), 0), sitewatch_sketch_agg(m.rt_sketch)
    FROM unnest(sites, buckets) AS x(site, bucket)
    LEFT JOIN rollup_minute m
      ON m.site = x.site AND m.bucket >= x.bucket AND m.bucket < x.bucket + interval '1 hour'
    GROUP BY 1, 2
    ON CONFLICT (site, bucket) DO UPDATE SET
        checks = excluded.checks, up = excluded.up, degraded = excluded.degraded,
        down = excluded.down, skipped = excluded.skipped, rt_sketch = excluded.rt_sketch;
    RETURN cardinality(sites);
END;
$$;

-- Partitions and retention name the renamed table (as version 10 and 5
-- otherwise). Retention keeps the minute rows of days not summed yet or
-- with site-hours waiting to be summed again: dropping them would lose
-- those hours.
CREATE OR REPLACE FUNCTION sitewatch_ensure_partitions(from_day date, to_day date)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    d       date := from_day;
    m       date;
    created integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('sitewatch_ensure_partitions'));
    WHILE d <= to_day LOOP
        IF to_regclass('check_results_' || to_char(d, 'YYYYMMDD')) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF check_results FOR VALUES FROM (%L) TO (%L)',
                'check_results_' || to_char(d, 'YYYYMMDD'),
                d::timestamp AT TIME ZONE 'UTC', (d + 1)::timestamp AT TIME ZONE 'UTC');
            created := created + 1;
        END IF;
        IF to_regclass('rollup_minute_' || to_char(d, 'YYYYMMDD')) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF rollup_minute FOR VALUES FROM (%L) TO (%L)
                 WITH (fillfactor = 75)',
                'rollup_minute_' || to_char(d, 'YYYYMMDD'),
                d::timestamp AT TIME ZONE 'UTC', (d + 1)::timestamp AT TIME ZONE 'UTC');
        END IF;
        m := date_trunc('month', d)::date;
        IF to_regclass('rollup_hour_' || to_char(m, 'YYYYMM')) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF rollup_hour_closed FOR VALUES FROM (%L) TO (%L)',
                'rollup_hour_' || to_char(m, 'YYYYMM'),
                m::timestamp AT TIME ZONE 'UTC',
                (m + interval '1 month')::timestamp AT TIME ZONE 'UTC');
        END IF;
        d := d + 1;
    END LOOP;
    RETURN created;
END;
$$;

CREATE OR REPLACE FUNCTION sitewatch_drop_rollups_before(minutes_before date, hours_before date)
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
          AND to_date(substr(c.relname, 15), 'YYYYMMDD')
              < (SELECT (summed_until AT TIME ZONE 'UTC')::date FROM rollup_hour_progress)
          AND NOT EXISTS (
              SELECT 1 FROM rollup_hour_dirty d
              WHERE d.bucket >= to_date(substr(c.relname, 15), 'YYYYMMDD')::timestamp AT TIME ZONE 'UTC'
                AND d.bucket < (to_date(substr(c.relname, 15), 'YYYYMMDD') + 1)::timestamp AT TIME ZONE 'UTC')
        UNION ALL
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'rollup_hour_closed'::regclass
          AND c.relname ~ '^rollup_hour_[0-9]{6}$'
          AND (to_date(substr(c.relname, 13), 'YYYYMM') + interval '1 month')::date <= hours_before
        ORDER BY 1
    LOOP
        EXECUTE format('DROP TABLE %I', part);
        RETURN NEXT part;
    END LOOP;
END;
$$;
