//! The fakes behind the scheduler's seams, and the harness the paused-time
//! tests drive them with.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use futures::future::BoxFuture;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::super::seams::{Ack, Gap, Stored, Write};
use super::super::*;
use crate::bus::lag::Backlog;
use crate::model::CheckRequest;
use crate::store::{SkippedSlot, StoreError};

/// Wall time = a fixed start + tokio's (paused) elapsed time + `jump_ms`.
pub(super) struct TestClock {
    pub(super) wall0: DateTime<Utc>,
    pub(super) mono0: tokio::time::Instant,
    pub(super) jump_ms: AtomicI64,
}

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = tokio::time::Instant::now() - self.mono0;
        self.wall0
            + chrono::Duration::from_std(elapsed).unwrap()
            + chrono::Duration::milliseconds(self.jump_ms.load(Ordering::SeqCst))
    }
}

#[derive(Default)]
pub(super) struct TestSink {
    pub(super) sent: Mutex<Vec<CheckRequest>>,
    /// Acknowledgements fail while set (the broker is away).
    pub(super) refuse: AtomicBool,
    /// How long an acknowledgement takes: a request the broker has is not
    /// yet known to be delivered (a crash meanwhile leaves it unconfirmed).
    pub(super) ack_delay_ms: AtomicU64,
}

impl RequestSink for TestSink {
    fn send(&self, request: &CheckRequest) -> BoxFuture<'static, Result<Ack, KafkaError>> {
        let refused = self.refuse.load(Ordering::SeqCst);
        if !refused {
            self.sent.lock().unwrap().push(request.clone());
        }
        let delay = Duration::from_millis(self.ack_delay_ms.load(Ordering::SeqCst));
        Box::pin(async move {
            Ok(Box::pin(async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                if refused {
                    Err(KafkaError::MessageProduction(
                        RDKafkaErrorCode::MessageTimedOut,
                    ))
                } else {
                    Ok(())
                }
            }) as Ack)
        })
    }
}

#[derive(Default)]
pub(super) struct TestLedger {
    pub(super) stored: Mutex<Stored>,
    pub(super) skipped: Mutex<Vec<SkippedSlot>>,
    pub(super) gaps: Mutex<Vec<Gap>>,
    /// Shed runs written.
    pub(super) shed: Mutex<Vec<Gap>>,
    /// Rows written: per-site progress and shard watermarks.
    pub(super) site_rows: AtomicUsize,
    pub(super) watermark_rows: AtomicUsize,
    pub(super) down: AtomicBool,
    /// Writes so far: the database's clock.
    pub(super) writes: AtomicUsize,
}

impl Ledger for TestLedger {
    fn load(&self, sites: Vec<String>) -> BoxFuture<'static, Result<Stored, StoreError>> {
        let all = self.stored.lock().unwrap().clone();
        let mut found = Stored {
            sites: sites
                .iter()
                .filter_map(|s| Some((s.clone(), *all.sites.get(s)?)))
                .collect(),
            watermarks: all.watermarks.clone(),
            gaps: HashMap::new(),
            written: all.written.clone(),
        };
        // As `PgLedger::load` reads them: the gaps that begin at or after
        // the earliest progress of the sites asked for.
        let since = found
            .sites
            .keys()
            .filter_map(|s| found.progress_of(s))
            .min();
        for g in self
            .gaps
            .lock()
            .unwrap()
            .iter()
            .chain(self.shed.lock().unwrap().iter())
        {
            if sites.contains(&g.site) && since.is_some_and(|t| g.from >= t) {
                found
                    .gaps
                    .entry(g.site.clone())
                    .or_default()
                    .push((g.from, g.to));
            }
        }
        for v in found.gaps.values_mut() {
            v.sort();
        }
        let down = self.down.load(Ordering::SeqCst);
        Box::pin(async move {
            if down {
                return Err(StoreError::Config("test: Postgres is down".into()));
            }
            Ok(found)
        })
    }

    fn write<'a>(&'a self, w: &'a Write) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            if self.down.load(Ordering::SeqCst) {
                return Err(StoreError::Config("test: Postgres is down".into()));
            }
            let mut stored = self.stored.lock().unwrap();
            // The database's clock: one for every instance, and it only
            // moves forward.
            let db_now =
                DateTime::from_timestamp_millis(self.writes.fetch_add(1, Ordering::SeqCst) as i64)
                    .unwrap();
            if let Some(keep) = &w.forget_except {
                stored.sites.retain(|s, _| keep.contains(s));
            }
            for (site, t) in &w.sites {
                let v = stored.sites.entry(site.clone()).or_insert(*t);
                *v = (*v).max(*t);
                stored.written.sites.insert(site.clone(), db_now);
            }
            for (shard, t) in &w.watermarks {
                match stored
                    .watermarks
                    .iter_mut()
                    .find(|(n, s, _)| *n == w.shards && s == shard)
                {
                    Some(m) => m.2 = *t,
                    None => stored.watermarks.push((w.shards, *shard, *t)),
                }
                stored.written.watermarks.insert((w.shards, *shard), db_now);
            }
            self.site_rows.fetch_add(w.sites.len(), Ordering::SeqCst);
            self.watermark_rows
                .fetch_add(w.watermarks.len(), Ordering::SeqCst);
            self.skipped
                .lock()
                .unwrap()
                .extend(w.skipped.iter().cloned());
            self.gaps.lock().unwrap().extend(w.gaps.iter().cloned());
            self.shed.lock().unwrap().extend(w.shed.iter().cloned());
            Ok(())
        })
    }
}

pub(super) fn wall0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 6, 0, 0).unwrap()
}

/// Settings with `sites` (name, interval) and `shards` shards.
pub(super) fn settings(sites: &[(String, Duration)], shards: usize) -> (Arc<Settings>, SiteList) {
    let mut toml = format!(
        "[kafka]\nbrokers = \"127.0.0.1:1\"\n[scheduler]\nshards = {shards}\nbackfill_limit = 300\n\
         min_interval = \"1s\"\n[site_defaults]\ntimeout = \"500ms\"\n"
    );
    for (name, interval) in sites {
        toml += &format!(
            "[[sites]]\nname = \"{name}\"\nurl = \"http://{name}.test/\"\ninterval = \"{}ms\"\n",
            interval.as_millis()
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sitewatch.toml");
    std::fs::write(&path, toml).unwrap();
    let s = crate::config::load_with_env(&path, HashMap::new()).unwrap();
    let list: SiteList = Arc::new(s.sites.iter().cloned().map(Arc::new).collect());
    (Arc::new(s), list)
}

pub(super) fn named(n: usize, interval: Duration) -> Vec<(String, Duration)> {
    (0..n).map(|i| (format!("site-{i}"), interval)).collect()
}

/// One scheduler instance on the test seams.
pub(super) struct Instance {
    pub(super) sink: Arc<TestSink>,
    /// The site list it follows: a send is a config reload.
    pub(super) sites: watch::Sender<SiteList>,
    backlog: watch::Sender<Vec<Option<Backlog>>>,
    feeder: Option<tokio::task::JoinHandle<()>>,
    pub(super) ownership: Ownership,
    pub(super) stop: CancellationToken,
    pub(super) task: tokio::task::JoinHandle<Result<(), SchedulerError>>,
}

pub(super) fn start(
    sites: &[(String, Duration)],
    shards: usize,
    clock: &Arc<TestClock>,
    ledger: &Arc<TestLedger>,
    ownership: Ownership,
) -> Instance {
    let sink = Arc::new(TestSink::default());
    start_on(sites, shards, clock, ledger, ownership, sink)
}

/// [`start`] publishing to `sink` (shared by instances: one broker).
pub(super) fn start_on(
    sites: &[(String, Duration)],
    shards: usize,
    clock: &Arc<TestClock>,
    ledger: &Arc<TestLedger>,
    ownership: Ownership,
    sink: Arc<TestSink>,
) -> Instance {
    let (settings, list) = settings(sites, shards);
    let (backlog, backlog_rx) = watch::channel(vec![None]);
    let seams = Seams {
        backlogs: vec![backlog_rx],
        ids: crate::model::CheckIds::TIME_LEADING,
        clock: clock.clone(),
        sink: sink.clone(),
        ledger: ledger.clone(),
    };
    let (tx, rx) = watch::channel(list);
    let beat = crate::liveness::Health::new().stage("scheduler");
    let s = Scheduler::with_seams(settings, seams, None, beat, rx, ownership.clone());
    let stop = CancellationToken::new();
    let task = tokio::spawn(s.run(stop.clone()));
    Instance {
        sink,
        sites: tx,
        backlog,
        feeder: None,
        ownership,
        stop,
        task,
    }
}

impl Instance {
    /// Feeds `b` as the checkers' backlog every second, as `bus::lag`
    /// reads it (a new reading number each time), until fed another.
    pub(super) fn feed(&mut self, b: Option<Backlog>) {
        if let Some(f) = self.feeder.take() {
            f.abort();
        }
        let tx = self.backlog.clone();
        // Readings go on counting, as the lag reader's do.
        let first = tx.borrow().iter().flatten().map(|b| b.reading + 1).max();
        self.feeder = Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            for n in first.unwrap_or(0).. {
                tick.tick().await;
                let b = b.map(|b| Backlog { reading: n, ..b });
                tx.send_replace(vec![b]);
            }
        }));
    }

    /// A reload: the instance follows `sites` from now on.
    pub(super) fn reload(&self, sites: &[(String, Duration)]) {
        let (_, list) = settings(sites, self.ownership.shards());
        self.sites.send_replace(list);
    }

    /// SIGKILL: the task is dropped wherever it is; nothing more is written.
    pub(super) async fn crash(self) {
        if let Some(f) = &self.feeder {
            f.abort();
        }
        self.task.abort();
        let _ = self.task.await;
    }

    pub(super) async fn stop(self) -> Vec<CheckRequest> {
        if let Some(f) = &self.feeder {
            f.abort();
        }
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
        std::mem::take(&mut *self.sink.sent.lock().unwrap())
    }
}

pub(super) fn clock() -> Arc<TestClock> {
    Arc::new(TestClock {
        wall0: wall0(),
        mono0: tokio::time::Instant::now(),
        jump_ms: AtomicI64::new(0),
    })
}

/// Lets paused time run `d` (every timer due meanwhile fires, in order).
pub(super) async fn run_for(d: Duration) {
    tokio::time::sleep(d).await;
}

/// How each slot ended: published (how often) and skipped (how often).
#[derive(Default, Debug)]
pub(super) struct Fate {
    pub(super) published: usize,
    pub(super) late: usize,
    pub(super) skipped: usize,
}

pub(super) fn fates(
    sent: &[CheckRequest],
    ledger: &TestLedger,
) -> BTreeMap<(String, DateTime<Utc>), Fate> {
    let mut f: BTreeMap<(String, DateTime<Utc>), Fate> = BTreeMap::new();
    for r in sent {
        let e = f.entry((r.site.clone(), r.scheduled_at)).or_default();
        e.published += 1;
        e.late += usize::from(r.late);
        assert_eq!(
            r.check_id,
            model::CheckIds::TIME_LEADING.scheduled(&r.site, r.scheduled_at)
        );
    }
    for s in ledger.skipped.lock().unwrap().iter() {
        f.entry((s.site.clone(), s.scheduled_at))
            .or_default()
            .skipped += 1;
    }
    f
}

use crate::model;

/// Every slot of `site` in `[from, to)` ended exactly once.
pub(super) fn assert_each_slot_once(
    f: &BTreeMap<(String, DateTime<Utc>), Fate>,
    site: &str,
    interval: Duration,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) {
    let c = Cadence::new(site, interval);
    let mut slot = c.first_at_or_after(from);
    let mut n = 0;
    while slot < to {
        let fate = f.get(&(site.to_owned(), slot));
        let ended = fate.map_or(0, |x| x.published + x.skipped);
        assert_eq!(ended, 1, "{site} slot {slot}: {fate:?}");
        slot = c.next(slot);
        n += 1;
    }
    assert!(n > 0, "no slot of {site} in range");
}

/// Stops `i` and asserts that every slot of `sites` from the start until a
/// second ago ended exactly once; returns what was published and the fates.
pub(super) async fn finish(
    i: Instance,
    clock: &TestClock,
    ledger: &TestLedger,
    sites: &[(String, Duration)],
) -> (Vec<CheckRequest>, BTreeMap<(String, DateTime<Utc>), Fate>) {
    let end = clock.now() - chrono::Duration::seconds(1);
    let sent = i.stop().await;
    let mut f = fates(&sent, ledger);
    account_shed(&mut f, ledger, sites);
    for (name, interval) in sites {
        assert_each_slot_once(&f, name, *interval, wall0(), end);
    }
    (sent, f)
}

/// Adds the slots each shed run covers to `f` as skipped.
pub(super) fn account_shed(
    f: &mut BTreeMap<(String, DateTime<Utc>), Fate>,
    ledger: &TestLedger,
    sites: &[(String, Duration)],
) {
    for g in ledger.shed.lock().unwrap().iter() {
        let (_, interval) = sites.iter().find(|(n, _)| *n == g.site).expect("a site");
        let c = Cadence::new(&g.site, *interval);
        let mut slot = g.from;
        let mut n = 0;
        while slot < g.to {
            f.entry((g.site.clone(), slot)).or_default().skipped += 1;
            slot = c.next(slot);
            n += 1;
        }
        assert_eq!(n, g.slots, "{g:?}: slots as counted");
    }
}
