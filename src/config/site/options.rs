//! A site's rich assertions and request options (`CheckOptions`): each key
//! read and checked on its own, so every problem is named.

use std::time::Duration;

use http::HeaderName;
use url::Url;

use super::super::duration;
use super::patterns::{compile, Patterns};
use super::{Reader, MAX_BODY_BOUND, MAX_REDIRECTS};
use crate::model::{CheckOptions, HeaderRule, IpFamily, JsonExpect, JsonRule};

/// Response codes a `dns://` check may expect (RFC 1035 section 4.1.1,
/// RFC 2136 section 2.2).
pub const RCODES: [&str; 6] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED",
];

/// The rich assertions and request options of a site.
pub(super) fn parse_options(
    r: &mut Reader<'_>,
    url: Option<&Url>,
    timeout: Option<Duration>,
) -> CheckOptions {
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
    match r.take("json") {
        None => {}
        Some(toml::Value::Array(items)) => {
            for (i, item) in items.into_iter().enumerate() {
                match json_rule(item) {
                    Ok(rule) => o.json.push(rule),
                    Err(e) => r.bad(&format!("json[{i}]"), e),
                }
            }
        }
        Some(other) => r.bad(
            "json",
            format!(
                "expected a list of {{ path = \"$.status\", equals = \"ok\" }}, found {}",
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
    if o.min_cert_days.is_some() && url.is_some_and(|u| !matches!(u.scheme(), "https" | "tls")) {
        r.bad("min_cert_days", "needs an https:// or tls:// url");
    }
    if let Some(p) = r.string("starttls") {
        match p.to_ascii_lowercase().as_str() {
            "smtp" | "imap" => o.starttls = Some(p.to_ascii_lowercase()),
            _ => r.bad(
                "starttls",
                format!("{p:?} is not one of \"smtp\", \"imap\""),
            ),
        }
    }
    if let Some(name) = r.string("server_name") {
        if rustls::pki_types::ServerName::try_from(name.as_str()).is_ok() {
            o.server_name = Some(name);
        } else {
            r.bad(
                "server_name",
                format!("{name:?} is not a DNS name or an IP address"),
            );
        }
    }
    o.follow_redirects = r.boolean("follow_redirects", true);
    o.max_redirects = r
        .integer("max_redirects", 0..=MAX_REDIRECTS)
        .map(|n| n as u32);
    o.body = r.string("body");
    match r.take("expect_answer") {
        None => {}
        Some(toml::Value::String(a)) => o.expect_answer.push(a),
        Some(toml::Value::Array(items)) => {
            for (i, item) in items.into_iter().enumerate() {
                match item {
                    toml::Value::String(a) => o.expect_answer.push(a),
                    other => r.bad(
                        &format!("expect_answer[{i}]"),
                        format!("expected a string, found {}", other.type_str()),
                    ),
                }
            }
        }
        Some(other) => r.bad(
            "expect_answer",
            format!(
                "expected a string or a list of strings, found {}",
                other.type_str()
            ),
        ),
    }
    if let Some(code) = r.string("expect_rcode") {
        let code = code.to_ascii_uppercase();
        if RCODES.contains(&code.as_str()) {
            o.expect_rcode = Some(code);
        } else {
            r.bad("expect_rcode", format!("{code:?} is not one of {RCODES:?}"));
        }
    }
    o.send = r.string("send");
    o.expect = r.regex("expect").map(|re| re.as_str().to_owned());
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

/// The expectations a `json` entry may have, exactly one each.
const JSON_EXPECTATIONS: [&str; 9] = [
    "equals",
    "not_equals",
    "at_least",
    "at_most",
    "greater_than",
    "less_than",
    "matches",
    "present",
    "absent",
];

/// One `json` entry: `{ path = "$.x", <one expectation> = value }`.
fn json_rule(item: toml::Value) -> Result<JsonRule, String> {
    let toml::Value::Table(mut t) = item else {
        return Err(format!("expected a table, found {}", item.type_str()));
    };
    let path = match t.remove("path") {
        Some(toml::Value::String(p)) => p,
        _ => return Err("`path` (an RFC 9535 JSONPath, a string) is required".into()),
    };
    let mut found = t.into_iter();
    let Some((key, value)) = found.next() else {
        return Err(format!(
            "one of {} is required",
            JSON_EXPECTATIONS.join(", ")
        ));
    };
    if let Some((other, _)) = found.next() {
        return Err(format!(
            "`{key}` and `{other}`: one expectation per entry (write two entries)"
        ));
    }
    let number = |v: &toml::Value| match v {
        toml::Value::Integer(n) => Ok(*n as f64),
        toml::Value::Float(x) => Ok(*x),
        other => Err(format!(
            "`{key}`: expected a number, found {}",
            other.type_str()
        )),
    };
    let yes = |v: &toml::Value| match v {
        toml::Value::Boolean(true) => Ok(true),
        _ => Err(format!("`{key}`: only `{key} = true` is meaningful")),
    };
    let json = |v: toml::Value| {
        serde_json::to_value(v).map_err(|e| format!("`{key}`: not a JSON value: {e}"))
    };
    let expect = match key.as_str() {
        "equals" => JsonExpect::Equals(json(value)?),
        "not_equals" => JsonExpect::NotEquals(json(value)?),
        "at_least" => JsonExpect::AtLeast(number(&value)?),
        "at_most" => JsonExpect::AtMost(number(&value)?),
        "greater_than" => JsonExpect::GreaterThan(number(&value)?),
        "less_than" => JsonExpect::LessThan(number(&value)?),
        "present" => JsonExpect::Present(yes(&value)?),
        "absent" => JsonExpect::Absent(yes(&value)?),
        "matches" => match value {
            toml::Value::String(p) => match compile(&p, Patterns::OneOff) {
                Ok(_) => JsonExpect::Matches(p),
                Err(e) => return Err(format!("`matches`: invalid regex: {e}")),
            },
            other => {
                return Err(format!(
                    "`matches`: expected a string, found {}",
                    other.type_str()
                ))
            }
        },
        other => {
            return Err(format!(
                "unknown key {other:?} (known: path, {})",
                JSON_EXPECTATIONS.join(", ")
            ))
        }
    };
    let rule = JsonRule { path, expect };
    if let Some(why) = rule.too_complex() {
        return Err(format!("`path`: {why}"));
    }
    let (query, _) = rule.query();
    if let Err(e) = serde_json_path::JsonPath::parse(query) {
        return Err(format!(
            "`path`: {:?} is not an RFC 9535 JSONPath: {e}",
            rule.path
        ));
    }
    Ok(rule)
}
