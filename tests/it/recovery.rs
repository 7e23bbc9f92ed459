//! Every slot ends as exactly one row, also across faults: the daemon
//! SIGKILLed and restarted, the broker SIGKILLed and restarted, Postgres
//! unreachable for 20 s, and garbage on every consumed topic.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::Message;
use sitewatch::bus::{self, dlq_headers, Publisher};
use sitewatch::daemon;
use sitewatch::scheduler::Cadence;
use tokio_util::sync::CancellationToken;

use crate::faults::{Broker, Proxy};
use crate::support::{no_reloads, unique, wait_for, TestConfig, TestDb};
use crate::target::Target;

pub const INTERVAL: Duration = Duration::from_secs(1);

/// `n` sites, one check per second each, mostly up, some returning 500.
pub fn sites(target: &Target, n: usize) -> String {
    (0..n)
        .map(|i| {
            let path = if i % 5 == 0 { "/500" } else { "/ok" };
            format!(
                "[[sites]]\nname = \"s{i:03}\"\nurl = \"{}?site={i}\"\ninterval = \"1s\"\ntimeout = \"500ms\"\n",
                target.url(path)
            )
        })
        .collect()
}

/// The daemon binary as a child process.
pub fn spawn(config: &Path, roles: &[&str], log: &Path) -> Child {
    spawn_with(config, roles, log, &[])
}

/// [`spawn`] with extra environment (config overrides, systemd's variables).
pub fn spawn_with(config: &Path, roles: &[&str], log: &Path, env: &[(&str, String)]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sitewatch"));
    cmd.arg("run").arg("--config").arg(config);
    for r in roles {
        cmd.args(["--role", r]);
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd.env("RUST_LOG", "warn,sitewatch=info")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start sitewatch")
}

pub fn terminate(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "sitewatch exited with {status} after SIGTERM"
    );
}

/// Per site: the first slot with a row and `accounted_until`.
async fn accounted(
    client: &tokio_postgres::Client,
) -> HashMap<String, (DateTime<Utc>, DateTime<Utc>)> {
    client
        .query(
            "SELECT p.site, min(r.scheduled_at), p.accounted_until
             FROM schedule_progress p JOIN check_results r ON r.site = p.site
             GROUP BY p.site, p.accounted_until",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect()
}

/// Runs checkers and persisters (no scheduler) until every slot before each
/// site's `accounted_until` has its row, then asserts exactly one row per
/// slot and none elsewhere. Returns (slots, skipped).
pub async fn drain_and_check(db: &TestDb, cfg: &TestConfig, n_sites: usize) -> (i64, i64) {
    let client = db.client().await;
    let stop = CancellationToken::new();
    let drain = tokio::spawn(daemon::run(
        cfg.load(),
        &[daemon::Role::Checker, daemon::Role::Persister],
        stop.clone(),
        no_reloads(),
    ));
    let expected = |acc: &HashMap<String, (DateTime<Utc>, DateTime<Utc>)>| -> i64 {
        acc.iter()
            .map(|(site, (first, until))| {
                Cadence::new(site, INTERVAL).count_between(*first, *until).0
            })
            .sum()
    };
    wait_for(
        "a row for every accounted slot",
        Duration::from_secs(90),
        || async {
            let acc = accounted(&client).await;
            let rows: i64 = client
                .query_one(
                    "SELECT count(*) FROM check_results r JOIN schedule_progress p USING (site)
                 WHERE r.scheduled_at < p.accounted_until",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            acc.len() == n_sites && rows == expected(&acc)
        },
    )
    .await;
    stop.cancel();
    drain.await.unwrap().unwrap();

    let acc = accounted(&client).await;
    let mut slots = 0;
    for (site, (first, until)) in &acc {
        let cadence = Cadence::new(site, INTERVAL);
        let (n, grid_first) = cadence.count_between(*first, *until);
        assert_eq!(
            grid_first, *first,
            "{site}: first row is not on the slot grid"
        );
        let rows = client
            .query(
                "SELECT scheduled_at, check_id FROM check_results WHERE site = $1 ORDER BY 1",
                &[site],
            )
            .await
            .unwrap();
        assert_eq!(
            rows.len() as i64,
            n,
            "{site}: rows vs slots in [{first}, {until})"
        );
        let mut slot = *first;
        for r in &rows {
            let at: DateTime<Utc> = r.get(0);
            assert_eq!(at, slot, "{site}: slot {slot} missing or duplicated");
            let id: uuid::Uuid = r.get(1);
            assert_eq!(id, sitewatch::model::scheduled_check_id(site, at));
            slot = cadence.next(slot);
        }
        slots += n;
    }
    let skipped: i64 = client
        .query_one(
            "SELECT count(*) FROM check_results WHERE outcome = 'skipped'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    (slots, skipped)
}

/// Waits until at least `n` checked (not skipped) rows scheduled after
/// `since` are in Postgres: the pipeline is flowing (before a fault) or has
/// recovered (after one).
async fn wait_checked(db: &TestDb, since: DateTime<Utc>, n: i64, what: &str) {
    let client = db.client().await;
    wait_for(what, Duration::from_secs(90), || async {
        client
            .query_one(
                "SELECT count(*) FROM check_results WHERE outcome <> 'skipped' AND scheduled_at > $1",
                &[&since],
            )
            .await
            .map(|r| r.get::<_, i64>(0) >= n)
            .unwrap_or(false)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_sigkill_and_restart_loses_and_duplicates_nothing() {
    let target = Target::start().await;
    let db = TestDb::create().await;
    let cfg = TestConfig::new(&db, &sites(&target, 50));
    let log = crate::support::log_path(&db);

    let started = Utc::now();
    let first = spawn(&cfg.path, &[], &log);
    wait_checked(&db, started, 50 * 8, "rows flowing before the kill").await;
    // Keep the load on for the rest of the first 12 s (a run of at least
    // 30 s in all): a duration, not a synchronisation.
    tokio::time::sleep(remaining(started, 12)).await;
    let mut first = first;
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let killed_at = Utc::now();
    let second = spawn(&cfg.path, &[], &log);
    wait_checked(&db, killed_at, 50 * 5, "checks after the restart").await;
    tokio::time::sleep(remaining(killed_at, 20)).await;
    terminate(second);

    let (slots, skipped) = drain_and_check(&db, &cfg, 50).await;
    eprintln!("daemon SIGKILL: {slots} slots, {skipped} skipped");
    assert!(slots >= 50 * 28, "only {slots} slots in 32 s");
    // Real checks, not only placeholders, on both sides of the kill. (How
    // many slots are skipped depends on the group's session timeout and the
    // machine's load, so it is printed, not asserted.)
    let client = db.client().await;
    let checked = |before: bool| {
        let client = &client;
        async move {
            client
                .query_one(
                    "SELECT count(*) FROM check_results WHERE outcome <> 'skipped'
                     AND (scheduled_at < $1) = $2",
                    &[&killed_at, &before],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    let (before, after) = (checked(true).await, checked(false).await);
    assert!(
        before >= 50 * 5 && after >= 50 * 5,
        "checked rows: {before} before the kill, {after} after"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_every_topic_goes_to_the_dlq_and_the_pipeline_flows_on() {
    let target = Target::start().await;
    let db = TestDb::create().await;
    let cfg = TestConfig::new(&db, &sites(&target, 3));
    let settings = cfg.load();
    let stop = CancellationToken::new();
    let daemon = tokio::spawn(daemon::run(cfg.load(), &[], stop.clone(), no_reloads()));
    let client = db.client().await;
    let rows = || async {
        client
            .query_one(
                "SELECT count(*) FROM check_results WHERE outcome <> 'skipped'",
                &[],
            )
            .await
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(0)
    };
    wait_for("first rows", Duration::from_secs(60), || async {
        rows().await > 0
    })
    .await;

    let publisher = Publisher::new(&settings).unwrap();
    let t = &cfg.topics;
    let garbage: [(&str, &[u8]); 3] = [
        (&t.created, b"{not json"),
        (&t.succeeded, br#"{"v":1,"site":"x"}"#),
        (&t.failed, br#"{"v":99,"site":"x"}"#),
    ];
    for (topic, payload) in garbage {
        publisher
            .send(topic, b"garbage", payload, None)
            .await
            .unwrap();
    }
    let before = rows().await;
    wait_for(
        "rows after the garbage",
        Duration::from_secs(60),
        || async { rows().await >= before + 6 },
    )
    .await;

    let consumer: StreamConsumer = bus::client_config(&settings)
        .set("group.id", unique("dlq-reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[&t.dlq]).unwrap();
    let mut sources = Vec::new();
    while sources.len() < 3 {
        let m = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .expect("3 dead letters within 30 s")
            .unwrap();
        let headers = m.headers().expect("dead letters carry headers");
        let get = |name: &str| {
            headers
                .iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        assert!(!get(dlq_headers::H_REASON).is_empty());
        assert!(get(dlq_headers::H_OFFSET).parse::<i64>().unwrap() >= 0);
        assert_eq!(m.key(), Some(&b"garbage"[..]));
        sources.push((get(dlq_headers::H_TOPIC), m.payload().unwrap().to_vec()));
    }
    sources.sort();
    let mut want: Vec<(String, Vec<u8>)> = garbage
        .iter()
        .map(|(t, p)| (t.to_string(), p.to_vec()))
        .collect();
    want.sort();
    assert_eq!(sources, want);
    stop.cancel();
    daemon.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_sigkill_and_restart_loses_and_duplicates_nothing() {
    let target = Target::start().await;
    let db = TestDb::create().await;
    let mut broker = Broker::start().await;
    let cfg = TestConfig::with_endpoints(&db.url, &broker.address(), &sites(&target, 50));
    let stop = CancellationToken::new();
    let started = Utc::now();
    let daemon = tokio::spawn(daemon::run(cfg.load(), &[], stop.clone(), no_reloads()));

    wait_checked(&db, started, 50 * 8, "rows flowing before the broker kill").await;
    tokio::time::sleep(remaining(started, 10)).await;
    broker.kill();
    tokio::time::sleep(Duration::from_secs(3)).await; // the outage itself
    broker.restart().await;
    let back = Utc::now();
    wait_checked(&db, back, 50 * 5, "checks after the broker restart").await;
    tokio::time::sleep(remaining(back, 20)).await;
    stop.cancel();
    daemon.await.unwrap().unwrap();

    let (slots, skipped) = drain_and_check(&db, &cfg, 50).await;
    eprintln!("broker SIGKILL: {slots} slots, {skipped} skipped");
    assert!(slots >= 50 * 30, "only {slots} slots in 33 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_gone_for_20s_loses_and_duplicates_nothing() {
    let target = Target::start().await;
    let db = TestDb::create().await;
    let (proxy, cfg) = Proxy::config_for(&db, &sites(&target, 50)).await;
    let stop = CancellationToken::new();
    let started = Utc::now();
    let daemon = tokio::spawn(daemon::run(cfg.load(), &[], stop.clone(), no_reloads()));

    wait_checked(&db, started, 50 * 5, "rows flowing before the cut").await;
    tokio::time::sleep(remaining(started, 8)).await;
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(20)).await; // the outage itself
    proxy.restore();
    let back = Utc::now();
    wait_checked(&db, back, 50 * 5, "rows written after Postgres is back").await;
    tokio::time::sleep(remaining(back, 8)).await;
    stop.cancel();
    daemon.await.unwrap().unwrap();

    let (slots, skipped) = drain_and_check(&db, &cfg, 50).await;
    eprintln!("Postgres cut 20 s: {slots} slots, {skipped} skipped");
    assert!(slots >= 50 * 34, "only {slots} slots in 36 s");
}

/// What is left of `secs` seconds since `since` (zero if passed): the test
/// keeps load on for a minimum run length, which is a duration, not a
/// synchronisation.
fn remaining(since: DateTime<Utc>, secs: i64) -> Duration {
    (since + chrono::Duration::seconds(secs) - Utc::now())
        .to_std()
        .unwrap_or(Duration::ZERO)
}
