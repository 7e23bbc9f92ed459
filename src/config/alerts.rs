//! Where incident notifications go: named channels (`[[alerts.channels]]`,
//! one per destination, each of a kind with its own keys), the channels a
//! site's alerts are routed to, and the retry policy shared by all.
//!
//! Channel tables are read key by key, so a key that belongs to another kind
//! (`chat_id` on a PagerDuty channel) is refused with the channel named,
//! not silently ignored. Secrets (webhook URLs, keys, tokens, passwords) are
//! given inline, as `<key>_file` (systemd credentials, mounted secrets) or
//! as `<key>_env` (the name of an environment variable: array entries cannot
//! be overridden by `SITEWATCH__…` variables), and are held as [`Secret`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::duration;
use super::problem::{Problem, SiteRef};
use super::secret::Secret;
use super::site::Site;

/// The `[alerts]` section as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlertSettings {
    /// Shorthand kept from before channels: a channel named `default` of
    /// kind `webhook` (or `slack` with `format = "slack"`).
    pub webhook_url: Option<String>,
    #[serde(default)]
    pub format: AlertFormat,
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub remind_every: Option<Duration>,
    #[serde(default = "default_alert_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_alert_timeout", deserialize_with = "duration::de")]
    pub timeout: Duration,
    #[serde(default = "default_max_backoff", deserialize_with = "duration::de")]
    pub max_backoff: Duration,
    pub default_channels: Option<Vec<String>>,
    #[serde(default)]
    pub channels: Vec<toml::Table>,
}

fn default_alert_attempts() -> u32 {
    12
}
fn default_alert_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(300)
}

impl Default for RawAlertSettings {
    fn default() -> Self {
        RawAlertSettings {
            webhook_url: None,
            format: AlertFormat::Json,
            remind_every: None,
            max_attempts: default_alert_attempts(),
            timeout: default_alert_timeout(),
            max_backoff: default_max_backoff(),
            default_channels: None,
            channels: Vec::new(),
        }
    }
}

/// The body of the `alerts.webhook_url` shorthand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertFormat {
    /// `{"event", "site", "incident": {...}}`.
    #[default]
    Json,
    /// `{"text": "..."}`, what Slack (and Mattermost, Rocket.Chat) take.
    Slack,
}

/// Where incident notifications go, and how hard to try.
#[derive(Debug, Clone, Default)]
pub struct AlertSettings {
    /// While an incident is open, a reminder this often (none when unset).
    pub remind_every: Option<Duration>,
    /// Attempts per notification and channel before giving up.
    pub max_attempts: u32,
    /// Per attempt (HTTP request or SMTP session).
    pub timeout: Duration,
    /// Longest wait between attempts (the wait doubles from 1 s).
    pub max_backoff: Duration,
    /// For sites that name no channels: `alerts.default_channels`, or every
    /// channel when that is unset.
    pub default_channels: Vec<String>,
    pub channels: Vec<Channel>,
}

impl AlertSettings {
    /// The channel called `name`.
    pub fn channel(&self, name: &str) -> Option<&Channel> {
        self.channels.iter().find(|c| c.name == name)
    }

    /// The channels a site's notifications go to.
    pub fn route<'a>(&'a self, site: Option<&'a Site>) -> &'a [String] {
        site.and_then(|s| s.alert_channels.as_deref())
            .unwrap_or(&self.default_channels)
    }
}

/// One named destination.
#[derive(Debug, Clone)]
pub struct Channel {
    /// Unique among channels; stored in `alert_outbox.channel`.
    pub name: String,
    pub target: Target,
}

/// A destination and the settings of its kind.
#[derive(Debug, Clone)]
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
    /// A generic webhook: the JSON event, or `template` rendered.
    Webhook {
        url: Url,
        secret: Option<Secret>,
        template: Option<String>,
        content_type: String,
    },
}

/// An SMTP destination.
#[derive(Debug, Clone)]
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
    pub fn secrets(&self) -> Vec<&str> {
        let s: Vec<Option<&Secret>> = match &self.target {
            Target::Email(e) => vec![e.password.as_ref()],
            Target::Slack { webhook_url }
            | Target::Teams { webhook_url }
            | Target::Discord { webhook_url } => vec![Some(webhook_url)],
            Target::PagerDuty { routing_key, .. } => vec![Some(routing_key)],
            Target::Opsgenie { api_key, .. } => vec![Some(api_key)],
            Target::Telegram { bot_token, .. } => vec![Some(bot_token)],
            Target::Ntfy { token, .. } => vec![token.as_ref()],
            Target::Webhook { secret, .. } => vec![secret.as_ref()],
        };
        s.into_iter().flatten().map(Secret::expose).collect()
    }
}

/// Keys every channel has.
const COMMON: [&str; 2] = ["name", "kind"];

/// The keys each kind takes besides [`COMMON`]; a secret key `k` also
/// stands for `k_file` and `k_env`.
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

const KINDS: &str = "email, slack, teams, discord, pagerduty, opsgenie, telegram, ntfy, webhook";

/// Builds the typed settings, adding a [`Problem`] (naming
/// `alerts.channels[i].key`) for each thing wrong.
pub fn build(
    raw: &RawAlertSettings,
    file: &Path,
    env: &HashMap<String, String>,
    problems: &mut Vec<Problem>,
) -> AlertSettings {
    let mut channels = Vec::new();
    if let Some(url) = &raw.webhook_url {
        match Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => channels.push(Channel {
                name: "default".into(),
                target: match raw.format {
                    AlertFormat::Json => Target::Webhook {
                        url: u,
                        secret: None,
                        template: None,
                        content_type: "application/json".into(),
                    },
                    AlertFormat::Slack => Target::Slack {
                        webhook_url: Secret::new(url.clone()),
                    },
                },
            }),
            _ => problems.push(Problem::field(
                file,
                "alerts.webhook_url",
                format!("{url:?} is not an http(s) URL"),
            )),
        }
    }
    for (i, table) in raw.channels.iter().enumerate() {
        let mut r = ChannelReader {
            table: table.clone(),
            at: format!("alerts.channels[{i}]"),
            file,
            env,
            problems,
        };
        if let Some(c) = r.channel() {
            if channels.iter().any(|o: &Channel| o.name == c.name) {
                r.bad("name", format!("a second channel named {:?}", c.name));
            } else {
                channels.push(c);
            }
        }
    }
    let default_channels = match &raw.default_channels {
        None => channels.iter().map(|c| c.name.clone()).collect(),
        Some(names) => {
            for n in names {
                if !channels.iter().any(|c| &c.name == n) {
                    problems.push(Problem::field(
                        file,
                        "alerts.default_channels",
                        unknown_channel(n, &channels),
                    ));
                }
            }
            names.clone()
        }
    };
    AlertSettings {
        remind_every: raw.remind_every,
        max_attempts: raw.max_attempts,
        timeout: raw.timeout,
        max_backoff: raw.max_backoff,
        default_channels,
        channels,
    }
}

/// A problem for each site (or `[site_defaults]`) naming a channel that
/// does not exist.
pub fn check_routes(alerts: &AlertSettings, sites: &[Site], problems: &mut Vec<Problem>) {
    for s in sites {
        for n in s.alert_channels.as_deref().unwrap_or_default() {
            if alerts.channel(n).is_none() {
                problems.push(Problem::site(
                    &s.source,
                    &SiteRef::Named(s.name.clone()),
                    Some("alert_channels"),
                    unknown_channel(n, &alerts.channels),
                ));
            }
        }
    }
}

/// "no channel named X (known: …)", for the config check and the CLI.
pub fn unknown_channel(name: &str, channels: &[Channel]) -> String {
    let known: Vec<&str> = channels.iter().map(|c| c.name.as_str()).collect();
    format!(
        "no channel named {name:?} in [[alerts.channels]] (known: {})",
        if known.is_empty() {
            "none".to_owned()
        } else {
            known.join(", ")
        }
    )
}

/// Reads one channel table, taking keys as it goes; what is left over is
/// a key the kind does not take.
struct ChannelReader<'a> {
    table: toml::Table,
    at: String,
    file: &'a Path,
    env: &'a HashMap<String, String>,
    problems: &'a mut Vec<Problem>,
}

impl ChannelReader<'_> {
    fn bad(&mut self, key: &str, msg: impl Into<String>) {
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
            self.bad(key, "required for this kind");
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
                Ok(s) => Some(s),
                Err(e) => {
                    self.bad(&format!("{key}_file"), e);
                    None
                }
            };
        }
        if let Some(var) = var {
            return match self.env.get(&var) {
                Some(v) if !v.is_empty() => Some(Secret::new(v.clone())),
                _ => {
                    self.bad(
                        &format!("{key}_env"),
                        format!("the environment variable {var} is not set"),
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

    fn channel(&mut self) -> Option<Channel> {
        let name = self.required("name");
        let kind = self.required("kind")?;
        let Some(keys) = keys_of(&kind) else {
            self.bad("kind", format!("unknown kind {kind:?} (kinds: {KINDS})"));
            return None;
        };
        let before = self.problems.len();
        let unknown: Vec<String> = self
            .table
            .keys()
            .filter(|k| {
                let base = k.strip_suffix("_file").or(k.strip_suffix("_env"));
                !keys.contains(&k.as_str()) && !base.is_some_and(|b| keys.contains(&b))
            })
            .cloned()
            .collect();
        for k in unknown {
            self.table.remove(&k);
            self.bad(
                &k,
                format!(
                    "not a key of kind {kind} (its keys: {}, {})",
                    COMMON.join(", "),
                    keys.join(", ")
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
                let url = self.url("url", None);
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
            _ => {
                self.bad("to", "required: a list of addresses");
                None
            }
        };
        let tls_ca_file = self.string("tls_ca_file").map(PathBuf::from);
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

#[cfg(test)]
#[path = "alert_tests.rs"]
mod tests;
