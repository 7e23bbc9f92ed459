//! The pairing promise, as a property of generated histories: every
//! opening an incident sends to a channel gets exactly one `resolved` on
//! that channel once the incident ends, nothing but a channel told of the
//! opening hears of it, and nothing but its end follows `flapping`,
//! whatever happens while it is open: maintenance windows that start or
//! end, reloads of the site's channels, thresholds and damping, the site
//! disabled, removed and back, the evaluator restarting, and a second
//! evaluator (another instance, with its own `[incidents]`) taking passes.
//! The real evaluators run against the real Postgres; each history is a
//! random sequence of those events, and a failure shrinks to a short one.
//! `SITEWATCH_MODEL_CASES` sets how many (CI: 24; `make model-alerts`:
//! 300).

use std::sync::Arc;

use proptest::prelude::*;
use sitewatch::config::{Settings, SiteList};
use sitewatch::incidents::Evaluator;
use sitewatch::store;

use crate::support::{TestConfig, TestDb};

const CHANNELS: [&str; 3] = ["a", "b", "c"];

#[derive(Debug, Clone)]
enum Step {
    /// A check result of the site.
    Result(bool),
    /// Several results evaluated in one pass (a backlog, or a slow pass).
    Burst(Vec<bool>),
    /// A maintenance window starts (true) or ends (false) now.
    Maintenance(bool),
    /// The site's `alert_channels` become this subset (by reload).
    Route(Vec<usize>),
    /// The site's failure and success thresholds (by reload).
    Thresholds(u16, u16),
    /// The site is enabled, disabled or removed (by reload, the `sites`
    /// table following).
    Presence(Presence),
    /// A reload sets `incidents.flap_changes` (0: no damping).
    Damping(u32),
    /// The second evaluator's `flap_changes` and `flap_window` (ms).
    OtherDamping(u32, u64),
    /// The next pass is the second evaluator's.
    OtherPass,
    /// The evaluator is started afresh (a restart).
    Restart,
    /// Nothing happens for a whole `flap_window` (the longest, 1.5 s): a
    /// flapping site settles.
    Calm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presence {
    Enabled,
    Disabled,
    Removed,
}

fn any_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        10 => any::<bool>().prop_map(Step::Result),
        2 => proptest::collection::vec(any::<bool>(), 2..8).prop_map(Step::Burst),
        2 => any::<bool>().prop_map(Step::Maintenance),
        1 => proptest::sample::subsequence(vec![0usize, 1, 2], 0..=3).prop_map(Step::Route),
        1 => (1u16..=3, 1u16..=3).prop_map(|(f, o)| Step::Thresholds(f, o)),
        1 => proptest::sample::select(vec![Presence::Enabled, Presence::Disabled, Presence::Removed])
            .prop_map(Step::Presence),
        1 => proptest::sample::select(vec![0u32, 3, 4]).prop_map(Step::Damping),
        1 => (proptest::sample::select(vec![0u32, 3, 4]), proptest::sample::select(vec![1000u64, 1500]))
            .prop_map(|(d, w)| Step::OtherDamping(d, w)),
        2 => Just(Step::OtherPass),
        1 => Just(Step::Restart),
        2 => Just(Step::Calm),
    ]
}

/// The config of one history: three webhook channels (never delivered
/// here: the outbox is what is judged) and its site.
#[derive(Debug, Clone)]
struct Conf {
    site: String,
    route: Vec<usize>,
    maintenance: bool,
    thresholds: (u16, u16),
    presence: Presence,
    damping: u32,
    flap_window_ms: u64,
}

impl Conf {
    fn text(&self) -> String {
        let mut text = format!(
            "[incidents]\nsettle = \"1ms\"\nflap_window = \"{}ms\"\nflap_changes = {}\n\
             [alerts]\nremind_every = \"1ms\"\n",
            self.flap_window_ms, self.damping
        );
        for c in CHANNELS {
            text.push_str(&format!(
                "[[alerts.channels]]\nname = \"{c}\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/{c}\"\n"
            ));
        }
        // Another site keeps the config valid when this one is removed.
        text.push_str("[[sites]]\nname = \"bystander\"\nurl = \"https://bystander.example/\"\n");
        if self.presence == Presence::Removed {
            return text;
        }
        let route: Vec<String> = (self.route.iter())
            .map(|&i| format!("\"{}\"", CHANNELS[i]))
            .collect();
        text.push_str(&format!(
            "[[sites]]\nname = \"{s}\"\nurl = \"https://{s}.example/\"\nfailure_threshold = {}\n\
             success_threshold = {}\nenabled = {}\nalert_channels = [{}]\n",
            self.thresholds.0,
            self.thresholds.1,
            self.presence == Presence::Enabled,
            route.join(", "),
            s = self.site,
        ));
        if self.maintenance {
            let now = chrono::Utc::now();
            text.push_str(&format!(
                "maintenance = [{{ from = \"{}\", to = \"{}\" }}]\n",
                (now - chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M:%SZ"),
                (now + chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M:%SZ")
            ));
        }
        text
    }
}

/// An evaluator and the senders of its settings and sites: a reload sends
/// on them, as the daemon does; a restart builds all three anew.
struct Live {
    evaluator: Evaluator,
    settings: tokio::sync::watch::Sender<Arc<Settings>>,
    sites: tokio::sync::watch::Sender<SiteList>,
}

impl Live {
    fn start(cfg: &TestConfig) -> Live {
        let (settings, sites) = cfg.load_shared();
        let pool = store::pool(&settings).expect("pool");
        let (settings_tx, settings_rx) = tokio::sync::watch::channel(settings);
        let (sites_tx, sites_rx) = tokio::sync::watch::channel(sites);
        let evaluator = Evaluator::new(
            settings_rx,
            pool,
            sites_rx,
            sitewatch::liveness::Beat::detached("evaluator"),
        );
        Live {
            evaluator,
            settings: settings_tx,
            sites: sites_tx,
        }
    }

    fn reload(&self, cfg: &TestConfig, conf: &Conf) {
        cfg.set_sites(&conf.text());
        let (settings, sites) = cfg.load_shared();
        self.settings.send_replace(settings);
        self.sites.send_replace(sites);
    }
}

/// Stores a scheduled result of `site` now; returns its slot.
async fn put(
    client: &tokio_postgres::Client,
    site: &str,
    up: bool,
) -> Result<chrono::DateTime<chrono::Utc>, String> {
    // A scheduled check's id leads with its slot's time, as the evaluator
    // reads them (migration V17).
    let slot = chrono::Utc::now();
    let id = sitewatch::model::CheckIds::TIME_LEADING.scheduled(site, slot);
    client
        .execute(
            "INSERT INTO check_results (check_id, site, url, origin, scheduled_at, outcome)
             VALUES ($1, $2, 'https://x/', 'scheduled', $3, $4)",
            &[&id, &site, &slot, &if up { "up" } else { "down" }],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(slot)
}

/// One history against `db`, with its own site; `Err` names the broken
/// invariant and the steps so far.
async fn run(db: &TestDb, site: &str, steps: &[Step]) -> Result<(), String> {
    let client = db.client().await;
    let mut conf = Conf {
        site: site.to_owned(),
        route: vec![0, 1],
        maintenance: false,
        thresholds: (1, 1),
        presence: Presence::Enabled,
        damping: 3,
        flap_window_ms: 1000,
    };
    // The second evaluator shares the sites, with its own `[incidents]`.
    let mut other = conf.clone();
    let (cfg, cfg2) = (
        TestConfig::new(db, &conf.text()),
        TestConfig::new(db, &other.text()),
    );
    let sync = |cfg: &TestConfig| {
        let settings = cfg.load();
        async move {
            let mut c = store::connect(&settings).await.map_err(|e| e.to_string())?;
            store::sync_sites(&mut c, &settings.sites)
                .await
                .map_err(|e| e.to_string())
        }
    };
    sync(&cfg).await?;
    let (mut first, second) = (Live::start(&cfg), Live::start(&cfg2));
    // The first pass on a store only sets the watermark.
    first.evaluator.pass().await.map_err(|e| e.to_string())?;
    let (mut last_slot, mut last_up) = (None, true);
    // Since when the site is disabled or removed: no incident may open on
    // its results from then on (the last ones once paged its default
    // channels).
    let mut off_since = None;
    for (n, step) in steps.iter().enumerate() {
        let mut by_second = false;
        match step {
            Step::Result(up) => {
                last_up = *up;
                last_slot = Some(put(&client, site, *up).await?);
            }
            Step::Burst(ups) => {
                for up in ups {
                    last_up = *up;
                    last_slot = Some(put(&client, site, *up).await?);
                }
            }
            Step::Maintenance(on) => conf.maintenance = *on,
            Step::Route(r) => conf.route = r.clone(),
            Step::Thresholds(f, o) => conf.thresholds = (*f, *o),
            Step::Presence(p) => {
                conf.presence = *p;
                off_since = match p {
                    Presence::Enabled => None,
                    _ => off_since.or(Some(chrono::Utc::now())),
                };
            }
            Step::Damping(d) => conf.damping = *d,
            Step::OtherDamping(d, w) => (other.damping, other.flap_window_ms) = (*d, *w),
            Step::OtherPass => by_second = true,
            Step::Restart => first = Live::start(&cfg),
            Step::Calm => {
                if let Some(slot) = last_slot {
                    let until = slot + chrono::Duration::milliseconds(1501);
                    let left = (until - chrono::Utc::now()).to_std().unwrap_or_default();
                    tokio::time::sleep(left).await;
                }
                // The same result again after the calm: the pass's window
                // reaches past it (the evaluator reads slot time).
                last_slot = Some(put(&client, site, last_up).await?);
            }
        }
        first.reload(&cfg, &conf);
        sync(&cfg).await?;
        second.reload(
            &cfg2,
            &Conf {
                damping: other.damping,
                flap_window_ms: other.flap_window_ms,
                ..conf.clone()
            },
        );
        // A result is evaluated once `settle` (1 ms) has passed since its
        // slot: wait for exactly that, then pass.
        if let Some(slot) = last_slot {
            let left = (slot + chrono::Duration::milliseconds(2) - chrono::Utc::now())
                .to_std()
                .unwrap_or_default();
            tokio::time::sleep_until(tokio::time::Instant::now() + left).await;
        }
        let by = if by_second { &second } else { &first };
        by.evaluator.pass().await.map_err(|e| e.to_string())?;
        let quiet = conf.maintenance || conf.presence != Presence::Enabled;
        judge(&client, site, quiet, &conf.route)
            .await
            .map_err(|e| format!("after step {n} ({step:?}): {e}"))?;
        if let Some(off) = off_since {
            let late = client
                .query_one(
                    "SELECT count(*) FROM incidents WHERE site = $1 AND opened_at > $2",
                    &[&site, &off],
                )
                .await
                .map_err(|e| e.to_string())?
                .get::<_, i64>(0);
            if late > 0 {
                return Err(format!(
                    "after step {n} ({step:?}): an incident opened on a site disabled or removed"
                ));
            }
        }
    }
    Ok(())
}

/// The invariants on the outbox of `site`'s incidents. Per incident and
/// channel, in queue order, the events follow this machine, and nothing
/// else reaches a channel:
///
/// ```text
///   (none) --opened--> told --flapping--> flaps --settled--> told
///   (none) --flapping--> flaps                  (opened while flapping)
///   told --reminder--> told
///   told | flaps --resolved--> ended            (nothing after it)
/// ```
///
/// So `resolved` comes once, only where an opening went, nothing but
/// `settled` or `resolved` follows `flapping` (the damping), and a resolved
/// incident has told every channel it opened on. An open incident of an
/// enabled site outside maintenance (not `quiet`), with a route, has opened
/// somewhere.
async fn judge(
    client: &tokio_postgres::Client,
    site: &str,
    quiet: bool,
    route: &[usize],
) -> Result<(), String> {
    let rows = client
        .query(
            "SELECT i.id, i.resolved_at IS NOT NULL, o.channel, o.event
             FROM incidents i LEFT JOIN alert_outbox o ON o.incident_id = i.id
             WHERE i.site = $1 ORDER BY i.id, o.channel, o.id",
            &[&site],
        )
        .await
        .map_err(|e| e.to_string())?;
    use std::collections::BTreeMap;
    let mut seqs: BTreeMap<(i64, String), Vec<String>> = BTreeMap::new();
    let mut incidents: BTreeMap<i64, (bool, bool)> = BTreeMap::new();
    for r in &rows {
        let (id, resolved): (i64, bool) = (r.get(0), r.get(1));
        let e = incidents.entry(id).or_insert((resolved, false));
        if let (Some(channel), Some(event)) =
            (r.get::<_, Option<String>>(2), r.get::<_, Option<String>>(3))
        {
            e.1 = true;
            seqs.entry((id, channel)).or_default().push(event);
        }
    }
    for ((id, channel), events) in &seqs {
        let mut state = "none";
        for e in events {
            state = match (state, e.as_str()) {
                ("none", "opened") | ("told", "reminder") | ("flaps", "settled") => "told",
                ("none" | "told", "flapping") => "flaps",
                ("told" | "flaps", "resolved") => "ended",
                _ => {
                    return Err(format!(
                        "incident {id} on {channel}: {e} after {state} in {events:?}"
                    ))
                }
            };
        }
        let (resolved, _) = incidents[id];
        if resolved && state != "ended" {
            return Err(format!(
                "incident {id} resolved, but {channel} was not told: {events:?}"
            ));
        }
    }
    // A channel reads a site's news in the order it happened: nothing of an
    // incident after anything of a later one.
    let mut newest: BTreeMap<String, i64> = BTreeMap::new();
    for r in client
        .query(
            "SELECT o.channel, o.incident_id, o.event FROM alert_outbox o
             JOIN incidents i ON i.id = o.incident_id WHERE i.site = $1 ORDER BY o.id",
            &[&site],
        )
        .await
        .map_err(|e| e.to_string())?
    {
        let (channel, id, event): (String, i64, String) = (r.get(0), r.get(1), r.get(2));
        let n = newest.entry(channel.clone()).or_insert(id);
        if id < *n {
            return Err(format!(
                "{channel} hears {event} of incident {id} after news of incident {n}"
            ));
        }
        *n = id;
    }
    // An open incident, not quiet, with somewhere to go has said so.
    for (id, (resolved, opened)) in &incidents {
        if !resolved && !quiet && !route.is_empty() && !opened {
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
    // One written history first, so that every kind of event is judged
    // whatever the generator draws: opened and resolved, then down again
    // (flapping), held down for a window (settled), and up (resolved).
    use Step::{Calm, Result as R};
    let written = [R(false), R(true), R(false), Calm, R(true)];
    rt.block_on(run(&db, "written", &written))
        .unwrap_or_else(|e| panic!("the written history: {e}"));
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
    // The histories reached what they are meant to judge: flapping, its
    // end both ways, and incidents resolved.
    let events: std::collections::BTreeMap<String, i64> = rt.block_on(async {
        db.client()
            .await
            .query("SELECT event, count(*) FROM alert_outbox GROUP BY 1", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    });
    println!("events queued: {events:?}");
    for e in ["opened", "resolved", "flapping", "settled"] {
        assert!(
            events.get(e).copied().unwrap_or(0) > 0,
            "no {e} in {events:?}"
        );
    }
}

/// A channel removed while an incident is open gets no reminders (they
/// piled up, one a pass, and would all have gone at once had it come
/// back); its `resolved` is still queued, for a channel of that name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_channel_collects_no_reminders() {
    let db = TestDb::create().await;
    store::migrate(&mut db.client().await).await.unwrap();
    let client = db.client().await;
    let text = |channels: &[&str]| {
        let mut t = "[incidents]\nsettle = \"1ms\"\n[alerts]\nremind_every = \"1ms\"\n".to_owned();
        for c in channels {
            t.push_str(&format!(
                "[[alerts.channels]]\nname = \"{c}\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/{c}\"\n"
            ));
        }
        t + "[[sites]]\nname = \"s\"\nurl = \"https://s.example/\"\nfailure_threshold = 1\n"
    };
    let cfg = TestConfig::new(&db, &text(&["a", "b"]));
    let live = Live::start(&cfg);
    // The first pass sets the watermark.
    live.evaluator.pass().await.unwrap();
    let settle = |slot: chrono::DateTime<chrono::Utc>| {
        let left = (slot + chrono::Duration::milliseconds(2) - chrono::Utc::now())
            .to_std()
            .unwrap_or_default();
        tokio::time::sleep(left)
    };
    let mut slot = put(&client, "s", false).await.unwrap();
    settle(slot).await;
    live.evaluator.pass().await.unwrap();
    assert_eq!(
        crate::support::count(
            &client,
            "SELECT count(*) FROM alert_outbox WHERE event = 'opened'"
        )
        .await,
        2,
        "opened on a and b"
    );
    let before =
        crate::support::count(&client, "SELECT coalesce(max(id), 0) FROM alert_outbox").await;
    cfg.set_sites(&text(&["b"]));
    let (settings, sites) = cfg.load_shared();
    live.settings.send_replace(settings);
    live.sites.send_replace(sites);
    for _ in 0..5 {
        slot = put(&client, "s", false).await.unwrap();
        settle(slot).await;
        live.evaluator.pass().await.unwrap();
    }
    slot = put(&client, "s", true).await.unwrap();
    settle(slot).await;
    live.evaluator.pass().await.unwrap();
    let after = |channel: &str, event: &str| {
        let sql = format!(
            "SELECT count(*) FROM alert_outbox
             WHERE channel = '{channel}' AND event = '{event}' AND id > {before}"
        );
        let client = &client;
        async move { crate::support::count(client, &sql).await }
    };
    assert_eq!(after("a", "reminder").await, 0, "reminders for removed a");
    assert!(
        after("b", "reminder").await > 0,
        "b, still configured, is reminded"
    );
    assert_eq!(after("a", "resolved").await, 1, "a's end is queued");
    assert_eq!(after("b", "resolved").await, 1);
}

/// A site disabled in the middle of a failure streak starts afresh when it
/// is enabled again (it once opened an incident on its first failure back,
/// dated from before it left); and a reload that raises `settle` still
/// closes the incident of a site disabled with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_back_from_disabled_starts_afresh() {
    let db = TestDb::create().await;
    store::migrate(&mut db.client().await).await.unwrap();
    let client = db.client().await;
    let mut conf = Conf {
        site: "back".into(),
        route: vec![0],
        maintenance: false,
        thresholds: (3, 1),
        presence: Presence::Enabled,
        damping: 0,
        flap_window_ms: 1000,
    };
    let cfg = TestConfig::new(&db, &conf.text());
    let sync = |cfg: &TestConfig| {
        let settings = cfg.load();
        async move {
            let mut c = store::connect(&settings).await.unwrap();
            store::sync_sites(&mut c, &settings.sites).await.unwrap();
        }
    };
    sync(&cfg).await;
    let live = Live::start(&cfg);
    live.evaluator.pass().await.unwrap();
    let step = |up: bool| {
        let (client, live) = (&client, &live);
        async move {
            let slot = put(client, "back", up).await.unwrap();
            let left = (slot + chrono::Duration::milliseconds(2) - chrono::Utc::now())
                .to_std()
                .unwrap_or_default();
            tokio::time::sleep(left).await;
            live.evaluator.pass().await.unwrap();
        }
    };
    step(false).await;
    step(false).await;
    for presence in [Presence::Disabled, Presence::Enabled] {
        conf.presence = presence;
        live.reload(&cfg, &conf);
        sync(&cfg).await;
        live.evaluator.pass().await.unwrap();
    }
    step(false).await;
    let incidents = |sql: &'static str| crate::support::count(&client, sql);
    assert_eq!(
        incidents("SELECT count(*) FROM incidents").await,
        0,
        "one failure back is one of three"
    );
    step(false).await;
    step(false).await;
    assert_eq!(incidents("SELECT count(*) FROM incidents").await, 1);

    // `settle` raised to 10 minutes and the site disabled, in one reload.
    conf.presence = Presence::Disabled;
    cfg.set_sites(&conf.text().replace("settle = \"1ms\"", "settle = \"10m\""));
    let (settings, sites) = cfg.load_shared();
    live.settings.send_replace(settings);
    live.sites.send_replace(sites);
    sync(&cfg).await;
    live.evaluator.pass().await.unwrap();
    assert_eq!(
        incidents("SELECT count(*) FROM incidents WHERE resolution = 'site disabled'").await,
        1
    );
}
