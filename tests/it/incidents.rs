//! Incidents and alerts with two instances running: a site failing twice
//! opens exactly one incident and sends exactly one webhook; recovery
//! resolves it with one more; a maintenance window silences a site's alerts
//! and marks its results.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::{get, post};
use sitewatch::daemon;
use tokio_util::sync::CancellationToken;

use crate::support::{free_addr, no_reloads, wait_for, TestConfig, TestDb};

/// What both tests stand on: a flipping target, a webhook receiver and a
/// database.
struct Scene {
    healthy: Arc<AtomicBool>,
    target: SocketAddr,
    received: Arc<Mutex<Vec<serde_json::Value>>>,
    hook: SocketAddr,
    db: TestDb,
}

impl Scene {
    async fn start(healthy: bool) -> Scene {
        let healthy = Arc::new(AtomicBool::new(healthy));
        let received = Arc::new(Mutex::new(Vec::new()));
        Scene {
            target: flipping_target(healthy.clone()).await,
            hook: webhook(received.clone()).await,
            healthy,
            received,
            db: TestDb::create().await,
        }
    }
}

/// A target whose `/flip` answers 200 or 500 as the test says.
pub(crate) async fn flipping_target(healthy: Arc<AtomicBool>) -> SocketAddr {
    let app = axum::Router::new().route(
        "/flip",
        get(move || {
            let ok = healthy.load(Ordering::SeqCst);
            async move {
                if ok {
                    (axum::http::StatusCode::OK, "fine")
                } else {
                    (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "broken")
                }
            }
        }),
    );
    serve(app).await
}

/// A webhook receiver keeping every body it gets.
async fn webhook(received: Arc<Mutex<Vec<serde_json::Value>>>) -> SocketAddr {
    let app = axum::Router::new().route(
        "/hook",
        post(move |body: String| {
            let received = received.clone();
            async move {
                received
                    .lock()
                    .unwrap()
                    .push(serde_json::from_str(&body).unwrap_or_default());
                "ok"
            }
        }),
    );
    serve(app).await
}

/// Incidents settled after 1 s and alerts in Slack format to `hook`; the
/// `[alerts]` table is left open for more keys.
fn slack_alerts(hook: SocketAddr) -> String {
    format!(
        r#"
[incidents]
settle = "1s"

[alerts]
webhook_url = "http://{hook}/hook"
format = "slack"
"#
    )
}

/// The `text` of every Slack-format webhook received so far.
fn slack_texts(received: &Mutex<Vec<serde_json::Value>>) -> Vec<String> {
    received
        .lock()
        .unwrap()
        .iter()
        .map(|v| v["text"].as_str().unwrap_or("").to_owned())
        .collect()
}

pub(crate) async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_open_one_incident_and_send_one_alert_per_event() {
    let Scene {
        healthy,
        target,
        received,
        hook,
        db,
    } = Scene::start(true).await;
    let now = chrono::Utc::now();
    let cfg = TestConfig::new(
        &db,
        &format!(
            r#"
[incidents]
settle = "1s"

[alerts]
webhook_url = "http://{hook}/hook"

[[sites]]
name = "flaky"
url = "http://{target}/flip"
interval = "1s"
timeout = "500ms"
failure_threshold = 2

[[sites]]
name = "maintained"
url = "http://{target}/flip?m=1"
interval = "1s"
timeout = "500ms"
maintenance = [{{ from = "{from}", to = "{to}" }}]
"#,
            from = (now - chrono::Duration::hours(1)).to_rfc3339(),
            to = (now + chrono::Duration::hours(1)).to_rfc3339(),
        ),
    );
    let stop = CancellationToken::new();
    let mut second = cfg.load();
    second.admin.listen = free_addr();
    // Two members of each consumer group: each needs its own static id.
    second.kafka.instance_id = Some("second".into());
    let a = tokio::spawn(daemon::run(cfg.load(), &[], stop.clone(), no_reloads()));
    let b = tokio::spawn(daemon::run(second, &[], stop.clone(), no_reloads()));
    let client = db.client().await;
    let count = |sql: &'static str| crate::support::count(&client, sql);
    wait_for("checks of both sites", Duration::from_secs(60), || async {
        count("SELECT count(DISTINCT site) FROM check_results WHERE outcome = 'up'").await == 2
    })
    .await;

    healthy.store(false, Ordering::SeqCst);
    let events = |received: &Arc<Mutex<Vec<serde_json::Value>>>| {
        received
            .lock()
            .unwrap()
            .iter()
            .map(|v| {
                format!(
                    "{} {}",
                    v["site"].as_str().unwrap_or("?"),
                    v["event"].as_str().unwrap_or("?")
                )
            })
            .collect::<Vec<_>>()
    };
    wait_for("the incident's alert", Duration::from_secs(60), || async {
        !events(&received).is_empty()
    })
    .await;
    // Failures go on for a while: still one incident, one alert.
    wait_for("more failures", Duration::from_secs(60), || async {
        count("SELECT max(failures)::int8 FROM incidents WHERE site = 'flaky'").await >= 5
    })
    .await;
    assert_eq!(events(&received), ["flaky opened"]);
    wait_for(
        "the maintained site's incident, opened silently",
        Duration::from_secs(60),
        || async { count("SELECT count(*) FROM incidents WHERE site = 'maintained'").await == 1 },
    )
    .await;
    assert_eq!(events(&received), ["flaky opened"]);

    healthy.store(true, Ordering::SeqCst);
    wait_for("the recovery's alert", Duration::from_secs(60), || async {
        events(&received).len() >= 2
    })
    .await;
    wait_for(
        "the maintained site's incident resolved",
        Duration::from_secs(60),
        || async { count("SELECT count(*) FROM incidents WHERE resolved_at IS NULL").await == 0 },
    )
    .await;
    stop.cancel();
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();

    // One incident per site, each opened and resolved once; alerts only for
    // the site outside maintenance, one per event, each delivery recorded.
    assert_eq!(events(&received), ["flaky opened", "flaky resolved"]);
    let first = received.lock().unwrap()[0].clone();
    assert!(
        first["incident"]["cause"]
            .as_str()
            .unwrap()
            .contains("unexpected_status"),
        "{first}"
    );
    assert_eq!(
        count("SELECT count(*) FROM incidents WHERE site = 'flaky'").await,
        1
    );
    assert_eq!(
        count("SELECT count(*) FROM incidents WHERE site = 'maintained'").await,
        1
    );
    assert_eq!(
        count("SELECT count(*) FROM incidents WHERE site = 'maintained' AND in_maintenance").await,
        1
    );
    assert_eq!(
        count("SELECT count(*) FROM alert_deliveries WHERE status_code = 200").await,
        2
    );
    assert_eq!(
        count("SELECT count(*) FROM alert_outbox WHERE delivered_at IS NULL").await,
        0
    );
    // The incident spans the failing checks: opened at the first, resolved
    // at the first success after them.
    let row = client
        .query_one(
            "SELECT i.failures::int8,
                    (SELECT count(*) FROM check_results r WHERE r.site = 'flaky' AND r.outcome = 'down'
                       AND r.scheduled_at >= i.opened_at AND r.scheduled_at < i.resolved_at)
             FROM incidents i WHERE i.site = 'flaky'",
            &[],
        )
        .await
        .unwrap();
    let (failures, down_rows): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(
        failures, down_rows,
        "every failing check of the incident counted once"
    );
    // Results of the maintained site are marked; the others are not.
    assert!(
        count("SELECT count(*) FROM check_results WHERE site = 'maintained' AND in_maintenance")
            .await
            > 0
    );
    assert_eq!(
        count("SELECT count(*) FROM check_results WHERE site = 'flaky' AND in_maintenance").await,
        0
    );
}

/// While an incident stays open, a reminder goes out every `remind_every`;
/// none once it is resolved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_incident_is_reminded_until_resolved() {
    let Scene {
        healthy,
        target,
        received,
        hook,
        db,
    } = Scene::start(false).await;
    let cfg = TestConfig::new(
        &db,
        &format!(
            r#"{}remind_every = "2s"

[[sites]]
name = "down"
url = "http://{target}/flip"
interval = "1s"
timeout = "500ms"
"#,
            slack_alerts(hook)
        ),
    );
    let stop = CancellationToken::new();
    let daemon = tokio::spawn(daemon::run(cfg.load(), &[], stop.clone(), no_reloads()));
    let texts = || slack_texts(&received);
    wait_for("two reminders", Duration::from_secs(60), || async {
        texts().iter().filter(|t| t.contains("still down")).count() >= 2
    })
    .await;
    healthy.store(true, Ordering::SeqCst);
    wait_for("the recovery", Duration::from_secs(60), || async {
        texts().iter().any(|t| t.contains("is up again"))
    })
    .await;
    let client = db.client().await;
    // Evaluation passes go on for more than a reminder period after the
    // recovery was queued: none of them may queue a reminder.
    wait_for(
        "passes after the recovery",
        Duration::from_secs(30),
        || async {
            crate::support::count(
                &client,
                "SELECT count(*) FROM incident_watermark
             WHERE evaluated_until > (SELECT created_at FROM alert_outbox WHERE event = 'resolved')
                                     + interval '3 seconds'",
            )
            .await
                == 1
        },
    )
    .await;
    let late = crate::support::count(
        &client,
        "SELECT count(*) FROM alert_outbox
         WHERE event = 'reminder'
           AND created_at > (SELECT created_at FROM alert_outbox WHERE event = 'resolved')",
    )
    .await;
    stop.cancel();
    daemon.await.unwrap().unwrap();

    let all = texts();
    assert!(all[0].contains("*down* is down"), "{all:?}");
    assert!(all.last().unwrap().contains("is up again"), "{all:?}");
    assert_eq!(
        all.iter().filter(|t| t.contains("is down")).count(),
        1,
        "one opening alert: {all:?}"
    );
    assert_eq!(late, 0, "no reminder queued after the recovery: {all:?}");
}

/// A site removed from the config while its incident is open: no check will
/// ever resolve it, so the evaluator resolves it as `site removed` and says
/// so to the webhook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_incident_of_a_removed_site_is_resolved_as_removed() {
    let Scene {
        target,
        received,
        hook,
        db,
        ..
    } = Scene::start(false).await;
    let head = slack_alerts(hook);
    let site = |name: &str| {
        format!(
            "[[sites]]\nname = \"{name}\"\nurl = \"http://{target}/flip?{name}\"\ninterval = \"1s\"\ntimeout = \"500ms\"\n"
        )
    };
    let cfg = TestConfig::new(&db, &format!("{head}{}{}", site("gone"), site("stays")));
    let (reload, reloads) = tokio::sync::mpsc::channel(1);
    let stop = CancellationToken::new();
    let daemon = tokio::spawn(daemon::run(cfg.load(), &[], stop.clone(), reloads));
    let client = db.client().await;
    let count = |sql: &'static str| crate::support::count(&client, sql);
    wait_for("both incidents open", Duration::from_secs(60), || async {
        count("SELECT count(*) FROM incidents WHERE resolved_at IS NULL").await == 2
    })
    .await;

    cfg.set_sites(&format!("{head}{}", site("stays")));
    reload.send(()).await.unwrap();
    wait_for(
        "the removed site's incident resolved",
        Duration::from_secs(60),
        || async {
            count(
                "SELECT count(*) FROM incidents WHERE site = 'gone'
                 AND resolved_at IS NOT NULL AND resolution = 'site removed'",
            )
            .await
                == 1
        },
    )
    .await;
    let texts = || slack_texts(&received);
    wait_for("the closing notice", Duration::from_secs(60), || async {
        texts()
            .iter()
            .any(|t| t.contains("*gone*") && t.contains("site removed"))
    })
    .await;
    // The site that stays is still down, its incident still open.
    assert_eq!(
        count("SELECT count(*) FROM incidents WHERE site = 'stays' AND resolved_at IS NULL").await,
        1
    );
    assert_eq!(
        count("SELECT count(*) FROM site_state WHERE site = 'gone'").await,
        0
    );
    stop.cancel();
    daemon.await.unwrap().unwrap();
}
