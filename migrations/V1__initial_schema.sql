-- sitewatch schema, version 1.
--
-- `sites` mirrors the configuration; `check_results` holds one row per check
-- (per scheduled slot, or per on-demand request), partitioned by day so that
-- retention drops whole partitions instead of running a long DELETE.

CREATE TABLE sites (
    name            text PRIMARY KEY,
    url             text NOT NULL,
    method          text NOT NULL,
    interval_ms     bigint NOT NULL CHECK (interval_ms > 0),
    timeout_ms      bigint NOT NULL CHECK (timeout_ms > 0),
    regex           text,
    expect_status   text NOT NULL,
    -- Header names only: values often hold credentials.
    header_names    text[] NOT NULL DEFAULT '{}',
    -- false when disabled in the config or removed from it.
    enabled         boolean NOT NULL,
    -- false once the site left the configuration; its row and history stay.
    in_config       boolean NOT NULL DEFAULT true,
    source_file     text,
    first_seen_at   timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    removed_at      timestamptz
);

CREATE TABLE check_results (
    -- Scheduled checks: derived from (site, slot), so a re-emitted slot is the
    -- same check. A check id always comes with the same scheduled_at, so the
    -- (check_id, scheduled_at) key is as unique as check_id alone; the
    -- partition key has to be part of any unique constraint.
    check_id         uuid NOT NULL,
    site             text NOT NULL,
    url              text NOT NULL,
    origin           text NOT NULL DEFAULT 'scheduled'
                     CHECK (origin IN ('scheduled', 'on_demand')),
    -- The slot the check belongs to (or when an on-demand check was asked for).
    scheduled_at     timestamptz NOT NULL,
    -- NULL for skipped slots: nothing was started.
    started_at       timestamptz,
    finished_at      timestamptz,
    outcome          text NOT NULL
                     CHECK (outcome IN ('up', 'degraded', 'down', 'skipped')),
    -- NULL when no response arrived.
    status_code      smallint,
    response_time_ms double precision,
    -- NULL when the site has no regex or no body was read.
    regex_matched    boolean,
    body_bytes       bigint,
    -- dns, connect, tls, timeout, redirect_loop, body_too_large, ... for
    -- failed checks; missed_slot, deadline_exceeded for skipped ones.
    error_kind       text,
    error_message    text,
    -- Which checker instance ran it.
    checker          text,
    persisted_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (check_id, scheduled_at)
) PARTITION BY RANGE (scheduled_at);

-- Latest status per site, uptime and percentiles over a window: an index-only
-- walk of one site's recent rows.
CREATE INDEX check_results_site_time
    ON check_results (site, scheduled_at DESC)
    INCLUDE (outcome, response_time_ms, status_code);

-- Failures in a time range: small, since most checks are up.
CREATE INDEX check_results_failures
    ON check_results (scheduled_at)
    WHERE outcome <> 'up';

-- Creates the daily partitions covering [from_day, to_day] (UTC days) that do
-- not exist yet; returns how many it created. Safe to call from several
-- instances at once.
CREATE FUNCTION sitewatch_ensure_partitions(from_day date, to_day date)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    d       date := from_day;
    part    text;
    created integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('sitewatch_ensure_partitions'));
    WHILE d <= to_day LOOP
        part := 'check_results_' || to_char(d, 'YYYYMMDD');
        IF to_regclass(part) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF check_results FOR VALUES FROM (%L) TO (%L)',
                part,
                d::timestamp AT TIME ZONE 'UTC',
                (d + 1)::timestamp AT TIME ZONE 'UTC');
            created := created + 1;
        END IF;
        d := d + 1;
    END LOOP;
    RETURN created;
END;
$$;

-- Drops the daily partitions that end on or before `before_day` (UTC):
-- retention without a long DELETE. Returns the dropped partitions' names.
CREATE FUNCTION sitewatch_drop_partitions_before(before_day date)
RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    part text;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('sitewatch_ensure_partitions'));
    FOR part IN
        SELECT c.relname
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'check_results'::regclass
          AND c.relname ~ '^check_results_[0-9]{8}$'
          AND to_date(substr(c.relname, 15), 'YYYYMMDD') < before_day
        ORDER BY c.relname
    LOOP
        EXECUTE format('DROP TABLE %I', part);
        RETURN NEXT part;
    END LOOP;
END;
$$;
