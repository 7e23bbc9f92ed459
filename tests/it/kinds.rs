//! Check kinds other than HTTP, against local servers: `tcp://` connects
//! to an echo server, a server with a banner, a closed port and a server
//! that never answers; `dns://` asks a local DNS server that answers,
//! says NXDOMAIN or SERVFAIL, or stays silent.

use std::time::Duration;

use sitewatch::checker::HttpChecker;
use sitewatch::config::CheckerSettings;
use sitewatch::model::{CheckOptions, CheckOutcome, ErrorKind, Outcome};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::dns::{Answer, DnsServer};
use crate::support::request;
use crate::target::{closed_port, TlsTarget};

/// A TCP server on loopback: each connection gets `banner`, then, when
/// `echo`, every byte it sends back.
async fn tcp_server(banner: &'static [u8], echo: bool) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(banner).await;
                let mut buf = [0u8; 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) if echo => {
                            let _ = s.write_all(&buf[..n]).await;
                        }
                        Ok(_) => {}
                    }
                }
            });
        }
    });
    port
}

async fn tcp_check(port: u16, send: Option<&str>, expect: Option<&str>) -> CheckOutcome {
    let http = HttpChecker::new(&CheckerSettings::default(), "test").unwrap();
    let mut req = request(
        "tcp",
        chrono::Utc::now(),
        &format!("tcp://127.0.0.1:{port}"),
    );
    req.timeout_ms = 800;
    req.options = Some(CheckOptions {
        send: send.map(str::to_owned),
        expect: expect.map(str::to_owned),
        ..CheckOptions::default()
    });
    http.check(&req).await
}

#[tokio::test]
async fn tcp_checks_connect_send_and_expect() {
    let echo = tcp_server(b"", true).await;
    let out = tcp_check(echo, None, None).await;
    assert_eq!(out.outcome, Outcome::Up, "{out:?}");
    assert!(out.got_response(), "a connection is the response");
    let t = out.timing.as_ref().unwrap();
    assert!(t.connect_ms.is_some() && t.dns_ms.is_none(), "{t:?}");

    let out = tcp_check(echo, Some("PING sitewatch\r\n"), Some("^PING sitewatch")).await;
    assert_eq!(out.outcome, Outcome::Up, "{out:?}");
    assert_eq!(out.regex_matched, Some(true));
    assert!(out.timing.as_ref().unwrap().ttfb_ms.is_some());

    let smtp = tcp_server(b"220 mail.sitewatch.test ESMTP\r\n", false).await;
    let out = tcp_check(smtp, None, Some("^220 ")).await;
    assert_eq!(out.outcome, Outcome::Up, "{out:?}");
    let out = tcp_check(smtp, None, Some("^554 ")).await;
    assert_eq!(out.outcome, Outcome::Down, "{out:?}");
    // The banner came and the server kept the line open: the timeout says
    // what was awaited.
    assert_eq!(out.error_kind, Some(ErrorKind::Timeout), "{out:?}");
    let message = out.error_message.as_deref().unwrap();
    assert!(message.contains("nothing matching \"^554 \""), "{out:?}");
    // What did come is shown.
    assert!(
        message.contains("got \"220 mail.sitewatch.test ESMTP"),
        "{message}"
    );
    assert_eq!(out.regex_matched, Some(false));
}

#[tokio::test]
async fn a_closed_port_or_a_wrong_answer_fails_with_what_happened() {
    let out = tcp_check(closed_port().await, None, None).await;
    assert_eq!(out.outcome, Outcome::Down);
    assert_eq!(out.error_kind, Some(ErrorKind::Connect), "{out:?}");
    assert!(!out.got_response());

    // A server that answers and closes: the mismatch names what came.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let _ = s.write_all(b"-ERR unknown command\r\n").await;
        }
    });
    let out = tcp_check(port, Some("PING\r\n"), Some("^\\+PONG")).await;
    assert_eq!(out.outcome, Outcome::Down, "{out:?}");
    assert_eq!(out.error_kind, Some(ErrorKind::RegexMismatch));
    assert_eq!(out.failures[0].assertion, "expect");
    assert!(
        out.failures[0].observed.contains("-ERR unknown command"),
        "{out:?}"
    );
    assert!(out.got_response(), "connected: the succeeded topic");
    let took = out.finished_at.unwrap() - out.started_at.unwrap();
    assert!(took < chrono::Duration::from_std(Duration::from_millis(800 + 1000)).unwrap());
}

async fn dns_check(url: &str, server: &DnsServer, options: CheckOptions) -> CheckOutcome {
    let settings = CheckerSettings {
        dns_servers: vec![server.addr.to_string()],
        ..CheckerSettings::default()
    };
    let http = HttpChecker::new(&settings, "test").unwrap();
    let mut req = request("dns", chrono::Utc::now(), url);
    req.timeout_ms = 800;
    req.options = Some(options);
    http.check(&req).await
}

#[tokio::test]
async fn dns_checks_judge_the_response_code_and_the_answers() {
    use hickory_proto::op::ResponseCode;
    let dns = DnsServer::start(&[
        (
            "www.sitewatch.test",
            Answer::Addresses(vec![
                "192.0.2.7".parse().unwrap(),
                "192.0.2.8".parse().unwrap(),
            ]),
        ),
        (
            "broken.sitewatch.test",
            Answer::Code(ResponseCode::ServFail),
        ),
        ("silent.sitewatch.test", Answer::Silence),
    ])
    .await;
    let expect = |answers: &[&str], rcode: Option<&str>| CheckOptions {
        expect_answer: answers.iter().map(|a| a.to_string()).collect(),
        expect_rcode: rcode.map(str::to_owned),
        ..CheckOptions::default()
    };
    // The server named in the url.
    let url = format!("dns://{}/www.sitewatch.test?type=A", dns.addr);
    let out = dns_check(&url, &dns, expect(&["192.0.2.8"], None)).await;
    assert_eq!(out.outcome, Outcome::Up, "{out:?}");
    assert_eq!(out.answers, ["NOERROR", "A 192.0.2.7", "A 192.0.2.8"]);
    assert!(out.timing.as_ref().unwrap().dns_ms.is_some());
    assert!(out.got_response());
    let out = dns_check(&url, &dns, expect(&["198.51.100.1"], None)).await;
    assert_eq!(out.outcome, Outcome::Down);
    assert_eq!(out.error_kind, Some(ErrorKind::AnswerMismatch));
    assert_eq!(out.failures[0].observed, "192.0.2.7, 192.0.2.8");

    // No server in the url: the checker's own (checker.dns_servers).
    let out = dns_check(
        "dns:///nowhere.sitewatch.test?type=A",
        &dns,
        expect(&[], None),
    )
    .await;
    assert_eq!(out.outcome, Outcome::Down, "{out:?}");
    assert_eq!(out.failures[0].assertion, "rcode");
    assert_eq!(
        (
            out.failures[0].expected.as_str(),
            out.failures[0].observed.as_str()
        ),
        ("NOERROR", "NXDOMAIN")
    );
    let out = dns_check(
        "dns:///nowhere.sitewatch.test?type=A",
        &dns,
        expect(&[], Some("NXDOMAIN")),
    )
    .await;
    assert_eq!(
        out.outcome,
        Outcome::Up,
        "a name that must not exist: {out:?}"
    );

    // An on-demand check may not reach a private DNS server, named in the
    // url or the checker's own (`dns:///name`): it would answer for
    // internal names. Refused before any query is sent.
    let settings = CheckerSettings {
        dns_servers: vec![dns.addr.to_string()],
        ..CheckerSettings::default()
    };
    let http = HttpChecker::new(&settings, "test").unwrap();
    for url in [
        "dns:///www.sitewatch.test?type=A".to_owned(),
        format!("dns://{}/www.sitewatch.test", dns.addr),
    ] {
        let mut req = request("dns", chrono::Utc::now(), &url);
        req.public_only = true;
        let out = http.check(&req).await;
        assert_eq!(out.error_kind, Some(ErrorKind::InvalidRequest), "{out:?}");
        let message = out.error_message.unwrap_or_default();
        assert!(message.contains("not a public address"), "{url}: {message}");
        assert!(
            out.answers.is_empty(),
            "no query was sent: {:?}",
            out.answers
        );
    }
    let out = dns_check(
        "dns:///broken.sitewatch.test?type=A",
        &dns,
        expect(&[], None),
    )
    .await;
    assert_eq!(out.failures[0].observed, "SERVFAIL", "{out:?}");

    // A server that never answers: down within the timeout.
    let out = dns_check(
        "dns:///silent.sitewatch.test?type=A",
        &dns,
        expect(&[], None),
    )
    .await;
    assert_eq!(out.outcome, Outcome::Down);
    assert_eq!(out.error_kind, Some(ErrorKind::Timeout), "{out:?}");
    assert!(!out.got_response());
    let took = out.finished_at.unwrap() - out.started_at.unwrap();
    assert!(took < chrono::Duration::milliseconds(800 + 1000), "{took}");
}

async fn tls_check(url: &str, ca: Option<&TlsTarget>, options: CheckOptions) -> CheckOutcome {
    let settings = CheckerSettings {
        ca_files: ca
            .map(|t| t.ca_file.path().to_owned())
            .into_iter()
            .collect(),
        ..CheckerSettings::default()
    };
    let http = HttpChecker::new(&settings, "test").unwrap();
    let mut req = request("tls", chrono::Utc::now(), url);
    req.timeout_ms = 2000;
    req.options = Some(options);
    http.check(&req).await
}

#[tokio::test]
async fn tls_checks_shake_hands_directly_or_after_starttls_and_judge_the_certificate() {
    // A certificate with 3 days left, from the test's own CA.
    let direct = TlsTarget::start(3).await;
    let url = format!("tls://localhost:{}", direct.addr.port());
    let out = tls_check(&url, Some(&direct), CheckOptions::default()).await;
    assert_eq!(out.outcome, Outcome::Up, "{out:?}");
    assert!(out.got_response());
    let cert = out.tls.as_ref().expect("certificate details");
    assert!(cert.days_left > 1.0 && cert.days_left < 4.0, "{cert:?}");
    assert!(cert.subject.contains("sitewatch test leaf"), "{cert:?}");
    assert!(cert.version.is_some());
    let t = out.timing.as_ref().unwrap();
    assert!(
        t.dns_ms.is_some() && t.connect_ms.is_some() && t.tls_ms.is_some(),
        "{t:?}"
    );

    let short = CheckOptions {
        min_cert_days: Some(10),
        ..CheckOptions::default()
    };
    let out = tls_check(&url, Some(&direct), short.clone()).await;
    assert_eq!(out.outcome, Outcome::Down);
    assert_eq!(out.error_kind, Some(ErrorKind::CertExpiring), "{out:?}");
    assert_eq!(out.failures[0].assertion, "min_cert_days");

    // Not trusted without the CA: a TLS failure that still reports the
    // certificate.
    let out = tls_check(&url, None, CheckOptions::default()).await;
    assert_eq!(out.error_kind, Some(ErrorKind::Tls), "{out:?}");
    assert!(out.tls.is_some(), "the certificate is recorded: {out:?}");
    assert!(!out.got_response());

    // STARTTLS over SMTP and IMAP.
    for protocol in ["smtp", "imap"] {
        let mail = TlsTarget::start_starttls(3, protocol).await;
        let url = format!("tls://localhost:{}", mail.addr.port());
        let starttls = CheckOptions {
            starttls: Some(protocol.into()),
            ..CheckOptions::default()
        };
        let out = tls_check(&url, Some(&mail), starttls).await;
        assert_eq!(out.outcome, Outcome::Up, "{protocol}: {out:?}");
        assert!(out.timing.as_ref().unwrap().ttfb_ms.is_some());
        let out = tls_check(
            &url,
            Some(&mail),
            CheckOptions {
                starttls: Some(protocol.into()),
                ..short.clone()
            },
        )
        .await;
        assert_eq!(
            out.error_kind,
            Some(ErrorKind::CertExpiring),
            "{protocol}: {out:?}"
        );
    }
    // STARTTLS asked of a server that speaks TLS at once: a clear failure.
    let out = tls_check(
        &url,
        Some(&direct),
        CheckOptions {
            starttls: Some("smtp".into()),
            ..CheckOptions::default()
        },
    )
    .await;
    assert_eq!(out.outcome, Outcome::Down);
    assert!(
        matches!(
            out.error_kind,
            Some(ErrorKind::Timeout | ErrorKind::Protocol)
        ),
        "{out:?}"
    );
}

/// `sitewatch check` runs every kind and prints what it saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sitewatch_check_runs_each_kind_and_prints_what_it_saw() {
    let echo = tcp_server(b"", true).await;
    let tls = TlsTarget::start(3).await;
    let dns = DnsServer::start(&[(
        "www.sitewatch.test",
        Answer::Addresses(vec!["192.0.2.7".parse().unwrap()]),
    )])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sitewatch.toml");
    std::fs::write(
        &config,
        format!(
            "[checker]\nca_files = [{:?}]\ndns_servers = [\"{}\"]\n",
            tls.ca_file.path(),
            dns.addr
        ),
    )
    .unwrap();
    let run = |args: Vec<String>| {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_sitewatch"))
                .arg("check")
                .args(&args)
                .arg("--config")
                .arg(&config)
                .output()
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        })
    };
    let (code, out) = run(vec![
        format!("tcp://127.0.0.1:{echo}"),
        "--send".into(),
        r"PING\r\n".into(),
        "--expect".into(),
        r"^PING\r\n$".into(),
    ])
    .await
    .unwrap();
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("outcome:      up") && out.contains("connect "),
        "{out}"
    );

    let (code, out) = run(vec![
        format!("tls://localhost:{}", tls.addr.port()),
        "--min-cert-days".into(),
        "10".into(),
    ])
    .await
    .unwrap();
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("certificate:  CN=sitewatch test leaf"),
        "{out}"
    );
    assert!(out.contains("failed:       min_cert_days"), "{out}");

    let (code, out) = run(vec![
        format!("dns://{}/www.sitewatch.test?type=A", dns.addr),
        "--expect-answer".into(),
        "192.0.2.7".into(),
    ])
    .await
    .unwrap();
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("answer:       NOERROR") && out.contains("A 192.0.2.7"),
        "{out}"
    );
}
