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
) -> Option<Job> {
    let mut write = Write {
        forget_except: book.forget_except.take(),
        skipped: std::mem::take(&mut book.missed),
        shed: std::mem::take(&mut book.shed),
        shards,
        ..Write::default()
    };
    let missed = write.skipped.len();
    let (mut backfilled, mut load) = (Vec::new(), Vec::new());
    for (id, e) in &book.entries {
        match e.join {
            Join::Loading => load.push((*id, e.site.name.clone())),
            Join::Backfill { from, to } => {
                if let Some(from) = from {
                    backfill(
                        &book.ids,
                        &e.site,
                        &e.cadence,
                        from,
                        to,
                        backfill_limit,
                        &mut write,
                    );
                }
                write.sites.push((e.site.name.clone(), to));
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
                .filter_map(|e| Some((e.site.name.clone(), e.accounted_until()?))),
        );
    }
    let mut marks: BTreeMap<usize, DateTime<Utc>> = if watermarks {
        book.watermarks()
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
        missed,
        released,
        joined,
        backfilled,
        load,
    })
}

/// The slots in `[from, to)` recorded as missed: the last `limit` one by
/// one, any earlier ones as one gap.
fn backfill(
    ids: &crate::model::CheckIds,
    site: &Arc<crate::config::Site>,
    cadence: &Cadence,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    limit: u32,
    write: &mut Write,
) {
    const WHY: &str = "scheduler was not running";
    let (count, first) = cadence.count_between(from, to);
    let mut slot = first;
    if count > i64::from(limit) {
        let gap_slots = count - i64::from(limit);
        let gap_end = at_ms(first.timestamp_millis() + gap_slots * cadence.interval_ms);
        write.gaps.push(Gap {
            site: site.name.clone(),
            from: first,
            to: gap_end,
            slots: gap_slots,
            reason: WHY,
        });
        slot = gap_end;
    }
    while slot < to {
        write
            .skipped
            .push(skipped(ids, site, slot, ErrorKind::MissedSlot, WHY));
        slot = cadence.next(slot);
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
                    missed,
                    released,
                    joined,
                    backfilled,
                    load,
                },
            written,
            stored,
        } = self;
        if written {
            record_written(book, &write, &backfilled);
        } else {
            hand_back(book, write, missed, &released, joined);
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
            let to = start(&e.cadence, from);
            if let Some(f) = from {
                slots_missed += e.cadence.count_between(f, to).0;
            }
            e.next = to;
            e.join = Join::Backfill { from, to };
            if !e.parked {
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

fn record_written(book: &mut Book, write: &Write, backfilled: &[u64]) {
    for id in backfilled {
        if let Some(e) = book.entries.get_mut(id) {
            e.join = Join::Done;
        }
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

fn hand_back(book: &mut Book, mut w: Write, missed: usize, released: &[usize], joined: usize) {
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
