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
        let mut stage = Stage::new(clients.len());
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
            tx.send_replace(stage.read(Instant::now(), &each));
        }
    });
    Ok(rx)
}

/// The rate history of each group of a stage.
struct Stage {
    /// Per group: (when, taken offsets summed over its partitions).
    history: Vec<VecDeque<(Instant, i64)>>,
}

impl Stage {
    fn new(groups: usize) -> Stage {
        Stage {
            history: vec![VecDeque::new(); groups],
        }
    }

    /// The stage's backlog from each group's `(backlog, taken)` measured at
    /// `now` (`None`: the group has not started, or did not answer).
    ///
    /// Rates are kept per group: when one starts or stops answering, a sum
    /// of taken offsets would jump by its own and read as work done.
    fn read(&mut self, now: Instant, each: &[Option<(i64, i64)>]) -> Option<Backlog> {
        let (mut messages, mut rate, mut any) = (0i64, 0.0f64, false);
        let mut fresh = false;
        for (history, m) in self.history.iter_mut().zip(each) {
            let Some((backlog, taken)) = *m else {
                history.clear();
                continue;
            };
            history.push_back((now, taken));
            while history.len() > 2 && now - history[1].0 >= WINDOW {
                history.pop_front();
            }
            let (t0, taken0) = history[0];
            let secs = (now - t0).as_secs_f64();
            if secs <= 0.0 {
                fresh = true; // a group's first figure: no rate yet
                continue;
            }
            let r = (taken - taken0) as f64 / secs;
            (messages, rate, any) = (messages + backlog, rate + r, true);
        }
        (any && !fresh).then_some(Backlog { messages, rate })
    }
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
    fn a_group_that_starts_late_adds_no_rate() {
        let t = Instant::now();
        let at = |s: u64| t + Duration::from_secs(s);
        let mut stage = Stage::new(2);
        // Only the first group has started; its first figure has no rate.
        assert_eq!(stage.read(at(0), &[Some((100, 1_000)), None]), None);
        let one = stage.read(at(1), &[Some((100, 1_500)), None]).unwrap();
        assert_eq!((one.messages, one.rate), (100, 500.0));
        // The second starts with 50,000 taken: not a rate of 50,000/s.
        assert_eq!(
            stage.read(at(2), &[Some((100, 2_000)), Some((40, 50_000))]),
            None
        );
        let both = stage
            .read(at(3), &[Some((100, 2_500)), Some((40, 50_010))])
            .unwrap();
        assert_eq!((both.messages, both.rate), (140, 510.0));
    }

    #[test]
    fn wait_is_backlog_over_rate() {
        let b = |messages, rate| Backlog { messages, rate }.wait();
        assert_eq!(b(0, 100.0), None);
        assert_eq!(b(500, 100.0), Some(Duration::from_secs(5)));
        assert_eq!(b(10, 0.0), Some(Duration::MAX));
    }
}
