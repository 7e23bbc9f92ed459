//! `[admin]` and `[api]`: the two HTTP listeners, their connection limits
//! and the API's token, rate and on-demand policies.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::connections::ConnectionLimits;
use super::duration;
use super::problem::Problem;
use super::secret::Secret;
use super::MIN_TOKEN_CHARS;

/// The admin listener: `/healthz`, `/readyz`, `/metrics`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Loopback by default: health and metrics are for the local agent or
    /// the platform's probes, not the internet.
    #[serde(default = "default_admin_listen")]
    pub listen: std::net::SocketAddr,
    #[serde(default = "admin_connections")]
    pub connections: ConnectionLimits,
}

fn admin_connections() -> ConnectionLimits {
    ConnectionLimits::ADMIN
}

fn default_true() -> bool {
    true
}
fn default_admin_listen() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 9750))
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            enabled: true,
            listen: default_admin_listen(),
            connections: ConnectionLimits::ADMIN,
        }
    }
}

/// The public API: on-demand checks, results, sites.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "default_api_listen")]
    pub listen: std::net::SocketAddr,
    /// Bearer tokens; every request needs one of them.
    #[serde(default)]
    pub tokens: Vec<Secret>,
    /// A file with more tokens, one per line.
    pub tokens_file: Option<PathBuf>,
    /// On-demand checks of loopback, private, link-local and cloud-metadata
    /// addresses are refused unless this is set (server-side request forgery).
    #[serde(default)]
    pub allow_private_targets: bool,
    /// The longest `?wait=` a client may ask for.
    #[serde(default = "default_max_wait", deserialize_with = "duration::de")]
    pub max_wait: Duration,
    /// Requests per minute per token.
    #[serde(default = "default_rate")]
    pub requests_per_minute: u32,
    /// Requests in progress at once per token.
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// Largest request body accepted.
    #[serde(default = "default_api_body")]
    pub max_body_bytes: usize,
    #[serde(default)]
    pub connections: ConnectionLimits,
    /// WebSocket subscriptions (site names) one socket may hold.
    #[serde(default = "default_max_subscriptions")]
    pub max_subscriptions: usize,
    /// Methods an on-demand check may use (case-insensitive).
    #[serde(default = "default_allowed_methods")]
    pub allowed_methods: Vec<String>,
    /// Ports an on-demand check may reach: `"443"` or `"1024-65535"`.
    #[serde(default = "default_allowed_ports")]
    pub allowed_ports: Vec<super::on_demand::PortRange>,
    /// Ports refused even inside `allowed_ports`: by default the Fetch
    /// standard's "bad ports" above 1023 (https://fetch.spec.whatwg.org/#bad-port)
    /// and the default ports of common databases, caches, brokers and
    /// cluster APIs, whose protocols a POST body could speak to.
    #[serde(default = "default_denied_ports")]
    pub denied_ports: Vec<super::on_demand::PortRange>,
    /// Failed authentications one client address may make per minute before
    /// its requests get 429 without any token being compared; 0 turns the
    /// limit off (clients behind one NAT share it).
    #[serde(default = "default_failed_auth")]
    pub failed_auth_per_minute: u32,
}

fn default_failed_auth() -> u32 {
    10
}
fn default_denied_ports() -> Vec<super::on_demand::PortRange> {
    [
        // Fetch "bad ports" >= 1024.
        "1719-1720",
        "1723",
        "2049",
        "3659",
        "4045",
        "4190",
        "5060-5061",
        "6000",
        "6566",
        "6665-6669",
        "6679",
        "6697",
        "10080",
        // Databases, caches, brokers, cluster and container APIs.
        "1433-1434",
        "1521",
        "2375-2376",
        "2379-2380",
        "3306",
        "5432",
        "5672",
        "5984",
        "6379",
        "7000-7001",
        "9042",
        "9092",
        "9200",
        "9300",
        "11211",
        "27017-27019",
    ]
    .iter()
    .map(|p| super::on_demand::PortRange::try_from(p.to_string()).expect("valid default"))
    .collect()
}

fn default_allowed_methods() -> Vec<String> {
    ["GET", "HEAD", "POST"].map(String::from).to_vec()
}
fn default_allowed_ports() -> Vec<super::on_demand::PortRange> {
    ["80", "443", "1024-65535"]
        .iter()
        .map(|p| super::on_demand::PortRange::try_from(p.to_string()).expect("valid default"))
        .collect()
}

fn default_max_subscriptions() -> usize {
    1000
}

fn default_api_listen() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_max_wait() -> Duration {
    Duration::from_secs(30)
}
fn default_rate() -> u32 {
    120
}
fn default_in_flight() -> usize {
    16
}
fn default_api_body() -> usize {
    16 * 1024
}

impl Default for ApiSettings {
    fn default() -> Self {
        toml::from_str("").expect("empty api settings deserialize to defaults")
    }
}

/// `api.tokens` and the lines of `api.tokens_file`, with a [`Problem`] for
/// each token that would let the wrong caller in.
pub(super) fn api_tokens(
    api: &ApiSettings,
    path: &Path,
    problems: &mut Vec<Problem>,
) -> Vec<Secret> {
    let mut api_tokens = api.tokens.clone();
    if let Some(file) = &api.tokens_file {
        match std::fs::read_to_string(file) {
            Ok(text) => api_tokens.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(Secret::new),
            ),
            Err(e) => problems.push(Problem::field(
                path,
                "api.tokens_file",
                format!("cannot read {}: {e}", file.display()),
            )),
        }
    }

    // An empty token would match a request without credentials, and a short
    // one is guessable: refuse them wherever they came from (a trailing
    // comma in SITEWATCH__API__TOKENS, an empty string in the file's list).
    let short = api_tokens
        .iter()
        .filter(|t| {
            let n = t.expose().trim().chars().count();
            n > 0 && n < MIN_TOKEN_CHARS
        })
        .count();
    if short > 0 {
        problems.push(Problem::field(
            path,
            "api.tokens",
            format!(
                "{short} token(s) shorter than {MIN_TOKEN_CHARS} characters: use long random \
                 strings (e.g. `openssl rand -hex 32`)"
            ),
        ));
    }
    if api.enabled && api_tokens.is_empty() && api.tokens_file.is_some() {
        problems.push(Problem::field(
            path,
            "api.tokens_file",
            "no token in the file (blank lines and # comments only): the API would let nobody in"
                .to_owned(),
        ));
    }
    let empty = api_tokens
        .iter()
        .filter(|t| t.expose().trim().is_empty())
        .count();
    if empty > 0 {
        problems.push(Problem::field(
            path,
            "api.tokens",
            format!(
                "{empty} empty or blank token(s): every token must have characters \
                 (a trailing comma in SITEWATCH__API__TOKENS gives an empty one)"
            ),
        ));
    }
    api_tokens
}
