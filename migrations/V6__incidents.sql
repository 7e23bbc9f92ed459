-- sitewatch schema, version 6: state per site, incidents, and the alerts
-- they send. One evaluator at a time (an advisory lock) turns results into
-- state changes; a site has at most one open incident (a unique index, so
-- even a bug cannot open two); notifications go through an outbox that
-- instances claim with SKIP LOCKED, so each is sent once.

-- Results checked inside a maintenance window of their site.
ALTER TABLE check_results ADD COLUMN in_maintenance boolean NOT NULL DEFAULT false;

CREATE TABLE site_state (
    site               text PRIMARY KEY,
    state              text NOT NULL DEFAULT 'up' CHECK (state IN ('up', 'down')),
    fails              integer NOT NULL DEFAULT 0,   -- consecutive failures
    oks                integer NOT NULL DEFAULT 0,   -- consecutive successes
    streak_first_check uuid,                         -- first failure of the streak
    streak_first_at    timestamptz,
    streak_cause       text,
    open_incident      bigint,
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE incidents (
    id                  bigserial PRIMARY KEY,
    site                text NOT NULL,
    opened_at           timestamptz NOT NULL,        -- the first failing check's slot
    resolved_at         timestamptz,                 -- the recovering check's slot
    cause               text NOT NULL,
    first_failing_check uuid NOT NULL,
    last_failing_check  uuid NOT NULL,
    failures            integer NOT NULL,
    in_maintenance      boolean NOT NULL DEFAULT false,
    last_notified_at    timestamptz
);
CREATE UNIQUE INDEX incidents_one_open_per_site ON incidents (site) WHERE resolved_at IS NULL;
CREATE INDEX incidents_site_time ON incidents (site, opened_at DESC);

-- Results up to here have been evaluated; later ones are next.
CREATE TABLE incident_watermark (
    id              integer PRIMARY KEY CHECK (id = 1),
    evaluated_until timestamptz NOT NULL
);

CREATE TABLE alert_outbox (
    id           bigserial PRIMARY KEY,
    incident_id  bigint NOT NULL REFERENCES incidents (id),
    event        text NOT NULL CHECK (event IN ('opened', 'resolved', 'reminder')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    due_at       timestamptz NOT NULL DEFAULT now(),
    attempts     integer NOT NULL DEFAULT 0,
    delivered_at timestamptz,
    gave_up_at   timestamptz
);
CREATE INDEX alert_outbox_due ON alert_outbox (due_at) WHERE delivered_at IS NULL AND gave_up_at IS NULL;

-- Every delivery attempt, successful or not.
CREATE TABLE alert_deliveries (
    id           bigserial PRIMARY KEY,
    outbox_id    bigint NOT NULL REFERENCES alert_outbox (id),
    attempted_at timestamptz NOT NULL DEFAULT now(),
    instance     text NOT NULL,
    status_code  integer,
    error        text,
    duration_ms  double precision NOT NULL
);

CREATE VIEW open_incidents AS
SELECT i.id, i.site, s.url, i.opened_at, now() - i.opened_at AS open_for, i.cause,
       i.failures, i.last_failing_check, i.in_maintenance
FROM incidents i LEFT JOIN sites s ON s.name = i.site
WHERE i.resolved_at IS NULL;
