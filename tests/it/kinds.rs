//! Check kinds other than HTTP, against local servers: `tcp://` connects
//! to an echo server, a server with a banner, a closed port and a server
//! that never answers.

use std::time::Duration;

use sitewatch::checker::HttpChecker;
use sitewatch::config::CheckerSettings;
use sitewatch::model::{CheckOptions, CheckOutcome, ErrorKind, Outcome};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::request;
use crate::target::closed_port;

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
    assert!(
        out.error_message
            .as_deref()
            .unwrap()
            .contains("nothing matching \"^554 \""),
        "{out:?}"
    );
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
