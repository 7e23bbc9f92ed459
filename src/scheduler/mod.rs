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
//! * Every second the scheduler saves, per site, `accounted_until`: the time
//!   before which every slot is delivered or recorded (the earliest pending
//!   slot, or the next slot not yet due). When an instance takes a site on —
//!   at start, or when its shard moves here from an instance that stopped or
//!   died — the slots from the saved `accounted_until` up to the first slot
//!   it publishes are recorded as skipped (`missed_slot`). A slot that was in
//!   fact delivered before a crash may get such a row; its real result
//!   replaces the placeholder when it arrives (see `store::insert_results`).
//! * A site removed from the config (or disabled) loses its saved progress:
//!   when it comes back, its history restarts at its next slot.

mod flush;
pub mod shards;
mod slots;

pub use shards::{member_id, shard_of, Ownership};
pub use slots::Cadence;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::error::KafkaError;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::bus::{BusError, Publisher};
use crate::config::{Coordination, Settings, Site};
use crate::liveness::Beat;
use crate::model::{self, ErrorKind};
use crate::store::SkippedSlot;
use crate::telemetry::metrics as m;

/// Pause before a failed slot is published again.
const RETRY_PAUSE: Duration = Duration::from_millis(250);
/// How often progress and skipped slots are written to Postgres.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

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
    pool: Pool,
    publisher: Publisher,
    /// Proves to the watchdog and `/readyz` that the loop turns.
    beat: Beat,
    sites: watch::Receiver<SiteList>,
    ownership: Ownership,
}

/// One scheduled site.
struct Entry {
    site: Arc<Site>,
    shard: usize,
    cadence: Cadence,
    /// The slot that will be due next (it is in the heap, unless parked).
    next: DateTime<Utc>,
    /// Slots published but not acknowledged, or recorded as skipped but not
    /// yet written.
    pending: Pending,
    /// `accounted_until` as last saved.
    saved: Option<DateTime<Utc>>,
    /// Set when this instance took the site on: the slots from the saved
    /// progress up to here were missed, and must be recorded before this
    /// instance saves progress of its own.
    backfill_to: Option<DateTime<Utc>>,
    /// Its shard was revoked: nothing is published until it comes back or
    /// the entry is released.
    parked: bool,
}

impl Entry {
    fn accounted_until(&self) -> DateTime<Utc> {
        self.pending.first().unwrap_or(self.next)
    }
}

/// A site's pending slots, in order. Almost always zero or one (two while a
/// slow acknowledgement overlaps the next slot), so they are kept inline: a
/// `BTreeSet` kept a 144-byte node per site once it had held a slot (14 MB
/// at 100k sites).
#[derive(Default)]
struct Pending(smallvec::SmallVec<[DateTime<Utc>; 2]>);

impl Pending {
    fn insert(&mut self, slot: DateTime<Utc>) {
        if let Err(at) = self.0.binary_search(&slot) {
            self.0.insert(at, slot);
        }
    }

    fn remove(&mut self, slot: &DateTime<Utc>) {
        if let Ok(at) = self.0.binary_search(slot) {
            self.0.remove(at);
        }
    }

    fn first(&self) -> Option<DateTime<Utc>> {
        self.0.first().copied()
    }
}

type Delivery = BoxFuture<'static, (u64, Arc<Site>, DateTime<Utc>, Result<(), KafkaError>)>;

/// The scheduler's state: entries by id, a min-heap of due slots (stale
/// items are skipped when popped), and what waits to be written.
#[derive(Default)]
struct Book {
    entries: HashMap<u64, Entry>,
    by_name: HashMap<String, u64>,
    heap: BinaryHeap<Reverse<(DateTime<Utc>, u64)>>,
    next_id: u64,
    /// Slots recorded as skipped, not yet written.
    missed: Vec<SkippedSlot>,
    /// Progress of sites handed to another instance, not yet written.
    released: Vec<(String, DateTime<Utc>)>,
    /// After a config change: forget the progress of every other site.
    forget_except: Option<Vec<String>>,
}

impl Scheduler {
    pub fn new(
        settings: Arc<Settings>,
        pool: Pool,
        publisher: Publisher,
        beat: Beat,
        sites: watch::Receiver<SiteList>,
        ownership: Ownership,
    ) -> Self {
        Scheduler {
            settings,
            pool,
            publisher,
            beat,
            sites,
            ownership,
        }
    }

    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), SchedulerError> {
        // The group is left only after the last progress is saved, so the
        // next owner starts where this one stopped.
        let leave = CancellationToken::new();
        let leases = match self.settings.scheduler.coordination {
            Coordination::Postgres => Some(tokio::spawn(shards::hold(
                self.pool.clone(),
                self.settings.scheduler.failover_timeout,
                self.ownership.clone(),
                leave.clone(),
            ))),
            Coordination::None => None,
        };
        let mut owned = self.ownership.subscribe();
        let mut book = Book::default();
        self.reconcile(&mut book, true);
        let mut deliveries: FuturesUnordered<Delivery> = FuturesUnordered::new();
        let mut flush = tokio::time::interval(FLUSH_EVERY);
        // The flush being written, if any: one at a time, beside publishing.
        let mut writing: Option<BoxFuture<'static, flush::Done>> = None;
        self.beat.running();
        tracing::info!(shards = self.ownership.shards(), "scheduler started");

        let result = loop {
            let due = book.heap.peek().map(|Reverse((t, _))| *t);
            let sleep = async {
                match due {
                    Some(t) => tokio::time::sleep(until(t)).await,
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
                    if let Err(e) = self.delivered(&mut book, id, site, slot, result, &mut deliveries).await {
                        break Err(e);
                    }
                }
                _ = flush.tick() => {
                    self.beat.beat();
                    if writing.is_none() {
                        writing = self.start_flush(&mut book);
                    }
                }
                done = async { writing.as_mut().expect("guarded").await }, if writing.is_some() => {
                    writing = None;
                    done.apply(&mut book);
                }
                Ok(()) = self.sites.changed() => self.reconcile(&mut book, true),
                Ok(()) = owned.changed() => {
                    owned.mark_unchanged();
                    self.reconcile(&mut book, false);
                }
            }
        };

        // Wait (bounded) for acknowledgements so progress is as far as it
        // can be; what is still pending is found as missed by the next owner.
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some((id, _, slot, result)) = deliveries.next().await {
                if let (Ok(()), Some(e)) = (result, book.entries.get_mut(&id)) {
                    e.pending.remove(&slot);
                }
            }
        })
        .await;
        if let Some(w) = writing.take() {
            w.await.apply(&mut book);
        }
        if let Some(w) = self.start_flush(&mut book) {
            w.await.apply(&mut book);
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
    fn start_flush(&self, book: &mut Book) -> Option<BoxFuture<'static, flush::Done>> {
        let job = flush::take(book, self.settings.scheduler.backfill_limit)?;
        Some(Box::pin(job.write(self.pool.clone())))
    }

    /// Brings the entries in line with the configured sites and the owned
    /// shards: takes on new sites, releases the ones that moved away or were
    /// removed, applies changed definitions from their next slot.
    fn reconcile(&mut self, book: &mut Book, config_changed: bool) {
        let config = self.sites.borrow_and_update().clone();
        let now = Utc::now();
        let wanted: HashMap<&str, &Arc<Site>> = config
            .iter()
            .filter(|s| s.enabled)
            .map(|s| (s.name.as_str(), s))
            .collect();
        if config_changed {
            book.forget_except = Some(wanted.keys().map(|n| n.to_string()).collect());
        }
        let (mut adopted, mut released) = (0usize, 0usize);
        let ids: Vec<u64> = book.entries.keys().copied().collect();
        for id in ids {
            let e = book.entries.get_mut(&id).expect("listed id");
            let name = e.site.name.clone();
            match wanted.get(name.as_str()) {
                Some(site) if self.ownership.owns(e.shard) => {
                    if site.interval != e.site.interval {
                        // From the next slot on the new cadence; slots are
                        // accounted by time, so nothing falls in between.
                        e.cadence = Cadence::new(&name, site.interval);
                        e.next = e.cadence.first_at_or_after(e.next.max(now));
                        book.heap.push(Reverse((e.next, id)));
                        e.parked = false;
                    }
                    e.site = Arc::clone(site);
                    if e.parked {
                        e.parked = false;
                        book.heap.push(Reverse((e.next, id)));
                    }
                }
                Some(_) => {
                    // The shard moved away: hand over our progress, unless
                    // we never got to record the backfill (then the stored
                    // progress is the right starting point for the next owner).
                    if e.backfill_to.is_none() {
                        book.released.push((name.clone(), e.accounted_until()));
                    }
                    book.entries.remove(&id);
                    book.by_name.remove(&name);
                    released += 1;
                }
                None => {
                    book.entries.remove(&id);
                    book.by_name.remove(&name);
                    released += 1;
                }
            }
        }
        for (name, site) in wanted {
            let shard = shard_of(name, self.ownership.shards());
            if book.by_name.contains_key(name) || !self.ownership.owns(shard) {
                continue;
            }
            let cadence = Cadence::new(name, site.interval);
            let next = cadence.first_at_or_after(now);
            let id = book.next_id;
            book.next_id += 1;
            book.entries.insert(
                id,
                Entry {
                    site: Arc::clone(site),
                    shard,
                    cadence,
                    next,
                    pending: Pending::default(),
                    saved: None,
                    backfill_to: Some(next),
                    parked: false,
                },
            );
            book.by_name.insert(name.to_owned(), id);
            book.heap.push(Reverse((next, id)));
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
        let now = Utc::now();
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
            let next = e.cadence.next(slot);
            e.next = next;
            book.heap.push(Reverse((next, id)));
            e.pending.insert(slot);
            if next <= now {
                // A later slot is due too: publish only the latest.
                book.missed
                    .push(skipped(&e.site, slot, "scheduler was behind"));
                metrics::counter!(m::SLOTS_SKIPPED, "reason" => "behind").increment(1);
                continue;
            }
            // Read at the publish itself: a slot late because earlier ones
            // in this pass took their time counts as late.
            metrics::histogram!(m::LATENESS).record(
                (Utc::now() - slot)
                    .to_std()
                    .unwrap_or_default()
                    .as_secs_f64(),
            );
            let site = e.site.clone();
            let delivery = self.publish(&site, slot).await?;
            metrics::counter!(m::SLOTS_PUBLISHED).increment(1);
            let publisher = self.publisher.clone();
            deliveries.push(Box::pin(async move {
                (id, site, slot, publisher.confirm(delivery).await)
            }));
        }
        Ok(())
    }

    async fn publish(
        &self,
        site: &Site,
        slot: DateTime<Utc>,
    ) -> Result<rdkafka::producer::DeliveryFuture, KafkaError> {
        let req = site.request(slot);
        self.publisher
            .enqueue(
                &self.settings.kafka.topics.created,
                site.name.as_bytes(),
                &model::encode(&req),
                None,
            )
            .await
    }

    async fn delivered(
        &self,
        book: &mut Book,
        id: u64,
        site: Arc<Site>,
        slot: DateTime<Utc>,
        result: Result<(), KafkaError>,
        deliveries: &mut FuturesUnordered<Delivery>,
    ) -> Result<(), SchedulerError> {
        let deadline = at_ms(slot.timestamp_millis() + site.interval.as_millis() as i64);
        match result {
            Ok(()) => {
                if let Some(e) = book.entries.get_mut(&id) {
                    e.pending.remove(&slot);
                }
            }
            Err(err) if Utc::now() < deadline && book.entries.contains_key(&id) => {
                // Debug: while the broker is away this fires for every
                // slot; the slot's final fate is logged as a warning.
                tracing::debug!(site = %site.name, %slot, error = %err, "publish failed; retrying");
                let request = site.request(slot);
                let (publisher, topic) = (
                    self.publisher.clone(),
                    self.settings.kafka.topics.created.clone(),
                );
                deliveries.push(Box::pin(async move {
                    // A pause first, so a broker that refuses at once is not
                    // asked again in a tight loop.
                    tokio::time::sleep(RETRY_PAUSE).await;
                    let sent = match publisher
                        .enqueue(&topic, site.name.as_bytes(), &model::encode(&request), None)
                        .await
                    {
                        Ok(delivery) => publisher.confirm(delivery).await,
                        Err(e) => Err(e),
                    };
                    (id, site, slot, sent)
                }));
            }
            Err(err) => {
                // Recorded even when the site has moved on: the row must exist.
                tracing::warn!(site = %site.name, %slot, error = %err, "slot not delivered before its deadline");
                metrics::counter!(m::SLOTS_SKIPPED, "reason" => "undelivered").increment(1);
                book.missed.push(skipped(
                    &site,
                    slot,
                    &format!("not delivered to Kafka: {err}"),
                ));
            }
        }
        Ok(())
    }
}

fn skipped(site: &Site, slot: DateTime<Utc>, why: &str) -> SkippedSlot {
    SkippedSlot {
        check_id: model::scheduled_check_id(&site.name, slot),
        site: site.name.clone(),
        url: site.url.to_string(),
        scheduled_at: slot,
        kind: ErrorKind::MissedSlot.as_str(),
        message: why.to_owned(),
    }
}

fn at_ms(ms: i64) -> DateTime<Utc> {
    chrono::TimeZone::timestamp_millis_opt(&Utc, ms)
        .single()
        .expect("time within range")
}

/// Time from now until `t` (zero if past).
fn until(t: DateTime<Utc>) -> Duration {
    (t - Utc::now()).to_std().unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_slots_stay_ordered_and_unique() {
        let t = |s: i64| at_ms(s * 1000);
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
