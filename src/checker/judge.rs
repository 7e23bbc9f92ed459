//! Judging a response: every assertion is evaluated (not just the first that
//! fails), each failure names what was expected and what came, and the
//! outcome is `up`, `degraded` (all held, but slow) or `down`.

use std::sync::Arc;

use http::HeaderMap;

use super::json::{self, JsonCheck};
use super::pattern::Pattern;
use crate::config::StatusSet;
use crate::model::{CheckOutcome, ErrorKind, Failure, LazySecrets, Outcome};

/// A site's assertions, compiled.
pub struct Rules {
    pub expect: StatusSet,
    pub regex: Option<Arc<Pattern>>,
    pub forbidden: Option<Arc<Pattern>>,
    /// Lower-case name; `None` regex = any value; `absent` = must not be sent.
    pub headers: Vec<HeaderCheck>,
    /// Assertions on the body read as JSON.
    pub json: Vec<JsonCheck>,
    pub body_min: Option<u64>,
    pub body_max: Option<u64>,
    pub min_cert_days: Option<u32>,
    pub degraded_after_ms: Option<u64>,
}

impl Rules {
    /// No regex and no JSON query: judging is a few comparisons.
    pub fn without_patterns(&self) -> bool {
        self.regex.is_none()
            && self.forbidden.is_none()
            && self.json.is_empty()
            && self.headers.iter().all(|h| h.matches.is_none())
    }
}

pub struct HeaderCheck {
    pub name: http::HeaderName,
    pub matches: Option<Arc<Pattern>>,
    pub absent: bool,
}

/// The final response of a check (after any redirects).
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// The body went on past what was read.
    pub truncated: bool,
}

/// Fills `out`'s outcome, failures and reason from `r`. `out.tls` and
/// `out.response_time_ms` must already be set.
pub fn judge(out: &mut CheckOutcome, r: &Response, rules: &Rules, secrets: &LazySecrets) {
    out.status_code = Some(r.status);
    out.body_bytes = Some(r.body.len() as u64);
    let mut failures: Vec<(ErrorKind, Failure)> = Vec::new();
    let mut fail = |kind, assertion: &str, expected: String, observed: String| {
        failures.push((
            kind,
            Failure {
                assertion: assertion.to_owned(),
                expected,
                observed,
            },
        ))
    };
    let seen = || {
        if r.truncated {
            format!("the first {} bytes", r.body.len())
        } else {
            format!("{} bytes", r.body.len())
        }
    };

    if !rules.expect.contains(r.status) {
        fail(
            ErrorKind::UnexpectedStatus,
            "status",
            format!("in {}", rules.expect),
            r.status.to_string(),
        );
    }
    if let Some(re) = &rules.regex {
        let found = re.is_match(&r.body);
        out.regex_matched = found.ok();
        let expected = format!("body matches {:?}", re.as_str());
        match found {
            Ok(true) => {}
            Ok(false) => fail(
                ErrorKind::RegexMismatch,
                "regex",
                expected,
                format!("no match in {}", seen()),
            ),
            Err(costly) => fail(
                ErrorKind::RegexMismatch,
                "regex",
                expected,
                costly.to_string(),
            ),
        }
    }
    if let Some(re) = &rules.forbidden {
        let expected = format!("body does not match {:?}", re.as_str());
        match re.find(&r.body) {
            Ok(None) => {}
            Ok(Some(m)) => fail(
                ErrorKind::ForbiddenMatch,
                "forbidden_regex",
                expected,
                format!(
                    "{:?} at byte {}",
                    secrets.excerpt(&r.body[..m.end], m.start, EXCERPT),
                    m.start
                ),
            ),
            Err(costly) => fail(
                ErrorKind::ForbiddenMatch,
                "forbidden_regex",
                expected,
                costly.to_string(),
            ),
        }
    }
    for h in &rules.headers {
        let values: Vec<&[u8]> = r
            .headers
            .get_all(&h.name)
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        let shown = || {
            values
                .iter()
                .map(|v| format!("{:?}", secrets.excerpt(v, 0, EXCERPT)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let name = h.name.as_str();
        if h.absent {
            if !values.is_empty() {
                fail(
                    ErrorKind::HeaderMismatch,
                    &format!("header {name}"),
                    "absent".into(),
                    shown(),
                );
            }
        } else if values.is_empty() {
            fail(
                ErrorKind::HeaderMismatch,
                &format!("header {name}"),
                match &h.matches {
                    Some(re) => format!("present, matching {:?}", re.as_str()),
                    None => "present".into(),
                },
                "absent".into(),
            );
        } else if let Some(re) = &h.matches {
            // A head is at most 256 KiB: a costly pattern on it fails.
            if !values.iter().any(|v| re.is_match(v).unwrap_or(false)) {
                fail(
                    ErrorKind::HeaderMismatch,
                    &format!("header {name}"),
                    format!("matching {:?}", re.as_str()),
                    shown(),
                );
            }
        }
    }
    if !rules.json.is_empty() {
        for f in json::evaluate(&rules.json, &r.body, r.truncated, secrets) {
            fail(
                ErrorKind::JsonMismatch,
                &f.assertion,
                f.expected,
                f.observed,
            );
        }
    }
    let size = r.body.len() as u64;
    if let Some(min) = rules.body_min {
        if size < min && !r.truncated {
            fail(
                ErrorKind::BodySize,
                "body_min_bytes",
                format!(">= {min} bytes"),
                format!("{size} bytes"),
            );
        }
    }
    if let Some(max) = rules.body_max {
        // The checker reads one byte past `max`, so a larger body shows.
        if size > max {
            fail(
                ErrorKind::BodySize,
                "body_max_bytes",
                format!("<= {max} bytes"),
                if r.truncated {
                    format!("more than {size} bytes")
                } else {
                    format!("{size} bytes")
                },
            );
        }
    }
    if let Some(min) = rules.min_cert_days {
        match &out.tls {
            Some(t) if t.days_left < f64::from(min) => fail(
                ErrorKind::CertExpiring,
                "min_cert_days",
                format!(">= {min} days left"),
                format!("{:.1} days left (expires {})", t.days_left, t.not_after),
            ),
            Some(_) => {}
            None => fail(
                ErrorKind::CertExpiring,
                "min_cert_days",
                format!(">= {min} days left"),
                "no certificate (not HTTPS)".into(),
            ),
        }
    }

    if failures.is_empty() {
        let slow = rules
            .degraded_after_ms
            .zip(out.response_time_ms)
            .filter(|(limit, took)| *took > *limit as f64);
        match slow {
            Some((limit, took)) => {
                out.outcome = Outcome::Degraded;
                out.error_kind = Some(ErrorKind::Slow);
                out.error_message = Some(format!(
                    "degraded_after: expected <= {limit} ms, got {took:.0} ms"
                ));
                out.failures = vec![Failure {
                    assertion: "degraded_after".into(),
                    expected: format!("<= {limit} ms"),
                    observed: format!("{took:.0} ms"),
                }];
            }
            None => out.outcome = Outcome::Up,
        }
        return;
    }
    let kind = failures[0].0;
    out.fail_with(kind, failures.into_iter().map(|(_, f)| f).collect());
}

/// Bytes of a body or header shown in a failure.
const EXCERPT: usize = 80;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Origin, TlsDetails, SCHEMA_VERSION};

    fn outcome(ms: f64) -> CheckOutcome {
        let now = chrono::Utc::now();
        CheckOutcome {
            v: SCHEMA_VERSION,
            check_id: uuid::Uuid::nil(),
            site: "s".into(),
            url: "https://s.example/".into(),
            origin: Origin::OnDemand,
            scheduled_at: now,
            started_at: Some(now),
            finished_at: Some(now),
            outcome: Outcome::Down,
            status_code: None,
            response_time_ms: Some(ms),
            regex_matched: None,
            body_bytes: None,
            error_kind: None,
            error_message: None,
            checker: None,
            timing: None,
            tls: None,
            failures: Vec::new(),
            remote_addr: None,
            http_version: None,
            requested_by: None,
            late: false,
            evidence: None,
            answers: Vec::new(),
        }
    }

    fn none() -> LazySecrets {
        LazySecrets::none()
    }

    fn rules() -> Rules {
        Rules {
            expect: StatusSet::default(),
            regex: None,
            forbidden: None,
            headers: Vec::new(),
            json: Vec::new(),
            body_min: None,
            body_max: None,
            min_cert_days: None,
            degraded_after_ms: None,
        }
    }

    fn response(status: u16, body: &str, headers: &[(&str, &str)]) -> Response {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        Response {
            status,
            headers: h,
            body: body.as_bytes().to_vec(),
            truncated: false,
        }
    }

    #[test]
    fn every_failed_assertion_is_named_with_what_came() {
        let mut r = rules();
        r.expect = "200".parse().unwrap();
        r.regex = Some(Arc::new(Pattern::new("welcome", 1 << 20).unwrap()));
        r.forbidden = Some(Arc::new(Pattern::new("(?i)error", 1 << 20).unwrap()));
        r.headers = vec![
            HeaderCheck {
                name: "content-type".parse().unwrap(),
                matches: Some(Arc::new(Pattern::new("^text/html", 1 << 20).unwrap())),
                absent: false,
            },
            HeaderCheck {
                name: "x-debug".parse().unwrap(),
                matches: None,
                absent: true,
            },
        ];
        r.body_min = Some(100);
        r.min_cert_days = Some(14);
        let mut out = outcome(5.0);
        out.tls = Some(TlsDetails {
            not_after: chrono::Utc::now() + chrono::Duration::days(3),
            days_left: 3.0,
            subject: "CN=s".into(),
            issuer: "CN=s".into(),
            version: None,
        });
        judge(
            &mut out,
            &response(
                503,
                "Internal Error",
                &[("content-type", "application/json"), ("x-debug", "on")],
            ),
            &r,
            &none(),
        );
        assert_eq!(out.outcome, Outcome::Down);
        assert_eq!(out.error_kind, Some(ErrorKind::UnexpectedStatus));
        let names: Vec<&str> = out.failures.iter().map(|f| f.assertion.as_str()).collect();
        assert_eq!(
            names,
            [
                "status",
                "regex",
                "forbidden_regex",
                "header content-type",
                "header x-debug",
                "body_min_bytes",
                "min_cert_days"
            ]
        );
        assert_eq!(out.failures[0].observed, "503");
        assert!(
            out.failures[2].observed.contains("Error"),
            "{:?}",
            out.failures[2]
        );
        assert!(out.failures[3].observed.contains("application/json"));
        assert!(out.failures[6].observed.starts_with("3.0 days"));
        assert_eq!(out.regex_matched, Some(false));
    }

    #[test]
    fn slow_but_correct_is_degraded_and_fast_is_up() {
        let mut r = rules();
        r.degraded_after_ms = Some(100);
        let mut slow = outcome(250.0);
        judge(&mut slow, &response(200, "ok", &[]), &r, &none());
        assert_eq!(slow.outcome, Outcome::Degraded);
        assert_eq!(slow.error_kind, Some(ErrorKind::Slow));
        assert_eq!(slow.failures[0].observed, "250 ms");
        let mut fast = outcome(20.0);
        judge(&mut fast, &response(200, "ok", &[]), &r, &none());
        assert_eq!(fast.outcome, Outcome::Up);
        assert!(fast.failures.is_empty() && fast.error_kind.is_none());
        // A wrong answer is down however fast.
        let mut wrong = outcome(250.0);
        judge(&mut wrong, &response(500, "ok", &[]), &r, &none());
        assert_eq!(wrong.outcome, Outcome::Down);
    }

    #[test]
    fn body_bounds() {
        let mut r = rules();
        r.body_max = Some(3);
        let mut out = outcome(1.0);
        judge(&mut out, &response(200, "four", &[]), &r, &none());
        assert_eq!(out.error_kind, Some(ErrorKind::BodySize));
        let mut out = outcome(1.0);
        judge(&mut out, &response(200, "ok", &[]), &r, &none());
        assert_eq!(out.outcome, Outcome::Up);
    }
}
