//! The scheduler stage: one `CheckRequest` per enabled site per slot,
//! published to `status_request_created`.
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
//!   slot, or the next slot not yet due). After a restart, the slots from
//!   `accounted_until` up to the first slot it will publish are recorded as
//!   skipped (`missed_slot`, "scheduler was not running"). A slot that was
//!   in fact delivered before a crash may get such a row; its real result
//!   replaces the placeholder when it arrives (see `store::insert_results`).

mod slots;

pub use slots::Cadence;

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::error::KafkaError;
use tokio_util::sync::CancellationToken;

use crate::bus::{confirmed, BusError, Publisher};
use crate::config::{Settings, Site};
use crate::model::{self, CheckRequest, ErrorKind, Origin, SCHEMA_VERSION};
use crate::store::{self, SkippedSlot, StoreError};

/// How often progress and skipped slots are written to Postgres.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Skipped rows written per statement when backfilling.
const BACKFILL_CHUNK: usize = 5_000;

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("stopped before start-up finished")]
    Cancelled,
}

pub struct Scheduler {
    settings: Arc<Settings>,
    pool: Pool,
    publisher: Publisher,
}

/// One scheduled site.
struct Entry {
    site: Arc<Site>,
    cadence: Cadence,
    /// The slot that will be due next (it is in the heap).
    next: DateTime<Utc>,
    /// Slots published but not acknowledged, or recorded as skipped but not
    /// yet written.
    pending: BTreeSet<DateTime<Utc>>,
    /// `accounted_until` as last saved.
    saved: Option<DateTime<Utc>>,
}

impl Entry {
    fn accounted_until(&self) -> DateTime<Utc> {
        self.pending.first().copied().unwrap_or(self.next)
    }
}

type Delivery = BoxFuture<'static, (usize, DateTime<Utc>, Result<(), KafkaError>)>;

impl Scheduler {
    pub fn new(settings: Arc<Settings>, pool: Pool, publisher: Publisher) -> Self {
        Scheduler {
            settings,
            pool,
            publisher,
        }
    }

    pub async fn run(self, shutdown: CancellationToken) -> Result<(), SchedulerError> {
        let mut entries: Vec<Entry> = self
            .settings
            .sites
            .iter()
            .filter(|s| s.enabled)
            .map(|s| {
                let cadence = Cadence::new(&s.name, s.interval);
                Entry {
                    site: Arc::new(s.clone()),
                    cadence,
                    next: cadence.first_at_or_after(Utc::now()),
                    pending: BTreeSet::new(),
                    saved: None,
                }
            })
            .collect();
        self.start_up(&mut entries, &shutdown).await?;

        let mut heap: BinaryHeap<Reverse<(DateTime<Utc>, usize)>> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| Reverse((e.next, i)))
            .collect();
        let mut deliveries: FuturesUnordered<Delivery> = FuturesUnordered::new();
        let mut missed: Vec<SkippedSlot> = Vec::new();
        let mut flush = tokio::time::interval(FLUSH_EVERY);
        tracing::info!(sites = entries.len(), "scheduler started");

        loop {
            let due = heap.peek().map(|Reverse((t, _))| *t);
            let sleep = async {
                match due {
                    Some(t) => tokio::time::sleep(until(t)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = sleep => {
                    self.emit_due(&mut entries, &mut heap, &mut deliveries, &mut missed).await?;
                }
                Some((i, slot, result)) = deliveries.next(), if !deliveries.is_empty() => {
                    self.delivered(&mut entries[i], i, slot, result, &mut deliveries, &mut missed).await?;
                }
                _ = flush.tick() => self.flush(&mut entries, &mut missed).await,
            }
        }

        // Wait (bounded) for acknowledgements so progress is as far as it
        // can be; what is still pending is found as missed after restart.
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some((i, slot, result)) = deliveries.next().await {
                if result.is_ok() {
                    entries[i].pending.remove(&slot);
                }
            }
        })
        .await;
        self.flush(&mut entries, &mut missed).await;
        tracing::info!("scheduler stopped");
        Ok(())
    }

    /// Loads progress, records what was missed while no scheduler ran, and
    /// saves the new starting points. Retries until Postgres answers.
    async fn start_up(
        &self,
        entries: &mut [Entry],
        shutdown: &CancellationToken,
    ) -> Result<(), SchedulerError> {
        let mut delay = Duration::from_millis(250);
        loop {
            match self.try_start_up(entries).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?delay, "scheduler start-up: Postgres not ready")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Err(SchedulerError::Cancelled),
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }

    async fn try_start_up(&self, entries: &mut [Entry]) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let progress = store::load_progress(&**client).await?;
        let names: Vec<String> = entries.iter().map(|e| e.site.name.clone()).collect();
        store::forget_progress_except(&**client, &names).await?;
        let limit = i64::from(self.settings.scheduler.backfill_limit);
        let mut total = 0i64;
        for e in entries.iter_mut() {
            let Some(&from) = progress.get(&e.site.name) else {
                continue;
            };
            let tx = client.transaction().await?;
            let (count, first) = e.cadence.count_between(from, e.next);
            let mut start = first;
            if count > limit {
                // Too many to write one by one: one gap row for the oldest.
                let gap_slots = count - limit;
                let gap_end = at_ms(first.timestamp_millis() + gap_slots * e.cadence.interval_ms);
                store::record_gap(
                    &*tx,
                    &e.site.name,
                    first,
                    gap_end,
                    gap_slots,
                    "scheduler was not running",
                )
                .await?;
                start = gap_end;
            }
            let mut batch = Vec::with_capacity(BACKFILL_CHUNK);
            let mut slot = start;
            while slot < e.next {
                batch.push(skipped(&e.site, slot, "scheduler was not running"));
                if batch.len() == BACKFILL_CHUNK {
                    store::insert_skipped(&*tx, &batch).await?;
                    batch.clear();
                }
                slot = e.cadence.next(slot);
            }
            store::insert_skipped(&*tx, &batch).await?;
            store::save_progress(&*tx, &[(e.site.name.clone(), e.next)]).await?;
            tx.commit().await?;
            total += count;
            e.saved = Some(e.next);
        }
        let fresh: Vec<(String, DateTime<Utc>)> = entries
            .iter_mut()
            .filter(|e| e.saved.is_none())
            .map(|e| {
                e.saved = Some(e.next);
                (e.site.name.clone(), e.next)
            })
            .collect();
        store::save_progress(&**client, &fresh).await?;
        if total > 0 {
            tracing::warn!(
                slots = total,
                "recorded slots missed while no scheduler ran"
            );
        }
        Ok(())
    }

    async fn emit_due(
        &self,
        entries: &mut [Entry],
        heap: &mut BinaryHeap<Reverse<(DateTime<Utc>, usize)>>,
        deliveries: &mut FuturesUnordered<Delivery>,
        missed: &mut Vec<SkippedSlot>,
    ) -> Result<(), SchedulerError> {
        let now = Utc::now();
        while let Some(&Reverse((slot, i))) = heap.peek() {
            if slot > now {
                break;
            }
            heap.pop();
            let e = &mut entries[i];
            let next = e.cadence.next(slot);
            e.next = next;
            heap.push(Reverse((next, i)));
            e.pending.insert(slot);
            if next <= now {
                // A later slot is due too: publish only the latest.
                missed.push(skipped(&e.site, slot, "scheduler was behind"));
                continue;
            }
            let delivery = self.publish(&e.site, slot).await?;
            deliveries.push(Box::pin(
                async move { (i, slot, confirmed(delivery).await) },
            ));
        }
        Ok(())
    }

    async fn publish(
        &self,
        site: &Site,
        slot: DateTime<Utc>,
    ) -> Result<rdkafka::producer::DeliveryFuture, KafkaError> {
        let req = request(site, slot);
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
        e: &mut Entry,
        i: usize,
        slot: DateTime<Utc>,
        result: Result<(), KafkaError>,
        deliveries: &mut FuturesUnordered<Delivery>,
        missed: &mut Vec<SkippedSlot>,
    ) -> Result<(), SchedulerError> {
        match result {
            Ok(()) => {
                e.pending.remove(&slot);
            }
            Err(err) if Utc::now() < e.cadence.next(slot) => {
                tracing::warn!(site = %e.site.name, %slot, error = %err, "publish failed; retrying");
                let delivery = self.publish(&e.site, slot).await?;
                deliveries.push(Box::pin(
                    async move { (i, slot, confirmed(delivery).await) },
                ));
            }
            Err(err) => {
                tracing::warn!(site = %e.site.name, %slot, error = %err, "slot not delivered before its deadline");
                missed.push(skipped(
                    &e.site,
                    slot,
                    &format!("not delivered to Kafka: {err}"),
                ));
            }
        }
        Ok(())
    }

    /// Writes skipped slots and progress. On failure everything stays in
    /// memory for the next tick.
    async fn flush(&self, entries: &mut [Entry], missed: &mut Vec<SkippedSlot>) {
        let changed: Vec<(usize, DateTime<Utc>)> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (i, e.accounted_until()))
            .filter(|(i, t)| entries[*i].saved != Some(*t))
            .collect();
        if missed.is_empty() && changed.is_empty() {
            return;
        }
        let result: Result<(), StoreError> = async {
            let client = self.pool.get().await?;
            store::insert_skipped(&**client, missed).await?;
            Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, skipped = missed.len(), "cannot record skipped slots yet");
            return;
        }
        let by_site: HashMap<&str, usize> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.site.name.as_str(), i))
            .collect();
        let written: Vec<(usize, DateTime<Utc>)> = missed
            .iter()
            .filter_map(|m| by_site.get(m.site.as_str()).map(|&i| (i, m.scheduled_at)))
            .collect();
        missed.clear();
        for (i, slot) in written {
            entries[i].pending.remove(&slot);
        }
        let progress: Vec<(usize, DateTime<Utc>)> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (i, e.accounted_until()))
            .filter(|(i, t)| entries[*i].saved != Some(*t))
            .collect();
        let rows: Vec<(String, DateTime<Utc>)> = progress
            .iter()
            .map(|(i, t)| (entries[*i].site.name.clone(), *t))
            .collect();
        let saved = async {
            let client = self.pool.get().await?;
            store::save_progress(&**client, &rows).await
        }
        .await;
        match saved {
            Ok(()) => {
                for (i, t) in progress {
                    entries[i].saved = Some(t);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot save scheduler progress yet"),
        }
    }
}

/// The request for `site`'s slot.
pub fn request(site: &Site, slot: DateTime<Utc>) -> CheckRequest {
    CheckRequest {
        v: SCHEMA_VERSION,
        check_id: model::scheduled_check_id(&site.name, slot),
        site: site.name.clone(),
        origin: Origin::Scheduled,
        scheduled_at: slot,
        // A request older than one interval is superseded by the next slot.
        deadline: at_ms(slot.timestamp_millis() + site.interval.as_millis() as i64),
        url: site.url.to_string(),
        method: site.method.to_string(),
        headers: site
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_owned())))
            .collect(),
        timeout_ms: site.timeout.as_millis() as u64,
        regex: site.regex.as_ref().map(|r| r.as_str().to_owned()),
        expect_status: site.expect_status.to_string(),
        reuse_connection: site.reuse_connection,
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
