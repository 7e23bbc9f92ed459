//! The scheduler's state: one entry per scheduled site, a heap of due slots,
//! and what waits to be written. Pure data: no clock, no I/O.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::seams::Gap;
use super::shed::Shedder;
use super::Cadence;
use crate::config::Site;
use crate::model::{self, ErrorKind};
use crate::store::SkippedSlot;

/// One scheduled site.
pub(super) struct Entry {
    pub site: Arc<Site>,
    pub shard: usize,
    pub cadence: Cadence,
    /// The slot that will be due next (in the heap, unless parked or
    /// still loading).
    pub next: DateTime<Utc>,
    /// Slots published but not acknowledged, or recorded as skipped but not
    /// yet written.
    pub pending: Pending,
    pub join: Join,
    /// Its shard was revoked: nothing is published until it comes back or
    /// the entry is released.
    pub parked: bool,
}

/// How far taking a site on has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Join {
    /// Its progress on record is being read; nothing is published yet.
    Loading,
    /// Publishing from `to` on; the slots in `[from, to)` are still to be
    /// recorded as missed (`from` is `None` for a new site: nothing to
    /// record, only the site's own progress row to write).
    Backfill {
        from: Option<DateTime<Utc>>,
        to: DateTime<Utc>,
    },
    Done,
}

impl Entry {
    /// The time before which every slot of this site is delivered or on
    /// record (as far as this instance knows); `None` while loading.
    pub fn accounted_until(&self) -> Option<DateTime<Utc>> {
        match self.join {
            Join::Loading => None,
            Join::Backfill { from: Some(f), .. } => Some(f),
            Join::Backfill { from: None, .. } | Join::Done => {
                Some(self.pending.first().unwrap_or(self.next))
            }
        }
    }
}

/// A site's pending slots, in order. Almost always zero or one (two while a
/// slow acknowledgement overlaps the next slot), so they are kept inline: a
/// `BTreeSet` kept a 144-byte node per site once it had held a slot (14 MB
/// at 100k sites).
#[derive(Default)]
pub(super) struct Pending(pub smallvec::SmallVec<[DateTime<Utc>; 2]>);

impl Pending {
    pub fn insert(&mut self, slot: DateTime<Utc>) {
        if let Err(at) = self.0.binary_search(&slot) {
            self.0.insert(at, slot);
        }
    }

    pub fn remove(&mut self, slot: &DateTime<Utc>) {
        if let Ok(at) = self.0.binary_search(slot) {
            self.0.remove(at);
        }
    }

    pub fn first(&self) -> Option<DateTime<Utc>> {
        self.0.first().copied()
    }
}

/// Entries by id, a min-heap of due slots (stale items are passed over when
/// popped), and what waits to be written.
#[derive(Default)]
pub(super) struct Book {
    pub entries: HashMap<u64, Entry>,
    pub by_name: HashMap<String, u64>,
    pub heap: BinaryHeap<Reverse<(DateTime<Utc>, u64)>>,
    pub next_id: u64,
    /// Slots recorded as skipped, not yet written.
    pub missed: Vec<SkippedSlot>,
    /// After a config change: forget the progress of every other site.
    pub forget_except: Option<Vec<String>>,
    /// Watermarks of shards handed to another instance, not yet written...
    pub released: BTreeMap<usize, DateTime<Utc>>,
    /// ...and the progress of each of their sites.
    pub released_sites: Vec<(String, DateTime<Utc>)>,
    /// Watermarks as last written, per shard.
    pub saved: HashMap<usize, DateTime<Utc>>,
    /// The ids slots get (the store's cutover, migration V17).
    pub ids: model::CheckIds,
    /// Which sites are checked this minute under load.
    pub shedder: Shedder,
    /// Open shed runs by entry: a site held back within a minute, while
    /// the share stays below its rank.
    /// An open run's first slot is pending (its slots are not on record).
    pub shedding: HashMap<u64, ShedRun>,
    /// Closed shed runs, not yet written: every flush writes all of them
    /// before any progress, so a closed run's slots count as accounted.
    pub shed: Vec<Gap>,
}

/// A site's slots shed in one minute: `gap` covers them, `[from, to)`.
pub(super) struct ShedRun {
    pub minute: i64,
    pub gap: Gap,
}

impl Book {
    /// Per shard with entries: the earliest `accounted_until` among them.
    /// A shard with an entry still loading has none (its progress is not
    /// known yet), nor has a shard listed in `except`.
    pub fn watermarks(&self) -> BTreeMap<usize, DateTime<Utc>> {
        let mut marks: BTreeMap<usize, Option<DateTime<Utc>>> = BTreeMap::new();
        for e in self.entries.values() {
            let t = e.accounted_until();
            marks
                .entry(e.shard)
                .and_modify(|m| *m = m.zip(t).map(|(a, b)| a.min(b)))
                .or_insert(t);
        }
        marks
            .into_iter()
            .filter_map(|(s, t)| Some((s, t?)))
            .collect()
    }

    /// Removes an entry; when its shard moved away, its progress goes into
    /// the shard's released watermark (or, unknown while loading, holds the
    /// watermark back: the stored one stays the next owner's start).
    pub fn release(&mut self, id: u64, handed_over: bool) {
        let Some(mut e) = self.entries.remove(&id) else {
            return;
        };
        self.by_name.remove(&e.site.name);
        // Its shed slots are written in the flush that hands its progress
        // over, before the progress: the next owner starts after them.
        if let Some(run) = self.shedding.remove(&id) {
            e.pending.remove(&run.gap.from);
            self.shed.push(run.gap);
        }
        let e = e;
        if !handed_over {
            return;
        }
        let t = e.accounted_until();
        if let Some(t) = t {
            self.released_sites.push((e.site.name.clone(), t));
        }
        let mark = self
            .released
            .entry(e.shard)
            .or_insert(DateTime::<Utc>::MAX_UTC);
        *mark = match t {
            Some(t) => (*mark).min(t),
            None => DateTime::<Utc>::MIN_UTC,
        };
    }

    /// Closes `id`'s shed run, if open: it is written with the next flush,
    /// before that flush's progress, so its slots no longer hold the
    /// site's progress back (holding it back would have a next owner
    /// record them a second time, as missed).
    pub fn close_run(&mut self, id: u64) {
        let Some(run) = self.shedding.remove(&id) else {
            return;
        };
        if let Some(e) = self.entries.get_mut(&id) {
            e.pending.remove(&run.gap.from);
        }
        self.shed.push(run.gap);
    }

    /// Closes the shed runs of minutes before `minute`.
    pub fn close_runs_before(&mut self, minute: i64) {
        let ended: Vec<u64> = self
            .shedding
            .iter()
            .filter(|(_, r)| r.minute < minute)
            .map(|(id, _)| *id)
            .collect();
        for id in ended {
            self.close_run(id);
        }
    }

    pub fn schedule(&mut self, id: u64) {
        if let Some(e) = self.entries.get(&id) {
            self.heap.push(Reverse((e.next, id)));
        }
    }
}

/// The row of a slot recorded as skipped.
pub(super) fn skipped(
    ids: &model::CheckIds,
    site: &Site,
    slot: DateTime<Utc>,
    kind: ErrorKind,
    why: &str,
) -> SkippedSlot {
    SkippedSlot {
        check_id: ids.scheduled(&site.name, slot),
        site: site.name.clone(),
        url: site.url.to_string(),
        scheduled_at: slot,
        kind: kind.as_str(),
        message: why.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_slots_stay_ordered_and_unique() {
        let t = |s: i64| DateTime::from_timestamp(s, 0).unwrap();
        let mut p = Pending::default();
        assert_eq!(p.first(), None);
        for s in [30, 10, 20, 10] {
            p.insert(t(s));
        }
        assert_eq!(p.0.as_slice(), &[t(10), t(20), t(30)]);
        p.remove(&t(10));
        p.remove(&t(99)); // not there: nothing happens
        assert_eq!(p.first(), Some(t(20)));
        p.remove(&t(20));
        p.remove(&t(30));
        assert_eq!(p.first(), None);
    }
}
