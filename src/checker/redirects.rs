//! What carries from one hop of a redirect chain to the next as a browser
//! carries it: the `Location` (raw bytes percent-encoded) and the cookies
//! set along the chain (a jar per check, RFC 6265's domain and path rules).

use http::header::{HeaderMap, HeaderValue, COOKIE};
use url::Url;

/// A `Location` value as text: bytes outside printable ASCII (a raw UTF-8
/// `/café`) are percent-encoded, as browsers do, instead of refusing the
/// redirect (RFC 3986 section 2.1; the URL Standard's percent-encode set).
pub fn location_text(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    for &b in raw {
        if (0x21..0x7f).contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Sets the `Cookie` header for `url`: the configured one (first origin
/// only), then the jar's cookies that `url` may receive.
pub fn with_cookies(
    headers: &mut HeaderMap,
    configured: Option<&HeaderValue>,
    jar: &cookie_store::CookieStore,
    url: &Url,
) {
    let mut parts: Vec<String> = configured
        .and_then(|v| v.to_str().ok())
        .map(|v| vec![v.to_owned()])
        .unwrap_or_default();
    parts.extend(
        jar.get_request_values(url)
            .map(|(name, value)| format!("{name}={value}")),
    );
    match HeaderValue::from_str(&parts.join("; ")) {
        Ok(v) if !parts.is_empty() => {
            headers.insert(COOKIE, v);
        }
        _ => {
            headers.remove(COOKIE);
        }
    }
}

/// A `Location` as messages show it: a server's URL may carry a token of
/// its own (`?session=`), which the site's secret filter would not know.
pub fn shown_location(location: &[u8]) -> String {
    let text = String::from_utf8_lossy(location);
    if url::Url::parse(&text).is_ok() {
        return crate::model::redacted_url(&text);
    }
    // A relative reference: judged on a placeholder origin.
    const BASE: &str = "http://placeholder.invalid";
    match url::Url::parse(BASE).and_then(|b| b.join(&text)) {
        Ok(u) => {
            let shown = crate::model::redacted_url(u.as_str());
            shown.strip_prefix(BASE).unwrap_or(&shown).to_owned()
        }
        Err(_) => text.into_owned(),
    }
}
