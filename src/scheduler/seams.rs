//! The scheduler's three seams: the [`Clock`] slots are read against, the
//! [`RequestSink`] requests are published to, and the [`Ledger`] progress is
//! kept in. The daemon plugs in the system clock, Kafka and Postgres; the
//! unit tests plug in paused tokio time and in-memory fakes (see `tests.rs`),
//! so the slot accounting is tested in milliseconds, as getsentry's
//! uptime-checker tests its scheduler.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use futures::future::BoxFuture;
use rdkafka::error::KafkaError;
use tokio::sync::watch;

use super::shards::shard_of;
use crate::bus::lag::Backlog;
use crate::bus::Publisher;
use crate::model::{self, CheckRequest};
use crate::store::{self, SkippedSlot, Span, StoreError};

/// Skipped rows written per statement.
const SKIPPED_CHUNK: usize = 5_000;

/// Wall-clock time, against which slots (absolute times) fall due.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The system's clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Resolves once the broker has acknowledged a request (or failed to).
pub type Ack = BoxFuture<'static, Result<(), KafkaError>>;

/// Where requests go.
pub trait RequestSink: Send + Sync + 'static {
    /// Queues `request` for publishing, waiting while the producer's queue
    /// is full; the [`Ack`] resolves when the broker has it.
    fn send(&self, request: &CheckRequest) -> BoxFuture<'static, Result<Ack, KafkaError>>;
}

/// Kafka's `status_request_created`, keyed by site.
pub struct KafkaSink {
    pub publisher: Publisher,
    pub topic: String,
}

impl RequestSink for KafkaSink {
    fn send(&self, request: &CheckRequest) -> BoxFuture<'static, Result<Ack, KafkaError>> {
        let (publisher, topic) = (self.publisher.clone(), self.topic.clone());
        let (key, payload) = (request.site.clone(), model::encode(request));
        Box::pin(async move {
            let delivery = publisher
                .enqueue(&topic, key.as_bytes(), &payload, None)
                .await?;
            Ok(Box::pin(async move { publisher.confirm(delivery).await }) as Ack)
        })
    }
}

/// A stretch of missed slots too long to record slot by slot.
#[derive(Debug, Clone, PartialEq)]
pub struct Gap {
    pub site: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub slots: i64,
    pub reason: &'static str,
}

/// What one flush writes, all or nothing.
#[derive(Debug, Default)]
pub struct Write {
    /// After a config change: forget the progress of every other site.
    pub forget_except: Option<Vec<String>>,
    pub gaps: Vec<Gap>,
    pub skipped: Vec<SkippedSlot>,
    /// Shed runs: a site's slots held back in one minute (reason
    /// `load_shed`), counted as skipped in the rollups too.
    pub shed: Vec<Gap>,
    /// Per-site progress: for sites taken on, the first slot this instance
    /// publishes (every earlier slot is in `skipped`, `gaps` or was
    /// accounted before); for sites handed over or at a clean stop, their
    /// own `accounted_until`, so the next owner starts exactly there.
    pub sites: Vec<(String, DateTime<Utc>)>,
    /// Shard watermarks under `shards` shards.
    pub watermarks: Vec<(usize, DateTime<Utc>)>,
    pub shards: usize,
}

impl Write {
    pub fn is_empty(&self) -> bool {
        self.forget_except.is_none()
            && self.gaps.is_empty()
            && self.skipped.is_empty()
            && self.shed.is_empty()
            && self.sites.is_empty()
            && self.watermarks.is_empty()
    }
}

/// Progress on record for some sites: their own rows and every shard
/// watermark (migration V11 says what each promises).
#[derive(Debug, Default, Clone)]
pub struct Stored {
    pub sites: HashMap<String, DateTime<Utc>>,
    /// `(shards, shard, accounted_until)`.
    pub watermarks: Vec<(usize, usize, DateTime<Utc>)>,
    /// Gaps on record (`[from, to)`) that begin at or after the earliest
    /// of the sites' progress: a backfill passes over them. Why there can
    /// be any: a flush writes a gap (a shed run, a hold) and the progress
    /// in one transaction, but the progress stops at a slot still in
    /// flight before the gap; the next owner starts from that slot.
    pub gaps: HashMap<String, Vec<Span>>,
    /// When each site's row and each watermark `(shards, shard)` was last
    /// written, by the database's clock (one clock for every instance).
    pub written: Written,
}

/// See [`Stored::written`].
#[derive(Debug, Default, Clone)]
pub struct Written {
    pub sites: HashMap<String, DateTime<Utc>>,
    pub watermarks: HashMap<(usize, usize), DateTime<Utc>>,
}

impl Stored {
    /// Where `site`'s unaccounted slots begin: the latest of its own row and
    /// its shard's watermark under each shard count on record. `None`: no
    /// row, a new site (its history starts at its first slot).
    ///
    /// A watermark speaks for the sites its writer scheduled, so it counts
    /// only if written at or after the site's own row (by the database's
    /// clock): the site was taken on by then, and an instance that did not
    /// schedule it would have forgotten its row at its start. A watermark
    /// of a shard from before the site came (another config's, or a clock
    /// ahead of ours) says nothing of it.
    pub fn progress_of(&self, site: &str) -> Option<DateTime<Utc>> {
        let own = *self.sites.get(site)?;
        let since = self.written.sites.get(site);
        Some(
            self.watermarks
                .iter()
                .filter(|(shards, shard, _)| shard_of(site, *shards) == *shard)
                .filter(|(shards, shard, _)| {
                    let at = self.written.watermarks.get(&(*shards, *shard));
                    matches!((at, since), (Some(a), Some(s)) if a >= s) || since.is_none()
                })
                .map(|(_, _, t)| *t)
                .fold(own, DateTime::max),
        )
    }
}

/// Where progress and skipped slots are kept.
pub trait Ledger: Send + Sync + 'static {
    /// Progress on record for `sites` (and every watermark).
    fn load(&self, sites: Vec<String>) -> BoxFuture<'static, Result<Stored, StoreError>>;
    /// Writes `w`: all of it, or an `Err` after which writing it again is
    /// harmless. Progress never moves backwards.
    fn write<'a>(&'a self, w: &'a Write) -> BoxFuture<'a, Result<(), StoreError>>;
}

/// The ledger in Postgres: `schedule_progress`, `schedule_watermarks`,
/// `schedule_gaps` and skipped rows in `check_results`.
pub struct PgLedger(pub Pool);

impl Ledger for PgLedger {
    fn load(&self, sites: Vec<String>) -> BoxFuture<'static, Result<Stored, StoreError>> {
        let pool = self.0.clone();
        Box::pin(async move {
            let client = pool.get().await?;
            let (progress, written_sites) = store::load_progress_of(&**client, &sites).await?;
            let (watermarks, written_marks) = store::load_watermarks(&**client).await?;
            let mut stored = Stored {
                sites: progress,
                watermarks,
                gaps: HashMap::new(),
                written: Written {
                    sites: written_sites,
                    watermarks: written_marks,
                },
            };
            let since = stored
                .sites
                .keys()
                .filter_map(|s| stored.progress_of(s))
                .min();
            if let Some(since) = since {
                stored.gaps = store::load_gaps_since(&**client, &sites, since).await?;
            }
            Ok(stored)
        })
    }

    /// Skipped rows and shed runs go first, each chunk one statement in a
    /// transaction of its own; then gaps and progress in one transaction. Why: a chunk
    /// locks the rollup rows of its sites, and a second chunk in the same
    /// transaction could then wait on a persister's batch that itself waits
    /// on those rows (a deadlock, seen under 2x overload with 128k skipped
    /// rows in one flush). Writing a chunk again is a no-op (`DO NOTHING`,
    /// and the rollups count only rows inserted), so a flush that fails
    /// after some chunks is retried whole; progress is written only once
    /// every skipped row is.
    fn write<'a>(&'a self, w: &'a Write) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut client = self.0.get().await?;
            for chunk in w.skipped.chunks(SKIPPED_CHUNK) {
                store::insert_skipped(&**client, chunk).await?;
            }
            for chunk in w.shed.chunks(SKIPPED_CHUNK) {
                let runs: Vec<_> = chunk
                    .iter()
                    .map(|g| (g.site.as_str(), g.from, g.to, g.slots))
                    .collect();
                store::record_shed(&**client, &runs).await?;
            }
            let tx = client.transaction().await?;
            if let Some(names) = &w.forget_except {
                store::forget_progress_except(&*tx, names).await?;
            }
            for g in &w.gaps {
                store::record_gap(&*tx, &g.site, g.from, g.to, g.slots, g.reason).await?;
            }
            store::save_progress(&*tx, &w.sites).await?;
            store::save_watermarks(&*tx, w.shards, &w.watermarks).await?;
            tx.commit().await?;
            Ok(())
        })
    }
}

impl Seams {
    /// The daemon's seams: the system clock, Kafka's `created` topic, the
    /// ledger in `pool`, the `backlogs` of the stages after it (checkers,
    /// persisters) and the store's `ids`.
    pub fn daemon(
        settings: &crate::config::Settings,
        pool: Pool,
        publisher: Publisher,
        backlogs: Vec<watch::Receiver<Vec<Option<Backlog>>>>,
        ids: model::CheckIds,
    ) -> Seams {
        Seams {
            backlogs,
            ids,
            clock: Arc::new(SystemClock),
            sink: Arc::new(KafkaSink {
                publisher,
                topic: settings.kafka.topics.created.clone(),
            }),
            ledger: Arc::new(PgLedger(pool)),
        }
    }
}

/// The seams together.
#[derive(Clone)]
pub struct Seams {
    pub clock: Arc<dyn Clock>,
    pub sink: Arc<dyn RequestSink>,
    pub ledger: Arc<dyn Ledger>,
    /// The backlogs of the stages after the scheduler (see `bus::lag`),
    /// one figure per consumer group: the checkers', the persisters'; for
    /// load shedding.
    pub backlogs: Vec<watch::Receiver<Vec<Option<Backlog>>>>,
    /// The ids slots get: the store's cutover (migration V17).
    pub ids: model::CheckIds,
}
