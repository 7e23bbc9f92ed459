//! `[kafka]`: brokers, consumer groups, producer batching, topic names, TLS
//! and SASL.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::duration;
use super::secret::Secret;

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
