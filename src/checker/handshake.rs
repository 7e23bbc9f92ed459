//! A `tls://host:port` check: connect, optionally speak STARTTLS first
//! (SMTP, RFC 3207; IMAP, RFC 3501 section 6.2.1), shake hands, and judge
//! the certificate. The outcome carries the DNS, connect and TLS times and
//! the certificate that expires first (subject, issuer, expiry, days left,
//! TLS version), also when the handshake failed.

use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::connect::{chain, Connector, Fail, Phase, Route, Trace};
use super::tls::{self, Tls};
use crate::model::{CheckOptions, CheckOutcome, CheckRequest, ErrorKind, Failure, Outcome};

/// A STARTTLS dialogue's lines are short; a server that sends more before
/// the handshake is not the protocol asked for.
const MAX_GREETING: usize = 16 * 1024;

/// Runs the `tls://` check `req`.
pub async fn check(
    connector: &Connector,
    tls: &Tls,
    req: &CheckRequest,
    instance: &str,
) -> CheckOutcome {
    let mut out = CheckOutcome {
        started_at: Some(Utc::now()),
        ..CheckOutcome::of(req, Outcome::Down, instance)
    };
    let o = req.options.clone().unwrap_or_default();
    let url = match url::Url::parse(&req.url) {
        Ok(u) => u,
        Err(e) => return out.invalid(format!("bad url: {e}")),
    };
    let (Some(host), Some(port)) = (url.host_str(), url.port()) else {
        return out.invalid(format!("{url} is not a tls://host:port URL"));
    };
    let route = Route {
        https: false,
        host: host.to_owned(),
        port,
        verify_tls: o.verify_tls,
        ip_family: o.ip_family,
        public_only: req.public_only,
    };
    let timeout = Duration::from_millis(req.timeout_ms);
    let clock = Instant::now();
    let deadline = clock + timeout;
    let mut trace = Trace::default();
    let shake = run(connector, tls, &route, &o, &mut trace, deadline);
    let result = tokio::time::timeout_at(deadline.into(), shake).await;
    let took = clock.elapsed().as_secs_f64() * 1e3;
    out.finished_at = Some(Utc::now());
    out.timing = Some(trace.timing);
    out.remote_addr = trace.remote.map(|a| a.to_string());
    out.tls = trace.cert;
    let fail = |out: &mut CheckOutcome, kind, message| {
        out.error_kind = Some(kind);
        out.error_message = Some(message);
    };
    match result {
        Err(_) if trace.phase == Phase::Dns => {
            let host = trace.resolving.as_deref().unwrap_or_default();
            let why = connector.resolver().timed_out(host, timeout);
            fail(&mut out, ErrorKind::Dns, why);
        }
        Err(_) => fail(
            &mut out,
            ErrorKind::Timeout,
            format!(
                "no completed handshake within {timeout:?} (timed out in {})",
                trace.phase.as_str()
            ),
        ),
        Ok(Err(f)) => fail(&mut out, f.kind, f.message),
        Ok(Ok(())) => {
            out.response_time_ms = Some(took);
            judge(&mut out, &o);
        }
    }
    out
}

async fn run(
    connector: &Connector,
    tls: &Tls,
    route: &Route,
    o: &CheckOptions,
    trace: &mut Trace,
    deadline: Instant,
) -> Result<(), Fail> {
    let (mut tcp, _) = connector.connect_tcp(route, trace, deadline).await?;
    if let Some(protocol) = o.starttls.as_deref() {
        trace.phase = Phase::Ttfb;
        let started = Instant::now();
        starttls(&mut tcp, protocol).await?;
        Trace::add(&mut trace.timing.ttfb_ms, started);
    }
    trace.phase = Phase::Tls;
    let started = Instant::now();
    let name = o.server_name.as_deref().unwrap_or(&route.host);
    let shake = tls.handshake(tcp, name, route.verify_tls).await;
    Trace::add(&mut trace.timing.tls_ms, started);
    let mut cert = tls::expires_first(&shake.chain, Utc::now());
    match shake.result {
        Ok(stream) => {
            if let Some(c) = cert.as_mut() {
                c.version = tls::version(&stream);
            }
            trace.cert = cert;
            Ok(())
        }
        Err(e) => {
            trace.cert = cert;
            let why = chain(&e);
            Err(Fail::new(
                ErrorKind::Tls,
                format!("TLS handshake with {name}: {why}{}", tls::hint(&why)),
            ))
        }
    }
}

/// The plain-text part of STARTTLS, up to the server's go-ahead.
async fn starttls(tcp: &mut TcpStream, protocol: &str) -> Result<(), Fail> {
    let refused = |what: &str, line: &str| {
        Fail::new(
            ErrorKind::Protocol,
            format!("STARTTLS ({protocol}): {what}, the server said {line:?}"),
        )
    };
    match protocol {
        "smtp" => {
            let greeting = reply(tcp).await?;
            if !greeting.starts_with("220") {
                return Err(refused("no 220 greeting", &greeting));
            }
            send(tcp, b"EHLO sitewatch\r\n").await?;
            let ehlo = reply(tcp).await?;
            if !ehlo.starts_with("250") {
                return Err(refused("EHLO refused", &ehlo));
            }
            send(tcp, b"STARTTLS\r\n").await?;
            let go = reply(tcp).await?;
            if !go.starts_with("220") {
                return Err(refused("STARTTLS refused", &go));
            }
        }
        _ => {
            let greeting = reply(tcp).await?;
            if !greeting.starts_with("* OK") {
                return Err(refused("no * OK greeting", &greeting));
            }
            send(tcp, b"a1 STARTTLS\r\n").await?;
            let go = reply(tcp).await?;
            if !go.starts_with("a1 OK") {
                return Err(refused("STARTTLS refused", &go));
            }
        }
    }
    Ok(())
}

async fn send(tcp: &mut TcpStream, line: &[u8]) -> Result<(), Fail> {
    tcp.write_all(line)
        .await
        .map_err(|e| Fail::new(ErrorKind::Connect, format!("STARTTLS: writing: {e}")))
}

/// One complete reply: for SMTP the last line of a multi-line reply
/// (`250-...` lines continue, `250 ...` ends it), for IMAP untagged lines
/// are passed over until a tagged or greeting line. Read byte by byte: the
/// server sends nothing more until the handshake, and nothing may be read
/// past the reply.
async fn reply(tcp: &mut TcpStream) -> Result<String, Fail> {
    let mut text = Vec::new();
    loop {
        let mut line = Vec::new();
        loop {
            let mut byte = [0u8; 1];
            let n = tcp
                .read(&mut byte)
                .await
                .map_err(|e| Fail::new(ErrorKind::Protocol, format!("STARTTLS: reading: {e}")))?;
            if n == 0 {
                return Err(Fail::new(
                    ErrorKind::Protocol,
                    "STARTTLS: the server closed the connection",
                ));
            }
            line.push(byte[0]);
            text.push(byte[0]);
            if text.len() > MAX_GREETING {
                return Err(Fail::new(
                    ErrorKind::Protocol,
                    format!("STARTTLS: more than {MAX_GREETING} bytes before the handshake"),
                ));
            }
            if byte[0] == b'\n' {
                break;
            }
        }
        let line = String::from_utf8_lossy(&line).trim_end().to_owned();
        // SMTP continuation ("250-..."); IMAP capability or other untagged
        // data after the greeting ("* CAPABILITY ...").
        let more = line.as_bytes().get(3) == Some(&b'-')
            || (line.starts_with("* ") && !line.starts_with("* OK"));
        if !more {
            return Ok(line);
        }
    }
}

fn judge(out: &mut CheckOutcome, o: &CheckOptions) {
    if let (Some(min), Some(cert)) = (o.min_cert_days, out.tls.as_ref()) {
        if cert.days_left < f64::from(min) {
            let f = Failure {
                assertion: "min_cert_days".into(),
                expected: format!(">= {min} days left"),
                observed: format!(
                    "{:.1} days left (expires {})",
                    cert.days_left, cert.not_after
                ),
            };
            out.fail_with(ErrorKind::CertExpiring, vec![f]);
            return;
        }
    }
    let took = out.response_time_ms.unwrap_or_default();
    match o.degraded_after_ms {
        Some(limit) if took > limit as f64 => {
            out.outcome = Outcome::Degraded;
            out.error_kind = Some(ErrorKind::Slow);
            out.error_message = Some(format!(
                "degraded_after: expected <= {limit} ms, got {took:.0} ms"
            ));
        }
        _ => out.outcome = Outcome::Up,
    }
}
