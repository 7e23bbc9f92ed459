//! A site: what to check, how often, and what counts as healthy. Parsed from a
//! raw TOML table field by field, so that one bad field does not hide the
//! others and every problem names its site and field.

use std::fmt;
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
use crate::model::{CheckOptions, HeaderRule, IpFamily};

/// Compiled regexes are bounded so a pathological pattern cannot take the
/// daemon's memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Distinct patterns kept compiled for reuse across sites and reloads.
const REGEX_CACHE_MAX: usize = 10_000;

/// The lazy DFA's cache of a one-off regex (on-demand checks): a quarter of
/// the crate's 2 MiB default, so the requests a token may have in flight
/// cost little memory, and only while they run.
const ONE_OFF_DFA_LIMIT: usize = 1 << 19;

/// Whose patterns a site's regexes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Patterns {
    /// The config's: compiled once and shared by every site (and reload)
    /// with the same pattern. Bounded by the config, which the operator
    /// writes.
    Shared,
    /// An API caller's (on-demand): compiled for this request only and
    /// dropped with it, so distinct patterns cannot pile up in memory.
    OneOff,
}

/// Compiles `pattern` for `use_`: a [`Patterns::Shared`] pattern is shared
/// with earlier sites of the same pattern (100,000 sites with one pattern
/// hold it once; a regex, even a clone, carries its own cache pool, which
/// grows up to 2 MiB as it is used).
fn compile(pattern: &str, use_: Patterns) -> Result<Arc<Regex>, regex::Error> {
    if use_ == Patterns::OneOff {
        return regex::RegexBuilder::new(pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(ONE_OFF_DFA_LIMIT)
            .build()
            .map(Arc::new);
    }
    type Cache = std::sync::Mutex<std::collections::HashMap<String, Arc<Regex>>>;
    static CACHE: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(re) = cache.lock().expect("regex cache").get(pattern) {
        return Ok(re.clone());
    }
    let re = Arc::new(
        regex::RegexBuilder::new(pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()?,
    );
    let mut c = cache.lock().expect("regex cache");
    if c.len() >= REGEX_CACHE_MAX {
        c.clear();
    }
    c.insert(pattern.to_owned(), re.clone());
    Ok(re)
}

/// Longest interval accepted: a check less often than daily is a cron job.
const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// Keys of a configured site only: its identity, schedule, connection
/// reuse and alerting.
pub const SCHEDULE_KEYS: [&str; 7] = [
    "name",
    "interval",
    "enabled",
    "reuse_connection",
    "failure_threshold",
    "success_threshold",
    "maintenance",
];

/// Keys that say what one check does: a site's, and also what an on-demand
/// check may set.
pub const CHECK_KEYS: [&str; 17] = [
    "url",
    "regex",
    "timeout",
    "method",
    "headers",
    "expect_status",
    "forbidden_regex",
    "degraded_after",
    "expect_headers",
    "body_min_bytes",
    "body_max_bytes",
    "min_cert_days",
    "follow_redirects",
    "max_redirects",
    "body",
    "verify_tls",
    "ip_family",
];

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

/// A set of accepted HTTP status codes, e.g. `200-399` or `200, 301`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSet(pub Vec<RangeInclusive<u16>>);

impl Default for StatusSet {
    fn default() -> Self {
        StatusSet(vec![200..=399])
    }
}

impl StatusSet {
    pub fn contains(&self, code: u16) -> bool {
        self.0.iter().any(|r| r.contains(&code))
    }
}

impl fmt::Display for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if r.start() == r.end() {
                write!(f, "{}", r.start())?;
            } else {
                write!(f, "{}-{}", r.start(), r.end())?;
            }
        }
        Ok(())
    }
}

impl std::str::FromStr for StatusSet {
    type Err = String;

    /// Parses the text form written by `Display`: `200-399`, `200,301-302`,
    /// `2xx`.
    fn from_str(text: &str) -> Result<Self, String> {
        let mut ranges = Vec::new();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let value = match item.parse::<i64>() {
                Ok(n) => toml::Value::Integer(n),
                Err(_) => toml::Value::String(item.to_owned()),
            };
            ranges.push(parse_status_item(&value)?);
        }
        if ranges.is_empty() {
            return Err("no status codes given".into());
        }
        Ok(StatusSet(ranges))
    }
}

fn parse_status_item(v: &toml::Value) -> Result<RangeInclusive<u16>, String> {
    let code = |n: i64| -> Result<u16, String> {
        if (100..=599).contains(&n) {
            Ok(n as u16)
        } else {
            Err(format!("{n} is not an HTTP status code (100-599)"))
        }
    };
    match v {
        toml::Value::Integer(n) => code(*n).map(|c| c..=c),
        toml::Value::String(s) => {
            let s = s.trim();
            if let Some(d) = s.strip_suffix("xx").and_then(|d| d.parse::<i64>().ok()) {
                let lo = code(d * 100)?;
                return Ok(lo..=lo + 99);
            }
            let (a, b) = s.split_once('-').ok_or_else(|| {
                format!("{s:?} is not a status code, range (\"200-299\") or class (\"2xx\")")
            })?;
            let lo = code(
                a.trim()
                    .parse()
                    .map_err(|_| format!("{s:?}: bad range start"))?,
            )?;
            let hi = code(
                b.trim()
                    .parse()
                    .map_err(|_| format!("{s:?}: bad range end"))?,
            )?;
            if lo > hi {
                return Err(format!("{s:?}: range start is above its end"));
            }
            Ok(lo..=hi)
        }
        other => Err(format!(
            "expected a status code or range, found {}",
            other.type_str()
        )),
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
                source: Arc::clone(source),
            })
        }
        _ => Err(r.problems),
    }
}

/// The rich assertions and request options of a site.
fn parse_options(r: &mut Reader<'_>, url: Option<&Url>, timeout: Option<Duration>) -> CheckOptions {
    let mut o = CheckOptions {
        forbidden_regex: r.regex("forbidden_regex").map(|re| re.as_str().to_owned()),
        ..CheckOptions::default()
    };
    if let Some(d) = r.duration("degraded_after") {
        if d.is_zero() {
            r.bad("degraded_after", "must be greater than 0");
        } else if timeout.is_some_and(|t| d >= t) {
            r.bad(
                "degraded_after",
                format!(
                    "{} must be shorter than the timeout {}",
                    duration::show(d),
                    duration::show(timeout.unwrap_or_default())
                ),
            );
        } else {
            o.degraded_after_ms = Some(d.as_millis() as u64);
        }
    }
    match r.take("expect_headers") {
        None => {}
        Some(toml::Value::Array(items)) => {
            for (i, item) in items.into_iter().enumerate() {
                let field = format!("expect_headers[{i}]");
                match header_rule(item) {
                    Ok(rule) => o.expect_headers.push(rule),
                    Err(e) => r.bad(&field, e),
                }
            }
        }
        Some(other) => r.bad(
            "expect_headers",
            format!(
                "expected a list of {{ name = \"...\", matches = \"regex\" }} or \
                 {{ name = \"...\", absent = true }}, found {}",
                other.type_str()
            ),
        ),
    }
    o.body_min_bytes = r
        .integer("body_min_bytes", 0..=MAX_BODY_BOUND)
        .map(|n| n as u64);
    o.body_max_bytes = r
        .integer("body_max_bytes", 0..=MAX_BODY_BOUND)
        .map(|n| n as u64);
    if let (Some(min), Some(max)) = (o.body_min_bytes, o.body_max_bytes) {
        if min > max {
            r.bad(
                "body_min_bytes",
                format!("{min} is above body_max_bytes {max}"),
            );
        }
    }
    o.min_cert_days = r.integer("min_cert_days", 0..=3650).map(|n| n as u32);
    if o.min_cert_days.is_some() && url.is_some_and(|u| u.scheme() != "https") {
        r.bad("min_cert_days", "needs an https:// url");
    }
    o.follow_redirects = r.boolean("follow_redirects", true);
    o.max_redirects = r
        .integer("max_redirects", 0..=MAX_REDIRECTS)
        .map(|n| n as u32);
    o.body = r.string("body");
    o.verify_tls = r.boolean("verify_tls", true);
    if let Some(family) = r.string("ip_family") {
        let all = [
            IpFamily::Any,
            IpFamily::PreferIpv4,
            IpFamily::PreferIpv6,
            IpFamily::Ipv4,
            IpFamily::Ipv6,
        ];
        match all.into_iter().find(|f| f.as_str() == family) {
            Some(f) => o.ip_family = f,
            None => r.bad(
                "ip_family",
                format!("{family:?} is not one of {:?}", all.map(IpFamily::as_str)),
            ),
        }
    }
    o
}

/// One `expect_headers` entry: `{ name, matches }` or `{ name, absent = true }`.
fn header_rule(item: toml::Value) -> Result<HeaderRule, String> {
    let toml::Value::Table(mut t) = item else {
        return Err(format!("expected a table, found {}", item.type_str()));
    };
    let name = match t.remove("name") {
        Some(toml::Value::String(n)) if HeaderName::from_bytes(n.as_bytes()).is_ok() => {
            n.to_ascii_lowercase()
        }
        Some(toml::Value::String(n)) => return Err(format!("{n:?} is not a header name")),
        _ => return Err("`name` (a string) is required".into()),
    };
    let matches = match t.remove("matches") {
        None => None,
        // Only checked here (the checker compiles what it matches with).
        Some(toml::Value::String(p)) => match compile(&p, Patterns::OneOff) {
            Ok(_) => Some(p),
            Err(e) => return Err(format!("`matches`: invalid regex: {e}")),
        },
        Some(other) => {
            return Err(format!(
                "`matches`: expected a string, found {}",
                other.type_str()
            ))
        }
    };
    let absent = match t.remove("absent") {
        None => false,
        Some(toml::Value::Boolean(b)) => b,
        Some(other) => {
            return Err(format!(
                "`absent`: expected true or false, found {}",
                other.type_str()
            ))
        }
    };
    if let Some(k) = t.keys().next() {
        return Err(format!("unknown key {k:?} (known: name, matches, absent)"));
    }
    if absent && matches.is_some() {
        return Err("`absent = true` and `matches` contradict each other".into());
    }
    Ok(HeaderRule {
        name,
        matches,
        absent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Site, Vec<Problem>> {
        let table: toml::Table = toml::from_str(text).unwrap();
        parse_site(
            table,
            0,
            &Arc::from(Path::new("t.toml")),
            &SiteDefaults::default(),
            Duration::from_secs(5),
            Patterns::Shared,
        )
    }

    fn fields(problems: &[Problem]) -> Vec<&str> {
        problems.iter().filter_map(|p| p.field.as_deref()).collect()
    }

    #[test]
    fn status_set_text_round_trips() {
        let set: StatusSet = "200, 301-302,5xx".parse().unwrap();
        assert_eq!(set.to_string(), "200,301-302,500-599");
        assert_eq!(set.to_string().parse::<StatusSet>().unwrap(), set);
        assert!(set.contains(301) && set.contains(599) && !set.contains(404));
        assert!("".parse::<StatusSet>().is_err());
        assert!("2000".parse::<StatusSet>().is_err());
    }

    #[test]
    fn minimal_site_gets_defaults() {
        let s = parse("name = \"a\"\nurl = \"https://a.example\"").unwrap();
        assert_eq!(s.interval, Duration::from_secs(60));
        assert_eq!(s.timeout, Duration::from_secs(10));
        assert_eq!(s.method, Method::GET);
        assert!(s.expect_status.contains(301) && !s.expect_status.contains(404));
        assert!(s.enabled && !s.reuse_connection);
    }

    #[test]
    fn full_site() {
        let s = parse(
            r#"name = "shop"
               url = "https://shop.example/health"
               interval = "30s"
               timeout = "5s"
               regex = "ok|healthy"
               method = "head"
               headers = { Authorization = "Bearer t0ken", "X-Probe" = "1" }
               expect_status = [200, "300-302", "4xx"]
               enabled = false
               reuse_connection = true"#,
        )
        .unwrap();
        assert_eq!(s.method, Method::HEAD);
        assert!(s.regex.unwrap().is_match("all healthy"));
        assert_eq!(s.headers.len(), 2);
        assert!(!format!("{:?}", s.headers).contains("t0ken"));
        assert_eq!(s.expect_status.to_string(), "200,300-302,400-499");
        assert!(!s.enabled && s.reuse_connection);
    }

    #[test]
    fn every_bad_field_is_reported() {
        let problems = parse(
            r#"name = "x"
               url = "ftp://x.example"
               interval = "1s"
               timeout = "fast"
               regex = "("
               method = "GE T"
               expect_status = [999]
               colour = "blue""#,
        )
        .unwrap_err();
        assert_eq!(
            fields(&problems),
            [
                "url",
                "interval",
                "timeout",
                "regex",
                "method",
                "expect_status",
                "colour"
            ]
        );
        assert!(problems
            .iter()
            .all(|p| p.site == Some(SiteRef::Named("x".into()))));
    }

    #[test]
    fn rich_site() {
        let s = parse(
            r#"name = "shop"
               url = "https://shop.example/"
               timeout = "5s"
               forbidden_regex = "(?i)error"
               degraded_after = "1500ms"
               expect_headers = [
                   { name = "Content-Type", matches = "^text/html" },
                   { name = "x-debug", absent = true },
               ]
               body_min_bytes = 10
               body_max_bytes = 100000
               min_cert_days = 14
               follow_redirects = false
               max_redirects = 3
               body = "{}"
               verify_tls = false
               ip_family = "prefer_ipv6""#,
        )
        .unwrap();
        let o = s.options.expect("options");
        assert_eq!(o.forbidden_regex.as_deref(), Some("(?i)error"));
        assert_eq!(o.degraded_after_ms, Some(1500));
        assert_eq!(o.expect_headers.len(), 2);
        assert_eq!(o.expect_headers[0].name, "content-type");
        assert!(o.expect_headers[1].absent);
        assert_eq!(
            (o.body_min_bytes, o.body_max_bytes),
            (Some(10), Some(100_000))
        );
        assert_eq!(o.min_cert_days, Some(14));
        assert!(!o.follow_redirects && !o.verify_tls);
        assert_eq!(o.max_redirects, Some(3));
        assert_eq!(o.ip_family, IpFamily::PreferIpv6);
        // A plain site carries no options at all.
        let plain = parse("name = \"a\"\nurl = \"https://a.example\"").unwrap();
        assert!(plain.options.is_none());
    }

    #[test]
    fn bad_rich_fields_are_each_named() {
        let p = parse(
            r#"name = "x"
               url = "http://x.example"
               timeout = "2s"
               forbidden_regex = "("
               degraded_after = "2s"
               expect_headers = [{ name = "a b" }, { matches = "x" }, { name = "c", colour = 1 }]
               body_min_bytes = 5
               body_max_bytes = 4
               min_cert_days = 7
               max_redirects = -1
               verify_tls = "no"
               ip_family = "v4""#,
        )
        .unwrap_err();
        assert_eq!(
            fields(&p),
            [
                "forbidden_regex",
                "degraded_after",
                "expect_headers[0]",
                "expect_headers[1]",
                "expect_headers[2]",
                "body_min_bytes",
                "min_cert_days",
                "max_redirects",
                "verify_tls",
                "ip_family"
            ]
        );
    }

    #[test]
    fn timeout_must_be_shorter_than_interval() {
        let p = parse(
            "name = \"a\"\nurl = \"http://a.example\"\ninterval = \"10s\"\ntimeout = \"10s\"",
        )
        .unwrap_err();
        assert_eq!(fields(&p), ["timeout"]);
        // The default timeout (10s) against a short interval names its origin.
        let p = parse("name = \"a\"\nurl = \"http://a.example\"\ninterval = \"5s\"").unwrap_err();
        assert!(p[0].message.contains("site_defaults"), "{}", p[0].message);
    }

    #[test]
    fn nameless_site_is_named_by_position() {
        let p = parse("url = \"http://a.example\"").unwrap_err();
        assert_eq!(p[0].site, Some(SiteRef::Index(0)));
        assert_eq!(fields(&p), ["name"]);
        let p = parse("name = \"has space\"\nurl = \"http://a.example\"").unwrap_err();
        assert_eq!(p[0].site, Some(SiteRef::Index(0)));
    }

    #[test]
    fn bad_header_value_is_not_echoed() {
        let p = parse("name = \"a\"\nurl = \"http://a.example\"\nheaders = { Authorization = \"Bearer se\\ncret\" }")
            .unwrap_err();
        assert_eq!(fields(&p), ["headers.Authorization"]);
        assert!(!p[0].to_string().contains("cret"));
    }
}
