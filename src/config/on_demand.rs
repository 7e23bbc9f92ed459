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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn defaults() -> SiteDefaults {
        toml::from_str("").unwrap()
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
        // A pooled connection is not for one-off checks.
        let e = parse_on_demand(
            &json!({"url": "http://x.example", "reuse_connection": true}),
            &defaults(),
        )
        .unwrap_err();
        assert_eq!(e[0].field, "reuse_connection");
    }
}
