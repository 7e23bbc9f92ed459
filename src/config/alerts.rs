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
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::channels::ChannelReader;
pub use super::channels::{Channel, Email, SmtpTls, Target};
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
#[derive(Debug, Clone, Default, PartialEq)]
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
                        url: Secret::new(u.to_string()),
                        secret: None,
                        template: None,
                        content_type: "application/json".into(),
                    },
                    AlertFormat::Slack => Target::Slack {
                        webhook_url: Secret::new(url.clone()),
                    },
                },
            }),
            // Not echoed: a webhook URL carries its token.
            _ => problems.push(Problem::field(
                file,
                "alerts.webhook_url",
                "is not an http(s) URL",
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
                let shorthand = if c.name == "default" && raw.webhook_url.is_some() {
                    " (alerts.webhook_url defines the channel \"default\")"
                } else {
                    ""
                };
                r.bad(
                    "name",
                    format!("a second channel named {:?}{shorthand}", c.name),
                );
            } else {
                channels.push(c);
            }
        }
    }
    if raw.max_backoff < Duration::from_secs(1) {
        problems.push(Problem::field(
            file,
            "alerts.max_backoff",
            "must be at least 1s",
        ));
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

#[cfg(test)]
#[path = "alert_tests.rs"]
mod tests;
