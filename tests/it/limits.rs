//! The listeners under a careless or hostile client: more idle connections
//! than `connections.max`, a request head dripped byte by byte, and the
//! missing-credentials bypass. The monitor must keep checking and keep
//! answering `/readyz` meanwhile.

use std::net::SocketAddr;
use std::time::Duration;

use chrono::Utc;
use sitewatch::config::{ConnectionLimits, Secret};
use sitewatch::daemon;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::support::{free_addr, no_reloads, wait_for, TestConfig, TestDb};
use crate::target::Target;

/// `cfg`'s settings with the API on a free port, private targets allowed
/// (the targets are local) and `token` its one token.
fn api_on(cfg: &TestConfig, token: &str) -> sitewatch::config::Settings {
    let mut settings = cfg.load();
    settings.api.enabled = true;
    settings.api.listen = free_addr();
    settings.api.allow_private_targets = true;
    settings.api_tokens = vec![Secret::new(token)];
    settings
}

/// True once the server has closed `s` (EOF or reset), within `limit`.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(limit, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_connections_are_capped_and_closed_while_checks_go_on() {
    const MAX: usize = 20;
    let target = Target::start().await;
    let db = TestDb::create().await;
    let cfg = TestConfig::new(
        &db,
        &format!(
            "[[sites]]\nname = \"s\"\nurl = \"{}\"\ninterval = \"1s\"\ntimeout = \"500ms\"\n",
            target.url("/ok")
        ),
    );
    let mut settings = cfg.load();
    settings.api.enabled = true;
    settings.api.listen = free_addr();
    settings.api_tokens = vec![Secret::new("a-token-of-some-length")];
    settings.api.connections = ConnectionLimits {
        max: MAX,
        max_per_address: MAX,
        idle_timeout: Duration::from_secs(3),
        header_timeout: Duration::from_secs(2),
    };
    let api: SocketAddr = settings.api.listen;
    let admin = cfg.admin;
    let stop = CancellationToken::new();
    let running = tokio::spawn(daemon::run(settings, &[], stop.clone(), no_reloads()));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let ready = || async {
        http.get(format!("http://{admin}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    };
    wait_for("the daemon ready", Duration::from_secs(60), ready).await;

    // Five times the cap, all idle.
    let mut idle = Vec::new();
    for _ in 0..MAX * 5 {
        idle.push(TcpStream::connect(api).await.unwrap());
    }
    let flood = Utc::now();
    // Past the cap, connections are closed on arrival.
    let mut refused = 0;
    for s in idle.iter_mut() {
        if closed_within(s, Duration::from_millis(200)).await {
            refused += 1;
        }
    }
    assert!(
        refused >= MAX * 4,
        "only {refused} of {} closed on arrival",
        MAX * 5
    );
    // The monitor goes on: ready, and checking.
    assert!(ready().await, "/readyz during the flood");
    let client = db.client().await;
    wait_for(
        "checks during the flood",
        Duration::from_secs(30),
        || async {
            client
                .query_one(
                    "SELECT count(*) FROM check_results WHERE outcome = 'up' AND scheduled_at > $1",
                    &[&flood],
                )
                .await
                .is_ok_and(|r| r.get::<_, i64>(0) >= 3)
        },
    )
    .await;
    // Idle ones are closed after idle_timeout (3 s), freeing the slots.
    for s in idle.iter_mut() {
        assert!(
            closed_within(s, Duration::from_secs(10)).await,
            "an idle connection outlived idle_timeout"
        );
    }
    drop(idle);

    // A request head dripped a byte at a time is cut at header_timeout
    // (2 s), although bytes keep coming.
    let mut slow = TcpStream::connect(api).await.unwrap();
    let started = std::time::Instant::now();
    let mut cut = false;
    for b in b"GET /v1/sites HTTP/1.1\r\nHost: x\r\nX-Slow: "
        .iter()
        .cycle()
        .take(200)
    {
        if slow.write_all(&[*b]).await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await; // the drip itself
        if started.elapsed() > Duration::from_secs(15) {
            break;
        }
    }
    let cut = cut || closed_within(&mut slow, Duration::from_secs(1)).await;
    assert!(cut, "a dripped head was not cut");

    // No credentials, no access (an empty token can no longer be set).
    let r = http
        .get(format!("http://{api}/v1/sites"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(format!("http://{api}/v1/sites"))
        .header("authorization", "bearer a-token-of-some-length")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "a lowercase bearer scheme");

    stop.cancel();
    running.await.unwrap().unwrap();
}

/// A token holder sending many distinct regexes: on-demand patterns are
/// compiled for their check only, so the daemon's memory does not keep
/// them (it used to keep each with its 2 MiB DFA cache, 10,000 of them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_on_demand_regexes_leave_memory_bounded() {
    const TOKEN: &str = "regex-token-0123456789";
    let target = Target::start().await;
    let db = TestDb::create().await;
    let cfg = TestConfig::new(&db, "");
    let api = free_addr();
    let log = crate::support::log_path(&db);
    let daemon = crate::recovery::spawn_with(
        &cfg.path,
        &["checker", "api"],
        &log,
        &[
            ("SITEWATCH__API__ENABLED", "true".into()),
            ("SITEWATCH__API__LISTEN", api.to_string()),
            ("SITEWATCH__API__TOKENS", TOKEN.into()),
            ("SITEWATCH__API__ALLOW_PRIVATE_TARGETS", "true".into()),
            ("SITEWATCH__API__REQUESTS_PER_MINUTE", "100000".into()),
        ],
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let check = |i: usize| {
        let http = &http;
        let url = target.url("/ok");
        async move {
            // Unicode classes repeated: a large automaton, and a DFA cache
            // that grows as it scans the body.
            let regex = format!(r"\w{{12}}-{i}|(?:\w+\W+){{1,4}}healthy|x{i}");
            http.post(format!("http://{api}/v1/checks?wait=20s"))
                .bearer_auth(TOKEN)
                .header("content-type", "application/json")
                .body(serde_json::json!({"url": url, "regex": regex}).to_string())
                .send()
                .await
                .map(|r| {
                    let code = r.status().as_u16();
                    if code != 200 {
                        eprintln!("check {i}: {code}");
                    }
                    code
                })
                .unwrap_or(0)
        }
    };
    wait_for("the API answering", Duration::from_secs(60), || async {
        check(0).await == 200
    })
    .await;
    for i in 1..=10 {
        assert_eq!(check(i).await, 200);
    }
    let before = crate::hostile::rss_mb(daemon.id());
    for i in 11..=110 {
        assert_eq!(check(i).await, 200, "check {i}");
    }
    let after = crate::hostile::rss_mb(daemon.id());
    eprintln!("100 distinct on-demand regexes: daemon RSS {before:.1} MB -> {after:.1} MB");
    assert!(
        after - before < 30.0,
        "RSS grew by {:.1} MB over 100 distinct regexes",
        after - before
    );
    crate::recovery::terminate(daemon);
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// The next text message of `ws` as JSON, or `None` once it is closed.
async fn next_json(ws: &mut Ws) -> Option<serde_json::Value> {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let m = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("a message within 20 s")?;
        match m {
            Ok(Message::Text(t)) => return Some(serde_json::from_str(t.as_str()).unwrap()),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// The WebSocket within the token's limits: sockets hold in-flight slots,
/// checks on a socket count against the rate limit, and a message over
/// `max_body_bytes` ends the socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_count_against_the_tokens_limits() {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};
    const TOKEN: &str = "ws-token-0123456789";
    let target = Target::start().await;
    let db = TestDb::create().await;
    let cfg = TestConfig::new(&db, "");
    let mut settings = api_on(&cfg, TOKEN);
    settings.api.max_in_flight = 3;
    settings.api.requests_per_minute = 6;
    settings.api.max_body_bytes = 4096;
    let api = settings.api.listen;
    let stop = CancellationToken::new();
    let running = tokio::spawn(daemon::run(settings, &[], stop.clone(), no_reloads()));
    let open = || async {
        let mut request = format!("ws://{api}/v1/stream")
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
        tokio_tungstenite::connect_async(request).await
    };
    wait_for("the API up", Duration::from_secs(60), || async {
        TcpStream::connect(api).await.is_ok()
    })
    .await;
    let (mut ws, _) = open().await.unwrap();
    // Sockets hold the token's in-flight slots: 3 in all.
    let (second, _) = open().await.unwrap();
    let (third, _) = open().await.unwrap();
    let fourth = open().await;
    assert!(fourth.is_err(), "a 4th socket with max_in_flight = 3");
    drop((second, third));

    // Checks on a socket count against requests_per_minute (6, of which
    // the 3 upgrades took 3; the refused one took a 4th).
    let mut queued = 0;
    let mut limited = 0;
    for i in 0..6 {
        let check = json_check(&target.url(&format!("/ok?ws{i}")));
        ws.send(Message::Text(check.into())).await.unwrap();
        loop {
            let m = next_json(&mut ws).await.expect("socket open");
            if m.get("queued").is_some() {
                queued += 1;
                break;
            }
            if m["error"]
                .as_str()
                .is_some_and(|e| e.contains("rate limit"))
            {
                limited += 1;
                break;
            }
        }
    }
    assert!(
        queued <= 2 && limited >= 4,
        "queued {queued}, limited {limited}"
    );

    // A message larger than max_body_bytes (4 KiB) ends the socket.
    let big = format!(
        "{{\"subscribe\": {{\"sites\": [\"{}\"]}}}}",
        "x".repeat(64 * 1024)
    );
    let _ = ws.send(Message::Text(big.into())).await;
    let mut closed = false;
    for _ in 0..10 {
        match next_json(&mut ws).await {
            None => {
                closed = true;
                break;
            }
            Some(m) => assert!(
                m.get("subscribed").is_none(),
                "a 64 KiB message accepted: {m}"
            ),
        }
    }
    assert!(closed, "the socket survived a 64 KiB message");
    stop.cancel();
    running.await.unwrap().unwrap();
}

fn json_check(url: &str) -> String {
    serde_json::json!({ "check": { "url": url } }).to_string()
}

/// Guessing tokens is throttled per client address, on-demand checks may
/// not be used as a relay (methods and ports outside the policy), and one
/// token cannot read another's on-demand results.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_guesses_throttled_relays_refused_and_results_private() {
    const TOKEN: &str = "guess-me-if-you-can-0123";
    const OTHER: &str = "another-token-4567890123";
    let target = Target::start().await;
    let db = TestDb::create().await;
    let cfg = TestConfig::new(&db, "");
    let mut settings = api_on(&cfg, TOKEN);
    settings.api_tokens.push(Secret::new(OTHER));
    let api = settings.api.listen;
    let stop = CancellationToken::new();
    let running = tokio::spawn(daemon::run(settings, &[], stop.clone(), no_reloads()));
    wait_for("the API up", Duration::from_secs(60), || async {
        TcpStream::connect(api).await.is_ok()
    })
    .await;
    let http = reqwest::Client::new();
    let post = |body: serde_json::Value, token: &'static str| {
        http.post(format!("http://{api}/v1/checks"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    for (body, field) in [
        (
            serde_json::json!({"url": "http://127.0.0.1:8080/", "method": "TRACE"}),
            "method",
        ),
        (
            serde_json::json!({"url": "http://127.0.0.1:8080/", "method": "CONNECT"}),
            "method",
        ),
        (serde_json::json!({"url": "http://127.0.0.1:25/"}), "url"),
    ] {
        let r = post(body.clone(), TOKEN).await.unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let errors: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(errors["errors"][0]["field"], field, "{body}: {errors}");
    }
    // An on-demand result is the asking token's only.
    let r = http
        .post(format!("http://{api}/v1/checks?wait=20s"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(serde_json::json!({"url": target.url("/ok?mine")}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let done: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    let id = done["check_id"].as_str().unwrap().to_owned();
    let fetch = |token: &'static str| {
        let (http, id) = (&http, &id);
        async move {
            let r = http
                .get(format!("http://{api}/v1/checks/{id}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    wait_for("the result persisted", Duration::from_secs(30), || async {
        fetch(TOKEN).await.0 == 200
    })
    .await;
    let (code, mine) = fetch(TOKEN).await;
    assert_eq!(code, 200);
    assert!(!mine.contains("requested_by"), "{mine}");
    assert_eq!(fetch(OTHER).await.0, 404, "another token read the result");

    for _ in 0..10 {
        let r = post(serde_json::json!({}), "a-wrong-guess").await.unwrap();
        assert_eq!(r.status(), 401);
    }
    // The 11th attempt is refused before any token is compared: even the
    // right one.
    let r = post(serde_json::json!({"url": "http://127.0.0.1:8080/"}), TOKEN)
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    stop.cancel();
    running.await.unwrap().unwrap();
}
