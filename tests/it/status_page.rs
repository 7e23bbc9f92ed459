//! The public status page in Debian's headless Chromium, on the dev stack:
//! sites that are up, degraded, down, in maintenance and in an open
//! incident go through the real pipeline; the DOM Chromium builds (after
//! the page's script ran under its CSP) shows each status, and every
//! uptime figure equals the SQL views. Badges are valid SVG with the views'
//! numbers. Screenshots at desktop and mobile widths are kept in
//! `target/tmp/status-page/`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use chrono::Utc;
use scraper::{Html, Selector};
use sitewatch::api::status::percent;
use sitewatch::daemon::{self, Role};
use tokio_util::sync::CancellationToken;

use crate::support::{free_addr, no_reloads, wait_for, TestConfig, TestDb};
use crate::target::Target;

/// Debian's chromium, installed by `scripts/install-deps`.
const CHROMIUM: &str = "/usr/bin/chromium";

/// Runs headless Chromium with `args` then `url`; no network but loopback:
/// every host name but 127.0.0.1 fails to resolve, and the background
/// services that would call Google are off.
pub(crate) fn chromium(args: &[&str], url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .output()
        .unwrap_or_else(|e| panic!("{CHROMIUM} did not start ({e}); run scripts/install-deps"));
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn dom(url: &str) -> Html {
    Html::parse_document(&chromium(&["--dump-dom"], url))
}

fn screenshot(url: &str, file: &Path, width: u32, height: u32) {
    let _ = std::fs::remove_file(file);
    chromium(
        &[
            &format!("--screenshot={}", file.display()),
            &format!("--window-size={width},{height}"),
            "--hide-scrollbars",
        ],
        url,
    );
    let png = std::fs::read(file).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{}", file.display());
    assert!(
        png.len() > 10_000,
        "{} is {} bytes: blank?",
        file.display(),
        png.len()
    );
}

fn sel(s: &str) -> Selector {
    Selector::parse(s).unwrap()
}

fn text(el: scraper::ElementRef) -> String {
    el.text().collect::<String>().trim().to_owned()
}

/// A percentage as the page writes it.
fn shown(v: Option<f64>) -> String {
    v.map_or("no data".into(), |p| format!("{}%", percent(p)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_in_chromium_shows_each_status_and_the_views_numbers() {
    let db = TestDb::create().await;
    let target = Target::start().await;
    let api = free_addr();
    let now = Utc::now();
    let at = |h: i64| (now + chrono::Duration::hours(h)).to_rfc3339();
    let cfg = TestConfig::new(
        &db,
        &format!(
            r#"
[incidents]
settle = "1s"

[site_defaults]
timeout = "900ms"

[api]
listen = "{api}"

[status_page]
enabled = true
title = "Example <status>"
refresh = "1s"
[[status_page.groups]]
name = "Web"
sites = ["ok", "slow", "maint"]
[[status_page.groups]]
name = "API"
sites = ["broken", {{ site = "outage", display_name = "Public API" }}]

[[sites]]
name = "ok"
url = "{ok}"
interval = "1s"
[[sites]]
name = "slow"
url = "{slow}"
interval = "2s"
timeout = "1500ms"
degraded_after = "100ms"
[[sites]]
name = "maint"
url = "{ok}?m"
interval = "1s"
maintenance = [{{ from = "{from}", to = "{to}" }}, {{ from = "{next_from}", to = "{next_to}" }}]
[[sites]]
name = "broken"
url = "{err}"
interval = "1s"
failure_threshold = 100
[[sites]]
name = "outage"
url = "{err}?o"
interval = "1s"
failure_threshold = 1
[[sites]]
name = "hidden"
url = "{ok}?secret-path"
interval = "1s"
"#,
            ok = target.url("/ok"),
            slow = target.url("/delay-body/300"),
            err = target.url("/500"),
            from = at(-1),
            to = at(1),
            next_from = at(3),
            next_to = at(4),
        ),
    );
    let client = db.client().await;
    // History the pipeline cannot make in a test: 12 days ago all up, 5
    // days ago 10 % down, 3 days ago nothing (the monitor was off).
    let run = CancellationToken::new();
    let daemon = tokio::spawn(daemon::run(cfg.load(), &[], run.clone(), no_reloads()));
    wait_for("the schema", Duration::from_secs(60), || async {
        crate::support::count(&client, "SELECT count(*) FROM sites").await == 6
    })
    .await;
    client
        .batch_execute(
            "SELECT sitewatch_ensure_partitions(current_date - 95, current_date + 1);
             INSERT INTO rollup_hour_closed (site, bucket, checks, up, degraded, down, skipped, rt_sketch)
             SELECT 'ok', (date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC') - interval '12 days' + h * interval '1 hour',
                    60, 60, 0, 0, 0, '{}'
             FROM generate_series(0, 23) h;
             INSERT INTO rollup_hour_closed (site, bucket, checks, up, degraded, down, skipped, rt_sketch)
             SELECT 'ok', (date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC') - interval '5 days' + h * interval '1 hour',
                    60, 54, 0, 6, 2, '{}'
             FROM generate_series(0, 23) h;",
        )
        .await
        .unwrap();
    let settled = |sql: &'static str| {
        let client = &client;
        async move { crate::support::count(client, sql).await == 1 }
    };
    wait_for("each status", Duration::from_secs(90), || async {
        settled(
            "SELECT (count(*) FILTER (WHERE (site, outcome) IN
                    (('ok', 'up'), ('slow', 'degraded'), ('maint', 'up'), ('broken', 'down'), ('outage', 'down')))
                 = 5)::int::int8 FROM site_status",
        )
        .await
            && settled("SELECT count(*) FROM incidents WHERE site = 'outage' AND resolved_at IS NULL")
                .await
    })
    .await;
    run.cancel();
    daemon.await.unwrap().unwrap();

    // The API role alone now: the numbers stand still while we compare.
    let serve = CancellationToken::new();
    let api_only = tokio::spawn(daemon::run(
        cfg.load(),
        &[Role::Api],
        serve.clone(),
        no_reloads(),
    ));
    let base = format!("http://{api}");
    let http = reqwest::Client::new();
    wait_for("the status page", Duration::from_secs(30), || async {
        http.get(format!("{base}/status"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;

    let page = dom(&format!("{base}/status"));
    let overall = page.select(&sel("#overall")).next().expect("the banner");
    assert_eq!(overall.value().attr("data-status"), Some("down"));
    assert_eq!(text(overall), "Partial outage");
    assert_eq!(
        text(page.select(&sel("h1")).next().unwrap()),
        "Example <status>",
        "the title is text, not markup"
    );
    let expect = [
        ("ok", "up", "Up"),
        ("slow", "degraded", "Degraded"),
        ("maint", "maintenance", "In maintenance"),
        ("broken", "down", "Down"),
        ("outage", "down", "Down"),
    ];
    let rows: Vec<scraper::ElementRef> = page.select(&sel("li.site")).collect();
    let order: Vec<&str> = rows
        .iter()
        .filter_map(|r| r.value().attr("data-site"))
        .collect();
    assert_eq!(
        order,
        ["ok", "slow", "maint", "broken", "outage"],
        "listed sites only, in order"
    );
    for ((name, status, label), row) in expect.iter().zip(&rows) {
        assert_eq!(row.value().attr("data-status"), Some(*status), "{name}");
        assert_eq!(
            text(row.select(&sel(".status")).next().unwrap()),
            *label,
            "{name}"
        );
        let flagged = row.select(&sel(".flag")).next().is_some();
        assert_eq!(flagged, *name == "outage", "{name}: incident flag");
        // The figure beside the bars is the view's, over the same 90 days.
        let pct: Option<f64> = client
            .query_one(
                "SELECT round(100.0 * sum(up) / NULLIF(sum(checks), 0), 3)::float8
                 FROM site_uptime_daily WHERE site = $1 AND day > (now() AT TIME ZONE 'UTC')::date - 90",
                &[name],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            text(row.select(&sel(".uptime")).next().unwrap()),
            shown(pct),
            "{name}"
        );
        // Each bar is the view's day, and a day without a row is "no data".
        let bars: Vec<scraper::ElementRef> = row.select(&sel("ol.bars li")).collect();
        assert_eq!(bars.len(), 90, "{name}");
        let days = client
            .query(
                "SELECT day::text, uptime_pct::float8, checks::int8 FROM site_uptime_daily
                 WHERE site = $1 AND day > (now() AT TIME ZONE 'UTC')::date - 90",
                &[name],
            )
            .await
            .unwrap();
        for bar in &bars {
            let title = bar.value().attr("title").unwrap();
            let (day, said) = title.split_once(": ").unwrap();
            match days.iter().find(|r| r.get::<_, &str>(0) == day) {
                Some(r) => {
                    let want = format!("{} of {} checks up", shown(r.get(1)), r.get::<_, i64>(2));
                    assert!(said.starts_with(&want), "{name} {day}: {said} vs {want}");
                }
                None => {
                    assert_eq!(said, "no data", "{name} {day}");
                    assert_eq!(bar.value().attr("class"), Some("nodata"));
                }
            }
        }
    }
    let ok_bars: Vec<&str> = rows[0]
        .select(&sel("ol.bars li"))
        .filter_map(|b| b.value().attr("title"))
        .collect();
    assert!(
        ok_bars[77].ends_with("100% of 1440 checks up"),
        "{}",
        ok_bars[77]
    );
    assert!(
        ok_bars[84].contains("90% of 1440 checks up, 48 slots not checked"),
        "{}",
        ok_bars[84]
    );
    assert!(ok_bars[86].ends_with("no data"), "{}", ok_bars[86]);

    let open: Vec<String> = page.select(&sel("#open-incidents li")).map(text).collect();
    assert_eq!(open.len(), 1, "{open:?}");
    assert!(
        open[0].starts_with("Public API: unexpected status code"),
        "{open:?}"
    );
    let maintenance: Vec<String> = page.select(&sel("#maintenance li")).map(text).collect();
    assert_eq!(maintenance.len(), 1, "{maintenance:?}");
    assert!(maintenance[0].ends_with(": maint"), "{maintenance:?}");
    let html = page.html();
    for secret in [
        "site-hidden",
        "\"hidden\"",
        "secret-path",
        "/500",
        "/delay-body",
        "internal error",
    ] {
        assert!(!html.contains(secret), "the page shows {secret:?}");
    }
    // The script ran (under the CSP): times are localised, with UTC kept
    // in the tooltip.
    let t = page.select(&sel("footer time")).next().unwrap();
    assert!(
        t.value().attr("title").is_some_and(|t| t.ends_with("UTC")),
        "app.js did not run"
    );

    // One site's page: each window is its view's row.
    let site = dom(&format!("{base}/status/sites/ok"));
    let windows = client
        .query(
            "SELECT \"window\", uptime_pct::float8 FROM site_uptime
             WHERE site = 'ok' AND \"window\" IN ('1 day', '7 days')
             UNION ALL SELECT \"window\", uptime_pct::float8 FROM site_uptime_long
             WHERE site = 'ok' AND \"window\" IN ('30 days', '365 days')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(windows.len(), 4);
    for w in &windows {
        let key: &str = w.get(0);
        let row = site
            .select(&sel(&format!("tr.window[data-window='{key}'] td.pct")))
            .next()
            .unwrap_or_else(|| panic!("no row for {key}"));
        assert_eq!(text(row), shown(w.get(1)), "{key}");
    }
    // The 90-day row is the bars' figure, the overview's.
    let bars_row = site
        .select(&sel("tr.window[data-window='90 days shown'] td.pct"))
        .next()
        .unwrap();
    assert_eq!(
        text(bars_row),
        text(rows[0].select(&sel(".uptime")).next().unwrap())
    );
    for chart in ["#chart-24h", "#chart-7d"] {
        let lines = site.select(&sel(&format!("{chart} polyline.p50"))).count();
        assert!(lines >= 1, "{chart}: no p50 line");
        assert!(site
            .select(&sel(&format!("{chart} polyline.p95")))
            .next()
            .is_some());
    }
    assert_eq!(
        site.select(&sel(".tabs button")).count(),
        2,
        "the charts' tabs"
    );

    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("status-page");
    std::fs::create_dir_all(&dir).unwrap();
    screenshot(
        &format!("{base}/status"),
        &dir.join("status-desktop.png"),
        1280,
        1400,
    );
    screenshot(
        &format!("{base}/status"),
        &dir.join("status-mobile.png"),
        390,
        1600,
    );
    screenshot(
        &format!("{base}/status/sites/ok"),
        &dir.join("site-desktop.png"),
        1280,
        1400,
    );
    screenshot(
        &format!("{base}/status/sites/ok"),
        &dir.join("site-mobile.png"),
        390,
        1800,
    );

    super::status_badges::check(&base, &client).await;
    serve.cancel();
    api_only.await.unwrap().unwrap();
}

/// A Postgres that accepts connections and never answers (a hung server, a
/// black-holed proxy) costs a reader a bounded wait and a 503, not a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_that_never_answers_gets_a_503_in_bounded_time() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            held.push(c);
        }
    });
    let cfg = TestConfig::with_endpoints(
        &format!("postgres://sitewatch@127.0.0.1:{port}/none"),
        &crate::support::kafka_brokers(),
        "[status_page]\nenabled = true\nsites = [\"a\"]\n[[sites]]\nname = \"a\"\nurl = \"http://127.0.0.1:9/\"\n",
    );
    let mut settings = cfg.load();
    let pool = sitewatch::store::pool(&settings).unwrap();
    let sites: sitewatch::config::SiteList = std::sync::Arc::new(
        std::mem::take(&mut settings.sites)
            .into_iter()
            .map(std::sync::Arc::new)
            .collect(),
    );
    let (_tx, rx) = tokio::sync::watch::channel(sites);
    let (_page_tx, page) =
        tokio::sync::watch::channel(std::sync::Arc::new(settings.status_page.clone()));
    let app = sitewatch::api::status::StatusPages::new(page, pool, rx).router();
    let addr = crate::incidents::serve(app).await;
    // The render gives up after 20 s; a hang would run into the client's
    // 60 s and fail the `expect`.
    let answer = reqwest::Client::new()
        .get(format!("http://{addr}/badges/a/status.svg"))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("an answer, not a hang");
    assert_eq!(answer.status(), 503);
    assert_eq!(answer.headers()["retry-after"], "10");
    assert_eq!(
        answer.headers()["cross-origin-resource-policy"],
        "cross-origin"
    );
}

/// Issue 40: after a restart, the first `/status` shows the data in
/// Postgres, not a render made at start before this run's first results
/// (every site "Unknown", served as fresh for a refresh and stale after).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_status_after_a_restart_shows_the_data() {
    let target = Target::start().await;
    let db = TestDb::create().await;
    let api = free_addr();
    let cfg = TestConfig::new(
        &db,
        &format!(
            "[api]\nlisten = \"{api}\"\n[status_page]\nenabled = true\nrefresh = \"30s\"\n\
             sites = [\"a\"]\n[[sites]]\nname = \"a\"\nurl = \"{}\"\ninterval = \"1s\"\n\
             timeout = \"900ms\"\n",
            target.url("/ok?restart")
        ),
    );
    // The last run's results ended ten minutes ago: stale by now.
    let client = db.client().await;
    sitewatch::store::migrate(&mut db.client().await)
        .await
        .unwrap();
    let old = Utc::now() - chrono::Duration::minutes(10);
    client
        .execute(
            "INSERT INTO check_results (check_id, site, url, origin, scheduled_at, outcome)
             VALUES ($1, 'a', 'https://a/', 'scheduled', $2, 'up')",
            &[
                &sitewatch::model::CheckIds::TIME_LEADING.scheduled("a", old),
                &old,
            ],
        )
        .await
        .unwrap();
    let started = Utc::now();
    let stop = CancellationToken::new();
    let run = tokio::spawn(daemon::run(cfg.load(), &[], stop.clone(), no_reloads()));
    wait_for("a result of this run", Duration::from_secs(60), || async {
        client
            .query_one(
                "SELECT count(*) FROM check_results WHERE site = 'a' AND scheduled_at > $1",
                &[&started],
            )
            .await
            .is_ok_and(|r| r.get::<_, i64>(0) > 0)
    })
    .await;
    let page = reqwest::get(format!("http://{api}/status"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    stop.cancel();
    run.await.unwrap().unwrap();
    assert!(
        page.contains("Up") && !page.contains("Unknown"),
        "the first page after the restart: {page}"
    );
}
