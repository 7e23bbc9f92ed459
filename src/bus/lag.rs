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
//! and when (`taken=<offset>;at=<ms>`); the backlog here is the log end
//! offset minus that, less what the group took since the commit at its
//! rate. A group that took nothing for two seconds while messages waited
//! is told apart at once ([`Backlog::paused`]), where a rate averaged over
//! a few seconds reaches zero only at the window's end.
//!
//! Each group is measured apart, with the rate messages arrive at: a stage
//! of two groups (the persisters) is as fast as each group is on its own
//! share of the messages, and a stuck group must not read as the whole
//! stage's backlog.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::offsets::parse_metadata;
use super::{client_config, BusError};
use crate::config::Settings;

/// How often the backlog is measured.
const EVERY: Duration = Duration::from_secs(1);
/// The rates are averaged over this window.
pub(crate) const WINDOW: Duration = Duration::from_secs(5);
/// Broker requests give up after this long.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);
/// What was taken since a commit is estimated over at most this much of
/// its age: consumers commit every second while they take messages
/// (`bus::consumer`), so an older commit is from a consumer that was not
/// taking (a persister writing its batch), and a consumer whose clock runs
/// behind ours must not hide more than this of the backlog.
const MAX_AGE: Duration = Duration::from_millis(1_200);
/// A group that took nothing for this long while messages waited is
/// [`Backlog::paused`]: the start of a stall, or a long batch write.
const PAUSE: Duration = Duration::from_secs(2);

/// The checkers' consumer group: `<kafka.group_prefix>-checker`.
pub fn checker_group(settings: &Settings) -> String {
    format!("{}-checker", settings.kafka.group_prefix)
}

/// A persister's consumer group: `<kafka.group_prefix>-persister-<which>`,
/// `which` being `succeeded` or `failed`.
pub fn persister_group(settings: &Settings, which: &str) -> String {
    format!("{}-persister-{which}", settings.kafka.group_prefix)
}

/// One consumer group's figures at one measurement.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Backlog {
    /// Messages published and not yet taken: those past each partition's
    /// last commit, less what the group has taken since at its rate (a
    /// commit is up to a second old; a group that keeps up would otherwise
    /// show a second of backlog). Partitions the group took nothing from
    /// over the window while messages waited there (a member stuck) are
    /// left out while others move: shedding would not drain them.
    pub messages: i64,
    /// Messages taken per second over the last few seconds.
    pub rate: f64,
    /// Messages published to the topic per second over the same seconds
    /// (growth of the log end offsets).
    pub arrival: f64,
    /// Nothing was taken over the window while messages waited (a broker
    /// restart, a rebalance, the consumers stopped or stuck).
    pub stalled: bool,
    /// Nothing was taken over the last [`PAUSE`] while messages waited:
    /// the start of a stall, before the rate averaged over the window
    /// reaches 0, or a persister's long batch write.
    pub paused: bool,
    /// Which reading this is: they are numbered from 0, one a second
    /// ([`EVERY`]) whether or not the group answered, so a difference of
    /// readings is a number of seconds.
    pub reading: u64,
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

/// Measures the backlog of each `(group, topic)` of one stage (the
/// persisters: one group per result topic) every second until `shutdown`;
/// the receiver holds the latest figures, in the order of `stage` (`None`
/// for a group that has committed on no partition of its topic, whose
/// first figure has no rate yet, or while the broker does not answer).
///
/// Commit times come from the consumers' clocks: they are assumed in step
/// with this host's to well under a second (NTP).
///
/// Errors: a Kafka client cannot be created (bad settings).
pub fn watch(
    settings: &Settings,
    stage: &[(String, String)],
    shutdown: CancellationToken,
) -> Result<watch::Receiver<Vec<Option<Backlog>>>, BusError> {
    // Clients of the groups that never join them: they only read offsets.
    let mut clients = Vec::new();
    for (group, topic) in stage {
        let consumer: BaseConsumer = client_config(settings)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()?;
        clients.push((consumer, topic.clone()));
    }
    let (tx, rx) = watch::channel(vec![None; clients.len()]);
    let clients = std::sync::Arc::new(clients);
    tokio::spawn(async move {
        let mut stage = Stage::new(clients.len());
        let mut tick = tokio::time::interval(EVERY);
        // After a slow reading, not two at once: a rate needs the seconds.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let c = clients.clone();
            let each: Vec<Option<Offsets>> = tokio::task::spawn_blocking(move || {
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

/// One group's offsets on its topic at one reading.
#[derive(Debug, Clone, Default)]
struct Offsets {
    /// Log end offsets, summed over the partitions.
    end: i64,
    /// Per partition, in partition order.
    parts: Vec<Part>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Part {
    /// How far the group has taken it; `None` before its first commit.
    taken: Option<i64>,
    /// Messages past that (from the log start before a first commit: our
    /// consumers start from the earliest offset).
    waiting: i64,
    /// How long ago the commit was made, when it says.
    age: Option<Duration>,
}

/// The rate history of each group of a stage.
struct Stage {
    /// Per group: its readings over the last [`WINDOW`].
    history: Vec<VecDeque<(Instant, Offsets)>>,
    /// Readings made so far.
    readings: u64,
}

impl Stage {
    fn new(groups: usize) -> Stage {
        Stage {
            history: vec![VecDeque::new(); groups],
            readings: 0,
        }
    }

    /// Each group's backlog from its offsets read at `now` (`None`: the
    /// group has not started, or did not answer).
    ///
    /// The rate counts only partitions committed at both ends of the
    /// window: a group, or a partition, that starts with a taken offset
    /// far from zero has done no work meanwhile.
    fn read(&mut self, now: Instant, each: &[Option<Offsets>]) -> Vec<Option<Backlog>> {
        let reading = self.readings;
        self.readings += 1;
        self.history
            .iter_mut()
            .zip(each)
            .map(|(history, o)| {
                let Some(o) = o else {
                    history.clear();
                    return None;
                };
                if history
                    .back()
                    .is_some_and(|(_, h)| h.parts.len() != o.parts.len())
                {
                    history.clear(); // partitions were added
                }
                history.push_back((now, o.clone()));
                while history.len() > 2 && now - history[1].0 >= WINDOW {
                    history.pop_front();
                }
                backlog(history).map(|b| Backlog { reading, ..b })
            })
            .collect()
    }
}

/// Messages taken from `from` to `to` over the partitions committed in
/// both, and whether any waited at `from`. A partition whose new owner
/// reports less than the old one (it restarts from the committed offset
/// after a rebalance) counts as none taken, not as work undone.
fn taken_between(from: &Offsets, to: &Offsets) -> (i64, bool) {
    let taken = (from.parts.iter().zip(&to.parts))
        .filter_map(|(a, b)| Some((b.taken? - a.taken?).max(0)))
        .sum();
    (taken, from.parts.iter().any(|p| p.waiting > 0))
}

/// A group's backlog from its readings over the window, oldest first
/// (see [`Backlog`]; `reading` left 0); `None` until they span the window
/// but a second: a rate over less would be read from a group that has
/// just started, or come back, taking up a backlog.
fn backlog(history: &VecDeque<(Instant, Offsets)>) -> Option<Backlog> {
    let ((t0, first), (now, last)) = (history.front()?, history.back()?);
    let secs = (*now - *t0).as_secs_f64();
    if secs < (WINDOW - EVERY).as_secs_f64() {
        return None;
    }
    let (taken, waited) = taken_between(first, last);
    let rate = (taken as f64 / secs).max(0.0);
    let arrival = ((last.end - first.end) as f64 / secs).max(0.0);
    let paused = history
        .iter()
        .rev()
        .find(|(t, _)| *now - *t >= PAUSE)
        .is_some_and(|(_, then)| taken_between(then, last) == (0, true));
    // A partition is stuck when messages waited there at the window's
    // start and none was taken since.
    let stuck = |(a, b): (&Part, &Part)| a.waiting > 0 && a.taken.is_some() && a.taken == b.taken;
    let all_stuck = rate <= 0.0 && waited;
    // The rate spread evenly over the partitions, as keys spread messages.
    let per_part = rate / last.parts.len().max(1) as f64;
    let mut messages = 0.0f64;
    for (a, b) in first.parts.iter().zip(&last.parts) {
        if b.waiting <= 0 || (!all_stuck && stuck((a, b))) {
            continue;
        }
        let age = b.age.unwrap_or_default().min(MAX_AGE);
        messages += (b.waiting as f64 - per_part * age.as_secs_f64()).max(0.0);
    }
    Some(Backlog {
        messages: messages.round() as i64,
        rate,
        arrival,
        stalled: all_stuck,
        paused,
        reading: 0,
    })
}

/// How long before `now_ms` a commit made at `at_ms` was (Unix ms); 0 for
/// a commit from a clock ahead of ours.
fn age(now_ms: i64, at_ms: i64) -> Duration {
    Duration::from_millis((now_ms - at_ms).max(0) as u64)
}

/// The offsets of `topic`'s partitions as `consumer`'s group committed
/// them; `None` if the group has committed on none, or the broker did not
/// answer.
fn measure(consumer: &BaseConsumer, topic: &str) -> Option<Offsets> {
    let md = consumer.fetch_metadata(Some(topic), ASK_TIMEOUT).ok()?;
    let mut tpl = TopicPartitionList::new();
    for p in md.topics().first()?.partitions() {
        tpl.add_partition(topic, p.id());
    }
    let committed = consumer.committed_offsets(tpl, ASK_TIMEOUT).ok()?;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut elements = committed.elements();
    elements.sort_by_key(|e| e.partition());
    let mut o = Offsets::default();
    for e in elements {
        let (low, high) = consumer
            .fetch_watermarks(topic, e.partition(), ASK_TIMEOUT)
            .ok()?;
        let said = parse_metadata(e.metadata());
        let taken = match (said, e.offset()) {
            (Some(t), _) => Some(t.next),
            // From a consumer that does not say: its committed offset.
            (None, Offset::Offset(n)) => Some(n),
            _ => None,
        };
        let age = said.and_then(|t| t.at_ms).map(|at| age(now_ms, at));
        o.end += high;
        o.parts.push(Part {
            taken,
            waiting: (high - taken.unwrap_or(low)).max(0),
            age,
        });
    }
    o.parts.iter().any(|p| p.taken.is_some()).then_some(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(taken: Option<i64>, waiting: i64, age_ms: Option<u64>) -> Part {
        Part {
            taken,
            waiting,
            age: age_ms.map(Duration::from_millis),
        }
    }

    /// A group's offsets: `(taken, waiting)` per partition, commits fresh.
    fn offsets(end: i64, parts: &[(Option<i64>, i64)]) -> Option<Offsets> {
        Some(Offsets {
            end,
            parts: parts.iter().map(|&(t, w)| part(t, w, Some(0))).collect(),
        })
    }

    /// The backlog from readings spread evenly over 4 s from `t` (the
    /// shortest span that gives a figure).
    fn over(t: Instant, readings: Vec<Vec<Part>>) -> Option<Backlog> {
        let last = (readings.len() as u64 - 1).max(1);
        let history = readings
            .into_iter()
            .enumerate()
            .map(|(i, parts)| {
                let at = t + Duration::from_millis(4_000 * i as u64 / last);
                (at, Offsets { end: 0, parts })
            })
            .collect();
        backlog(&history)
    }

    #[test]
    fn a_group_or_a_partition_that_starts_late_adds_no_rate() {
        let t = Instant::now();
        let at = |s: i64| t + Duration::from_secs(s as u64);
        let mut stage = Stage::new(2);
        // Group a takes 500/s on its first partition; its second has no
        // commit yet. Group b starts at second 6 with 50,000 taken, then
        // takes 10/s.
        let a = |s: i64| offsets(1_100 + 500 * s, &[(Some(1_000 + 500 * s), 100), (None, 0)]);
        let b = |s: i64| (s >= 6).then(|| offsets(50_100, &[(Some(50_000 + 10 * (s - 6)), 40)]));
        let mut last = Vec::new();
        for s in 0..=10 {
            last = stage.read(at(s), &[a(s), b(s).flatten()]);
            // No figure before a group's readings span 4 s.
            assert_eq!(last[0].is_some(), s >= 4, "a at {s}");
            assert_eq!(last[1].is_some(), s >= 10, "b at {s}");
        }
        let (fa, fb) = (last[0].unwrap(), last[1].unwrap());
        let want = (100, 500.0, 500.0, 10);
        assert_eq!((fa.messages, fa.rate, fa.arrival, fa.reading), want);
        assert_eq!(fb.rate, 10.0, "not 50,000 taken in a few seconds");
        // The second partition's first commit, 7,000 in: the rate stays
        // what was taken on the first.
        let late = offsets(20_000, &[(Some(6_500), 100), (Some(7_000), 0)]);
        let fa = stage.read(at(11), &[late, b(11).flatten()])[0].unwrap();
        assert_eq!(fa.rate, 500.0, "{fa:?}");
        // A group that stops answering is measured again once its
        // readings span 4 s; the readings are counted all along.
        assert_eq!(stage.read(at(12), &[None, b(12).flatten()])[0], None);
        for s in 13..17 {
            assert_eq!(stage.read(at(s), &[a(s), b(s).flatten()])[0], None);
        }
        let back = stage.read(at(17), &[a(17), b(17).flatten()])[0].unwrap();
        assert_eq!((back.reading, back.rate), (17, 500.0));
        // Partitions added: measured afresh.
        let two = offsets(60_000, &[(Some(50_200), 0), (None, 9)]);
        assert_eq!(stage.read(at(18), &[a(18), two])[1], None);
    }

    #[test]
    fn what_was_taken_since_a_commit_is_not_backlog() {
        let t = Instant::now();
        // 1,000 messages/s over 2 partitions, commits 0.6 s and 0.2 s old:
        // 500/s x 0.6 s and 500/s x 0.2 s of what waits was taken since.
        let first = vec![part(Some(0), 0, Some(0)), part(Some(0), 0, Some(0))];
        let parts = vec![
            part(Some(2_000), 700, Some(600)),
            part(Some(2_000), 300, Some(200)),
        ];
        let b = over(t, vec![first.clone(), parts]).unwrap();
        assert_eq!(
            (b.rate, b.messages, b.stalled, b.paused),
            (1_000.0, 600, false, false)
        );
        // At most 1.2 s of it: an older commit is from a consumer that was
        // not taking, or whose clock is behind.
        let old = vec![
            part(Some(2_000), 2_000, Some(10_000)),
            part(Some(2_000), 0, Some(0)),
        ];
        assert_eq!(over(t, vec![first.clone(), old]).unwrap().messages, 1_400);
        // A commit without a time: all of it counts.
        let untimed = vec![part(Some(2_000), 700, None), part(Some(2_000), 0, None)];
        assert_eq!(over(t, vec![first, untimed]).unwrap().messages, 700);
        // A commit time ahead of our clock is no age at all.
        assert_eq!(age(1_000, 4_000), Duration::ZERO);
        assert_eq!(age(4_000, 1_000), Duration::from_secs(3));
    }

    #[test]
    fn a_new_owner_behind_the_old_one_is_no_work_undone() {
        // After a rebalance partition 0's new owner reports 900 where the
        // old one had taken 1,000; partition 1 took 400 meanwhile.
        let t = Instant::now();
        let before = vec![part(Some(1_000), 50, Some(0)), part(Some(0), 0, Some(0))];
        let after = vec![part(Some(900), 150, Some(0)), part(Some(400), 0, Some(0))];
        let b = over(t, vec![before, after]).unwrap();
        assert_eq!(b.rate, 100.0, "{b:?}");
    }

    #[test]
    fn a_stuck_partition_is_left_out_while_others_move() {
        let t = Instant::now();
        let stuck = |_| part(Some(100), 5_000, None);
        let moving = |i: i64| part(Some(100 + 1_000 * i), 100, Some(0));
        let window = |other: &dyn Fn(i64) -> Part| -> Vec<Vec<Part>> {
            (0..6).map(|i| vec![stuck(i), other(i)]).collect()
        };
        // One member stuck, one taking: its 5,000 are left out.
        let b = over(t, window(&moving)).unwrap();
        assert_eq!((b.messages, b.stalled), (100, false), "{b:?}");
        // Both stuck: the group is stalled and all of it is its backlog.
        let b = over(t, window(&stuck)).unwrap();
        assert_eq!(
            (b.messages, b.rate, b.stalled),
            (10_000, 0.0, true),
            "{b:?}"
        );
    }

    #[test]
    fn a_group_that_took_nothing_for_two_seconds_is_paused_before_its_rate_reaches_0() {
        let t = Instant::now();
        let p = |taken| vec![part(Some(taken), 3_000, Some(0))];
        let b = over(t, vec![p(0), p(1_000), p(2_000), p(2_000), p(2_000)]).unwrap();
        assert!(b.paused && !b.stalled, "{b:?}");
        assert_eq!(b.rate, 500.0);
        // One second without a commit is not a pause.
        let b = over(t, vec![p(0), p(1_000), p(2_000), p(3_000), p(3_000)]).unwrap();
        assert!(!b.paused, "{b:?}");
        // Nor two seconds with nothing waiting.
        let idle = |taken| vec![part(Some(taken), 0, Some(0))];
        let b = over(t, vec![idle(0), idle(5), idle(5), idle(5)]).unwrap();
        assert!(!b.paused && !b.stalled, "{b:?}");
    }

    #[test]
    fn wait_is_backlog_over_rate() {
        let b = |messages, rate| {
            Backlog {
                messages,
                rate,
                ..Backlog::default()
            }
            .wait()
        };
        assert_eq!(b(0, 100.0), None);
        assert_eq!(b(500, 100.0), Some(Duration::from_secs(5)));
        assert_eq!(b(10, 0.0), Some(Duration::MAX));
    }
}
