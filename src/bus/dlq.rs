//! The dead-letter topic: a message that cannot be processed (undecodable,
//! or refused by Postgres) is republished there unchanged, with the reason
//! and its source topic/partition/offset in headers, and its offset is then
//! committed: one bad message never stalls a partition.

use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, OwnedHeaders};
use rdkafka::Message;

use super::Publisher;

pub const H_REASON: &str = "sitewatch-dlq-reason";
pub const H_TOPIC: &str = "sitewatch-dlq-source-topic";
pub const H_PARTITION: &str = "sitewatch-dlq-source-partition";
pub const H_OFFSET: &str = "sitewatch-dlq-source-offset";
pub const H_AT: &str = "sitewatch-dlq-at";
pub const H_STAGE: &str = "sitewatch-dlq-stage";

/// A message on its way to the dead-letter topic.
pub struct DeadLetter {
    pub source_topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    pub reason: String,
    /// The stage that gave up on it (`checker`, `persister`).
    pub stage: &'static str,
}

impl DeadLetter {
    pub fn from_message(msg: &BorrowedMessage<'_>, stage: &'static str, reason: String) -> Self {
        DeadLetter {
            source_topic: msg.topic().to_owned(),
            partition: msg.partition(),
            offset: msg.offset(),
            key: msg.key().unwrap_or_default().to_vec(),
            payload: msg.payload().unwrap_or_default().to_vec(),
            reason,
            stage,
        }
    }

    /// Publishes to `dlq_topic` and waits for the broker's acknowledgement.
    pub async fn publish(&self, publisher: &Publisher, dlq_topic: &str) -> Result<(), KafkaError> {
        tracing::warn!(
            topic = %self.source_topic, partition = self.partition, offset = self.offset,
            reason = %self.reason, "message sent to the dead-letter topic"
        );
        let partition = self.partition.to_string();
        let offset = self.offset.to_string();
        let at = chrono::Utc::now().to_rfc3339();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: H_REASON,
                value: Some(self.reason.as_str()),
            })
            .insert(Header {
                key: H_TOPIC,
                value: Some(self.source_topic.as_str()),
            })
            .insert(Header {
                key: H_PARTITION,
                value: Some(partition.as_str()),
            })
            .insert(Header {
                key: H_OFFSET,
                value: Some(offset.as_str()),
            })
            .insert(Header {
                key: H_AT,
                value: Some(at.as_str()),
            })
            .insert(Header {
                key: H_STAGE,
                value: Some(self.stage),
            });
        publisher
            .send(dlq_topic, &self.key, &self.payload, Some(headers))
            .await
    }
}
