//! The checker's resolver against a local DNS server (the internet's DNS is
//! outside the machine): a name that resolves, NXDOMAIN, SERVFAIL, a name
//! with no record of the asked family, and a server that never answers.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{RData, Record, RecordType};
use sitewatch::checker::HttpChecker;
use sitewatch::config::CheckerSettings;
use sitewatch::model::{CheckOptions, ErrorKind, IpFamily, Outcome};
use tokio::net::UdpSocket;

use crate::support::request;
use crate::target::Target;

/// How the local DNS server answers a name.
#[derive(Clone)]
pub enum Answer {
    Addresses(Vec<IpAddr>),
    Code(ResponseCode),
    /// Never answers: a black-holed server.
    Silence,
}

/// A UDP DNS server on loopback answering from a table; names not in it are
/// NXDOMAIN. Counts the queries it got, so a test can tell it was asked.
pub struct DnsServer {
    pub addr: SocketAddr,
    pub queries: Arc<AtomicUsize>,
}

impl DnsServer {
    pub async fn start(zone: &[(&str, Answer)]) -> DnsServer {
        let zone: HashMap<String, Answer> = zone
            .iter()
            .map(|(name, a)| (format!("{}.", name.trim_end_matches('.')), a.clone()))
            .collect();
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let queries = Arc::new(AtomicUsize::new(0));
        let counted = queries.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                if let Some(reply) = answer(&zone, &query) {
                    let _ = socket.send_to(&reply.to_vec().unwrap(), peer).await;
                }
            }
        });
        DnsServer { addr, queries }
    }
}

fn answer(zone: &HashMap<String, Answer>, query: &Message) -> Option<Message> {
    let q = query.queries.first()?.clone();
    let name = q.name().to_ascii().to_lowercase();
    let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
    reply.metadata.message_type = MessageType::Response;
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.add_query(q.clone());
    match zone.get(&name) {
        None => reply.metadata.response_code = ResponseCode::NXDomain,
        Some(Answer::Silence) => return None,
        Some(Answer::Code(code)) => reply.metadata.response_code = *code,
        Some(Answer::Addresses(ips)) => {
            for ip in ips {
                let data = match (ip, q.query_type()) {
                    (IpAddr::V4(v4), RecordType::A) => RData::A(A(*v4)),
                    (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(*v6)),
                    _ => continue,
                };
                reply.add_answer(Record::from_rdata(q.name().clone(), 60, data));
            }
        }
    }
    Some(reply)
}

fn checker(dns: &DnsServer) -> HttpChecker {
    let settings = CheckerSettings {
        dns_servers: vec![dns.addr.to_string()],
        ..CheckerSettings::default()
    };
    HttpChecker::new(&settings, "test").unwrap()
}

async fn zone_server() -> DnsServer {
    DnsServer::start(&[
        (
            "up.sitewatch.test",
            Answer::Addresses(vec!["127.0.0.1".parse().unwrap()]),
        ),
        (
            "v6only.sitewatch.test",
            Answer::Addresses(vec!["::1".parse().unwrap()]),
        ),
        (
            "broken.sitewatch.test",
            Answer::Code(ResponseCode::ServFail),
        ),
        (
            "refusing.sitewatch.test",
            Answer::Code(ResponseCode::Refused),
        ),
        ("silent.sitewatch.test", Answer::Silence),
    ])
    .await
}

#[tokio::test]
async fn a_name_resolved_by_the_configured_server_is_up_with_its_dns_time() {
    let dns = zone_server().await;
    let target = Target::start().await;
    let http = checker(&dns);
    let url = format!("http://up.sitewatch.test:{}/ok", target.addr.port());
    let out = http
        .check(&request("dns-up", chrono::Utc::now(), &url))
        .await;
    assert_eq!(out.outcome, Outcome::Up, "{out:?}");
    assert!(
        out.timing.as_ref().and_then(|t| t.dns_ms).is_some(),
        "{out:?}"
    );
    assert_eq!(
        out.remote_addr.as_deref(),
        Some(target.addr.to_string().as_str())
    );
    // Asked afresh for each check (no cache by default).
    let before = dns.queries.load(Ordering::SeqCst);
    assert!(before >= 1);
    let again = http
        .check(&request("dns-up", chrono::Utc::now(), &url))
        .await;
    assert_eq!(again.outcome, Outcome::Up);
    assert!(dns.queries.load(Ordering::SeqCst) > before);
}

#[tokio::test]
async fn nxdomain_servfail_refused_and_an_empty_answer_are_told_apart() {
    let dns = zone_server().await;
    let http = checker(&dns);
    let check = |host: &str, family: IpFamily| {
        let mut req = request("dns-bad", chrono::Utc::now(), &format!("http://{host}/"));
        req.options = Some(CheckOptions {
            ip_family: family,
            ..CheckOptions::default()
        });
        let http = &http;
        async move { http.check(&req).await }
    };
    let mut messages = Vec::new();
    for (host, family, says) in [
        ("nowhere.sitewatch.test", IpFamily::Any, "NXDOMAIN"),
        ("broken.sitewatch.test", IpFamily::Any, "SERVFAIL"),
        ("refusing.sitewatch.test", IpFamily::Any, "REFUSED"),
        ("v6only.sitewatch.test", IpFamily::Ipv4, "no A record"),
    ] {
        let out = check(host, family).await;
        assert_eq!(out.outcome, Outcome::Down, "{host}: {out:?}");
        assert_eq!(out.error_kind, Some(ErrorKind::Dns), "{host}: {out:?}");
        let msg = out.error_message.clone().unwrap();
        assert!(msg.contains(says) && msg.contains(host), "{host}: {msg}");
        assert!(
            msg.contains(&dns.addr.to_string()),
            "names the server: {msg}"
        );
        messages.push(msg);
    }
    // Only the NXDOMAIN one says NXDOMAIN.
    assert_eq!(
        messages.iter().filter(|m| m.contains("NXDOMAIN")).count(),
        1
    );
}

#[tokio::test]
async fn a_server_that_never_answers_fails_the_check_within_its_timeout() {
    let dns = zone_server().await;
    let http = checker(&dns);
    let mut req = request(
        "dns-silent",
        chrono::Utc::now(),
        "http://silent.sitewatch.test/",
    );
    req.timeout_ms = 800;
    let out = http.check(&req).await;
    assert_eq!(out.outcome, Outcome::Down, "{out:?}");
    assert_eq!(out.error_kind, Some(ErrorKind::Dns), "{out:?}");
    let msg = out.error_message.clone().unwrap();
    assert!(
        msg.contains("timed out") && msg.contains("silent.sitewatch.test"),
        "{msg}"
    );
    // Bounded, never a hang: the bound is the timeout plus 1 s.
    let took = out.finished_at.unwrap() - out.started_at.unwrap();
    assert!(
        took < chrono::Duration::milliseconds(800 + 1000),
        "took {took}"
    );
    assert!(dns.queries.load(Ordering::SeqCst) >= 1);
}
