//! Every slot one row or one gap through a database's history: the case
//! that once left sites unmonitored after a restart. A database whose
//! shard watermarks were written by another config (hourly sites), then a
//! config of 2 s sites, the daemon SIGKILLed and restarted: every slot of
//! every site from its first to the end has a row or a gap, none both.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sitewatch::daemon;
use sitewatch::scheduler::Cadence;
use tokio_util::sync::CancellationToken;

use crate::recovery::{outage, spawn, terminate};
use crate::support::{count, no_reloads, wait_for, TestConfig, TestDb};
use crate::target::Target;

fn sites(target: &Target, prefix: &str, n: usize, interval: &str) -> String {
    (0..n)
        .map(|i| {
            format!(
                "[[sites]]\nname = \"{prefix}{i:03}\"\nurl = \"{}?site={i}\"\ninterval = \"{interval}\"\ntimeout = \"500ms\"\n",
                target.url("/ok")
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_on_a_database_other_configs_used_accounts_for_every_slot() {
    let target = Target::start().await;
    let db = TestDb::create().await;
    let client = db.client().await;
    let log = crate::support::log_path(&db);

    // Another config first: 200 hourly sites, stopped cleanly once each is
    // taken on and its shard's watermark written.
    let hourly = TestConfig::new(&db, &sites(&target, "h", 200, "1h"));
    let first = spawn(&hourly.path, &[], &log);
    wait_for(
        "the hourly config's sites and watermarks on record",
        Duration::from_secs(60),
        || async {
            count(&client, "SELECT count(*) FROM schedule_progress").await == 200
                && count(&client, "SELECT count(*) FROM schedule_watermarks").await == 8
        },
    )
    .await;
    terminate(first);
    let ahead = count(
        &client,
        "SELECT count(*) FROM schedule_watermarks WHERE accounted_until > updated_at",
    )
    .await;
    assert_eq!(
        ahead, 0,
        "watermarks claim time their writer had not reached"
    );

    // Then 50 sites every 2 s, SIGKILLed after a while and restarted 5 s
    // later.
    let n: i64 = 50;
    let fast = TestConfig::new(&db, &sites(&target, "f", n as usize, "2s"));
    let started = Utc::now();
    let mut second = spawn(&fast.path, &[], &log);
    let checked_since = |since: DateTime<Utc>, want: i64| {
        let client = &client;
        move || async move {
            client
                .query_one(
                    "SELECT count(*) FROM check_results WHERE outcome <> 'skipped'
                     AND site LIKE 'f%' AND scheduled_at > $1",
                    &[&since],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
                >= want
        }
    };
    wait_for(
        "8 rounds of the 2 s sites",
        Duration::from_secs(90),
        checked_since(started, n * 8),
    )
    .await;
    second.kill().unwrap();
    second.wait().unwrap();
    let killed = Utc::now();
    // Restarted 5 s later, as systemd's RestartSec=5 would.
    outage(5).await;
    let third = spawn(&fast.path, &[], &log);
    wait_for(
        "10 rounds after the restart",
        Duration::from_secs(90),
        checked_since(killed, n * 10),
    )
    .await;
    terminate(third);

    // Every slot from each site's first on record to its progress: one row
    // (placeholders replaced by real results as they land) or one gap. The
    // requests published before the stop are checked and persisted first.
    let stop = CancellationToken::new();
    let drain = tokio::spawn(daemon::run(
        fast.load(),
        &[daemon::Role::Checker, daemon::Role::Persister],
        stop.clone(),
        no_reloads(),
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let last = std::sync::Mutex::new(Judged::default());
    wait_for("the drain", Duration::from_secs(100), || {
        let (client, last) = (&client, &last);
        async move {
            let j = judge(client).await;
            let done = j.unaccounted.is_empty() || std::time::Instant::now() > deadline;
            *last.lock().unwrap() = j;
            done
        }
    })
    .await;
    stop.cancel();
    drain.await.unwrap().unwrap();
    let skipped = count(
        &client,
        "SELECT count(*) FROM check_results WHERE outcome = 'skipped' AND site LIKE 'f%'",
    )
    .await;
    let Judged {
        sites,
        slots,
        unaccounted,
        twice,
    } = last.into_inner().unwrap();
    eprintln!(
        "hourly config, then 2 s sites SIGKILLed and restarted: {slots} slots, {} without a row or gap, {} twice, {skipped} skipped",
        unaccounted.len(),
        twice.len()
    );
    assert_eq!(sites, n, "progress of every 2 s site");
    assert!(
        unaccounted.is_empty(),
        "slots neither checked nor recorded: {unaccounted:?}"
    );
    assert!(twice.is_empty(), "slots on record twice: {twice:?}");
    assert!(slots >= n * 15, "only {slots} slots judged");
}

#[derive(Default)]
struct Judged {
    sites: i64,
    slots: i64,
    unaccounted: Vec<String>,
    twice: Vec<String>,
}

/// Every slot of the 2 s sites from the first on record to the site's
/// progress: how many, and which have no row or gap, or two.
async fn judge(client: &tokio_postgres::Client) -> Judged {
    let end: HashMap<String, DateTime<Utc>> = client
        .query(
            "SELECT site, accounted_until FROM schedule_progress WHERE site LIKE 'f%'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut j = Judged {
        sites: end.len() as i64,
        ..Judged::default()
    };
    for (site, until) in &end {
        let cadence = Cadence::new(site, Duration::from_secs(2));
        let rows: Vec<DateTime<Utc>> = client
            .query(
                "SELECT scheduled_at FROM check_results WHERE site = $1 ORDER BY 1",
                &[site],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let gaps: Vec<(DateTime<Utc>, DateTime<Utc>)> = client
            .query(
                "SELECT from_at, to_at FROM schedule_gaps WHERE site = $1",
                &[site],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let Some(first) = rows.first() else {
            j.unaccounted.push(format!("{site}: no row at all"));
            continue;
        };
        let mut slot = cadence.first_at_or_after(*first);
        while slot < *until {
            let on_record = usize::from(rows.binary_search(&slot).is_ok())
                + gaps.iter().filter(|(f, t)| *f <= slot && slot < *t).count();
            match on_record {
                1 => {}
                0 => j.unaccounted.push(format!("{site} {slot}")),
                _ => j.twice.push(format!("{site} {slot}")),
            }
            j.slots += 1;
            slot = cadence.next(slot);
        }
    }
    j
}
