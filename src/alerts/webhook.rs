//! The generic webhook: its body (the event as JSON, or the channel's
//! template rendered with minijinja) and its signature.
//!
//! The signature follows the scheme Stripe documents for its webhooks
//! (<https://docs.stripe.com/webhooks#verify-manually>): the header
//! `X-Sitewatch-Signature: t=<unix seconds>,v1=<hex>` where `<hex>` is
//! HMAC-SHA256 (RFC 2104) keyed with the channel's `secret` over
//! `"<t>.<body>"`. A receiver recomputes it over the raw body, compares in
//! constant time, and refuses a timestamp older than a tolerance (five
//! minutes is usual), which stops a captured request from being replayed
//! later. [`verify`] does exactly that.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::notice::Notice;
use super::template;
use super::vendors::{event_json, Call};

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "X-Sitewatch-Signature";

/// What would make every delivery of a channel fail, found before any is
/// tried: a content type that is not a header value, or a template that
/// cannot be bounded, does not render for every event with hostile values
/// (quotes, backslashes, newlines, control characters, 10 KiB causes), or
/// renders a body that is not JSON on a JSON channel.
pub fn check(template: Option<&str>, content_type: &str) -> Result<(), String> {
    if reqwest::header::HeaderValue::from_str(content_type).is_err() {
        return Err("content_type is not a valid header value".into());
    }
    let Some(t) = template else { return Ok(()) };
    let json = template::is_json(content_type);
    for n in Notice::hostile_samples() {
        let body = template::render(t, &event_json(&n), json)?;
        if json {
            if let Err(e) = serde_json::from_str::<serde_json::Value>(&body) {
                return Err(format!(
                    "template: for a {} event whose cause holds quotes, backslashes and control \
                     characters it renders a body that is not JSON ({e}), and content_type is \
                     {content_type}",
                    n.event.as_str()
                ));
            }
        }
    }
    Ok(())
}

/// The body and headers for a generic webhook channel. A template that
/// fails to render is an `Err` with minijinja's message.
pub fn call(
    url: &str,
    secret: Option<&str>,
    template: Option<&str>,
    content_type: &str,
    n: &Notice,
    now_unix: i64,
) -> Result<Call, String> {
    let event = event_json(n);
    let json = template::is_json(content_type);
    let rendered = template.map(|t| template::render(t, &event, json));
    // A render that fails (too large, too much work, a value it did not
    // expect) still tells the receiver: the event as JSON, or as text.
    let (body, content_type, failed) = match rendered {
        None => (event.to_string(), content_type.to_owned(), None),
        // A branch the hostile samples did not take may still break JSON.
        Some(Ok(body)) if json && serde_json::from_str::<serde_json::Value>(&body).is_err() => (
            event.to_string(),
            content_type.to_owned(),
            Some("template: the rendered body is not JSON".to_owned()),
        ),
        Some(Ok(body)) => (body, content_type.to_owned(), None),
        Some(Err(e)) if json => (event.to_string(), content_type.to_owned(), Some(e)),
        Some(Err(e)) => (
            format!("{}\n{}\n", n.headline(), n.detail()),
            "text/plain; charset=utf-8".to_owned(),
            Some(e),
        ),
    };
    let mut headers = vec![
        ("Content-Type", content_type),
        ("X-Sitewatch-Event", n.event.as_str().to_owned()),
        ("X-Sitewatch-Delivery", n.outbox.to_string()),
    ];
    if let Some(e) = failed {
        tracing::warn!(event = n.event.as_str(), site = %n.site, "webhook template: {e}; sent the default message");
        let shown: String = e
            .chars()
            .filter(|c| c.is_ascii_graphic() || *c == ' ')
            .take(200)
            .collect();
        headers.push(("X-Sitewatch-Template-Error", shown));
    }
    if let Some(secret) = secret {
        headers.push((SIGNATURE_HEADER, sign(secret, now_unix, body.as_bytes())));
    }
    Ok(Call {
        url: url.to_owned(),
        headers,
        body: body.into_bytes(),
    })
}

fn mac(secret: &str, t: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut m =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// The signature header's value for `body` sent at `t` (unix seconds).
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    format!(
        "t={t},v1={}",
        hex::encode(mac(secret, t, body).finalize().into_bytes())
    )
}

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature header is not `t=<unix seconds>,v1=<hex>`")]
    Malformed,
    #[error("the timestamp is {0} s away from now, more than the tolerance")]
    Stale(i64),
    #[error("the signature does not match the body")]
    Mismatch,
}

/// Checks a signature header against the raw `body` received at `now`
/// (unix seconds), accepting timestamps at most `tolerance_s` away.
pub fn verify(
    secret: &str,
    header: &str,
    body: &[u8],
    now: i64,
    tolerance_s: i64,
) -> Result<(), SignatureError> {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = hex::decode(v).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return Err(SignatureError::Malformed);
    };
    let skew = (now - t).abs();
    if skew > tolerance_s {
        return Err(SignatureError::Stale(skew));
    }
    mac(secret, t, body)
        .verify_slice(&v1)
        .map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::notice::Notice;

    #[test]
    fn a_signature_verifies_until_the_body_or_the_time_is_off() {
        let n = Notice::test("hook", "host-1");
        let c = call(
            "http://x/",
            Some("s3cret"),
            None,
            "application/json",
            &n,
            1_000,
        )
        .unwrap();
        let sig = &c
            .headers
            .iter()
            .find(|h| h.0 == SIGNATURE_HEADER)
            .unwrap()
            .1;
        assert_eq!(verify("s3cret", sig, &c.body, 1_010, 300), Ok(()));
        let mut tampered = c.body.clone();
        tampered[2] ^= 1;
        assert_eq!(
            verify("s3cret", sig, &tampered, 1_010, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("other", sig, &c.body, 1_010, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("s3cret", sig, &c.body, 1_400, 300),
            Err(SignatureError::Stale(400))
        );
        assert_eq!(
            verify("s3cret", "v1=00", &c.body, 1_000, 300),
            Err(SignatureError::Malformed)
        );
        // The timestamp is signed too: moving it forward breaks the match.
        let moved = sig.replace("t=1000", "t=1300");
        assert_eq!(
            verify("s3cret", &moved, &c.body, 1_300, 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn a_template_renders_the_event() {
        let n = Notice::test("hook", "host-1");
        let c = call(
            "http://x/",
            None,
            Some("{{ event }}|{{ incident.id }}|{{ summary }}"),
            "text/plain",
            &n,
            0,
        )
        .unwrap();
        assert_eq!(c.body, b"test|0|sitewatch test notification");
        // A template that fails at delivery still sends the default
        // message, and says why.
        let bad = call("http://x/", None, Some("{{ nope.x }}"), "text/plain", &n, 0).unwrap();
        assert!(String::from_utf8_lossy(&bad.body).starts_with("sitewatch test notification\n"));
        let why = bad
            .headers
            .iter()
            .find(|(k, _)| *k == "X-Sitewatch-Template-Error");
        assert!(
            why.is_some_and(|(_, v)| v.starts_with("template:")),
            "{bad:?}"
        );
        let bad = call(
            "http://x/",
            None,
            Some("{{ nope.x }}"),
            "application/json",
            &n,
            0,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bad.body).unwrap();
        assert_eq!(v["event"], "test");
        // A branch that renders something that is not JSON: the default.
        let branch = r#"{% if event == "test" %}{{ summary }}{% else %}{"a": 1}{% endif %}"#;
        let bad = call("http://x/", None, Some(branch), "application/json", &n, 0).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bad.body).unwrap();
        assert_eq!(v["event"], "test");
        assert!(
            check(Some("{{ sumary }}"), "text/plain").is_err(),
            "a misspelt field"
        );
        assert!(check(Some("{{ summary | nosuch }}"), "text/plain").is_err());
        assert!(check(None, "bad\nheader").is_err());
        let endless = "{% for i in detail %}{% for j in detail %}x{% endfor %}{% endfor %}";
        let err = check(Some(endless), "text/plain").unwrap_err();
        assert!(err.contains("`for`"), "{err}");
        // The issue's template: quotes from a server break the JSON unless
        // values are escaped, which they are on a JSON channel.
        let issue = r#"{"text": "{{ summary }}", "detail": "{{ detail }}"}"#;
        assert_eq!(check(Some(issue), "application/json"), Ok(()));
        // A template that writes a value where JSON needs a string is refused.
        let err = check(Some(r#"{"text": {{ summary }}}"#), "application/json").unwrap_err();
        assert!(err.contains("not JSON"), "{err}");
        // Refused before it runs: it could grow without bound.
        let err = check(Some(r#"{{ "x" * 1000000000 }}"#), "text/plain").unwrap_err();
        assert!(err.contains("`*`"), "{err}");
    }
}
