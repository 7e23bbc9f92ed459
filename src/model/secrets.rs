//! The secret filter: one [`Secrets`] per check, built from everything the
//! site sends that may be a credential, and every text that leaves the
//! check passes through it (the outcome's URL, message, failures, evidence
//! and answers; so also the incident's cause, every alert, the API and
//! `sitewatch check`).
//!
//! A server echoes what it was sent in many forms: as sent, percent- or
//! form-encoded, base64 (at any byte offset inside a longer base64 text),
//! JSON- or HTML-escaped, upper- or lower-cased. Each secret is searched in
//! all of these at once (Aho-Corasick, ASCII case-insensitive), longest
//! match first. What it cannot catch (a secret hashed, encrypted, split,
//! or encoded twice in different ways) is listed in the README.

use std::borrow::Cow;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::{CheckOutcome, CheckRequest};

mod views;
use views::{Escapes, View};

/// What a secret is replaced with.
pub const REDACTED: &str = "[redacted]";
/// Shorter values are not searched for: replacing every "1" or "en" would
/// hide the evidence and protect nothing.
const MIN_SECRET_LEN: usize = 4;
/// A base64 text found inside a longer one is matched only from this many
/// characters on (shorter cores match too much by chance).
const MIN_BASE64_CORE: usize = 8;
/// RFC 3986's unreserved characters stay as they are; the rest is encoded.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The secrets of one check, compiled into one matcher.
pub struct Secrets {
    matcher: Option<AhoCorasick>,
    /// The longest form searched for: text cut for display is searched
    /// this far past the cut, so a secret across the cut is found whole.
    longest: usize,
}

impl Secrets {
    /// No secrets: texts pass unchanged.
    pub fn none() -> Secrets {
        Secrets {
            matcher: None,
            longest: 0,
        }
    }

    /// The secrets of `req`: its header values but `safe` ones (the
    /// `checker.cross_origin_headers`), each cookie's value, the
    /// credentials after an authentication scheme (and a Basic pair's
    /// password), the URL's user and password, query parameters named like
    /// credentials, and the request body or TCP payload with its form and
    /// JSON values.
    pub fn of<S: AsRef<str>>(req: &CheckRequest, safe: &[S]) -> Secrets {
        Secrets::from_values(values_of(req, safe))
    }

    /// A filter for `values` and every encoded form of each.
    pub fn from_values(values: impl IntoIterator<Item = String>) -> Secrets {
        let mut forms: Vec<String> = Vec::new();
        for v in values {
            if v.len() >= MIN_SECRET_LEN {
                forms.extend(encodings(&v));
            }
        }
        forms.retain(|f| f.len() >= MIN_SECRET_LEN);
        forms.sort();
        forms.dedup();
        if forms.is_empty() {
            return Secrets::none();
        }
        // An escaped form may be longer than any listed (`&#x3D;` for `=`).
        let longest = forms.iter().map(String::len).max().unwrap_or(0) * 6;
        let matcher = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostLongest)
            .build(&forms)
            .ok();
        Secrets { matcher, longest }
    }

    /// The length of the longest form searched for.
    pub fn longest(&self) -> usize {
        self.longest
    }

    /// `text` with every secret, in any form, replaced by [`REDACTED`]:
    /// found as it stands, and in up to two layers of escapes undone
    /// (`views`), so a server that escapes only some of its characters
    /// does not show it either.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let spans = self.spans(text);
        if spans.is_empty() {
            return text.into();
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (start, end) in spans {
            out.push_str(&text[at..start]);
            out.push_str(REDACTED);
            at = end;
        }
        out.push_str(&text[at..]);
        out.into()
    }

    /// `context[from..to]` (a part cut from a longer text for a message)
    /// with every secret found in the whole `context` redacted where it
    /// overlaps the part: a secret across the cut shows no prefix.
    pub fn window(&self, context: &str, from: usize, to: usize) -> String {
        let (from, to) = (floor_char(context, from), ceil_char(context, to));
        let mut out = String::new();
        let mut at = from;
        for (start, end) in self.spans(context) {
            if end <= at || start >= to {
                continue;
            }
            out.push_str(&context[at..start.max(at)]);
            out.push_str(REDACTED);
            at = end.min(to);
        }
        out.push_str(&context[at..to]);
        out
    }

    /// Where secrets are in `text`: sorted, merged byte ranges on
    /// character boundaries.
    fn spans(&self, text: &str) -> Vec<(usize, usize)> {
        let Some(m) = &self.matcher else {
            return Vec::new();
        };
        let mut spans: Vec<(usize, usize)> =
            m.find_iter(text).map(|x| (x.start(), x.end())).collect();
        if views::has_escapes(text) {
            let base = View::of(text);
            let mut found = |v: &View| {
                spans.extend(
                    m.find_iter(&v.bytes)
                        .map(|x| (v.from[x.start()].0, v.from[x.end() - 1].1)),
                );
            };
            for first in Escapes::LAYERS {
                let Some(one) = base.decoded(first) else {
                    continue;
                };
                found(&one);
                if let Some(two) = one.decoded(Escapes::SECOND) {
                    found(&two);
                }
            }
        }
        spans.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(spans.len());
        for (start, end) in spans {
            let (start, end) = (floor_char(text, start), ceil_char(text, end));
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        merged
    }

    fn redact_in_place(&self, text: &mut String) {
        if let Cow::Owned(clean) = self.redact(text) {
            *text = clean;
        }
    }

    /// Every text of `out` through the filter; its URL also loses its
    /// user information and credential query values ([`redacted_url`]).
    pub fn scrub(&self, out: &mut CheckOutcome) {
        out.url = redacted_url(&out.url);
        let mut texts: Vec<&mut String> = vec![&mut out.url];
        texts.extend(out.error_message.as_mut());
        for f in &mut out.failures {
            texts.extend([&mut f.assertion, &mut f.expected, &mut f.observed]);
        }
        if let Some(e) = &mut out.evidence {
            texts.extend([&mut e.status_line, &mut e.body]);
            for (name, value) in &mut e.headers {
                texts.extend([name, value]);
            }
        }
        texts.extend(out.answers.iter_mut());
        for t in texts {
            self.redact_in_place(t);
        }
    }
}

/// The secret values of `req` (see [`Secrets::of`]), before any is
/// compiled.
pub fn values_of<S: AsRef<str>>(req: &CheckRequest, safe: &[S]) -> Vec<String> {
    let mut values = Vec::new();
    for (name, value) in &req.headers {
        if safe.iter().any(|s| s.as_ref().eq_ignore_ascii_case(name)) {
            continue;
        }
        header_secrets(name, value, &mut values);
    }
    if let Ok(url) = url::Url::parse(&req.url) {
        url_secrets(&url, &mut values);
    }
    if let Some(o) = &req.options {
        for payload in [&o.body, &o.send].into_iter().flatten() {
            payload_secrets(payload, &mut values);
        }
    }
    values
}

/// A check's secrets, compiled when first needed (most checks pass and
/// need no filter); shared by the threads that judge and report it.
pub struct LazySecrets {
    values: Vec<String>,
    built: std::sync::OnceLock<Secrets>,
}

impl LazySecrets {
    pub fn of<S: AsRef<str>>(req: &CheckRequest, safe: &[S]) -> LazySecrets {
        LazySecrets {
            values: values_of(req, safe),
            built: std::sync::OnceLock::new(),
        }
    }

    /// No secrets at all.
    pub fn none() -> LazySecrets {
        LazySecrets {
            values: Vec::new(),
            built: std::sync::OnceLock::new(),
        }
    }

    pub fn get(&self) -> &Secrets {
        self.built
            .get_or_init(|| Secrets::from_values(self.values.iter().cloned()))
    }

    /// At most `max` bytes of `bytes` from `start`, as text, with the
    /// secrets redacted as seen in the text around it (so a secret that
    /// crosses either end of the excerpt shows no part); `…` when cut.
    pub fn excerpt(&self, bytes: &[u8], start: usize, max: usize) -> String {
        let start = start.min(bytes.len());
        let end = (start + max).min(bytes.len());
        let mut out = if self.values.is_empty() {
            String::from_utf8_lossy(&bytes[start..end]).into_owned()
        } else {
            let margin = self.get().longest();
            let lo = start.saturating_sub(margin);
            let hi = (end + margin).min(bytes.len());
            let before = String::from_utf8_lossy(&bytes[lo..start]);
            let part = String::from_utf8_lossy(&bytes[start..end]);
            let after = String::from_utf8_lossy(&bytes[end..hi]);
            let context = format!("{before}{part}{after}");
            self.get()
                .window(&context, before.len(), before.len() + part.len())
        };
        if end < bytes.len() {
            out.push('…');
        }
        out
    }
}

fn floor_char(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_char(text: &str, mut i: usize) -> usize {
    while i < text.len() && !text.is_char_boundary(i) {
        i += 1;
    }
    i.min(text.len())
}

/// Secrets of one configured request header.
fn header_secrets(name: &str, value: &str, out: &mut Vec<String>) {
    out.push(value.to_owned());
    if name.eq_ignore_ascii_case("cookie") {
        // RFC 6265 lets a value be quoted; a server may echo it without.
        out.extend(
            value
                .split(';')
                .filter_map(|pair| pair.split_once('=').map(|(_, v)| v.trim()))
                .flat_map(|v| [v.to_owned(), v.trim_matches('"').to_owned()]),
        );
    }
    // `Authorization: Bearer X` may come back as X alone; a Basic pair's
    // password may come back decoded.
    let scheme_credentials = value.trim().split_once(' ').filter(|(scheme, _)| {
        scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    if let Some((scheme, credentials)) = scheme_credentials {
        let credentials = credentials.trim();
        out.push(credentials.to_owned());
        if scheme.eq_ignore_ascii_case("basic") {
            if let Some(pair) = STANDARD
                .decode(credentials)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
            {
                if let Some((_, password)) = pair.split_once(':') {
                    out.push(password.to_owned());
                }
                out.push(pair);
            }
        }
    }
}

/// The URL's user and password, and the values of query parameters named
/// like credentials; each as written and percent-decoded.
fn url_secrets(url: &url::Url, out: &mut Vec<String>) {
    let mut push = |raw: &str| {
        out.push(raw.to_owned());
        if let Ok(decoded) = percent_encoding::percent_decode_str(raw).decode_utf8() {
            out.push(decoded.into_owned());
        }
    };
    if !url.username().is_empty() {
        push(url.username());
    }
    if let Some(p) = url.password() {
        push(p);
    }
    for (k, v) in url.query_pairs() {
        if secret_param(&k) {
            push(&v);
        }
    }
}

/// A request body or payload: itself, its form values, and its JSON
/// strings.
fn payload_secrets(payload: &str, out: &mut Vec<String>) {
    out.push(payload.to_owned());
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(payload) {
        json_strings(&v, out);
    } else if payload.contains('=') {
        out.extend(url::form_urlencoded::parse(payload.as_bytes()).map(|(_, v)| v.into_owned()));
    }
}

fn json_strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|v| json_strings(v, out)),
        serde_json::Value::Object(o) => o.values().for_each(|v| json_strings(v, out)),
        _ => {}
    }
}

/// A query parameter whose name says it carries a credential.
pub fn secret_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "token",
        "key",
        "secret",
        "pass",
        "pwd",
        "signature",
        "sig",
        "auth",
        "credential",
        "session",
    ]
    .iter()
    .any(|w| name.contains(w))
}

/// `url` without its user information and with the values of credential
/// query parameters ([`secret_param`]) replaced: what may be shown or
/// stored of a site's URL. Text that is not a URL comes back unchanged.
pub fn redacted_url(url: &str) -> String {
    let Ok(mut u) = url::Url::parse(url) else {
        return url.to_owned();
    };
    let mut changed = false;
    if !u.username().is_empty() || u.password().is_some() {
        let _ = u.set_username("");
        let _ = u.set_password(None);
        changed = true;
    }
    if u.query_pairs().any(|(k, _)| secret_param(&k)) {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let v = if secret_param(&k) {
                    REDACTED.to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
        changed = true;
    }
    if changed {
        u.to_string()
    } else {
        url.to_owned()
    }
}

/// `secret` in every form a server may echo it in.
fn encodings(secret: &str) -> Vec<String> {
    // Case-insensitive matching folds ASCII only; a server that changes
    // the case of other letters changes all of them.
    let mut out = vec![
        secret.to_owned(),
        secret.to_uppercase(),
        secret.to_lowercase(),
    ];
    let percent = utf8_percent_encode(secret, NON_ALPHANUMERIC).to_string();
    out.push(utf8_percent_encode(&percent, NON_ALPHANUMERIC).to_string());
    out.push(percent);
    out.push(utf8_percent_encode(secret, URI_COMPONENT).to_string());
    out.push(url::form_urlencoded::byte_serialize(secret.as_bytes()).collect());
    let json = serde_json::to_string(secret).unwrap_or_default();
    let json = json[1..json.len().saturating_sub(1).max(1)].to_owned();
    out.push(json.replace('/', "\\/"));
    out.push(json_ascii(&json));
    out.push(json);
    out.push(html(secret, "&#39;", "&quot;"));
    out.push(html(secret, "&#x27;", "&#34;"));
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        out.push(engine.encode(secret));
    }
    out.extend(base64_cores(secret.as_bytes()));
    out
}

/// JSON text with every non-ASCII character as `\uXXXX` (surrogate pairs
/// beyond the BMP), as many encoders write it.
fn json_ascii(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

fn html(text: &str, apostrophe: &str, quote: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', quote)
        .replace('\'', apostrophe)
}

/// The base64 characters that depend only on `bytes` when they sit at each
/// of the three offsets inside a longer encoded text (both alphabets):
/// a server that base64-encodes a whole header line or JSON document
/// carries the secret in one of these.
fn base64_cores(bytes: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    for offset in 0..3usize {
        let mut padded = vec![0u8; offset];
        padded.extend_from_slice(bytes);
        // Characters before this depend on the bytes before the secret.
        let skip = [0, 2, 3][offset];
        // Only whole groups of three bytes give characters that do not
        // depend on the bytes after it.
        let whole = padded.len() / 3 * 4;
        if whole < skip + MIN_BASE64_CORE {
            continue;
        }
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let text = engine.encode(&padded);
            out.push(text[skip..whole].to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests;
