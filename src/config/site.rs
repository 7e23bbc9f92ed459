//! A site: what to check, how often, and what counts as healthy. Parsed from a
//! raw TOML table field by field, so that one bad field does not hide the
//! others and every problem names its site and field.

use std::ops::RangeInclusive;
use std::path::Path;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use std::sync::Arc;

use regex::Regex;
use url::Url;

use super::duration;
use super::normalize::normalize_url;
use super::problem::{Problem, SiteRef};
use super::settings::SiteDefaults;
use crate::model::{CheckKind, CheckOptions};

mod options;
mod patterns;
mod status;

use options::parse_options;
use patterns::compile;
pub use patterns::Patterns;
use status::parse_status_item;
pub use status::StatusSet;

/// Longest interval accepted: a check less often than daily is a cron job.
const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// Keys of a configured site only: its identity, schedule, connection
/// reuse and alerting.
pub const SCHEDULE_KEYS: [&str; 8] = [
    "name",
    "interval",
    "enabled",
    "reuse_connection",
    "failure_threshold",
    "success_threshold",
    "maintenance",
    "alert_channels",
];

/// Keys that say what one check does: a site's, and also what an on-demand
/// check may set.
pub const CHECK_KEYS: [&str; 24] = [
    "url",
    "regex",
    "timeout",
    "method",
    "headers",
    "expect_status",
    "forbidden_regex",
    "degraded_after",
    "expect_headers",
    "json",
    "body_min_bytes",
    "body_max_bytes",
    "min_cert_days",
    "follow_redirects",
    "max_redirects",
    "body",
    "verify_tls",
    "ip_family",
    "send",
    "expect",
    "expect_answer",
    "expect_rcode",
    "starttls",
    "server_name",
];

/// Keys that only an HTTP check has.
const HTTP_ONLY_KEYS: [&str; 15] = [
    "regex",
    "method",
    "headers",
    "expect_status",
    "forbidden_regex",
    "expect_headers",
    "json",
    "body_min_bytes",
    "body_max_bytes",
    "min_cert_days",
    "follow_redirects",
    "max_redirects",
    "body",
    "verify_tls",
    "reuse_connection",
];
/// Keys that only a `tcp://` check has.
const TCP_ONLY_KEYS: [&str; 2] = ["send", "expect"];
/// Keys that only a `tls://` check has.
const TLS_ONLY_KEYS: [&str; 2] = ["starttls", "server_name"];
/// Keys that only a `dns://` check has.
const DNS_ONLY_KEYS: [&str; 2] = ["expect_answer", "expect_rcode"];

/// Most redirects a site may ask to follow.
const MAX_REDIRECTS: i64 = 30;
/// Largest body a site may ask to be read to check `body_max_bytes`.
const MAX_BODY_BOUND: i64 = 64 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Site {
    /// Unique, stable id: the Kafka message key and the `sites` primary key.
    /// Renaming a site starts a new history.
    pub name: String,
    /// Normalised (see `normalize`).
    pub url: Url,
    pub interval: Duration,
    pub timeout: Duration,
    /// Matched against the (capped) response body.
    /// Shared by every site with the same pattern.
    pub regex: Option<Arc<Regex>>,
    pub method: Method,
    pub headers: HeaderMap,
    /// Status codes that count as healthy.
    pub expect_status: StatusSet,
    /// A disabled site stays in the `sites` table with its history but is not
    /// scheduled.
    pub enabled: bool,
    /// Off by default: a pooled connection would hide DNS, connect and TLS
    /// failures.
    pub reuse_connection: bool,
    /// The rich assertions and request options; `None` when all are default
    /// (most sites), so 100,000 plain sites carry nothing extra.
    pub options: Option<Arc<CheckOptions>>,
    /// Consecutive failures that open an incident (default 2), and
    /// consecutive successes that resolve it (default 1).
    pub failure_threshold: u16,
    pub success_threshold: u16,
    /// Alerts are silenced, and results marked, inside these windows.
    pub maintenance: Vec<super::maintenance::Window>,
    /// The `[[alerts.channels]]` its notifications go to; `None` for
    /// `alerts.default_channels`.
    pub alert_channels: Option<Arc<[String]>>,
    /// The file the site was defined in, for messages: shared by the sites
    /// of one file (a path per site was 60 bytes each at 100k sites).
    pub source: Arc<Path>,
}

impl Site {
    /// A copy that shares nothing but the compiled regex (shared on purpose,
    /// see `compile`): its options are copied too.
    pub fn deep_clone(&self) -> Site {
        Site {
            options: self.options.as_ref().map(|o| Arc::new((**o).clone())),
            ..self.clone()
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Reads fields out of one site's table, recording a problem for each bad one.
struct Reader<'a> {
    table: toml::Table,
    file: &'a Path,
    site: SiteRef,
    problems: Vec<Problem>,
    patterns: Patterns,
}

impl Reader<'_> {
    fn bad(&mut self, field: &str, msg: impl Into<String>) {
        self.problems
            .push(Problem::site(self.file, &self.site, Some(field), msg));
    }

    fn take(&mut self, key: &str) -> Option<toml::Value> {
        self.table.remove(key)
    }

    fn string(&mut self, key: &str) -> Option<String> {
        match self.take(key)? {
            toml::Value::String(s) => Some(s),
            other => {
                self.bad(
                    key,
                    format!("expected a string, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn boolean(&mut self, key: &str, default: bool) -> bool {
        match self.take(key) {
            None => default,
            Some(toml::Value::Boolean(b)) => b,
            Some(other) => {
                self.bad(
                    key,
                    format!("expected true or false, found {}", other.type_str()),
                );
                default
            }
        }
    }

    /// An integer in `range`, or a problem naming the range.
    fn integer(&mut self, key: &str, range: RangeInclusive<i64>) -> Option<i64> {
        match self.take(key)? {
            toml::Value::Integer(n) if range.contains(&n) => Some(n),
            toml::Value::Integer(n) => {
                self.bad(
                    key,
                    format!("{n} is out of range {}..={}", range.start(), range.end()),
                );
                None
            }
            other => {
                self.bad(
                    key,
                    format!("expected an integer, found {}", other.type_str()),
                );
                None
            }
        }
    }

    /// A regex, checked by compiling it.
    fn regex(&mut self, key: &str) -> Option<Arc<Regex>> {
        let pattern = self.string(key)?;
        match compile(&pattern, self.patterns) {
            Ok(re) => Some(re),
            Err(e) => {
                self.bad(key, format!("invalid regex: {e}"));
                None
            }
        }
    }

    fn duration(&mut self, key: &str) -> Option<Duration> {
        let text = self.string(key)?;
        match duration::parse(&text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.bad(key, e);
                None
            }
        }
    }
}

/// Parses one `[[sites]]` table. `index` is its position in `file`.
pub fn parse_site(
    table: toml::Table,
    index: usize,
    source: &Arc<Path>,
    defaults: &SiteDefaults,
    min_interval: Duration,
    patterns: Patterns,
) -> Result<Site, Vec<Problem>> {
    let file: &Path = source;
    let name_value = table.get("name").cloned();
    let site = match &name_value {
        Some(toml::Value::String(s)) if valid_name(s) => SiteRef::Named(s.clone()),
        _ => SiteRef::Index(index),
    };
    let mut r = Reader {
        table,
        file,
        site,
        problems: Vec::new(),
        patterns,
    };

    let name = r.string("name");
    match &name {
        None if name_value.is_none() => r.bad("name", "missing; every site needs a unique name"),
        Some(n) if !valid_name(n) => r.bad(
            "name",
            format!("{n:?} is not a valid name (1-128 of a-z A-Z 0-9 - _ .)"),
        ),
        _ => {}
    }

    let url = match r.string("url") {
        None => {
            if !r.problems.iter().any(|p| p.field.as_deref() == Some("url")) {
                r.bad("url", "missing");
            }
            None
        }
        Some(text) => match normalize_url(&text) {
            Ok(u) => Some(u),
            Err(e) => {
                r.bad("url", e);
                None
            }
        },
    };

    // Options that do not fit the kind are refused, not ignored.
    if let Some(kind) = url.as_ref().and_then(|u| CheckKind::of_url(u.as_str())) {
        let misfits: Vec<&str> = match kind {
            CheckKind::Http => [TCP_ONLY_KEYS, DNS_ONLY_KEYS, TLS_ONLY_KEYS].concat(),
            CheckKind::Tcp => [&HTTP_ONLY_KEYS[..], &DNS_ONLY_KEYS, &TLS_ONLY_KEYS].concat(),
            CheckKind::Tls => {
                let mut keys = [&HTTP_ONLY_KEYS[..], &TCP_ONLY_KEYS, &DNS_ONLY_KEYS].concat();
                keys.retain(|k| !matches!(*k, "min_cert_days" | "verify_tls"));
                keys
            }
            CheckKind::Dns => [
                &HTTP_ONLY_KEYS[..],
                &TCP_ONLY_KEYS,
                &TLS_ONLY_KEYS,
                &["degraded_after", "ip_family"],
            ]
            .concat(),
        };
        for key in &misfits {
            if r.table.remove(*key).is_some() {
                r.bad(
                    key,
                    format!(
                        "does not apply to {} checks (the url's scheme)",
                        kind.as_str()
                    ),
                );
            }
        }
    }

    let interval_given = r.table.contains_key("interval");
    let interval = if interval_given {
        r.duration("interval")
    } else {
        Some(defaults.interval)
    };
    if let Some(i) = interval {
        if i < min_interval {
            r.bad(
                "interval",
                format!(
                    "{} is below the minimum {} (scheduler.min_interval)",
                    duration::show(i),
                    duration::show(min_interval)
                ),
            );
        } else if i > MAX_INTERVAL {
            r.bad(
                "interval",
                format!(
                    "{} is above the maximum {}",
                    duration::show(i),
                    duration::show(MAX_INTERVAL)
                ),
            );
        } else if i.subsec_nanos() % 1_000_000 != 0 {
            r.bad("interval", "must be a whole number of milliseconds");
        }
    }

    let timeout_given = r.table.contains_key("timeout");
    let timeout = if timeout_given {
        r.duration("timeout")
    } else {
        Some(defaults.timeout)
    };
    if let Some(t) = timeout {
        // Requests carry whole milliseconds: "999us" would become 0.
        if t < Duration::from_millis(1) {
            r.bad("timeout", "must be at least 1ms");
        } else if t.subsec_nanos() % 1_000_000 != 0 {
            r.bad("timeout", "must be a whole number of milliseconds");
        } else if let Some(i) = interval {
            if t >= i {
                let whose = if timeout_given {
                    ""
                } else {
                    " (from site_defaults)"
                };
                r.bad(
                    "timeout",
                    format!(
                        "timeout {}{whose} must be shorter than the interval {}",
                        duration::show(t),
                        duration::show(i)
                    ),
                );
            }
        }
    }

    let regex = r.regex("regex");

    let method = match r.string("method") {
        None => Method::GET,
        Some(m) => match Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes()) {
            Ok(m) => m,
            Err(_) => {
                r.bad("method", format!("{m:?} is not an HTTP method"));
                Method::GET
            }
        },
    };

    let mut headers = HeaderMap::new();
    match r.take("headers") {
        None => {}
        Some(toml::Value::Table(t)) => {
            for (k, v) in t {
                let field = format!("headers.{k}");
                let Ok(hname) = HeaderName::from_bytes(k.as_bytes()) else {
                    r.bad(&field, "not a valid header name");
                    continue;
                };
                let toml::Value::String(s) = v else {
                    r.bad(&field, format!("expected a string, found {}", v.type_str()));
                    continue;
                };
                match HeaderValue::from_str(&s) {
                    Ok(mut hv) => {
                        // Header values often carry credentials: keep them out
                        // of Debug output.
                        hv.set_sensitive(true);
                        headers.append(hname, hv);
                    }
                    // Do not echo the value: it may be a token.
                    Err(_) => r.bad(&field, "value has characters not allowed in a header"),
                }
            }
        }
        Some(other) => r.bad(
            "headers",
            format!(
                "expected a table of name = \"value\", found {}",
                other.type_str()
            ),
        ),
    }

    let expect_status = match r.take("expect_status") {
        None => StatusSet::default(),
        Some(toml::Value::Array(items)) if !items.is_empty() => {
            let mut ranges = Vec::new();
            for item in &items {
                match parse_status_item(item) {
                    Ok(range) => ranges.push(range),
                    Err(e) => r.bad("expect_status", e),
                }
            }
            StatusSet(ranges)
        }
        Some(v @ (toml::Value::Integer(_) | toml::Value::String(_))) => match parse_status_item(&v)
        {
            Ok(range) => StatusSet(vec![range]),
            Err(e) => {
                r.bad("expect_status", e);
                StatusSet::default()
            }
        },
        Some(other) => {
            r.bad(
                "expect_status",
                format!(
                    "expected a list of codes or ranges, found {}",
                    other.type_str()
                ),
            );
            StatusSet::default()
        }
    };

    let enabled = r.boolean("enabled", true);
    let reuse_connection = r.boolean("reuse_connection", false);
    let options = parse_options(&mut r, url.as_ref(), timeout);
    let failure_threshold = r.integer("failure_threshold", 1..=100).unwrap_or(2) as u16;
    let success_threshold = r.integer("success_threshold", 1..=100).unwrap_or(1) as u16;
    let mut maintenance = Vec::new();
    match r.take("maintenance") {
        None => {}
        Some(toml::Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                match super::maintenance::parse(item) {
                    Ok(w) => maintenance.push(w),
                    Err(e) => r.bad(&format!("maintenance[{i}]"), e),
                }
            }
        }
        Some(other) => r.bad(
            "maintenance",
            format!("expected a list of windows, found {}", other.type_str()),
        ),
    }

    let alert_channels = match r.take("alert_channels") {
        None => defaults.alert_channels.as_deref().map(Arc::from),
        Some(toml::Value::Array(items)) => {
            let names: Vec<String> = items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            if names.len() != items.len() {
                r.bad("alert_channels", "expected a list of channel names");
            }
            Some(Arc::from(names))
        }
        Some(other) => {
            r.bad(
                "alert_channels",
                format!(
                    "expected a list of channel names, found {}",
                    other.type_str()
                ),
            );
            None
        }
    };

    let unknown: Vec<String> = r.table.keys().cloned().collect();
    for key in unknown {
        r.bad(
            &key,
            format!(
                "unknown key (known keys: {}, {})",
                SCHEDULE_KEYS.join(", "),
                CHECK_KEYS.join(", ")
            ),
        );
    }

    match (name, url, interval, timeout) {
        (Some(name), Some(url), Some(interval), Some(timeout)) if r.problems.is_empty() => {
            Ok(Site {
                name,
                url,
                interval,
                timeout,
                regex,
                method,
                headers,
                expect_status,
                enabled,
                reuse_connection,
                options: (options != CheckOptions::default()).then(|| Arc::new(options)),
                failure_threshold,
                success_threshold,
                maintenance,
                alert_channels,
                source: Arc::clone(source),
            })
        }
        _ => Err(r.problems),
    }
}

#[cfg(test)]
mod tests;
