//! Load shedding: past the checkers' capacity, which sites are checked this
//! minute.
//!
//! The share of sites checked is set from two backlogs (`bus::lag`): the
//! checker group's on `status_request_created` and the persister groups'
//! on the two outcome topics. For each stage, the rate at which it takes
//! messages while saturated is its capacity, and its share is what that
//! capacity covers of the slots the whole configuration offers, less what
//! drains a backlog beyond [`TARGET_WAIT`] over [`DRAIN`], plus [`PROBE`]
//! while it keeps up (how the share climbs back); the slower stage sets
//! the share. Each minute a site is
//! checked when a hash of its name and the minute ranks below the share, so
//! which sites are held back rotates from minute to minute, and a site held
//! back stays held back for the rest of the minute: its shed slots are one
//! run, one `schedule_gaps` row (reason `load_shed`) and one count in each
//! rollup instead of a row per slot. A shed row cost Postgres about half a
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
/// backlog figure is up to a commit period (one second) old.
const ALLOWANCE: Duration = Duration::from_secs(1);
/// The backlog the share allows while shedding, in seconds of the
/// checkers' work: enough that they never wait for a request, short
/// against a 5 s deadline.
const TARGET_WAIT: f64 = 2.0;
/// Over how many seconds the share drains a backlog beyond the target. A
/// minute, because most sites decide at their first slot of a minute: a
/// shorter horizon would hold every site back for a minute to drain a
/// backlog that expires within an interval anyway, and leave the checkers
/// idle for the rest of it.
const DRAIN: f64 = 60.0;
/// How much more than the capacity the share admits while a stage keeps
/// up (its queue under [`TARGET_WAIT`]), so it climbs back by up to a
/// tenth a minute after the load or the capacity changed.
const PROBE: f64 = 0.1;
/// A stage is saturated, and its rate its capacity, past this wait. Not
/// less: backlogs are read from commits made every second, after a batch
/// is durable for the persisters, so a stage that keeps up shows about a
/// second of wait; with half a second as the bound, a bench run took the
/// persisters' arrival rate for their capacity and held the share at 15 %.
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

/// The shedding state: per stage (the checkers, the persisters) its
/// capacity as last measured and the share of sites it can take; the share
/// checked is the smallest.
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
    stages: Vec<Stage>,
    /// Share of sites checked this minute; 1 when not shedding.
    share: f64,
}

/// One stage's view: every slot becomes one message to it.
#[derive(Debug)]
struct Stage {
    /// Messages per second the stage takes while saturated.
    capacity: f64,
    /// The backlog figure the capacity was last updated from: it changes
    /// once a second, and a decision reads it many times.
    seen: Option<Backlog>,
    /// Share of the offered slots this stage can take; 1 when it keeps up.
    share: f64,
}

impl Default for Shedder {
    fn default() -> Self {
        Shedder {
            offered: 0.0,
            fixed: 0.0,
            shortest: Duration::MAX,
            stages: Vec::new(),
            share: 1.0,
        }
    }
}

impl Stage {
    fn observe(&mut self, b: Backlog, (offered, fixed): (f64, f64), shortest: Duration) -> f64 {
        let wait = b.wait().unwrap_or_default();
        if self.seen != Some(b) {
            self.seen = Some(b);
            // Saturated, messages wait: the rate is what the stage can do.
            // It falls by a tenth a sample at most, because the rate is
            // averaged over a few seconds and a burst after a quiet spell
            // (most sites decide at the start of a minute) reads low; a
            // bench run that took it whole measured a capacity of 600/s on
            // checkers that do 5,400/s and shed 94 % of the sites.
            self.capacity = if b.rate <= 0.0 {
                self.capacity
            } else if b.messages >= MIN_BACKLOG && wait > SATURATED {
                b.rate.max(self.capacity * 0.9)
            } else {
                self.capacity.max(b.rate)
            };
        }
        // A stage that took nothing over the window is stalled (a broker
        // restart, a rebalance, Postgres out of reach), not overloaded: it
        // catches up at its full rate once it runs again, and holding sites
        // back meanwhile would not drain it. Read as overload, a broker
        // restart under 50 sites learnt a capacity of 50/s (the offered
        // rate, never saturated) and shed 58 % of them for a minute.
        if b.rate <= 0.0 {
            return self.share;
        }
        let overloaded = b.messages >= MIN_BACKLOG && wait > shortest / 2 + ALLOWANCE;
        if self.share >= 1.0 && !overloaded {
            return self.share;
        }
        let excess = (b.messages as f64 - self.capacity * TARGET_WAIT).max(0.0);
        let probe = if wait < SATURATED { PROBE } else { 0.0 };
        let target = self.capacity * (1.0 + probe) - excess / DRAIN - fixed;
        self.share = if offered > 0.0 {
            (target / offered).clamp(0.0, 1.0)
        } else {
            1.0
        };
        self.share
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
    }

    /// Updates the share from the latest backlog of each stage (`None`:
    /// not measured, that stage sheds nothing) and returns it.
    pub fn observe(&mut self, backlogs: &[Option<Backlog>]) -> f64 {
        self.stages.resize_with(backlogs.len(), || Stage {
            capacity: 0.0,
            seen: None,
            share: 1.0,
        });
        let mut share = 1.0f64;
        for (stage, b) in self.stages.iter_mut().zip(backlogs) {
            stage.share = match b {
                Some(b) => stage.observe(*b, (self.offered, self.fixed), self.shortest),
                None => 1.0,
            };
            share = share.min(stage.share);
        }
        if (share < 1.0) != (self.share < 1.0) {
            if share < 1.0 {
                tracing::warn!(backlogs = ?backlogs, checked_share = share,
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

    /// Whether `site`'s slots in `minute` are shed, given each stage's
    /// backlog.
    pub fn sheds(&mut self, site: &Site, minute: i64, backlogs: &[Option<Backlog>]) -> bool {
        let share = self.observe(backlogs);
        share < 1.0 && site.interval < NEVER_SHED_FROM && rank(&site.name, minute) >= share
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backlog(messages: i64, rate: f64) -> Option<Backlog> {
        Some(Backlog { messages, rate })
    }

    fn shedder(sites: usize, interval: Duration) -> Shedder {
        let mut s = Shedder::default();
        s.configure(std::iter::repeat_n(interval, sites));
        s
    }

    #[test]
    fn at_twice_the_capacity_about_half_the_sites_are_checked() {
        // 54,000 sites every 5 s offer 10,800 slots/s; the checkers take
        // 5,400/s. A backlog of 3.7 s starts shedding and drains...
        let mut s = shedder(54_000, Duration::from_secs(5));
        let first = s.observe(&[backlog(20_000, 5_400.0)]);
        assert!((0.45..0.5).contains(&first), "share {first}");
        // ... and at the allowed backlog (2 s of work) half the sites are
        // checked, though a 2 s wait alone would not have started it.
        let share = s.observe(&[backlog(10_800, 5_400.0)]);
        assert!((0.49..0.51).contains(&share), "share {share}");
        // Ranks are uniform: the share of a minute's sites is the share.
        let checked = (0..54_000)
            .filter(|i| rank(&format!("site-{i}"), 29_000_000) < share)
            .count() as f64;
        assert!((checked / 54_000.0 - share).abs() < 0.01, "{checked}");
        // A minute later other sites are held back.
        let moved = (0..1_000)
            .filter(|i| {
                let n = format!("site-{i}");
                (rank(&n, 29_000_000) < share) != (rank(&n, 29_000_001) < share)
            })
            .count();
        assert!(moved > 300, "{moved} of 1,000 sites changed side");
    }

    #[test]
    fn a_large_backlog_sheds_most_and_the_share_climbs_back_once_it_drains() {
        let mut s = shedder(54_000, Duration::from_secs(5));
        let low = s.observe(&[backlog(300_000, 5_400.0)]);
        assert!(low < 0.1, "share {low}");
        // Drained, the checkers idle: the capacity measured while they
        // were saturated, and a tenth more.
        let share = s.observe(&[backlog(0, 100.0)]);
        assert!((0.54..0.56).contains(&share), "share {share}");
        // The checkers keep up with more: the share follows.
        let more = s.observe(&[backlog(100, 6_000.0)]);
        assert!(more > share, "{more} after {share}");
        // A burst after a quiet spell reads a low rate: the capacity falls
        // by a tenth a sample, not to it (a bench run that took it whole
        // shed 94 % of the sites with the checkers idle).
        let burst = s.observe(&[backlog(1_500, 600.0)]);
        assert!((0.49..0.51).contains(&burst), "share {burst}");
        let again = s.observe(&[backlog(1_500, 600.0)]);
        assert_eq!(again, burst, "one sample, counted once");
        // Under capacity with little waiting, the share ends at 1.
        let mut s = shedder(1_000, Duration::from_secs(5));
        assert!(s.observe(&[backlog(5_000, 150.0)]) < 1.0);
        assert_eq!(s.observe(&[backlog(10, 200.0)]), 1.0);
        assert_eq!(
            s.observe(&[backlog(900, 200.0)]),
            1.0,
            "stays off below the minimum"
        );
    }

    #[test]
    fn the_load_of_sites_never_shed_comes_out_of_the_capacity_first() {
        // 1,000 sites every 5 s and 60,000 every 5 minutes: 200 slots/s
        // each; the checkers take 300/s. Admitting 300/400 of the 5 s
        // sites would offer 350/s; the 5-minute sites' 200/s come first.
        let mut s = Shedder::default();
        s.configure(
            std::iter::repeat_n(Duration::from_secs(5), 1_000)
                .chain(std::iter::repeat_n(Duration::from_secs(300), 60_000)),
        );
        let share = s.observe(&[backlog(2_000, 300.0)]);
        assert!((0.35..0.42).contains(&share), "share {share}");
    }

    #[test]
    fn a_stalled_stage_is_waited_for_not_shed() {
        // 50 sites every second, never saturated: the capacity known is
        // the offered rate. The broker restarts and the groups rejoin:
        // 30 s of slots wait and nothing is taken.
        let mut s = shedder(50, Duration::from_secs(1));
        assert_eq!(s.observe(&[backlog(10, 50.0)]), 1.0);
        assert_eq!(s.observe(&[backlog(1_500, 0.0)]), 1.0);
        // Running again, the stage catches up at its full rate.
        assert_eq!(s.observe(&[backlog(1_200, 400.0)]), 1.0);
        // While shedding, a stall keeps the share as it was.
        let mut s = shedder(54_000, Duration::from_secs(5));
        let share = s.observe(&[backlog(20_000, 5_400.0)]);
        assert!(share < 0.5, "share {share}");
        assert_eq!(s.observe(&[backlog(40_000, 0.0)]), share);
        assert_eq!(s.observe(&[backlog(40_000, 0.0)]), share);
    }

    #[test]
    fn the_slower_stage_sets_the_share() {
        // The checkers keep up with 10,800 slots/s; the persisters write
        // 7,000 rows/s with a growing backlog.
        let mut s = shedder(54_000, Duration::from_secs(5));
        let stages = |p: i64| {
            [
                Some(Backlog {
                    messages: 10,
                    rate: 10_800.0,
                }),
                backlog(p, 7_000.0),
            ]
        };
        let share = s.observe(&stages(200_000));
        assert!((0.35..0.37).contains(&share), "share {share}");
        let share = s.observe(&stages(14_000));
        assert!((0.64..0.65).contains(&share), "share {share}");
        // A stage not measured (yet) does not shed.
        assert_eq!(s.observe(&[None, None]), 1.0);
    }

    #[test]
    fn nothing_is_shed_without_overload_a_figure_or_for_rare_sites() {
        let mut s = shedder(54_000, Duration::from_secs(5));
        assert_eq!(s.observe(&[None]), 1.0);
        // A backlog of 2 s at the shortest interval of 5 s: not yet.
        assert_eq!(s.observe(&[backlog(10_000, 5_000.0)]), 1.0);
        let toml = "[kafka]\nbrokers = \"127.0.0.1:1\"\n\
                    [[sites]]\nname = \"rare\"\nurl = \"http://rare.test/\"\ninterval = \"10m\"\n\
                    [[sites]]\nname = \"fast\"\nurl = \"http://fast.test/\"\ninterval = \"5s\"\ntimeout = \"1s\"\n";
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        std::fs::write(&path, toml).unwrap();
        let cfg = crate::config::load_with_env(&path, Default::default()).unwrap();
        let (rare, fast) = (&cfg.sites[0], &cfg.sites[1]);
        let over = backlog(300_000, 5_400.0);
        let fast_shed = (0..100).filter(|m| s.sheds(fast, *m, &[over])).count();
        assert!(
            fast_shed > 80,
            "a 5 s site shed in {fast_shed} of 100 minutes"
        );
        assert!(
            (0..100).all(|m| !s.sheds(rare, m, &[over])),
            "a 10-minute site shed"
        );
    }
}
