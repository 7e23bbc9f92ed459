//! A consumer group's backlog on a topic, measured from outside the group:
//! how many messages wait to be taken, and how fast the group takes them.
//! The scheduler uses it to shed load before a request enters Kafka.
//!
//! Why not the committed offsets alone (the LAG column of
//! `kafka-consumer-groups.sh --describe`): our consumers commit the lowest
//! *unfinished* offset (at-least-once, see [`super::offsets`]), so one slow
//! check holds a partition's committed offset back for its whole timeout,
//! and the lag would count every message taken meanwhile. Each commit also
//! carries, in its metadata, how far the consumer has *taken* the partition
//! (`taken=<offset>`); the backlog here is the log end offset minus that.
//! Commits come every second, so the figures are up to a second old.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::offsets::TAKEN;
use super::{client_config, BusError};
use crate::config::Settings;

/// How often the backlog is measured.
const EVERY: Duration = Duration::from_secs(1);
/// The rate is averaged over this window.
const WINDOW: Duration = Duration::from_secs(5);
/// Broker requests give up after this long.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// The checkers' consumer group: `<kafka.group_prefix>-checker`.
pub fn checker_group(settings: &Settings) -> String {
    format!("{}-checker", settings.kafka.group_prefix)
}

/// A persister's consumer group: `<kafka.group_prefix>-persister-<which>`,
/// `which` being `succeeded` or `failed`.
pub fn persister_group(settings: &Settings, which: &str) -> String {
    format!("{}-persister-{which}", settings.kafka.group_prefix)
}

/// One measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backlog {
    /// Messages published and not yet taken, over all partitions.
    pub messages: i64,
    /// Messages taken per second over the last few seconds.
    pub rate: f64,
}

impl Backlog {
    /// How long a message published now would wait before it is taken:
    /// `messages / rate`. `None` with no backlog; `Duration::MAX` with a
    /// backlog that nobody takes.
    pub fn wait(&self) -> Option<Duration> {
        if self.messages <= 0 {
            return None;
        }
        if self.rate <= 0.0 {
            return Some(Duration::MAX);
        }
        Some(Duration::from_secs_f64(self.messages as f64 / self.rate))
    }
}

/// Measures the backlog of one stage, `(group, topic)` pairs summed (the
/// persisters: one group per result topic), every second until
/// `shutdown`; the receiver holds the latest figure (`None` until some
/// group has committed on every partition of its topic, or while the
/// broker does not answer).
///
/// Errors: a Kafka client cannot be created (bad settings).
pub fn watch(
    settings: &Settings,
    stage: &[(String, String)],
    shutdown: CancellationToken,
) -> Result<watch::Receiver<Option<Backlog>>, BusError> {
    // Clients of the groups that never join them: they only read offsets.
    let mut clients = Vec::new();
    for (group, topic) in stage {
        let consumer: BaseConsumer = client_config(settings)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()?;
        clients.push((consumer, topic.clone()));
    }
    let (tx, rx) = watch::channel(None);
    let clients = std::sync::Arc::new(clients);
    tokio::spawn(async move {
        let mut history: VecDeque<(Instant, i64)> = VecDeque::new();
        let mut answered: Vec<bool> = Vec::new();
        let mut tick = tokio::time::interval(EVERY);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let c = clients.clone();
            let each: Vec<Option<(i64, i64)>> = tokio::task::spawn_blocking(move || {
                c.iter()
                    .map(|(consumer, topic)| measure(consumer, topic))
                    .collect()
            })
            .await
            .unwrap_or_default();
            // A group that has not started (no failure persisted yet) adds
            // nothing. When one starts or stops answering, the sum of taken
            // offsets jumps by its own: the rate starts afresh rather than
            // read that jump as work done.
            let now_answered: Vec<bool> = each.iter().map(Option::is_some).collect();
            if now_answered != answered {
                history.clear();
                answered = now_answered;
            }
            let measured = each
                .into_iter()
                .flatten()
                .reduce(|a, b| (a.0 + b.0, a.1 + b.1));
            let Some((backlog, taken)) = measured else {
                history.clear();
                tx.send_replace(None);
                continue;
            };
            let now = Instant::now();
            history.push_back((now, taken));
            while history.len() > 2 && now - history[1].0 >= WINDOW {
                history.pop_front();
            }
            let (t0, taken0) = history[0];
            let secs = (now - t0).as_secs_f64();
            let rate = if secs > 0.0 {
                (taken - taken0) as f64 / secs
            } else {
                f64::NAN
            };
            tx.send_replace((!rate.is_nan()).then_some(Backlog {
                messages: backlog,
                rate,
            }));
        }
    });
    Ok(rx)
}

/// The backlog and the sum of taken offsets over `topic`'s partitions.
fn measure(consumer: &BaseConsumer, topic: &str) -> Option<(i64, i64)> {
    let md = consumer.fetch_metadata(Some(topic), ASK_TIMEOUT).ok()?;
    let mut tpl = TopicPartitionList::new();
    for p in md.topics().first()?.partitions() {
        tpl.add_partition(topic, p.id());
    }
    let committed = consumer.committed_offsets(tpl, ASK_TIMEOUT).ok()?;
    let (mut backlog, mut taken_sum) = (0i64, 0i64);
    for e in committed.elements() {
        let taken = match e.metadata().strip_prefix(TAKEN).map(str::parse::<i64>) {
            Some(Ok(n)) => n,
            // From a consumer that does not say: its committed offset.
            _ => match e.offset() {
                Offset::Offset(n) => n,
                _ => return None, // the group has not started here
            },
        };
        let (_, high) = consumer
            .fetch_watermarks(topic, e.partition(), ASK_TIMEOUT)
            .ok()?;
        backlog += (high - taken).max(0);
        taken_sum += taken;
    }
    Some((backlog, taken_sum))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_is_backlog_over_rate() {
        let b = |messages, rate| Backlog { messages, rate }.wait();
        assert_eq!(b(0, 100.0), None);
        assert_eq!(b(500, 100.0), Some(Duration::from_secs(5)));
        assert_eq!(b(10, 0.0), Some(Duration::MAX));
    }
}
