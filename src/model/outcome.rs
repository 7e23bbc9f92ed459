//! The outcome message: what a check saw (topics `status_request_succeeded`
//! and `status_request_failed`).

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{CheckRequest, Origin};

/// What a check concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Expected status and (if configured) the regex matched.
    Up,
    /// Every assertion held, but slower than `degraded_after`.
    Degraded,
    /// An assertion failed (status, regex, headers, body size, certificate),
    /// or no response came back.
    Down,
    /// Not checked: the slot was missed or the request arrived too late.
    Skipped,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Up => "up",
            Outcome::Degraded => "degraded",
            Outcome::Down => "down",
            Outcome::Skipped => "skipped",
        }
    }
}

/// Why no (healthy) response came back, or why a check was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The name did not resolve.
    Dns,
    /// TCP connect refused, reset or unreachable.
    Connect,
    /// TLS handshake or certificate failure.
    Tls,
    /// No complete answer within the site's timeout.
    Timeout,
    /// More redirects than `checker.max_redirects`.
    RedirectLoop,
    /// The connection failed while the body was read.
    Body,
    /// The server answered with something that is not HTTP.
    Protocol,
    /// A response came back with a status outside `expect_status`.
    UnexpectedStatus,
    /// A response came back and its body does not match the regex.
    RegexMismatch,
    /// The body matches `forbidden_regex`.
    ForbiddenMatch,
    /// A header assertion failed.
    HeaderMismatch,
    /// A JSON assertion failed, or the body is not JSON.
    JsonMismatch,
    /// `dns://`: an expected answer is missing, or the response code is
    /// not the expected one.
    AnswerMismatch,
    /// The body is smaller or larger than its bounds.
    BodySize,
    /// The certificate has fewer days left than `min_cert_days`.
    CertExpiring,
    /// Degraded: correct but slower than `degraded_after`.
    Slow,
    /// The request could not be built (bad URL or header in the request).
    InvalidRequest,
    /// Skipped: the scheduler did not emit the slot (it was down or behind).
    MissedSlot,
    /// Skipped: the request reached a checker after its deadline.
    DeadlineExceeded,
    /// Skipped: the scheduler held the slot back because the checkers'
    /// backlog would have outlasted its deadline (`scheduler.load_shedding`).
    LoadShed,
    /// Skipped: the site's host already had `checker.max_per_host` checks
    /// running and as many waiting.
    HostBusy,
    /// Anything else, described in `error_message`.
    Other,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Dns => "dns",
            ErrorKind::Connect => "connect",
            ErrorKind::Tls => "tls",
            ErrorKind::Timeout => "timeout",
            ErrorKind::RedirectLoop => "redirect_loop",
            ErrorKind::Body => "body",
            ErrorKind::Protocol => "protocol",
            ErrorKind::UnexpectedStatus => "unexpected_status",
            ErrorKind::RegexMismatch => "regex_mismatch",
            ErrorKind::ForbiddenMatch => "forbidden_match",
            ErrorKind::HeaderMismatch => "header_mismatch",
            ErrorKind::JsonMismatch => "json_mismatch",
            ErrorKind::AnswerMismatch => "answer_mismatch",
            ErrorKind::BodySize => "body_size",
            ErrorKind::CertExpiring => "cert_expiring",
            ErrorKind::Slow => "slow",
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::MissedSlot => "missed_slot",
            ErrorKind::DeadlineExceeded => "deadline_exceeded",
            ErrorKind::LoadShed => "load_shed",
            ErrorKind::HostBusy => "host_busy",
            ErrorKind::Other => "other",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of one check. Topics `status_request_succeeded` (a response
/// came back) and `status_request_failed` (none did, or skipped); key = site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckOutcome {
    pub v: u32,
    pub check_id: Uuid,
    pub site: String,
    pub url: String,
    pub origin: Origin,
    pub scheduled_at: DateTime<Utc>,
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome: Outcome,
    #[serde(default)]
    pub status_code: Option<u16>,
    /// From sending the request to the end of the (capped) body.
    #[serde(default)]
    pub response_time_ms: Option<f64>,
    /// `None`: no regex configured, or no body read.
    #[serde(default)]
    pub regex_matched: Option<bool>,
    #[serde(default)]
    pub body_bytes: Option<u64>,
    #[serde(default)]
    pub error_kind: Option<ErrorKind>,
    #[serde(default)]
    pub error_message: Option<String>,
    /// The checker instance that ran it.
    #[serde(default)]
    pub checker: Option<String>,
    /// Where the time went; absent when nothing was attempted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing: Option<Timing>,
    /// The server's certificate (HTTPS), even when it failed verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsDetails>,
    /// Every assertion that failed, with what was seen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<Failure>,
    /// The address connected to (the last hop's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_addr: Option<String>,
    /// `HTTP/1.1` or `HTTP/2` (the last hop's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_version: Option<String>,
    /// The request's `requested_by`, carried to the row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// The request's `late`, carried to the row.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub late: bool,
    /// What the site answered, kept for a `down` check that got a response
    /// (since V12).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
    /// `dns://`: the response code and answers, `NOERROR` then one line
    /// per record (`A 192.0.2.1`) (since V14).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answers: Vec<String>,
}

/// The answer of a failed check, for the operator to see what the site
/// said: the status line, the headers and the start of the body. Values of
/// cookie and credential headers, and of the site's own secret request
/// headers wherever they are echoed, are replaced by `[redacted]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// `HTTP/1.1 503 Service Unavailable` (the reason phrase as RFC 9110
    /// names the code, not as the server wrote it).
    pub status_line: String,
    /// The response headers in the order they came, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The first `checker.evidence_bytes` of the (decoded) body: UTF-8 as
    /// it came, any other byte (and NUL, which Postgres text cannot hold)
    /// written `\xNN`.
    pub body: String,
    /// The body went on past what is kept here.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub body_truncated: bool,
}

/// The phases of a check in milliseconds, each summed over the redirect
/// hops. A phase that did not happen is `None`: no DNS for an IP literal, no
/// DNS, connect or TLS on a reused connection, no TLS over plain HTTP. The
/// phases add up to `response_time_ms` but for a little bookkeeping.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Timing {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ms: Option<f64>,
    /// From writing the request to the response head.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttfb_ms: Option<f64>,
    /// From the response head to the end of the (capped) body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transfer_ms: Option<f64>,
    /// After the exchange: decoding the body, judging every assertion and
    /// keeping the evidence. Not part of `response_time_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge_ms: Option<f64>,
    /// Redirects followed.
    pub redirects: u32,
}

/// The leaf certificate the server presented.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TlsDetails {
    pub not_after: DateTime<Utc>,
    /// At the time of the check; negative once expired.
    pub days_left: f64,
    pub subject: String,
    pub issuer: String,
    /// `TLSv1.3` or `TLSv1.2`; absent when the handshake failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// One failed assertion: which, what it wanted, what came.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub assertion: String,
    pub expected: String,
    pub observed: String,
}

impl CheckOutcome {
    /// True when a response came back (an HTTP response, whatever its
    /// status code; a `tcp://` connection): the outcome belongs on the
    /// succeeded topic.
    pub fn got_response(&self) -> bool {
        match super::CheckKind::of_url(&self.url) {
            // Connected (and read what `expect` asked for, if anything).
            Some(super::CheckKind::Tcp) => self.body_bytes.is_some(),
            // The server answered (with whatever response code).
            Some(super::CheckKind::Dns) => !self.answers.is_empty(),
            // The handshake completed (the version is known only then).
            Some(super::CheckKind::Tls) => self.tls.as_ref().is_some_and(|t| t.version.is_some()),
            _ => self.status_code.is_some(),
        }
    }

    /// An outcome of `req` by `checker` with nothing observed yet: the
    /// identity and the request's carried fields set, the rest empty.
    pub fn of(req: &CheckRequest, outcome: Outcome, checker: &str) -> Self {
        CheckOutcome {
            v: req.v,
            check_id: req.check_id,
            site: req.site.clone(),
            // What may be shown of it: no user information, no token.
            url: super::redacted_url(&req.url),
            origin: req.origin,
            scheduled_at: req.scheduled_at,
            started_at: None,
            finished_at: None,
            outcome,
            status_code: None,
            response_time_ms: None,
            regex_matched: None,
            body_bytes: None,
            error_kind: None,
            error_message: None,
            checker: Some(checker.to_owned()),
            timing: None,
            tls: None,
            failures: Vec::new(),
            remote_addr: None,
            http_version: None,
            requested_by: req.requested_by.clone(),
            late: req.late,
            evidence: None,
            answers: Vec::new(),
        }
    }

    /// Marks this outcome `down` for `failures` (at least one), with `kind`
    /// as its `error_kind` and the failures, one per clause, as its message.
    pub fn fail_with(&mut self, kind: ErrorKind, failures: Vec<Failure>) {
        self.outcome = Outcome::Down;
        self.error_kind = Some(kind);
        self.failures = failures;
        self.error_message = Some(self.failures_summary());
    }

    /// `assertion: expected X, got Y` for each failure, joined by `; `.
    pub fn failures_summary(&self) -> String {
        self.failures
            .iter()
            .map(|f| {
                format!(
                    "{}: expected {}, got {}",
                    f.assertion, f.expected, f.observed
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// This outcome, finished now as `down` with `invalid_request`: the
    /// request could not be made (`message` says why).
    pub fn invalid(mut self, message: String) -> Self {
        self.outcome = Outcome::Down;
        self.error_kind = Some(ErrorKind::InvalidRequest);
        self.error_message = Some(message);
        self.finished_at = Some(Utc::now());
        self
    }

    /// A `skipped` outcome for `req` (nothing was started).
    pub fn skipped(req: &CheckRequest, kind: ErrorKind, message: String, checker: &str) -> Self {
        CheckOutcome {
            error_kind: Some(kind),
            error_message: Some(message),
            ..CheckOutcome::of(req, Outcome::Skipped, checker)
        }
    }
}
