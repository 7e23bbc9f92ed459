//! The daemon's own settings (everything but the sites), as serde structs with
//! defaults and `deny_unknown_fields`, plus the checks serde cannot express.
//! Every key can be overridden from the environment (`SITEWATCH__KAFKA__BROKERS`).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::duration;
use super::kafka::KafkaSettings;
use super::listeners::{AdminSettings, ApiSettings};
use super::secret::Secret;

/// The smallest interval a site may have, whatever `scheduler.min_interval`
/// says: below it, scheduling jitter is a large part of the interval.
pub const MIN_INTERVAL_FLOOR: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSettings {
    /// Globs (relative to the main file's directory) of extra site files.
    #[serde(default)]
    pub sites_files: Vec<String>,
    #[serde(default)]
    pub postgres: PostgresSettings,
    #[serde(default)]
    pub kafka: KafkaSettings,
    #[serde(default)]
    pub scheduler: SchedulerSettings,
    #[serde(default)]
    pub checker: CheckerSettings,
    #[serde(default)]
    pub persister: PersisterSettings,
    #[serde(default)]
    pub retention: RetentionSettings,
    #[serde(default)]
    pub incidents: IncidentSettings,
    #[serde(default)]
    pub alerts: super::alerts::RawAlertSettings,
    #[serde(default)]
    pub log: LogSettings,
    #[serde(default)]
    pub site_defaults: SiteDefaults,
    #[serde(default)]
    pub admin: AdminSettings,
    #[serde(default)]
    pub api: ApiSettings,
    #[serde(default)]
    pub status_page: super::status_page::RawStatusPage,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSettings {
    /// libpq-style URL or key=value string. A password may be left out of it
    /// and given as `password` / `password_file` instead.
    #[serde(default = "default_pg_url")]
    pub url: String,
    pub password: Option<Secret>,
    pub password_file: Option<PathBuf>,
    /// Connections in the pool shared by the persisters and the site sync.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    #[serde(default = "default_connect_timeout", deserialize_with = "duration::de")]
    pub connect_timeout: Duration,
    /// CA certificate(s) (PEM) that signed the server's certificate, for
    /// `sslmode=require` in the URL (managed Postgres). The server's
    /// certificate and host name are verified against it; without it, the
    /// system's trusted roots are used.
    pub ca_path: Option<PathBuf>,
}

fn default_pg_url() -> String {
    "postgres://sitewatch@127.0.0.1:55432/sitewatch".into()
}
fn default_pool_size() -> usize {
    8
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

impl Default for PostgresSettings {
    fn default() -> Self {
        PostgresSettings {
            url: default_pg_url(),
            password: None,
            password_file: None,
            pool_size: default_pool_size(),
            connect_timeout: default_connect_timeout(),
            ca_path: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerSettings {
    /// Sites with a shorter interval are rejected.
    #[serde(default = "default_min_interval", deserialize_with = "duration::de")]
    pub min_interval: Duration,
    /// After a restart, at most this many missed slots per site are recorded
    /// one row each (`skipped` / `missed_slot`), the first ones after its
    /// saved progress; later ones in the same gap are recorded as one
    /// `schedule_gaps` row, so a long outage cannot turn into millions of
    /// placeholder rows. Times `min_interval` (at least 5 minutes), how far
    /// a site may run past its saved progress before it is held.
    #[serde(default = "default_backfill_limit")]
    pub backfill_limit: u32,
    /// How scheduler instances share the sites: `postgres` (leases on
    /// shards of the site list, so any number of instances can run the
    /// scheduler role) or `none` (this is the only scheduler: it schedules
    /// every site and keeps going while Postgres is down).
    #[serde(default)]
    pub coordination: Coordination,
    /// Shards of the site list, leased to scheduler instances. More shards
    /// than instances spread the work evenly; every instance must agree.
    #[serde(default = "default_shards")]
    pub shards: i32,
    /// A scheduler instance that has not renewed its leases for this long
    /// loses them to the others: the failover time. Leases are renewed every
    /// third of it.
    #[serde(
        default = "default_failover_timeout",
        deserialize_with = "duration::de"
    )]
    pub failover_timeout: Duration,
    /// Past the checkers' or the persisters' capacity (a message would wait
    /// in Kafka longer than half the shortest interval plus a second),
    /// check a share of the sites each minute and record the others' slots
    /// as shed runs, at most one per site and minute while the share holds
    /// (`schedule_gaps`, reason `load_shed`): both stages then work at capacity on requests that are
    /// still worth checking. Measured from the checker group's backlog on
    /// `status_request_created` and the persister groups' on the outcome
    /// topics (see `bus::lag`); the rule is in `scheduler::shed`.
    #[serde(default = "default_true")]
    pub load_shedding: bool,
}

fn default_true() -> bool {
    true
}
fn default_min_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_backfill_limit() -> u32 {
    10_000
}
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Coordination {
    #[default]
    Postgres,
    None,
}

fn default_shards() -> i32 {
    32
}
fn default_failover_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        SchedulerSettings {
            min_interval: default_min_interval(),
            backfill_limit: default_backfill_limit(),
            coordination: Coordination::default(),
            shards: default_shards(),
            failover_timeout: default_failover_timeout(),
            load_shedding: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckerSettings {
    /// Checks running at once in one checker.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Checks of one host running at once in one checker (as many more may
    /// wait; beyond that a check is skipped as `host_busy`).
    #[serde(default = "default_max_per_host")]
    pub max_per_host: usize,
    /// Bytes of body read per check; the regex sees at most this much.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: u64,
    #[serde(default = "default_max_redirects")]
    pub max_redirects: usize,
    #[serde(default = "default_user_agent")]
    pub user_agent: String,
    /// PEM files of CAs trusted besides the public roots (sites behind a
    /// private CA).
    #[serde(default)]
    pub ca_files: Vec<PathBuf>,
    /// The site headers still sent after a redirect to another host or
    /// port. Every other configured header (`Authorization`, `Cookie`,
    /// `X-Api-Key`, any custom one) counts as a secret of the site's own
    /// origin and is dropped, as browsers and curl drop credentials.
    #[serde(default = "default_cross_origin_headers")]
    pub cross_origin_headers: Vec<String>,
    /// DNS servers the checker asks, `IP` or `IP:port` each (port 53 when
    /// left out). Empty (the default): the servers, search domains and
    /// options of `/etc/resolv.conf`. `/etc/hosts` is read either way.
    #[serde(default)]
    pub dns_servers: Vec<String>,
    /// Keep DNS answers for their TTL. Off by default: each check resolves
    /// afresh, so a DNS fault shows when it happens.
    #[serde(default)]
    pub dns_cache: bool,
    /// Body bytes kept as evidence of a failed check (with its status line
    /// and redacted headers); 0 keeps no body.
    #[serde(default = "default_evidence_bytes")]
    pub evidence_bytes: usize,
}

/// Parses one `checker.dns_servers` entry: `IP`, `IP:port` or
/// `[IPv6]:port`; port 53 (RFC 1035 section 4.2) when none is given.
pub fn parse_dns_server(text: &str) -> Option<std::net::SocketAddr> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<std::net::SocketAddr>() {
        return (addr.port() != 0).then_some(addr);
    }
    // Brackets only around an IPv6 address; an IPv6 address with a port
    // needs them (`::1:53` is the address ::1:53).
    let ip: std::net::IpAddr = match text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        Some(inner) => inner.parse::<std::net::Ipv6Addr>().ok()?.into(),
        None => text.parse().ok()?,
    };
    Some(std::net::SocketAddr::new(ip, 53))
}

fn default_evidence_bytes() -> usize {
    4096
}

fn default_cross_origin_headers() -> Vec<String> {
    [
        "user-agent",
        "accept",
        "accept-language",
        "cache-control",
        "pragma",
    ]
    .map(String::from)
    .to_vec()
}

fn default_concurrency() -> usize {
    256
}
fn default_max_per_host() -> usize {
    32
}
fn default_max_body() -> u64 {
    1024 * 1024
}
fn default_max_redirects() -> usize {
    5
}
fn default_user_agent() -> String {
    concat!("sitewatch/", env!("CARGO_PKG_VERSION")).into()
}

impl Default for CheckerSettings {
    fn default() -> Self {
        CheckerSettings {
            concurrency: default_concurrency(),
            max_per_host: default_max_per_host(),
            max_body_bytes: default_max_body(),
            max_redirects: default_max_redirects(),
            user_agent: default_user_agent(),
            ca_files: Vec::new(),
            cross_origin_headers: default_cross_origin_headers(),
            dns_servers: Vec::new(),
            dns_cache: false,
            evidence_bytes: default_evidence_bytes(),
        }
    }
}

/// Turning results into incidents.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentSettings {
    /// Results are evaluated once their slot is this old, so that both
    /// result topics have delivered them and they are taken in slot order.
    /// A result persisted later than that still counts for uptime, not for
    /// the incident state.
    #[serde(default = "default_settle", deserialize_with = "duration::de")]
    pub settle: Duration,
    /// Flap damping: a site whose state (up or down, after the thresholds)
    /// changes this many times within `flap_window` is flapping: one
    /// notification says so, none follow until it has held one state for
    /// `flap_window`, then one says it settled. 0 turns damping off.
    #[serde(default = "default_flap_changes")]
    pub flap_changes: u32,
    #[serde(default = "default_flap_window", deserialize_with = "duration::de")]
    pub flap_window: Duration,
}

fn default_settle() -> Duration {
    Duration::from_secs(10)
}
fn default_flap_changes() -> u32 {
    3
}
fn default_flap_window() -> Duration {
    Duration::from_secs(600)
}

impl Default for IncidentSettings {
    fn default() -> Self {
        IncidentSettings {
            settle: default_settle(),
            flap_changes: default_flap_changes(),
            flap_window: default_flap_window(),
        }
    }
}

/// How long results are kept. Expired data is removed by dropping whole
/// partitions (days of raw rows and minute rollups, months of hour rollups),
/// never by a long `DELETE`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    /// Raw results and minute rollups.
    #[serde(default = "default_retention_raw", deserialize_with = "duration::de")]
    pub raw: Duration,
    /// Hour rollups (the long-range uptime views).
    #[serde(
        default = "default_retention_rollups",
        deserialize_with = "duration::de"
    )]
    pub rollups: Duration,
}

fn default_retention_raw() -> Duration {
    Duration::from_secs(30 * 86_400)
}
fn default_retention_rollups() -> Duration {
    Duration::from_secs(400 * 86_400)
}

impl Default for RetentionSettings {
    fn default() -> Self {
        RetentionSettings {
            raw: default_retention_raw(),
            rollups: default_retention_rollups(),
        }
    }
}

impl RetentionSettings {
    /// The first UTC day kept for raw rows and for hour rollups, as of `today`.
    pub fn keep_from(&self, today: chrono::NaiveDate) -> (chrono::NaiveDate, chrono::NaiveDate) {
        let days = |d: Duration| chrono::Days::new(d.as_secs().div_ceil(86_400));
        (today - days(self.raw), today - days(self.rollups))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersisterSettings {
    /// A batch is written when it holds this many results ...
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// ... or when its first result has waited this long.
    #[serde(default = "default_batch_timeout", deserialize_with = "duration::de")]
    pub batch_timeout: Duration,
}

fn default_batch_size() -> usize {
    1000
}
fn default_batch_timeout() -> Duration {
    Duration::from_millis(200)
}

impl Default for PersisterSettings {
    fn default() -> Self {
        PersisterSettings {
            batch_size: default_batch_size(),
            batch_timeout: default_batch_timeout(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// A `tracing` filter (`info`, `sitewatch=debug,rdkafka=warn`); `RUST_LOG` wins.
    #[serde(default = "default_log_level")]
    pub level: String,
    #[serde(default)]
    pub format: LogFormat,
}

fn default_log_level() -> String {
    "info".into()
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            level: default_log_level(),
            format: LogFormat::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Plain lines; colour only on a terminal.
    #[default]
    Plain,
    Json,
}

/// Values a site gets when it does not set them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteDefaults {
    #[serde(default = "default_interval", deserialize_with = "duration::de")]
    pub interval: Duration,
    #[serde(default = "default_timeout", deserialize_with = "duration::de")]
    pub timeout: Duration,
    /// Channels for sites that name none (`alerts.default_channels` when
    /// unset).
    pub alert_channels: Option<Vec<String>>,
}

fn default_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Default for SiteDefaults {
    fn default() -> Self {
        SiteDefaults {
            interval: default_interval(),
            timeout: default_timeout(),
            alert_channels: None,
        }
    }
}
