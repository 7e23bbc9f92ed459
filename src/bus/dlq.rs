//! The dead-letter topic: a message that cannot be processed (undecodable,
//! or refused by Postgres) is republished there unchanged, with the reason
//! and its source topic/partition/offset in headers, and its offset is then
//! committed: one bad message never stalls a partition. Dead letters are
//! read back (`sitewatch dlq list`) and, once the cause is fixed, replayed
//! to their source topic (`sitewatch dlq replay`).

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

/// Header a replayed message carries: where in the DLQ it came from.
pub const H_REPLAYED: &str = "sitewatch-replayed-from";

/// A dead letter read back from the dead-letter topic.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredLetter {
    /// Where it sits in the dead-letter topic.
    pub dlq_partition: i32,
    pub dlq_offset: i64,
    pub source_topic: String,
    pub source_partition: Option<i32>,
    pub source_offset: Option<i64>,
    pub stage: String,
    pub reason: String,
    /// When it was dead-lettered.
    pub at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(skip)]
    pub key: Vec<u8>,
    #[serde(skip)]
    pub payload: Vec<u8>,
}

impl StoredLetter {
    fn from_message(msg: &BorrowedMessage<'_>) -> Self {
        let header = |name: &str| -> Option<String> {
            use rdkafka::message::Headers;
            let headers = msg.headers()?;
            headers
                .iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        StoredLetter {
            dlq_partition: msg.partition(),
            dlq_offset: msg.offset(),
            source_topic: header(H_TOPIC).unwrap_or_default(),
            source_partition: header(H_PARTITION).and_then(|p| p.parse().ok()),
            source_offset: header(H_OFFSET).and_then(|p| p.parse().ok()),
            stage: header(H_STAGE).unwrap_or_default(),
            reason: header(H_REASON).unwrap_or_default(),
            at: header(H_AT)
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
                .map(|t| t.with_timezone(&chrono::Utc)),
            key: msg.key().unwrap_or_default().to_vec(),
            payload: msg.payload().unwrap_or_default().to_vec(),
        }
    }

    /// Sends the original key and payload back to the source topic.
    pub async fn replay(&self, publisher: &Publisher) -> Result<(), KafkaError> {
        let from = format!("{}/{}", self.dlq_partition, self.dlq_offset);
        let headers = OwnedHeaders::new().insert(Header {
            key: H_REPLAYED,
            value: Some(from.as_str()),
        });
        publisher
            .send(&self.source_topic, &self.key, &self.payload, Some(headers))
            .await
    }
}

/// Every dead letter on `dlq_topic`, oldest first per partition: reads each
/// partition from its start to its current end, outside any consumer group
/// (nothing is committed; the letters stay where they are).
pub async fn read_dead_letters(
    settings: &crate::config::Settings,
    dlq_topic: &str,
    timeout: std::time::Duration,
) -> Result<Vec<StoredLetter>, super::BusError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Offset, TopicPartitionList};

    let consumer: BaseConsumer = super::client_config(settings)
        .set(
            "group.id",
            format!("{}-dlq-reader", settings.kafka.group_prefix),
        )
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()?;
    let topic = dlq_topic.to_owned();
    let read = tokio::task::spawn_blocking(move || -> Result<Vec<StoredLetter>, KafkaError> {
        let md = consumer.fetch_metadata(Some(&topic), timeout)?;
        let partitions: Vec<i32> = md
            .topics()
            .iter()
            .filter(|t| t.name() == topic)
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        let mut ends = std::collections::HashMap::new();
        let mut tpl = TopicPartitionList::new();
        for p in &partitions {
            let (low, high) = consumer.fetch_watermarks(&topic, *p, timeout)?;
            if high > low {
                ends.insert(*p, high);
                tpl.add_partition_offset(&topic, *p, Offset::Offset(low))?;
            }
        }
        let mut out = Vec::new();
        if ends.is_empty() {
            return Ok(out);
        }
        consumer.assign(&tpl)?;
        let deadline = std::time::Instant::now() + timeout;
        while !ends.is_empty() && std::time::Instant::now() < deadline {
            let Some(msg) = consumer.poll(std::time::Duration::from_millis(200)) else {
                continue;
            };
            let msg = msg?;
            let end = ends.get(&msg.partition()).copied();
            if end.is_some_and(|e| msg.offset() < e) {
                out.push(StoredLetter::from_message(&msg));
            }
            if end.is_some_and(|e| msg.offset() + 1 >= e) {
                ends.remove(&msg.partition());
            }
        }
        if !ends.is_empty() {
            return Err(KafkaError::MessageConsumption(
                rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
            ));
        }
        Ok(out)
    });
    Ok(read.await.map_err(|_| KafkaError::Canceled)??)
}
