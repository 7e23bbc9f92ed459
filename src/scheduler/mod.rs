//! The scheduler stage: one `CheckRequest` per enabled site per slot,
//! published to `status_request_created`, for the sites of the shards this
//! instance owns (see [`shards`]); the site list follows config reloads.
//!
//! Every slot of every site, from the site's first slot on, ends as exactly
//! one row: the scheduler publishes it (and a checker's outcome becomes the
//! row), or records it as `skipped` itself. How missed slots are found:
//!
//! * Slots are due at absolute times (see [`slots`]). When several slots of
//!   a site are due at once (the process was paused, the broker was slow),
//!   only the latest is published; the earlier ones are recorded as skipped
//!   (`missed_slot`): no burst.
//! * A published slot is *pending* until the broker acknowledges it. If it
//!   cannot be delivered before its deadline it is recorded as skipped.
//! * Every few seconds the scheduler saves one watermark per shard: the time
//!   before which every slot of every site in the shard is delivered or
//!   recorded (the earliest pending slot, or the next slot not yet due, over
//!   the shard's sites). Writes scale with shards, not with checks.
//! * When an instance takes a site on (at start, or when its shard moves
//!   here from an instance that stopped or died) it first reads the site's
//!   progress: the later of its shard's watermark and the site's own row
//!   (written once, when a site is first taken on; see migration V11). If
//!   the latest slot since then is still within its deadline (one interval)
//!   it is published at once, marked `late`; the slots before it are
//!   recorded as skipped (`missed_slot`). A slot that was in fact delivered
//!   before a crash may get such a row; its real result replaces the
//!   placeholder when it arrives (see `store::insert_results`).
//! * A site removed from the config (or disabled) loses its saved progress:
//!   when it comes back, its history restarts at its next slot.
//!
//! The clock, the publisher and the progress store are seams ([`seams`]),
//! so the accounting is unit-tested in paused time (`tests.rs`).

mod book;
mod flush;
pub mod seams;
pub mod shards;
mod shed;
mod slots;
#[cfg(test)]
mod tests;

pub use seams::{Clock, Ledger, RequestSink, Seams};
pub use shards::{member_id, shard_of, Ownership};
pub use slots::Cadence;

use std::cmp::Reverse;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::error::KafkaError;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::bus::BusError;
use crate::config::{Coordination, Settings, Site};
use crate::liveness::Beat;
use crate::model::{ErrorKind, LATE_AFTER};
use crate::telemetry::metrics as m;
use book::{skipped, Book, Entry, Join, Pending, ShedRun};
use seams::Gap;

/// Pause before a failed slot is published again.
const RETRY_PAUSE: Duration = Duration::from_millis(250);
/// How often skipped slots and backfills are written.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// A slot the broker has not confirmed for this long is recorded as
/// skipped while it is retried (see `Book::record_long_in_flight`).
const UNCONFIRMED_AFTER: chrono::Duration = chrono::Duration::minutes(1);
/// How often shard watermarks are written. Longer means fewer writes, and
/// after a crash more delivered slots that get a (harmless) placeholder.
const WATERMARK_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Kafka(#[from] KafkaError),
}

/// The configured sites, as the daemon publishes them (again on reload).
/// Entries share the `Arc<Site>`s: one copy of each site in the process.
pub use crate::config::SiteList;

pub struct Scheduler {
    settings: Arc<Settings>,
    seams: Seams,
    /// Where shard leases are held (`coordination = "postgres"`).
    leases: Option<Pool>,
    /// Proves to the watchdog and `/readyz` that the loop turns.
    beat: Beat,
    sites: watch::Receiver<SiteList>,
    ownership: Ownership,
}

type Delivery = BoxFuture<'static, (u64, Arc<Site>, DateTime<Utc>, Result<(), KafkaError>)>;

impl Scheduler {
    /// The daemon's scheduler on `seams` ([`Seams::daemon`]), holding shard
    /// leases in `pool` under `coordination = "postgres"`.
    pub fn new(
        settings: Arc<Settings>,
        seams: Seams,
        pool: Pool,
        beat: Beat,
        sites: watch::Receiver<SiteList>,
        ownership: Ownership,
    ) -> Self {
        let leases = match settings.scheduler.coordination {
            Coordination::Postgres => Some(pool),
            Coordination::None => None,
        };
        Self::with_seams(settings, seams, leases, beat, sites, ownership)
    }

    /// A scheduler on the given seams; `leases`: where to hold shard leases
    /// (`None`: `ownership` is managed by the caller).
    pub fn with_seams(
        settings: Arc<Settings>,
        seams: Seams,
        leases: Option<Pool>,
        beat: Beat,
        sites: watch::Receiver<SiteList>,
        ownership: Ownership,
    ) -> Self {
        Scheduler {
            settings,
            seams,
            leases,
            beat,
            sites,
            ownership,
        }
    }

    fn now(&self) -> DateTime<Utc> {
        self.seams.clock.now()
    }

    /// The latest backlog of each consumer group of each stage after this
    /// one.
    fn backlogs(&self) -> Vec<Vec<Option<crate::bus::lag::Backlog>>> {
        self.seams
            .backlogs
            .iter()
            .map(|b| b.borrow().clone())
            .collect()
    }

    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), SchedulerError> {
        // The group is left only after the last progress is saved, so the
        // next owner starts where this one stopped.
        let leave = CancellationToken::new();
        let leases = self.leases.clone().map(|pool| {
            tokio::spawn(shards::hold(
                pool,
                self.settings.scheduler.failover_timeout,
                self.ownership.clone(),
                leave.clone(),
            ))
        });
        let mut owned = self.ownership.subscribe();
        let scheduler = &self.settings.scheduler;
        let mut book = Book {
            ids: self.seams.ids,
            // Counted on the shortest interval allowed: a next owner may
            // schedule a site on any (a reload may change it before then),
            // and its backfill records that many rows one by one.
            unsaved_limit_ms: i64::from(scheduler.backfill_limit)
                * scheduler.min_interval.as_millis() as i64,
            ..Book::default()
        };
        self.reconcile(&mut book, true);
        let mut deliveries: FuturesUnordered<Delivery> = FuturesUnordered::new();
        let mut flush = tokio::time::interval(FLUSH_EVERY);
        let mut marks_due = tokio::time::Instant::now();
        // The flush being written, if any: one at a time, beside publishing.
        let mut writing: Option<BoxFuture<'static, flush::Done>> = None;
        self.beat.running();
        tracing::info!(shards = self.ownership.shards(), "scheduler started");

        let result = loop {
            let wait = book
                .heap
                .peek()
                .map(|Reverse((t, _))| until(self.now(), *t));
            let sleep = async {
                match wait {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break Ok(()),
                _ = sleep => {
                    if let Err(e) = self.emit_due(&mut book, &mut deliveries).await {
                        break Err(e);
                    }
                }
                Some((id, site, slot, result)) = deliveries.next(), if !deliveries.is_empty() => {
                    self.delivered(&mut book, id, site, slot, result, &mut deliveries);
                }
                _ = flush.tick() => {
                    self.beat.beat();
                    if writing.is_none() {
                        let marks = tokio::time::Instant::now() >= marks_due;
                        writing = self.start_flush(&mut book, marks, false);
                        if marks {
                            marks_due = tokio::time::Instant::now() + WATERMARK_EVERY;
                        }
                    }
                }
                done = async { writing.as_mut().expect("guarded").await }, if writing.is_some() => {
                    writing = None;
                    self.apply(done, &mut book);
                }
                Ok(()) = self.sites.changed() => self.reconcile(&mut book, true),
                Ok(()) = owned.changed() => {
                    owned.mark_unchanged();
                    self.reconcile(&mut book, false);
                }
            }
        };

        // Wait (bounded) for acknowledgements so progress is as far as it
        // can be; what is still unconfirmed is recorded as skipped (a real
        // result that arrives replaces the row), not left to a next owner
        // that may schedule the site on another interval.
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some((id, _, slot, result)) = deliveries.next().await {
                if let (Ok(()), Some(e)) = (result, book.entries.get_mut(&id)) {
                    e.pending.remove(&slot);
                }
            }
        })
        .await;
        let ids: Vec<u64> = book.entries.keys().copied().collect();
        for id in ids {
            book.record_in_flight(id, "not confirmed by Kafka before the scheduler stopped");
        }
        if let Some(w) = writing.take() {
            let done = w.await;
            self.apply(done, &mut book);
        }
        if let Some(w) = self.start_flush(&mut book, true, true) {
            let done = w.await;
            self.apply(done, &mut book);
        }
        leave.cancel();
        if let Some(task) = leases {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "scheduler lease task failed");
            }
        }
        tracing::info!("scheduler stopped");
        result
    }

    /// Takes a flush from the book; its write runs beside publishing.
    fn start_flush(
        &self,
        book: &mut Book,
        watermarks: bool,
        last: bool,
    ) -> Option<BoxFuture<'static, flush::Done>> {
        // A shard let go whose sites are all released and whose hand-over
        // is written (the flush before this one wrote it, or there was
        // nothing to write): its lease may go.
        for shard in 0..self.ownership.shards() {
            if self.ownership.is_handing_over(shard)
                && !self.ownership.owns(shard)
                && !book.per_shard.contains_key(&shard)
                && !book.released.contains_key(&shard)
            {
                self.ownership.handed_over(shard);
            }
        }
        book.record_long_in_flight(self.now() - UNCONFIRMED_AFTER);
        // Holds end once Postgres takes writes, and their gaps go with the
        // progress past them.
        if last || !book.ledger_failing {
            book.release_holds();
        }
        let watermarks = watermarks || !book.held.is_empty();
        book.close_runs_before(if last {
            i64::MAX
        } else {
            shed::minute_of(self.now())
        });
        let job = flush::take(
            book,
            self.settings.scheduler.backfill_limit,
            self.ownership.shards(),
            watermarks,
            last,
            self.now(),
        )?;
        Some(Box::pin(job.run(Arc::clone(&self.seams.ledger))))
    }

    fn apply(&self, done: flush::Done, book: &mut Book) {
        let now = self.now();
        done.apply(book, |cadence, from| first_slot(cadence, from, now));
    }

    /// Brings the entries in line with the configured sites and the owned
    /// shards: takes on new sites, releases the ones that moved away or were
    /// removed, applies changed definitions from their next slot.
    fn reconcile(&mut self, book: &mut Book, config_changed: bool) {
        let config = self.sites.borrow_and_update().clone();
        let now = self.now();
        let wanted: HashMap<&str, &Arc<Site>> = config
            .iter()
            .filter(|s| s.enabled)
            .map(|s| (s.name.as_str(), s))
            .collect();
        if config_changed {
            book.forget_except = Some(wanted.keys().map(|n| n.to_string()).collect());
            book.shedder.configure(wanted.values().map(|s| s.interval));
        }
        let (mut adopted, mut released) = (0usize, 0usize);
        let ids: Vec<u64> = book.entries.keys().copied().collect();
        for id in ids {
            let e = book.entries.get_mut(&id).expect("listed id");
            match wanted.get(e.site.name.as_str()) {
                Some(site) if self.ownership.owns(e.shard) => {
                    let loaded = e.join != Join::Loading;
                    let mut resume = e.parked && loaded;
                    if site.interval != e.site.interval {
                        let new = Cadence::new(&site.name, site.interval);
                        resume |= book.change_interval(id, new, now);
                    }
                    let e = book.entries.get_mut(&id).expect("listed id");
                    e.site = Arc::clone(site);
                    e.parked = false;
                    if resume {
                        book.schedule(id);
                    }
                }
                // The shard moved away: its progress is handed over.
                Some(_) => {
                    book.release(id, true, now);
                    released += 1;
                }
                None => {
                    book.release(id, false, now);
                    released += 1;
                }
            }
        }
        for (name, site) in wanted {
            let shard = shard_of(name, self.ownership.shards());
            if book.by_name.contains_key(name) || !self.ownership.owns(shard) {
                continue;
            }
            let id = book.next_id;
            book.next_id += 1;
            book.entries.insert(
                id,
                Entry {
                    site: Arc::clone(site),
                    shard,
                    cadence: Cadence::new(name, site.interval),
                    next: now,
                    pending: Pending::default(),
                    join: Join::Loading,
                    parked: false,
                    switch: None,
                    own: None,
                    held: None,
                },
            );
            book.by_name.insert(name.to_owned(), id);
            *book.per_shard.entry(shard).or_default() += 1;
            adopted += 1;
        }
        metrics::gauge!(m::SCHEDULED_SITES).set(book.entries.len() as f64);
        if adopted + released > 0 {
            tracing::info!(
                adopted,
                released,
                scheduled = book.entries.len(),
                shards = self.ownership.count(),
                "scheduler sites changed"
            );
        }
    }

    async fn emit_due(
        &self,
        book: &mut Book,
        deliveries: &mut FuturesUnordered<Delivery>,
    ) -> Result<(), SchedulerError> {
        let now = self.now();
        // Read once per pass, not per slot: the figures change once a second.
        let backlogs = self.backlogs();
        while let Some(&Reverse((slot, id))) = book.heap.peek() {
            if slot > now {
                break;
            }
            book.heap.pop();
            let Some(e) = book.entries.get_mut(&id) else {
                continue; // released
            };
            if e.next != slot || e.parked {
                continue; // superseded by a cadence change
            }
            if !self.ownership.owns(e.shard) {
                // Revoked a moment ago; the reconcile that follows releases it.
                e.parked = true;
                continue;
            }
            let old_next = e.cadence.next(slot);
            // Judged on the cadence `slot` belongs to, before any switch.
            let on_record = !book.ahead.is_empty() && book.on_record_ahead(id, slot);
            let held = !on_record && book.held_back(id, slot);
            let e = book.entries.get_mut(&id).expect("looked up above");
            let mut next = old_next;
            if let Some((at, new)) = e.switch.filter(|(at, _)| old_next > *at) {
                // The old cadence ends at the reload; a hold on it ends
                // there too, after this slot (its gap counts old slots).
                book.release_hold(id, old_next);
                let e = book.entries.get_mut(&id).expect("looked up above");
                next = new.first_at_or_after(at.max(slot + chrono::Duration::milliseconds(1)));
                e.cadence = new;
                e.switch = None;
            }
            let e = book.entries.get_mut(&id).expect("looked up above");
            e.next = next;
            book.heap.push(Reverse((next, id)));
            if on_record || held {
                continue;
            }
            let e = book.entries.get_mut(&id).expect("looked up above");
            let minute = shed::minute_of(slot);
            // One decision a slot, for a run under way and a new one alike.
            let shed = self.settings.scheduler.load_shedding
                && book.shedder.sheds(&e.site, minute, &backlogs);
            // A site held back this minute stays held back while the share
            // is below its rank: one run.
            if let Some(run) = book.shedding.get_mut(&id) {
                if run.minute == minute && run.gap.to == slot && shed {
                    run.gap.to = next;
                    run.gap.slots += 1;
                    metrics::counter!(m::SLOTS_SKIPPED, "reason" => "load_shed").increment(1);
                    continue;
                }
                book.close_run(id);
            }
            let e = book.entries.get_mut(&id).expect("looked up above");
            e.pending.insert(slot);
            if next <= now {
                // A later slot is due too: publish only the latest.
                e.pending.record(slot);
                book.missed.push(skipped(
                    &book.ids,
                    &e.site,
                    slot,
                    ErrorKind::MissedSlot,
                    "scheduler was behind",
                ));
                metrics::counter!(m::SLOTS_SKIPPED, "reason" => "behind").increment(1);
                continue;
            }
            if shed {
                // The slot stays pending until the run closes.
                let gap = Gap {
                    site: e.site.name.clone(),
                    from: slot,
                    to: next,
                    slots: 1,
                    reason: shed::REASON,
                };
                book.shedding.insert(id, ShedRun { minute, gap });
                metrics::counter!(m::SLOTS_SKIPPED, "reason" => "load_shed").increment(1);
                continue;
            }
            // Read at the publish itself: a slot late because earlier ones
            // in this pass took their time counts as late.
            let lateness = (self.now() - slot).to_std().unwrap_or_default();
            metrics::histogram!(m::LATENESS).record(lateness.as_secs_f64());
            let site = e.site.clone();
            let mut request = site.request(book.ids.scheduled(&site.name, slot), slot);
            request.late = lateness >= LATE_AFTER;
            let ack = self.seams.sink.send(&request).await?;
            metrics::counter!(m::SLOTS_PUBLISHED).increment(1);
            deliveries.push(Box::pin(async move { (id, site, slot, ack.await) }));
        }
        Ok(())
    }

    fn delivered(
        &self,
        book: &mut Book,
        id: u64,
        site: Arc<Site>,
        slot: DateTime<Utc>,
        result: Result<(), KafkaError>,
        deliveries: &mut FuturesUnordered<Delivery>,
    ) {
        let deadline = slot + chrono::Duration::milliseconds(site.interval.as_millis() as i64);
        match result {
            Ok(()) => {
                if let Some(e) = book.entries.get_mut(&id) {
                    e.pending.remove(&slot);
                }
            }
            Err(err) if self.now() < deadline && book.entries.contains_key(&id) => {
                // Debug: while the broker is away this fires for every
                // slot; the slot's final fate is logged as a warning.
                tracing::debug!(site = %site.name, %slot, error = %err, "publish failed; retrying");
                let mut request = site.request(book.ids.scheduled(&site.name, slot), slot);
                request.late = true;
                let sink = Arc::clone(&self.seams.sink);
                deliveries.push(Box::pin(async move {
                    // A pause first, so a broker that refuses at once is not
                    // asked again in a tight loop.
                    tokio::time::sleep(RETRY_PAUSE).await;
                    let sent = match sink.send(&request).await {
                        Ok(ack) => ack.await,
                        Err(e) => Err(e),
                    };
                    (id, site, slot, sent)
                }));
            }
            Err(err) => {
                // Recorded even when the site has moved on: the row must exist.
                tracing::warn!(site = %site.name, %slot, error = %err, "slot not delivered before its deadline");
                metrics::counter!(m::SLOTS_SKIPPED, "reason" => "undelivered").increment(1);
                if let Some(e) = book.entries.get_mut(&id) {
                    e.pending.record(slot);
                }
                book.missed.push(skipped(
                    &book.ids,
                    &site,
                    slot,
                    ErrorKind::MissedSlot,
                    &format!("not delivered to Kafka: {err}"),
                ));
            }
        }
    }
}

/// The first slot an instance publishes for a site taken on, given where
/// the site's unaccounted slots begin (`None`: a new site). The latest slot
/// due since then is still checked while within its deadline (one
/// interval, as in the request); otherwise the next slot to come.
fn first_slot(cadence: &Cadence, from: Option<DateTime<Utc>>, now: DateTime<Utc>) -> DateTime<Utc> {
    let next = cadence.first_at_or_after(now);
    let Some(from) = from else { return next };
    let latest = cadence.last_at_or_before(now);
    if latest >= from && cadence.next(latest) > now {
        latest
    } else {
        // Never before `from`: those slots are someone else's (a clock
        // ahead of ours published them, or recorded them in a gap or a
        // shed run, where a second account would stand beside the first).
        // Progress is never written past its writer's clock (see
        // `book::Entry::accounted_until`), so `from` is ahead of `now` by
        // the clocks' skew at most.
        next.max(cadence.first_at_or_after(from))
    }
}

fn at_ms(ms: i64) -> DateTime<Utc> {
    chrono::TimeZone::timestamp_millis_opt(&Utc, ms)
        .single()
        .expect("time within range")
}

/// Time from `now` until `t` (zero if past).
fn until(now: DateTime<Utc>, t: DateTime<Utc>) -> Duration {
    (t - now).to_std().unwrap_or(Duration::ZERO)
}
