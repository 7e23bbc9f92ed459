//! Scale-out failover on Apache Kafka's group coordinator: checker and
//! persister processes SIGKILLed while other members of their groups live.
//! The survivors must take the dead members' partitions once the session
//! timeout has passed, and every slot must still end as exactly one row.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::recovery::{drain_and_check, sites, spawn_with, terminate, Daemon};
use crate::support::{free_addr, log_path, wait_for, TestConfig, TestDb};
use crate::target::Target;

/// A process of the given roles with its own admin port and its own static
/// group member id (`kafka.instance_id`), as separate machines would have.
fn member(cfg: &TestConfig, role: &str, id: &str, log: &std::path::Path) -> Daemon {
    spawn_with(
        &cfg.path,
        &[role],
        log,
        &[
            ("SITEWATCH__ADMIN__LISTEN", free_addr().to_string()),
            ("SITEWATCH__KAFKA__INSTANCE_ID", id.to_owned()),
        ],
    )
}

/// Sites with at least `n` real (not skipped) checks scheduled after `since`.
async fn sites_checked(client: &tokio_postgres::Client, since: DateTime<Utc>, n: i64) -> i64 {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_checker_and_persister_hand_their_partitions_to_the_survivors() {
    const N: usize = 40;
    let target = Target::start().await;
    let db = TestDb::create().await;
    // Three partitions a topic (the test config): one per checker, and two
    // persisters that share each result topic 2:1.
    let cfg = TestConfig::new(&db, &sites(&target, N));
    let session = cfg.load().kafka.session_timeout;
    let log = log_path(&db);
    let started = Utc::now();
    let mut members = vec![
        member(&cfg, "checker", "checker-0", &log),
        member(&cfg, "persister", "persister-0", &log),
        member(&cfg, "checker", "checker-1", &log),
        member(&cfg, "checker", "checker-2", &log),
        member(&cfg, "persister", "persister-1", &log),
        member(&cfg, "scheduler", "scheduler-0", &log),
    ];
    let client = db.client().await;
    wait_for(
        "every site checked 5 times before the kills",
        Duration::from_secs(120),
        || async { sites_checked(&client, started, 5).await == N as i64 },
    )
    .await;

    // SIGKILL one checker and one persister: no LeaveGroup, no commit.
    for mut victim in members.drain(..2) {
        victim.kill().unwrap();
        victim.wait().unwrap();
    }
    let killed_at = Utc::now();
    wait_for(
        "every site checked and persisted again after the kills",
        Duration::from_secs(120),
        || async { sites_checked(&client, killed_at, 1).await == N as i64 },
    )
    .await;
    // From the kills to the persisting of the first real check of the site
    // that waited longest.
    let back = crate::support::longest_wait(&client, "persisted_at", killed_at).await;
    eprintln!(
        "SIGKILL of 1 of 3 checkers and 1 of 2 persisters: every site checked and persisted \
         again {back:.1} s after the kills (kafka.session_timeout = {} s)",
        session.as_secs()
    );
    wait_for(
        "every site checked 5 times after the kills",
        Duration::from_secs(120),
        || async { sites_checked(&client, killed_at, 5).await == N as i64 },
    )
    .await;
    for m in members {
        terminate(m);
    }
    let (slots, skipped) = drain_and_check(&db, &cfg, N).await;
    eprintln!("checker and persister SIGKILLed: {slots} slots, each one row; {skipped} skipped");
}
