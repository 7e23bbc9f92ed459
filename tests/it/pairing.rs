//! The pairing promise, as a property of generated histories: every
//! `opened` an incident sends to a channel gets exactly one `resolved` on
//! that channel once the incident ends, and nothing but an `opened` channel
//! hears of it, whatever happens while it is open: maintenance windows
//! that start or end, reloads that change the site's channels, the
//! evaluator restarting. The real evaluator runs against the real Postgres;
//! each history is a random sequence of those events, and a failure
//! shrinks to a short one. `SITEWATCH_MODEL_CASES` sets how many (CI: 24;
//! `make model`: more).

use std::sync::Arc;

use proptest::prelude::*;
use sitewatch::config::SiteList;
use sitewatch::incidents::Evaluator;
use sitewatch::store;

use crate::support::{TestConfig, TestDb};

const CHANNELS: [&str; 3] = ["a", "b", "c"];

#[derive(Debug, Clone)]
enum Step {
    /// A check result of the site.
    Result(bool),
    /// A maintenance window starts (true) or ends (false) now.
    Maintenance(bool),
    /// The site's `alert_channels` become this subset (by reload).
    Route(Vec<usize>),
    /// The evaluator is started afresh (a restart, or another instance).
    Restart,
}

fn any_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => any::<bool>().prop_map(Step::Result),
        2 => any::<bool>().prop_map(Step::Maintenance),
        1 => proptest::sample::subsequence(vec![0usize, 1, 2], 0..=3).prop_map(Step::Route),
        1 => Just(Step::Restart),
    ]
}

/// The config of one history: three webhook channels (never delivered
/// here: the outbox is what is judged), one site.
fn config(site: &str, route: &[usize], maintenance: bool) -> String {
    let mut text =
        String::from("[incidents]\nsettle = \"1ms\"\n[alerts]\nremind_every = \"1ms\"\n");
    for c in CHANNELS {
        text.push_str(&format!(
            "[[alerts.channels]]\nname = \"{c}\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/{c}\"\n"
        ));
    }
    let route: Vec<String> = route
        .iter()
        .map(|&i| format!("\"{}\"", CHANNELS[i]))
        .collect();
    text.push_str(&format!(
        "[[sites]]\nname = \"{site}\"\nurl = \"https://{site}.example/\"\nfailure_threshold = 1\n\
         success_threshold = 1\nalert_channels = [{}]\n",
        route.join(", ")
    ));
    if maintenance {
        let now = chrono::Utc::now();
        let (from, to) = (
            now - chrono::Duration::hours(1),
            now + chrono::Duration::hours(1),
        );
        text.push_str(&format!(
            "maintenance = [{{ from = \"{}\", to = \"{}\" }}]\n",
            from.format("%Y-%m-%dT%H:%M:%SZ"),
            to.format("%Y-%m-%dT%H:%M:%SZ")
        ));
    }
    text
}

type Live = tokio::sync::watch::Sender<Arc<sitewatch::config::Settings>>;
type Sites = tokio::sync::watch::Sender<SiteList>;

/// The settings (sites taken out) and the sites, as the daemon shares them.
fn loaded(cfg: &TestConfig) -> (Arc<sitewatch::config::Settings>, SiteList) {
    let mut settings = cfg.load();
    let sites: SiteList = Arc::new(
        std::mem::take(&mut settings.sites)
            .into_iter()
            .map(Arc::new)
            .collect(),
    );
    (Arc::new(settings), sites)
}

/// One history against `db`, with its own site; panics naming the broken
/// invariant.
async fn run(db: &TestDb, site: &str, steps: &[Step]) -> Result<(), String> {
    let client = db.client().await;
    let (mut route, mut maintenance) = (vec![0usize, 1], false);
    let cfg = TestConfig::new(db, &config(site, &route, maintenance));
    // The evaluator and the senders of its settings and sites: a reload
    // sends on them, as the daemon does; a restart builds all three anew.
    let start = |cfg: &TestConfig| {
        let (settings, sites) = loaded(cfg);
        let pool = store::pool(&settings).expect("pool");
        let (settings_tx, settings_rx) = tokio::sync::watch::channel(settings);
        let (sites_tx, sites_rx) = tokio::sync::watch::channel(sites);
        let evaluator = Evaluator::new(
            settings_rx,
            pool,
            sites_rx,
            sitewatch::liveness::Beat::detached("evaluator"),
        );
        (evaluator, settings_tx, sites_tx)
    };
    let reload = |cfg: &TestConfig, live: &(Evaluator, Live, Sites)| {
        let (settings, sites) = loaded(cfg);
        live.1.send_replace(settings);
        live.2.send_replace(sites);
    };
    let mut evaluator = start(&cfg);
    let mut last_slot = None;
    for (n, step) in steps.iter().enumerate() {
        match step {
            Step::Result(up) => {
                // A scheduled check's id leads with its slot's time, as the
                // evaluator reads them (migration V17).
                let slot = chrono::Utc::now();
                last_slot = Some(slot);
                let id = sitewatch::model::CheckIds::TIME_LEADING.scheduled(site, slot);
                client
                    .execute(
                        "INSERT INTO check_results (check_id, site, url, origin, scheduled_at, outcome)
                         VALUES ($1, $2, 'https://x/', 'scheduled', $3, $4)",
                        &[&id, &site, &slot, &if *up { "up" } else { "down" }],
                    )
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Step::Maintenance(on) => {
                maintenance = *on;
                cfg.set_sites(&config(site, &route, maintenance));
                reload(&cfg, &evaluator);
            }
            Step::Route(r) => {
                route = r.clone();
                cfg.set_sites(&config(site, &route, maintenance));
                reload(&cfg, &evaluator);
            }
            Step::Restart => evaluator = start(&cfg),
        }
        // A result is evaluated once `settle` (1 ms) has passed since its
        // slot: wait for exactly that, then pass.
        if let Some(slot) = last_slot {
            let left = (slot + chrono::Duration::milliseconds(2) - chrono::Utc::now())
                .to_std()
                .unwrap_or_default();
            tokio::time::sleep_until(tokio::time::Instant::now() + left).await;
        }
        evaluator.0.pass().await.map_err(|e| e.to_string())?;
        judge(&client, site, maintenance, &route)
            .await
            .map_err(|e| format!("after step {n}: {e}"))?;
    }
    Ok(())
}

/// The invariants on the outbox of `site`'s incidents.
async fn judge(
    client: &tokio_postgres::Client,
    site: &str,
    maintenance: bool,
    route: &[usize],
) -> Result<(), String> {
    let rows = client
        .query(
            "SELECT i.id, i.resolved_at IS NOT NULL, o.channel, o.event, count(*)::int8
             FROM incidents i LEFT JOIN alert_outbox o ON o.incident_id = i.id
             WHERE i.site = $1 GROUP BY 1, 2, 3, 4 ORDER BY 1, 3, 4",
            &[&site],
        )
        .await
        .map_err(|e| e.to_string())?;
    use std::collections::BTreeMap;
    let mut per: BTreeMap<(i64, String), BTreeMap<String, i64>> = BTreeMap::new();
    let mut incidents: BTreeMap<i64, (bool, bool)> = BTreeMap::new();
    for r in &rows {
        let (id, resolved): (i64, bool) = (r.get(0), r.get(1));
        let e = incidents.entry(id).or_insert((resolved, false));
        if let (Some(channel), Some(event)) =
            (r.get::<_, Option<String>>(2), r.get::<_, Option<String>>(3))
        {
            if event == "opened" {
                e.1 = true;
            }
            per.entry((id, channel))
                .or_default()
                .insert(event, r.get(4));
        }
    }
    for ((id, channel), events) in &per {
        let n = |e: &str| events.get(e).copied().unwrap_or(0);
        let (resolved, _) = incidents[id];
        if n("opened") > 1 || n("resolved") > 1 {
            return Err(format!(
                "incident {id} on {channel}: {events:?}, more than one"
            ));
        }
        if n("opened") == 0 && (n("resolved") > 0 || n("reminder") > 0) {
            return Err(format!(
                "incident {id} on {channel}: {events:?} without an opened"
            ));
        }
        if resolved && n("opened") == 1 && n("resolved") != 1 {
            return Err(format!(
                "incident {id} resolved, but {channel} was not told: {events:?}"
            ));
        }
    }
    // An open incident outside maintenance with somewhere to go has said so.
    for (id, (resolved, opened)) in &incidents {
        if !resolved && !maintenance && !route.is_empty() && !opened {
            return Err(format!(
                "incident {id} is open outside maintenance and was never sent"
            ));
        }
    }
    Ok(())
}

#[test]
fn every_opened_gets_exactly_one_resolved_on_its_channel() {
    let cases = std::env::var("SITEWATCH_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24u32);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(async {
        let db = TestDb::create().await;
        store::migrate(&mut db.client().await).await.unwrap();
        db
    });
    let histories = std::sync::atomic::AtomicUsize::new(0);
    let longest = std::sync::atomic::AtomicUsize::new(0);
    let config = ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest::test_runner::TestRunner::new(config)
        .run(&proptest::collection::vec(any_step(), 1..40), |steps| {
            let n = histories.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            longest.fetch_max(steps.len(), std::sync::atomic::Ordering::Relaxed);
            let site = format!("h{n}");
            rt.block_on(run(&db, &site, &steps))
                .map_err(TestCaseError::fail)
        })
        .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "{} histories (up to {} steps each) kept every opened paired",
        histories.into_inner(),
        longest.into_inner()
    );
}
