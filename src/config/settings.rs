//! The daemon's own settings (everything but the sites), as serde structs with
//! defaults and `deny_unknown_fields`, plus the checks serde cannot express.
//! Every key can be overridden from the environment (`SITEWATCH__KAFKA__BROKERS`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::connections::ConnectionLimits;
use super::duration;
use super::problem::Problem;
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
    pub alerts: AlertSettings,
    #[serde(default)]
    pub log: LogSettings,
    #[serde(default)]
    pub site_defaults: SiteDefaults,
    #[serde(default)]
    pub admin: AdminSettings,
    #[serde(default)]
    pub api: ApiSettings,
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
pub struct KafkaSettings {
    /// Comma-separated `host:port` list (librdkafka's `bootstrap.servers`).
    #[serde(default = "default_brokers")]
    pub brokers: String,
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// Consumer group ids are `<group_prefix>-checker`, `<group_prefix>-persister-succeeded`, ...
    #[serde(default = "default_group_prefix")]
    pub group_prefix: String,
    /// Partition count for topics sitewatch creates; it caps how many
    /// checker/persister instances can share one topic's work.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    #[serde(default = "default_replication")]
    pub replication_factor: i32,
    /// A consumer that stops heartbeating (crashed, SIGKILLed) holds its
    /// partitions this long before the group gives them to others: short,
    /// because checks stall meanwhile.
    #[serde(default = "default_session_timeout", deserialize_with = "duration::de")]
    pub session_timeout: Duration,
    /// This process's stable name in its consumer groups: static membership
    /// (KIP-345, `group.instance.id` = `<instance_id>-<group>`), so a
    /// restarted process takes its partitions back at once, with no
    /// rebalance. Default: the host name. Two live processes of one group
    /// must not share it (the broker fences the older one); `""` turns static
    /// membership off.
    #[serde(default)]
    pub instance_id: Option<String>,
    /// A process whose Kafka clients keep failing without any progress for
    /// this long exits with an error, for its supervisor to restart it with
    /// fresh clients (see `bus::progress`).
    #[serde(default = "default_stall_timeout", deserialize_with = "duration::de")]
    pub stall_timeout: Duration,
    /// How long the producer waits to fill a batch. Fewer, larger batches
    /// cost the broker less per message (see BENCHMARKS.md); a check's own
    /// budget is seconds, so 25 ms of batching is not felt.
    #[serde(default = "default_linger", deserialize_with = "duration::de")]
    pub linger: Duration,
    /// Compression of produced batches. `lz4` saves network and disk at
    /// little CPU; Apache Kafka validates the records but stores the
    /// batches as the producer compressed them (topic
    /// `compression.type=producer`, its default), without recompressing.
    #[serde(default)]
    pub compression: Compression,
    #[serde(default)]
    pub topics: TopicNames,
    #[serde(default)]
    pub tls: KafkaTls,
    #[serde(default)]
    pub sasl: Option<KafkaSasl>,
}

fn default_brokers() -> String {
    "127.0.0.1:19092".into()
}
fn default_client_id() -> String {
    "sitewatch".into()
}
fn default_group_prefix() -> String {
    "sitewatch".into()
}
fn default_partitions() -> i32 {
    6
}
fn default_stall_timeout() -> Duration {
    Duration::from_secs(120)
}
fn default_linger() -> Duration {
    Duration::from_millis(25)
}
fn default_session_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_replication() -> i32 {
    1
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            brokers: default_brokers(),
            client_id: default_client_id(),
            group_prefix: default_group_prefix(),
            partitions: default_partitions(),
            replication_factor: default_replication(),
            session_timeout: default_session_timeout(),
            instance_id: None,
            stall_timeout: default_stall_timeout(),
            linger: default_linger(),
            compression: Compression::default(),
            topics: TopicNames::default(),
            tls: KafkaTls::default(),
            sasl: None,
        }
    }
}

/// `kafka.compression`: the codecs librdkafka is built with here.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(try_from = "String")]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    #[default]
    Lz4,
}

impl TryFrom<String> for Compression {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Ok(match s.as_str() {
            "none" => Compression::None,
            "gzip" => Compression::Gzip,
            "snappy" => Compression::Snappy,
            "lz4" => Compression::Lz4,
            _ => return Err(format!("{s:?} is not one of none, gzip, snappy, lz4")),
        })
    }
}

impl Compression {
    /// librdkafka's `compression.type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TopicNames {
    pub created: String,
    pub succeeded: String,
    pub failed: String,
    pub dlq: String,
}

impl Default for TopicNames {
    fn default() -> Self {
        TopicNames {
            created: "status_request_created".into(),
            succeeded: "status_request_succeeded".into(),
            failed: "status_request_failed".into(),
            dlq: "status_request_dlq".into(),
        }
    }
}

impl TopicNames {
    /// The data topics (not the control topic).
    pub fn all(&self) -> [&str; 4] {
        [&self.created, &self.succeeded, &self.failed, &self.dlq]
    }
}

/// TLS to the brokers (e.g. a managed Kafka with a private CA and client
/// certificates).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaTls {
    #[serde(default)]
    pub enabled: bool,
    /// CA bundle that signed the brokers' certificates (PEM).
    pub ca_path: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    pub cert_path: Option<PathBuf>,
    pub key_path: Option<PathBuf>,
    pub key_password: Option<Secret>,
    pub key_password_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSasl {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: String,
    pub username: String,
    pub password: Option<Secret>,
    pub password_file: Option<PathBuf>,
}

pub const SASL_MECHANISMS: [&str; 3] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerSettings {
    /// Sites with a shorter interval are rejected.
    #[serde(default = "default_min_interval", deserialize_with = "duration::de")]
    pub min_interval: Duration,
    /// After a restart, at most this many missed slots per site are recorded
    /// one row each (`skipped` / `missed_slot`); older ones in the same gap
    /// are recorded as one `schedule_gaps` row, so a long outage cannot turn
    /// into millions of placeholder rows.
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
}

fn default_settle() -> Duration {
    Duration::from_secs(10)
}

impl Default for IncidentSettings {
    fn default() -> Self {
        IncidentSettings {
            settle: default_settle(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertFormat {
    /// `{"event", "site", "incident": {...}}`.
    #[default]
    Json,
    /// `{"text": "..."}`, what Slack (and Mattermost, Rocket.Chat) take.
    Slack,
}

/// Where incident notifications go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSettings {
    /// POSTed on incident open, resolve and reminder; no alerts when unset.
    pub webhook_url: Option<String>,
    #[serde(default)]
    pub format: AlertFormat,
    /// While an incident is open, a reminder this often (none when unset).
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub remind_every: Option<Duration>,
    /// Attempts per notification before giving up (backoff 1 s, 2 s, 4 s ...
    /// up to 5 min between them).
    #[serde(default = "default_alert_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_alert_timeout", deserialize_with = "duration::de")]
    pub timeout: Duration,
}

fn default_alert_attempts() -> u32 {
    12
}
fn default_alert_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            webhook_url: None,
            format: AlertFormat::Json,
            remind_every: None,
            max_attempts: default_alert_attempts(),
            timeout: default_alert_timeout(),
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

/// Values a site gets when it does not set them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteDefaults {
    #[serde(default = "default_interval", deserialize_with = "duration::de")]
    pub interval: Duration,
    #[serde(default = "default_timeout", deserialize_with = "duration::de")]
    pub timeout: Duration,
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
        }
    }
}

/// Kafka's rule for topic names.
fn valid_topic(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn check_file(file: &Path, key: &str, path: &Option<PathBuf>, out: &mut Vec<Problem>) {
    if let Some(p) = path {
        if let Err(e) = std::fs::metadata(p) {
            out.push(Problem::field(
                file,
                key,
                format!("cannot read {}: {e}", p.display()),
            ));
        }
    }
}

impl RawSettings {
    /// Checks what the types cannot; touches the file system (certificate
    /// paths) but never the network.
    pub fn validate(&self, file: &Path) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut bad = |field: &str, msg: String| out.push(Problem::field(file, field, msg));

        if self.postgres.pool_size == 0 {
            bad("postgres.pool_size", "must be at least 1".into());
        }
        if let Err(e) = self.postgres.url.parse::<tokio_postgres::Config>() {
            // tokio-postgres errors do not echo the string, so no password leaks.
            bad("postgres.url", format!("not a valid Postgres URL: {e}"));
        }
        if self.kafka.brokers.trim().is_empty() {
            bad("kafka.brokers", "must list at least one host:port".into());
        }
        if self.kafka.partitions < 1 {
            bad("kafka.partitions", "must be at least 1".into());
        }
        if !(1..=10_000).contains(&self.scheduler.shards) {
            bad("scheduler.shards", "must be between 1 and 10000".into());
        }
        if self.scheduler.failover_timeout < Duration::from_secs(1) {
            bad(
                "scheduler.failover_timeout",
                "must be at least 1s (leases are renewed every third of it)".into(),
            );
        }
        if self.api.enabled && self.api.tokens.is_empty() && self.api.tokens_file.is_none() {
            bad(
                "api.tokens",
                "the API needs at least one token (`tokens`, `tokens_file` or SITEWATCH__API__TOKENS)".into(),
            );
        }
        if self.api.requests_per_minute == 0 || self.api.max_in_flight == 0 {
            bad(
                "api.requests_per_minute",
                "limits must be at least 1".into(),
            );
        }
        if self.kafka.replication_factor < 1 {
            bad("kafka.replication_factor", "must be at least 1".into());
        }
        let t = &self.kafka.topics;
        for (key, name) in [
            ("kafka.topics.created", &t.created),
            ("kafka.topics.succeeded", &t.succeeded),
            ("kafka.topics.failed", &t.failed),
            ("kafka.topics.dlq", &t.dlq),
        ] {
            if !valid_topic(name) {
                bad(
                    key,
                    format!(
                        "{name:?} is not a valid Kafka topic name (1-249 of a-z A-Z 0-9 . _ -)"
                    ),
                );
            }
        }
        let names = t.all();
        for (i, a) in names.iter().enumerate() {
            if names[..i].contains(a) {
                bad(
                    "kafka.topics",
                    format!("topic {a:?} is used for two purposes"),
                );
            }
        }
        if let Some(sasl) = &self.kafka.sasl {
            if !SASL_MECHANISMS.contains(&sasl.mechanism.as_str()) {
                bad(
                    "kafka.sasl.mechanism",
                    format!(
                        "{:?} is not supported; use one of {SASL_MECHANISMS:?}",
                        sasl.mechanism
                    ),
                );
            }
            if sasl.username.is_empty() {
                bad("kafka.sasl.username", "must not be empty".into());
            }
            if sasl.password.is_none() && sasl.password_file.is_none() {
                bad(
                    "kafka.sasl.password",
                    "SASL needs `password` or `password_file` (or SITEWATCH__KAFKA__SASL__PASSWORD)".into(),
                );
            }
        }
        let tls = &self.kafka.tls;
        if tls.cert_path.is_some() != tls.key_path.is_some() {
            bad(
                "kafka.tls.key_path",
                "a client certificate needs both `cert_path` and `key_path`".into(),
            );
        }
        // Certificate files are read here so a wrong path or a non-PEM file
        // fails at load with the key named, not as a handshake error later.
        for (key, path) in [
            ("postgres.ca_path", &self.postgres.ca_path),
            ("kafka.tls.ca_path", &tls.ca_path),
            ("kafka.tls.cert_path", &tls.cert_path),
        ] {
            if let Some(p) = path {
                if let Some(msg) = pem_problem(p, "CERTIFICATE") {
                    bad(key, msg);
                }
            }
        }
        if let Some(p) = &tls.key_path {
            if let Some(msg) = pem_problem(p, "PRIVATE KEY") {
                bad("kafka.tls.key_path", msg);
            }
        }
        for (i, p) in self.checker.ca_files.iter().enumerate() {
            if let Some(msg) = pem_problem(p, "CERTIFICATE") {
                bad(&format!("checker.ca_files[{i}]"), msg);
            }
        }
        if self.scheduler.min_interval < MIN_INTERVAL_FLOOR {
            bad(
                "scheduler.min_interval",
                format!("must be at least {}", duration::show(MIN_INTERVAL_FLOOR)),
            );
        }
        if self.checker.concurrency == 0 {
            bad("checker.concurrency", "must be at least 1".into());
        }
        if let Some(url) = &self.alerts.webhook_url {
            match url::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => bad(
                    "alerts.webhook_url",
                    format!("{url:?} is not an http(s) URL"),
                ),
            }
        }
        if self.alerts.max_attempts == 0 {
            bad("alerts.max_attempts", "must be at least 1".into());
        }
        if self.retention.raw < Duration::from_secs(2 * 86_400) {
            bad(
                "retention.raw",
                "must be at least 2 days (partitions are whole days)".into(),
            );
        }
        if self.retention.rollups < self.retention.raw {
            bad(
                "retention.rollups",
                "must be at least retention.raw (hour rollups outlive the raw rows)".into(),
            );
        }
        if self.kafka.stall_timeout < Duration::from_secs(10) {
            bad(
                "kafka.stall_timeout",
                "must be at least 10s (a broker failover takes seconds)".into(),
            );
        }
        if self.kafka.linger > Duration::from_secs(1) {
            bad(
                "kafka.linger",
                "must be at most 1s (every check request waits up to this long)".into(),
            );
        }
        if self.checker.max_per_host == 0 {
            bad("checker.max_per_host", "must be at least 1".into());
        }
        if self.checker.max_body_bytes == 0 {
            bad("checker.max_body_bytes", "must be at least 1".into());
        }
        if self.persister.batch_size == 0 || self.persister.batch_size > 50_000 {
            bad("persister.batch_size", "must be between 1 and 50000".into());
        }
        for (section, limits) in [
            ("api", &self.api.connections),
            ("admin", &self.admin.connections),
        ] {
            for (field, message) in limits.problems() {
                bad(&format!("{section}.{field}"), message);
            }
        }
        for h in &self.checker.cross_origin_headers {
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                bad(
                    "checker.cross_origin_headers",
                    format!("{h:?} is not a header name"),
                );
            }
        }
        for (field, t) in [
            ("site_defaults.timeout", self.site_defaults.timeout),
            ("alerts.timeout", self.alerts.timeout),
            ("postgres.connect_timeout", self.postgres.connect_timeout),
        ] {
            if t < Duration::from_millis(1) {
                bad(field, "must be at least 1ms".into());
            }
        }
        if self.persister.batch_timeout.is_zero() {
            bad("persister.batch_timeout", "must be greater than 0".into());
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            bad("log.level", format!("not a valid log filter: {e}"));
        }
        if self.site_defaults.timeout >= self.site_defaults.interval {
            bad(
                "site_defaults.timeout",
                format!(
                    "timeout {} must be shorter than interval {}",
                    duration::show(self.site_defaults.timeout),
                    duration::show(self.site_defaults.interval)
                ),
            );
        }
        check_file(
            file,
            "postgres.password_file",
            &self.postgres.password_file,
            &mut out,
        );
        out
    }
}

/// Why `path` is not a usable PEM file holding a `what` block, if it is not.
/// Only the block markers are looked at; the contents are never echoed.
fn pem_problem(path: &Path, what: &str) -> Option<String> {
    match std::fs::read_to_string(path) {
        Err(e) => Some(format!("cannot read {}: {e}", path.display())),
        Ok(text) if !text.contains("-----BEGIN ") || !text.contains(what) => Some(format!(
            "{} is not a PEM file with a {what} block",
            path.display()
        )),
        Ok(_) => None,
    }
}
