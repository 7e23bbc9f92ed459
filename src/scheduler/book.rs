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
use crate::store::{SkippedSlot, Span};

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
    /// A new interval from a reload that came while slots of the old one
    /// were due and not yet handled: those are handled on the old cadence
    /// (published or recorded), then this one takes over from `.0`.
    pub switch: Option<(DateTime<Utc>, Cadence)>,
    /// The own progress row written when it was taken on (see `durable`).
    pub own: Option<DateTime<Utc>>,
    /// The first slot held back since: more than `backfill_limit` slots
    /// past the progress on record (Postgres is away). See `Book::held`.
    pub held: Option<DateTime<Utc>>,
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
    ///
    /// Never later than `now`, though the next slot may be an hour away:
    /// the claim must hold for whoever reads it, and a reader may schedule
    /// the site on another interval (a reload or a restart changed it) or
    /// be another site of the shard that this instance did not schedule.
    /// "Nothing was due before `next`" is true only of this cadence; "every
    /// slot before `now` is accounted" is true of any.
    pub fn accounted_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let t = match self.join {
            Join::Loading => return None,
            Join::Backfill { from: Some(f), .. } => f,
            // Slots recorded as skipped do not hold it back: their rows
            // wait in `Book::missed`, which goes whole into the same flush
            // as this progress (or the hand-over that carries it).
            Join::Backfill { from: None, .. } | Join::Done => {
                self.pending.first_in_flight().unwrap_or(self.next)
            }
        };
        Some(t.min(now).min(self.held.unwrap_or(now)))
    }
}

/// A site's pending slots, in order, each with whether it is recorded as
/// skipped (its row waits in `Book::missed`, written with the next flush)
/// or still in flight. Almost always zero or one (two while a slow
/// acknowledgement overlaps the next slot), so they are kept inline: a
/// `BTreeSet` kept a 144-byte node per site once it had held a slot (14 MB
/// at 100k sites).
#[derive(Default)]
pub(super) struct Pending(pub smallvec::SmallVec<[(DateTime<Utc>, bool); 2]>);

impl Pending {
    pub fn insert(&mut self, slot: DateTime<Utc>) {
        if let Err(at) = self.0.binary_search_by_key(&slot, |p| p.0) {
            self.0.insert(at, (slot, false));
        }
    }

    /// `slot` is recorded as skipped: its row goes with the next flush.
    pub fn record(&mut self, slot: DateTime<Utc>) {
        if let Ok(at) = self.0.binary_search_by_key(&slot, |p| p.0) {
            self.0[at].1 = true;
        }
    }

    pub fn remove(&mut self, slot: &DateTime<Utc>) {
        if let Ok(at) = self.0.binary_search_by_key(slot, |p| p.0) {
            self.0.remove(at);
        }
    }

    /// The first slot still in flight.
    pub fn first_in_flight(&self) -> Option<DateTime<Utc>> {
        self.0.iter().find(|p| !p.1).map(|p| p.0)
    }
}

/// Entries by id, a min-heap of due slots (stale items are passed over when
/// popped), and what waits to be written.
#[derive(Default)]
pub(super) struct Book {
    pub entries: HashMap<u64, Entry>,
    pub by_name: HashMap<String, u64>,
    /// Entries per shard (a shard without any has nothing to hand over).
    pub per_shard: HashMap<usize, usize>,
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
    /// Closed holds, not yet written (with the progress, in one
    /// transaction). Why a site is held: after a crash the next owner
    /// records the slots after the progress on record as rows, the first
    /// `backfill_limit` of them, and the rest as a gap; a slot published
    /// beyond those would have its row beside the gap. So while Postgres
    /// is away a site publishes at most that many slots past its progress
    /// on record, then holds the rest back, recorded as one gap when
    /// progress can be written again.
    pub held: Vec<Gap>,
    /// How far past its progress on record a site may go before it is
    /// held (`backfill_limit` slots of `min_interval`; see `held`).
    pub unsaved_limit_ms: i64,
    /// The entries with a hold open.
    pub holding: std::collections::HashSet<u64>,
    /// Postgres refused the last flush's write: sites may be held.
    pub ledger_failing: bool,
    /// Entries in backfill: the gaps on record in their range, which the
    /// backfill passes over (see `seams::Stored::gaps`).
    pub on_record: HashMap<u64, Vec<Span>>,
    /// Entries taken on: the gaps on record past their first slot (a last
    /// owner's clock ran ahead of ours), whose slots are not published.
    pub ahead: HashMap<u64, Vec<Span>>,
}

/// Why held slots are not checked.
pub(super) const HELD: &str = "progress could not be saved";

/// A site's slots shed in one minute: `gap` covers them, `[from, to)`.
pub(super) struct ShedRun {
    pub minute: i64,
    pub gap: Gap,
}

impl Book {
    /// Per shard with entries: the earliest `accounted_until` among them.
    /// A shard with an entry still loading has none (its progress is not
    /// known yet).
    pub fn watermarks(&self, now: DateTime<Utc>) -> BTreeMap<usize, DateTime<Utc>> {
        let mut marks: BTreeMap<usize, Option<DateTime<Utc>>> = BTreeMap::new();
        for e in self.entries.values() {
            let t = e.accounted_until(now);
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

    /// Where this site's progress on record is, as far as this instance
    /// knows: its own row, or its shard's watermark as last written here.
    pub fn durable(&self, e: &Entry) -> Option<DateTime<Utc>> {
        let own = match e.join {
            Join::Backfill { from, .. } => from,
            _ => e.own,
        };
        match (own, self.saved.get(&e.shard)) {
            (Some(a), Some(b)) => Some(a.max(*b)),
            (a, b) => a.or(b.copied()),
        }
    }

    /// Whether `id`'s `slot` is held back: too far past the site's saved
    /// progress (see `held`). Opens the hold, or closes it before `slot`.
    pub fn held_back(&mut self, id: u64, slot: DateTime<Utc>) -> bool {
        let Some(e) = self.entries.get(&id) else {
            return false;
        };
        let over = self
            .durable(e)
            .is_some_and(|d| (slot - d).num_milliseconds() >= self.unsaved_limit_ms);
        if over {
            metrics::counter!(crate::telemetry::metrics::SLOTS_SKIPPED, "reason" => "held")
                .increment(1);
        }
        match (over, e.held.is_some()) {
            (true, true) => true,
            (true, false) => {
                self.close_run(id);
                let first = self.holding.is_empty();
                let e = self.entries.get_mut(&id).expect("looked up above");
                e.held = Some(slot);
                self.holding.insert(id);
                // Once, not per site: at a million sites, a million lines.
                if first {
                    tracing::warn!(site = %e.site.name,
                        "progress cannot be saved; holding checks back until it can (sites so far past it are recorded as one gap each)");
                }
                true
            }
            (false, true) => {
                self.release_hold(id, slot);
                false
            }
            (false, false) => false,
        }
    }

    /// Closes every hold (at the last flush, or once Postgres is back).
    pub fn release_holds(&mut self) {
        // Every flush asks: most of them with nothing held.
        for id in std::mem::take(&mut self.holding) {
            if let Some(next) = self.entries.get(&id).map(|e| e.next) {
                self.release_hold(id, next);
            }
        }
    }

    /// Closes `id`'s hold, if any, before `to`: its slots become a gap.
    pub fn release_hold(&mut self, id: u64, to: DateTime<Utc>) {
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        let Some(from) = e.held.take() else { return };
        self.holding.remove(&id);
        let gap = held_gap(e, from, to);
        self.held.push(gap);
    }

    /// A reload changed `id`'s interval to `new`'s; true when the entry is
    /// to be scheduled again (its next slot moved).
    pub fn change_interval(&mut self, id: u64, new: Cadence, now: DateTime<Utc>) -> bool {
        // Slots of the old cadence in flight are recorded now: a next
        // owner would not know that cadence.
        self.record_in_flight(id, "not confirmed by Kafka when the interval changed");
        let Some(next) = self.entries.get(&id).map(|e| e.next) else {
            return false;
        };
        if next > now {
            // A hold or a shed run counts the old cadence's slots: they end
            // at the change.
            self.release_hold(id, next);
            self.close_run(id);
        }
        let Some(e) = self.entries.get_mut(&id) else {
            return false;
        };
        let loaded = e.join != Join::Loading;
        if !loaded || e.next > now {
            // From the new cadence's next slot, not after the old one's
            // (an hour away, for a site shortened from 1 h to 1 min). The
            // last slot handled is before `now`: none is repeated.
            e.next = new.first_at_or_after(now);
            e.cadence = new;
            e.switch = None;
            // A backfill not yet written ends where publishing now starts.
            if let Join::Backfill { from, to } = e.join {
                e.join = Join::Backfill {
                    from,
                    to: to.min(e.next),
                };
            }
            loaded
        } else {
            // Slots of the old cadence are due (the loop has not run
            // since): they are handled first, then `new` takes over.
            e.switch = Some((now, new));
            false
        }
    }

    /// Records as skipped every slot in flight since before `since`: one
    /// the broker has not confirmed for long (a partition without its
    /// replicas, say) would hold its shard's progress back until its
    /// deadline, up to a day, and with it every site of the shard (see
    /// `held`). It goes on being retried; a real result replaces the row.
    pub fn record_long_in_flight(&mut self, since: DateTime<Utc>) {
        let stale: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, e)| e.pending.first_in_flight().is_some_and(|t| t < since))
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            self.record_in_flight(id, "not confirmed by Kafka within a minute");
        }
    }

    /// Records `id`'s slots still in flight as skipped (`why`): their row
    /// goes with the next flush, and a real result that arrives later
    /// replaces it. For when their fate would otherwise be left to a next
    /// owner that may schedule the site on another cadence.
    pub fn record_in_flight(&mut self, id: u64, why: &str) {
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        // An open shed run's first slot is pending too: its run records it.
        let shed = self.shedding.get(&id).map(|r| r.gap.from);
        let in_flight: Vec<DateTime<Utc>> = e
            .pending
            .0
            .iter()
            .filter(|p| !p.1 && Some(p.0) != shed)
            .map(|p| p.0)
            .collect();
        for slot in in_flight {
            e.pending.record(slot);
            self.missed.push(skipped(
                &self.ids,
                &e.site,
                slot,
                ErrorKind::MissedSlot,
                why,
            ));
        }
    }

    /// Whether `slot` of `id` is in a gap on record already; forgets the
    /// gaps that end before it.
    pub fn on_record_ahead(&mut self, id: u64, slot: DateTime<Utc>) -> bool {
        let Some(gaps) = self.ahead.get_mut(&id) else {
            return false;
        };
        gaps.retain(|g| g.1 > slot);
        let inside = gaps.iter().any(|g| g.0 <= slot);
        if gaps.is_empty() {
            self.ahead.remove(&id);
        }
        inside
    }

    /// Removes an entry; when its shard moved away, its progress goes into
    /// the shard's released watermark (or, unknown while loading, holds the
    /// watermark back: the stored one stays the next owner's start).
    pub fn release(&mut self, id: u64, handed_over: bool, now: DateTime<Utc>) {
        if let Some(next) = self.entries.get(&id).map(|e| e.next) {
            self.release_hold(id, next);
        }
        self.ahead.remove(&id);
        self.on_record.remove(&id);
        let Some(mut e) = self.entries.remove(&id) else {
            return;
        };
        self.by_name.remove(&e.site.name);
        if let Some(n) = self.per_shard.get_mut(&e.shard) {
            *n -= 1;
            if *n == 0 {
                self.per_shard.remove(&e.shard);
            }
        }
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
        let t = e.accounted_until(now);
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

/// The gap of `e`'s slots held back in `[from, to)` (`from` is one).
pub(super) fn held_gap(e: &Entry, from: DateTime<Utc>, to: DateTime<Utc>) -> Gap {
    Gap {
        site: e.site.name.clone(),
        from,
        to,
        slots: e.cadence.count_between(from, to).0,
        reason: HELD,
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
        assert_eq!(p.first_in_flight(), None);
        for s in [30, 10, 20, 10] {
            p.insert(t(s));
        }
        assert_eq!(
            p.0.iter().map(|x| x.0).collect::<Vec<_>>(),
            &[t(10), t(20), t(30)]
        );
        p.record(t(10));
        assert_eq!(p.first_in_flight(), Some(t(20)));
        p.remove(&t(10));
        p.remove(&t(99)); // not there: nothing happens
        assert_eq!(p.first_in_flight(), Some(t(20)));
        p.remove(&t(20));
        p.remove(&t(30));
        assert_eq!(p.first_in_flight(), None);
    }
}
