//! One listed site's page (`/status/sites/{name}`) and its badges: uptime
//! over the windows of the `site_uptime` and `site_uptime_long` views, read
//! from those views, and response-time percentiles (p50, p95) over 24 h and
//! 7 d from the rollups' sketches (within 1 % of the exact value, migration
//! V10).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::GenericClient;

use super::data::{self, IncidentView, SiteView, DAYS};
use crate::config::{Listed, Site, StatusGroup as Group, StatusPage};

/// Uptime over one window, as its view says.
#[derive(Debug, Clone, Serialize)]
pub struct Window {
    /// The view's `window` value: `1 day`, `7 days`, `30 days`, `90 days`.
    pub window: String,
    pub checks: i64,
    pub uptime_pct: Option<f64>,
    /// Exact percentiles of the window's raw rows (`site_uptime` only).
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
}

/// One point of a response-time chart.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// The start of the bucket (15 minutes, or an hour).
    pub at: DateTime<Utc>,
    pub checks: i64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
}

/// Everything `/status/sites/{name}` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Detail {
    pub title: String,
    pub generated_at: DateTime<Utc>,
    pub site: SiteView,
    pub windows: Vec<Window>,
    /// Last 24 hours in 15-minute buckets, from `rollup_minute`.
    pub day: Vec<Point>,
    /// Last 7 days in hours, from `rollup_hour`.
    pub week: Vec<Point>,
    /// This site's incidents of the last 90 days, newest first.
    pub incidents: Vec<IncidentView>,
}

/// The overview of one listed site alone.
async fn one(
    db: &impl GenericClient,
    page: &StatusPage,
    listed: &Listed,
    site: &Site,
    now: DateTime<Utc>,
) -> Result<SiteView, tokio_postgres::Error> {
    let alone = StatusPage {
        groups: vec![Group {
            name: None,
            sites: vec![listed.clone()],
        }],
        ..page.clone()
    };
    let sites = HashMap::from([(site.name.as_str(), site)]);
    let mut o = data::overview(db, &alone, &sites, now, None).await?;
    Ok(o.groups.remove(0).sites.remove(0))
}

/// Reads one site's page; `windows` are its [`windows`].
pub async fn detail(
    db: &impl GenericClient,
    page: &StatusPage,
    listed: &Listed,
    site: &Site,
    windows: &[Window],
    now: DateTime<Utc>,
) -> Result<Detail, tokio_postgres::Error> {
    let view = one(db, page, listed, site, now).await?;
    let name = site.name.as_str();
    let windows = windows.to_vec();
    let day = db
        .query(
            "SELECT date_bin('15 minutes', bucket, TIMESTAMPTZ '2000-01-01 00:00:00+00'),
                    sum(checks)::int8,
                    sitewatch_sketch_quantile(sitewatch_sketch_agg(rt_sketch), 0.5),
                    sitewatch_sketch_quantile(sitewatch_sketch_agg(rt_sketch), 0.95)
             FROM rollup_minute WHERE site = $1 AND bucket >= $2
             GROUP BY 1 ORDER BY 1",
            &[&name, &(now - chrono::Duration::hours(24))],
        )
        .await?;
    let week = db
        .query(
            "SELECT bucket, checks::int8, sitewatch_sketch_quantile(rt_sketch, 0.5),
                    sitewatch_sketch_quantile(rt_sketch, 0.95)
             FROM rollup_hour WHERE site = $1 AND bucket >= $2 ORDER BY 1",
            &[&name, &(now - chrono::Duration::days(7))],
        )
        .await?;
    let points = |rows: Vec<tokio_postgres::Row>| -> Vec<Point> {
        rows.iter()
            .map(|r| Point {
                at: r.get(0),
                checks: r.get(1),
                p50_ms: r.get(2),
                p95_ms: r.get(3),
            })
            .collect()
    };
    let mut incidents = data::incidents(db, &[name], now - chrono::Duration::days(DAYS)).await?;
    for i in &mut incidents {
        i.display_name.clone_from(&listed.display_name);
    }
    Ok(Detail {
        title: page.title.clone(),
        generated_at: now,
        site: view,
        windows,
        day: points(day),
        week: points(week),
        incidents,
    })
}

/// The site's rows of `site_uptime` (`1 day`, `7 days`) and
/// `site_uptime_long` (`30 days`, `90 days`, `365 days`), in that order.
pub async fn windows(
    db: &impl GenericClient,
    site: &str,
) -> Result<Vec<Window>, tokio_postgres::Error> {
    let rows = db
        .query(
            "SELECT \"window\", checks::int8, uptime_pct::float8, p50_ms, p95_ms, 1 AS k,
                    CASE \"window\" WHEN '1 day' THEN 1 ELSE 7 END AS days
             FROM site_uptime WHERE site = $1 AND \"window\" IN ('1 day', '7 days')
             UNION ALL
             SELECT \"window\", checks::int8, uptime_pct::float8, NULL, NULL, 2,
                    CASE \"window\" WHEN '30 days' THEN 30 WHEN '90 days' THEN 90 ELSE 365 END
             FROM site_uptime_long WHERE site = $1
             ORDER BY 6, 7",
            &[&site],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Window {
            window: r.get(0),
            checks: r.get(1),
            uptime_pct: r.get(2),
            p50_ms: r.get(3),
            p95_ms: r.get(4),
        })
        .collect())
}

/// What a badge says: the status now, or one view row.
pub async fn status_now(
    db: &impl GenericClient,
    page: &StatusPage,
    listed: &Listed,
    site: &Site,
    now: DateTime<Utc>,
) -> Result<data::Status, tokio_postgres::Error> {
    Ok(one(db, page, listed, site, now).await?.status)
}
