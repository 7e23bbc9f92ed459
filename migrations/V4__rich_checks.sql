-- sitewatch schema, version 4: rich checks. Every column is nullable, so
-- adding them to the partitioned table rewrites nothing, and rows written
-- before this version simply have no breakdown.

ALTER TABLE check_results
    -- Phases in milliseconds, each summed over redirect hops. NULL when the
    -- phase did not happen: no DNS for an IP literal, no DNS/connect/TLS on a
    -- reused connection, no TLS over plain HTTP, nothing after a failure.
    ADD COLUMN dns_ms         double precision,
    ADD COLUMN connect_ms     double precision,
    ADD COLUMN tls_ms         double precision,
    ADD COLUMN ttfb_ms        double precision,
    ADD COLUMN transfer_ms    double precision,
    ADD COLUMN redirects      smallint,
    ADD COLUMN remote_addr    text,
    ADD COLUMN http_version   text,
    -- The leaf certificate (the one expiring first over the hops), recorded
    -- even when it failed verification.
    ADD COLUMN cert_not_after timestamptz,
    ADD COLUMN cert_days_left double precision,
    ADD COLUMN cert_subject   text,
    ADD COLUMN cert_issuer    text,
    ADD COLUMN tls_version    text,
    -- Every failed assertion: [{"assertion", "expected", "observed"}].
    ADD COLUMN failures       jsonb;

-- site_status gains the reason in full, the breakdown and the certificate.
CREATE OR REPLACE VIEW site_status AS
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
           latest.scheduled_at) AS since,
       latest.failures,
       latest.dns_ms,
       latest.connect_ms,
       latest.tls_ms,
       latest.ttfb_ms,
       latest.transfer_ms,
       latest.cert_not_after,
       latest.cert_days_left
FROM sites s
LEFT JOIN LATERAL (
    SELECT r.* FROM check_results r
    WHERE r.site = s.name AND r.outcome <> 'skipped'
    ORDER BY r.scheduled_at DESC
    LIMIT 1
) latest ON true
WHERE s.in_config;

-- site_uptime gains the degraded count and the TTFB percentiles.
CREATE OR REPLACE VIEW site_uptime AS
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
       percentile_cont(0.99) WITHIN GROUP (ORDER BY r.response_time_ms) AS p99_ms,
       count(r.*) FILTER (WHERE r.outcome = 'degraded') AS degraded,
       percentile_cont(0.50) WITHIN GROUP (ORDER BY r.ttfb_ms) AS ttfb_p50_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY r.ttfb_ms) AS ttfb_p95_ms
FROM sites s
CROSS JOIN (VALUES ('1 hour', INTERVAL '1 hour'),
                   ('1 day', INTERVAL '1 day'),
                   ('7 days', INTERVAL '7 days')) AS w(label, span)
LEFT JOIN check_results r
       ON r.site = s.name AND r.scheduled_at > now() - w.span
WHERE s.in_config
GROUP BY s.name, w.label, w.span;
