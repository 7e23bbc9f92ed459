//! Rich checks against local targets: the timing breakdown, the TLS
//! certificate, redirects as configured, and every failed assertion named.
//! These run the checker's HTTP side directly; the pipeline test shows the
//! same fields persisted.

use sitewatch::checker::HttpChecker;
use sitewatch::config::CheckerSettings;
use sitewatch::model::{CheckOptions, CheckOutcome, ErrorKind, HeaderRule, IpFamily, Outcome};

use crate::support::request;
use crate::target::{Target, TlsTarget};

fn checker(ca_files: Vec<std::path::PathBuf>) -> HttpChecker {
    let settings = CheckerSettings {
        ca_files,
        ..CheckerSettings::default()
    };
    HttpChecker::new(&settings, "test").unwrap()
}

async fn run(
    http: &HttpChecker,
    url: &str,
    timeout_ms: u64,
    options: CheckOptions,
) -> CheckOutcome {
    let mut req = request("rich", chrono::Utc::now(), url);
    req.timeout_ms = timeout_ms;
    req.options = Some(options);
    http.check(&req).await
}

fn failed(out: &CheckOutcome) -> Vec<&str> {
    out.failures.iter().map(|f| f.assertion.as_str()).collect()
}

/// The phases account for the whole check but for a little bookkeeping
/// between them (a few milliseconds, even on a loaded machine).
fn assert_phases_add_up(out: &CheckOutcome) {
    let t = out.timing.as_ref().expect("timing");
    let sum: f64 = [t.dns_ms, t.connect_ms, t.tls_ms, t.ttfb_ms, t.transfer_ms]
        .iter()
        .flatten()
        .sum();
    let total = out.response_time_ms.expect("a response");
    assert!(
        sum <= total + 0.5 && total - sum <= 10.0 + total * 0.05,
        "phases {t:?} sum to {sum:.2} ms, total {total:.2} ms"
    );
}

#[tokio::test]
async fn headers_late_show_in_ttfb_and_body_late_in_transfer() {
    let target = Target::start().await;
    let http = checker(Vec::new());

    let head = run(
        &http,
        &target.url("/delay/300"),
        2000,
        CheckOptions::default(),
    )
    .await;
    assert_eq!(head.outcome, Outcome::Up, "{head:?}");
    let t = head.timing.clone().unwrap();
    assert!(t.ttfb_ms.unwrap() >= 300.0, "{t:?}");
    assert!(t.transfer_ms.unwrap() < 100.0, "{t:?}");
    // An IP literal over plain HTTP: no DNS, no TLS, and the phases say so.
    assert_eq!((t.dns_ms, t.tls_ms), (None, None));
    assert!(t.connect_ms.is_some());
    assert_eq!(head.http_version.as_deref(), Some("HTTP/1.1"));
    assert_eq!(head.remote_addr, Some(target.addr.to_string()));
    assert_phases_add_up(&head);

    let body = run(
        &http,
        &target.url("/delay-body/300"),
        2000,
        CheckOptions::default(),
    )
    .await;
    assert_eq!(body.outcome, Outcome::Up, "{body:?}");
    let t = body.timing.clone().unwrap();
    assert!(t.ttfb_ms.unwrap() < 100.0, "{t:?}");
    assert!(t.transfer_ms.unwrap() >= 300.0, "{t:?}");
    assert_phases_add_up(&body);

    // Slow but correct is degraded, with the threshold and what came.
    let slow = run(
        &http,
        &target.url("/delay/300"),
        2000,
        CheckOptions {
            degraded_after_ms: Some(100),
            ..CheckOptions::default()
        },
    )
    .await;
    assert_eq!(slow.outcome, Outcome::Degraded, "{slow:?}");
    assert_eq!(slow.error_kind, Some(ErrorKind::Slow));
    assert_eq!(failed(&slow), ["degraded_after"]);
}

#[tokio::test]
async fn a_timeout_names_its_phase_and_keeps_the_phases_done() {
    let target = Target::start().await;
    let out = run(
        &checker(Vec::new()),
        &target.url("/hang"),
        300,
        CheckOptions::default(),
    )
    .await;
    assert_eq!(out.error_kind, Some(ErrorKind::Timeout));
    let msg = out.error_message.clone().unwrap();
    assert!(msg.contains("waiting for the response"), "{msg}");
    let t = out.timing.unwrap();
    assert!(t.connect_ms.is_some() && t.ttfb_ms.is_none(), "{t:?}");
}

#[tokio::test]
async fn short_lived_certificate_reports_days_left_and_fails_min_cert_days() {
    let target = TlsTarget::start(5).await;
    let trusting = checker(vec![target.ca_file.path().to_path_buf()]);
    let min_14 = CheckOptions {
        min_cert_days: Some(14),
        ip_family: IpFamily::Ipv4,
        ..CheckOptions::default()
    };

    let out = run(&trusting, &target.url("/ok"), 3000, min_14.clone()).await;
    assert_eq!(out.status_code, Some(200), "{out:?}");
    assert_eq!(out.outcome, Outcome::Down);
    assert_eq!(out.error_kind, Some(ErrorKind::CertExpiring));
    assert_eq!(failed(&out), ["min_cert_days"]);
    let cert = out.tls.clone().unwrap();
    assert!(
        (4.0..=6.0).contains(&cert.days_left),
        "days left {}",
        cert.days_left
    );
    assert!(cert.subject.contains("sitewatch test leaf"), "{cert:?}");
    assert!(cert.issuer.contains("sitewatch test CA"), "{cert:?}");
    assert_eq!(cert.version.as_deref(), Some("TLSv1.3"));
    let t = out.timing.clone().unwrap();
    // By name: resolved, connected, TLS, all timed.
    assert!(
        t.dns_ms.is_some() && t.connect_ms.is_some() && t.tls_ms.is_some(),
        "{t:?}"
    );
    assert_phases_add_up(&out);

    // The same certificate is fine for a lower bar.
    let ok = run(
        &trusting,
        &target.url("/ok"),
        3000,
        CheckOptions {
            min_cert_days: Some(3),
            ..min_14.clone()
        },
    )
    .await;
    assert_eq!(ok.outcome, Outcome::Up, "{ok:?}");

    // Without the test CA the handshake fails, and the certificate's
    // dates are still recorded.
    let untrusted = run(
        &checker(Vec::new()),
        &target.url("/ok"),
        3000,
        min_14.clone(),
    )
    .await;
    assert_eq!(untrusted.error_kind, Some(ErrorKind::Tls), "{untrusted:?}");
    assert!(untrusted.status_code.is_none());
    assert!(untrusted.tls.unwrap().days_left < 14.0);

    // verify_tls = false accepts it, and still judges its expiry.
    let insecure = run(
        &checker(Vec::new()),
        &target.url("/ok"),
        3000,
        CheckOptions {
            verify_tls: false,
            ..min_14
        },
    )
    .await;
    assert_eq!(insecure.status_code, Some(200), "{insecure:?}");
    assert_eq!(insecure.error_kind, Some(ErrorKind::CertExpiring));
}

#[tokio::test]
async fn redirects_are_followed_or_refused_as_configured() {
    let target = Target::start().await;
    let http = checker(Vec::new());
    let url = target.url("/redirect/3");

    let followed = run(&http, &url, 2000, CheckOptions::default()).await;
    assert_eq!(followed.outcome, Outcome::Up, "{followed:?}");
    assert_eq!(followed.status_code, Some(200));
    assert_eq!(followed.timing.as_ref().unwrap().redirects, 3);
    assert_phases_add_up(&followed);

    let too_many = run(
        &http,
        &url,
        2000,
        CheckOptions {
            max_redirects: Some(2),
            ..CheckOptions::default()
        },
    )
    .await;
    assert_eq!(
        too_many.error_kind,
        Some(ErrorKind::RedirectLoop),
        "{too_many:?}"
    );
    assert!(too_many
        .error_message
        .unwrap()
        .contains("more than 2 redirects"));

    let not_followed = CheckOptions {
        follow_redirects: false,
        ..CheckOptions::default()
    };
    let as_is = run(&http, &url, 2000, not_followed.clone()).await;
    assert_eq!(as_is.status_code, Some(302));
    assert_eq!(as_is.outcome, Outcome::Up, "302 is within 200-399");
    assert_eq!(as_is.timing.as_ref().unwrap().redirects, 0);

    let mut strict = request("rich", chrono::Utc::now(), &url);
    strict.expect_status = "200".into();
    strict.options = Some(not_followed);
    let refused = http.check(&strict).await;
    assert_eq!(refused.error_kind, Some(ErrorKind::UnexpectedStatus));
    assert_eq!(refused.failures[0].observed, "302");

    // The endless loop ends as a redirect_loop, not a hang.
    let looped = run(&http, &target.url("/loop"), 2000, CheckOptions::default()).await;
    assert_eq!(looped.error_kind, Some(ErrorKind::RedirectLoop));
}

#[tokio::test]
async fn header_mismatch_and_forbidden_body_are_named_with_what_came() {
    let target = Target::start().await;
    let out = run(
        &checker(Vec::new()),
        &target.url("/headers"),
        2000,
        CheckOptions {
            forbidden_regex: Some("(?i)fatal error".into()),
            expect_headers: vec![
                HeaderRule {
                    name: "content-type".into(),
                    matches: Some("^text/html".into()),
                    absent: false,
                },
                HeaderRule {
                    name: "x-debug".into(),
                    matches: None,
                    absent: true,
                },
                HeaderRule {
                    name: "content-length".into(),
                    matches: None,
                    absent: false,
                },
            ],
            body_min_bytes: Some(1000),
            ..CheckOptions::default()
        },
    )
    .await;
    assert_eq!(out.outcome, Outcome::Down, "{out:?}");
    assert_eq!(out.status_code, Some(200));
    assert_eq!(out.error_kind, Some(ErrorKind::ForbiddenMatch));
    assert_eq!(
        failed(&out),
        [
            "forbidden_regex",
            "header content-type",
            "header x-debug",
            "body_min_bytes"
        ]
    );
    assert!(out.failures[0].observed.contains("Fatal error"), "{out:?}");
    assert!(out.failures[1].observed.contains("text/plain"), "{out:?}");
    assert!(out.failures[2].observed.contains('1'), "{out:?}");
    let msg = out.error_message.unwrap();
    assert!(
        msg.contains("forbidden_regex") && msg.contains("header x-debug: expected absent"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_request_body_and_method_are_sent_and_body_size_bounded() {
    let target = Target::start().await;
    let http = checker(Vec::new());
    let mut req = request("post", chrono::Utc::now(), &target.url("/echo"));
    req.method = "POST".into();
    req.regex = Some(r#"^POST \{"ping":1\}$"#.into());
    req.options = Some(CheckOptions {
        body: Some("{\"ping\":1}".into()),
        ..CheckOptions::default()
    });
    let out = http.check(&req).await;
    assert_eq!(out.outcome, Outcome::Up, "{out:?}");

    // The target's /ok page is 27 bytes: over a 10-byte bound.
    let mut req = request("big", chrono::Utc::now(), &target.url("/ok"));
    req.options = Some(CheckOptions {
        body_max_bytes: Some(10),
        ..CheckOptions::default()
    });
    let out = http.check(&req).await;
    assert_eq!(out.error_kind, Some(ErrorKind::BodySize), "{out:?}");
    assert_eq!(out.body_bytes, Some(27));
    assert_eq!(out.failures[0].observed, "27 bytes");

    // A body larger than the read limit is read one byte past the bound
    // (not to its end) to know it is too large.
    let small = CheckerSettings {
        max_body_bytes: 4,
        ..CheckerSettings::default()
    };
    let out = HttpChecker::new(&small, "t").unwrap().check(&req).await;
    assert_eq!(out.body_bytes, Some(11), "{out:?}");
    assert_eq!(out.failures[0].observed, "more than 11 bytes");
}

#[tokio::test]
async fn a_reused_connection_records_no_dns_connect_or_tls() {
    let target = Target::start().await;
    let http = checker(Vec::new());
    let mut req = request("pooled", chrono::Utc::now(), &target.url("/keep"));
    req.reuse_connection = true;
    req.regex = Some("request 1 on".into());
    let first = http.check(&req).await;
    assert_eq!(first.outcome, Outcome::Up, "{first:?}");
    assert!(first.timing.as_ref().unwrap().connect_ms.is_some());

    req.regex = Some("request 2 on this connection".into());
    let second = http.check(&req).await;
    assert_eq!(second.outcome, Outcome::Up, "{second:?}");
    let t = second.timing.clone().unwrap();
    assert_eq!((t.dns_ms, t.connect_ms, t.tls_ms), (None, None, None));
    assert!(t.ttfb_ms.is_some());
    assert_phases_add_up(&second);

    // A server that closes after each response: every check connects anew
    // (the connection is not pooled), and none fails for it.
    let closing = Target::start().await;
    req.url = closing.url("/ok");
    req.regex = None;
    for _ in 0..3 {
        let out = http.check(&req).await;
        assert_eq!(out.outcome, Outcome::Up, "{out:?}");
        assert!(out.timing.unwrap().connect_ms.is_some());
    }
}

/// `http_version` is what the server answered with: an HTTP/1.0 server is
/// stored as HTTP/1.0, although the request went as HTTP/1.1.
#[tokio::test]
async fn the_servers_http_version_is_recorded_not_ours() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await;
        }
    });
    let out = run(
        &checker(Vec::new()),
        &format!("http://{addr}/"),
        2000,
        CheckOptions::default(),
    )
    .await;
    assert_eq!(out.outcome, Outcome::Up, "{out:?}");
    assert_eq!(out.http_version.as_deref(), Some("HTTP/1.0"));
}

/// A raw HTTP/1.1 server on a free port that answers every request with
/// `reply` and keeps each request head it received.
async fn recording_server(reply: String) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = vec![0u8; 8192];
            let n = s.read(&mut buf).await.unwrap_or(0);
            kept.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase());
            let _ = s.write_all(reply.as_bytes()).await;
        }
    });
    (port, heads)
}

/// After a redirect to another origin, only `checker.cross_origin_headers`
/// go on: a site's secret headers (any custom one) stay with its origin.
#[tokio::test]
async fn secret_headers_are_not_sent_to_another_origin() {
    let ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".to_owned();
    let (other, seen_there) = recording_server(ok).await;
    let redirect = format!(
        "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{other}/\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let (first, seen_first) = recording_server(redirect).await;
    let mut req = request(
        "secrets",
        chrono::Utc::now(),
        &format!("http://127.0.0.1:{first}/"),
    );
    req.timeout_ms = 2000;
    for (k, v) in [
        ("X-Api-Key", "key-123"),
        ("Authorization", "Bearer tok-456"),
        ("Cookie", "session=789"),
        ("Accept", "text/html"),
    ] {
        req.headers.insert(k.to_owned(), v.to_owned());
    }
    let out = checker(Vec::new()).check(&req).await;
    assert_eq!(out.outcome, Outcome::Up, "{out:?}");
    let first_head = seen_first.lock().unwrap().concat();
    assert!(first_head.contains("x-api-key: key-123"), "{first_head}");
    let there = seen_there.lock().unwrap().concat();
    for secret in ["key-123", "tok-456", "session=789"] {
        assert!(
            !there.contains(secret),
            "{secret} sent to the other origin: {there}"
        );
    }
    assert!(there.contains("accept: text/html"), "{there}");
    assert!(there.contains("user-agent: sitewatch"), "{there}");
}

/// JSON assertions against a local JSON API: each kind passing and
/// failing, a body that is not JSON, and `sitewatch check --expect-json`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_assertions_name_the_path_what_was_expected_and_what_came() {
    use sitewatch::model::{JsonExpect, JsonRule};
    let body = r#"{"status":"ok","version":"2.4.1","items":[{"n":1},{"n":2}],"load":0.25}"#;
    let reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let (port, _) = recording_server(reply).await;
    let url = format!("http://127.0.0.1:{port}/health");
    let rule = |path: &str, expect| JsonRule {
        path: path.into(),
        expect,
    };
    let http = checker(Vec::new());
    let passing = vec![
        rule("$.status", JsonExpect::Equals("ok".into())),
        rule("$.items.length()", JsonExpect::AtLeast(1.0)),
        rule("$.version", JsonExpect::Matches(r"^2\.".into())),
        rule("$.load", JsonExpect::LessThan(1.0)),
        rule("$.error", JsonExpect::Absent(true)),
    ];
    let options = |json| CheckOptions {
        json,
        ..CheckOptions::default()
    };
    let out = run(&http, &url, 2000, options(passing)).await;
    assert_eq!(out.outcome, Outcome::Up, "{out:?}");
    let failing = vec![
        rule("$.status", JsonExpect::Equals("degraded".into())),
        rule("$.items.length()", JsonExpect::AtLeast(5.0)),
    ];
    let out = run(&http, &url, 2000, options(failing)).await;
    assert_eq!(out.outcome, Outcome::Down);
    assert_eq!(out.error_kind, Some(ErrorKind::JsonMismatch));
    assert_eq!(failed(&out), ["json $.status", "json $.items.length()"]);
    assert_eq!(out.failures[0].observed, "\"ok\"");
    assert_eq!(out.failures[1].expected, ">= 5");

    // An HTML page where JSON was expected.
    let page = "HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\n<html>";
    let (html, _) = recording_server(page.into()).await;
    let out = run(
        &http,
        &format!("http://127.0.0.1:{html}/"),
        2000,
        options(vec![rule("$.status", JsonExpect::Present(true))]),
    )
    .await;
    assert_eq!(out.error_kind, Some(ErrorKind::JsonMismatch));
    assert!(out.failures[0].observed.starts_with("not JSON"), "{out:?}");

    // The CLI: repeatable --expect-json, exit status and the named failure.
    let cli = |exprs: &'static [&'static str]| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sitewatch"));
            cmd.args(["check", &url, "--timeout", "5s"]);
            for e in exprs {
                cmd.args(["--expect-json", e]);
            }
            cmd.env_remove("SITEWATCH_CONFIG").output().unwrap()
        })
    };
    let ok = cli(&[r#"$.status == "ok""#, "$.items.length() >= 2"])
        .await
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let bad = cli(&["$.load > 0.5"]).await.unwrap();
    let stdout = String::from_utf8_lossy(&bad.stdout);
    assert!(!bad.status.success());
    assert!(
        stdout.contains("failed:       json $.load: expected > 0.5, got 0.25"),
        "{stdout}"
    );
}
