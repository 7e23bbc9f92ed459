//! Every outcome, as it is published, for the API of this instance: a
//! consumer of both result topics in a group of its own (so every API
//! instance sees every outcome, whichever instance ran the check), starting
//! at the end and committing nothing. Outcomes go out on a broadcast channel
//! that `?wait=` requests (and stream subscribers) filter.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::Message;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::Beat;
use crate::bus::{client_config, BusError};
use crate::config::Settings;
use crate::model::{self, CheckOutcome};

/// Outcomes buffered for slow receivers; a receiver that falls further
/// behind misses some (its client can fetch the result by id).
const CAPACITY: usize = 4096;

pub type Outcomes = broadcast::Sender<Arc<CheckOutcome>>;

pub fn channel() -> Outcomes {
    broadcast::channel(CAPACITY).0
}

struct Assigned(Arc<AtomicBool>);

impl ClientContext for Assigned {}

impl ConsumerContext for Assigned {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(_) = rebalance {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

/// Follows both result topics until `shutdown`, sending each outcome on
/// `out`. `beat` runs once partitions are assigned: from then on, no
/// outcome is missed.
pub async fn follow(
    settings: &Settings,
    out: Outcomes,
    beat: Beat,
    shutdown: CancellationToken,
) -> Result<(), BusError> {
    let t = &settings.kafka.topics;
    let assigned = Arc::new(AtomicBool::new(false));
    let group = format!(
        "{}-api-{}",
        settings.kafka.group_prefix,
        uuid::Uuid::new_v4().simple()
    );
    let consumer: StreamConsumer<Assigned> = client_config(settings)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "latest")
        .create_with_context(Assigned(assigned.clone()))?;
    consumer.subscribe(&[&t.succeeded, &t.failed])?;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {
                if assigned.load(Ordering::SeqCst) {
                    beat.running();
                }
            }
            m = consumer.recv() => match m {
                Ok(m) => {
                    if let Ok(o) = model::decode_outcome(m.payload()) {
                        // No receiver is not an error: nobody is waiting.
                        let _ = out.send(Arc::new(o));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "API outcome consumer error"),
            },
        }
    }
    consumer.unsubscribe();
    Ok(())
}
