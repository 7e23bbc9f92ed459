//! Evidence of a failed check: what the site answered (status line, headers,
//! the start of the body), so the operator sees the error page, not only
//! "unexpected status 503". Secrets stay out of it: only headers known to
//! carry no credential show their values (an allow-list), cookies show
//! their names, and everything passes the check's secret filter
//! ([`Secrets`]), which finds the site's own secrets in any echoed form.

use std::fmt::Write as _;

use http::StatusCode;

use super::judge::Response;
use crate::model::{CheckOutcome, Evidence, Secrets, REDACTED};

/// Headers kept at most, and bytes of each value: a response head may be
/// up to 256 KiB (`connect::MAX_HEAD_BYTES`), its evidence stays small.
const MAX_HEADERS: usize = 100;
const MAX_VALUE_BYTES: usize = 512;

/// Response headers whose values say what happened and carry no
/// credential; any other header shows its name with a redacted value.
const SHOWN_HEADERS: &[&str] = &[
    "accept-ranges",
    "access-control-allow-headers",
    "access-control-allow-methods",
    "access-control-allow-origin",
    "age",
    "allow",
    "alt-svc",
    "cache-control",
    "cf-cache-status",
    "cf-ray",
    "connection",
    "content-encoding",
    "content-language",
    "content-length",
    "content-range",
    "content-security-policy",
    "content-type",
    "date",
    "etag",
    "expires",
    "keep-alive",
    "last-modified",
    "link",
    "location",
    "pragma",
    "proxy-authenticate",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "referrer-policy",
    "refresh",
    "retry-after",
    "server",
    "strict-transport-security",
    "transfer-encoding",
    "vary",
    "via",
    "www-authenticate",
    "x-cache",
    "x-cache-hits",
    "x-content-type-options",
    "x-frame-options",
    "x-powered-by",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "x-request-id",
    "x-served-by",
];

/// The evidence of `r`, with at most `keep` bytes of body. `version` is the
/// HTTP version of the hop that answered.
pub fn of(version: &str, r: &Response, keep: usize, secrets: &Secrets) -> Evidence {
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
            } else if name == http::header::LOCATION {
                let shown = super::redirects::shown_location(render(bytes).as_bytes());
                let mut v = secrets.redact(&shown).into_owned();
                cut(&mut v, MAX_VALUE_BYTES);
                v
            } else if SHOWN_HEADERS.contains(&name.as_str()) {
                let mut v = secrets.redact(&render(bytes)).into_owned();
                cut(&mut v, MAX_VALUE_BYTES);
                v
            } else {
                REDACTED.to_owned()
            };
            (name.as_str().to_owned(), value)
        })
        .collect();
    // Read past `keep` by the longest secret, so that a secret that starts
    // inside the kept part is found whole and replaced before the cut.
    let window = &r.body[..r.body.len().min(keep + secrets.longest())];
    let mut body = secrets.redact(&render(window)).into_owned();
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

/// A failed assertion on a credential header shows `[redacted]` whatever
/// the value (the rest of the outcome goes through the secret filter).
pub fn hide_credential_headers(out: &mut CheckOutcome) {
    let mut changed = false;
    for f in &mut out.failures {
        let header = f.assertion.strip_prefix("header ");
        if header.is_some_and(|h| h == "set-cookie" || secret_header(h)) {
            f.observed = REDACTED.to_owned();
            changed = true;
        }
    }
    if changed {
        out.error_message = Some(out.failures_summary());
    }
}

/// Response headers whose values are credentials (RFC 6265 cookies, RFC
/// 9110 section 11 authentication, and the common token headers). The
/// challenge headers (`WWW-Authenticate`) say how to log in, not a secret.
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
    fn only_known_headers_show_values_and_echoed_secrets_are_redacted() {
        let secrets = Secrets::from_values(["tok-12345".to_owned(), "cookie-secret".to_owned()]);
        let r = response(
            &[
                ("set-cookie", "sid=server-secret; Path=/; HttpOnly"),
                ("x-auth-token", "abcdef"),
                ("x-custom-thing", "opaque-value"),
                ("www-authenticate", "Bearer realm=\"api\""),
                ("x-request-id", "got tok-12345"),
                ("location", "/next?session=sess-999&page=2"),
                ("server", "nginx"),
            ],
            b"you sent Bearer tok-12345 and sid=cookie-secret as probe/1",
        );
        let e = of("HTTP/1.1", &r, 4096, &secrets);
        assert_eq!(e.status_line, "HTTP/1.1 503 Service Unavailable");
        let text = serde_json::to_string(&e).unwrap();
        for secret in [
            "server-secret",
            "abcdef",
            "tok-12345",
            "cookie-secret",
            "opaque-value",
            "sess-999",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        let header = |n: &str| e.headers.iter().find(|(k, _)| k == n).unwrap().1.clone();
        assert_eq!(header("set-cookie"), "sid=[redacted]; Path=/; HttpOnly");
        assert_eq!(header("www-authenticate"), "Bearer realm=\"api\"");
        assert_eq!(header("server"), "nginx");
        assert_eq!(header("x-custom-thing"), REDACTED);
        assert!(
            header("location").contains("page=2"),
            "{}",
            header("location")
        );
        assert!(
            e.body.contains("as probe/1") && e.body.starts_with("you sent"),
            "{}",
            e.body
        );
    }

    #[test]
    fn the_body_is_cut_to_its_bound_escaped_and_never_leaks_a_cut_secret() {
        let secrets = Secrets::from_values(["k-0123456789".to_owned()]);
        // The secret straddles the cut at 10 bytes.
        let r = response(&[], b"12345678 k-0123456789 tail");
        let e = of("HTTP/2", &r, 10, &secrets);
        assert!(e.body.len() <= 10 && !e.body.contains("k-0"), "{}", e.body);
        assert!(e.body_truncated);
        // Bytes that are not UTF-8, and NUL, are escaped.
        let r = response(&[], b"ok\0\xff\xfe!");
        let e = of("HTTP/1.1", &r, 100, &Secrets::none());
        assert_eq!(e.body, "ok\\x00\\xff\\xfe!");
        assert!(!e.body_truncated);
    }
}
