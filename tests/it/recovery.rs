//! Every slot ends as exactly one row, also across faults: the daemon
//! SIGKILLed and restarted, the broker SIGKILLed and restarted, Postgres
//! unreachable for 20 s, and garbage on every consumed topic.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sitewatch::bus::{self, Publisher};
use sitewatch::daemon;
use sitewatch::scheduler::seams::{Stored, Written};
use sitewatch::scheduler::Cadence;
use tokio_util::sync::CancellationToken;

use crate::faults::{Broker, PgServer, Proxy};
use crate::support::{no_reloads, wait_for, TestConfig, TestDb};
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

/// A daemon child process, SIGKILLed when dropped unless it has exited, so
/// a failing test leaves no daemon behind.
pub struct Daemon(Child);

impl std::ops::Deref for Daemon {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The daemon binary as a child process.
pub fn spawn(config: &Path, roles: &[&str], log: &Path) -> Daemon {
    spawn_with(config, roles, log, &[])
}

/// [`spawn`] with extra environment (config overrides, systemd's variables).
pub fn spawn_with(config: &Path, roles: &[&str], log: &Path, env: &[(&str, String)]) -> Daemon {
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
    Daemon(
        cmd.env("RUST_LOG", "warn,sitewatch=info")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start sitewatch"),
    )
}

pub fn terminate(mut child: Daemon) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "sitewatch exited with {status} after SIGTERM"
    );
}

/// Per site: the first slot with a row and its progress (the later of its
/// own row and its shard's watermarks, as the scheduler reads it).
async fn accounted(
    client: &tokio_postgres::Client,
) -> HashMap<String, (DateTime<Utc>, DateTime<Utc>)> {
    let q = |sql: &'static str| client.query(sql, &[]);
    let sites: Vec<String> = q("SELECT site FROM schedule_progress")
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let (progress, written_sites) = sitewatch::store::load_progress_of(client, &sites)
        .await
        .unwrap();
    let (watermarks, written_marks) = sitewatch::store::load_watermarks(client).await.unwrap();
    let stored = Stored {
        gaps: Default::default(),
        written: Written {
            sites: written_sites,
            watermarks: written_marks,
        },
        sites: progress,
        watermarks,
    };
    q("SELECT site, min(scheduled_at) FROM check_results GROUP BY site")
        .await
        .unwrap()
        .iter()
        .filter_map(|r| {
            let site: String = r.get(0);
            let until = stored.progress_of(&site)?;
            Some((site, (r.get(1), until)))
        })
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
            let (sites, until): (Vec<&str>, Vec<DateTime<Utc>>) =
                acc.iter().map(|(s, (_, t))| (s.as_str(), *t)).unzip();
            let rows: i64 = client
                .query_one(
                    "SELECT count(*) FROM check_results r
                     JOIN unnest($1::text[], $2::timestamptz[]) AS p(site, until) USING (site)
                     WHERE r.scheduled_at < p.until",
                    &[&sites, &until],
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
    let ids = sitewatch::store::check_ids(&client).await.unwrap();
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
            assert_eq!(id, ids.scheduled(site, at));
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
async fn wait_checked(db: &TestDb, since: DateTime<Utc>, n: i64, what: &str) -> Duration {
    let client = db.client().await;
    let started = std::time::Instant::now();
    wait_for(what, Duration::from_secs(120), || async {
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
    started.elapsed()
}

/// Sites per fault test: 50, or 200 for `make faults` (SITEWATCH_FAULTS_FULL).
pub fn n_sites() -> usize {
    if std::env::var_os("SITEWATCH_FAULTS_FULL").is_some() {
        200
    } else {
        50
    }
}

/// Waits for the first round of checks of every site after a fault
/// cleared at `cleared` (the time to recover, returned), then for `slots`
/// slots' worth of checks since then: load after the fault.
async fn recovered(
    db: &TestDb,
    cleared: DateTime<Utc>,
    n: usize,
    slots: i64,
    what: &str,
) -> Duration {
    let recovery = wait_checked(db, cleared, n as i64, what).await;
    wait_checked(
        db,
        cleared,
        n as i64 * slots,
        &format!("{slots} s worth of checks"),
    )
    .await;
    recovery
}

/// Holds a fault for its length. A duration, not a synchronisation: how long
/// the outage lasts is what the test is about (the daemon's side of it is
/// awaited before and after, in rows).
pub async fn outage(secs: u64) {
    tokio::time::sleep(Duration::from_secs(secs)).await;
}

/// One line per fault, collected by `make faults`: slots that must each
/// have one row, the rows, duplicated slots (must be 0), skipped slots and
/// the time to recover.
async fn report(fault: &str, db: &TestDb, slots: i64, skipped: i64, recovery: Duration) {
    let client = db.client().await;
    let one = |sql: &'static str| {
        let client = &client;
        async move { client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    let rows = one("SELECT count(*) FROM check_results").await;
    let dups = one(
        "SELECT count(*) FROM (SELECT site, scheduled_at FROM check_results
                               GROUP BY 1, 2 HAVING count(*) > 1) d",
    )
    .await;
    eprintln!(
        "FAULT {fault:<36} slots {slots:>6}  rows {rows:>6}  duplicates {dups}  skipped {skipped:>5}  recovered in {:>5.1} s",
        recovery.as_secs_f64()
    );
    assert_eq!(dups, 0, "{fault}: duplicated slots");
    assert_eq!(rows, slots, "{fault}: rows outside the accounted slots");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_sigkill_and_restart_loses_and_duplicates_nothing() {
    let target = Target::start().await;
    let n = n_sites();
    let db = TestDb::create().await;
    let cfg = TestConfig::new(&db, &sites(&target, n));
    let log = crate::support::log_path(&db);

    let started = Utc::now();
    // The example config's session timeout, not the tests' shorter one:
    // static membership must make it irrelevant to a restart.
    let example = [("SITEWATCH__KAFKA__SESSION_TIMEOUT", "10s".to_owned())];
    let first = spawn_with(&cfg.path, &[], &log, &example);
    // Load before the kill: at least 12 slots' worth of checks of every site
    // (a run of at least 30 s in all).
    wait_checked(&db, started, n as i64 * 12, "12 s worth of checks").await;
    let mut first = first;
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let killed_at = Utc::now();
    // Restarted 5 s later, as systemd's RestartSec=5 would.
    outage(5).await;
    let restarted_at = Utc::now();
    let second = spawn_with(&cfg.path, &[], &log, &example);
    let recovery = recovered(&db, killed_at, n, 20, "a round of checks after the restart").await;
    terminate(second);
    // Static group membership gives the restarted process its partitions
    // back without waiting out the session timeout of the killed one.
    let first_real: f64 = db
        .client()
        .await
        .query_one(
            "SELECT extract(epoch FROM min(persisted_at) - $1)::float8 FROM check_results
             WHERE outcome <> 'skipped' AND persisted_at > $1",
            &[&restarted_at],
        )
        .await
        .unwrap()
        .get(0);
    eprintln!(
        "daemon SIGKILL, restart 5 s later: first real check persisted {first_real:.1} s after the restart"
    );

    let (slots, skipped) = drain_and_check(&db, &cfg, n).await;
    report("daemon SIGKILL + restart", &db, slots, skipped, recovery).await;
    assert!(slots >= n as i64 * 28, "only {slots} slots in 32 s");
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
        before >= n as i64 * 5 && after >= n as i64 * 5,
        "checked rows: {before} before the kill, {after} after"
    );
}

/// A burst of malformed messages on every consumed topic, under load: the
/// dead-letter topic ends up holding exactly those messages (no more, no
/// fewer), and every slot still has its one row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_garbage_on_every_topic_goes_to_the_dlq_and_nothing_else_does() {
    const PER_TOPIC: usize = 50;
    let target = Target::start().await;
    let n = n_sites();
    let db = TestDb::create().await;
    let cfg = TestConfig::new(&db, &sites(&target, n));
    let settings = cfg.load();
    let stop = CancellationToken::new();
    let started = Utc::now();
    let daemon = tokio::spawn(daemon::run(cfg.load(), &[], stop.clone(), no_reloads()));
    wait_checked(&db, started, n as i64 * 3, "rows flowing before the burst").await;

    let publisher = Publisher::new(&settings).unwrap();
    let t = &cfg.topics;
    // Not JSON, JSON of the wrong shape, an unknown version, binary.
    let kinds: [&[u8]; 4] = [
        b"{not json",
        br#"{"v":1,"site":"x"}"#,
        br#"{"v":99,"site":"x"}"#,
        b"\xff\xfe\x00 binary",
    ];
    let mut sent = Vec::new();
    let mut deliveries = Vec::new();
    for topic in [&t.created, &t.succeeded, &t.failed] {
        for i in 0..PER_TOPIC {
            let payload = [kinds[i % kinds.len()], format!(" #{i}").as_bytes()].concat();
            deliveries.push(
                publisher
                    .enqueue(topic, b"garbage", &payload, None)
                    .await
                    .unwrap(),
            );
            sent.push((topic.to_string(), payload));
        }
    }
    let burst_at = Utc::now();
    for d in deliveries {
        publisher.confirm(d).await.unwrap();
    }
    let recovery = recovered(&db, burst_at, n, 3, "a round of checks after the burst").await;
    stop.cancel();
    daemon.await.unwrap().unwrap();

    let letters = bus::read_dead_letters(&settings, &t.dlq, Duration::from_secs(30))
        .await
        .unwrap();
    let mut got: Vec<(String, Vec<u8>)> = letters
        .iter()
        .map(|l| {
            assert!(!l.reason.is_empty() && l.source_offset.is_some(), "{l:?}");
            assert_eq!(l.key, b"garbage");
            (l.source_topic.clone(), l.payload.clone())
        })
        .collect();
    got.sort();
    sent.sort();
    assert_eq!(
        got.len(),
        sent.len(),
        "dead letters vs malformed messages sent"
    );
    assert_eq!(got, sent);

    let (slots, skipped) = drain_and_check(&db, &cfg, n).await;
    report(
        &format!("garbage burst ({} messages)", sent.len()),
        &db,
        slots,
        skipped,
        recovery,
    )
    .await;
    eprintln!(
        "garbage burst: DLQ holds exactly the {} malformed messages",
        got.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_sigkill_and_restart_loses_and_duplicates_nothing() {
    let target = Target::start().await;
    let n = n_sites();
    let db = TestDb::create().await;
    let mut broker = Broker::start().await;
    let cfg = TestConfig::with_endpoints(&db.url, &broker.address(), &sites(&target, n));
    let stop = CancellationToken::new();
    let started = Utc::now();
    let daemon = tokio::spawn(daemon::run(cfg.load(), &[], stop.clone(), no_reloads()));

    wait_checked(&db, started, n as i64 * 10, "10 s worth of checks").await;
    broker.kill();
    outage(3).await;
    broker.restart().await;
    let back = Utc::now();
    let recovery = recovered(
        &db,
        back,
        n,
        20,
        "a round of checks after the broker restart",
    )
    .await;
    stop.cancel();
    daemon.await.unwrap().unwrap();

    let (slots, skipped) = drain_and_check(&db, &cfg, n).await;
    report("broker SIGKILL + restart", &db, slots, skipped, recovery).await;
    assert!(slots >= n as i64 * 30, "only {slots} slots in 33 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cut_for_30s_loses_and_duplicates_nothing() {
    let target = Target::start().await;
    let n = n_sites();
    let db = TestDb::create().await;
    let (proxy, cfg) = Proxy::config_for(&db, &sites(&target, n)).await;
    let stop = CancellationToken::new();
    let started = Utc::now();
    let daemon = tokio::spawn(daemon::run(cfg.load(), &[], stop.clone(), no_reloads()));

    wait_checked(&db, started, n as i64 * 8, "8 s worth of checks").await;
    proxy.cut();
    outage(30).await;
    proxy.restore();
    let back = Utc::now();
    let recovery = recovered(&db, back, n, 8, "a round of rows after Postgres is back").await;
    stop.cancel();
    daemon.await.unwrap().unwrap();

    let (slots, skipped) = drain_and_check(&db, &cfg, n).await;
    report("daemon-Postgres cut 30 s", &db, slots, skipped, recovery).await;
    assert!(slots >= n as i64 * 44, "only {slots} slots in 46 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_process_sigkilled_and_restarted_loses_and_duplicates_nothing() {
    let target = Target::start().await;
    let n = n_sites();
    let db = TestDb::create().await;
    let cfg = TestConfig::new(&db, &sites(&target, n));
    let log = crate::support::log_path(&db);
    let started = Utc::now();
    // Each process needs an admin listener of its own.
    let start = |role: &str| {
        let admin = (
            "SITEWATCH__ADMIN__LISTEN",
            crate::support::free_addr().to_string(),
        );
        spawn_with(&cfg.path, &[role], &log, &[admin])
    };
    let mut procs: Vec<(&str, Daemon)> = ["scheduler", "checker", "persister"]
        .into_iter()
        .map(|role| (role, start(role)))
        .collect();
    wait_checked(&db, started, n as i64 * 5, "rows flowing before the kills").await;
    let mut recoveries = Vec::new();
    for i in [1, 2, 0] {
        let (role, child) = &mut procs[i];
        let role = *role;
        let since = Utc::now();
        wait_checked(&db, since, n as i64 * 5, "5 s worth of checks").await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let killed_at = Utc::now();
        procs[i].1 = start(role);
        let r = recovered(
            &db,
            killed_at,
            n,
            1,
            &format!("checks after the {role} restart"),
        )
        .await;
        eprintln!(
            "{role} process SIGKILL + restart: recovered in {:.1} s",
            r.as_secs_f64()
        );
        recoveries.push(r);
    }
    let last = Utc::now();
    wait_checked(&db, last, n as i64 * 5, "checks after the last restart").await;
    for (_, child) in procs {
        terminate(child);
    }
    let (slots, skipped) = drain_and_check(&db, &cfg, n).await;
    let worst = recoveries.into_iter().max().unwrap_or_default();
    report(
        "each role process SIGKILL (worst)",
        &db,
        slots,
        skipped,
        worst,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crash_and_restart_loses_and_duplicates_nothing() {
    let target = Target::start().await;
    let n = n_sites();
    let pg = PgServer::start().await;
    let db = pg.test_db();
    let cfg = TestConfig::new(&db, &sites(&target, n));
    let stop = CancellationToken::new();
    let started = Utc::now();
    let daemon = tokio::spawn(daemon::run(cfg.load(), &[], stop.clone(), no_reloads()));

    wait_checked(&db, started, n as i64 * 8, "8 s worth of checks").await;
    pg.crash();
    outage(5).await;
    pg.start_again();
    let back = Utc::now();
    let recovery = recovered(&db, back, n, 8, "a round of rows after the restart").await;
    stop.cancel();
    daemon.await.unwrap().unwrap();

    let (slots, skipped) = drain_and_check(&db, &cfg, n).await;
    report(
        "Postgres crash (-m immediate) + restart",
        &db,
        slots,
        skipped,
        recovery,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_cut_for_30s_loses_and_duplicates_nothing() {
    let target = Target::start().await;
    let n = n_sites();
    let db = TestDb::create().await;
    let (broker, proxy) = Broker::start_behind_proxy().await;
    let cfg = TestConfig::with_endpoints(&db.url, &broker.address(), &sites(&target, n));
    let log = crate::support::log_path(&db);
    let started = Utc::now();
    // Clients that never recover make the daemon exit after 20 s of failing
    // (kafka.stall_timeout); the supervisor here restarts it as systemd's
    // Restart=on-failure would.
    let stall = ("SITEWATCH__KAFKA__STALL_TIMEOUT", "20s".to_owned());
    let daemon = Supervised::start(&cfg.path, &log, vec![stall]);

    wait_checked(&db, started, n as i64 * 8, "8 s worth of checks").await;
    proxy.cut();
    outage(30).await;
    proxy.restore();
    let back = Utc::now();
    // The broker is never restarted: sitewatch's clients must find it again
    // by themselves (Apache Kafka recovers from the cut; Tansu 0.6 wedged).
    let recovery = wait_checked(&db, back, n as i64, "a round of real checks after the cut").await;
    wait_checked(&db, back, n as i64 * 8, "8 s worth of checks").await;
    let restarts = daemon.stop().await;
    eprintln!(
        "daemon-broker cut 30 s: the daemon was restarted {restarts} time(s) by its supervisor"
    );

    let (slots, skipped) = drain_and_check(&db, &cfg, n).await;
    report("daemon-broker cut 30 s", &db, slots, skipped, recovery).await;
    drop(broker);
}

/// The daemon binary under a supervisor that starts it again whenever it
/// exits with an error, as systemd's `Restart=on-failure` does.
struct Supervised {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<u32>,
}

impl Supervised {
    fn start(config: &Path, log: &Path, env: Vec<(&'static str, String)>) -> Supervised {
        let stop = CancellationToken::new();
        let (config, log, token) = (config.to_path_buf(), log.to_path_buf(), stop.clone());
        let task = tokio::spawn(async move {
            let mut restarts = 0;
            let mut child = spawn_with(&config, &[], &log, &env);
            let mut poll = tokio::time::interval(Duration::from_millis(200));
            loop {
                tokio::select! {
                    _ = token.cancelled() => {
                        terminate(child);
                        return restarts;
                    }
                    _ = poll.tick() => {}
                }
                if let Some(status) = child.try_wait().unwrap() {
                    assert!(!status.success(), "the daemon exited 0 on its own");
                    restarts += 1;
                    child = spawn_with(&config, &[], &log, &env);
                }
            }
        });
        Supervised { stop, task }
    }

    /// Stops the daemon (SIGTERM); returns how often it was restarted.
    async fn stop(self) -> u32 {
        self.stop.cancel();
        self.task.await.unwrap()
    }
}
