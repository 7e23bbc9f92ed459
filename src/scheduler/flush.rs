//! Writing the scheduler's book to Postgres without stopping the clock.
//!
//! A flush is taken from the book in one synchronous step ([`take`]), written
//! by a future that owns everything it needs ([`Job::write`]) while the
//! scheduler goes on publishing slots, and its result put back into the book
//! ([`Done::apply`]). Why: the write is a round trip (often thousands of
//! progress rows), and a scheduler that awaited it would publish nothing
//! meanwhile; under load that wait was the largest part of its lateness.
//!
//! Nothing is lost when a write fails: skipped slots and released progress go
//! back into the book, and a slot stays pending (holding `accounted_until`
//! back) until its skipped row is written.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;

use super::{at_ms, skipped, Book, Cadence};
use crate::config::Site;
use crate::store::{self, SkippedSlot, StoreError};
use crate::telemetry::metrics as m;

/// Skipped rows written per statement when backfilling.
const BACKFILL_CHUNK: usize = 5_000;

/// What one flush writes, in this order; a failed step ends the flush and
/// hands the rest back.
pub(super) struct Job {
    /// After a config change: forget the progress of every other site.
    forget_except: Option<Vec<String>>,
    /// Sites taken on whose missed slots must be recorded first.
    adopted: Vec<Adopted>,
    released: Vec<(String, DateTime<Utc>)>,
    missed: Vec<SkippedSlot>,
    /// Per site: `accounted_until` as of the take, to be written...
    progress: Vec<(String, DateTime<Utc>)>,
    /// ...and the same per entry id, to be marked saved once written.
    progress_ids: Vec<(u64, DateTime<Utc>)>,
    backfill_limit: i64,
}

struct Adopted {
    id: u64,
    site: Arc<Site>,
    cadence: Cadence,
    /// The first slot this instance publishes.
    to: DateTime<Utc>,
}

/// What a flush wrote, and what it hands back.
pub(super) struct Done {
    forgot: bool,
    forget_except: Option<Vec<String>>,
    /// Entries whose backfill is written, with their new saved progress.
    backfilled: Vec<(u64, DateTime<Utc>)>,
    released: Vec<(String, DateTime<Utc>)>,
    /// Skipped rows written: their slots are no longer pending.
    written: Vec<SkippedSlot>,
    /// Skipped rows not written: back into the book.
    unwritten: Vec<SkippedSlot>,
    saved: Vec<(u64, DateTime<Utc>)>,
}

/// Takes what is to be written from the book. `None` when there is nothing.
pub(super) fn take(book: &mut Book, backfill_limit: u32) -> Option<Job> {
    let adopted: Vec<Adopted> = book
        .entries
        .iter()
        .filter_map(|(id, e)| {
            e.backfill_to.map(|to| Adopted {
                id: *id,
                site: Arc::clone(&e.site),
                cadence: e.cadence,
                to,
            })
        })
        .collect();
    let (mut progress, mut progress_ids) = (Vec::new(), Vec::new());
    for (id, e) in &book.entries {
        let t = e.accounted_until();
        if e.backfill_to.is_none() && e.saved != Some(t) {
            progress.push((e.site.name.clone(), t));
            progress_ids.push((*id, t));
        }
    }
    let job = Job {
        forget_except: book.forget_except.take(),
        adopted,
        released: std::mem::take(&mut book.released),
        missed: std::mem::take(&mut book.missed),
        progress,
        progress_ids,
        backfill_limit: i64::from(backfill_limit),
    };
    let empty = job.forget_except.is_none()
        && job.adopted.is_empty()
        && job.released.is_empty()
        && job.missed.is_empty()
        && job.progress.is_empty();
    (!empty).then_some(job)
}

impl Job {
    pub(super) async fn write(self, pool: Pool) -> Done {
        let Job {
            forget_except,
            adopted,
            released,
            missed,
            progress,
            progress_ids,
            backfill_limit,
        } = self;
        let mut done = Done {
            forgot: false,
            forget_except,
            backfilled: Vec::new(),
            released,
            written: Vec::new(),
            unwritten: missed,
            saved: Vec::new(),
        };
        let mut client = match pool.get().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "scheduler cannot reach Postgres; progress kept in memory");
                return done;
            }
        };
        if let Some(names) = &done.forget_except {
            match store::forget_progress_except(&**client, names).await {
                Ok(_) => done.forgot = true,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot forget removed sites' progress yet");
                    return done;
                }
            }
        }
        if !adopted.is_empty() {
            match backfill(&mut client, &adopted, backfill_limit).await {
                Ok(()) => done.backfilled = adopted.iter().map(|a| (a.id, a.to)).collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot record missed slots of adopted sites yet");
                    return done;
                }
            }
        }
        if !done.released.is_empty() {
            match store::save_progress(&**client, &done.released).await {
                Ok(()) => done.released.clear(),
                Err(e) => tracing::warn!(error = %e, "cannot save released sites' progress yet"),
            }
        }
        if !done.unwritten.is_empty() {
            if let Err(e) = store::insert_skipped(&**client, &done.unwritten).await {
                tracing::warn!(error = %e, skipped = done.unwritten.len(), "cannot record skipped slots yet");
                return done;
            }
            done.written = std::mem::take(&mut done.unwritten);
        }
        if progress.is_empty() {
            return done;
        }
        match store::save_progress(&**client, &progress).await {
            Ok(()) => done.saved = progress_ids,
            Err(e) => tracing::warn!(error = %e, "cannot save scheduler progress yet"),
        }
        done
    }
}

impl Done {
    /// Puts the flush's result into the book. Entries released or replaced
    /// meanwhile (ids are never reused) are passed over.
    pub(super) fn apply(self, book: &mut Book) {
        if !self.forgot {
            // A newer list, from a later config change, wins.
            if book.forget_except.is_none() {
                book.forget_except = self.forget_except;
            }
        }
        for (id, to) in self.backfilled {
            if let Some(e) = book.entries.get_mut(&id) {
                e.backfill_to = None;
                e.saved = Some(to);
            }
        }
        book.released.extend(self.released);
        for s in self.written {
            if let Some(e) = book
                .by_name
                .get(&s.site)
                .and_then(|id| book.entries.get_mut(id))
            {
                e.pending.remove(&s.scheduled_at);
            }
        }
        // Written before the ones recorded meanwhile, as they would have been.
        if !self.unwritten.is_empty() {
            let newer = std::mem::replace(&mut book.missed, self.unwritten);
            book.missed.extend(newer);
        }
        for (id, t) in self.saved {
            if let Some(e) = book.entries.get_mut(&id) {
                e.saved = Some(t);
            }
        }
    }
}

/// For sites taken on: the slots from their saved progress up to the first
/// slot this instance published are recorded as skipped (beyond
/// `backfill_limit` per site, as one `schedule_gaps` row), and progress is
/// moved to that first slot — in one transaction.
async fn backfill(
    client: &mut deadpool_postgres::Object,
    adopted: &[Adopted],
    limit: i64,
) -> Result<(), StoreError> {
    let names: Vec<String> = adopted.iter().map(|a| a.site.name.clone()).collect();
    let tx = client.transaction().await?;
    let stored = store::load_progress_of(&*tx, &names).await?;
    let (mut total, mut batch, mut progress) = (0i64, Vec::new(), Vec::new());
    for a in adopted {
        let name = &a.site.name;
        progress.push((name.clone(), a.to));
        let Some(&from) = stored.get(name) else {
            continue; // a new site: its history starts now
        };
        let (count, first) = a.cadence.count_between(from, a.to);
        let mut slot = first;
        if count > limit {
            // Too many to write one by one: one gap row for the oldest.
            let gap_slots = count - limit;
            let gap_end = at_ms(first.timestamp_millis() + gap_slots * a.cadence.interval_ms);
            store::record_gap(
                &*tx,
                name,
                first,
                gap_end,
                gap_slots,
                "scheduler was not running",
            )
            .await?;
            slot = gap_end;
        }
        while slot < a.to {
            batch.push(skipped(&a.site, slot, "scheduler was not running"));
            if batch.len() == BACKFILL_CHUNK {
                store::insert_skipped(&*tx, &batch).await?;
                batch.clear();
            }
            slot = a.cadence.next(slot);
        }
        total += count;
    }
    store::insert_skipped(&*tx, &batch).await?;
    store::save_progress(&*tx, &progress).await?;
    tx.commit().await?;
    if total > 0 {
        metrics::counter!(m::SLOTS_SKIPPED, "reason" => "no_scheduler").increment(total as u64);
        tracing::warn!(
            slots = total,
            sites = adopted.len(),
            "recorded slots missed while no scheduler ran"
        );
    }
    Ok(())
}
