//! Load shedding: past the checkers' or the persisters' capacity, which
//! sites are checked this minute.
//!
//! The share of sites checked is set from the backlogs of three consumer
//! groups (`bus::lag`): the checkers' on `status_request_created` and each
//! persister's on its outcome topic. For each group, the rate at which it
//! takes messages while saturated is its capacity, and its share is what
//! that capacity covers of the slots the whole configuration offers (a
//! persister takes its part of them, as their arrival rates say), less
//! what drains a backlog beyond [`TARGET_WAIT`] (over [`CHECKER_DRAIN`]
//! for the checkers, [`DRAIN`] for a persister), plus
//! [`PROBE`] while it keeps up (how the share climbs back); the slowest
//! group sets the share. A stalled group is waited for, not shed for, and
//! a group's first seconds are its warm-up ([`FIRST_ROUND`]). Check
//! requests expire, so the checkers' backlog may wait about half the
//! shortest interval; results do not, so a persister's may wait
//! [`PERSISTER_WAIT`] before checks are held back for it.
//! Each minute a site is
//! checked when a hash of its name and the minute ranks below the share, so
//! which sites are held back rotates from minute to minute, and a site held
//! back stays held back while the share stays below its rank, at most for
//! the rest of the minute: its shed slots are one run, one `schedule_gaps`
//! row (reason `load_shed`) and one count in each rollup instead of a row
//! per slot (a share that moves past a site's rank and back within a
//! minute makes that site two runs or more). A site whose rank the share climbs past is checked from its
//! next slot on: held back to the minute's end, a share cut for a few
//! seconds of drain would hold sites back for the whole minute. A shed row cost Postgres about half a
//! checked one, and at twice the capacity shed rows took the time checked
//! rows needed (45 % of capacity checked; BENCHMARKS.md).
//!
//! This is adaptive throttling as in Google's SRE book ("Handling
//! Overload", client-side throttling): admit in proportion to what was
//! accepted, shed the rest before it costs anything downstream.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::bus::lag::Backlog;
use crate::config::Site;

/// Shedding starts only past this backlog: below it the checkers drain
/// their queue in well under a second whatever the estimate says.
const MIN_BACKLOG: i64 = 1_000;
/// Added to half the shortest interval before shedding starts: the
/// backlog figure is up to a commit period (one second) old, and what was
/// taken since is only estimated from the rate.
const ALLOWANCE: Duration = Duration::from_secs(1);
/// The backlog the share allows while shedding, in seconds of the
/// checkers' work: enough that they never wait for a request, short
/// against a 5 s deadline.
const TARGET_WAIT: f64 = 2.0;
/// Over how many seconds the share drains a persister's backlog beyond
/// its target: its results wait, they do not expire, so there is no hurry.
const DRAIN: f64 = 60.0;
/// Over how many seconds the share drains the checkers' backlog beyond
/// the target. Requests in it expire at their deadline, and checkers pass
/// over an expired one many times faster than they check one, so a slow
/// drain keeps them busy on requests that will only be `skipped`: over a
/// minute, as for a persister, 98,000 sites every 5 s (five times the
/// capacity) once kept 25,000-130,000 requests waiting for four minutes,
/// checked 2,296/s of a capacity of 3,856 and wrote 5,300 expired
/// requests a second as `skipped` rows (BENCHMARKS.md).
/// Twice the window rates are averaged over
/// ([`crate::bus::lag::WINDOW`]): a shorter horizon would act on figures
/// older than itself.
const CHECKER_DRAIN: f64 = 10.0;
/// A persister is overloaded, and its rate its capacity, once its results
/// wait this long to be written. Results do not expire, so the bound is
/// how stale the rows that alerts are decided from may get, not a
/// deadline. In an hour at 27,000 sites every 5 s, a persister near its
/// capacity read waits of 4.6-8.9 s when its writes stalled for a moment
/// (causes not told apart: checkpoints every 5 minutes, vacuums of the
/// day's partition, an hour's sum), and caught up; with the checkers'
/// bound (half the shortest interval and a second) each of those held
/// 2-8 % of the sites back for a minute, 1.4 % of the hour's slots
/// (BENCHMARKS.md). Over twice the longest of those waits.
const PERSISTER_WAIT: Duration = Duration::from_secs(20);
/// At most this share of a persister's capacity goes to draining its
/// backlog. Its messages, unlike check requests, do not expire: after an
/// outage of Postgres, shedding every check until the backlog is written
/// would trade fresh checks, a monitor's purpose, for old results written
/// sooner (a 10-minute outage at half the capacity held every check back
/// for 5 minutes).
const PERSISTER_DRAIN: f64 = 0.5;
/// How much more than the capacity the share admits while a group keeps
/// up (its queue under [`TARGET_WAIT`]): once a backlog is under its
/// target the drain ends and the share is back at the capacity at once,
/// and past it the share climbs by a tenth of the capacity each time the
/// group's rate shows more taken (sites held back are checked again from
/// their next slot), after the load or the capacity changed.
const PROBE: f64 = 0.1;
/// The checkers are saturated, and their rate their capacity, past this
/// wait (a persister past [`PERSISTER_WAIT`]). Not
/// less: backlogs are read from commits made every second, after a batch
/// is durable for the persisters, so a group that keeps up showed about a
/// second of wait before what it took since a commit was estimated; with
/// half a second as the bound, a bench run took the persisters' arrival
/// rate for their capacity and held the share at 15 %.
const SATURATED: Duration = Duration::from_secs(2);
/// Sites checked this rarely are never shed: they add little load, and a
/// shed slot would leave them unchecked for a whole interval.
pub(super) const NEVER_SHED_FROM: Duration = Duration::from_secs(300);
/// Why a shed run's slots were not checked (`schedule_gaps.reason`).
pub(super) const REASON: &str = "load_shed";

/// The minute a slot is in (Unix minutes).
pub(super) fn minute_of(slot: DateTime<Utc>) -> i64 {
    slot.timestamp_millis().div_euclid(60_000)
}

/// Where `site` ranks in `minute`, uniformly in `[0, 1)` and independently
/// from minute to minute: the first 64 bits of a SHA-256 (FNV-1a, the slot
/// offsets' hash, mixes a changed suffix too little: the same sites ranked
/// low minute after minute).
fn rank(site: &str, minute: i64) -> f64 {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("{site}\n{minute}"));
    let head: [u8; 8] = digest[..8].try_into().expect("32 bytes");
    u64::from_be_bytes(head) as f64 / (u64::MAX as f64 + 1.0)
}

/// Readings (seconds) a group's figures are not used for after a stall:
/// its 5 s rate still holds the stall's zeros, then the catching up, when
/// checkers pass over expired requests at many times their capacity.
const HOLD: u64 = 10;
/// A group's figures are not used for its first readings (seconds): one
/// round of checks, at most this long, and the window its rates are
/// averaged over ([`crate::bus::lag::WINDOW`]). The first round opens a
/// connection to every site and fills the resolver's cache, so the
/// checkers take requests at a fraction of their later rate: at 27,000
/// sites every 5 s they read 2,000/s seven seconds in, and the share of
/// 0.21 set from it held 79 % of the sites back for that minute (83,000
/// slots), while a minute later they took 5,400/s.
const FIRST_ROUND: Duration = Duration::from_secs(30);
/// Readings (seconds) a stalled group keeps its share for; then it stops
/// holding sites back, which would not drain it (a stuck persister must
/// not keep the share it had when it stopped for as long as it is stuck).
const RELEASE: u64 = 60;

/// The shedding state: per consumer group of each stage (the checkers;
/// the two persisters) its capacity as last measured and the share of
/// sites it can take; the share checked is the smallest.
#[derive(Debug)]
pub(super) struct Shedder {
    /// Slots per second the sites that may be shed offer (every instance
    /// sees every site, so each computes the same share).
    pub offered: f64,
    /// Slots per second the sites never shed offer ([`NEVER_SHED_FROM`]):
    /// taken out of the capacity before the share is set, or the others
    /// would be admitted for the capacity those use.
    pub fixed: f64,
    /// The shortest interval configured: shedding starts when a request
    /// would wait more than half of it.
    pub shortest: Duration,
    /// Readings held after a group's first: [`FIRST_ROUND`].
    warmup: u64,
    /// Per stage, per group.
    stages: Vec<Vec<Group>>,
    /// Share of sites checked this minute; 1 when not shedding.
    share: f64,
}

/// What a group's stage tells about it.
#[derive(Debug, Clone, Copy)]
struct Stage {
    /// Messages arriving per second, summed over the stage's groups.
    arrivals: f64,
    /// Its messages expire (check requests, past their deadline).
    expires: bool,
}

/// One consumer group's view. Every slot becomes one message to its stage,
/// and the group takes its part of them (all for the checkers; the
/// succeeded or failed outcomes for a persister).
#[derive(Debug)]
struct Group {
    /// Messages per second the group takes while saturated.
    capacity: f64,
    /// The group's part of its stage's messages, from their arrival rates
    /// (averaged over samples); 1 until measured.
    part: Option<f64>,
    /// The reading the group was last updated from: one comes a second,
    /// and a decision reads it many times.
    seen: Option<u64>,
    /// Readings before this one are held ([`HOLD`]).
    hold_until: u64,
    /// The first reading of the stall it is in.
    stalled_since: Option<u64>,
    /// Share of the offered slots this group can take; 1 when it keeps up.
    share: f64,
}

impl Default for Group {
    fn default() -> Self {
        Group {
            capacity: 0.0,
            part: None,
            seen: None,
            hold_until: 0,
            stalled_since: None,
            share: 1.0,
        }
    }
}

impl Default for Shedder {
    fn default() -> Self {
        Shedder {
            offered: 0.0,
            fixed: 0.0,
            shortest: Duration::MAX,
            warmup: 0,
            stages: Vec::new(),
            share: 1.0,
        }
    }
}

impl Stage {
    /// The wait past which the group is overloaded, and the wait (seconds)
    /// the share aims for while it sheds.
    fn bounds(self, shortest: Duration) -> (Duration, f64) {
        if self.expires {
            // Never allow more backlog than starts shedding: with 1 s
            // sites, 2 s of it would expire every request.
            let start = shortest / 2 + ALLOWANCE;
            (start, TARGET_WAIT.min(start.as_secs_f64()))
        } else {
            (PERSISTER_WAIT, PERSISTER_WAIT.as_secs_f64() / 2.0)
        }
    }

    /// The wait past which a group's rate is its capacity.
    fn saturated(self) -> Duration {
        if self.expires {
            SATURATED
        } else {
            // Shorter waits come from stalls, which read a low rate.
            PERSISTER_WAIT
        }
    }
}

impl Group {
    /// Updates the group's share from its latest figure `b` (`None`: it
    /// keeps its share) in `stage`.
    fn observe(&mut self, b: Option<Backlog>, stage: Stage, shedder: &Shedder) -> f64 {
        let Some(b) = b else {
            return self.share;
        };
        let wait = b.wait().unwrap_or_default();
        if self.seen.is_none() {
            self.hold_until = b.reading + shedder.warmup;
        }
        if self.seen != Some(b.reading) {
            self.seen = Some(b.reading);
            self.sample(b, wait, stage);
        }
        // A group that takes nothing is stalled (a broker restart, a
        // rebalance, Postgres out of reach), not overloaded: it catches up
        // at its full rate once it runs again, and holding sites back
        // meanwhile would not drain it. Read as overload, a broker restart
        // under 50 sites learnt a capacity of 50/s (the offered rate,
        // never saturated) and shed 58 % of them for a minute.
        if b.reading < self.hold_until || b.paused {
            return self.share;
        }
        let (start, target_wait) = stage.bounds(shedder.shortest);
        let overloaded = b.messages >= MIN_BACKLOG && wait > start;
        if self.share >= 1.0 && !overloaded {
            return self.share;
        }
        // In slots: the group takes `part` of each slot's messages.
        let part = self.part.unwrap_or(1.0);
        if part <= 0.0 || shedder.offered <= 0.0 {
            self.share = 1.0; // holding sites back would not help it
            return self.share;
        }
        let excess = (b.messages as f64 - self.capacity * target_wait).max(0.0);
        let drain = if stage.expires {
            excess / CHECKER_DRAIN
        } else {
            (excess / DRAIN).min(self.capacity * PERSISTER_DRAIN)
        };
        let probe = if wait.as_secs_f64() < target_wait {
            PROBE
        } else {
            0.0
        };
        let target = (self.capacity * (1.0 + probe) - drain) / part - shedder.fixed;
        self.share = (target / shedder.offered).clamp(0.0, 1.0);
        self.share
    }

    /// Takes in a new reading: the group's part, the hold, the capacity.
    fn sample(&mut self, b: Backlog, wait: Duration, stage: Stage) {
        if stage.arrivals > 0.0 {
            let part = b.arrival / stage.arrivals;
            self.part = Some(self.part.map_or(part, |p| 0.8 * p + 0.2 * part));
        }
        if b.stalled {
            // The stalled reading, then HOLD more.
            self.hold_until = self.hold_until.max(b.reading + HOLD + 1);
            let since = *self.stalled_since.get_or_insert(b.reading);
            if b.reading - since >= RELEASE {
                self.share = 1.0;
            }
        } else {
            self.stalled_since = None;
        }
        // Saturated, messages wait: the rate is what the group can do.
        // It falls by a tenth a sample at most, because the rate is
        // averaged over a few seconds and a burst after a quiet spell
        // (most sites decide at the start of a minute) reads low; a
        // bench run that took it whole measured a capacity of 600/s on
        // checkers that do 5,400/s and shed 94 % of the sites.
        if b.reading >= self.hold_until && !b.paused {
            self.capacity = if b.messages >= MIN_BACKLOG && wait > stage.saturated() {
                b.rate.max(self.capacity * 0.9)
            } else {
                self.capacity.max(b.rate)
            };
        }
    }
}

impl Shedder {
    /// The configuration's offered load: `intervals` of every enabled site.
    pub fn configure(&mut self, intervals: impl Iterator<Item = Duration>) {
        let (mut offered, mut fixed, mut shortest) = (0.0, 0.0, Duration::MAX);
        for i in intervals {
            let rate = 1.0 / i.as_secs_f64().max(0.001);
            if i < NEVER_SHED_FROM {
                offered += rate;
            } else {
                fixed += rate;
            }
            shortest = shortest.min(i);
        }
        (self.offered, self.fixed, self.shortest) = (offered, fixed, shortest);
        self.warmup = (shortest.min(FIRST_ROUND) + crate::bus::lag::WINDOW).as_secs();
    }

    /// Updates the share from the latest figures of each stage's groups
    /// (the checkers first, then the persisters) and returns it. A group
    /// without a figure (not started, or the broker did not answer) keeps
    /// the share it had: 1 until it has one.
    pub fn observe(&mut self, stages: &[Vec<Option<Backlog>>]) -> f64 {
        let mut groups = std::mem::take(&mut self.stages);
        groups.resize_with(stages.len(), Vec::new);
        let mut share = 1.0f64;
        for (i, (groups, figures)) in groups.iter_mut().zip(stages).enumerate() {
            groups.resize_with(figures.len(), Group::default);
            let stage = Stage {
                arrivals: figures.iter().flatten().map(|b| b.arrival).sum(),
                // The checkers' requests expire at their deadline.
                expires: i == 0,
            };
            for (group, b) in groups.iter_mut().zip(figures) {
                share = share.min(group.observe(*b, stage, self));
            }
        }
        self.stages = groups;
        if (share < 1.0) != (self.share < 1.0) {
            if share < 1.0 {
                tracing::warn!(backlogs = ?stages, checked_share = share,
                    "load shedding: the checkers or the persisters cannot keep up");
            } else {
                tracing::info!("load shedding ended");
            }
        }
        if share < 1.0 || self.share < 1.0 {
            metrics::gauge!(crate::telemetry::metrics::SHED_SHARE).set(share);
        }
        self.share = share;
        share
    }

    /// Whether `site`'s slots in `minute` are shed, given the figures of
    /// each stage's groups.
    pub fn sheds(&mut self, site: &Site, minute: i64, stages: &[Vec<Option<Backlog>>]) -> bool {
        let share = self.observe(stages);
        share < 1.0 && site.interval < NEVER_SHED_FROM && rank(&site.name, minute) >= share
    }
}

#[cfg(test)]
mod tests;
