//! The messages stages exchange through Kafka, version 1.
//!
//! Every payload is JSON with a `v` field. Decoders tolerate unknown fields
//! (so a newer producer can add some) and refuse an unknown version, which
//! sends the message to the dead-letter topic instead of guessing. The key of
//! every message is the site name, so one site's checks stay ordered on one
//! partition.
//!
//! * `status_request_created` carries a [`CheckRequest`]: everything a checker
//!   needs, so checkers hold no site state.
//! * `status_request_succeeded` and `status_request_failed` carry a
//!   [`CheckOutcome`]: succeeded when an HTTP response came back (whatever its
//!   status), failed when none did, or when the check was skipped.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The message schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// Namespace of the UUIDv5 check ids of scheduled checks.
const CHECK_ID_NAMESPACE: Uuid = Uuid::from_u128(0x5174_e3a7_c8d4_4b7e_9a1f_0c2d_6e8b_4f31);

/// The id of the scheduled check of `site` at `slot`: the same slot always
/// gives the same id, so a re-emitted slot is the same check and persists as
/// the same row.
pub fn scheduled_check_id(site: &str, slot: DateTime<Utc>) -> Uuid {
    let name = format!("{site}\n{}", slot.timestamp_millis());
    Uuid::new_v5(&CHECK_ID_NAMESPACE, name.as_bytes())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Emitted by the scheduler for a slot.
    Scheduled,
    /// Asked for by a user (API, `sitewatch check`).
    OnDemand,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Scheduled => "scheduled",
            Origin::OnDemand => "on_demand",
        }
    }
}

/// One check to run. Topic `status_request_created`, key = site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckRequest {
    pub v: u32,
    pub check_id: Uuid,
    pub site: String,
    pub origin: Origin,
    /// The slot (scheduled checks) or the time the check was asked for.
    pub scheduled_at: DateTime<Utc>,
    /// A checker that receives the request after this time does not check
    /// late: it publishes a `skipped` outcome (`deadline_exceeded`).
    pub deadline: DateTime<Utc>,
    pub url: String,
    #[serde(default = "default_method")]
    pub method: String,
    /// Sent as given. Values may be credentials: protect the topic
    /// (Kafka TLS + ACLs) as you protect the config.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub timeout_ms: u64,
    /// Matched against the body (bytes, capped), if set.
    #[serde(default)]
    pub regex: Option<String>,
    /// Healthy status codes, e.g. `200-399` or `200,301-302`.
    #[serde(default = "default_expect_status")]
    pub expect_status: String,
    /// Reuse pooled connections (hides DNS/connect/TLS failures).
    #[serde(default)]
    pub reuse_connection: bool,
    /// Connect only to public addresses, also after redirects (on-demand
    /// checks from the API; see `net`). Absent in older messages: false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub public_only: bool,
    /// Assertions beyond status and regex, and how to make the request.
    /// Absent when every option has its default (and in older messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<CheckOptions>,
    /// The fingerprint of the API token that asked for an on-demand check
    /// (`api::guard::token_id`, 16 hex digits): only that token may read its
    /// result. `None` for scheduled checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
}

/// Which addresses a check may connect to, in which order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IpFamily {
    /// In the order the resolver gives.
    #[default]
    Any,
    /// IPv4 addresses first, IPv6 if none answers.
    PreferIpv4,
    PreferIpv6,
    /// IPv4 only.
    Ipv4,
    Ipv6,
}

impl IpFamily {
    pub fn as_str(self) -> &'static str {
        match self {
            IpFamily::Any => "any",
            IpFamily::PreferIpv4 => "prefer_ipv4",
            IpFamily::PreferIpv6 => "prefer_ipv6",
            IpFamily::Ipv4 => "ipv4",
            IpFamily::Ipv6 => "ipv6",
        }
    }
}

/// A header the response must carry with a value matching `matches` (any
/// value when `matches` is unset), or must not carry at all (`absent`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderRule {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub absent: bool,
}

/// The rich part of a check: more assertions, and how to make the request.
/// Every field has a default, so a site that sets none carries none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CheckOptions {
    /// A regex the body must not match (an error page served with 200).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forbidden_regex: Option<String>,
    /// A correct response slower than this is `degraded`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub degraded_after_ms: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expect_headers: Vec<HeaderRule>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_min_bytes: Option<u64>,
    /// The checker reads one byte past this (even beyond its
    /// `max_body_bytes`) to tell a body that is too large.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_max_bytes: Option<u64>,
    /// Fewer days left on the TLS certificate than this is a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_cert_days: Option<u32>,
    /// Off: a redirect is the response, judged like any other.
    pub follow_redirects: bool,
    /// Hops followed at most; default `checker.max_redirects`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_redirects: Option<u32>,
    /// Sent as the request body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Off: any certificate is accepted (its expiry is still recorded).
    pub verify_tls: bool,
    pub ip_family: IpFamily,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            forbidden_regex: None,
            degraded_after_ms: None,
            expect_headers: Vec::new(),
            body_min_bytes: None,
            body_max_bytes: None,
            min_cert_days: None,
            follow_redirects: true,
            max_redirects: None,
            body: None,
            verify_tls: true,
            ip_family: IpFamily::Any,
        }
    }
}

fn default_method() -> String {
    "GET".to_owned()
}
fn default_expect_status() -> String {
    "200-399".to_owned()
}

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
            ErrorKind::BodySize => "body_size",
            ErrorKind::CertExpiring => "cert_expiring",
            ErrorKind::Slow => "slow",
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::MissedSlot => "missed_slot",
            ErrorKind::DeadlineExceeded => "deadline_exceeded",
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
    /// True when an HTTP response came back: the outcome belongs on the
    /// succeeded topic, whatever its status code.
    pub fn got_response(&self) -> bool {
        self.status_code.is_some()
    }

    /// A `skipped` outcome for `req` (nothing was started).
    pub fn skipped(req: &CheckRequest, kind: ErrorKind, message: String, checker: &str) -> Self {
        CheckOutcome {
            v: SCHEMA_VERSION,
            check_id: req.check_id,
            site: req.site.clone(),
            url: req.url.clone(),
            origin: req.origin,
            scheduled_at: req.scheduled_at,
            started_at: None,
            finished_at: None,
            outcome: Outcome::Skipped,
            status_code: None,
            response_time_ms: None,
            regex_matched: None,
            body_bytes: None,
            error_kind: Some(kind),
            error_message: Some(message),
            checker: Some(checker.to_owned()),
            timing: None,
            tls: None,
            failures: Vec::new(),
            remote_addr: None,
            http_version: None,
            requested_by: req.requested_by.clone(),
        }
    }
}

/// Why a message could not be decoded (it goes to the dead-letter topic).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("payload missing")]
    Empty,
    #[error("not valid JSON for this topic: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unsupported schema version {0} (this build reads {SCHEMA_VERSION})")]
    Version(u32),
    #[error("invalid message: {0}")]
    Invalid(String),
}

#[derive(Deserialize)]
struct VersionOnly {
    v: u32,
}

fn check_version(payload: Option<&[u8]>) -> Result<&[u8], DecodeError> {
    let bytes = payload
        .filter(|b| !b.is_empty())
        .ok_or(DecodeError::Empty)?;
    let VersionOnly { v } = serde_json::from_slice(bytes)?;
    if v != SCHEMA_VERSION {
        return Err(DecodeError::Version(v));
    }
    Ok(bytes)
}

pub fn decode_request(payload: Option<&[u8]>) -> Result<CheckRequest, DecodeError> {
    let req: CheckRequest = serde_json::from_slice(check_version(payload)?)?;
    if req.site.is_empty() {
        return Err(DecodeError::Invalid("empty site".into()));
    }
    if req.timeout_ms == 0 {
        return Err(DecodeError::Invalid("timeout_ms is 0".into()));
    }
    Ok(req)
}

pub fn decode_outcome(payload: Option<&[u8]>) -> Result<CheckOutcome, DecodeError> {
    let out: CheckOutcome = serde_json::from_slice(check_version(payload)?)?;
    if out.site.is_empty() {
        return Err(DecodeError::Invalid("empty site".into()));
    }
    Ok(out)
}

pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    serde_json::to_vec(msg).expect("message types always serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> CheckRequest {
        let slot = DateTime::parse_from_rfc3339("2026-01-01T00:00:05Z")
            .unwrap()
            .with_timezone(&Utc);
        CheckRequest {
            v: 1,
            check_id: scheduled_check_id("a", slot),
            site: "a".into(),
            origin: Origin::Scheduled,
            scheduled_at: slot,
            deadline: slot + chrono::Duration::seconds(30),
            url: "https://a.example/".into(),
            method: "GET".into(),
            headers: BTreeMap::new(),
            timeout_ms: 5000,
            regex: Some("ok".into()),
            expect_status: "200-399".into(),
            reuse_connection: false,
            public_only: false,
            options: None,
            requested_by: None,
        }
    }

    #[test]
    fn check_id_depends_only_on_site_and_slot() {
        let r = request();
        assert_eq!(r.check_id, scheduled_check_id("a", r.scheduled_at));
        assert_ne!(r.check_id, scheduled_check_id("b", r.scheduled_at));
        let later = r.scheduled_at + chrono::Duration::milliseconds(1);
        assert_ne!(r.check_id, scheduled_check_id("a", later));
    }

    #[test]
    fn round_trip_and_unknown_fields_tolerated() {
        let r = request();
        let mut json: serde_json::Value = serde_json::from_slice(&encode(&r)).unwrap();
        json["added_in_a_later_build"] = serde_json::json!(true);
        let back = decode_request(Some(&serde_json::to_vec(&json).unwrap())).unwrap();
        assert_eq!(back, r);
    }

    /// Mutated messages never panic the decoders; whatever decodes
    /// re-encodes to something that decodes to the same value.
    #[test]
    fn fuzzed_payloads_decode_or_fail_cleanly() {
        let mut rng = crate::fuzz::Rng::new(0x5174);
        let mut req = request();
        req.options = Some(CheckOptions {
            forbidden_regex: Some("err".into()),
            expect_headers: vec![HeaderRule {
                name: "x".into(),
                matches: Some("y".into()),
                absent: false,
            }],
            ..CheckOptions::default()
        });
        let mut out = CheckOutcome::skipped(&req, ErrorKind::MissedSlot, "m".into(), "c");
        out.timing = Some(Timing::default());
        out.failures = vec![Failure {
            assertion: "a".into(),
            expected: "e".into(),
            observed: "o".into(),
        }];
        let seeds = [encode(&req), encode(&out)];
        let (mut ok, mut refused) = (0, 0);
        for _ in 0..crate::fuzz::iterations() {
            for seed in &seeds {
                let bytes = crate::fuzz::mutate(&mut rng, seed);
                match decode_request(Some(&bytes)) {
                    Ok(r) => {
                        ok += 1;
                        assert_eq!(decode_request(Some(&encode(&r))).unwrap(), r);
                    }
                    Err(_) => refused += 1,
                }
                match decode_outcome(Some(&bytes)) {
                    Ok(o) => {
                        ok += 1;
                        assert_eq!(decode_outcome(Some(&encode(&o))).unwrap(), o);
                    }
                    Err(_) => refused += 1,
                }
            }
        }
        assert!(ok > 0 && refused > 0, "ok {ok}, refused {refused}");
    }

    #[test]
    fn bad_payloads_say_why() {
        assert!(matches!(decode_request(None), Err(DecodeError::Empty)));
        assert!(matches!(
            decode_request(Some(b"not json")),
            Err(DecodeError::Json(_))
        ));
        let mut json: serde_json::Value = serde_json::from_slice(&encode(&request())).unwrap();
        json["v"] = serde_json::json!(2);
        assert!(matches!(
            decode_request(Some(&serde_json::to_vec(&json).unwrap())),
            Err(DecodeError::Version(2))
        ));
        assert!(matches!(
            decode_outcome(Some(br#"{"v":1,"site":"a"}"#)),
            Err(DecodeError::Json(_))
        ));
    }
}
