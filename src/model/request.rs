//! The request message: one check to run (topic `status_request_created`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Origin;

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
    /// Published more than [`LATE_AFTER`] after its slot: a slot caught up
    /// after a restart, a shard takeover or a pause, or one that waited for
    /// a busy scheduler. Absent (false) in older messages.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub late: bool,
}

/// How long after its slot a request may be published and still count as
/// on time (see [`CheckRequest::late`]).
pub const LATE_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

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
    /// Assertions on the body read as JSON.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub json: Vec<JsonRule>,
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
    /// `tcp://`: bytes written once connected (TOML escapes such as `\r\n`
    /// allowed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send: Option<String>,
    /// `tcp://`: a regex that what the server sends (after `send`, if any)
    /// must match, read until it does or `checker.max_body_bytes` came.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,
    /// `tls://`: the plain-text protocol to speak before the handshake
    /// (`smtp`: RFC 3207, `imap`: RFC 3501 section 6.2.1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub starttls: Option<String>,
    /// `tls://`: the name sent as SNI and verified in the certificate,
    /// when not the url's host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// `dns://`: answers that must be among those returned, in their text
    /// form (`192.0.2.1`, `10 mail.example.com.`, a TXT string).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expect_answer: Vec<String>,
    /// `dns://`: the response code expected (`NOERROR` when unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expect_rcode: Option<String>,
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
            json: Vec::new(),
            body_min_bytes: None,
            body_max_bytes: None,
            min_cert_days: None,
            follow_redirects: true,
            max_redirects: None,
            body: None,
            send: None,
            expect: None,
            expect_answer: Vec::new(),
            expect_rcode: None,
            starttls: None,
            server_name: None,
            verify_tls: true,
            ip_family: IpFamily::Any,
        }
    }
}

/// What a check does, named by its URL's scheme: `http(s)://` an HTTP
/// exchange, `tcp://host:port` a TCP connect (with optional send/expect),
/// `tls://host:port` a TLS handshake (optionally after STARTTLS),
/// `dns://[server[:port]]/name?type=T` one DNS query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckKind {
    Http,
    Tcp,
    Tls,
    Dns,
}

impl CheckKind {
    /// The kind `url`'s scheme names; `None` for a scheme no check has.
    pub fn of_url(url: &str) -> Option<CheckKind> {
        // Called per check and per row: compared in place, no allocation.
        let (scheme, _) = url.split_once("://")?;
        [
            ("http", CheckKind::Http),
            ("https", CheckKind::Http),
            ("tcp", CheckKind::Tcp),
            ("tls", CheckKind::Tls),
            ("dns", CheckKind::Dns),
        ]
        .into_iter()
        .find(|(s, _)| scheme.eq_ignore_ascii_case(s))
        .map(|(_, kind)| kind)
    }

    /// The port a URL of this kind means when it names none: 53 for
    /// `dns://`, the scheme's own for `http(s)://`; `tcp://` and `tls://`
    /// always name theirs.
    pub fn default_port(url: &url::Url) -> Option<u16> {
        url.port_or_known_default()
            .or_else(|| (CheckKind::of_url(url.as_str()) == Some(CheckKind::Dns)).then_some(53))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Http => "http",
            CheckKind::Tcp => "tcp",
            CheckKind::Tls => "tls",
            CheckKind::Dns => "dns",
        }
    }

    /// The message version a request of this kind carries (see
    /// [`super::KINDS_SCHEMA_VERSION`]).
    pub fn schema_version(self) -> u32 {
        match self {
            CheckKind::Http => super::SCHEMA_VERSION,
            CheckKind::Tcp | CheckKind::Tls | CheckKind::Dns => super::KINDS_SCHEMA_VERSION,
        }
    }
}

/// One assertion on a JSON body: `{ path = "$.status", equals = "ok" }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsonRule {
    /// An RFC 9535 JSONPath query; a trailing `.length()` takes the length
    /// of each value it selects (RFC 9535 section 2.4.4: characters of a
    /// string, elements of an array, members of an object).
    pub path: String,
    #[serde(flatten)]
    pub expect: JsonExpect,
}

/// Longest JSONPath accepted, in bytes, and deepest nesting of brackets
/// and parentheses: the parser recurses per level, and a path from an API
/// caller must not exhaust a worker's stack.
pub const MAX_JSON_PATH: usize = 1024;
pub const MAX_JSON_PATH_DEPTH: usize = 32;

impl JsonRule {
    /// Why the path is refused before it is parsed, if it is: too long or
    /// nested too deep (see [`MAX_JSON_PATH`]).
    pub fn too_complex(&self) -> Option<String> {
        if self.path.len() > MAX_JSON_PATH {
            return Some(format!(
                "the path is {} bytes; at most {MAX_JSON_PATH} are accepted",
                self.path.len()
            ));
        }
        let (mut depth, mut deepest) = (0usize, 0usize);
        let mut quote = None;
        let mut word = String::new();
        let mut chars = self.path.chars().peekable();
        while let Some(c) = chars.next() {
            if let Some(q) = quote {
                match c {
                    '\\' => {
                        chars.next();
                    }
                    c if c == q => quote = None,
                    _ => {}
                }
                continue;
            }
            if c.is_ascii_alphanumeric() || c == '_' {
                word.push(c);
                continue;
            }
            // serde_json_path compiles the pattern of `match()`/`search()`
            // afresh for every value it tests, at a cost no bound can see
            // (a pattern's size says little of its compile time).
            if c == '(' && matches!(word.as_str(), "match" | "search") {
                return Some(format!(
                    "`{word}()` is not supported in a filter (its pattern is compiled for \
                     every value tested); select the values and use `matches` instead"
                ));
            }
            word.clear();
            match c {
                '\'' | '"' => quote = Some(c),
                '(' | '[' => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                ')' | ']' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        (deepest > MAX_JSON_PATH_DEPTH).then(|| {
            format!(
                "the path nests {deepest} levels deep; at most {MAX_JSON_PATH_DEPTH} are accepted"
            )
        })
    }

    /// The JSONPath query proper, and whether `.length()` follows it.
    pub fn query(&self) -> (&str, bool) {
        match self.path.strip_suffix(".length()") {
            Some(q) => (q, true),
            None => (&self.path, false),
        }
    }
}

/// What the values a [`JsonRule`] selects must be. Value assertions need at
/// least one value selected, and hold for every one of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JsonExpect {
    /// Equal as JSON (numbers by value: 1 equals 1.0).
    Equals(serde_json::Value),
    NotEquals(serde_json::Value),
    /// Numbers: `>=`, `<=`, `>`, `<`.
    AtLeast(f64),
    AtMost(f64),
    GreaterThan(f64),
    LessThan(f64),
    /// A regex on a string value (on the JSON text of any other value).
    Matches(String),
    /// `true`: something is selected.
    Present(bool),
    /// `true`: nothing is selected.
    Absent(bool),
}

fn default_method() -> String {
    "GET".to_owned()
}
fn default_expect_status() -> String {
    "200-399".to_owned()
}
