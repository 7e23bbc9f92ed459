-- sitewatch schema, version 2: scheduler progress and the everyday views.

-- Per site, every slot before `accounted_until` has been delivered to Kafka
-- or recorded as skipped. After a restart the scheduler records each slot in
-- [accounted_until, first slot it will emit) as `skipped` / `missed_slot`.
CREATE TABLE schedule_progress (
    site            text PRIMARY KEY,
    accounted_until timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Stretches of missed slots too long to record slot by slot
-- (longer than scheduler.backfill_limit): accounted for here instead.
CREATE TABLE schedule_gaps (
    site        text NOT NULL,
    from_at     timestamptz NOT NULL,
    to_at       timestamptz NOT NULL,
    slots       bigint NOT NULL,
    reason      text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site, from_at)
);

-- The latest (non-skipped) result per configured site, and since when the
-- site has been in that state.
CREATE VIEW site_status AS
SELECT s.name AS site,
       s.url,
       s.enabled,
       latest.outcome,
       latest.status_code,
       latest.response_time_ms,
       latest.regex_matched,
       latest.error_kind,
       latest.error_message,
       latest.scheduled_at AS checked_at,
       COALESCE(
           (SELECT min(r.scheduled_at) FROM check_results r
            WHERE r.site = s.name AND r.outcome <> 'skipped'
              AND r.scheduled_at > COALESCE(
                  (SELECT max(o.scheduled_at) FROM check_results o
                   WHERE o.site = s.name AND o.outcome <> 'skipped'
                     AND o.outcome <> latest.outcome),
                  '-infinity')),
           latest.scheduled_at) AS since
FROM sites s
LEFT JOIN LATERAL (
    SELECT r.* FROM check_results r
    WHERE r.site = s.name AND r.outcome <> 'skipped'
    ORDER BY r.scheduled_at DESC
    LIMIT 1
) latest ON true
WHERE s.in_config;

-- Uptime and response-time percentiles per site over the last hour, day and
-- week. Uptime counts `up` and `degraded` as up, and leaves skipped slots out
-- (they are reported separately).
CREATE VIEW site_uptime AS
SELECT s.name AS site,
       w.label AS window,
       count(r.*) FILTER (WHERE r.outcome <> 'skipped') AS checks,
       count(r.*) FILTER (WHERE r.outcome IN ('up', 'degraded')) AS up,
       count(r.*) FILTER (WHERE r.outcome = 'down') AS down,
       count(r.*) FILTER (WHERE r.outcome = 'skipped') AS skipped,
       round(100.0 * count(r.*) FILTER (WHERE r.outcome IN ('up', 'degraded'))
             / NULLIF(count(r.*) FILTER (WHERE r.outcome <> 'skipped'), 0), 3) AS uptime_pct,
       percentile_cont(0.50) WITHIN GROUP (ORDER BY r.response_time_ms) AS p50_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY r.response_time_ms) AS p95_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY r.response_time_ms) AS p99_ms
FROM sites s
CROSS JOIN (VALUES ('1 hour', INTERVAL '1 hour'),
                   ('1 day', INTERVAL '1 day'),
                   ('7 days', INTERVAL '7 days')) AS w(label, span)
LEFT JOIN check_results r
       ON r.site = s.name AND r.scheduled_at > now() - w.span
WHERE s.in_config
GROUP BY s.name, w.label, w.span;
