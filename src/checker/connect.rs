//! Getting a connection for a check, one timed phase at a time: resolve the
//! name, connect over TCP, shake hands over TLS, then start HTTP/1.1 or
//! HTTP/2 (as ALPN chose). reqwest hides these phases, so the checker does
//! them itself; every phase that happened adds its time to the [`Trace`],
//! and a phase that did not happen (no DNS for an IP literal, nothing but the
//! request on a reused connection) stays `None`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use http_body_util::Full;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use url::Url;

use super::resolve::Resolver;
use super::tls::{self, Tls};
use crate::model::{ErrorKind, IpFamily, Timing, TlsDetails};
use crate::net;

/// Largest response head accepted (status line and headers): Chromium's
/// limit (`net::HttpStreamParser`, 256 KiB). A server that sends more is
/// answered with a `protocol` failure, not with memory.
pub const MAX_HEAD_BYTES: usize = 256 * 1024;
/// Response header fields accepted at most: far past what browsers meet
/// (hyper's default of 100 refused real sites), still bounded.
pub const MAX_HEADERS: usize = 1024;
/// Idle pooled connections kept per origin (`reuse_connection` sites).
const POOL_PER_ORIGIN: usize = 4;
/// A pooled connection idle longer than this is not reused: servers close
/// idle connections, and a reuse that races the close fails the check.
const POOL_IDLE: Duration = Duration::from_secs(30);

/// Why a check got no (complete) response: data, not an `Err` of the daemon.
#[derive(Debug)]
pub struct Fail {
    pub kind: ErrorKind,
    pub message: String,
}

impl Fail {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Fail {
        Fail {
            kind,
            message: message.into(),
        }
    }
}

/// The phase a check is in, named when it times out there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Phase {
    #[default]
    Dns,
    Connect,
    Tls,
    /// Request written, waiting for the response head.
    Ttfb,
    /// Reading the body.
    Transfer,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Dns => "dns",
            Phase::Connect => "connect",
            Phase::Tls => "tls",
            Phase::Ttfb => "waiting for the response",
            Phase::Transfer => "reading the body",
        }
    }
}

/// What a check saw as it went. Kept outside the check's future, so a
/// timeout still reports the phases that finished.
#[derive(Debug, Default)]
pub struct Trace {
    pub timing: Timing,
    pub phase: Phase,
    /// The certificate that expires first over all the hops.
    pub cert: Option<TlsDetails>,
    pub remote: Option<SocketAddr>,
    pub http_version: Option<&'static str>,
    /// The name being resolved in the DNS phase (a redirect's may differ
    /// from the site's).
    pub resolving: Option<String>,
}

impl Trace {
    /// Adds the time since `since` to a phase's total.
    pub fn add(slot: &mut Option<f64>, since: Instant) {
        *slot = Some(slot.unwrap_or(0.0) + since.elapsed().as_secs_f64() * 1e3);
    }

    fn saw_cert(&mut self, cert: Option<TlsDetails>) {
        let Some(cert) = cert else { return };
        if self
            .cert
            .as_ref()
            .is_none_or(|c| cert.not_after < c.not_after)
        {
            self.cert = Some(cert);
        }
    }
}

/// How to reach one origin.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    pub https: bool,
    pub host: String,
    pub port: u16,
    pub verify_tls: bool,
    pub ip_family: IpFamily,
    /// Only public addresses (on-demand checks; see `net`).
    pub public_only: bool,
}

impl Route {
    pub fn of(url: &Url, verify_tls: bool, ip_family: IpFamily, public_only: bool) -> Route {
        Route {
            https: url.scheme() == "https",
            host: url.host_str().unwrap_or_default().to_owned(),
            port: url.port_or_known_default().unwrap_or(80),
            verify_tls,
            ip_family,
            public_only,
        }
    }
}

pub enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

/// A connection ready for a request.
pub struct Conn {
    pub sender: Sender,
    pub route: Route,
    pub remote: SocketAddr,
    pub http_version: &'static str,
    /// Recorded again for each check that reuses the connection.
    pub cert: Option<TlsDetails>,
    /// Drives the connection; aborted when the `Conn` is dropped, so a
    /// hostile server's connection never outlives its check.
    _task: AbortOnDrop,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Conn {
    fn usable(&self) -> bool {
        match &self.sender {
            Sender::H1(s) => s.is_ready(),
            Sender::H2(s) => s.is_ready(),
        }
    }
}

/// Opens connections, and keeps idle ones for `reuse_connection` sites.
pub struct Connector {
    tls: Tls,
    resolver: Resolver,
    pool: Mutex<HashMap<Route, Vec<(Instant, Conn)>>>,
}

impl Connector {
    pub fn new(tls: Tls, resolver: Resolver) -> Connector {
        Connector {
            tls,
            resolver,
            pool: Mutex::new(HashMap::new()),
        }
    }

    /// An idle pooled connection for `route`, if one is still usable. Its
    /// check records no DNS, connect or TLS time: none was spent.
    pub fn pooled(&self, route: &Route, trace: &mut Trace) -> Option<Conn> {
        let mut pool = self.pool.lock().expect("pool lock");
        let idle = pool.get_mut(route)?;
        while let Some((since, conn)) = idle.pop() {
            if since.elapsed() < POOL_IDLE && conn.usable() {
                trace.remote = Some(conn.remote);
                trace.http_version = Some(conn.http_version);
                trace.saw_cert(conn.cert.clone());
                return Some(conn);
            }
        }
        None
    }

    /// The TLS set-up (trusted roots), for `tls://` checks.
    pub fn tls(&self) -> &Tls {
        &self.tls
    }

    /// The resolver, for the message of a lookup cut short by the deadline.
    pub fn resolver(&self) -> &Resolver {
        &self.resolver
    }

    /// Keeps `conn` for the next check of its origin.
    pub fn put_back(&self, conn: Conn) {
        let mut pool = self.pool.lock().expect("pool lock");
        // Drop origins whose connections all went stale, so the map does
        // not keep every origin ever checked.
        pool.retain(|_, idle| {
            idle.retain(|(since, c)| since.elapsed() < POOL_IDLE && c.usable());
            !idle.is_empty()
        });
        let idle = pool.entry(conn.route.clone()).or_default();
        if idle.len() < POOL_PER_ORIGIN {
            idle.push((Instant::now(), conn));
        }
    }

    /// Resolves and connects over TCP (each address in turn, with its share
    /// of the time left before `deadline`), timing both phases into `trace`.
    pub async fn connect_tcp(
        &self,
        route: &Route,
        trace: &mut Trace,
        deadline: Instant,
    ) -> Result<(TcpStream, SocketAddr), Fail> {
        let addrs = resolve(&self.resolver, route, trace).await?;

        trace.phase = Phase::Connect;
        let started = Instant::now();
        let mut errors = Vec::new();
        let mut tcp = None;
        for (i, addr) in addrs.iter().enumerate() {
            // Later addresses get their share of the time left, so one
            // black-holed address does not use up the whole timeout.
            let left = deadline.saturating_duration_since(Instant::now());
            let share = left / (addrs.len() - i) as u32;
            match tokio::time::timeout(share, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => {
                    tcp = Some((s, *addr));
                    break;
                }
                Ok(Err(e)) => errors.push(format!("{addr}: {e}")),
                Err(_) => errors.push(format!("{addr}: no answer within {share:?}")),
            }
        }
        Trace::add(&mut trace.timing.connect_ms, started);
        let Some((tcp, remote)) = tcp else {
            return Err(Fail::new(
                ErrorKind::Connect,
                format!("could not connect to {}: {}", route.host, errors.join("; ")),
            ));
        };
        let _ = tcp.set_nodelay(true);
        trace.remote = Some(remote);
        Ok((tcp, remote))
    }

    /// Resolves, connects, shakes hands and starts HTTP, timing each phase
    /// into `trace`. `deadline` bounds how long each address may take.
    pub async fn connect(
        &self,
        route: &Route,
        trace: &mut Trace,
        deadline: Instant,
    ) -> Result<Conn, Fail> {
        let (tcp, remote) = self.connect_tcp(route, trace, deadline).await?;

        if !route.https {
            let conn = start_http(TokioIo::new(tcp), false).await?;
            trace.http_version = Some("HTTP/1.1");
            return Ok(conn.finish(route, remote, "HTTP/1.1", None));
        }

        trace.phase = Phase::Tls;
        let started = Instant::now();
        let shake = self.tls.handshake(tcp, &route.host, route.verify_tls).await;
        Trace::add(&mut trace.timing.tls_ms, started);
        let mut cert = tls::expires_first(&shake.chain, Utc::now());
        let stream = match shake.result {
            Ok(s) => s,
            Err(e) => {
                trace.saw_cert(cert);
                let why = chain(&e);
                return Err(Fail::new(
                    ErrorKind::Tls,
                    format!(
                        "TLS handshake with {}: {why}{}",
                        route.host,
                        tls::hint(&why)
                    ),
                ));
            }
        };
        if let Some(c) = cert.as_mut() {
            c.version = tls::version(&stream);
        }
        trace.saw_cert(cert.clone());
        let h2 = tls::negotiated_h2(&stream);
        let version = if h2 { "HTTP/2" } else { "HTTP/1.1" };
        trace.http_version = Some(version);
        let conn = start_http(TokioIo::new(LenientEof(stream)), h2).await?;
        Ok(conn.finish(route, remote, version, cert))
    }
}

/// The addresses to try, in order: the literal, or what the name resolves
/// to, filtered for public-only checks and ordered by `ip_family`.
async fn resolve(
    resolver: &Resolver,
    route: &Route,
    trace: &mut Trace,
) -> Result<Vec<SocketAddr>, Fail> {
    let bare = route.host.trim_start_matches('[').trim_end_matches(']');
    let mut addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => {
            if route.public_only && !net::is_public(ip) {
                return Err(Fail::new(
                    ErrorKind::InvalidRequest,
                    format!("{ip} is not a public address; refused for an on-demand check"),
                ));
            }
            vec![SocketAddr::new(ip, route.port)]
        }
        Err(_) => {
            trace.phase = Phase::Dns;
            trace.resolving = Some(bare.to_owned());
            let started = Instant::now();
            let found = resolver.lookup(bare, route.ip_family).await;
            Trace::add(&mut trace.timing.dns_ms, started);
            let all: Vec<SocketAddr> = found?
                .into_iter()
                .map(|ip| SocketAddr::new(ip, route.port))
                .collect();
            if route.public_only {
                let public: Vec<SocketAddr> = all
                    .iter()
                    .copied()
                    .filter(|a| net::is_public(a.ip()))
                    .collect();
                if public.is_empty() {
                    return Err(Fail::new(
                        ErrorKind::Dns,
                        format!(
                            "{bare} resolves only to non-public addresses ({}); refused for an \
                             on-demand check",
                            all.iter()
                                .map(|a| a.ip().to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
                public
            } else {
                all
            }
        }
    };
    let v4 = |a: &SocketAddr| a.is_ipv4();
    match route.ip_family {
        IpFamily::Any => {}
        IpFamily::PreferIpv4 => addrs.sort_by_key(|a| !v4(a)),
        IpFamily::PreferIpv6 => addrs.sort_by_key(v4),
        IpFamily::Ipv4 => addrs.retain(v4),
        IpFamily::Ipv6 => addrs.retain(|a| !v4(a)),
    }
    if addrs.is_empty() {
        return Err(Fail::new(
            ErrorKind::Dns,
            format!(
                "{bare} has no address for ip_family {}",
                route.ip_family.as_str()
            ),
        ));
    }
    Ok(addrs)
}

/// A started HTTP connection, before it knows its route.
struct Started {
    sender: Sender,
    task: AbortOnDrop,
}

impl Started {
    fn finish(
        self,
        route: &Route,
        remote: SocketAddr,
        http_version: &'static str,
        cert: Option<TlsDetails>,
    ) -> Conn {
        Conn {
            sender: self.sender,
            route: route.clone(),
            remote,
            http_version,
            cert,
            _task: self.task,
        }
    }
}

async fn start_http<S>(io: TokioIo<S>, h2: bool) -> Result<Started, Fail>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let protocol = |e: hyper::Error| Fail::new(ErrorKind::Protocol, chain(&e));
    Ok(if h2 {
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .max_header_list_size(MAX_HEAD_BYTES as u32)
            .handshake(io)
            .await
            .map_err(protocol)?;
        Started {
            sender: Sender::H2(sender),
            task: drive(conn),
        }
    } else {
        let (sender, conn) = http1::Builder::new()
            .max_buf_size(MAX_HEAD_BYTES)
            .max_headers(MAX_HEADERS)
            .handshake(io)
            .await
            .map_err(protocol)?;
        Started {
            sender: Sender::H1(sender),
            task: drive(conn),
        }
    })
}

/// A TLS stream whose peer may close TCP without a `close_notify` alert:
/// that ends the stream like a clean close instead of failing the read, as
/// curl and browsers accept it from legacy servers (RFC 8446 section 6.1
/// requires the alert, but HTTP/1.1 close-delimited bodies predate it). A
/// body whose length was announced (Content-Length, chunked) and cut short
/// still fails: hyper sees the message incomplete.
struct LenientEof<S>(S);

impl<S: AsyncRead + Unpin> AsyncRead for LenientEof<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match std::pin::Pin::new(&mut self.0).poll_read(cx, buf) {
            std::task::Poll::Ready(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                std::task::Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for LenientEof<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, data)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Runs a connection in a task of its own, aborted when the check lets go.
fn drive<F>(conn: F) -> AbortOnDrop
where
    F: std::future::Future + Send + 'static,
{
    AbortOnDrop(tokio::spawn(async move {
        let _ = conn.await;
    }))
}

/// An error and its causes on one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}
