//! A persister: consumes one outcome topic (`status_request_succeeded` or
//! `status_request_failed`) in its own consumer group and writes outcomes to
//! `check_results` in batches — up to `persister.batch_size` messages or
//! whatever arrived within `persister.batch_timeout` — one statement per
//! batch, then commits the batch's offsets.
//!
//! Promises: offsets are committed only after the rows are committed in
//! Postgres (at-least-once), and writes are idempotent by `check_id`, so a
//! redelivered batch never makes a second row. While Postgres is down the
//! batch is retried with backoff and nothing is committed. A message that
//! cannot be decoded, or that Postgres refuses, goes to the dead-letter
//! topic and its offset is committed with the rest.

use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDate, Utc};
use deadpool_postgres::Pool;
use rdkafka::consumer::CommitMode;
use rdkafka::Message;
use tokio_util::sync::CancellationToken;

use crate::bus::{BusError, DeadLetter, MessageRef, Publisher, TrackedConsumer};
use crate::config::Settings;
use crate::liveness::Beat;
use crate::model::{self, CheckOutcome};
use crate::store::{self, StoreError};
use crate::telemetry::metrics as m;

/// How often the batching loop proves it is alive while no message comes.
const BEAT_EVERY: Duration = Duration::from_secs(1);

/// Rows older than this, or than `retention.raw` (or further ahead than a
/// day), are not given a new partition on the fly: they go to the
/// dead-letter topic instead of creating partitions for arbitrary dates.
/// Past `retention.raw` the day's minute rollups are gone, so such a row
/// would make its hour's rollup be summed again from itself alone.
const MAX_AGE_DAYS: i64 = 35;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultTopic {
    Succeeded,
    Failed,
}

impl ResultTopic {
    pub fn name(self) -> &'static str {
        match self {
            ResultTopic::Succeeded => "succeeded",
            ResultTopic::Failed => "failed",
        }
    }
}

pub struct Persister {
    which: ResultTopic,
    settings: Arc<Settings>,
    pool: Pool,
    publisher: Publisher,
    /// Proves to the watchdog and `/readyz` that the loop turns.
    beat: Beat,
}

/// One message of a batch.
struct Item {
    done: MessageRef,
    row: Result<CheckOutcome, DeadLetter>,
    key: Vec<u8>,
    payload: Vec<u8>,
}

/// A decoded outcome with where it came from (for a dead letter if Postgres
/// refuses it).
struct Row {
    outcome: CheckOutcome,
    partition: i32,
    offset: i64,
    key: Vec<u8>,
    payload: Vec<u8>,
}

impl Persister {
    pub fn new(
        which: ResultTopic,
        settings: Arc<Settings>,
        pool: Pool,
        publisher: Publisher,
        beat: Beat,
    ) -> Self {
        Persister {
            which,
            settings,
            pool,
            publisher,
            beat,
        }
    }

    fn topic(&self) -> &str {
        let t = &self.settings.kafka.topics;
        match self.which {
            ResultTopic::Succeeded => &t.succeeded,
            ResultTopic::Failed => &t.failed,
        }
    }

    pub async fn run(self, shutdown: CancellationToken) -> Result<(), BusError> {
        let group = crate::bus::lag::persister_group(&self.settings, self.which.name());
        let consumer = TrackedConsumer::new(&self.settings, &group, &[self.topic()])?;
        tracing::info!(%group, topic = self.topic(), "persister started");
        self.beat.running();
        loop {
            let Some(batch) = self.next_batch(&consumer, &shutdown).await? else {
                break;
            };
            if !self.write(batch, &shutdown).await {
                break;
            }
            consumer.commit(CommitMode::Async);
        }
        consumer.commit(CommitMode::Sync);
        tracing::info!(topic = self.topic(), "persister stopped");
        Ok(())
    }

    /// Waits for a first message, then takes more until the batch is full or
    /// `batch_timeout` has passed. `None` on shutdown; `Err` when the
    /// consumer failed for good (its unfinished messages are redelivered).
    async fn next_batch(
        &self,
        consumer: &TrackedConsumer,
        shutdown: &CancellationToken,
    ) -> Result<Option<Vec<Item>>, BusError> {
        let p = &self.settings.persister;
        let mut batch = Vec::with_capacity(p.batch_size.min(10_000));
        let mut deadline = None;
        let mut alive = tokio::time::interval(BEAT_EVERY);
        while batch.len() < p.batch_size {
            let wait = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            let msg = tokio::select! {
                _ = shutdown.cancelled() => return Ok(None),
                _ = wait => break,
                _ = alive.tick() => {
                    self.beat.beat();
                    continue;
                }
                m = consumer.consumer.recv() => m,
            };
            let msg = match msg {
                Ok(m) => {
                    crate::bus::progress::ok();
                    m
                }
                Err(e) => {
                    crate::bus::progress::failed();
                    if let Some(fatal) = consumer.fatal_error() {
                        return Err(fatal);
                    }
                    tracing::warn!(error = %e, "consume error");
                    continue;
                }
            };
            let done = consumer.start(&msg);
            let row = model::decode_outcome(msg.payload())
                .map_err(|e| DeadLetter::from_message(&msg, "persister", e.to_string()));
            batch.push(Item {
                done,
                row,
                key: msg.key().unwrap_or_default().to_vec(),
                payload: msg.payload().unwrap_or_default().to_vec(),
            });
            deadline.get_or_insert_with(|| tokio::time::Instant::now() + p.batch_timeout);
        }
        Ok(Some(batch))
    }

    /// Makes the batch durable: rows in Postgres, bad messages in the DLQ.
    /// Returns false on shutdown before that (nothing is marked finished).
    async fn write(&self, batch: Vec<Item>, shutdown: &CancellationToken) -> bool {
        let mut rows = Vec::with_capacity(batch.len());
        let mut letters = Vec::new();
        let mut dones = Vec::with_capacity(batch.len());
        for item in batch {
            match item.row {
                Ok(r) => rows.push(Row {
                    outcome: r,
                    partition: item.done.partition,
                    offset: item.done.offset,
                    key: item.key,
                    payload: item.payload,
                }),
                Err(l) => letters.push(l),
            }
            dones.push(item.done);
        }
        let mut delay = Duration::from_millis(200);
        loop {
            self.beat.beat();
            let started = std::time::Instant::now();
            match self.insert(&rows).await {
                Ok(refused) => {
                    metrics::histogram!(m::WRITE_DURATION).record(started.elapsed().as_secs_f64());
                    metrics::histogram!(m::BATCH_ROWS).record(rows.len() as f64);
                    metrics::counter!(m::ROWS_WRITTEN, "topic" => self.which.name())
                        .increment((rows.len() - refused.len()) as u64);
                    letters.extend(refused);
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, rows = rows.len(), retry_in = ?delay, "cannot write results yet");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        for letter in &letters {
            let mut delay = Duration::from_millis(200);
            while let Err(e) = letter
                .publish(&self.publisher, &self.settings.kafka.topics.dlq)
                .await
            {
                tracing::warn!(error = %e, "cannot publish dead letter yet");
                self.beat.beat();
                tokio::select! {
                    _ = shutdown.cancelled() => return false,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
        metrics::counter!(m::DLQ_MESSAGES, "stage" => "persister").increment(letters.len() as u64);
        for d in dones {
            d.finish();
        }
        true
    }

    /// Inserts `rows` in one statement. Rows Postgres refuses are isolated
    /// (one statement each) and returned as dead letters; `Err` means
    /// Postgres is unavailable and the whole batch must be retried.
    async fn insert(&self, rows: &[Row]) -> Result<Vec<DeadLetter>, StoreError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let outcomes: Vec<CheckOutcome> = rows.iter().map(|r| r.outcome.clone()).collect();
        let client = self.pool.get().await?;
        let mut result = store::insert_results(&**client, &outcomes).await;
        if matches!(&result, Err(e) if store::is_missing_partition(e))
            && self.add_partitions(&client, &outcomes).await? > 0
        {
            result = store::insert_results(&**client, &outcomes).await;
        }
        match result {
            Ok(_) => return Ok(Vec::new()),
            Err(e) if store::is_data_error(&e) => {}
            Err(e) => return Err(e),
        }
        // Some row is refused: find which, one statement each.
        let mut refused = Vec::new();
        for r in rows {
            match store::insert_results(&**client, std::slice::from_ref(&r.outcome)).await {
                Ok(_) => {}
                Err(e) if store::is_data_error(&e) => refused.push(DeadLetter {
                    source_topic: self.topic().to_owned(),
                    partition: r.partition,
                    offset: r.offset,
                    key: r.key.clone(),
                    payload: r.payload.clone(),
                    reason: format!("refused by Postgres: {e}"),
                    stage: "persister",
                }),
                Err(e) => return Err(e),
            }
        }
        Ok(refused)
    }

    /// Creates missing daily partitions for rows within the accepted range;
    /// returns how many were created.
    async fn add_partitions(
        &self,
        client: &deadpool_postgres::Object,
        rows: &[CheckOutcome],
    ) -> Result<i32, StoreError> {
        let today = Utc::now().date_naive();
        let lo = (today - chrono::Duration::days(MAX_AGE_DAYS))
            .max(self.settings.retention.keep_from(today).0);
        let hi = today + chrono::Duration::days(1);
        let days: Vec<NaiveDate> = rows
            .iter()
            .map(|r| r.scheduled_at.date_naive())
            .filter(|d| (lo..=hi).contains(d))
            .collect();
        let (Some(from), Some(to)) = (days.iter().min(), days.iter().max()) else {
            return Ok(0);
        };
        store::ensure_partitions(&***client, *from, *to).await
    }
}

/// How often retention runs (it is cheap when there is nothing to drop).
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// How often closed hours are summed (a no-op within an hour, apart from
/// the site-hours that late results marked).
const HOURS_EVERY: Duration = Duration::from_secs(60);

/// The persister role's housekeeping: every minute, hours that closed are
/// summed into the hour rollups (`store::roll_up_hours`); every hour,
/// partitions for the coming days are created and expired ones dropped
/// (`retention.*`). A failure is logged and tried again at the next round:
/// results keep flowing. Liveness beats go on while a round runs.
pub async fn maintain(
    settings: Arc<Settings>,
    pool: Pool,
    beat: Beat,
    shutdown: CancellationToken,
) {
    let mut retention = tokio::time::interval(RETENTION_EVERY);
    let mut hours = tokio::time::interval(HOURS_EVERY);
    let mut alive = tokio::time::interval(Duration::from_secs(1));
    beat.running();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = alive.tick() => beat.beat(),
            _ = retention.tick() => {
                let today = chrono::Utc::now().date_naive();
                let work = async {
                    let client = pool.get().await.map_err(|e| e.to_string())?;
                    store::apply_retention(&**client, &settings.retention, today)
                        .await
                        .map_err(|e| e.to_string())
                };
                let Some(result) = beating(work, &mut alive, &beat, &shutdown).await else {
                    return;
                };
                match result {
                    Ok(dropped) if dropped.is_empty() => {}
                    Ok(dropped) => tracing::info!(?dropped, "retention: expired partitions dropped"),
                    Err(e) => tracing::warn!(error = %e, "retention failed; trying again in an hour"),
                }
            }
            _ = hours.tick() => {
                let started = std::time::Instant::now();
                let work = async {
                    let client = pool.get().await.map_err(|e| e.to_string())?;
                    store::roll_up_hours(&**client, store::HOUR_GRACE)
                        .await
                        .map_err(|e| e.to_string())
                };
                let Some(result) = beating(work, &mut alive, &beat, &shutdown).await else {
                    return;
                };
                match result {
                    Ok(r) if r.summed.is_empty() && r.resummed == 0 => {}
                    Ok(r) => tracing::info!(summed = ?r.summed, resummed = r.resummed,
                                            ms = started.elapsed().as_millis() as u64,
                                            "hour rollups summed"),
                    Err(e) => tracing::warn!(error = %e, "hour rollups failed; trying again in a minute"),
                }
            }
        }
    }
}

/// Runs `work` to its end while beating every `alive` tick; `None` when
/// shutdown came first (the work is dropped: each of its steps is one
/// transaction, so nothing is left half done).
async fn beating<T>(
    work: impl std::future::Future<Output = T>,
    alive: &mut tokio::time::Interval,
    beat: &Beat,
    shutdown: &CancellationToken,
) -> Option<T> {
    tokio::pin!(work);
    loop {
        tokio::select! {
            r = &mut work => return Some(r),
            _ = alive.tick() => beat.beat(),
            _ = shutdown.cancelled() => return None,
        }
    }
}
