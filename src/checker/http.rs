//! One HTTP(S) check: connect (timing each phase), send the request, follow
//! redirects as configured, read the body up to a cap, and judge the
//! response against every assertion. A site being down is data here, never
//! an `Err`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use http::header::{
    HeaderMap, HeaderName, HeaderValue, ACCEPT_ENCODING, COOKIE, HOST, LOCATION, SET_COOKIE,
    USER_AGENT,
};
use http::Method;
use http_body_util::{BodyExt, Full};
use hyper::body::Body as _;
use url::Url;

use super::connect::{chain, Conn, Connector, Fail, Phase, Route, Sender, Trace};
use super::json;
use super::judge::{HeaderCheck, Response, Rules};
use super::pattern::Pattern;
use super::redirects;
use super::resolve::{Resolver, ResolverSetupError};
use super::tls::{Tls, TlsSetupError};
use super::verdict::{self, Judging};
use super::{dns_query, handshake, tcp};
use crate::config::CheckerSettings;
use crate::model::{
    CheckKind, CheckOptions, CheckOutcome, CheckRequest, ErrorKind, LazySecrets, Origin, Outcome,
};
use crate::net;

/// Compiled regexes kept per pattern; cleared when it grows past this many
/// (on-demand checks could otherwise grow it without bound).
const REGEX_CACHE_MAX: usize = 10_000;
/// Limit on a compiled regex's size: a pattern from an on-demand request must
/// not cost unbounded memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// The checker could not start: a CA file or the DNS configuration is bad.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("setting up the HTTP checker: {0}")]
    Tls(#[from] TlsSetupError),
    #[error("setting up the HTTP checker: {0}")]
    Resolver(#[from] ResolverSetupError),
}

/// The HTTP side of a checker, shared by every check it runs.
pub struct HttpChecker {
    /// Fresh connections for most checks: each resolves, connects and
    /// handshakes afresh, so DNS, connect and TLS failures are seen (as
    /// blackbox_exporter does); pooled ones for `reuse_connection` sites.
    connector: Connector,
    max_body_bytes: u64,
    /// Body bytes kept as evidence of a failed check.
    evidence_bytes: usize,
    max_redirects: u32,
    user_agent: HeaderValue,
    /// Headers that go on to another origin after a redirect
    /// (`checker.cross_origin_headers`); the rest are dropped there.
    cross_origin: Vec<HeaderName>,
    regexes: Mutex<HashMap<String, Arc<Pattern>>>,
    /// This instance's name, recorded with each outcome.
    instance: String,
}

/// A request ready to run, with its assertions compiled.
struct Prepared {
    method: Method,
    url: Url,
    headers: HeaderMap,
    body: Bytes,
    follow: bool,
    max_redirects: u32,
    /// Body bytes read at most.
    read_cap: usize,
    verify_tls: bool,
    ip_family: crate::model::IpFamily,
    public_only: bool,
    reuse: bool,
    rules: Arc<Rules>,
}

impl HttpChecker {
    pub fn new(settings: &CheckerSettings, instance: &str) -> Result<Self, ClientError> {
        Ok(HttpChecker {
            connector: Connector::new(
                Tls::new(&settings.ca_files)?,
                Resolver::new(&settings.dns_servers, settings.dns_cache)?,
            ),
            max_body_bytes: settings.max_body_bytes,
            evidence_bytes: settings.evidence_bytes,
            max_redirects: settings.max_redirects as u32,
            user_agent: HeaderValue::from_str(&settings.user_agent)
                .unwrap_or_else(|_| HeaderValue::from_static("sitewatch")),
            cross_origin: settings
                .cross_origin_headers
                .iter()
                .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
                .collect(),
            regexes: Mutex::new(HashMap::new()),
            instance: instance.to_owned(),
        })
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Runs `req` now and reports what happened. Never takes longer than the
    /// request's timeout (plus scheduling noise). Everything the outcome
    /// says has passed the site's secret filter.
    pub async fn check(&self, req: &CheckRequest) -> CheckOutcome {
        // Compiled when a text needs it: an outcome that passed has none.
        let secrets = Arc::new(LazySecrets::of(req, &self.cross_origin));
        let mut out = match CheckKind::of_url(&req.url) {
            Some(CheckKind::Tcp) => {
                let cap = self.max_body_bytes as usize;
                let compile = |p: Option<&str>| p.map(|p| self.regex(p, req.origin)).transpose();
                tcp::check(
                    &self.connector,
                    req,
                    &self.instance,
                    cap,
                    &compile,
                    &secrets,
                )
                .await
            }
            Some(CheckKind::Tls) => {
                let tls = self.connector.tls();
                handshake::check(&self.connector, tls, req, &self.instance).await
            }
            Some(CheckKind::Dns) => {
                dns_query::check(self.connector.resolver(), req, &self.instance).await
            }
            _ => self.check_http(req, &secrets).await,
        };
        // `CheckOutcome::of` already showed the URL without credentials.
        let texts = out.error_message.is_some()
            || !out.failures.is_empty()
            || out.evidence.is_some()
            || !out.answers.is_empty();
        if texts {
            secrets.get().scrub(&mut out);
        }
        out
    }

    async fn check_http(&self, req: &CheckRequest, secrets: &Arc<LazySecrets>) -> CheckOutcome {
        let started_at = Utc::now();
        let mut out = CheckOutcome {
            started_at: Some(started_at),
            ..CheckOutcome::of(req, Outcome::Down, &self.instance)
        };
        let prepared = match self.prepare(req) {
            Ok(p) => p,
            Err(msg) => return out.invalid(msg),
        };
        let timeout = Duration::from_millis(req.timeout_ms);
        let clock = Instant::now();
        let deadline = clock + timeout;
        let mut trace = Trace::default();
        let result =
            tokio::time::timeout_at(deadline.into(), self.run(&prepared, &mut trace, deadline))
                .await;
        let took = clock.elapsed().as_secs_f64() * 1e3;
        out.finished_at = Some(Utc::now());
        out.timing = Some(trace.timing);
        out.tls = trace.cert;
        out.remote_addr = trace.remote.map(|a| a.to_string());
        out.http_version = trace.http_version.map(str::to_owned);
        match result {
            // Silence from the DNS servers is a DNS fault, told apart from
            // NXDOMAIN and SERVFAIL by its message.
            Err(_) if trace.phase == Phase::Dns => {
                let host = trace.resolving.as_deref().unwrap_or_default();
                let why = self.connector.resolver().timed_out(host, timeout);
                fail(&mut out, ErrorKind::Dns, why)
            }
            Err(_) => fail(
                &mut out,
                ErrorKind::Timeout,
                format!(
                    "no complete response within {timeout:?} (timed out in {})",
                    trace.phase.as_str()
                ),
            ),
            Ok(Err(f)) => fail(&mut out, f.kind, f.message),
            Ok(Ok(resp)) => {
                out.response_time_ms = Some(took);
                let judging = Judging {
                    rules: prepared.rules.clone(),
                    cap: prepared.read_cap,
                    keep: self.evidence_bytes,
                };
                out = verdict::judged(out, resp, &judging, deadline, secrets.clone()).await;
            }
        }
        out
    }

    fn prepare(&self, req: &CheckRequest) -> Result<Prepared, String> {
        let method = Method::from_bytes(req.method.as_bytes())
            .map_err(|_| format!("{:?} is not an HTTP method", req.method))?;
        let url = Url::parse(&req.url).map_err(|e| format!("bad url: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!("{url} is not an http(s) URL with a host"));
        }
        let mut headers = HeaderMap::new();
        for (k, v) in &req.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("bad header name {k:?}"))?;
            let mut value =
                HeaderValue::from_str(v).map_err(|_| format!("bad value for header {k:?}"))?;
            value.set_sensitive(true);
            headers.append(name, value);
        }
        // As browsers do: the server may compress, and the checker decodes
        // (see `decode`). A site that sets its own header keeps it.
        if !headers.contains_key(ACCEPT_ENCODING) {
            headers.insert(
                ACCEPT_ENCODING,
                HeaderValue::from_static("gzip, deflate, br"),
            );
        }
        if !headers.contains_key(USER_AGENT) {
            headers.insert(USER_AGENT, self.user_agent.clone());
        }
        let defaults = CheckOptions::default();
        let o = req.options.as_ref().unwrap_or(&defaults);
        let mut header_checks = Vec::with_capacity(o.expect_headers.len());
        for h in &o.expect_headers {
            header_checks.push(HeaderCheck {
                name: HeaderName::from_bytes(h.name.as_bytes())
                    .map_err(|_| format!("bad header name {:?} in expect_headers", h.name))?,
                matches: h
                    .matches
                    .as_deref()
                    .map(|p| self.regex(p, req.origin))
                    .transpose()?,
                absent: h.absent,
            });
        }
        let rules = Arc::new(Rules {
            expect: req
                .expect_status
                .parse()
                .map_err(|e| format!("bad expect_status: {e}"))?,
            regex: req
                .regex
                .as_deref()
                .map(|p| self.regex(p, req.origin))
                .transpose()?,
            forbidden: o
                .forbidden_regex
                .as_deref()
                .map(|p| self.regex(p, req.origin))
                .transpose()?,
            headers: header_checks,
            json: o
                .json
                .iter()
                .map(|rule| json::compile(rule, |p| self.regex(p, req.origin)))
                .collect::<Result<_, _>>()?,
            body_min: o.body_min_bytes,
            body_max: o.body_max_bytes,
            min_cert_days: o.min_cert_days,
            degraded_after_ms: o.degraded_after_ms,
        });
        if req.public_only && net::literal_ip(&url).is_some_and(|ip| !net::is_public(ip)) {
            return Err(format!(
                "{url} is not a public address; refused for an on-demand check"
            ));
        }
        // One byte past `body_max_bytes` tells a body that is too large.
        let read_cap = o
            .body_max_bytes
            .map_or(self.max_body_bytes, |max| self.max_body_bytes.max(max + 1));
        Ok(Prepared {
            method,
            url,
            headers,
            body: o.body.clone().map(Bytes::from).unwrap_or_default(),
            follow: o.follow_redirects,
            max_redirects: o.max_redirects.unwrap_or(self.max_redirects),
            read_cap: read_cap as usize,
            verify_tls: o.verify_tls,
            ip_family: o.ip_family,
            public_only: req.public_only,
            reuse: req.reuse_connection && !req.public_only,
            rules,
        })
    }

    /// The exchange, hop by hop through redirects.
    async fn run(
        &self,
        p: &Prepared,
        trace: &mut Trace,
        deadline: Instant,
    ) -> Result<Response, Fail> {
        let mut url = p.url.clone();
        let mut method = p.method.clone();
        let mut headers = p.headers.clone();
        let mut body = p.body.clone();
        // Cookies set along this check's own redirect chain, by RFC 6265's
        // domain and path rules; never shared with another check.
        let mut jar = cookie_store::CookieStore::default();
        let mut configured_cookie = headers.get(COOKIE).cloned();
        loop {
            redirects::with_cookies(&mut headers, configured_cookie.as_ref(), &jar, &url);
            let route = Route::of(&url, p.verify_tls, p.ip_family, p.public_only);
            let pooled = if p.reuse {
                self.connector.pooled(&route, trace)
            } else {
                None
            };
            let reused = pooled.is_some();
            let mut conn = match pooled {
                Some(c) => c,
                None => self.connector.connect(&route, trace, deadline).await?,
            };

            trace.phase = Phase::Ttfb;
            let mut started = Instant::now();
            let mut sent = send(&mut conn, &url, &method, &headers, &body).await?;
            let stale =
                |e: &hyper::Error| e.is_canceled() || e.is_closed() || e.is_incomplete_message();
            if reused && sent.as_ref().is_err_and(stale) {
                // The server closed the idle connection as it was reused:
                // that says nothing about the site, so the request goes
                // again on a fresh connection.
                Trace::add(&mut trace.timing.ttfb_ms, started);
                conn = self.connector.connect(&route, trace, deadline).await?;
                trace.phase = Phase::Ttfb;
                started = Instant::now();
                sent = send(&mut conn, &url, &method, &headers, &body).await?;
            }
            Trace::add(&mut trace.timing.ttfb_ms, started);
            let response = sent.map_err(exchange_failure)?;
            let status = response.status().as_u16();
            // What the server answered with (an HTTP/1.0 server answers
            // HTTP/1.0 to our HTTP/1.1), not what was sent.
            trace.http_version = Some(version_name(response.version()));

            let set = response
                .headers()
                .get_all(SET_COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .filter_map(|v| cookie_store::RawCookie::parse(v.to_owned()).ok());
            jar.store_response_cookies(set, &url);
            let location = response.headers().get(LOCATION).cloned();
            if p.follow && matches!(status, 301 | 302 | 303 | 307 | 308) {
                if let Some(location) = location {
                    if trace.timing.redirects >= p.max_redirects {
                        return Err(Fail::new(
                            ErrorKind::RedirectLoop,
                            format!(
                                "more than {} redirects (the last to {:?})",
                                p.max_redirects,
                                redirects::shown_location(location.as_bytes())
                            ),
                        ));
                    }
                    let next = url
                        .join(&redirects::location_text(location.as_bytes()))
                        .ok()
                        .filter(|u| matches!(u.scheme(), "http" | "https"))
                        .ok_or_else(|| {
                            Fail::new(
                                ErrorKind::Protocol,
                                format!(
                                    "redirect to {:?}, which is not an http(s) URL",
                                    redirects::shown_location(location.as_bytes())
                                ),
                            )
                        })?;
                    // As browsers do: 303, and 301/302 after a POST, become a
                    // GET without a body.
                    if status == 303 || (matches!(status, 301 | 302) && method == Method::POST) {
                        method = Method::GET;
                        body = Bytes::new();
                    }
                    // A site's headers are for the origin they were
                    // configured for: only the harmless ones go on.
                    if next.host_str() != url.host_str()
                        || next.port_or_known_default() != url.port_or_known_default()
                    {
                        headers = headers
                            .iter()
                            .filter(|(name, _)| self.cross_origin.contains(name))
                            .map(|(n, v)| (n.clone(), v.clone()))
                            .collect();
                        // Configured cookies are for the first origin only;
                        // the jar's go wherever their domain rules say.
                        configured_cookie = None;
                    }
                    trace.timing.redirects += 1;
                    url = next;
                    continue;
                }
            }

            return self.finish(p, trace, conn, response).await;
        }
    }

    /// Reads the final response's body (up to the cap) and hands the
    /// connection back to the pool when it can serve another check.
    async fn finish(
        &self,
        p: &Prepared,
        trace: &mut Trace,
        conn: Conn,
        response: http::Response<hyper::body::Incoming>,
    ) -> Result<Response, Fail> {
        let status = response.status().as_u16();
        trace.phase = Phase::Transfer;
        let started = Instant::now();
        let (parts, mut incoming) = response.into_parts();
        let cap = p.read_cap;
        let mut data = Vec::with_capacity(cap.min(64 * 1024));
        let mut truncated = false;
        // Read only what the assertions may see: an endless body costs at
        // most `cap` bytes of memory and the site's timeout.
        let read = async {
            while let Some(frame) = incoming.frame().await {
                let frame = frame.map_err(|e| {
                    Fail::new(ErrorKind::Body, format!("reading the body: {}", chain(&e)))
                })?;
                let Ok(chunk) = frame.into_data() else {
                    continue;
                };
                let room = cap - data.len();
                if chunk.len() >= room {
                    data.extend_from_slice(&chunk[..room]);
                    truncated = chunk.len() > room || !incoming.is_end_stream();
                    break;
                }
                data.extend_from_slice(&chunk);
            }
            Ok::<(), Fail>(())
        };
        let read = read.await;
        read?;
        // Decoded when judged (`verdict`), off the async workers.
        Trace::add(&mut trace.timing.transfer_ms, started);
        let closing = parts
            .headers
            .get(http::header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        if p.reuse && !truncated && !closing {
            drop(incoming);
            self.connector.put_back(conn);
        }
        Ok(Response {
            status,
            headers: parts.headers,
            body: data,
            truncated,
        })
    }

    /// The compiled `pattern`: shared for scheduled checks (the config's
    /// patterns, bounded by the config), compiled afresh for on-demand ones
    /// (an API caller's, which must not pile up).
    fn regex(&self, pattern: &str, origin: Origin) -> Result<Arc<Pattern>, String> {
        if origin == Origin::OnDemand {
            return Pattern::new(pattern, REGEX_SIZE_LIMIT).map(Arc::new);
        }
        let mut cache = self.regexes.lock().expect("regex cache lock");
        if let Some(r) = cache.get(pattern) {
            return Ok(r.clone());
        }
        let r = Arc::new(Pattern::new(pattern, REGEX_SIZE_LIMIT)?);
        if cache.len() >= REGEX_CACHE_MAX {
            cache.clear();
        }
        cache.insert(pattern.to_owned(), r.clone());
        Ok(r)
    }
}

/// The request for one hop: origin-form with a Host header over HTTP/1.1,
/// absolute over HTTP/2 (where the authority travels as `:authority`).
fn build_request(
    conn: &Conn,
    url: &Url,
    method: &Method,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<http::Request<Full<Bytes>>, Fail> {
    let bad = |e: http::Error| Fail::new(ErrorKind::InvalidRequest, e.to_string());
    let mut builder = http::Request::builder().method(method.clone());
    match conn.sender {
        Sender::H1(_) => {
            let mut target = url.path().to_owned();
            if let Some(q) = url.query() {
                target.push('?');
                target.push_str(q);
            }
            builder = builder.uri(target);
        }
        Sender::H2(_) => builder = builder.uri(url.as_str()),
    }
    let mut request = builder.body(Full::new(body)).map_err(bad)?;
    *request.headers_mut() = headers.clone();
    if matches!(conn.sender, Sender::H1(_)) && !request.headers().contains_key(HOST) {
        let host = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        let value = HeaderValue::from_str(&host)
            .map_err(|_| Fail::new(ErrorKind::InvalidRequest, format!("bad host {host:?}")))?;
        request.headers_mut().insert(HOST, value);
    }
    Ok(request)
}

/// Sends one request on `conn` (an `Err` here is a bad request, not a
/// failed exchange).
async fn send(
    conn: &mut Conn,
    url: &Url,
    method: &Method,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Result<http::Response<hyper::body::Incoming>, hyper::Error>, Fail> {
    let request = build_request(conn, url, method, headers, body.clone())?;
    Ok(match &mut conn.sender {
        Sender::H1(s) => match s.ready().await {
            Ok(()) => s.send_request(request).await,
            Err(e) => Err(e),
        },
        Sender::H2(s) => s.send_request(request).await,
    })
}

/// The protocol name stored in `http_version`.
fn version_name(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// What went wrong between writing the request and the response head.
fn exchange_failure(e: hyper::Error) -> Fail {
    let message = chain(&e);
    let kind = if e.is_parse_too_large() {
        // hyper does not say which of the two limits it was.
        return Fail::new(
            ErrorKind::Protocol,
            format!(
                "response head over the limits (more than {} KiB, or more than {} header fields): {message}",
                super::connect::MAX_HEAD_BYTES / 1024,
                super::connect::MAX_HEADERS
            ),
        );
    } else if e.is_parse() || e.is_parse_status() || e.is_user() {
        ErrorKind::Protocol
    } else if e.is_incomplete_message()
        || e.is_closed()
        || e.is_canceled()
        || message.to_lowercase().contains("connection")
    {
        ErrorKind::Connect
    } else {
        ErrorKind::Protocol
    };
    Fail::new(kind, message)
}

fn fail(out: &mut CheckOutcome, kind: ErrorKind, message: String) {
    out.outcome = Outcome::Down;
    out.error_kind = Some(kind);
    out.error_message = Some(message);
}
