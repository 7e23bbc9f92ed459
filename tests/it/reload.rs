//! Reloads apply `[alerts]` and `[status_page]` at once, and the pairing
//! rule holds through the daemon whole: a receiver per channel, a site
//! made to fail and recover, maintenance windows and routes changed by
//! reload while incidents are open. Every `opened` a channel received gets
//! exactly one `resolved` on that channel, and no channel hears of an
//! incident it was not told of. (Flap damping is off here: this site
//! fails and recovers on purpose; `flapping.rs` tests the damping.)

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Path;
use axum::routing::post;
use sitewatch::daemon;
use tokio_util::sync::CancellationToken;

use crate::incidents::{flipping_target, serve};
use crate::support::{free_addr, wait_for, TestConfig, TestDb};

/// What every channel's receiver got: (path it was posted to, body).
type Got = Arc<Mutex<Vec<(String, serde_json::Value)>>>;

/// One receiver for all channels, told apart by path (`/a`, `/a2`, `/b`).
async fn receivers(got: Got) -> SocketAddr {
    let app = axum::Router::new().route(
        "/{path}",
        post(move |Path(path): Path<String>, body: String| {
            let got = got.clone();
            async move {
                let v = serde_json::from_str(&body).unwrap_or_default();
                got.lock().unwrap().push((path, v));
                "ok"
            }
        }),
    );
    serve(app).await
}

/// The scene's config, as the test edits it.
#[derive(Clone)]
struct Scene {
    hooks: SocketAddr,
    target: SocketAddr,
    api: SocketAddr,
    title: &'static str,
    listed: Vec<&'static str>,
    /// Path channel `a` posts to.
    a_path: &'static str,
    /// The site's `alert_channels`.
    route: Vec<&'static str>,
    maintenance: bool,
}

impl Scene {
    fn config(&self) -> String {
        let listed: Vec<String> = self.listed.iter().map(|s| format!("\"{s}\"")).collect();
        let route: Vec<String> = self.route.iter().map(|s| format!("\"{s}\"")).collect();
        let (hooks, target) = (self.hooks, self.target);
        let mut text = format!(
            "[incidents]\nsettle = \"1s\"\nflap_changes = 0\n[api]\nlisten = \"{}\"\n\
             [status_page]\nenabled = true\ntitle = \"{}\"\nrefresh = \"1s\"\nsites = [{}]\n",
            self.api,
            self.title,
            listed.join(", ")
        );
        for (name, path) in [("a", self.a_path), ("b", "b"), ("c", "c")] {
            text.push_str(&format!(
                "[[alerts.channels]]\nname = \"{name}\"\nkind = \"webhook\"\nurl = \"http://{hooks}/{path}\"\n"
            ));
        }
        text.push_str(&format!(
            "[[sites]]\nname = \"flip\"\nurl = \"http://{target}/flip\"\ninterval = \"1s\"\n\
             timeout = \"500ms\"\nfailure_threshold = 1\nalert_channels = [{}]\n",
            route.join(", ")
        ));
        if self.maintenance {
            let now = chrono::Utc::now();
            text.push_str(&format!(
                "maintenance = [{{ from = \"{}\", to = \"{}\" }}]\n",
                (now - chrono::Duration::hours(1)).to_rfc3339(),
                (now + chrono::Duration::hours(1)).to_rfc3339()
            ));
        }
        text.push_str(&format!(
            "[[sites]]\nname = \"other\"\nurl = \"http://{target}/flip?other\"\ninterval = \"1s\"\n\
             timeout = \"500ms\"\nalert_channels = []\n"
        ));
        text
    }
}

/// Channel of a receiver path (`a2` is channel `a` after its URL changed).
fn channel(path: &str) -> &str {
    &path[..1]
}

/// Per (incident, channel): how many of each event.
fn tally(got: &Got) -> BTreeMap<(i64, String), BTreeMap<String, usize>> {
    let mut t: BTreeMap<(i64, String), BTreeMap<String, usize>> = BTreeMap::new();
    for (path, v) in got.lock().unwrap().iter() {
        let id = v["incident"]["id"].as_i64().unwrap_or(-1);
        let event = v["event"].as_str().unwrap_or("?").to_owned();
        *t.entry((id, channel(path).to_owned()))
            .or_default()
            .entry(event)
            .or_default() += 1;
    }
    t
}

async fn reload(cfg: &TestConfig, scene: &Scene, tx: &tokio::sync::mpsc::Sender<()>) {
    cfg.set_sites(&scene.config());
    tx.send(()).await.unwrap();
}

/// Waits until `channels` (and only they) have `event` of the newest
/// incident.
async fn told(got: &Got, db: &TestDb, event: &str, channels: &[&str]) {
    let client = db.client().await;
    let want: Vec<String> = channels.iter().map(|c| c.to_string()).collect();
    wait_for(
        &format!("{event} of the newest incident on {channels:?}"),
        Duration::from_secs(60),
        || async {
            // Until migrations ran, there is no table and no incident.
            let Ok(row) = client
                .query_one("SELECT max(id) FROM incidents WHERE site = 'flip'", &[])
                .await
            else {
                return false;
            };
            let Some(id) = row.get::<_, Option<i64>>(0) else {
                return false;
            };
            let have: Vec<String> = tally(got)
                .into_iter()
                .filter(|((i, _), e)| *i == id && e.contains_key(event))
                .map(|((_, c), _)| c)
                .collect();
            have == want
        },
    )
    .await;
}

/// One daemon through the maintenance and route cases, then a SIGHUP that
/// changes the status page's title and listed sites and a channel's URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_apply_at_once_and_every_opened_is_resolved_once_on_its_channel() {
    let got: Got = Arc::default();
    let healthy = Arc::new(AtomicBool::new(false));
    let mut scene = Scene {
        hooks: receivers(got.clone()).await,
        target: flipping_target(healthy.clone()).await,
        api: free_addr(),
        title: "Before",
        listed: vec!["flip"],
        a_path: "a",
        route: vec!["a", "b"],
        maintenance: false,
    };
    let db = TestDb::create().await;
    let cfg = TestConfig::new(&db, &scene.config());
    let (tx, reloads) = tokio::sync::mpsc::channel(1);
    let stop = CancellationToken::new();
    let run = tokio::spawn(daemon::run(cfg.load(), &[], stop.clone(), reloads));
    let set = |up: bool| healthy.store(up, Ordering::SeqCst);

    // 1. Opened on a and b; a window begins (reload); it recovers inside
    //    the window: both are still told.
    told(&got, &db, "opened", &["a", "b"]).await;
    scene.maintenance = true;
    reload(&cfg, &scene, &tx).await;
    set(true);
    told(&got, &db, "resolved", &["a", "b"]).await;

    // 2. Down inside the window: held. The route becomes a and c, then the
    //    window ends: the opening goes out to a and c, and so does the end.
    set(false);
    let client = db.client().await;
    wait_for("the held incident", Duration::from_secs(60), || async {
        crate::support::count(
            &client,
            "SELECT count(*) FROM incidents WHERE site = 'flip' AND resolved_at IS NULL",
        )
        .await
            == 1
    })
    .await;
    scene.route = vec!["a", "c"];
    reload(&cfg, &scene, &tx).await;
    scene.maintenance = false;
    reload(&cfg, &scene, &tx).await;
    told(&got, &db, "opened", &["a", "c"]).await;

    // 3. Still open: the route becomes b alone, channel a's URL changes and
    //    the status page is retitled and lists `other`. The end goes to a
    //    (at its new URL) and c, never to b.
    scene.route = vec!["b"];
    scene.a_path = "a2";
    scene.title = "After";
    scene.listed = vec!["flip", "other"];
    reload(&cfg, &scene, &tx).await;
    let page = format!("http://{}/status", scene.api);
    wait_for(
        "the new title and listed site",
        Duration::from_secs(30),
        || async {
            let body = match reqwest::get(&page).await {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            body.contains("<title>After") && body.contains("data-site=\"other\"")
        },
    )
    .await;
    set(true);
    told(&got, &db, "resolved", &["a", "c"]).await;
    assert!(
        got.lock()
            .unwrap()
            .iter()
            .any(|(p, v)| p == "a2" && v["event"] == "resolved"),
        "channel a's resolve went to its new URL"
    );

    stop.cancel();
    run.await.unwrap().unwrap();
    for ((id, channel), events) in tally(&got) {
        let n = |e: &str| events.get(e).copied().unwrap_or(0);
        assert_eq!(
            (n("opened"), n("resolved")),
            (1, 1),
            "incident {id} on {channel}: {events:?}"
        );
    }
}

/// A reload whose `[alerts]` the sender could not take (a template that
/// `validate` refuses) is refused whole: channel `a` keeps its URL, the
/// evaluator never routes to `b`, and nothing is queued that nobody sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_the_alert_sender_cannot_take_is_refused_whole() {
    let got: Got = Arc::default();
    let healthy = Arc::new(AtomicBool::new(true));
    let scene = Scene {
        hooks: receivers(got.clone()).await,
        target: flipping_target(healthy.clone()).await,
        api: free_addr(),
        title: "Before",
        listed: vec!["flip"],
        a_path: "a",
        route: vec!["a"],
        maintenance: false,
    };
    let db = TestDb::create().await;
    let cfg = TestConfig::new(&db, &scene.config());
    let (tx, reloads) = tokio::sync::mpsc::channel(1);
    let stop = CancellationToken::new();
    let run = tokio::spawn(daemon::run(cfg.load(), &[], stop.clone(), reloads));
    let client = db.client().await;
    wait_for("the first result", Duration::from_secs(60), || async {
        crate::support::count(
            &client,
            "SELECT count(*) FROM check_results WHERE site = 'flip'",
        )
        .await
            > 0
    })
    .await;

    // Channel a moves, channel b renders a body that is not JSON, and the
    // site is routed to both.
    let bad = Scene {
        a_path: "a2",
        route: vec!["a", "b"],
        ..scene.clone()
    }
    .config()
    .replace(
        &format!("url = \"http://{}/b\"\n", scene.hooks),
        &format!(
            "url = \"http://{}/b\"\ntemplate = \"{{{{ site }}}}\"\n",
            scene.hooks
        ),
    );
    assert!(bad.contains("template"), "{bad}");
    cfg.set_sites(&bad);
    // The daemon takes one reload at a time from a channel of one: the
    // third send returns once the second was taken, so once the first was
    // handled (the later two read the same file).
    for _ in 0..3 {
        tx.send(()).await.unwrap();
    }
    healthy.store(false, Ordering::SeqCst);
    told(&got, &db, "opened", &["a"]).await;
    stop.cancel();
    run.await.unwrap().unwrap();
    let channels: Vec<String> = client
        .query("SELECT DISTINCT channel FROM alert_outbox", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(channels, ["a"], "only the running config's route");
    let paths: Vec<String> = got.lock().unwrap().iter().map(|g| g.0.clone()).collect();
    assert!(
        paths.iter().all(|p| p == "a"),
        "the old URL kept: {paths:?}"
    );
}

/// A reload that lands between the alert sender's start and its first
/// poll is taken (it was once marked seen and dropped): channel `b`, added
/// by it, sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_before_the_alert_sender_runs_is_taken() {
    let got: Got = Arc::default();
    let hooks = receivers(got.clone()).await;
    let db = TestDb::create().await;
    sitewatch::store::migrate(&mut db.client().await)
        .await
        .unwrap();
    let text = |b: bool| {
        let mut t = format!(
            "[[alerts.channels]]\nname = \"a\"\nkind = \"webhook\"\nurl = \"http://{hooks}/a\"\n"
        );
        if b {
            t.push_str(&format!(
                "[[alerts.channels]]\nname = \"b\"\nkind = \"webhook\"\nurl = \"http://{hooks}/b\"\n"
            ));
        }
        t + "[[sites]]\nname = \"s\"\nurl = \"https://s.example/\"\n"
    };
    let cfg = TestConfig::new(&db, &text(false));
    let (settings, _) = cfg.load_shared();
    let (tx, rx) = tokio::sync::watch::channel(settings.clone());
    let sender = sitewatch::alerts::AlertSender::new(
        rx,
        sitewatch::store::pool(&settings).unwrap(),
        "test",
        sitewatch::liveness::Beat::detached("alerts"),
    )
    .unwrap();
    cfg.set_sites(&text(true));
    tx.send_replace(cfg.load_shared().0);
    db.client()
        .await
        .batch_execute(
            "INSERT INTO incidents (id, site, opened_at, cause, failures, first_failing_check,
                                    last_failing_check)
             VALUES (1, 's', now(), 'connect: refused', 1, gen_random_uuid(), gen_random_uuid());
             INSERT INTO alert_outbox (incident_id, event, channel) VALUES (1, 'opened', 'b');",
        )
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let run = tokio::spawn(sender.run(stop.clone()));
    wait_for("channel b's post", Duration::from_secs(30), || async {
        got.lock().unwrap().iter().any(|(p, _)| p == "b")
    })
    .await;
    stop.cancel();
    run.await.unwrap();
}
