//! The status page's HTML: minijinja templates (`assets/*.html`, every
//! value HTML-escaped) over the data of [`super::data`] and
//! [`super::detail`]. The 90-day bars and the charts are written here in
//! Rust: at 1,000 sites the bars are 90,000 elements, and a template loop
//! over them is several times slower.

use std::fmt::Write;

use chrono::{DateTime, Duration, Utc};
use minijinja::{context, Environment, Value};
use serde::Serialize;

use super::chart;
use super::data::{Day, IncidentView, Overview, SiteView, Status, DAYS};
use super::detail::Detail;
use super::percent;

/// The compiled templates.
pub struct Templates {
    env: Environment<'static>,
}

impl Default for Templates {
    fn default() -> Self {
        let mut env = Environment::new();
        for (name, text) in [
            ("base.html", include_str!("assets/base.html")),
            ("overview.html", include_str!("assets/overview.html")),
            ("site.html", include_str!("assets/site.html")),
        ] {
            env.add_template(name, text)
                .expect("the status page's templates compile (a unit test renders them)");
        }
        env.add_filter("when", when);
        Templates { env }
    }
}

/// A site row as the templates take it: display strings made here.
#[derive(Serialize)]
struct Row<'a> {
    name: &'a str,
    display_name: &'a str,
    url: Option<&'a str>,
    status: Status,
    label: &'static str,
    checked_at: Option<DateTime<Utc>>,
    incident: Option<i64>,
    uptime: String,
    bars: Value,
}

#[derive(Serialize)]
struct Incident<'a> {
    #[serde(flatten)]
    incident: &'a IncidentView,
    lasted: String,
}

impl Templates {
    /// `/status`; `refresh` in seconds (the page reloads itself no sooner
    /// than a minute).
    pub fn overview(&self, o: &Overview, refresh: u64) -> Result<String, minijinja::Error> {
        let groups: Vec<Value> = o
            .groups
            .iter()
            .map(|g| {
                let rows: Vec<Row> = g.sites.iter().map(row).collect();
                context! { name => g.name, sites => rows }
            })
            .collect();
        let (open, resolved): (Vec<_>, Vec<_>) =
            o.incidents.iter().partition(|i| i.resolved_at.is_none());
        let headline = headline(o);
        self.env.get_template("overview.html")?.render(context! {
            groups, headline, root => Value::from_safe_string("status/".into()), refresh, days => DAYS,
            title => o.title, description => o.description, status => o.status,
            maintenance => o.maintenance, generated_at => o.generated_at,
            open => incidents(&open, o.generated_at),
            resolved => incidents(&resolved, o.generated_at),
        })
    }

    /// `/status/sites/{name}`.
    pub fn site(&self, d: &Detail, refresh: u64) -> Result<String, minijinja::Error> {
        let now = d.generated_at;
        // The 90-day row is the bars' (as on the overview), not
        // `site_uptime_long`'s hour-aligned window: one page, one figure.
        let bars = super::detail::Window {
            window: "90 days shown".into(),
            checks: d.site.checks,
            uptime_pct: d.site.uptime_pct,
            p50_ms: None,
            p95_ms: None,
        };
        let windows: Vec<Value> = [
            ("1 day", "24 hours"),
            ("7 days", "7 days"),
            ("30 days", "30 days"),
            ("90 days shown", "90 days (the bars)"),
            ("365 days", "1 year"),
        ]
        .iter()
        .map(|(key, label)| {
            let w = (d.windows.iter().chain([&bars])).find(|w| w.window == *key);
            let ms = |v: Option<f64>| v.map_or("–".to_owned(), chart::ms_label);
            context! {
                window => key, label,
                uptime => show_pct(w.and_then(|w| w.uptime_pct)),
                checks => w.map_or(0, |w| w.checks),
                p50 => ms(w.and_then(|w| w.p50_ms)),
                p95 => ms(w.and_then(|w| w.p95_ms)),
            }
        })
        .collect();
        let name = &d.site.display_name;
        let day_chart = chart::svg(
            &d.day,
            now - Duration::hours(24),
            now,
            Duration::minutes(15),
            &format!("{name}: p50 and p95 response time, last 24 hours"),
        );
        let week_chart = chart::svg(
            &d.week,
            now - Duration::days(7),
            now,
            Duration::hours(1),
            &format!("{name}: p50 and p95 response time, last 7 days"),
        );
        let all: Vec<&IncidentView> = d.incidents.iter().collect();
        self.env.get_template("site.html")?.render(context! {
            s => row(&d.site), windows, root => Value::from_safe_string("../".into()), refresh,
            title => d.title, generated_at => now,
            day_chart => Value::from_safe_string(day_chart),
            week_chart => Value::from_safe_string(week_chart),
            incidents => incidents(&all, now),
        })
    }
}

fn row(s: &SiteView) -> Row<'_> {
    Row {
        name: &s.name,
        display_name: &s.display_name,
        url: s.url.as_deref(),
        status: s.status,
        label: s.status.label(),
        checked_at: s.checked_at,
        incident: s.incident,
        uptime: show_pct(s.uptime_pct),
        bars: Value::from_safe_string(bars(&s.days)),
    }
}

fn incidents<'a>(list: &[&'a IncidentView], now: DateTime<Utc>) -> Vec<Incident<'a>> {
    list.iter()
        .map(|i| Incident {
            incident: i,
            lasted: lasted(i.resolved_at.unwrap_or(now) - i.opened_at),
        })
        .collect()
}

/// The banner under the title.
fn headline(o: &Overview) -> &'static str {
    let sites = o.groups.iter().flat_map(|g| &g.sites);
    match o.status {
        Status::Up => "All systems operational",
        Status::Down if sites.clone().all(|s| s.status == Status::Down) => "Major outage",
        Status::Down => "Partial outage",
        Status::Flapping => "Unstable: some systems keep going up and down",
        Status::Degraded => "Degraded performance",
        Status::Maintenance => "Maintenance in progress",
        Status::Unknown => "Status unknown for some systems",
    }
}

/// `99.931%`, or `no data`.
fn show_pct(v: Option<f64>) -> String {
    v.map_or("no data".to_owned(), |p| format!("{}%", percent(p)))
}

/// The 90 daily bars: one `<li>` each, its class the uptime's band, its
/// title the day's figures from `site_uptime_daily`.
pub fn bars(days: &[Day]) -> String {
    let mut out = String::with_capacity(days.len() * 64 + 200);
    let _ = write!(
        out,
        r#"<ol class="bars" aria-label="uptime per day, last {DAYS} days">"#
    );
    for d in days {
        let band = match d.uptime_pct {
            None => "nodata",
            Some(p) if p >= 100.0 => "u100",
            Some(p) if p >= 99.0 => "u99",
            Some(p) if p >= 95.0 => "u95",
            Some(_) => "ulow",
        };
        let partial = if d.skipped > 0 { " partial" } else { "" };
        let _ = write!(out, r#"<li class="{band}{partial}" title="{}: "#, d.day);
        match d.uptime_pct {
            None => out.push_str("no data"),
            Some(p) => {
                let _ = write!(out, "{}% of {} checks up", percent(p), d.checks);
            }
        }
        if d.skipped > 0 {
            let _ = write!(out, ", {} slots not checked", d.skipped);
        }
        out.push_str(r#""></li>"#);
    }
    out.push_str(r#"</ol><div class="bars-scale" aria-hidden="true"><span>"#);
    let _ = write!(out, "{DAYS} days ago</span><span>today</span></div>");
    out
}

/// `1 h 5 min`, `3 min`, `2 d 4 h`, `40 s`.
fn lasted(d: Duration) -> String {
    let s = d.num_seconds().max(0);
    match s {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min", s / 60),
        s if s < 86_400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        s => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// The `when` filter: an RFC 3339 time as `2026-12-01 14:02 UTC` (the
/// template escapes what it returns).
fn when(v: String) -> String {
    DateTime::parse_from_rfc3339(&v).map_or_else(
        |_| v.clone(),
        |t| {
            t.with_timezone(&Utc)
                .format("%Y-%m-%d %H:%M UTC")
                .to_string()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    #[test]
    fn bars_say_no_data_for_days_without_checks() {
        let day = |d: u32, checks: i64, pct: Option<f64>, skipped: i64| Day {
            day: NaiveDate::from_ymd_opt(2026, 11, d).unwrap(),
            checks,
            up: 0,
            down: 0,
            skipped,
            uptime_pct: pct,
        };
        let html = bars(&[
            day(1, 0, None, 0),
            day(2, 1440, Some(100.0), 0),
            day(3, 1000, Some(98.5), 440),
        ]);
        assert!(
            html.contains(r#"<li class="nodata" title="2026-11-01: no data">"#),
            "{html}"
        );
        assert!(html.contains(r#"<li class="u100" title="2026-11-02: 100% of 1440 checks up">"#));
        assert!(html.contains(r#"class="u95 partial" title="2026-11-03: 98.5% of 1000 checks up, 440 slots not checked""#));
    }

    #[test]
    fn the_templates_render_escaped_text() {
        let now = DateTime::parse_from_rfc3339("2026-12-01T12:00:00Z")
            .unwrap()
            .to_utc();
        let site = SiteView {
            name: "home".into(),
            display_name: "<b>Home</b>".into(),
            url: None,
            status: Status::Down,
            checked_at: Some(now),
            incident: Some(7),
            uptime_pct: Some(99.5),
            checks: 10,
            days: vec![],
        };
        let o = Overview {
            title: "T & co".into(),
            description: String::new(),
            generated_at: now,
            status: Status::Down,
            groups: vec![super::super::data::GroupView {
                name: Some("Web".into()),
                sites: vec![site.clone()],
            }],
            incidents: vec![],
            maintenance: vec![],
        };
        let t = Templates::default();
        let html = t.overview(&o, 30).unwrap();
        assert!(html.contains("<h1>T &amp; co</h1>"), "{html}");
        assert!(html.contains("&lt;b&gt;Home&lt;"), "{html}");
        assert!(
            html.contains(r#"data-site="home" data-status="down""#),
            "{html}"
        );
        assert!(html.contains("Major outage"));
        assert!(html.contains("99.5%"));
        let d = Detail {
            title: "T".into(),
            generated_at: now,
            site,
            windows: vec![],
            day: vec![],
            week: vec![],
            incidents: vec![],
        };
        let html = t.site(&d, 30).unwrap();
        assert!(html.contains(r#"<tr class="window" data-window="1 day"><th scope="row">24 hours</th><td class="pct">no data</td>"#), "{html}");
        assert!(html.contains(r#"href="../app.css""#));
    }

    #[test]
    fn durations_and_times_read_well() {
        assert_eq!(lasted(Duration::seconds(3900)), "1 h 5 min");
        assert_eq!(lasted(Duration::seconds(40)), "40 s");
        assert_eq!(lasted(Duration::hours(52)), "2 d 4 h");
        assert_eq!(
            when("2026-12-01T14:02:09.5Z".into()),
            "2026-12-01 14:02 UTC"
        );
        assert_eq!(when("not a time".into()), "not a time");
    }
}
