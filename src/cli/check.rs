//! `sitewatch check URL | --site NAME`: one check now, printed with its
//! timing breakdown and certificate; no Kafka, no Postgres.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{load, DEFAULT_CONFIG, EXIT_CONFIG};
use crate::checker::HttpChecker;
use crate::config;
use crate::model::{Origin, Outcome};

#[derive(clap::Args)]
pub struct CheckArgs {
    /// The URL to check (or use --site).
    #[arg(required_unless_present = "site")]
    url: Option<String>,
    /// Check this site of the config file instead, with all its assertions.
    #[arg(long, conflicts_with = "url")]
    site: Option<String>,
    /// The config file for --site (default /etc/sitewatch/sitewatch.toml
    /// then; also for checker settings such as ca_files and max_body_bytes).
    #[arg(long = "config", env = "SITEWATCH_CONFIG")]
    config: Option<PathBuf>,
    /// Regex the body must match.
    #[arg(long)]
    regex: Option<String>,
    /// Regex the body must not match.
    #[arg(long)]
    forbidden_regex: Option<String>,
    #[arg(long, default_value = "10s")]
    timeout: String,
    #[arg(long)]
    method: Option<String>,
    /// Request header `Name: value` (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Request body.
    #[arg(long)]
    body: Option<String>,
    /// Healthy status codes, e.g. "200-399" or "200,301-302".
    #[arg(long)]
    expect_status: Option<String>,
    /// Response header assertion: `name` (present), `name=REGEX` (present
    /// and matching) or `!name` (absent). Repeatable.
    #[arg(long = "expect-header")]
    expect_headers: Vec<String>,
    /// JSON assertion on the body: `PATH OP VALUE`, OP one of `==`, `!=`,
    /// `>=`, `<=`, `>`, `<` (VALUE as JSON: "ok" in quotes, 2, true) or
    /// `=~` (a regex); `PATH` alone: present; `!PATH`: absent. PATH is an
    /// RFC 9535 JSONPath, optionally ending in `.length()`. Repeatable.
    #[arg(long = "expect-json")]
    expect_json: Vec<String>,
    /// A correct response slower than this is degraded, e.g. "500ms".
    #[arg(long)]
    degraded_after: Option<String>,
    #[arg(long)]
    body_min_bytes: Option<u64>,
    #[arg(long)]
    body_max_bytes: Option<u64>,
    /// Fail when the certificate has fewer days left.
    #[arg(long)]
    min_cert_days: Option<u32>,
    /// Judge a redirect as the response instead of following it.
    #[arg(long)]
    no_follow: bool,
    #[arg(long)]
    max_redirects: Option<u32>,
    /// Accept any certificate (its expiry is still shown).
    #[arg(long)]
    insecure: bool,
    /// any, prefer_ipv4, prefer_ipv6, ipv4 or ipv6.
    #[arg(long)]
    ip_family: Option<String>,
    /// Body bytes read (and matched) at most; default as checker.max_body_bytes.
    #[arg(long)]
    max_body_bytes: Option<u64>,
    /// tcp://: bytes to write once connected.
    #[arg(long)]
    send: Option<String>,
    /// tcp://: a regex what the server sends must match.
    #[arg(long)]
    expect: Option<String>,
    /// tls://: speak smtp or imap up to STARTTLS before the handshake.
    #[arg(long)]
    starttls: Option<String>,
    /// tls://: the name to send as SNI and verify, if not the url's host.
    #[arg(long)]
    server_name: Option<String>,
    /// dns://: an answer that must be among those returned (repeatable).
    #[arg(long = "expect-answer")]
    expect_answer: Vec<String>,
    /// dns://: the response code expected (default NOERROR).
    #[arg(long)]
    expect_rcode: Option<String>,
    /// Print the outcome as JSON (the message the checker publishes).
    #[arg(long)]
    json: bool,
}

impl CheckArgs {
    /// The check as an on-demand request body, validated by the same rules
    /// as the API and the config file.
    fn as_request(&self) -> Result<serde_json::Value, String> {
        let mut body = serde_json::json!({ "url": self.url, "timeout": self.timeout });
        let mut set = |key: &str, value: serde_json::Value| {
            if !value.is_null() {
                body[key] = value;
            }
        };
        set("regex", self.regex.clone().into());
        set("forbidden_regex", self.forbidden_regex.clone().into());
        set("method", self.method.clone().into());
        set("body", self.body.clone().into());
        set("send", self.send.as_deref().map(unescape).into());
        set("expect", self.expect.clone().into());
        set("expect_rcode", self.expect_rcode.clone().into());
        set("starttls", self.starttls.clone().into());
        set("server_name", self.server_name.clone().into());
        if !self.expect_answer.is_empty() {
            set("expect_answer", self.expect_answer.clone().into());
        }
        set("expect_status", self.expect_status.clone().into());
        set("degraded_after", self.degraded_after.clone().into());
        set("body_min_bytes", self.body_min_bytes.into());
        set("body_max_bytes", self.body_max_bytes.into());
        set("min_cert_days", self.min_cert_days.into());
        set("max_redirects", self.max_redirects.into());
        set("ip_family", self.ip_family.clone().into());
        if self.no_follow {
            set("follow_redirects", false.into());
        }
        if self.insecure {
            set("verify_tls", false.into());
        }
        if !self.headers.is_empty() {
            let mut map = serde_json::Map::new();
            for h in &self.headers {
                let (k, v) = h.split_once(':').unwrap_or((h, ""));
                map.insert(k.trim().to_owned(), v.trim().into());
            }
            set("headers", map.into());
        }
        if !self.expect_headers.is_empty() {
            let rules: Vec<serde_json::Value> = self
                .expect_headers
                .iter()
                .map(|h| match (h.strip_prefix('!'), h.split_once('=')) {
                    (Some(name), _) => serde_json::json!({"name": name, "absent": true}),
                    (None, Some((name, re))) => serde_json::json!({"name": name, "matches": re}),
                    (None, None) => serde_json::json!({"name": h}),
                })
                .collect();
            set("expect_headers", rules.into());
        }
        if !self.expect_json.is_empty() {
            let rules = self
                .expect_json
                .iter()
                .map(|e| expect_json(e))
                .collect::<Result<Vec<_>, _>>()?;
            set("json", rules.into());
        }
        Ok(body)
    }
}

/// `--send` text with the escapes a config's TOML string would take:
/// `\r`, `\n`, `\t`, `\\`, `\0` and `\xNN` (an ASCII byte).
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('0') => out.push('\0'),
            Some('\\') => out.push('\\'),
            Some('x') => {
                let hex: String = chars.by_ref().take(2).collect();
                match u8::from_str_radix(&hex, 16) {
                    Ok(b) if b.is_ascii() => out.push(b as char),
                    _ => {
                        out.push_str("\\x");
                        out.push_str(&hex);
                    }
                }
            }
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// One `--expect-json` as a `json` entry of the config.
fn expect_json(text: &str) -> Result<serde_json::Value, String> {
    let text = text.trim();
    if let Some(path) = text.strip_prefix('!') {
        return Ok(serde_json::json!({ "path": path.trim(), "absent": true }));
    }
    // The first operator outside brackets and quotes: a filter
    // (`[?@ > 1]`) holds operators of its own, and a value may too.
    let ops = [
        (" == ", "equals"),
        (" != ", "not_equals"),
        (" >= ", "at_least"),
        (" <= ", "at_most"),
        (" > ", "greater_than"),
        (" < ", "less_than"),
        (" =~ ", "matches"),
    ];
    let (mut depth, mut quote) = (0usize, None::<char>);
    let mut found = None;
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '[' | '(') => depth += 1,
            (None, ']' | ')') => depth = depth.saturating_sub(1),
            (None, ' ') if depth == 0 => {
                if let Some((op, key)) = ops.iter().find(|(op, _)| text[i..].starts_with(op)) {
                    found = Some((i, *op, *key));
                    break;
                }
            }
            _ => {}
        }
    }
    let Some((at, op, key)) = found else {
        return Ok(serde_json::json!({ "path": text, "present": true }));
    };
    let (path, raw) = (text[..at].trim(), text[at + op.len()..].trim());
    if key == "matches" {
        // A regex as written, quotes and all.
        return Ok(serde_json::json!({ "path": path, key: raw }));
    }
    let value = match serde_json::from_str::<serde_json::Value>(raw) {
        Ok(serde_json::Value::Null) => {
            return Err(format!(
                "--expect-json {text:?}: null cannot be compared (the config's TOML has no \
                 null); assert the value `absent`, or match its JSON text with =~ ^null$"
            ))
        }
        Ok(v) => v,
        Err(_) => {
            return Err(format!(
                "--expect-json {text:?}: the value after `{}` must be JSON (a string in \
                 quotes: \"ok\")",
                op.trim()
            ))
        }
    };
    Ok(serde_json::json!({ "path": path, key: value }))
}

/// `sitewatch check`: the same check the daemon runs, printed.
pub async fn check(a: CheckArgs) -> ExitCode {
    // A site comes from a config file: the one given, or the default the
    // other commands read. A bare URL needs none.
    let config = a
        .config
        .clone()
        .or_else(|| a.site.as_ref().map(|_| PathBuf::from(DEFAULT_CONFIG)));
    let settings = match &config {
        Some(path) => match load(path) {
            Ok(s) => Some(s),
            Err(code) => return code,
        },
        None => None,
    };
    let mut checker_settings = settings
        .as_ref()
        .map(|s| s.checker.clone())
        .unwrap_or_default();
    if let Some(n) = a.max_body_bytes {
        checker_settings.max_body_bytes = n;
    }
    let site = match (&a.site, &settings) {
        (Some(name), Some(s)) => match s.sites.iter().find(|site| &site.name == name) {
            Some(site) => site.clone(),
            None => {
                complain!("error: no site named {name:?} in the config");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        (Some(_), None) => {
            complain!("error: --site needs --config (or SITEWATCH_CONFIG)");
            return ExitCode::from(EXIT_CONFIG);
        }
        (None, _) => {
            let defaults = settings
                .as_ref()
                .map(|s| s.site_defaults.clone())
                .unwrap_or_default();
            let request = match a.as_request() {
                Ok(r) => r,
                Err(e) => {
                    complain!("error: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            match config::parse_on_demand(&request, &defaults) {
                Ok(site) => site,
                Err(errors) => {
                    for e in errors {
                        complain!("error: {}: {}", e.field, e.message);
                    }
                    return ExitCode::from(EXIT_CONFIG);
                }
            }
        }
    };
    let http = match HttpChecker::new(&checker_settings, &crate::instance::instance_name()) {
        Ok(h) => h,
        Err(e) => {
            complain!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut req = site.request(uuid::Uuid::new_v4(), chrono::Utc::now());
    req.origin = Origin::OnDemand;
    let out = http.check(&req).await;
    if a.json {
        say!("{}", String::from_utf8_lossy(&crate::model::encode(&out)));
    } else {
        say_raw!("{}", crate::checker::report(&out));
    }
    match out.outcome {
        Outcome::Up | Outcome::Degraded => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::expect_json;
    use serde_json::json;

    #[test]
    fn expect_json_reads_the_first_operator_outside_brackets_and_quotes() {
        assert_eq!(
            expect_json(r#"$.status == "ok""#).unwrap(),
            json!({"path": "$.status", "equals": "ok"})
        );
        assert_eq!(
            expect_json("$.items.length() >= 1").unwrap(),
            json!({"path": "$.items.length()", "at_least": 1})
        );
        // The filter's own `>` stays in the path; a bare filter is `present`;
        // an operator inside the value is the value's.
        assert_eq!(
            expect_json("$.items[?@.n > 1].n < 10").unwrap(),
            json!({"path": "$.items[?@.n > 1].n", "less_than": 10})
        );
        assert_eq!(
            expect_json("$.items[?@ > 1]").unwrap(),
            json!({"path": "$.items[?@ > 1]", "present": true})
        );
        assert_eq!(
            expect_json(r#"$.msg == "a > b""#).unwrap(),
            json!({"path": "$.msg", "equals": "a > b"})
        );
        assert_eq!(
            expect_json("$.version =~ [0-9]+ < 5").unwrap(),
            json!({"path": "$.version", "matches": "[0-9]+ < 5"})
        );
        assert_eq!(
            expect_json("$.version =~ 2").unwrap(),
            json!({"path": "$.version", "matches": "2"})
        );
        assert!(expect_json("$.k == null").unwrap_err().contains("null"));
        assert_eq!(
            expect_json(r"$.version =~ ^2\.").unwrap(),
            json!({"path": "$.version", "matches": r"^2\."})
        );
        assert_eq!(
            expect_json("$.error").unwrap(),
            json!({"path": "$.error", "present": true})
        );
        assert_eq!(
            expect_json("!$.error").unwrap(),
            json!({"path": "$.error", "absent": true})
        );
        let e = expect_json("$.status == ok").unwrap_err();
        assert!(e.contains("must be JSON"), "{e}");
    }

    #[test]
    fn send_takes_the_escapes_a_toml_string_would() {
        use super::unescape;
        assert_eq!(unescape(r"PING\r\n"), "PING\r\n");
        assert_eq!(unescape(r"a\tb\\c\x41\0"), "a\tb\\cA\0");
        assert_eq!(unescape(r"odd\q and \xZZ"), r"odd\q and \xZZ");
    }
}
