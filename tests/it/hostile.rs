//! Hostile websites: each ends as the right outcome within its site's
//! timeout, and the daemon's memory stays bounded. The server here is
//! hand-written on tokio so each misbehaviour is exact.

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::recovery::{spawn, terminate};
use crate::support::{no_reloads, wait_for, TestConfig, TestDb};
use crate::target::Target;

/// Serves one misbehaviour per path.
async fn hostile_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let bombs = std::sync::Arc::new(bombs());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(misbehave(stream, bombs.clone()));
        }
    });
    addr
}

/// A gzip and a brotli body that each expand to 256 MiB of zeros.
fn bombs() -> (Vec<u8>, Vec<u8>) {
    let zeros = vec![0u8; 1 << 20];
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut br = brotli::CompressorWriter::new(Vec::new(), 4096, 5, 22);
    for _ in 0..256 {
        gz.write_all(&zeros).unwrap();
        br.write_all(&zeros).unwrap();
    }
    (gz.finish().unwrap(), br.into_inner())
}

async fn misbehave(mut s: TcpStream, bombs: std::sync::Arc<(Vec<u8>, Vec<u8>)>) {
    // Read the request head; a TLS ClientHello never ends one, so an
    // https:// site here waits for a handshake that never completes.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let ok = |extra: &str, len: usize| {
        format!("HTTP/1.1 200 OK\r\n{extra}Content-Length: {len}\r\n\r\n")
    };
    match path.as_str() {
        "/endless" => {
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                .await;
            let mut piece = b"4000\r\n".to_vec();
            piece.extend_from_slice(&[b'a'; 0x4000]);
            piece.extend_from_slice(b"\r\n");
            while s.write_all(&piece).await.is_ok() {}
        }
        "/drip" => {
            let _ = s.write_all(ok("", 1000).as_bytes()).await;
            for _ in 0..1000 {
                if s.write_all(b"x").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        "/big-headers" => {
            let mut r = String::from("HTTP/1.1 200 OK\r\n");
            for i in 0..2000 {
                r.push_str(&format!("X-Pad-{i}: {}\r\n", "p".repeat(100)));
            }
            r.push_str("Content-Length: 2\r\n\r\nok");
            let _ = s.write_all(r.as_bytes()).await;
        }
        "/redirect-loop" => {
            let _ = s
                .write_all(
                    b"HTTP/1.1 302 Found\r\nLocation: /redirect-loop\r\nContent-Length: 0\r\n\r\n",
                )
                .await;
        }
        "/gzip-bomb" | "/brotli-bomb" => {
            let (body, encoding) = if path == "/gzip-bomb" {
                (&bombs.0, "gzip")
            } else {
                (&bombs.1, "br")
            };
            let h = ok(&format!("Content-Encoding: {encoding}\r\n"), body.len());
            let _ = s.write_all(h.as_bytes()).await;
            let _ = s.write_all(body).await;
        }
        "/reset" => {
            let _ = s.write_all(ok("", 100_000).as_bytes()).await;
            let _ = s.write_all(&[b'r'; 1000]).await;
            // Linger 0: close with RST, mid-body. (Deprecated because a
            // non-zero linger blocks the thread on drop; zero resets at once.)
            #[allow(deprecated)]
            let _ = s.set_linger(Some(Duration::ZERO));
            drop(s);
        }
        "/bad-chunked" => {
            let _ = s
                .write_all(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
                )
                .await;
        }
        // A well-behaved page: the baseline the others are measured from.
        "/ok" => {
            let _ = s
                .write_all(format!("{}welcome", ok("", 7)).as_bytes())
                .await;
        }
        "/non-utf8" => {
            let body: &[u8] = b"\xff\xfe status: ok \xc3\x28 \x80";
            let _ = s.write_all(ok("", body.len()).as_bytes()).await;
            let _ = s.write_all(body).await;
        }
        // "/silent": accepts, reads the request, never answers.
        _ => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    }
}

/// Resident memory of a process, from /proc.
pub fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// (name, path, extra site keys, expected outcome, expected error kind)
const CASES: [(&str, &str, &str, &str, Option<&str>); 12] = [
    ("baseline-normal", "/ok", "regex = \"welcome\"", "up", None),
    (
        "endless-body",
        "/endless",
        "regex = \"never on the page\"",
        "down",
        Some("regex_mismatch"),
    ),
    ("drip", "/drip", "", "down", Some("timeout")),
    ("big-headers", "/big-headers", "", "down", Some("protocol")),
    (
        "redirect-loop",
        "/redirect-loop",
        "",
        "down",
        Some("redirect_loop"),
    ),
    (
        "gzip-bomb",
        "/gzip-bomb",
        "regex = \"Welcome\"",
        "down",
        Some("regex_mismatch"),
    ),
    (
        "brotli-bomb",
        "/brotli-bomb",
        "regex = \"Welcome\"",
        "down",
        Some("regex_mismatch"),
    ),
    ("tls-never-completes", "tls", "", "down", Some("timeout")),
    ("reset-mid-body", "/reset", "", "down", Some("body")),
    ("broken-chunked", "/bad-chunked", "", "down", Some("body")),
    (
        "non-utf8-body",
        "/non-utf8",
        "regex = \"status: ok\"",
        "up",
        None,
    ),
    ("silent", "/silent", "", "down", Some("timeout")),
];

/// Each hostile site alone in turn (switched by SIGHUP), against the daemon
/// binary: its outcome and time per check, and the daemon's RSS before and
/// after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_sites_end_as_the_right_outcome_in_bounded_time_and_memory() {
    let addr = hostile_server().await;
    let db = TestDb::create().await;
    let site = |(name, path, extra, _, _): (&str, &str, &str, &str, Option<&str>)| {
        let url = if path == "tls" {
            format!("https://{addr}/")
        } else {
            format!("http://{addr}{path}")
        };
        format!(
            "[[sites]]\nname = \"{name}\"\nurl = \"{url}\"\ninterval = \"2s\"\ntimeout = \"1500ms\"\n{extra}\n"
        )
    };
    let cfg = TestConfig::new(&db, &site(CASES[0]));
    let log = crate::support::log_path(&db);
    let daemon = spawn(&cfg.path, &[], &log);
    let pid = daemon.id();
    let client = db.client().await;

    eprintln!(
        "{:<20} {:<8} {:<15} {:>9} {:>9} {:>9}",
        "hostile site", "outcome", "error_kind", "max time", "RSS MB", "delta MB"
    );
    for (i, case) in CASES.iter().enumerate() {
        let (name, _, _, outcome, kind) = *case;
        if i > 0 {
            cfg.set_sites(&site(*case));
            let _ = std::process::Command::new("kill")
                .args(["-HUP", &pid.to_string()])
                .status();
        }
        let before = rss_mb(pid);
        wait_for(
            &format!("three checks of {name}"),
            Duration::from_secs(60),
            || async {
                client
                    .query_one(
                        "SELECT count(*) FROM check_results WHERE site = $1 AND outcome <> 'skipped'",
                        &[&name],
                    )
                    .await
                    .map(|r| r.get::<_, i64>(0) >= 3)
                    .unwrap_or(false)
            },
        )
        .await;
        let after = rss_mb(pid);
        let rows = client
            .query(
                "SELECT outcome, error_kind, error_message,
                        extract(epoch FROM finished_at - started_at)::float8
                 FROM check_results WHERE site = $1 AND outcome <> 'skipped'",
                &[&name],
            )
            .await
            .unwrap();
        let mut longest: f64 = 0.0;
        for r in &rows {
            let (o, k, m): (String, Option<String>, Option<String>) =
                (r.get(0), r.get(1), r.get(2));
            assert_eq!((o.as_str(), k.as_deref()), (outcome, kind), "{name}: {m:?}");
            longest = longest.max(r.get::<_, f64>(3));
        }
        eprintln!(
            "{name:<20} {outcome:<8} {:<15} {:>7.2} s {after:>9.1} {:>+9.1}",
            kind.unwrap_or("-"),
            longest,
            after - before
        );
        // The site's timeout bounds every check (plus scheduling noise).
        assert!(longest <= 1.5 + 1.0, "{name}: a check took {longest:.2} s");
        // Bodies are capped (1 MiB), bombs are never inflated, heads are
        // limited: nothing here may cost the daemon much memory.
        assert!(after < 200.0, "{name}: daemon RSS {after:.1} MB");
    }
    terminate(daemon);
}

/// Thousands of sites on one slow host do not starve the checks of other
/// hosts: the slow host gets `checker.max_per_host` checks at once (and as
/// many waiting); its overflow is recorded as `host_busy`, and every check
/// of the fast host runs on time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_slow_host_with_thousands_of_sites_does_not_starve_the_others() {
    let slow = Target::start().await;
    let fast = Target::start_on("127.0.0.2").await;
    let db = TestDb::create().await;
    let mut sites = String::from("[checker]\nconcurrency = 64\nmax_per_host = 16\n\n");
    for i in 0..1000 {
        sites.push_str(&format!(
            "[[sites]]\nname = \"slow{i:04}\"\nurl = \"{}?s={i}\"\ninterval = \"5s\"\ntimeout = \"3s\"\n",
            slow.url("/delay/1500")
        ));
    }
    for i in 0..20 {
        sites.push_str(&format!(
            "[[sites]]\nname = \"fast{i:02}\"\nurl = \"{}?s={i}\"\ninterval = \"5s\"\ntimeout = \"3s\"\n",
            fast.url("/ok")
        ));
    }
    let cfg = TestConfig::new(&db, &sites);
    let stop = CancellationToken::new();
    let daemon = tokio::spawn(sitewatch::daemon::run(
        cfg.load(),
        &[],
        stop.clone(),
        no_reloads(),
    ));
    let client = db.client().await;
    let count = |sql: &'static str| crate::support::count(&client, sql);
    wait_for(
        "three rounds of the fast sites",
        Duration::from_secs(90),
        || async {
            count("SELECT count(*) FROM check_results WHERE site LIKE 'fast%'").await >= 60
        },
    )
    .await;
    stop.cancel();
    daemon.await.unwrap().unwrap();

    let fast_rows = count("SELECT count(*) FROM check_results WHERE site LIKE 'fast%'").await;
    let fast_up =
        count("SELECT count(*) FROM check_results WHERE site LIKE 'fast%' AND outcome = 'up'")
            .await;
    let busy = count(
        "SELECT count(*) FROM check_results WHERE site LIKE 'slow%' AND error_kind = 'host_busy'",
    )
    .await;
    let slow_up =
        count("SELECT count(*) FROM check_results WHERE site LIKE 'slow%' AND outcome = 'up'")
            .await;
    eprintln!("slow host: {slow_up} up, {busy} host_busy; fast host: {fast_up} of {fast_rows} up");
    assert_eq!(fast_up, fast_rows, "every check of the fast host ran");
    assert!(
        busy > 0,
        "the slow host's overflow is recorded as host_busy"
    );
    assert!(slow_up > 0, "the slow host still gets its share");
}
