//! An on-demand check as the API receives it (`{url, regex?, timeout?,
//! method?, headers?, expect_status?, ...assertions}`), validated by the same rules as a
//! site in the config file, so the API and `validate` give the same errors.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::settings::SiteDefaults;
use super::site::{self, Site, CHECK_KEYS};

/// The longest timeout an on-demand check may ask for.
pub const MAX_ON_DEMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A problem with one field of the request.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// Parses an on-demand check into a [`Site`] named `on-demand`.
pub fn parse_on_demand(
    body: &serde_json::Value,
    defaults: &SiteDefaults,
) -> Result<Site, Vec<FieldError>> {
    let err = |field: &str, message: String| FieldError {
        field: field.to_owned(),
        message,
    };
    let Some(object) = body.as_object() else {
        return Err(vec![err("", "the body must be a JSON object".into())]);
    };
    let unknown: Vec<FieldError> = object
        .keys()
        .filter(|k| !CHECK_KEYS.contains(&k.as_str()))
        .map(|k| err(k, format!("unknown field; expected one of {CHECK_KEYS:?}")))
        .collect();
    if !unknown.is_empty() {
        return Err(unknown);
    }
    let mut table = match toml::Table::try_from(object) {
        Ok(t) => t,
        Err(e) => return Err(vec![err("", format!("not representable: {e}"))]),
    };
    table.insert("name".into(), toml::Value::String("on-demand".into()));
    // Irrelevant for a one-off check; only long enough for any timeout.
    table.insert("interval".into(), toml::Value::String("24h".into()));
    let site = site::parse_site(
        table,
        0,
        &Arc::from(Path::new("request")),
        defaults,
        Duration::ZERO,
        site::Patterns::OneOff,
    )
    .map_err(|problems| {
        problems
            .into_iter()
            .map(|p| err(p.field.as_deref().unwrap_or(""), p.message))
            .collect::<Vec<_>>()
    })?;
    if site.timeout > MAX_ON_DEMAND_TIMEOUT {
        return Err(vec![err(
            "timeout",
            format!(
                "at most {}s for an on-demand check",
                MAX_ON_DEMAND_TIMEOUT.as_secs()
            ),
        )]);
    }
    Ok(site)
}

/// A port or an inclusive range of ports, written `"443"` or `"1024-65535"`
/// (`api.allowed_ports`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct PortRange(pub std::ops::RangeInclusive<u16>);

impl TryFrom<String> for PortRange {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{s:?} is not a port (1-65535) or a range \"low-high\""))
        };
        let (low, high) = match s.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => (port(&s)?, port(&s)?),
        };
        if low > high {
            return Err(format!("{s:?}: the range is empty"));
        }
        Ok(PortRange(low..=high))
    }
}

/// What the API lets an on-demand check do (`api.allowed_methods`,
/// `api.allowed_ports`), so that sitewatch cannot be used as a relay for
/// arbitrary requests (CONNECT, TRACE, a mail or database port). Returns
/// the refused fields; empty when the check may run.
pub fn refuse_by_policy(
    site: &Site,
    methods: &[String],
    ports: &[PortRange],
    denied: &[PortRange],
) -> Vec<FieldError> {
    let mut out = Vec::new();
    if !methods
        .iter()
        .any(|m| m.eq_ignore_ascii_case(site.method.as_str()))
    {
        out.push(FieldError {
            field: "method".into(),
            message: format!(
                "{} is not allowed for an on-demand check (api.allowed_methods: {})",
                site.method,
                methods.join(", ")
            ),
        });
    }
    let port = crate::model::CheckKind::default_port(&site.url).unwrap_or(0);
    // A DNS query to port 53 is the protocol's own, as 80 and 443 are
    // HTTP's: the port lists (made for HTTP, 53 is one of Fetch's bad
    // ports) do not refuse it.
    let dns_own_port = crate::model::CheckKind::of_url(site.url.as_str())
        == Some(crate::model::CheckKind::Dns)
        && port == 53;
    let listed =
        ports.iter().any(|r| r.0.contains(&port)) && !denied.iter().any(|r| r.0.contains(&port));
    if !dns_own_port && !listed {
        out.push(FieldError {
            field: "url".into(),
            message: format!(
                "port {port} is not allowed for an on-demand check (api.allowed_ports, api.denied_ports)"
            ),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn defaults() -> SiteDefaults {
        toml::from_str("").unwrap()
    }

    #[test]
    fn a_dns_query_means_port_53_and_is_allowed_there() {
        let a = &crate::config::ApiSettings::default();
        let site = |url: &str| parse_on_demand(&json!({ "url": url }), &defaults()).unwrap();
        for url in ["dns://8.8.8.8/example.com", "dns:///example.com?type=MX"] {
            let refused = refuse_by_policy(
                &site(url),
                &a.allowed_methods,
                &a.allowed_ports,
                &a.denied_ports,
            );
            assert!(refused.is_empty(), "{url}: {refused:?}");
        }
        // Another port is judged by the lists as any other.
        let refused = refuse_by_policy(
            &site("dns://8.8.8.8:25/example.com"),
            &a.allowed_methods,
            &a.allowed_ports,
            &a.denied_ports,
        );
        assert!(
            refused[0].message.starts_with("port 25 is not allowed"),
            "{refused:?}"
        );
    }

    #[test]
    fn a_valid_request_becomes_a_site() {
        let s = parse_on_demand(
            &json!({"url": "HTTPS://Example.com:443/a", "regex": "ok", "timeout": "5s"}),
            &defaults(),
        )
        .unwrap();
        assert_eq!(s.url.as_str(), "https://example.com/a");
        assert_eq!(s.timeout, Duration::from_secs(5));
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse_on_demand(&json!({"url": "ftp://x", "regex": "("}), &defaults()).unwrap_err();
        let fields: Vec<&str> = e.iter().map(|e| e.field.as_str()).collect();
        assert!(
            fields.contains(&"url") && fields.contains(&"regex"),
            "{e:?}"
        );
        let e = parse_on_demand(&json!({"url": "http://x", "interval": "1s"}), &defaults())
            .unwrap_err();
        assert_eq!(e[0].field, "interval");
        let e =
            parse_on_demand(&json!({"url": "http://x", "timeout": "5m"}), &defaults()).unwrap_err();
        assert_eq!(e[0].field, "timeout");
        // Below a millisecond, or not whole milliseconds: refused, never
        // turned into a 0 ms request.
        for t in ["999us", "0ms", "1500us"] {
            let e = parse_on_demand(&json!({"url": "http://x", "timeout": t}), &defaults())
                .unwrap_err();
            assert_eq!(e[0].field, "timeout", "{t}");
        }
        assert!(parse_on_demand(&json!([1]), &defaults()).is_err());
    }

    #[test]
    fn assertions_are_accepted_and_checked_like_a_sites() {
        let s = parse_on_demand(
            &json!({
                "url": "https://shop.example/",
                "forbidden_regex": "(?i)error",
                "expect_headers": [{"name": "content-type", "matches": "^text/html"}],
                "min_cert_days": 14,
                "degraded_after": "500ms",
                "verify_tls": false
            }),
            &defaults(),
        )
        .unwrap();
        let o = s.options.unwrap();
        assert_eq!(o.expect_headers[0].matches.as_deref(), Some("^text/html"));
        assert_eq!(
            (o.min_cert_days, o.degraded_after_ms),
            (Some(14), Some(500))
        );
        assert!(!o.verify_tls);
        let e = parse_on_demand(
            &json!({"url": "http://x.example", "min_cert_days": 3, "expect_headers": [{"absent": true}]}),
            &defaults(),
        )
        .unwrap_err();
        let fields: Vec<&str> = e.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["expect_headers[0]", "min_cert_days"]);
        // JSON assertions as in the config, and named the same way.
        let s = parse_on_demand(
            &json!({"url": "http://x.example", "json": [{"path": "$.ok", "equals": true}]}),
            &defaults(),
        )
        .unwrap();
        assert_eq!(s.options.unwrap().json[0].path, "$.ok");
        let e = parse_on_demand(
            &json!({"url": "http://x.example", "json": [{"path": "$.ok", "present": true, "absent": true}]}),
            &defaults(),
        )
        .unwrap_err();
        assert_eq!(e[0].field, "json[0]");
        // A pooled connection is not for one-off checks.
        let e = parse_on_demand(
            &json!({"url": "http://x.example", "reuse_connection": true}),
            &defaults(),
        )
        .unwrap_err();
        assert_eq!(e[0].field, "reuse_connection");
    }

    #[test]
    fn methods_and_ports_outside_the_policy_are_refused() {
        let methods: Vec<String> = ["GET", "HEAD", "POST"].map(String::from).to_vec();
        let ports: Vec<PortRange> = ["80", "443", "1024-65535"]
            .iter()
            .map(|p| PortRange::try_from(p.to_string()).unwrap())
            .collect();
        let denied = vec![PortRange::try_from("6379".to_string()).unwrap()];
        let check = |body: serde_json::Value| {
            let site = parse_on_demand(&body, &defaults()).unwrap();
            refuse_by_policy(&site, &methods, &ports, &denied)
                .into_iter()
                .map(|e| e.field)
                .collect::<Vec<_>>()
        };
        assert!(check(json!({"url": "https://x.example/"})).is_empty());
        assert!(check(json!({"url": "http://x.example:8080/", "method": "head"})).is_empty());
        assert_eq!(
            check(json!({"url": "http://x.example/", "method": "TRACE"})),
            ["method"]
        );
        assert_eq!(
            check(json!({"url": "http://x.example/", "method": "CONNECT"})),
            ["method"]
        );
        assert_eq!(check(json!({"url": "http://x.example:25/"})), ["url"]);
        assert_eq!(
            check(json!({"url": "http://x.example:6379/", "method": "PUT"})),
            ["method", "url"]
        );
        assert!(check(json!({"url": "http://x.example:6380/"})).is_empty());
        assert!(PortRange::try_from("0".to_string()).is_err());
        assert!(PortRange::try_from("9-3".to_string()).is_err());
        assert!(PortRange::try_from("http".to_string()).is_err());
    }
}
