//! Kafka: client configuration (TLS, SASL), topic creation, and the producer
//! and consumers the stages use. Stages meet here and in `model`, never in
//! each other.

mod consumer;
mod dlq;
pub mod lag;
mod offsets;
mod producer;
pub mod progress;
mod topics;

pub use consumer::{MessageRef, TrackedConsumer};
pub use dlq::{read_dead_letters, DeadLetter, StoredLetter};
pub use offsets::OffsetTracker;
pub use producer::{confirmed, Publisher};
pub use topics::{ensure_sized_topics, ensure_topics, ensure_topics_with_retry};

/// Header names of dead letters.
pub mod dlq_headers {
    pub use super::dlq::{H_AT, H_OFFSET, H_PARTITION, H_REASON, H_REPLAYED, H_STAGE, H_TOPIC};
}

use rdkafka::ClientConfig;

use crate::config::Settings;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("Kafka: creating topic {topic}: {reason}")]
    CreateTopic { topic: String, reason: String },
    #[error("Kafka consumer failed for good: {0}")]
    Fatal(String),
    #[error("stopped while waiting for Kafka")]
    Cancelled,
}

/// The librdkafka settings every client shares: brokers, identity and
/// security. Secrets go straight to librdkafka and are never logged.
pub fn client_config(settings: &Settings) -> ClientConfig {
    let k = &settings.kafka;
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &k.brokers)
        .set("client.id", &k.client_id)
        // librdkafka logs go through its own logger; keep them quiet unless
        // something is wrong.
        .set("log_level", "4");
    let tls = k.tls.enabled || k.tls.ca_path.is_some() || k.tls.cert_path.is_some();
    let protocol = match (tls, k.sasl.is_some()) {
        (false, false) => "plaintext",
        (true, false) => "ssl",
        (false, true) => "sasl_plaintext",
        (true, true) => "sasl_ssl",
    };
    cfg.set("security.protocol", protocol);
    if let Some(ca) = &k.tls.ca_path {
        cfg.set("ssl.ca.location", ca.to_string_lossy());
    }
    if let Some(cert) = &k.tls.cert_path {
        cfg.set("ssl.certificate.location", cert.to_string_lossy());
    }
    if let Some(key) = &k.tls.key_path {
        cfg.set("ssl.key.location", key.to_string_lossy());
    }
    if let Some(pw) = &settings.kafka_tls_key_password {
        cfg.set("ssl.key.password", pw.expose());
    }
    if let Some(sasl) = &k.sasl {
        cfg.set("sasl.mechanism", &sasl.mechanism)
            .set("sasl.username", &sasl.username);
        if let Some(pw) = &settings.kafka_sasl_password {
            cfg.set("sasl.password", pw.expose());
        }
    }
    cfg
}
