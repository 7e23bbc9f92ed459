//! The filter's promise, as a property: a secret the site sends, echoed by a
//! server in any of the encodings the filter claims to catch, inside any
//! text, never survives.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use proptest::prelude::*;

use super::*;

/// How a server may echo a value (written independently of the filter's
/// own list, where a library does it).
#[derive(Debug, Clone, Copy)]
enum Echo {
    AsSent,
    Upper,
    Lower,
    Percent,
    PercentLower,
    Form,
    Json,
    JsonSlashes,
    Html,
    Base64,
    /// Inside a longer base64 text, after this many other bytes.
    Base64Inside(usize),
    /// Python's `urllib.parse.quote` (keeps `/`), and `quote_plus`.
    PythonQuote,
    PythonQuotePlus,
    /// Go's html/template (`+` as `&#43;`, quotes as `&#34;`/`&#39;`).
    GoHtml,
    /// Handlebars (`=` as `&#x3D;`, `` ` `` as `&#x60;`, `'` as `&#x27;`).
    Handlebars,
    /// Go's encoding/json (`&`, `<`, `>` as `\u0026`, `\u003c`, `\u003e`).
    GoJson,
    /// JSON-escaped, then percent-encoded (a JSON document in a query).
    JsonThenPercent,
}

/// `text` with each listed character written as its entity.
fn escaped(text: &str, entities: &[(char, &str)]) -> String {
    text.chars()
        .map(|c| match entities.iter().find(|(from, _)| *from == c) {
            Some((_, to)) => (*to).to_owned(),
            None => c.to_string(),
        })
        .collect()
}

fn echo(secret: &str, how: Echo) -> String {
    match how {
        Echo::AsSent => secret.to_owned(),
        Echo::Upper => secret.to_uppercase(),
        Echo::Lower => secret.to_lowercase(),
        Echo::Percent => {
            percent_encoding::utf8_percent_encode(secret, NON_ALPHANUMERIC).to_string()
        }
        Echo::PercentLower => {
            let upper = percent_encoding::utf8_percent_encode(secret, NON_ALPHANUMERIC).to_string();
            // %2F as %2f, the rest unchanged.
            let mut out = String::new();
            let mut hex = 0;
            for c in upper.chars() {
                if c == '%' {
                    hex = 2;
                    out.push(c);
                } else if hex > 0 {
                    hex -= 1;
                    out.push(c.to_ascii_lowercase());
                } else {
                    out.push(c);
                }
            }
            out
        }
        Echo::Form => url::form_urlencoded::Serializer::new(String::new())
            .append_pair("x", secret)
            .finish()
            .trim_start_matches("x=")
            .to_owned(),
        Echo::Json => {
            let j = serde_json::to_string(secret).unwrap();
            j[1..j.len() - 1].to_owned()
        }
        Echo::JsonSlashes => {
            let j = serde_json::to_string(secret).unwrap();
            j[1..j.len() - 1].replace('/', "\\/")
        }
        Echo::Html => escaped(
            secret,
            &[
                ('&', "&amp;"),
                ('<', "&lt;"),
                ('>', "&gt;"),
                ('"', "&quot;"),
                ('\'', "&#39;"),
            ],
        ),
        Echo::Base64 => STANDARD.encode(secret),
        Echo::PythonQuote | Echo::PythonQuotePlus => {
            const KEEP: &percent_encoding::AsciiSet = &NON_ALPHANUMERIC
                .remove(b'-')
                .remove(b'.')
                .remove(b'_')
                .remove(b'~')
                .remove(b'/');
            let quoted = percent_encoding::utf8_percent_encode(secret, KEEP).to_string();
            if matches!(how, Echo::PythonQuotePlus) {
                quoted.replace("%20", "+")
            } else {
                quoted
            }
        }
        Echo::GoHtml => escaped(
            secret,
            &[
                ('&', "&amp;"),
                ('<', "&lt;"),
                ('>', "&gt;"),
                ('"', "&#34;"),
                ('\'', "&#39;"),
                ('+', "&#43;"),
            ],
        ),
        Echo::Handlebars => escaped(
            secret,
            &[
                ('&', "&amp;"),
                ('<', "&lt;"),
                ('>', "&gt;"),
                ('"', "&quot;"),
                ('\'', "&#x27;"),
                ('`', "&#x60;"),
                ('=', "&#x3D;"),
            ],
        ),
        Echo::GoJson => {
            let j = serde_json::to_string(secret).unwrap();
            j[1..j.len() - 1]
                .replace('&', "\\u0026")
                .replace('<', "\\u003c")
                .replace('>', "\\u003e")
        }
        Echo::JsonThenPercent => {
            let j = serde_json::to_string(secret).unwrap();
            percent_encoding::utf8_percent_encode(&j[1..j.len() - 1], NON_ALPHANUMERIC).to_string()
        }
        Echo::Base64Inside(before) => {
            let mut line = "x".repeat(before).into_bytes();
            line.extend_from_slice(b"Authorization: ");
            line.extend_from_slice(secret.as_bytes());
            line.extend_from_slice(b"\r\nAccept: */*");
            URL_SAFE_NO_PAD.encode(line)
        }
    }
}

fn any_echo() -> impl Strategy<Value = Echo> {
    prop_oneof![
        Just(Echo::AsSent),
        Just(Echo::Upper),
        Just(Echo::Lower),
        Just(Echo::Percent),
        Just(Echo::PercentLower),
        Just(Echo::Form),
        Just(Echo::Json),
        Just(Echo::JsonSlashes),
        Just(Echo::Html),
        Just(Echo::Base64),
        (0usize..7).prop_map(Echo::Base64Inside),
        Just(Echo::PythonQuote),
        Just(Echo::PythonQuotePlus),
        Just(Echo::GoHtml),
        Just(Echo::Handlebars),
        Just(Echo::GoJson),
        Just(Echo::JsonThenPercent),
    ]
}

/// Does any base64 run of `text`, decoded at any alignment, contain
/// `secret`?
fn base64_carries(text: &str, secret: &str) -> bool {
    let runs = text.split(|c: char| !(c.is_ascii_alphanumeric() || "+/-_".contains(c)));
    runs.into_iter().any(|run| {
        (0..4).any(|skip| {
            let run = &run[skip.min(run.len())..];
            let whole = &run[..run.len() / 4 * 4];
            let decoded = URL_SAFE_NO_PAD
                .decode(whole.trim_end_matches('='))
                .or_else(|_| STANDARD.decode(whole));
            decoded.is_ok_and(|d| {
                d.windows(secret.len().max(1))
                    .any(|w| w == secret.as_bytes())
            })
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn an_echoed_secret_never_survives(
        secret in "[ -~]{4,24}|[a-zA-Z0-9+/=]{8,24}|tok-[a-z0-9é€]{4,12}",
        how in any_echo(),
        before in "[ -~]{0,20}",
        after in "[ -~]{0,20}",
    ) {
        // Inside a longer base64 text, a secret is found from 8 bytes on
        // (shorter, it would match too much by chance; README).
        let how = match how {
            Echo::Base64Inside(_) if secret.len() < 8 => Echo::Base64,
            how => how,
        };
        let filter = Secrets::from_values([secret.clone()]);
        let echoed = echo(&secret, how);
        let text = format!("{before}{echoed}{after}");
        let shown = filter.redact(&text);
        prop_assert!(
            !shown.to_lowercase().contains(&echoed.to_lowercase()),
            "{how:?} of {secret:?} survived in {shown:?}"
        );
        if matches!(how, Echo::Base64 | Echo::Base64Inside(_)) {
            prop_assert!(!base64_carries(&shown, &secret), "{how:?}: {shown:?}");
        }
    }
}

fn request(url: &str, headers: &[(&str, &str)], body: Option<&str>) -> CheckRequest {
    let mut req: CheckRequest = serde_json::from_value(serde_json::json!({
        "v": 1, "check_id": uuid::Uuid::nil(), "site": "s", "origin": "scheduled",
        "scheduled_at": "2026-12-01T00:00:00Z", "deadline": "2026-12-01T00:01:00Z",
        "url": url, "timeout_ms": 1000
    }))
    .unwrap();
    req.headers = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if let Some(b) = body {
        req.options = Some(crate::model::CheckOptions {
            body: Some(b.to_owned()),
            ..Default::default()
        });
    }
    req
}

#[test]
fn every_kind_of_site_secret_is_found() {
    let basic = STANDARD.encode("alice:basic-pw-77");
    let req = request(
        "https://bob:url%2Fpass@api.example/v1?access_token=qt-123456&page=2",
        &[
            ("authorization", &format!("Basic {basic}")),
            ("cookie", "sid=ck-abcdef; lang=en; q=\"quoted-ck-1\""),
            ("x-api-key", "k-0123456789"),
            ("user-agent", "probe/1.0"),
        ],
        Some(r#"{"client_secret": "body-secret-1", "n": 3}"#),
    );
    let filter = Secrets::of(&req, &["user-agent"]);
    for secret in [
        "basic-pw-77",
        "alice:basic-pw-77",
        &basic,
        "ck-abcdef",
        "k-0123456789",
        "url/pass",
        "url%2Fpass",
        "qt-123456",
        "body-secret-1",
        "quoted-ck-1",
    ] {
        let text = format!("you sent {secret}!");
        assert_eq!(filter.redact(&text), "you sent [redacted]!", "{secret}");
    }
    // What the site may show stays: the safe header, the short cookie.
    assert_eq!(filter.redact("probe/1.0 lang=en"), "probe/1.0 lang=en");
}

#[test]
fn a_url_loses_its_credentials_and_keeps_the_rest() {
    assert_eq!(
        redacted_url("https://bob:pw@api.example/v1?api_key=xyz&page=2"),
        "https://api.example/v1?api_key=%5Bredacted%5D&page=2"
    );
    assert_eq!(
        redacted_url("https://api.example/v1?page=2"),
        "https://api.example/v1?page=2"
    );
    assert_eq!(
        redacted_url("tcp://db.example:5432"),
        "tcp://db.example:5432"
    );
    assert_eq!(redacted_url("not a url"), "not a url");
}

#[test]
fn the_whole_outcome_is_filtered() {
    let req = request(
        "https://u:hunter2-pw@s.example/?token=t-987654",
        &[("authorization", "Bearer s3cr3t-value")],
        None,
    );
    let filter = Secrets::of(&req, &[] as &[&str]);
    let mut out = CheckOutcome::of(&req, crate::model::Outcome::Down, "t");
    out.error_message =
        Some("more than 5 redirects (the last to \"/loop?t=s3cr3t%2Dvalue\")".into());
    out.failures = vec![crate::model::Failure {
        assertion: "regex".into(),
        expected: "x".into(),
        observed: "czNjcjN0LXZhbHVl".into(),
    }];
    out.answers = vec!["NOERROR".into(), "TXT hunter2-pw".into()];
    out.evidence = Some(crate::model::Evidence {
        status_line: "HTTP/1.1 500".into(),
        headers: vec![("x-echo".into(), "Bearer%20s3cr3t-value".into())],
        body: "token=T-987654".into(),
        body_truncated: false,
    });
    filter.scrub(&mut out);
    let text = serde_json::to_string(&out).unwrap().to_lowercase();
    for secret in ["s3cr3t", "czNjcjN0", "hunter2", "t-987654"] {
        assert!(!text.contains(&secret.to_lowercase()), "{secret} in {text}");
    }
    assert!(
        out.url.starts_with("https://s.example/?token="),
        "{}",
        out.url
    );
}

/// The forms review found shown (each server escapes only some characters).
#[test]
fn partial_escapes_of_real_servers_are_caught() {
    for (secret, shown) in [
        ("Zm9v+YmFy/YXJnaA==", "Zm9v%2BYmFy/YXJnaA%3D%3D"),
        ("Zm9v+YmFy/YXJnaA==", "Zm9v&#43;YmFy/YXJnaA=="),
        ("Zm9v+YmFy/YXJnaA==", "Zm9v+YmFy/YXJnaA&#x3D;&#x3D;"),
        ("hunter2&co<3", "\"hunter2\\u0026co\\u003c3\""),
        ("\\/=a-secret", "\\/&#x3D;a-secret"),
        ("hunter2&co<3", "q=%22hunter2%5Cu0026co%5Cu003c3%22"),
    ] {
        let filter = Secrets::from_values([secret.to_owned()]);
        let text = format!("echo: {shown} end");
        let out = filter.redact(&text);
        assert!(
            out.contains(REDACTED) && !out.contains(&secret[2..8]),
            "{secret:?} as {shown:?}: {out}"
        );
        assert!(out.starts_with("echo: ") && out.ends_with(" end"), "{out}");
    }
}

/// Found by review: failure messages cut what they quote (80 or 120
/// bytes); a secret across the cut must show no part on either side.
#[test]
fn an_excerpt_never_shows_part_of_a_secret() {
    let req = request(
        "https://s.example/",
        &[(
            "authorization",
            "Bearer eyJhbGciOiJIUzI1NiJ9SECRETSECRETSECRET",
        )],
        None,
    );
    let secrets = LazySecrets::of(&req, &[] as &[&str]);
    let token = "eyJhbGciOiJIUzI1NiJ9SECRETSECRETSECRET";
    for pad in [0, 30, 60, 79] {
        let body = format!("{}{token} tail", "p".repeat(pad));
        let shown = secrets.excerpt(body.as_bytes(), 0, 80);
        assert!(
            !shown.contains("eyJ") && !shown.contains("SECRET"),
            "{pad}: {shown}"
        );
        assert!(shown.contains(REDACTED) || pad >= 80, "{pad}: {shown}");
        // Starting inside the secret (a pattern that matched its tail).
        let inside = pad + 20;
        let shown = secrets.excerpt(body.as_bytes(), inside, 80);
        assert!(!shown.contains("SECRET"), "{pad}: {shown}");
    }
    // No secrets: the bytes as they are, cut.
    let plain = LazySecrets::none().excerpt(b"abcdef", 2, 3);
    assert_eq!(plain, "cde…");
}
