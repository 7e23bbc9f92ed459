//! Evidence of a failed check: what the site answered is kept (status line,
//! headers, the start of the body) in the outcome, in Postgres and in
//! `sitewatch check`'s output, and the secrets in it are not: neither the
//! cookie the server sets nor the credentials the site sends and the server
//! echoes.

use std::process::Command;

use sitewatch::checker::HttpChecker;
use sitewatch::config::CheckerSettings;
use sitewatch::model::{ErrorKind, Outcome};
use sitewatch::store;

use crate::dns::{Answer, DnsServer};
use crate::support::{request, TestDb};

const SECRETS: [&str; 4] = [
    "server-cookie-value",
    "server-token-value",
    "site-auth-secret",
    "site-cookie-secret",
];

/// A server answering every request with a 503 that sets a cookie and a
/// token header and echoes the site's credentials in its body.
async fn leaky_server() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = "<h1>Down for maintenance</h1>\nyou sent: Bearer site-auth-secret, \
                sid=site-cookie-secret\n";
    let reply = format!(
        "HTTP/1.1 503 Service Unavailable\r\nSet-Cookie: sid=server-cookie-value; Path=/; \
         HttpOnly\r\nX-Auth-Token: server-token-value\r\nRetry-After: 120\r\nContent-Length: \
         {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = vec![0u8; 8192];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(reply.as_bytes()).await;
        }
    });
    port
}

fn assert_no_secret(text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{secret} kept in: {text}");
    }
}

#[tokio::test]
async fn a_failed_checks_evidence_is_stored_with_its_secrets_redacted() {
    let port = leaky_server().await;
    let mut req = request(
        "evidence",
        chrono::Utc::now(),
        &format!("http://127.0.0.1:{port}/"),
    );
    req.timeout_ms = 5000;
    req.headers
        .insert("Authorization".into(), "Bearer site-auth-secret".into());
    req.headers
        .insert("Cookie".into(), "sid=site-cookie-secret".into());
    let http = HttpChecker::new(&CheckerSettings::default(), "test").unwrap();
    let out = http.check(&req).await;
    assert_eq!(out.outcome, Outcome::Down, "{out:?}");
    assert_eq!(out.error_kind, Some(ErrorKind::UnexpectedStatus));
    let e = out.evidence.as_ref().expect("evidence of a failed check");
    assert_eq!(e.status_line, "HTTP/1.1 503 Service Unavailable");
    assert!(e.body.starts_with("<h1>Down for maintenance</h1>"), "{e:?}");
    assert!(
        e.headers.contains(&("retry-after".into(), "120".into())),
        "{e:?}"
    );

    let db = TestDb::create().await;
    let mut client = db.client().await;
    store::migrate(&mut client).await.unwrap();
    store::insert_results(&client, std::slice::from_ref(&out))
        .await
        .unwrap();
    let row = client
        .query_one(
            "SELECT evidence->>'status_line', evidence->>'body', to_jsonb(r)::text
             FROM check_results r WHERE check_id = $1",
            &[&out.check_id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "HTTP/1.1 503 Service Unavailable");
    assert!(row.get::<_, String>(1).contains("Down for maintenance"));
    let whole_row: String = row.get(2);
    assert!(whole_row.contains("sid=[redacted]"), "{whole_row}");
    assert_no_secret(&whole_row);

    // A passing check keeps none.
    let ok = request("evidence-ok", chrono::Utc::now(), "http://127.0.0.1:1/");
    let refused = http.check(&ok).await;
    assert!(refused.evidence.is_none(), "no response, no evidence");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sitewatch_check_shows_the_dns_time_and_the_evidence() {
    let port = leaky_server().await;
    let dns = DnsServer::start(&[(
        "leaky.sitewatch.test",
        Answer::Addresses(vec!["127.0.0.1".parse().unwrap()]),
    )])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sitewatch.toml");
    std::fs::write(
        &config,
        format!("[checker]\ndns_servers = [\"{}\"]\n", dns.addr),
    )
    .unwrap();
    let url = format!("http://leaky.sitewatch.test:{port}/");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_sitewatch"))
            .args(["check", &url, "--timeout", "5s", "--config"])
            .arg(&config)
            .args(["--header", "Authorization: Bearer site-auth-secret"])
            .args(["--header", "Cookie: sid=site-cookie-secret"])
            .output()
            .expect("run sitewatch check")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a 503 fails: {stdout}");
    let timing = stdout
        .lines()
        .find(|l| l.starts_with("timing:"))
        .unwrap_or_else(|| panic!("no timing line: {stdout}\n{stderr}"));
    assert!(
        timing.contains("dns ") && !timing.contains("dns -"),
        "{timing}"
    );
    assert!(
        stdout.contains("evidence:     HTTP/1.1 503 Service Unavailable"),
        "{stdout}"
    );
    assert!(
        stdout.contains("| <h1>Down for maintenance</h1>"),
        "{stdout}"
    );
    assert_no_secret(&stdout);
}
