-- sitewatch schema, version 16: uptime per site and UTC day, for the status
-- page's 90-day bars and for queries such as
--   SELECT day, checks, uptime_pct FROM site_uptime_daily
--   WHERE site = 'example-home' AND day > current_date - 90 ORDER BY day;
--
-- From the hour rollups: 24 rows a day whatever the check interval. Uptime
-- counts up and degraded, as in site_uptime and site_uptime_long. A day
-- without a row had no check at all (the monitor was not running, or the
-- site was not configured yet): it is "no data", never "up". `skipped`
-- counts slots the monitor scheduled but could not check.
CREATE VIEW site_uptime_daily AS
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
