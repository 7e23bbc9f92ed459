//! Evidence of a failed check: what the site answered (status line, headers,
//! the start of the body), so the operator sees the error page, not only
//! "unexpected status 503". Secrets stay out of it: the values of cookie
//! and credential headers, and the site's own secret request headers
//! wherever the server echoes them (headers or body), become `[redacted]`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use http::{HeaderName, StatusCode};

use super::judge::Response;
use crate::model::{CheckOutcome, Evidence};

/// What a redacted value is replaced with.
pub const REDACTED: &str = "[redacted]";
/// Headers kept at most, and bytes of each value: a response head may be
/// up to 256 KiB (`connect::MAX_HEAD_BYTES`), its evidence stays small.
const MAX_HEADERS: usize = 100;
const MAX_VALUE_BYTES: usize = 512;
/// Secrets shorter than this are not searched for in the body: replacing
/// every "1" or "en" would hide the evidence and protect nothing.
const MIN_SECRET_LEN: usize = 4;

/// The evidence of `r`, with at most `keep` bytes of body. `version` is the
/// HTTP version of the hop that answered; `request_headers` are the site's
/// configured headers, of which all but `safe` (the
/// `checker.cross_origin_headers`) count as secret.
pub fn of(
    version: &str,
    r: &Response,
    keep: usize,
    request_headers: &BTreeMap<String, String>,
    safe: &[HeaderName],
) -> Evidence {
    let secrets = secrets(request_headers, safe);
    let reason = StatusCode::from_u16(r.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let headers = r
        .headers
        .iter()
        .take(MAX_HEADERS)
        .map(|(name, value)| {
            let bytes = value.as_bytes();
            let value = if name == http::header::SET_COOKIE {
                redact_set_cookie(&render(bytes))
            } else if secret_header(name.as_str()) {
                REDACTED.to_owned()
            } else {
                let mut v = redact(render(bytes), &secrets);
                cut(&mut v, MAX_VALUE_BYTES);
                v
            };
            (name.as_str().to_owned(), value)
        })
        .collect();
    // Read past `keep` by the longest secret, so that a secret that starts
    // inside the kept part is found whole and replaced before the cut.
    let longest = secrets.iter().map(String::len).max().unwrap_or(0);
    let window = &r.body[..r.body.len().min(keep + longest)];
    let mut body = redact(render(window), &secrets);
    cut(&mut body, keep);
    Evidence {
        status_line: format!("{version} {} {reason}", r.status)
            .trim_end()
            .to_owned(),
        headers,
        body,
        body_truncated: r.truncated || r.body.len() > keep,
    }
}

/// Hides the same secrets in `out`'s failures and message as in its
/// evidence: a failed header assertion on a credential header shows
/// `[redacted]`, and the site's secret request headers echoed in an
/// observed value (a header, a body excerpt, a JSON value) are replaced.
pub fn scrub(
    out: &mut CheckOutcome,
    request_headers: &BTreeMap<String, String>,
    safe: &[HeaderName],
) {
    let secrets = secrets(request_headers, safe);
    let mut changed = false;
    for f in &mut out.failures {
        let header = f.assertion.strip_prefix("header ");
        if header.is_some_and(|h| h == "set-cookie" || secret_header(h)) {
            f.observed = REDACTED.to_owned();
            changed = true;
        } else if secrets.iter().any(|s| f.observed.contains(s.as_str())) {
            f.observed = redact(std::mem::take(&mut f.observed), &secrets);
            changed = true;
        }
    }
    if changed {
        out.error_message = Some(out.failures_summary());
    }
    if let Some(m) = out.error_message.take() {
        out.error_message = Some(redact(m, &secrets));
    }
}

/// Response headers whose values are credentials (RFC 6265 cookies, RFC
/// 9110 section 11 authentication, and the common token headers). The
/// challenge headers (`WWW-Authenticate`) say how to log in, not a secret,
/// and stay.
fn secret_header(name: &str) -> bool {
    if name.ends_with("-authenticate") {
        return false;
    }
    matches!(name, "cookie" | "set-cookie2")
        || [
            "auth", "token", "secret", "password", "api-key", "apikey", "session",
        ]
        .iter()
        .any(|w| name.contains(w))
}

/// The values to hide wherever they appear: every configured request
/// header but the safe ones, and each cookie's value on its own.
fn secrets(request_headers: &BTreeMap<String, String>, safe: &[HeaderName]) -> Vec<String> {
    let mut out = Vec::new();
    for (name, value) in request_headers {
        if safe.iter().any(|s| s.as_str().eq_ignore_ascii_case(name)) {
            continue;
        }
        out.push(value.clone());
        if name.eq_ignore_ascii_case("cookie") {
            out.extend(
                value
                    .split(';')
                    .filter_map(|pair| pair.split_once('=').map(|(_, v)| v.trim().to_owned())),
            );
        }
        // `Authorization: Bearer X` may come back as X alone.
        if let Some((_, credentials)) = value.split_once(' ') {
            out.push(credentials.trim().to_owned());
        }
    }
    out.retain(|s| s.len() >= MIN_SECRET_LEN);
    // Longest first, so a value is replaced before a part of it.
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out.dedup();
    out
}

fn redact(mut text: String, secrets: &[String]) -> String {
    for s in secrets {
        if text.contains(s.as_str()) {
            text = text.replace(s.as_str(), REDACTED);
        }
    }
    text
}

/// `sid=abc; Path=/; HttpOnly` as `sid=[redacted]; Path=/; HttpOnly`: the
/// cookie's name and attributes help, its value is a credential.
fn redact_set_cookie(value: &str) -> String {
    let (pair, attributes) = value.split_once(';').unwrap_or((value, ""));
    let name = pair.split_once('=').map_or(pair, |(n, _)| n).trim();
    let mut out = format!("{name}={REDACTED}");
    if !attributes.is_empty() {
        out.push(';');
        out.push_str(attributes);
    }
    cut(&mut out, MAX_VALUE_BYTES);
    out
}

/// `bytes` as text: UTF-8 as it is; every other byte, and NUL (which
/// Postgres text and jsonb cannot hold), as `\xNN`.
pub fn render(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\0' {
                out.push_str("\\x00");
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// Shortens `text` to at most `max` bytes, at a character boundary.
fn cut(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};

    fn response(headers: &[(&'static str, &str)], body: &[u8]) -> Response {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(*k, HeaderValue::from_str(v).unwrap());
        }
        Response {
            status: 503,
            headers: map,
            body: body.to_vec(),
            truncated: false,
        }
    }

    #[test]
    fn cookies_credentials_and_echoed_secrets_are_redacted() {
        let configured = BTreeMap::from([
            ("authorization".to_owned(), "Bearer tok-12345".to_owned()),
            ("cookie".to_owned(), "sid=cookie-secret; lang=en".to_owned()),
            ("user-agent".to_owned(), "probe/1".to_owned()),
        ]);
        let safe = [http::header::USER_AGENT];
        let r = response(
            &[
                ("set-cookie", "sid=server-secret; Path=/; HttpOnly"),
                ("x-auth-token", "abcdef"),
                ("www-authenticate", "Bearer realm=\"api\""),
                ("x-echo", "got tok-12345"),
                ("server", "nginx"),
            ],
            b"you sent Bearer tok-12345 and sid=cookie-secret as probe/1",
        );
        let e = of("HTTP/1.1", &r, 4096, &configured, &safe);
        assert_eq!(e.status_line, "HTTP/1.1 503 Service Unavailable");
        let text = serde_json::to_string(&e).unwrap();
        for secret in ["server-secret", "abcdef", "tok-12345", "cookie-secret"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        let header = |n: &str| e.headers.iter().find(|(k, _)| k == n).unwrap().1.clone();
        assert_eq!(header("set-cookie"), "sid=[redacted]; Path=/; HttpOnly");
        assert_eq!(header("www-authenticate"), "Bearer realm=\"api\"");
        assert_eq!(header("server"), "nginx");
        // A safe header's value stays, and so does the text around secrets.
        assert!(
            e.body.contains("as probe/1") && e.body.starts_with("you sent"),
            "{}",
            e.body
        );
    }

    #[test]
    fn failures_hide_credential_headers_and_echoed_secrets() {
        let req = crate::model::CheckRequest {
            headers: BTreeMap::from([("authorization".into(), "Bearer s3cr3t-value".into())]),
            ..serde_json::from_value(serde_json::json!({
                "v": 1, "check_id": uuid::Uuid::nil(), "site": "s", "origin": "scheduled",
                "scheduled_at": "2026-12-01T00:00:00Z", "deadline": "2026-12-01T00:01:00Z",
                "url": "http://s.example/", "timeout_ms": 1000
            }))
            .unwrap()
        };
        let mut out = CheckOutcome::of(&req, crate::model::Outcome::Down, "t");
        out.failures = vec![
            crate::model::Failure {
                assertion: "header set-cookie".into(),
                expected: "absent".into(),
                observed: "\"sid=srv-session-XYZ\"".into(),
            },
            crate::model::Failure {
                assertion: "forbidden_regex".into(),
                expected: "no match".into(),
                observed: "\"you sent Bearer s3cr3t-value\"".into(),
            },
        ];
        out.error_message = Some("whatever said s3cr3t-value".into());
        scrub(&mut out, &req.headers, &[]);
        let text = serde_json::to_string(&out).unwrap();
        assert!(
            !text.contains("s3cr3t-value") && !text.contains("srv-session"),
            "{text}"
        );
        assert!(out
            .error_message
            .unwrap()
            .contains("header set-cookie: expected absent, got [redacted]"));
    }

    #[test]
    fn the_body_is_cut_to_its_bound_escaped_and_never_leaks_a_cut_secret() {
        let configured = BTreeMap::from([("x-api-key".to_owned(), "k-0123456789".to_owned())]);
        // The secret straddles the cut at 10 bytes.
        let r = response(&[], b"12345678 k-0123456789 tail");
        let e = of("HTTP/2", &r, 10, &configured, &[]);
        assert!(e.body.len() <= 10 && !e.body.contains("k-0"), "{}", e.body);
        assert!(e.body_truncated);
        // Bytes that are not UTF-8, and NUL, are escaped.
        let r = response(&[], b"ok\0\xff\xfe!");
        let e = of("HTTP/1.1", &r, 100, &BTreeMap::new(), &[]);
        assert_eq!(e.body, "ok\\x00\\xff\\xfe!");
        assert!(!e.body_truncated);
    }
}
