//! A site's secrets never leave, in any encoding: a target echoes every
//! credential the site sends (headers, cookie, query token, request body)
//! back raw, percent- and form-encoded (also as Python quotes), base64
//! (alone and inside a longer text), JSON- and HTML-escaped (also as Go
//! and Handlebars escape) and upper-cased, and a second target
//! loops redirects whose `Location` carries the token. Neither the rows,
//! the incidents, the alerts sent on every channel nor `sitewatch check`
//! may show any of them; and every JSON channel's body, whose cause holds
//! the quotes and backslashes a server chose, is valid JSON naming the site.

use std::time::Duration;

use base64::Engine as _;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use sitewatch::daemon;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::alerts::{every_channel, PREFIXES, SMTP_PASSWORD};
use crate::receivers::{loopback_certificate, Smtp, Vendors};
use crate::support::{count, no_reloads, wait_for, TestConfig, TestDb};

const AUTH: &str = "Bearer AUTH/secret+333=";
const KEY: &str = "KEY-secret-444";
const COOKIE: &str = "COOKIE-secret-555";
const QUERY: &str = "QUERY-secret-111";
const BODY: &str = "BODY-secret-222";
const LOOP: &str = "LOOP-secret-666";

/// Every secret the sites send (the bearer credential alone too).
fn secrets() -> Vec<&'static str> {
    vec!["AUTH/secret+333=", KEY, COOKIE, QUERY, BODY, LOOP]
}

/// What Python's `urllib.parse.quote` leaves as it is.
const PYTHON_QUOTE: &percent_encoding::AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// Each form a server may echo `s` in.
fn forms(s: &str) -> Vec<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let json = serde_json::to_string(s).unwrap();
    vec![
        s.to_owned(),
        s.to_uppercase(),
        utf8_percent_encode(s, NON_ALPHANUMERIC).to_string(),
        url::form_urlencoded::byte_serialize(s.as_bytes()).collect(),
        b64.encode(s),
        json[1..json.len() - 1].replace('/', "\\/"),
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\'', "&#39;"),
        // Python's quote (keeps `/`), Go's html/template and encoding/json,
        // Handlebars: each escapes only some characters.
        utf8_percent_encode(s, PYTHON_QUOTE).to_string(),
        s.replace('&', "&amp;")
            .replace('+', "&#43;")
            .replace('"', "&#34;"),
        s.replace('=', "&#x3D;").replace('\'', "&#x27;"),
        json[1..json.len() - 1]
            .replace('&', "\\u0026")
            .replace('<', "\\u003c"),
    ]
}

fn header(head: &str, name: &str) -> String {
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
        .unwrap_or_default()
}

/// `/echo` answers 503 with everything it was sent, in every form;
/// `/loop` redirects to itself with the bearer token in the `Location`.
async fn echo_target() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Some(mut buf) = crate::support::read_head(&mut s).await else {
                    return;
                };
                let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                let mut chunk = [0u8; 4096];
                let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                let length: usize = header(&head, "content-length").parse().unwrap_or(0);
                while buf.len() < head_end + length {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let body = String::from_utf8_lossy(&buf[head_end..]).into_owned();
                let target = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let auth = header(&head, "authorization");
                let reply = if target.starts_with("/loop") {
                    let token = auth.trim_start_matches("Bearer ");
                    format!(
                        "HTTP/1.1 302 Found\r\nLocation: /loop?t={}&note=\"quoted\"\\back\\slash\r\n\
                         Content-Length: 0\r\nConnection: close\r\n\r\n",
                        utf8_percent_encode(token, NON_ALPHANUMERIC)
                    )
                } else {
                    let sent = [
                        auth.clone(),
                        header(&head, "x-api-key"),
                        header(&head, "cookie"),
                        target.clone(),
                        body,
                    ];
                    let mut page = String::from("ECHO ");
                    for v in &sent {
                        for f in forms(v) {
                            page.push_str(&f);
                            page.push('\n');
                        }
                    }
                    // A whole header line, base64-encoded after other bytes.
                    let line = format!("x-forwarded: 1\r\nAuthorization: {auth}\r\n");
                    page.push_str(&base64::engine::general_purpose::STANDARD.encode(line));
                    format!(
                        "HTTP/1.1 503 Service Unavailable\r\nX-Request-Id: {}\r\n\
                         X-Debug-Echo: {auth}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                        utf8_percent_encode(&header(&head, "x-api-key"), NON_ALPHANUMERIC),
                        page.len()
                    )
                };
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_leaves_in_any_encoding_and_every_alert_is_valid_json() {
    let db = TestDb::create().await;
    let target = echo_target().await;
    let vendors = Vendors::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = loopback_certificate(dir.path());
    let smtp = Smtp::start("starttls", &cert, &key, "alerts", SMTP_PASSWORD);
    let cfg = TestConfig::new(
        &db,
        &format!(
            r#"
[incidents]
settle = "1s"
{channels}
[[alerts.channels]]
name = "templated"
kind = "webhook"
url = "{templated}"
template = '{{"text": "{{{{ summary }}}}", "detail": "{{{{ detail }}}}", "site": "{{{{ site }}}}"}}'

[[sites]]
name = "echo"
url = "http://{target}/echo?api_key={QUERY}&page=1"
method = "POST"
body = '{{"password": "{BODY}"}}'
headers = {{ Authorization = "{AUTH}", X-Api-Key = "{KEY}", Cookie = "sid={COOKIE}" }}
forbidden_regex = "(?s)ECHO.{{0,300}}"
interval = "1s"
timeout = "800ms"

[[sites]]
name = "loop"
url = "http://{target}/loop"
headers = {{ Authorization = "Bearer {LOOP}" }}
interval = "1s"
timeout = "800ms"
"#,
            channels = every_channel(&vendors, smtp.port, &ca, "starttls"),
            templated = vendors.url("/templated"),
        ),
    );
    let mut settings = cfg.load();
    settings.postgres.pool_size = 16;
    let stop = CancellationToken::new();
    let run = tokio::spawn(daemon::run(settings, &[], stop.clone(), no_reloads()));
    let client = db.client().await;
    // Ten channels, two incidents.
    wait_for(
        "both incidents told on every channel",
        Duration::from_secs(90),
        || async {
            count(
                &client,
                "SELECT count(*) FROM (SELECT DISTINCT i.site, o.channel FROM alert_outbox o
                 JOIN incidents i ON i.id = o.incident_id
                 WHERE o.event = 'opened' AND o.delivered_at IS NOT NULL) d",
            )
            .await
                == 20
        },
    )
    .await;
    stop.cancel();
    run.await.unwrap().unwrap();

    let mut seen: Vec<(String, String)> = Vec::new();
    for (what, sql) in [
        (
            "check_results",
            "SELECT to_jsonb(r)::text FROM check_results r",
        ),
        ("incidents", "SELECT to_jsonb(i)::text FROM incidents i"),
        (
            "alert_outbox",
            "SELECT to_jsonb(o)::text FROM alert_outbox o",
        ),
        ("sites", "SELECT to_jsonb(s)::text FROM sites s"),
    ] {
        for row in client.query(sql, &[]).await.unwrap() {
            seen.push((what.to_owned(), row.get(0)));
        }
    }
    let received = vendors.under("/");
    assert!(!received.is_empty());
    for r in &received {
        let headers: Vec<String> = r
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {}", String::from_utf8_lossy(v.as_bytes())))
            .collect();
        seen.push((
            format!("receiver {}", r.path),
            format!(
                "{}\n{}\n{}",
                r.path,
                headers.join("\n"),
                String::from_utf8_lossy(&r.body)
            ),
        ));
    }
    for m in smtp.mails() {
        seen.push(("email".into(), m.data.clone()));
    }
    for site in ["echo", "loop"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sitewatch"))
            .args(["check", "--config"])
            .arg(&cfg.path)
            .args(["--site", site])
            .output()
            .unwrap();
        seen.push((
            format!("sitewatch check --site {site}"),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ));
        let out = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.contains("outcome:      down"), "{out}");
    }
    // The check did see the echo: the secrets were there to be caught.
    let evidence = seen
        .iter()
        .any(|(w, t)| w == "check_results" && t.contains("ECHO"));
    assert!(evidence, "no evidence of the echo was kept");
    let looped = seen
        .iter()
        .any(|(w, t)| w == "incidents" && t.contains("redirects") && t.contains("quoted"));
    assert!(looped, "the redirect loop's cause is not on record");
    for (what, text) in &seen {
        let lower = text.to_lowercase();
        for s in secrets() {
            for f in forms(s) {
                assert!(
                    !lower.contains(&f.to_lowercase()),
                    "{what} shows {s:?} as {f:?}:\n{}",
                    text.chars().take(3000).collect::<String>()
                );
            }
        }
    }
    println!(
        "{} texts searched, none shows a secret in any of 11 forms",
        seen.len()
    );

    // Every JSON channel's body parses and names the site; the causes held
    // quotes and backslashes from the server.
    let mut bodies = 0;
    for (_, prefix) in PREFIXES.iter().chain([&("templated", "/templated")]) {
        if *prefix == "/ntfy" {
            continue; // ntfy's body is the message text, its title a header.
        }
        for r in vendors.under(prefix) {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_else(|e| {
                panic!(
                    "{prefix}: not JSON ({e}): {}",
                    String::from_utf8_lossy(&r.body)
                )
            });
            let text = v.to_string();
            let resolve = v["event_action"] == "resolve";
            assert!(
                resolve || text.contains("echo") || text.contains("loop"),
                "{prefix}: no site named in {text}"
            );
            bodies += 1;
        }
    }
    let templated = vendors.under("/templated");
    assert!(templated.len() >= 2, "{templated:?}");
    for r in templated {
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert!(v["site"] == "echo" || v["site"] == "loop", "{v}");
    }
    println!("{bodies} JSON alert bodies parsed");
}
