//! The whole pipeline in one process (scheduler -> Kafka -> checker ->
//! Kafka -> persisters -> Postgres) against the local target server.

use std::time::Duration;

use sitewatch::daemon;
use sitewatch::scheduler::Cadence;
use tokio_util::sync::CancellationToken;

use crate::support::{count, no_reloads, wait_for, TestConfig, TestDb};
use crate::target::{closed_port, Target};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_site_gets_the_right_row() {
    let target = Target::start().await;
    let closed = closed_port().await;
    let dns = crate::dns::DnsServer::start(&[(
        "www.sitewatch.test",
        crate::dns::Answer::Addresses(vec!["192.0.2.7".parse().unwrap()]),
    )])
    .await;
    let tls = crate::target::TlsTarget::start(30).await;
    let db = TestDb::create().await;
    let sites = format!(
        r#"
[[sites]]
name = "up"
url = "{up}"
interval = "2s"
timeout = "1s"
regex = "hello .* target"

[[sites]]
name = "error"
url = "{err}"
interval = "2s"
timeout = "1s"

[[sites]]
name = "regex-miss"
url = "{up}?page=2"
interval = "2s"
timeout = "1s"
regex = "not on the page"

[[sites]]
name = "slow"
url = "{slow}"
interval = "2s"
timeout = "1500ms"

[[sites]]
name = "hangs"
url = "{hang}"
interval = "2s"
timeout = "700ms"

[[sites]]
name = "closed"
url = "http://127.0.0.1:{closed}/"
interval = "2s"
timeout = "1s"

[[sites]]
name = "loop"
url = "{redirect}"
interval = "2s"
timeout = "1s"

[[sites]]
name = "rich"
url = "{headers}"
interval = "2s"
timeout = "1s"
forbidden_regex = "(?i)fatal error"
expect_headers = [{{ name = "x-debug", absent = true }}]

[[sites]]
name = "not-json"
url = "{up}?json"
interval = "2s"
timeout = "1s"
json = [{{ path = "$.status", equals = "ok" }}]

[[sites]]
name = "tcp-up"
url = "tcp://{addr}"
interval = "2s"
timeout = "1s"

[[sites]]
name = "tcp-closed"
url = "tcp://127.0.0.1:{closed}"
interval = "2s"
timeout = "1s"

[[sites]]
name = "tls-up"
url = "tls://localhost:{tls}"
interval = "2s"
timeout = "1s"
verify_tls = false

[[sites]]
name = "dns-up"
url = "dns://{dns}/www.sitewatch.test?type=A"
interval = "2s"
timeout = "1s"
expect_answer = "192.0.2.7"
"#,
        dns = dns.addr,
        tls = tls.addr.port(),
        addr = target.addr,
        up = target.url("/ok"),
        err = target.url("/500"),
        slow = target.url("/delay/300"),
        hang = target.url("/hang"),
        redirect = target.url("/loop"),
        headers = target.url("/headers"),
    );
    let cfg = TestConfig::new(&db, &sites);
    let stop = CancellationToken::new();
    let daemon = tokio::spawn(daemon::run(cfg.load(), &[], stop.clone(), no_reloads()));

    let client = db.client().await;
    wait_for(
        "a checked row for every site",
        Duration::from_secs(60),
        || async {
            let n: i64 = client
                .query_one(
                    "SELECT count(DISTINCT site) FROM check_results WHERE outcome <> 'skipped'",
                    &[],
                )
                .await
                .map(|r| r.get(0))
                .unwrap_or(0);
            n == 13
        },
    )
    .await;
    // A few more slots, for the one-row-per-slot check below.
    wait_for(
        "four slots of every site",
        Duration::from_secs(60),
        || async {
            let n: i64 = client
                .query_one(
                    "SELECT count(*) FROM (SELECT site FROM check_results GROUP BY site
                                       HAVING count(*) >= 4) s",
                    &[],
                )
                .await
                .map(|r| r.get(0))
                .unwrap_or(0);
            n == 13
        },
    )
    .await;
    stop.cancel();
    daemon.await.unwrap().unwrap();

    let row = |site: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(
                    "SELECT outcome, status_code, response_time_ms, regex_matched, error_kind
                     FROM check_results WHERE site = $1 AND outcome <> 'skipped'
                     ORDER BY scheduled_at LIMIT 1",
                    &[&site],
                )
                .await
                .unwrap()
        }
    };
    type Row = (
        String,
        Option<i16>,
        Option<f64>,
        Option<bool>,
        Option<String>,
    );
    let get =
        |r: tokio_postgres::Row| -> Row { (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)) };

    let (o, code, ms, re, kind) = get(row("up").await);
    assert_eq!(
        (o.as_str(), code, re, kind),
        ("up", Some(200), Some(true), None)
    );
    assert!(ms.unwrap() < 250.0, "{ms:?}");

    let (o, code, _, re, kind) = get(row("error").await);
    assert_eq!((o.as_str(), code, re), ("down", Some(500), None));
    assert_eq!(kind.as_deref(), Some("unexpected_status"));

    let (o, code, _, re, kind) = get(row("regex-miss").await);
    assert_eq!((o.as_str(), code, re), ("down", Some(200), Some(false)));
    assert_eq!(kind.as_deref(), Some("regex_mismatch"));

    let (o, code, ms, _, _) = get(row("slow").await);
    assert_eq!((o.as_str(), code), ("up", Some(200)));
    let ms = ms.unwrap();
    assert!(
        (300.0..400.0).contains(&ms),
        "response time {ms} ms for a 300 ms delay"
    );

    let (o, code, ms, _, kind) = get(row("hangs").await);
    assert_eq!((o.as_str(), code, ms), ("down", None, None));
    assert_eq!(kind.as_deref(), Some("timeout"));

    let (o, code, _, _, kind) = get(row("closed").await);
    assert_eq!((o.as_str(), code), ("down", None));
    assert_eq!(kind.as_deref(), Some("connect"));

    let (o, _, _, _, kind) = get(row("loop").await);
    assert_eq!(o.as_str(), "down");
    assert_eq!(kind.as_deref(), Some("redirect_loop"));

    let (o, code, _, _, kind) = get(row("not-json").await);
    assert_eq!((o.as_str(), code), ("down", Some(200)));
    assert_eq!(kind.as_deref(), Some("json_mismatch"));

    // Each row says its kind; tcp:// rows are checked through the same
    // topics and persisters.
    let kinds: Vec<(String, String, String)> = client
        .query(
            "SELECT DISTINCT site, kind, outcome FROM check_results
             WHERE site IN ('tcp-up', 'tcp-closed', 'up', 'dns-up', 'tls-up')
               AND outcome <> 'skipped'
             ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let owned = |a: &str, b: &str, c: &str| (a.to_owned(), b.to_owned(), c.to_owned());
    assert_eq!(
        kinds,
        [
            owned("dns-up", "dns", "up"),
            owned("tcp-closed", "tcp", "down"),
            owned("tcp-up", "tcp", "up"),
            owned("tls-up", "tls", "up"),
            owned("up", "http", "up")
        ]
    );
    // Every kind: one row per slot, and no slot missing between a site's
    // first row and the slots still in flight when the daemon stopped.
    let per_site = client
        .query(
            "SELECT site, count(*), count(DISTINCT scheduled_at),
                    (extract(epoch FROM max(scheduled_at) - min(scheduled_at)) / 2 + 1)::int8
             FROM check_results
             WHERE scheduled_at <= (SELECT max(scheduled_at) FROM check_results) - interval '4 s'
             GROUP BY site",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(per_site.len(), 13, "every site has settled slots");
    for r in &per_site {
        let (site, rows, slots, span): (String, i64, i64, i64) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        assert_eq!((rows, slots), (span, span), "{site}: rows, slots, span");
    }
    let answers: serde_json::Value = client
        .query_one(
            "SELECT answers FROM check_results WHERE site = 'dns-up' AND outcome = 'up' LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(answers, serde_json::json!(["NOERROR", "A 192.0.2.7"]));

    // The rich columns: every failed assertion, and the breakdown.
    let rich = client
        .query_one(
            "SELECT outcome, error_kind, failures, dns_ms, connect_ms, tls_ms, ttfb_ms,
                    transfer_ms, response_time_ms, http_version, remote_addr
             FROM check_results WHERE site = 'rich' AND outcome <> 'skipped'
             ORDER BY scheduled_at LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rich.get::<_, String>(0), "down");
    assert_eq!(
        rich.get::<_, Option<String>>(1).as_deref(),
        Some("forbidden_match")
    );
    let failures: serde_json::Value = rich.get(2);
    let names: Vec<&str> = failures
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["assertion"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["forbidden_regex", "header x-debug"], "{failures}");
    let phases: Vec<Option<f64>> = (3..8).map(|i| rich.get(i)).collect();
    assert_eq!(
        (phases[0], phases[2]),
        (None, None),
        "no DNS, no TLS: {phases:?}"
    );
    let sum: f64 = phases.iter().flatten().sum();
    let total: f64 = rich.get(8);
    assert!(sum > 0.0 && sum <= total + 0.5, "{phases:?} vs {total}");
    assert_eq!(
        rich.get::<_, Option<String>>(9).as_deref(),
        Some("HTTP/1.1")
    );
    assert_eq!(
        rich.get::<_, Option<String>>(10),
        Some(target.addr.to_string())
    );
}

/// A site checked every hour whose daemon was down when its slot came, and
/// back 5 s later, gets that slot checked (marked late), not recorded as
/// missed: the latest missed slot is still checked while within its
/// deadline (one interval).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hourly_slot_due_while_the_daemon_restarts_is_checked_late() {
    let target = Target::start().await;
    let db = TestDb::create().await;
    let hour = Duration::from_secs(3600);
    // A name whose hourly slot comes 20-35 s from now.
    let now = chrono::Utc::now();
    let (name, slot) = (0..)
        .map(|k| format!("hourly-{k}"))
        .map(|n| {
            let s = Cadence::new(&n, hour).first_at_or_after(now);
            (n, s)
        })
        .find(|(_, s)| (20_000..35_000).contains(&(*s - now).num_milliseconds()))
        .unwrap();
    let sites = format!(
        "[[sites]]\nname = \"{name}\"\nurl = \"{}\"\ninterval = \"1h\"\ntimeout = \"2s\"\n",
        target.url("/ok")
    );
    let cfg = TestConfig::new(&db, &sites);
    let client = db.client().await;

    // First run: the site is taken on (its history starts at `slot`), and
    // the daemon stops before the slot is due.
    let stop = CancellationToken::new();
    let daemon = tokio::spawn(daemon::run(cfg.load(), &[], stop.clone(), no_reloads()));
    wait_for("the site taken on", Duration::from_secs(30), || async {
        count(&client, "SELECT count(*) FROM schedule_progress").await == 1
    })
    .await;
    stop.cancel();
    daemon.await.unwrap().unwrap();
    assert!(chrono::Utc::now() < slot, "stopped before the slot");

    // Down while the slot falls due; back 5 s after it.
    let back = slot + chrono::Duration::seconds(5);
    wait_for("5 s past the slot", Duration::from_secs(60), || async {
        chrono::Utc::now() >= back
    })
    .await;
    let stop = CancellationToken::new();
    let daemon = tokio::spawn(daemon::run(cfg.load(), &[], stop.clone(), no_reloads()));
    wait_for("the slot's row", Duration::from_secs(60), || async {
        count(&client, "SELECT count(*) FROM check_results").await >= 1
    })
    .await;
    stop.cancel();
    daemon.await.unwrap().unwrap();

    let rows = client
        .query(
            "SELECT scheduled_at, outcome, late FROM check_results ORDER BY scheduled_at",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "one row, no missed_slot placeholder");
    let (at, outcome, late): (chrono::DateTime<chrono::Utc>, String, bool) =
        (rows[0].get(0), rows[0].get(1), rows[0].get(2));
    assert_eq!(at, slot);
    assert_eq!(outcome, "up");
    assert!(late, "marked late");
}
