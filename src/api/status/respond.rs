//! Answers of the status page: the bytes, compressed once, an `ETag`
//! (`If-None-Match` gets a `304`), `Cache-Control` and the security
//! headers of each form.
//!
//! Headers follow OWASP's HTTP Headers Cheat Sheet
//! (<https://cheatsheetseries.owasp.org/cheatsheets/HTTP_Headers_Cheat_Sheet.html>):
//! the page's CSP allows only its own stylesheet and script (no inline
//! code, no other origin, no framing); badges and JSON may be embedded
//! and fetched from anywhere (`Cross-Origin-Resource-Policy: cross-origin`,
//! `Access-Control-Allow-Origin: *`) since they are public by design.

use std::io::Write;
use std::sync::{Arc, OnceLock};

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::{Pair, StatusError};

/// Bodies under this are sent as they are.
const COMPRESS_FROM: usize = 1024;

/// What an answer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Html,
    Json,
    Svg,
    Css,
    Js,
}

impl Form {
    fn content_type(self) -> &'static str {
        match self {
            Form::Html => "text/html; charset=utf-8",
            Form::Json => "application/json",
            Form::Svg => "image/svg+xml",
            Form::Css => "text/css; charset=utf-8",
            Form::Js => "text/javascript; charset=utf-8",
        }
    }

    fn csp(self) -> &'static str {
        match self {
            Form::Html => {
                "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                 base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
            }
            _ => "default-src 'none'; frame-ancestors 'none'",
        }
    }
}

/// A body, its gzip form when worth it, and its validator.
pub struct Body {
    bytes: Bytes,
    gzip: Option<Bytes>,
    etag: HeaderValue,
}

impl Body {
    pub fn new(bytes: Vec<u8>) -> Body {
        let hash = Sha256::digest(&bytes);
        // Weak: the gzip and identity forms share it (RFC 9110, 8.8.3).
        let etag = format!("W/\"{}\"", hex::encode(&hash[..12]));
        let gzip = (bytes.len() >= COMPRESS_FROM).then(|| {
            let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            z.write_all(&bytes).expect("writing to memory");
            Bytes::from(z.finish().expect("writing to memory"))
        });
        Body {
            bytes: Bytes::from(bytes),
            gzip,
            etag: HeaderValue::from_str(&etag).expect("hex is a valid header"),
        }
    }

    /// Bytes before compression.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn json(v: &impl serde::Serialize) -> Body {
        Body::new(serde_json::to_vec(v).expect("status data serializes"))
    }
}

/// The answer for a cached pair, or `503` when it could not be rendered.
pub fn pair(
    r: Result<Arc<Pair>, StatusError>,
    form: Form,
    req: &HeaderMap,
    max_age: u64,
) -> Response {
    match r {
        Ok(p) => {
            let body = if form == Form::Json { &p.json } else { &p.main };
            let age = p.rendered.elapsed().as_secs();
            let mut r = send(body, form, req, max_age.saturating_sub(age));
            if let Ok(v) = HeaderValue::from_str(&age.to_string()) {
                r.headers_mut().insert(header::AGE, v);
            }
            r
        }
        Err(e) => {
            tracing::warn!(error = %e, "status page unavailable");
            let mut r = (
                StatusCode::SERVICE_UNAVAILABLE,
                "status data is unavailable right now; try again shortly\n",
            )
                .into_response();
            // Badges and JSON keep their cross-origin headers, so an
            // embedding page can see the 503.
            guard(r.headers_mut(), form);
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            r
        }
    }
}

/// `app.css` and `app.js`, built into the binary.
pub fn asset(form: Form, req: &HeaderMap) -> Response {
    static CSS: OnceLock<Body> = OnceLock::new();
    static JS: OnceLock<Body> = OnceLock::new();
    let body = match form {
        Form::Js => JS.get_or_init(|| Body::new(include_bytes!("assets/app.js").to_vec())),
        _ => CSS.get_or_init(|| Body::new(include_bytes!("assets/app.css").to_vec())),
    };
    send(body, form, req, 300)
}

/// `404` for any name that is not a listed site, and any other path.
pub fn not_found() -> Response {
    let mut r = (StatusCode::NOT_FOUND, "not found\n").into_response();
    guard(r.headers_mut(), Form::Css);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn send(body: &Body, form: Form, req: &HeaderMap, max_age: u64) -> Response {
    let matches = req
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*"
                || t.trim_start_matches("W/")
                    == body.etag.to_str().unwrap_or("").trim_start_matches("W/")
        });
    let gzip = body.gzip.as_ref().filter(|_| accepts_gzip(req));
    let mut r = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        match gzip {
            Some(z) => z.clone().into_response(),
            None => body.bytes.clone().into_response(),
        }
    };
    let h = r.headers_mut();
    guard(h, form);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(form.content_type()),
    );
    h.insert(header::ETAG, body.etag.clone());
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={max_age}")) {
        h.insert(header::CACHE_CONTROL, v);
    }
    if gzip.is_some() && !matches {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    r
}

/// True when the client lists gzip (or `*`) with a non-zero weight and
/// does not refuse gzip by name (RFC 9110, 12.5.3).
fn accepts_gzip(req: &HeaderMap) -> bool {
    let items: Vec<(String, bool)> = req
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or("").to_ascii_lowercase();
            let refused = parts.any(|p| {
                let p = p.to_ascii_lowercase();
                p.strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (coding, refused)
        })
        .collect();
    match items.iter().find(|(c, _)| c == "gzip") {
        Some((_, refused)) => !refused,
        None => items.iter().any(|(c, refused)| c == "*" && !refused),
    }
}

/// The headers every answer carries.
fn guard(h: &mut HeaderMap, form: Form) {
    let set = |h: &mut HeaderMap, k: header::HeaderName, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(h, header::CONTENT_SECURITY_POLICY, form.csp());
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::REFERRER_POLICY, "no-referrer");
    set(
        h,
        header::HeaderName::from_static("permissions-policy"),
        "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
    );
    match form {
        Form::Html | Form::Css | Form::Js => {
            set(h, header::X_FRAME_OPTIONS, "DENY");
            set(
                h,
                header::HeaderName::from_static("cross-origin-opener-policy"),
                "same-origin",
            );
            set(
                h,
                header::HeaderName::from_static("cross-origin-resource-policy"),
                "same-origin",
            );
        }
        Form::Json | Form::Svg => {
            set(
                h,
                header::HeaderName::from_static("cross-origin-resource-policy"),
                "cross-origin",
            );
            set(h, header::ACCESS_CONTROL_ALLOW_ORIGIN, "*");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn gzip_only_when_asked_for_and_not_refused() {
        assert!(accepts_gzip(&headers(&[("accept-encoding", "br, gzip")])));
        assert!(accepts_gzip(&headers(&[("accept-encoding", "gzip;q=0.5")])));
        assert!(!accepts_gzip(&headers(&[("accept-encoding", "gzip;q=0")])));
        assert!(!accepts_gzip(&headers(&[("accept-encoding", "br")])));
        assert!(!accepts_gzip(&headers(&[])));
        assert!(!accepts_gzip(&headers(&[("accept-encoding", "GZIP;Q=0")])));
        assert!(!accepts_gzip(&headers(&[(
            "accept-encoding",
            "gzip;q=0, *"
        )])));
        assert!(accepts_gzip(&headers(&[("accept-encoding", "*")])));
    }

    #[test]
    fn an_etag_that_matches_gets_304_and_the_headers() {
        let body = Body::new(vec![b'x'; 4000]);
        let etag = body.etag.to_str().unwrap().to_owned();
        let mut req = HeaderMap::new();
        req.insert(header::IF_NONE_MATCH, HeaderValue::from_str(&etag).unwrap());
        let r = send(&body, Form::Html, &req, 30);
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(r.headers()[header::CACHE_CONTROL], "public, max-age=30");
        assert!(r.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("script-src 'self'"));
        let r = send(
            &body,
            Form::Svg,
            &headers(&[("accept-encoding", "gzip")]),
            30,
        );
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_ENCODING], "gzip");
        assert_eq!(r.headers()["cross-origin-resource-policy"], "cross-origin");
    }
}
