//! Operations: several instances sharing the scheduling (one SIGKILLed),
//! reload by SIGHUP, the admin listener (`/healthz`, `/readyz`, `/metrics`)
//! and the systemd notify protocol, all against the real daemon binary.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::process::Command;

use crate::recovery::Daemon;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::Message;
use sitewatch::bus;

use crate::faults::Proxy;
use crate::recovery::{drain_and_check, sites, spawn_with, terminate};
use crate::support::{free_addr, log_path, unique, wait_for, TestConfig, TestDb};
use crate::target::Target;

/// `GET http://addr/path`: status and body (status 0 when nothing answers).
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    match client.get(format!("http://{addr}{path}")).send().await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(_) => (0, String::new()),
    }
}

/// Parses Prometheus text format strictly enough to catch a broken
/// exposition: every sample line is `name{labels} value` with a valid name
/// and a float value. Returns samples by `name{labels}`.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            assert!(
                line.is_empty() || line.starts_with("# HELP ") || line.starts_with("# TYPE "),
                "bad comment line: {line:?}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "bad labels in {line:?}"
            );
        }
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        out.insert(series.to_owned(), v);
    }
    out
}

async fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let (code, body) = get(addr, "/metrics").await;
    if code != 200 {
        return HashMap::new();
    }
    parse_metrics(&body)
}

/// SIGKILLs the given processes when dropped, so a failed test leaves no
/// daemon running.
struct Reaper(Vec<u32>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

fn sigterm_all(children: Vec<Daemon>) {
    for c in children {
        terminate(c);
    }
}

fn admin_env(addr: SocketAddr) -> Vec<(&'static str, String)> {
    vec![("SITEWATCH__ADMIN__LISTEN", addr.to_string())]
}

/// Reads every check request on `topic` and returns how many check ids
/// occur more than once.
async fn duplicated_requests(cfg: &TestConfig) -> (usize, usize) {
    let settings = cfg.load();
    let consumer: StreamConsumer = bus::client_config(&settings)
        .set("group.id", unique("dup-reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    consumer.subscribe(&[&cfg.topics.created]).unwrap();
    let partitions = settings.kafka.partitions as usize;
    let mut at_end = std::collections::HashSet::new();
    let mut seen: HashMap<uuid::Uuid, u32> = HashMap::new();
    while at_end.len() < partitions {
        match tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .expect("the created topic read to its end within 30 s")
        {
            Ok(m) => {
                let req = sitewatch::model::decode_request(m.payload()).unwrap();
                *seen.entry(req.check_id).or_default() += 1;
            }
            Err(KafkaError::PartitionEOF(p)) => {
                at_end.insert(p);
            }
            Err(KafkaError::MessageConsumption(RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err(e) => panic!("reading {}: {e}", cfg.topics.created),
        }
    }
    (seen.len(), seen.values().filter(|n| **n > 1).count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_the_sites_and_take_over_from_a_killed_one() {
    const N: usize = 60;
    let target = Target::start().await;
    let db = TestDb::create().await;
    let cfg = TestConfig::new(&db, &sites(&target, N));
    let log = log_path(&db);
    let admins: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
    let started = Utc::now();
    // Three schedulers share the sites; one checker and persister process
    // does the rest. The killed instance runs the scheduler role only:
    // when a member of a consumer group dies while others live, Tansu 0.6
    // drops it from the group without starting a rebalance, so its
    // partitions stay orphaned (see README, "Scale-out").
    let mut children: Vec<Daemon> = admins
        .iter()
        .map(|a| spawn_with(&cfg.path, &["scheduler"], &log, &admin_env(*a)))
        .collect();
    children.push(spawn_with(
        &cfg.path,
        &["checker", "persister"],
        &log,
        &admin_env(free_addr()),
    ));
    let _reaper = Reaper(children.iter().map(|c| c.id()).collect());

    let shares = |addrs: Vec<SocketAddr>| async move {
        let mut out = Vec::new();
        for a in addrs {
            let m = scrape(a).await;
            out.push(m.get("sitewatch_scheduler_sites").copied().unwrap_or(0.0) as usize);
        }
        out
    };
    wait_for(
        "each of three instances scheduling a share of the sites",
        Duration::from_secs(90),
        || async {
            let s = shares(admins.clone()).await;
            s.iter().all(|n| *n > 0) && s.iter().sum::<usize>() == N
        },
    )
    .await;
    eprintln!("shares of {N} sites: {:?}", shares(admins.clone()).await);
    let client = db.client().await;
    // Sites with at least `n` checked rows scheduled after `since`.
    let checked_sites = |since: chrono::DateTime<Utc>, n: i64| {
        let client = &client;
        async move {
            client
                .query_one(
                    "SELECT count(*) FROM (SELECT site FROM check_results
                     WHERE outcome <> 'skipped' AND scheduled_at > $1
                     GROUP BY site HAVING count(*) >= $2) s",
                    &[&since, &n],
                )
                .await
                .map(|r| r.get::<_, i64>(0))
                .unwrap_or(0)
        }
    };
    wait_for(
        "every site checked 8 times before the kill",
        Duration::from_secs(90),
        || async { checked_sites(started, 8).await == N as i64 },
    )
    .await;

    let mut victim = children.remove(0);
    victim.kill().unwrap(); // SIGKILL
    victim.wait().unwrap();
    let killed_at = Utc::now();
    wait_for(
        "every site checked again after the kill",
        Duration::from_secs(90),
        || async { checked_sites(killed_at, 1).await == N as i64 },
    )
    .await;
    // Failover: from the kill to the first checked slot of the site that
    // waited longest.
    let failover = crate::support::longest_wait(&client, "scheduled_at", killed_at).await;
    eprintln!(
        "failover after SIGKILL of 1 of 3 instances: {failover:.1} s (scheduler.failover_timeout = 6 s)"
    );
    wait_for(
        "the two survivors scheduling every site",
        Duration::from_secs(60),
        || async { shares(admins[1..].to_vec()).await.iter().sum::<usize>() == N },
    )
    .await;
    wait_for(
        "every site checked 5 times after the kill",
        Duration::from_secs(60),
        || async { checked_sites(killed_at, 5).await == N as i64 },
    )
    .await;
    sigterm_all(children);

    let (slots, skipped) = drain_and_check(&db, &cfg, N).await;
    eprintln!("three instances, one SIGKILLed: {slots} slots, {skipped} skipped");
    let (requests, duplicated) = duplicated_requests(&cfg).await;
    eprintln!("check requests published: {requests}, published twice: {duplicated}");
    assert!(requests > N * 10, "only {requests} requests published");
    assert_eq!(duplicated, 0, "a slot was scheduled by two instances");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_changes_and_removes_sites_and_refuses_a_bad_config() {
    let target = Target::start().await;
    let db = TestDb::create().await;
    let site = |name: &str, path: &str, regex: &str| {
        format!(
            "[[sites]]\nname = \"{name}\"\nurl = \"{}\"\ninterval = \"1s\"\ntimeout = \"500ms\"\n{regex}\n",
            target.url(path)
        )
    };
    let cfg = TestConfig::new(
        &db,
        &format!("{}{}", site("a", "/ok?a", ""), site("b", "/ok?b", "")),
    );
    let log = log_path(&db);
    let started = Utc::now();
    let child = spawn_with(&cfg.path, &[], &log, &[]);
    let _reaper = Reaper(vec![child.id()]);
    let client = db.client().await;
    let checked = |name: &'static str, since: chrono::DateTime<Utc>, status: i32| {
        let client = &client;
        async move {
            client
                .query_one(
                    "SELECT count(*) FROM check_results WHERE site = $1 AND scheduled_at > $2
                     AND status_code::int4 = $3",
                    &[&name, &since, &status],
                )
                .await
                .map(|r| r.get::<_, i64>(0))
                .unwrap_or(0) // not migrated yet
        }
    };
    wait_for("rows of a and b", Duration::from_secs(60), || async {
        checked("a", started, 200).await >= 2 && checked("b", started, 200).await >= 2
    })
    .await;
    // Set at start-up, before any reload.
    let sites_gauge = scrape(cfg.admin)
        .await
        .get("sitewatch_config_sites")
        .copied();
    assert_eq!(
        sites_gauge,
        Some(2.0),
        "sitewatch_config_sites before a reload"
    );

    // a changes (now a 500), b goes, c comes.
    cfg.set_sites(&format!(
        "{}{}",
        site("a", "/500?a", ""),
        site("c", "/ok?c", "")
    ));
    let hup = |child: &Daemon| {
        Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status()
            .unwrap();
    };
    hup(&child);
    let reloaded = Utc::now();
    wait_for(
        "a failing and c checked after the reload",
        Duration::from_secs(60),
        || async {
            checked("a", reloaded, 500).await >= 2 && checked("c", reloaded, 200).await >= 2
        },
    )
    .await;
    let last_b: Option<chrono::DateTime<Utc>> = client
        .query_one(
            "SELECT max(scheduled_at) FROM check_results WHERE site = 'b'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        last_b.unwrap() < reloaded + chrono::Duration::seconds(1),
        "b was still scheduled at {last_b:?}, after the reload at {reloaded}"
    );
    let in_config: Vec<String> = client
        .query("SELECT name FROM sites WHERE in_config ORDER BY name", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(in_config, ["a", "c"], "the sites table follows the reload");

    // An invalid config is refused and the running one stays.
    let good = std::fs::read_to_string(&cfg.path).unwrap();
    cfg.set_sites(&format!(
        "{}{}",
        site("a", "/ok?a", ""),
        site("c", "/ok?c", "regex = \"(unclosed\"")
    ));
    hup(&child);
    wait_for(
        "the refusal in the log",
        Duration::from_secs(30),
        || async {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("reload refused")
        },
    )
    .await;
    let refused = Utc::now();
    wait_for(
        "the old config still running",
        Duration::from_secs(30),
        || async { checked("a", refused, 500).await >= 2 && checked("c", refused, 200).await >= 2 },
    )
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("site \"c\"") && text.contains("regex"),
        "the refusal names the site and the field:\n{text}"
    );
    let m = scrape(cfg.admin).await;
    assert_eq!(
        m.get(r#"sitewatch_config_reloads_total{result="ok"}"#),
        Some(&1.0)
    );
    assert_eq!(
        m.get(r#"sitewatch_config_reloads_total{result="rejected"}"#),
        Some(&1.0)
    );
    std::fs::write(&cfg.path, good).unwrap();
    terminate(child);
    let (slots, skipped) = drain_and_check(&db, &cfg, 2).await;
    eprintln!("reloads: {slots} slots of a and c, {skipped} skipped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_listener_and_systemd_notify_follow_the_daemon() {
    let target = Target::start().await;
    let db = TestDb::create().await;
    let (proxy, cfg) = Proxy::config_for(&db, &sites(&target, 10)).await;
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let got = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop_reading = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (got, stop) = (got.clone(), stop_reading.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(n) = sock.recv(&mut buf) {
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    got.lock().unwrap().extend(msg.lines().map(str::to_owned));
                }
            }
        })
    };
    let has = |line: &str| got.lock().unwrap().iter().any(|l| l == line);

    let log = log_path(&db);
    let child = spawn_with(
        &cfg.path,
        &[],
        &log,
        &[
            ("NOTIFY_SOCKET", sock_path.display().to_string()),
            ("WATCHDOG_USEC", "1500000".into()),
        ],
    );
    let _reaper = Reaper(vec![child.id()]);
    let admin = cfg.admin;
    wait_for("/healthz", Duration::from_secs(30), || async {
        get(admin, "/healthz").await.0 == 200
    })
    .await;
    wait_for("READY=1", Duration::from_secs(60), || async {
        has("READY=1")
    })
    .await;
    wait_for("WATCHDOG=1", Duration::from_secs(10), || async {
        has("WATCHDOG=1")
    })
    .await;
    wait_for("/readyz ready", Duration::from_secs(60), || async {
        get(admin, "/readyz").await.0 == 200
    })
    .await;

    let up = |m: &HashMap<String, f64>| {
        m.get(r#"sitewatch_checks_total{outcome="up",error_kind="none"}"#)
            .copied()
            .unwrap_or(0.0)
    };
    let first = scrape(admin).await;
    wait_for("check counters moving", Duration::from_secs(30), || async {
        up(&scrape(admin).await) >= up(&first) + 20.0
    })
    .await;
    let m = scrape(admin).await;
    for series in [
        "sitewatch_check_duration_seconds_count",
        "sitewatch_check_start_delay_seconds_count",
        "sitewatch_scheduler_lateness_seconds_count",
        "sitewatch_persister_batch_rows_count",
        "sitewatch_persister_write_seconds_count",
        "sitewatch_scheduler_slots_published_total",
    ] {
        assert!(
            m.get(series).copied().unwrap_or(0.0) > 0.0,
            "{series} did not move: {m:?}"
        );
    }
    // librdkafka reports statistics (and so lag) every 5 s.
    wait_for("consumer lag series", Duration::from_secs(30), || async {
        scrape(admin)
            .await
            .keys()
            .any(|k| k.starts_with("sitewatch_consumer_lag_messages{"))
    })
    .await;

    proxy.cut();
    wait_for(
        "/readyz unready while Postgres is gone",
        Duration::from_secs(30),
        || async {
            let (code, body) = get(admin, "/readyz").await;
            code == 503 && body.contains("\"postgres\"")
        },
    )
    .await;
    assert_eq!(get(admin, "/healthz").await.0, 200, "alive while unready");
    proxy.restore();
    wait_for("/readyz ready again", Duration::from_secs(60), || async {
        get(admin, "/readyz").await.0 == 200
    })
    .await;

    terminate(child);
    wait_for("STOPPING=1", Duration::from_secs(5), || async {
        has("STOPPING=1")
    })
    .await;
    stop_reading.store(true, std::sync::atomic::Ordering::Relaxed);
    reader.join().unwrap();
}

/// A Kafka that never answers at start (here, nothing listens) ends the
/// start after `kafka.stall_timeout`, as a stall does at run time, with a
/// message naming the brokers and the setting: the supervisor restarts it
/// and the operator sees why, instead of a daemon that never checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_that_never_answers_at_start_ends_the_start() {
    let db = TestDb::create().await;
    let cfg = TestConfig::with_endpoints(
        &db.url,
        "127.0.0.1:1",
        "[[sites]]\nname = \"a\"\nurl = \"http://127.0.0.1:9/\"\n",
    );
    let mut settings = cfg.load();
    settings.kafka.stall_timeout = Duration::from_secs(3);
    let run = sitewatch::daemon::run(
        settings,
        &[],
        tokio_util::sync::CancellationToken::new(),
        crate::support::no_reloads(),
    );
    let e = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the start ends")
        .expect_err("an error for the supervisor");
    let text = e.to_string();
    assert!(
        text.contains("127.0.0.1:1") && text.contains("kafka.stall_timeout"),
        "{text}"
    );
}
