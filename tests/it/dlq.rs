//! Dead-letter tooling: a message Postgres refuses is listed by
//! `sitewatch dlq list` with its reason and source, and once the cause is
//! fixed `sitewatch dlq replay` sends it back and it is persisted.

use std::process::Command;
use std::time::Duration;

use chrono::Utc;
use sitewatch::bus::{self, Publisher};
use sitewatch::daemon::{self, Role};
use sitewatch::model;
use tokio_util::sync::CancellationToken;

use crate::support::{no_reloads, slot_outcomes, wait_for, TestConfig, TestDb};
use crate::target::Target;

fn sitewatch(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sitewatch"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run sitewatch");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_result_is_listed_then_replayed_and_persisted_once_fixed() {
    let target = Target::start().await;
    let db = TestDb::create().await;
    let cfg = TestConfig::new(
        &db,
        &format!(
            "[[sites]]\nname = \"x\"\nurl = \"{}\"\ninterval = \"5s\"\ntimeout = \"1s\"\n",
            target.url("/ok")
        ),
    );
    let settings = cfg.load();
    let stop = CancellationToken::new();
    let running = tokio::spawn(daemon::run(
        cfg.load(),
        &[Role::Checker, Role::Persister],
        stop.clone(),
        no_reloads(),
    ));

    // A result for a slot 60 days ago: its day has no partition, and it is
    // too old for the persister to create one on the fly.
    let slot = Utc::now() - chrono::Duration::days(60);
    let (_, outcome) = slot_outcomes("old", slot, &target.url("/ok"));
    let publisher = Publisher::new(&settings).unwrap();
    let t = &cfg.topics;
    publisher
        .send(&t.succeeded, b"old", &model::encode(&outcome), None)
        .await
        .unwrap();
    publisher
        .send(&t.created, b"garbage", b"{not json", None)
        .await
        .unwrap();
    wait_for("two dead letters", Duration::from_secs(60), || async {
        bus::read_dead_letters(&settings, &t.dlq, Duration::from_secs(10))
            .await
            .map(|l| l.len() == 2)
            .unwrap_or(false)
    })
    .await;

    let config = cfg.path.to_str().unwrap();
    let (ok, json) = sitewatch(&["dlq", "list", "--config", config, "--json"]);
    assert!(ok, "{json}");
    let first_line = json.lines().next().unwrap_or_default();
    let parsed: Vec<serde_json::Value> = serde_json::from_str(first_line).unwrap();
    assert_eq!(parsed.len(), 2, "{json}");
    let (ok, listed) = sitewatch(&["dlq", "list", "--config", config]);
    assert!(ok, "{listed}");
    assert!(listed.contains("refused by Postgres"), "{listed}");
    assert!(
        listed.contains(&format!("from {}[", t.succeeded)),
        "{listed}"
    );
    assert!(listed.contains(&format!("from {}[", t.created)), "{listed}");
    assert!(
        listed.contains("by persister") && listed.contains("by checker"),
        "{listed}"
    );
    let (ok, dry) = sitewatch(&[
        "dlq",
        "replay",
        "--config",
        config,
        "--since",
        "1h",
        "--dry-run",
    ]);
    assert!(ok && dry.contains("would replay 2 of 2"), "{dry}");

    // The cause fixed (the day gets its partition), the result is replayed.
    let client = db.client().await;
    client
        .execute(
            "SELECT sitewatch_ensure_partitions($1, $1)",
            &[&slot.date_naive()],
        )
        .await
        .unwrap();
    let (ok, replayed) = sitewatch(&["dlq", "replay", "--config", config, "--topic", &t.succeeded]);
    assert!(ok && replayed.contains("replayed 1 of 2"), "{replayed}");
    wait_for(
        "the replayed result persisted",
        Duration::from_secs(60),
        || async {
            client
                .query_opt(
                    "SELECT outcome FROM check_results WHERE check_id = $1",
                    &[&outcome.check_id],
                )
                .await
                .unwrap()
                .is_some_and(|r| r.get::<_, String>(0) == "up")
        },
    )
    .await;
    let letters = bus::read_dead_letters(&settings, &t.dlq, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(letters.len(), 2, "the replay made no new dead letter");
    stop.cancel();
    running.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_list_json_prints_an_empty_array_when_there_are_none() {
    let db = TestDb::create().await;
    let cfg = TestConfig::new(&db, "");
    bus::ensure_topics(&cfg.load(), &cfg.topics.all())
        .await
        .unwrap();
    let (ok, json) = sitewatch(&[
        "dlq",
        "list",
        "--config",
        cfg.path.to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "{json}");
    assert_eq!(json.lines().next(), Some("[]"), "{json}");
}
