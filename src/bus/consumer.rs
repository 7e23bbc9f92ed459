//! Consumers with at-least-once offsets: auto-commit is off, the stage marks
//! each message finished once its work is durable, and only the offsets an
//! [`OffsetTracker`] allows are committed — periodically, before partitions
//! are taken away in a rebalance, and at shutdown.

use std::sync::{Arc, Mutex};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::BorrowedMessage;
use rdkafka::Message;

use super::offsets::OffsetTracker;
use super::{client_config, BusError};
use crate::config::Settings;
use crate::telemetry::metrics as m;

/// How often librdkafka reports statistics (consumer lag).
const STATS_EVERY_MS: &str = "5000";

pub type SharedTracker = Arc<Mutex<OffsetTracker>>;

pub struct TrackingContext {
    tracker: SharedTracker,
    /// For the lag metric's labels.
    group: String,
}

impl ClientContext for TrackingContext {
    /// librdkafka's periodic statistics: the lag of each assigned partition.
    fn stats(&self, stats: rdkafka::Statistics) {
        for (topic, t) in &stats.topics {
            for (partition, p) in &t.partitions {
                // -1 is librdkafka's internal partition. librdkafka leaves
                // `consumer_lag` at -1 until it knows the committed offset,
                // so fall back to the high watermark minus our position.
                if *partition < 0 {
                    continue;
                }
                let position = p.app_offset.max(p.committed_offset);
                let lag = if p.consumer_lag >= 0 {
                    p.consumer_lag
                } else if p.hi_offset >= 0 && position >= 0 {
                    (p.hi_offset - position).max(0)
                } else {
                    tracing::debug!(
                        topic,
                        partition,
                        hi = p.hi_offset,
                        app = p.app_offset,
                        committed = p.committed_offset,
                        "consumer lag unknown"
                    );
                    continue;
                };
                metrics::gauge!(m::CONSUMER_LAG, "group" => self.group.clone(),
                    "topic" => topic.clone(), "partition" => partition.to_string())
                .set(lag as f64);
            }
        }
    }
}

impl ConsumerContext for TrackingContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(revoked) = rebalance {
            let mut tracker = self.tracker.lock().expect("offset tracker lock");
            // Commit what is done before the partitions move, so the new
            // owner redoes as little as possible.
            if let Some(tpl) = tracker.take_committable() {
                if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
                    tracing::warn!(error = %e, "commit before rebalance failed");
                }
            }
            tracker.revoke(revoked);
        }
    }
}

/// A consumer with its offset tracker.
pub struct TrackedConsumer {
    pub consumer: StreamConsumer<TrackingContext>,
    pub tracker: SharedTracker,
}

impl TrackedConsumer {
    pub fn new(settings: &Settings, group: &str, topics: &[&str]) -> Result<Self, BusError> {
        let tracker = SharedTracker::default();
        let session = settings.kafka.session_timeout.as_millis().max(1000);
        let mut config = client_config(settings);
        if let Some(id) = static_member_id(settings, group) {
            config.set("group.instance.id", id);
        }
        let consumer: StreamConsumer<TrackingContext> = config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // A new group starts from the oldest message: checks scheduled
            // before the first consumer joined are not lost.
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("session.timeout.ms", session.to_string())
            .set("heartbeat.interval.ms", (session / 5).to_string())
            .set("statistics.interval.ms", STATS_EVERY_MS)
            .create_with_context(TrackingContext {
                tracker: tracker.clone(),
                group: group.to_owned(),
            })?;
        consumer.subscribe(topics)?;
        Ok(TrackedConsumer { consumer, tracker })
    }

    /// Records `msg` as taken; call [`MessageRef::finish`] once its work is
    /// durable.
    pub fn start(&self, msg: &BorrowedMessage<'_>) -> MessageRef {
        let r = MessageRef {
            topic: msg.topic().to_owned(),
            partition: msg.partition(),
            offset: msg.offset(),
            tracker: self.tracker.clone(),
        };
        self.lock().start(&r.topic, r.partition, r.offset);
        r
    }

    /// The consumer's fatal error, if it has had one; it then consumes
    /// nothing more (for example, another live process took its static
    /// member id, `FENCED_INSTANCE_ID`) and the stage must stop.
    pub fn fatal_error(&self) -> Option<BusError> {
        use rdkafka::consumer::Consumer as _;
        let (code, reason) = self.consumer.client().fatal_error()?;
        let hint = if code == rdkafka::types::RDKafkaErrorCode::FencedInstanceId {
            "; another live process has the same kafka.instance_id (default: the host \
             name): give each process of a group its own"
        } else {
            ""
        };
        Some(BusError::Fatal(format!("{reason} ({code:?}){hint}")))
    }

    pub fn unfinished(&self) -> usize {
        self.lock().unfinished()
    }

    /// Commits every offset whose messages are all finished.
    pub fn commit(&self, mode: CommitMode) {
        let tpl = self.lock().take_committable();
        if let Some(tpl) = tpl {
            if let Err(e) = self.consumer.commit(&tpl, mode) {
                // Not fatal: the messages are redelivered and the writes are
                // idempotent.
                tracing::warn!(error = %e, "offset commit failed");
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OffsetTracker> {
        self.tracker.lock().expect("offset tracker lock")
    }
}

/// `group.instance.id` for `group` (static membership, KIP-345), or `None`
/// when `kafka.instance_id` is `""`. Derived from the instance and the
/// group (hence the role), so one process's consumers of different groups
/// have distinct ids and a restart reuses the same one.
pub fn static_member_id(settings: &Settings, group: &str) -> Option<String> {
    let instance = match &settings.kafka.instance_id {
        Some(id) if id.trim().is_empty() => return None,
        Some(id) => id.clone(),
        None => crate::instance::instance_name(),
    };
    Some(format!("{instance}-{group}"))
}

/// A message taken from Kafka whose work is in flight.
pub struct MessageRef {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    tracker: SharedTracker,
}

impl MessageRef {
    /// The message's work is durable: its offset may be committed.
    pub fn finish(self) {
        self.tracker.lock().expect("offset tracker lock").finish(
            &self.topic,
            self.partition,
            self.offset,
        );
    }
}
