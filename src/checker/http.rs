//! One HTTP(S) check: send the request, read the body up to a cap, apply the
//! regex, time it, and turn whatever happened into a [`CheckOutcome`]. A site
//! being down is data here, never an `Err`.

use std::collections::HashMap;
use std::error::Error as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::redirect::Policy;

use crate::config::{CheckerSettings, StatusSet};
use crate::model::{CheckOutcome, CheckRequest, ErrorKind, Outcome, SCHEMA_VERSION};
use crate::net;

/// Compiled regexes kept per pattern; cleared when it grows past this many
/// (on-demand checks could otherwise grow it without bound).
const REGEX_CACHE_MAX: usize = 10_000;
/// Limit on a compiled regex's size: a pattern from an on-demand request must
/// not cost unbounded memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
#[error("building the HTTP client: {0}")]
pub struct ClientError(#[from] reqwest::Error);

/// The HTTP side of a checker, shared by every check it runs.
pub struct HttpChecker {
    /// No idle connections kept: each check resolves, connects and handshakes
    /// afresh, so DNS, connect and TLS failures are seen (as blackbox_exporter
    /// does).
    fresh: reqwest::Client,
    /// For sites with `reuse_connection = true`.
    pooled: reqwest::Client,
    /// For on-demand checks that may reach public addresses only: fresh
    /// connections through [`net::PublicOnlyResolver`], and redirects to
    /// non-public IP literals refused.
    public: reqwest::Client,
    max_body_bytes: u64,
    regexes: Mutex<HashMap<String, Arc<regex::bytes::Regex>>>,
    /// This instance's name, recorded with each outcome.
    instance: String,
}

impl HttpChecker {
    pub fn new(settings: &CheckerSettings, instance: &str) -> Result<Self, ClientError> {
        let max_redirects = settings.max_redirects;
        let build = |pool: bool, public_only: bool| {
            let mut b = reqwest::Client::builder()
                .user_agent(&settings.user_agent)
                .redirect(Policy::limited(max_redirects))
                .tcp_nodelay(true);
            if !pool {
                b = b.pool_max_idle_per_host(0);
            }
            if public_only {
                b = b
                    .dns_resolver(Arc::new(net::PublicOnlyResolver))
                    .redirect(Policy::custom(move |attempt| {
                        let private =
                            net::literal_ip(attempt.url()).is_some_and(|ip| !net::is_public(ip));
                        if private {
                            attempt.error("redirect to a non-public address refused")
                        } else if attempt.previous().len() > max_redirects {
                            attempt.error("too many redirects")
                        } else {
                            attempt.follow()
                        }
                    }));
            }
            b.build()
        };
        Ok(HttpChecker {
            fresh: build(false, false)?,
            pooled: build(true, false)?,
            public: build(false, true)?,
            max_body_bytes: settings.max_body_bytes,
            regexes: Mutex::new(HashMap::new()),
            instance: instance.to_owned(),
        })
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Runs `req` now and reports what happened. Never takes longer than the
    /// request's timeout (plus scheduling noise).
    pub async fn check(&self, req: &CheckRequest) -> CheckOutcome {
        let started_at = Utc::now();
        let mut out = CheckOutcome {
            v: SCHEMA_VERSION,
            check_id: req.check_id,
            site: req.site.clone(),
            url: req.url.clone(),
            origin: req.origin,
            scheduled_at: req.scheduled_at,
            started_at: Some(started_at),
            finished_at: None,
            outcome: Outcome::Down,
            status_code: None,
            response_time_ms: None,
            regex_matched: None,
            body_bytes: None,
            error_kind: None,
            error_message: None,
            checker: Some(self.instance.clone()),
        };
        let prepared = match self.prepare(req) {
            Ok(p) => p,
            Err(msg) => {
                out.error_kind = Some(ErrorKind::InvalidRequest);
                out.error_message = Some(msg);
                out.finished_at = Some(Utc::now());
                return out;
            }
        };
        let timeout = Duration::from_millis(req.timeout_ms);
        let clock = Instant::now();
        let result = tokio::time::timeout(timeout, self.exchange(prepared)).await;
        out.response_time_ms = Some(clock.elapsed().as_secs_f64() * 1e3);
        out.finished_at = Some(Utc::now());
        match result {
            Err(_) => {
                out.response_time_ms = None;
                fail(
                    &mut out,
                    ErrorKind::Timeout,
                    format!("no complete response within {timeout:?}"),
                );
            }
            Ok(Err(e)) => {
                out.response_time_ms = None;
                let (kind, msg) = classify(&e);
                fail(&mut out, kind, msg);
            }
            Ok(Ok(resp)) => self.judge(&mut out, req, resp),
        }
        out
    }

    fn prepare(&self, req: &CheckRequest) -> Result<Prepared, String> {
        let method = reqwest::Method::from_bytes(req.method.as_bytes())
            .map_err(|_| format!("{:?} is not an HTTP method", req.method))?;
        let url = reqwest::Url::parse(&req.url).map_err(|e| format!("bad url: {e}"))?;
        let mut headers = HeaderMap::new();
        for (k, v) in &req.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("bad header name {k:?}"))?;
            let mut value =
                HeaderValue::from_str(v).map_err(|_| format!("bad value for header {k:?}"))?;
            value.set_sensitive(true);
            headers.append(name, value);
        }
        let regex = req.regex.as_deref().map(|p| self.regex(p)).transpose()?;
        let expect: StatusSet = req
            .expect_status
            .parse()
            .map_err(|e| format!("bad expect_status: {e}"))?;
        if req.public_only && net::literal_ip(&url).is_some_and(|ip| !net::is_public(ip)) {
            return Err(format!(
                "{url} is not a public address; refused for an on-demand check"
            ));
        }
        let client = if req.public_only {
            &self.public
        } else if req.reuse_connection {
            &self.pooled
        } else {
            &self.fresh
        };
        let request = client
            .request(method, url)
            .headers(headers)
            .timeout(Duration::from_millis(req.timeout_ms));
        Ok(Prepared {
            request,
            regex,
            expect,
        })
    }

    fn regex(&self, pattern: &str) -> Result<Arc<regex::bytes::Regex>, String> {
        let mut cache = self.regexes.lock().expect("regex cache lock");
        if let Some(r) = cache.get(pattern) {
            return Ok(r.clone());
        }
        let r = regex::bytes::RegexBuilder::new(pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| format!("bad regex: {e}"))?;
        if cache.len() >= REGEX_CACHE_MAX {
            cache.clear();
        }
        let r = Arc::new(r);
        cache.insert(pattern.to_owned(), r.clone());
        Ok(r)
    }

    async fn exchange(&self, p: Prepared) -> Result<Response, reqwest::Error> {
        let mut resp = p.request.send().await?;
        let status = resp.status().as_u16();
        let cap = self.max_body_bytes as usize;
        let hint = resp.content_length().unwrap_or(0) as usize;
        let mut body = Vec::with_capacity(hint.min(cap).min(64 * 1024));
        let mut truncated = false;
        // Read only what the regex may see: an endless body costs at most
        // `cap` bytes of memory and the site's timeout.
        while let Some(chunk) = resp.chunk().await? {
            let room = cap - body.len();
            if chunk.len() >= room {
                body.extend_from_slice(&chunk[..room]);
                truncated = chunk.len() > room;
                break;
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Response {
            status,
            body,
            truncated,
            regex: p.regex,
            expect: p.expect,
        })
    }

    fn judge(&self, out: &mut CheckOutcome, req: &CheckRequest, r: Response) {
        out.status_code = Some(r.status);
        out.body_bytes = Some(r.body.len() as u64);
        out.regex_matched = r.regex.as_ref().map(|re| re.is_match(&r.body));
        let status_ok = r.expect.contains(r.status);
        out.outcome = if status_ok && out.regex_matched != Some(false) {
            Outcome::Up
        } else {
            Outcome::Down
        };
        if !status_ok {
            out.error_kind = Some(ErrorKind::UnexpectedStatus);
            out.error_message = Some(format!("status {} not in {}", r.status, req.expect_status));
        } else if out.regex_matched == Some(false) {
            out.error_kind = Some(ErrorKind::RegexMismatch);
            out.error_message = Some(format!(
                "body{} does not match the regex",
                if r.truncated {
                    " (first max_body_bytes)"
                } else {
                    ""
                }
            ));
        }
    }
}

struct Prepared {
    request: reqwest::RequestBuilder,
    regex: Option<Arc<regex::bytes::Regex>>,
    expect: StatusSet,
}

struct Response {
    status: u16,
    body: Vec<u8>,
    truncated: bool,
    regex: Option<Arc<regex::bytes::Regex>>,
    expect: StatusSet,
}

fn fail(out: &mut CheckOutcome, kind: ErrorKind, message: String) {
    out.outcome = Outcome::Down;
    out.error_kind = Some(kind);
    out.error_message = Some(message);
}

/// Maps a transport error to an error kind and a one-line message with the
/// cause chain.
fn classify(e: &reqwest::Error) -> (ErrorKind, String) {
    let mut chain = String::new();
    let mut source: Option<&dyn std::error::Error> = e.source();
    while let Some(s) = source {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        source = s.source();
    }
    let message = format!("{e}{chain}");
    let lower = chain.to_lowercase();
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else if e.is_redirect() {
        ErrorKind::RedirectLoop
    } else if lower.contains("dns error") || lower.contains("failed to lookup address") {
        ErrorKind::Dns
    } else if lower.contains("certificate")
        || lower.contains("tls")
        || lower.contains("handshake")
        || lower.contains("alert")
    {
        ErrorKind::Tls
    } else if e.is_connect() {
        ErrorKind::Connect
    } else if e.is_body() || e.is_decode() {
        ErrorKind::Body
    } else if lower.contains("invalid http") || lower.contains("parse") {
        ErrorKind::Protocol
    } else if e.is_builder() {
        ErrorKind::InvalidRequest
    } else if lower.contains("connection") {
        ErrorKind::Connect
    } else {
        ErrorKind::Other
    };
    (kind, message)
}
