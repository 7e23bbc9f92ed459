-- sitewatch schema, version 10: response times in the rollups become a
-- bounded sketch instead of the list of values.
--
-- Why: version 5 kept every response time (`rt_ms float8[]`) and appended
-- each batch's values to the row, so an hour row of a 1 s site grew to 3,600
-- values and was rewritten whole by every batch: the cost per check grew
-- with the checks already in the hour (quadratic WAL and dead tuples).
--
-- The sketch: log-bucketed counts, as in DDSketch (Masson, Rim and Lee,
-- "DDSketch: a fast and fully-mergeable quantile sketch with relative-error
-- guarantees", VLDB 2019). A response time x ms falls in bucket
-- i = ceil(log_g(x / 0.01)) with g = 1.02 (bucket 0 holds everything up to
-- 10 µs); bucket i stands for 2 * 0.01 * g^i / (g + 1) ms, which is within
-- (g - 1) / (g + 1) < 1 % of every value in the bucket. A sketch is an
-- int8[] whose elements are `bucket << 32 | count`, sorted by bucket, only
-- non-empty buckets: at most about 1,000 elements whatever the number of
-- checks (one hour spans buckets 0..994), in practice a few dozen. Merging
-- two sketches adds counts bucket by bucket, so a rollup row costs the same
-- to update whether it holds one check or a million, and rows merge
-- exactly across minutes, hours and sites (`sitewatch_sketch_agg`).
--
-- Percentiles: `sitewatch_sketch_quantile(s, q)` returns the bucket value of
-- the response time of rank floor(q * (n - 1)) (0-based, n the count), so it
-- is within 1 % of that exact order statistic.

CREATE FUNCTION sitewatch_sketch_bucket(ms float8) RETURNS int8
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT greatest(0, ceil(ln(greatest(ms, 0.01) / 0.01) / ln(1.02)))::int8
$$;

-- The sketch of a list of response times (NULLs are passed over).
CREATE FUNCTION sitewatch_sketch_of(ms float8[]) RETURNS int8[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg((b << 32) + n ORDER BY b), '{}')
    FROM (SELECT sitewatch_sketch_bucket(t) AS b, count(*) AS n
          FROM unnest(ms) t WHERE t IS NOT NULL GROUP BY 1) s
$$;

-- Two sketches merged: counts added bucket by bucket.
CREATE FUNCTION sitewatch_sketch_merge(a int8[], b int8[]) RETURNS int8[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg((k << 32) + n ORDER BY k), '{}')
    FROM (SELECT e >> 32 AS k, sum(e & 4294967295)::int8 AS n
          FROM unnest(coalesce(a, '{}') || coalesce(b, '{}')) e GROUP BY 1) s
$$;

-- The sketch of many rows, e.g. a site's day from its hour rollups:
--   SELECT sitewatch_sketch_quantile(sitewatch_sketch_agg(rt_sketch), 0.95)
--   FROM rollup_hour WHERE site = 'x' AND bucket >= now() - interval '1 day'
CREATE AGGREGATE sitewatch_sketch_agg(int8[]) (
    SFUNC = sitewatch_sketch_merge, STYPE = int8[], INITCOND = '{}',
    COMBINEFUNC = sitewatch_sketch_merge, PARALLEL = SAFE
);

-- How many response times a sketch holds.
CREATE FUNCTION sitewatch_sketch_count(s int8[]) RETURNS int8
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(sum(e & 4294967295), 0)::int8 FROM unnest(s) e
$$;

-- The q-quantile (0 <= q <= 1) of a sketch, in ms; NULL when it is empty.
CREATE FUNCTION sitewatch_sketch_quantile(s int8[], q float8) RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 2 * 0.01 * power(1.02, k) / 2.02
    FROM (SELECT e >> 32 AS k,
                 sum(e & 4294967295) OVER (ORDER BY e >> 32) AS cum,
                 sum(e & 4294967295) OVER () AS total
          FROM unnest(s) e) t
    WHERE cum > q * (total - 1)
    ORDER BY k LIMIT 1
$$;

-- The buckets of a sketch, readable: each one's bounds in ms and its count.
CREATE FUNCTION sitewatch_sketch_buckets(s int8[],
                                         OUT above_ms float8, OUT up_to_ms float8,
                                         OUT checks int8)
RETURNS SETOF record
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN e >> 32 = 0 THEN 0 ELSE 0.01 * power(1.02, (e >> 32) - 1) END,
           0.01 * power(1.02, e >> 32), e & 4294967295
    FROM unnest(s) e ORDER BY e >> 32
$$;

-- p50, p95 and p99 of a sketch (version 5's float8[] form stays for raw lists).
CREATE FUNCTION sitewatch_percentiles(rt int8[],
                                      OUT p50 float8, OUT p95 float8, OUT p99 float8)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT sitewatch_sketch_quantile(rt, 0.50), sitewatch_sketch_quantile(rt, 0.95),
           sitewatch_sketch_quantile(rt, 0.99)
$$;

-- Existing rows, converted once.
ALTER TABLE rollup_minute ADD COLUMN rt_sketch int8[] NOT NULL DEFAULT '{}';
ALTER TABLE rollup_hour ADD COLUMN rt_sketch int8[] NOT NULL DEFAULT '{}';
UPDATE rollup_minute SET rt_sketch = sitewatch_sketch_of(rt_ms) WHERE rt_ms <> '{}';
UPDATE rollup_hour SET rt_sketch = sitewatch_sketch_of(rt_ms) WHERE rt_ms <> '{}';
ALTER TABLE rollup_minute DROP COLUMN rt_ms;
ALTER TABLE rollup_hour DROP COLUMN rt_ms;

-- Rollup rows are updated by every batch. Partitions created from now on
-- leave a quarter of each page free, so that such an update can stay on the
-- row's page (a HOT update: no new index entry) and dead versions are
-- pruned in place instead of waiting for vacuum.
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
                'CREATE TABLE %I PARTITION OF rollup_hour FOR VALUES FROM (%L) TO (%L)
                 WITH (fillfactor = 75)',
                'rollup_hour_' || to_char(m, 'YYYYMM'),
                m::timestamp AT TIME ZONE 'UTC',
                (m + interval '1 month')::timestamp AT TIME ZONE 'UTC');
        END IF;
        d := d + 1;
    END LOOP;
    RETURN created;
END;
$$;
