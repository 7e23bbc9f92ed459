//! Judging bombs: on-demand checks whose response makes an assertion costly
//! (the JSONPath query that once pinned the CPU for 34 s on a 3 KB body, a
//! regex of thousands of states on a 1 MiB body, a gzip bomb) fired at a
//! running daemon together. The daemon stays responsive (`/healthz`), the
//! scheduled sites keep every slot, each bomb ends `down` within its
//! timeout + 1 s, and SIGTERM is still obeyed within 30 s.

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use crate::recovery::spawn;
use crate::support::{log_path, wait_for, TestConfig, TestDb};

const TOKEN: &str = "bomb-test-token-0123456789";
/// The query: five filters nested under descendant segments.
const JSONPATH_BOMB: &str = "$..[?@..[?@..[?@..[?@..[?@ == 99999]]]]]";
/// Thousands of NFA states, no match: 6.5 s of CPU on 1 MiB with `regex`.
const REGEX_BOMB: &str = "(?s).{0,500}Q.{0,500}$";

/// Arrays nested 100 deep, 10 items a level (3 KB).
fn nested() -> Vec<u8> {
    let mut v = json!([]);
    for _ in 0..100 {
        let mut items: Vec<Value> = (0..9).map(|i| json!(i)).collect();
        items.push(v);
        v = Value::Array(items);
    }
    v.to_string().into_bytes()
}

fn gzip_bomb() -> Vec<u8> {
    let zeros = vec![0u8; 1 << 20];
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for _ in 0..256 {
        gz.write_all(&zeros).unwrap();
    }
    gz.finish().unwrap()
}

/// `/ok` for the scheduled sites; `/nested`, `/big` and `/gzip` for bombs.
async fn target() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let nested = std::sync::Arc::new(nested());
    let big: std::sync::Arc<Vec<u8>> =
        std::sync::Arc::new((0..1_000_000).map(|i| b"ab cdefghij\n"[i % 12]).collect());
    let gz = std::sync::Arc::new(gzip_bomb());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (nested, big, gz) = (nested.clone(), big.clone(), gz.clone());
            tokio::spawn(async move {
                let Some(head) = crate::support::read_head(&mut s).await else {
                    return;
                };
                let text = String::from_utf8_lossy(&head).into_owned();
                let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let (extra, body): (&str, &[u8]) = match path.as_str() {
                    "/nested" => ("Content-Type: application/json\r\n", &nested),
                    "/big" => ("", &big),
                    "/gzip" => ("Content-Encoding: gzip\r\n", &gz),
                    _ => ("", b"ok"),
                };
                let reply = format!(
                    "HTTP/1.1 200 OK\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
                let _ = s.write_all(body).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn costly_assertions_never_stall_the_daemon() {
    let addr = target().await;
    let db = TestDb::create().await;
    let api = crate::support::free_addr();
    let mut sites = String::new();
    for i in 0..4 {
        sites.push_str(&format!(
            "[[sites]]\nname = \"steady-{i}\"\nurl = \"http://{addr}/ok?{i}\"\ninterval = \"1s\"\n\
             timeout = \"800ms\"\n"
        ));
    }
    sites.push_str(&format!(
        "[api]\nenabled = true\nlisten = \"{api}\"\ntokens = [\"{TOKEN}\"]\n\
         allow_private_targets = true\n"
    ));
    let cfg = TestConfig::new(&db, &sites);
    let daemon = spawn(&cfg.path, &[], &log_path(&db));
    let admin = cfg.admin;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    crate::support::wait_ready(admin).await;
    let client = db.client().await;
    wait_for(
        "the steady sites checked",
        Duration::from_secs(30),
        || async {
            crate::support::count(
                &client,
                "SELECT count(DISTINCT site) FROM check_results WHERE outcome = 'up'",
            )
            .await
                == 4
        },
    )
    .await;

    // `/healthz` is asked every 100 ms while the bombs run.
    let probing = tokio_util::sync::CancellationToken::new();
    let probe = tokio::spawn({
        let (http, stop) = (http.clone(), probing.clone());
        async move {
            let mut slowest = Duration::ZERO;
            let mut asked = 0;
            // A probe every 100 ms, as a monitor of the monitor would.
            let mut every = tokio::time::interval(Duration::from_millis(100));
            while !stop.is_cancelled() {
                every.tick().await;
                let t = Instant::now();
                let ok = http
                    .get(format!("http://{admin}/healthz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200);
                assert!(ok, "/healthz failed");
                slowest = slowest.max(t.elapsed());
                asked += 1;
            }
            (slowest, asked)
        }
    });

    let started = chrono::Utc::now();
    let url = |p: &str| format!("http://{addr}{p}");
    let mut bombs = Vec::new();
    for _ in 0..4 {
        bombs.push(json!({"url": url("/nested"), "timeout": "2s",
                          "json": [{"path": JSONPATH_BOMB, "present": true}]}));
    }
    bombs.push(json!({"url": url("/big"), "timeout": "2s", "regex": REGEX_BOMB}));
    bombs.push(json!({"url": url("/gzip"), "timeout": "2s", "regex": "NEEDLE"}));
    let fired = bombs.into_iter().map(|body| {
        let http = http.clone();
        async move {
            let t = Instant::now();
            let r = http
                .post(format!("http://{api}/v1/checks?wait=20s"))
                .bearer_auth(TOKEN)
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&body).unwrap())
                .send()
                .await
                .unwrap();
            let code = r.status().as_u16();
            let reply: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
            let out = reply["outcome"].clone();
            (code, out, t.elapsed())
        }
    });
    let results = futures::future::join_all(fired).await;
    let ended = chrono::Utc::now();
    // The window's rows are in once every steady site has a later one.
    wait_for("rows after the bombs", Duration::from_secs(30), || async {
        crate::support::count(
            &client,
            &format!(
                "SELECT count(DISTINCT site) FROM check_results
                 WHERE site LIKE 'steady-%' AND scheduled_at > '{}'",
                ended.to_rfc3339()
            ),
        )
        .await
            == 4
    })
    .await;
    probing.cancel();
    let (slowest, asked) = probe.await.unwrap();

    println!("bombs fired together: 4 JSONPath, 1 regex, 1 gzip (timeout 2 s each)");
    for (code, out, waited) in &results {
        assert_eq!(*code, 200, "{out}");
        let took = |a: &str, b: &str| {
            let at =
                |k: &str| chrono::DateTime::parse_from_rfc3339(out[k].as_str().unwrap()).unwrap();
            (at(b) - at(a)).num_milliseconds() as f64
        };
        let exchange = took("started_at", "finished_at");
        let judged = out["timing"]["judge_ms"].as_f64().unwrap_or(0.0);
        println!(
            "  {:<44} {:>4}  exchange {exchange:>6.1} ms  judging {judged:>7.1} ms  api wait {:>6.0} ms  {}",
            out["url"].as_str().unwrap_or(""),
            out["outcome"].as_str().unwrap_or(""),
            waited.as_secs_f64() * 1e3,
            out["error_message"].as_str().unwrap_or("").chars().take(90).collect::<String>()
        );
        assert_eq!(out["outcome"], "down", "{out}");
        assert!(
            exchange + judged <= 3000.0,
            "a bomb took {exchange} + {judged} ms, past its 2 s timeout + 1 s: {out}"
        );
    }
    let jsonpath = results[0].1["error_message"].as_str().unwrap_or("");
    assert!(jsonpath.contains("too costly"), "{jsonpath}");
    println!(
        "  /healthz: {asked} answers, slowest {:.1} ms",
        slowest.as_secs_f64() * 1e3
    );
    assert!(
        slowest < Duration::from_secs(1),
        "/healthz took {slowest:?}"
    );

    // Every slot of the steady sites in the window has its row, up.
    for i in 0..4 {
        let rows = client
            .query(
                "SELECT scheduled_at, outcome FROM check_results
                 WHERE site = $1 AND scheduled_at >= $2 AND scheduled_at <= $3
                 ORDER BY scheduled_at",
                &[&format!("steady-{i}"), &started, &ended],
            )
            .await
            .unwrap();
        let slots = (ended - started).num_seconds();
        assert!(
            rows.len() as i64 >= slots,
            "steady-{i}: {} rows for {slots} s",
            rows.len()
        );
        for pair in rows.windows(2) {
            let gap = pair[1].get::<_, chrono::DateTime<chrono::Utc>>(0)
                - pair[0].get::<_, chrono::DateTime<chrono::Utc>>(0);
            assert_eq!(
                gap,
                chrono::Duration::seconds(1),
                "steady-{i}: a slot is missing"
            );
        }
        for r in &rows {
            assert_eq!(r.get::<_, String>(1), "up", "steady-{i}");
        }
    }

    let t = Instant::now();
    crate::recovery::terminate(daemon);
    println!("  SIGTERM to exit: {:.1} s", t.elapsed().as_secs_f64());
    assert!(t.elapsed() < Duration::from_secs(30));
}
