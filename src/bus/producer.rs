//! The one producer each process shares: idempotent, `acks=all`, batched
//! (linger + compression) and with many sends in flight. Callers enqueue and
//! keep the delivery future; nobody awaits one send before the next.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use super::{client_config, BusError};
use crate::config::Settings;

#[derive(Clone)]
pub struct Publisher {
    producer: FutureProducer,
}

impl Publisher {
    pub fn new(settings: &Settings) -> Result<Publisher, BusError> {
        let producer = client_config(settings)
            // No duplicates or reordering from producer retries.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // Batch for up to 5 ms; a monitor's messages are small and many.
            .set("linger.ms", "5")
            .set("batch.num.messages", "10000")
            .set("compression.type", "lz4")
            .set("queue.buffering.max.messages", "200000")
            // A message not delivered within this time fails its future; the
            // caller decides (retry, skip, or leave the offset uncommitted).
            .set("message.timeout.ms", "30000")
            .create()?;
        Ok(Publisher { producer })
    }

    /// Enqueues one message and returns its delivery future. When the local
    /// queue is full this waits (backpressure) instead of failing.
    pub async fn enqueue(
        &self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Result<DeliveryFuture, KafkaError> {
        let mut headers = headers;
        loop {
            let mut record = FutureRecord::to(topic).key(key).payload(payload);
            if let Some(h) = headers.take() {
                record = record.headers(h);
            }
            match self.producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), rec)) => {
                    headers = rec.headers;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Enqueues and waits for the broker's acknowledgement.
    pub async fn send(
        &self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Result<(), KafkaError> {
        let delivery = self.enqueue(topic, key, payload, headers).await?;
        confirmed(delivery).await
    }

    /// Messages not yet acknowledged by the broker.
    pub fn in_flight(&self) -> i32 {
        self.producer.in_flight_count()
    }

    /// Asks a broker for `topic`'s metadata: proof that Kafka answers.
    pub async fn reachable(&self, topic: &str, timeout: Duration) -> Result<(), KafkaError> {
        let producer = self.producer.clone();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(&topic), timeout)
                .map(|_| ())
        })
        .await
        .unwrap_or(Err(KafkaError::Canceled))
    }

    /// Waits (bounded) until every enqueued message is delivered or failed.
    pub async fn flush(&self, timeout: Duration) {
        let producer = self.producer.clone();
        let _ = tokio::task::spawn_blocking(move || producer.flush(timeout)).await;
    }
}

/// Resolves a delivery future to `Ok` once the broker has the message.
pub async fn confirmed(delivery: DeliveryFuture) -> Result<(), KafkaError> {
    match delivery.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(e),
        Err(_) => Err(KafkaError::Canceled),
    }
}
