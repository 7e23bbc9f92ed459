//! What the status page shows, read from Postgres: each listed site's
//! current status, its daily uptime for 90 days (the `site_uptime_daily`
//! view's rows), its uptime over the windows of `site_uptime` and
//! `site_uptime_long`, response-time percentiles from the rollups'
//! sketches, and incidents; upcoming maintenance comes from the config.
//!
//! Every percentage is the views' own expression (`round(100.0 * up /
//! checks, 3)`), computed by Postgres or, for sums of its rows, by
//! [`uptime_pct`] with the same rounding, so the page shows what the views
//! say.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use tokio_postgres::GenericClient;

use crate::config::{Listed, Site, StatusPage};

/// Days of history in the uptime bars, today included.
pub const DAYS: i64 = 90;
/// How far ahead maintenance is announced.
const MAINTENANCE_AHEAD: i64 = 7;
/// Resolved incidents stay on the overview this long.
const RECENT_INCIDENTS: i64 = 14;
/// At most this many incidents on a page.
const MAX_INCIDENTS: i64 = 50;

/// A site's status now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Up,
    Degraded,
    Down,
    /// Its open incident flaps: it keeps changing between up and down
    /// (`[incidents] flap_changes`).
    Flapping,
    /// In one of its maintenance windows (whatever the checks say).
    Maintenance,
    /// No check result recent enough to say: none yet, the site is
    /// disabled, or the latest is older than twice its interval plus its
    /// timeout and a minute (the monitor is not checking it).
    Unknown,
}

impl Status {
    /// The words the page shows.
    pub fn label(self) -> &'static str {
        match self {
            Status::Up => "Up",
            Status::Degraded => "Degraded",
            Status::Down => "Down",
            Status::Flapping => "Flapping",
            Status::Maintenance => "In maintenance",
            Status::Unknown => "Unknown",
        }
    }
}

/// One UTC day of a site: the `site_uptime_daily` row, or no data.
#[derive(Debug, Clone, Serialize)]
pub struct Day {
    pub day: NaiveDate,
    pub checks: i64,
    /// Up and degraded.
    pub up: i64,
    pub down: i64,
    pub skipped: i64,
    /// `None` for a day without checks ("no data").
    pub uptime_pct: Option<f64>,
}

/// A listed site on the overview.
#[derive(Debug, Clone, Serialize)]
pub struct SiteView {
    /// The config name (in badge URLs).
    pub name: String,
    pub display_name: String,
    /// Only with `status_page.show_urls`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub status: Status,
    /// The slot of the latest result (not skipped).
    pub checked_at: Option<DateTime<Utc>>,
    /// The open incident, if any.
    pub incident: Option<i64>,
    /// Over the days below: `round(100 * up / checks, 3)`, `None` without checks.
    pub uptime_pct: Option<f64>,
    pub checks: i64,
    /// Oldest first, [`DAYS`] of them, today last.
    pub days: Vec<Day>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupView {
    pub name: Option<String>,
    pub sites: Vec<SiteView>,
}

/// An incident as the page shows it: the kind of failure, never the
/// message (which can quote addresses and bodies).
#[derive(Debug, Clone, Serialize)]
pub struct IncidentView {
    pub id: i64,
    pub site: String,
    pub display_name: String,
    pub opened_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub cause: &'static str,
    pub in_maintenance: bool,
    /// Its site flaps now.
    pub flapping: bool,
    /// Its site flapped while it was open.
    pub flapped: bool,
}

/// Upcoming maintenance: one window and the sites it covers.
#[derive(Debug, Clone, Serialize)]
pub struct MaintenanceView {
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub sites: Vec<String>,
}

/// Everything `/status` and `/status.json` show.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    pub title: String,
    pub description: String,
    pub generated_at: DateTime<Utc>,
    pub status: Status,
    pub groups: Vec<GroupView>,
    pub incidents: Vec<IncidentView>,
    pub maintenance: Vec<MaintenanceView>,
}

/// Reads the overview of `page`'s listed sites; `sites` are the configured
/// ones (a listed site missing from them is left out); `history` keeps the
/// closed days between calls.
pub async fn overview(
    db: &impl GenericClient,
    page: &StatusPage,
    sites: &HashMap<&str, &Site>,
    now: DateTime<Utc>,
    history: Option<&History>,
) -> Result<Overview, tokio_postgres::Error> {
    let listed: Vec<(&Listed, &Site)> = page
        .listed()
        .filter_map(|l| sites.get(l.site.as_str()).map(|s| (l, *s)))
        .collect();
    let names: Vec<&str> = listed.iter().map(|(l, _)| l.site.as_str()).collect();
    let latest = latest(db, &listed, now).await?;
    let (days, totals) = daily(db, &names, now, history).await?;
    let incidents = incidents(db, &names, now - chrono::Duration::days(RECENT_INCIDENTS)).await?;
    let display: HashMap<&str, &str> = listed
        .iter()
        .map(|(l, _)| (l.site.as_str(), l.display_name.as_str()))
        .collect();
    // Each listed site's open incident, whatever the list below shows (it
    // keeps the newest few).
    let open: HashMap<String, (i64, bool)> = db
        .query(
            "SELECT site, id, flapping_since IS NOT NULL FROM incidents
             WHERE site = ANY($1) AND resolved_at IS NULL",
            &[&names],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    let mut groups = Vec::new();
    for g in &page.groups {
        let mut views = Vec::new();
        for l in &g.sites {
            let Some(site) = sites.get(l.site.as_str()) else {
                continue;
            };
            let (status, checked_at) = latest.get(l.site.as_str()).copied().unwrap_or_default();
            let (checks, uptime_pct) = totals.get(l.site.as_str()).copied().unwrap_or_default();
            views.push(SiteView {
                name: l.site.clone(),
                display_name: l.display_name.clone(),
                // A public page: never a credential in the URL it shows.
                url: page
                    .show_urls
                    .then(|| crate::model::redacted_url(site.url.as_str())),
                status: match (
                    current(site, status, checked_at, now),
                    open.get(l.site.as_str()),
                ) {
                    (Status::Up | Status::Degraded | Status::Down, Some((_, true))) => {
                        Status::Flapping
                    }
                    (s, _) => s,
                },
                checked_at,
                incident: open.get(l.site.as_str()).map(|o| o.0),
                uptime_pct,
                checks,
                days: bars(days.get(l.site.as_str()), now),
            });
        }
        if !views.is_empty() {
            groups.push(GroupView {
                name: g.name.clone(),
                sites: views,
            });
        }
    }
    let all: Vec<Status> = groups
        .iter()
        .flat_map(|g| g.sites.iter().map(|s| s.status))
        .collect();
    Ok(Overview {
        title: page.title.clone(),
        description: page.description.clone(),
        generated_at: now,
        status: overall(&all),
        groups,
        incidents: incidents
            .into_iter()
            .map(|i| IncidentView {
                display_name: display
                    .get(i.site.as_str())
                    .copied()
                    .unwrap_or_default()
                    .to_owned(),
                ..i
            })
            .collect(),
        maintenance: maintenance(&listed, now),
    })
}

/// The page's headline status: the worst of the sites'.
pub fn overall(all: &[Status]) -> Status {
    for s in [
        Status::Down,
        Status::Flapping,
        Status::Degraded,
        Status::Maintenance,
        Status::Unknown,
    ] {
        if all.contains(&s) {
            return s;
        }
    }
    if all.is_empty() {
        Status::Unknown
    } else {
        Status::Up
    }
}

/// The status a site shows now from its latest result.
pub fn current(
    site: &Site,
    latest: Option<Status>,
    checked_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Status {
    if site.maintenance.iter().any(|w| w.contains(now)) {
        return Status::Maintenance;
    }
    let fresh = checked_at.is_some_and(|at| {
        let limit = stale_after(site);
        (now - at).to_std().map_or(true, |age| age <= limit)
    });
    match latest {
        Some(s) if site.enabled && fresh => s,
        _ => Status::Unknown,
    }
}

/// A result older than this no longer tells the site's status.
fn stale_after(site: &Site) -> Duration {
    2 * site.interval + site.timeout + Duration::from_secs(60)
}

/// Latest non-skipped result per site: (status, slot).
async fn latest(
    db: &impl GenericClient,
    listed: &[(&Listed, &Site)],
    now: DateTime<Utc>,
) -> Result<HashMap<String, (Option<Status>, Option<DateTime<Utc>>)>, tokio_postgres::Error> {
    let names: Vec<&str> = listed.iter().map(|(l, _)| l.site.as_str()).collect();
    // Older results say "unknown" anyway; the bound lets Postgres skip
    // the older day partitions.
    let oldest = listed
        .iter()
        .map(|(_, s)| stale_after(s))
        .max()
        .unwrap_or_default();
    let since = now - chrono::Duration::from_std(oldest).unwrap_or_default();
    let rows = db
        .query(
            "SELECT s.name, r.outcome, r.scheduled_at
             FROM unnest($1::text[]) AS s(name)
             JOIN LATERAL (
                 SELECT c.outcome, c.scheduled_at FROM check_results c
                 WHERE c.site = s.name AND c.outcome <> 'skipped' AND c.scheduled_at > $2
                 ORDER BY c.scheduled_at DESC LIMIT 1) r ON true",
            &[&names, &since],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let status = match r.get::<_, &str>(1) {
                "up" => Status::Up,
                "degraded" => Status::Degraded,
                _ => Status::Down,
            };
            (r.get(0), (Some(status), Some(r.get(2))))
        })
        .collect())
}

type Days = HashMap<String, Vec<Day>>;
type Totals = HashMap<String, (i64, Option<f64>)>;

/// The closed days (before today, UTC) of every listed site, kept between
/// renders: at 1,000 sites they are 2 million hour rows, and they change
/// only when a late result lands. Read again when the day turns, and
/// hourly for late results.
#[derive(Default)]
pub struct History {
    kept: tokio::sync::Mutex<Option<(NaiveDate, tokio::time::Instant, Days)>>,
}

/// Closed days are read again after this long.
const HISTORY_FOR: Duration = Duration::from_secs(3600);

impl History {
    async fn closed(
        &self,
        db: &impl GenericClient,
        names: &[&str],
        now: DateTime<Utc>,
    ) -> Result<Days, tokio_postgres::Error> {
        let today = now.date_naive();
        let mut kept = self.kept.lock().await;
        if let Some((day, at, days)) = kept.as_ref() {
            if *day == today && at.elapsed() < HISTORY_FOR {
                return Ok(days.clone());
            }
        }
        let days = days_between(db, names, first_day(now), today).await?;
        *kept = Some((today, tokio::time::Instant::now(), days.clone()));
        Ok(days)
    }
}

/// `site_uptime_daily` for the last [`DAYS`] days, per site (the closed
/// days from `history` when given), and the totals over them.
async fn daily(
    db: &impl GenericClient,
    names: &[&str],
    now: DateTime<Utc>,
    history: Option<&History>,
) -> Result<(Days, Totals), tokio_postgres::Error> {
    let today = now.date_naive();
    let mut days = match history {
        Some(h) => {
            let mut days = h.closed(db, names, now).await?;
            for (site, mut d) in
                days_between(db, names, today, today + chrono::Days::new(1)).await?
            {
                days.entry(site).or_default().append(&mut d);
            }
            days
        }
        None => days_between(db, names, first_day(now), today + chrono::Days::new(1)).await?,
    };
    let mut totals = Totals::new();
    for (site, list) in &mut days {
        list.sort_by_key(|d| d.day);
        let (up, checks) = list
            .iter()
            .fold((0, 0), |(u, c), d| (u + d.up, c + d.checks));
        totals.insert(site.clone(), (checks, uptime_pct(up, checks)));
    }
    Ok((days, totals))
}

/// `round(100.0 * up / checks, 3)` as Postgres computes it (numeric,
/// half away from zero), in integers: exact for any count a day can hold.
pub fn uptime_pct(up: i64, checks: i64) -> Option<f64> {
    (checks > 0).then(|| {
        let thousandths =
            (200_000 * i128::from(up) + i128::from(checks)) / (2 * i128::from(checks));
        thousandths as f64 / 1000.0
    })
}

/// The view's rows of days `from` (inclusive) to `to` (exclusive).
async fn days_between(
    db: &impl GenericClient,
    names: &[&str],
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Days, tokio_postgres::Error> {
    let at = |d: NaiveDate| d.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    // The view's expression with the bucket bounds written where the
    // rollups' index and partitions can use them.
    let rows = db
        .query(
            "SELECT site, (bucket AT TIME ZONE 'UTC')::date AS day,
                    sum(checks)::int8, sum(up + degraded)::int8, sum(down)::int8,
                    sum(skipped)::int8,
                    round(100.0 * sum(up + degraded) / NULLIF(sum(checks), 0), 3)::float8
             FROM rollup_hour WHERE site = ANY($1) AND bucket >= $2 AND bucket < $3
             GROUP BY 1, 2",
            &[&names, &at(from), &at(to)],
        )
        .await?;
    let mut days = Days::new();
    for r in rows {
        days.entry(r.get(0)).or_default().push(Day {
            day: r.get(1),
            checks: r.get(2),
            up: r.get(3),
            down: r.get(4),
            skipped: r.get(5),
            uptime_pct: r.get(6),
        });
    }
    Ok(days)
}

/// The first of the [`DAYS`] days ending today (UTC).
pub fn first_day(now: DateTime<Utc>) -> NaiveDate {
    now.date_naive() - chrono::Days::new(DAYS as u64 - 1)
}

/// Every one of the [`DAYS`] days, "no data" where the view has no row.
fn bars(have: Option<&Vec<Day>>, now: DateTime<Utc>) -> Vec<Day> {
    let by_day: HashMap<NaiveDate, &Day> = have.into_iter().flatten().map(|d| (d.day, d)).collect();
    (0..DAYS as u64)
        .map(|i| first_day(now) + chrono::Days::new(i))
        .map(|day| {
            by_day.get(&day).map_or(
                Day {
                    day,
                    checks: 0,
                    up: 0,
                    down: 0,
                    skipped: 0,
                    uptime_pct: None,
                },
                |d| (*d).clone(),
            )
        })
        .collect()
}

/// Open incidents and those resolved after `since`, newest first.
pub async fn incidents(
    db: &impl GenericClient,
    names: &[&str],
    since: DateTime<Utc>,
) -> Result<Vec<IncidentView>, tokio_postgres::Error> {
    let rows = db
        .query(
            "SELECT id, site, opened_at, resolved_at, split_part(cause, ':', 1), in_maintenance,
                    flapping_since IS NOT NULL, flapped
             FROM incidents
             WHERE site = ANY($1) AND (resolved_at IS NULL OR resolved_at > $2)
             ORDER BY opened_at DESC LIMIT $3",
            &[&names, &since, &MAX_INCIDENTS],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| IncidentView {
            id: r.get(0),
            site: r.get(1),
            display_name: String::new(),
            opened_at: r.get(2),
            resolved_at: r.get(3),
            cause: cause(r.get(4)),
            in_maintenance: r.get(5),
            flapping: r.get(6),
            flapped: r.get(7),
        })
        .collect())
}

/// The kind of failure in words; the error kinds are `model::ErrorKind`'s.
fn cause(kind: &str) -> &'static str {
    match kind {
        "dns" => "DNS lookup failed",
        "connect" => "connection failed",
        "tls" => "TLS handshake or certificate failed",
        "timeout" => "no answer in time",
        "redirect_loop" => "too many redirects",
        "body" | "protocol" => "broken response",
        "unexpected_status" => "unexpected status code",
        "regex_mismatch" | "forbidden_match" | "json_mismatch" | "body_size" => {
            "unexpected content"
        }
        "header_mismatch" => "unexpected header",
        "answer_mismatch" => "unexpected DNS answer",
        "cert_expiring" => "certificate about to expire",
        "slow" => "slow responses",
        _ => "failing checks",
    }
}

/// Maintenance windows starting within a week, merged across sites.
fn maintenance(listed: &[(&Listed, &Site)], now: DateTime<Utc>) -> Vec<MaintenanceView> {
    let mut windows: Vec<MaintenanceView> = Vec::new();
    for (l, site) in listed {
        for w in &site.maintenance {
            let Some((starts_at, ends_at)) =
                w.next_start(now, chrono::Duration::days(MAINTENANCE_AHEAD))
            else {
                continue;
            };
            match windows
                .iter_mut()
                .find(|m| m.starts_at == starts_at && m.ends_at == ends_at)
            {
                Some(m) => m.sites.push(l.display_name.clone()),
                None => windows.push(MaintenanceView {
                    starts_at,
                    ends_at,
                    sites: vec![l.display_name.clone()],
                }),
            }
        }
    }
    windows.sort_by_key(|m| m.starts_at);
    windows.truncate(20);
    windows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_rounds_as_postgres_numeric_does() {
        // Values checked with psql: SELECT round(100.0 * u / c, 3).
        assert_eq!(uptime_pct(2, 3), Some(66.667));
        assert_eq!(uptime_pct(1, 8000), Some(0.013), "half away from zero");
        assert_eq!(uptime_pct(1, 16000), Some(0.006));
        assert_eq!(uptime_pct(129_598, 129_600), Some(99.998));
        assert_eq!(uptime_pct(7, 7), Some(100.0));
        assert_eq!(uptime_pct(0, 5), Some(0.0));
        assert_eq!(uptime_pct(0, 0), None);
    }
}
