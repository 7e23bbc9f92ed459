//! Writing the scheduler's book to its ledger without stopping the clock.
//!
//! A flush is taken from the book in one synchronous step ([`take`]), written
//! by a future that owns everything it needs ([`Job::run`]) while the
//! scheduler goes on publishing slots, and its result put back into the book
//! ([`Done::apply`]). Why: the write is a round trip, and a scheduler that
//! awaited it would publish nothing meanwhile; under load that wait was the
//! largest part of its lateness.
//!
//! A flush writes in one transaction, so nothing is half-done: when it
//! fails, skipped slots and released watermarks go back into the book, a
//! skipped slot stays pending (holding its shard's watermark back) until its
//! row is written, and a site's backfill is retried. After the write, the
//! flush reads the progress on record of the sites being taken on.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::book::{skipped, Book, Join};
use super::seams::{Gap, Ledger, Stored, Write};
use super::{at_ms, Cadence};
use crate::model::ErrorKind;
use crate::telemetry::metrics as m;

/// What one flush does: write, then load.
pub(super) struct Job {
    write: Write,
    /// How many of `write.gaps` are closed holds (the first ones; the rest
    /// are backfill, rebuilt from the entries if the write fails).
    holds: usize,
    /// How many of `write.skipped` came from the book (the rest are backfill
    /// rows, rebuilt from the entries if the write fails).
    missed: usize,
    /// Shards in `write.watermarks` that were released (the others are
    /// computed afresh if the write fails).
    released: Vec<usize>,
    /// How many of `write.sites` are sites taken on (the rest were released).
    joined: usize,
    /// Entries whose backfill is in `write`.
    backfilled: Vec<u64>,
    /// Entries taken on whose progress is to be read.
    load: Vec<(u64, String)>,
}

/// What a flush did: the job, whether its write is durable, and the
/// progress read (`None`: nothing to read, or the read failed).
pub(super) struct Done {
    job: Job,
    written: bool,
    stored: Option<Stored>,
}

/// Takes what is to be written and loaded from the book; `None` when there
/// is nothing. Watermarks are written when `watermarks` says so (every few
/// seconds, and at the end), released ones always; at the `last` flush,
/// every site's own progress too.
pub(super) fn take(
    book: &mut Book,
    backfill_limit: u32,
    shards: usize,
    watermarks: bool,
    last: bool,
    now: DateTime<Utc>,
) -> Option<Job> {
    let mut write = Write {
        forget_except: book.forget_except.take(),
        skipped: std::mem::take(&mut book.missed),
        shed: std::mem::take(&mut book.shed),
        shards,
        ..Write::default()
    };
    let missed = write.skipped.len();
    let mut held = std::mem::take(&mut book.held);
    let holds = held.len();
    write.gaps.append(&mut held);
    let (mut backfilled, mut load) = (Vec::new(), Vec::new());
    for (id, e) in &book.entries {
        match e.join {
            Join::Loading => load.push((*id, e.site.name.clone())),
            Join::Backfill { from, to } => {
                if let Some(from) = from {
                    let on_record = book.on_record.get(id).map_or(&[][..], Vec::as_slice);
                    backfill(
                        &book.ids,
                        &e.site,
                        &e.cadence,
                        (from, to),
                        on_record,
                        backfill_limit,
                        &mut write,
                    );
                }
                // Its backfill is in this write, so its progress is where
                // it has got to since `to` (after a clock jump, past many
                // slots recorded in this write too); never past `now`, as
                // all progress (see `accounted_until`).
                let live = e.pending.first_in_flight().unwrap_or(e.next).max(to);
                let progress = live.min(now).min(e.held.unwrap_or(now));
                write.sites.push((e.site.name.clone(), progress));
                backfilled.push(*id);
            }
            Join::Done => {}
        }
    }
    let joined = write.sites.len();
    write.sites.append(&mut book.released_sites);
    if last {
        write.sites.extend(
            book.entries
                .values()
                .filter(|e| e.join == Join::Done)
                .filter_map(|e| Some((e.site.name.clone(), e.accounted_until(now)?))),
        );
    }
    let mut marks: BTreeMap<usize, DateTime<Utc>> = if watermarks {
        book.watermarks(now)
            .into_iter()
            .filter(|(s, t)| book.saved.get(s) != Some(t))
            .collect()
    } else {
        BTreeMap::new()
    };
    let mut released = Vec::new();
    for (shard, t) in std::mem::take(&mut book.released) {
        if t != DateTime::<Utc>::MIN_UTC {
            marks.insert(shard, t);
            released.push(shard);
        }
    }
    write.watermarks = marks.into_iter().collect();
    if write.is_empty() && load.is_empty() {
        return None;
    }
    Some(Job {
        write,
        holds,
        missed,
        released,
        joined,
        backfilled,
        load,
    })
}

/// The slots in `[from, to)` recorded as missed, but for those in gaps
/// already `on_record`: the first `limit` one by one, any later ones as
/// gaps. The first ones, right after the progress on record, are those a
/// previous owner may still have published before it died (its progress is
/// a few seconds old): their real results replace these rows when they
/// arrive, where a gap over them would stand beside them. The later ones
/// fall where no scheduler ran.
fn backfill(
    ids: &crate::model::CheckIds,
    site: &Arc<crate::config::Site>,
    cadence: &Cadence,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    on_record: &[(DateTime<Utc>, DateTime<Utc>)],
    limit: u32,
    write: &mut Write,
) {
    const WHY: &str = "scheduler was not running";
    let mut rows = i64::from(limit);
    // The stretches between the gaps on record.
    let mut start = from;
    let mut stretches = Vec::new();
    for (f, t) in on_record.iter().filter(|(f, t)| *t > from && *f < to) {
        stretches.push((start, (*f).max(start)));
        start = start.max(*t);
    }
    stretches.push((start, to));
    for (a, b) in stretches {
        let (count, first) = cadence.count_between(a, b);
        let n = count.min(rows);
        rows -= n;
        let mut slot = first;
        for _ in 0..n {
            write
                .skipped
                .push(skipped(ids, site, slot, ErrorKind::MissedSlot, WHY));
            slot = cadence.next(slot);
        }
        if count > n {
            write.gaps.push(Gap {
                site: site.name.clone(),
                from: slot,
                to: at_ms(first.timestamp_millis() + count * cadence.interval_ms),
                slots: count - n,
                reason: WHY,
            });
        }
    }
}

impl Job {
    pub(super) async fn run(self, ledger: Arc<dyn Ledger>) -> Done {
        let (write, load) = (&self.write, &self.load);
        let written = write.is_empty()
            || match ledger.write(write).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, skipped = write.skipped.len(),
                        "cannot write scheduler progress yet; kept in memory");
                    false
                }
            };
        let stored = if load.is_empty() {
            None
        } else {
            let names = load.iter().map(|(_, n)| n.clone()).collect();
            match ledger.load(names).await {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, sites = load.len(),
                        "cannot read the progress of sites taken on yet");
                    None
                }
            }
        };
        Done {
            job: self,
            written,
            stored,
        }
    }
}

impl Done {
    /// Puts the flush's result into the book; sites whose progress was read
    /// are scheduled (`start` picks each one's first slot). Entries released
    /// or replaced meanwhile (ids are never reused) are passed over.
    pub(super) fn apply(
        self,
        book: &mut Book,
        mut start: impl FnMut(&Cadence, Option<DateTime<Utc>>) -> DateTime<Utc>,
    ) {
        let Done {
            job:
                Job {
                    write,
                    holds,
                    missed,
                    released,
                    joined,
                    backfilled,
                    load,
                },
            written,
            stored,
        } = self;
        if !write.is_empty() {
            book.ledger_failing = !written;
        }
        if written {
            record_written(book, &write, &backfilled);
        } else {
            hand_back(book, write, holds, missed, &released, joined);
        }
        let Some(stored) = stored else { return };
        let mut slots_missed = 0i64;
        for (id, name) in load {
            let Some(e) = book.entries.get_mut(&id) else {
                continue;
            };
            if e.join != Join::Loading {
                continue;
            }
            let from = stored.progress_of(&name);
            let mut to = start(&e.cadence, from);
            if let (Some(f), Some(gaps)) = (from, stored.gaps.get(&name)) {
                // Not a slot in a gap on record either (a clock behind the
                // last owner's may find one of its held slots due).
                for g in gaps {
                    if g.0 <= to && to < g.1 {
                        to = e.cadence.first_at_or_after(g.1);
                    }
                }
                let inside: Vec<_> = gaps
                    .iter()
                    .filter(|g| g.1 > f && g.0 < to)
                    .copied()
                    .collect();
                if !inside.is_empty() {
                    book.on_record.insert(id, inside);
                }
                let ahead: Vec<_> = gaps.iter().filter(|g| g.1 > to).copied().collect();
                if !ahead.is_empty() {
                    book.ahead.insert(id, ahead);
                }
            }
            if let Some(f) = from {
                slots_missed += e.cadence.count_between(f, to).0;
            }
            e.next = to;
            e.join = Join::Backfill { from, to };
            if !e.parked && !gapped(e, book.unsaved_limit_ms) {
                book.schedule(id);
            }
        }
        if slots_missed > 0 {
            metrics::counter!(m::SLOTS_SKIPPED, "reason" => "no_scheduler")
                .increment(slots_missed as u64);
            tracing::warn!(
                slots = slots_missed,
                "slots missed while no scheduler ran; recording them"
            );
        }
    }
}

/// Whether `e`'s backfill ends in a gap: then its first slot waits until
/// the backfill is written. Why: were it published first and the process
/// died, the next owner's backfill from the same progress would put its
/// gap over that slot's row.
fn gapped(e: &super::book::Entry, limit_ms: i64) -> bool {
    match e.join {
        Join::Backfill { from: Some(f), to } => (to - f).num_milliseconds() >= limit_ms,
        _ => false,
    }
}

fn record_written(book: &mut Book, write: &Write, backfilled: &[u64]) {
    let limit = book.unsaved_limit_ms;
    // `write.sites` starts with the backfilled entries' progress, in the
    // same order (see `take`).
    for (id, (_, written)) in backfilled.iter().zip(&write.sites) {
        if let Some(e) = book.entries.get_mut(id) {
            if gapped(e, limit) && !e.parked {
                book.heap.push(std::cmp::Reverse((e.next, *id)));
            }
            e.own = Some(*written);
            e.join = Join::Done;
        }
        book.on_record.remove(id);
    }
    for s in &write.skipped {
        if let Some(e) = book
            .by_name
            .get(&s.site)
            .and_then(|id| book.entries.get_mut(id))
        {
            e.pending.remove(&s.scheduled_at);
        }
    }
    book.saved.extend(write.watermarks.iter().copied());
}

fn hand_back(
    book: &mut Book,
    mut w: Write,
    holds: usize,
    missed: usize,
    released: &[usize],
    joined: usize,
) {
    w.gaps.truncate(holds);
    w.gaps.append(&mut book.held);
    book.held = w.gaps;
    // A newer list, from a later config change, wins.
    if book.forget_except.is_none() {
        book.forget_except = w.forget_except;
    }
    // Back before the ones recorded meanwhile, as they would have been
    // written; backfill rows are rebuilt from the entries next time.
    w.skipped.truncate(missed);
    w.skipped.append(&mut book.missed);
    book.missed = w.skipped;
    // Closed runs count as accounted already: they go into the next flush.
    w.shed.append(&mut book.shed);
    book.shed = w.shed;
    book.released_sites.extend(w.sites.drain(joined..));
    for (shard, t) in w.watermarks {
        if released.contains(&shard) {
            let mark = book.released.entry(shard).or_insert(t);
            *mark = (*mark).min(t);
        }
    }
}
