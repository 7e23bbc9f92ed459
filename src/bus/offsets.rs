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
    /// when nothing moved.
    pub fn take_committable(&mut self) -> Option<TopicPartitionList> {
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), p) in &mut self.parts {
            let upto = p.pending.first().copied().unwrap_or(p.next);
            if upto > p.committed {
                p.committed = upto;
                tpl.add_partition_offset(topic, *partition, Offset::Offset(upto))
                    .expect("valid offset");
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
        assert_eq!(offsets(t.take_committable()), []);
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
    fn partitions_are_independent_and_revocable() {
        let mut t = OffsetTracker::default();
        t.start("t", 0, 0);
        t.start("t", 1, 100);
        t.finish("t", 1, 100);
        assert_eq!(offsets(t.take_committable()), [(1, 101)]);
        let mut revoked = TopicPartitionList::new();
        revoked.add_partition("t", 0);
        t.revoke(&revoked);
        t.finish("t", 0, 0);
        assert_eq!(offsets(t.take_committable()), []);
        assert_eq!(t.unfinished(), 0);
    }
}
