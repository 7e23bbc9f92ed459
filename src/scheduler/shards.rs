//! Which sites this scheduler instance schedules. Sites are hashed into
//! `scheduler.shards` shards, and each shard is leased to one live
//! scheduler instance at a time through Postgres (`scheduler_leases`, see
//! migration V3): every instance renews its leases every third of
//! `scheduler.failover_timeout`, claims expired ones up to a fair share of
//! the live instances, and gives up its excess so a new instance gets work.
//! A dead instance's leases expire and the others claim them: that is the
//! failover time (at most the timeout plus one renewal period).
//!
//! Promises: an instance stops publishing a shard *before* the shard can be
//! leased to another — excess shards are stopped locally one round before
//! they are freed in the database, and an instance that cannot renew (a
//! pause, a lost database) stops on its own clock when its leases would
//! have expired, counted from before it asked. So two live instances never
//! schedule one site at once. The broker's group protocol cannot promise
//! that: a member removed on the coordinator's clock learns it only at its
//! next heartbeat, and may publish meanwhile (see the README, "Why leases").

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::slots::stable_hash;
use crate::store::StoreError;
use crate::telemetry::metrics as m;

/// The shard of a site among `shards`. FNV-1a alone spreads short names
/// badly over a small modulus (and is what the slot offset uses), so its
/// bits are mixed first (MurmurHash3's 64-bit finaliser).
pub fn shard_of(site: &str, shards: usize) -> usize {
    let mut h = stable_hash(site);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    (h % shards.max(1) as u64) as usize
}

/// The shards this instance owns now, shared between the lease loop and
/// the scheduler loop.
#[derive(Clone)]
pub struct Ownership {
    owned: Arc<[AtomicBool]>,
    /// Milliseconds after `epoch` until which the leases are surely ours.
    valid_until: Arc<AtomicU64>,
    epoch: Instant,
    /// Bumped after every change, so the scheduler re-reads `owned`.
    changed: Arc<watch::Sender<u64>>,
    /// Shards let go whose hand-over (their sites' progress, shed runs and
    /// holds) the scheduler has not written yet: their leases are kept
    /// until it has, so the next owner never starts from older progress
    /// with the old owner's records still to come.
    handing_over: Arc<[AtomicBool]>,
}

impl Ownership {
    pub fn new(shards: usize) -> Self {
        Ownership {
            owned: (0..shards).map(|_| AtomicBool::new(false)).collect(),
            valid_until: Arc::new(AtomicU64::new(0)),
            epoch: Instant::now(),
            changed: Arc::new(watch::Sender::new(0)),
            handing_over: (0..shards).map(|_| AtomicBool::new(false)).collect(),
        }
    }

    /// Every shard, for good: a scheduler that coordinates with nobody.
    pub fn all(shards: usize) -> Self {
        let o = Self::new(shards);
        o.replace(&(0..shards).collect::<Vec<_>>(), None);
        o
    }

    pub fn shards(&self) -> usize {
        self.owned.len()
    }

    /// Owned, and the lease surely not expired.
    pub fn owns(&self, shard: usize) -> bool {
        self.owned
            .get(shard)
            .is_some_and(|b| b.load(Ordering::SeqCst))
            && self.now_ms() < self.valid_until.load(Ordering::SeqCst)
    }

    /// Holds any shard, expired or not.
    fn any_held(&self) -> bool {
        self.owned.iter().any(|b| b.load(Ordering::SeqCst))
    }

    pub fn count(&self) -> usize {
        (0..self.shards()).filter(|s| self.owns(*s)).count()
    }

    /// Let go of, and its hand-over not yet written.
    pub fn is_handing_over(&self, shard: usize) -> bool {
        self.handing_over
            .get(shard)
            .is_some_and(|b| b.load(Ordering::SeqCst))
    }

    /// `shard`'s hand-over is written (or had nothing to write): its
    /// lease may go.
    pub fn handed_over(&self, shard: usize) {
        if let Some(b) = self.handing_over.get(shard) {
            b.store(false, Ordering::SeqCst);
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Owns exactly `shards` until `until` (`None`: forever).
    pub(super) fn replace(&self, shards: &[usize], until: Option<Instant>) {
        let until_ms = until.map_or(u64::MAX, |t| {
            t.saturating_duration_since(self.epoch).as_millis() as u64
        });
        // Back from an expiry counts as a change: parked sites must resume.
        let mut changed = self.valid_until.load(Ordering::SeqCst) <= self.now_ms();
        let mut wanted = vec![false; self.owned.len()];
        for &s in shards {
            if let Some(w) = wanted.get_mut(s) {
                *w = true;
            }
        }
        for ((b, want), h) in self.owned.iter().zip(wanted).zip(self.handing_over.iter()) {
            let had = b.swap(want, Ordering::SeqCst);
            changed |= had != want;
            if had && !want {
                h.store(true, Ordering::SeqCst);
            }
        }
        self.valid_until.store(until_ms, Ordering::SeqCst);
        metrics::gauge!(m::SHARDS_OWNED).set(shards.len() as f64);
        if changed {
            self.changed.send_modify(|g| *g += 1);
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

/// This instance's name among the schedulers: unique per process.
pub fn member_id() -> String {
    format!(
        "{}-{}-{}",
        crate::instance::instance_name(),
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Holds this instance's shard leases until `leave`: renews, claims and
/// releases every third of `ttl`, and keeps `ownership` in step. On
/// `leave`, stops every shard and frees the leases so the others take over
/// at their next renewal instead of after the timeout.
pub async fn hold(pool: Pool, ttl: Duration, ownership: Ownership, leave: CancellationToken) {
    let me = member_id();
    let shards = ownership.shards() as i32;
    let mut tick = tokio::time::interval(ttl / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut releasing: Vec<i32> = Vec::new();
    let mut until = Instant::now();
    tracing::info!(member = %me, shards, ?ttl, "scheduler holding shard leases");
    loop {
        tokio::select! {
            _ = leave.cancelled() => break,
            _ = tick.tick() => {}
        }
        // Counted from before the request: the database renewed at or after
        // this instant, so our leases last at least until `sent + ttl`.
        let sent = Instant::now();
        // Excess leases go once their hand-over is written; until then
        // they are renewed and stay excess.
        let release: Vec<i32> = releasing
            .iter()
            .copied()
            .filter(|s| !ownership.is_handing_over(*s as usize))
            .collect();
        match step(&pool, &me, shards, ttl, &release, false).await {
            Ok(leases) => {
                let keep: Vec<usize> = leases
                    .iter()
                    .filter(|l| !l.2)
                    .map(|l| l.0 as usize)
                    .collect();
                releasing = leases.iter().filter(|l| l.2).map(|l| l.0).collect();
                until = sent + ttl;
                if keep.len() != ownership.count() || !keep.iter().all(|s| ownership.owns(*s)) {
                    tracing::info!(shards = ?keep, giving_up = ?releasing, "scheduler shards changed");
                }
                ownership.replace(&keep, Some(until));
            }
            Err(e) => {
                tracing::warn!(error = %e, expires_in = ?until.saturating_duration_since(Instant::now()),
                    "cannot renew scheduler leases");
                if Instant::now() >= until && ownership.any_held() {
                    tracing::warn!(
                        "scheduler leases expired: stopped scheduling until Postgres answers"
                    );
                    ownership.replace(&[], Some(until));
                }
            }
        }
    }
    ownership.replace(&[], Some(Instant::now()));
    if let Err(e) = step(&pool, &me, shards, ttl, &[], true).await {
        tracing::warn!(error = %e, "could not free scheduler leases; they expire on their own");
    }
}

async fn step(
    pool: &Pool,
    me: &str,
    shards: i32,
    ttl: Duration,
    release: &[i32],
    leaving: bool,
) -> Result<Vec<(i32, i64, bool)>, StoreError> {
    let client = pool.get().await?;
    let ttl_ms = ttl.as_millis() as f64;
    let rows = client
        .query(
            "SELECT shard, epoch, excess FROM sitewatch_scheduler_tick(
                 $1, $2, make_interval(secs => $3::float8 / 1000), $4, $5)",
            &[&me, &shards, &ttl_ms, &release, &leaving],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sites_spread_over_shards() {
        // Long and very short names alike (short ones defeat plain FNV).
        for name in [
            |i: usize| format!("site-{i}"),
            |i: usize| format!("s{i:02}"),
        ] {
            let mut counts = [0u32; 8];
            for i in 0..8000 {
                counts[shard_of(&name(i), 8)] += 1;
            }
            for c in counts {
                assert!((850..1150).contains(&c), "uneven: {counts:?}");
            }
        }
        let mut few = [0u32; 8];
        for i in 0..60 {
            few[shard_of(&format!("s{i:03}"), 8)] += 1;
        }
        assert!(few.iter().all(|c| *c >= 2), "60 short names: {few:?}");
    }

    #[test]
    fn ownership_follows_leases_and_expires_on_its_own() {
        let o = Ownership::new(4);
        let mut seen = o.subscribe();
        assert_eq!(o.count(), 0);
        o.replace(&[1, 3], Some(Instant::now() + Duration::from_secs(60)));
        assert!(o.owns(1) && o.owns(3) && !o.owns(0));
        assert!(seen.has_changed().unwrap());
        seen.mark_unchanged();
        o.replace(&[3], Some(Instant::now() + Duration::from_secs(60)));
        assert_eq!(o.count(), 1);
        assert!(seen.has_changed().unwrap());
        // A lease whose time has passed is not owned, renewal or not.
        o.replace(&[3], Some(Instant::now()));
        assert!(!o.owns(3));
        assert_eq!(Ownership::all(5).count(), 5);
        assert!(!o.owns(99), "out of range is not owned");
        // A shard let go waits for its hand-over before its lease goes.
        let o = Ownership::new(4);
        let later = Some(Instant::now() + Duration::from_secs(60));
        o.replace(&[0, 1, 2], later);
        assert!((0..4).all(|s| !o.is_handing_over(s)));
        o.replace(&[0], later);
        assert!(o.is_handing_over(1) && o.is_handing_over(2) && !o.is_handing_over(0));
        o.handed_over(1);
        assert!(!o.is_handing_over(1) && o.is_handing_over(2));
    }
}
