//! An alert channel (one `[[alerts.channels]]` table) and reading it: the
//! destination kinds and their settings, the keys of
//! each kind, secrets given inline, as a file or as an environment
//! variable, and a problem naming `alerts.channels[i].key` for each
//! mistake, including a key that belongs to another kind.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use url::Url;

use super::problem::Problem;
use super::secret::Secret;

/// One named destination.
#[derive(Debug, Clone, PartialEq)]
pub struct Channel {
    /// Unique among channels; stored in `alert_outbox.channel`.
    pub name: String,
    pub target: Target,
}

/// A destination and the settings of its kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Email(Email),
    /// Slack incoming webhook.
    Slack {
        webhook_url: Secret,
    },
    /// Microsoft Teams "Workflows" webhook (Adaptive Card).
    Teams {
        webhook_url: Secret,
    },
    Discord {
        webhook_url: Secret,
    },
    /// PagerDuty Events API v2; `url` is the enqueue endpoint.
    PagerDuty {
        routing_key: Secret,
        url: Url,
        severity: String,
    },
    /// Opsgenie Alert API; `url` is the API base (EU: api.eu.opsgenie.com).
    Opsgenie {
        api_key: Secret,
        url: Url,
        priority: String,
    },
    /// Telegram Bot API; `url` is the API base.
    Telegram {
        bot_token: Secret,
        chat_id: serde_json::Value,
        url: Url,
    },
    /// ntfy; `url` is the server (publishing as JSON to its root).
    Ntfy {
        url: Url,
        topic: String,
        token: Option<Secret>,
        priority: u8,
    },
    /// A generic webhook: the JSON event, or `template` rendered. The URL
    /// is held as a secret: many carry a token.
    Webhook {
        url: Secret,
        secret: Option<Secret>,
        template: Option<String>,
        content_type: String,
    },
}

/// An SMTP destination.
#[derive(Debug, Clone, PartialEq)]
pub struct Email {
    pub smtp_host: String,
    pub smtp_port: u16,
    pub smtp_tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// RFC 5322 mailboxes, checked at load.
    pub from: String,
    pub to: Vec<String>,
    /// Extra trusted CA (PEM) for a server with a private certificate.
    pub tls_ca_file: Option<PathBuf>,
}

/// How the SMTP session is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// RFC 3207 STARTTLS, required (port 587 by default).
    Starttls,
    /// Implicit TLS, RFC 8314 (port 465 by default).
    Tls,
    /// None: loopback relays only (port 25 by default).
    None,
}

impl Channel {
    /// The kind as written in the config.
    pub fn kind(&self) -> &'static str {
        match &self.target {
            Target::Email(_) => "email",
            Target::Slack { .. } => "slack",
            Target::Teams { .. } => "teams",
            Target::Discord { .. } => "discord",
            Target::PagerDuty { .. } => "pagerduty",
            Target::Opsgenie { .. } => "opsgenie",
            Target::Telegram { .. } => "telegram",
            Target::Ntfy { .. } => "ntfy",
            Target::Webhook { .. } => "webhook",
        }
    }

    /// Every secret value of the channel, to be removed from any text it
    /// answers or fails with before that text is logged or stored.
    ///
    /// For a URL, also the parts that carry its credential, since a server
    /// may echo only its path: path segments of 12 characters or more
    /// (Slack, Discord and Teams tokens are longer; ids are shorter), query
    /// values of 8 or more, and a password.
    pub fn secrets(&self) -> Vec<String> {
        let (plain, urls): (Vec<&Secret>, Vec<&Secret>) = match &self.target {
            Target::Email(e) => (e.password.iter().collect(), vec![]),
            Target::Slack { webhook_url }
            | Target::Teams { webhook_url }
            | Target::Discord { webhook_url } => (vec![], vec![webhook_url]),
            Target::PagerDuty { routing_key, .. } => (vec![routing_key], vec![]),
            Target::Opsgenie { api_key, .. } => (vec![api_key], vec![]),
            Target::Telegram { bot_token, .. } => (vec![bot_token], vec![]),
            Target::Ntfy { token, .. } => (token.iter().collect(), vec![]),
            Target::Webhook { url, secret, .. } => (secret.iter().collect(), vec![url]),
        };
        let mut out: Vec<String> = plain.iter().map(|s| s.expose().to_owned()).collect();
        for u in urls {
            out.push(u.expose().to_owned());
            if let Ok(url) = Url::parse(u.expose()) {
                let segments = url.path_segments().into_iter().flatten();
                out.extend(segments.filter(|p| p.len() >= 12).map(str::to_owned));
                let values = url.query_pairs().map(|(_, v)| v.into_owned());
                out.extend(values.filter(|v| v.len() >= 8));
                out.extend(url.password().map(str::to_owned));
            }
        }
        out
    }
}

/// Keys every channel has.
const COMMON: [&str; 2] = ["name", "kind"];

/// The keys each kind takes besides [`COMMON`]; a secret key (see
/// [`secret_keys_of`]) `k` also stands for `k_file` and `k_env`.
fn keys_of(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "email" => &[
            "smtp_host",
            "smtp_port",
            "smtp_tls",
            "username",
            "password",
            "from",
            "to",
            "tls_ca_file",
        ],
        "slack" | "teams" | "discord" => &["webhook_url"],
        "pagerduty" => &["routing_key", "url", "severity"],
        "opsgenie" => &["api_key", "url", "priority"],
        "telegram" => &["bot_token", "chat_id", "url"],
        "ntfy" => &["url", "topic", "token", "priority"],
        "webhook" => &["url", "secret", "template", "content_type"],
        _ => return None,
    })
}

/// The keys of `kind` that hold secrets.
fn secret_keys_of(kind: &str) -> &'static [&'static str] {
    match kind {
        "email" => &["password"],
        "slack" | "teams" | "discord" => &["webhook_url"],
        "pagerduty" => &["routing_key"],
        "opsgenie" => &["api_key"],
        "telegram" => &["bot_token"],
        "ntfy" => &["token"],
        "webhook" => &["url", "secret"],
        _ => &[],
    }
}

const KINDS: &str = "email, slack, teams, discord, pagerduty, opsgenie, telegram, ntfy, webhook";

/// Reads one channel table, taking keys as it goes; what is left over is
/// a key the kind does not take.
pub(super) struct ChannelReader<'a> {
    pub table: toml::Table,
    pub at: String,
    pub file: &'a Path,
    pub env: &'a HashMap<String, String>,
    pub problems: &'a mut Vec<Problem>,
}

impl ChannelReader<'_> {
    pub fn bad(&mut self, key: &str, msg: impl Into<String>) {
        let field = format!("{}.{key}", self.at);
        self.problems.push(Problem::field(self.file, field, msg));
    }

    fn string(&mut self, key: &str) -> Option<String> {
        match self.table.remove(key)? {
            toml::Value::String(s) if !s.trim().is_empty() => Some(s),
            toml::Value::String(_) => {
                self.bad(key, "must not be empty");
                None
            }
            other => {
                self.bad(
                    key,
                    format!("expected a string, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn required(&mut self, key: &str) -> Option<String> {
        let before = self.problems.len();
        let v = self.string(key);
        if v.is_none() && self.problems.len() == before {
            self.bad(key, "required");
        }
        v
    }

    fn url(&mut self, key: &str, default: Option<&str>) -> Option<Url> {
        let text = match default {
            Some(d) => self.string(key).unwrap_or_else(|| d.to_owned()),
            None => self.required(key)?,
        };
        match Url::parse(&text) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Some(u),
            _ => {
                self.bad(key, format!("{text:?} is not an http(s) URL"));
                None
            }
        }
    }

    /// `key`, `key_file` or `key_env`: at most one of them.
    fn secret(&mut self, key: &str) -> Option<Secret> {
        let inline = self.string(key).map(Secret::new);
        let file = self.string(&format!("{key}_file")).map(PathBuf::from);
        let var = self.string(&format!("{key}_env"));
        let given = [inline.is_some(), file.is_some(), var.is_some()];
        if given.iter().filter(|g| **g).count() > 1 {
            self.bad(
                key,
                format!("set one of `{key}`, `{key}_file`, `{key}_env`"),
            );
            return None;
        }
        if let Some(path) = file {
            return match Secret::from_file(&path) {
                Ok(s) if s.expose().trim().is_empty() => {
                    self.bad(
                        &format!("{key}_file"),
                        format!("{} is empty", path.display()),
                    );
                    None
                }
                Ok(s) => Some(s),
                Err(e) => {
                    self.bad(&format!("{key}_file"), e);
                    None
                }
            };
        }
        if let Some(var) = var {
            return match self.env.get(&var) {
                Some(v) if !v.trim().is_empty() => Some(Secret::new(v.clone())),
                found => {
                    let what = if found.is_some() {
                        "is empty"
                    } else {
                        "is not set"
                    };
                    self.bad(
                        &format!("{key}_env"),
                        format!("the environment variable {var} {what}"),
                    );
                    None
                }
            };
        }
        inline
    }

    fn required_secret(&mut self, key: &str) -> Option<Secret> {
        let before = self.problems.len();
        let s = self.secret(key);
        if s.is_none() && self.problems.len() == before {
            self.bad(key, format!("required (or `{key}_file`, `{key}_env`)"));
        }
        s
    }

    /// `key` as an http(s) URL held as a secret (webhook URLs carry tokens).
    fn secret_url(&mut self, key: &str) -> Option<Secret> {
        let s = self.required_secret(key)?;
        match Url::parse(s.expose()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Some(s),
            // Not echoed: the value is a secret.
            _ => {
                self.bad(key, "is not an http(s) URL");
                None
            }
        }
    }

    pub fn channel(&mut self) -> Option<Channel> {
        let name = self.required("name");
        if let Some(n) = &name {
            let ok = n.len() <= 64
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !ok {
                self.bad("name", "at most 64 of a-z A-Z 0-9 - _ .");
            }
        }
        let kind = self.required("kind")?;
        let Some(keys) = keys_of(&kind) else {
            self.bad("kind", format!("unknown kind {kind:?} (kinds: {KINDS})"));
            return None;
        };
        let before = self.problems.len();
        let secrets = secret_keys_of(&kind);
        let unknown: Vec<String> = self
            .table
            .keys()
            .filter(|k| {
                let base = k.strip_suffix("_file").or(k.strip_suffix("_env"));
                !keys.contains(&k.as_str()) && !base.is_some_and(|b| secrets.contains(&b))
            })
            .cloned()
            .collect();
        for k in unknown {
            self.table.remove(&k);
            self.bad(
                &k,
                format!(
                    "not a key of kind {kind} (its keys: {}, {}; {} also as `<key>_file` or \
                     `<key>_env`)",
                    COMMON.join(", "),
                    keys.join(", "),
                    secrets.join(", ")
                ),
            );
        }
        let target = self.target(&kind);
        let name = name?;
        (self.problems.len() == before).then_some(Channel {
            name,
            target: target?,
        })
    }

    fn target(&mut self, kind: &str) -> Option<Target> {
        Some(match kind {
            "email" => Target::Email(self.email()?),
            "slack" => Target::Slack {
                webhook_url: self.secret_url("webhook_url")?,
            },
            "teams" => Target::Teams {
                webhook_url: self.secret_url("webhook_url")?,
            },
            "discord" => Target::Discord {
                webhook_url: self.secret_url("webhook_url")?,
            },
            "pagerduty" => {
                let routing_key = self.required_secret("routing_key");
                let url = self.url("url", Some("https://events.pagerduty.com/v2/enqueue"));
                let severity = self.string("severity").unwrap_or("critical".into());
                if !["critical", "error", "warning", "info"].contains(&severity.as_str()) {
                    self.bad("severity", "one of critical, error, warning, info");
                }
                Target::PagerDuty {
                    routing_key: routing_key?,
                    url: url?,
                    severity,
                }
            }
            "opsgenie" => {
                let api_key = self.required_secret("api_key");
                let url = self.url("url", Some("https://api.opsgenie.com"));
                let priority = self.string("priority").unwrap_or("P1".into());
                if !["P1", "P2", "P3", "P4", "P5"].contains(&priority.as_str()) {
                    self.bad("priority", "one of P1, P2, P3, P4, P5");
                }
                Target::Opsgenie {
                    api_key: api_key?,
                    url: url?,
                    priority,
                }
            }
            "telegram" => {
                let bot_token = self.required_secret("bot_token");
                let chat_id = match self.table.remove("chat_id") {
                    Some(toml::Value::Integer(i)) => Some(serde_json::json!(i)),
                    Some(toml::Value::String(s)) if !s.is_empty() => Some(serde_json::json!(s)),
                    _ => {
                        self.bad("chat_id", "required: a chat id (integer) or \"@channel\"");
                        None
                    }
                };
                let url = self.url("url", Some("https://api.telegram.org"));
                Target::Telegram {
                    bot_token: bot_token?,
                    chat_id: chat_id?,
                    url: url?,
                }
            }
            "ntfy" => {
                let url = self.url("url", Some("https://ntfy.sh"));
                let topic = self.required("topic");
                let token = self.secret("token");
                let names = ["min", "low", "default", "high", "urgent"];
                let priority = match self.string("priority") {
                    None => 5,
                    Some(p) => match names.iter().position(|n| *n == p) {
                        Some(i) => i as u8 + 1,
                        None => {
                            self.bad("priority", format!("one of {}", names.join(", ")));
                            5
                        }
                    },
                };
                Target::Ntfy {
                    url: url?,
                    topic: topic?,
                    token,
                    priority,
                }
            }
            "webhook" => {
                let url = self.secret_url("url");
                let secret = self.secret("secret");
                let template = self.string("template");
                if let Some(t) = &template {
                    if let Err(e) = minijinja::Environment::new().template_from_str(t) {
                        self.bad("template", format!("not a valid template: {e}"));
                    }
                }
                let content_type = self
                    .string("content_type")
                    .unwrap_or("application/json".into());
                Target::Webhook {
                    url: url?,
                    secret,
                    template,
                    content_type,
                }
            }
            _ => return None,
        })
    }

    fn email(&mut self) -> Option<Email> {
        let smtp_host = self.required("smtp_host");
        let smtp_tls = match self.string("smtp_tls").as_deref() {
            None | Some("starttls") => SmtpTls::Starttls,
            Some("tls") => SmtpTls::Tls,
            Some("none") => SmtpTls::None,
            Some(other) => {
                self.bad("smtp_tls", format!("{other:?}: one of starttls, tls, none"));
                SmtpTls::Starttls
            }
        };
        let smtp_port = match self.table.remove("smtp_port") {
            None => match smtp_tls {
                SmtpTls::Starttls => 587,
                SmtpTls::Tls => 465,
                SmtpTls::None => 25,
            },
            Some(toml::Value::Integer(p)) if (1..=65535).contains(&p) => p as u16,
            Some(_) => {
                self.bad("smtp_port", "a port number, 1 to 65535");
                0
            }
        };
        let username = self.string("username");
        let before = self.problems.len();
        let password = self.secret("password");
        if username.is_some() != password.is_some() && self.problems.len() == before {
            self.bad("password", "`username` and `password` go together");
        }
        let loopback = smtp_host
            .as_deref()
            .is_some_and(|h| matches!(h, "localhost" | "127.0.0.1" | "::1" | "[::1]"));
        if smtp_tls == SmtpTls::None && password.is_some() && !loopback {
            self.bad(
                "smtp_tls",
                "\"none\" would send the password in cleartext: use starttls or tls \
                 (none is for a relay on loopback)",
            );
        }
        let from = self.required("from");
        if let Some(f) = &from {
            if let Err(e) = f.parse::<lettre::message::Mailbox>() {
                self.bad("from", format!("{f:?} is not a mailbox: {e}"));
            }
        }
        let to = match self.table.remove("to") {
            Some(toml::Value::Array(items)) if !items.is_empty() => {
                let mut to = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match item
                        .as_str()
                        .map(|s| (s, s.parse::<lettre::message::Mailbox>()))
                    {
                        Some((s, Ok(_))) => to.push(s.to_owned()),
                        _ => self.bad(&format!("to[{i}]"), format!("{item} is not a mailbox")),
                    }
                }
                Some(to)
            }
            None | Some(toml::Value::Array(_)) => {
                self.bad("to", "required: a list of addresses");
                None
            }
            Some(_) => {
                self.bad(
                    "to",
                    "expected a list of addresses, e.g. [\"ops@example.com\"]",
                );
                None
            }
        };
        let tls_ca_file = self.string("tls_ca_file").map(PathBuf::from);
        if let Some(path) = &tls_ca_file {
            match std::fs::read(path) {
                // lettre's parser takes any text; a PEM certificate has this.
                Ok(pem)
                    if String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") => {}
                Ok(_) => self.bad(
                    "tls_ca_file",
                    format!("{} is not a PEM certificate", path.display()),
                ),
                Err(e) => self.bad(
                    "tls_ca_file",
                    format!("cannot read {}: {e}", path.display()),
                ),
            }
        }
        Some(Email {
            smtp_host: smtp_host?,
            smtp_port,
            smtp_tls,
            username,
            password,
            from: from?,
            to: to?,
            tls_ca_file,
        })
    }
}
