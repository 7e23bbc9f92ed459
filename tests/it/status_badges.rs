//! Badges, checked against a running status page (called by the status
//! page test, on its data): each is well-formed SVG in the SVG namespace
//! that Chromium renders, its Shields.io endpoint JSON carries the same
//! message, and the numbers equal the views'. Names that are not listed,
//! and kinds that do not exist, are 404.

use sitewatch::api::status::percent;

/// Every badge of the listed site `ok` and `outage`, and what is refused.
pub async fn check(base: &str, client: &tokio_postgres::Client) {
    let http = reqwest::Client::new();
    let view = |site: &'static str, window: &'static str| async move {
        let r = client
            .query_one(
                "SELECT uptime_pct::float8, p95_ms FROM site_uptime WHERE site = $1 AND \"window\" = $2
                 UNION ALL
                 SELECT uptime_pct::float8, NULL FROM site_uptime_long WHERE site = $1 AND \"window\" = $2",
                &[&site, &window],
            )
            .await
            .unwrap_or_else(|e| panic!("{site} {window}: {e}"));
        (r.get::<_, Option<f64>>(0), r.get::<_, Option<f64>>(1))
    };
    let pct = |v: Option<f64>| v.map_or("no data".into(), |p| format!("{}%", percent(p)));
    let mut expect: Vec<(String, String)> = vec![
        ("ok/status".into(), "up".into()),
        ("outage/status".into(), "down".into()),
    ];
    for (span, window) in [
        ("24h", "1 day"),
        ("7d", "7 days"),
        ("30d", "30 days"),
        ("1y", "365 days"),
    ] {
        expect.push((format!("ok/uptime/{span}"), pct(view("ok", window).await.0)));
        expect.push((
            format!("outage/uptime/{span}"),
            pct(view("outage", window).await.0),
        ));
    }
    for (span, window) in [("24h", "1 day"), ("7d", "7 days")] {
        let p95 = view("ok", window).await.1.expect("ok has response times");
        expect.push((
            format!("ok/response-time/{span}"),
            format!("{} ms", p95.round()),
        ));
    }
    assert_eq!(expect[2].1, "100%", "the up site's day: {expect:?}");
    assert_eq!(expect[3].1, "0%", "the failing site's day: {expect:?}");

    for (path, message) in &expect {
        let svg = http
            .get(format!("{base}/badges/{path}.svg"))
            .send()
            .await
            .unwrap();
        assert_eq!(svg.status(), 200, "{path}");
        assert_eq!(svg.headers()["content-type"], "image/svg+xml");
        assert_eq!(
            svg.headers()["cross-origin-resource-policy"],
            "cross-origin"
        );
        assert!(svg.headers()["cache-control"]
            .to_str()
            .unwrap()
            .starts_with("public, max-age="));
        assert_eq!(svg.headers()["x-content-type-options"], "nosniff");
        let body = svg.text().await.unwrap();
        let doc =
            roxmltree::Document::parse(&body).unwrap_or_else(|e| panic!("{path}: {e}\n{body}"));
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "svg", "{path}");
        assert_eq!(
            root.tag_name().namespace(),
            Some("http://www.w3.org/2000/svg")
        );
        let title = root
            .children()
            .find(|n| n.has_tag_name("title"))
            .and_then(|n| n.text());
        assert!(
            title.is_some_and(|t| t.ends_with(&format!(": {message}"))),
            "{path}: {title:?} should end with {message:?}"
        );
        let json = http
            .get(format!("{base}/badges/{path}.json"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let json: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(json["schemaVersion"], 1, "{path}");
        assert_eq!(json["message"], message.as_str(), "{path}");
    }
    // Chromium draws one as an SVG document.
    let shown =
        super::status_page::chromium(&["--dump-dom"], &format!("{base}/badges/ok/status.svg"));
    assert!(shown.trim_start().starts_with("<svg"), "{shown}");

    for path in [
        "hidden/status.svg",
        "nope/status.svg",
        "ok/uptime/2d.svg",
        "ok/response-time/30d.svg",
        "ok/status.png",
        "ok/status",
    ] {
        let r = http
            .get(format!("{base}/badges/{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
    for path in [
        "/status/sites/hidden",
        "/status/sites/hidden.json",
        "/status/sites/nope",
    ] {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
    // The JSON carries the page's data, and nothing of an unlisted site
    // or of the sites' URLs.
    let status = http
        .get(format!("{base}/status.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(status.headers()["access-control-allow-origin"], "*");
    let status = status.text().await.unwrap();
    for hidden in ["hidden", "\"url\"", "127.0.0.1"] {
        assert!(!status.contains(hidden), "status.json shows {hidden}");
    }
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["status"], "down");
    assert_eq!(
        status["groups"][1]["sites"][1]["display_name"],
        "Public API"
    );
    let page = http
        .get(format!("{base}/status"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    let etag = page.headers()["etag"].clone();
    let again = http
        .get(format!("{base}/status"))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    // The page re-renders every second here, so a changed page is fine;
    // an unchanged one must be a 304.
    assert!(
        matches!(again.status().as_u16(), 200 | 304),
        "{}",
        again.status()
    );
}

/// The status page of `settings` alone (no daemon), served on a local
/// port.
pub async fn serve_pages(
    settings: &sitewatch::config::Settings,
    sites: sitewatch::config::SiteList,
) -> std::net::SocketAddr {
    let pool = sitewatch::store::pool(settings).unwrap();
    let (_s, sites) = tokio::sync::watch::channel(sites);
    let (_p, page) = tokio::sync::watch::channel(std::sync::Arc::new(settings.status_page.clone()));
    let app = sitewatch::api::status::StatusPages::new(page, pool, sites).router();
    crate::incidents::serve(app).await
}

async fn json(url: String) -> serde_json::Value {
    let body = reqwest::get(url).await.unwrap().text().await.unwrap();
    serde_json::from_str(&body).unwrap()
}

/// A site page read after a badge cached the site's windows, with a check
/// in between: its windows are read with the rest, so `site.checks` and
/// the one-day window count the same checks (they once said 6 and 5).
#[tokio::test]
async fn a_site_page_after_a_badge_counts_the_same_checks_everywhere() {
    let db = crate::support::TestDb::create().await;
    let client = db.client().await;
    sitewatch::store::migrate(&mut db.client().await)
        .await
        .unwrap();
    let cfg = crate::support::TestConfig::new(
        &db,
        "[status_page]\nenabled = true\nrefresh = \"1h\"\nsites = [\"a\"]\n\
         [[sites]]\nname = \"a\"\nurl = \"http://127.0.0.1:9/\"\n",
    );
    let (settings, sites) = cfg.load_shared();
    sitewatch::store::sync_sites(&mut db.client().await, &sites)
        .await
        .unwrap();
    let put = |minutes: i64| {
        let slot = chrono::Utc::now() - chrono::Duration::minutes(minutes);
        crate::support::slot_outcomes("a", slot, "http://127.0.0.1:9/").1
    };
    let five: Vec<_> = (1..=5).map(|m| put(m + 1)).collect();
    sitewatch::store::insert_results(&client, &five)
        .await
        .unwrap();
    let addr = serve_pages(&settings, sites).await;
    let badge = json(format!("http://{addr}/badges/a/uptime/24h.json")).await;
    assert_eq!(badge["message"], "100%");

    sitewatch::store::insert_results(&client, &[put(0)])
        .await
        .unwrap();
    let page = json(format!("http://{addr}/status/sites/a.json")).await;
    let day = page["windows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["window"] == "1 day")
        .cloned()
        .unwrap();
    assert_eq!(day["checks"], 6, "{page}");
    assert_eq!(page["site"]["checks"], 6, "{page}");
}

/// With a persister writing a check at a time, every site page read counts
/// the same checks in `site.checks` and its one-day window (read apart,
/// they disagreed on every read), and a reload that gives a listed site a
/// maintenance window shows at once (an older render was served).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_page_is_one_moment_and_follows_the_site_list() {
    let db = crate::support::TestDb::create().await;
    sitewatch::store::migrate(&mut db.client().await)
        .await
        .unwrap();
    let text = |maintenance: bool| {
        let mut t = "[status_page]\nenabled = true\nrefresh = \"1h\"\nsites = [\"a\"]\n\
                     [[sites]]\nname = \"a\"\nurl = \"http://127.0.0.1:9/\"\n"
            .to_owned();
        if maintenance {
            let now = chrono::Utc::now();
            t.push_str(&format!(
                "maintenance = [{{ from = \"{}\", to = \"{}\" }}]\n",
                (now - chrono::Duration::hours(1)).to_rfc3339(),
                (now + chrono::Duration::hours(1)).to_rfc3339()
            ));
        }
        t
    };
    let cfg = crate::support::TestConfig::new(&db, &text(false));
    let (settings, sites) = cfg.load_shared();
    sitewatch::store::sync_sites(&mut db.client().await, &sites)
        .await
        .unwrap();
    let writer = {
        let client = db.client().await;
        tokio::spawn(async move {
            for i in 0.. {
                let slot = chrono::Utc::now() - chrono::Duration::milliseconds(i);
                let up = crate::support::slot_outcomes("a", slot, "http://127.0.0.1:9/").1;
                sitewatch::store::insert_results(&client, &[up])
                    .await
                    .unwrap();
            }
        })
    };
    let mut differ = Vec::new();
    for _ in 0..10 {
        // A page service of its own each time: nothing cached between reads.
        let addr = serve_pages(&settings, sites.clone()).await;
        let page = json(format!("http://{addr}/status/sites/a.json")).await;
        let day = page["windows"][0].clone();
        assert_eq!(day["window"], "1 day", "{page}");
        if day["checks"] != page["site"]["checks"] {
            differ.push((page["site"]["checks"].clone(), day["checks"].clone()));
        }
    }
    writer.abort();
    assert!(
        differ.is_empty(),
        "site.checks and the day's checks: {differ:?}"
    );

    let pool = sitewatch::store::pool(&settings).unwrap();
    let (sites_tx, sites_rx) = tokio::sync::watch::channel(sites);
    let (_p, page) = tokio::sync::watch::channel(std::sync::Arc::new(settings.status_page.clone()));
    let app = sitewatch::api::status::StatusPages::new(page, pool, sites_rx).router();
    let addr = crate::incidents::serve(app).await;
    let status = || async {
        json(format!("http://{addr}/status.json")).await["groups"][0]["sites"][0]["status"].clone()
    };
    assert_eq!(status().await, "up");
    cfg.set_sites(&text(true));
    sites_tx.send_replace(cfg.load_shared().1);
    assert_eq!(
        status().await,
        "maintenance",
        "served a render from before the reload"
    );
}
