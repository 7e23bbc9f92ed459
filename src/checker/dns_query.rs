//! A `dns://[server[:port]]/name?type=T` check: one query (hickory's
//! client over UDP) to the given server, or to the checker's first DNS
//! server. The outcome carries the query time (`dns_ms`), the response code
//! and the answers; it is `up` when the response code is the expected one
//! (`NOERROR` unless `expect_rcode` says otherwise) and every
//! `expect_answer` is among the answers.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use chrono::Utc;
use hickory_resolver::net::client::{Client, ClientHandle};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::udp::UdpClientStream;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{DNSClass, Name, RecordType};

use super::resolve::Resolver;
use crate::model::{CheckOutcome, CheckRequest, ErrorKind, Failure, Outcome, Timing};

/// Runs the `dns://` check `req`.
pub async fn check(resolver: &Resolver, req: &CheckRequest, instance: &str) -> CheckOutcome {
    let out = CheckOutcome {
        started_at: Some(Utc::now()),
        ..CheckOutcome::of(req, Outcome::Down, instance)
    };
    let (server, name, kind) = match target(req, resolver) {
        Ok(t) => t,
        Err(msg) => return out.invalid(msg),
    };
    // The server asked is the target, named or not: `dns:///name` asks the
    // checker's own resolver, which an on-demand check may not reach when
    // it is private (it would answer for internal names).
    if req.public_only && !crate::net::is_public(server.ip()) {
        return out.invalid(format!(
            "the DNS server {} is not a public address{}; on-demand checks of private networks \
             are refused (api.allow_private_targets)",
            server.ip(),
            if url::Url::parse(&req.url).is_ok_and(|u| u.host_str().unwrap_or("").is_empty()) {
                " (the checker's own resolver, asked by dns:///name)"
            } else {
                ""
            }
        ));
    }
    let timeout = Duration::from_millis(req.timeout_ms);
    let clock = Instant::now();
    let stream = UdpClientStream::builder(server, TokioRuntimeProvider::default())
        .with_timeout(Some(timeout))
        .build();
    let (mut client, background) = Client::<TokioRuntimeProvider>::from_sender(stream);
    let driver = tokio::spawn(background);
    let asked = client.query(name.clone(), DNSClass::IN, kind);
    let result = tokio::time::timeout(timeout, asked).await;
    driver.abort();
    let took = clock.elapsed().as_secs_f64() * 1e3;
    let mut out = CheckOutcome {
        finished_at: Some(Utc::now()),
        ..out
    };
    let response = match result {
        // The client's own timeout (the same as ours) may fire first.
        Err(_) | Ok(Err(NetError::Timeout)) => {
            out.error_kind = Some(ErrorKind::Timeout);
            out.error_message = Some(format!(
                "no answer from {server} for {name} {kind} within {timeout:?}"
            ));
            return out;
        }
        Ok(Err(e)) => {
            out.error_kind = Some(ErrorKind::Dns);
            out.error_message = Some(format!("asking {server} for {name} {kind}: {e}"));
            return out;
        }
        Ok(Ok(r)) => r,
    };
    out.response_time_ms = Some(took);
    out.timing = Some(Timing {
        dns_ms: Some(took),
        ..Timing::default()
    });
    out.remote_addr = Some(server.to_string());
    let rcode = rcode_name(response.response_code);
    let answers: Vec<(RecordType, String)> = response
        .answers
        .iter()
        .map(|r| (r.record_type(), r.data.to_string()))
        .collect();
    out.answers = std::iter::once(rcode.clone())
        .chain(answers.iter().map(|(t, d)| format!("{t} {d}")))
        .collect();
    let o = req.options.clone().unwrap_or_default();
    let mut failures = Vec::new();
    let want = o.expect_rcode.clone().unwrap_or_else(|| "NOERROR".into());
    if rcode != want {
        failures.push(Failure {
            assertion: "rcode".into(),
            expected: want,
            observed: rcode.clone(),
        });
    }
    let seen = |expected: &str| {
        let e = expected.trim().trim_end_matches('.');
        answers
            .iter()
            .any(|(_, d)| d.trim_end_matches('.').eq_ignore_ascii_case(e) || unquoted(d) == e)
    };
    for expected in &o.expect_answer {
        if !seen(expected) {
            failures.push(Failure {
                assertion: "expect_answer".into(),
                expected: expected.clone(),
                observed: if answers.is_empty() {
                    format!("no {kind} answer ({rcode})")
                } else {
                    answers
                        .iter()
                        .map(|(_, d)| d.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            });
        }
    }
    if failures.is_empty() {
        out.outcome = Outcome::Up;
        return out;
    }
    out.fail_with(ErrorKind::AnswerMismatch, failures);
    out
}

/// The server, name and record type of a `dns://` URL (see
/// `config::normalize`).
fn target(
    req: &CheckRequest,
    resolver: &Resolver,
) -> Result<(SocketAddr, Name, RecordType), String> {
    let url = url::Url::parse(&req.url).map_err(|e| format!("bad url: {e}"))?;
    let server = match url.host_str().filter(|h| !h.is_empty()) {
        Some(h) => {
            let ip: IpAddr = h
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .map_err(|_| format!("{h} is not an IP address"))?;
            SocketAddr::new(ip, url.port().unwrap_or(53))
        }
        None => resolver
            .first_server()
            .ok_or("no DNS server in the url, checker.dns_servers or /etc/resolv.conf")?,
    };
    let name = url.path().trim_start_matches('/');
    let name = Name::from_ascii(format!("{}.", name.trim_end_matches('.')))
        .map_err(|e| format!("{name:?} is not a DNS name: {e}"))?;
    let kind = url
        .query_pairs()
        .find(|(k, _)| k == "type")
        .map_or("A".into(), |(_, v)| v.to_ascii_uppercase());
    let kind: RecordType = kind
        .parse()
        .map_err(|_| format!("{kind:?} is not a record type"))?;
    Ok((server, name, kind))
}

/// A TXT record's text without the quotes its text form may carry.
fn unquoted(data: &str) -> &str {
    data.trim_matches('"')
}

/// The RFC 1035 / RFC 6895 mnemonic of a response code.
fn rcode_name(code: ResponseCode) -> String {
    match code {
        ResponseCode::NoError => "NOERROR".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        other => format!("RCODE{}", u16::from(other)),
    }
}
