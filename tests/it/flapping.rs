//! Flap damping through the real evaluator and Postgres: a site that goes
//! up and down every 10 s for 5 minutes (checked every 5 s) sends at most 3
//! notifications per channel while it flaps, shows as flapping on the
//! status page and in `incidents`, and one more notification ends it once
//! it has held one state for `flap_window`.
//!
//! The history is written with slot times in the past and the evaluator's
//! watermark set before it: the evaluator works in slot time, so minutes of
//! history take a second. `incidents.settle` (how old a slot must be to be
//! evaluated) is moved by reload to stop the evaluation at a chosen point.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use sitewatch::config::{Settings, SiteList};
use sitewatch::incidents::Evaluator;
use sitewatch::store;

use crate::support::{TestConfig, TestDb};

fn config(settle: &str) -> String {
    format!(
        "[incidents]\nsettle = \"{settle}\"\nflap_window = \"60s\"\n\
         [[alerts.channels]]\nname = \"pager\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/p\"\n\
         [[alerts.channels]]\nname = \"chat\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/c\"\n\
         [api]\nlisten = \"127.0.0.1:9\"\n\
         [status_page]\nenabled = true\nsites = [\"flappy\"]\n\
         [[sites]]\nname = \"flappy\"\nurl = \"https://flappy.example/\"\ninterval = \"5s\"\ntimeout = \"2s\"\n"
    )
}

async fn put(client: &tokio_postgres::Client, slot: DateTime<Utc>, up: bool) {
    let id = sitewatch::model::CheckIds::TIME_LEADING.scheduled("flappy", slot);
    client
        .execute(
            "INSERT INTO check_results (check_id, site, url, origin, scheduled_at, outcome)
             VALUES ($1, 'flappy', 'https://flappy.example/', 'scheduled', $2, $3)",
            &[&id, &slot, &if up { "up" } else { "down" }],
        )
        .await
        .unwrap();
}

/// An evaluator of `settings` (the sender of its settings beside it) that
/// starts from just before `t0`.
async fn evaluator_from(
    client: &tokio_postgres::Client,
    t0: DateTime<Utc>,
    settings: &std::sync::Arc<Settings>,
    sites: &SiteList,
) -> (
    Evaluator,
    tokio::sync::watch::Sender<std::sync::Arc<Settings>>,
) {
    client
        .execute(
            "INSERT INTO incident_watermark VALUES (1, $1)",
            &[&(t0 - Duration::seconds(1))],
        )
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::watch::channel(settings.clone());
    let evaluator = Evaluator::new(
        rx,
        store::pool(settings).unwrap(),
        tokio::sync::watch::channel(sites.clone()).1,
        sitewatch::liveness::Beat::detached("evaluator"),
    );
    (evaluator, tx)
}

/// Each channel's events, in queue order.
async fn sent(client: &tokio_postgres::Client) -> BTreeMap<String, Vec<String>> {
    let mut by: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in client
        .query("SELECT channel, event FROM alert_outbox ORDER BY id", &[])
        .await
        .unwrap()
    {
        by.entry(r.get(0)).or_default().push(r.get(1));
    }
    by
}

/// The site's status on `/status.json`, rendered now.
async fn status(settings: &Settings, sites: SiteList) -> String {
    let addr = crate::status_badges::serve_pages(settings, sites).await;
    let body = reqwest::get(format!("http://{addr}/status.json"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["groups"][0]["sites"][0]["status"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_flapping_for_five_minutes_sends_at_most_three_per_channel() {
    let db = TestDb::create().await;
    let client = db.client().await;
    store::migrate(&mut db.client().await).await.unwrap();
    // Flapping from 7 minutes ago for 5 minutes, then up, every 5 s.
    let now = Utc::now();
    let t0 = now - Duration::minutes(7);
    let mut slot = t0;
    while slot < now - Duration::seconds(5) {
        let flapping = slot < t0 + Duration::minutes(5);
        let up = !flapping || ((slot - t0).num_seconds() / 10) % 2 == 1;
        put(&client, slot, up).await;
        slot += Duration::seconds(5);
    }
    // Evaluated up to 110 s ago: the 5 minutes of flapping and 10 s of calm.
    let cfg = TestConfig::new(&db, &config("110s"));
    let (settings, sites) = cfg.load_shared();
    let (evaluator, tx) = evaluator_from(&client, t0, &settings, &sites).await;
    evaluator.pass().await.unwrap();
    let during = sent(&client).await;
    for channel in ["pager", "chat"] {
        assert_eq!(
            during.get(channel).map(Vec::as_slice),
            Some(&["opened", "resolved", "flapping"].map(String::from)[..]),
            "{channel} while it flaps: {during:?}"
        );
    }
    let open: (bool, bool) = {
        let r = client
            .query_one(
                "SELECT flapping_since IS NOT NULL, flapped FROM incidents
                 WHERE resolved_at IS NULL",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(open, (true, true), "the open incident is marked flapping");
    assert_eq!(status(&settings, sites.clone()).await, "flapping");

    // Evaluated to now: up for over a minute, it settled; its incident is
    // resolved and one more notification says so.
    cfg.set_sites(&config("1ms"));
    tx.send_replace(cfg.load_shared().0);
    evaluator.pass().await.unwrap();
    let after = sent(&client).await;
    for channel in ["pager", "chat"] {
        assert_eq!(
            after.get(channel).map(Vec::as_slice),
            Some(&["opened", "resolved", "flapping", "resolved"].map(String::from)[..]),
            "{channel} once it settled: {after:?}"
        );
    }
    let open = crate::support::count(
        &client,
        "SELECT count(*) FROM incidents WHERE resolved_at IS NULL",
    )
    .await;
    assert_eq!(open, 0);
    let flapped = crate::support::count(
        &client,
        "SELECT count(*) FROM incidents WHERE flapped AND flapping_since IS NULL",
    )
    .await;
    assert_eq!(flapped, 1, "the record keeps that it flapped");
    assert_eq!(status(&settings, sites).await, "up");
}

/// A backlog is evaluated as live: a flap that settled in the middle of
/// one pass's window ends there, so an outage after it is told as one,
/// not folded into the flapping incident (a pass once settled flaps only
/// at its end).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_settles_a_flap_where_it_settled() {
    let db = TestDb::create().await;
    let client = db.client().await;
    store::migrate(&mut db.client().await).await.unwrap();
    // Every 5 s, failure_threshold 2: down twice (opened), up (resolved),
    // down twice (flapping: 3 changes in 60 s), up for 80 s (settled up),
    // then down for 35 s: a new outage.
    let t0 = Utc::now() - Duration::minutes(3);
    let outcomes = [false, false, true, false, false]
        .into_iter()
        .chain(std::iter::repeat_n(true, 16))
        .chain(std::iter::repeat_n(false, 7));
    for (i, up) in outcomes.enumerate() {
        put(&client, t0 + Duration::seconds(5 * i as i64), up).await;
    }
    let cfg = TestConfig::new(&db, &config("1ms"));
    let (settings, sites) = cfg.load_shared();
    let (evaluator, _tx) = evaluator_from(&client, t0, &settings, &sites).await;
    evaluator.pass().await.unwrap();
    let told = sent(&client).await;
    assert_eq!(
        told.get("pager").map(Vec::as_slice),
        Some(&["opened", "resolved", "flapping", "resolved", "opened"].map(String::from)[..]),
        "{told:?}"
    );
}
