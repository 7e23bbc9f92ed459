//! At-least-once offset tracking for consumers whose messages complete out
//! of order. A partition's committable offset is its lowest unfinished
//! offset (or one past the highest seen when nothing is unfinished), so a
//! commit never passes a message whose work is not durable yet.

use std::collections::{BTreeSet, HashMap};

use rdkafka::{Offset, TopicPartitionList};

#[derive(Debug, Default)]
struct Partition {
    /// Offsets taken but not finished.
    pending: BTreeSet<i64>,
    /// One past the highest offset taken.
    next: i64,
    /// Last offset committed (or handed out for commit).
    committed: i64,
    /// `next` as last reported in a commit's metadata.
    reported: i64,
}

/// The prefix of the commit metadata that says how far a consumer took a
/// partition.
const TAKEN: &str = "taken=";
/// Separates the commit time from the taken offset in the metadata.
const AT: &str = ";at=";

/// What a commit's metadata says (see [`commit_metadata`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    /// One past the highest offset the consumer had taken.
    pub next: i64,
    /// When the commit was made, Unix milliseconds; `None` from consumers
    /// built before the time was added, which wrote the offset alone.
    pub at_ms: Option<i64>,
}

/// The metadata of a commit: `taken=<next offset>;at=<Unix ms>`. The
/// time lets a reader tell a consumer that is stuck from one that merely
/// has not committed yet, and how many of the messages past `taken` it
/// has probably taken since (`bus::lag`).
pub fn commit_metadata(next: i64, at_ms: i64) -> String {
    format!("{TAKEN}{next}{AT}{at_ms}")
}

/// Parses [`commit_metadata`] (or the older `taken=<offset>`); `None` for
/// anything else, such as a commit made by another tool.
pub fn parse_metadata(metadata: &str) -> Option<Taken> {
    let rest = metadata.strip_prefix(TAKEN)?;
    let (next, at) = match rest.split_once(AT) {
        Some((next, at)) => (next, Some(at.parse().ok()?)),
        None => (rest, None),
    };
    Some(Taken {
        next: next.parse().ok()?,
        at_ms: at,
    })
}

#[derive(Debug, Default)]
pub struct OffsetTracker {
    parts: HashMap<(String, i32), Partition>,
}

impl OffsetTracker {
    pub fn start(&mut self, topic: &str, partition: i32, offset: i64) {
        let p = self
            .parts
            .entry((topic.to_owned(), partition))
            .or_insert_with(|| Partition {
                committed: offset,
                reported: offset,
                ..Partition::default()
            });
        p.pending.insert(offset);
        p.next = p.next.max(offset + 1);
    }

    pub fn finish(&mut self, topic: &str, partition: i32, offset: i64) {
        if let Some(p) = self.parts.get_mut(&(topic.to_owned(), partition)) {
            p.pending.remove(&offset);
        }
    }

    /// Messages taken and not finished, over all partitions.
    pub fn unfinished(&self) -> usize {
        self.parts.values().map(|p| p.pending.len()).sum()
    }

    /// The offsets that moved since the last call, ready to commit; `None`
    /// when nothing moved. Each carries in its metadata how far the consumer
    /// has *taken* the partition, and when ([`commit_metadata`]), which the
    /// committed offset (held back by the slowest unfinished message) does
    /// not tell: the scheduler reads it to measure the real backlog (see
    /// `bus::lag`).
    pub fn take_committable(&mut self) -> Option<TopicPartitionList> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), p) in &mut self.parts {
            let upto = p.pending.first().copied().unwrap_or(p.next);
            if upto > p.committed || p.next > p.reported {
                p.committed = p.committed.max(upto);
                p.reported = p.next;
                tpl.add_partition_offset(topic, *partition, Offset::Offset(p.committed))
                    .expect("valid offset");
                if let Some(mut e) = tpl.find_partition(topic, *partition) {
                    e.set_metadata(commit_metadata(p.next, now_ms));
                }
            }
        }
        (tpl.count() > 0).then_some(tpl)
    }

    /// Forgets partitions this consumer no longer owns: their unfinished
    /// messages will be redelivered to the new owner.
    pub fn revoke(&mut self, revoked: &TopicPartitionList) {
        for e in revoked.elements() {
            self.parts.remove(&(e.topic().to_owned(), e.partition()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(tpl: Option<TopicPartitionList>) -> Vec<(i32, i64)> {
        let mut v: Vec<(i32, i64)> = tpl
            .map(|t| {
                t.elements()
                    .iter()
                    .map(|e| (e.partition(), e.offset().to_raw().unwrap()))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    #[test]
    fn never_commits_past_an_unfinished_message() {
        let mut t = OffsetTracker::default();
        for o in 10..15 {
            t.start("t", 0, o);
        }
        t.finish("t", 0, 12);
        t.finish("t", 0, 13);
        // Held at 10, but how far it was taken is reported.
        let tpl = t.take_committable().unwrap();
        let said = parse_metadata(tpl.elements()[0].metadata()).unwrap();
        assert_eq!(said.next, 15);
        let age = chrono::Utc::now().timestamp_millis() - said.at_ms.unwrap();
        assert!((0..60_000).contains(&age), "committed {age} ms ago");
        assert_eq!(offsets(Some(tpl)), [(0, 10)]);
        assert_eq!(offsets(t.take_committable()), [], "nothing moved");
        t.finish("t", 0, 10);
        assert_eq!(offsets(t.take_committable()), [(0, 11)]);
        t.finish("t", 0, 11);
        assert_eq!(offsets(t.take_committable()), [(0, 14)]);
        assert_eq!(offsets(t.take_committable()), [], "nothing moved");
        t.finish("t", 0, 14);
        assert_eq!(offsets(t.take_committable()), [(0, 15)]);
        assert_eq!(t.unfinished(), 0);
    }

    #[test]
    fn metadata_reads_back_and_the_older_form_is_understood() {
        let t = |next, at_ms| Some(Taken { next, at_ms });
        assert_eq!(
            parse_metadata(&commit_metadata(15, 1_700)),
            t(15, Some(1_700))
        );
        assert_eq!(parse_metadata("taken=15"), t(15, None));
        for other in ["", "taken=", "taken=x", "taken=15;at=", "offset=15"] {
            assert_eq!(parse_metadata(other), None, "{other:?}");
        }
    }

    #[test]
    fn partitions_are_independent_and_revocable() {
        let mut t = OffsetTracker::default();
        t.start("t", 0, 0);
        t.start("t", 1, 100);
        t.finish("t", 1, 100);
        // Partition 0 reports what it took (offset unchanged).
        assert_eq!(offsets(t.take_committable()), [(0, 0), (1, 101)]);
        let mut revoked = TopicPartitionList::new();
        revoked.add_partition("t", 0);
        t.revoke(&revoked);
        t.finish("t", 0, 0);
        assert_eq!(offsets(t.take_committable()), []);
        assert_eq!(t.unfinished(), 0);
    }
}
