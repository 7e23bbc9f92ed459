//! Topic creation at start-up. The seeds' known failure was an app that
//! crashed when its topic did not exist yet; sitewatch creates missing topics
//! itself and, when the broker is not reachable yet, waits and retries with
//! backoff, saying why in the log.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use tokio_util::sync::CancellationToken;

use super::{client_config, BusError};
use crate::config::Settings;

/// Creates each topic in `names` that does not exist yet, with the configured
/// partition count and replication factor. Existing topics are left alone.
pub async fn ensure_topics(settings: &Settings, names: &[&str]) -> Result<(), BusError> {
    let sized: Vec<(&str, i32)> = names
        .iter()
        .map(|n| (*n, settings.kafka.partitions))
        .collect();
    ensure_sized_topics(settings, &sized).await
}

/// [`ensure_topics`] with a partition count per topic.
pub async fn ensure_sized_topics(
    settings: &Settings,
    topics: &[(&str, i32)],
) -> Result<(), BusError> {
    let admin: AdminClient<DefaultClientContext> = client_config(settings).create()?;
    // Only the missing ones: a managed cluster may deny CreateTopics to
    // sitewatch's principal once an operator has made the topics.
    let existing = {
        let config = client_config(settings);
        let timeout = Duration::from_secs(10);
        tokio::task::spawn_blocking(move || {
            use rdkafka::producer::Producer as _;
            let client: rdkafka::producer::BaseProducer = config.create()?;
            client.client().fetch_metadata(None, timeout).map(|md| {
                md.topics()
                    .iter()
                    .filter(|t| t.error().is_none() && !t.partitions().is_empty())
                    .map(|t| t.name().to_owned())
                    .collect::<std::collections::HashSet<_>>()
            })
        })
        .await
        .unwrap_or(Err(rdkafka::error::KafkaError::Canceled))?
    };
    let missing: Vec<&(&str, i32)> = topics
        .iter()
        .filter(|(n, _)| !existing.contains(*n))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let new: Vec<NewTopic> = missing
        .into_iter()
        .map(|(n, partitions)| {
            NewTopic::new(
                n,
                *partitions,
                TopicReplication::Fixed(settings.kafka.replication_factor),
            )
        })
        .collect();
    let opts = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(15)));
    for result in admin.create_topics(&new, &opts).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(BusError::CreateTopic {
                    topic,
                    reason: code.to_string(),
                })
            }
        }
    }
    Ok(())
}

/// [`ensure_sized_topics`], retried with capped exponential backoff until
/// it succeeds or `cancel` fires.
pub async fn ensure_topics_with_retry(
    settings: &Settings,
    topics: &[(&str, i32)],
    cancel: &CancellationToken,
) -> Result<(), BusError> {
    let mut delay = Duration::from_millis(250);
    // As at run time (`kafka.stall_timeout`): a Kafka that never answers
    // (a wrong CA, a wrong password, a wrong address) ends the start, for
    // the supervisor to retry and the operator to see, instead of a daemon
    // that runs and never checks anything.
    let started = tokio::time::Instant::now();
    let limit = settings.kafka.stall_timeout;
    loop {
        let attempt = tokio::select! {
            _ = cancel.cancelled() => return Err(BusError::Cancelled),
            r = ensure_sized_topics(settings, topics) => r,
        };
        match attempt {
            Ok(()) => return Ok(()),
            Err(e) if started.elapsed() >= limit => {
                return Err(BusError::Fatal(format!(
                    "no answer from Kafka at {} for {} (kafka.stall_timeout) since start; \
                     the last attempt: {}",
                    settings.kafka.brokers,
                    crate::config::show_duration(limit),
                    crate::checker::error_chain(&e)
                )));
            }
            Err(e) => {
                tracing::warn!(
                    error = %crate::checker::error_chain(&e),
                    brokers = %settings.kafka.brokers,
                    retry_in_ms = delay.as_millis() as u64,
                    "Kafka not ready; topics not created yet"
                );
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return Err(BusError::Cancelled),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}
