//! The one producer each process shares: idempotent, `acks=all`, batched
//! (linger + compression) and with many sends in flight. Callers enqueue and
//! keep the delivery future; nobody awaits one send before the next.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use super::{client_config, BusError};
use crate::config::Settings;
use crate::telemetry::metrics as m;

/// A broken producer is replaced at most this often.
const RESET_EVERY: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Publisher {
    shared: Arc<Shared>,
}

struct Shared {
    config: ClientConfig,
    producer: RwLock<FutureProducer>,
    last_reset: Mutex<Option<Instant>>,
}

impl Publisher {
    pub fn new(settings: &Settings) -> Result<Publisher, BusError> {
        let mut config = client_config(settings);
        config
            // No duplicates or reordering from producer retries.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // A monitor's messages are small and many: batch them.
            .set("linger.ms", settings.kafka.linger.as_millis().to_string())
            .set("batch.num.messages", "10000")
            .set("compression.type", settings.kafka.compression.as_str())
            .set("queue.buffering.max.messages", "200000")
            // A message not delivered within this time fails its future; the
            // caller decides (retry, skip, or leave the offset uncommitted).
            .set("message.timeout.ms", "30000");
        let producer = config.create()?;
        Ok(Publisher {
            shared: Arc::new(Shared {
                config,
                producer: RwLock::new(producer),
                last_reset: Mutex::new(None),
            }),
        })
    }

    fn producer(&self) -> FutureProducer {
        self.shared.producer.read().expect("producer lock").clone()
    }

    /// Waits for `delivery` like [`confirmed`], and replaces the producer
    /// when the error says its idempotence state is broken.
    ///
    /// Why: an idempotent producer whose messages timed out during a long
    /// broker outage can be left with a sequence gap that the broker refuses
    /// for good (librdkafka then raises a fatal error; a broker may instead
    /// answer every later produce with UNKNOWN_SERVER_ERROR, as Tansu 0.6
    /// did, hence `Unknown` below). Only a new producer
    /// (a new producer id) gets out of that state; its messages are retried
    /// by their callers, and duplicates are harmless (one row per check).
    pub async fn confirm(&self, delivery: DeliveryFuture) -> Result<(), KafkaError> {
        let result = confirmed(delivery).await;
        match &result {
            Ok(()) => super::progress::ok(),
            Err(e) => {
                super::progress::failed();
                self.check_health(e);
            }
        }
        result
    }

    fn check_health(&self, e: &KafkaError) {
        use RDKafkaErrorCode as C;
        let fatal = self.producer().client().fatal_error();
        let broken = fatal.is_some()
            || matches!(
                e.rdkafka_error_code(),
                Some(
                    C::Unknown
                        | C::OutOfOrderSequenceNumber
                        | C::UnknownProducerId
                        | C::InvalidProducerEpoch
                        | C::InvalidProducerIdMapping
                        | C::Fatal
                )
            );
        if !broken {
            return;
        }
        {
            let mut last = self.shared.last_reset.lock().expect("reset lock");
            if last.is_some_and(|t| t.elapsed() < RESET_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        match self.shared.config.create::<FutureProducer>() {
            Ok(fresh) => {
                let old = std::mem::replace(
                    &mut *self.shared.producer.write().expect("producer lock"),
                    fresh,
                );
                tracing::warn!(error = %e, fatal = ?fatal, "Kafka producer re-created: its state was broken");
                metrics::counter!(m::PRODUCER_RESETS).increment(1);
                // Destroying a client may block on its threads: not here.
                tokio::task::spawn_blocking(move || drop(old));
            }
            Err(err) => tracing::error!(error = %err, "re-creating the Kafka producer failed"),
        }
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
            match self.producer().send_result(record) {
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
        self.confirm(delivery).await
    }

    /// Messages not yet acknowledged by the broker.
    pub fn in_flight(&self) -> i32 {
        self.producer().in_flight_count()
    }

    /// Asks a broker for `topic`'s metadata: proof that Kafka answers.
    pub async fn reachable(&self, topic: &str, timeout: Duration) -> Result<(), KafkaError> {
        let producer = self.producer();
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
        let producer = self.producer();
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
