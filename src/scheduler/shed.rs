//! Load shedding: past the checkers' or the persisters' capacity, which
//! sites are checked this minute.
//!
//! The share of sites checked is set from the backlogs of three consumer
//! groups (`bus::lag`): the checkers' on `status_request_created` and each
//! persister's on its outcome topic. For each group, the rate at which it
//! takes messages while saturated is its capacity, and its share is what
//! that capacity covers of the slots the whole configuration offers (a
//! persister takes its part of them, as their arrival rates say), less
//! what drains a backlog beyond [`TARGET_WAIT`] over [`DRAIN`], plus
//! [`PROBE`] while it keeps up (how the share climbs back); the slowest
//! group sets the share. A stalled group is waited for, not shed for.
//! Each minute a site is
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
/// backlog figure is up to a commit period (one second) old, and what was
/// taken since is only estimated from the rate.
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
/// At most this share of a persister's capacity goes to draining its
/// backlog. Its messages, unlike check requests, do not expire: after an
/// outage of Postgres, shedding every check until the backlog is written
/// would trade fresh checks, a monitor's purpose, for old results written
/// sooner (a 10-minute outage at half the capacity held every check back
/// for 5 minutes).
const PERSISTER_DRAIN: f64 = 0.5;
/// How much more than the capacity the share admits while a group keeps
/// up (its queue under [`TARGET_WAIT`]), so it climbs back by up to a
/// tenth a minute after the load or the capacity changed.
const PROBE: f64 = 0.1;
/// A group is saturated, and its rate its capacity, past this wait. Not
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
            stages: Vec::new(),
            share: 1.0,
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
        if self.seen != Some(b.reading) {
            self.seen = Some(b.reading);
            self.sample(b, wait, stage.arrivals);
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
        let overloaded = b.messages >= MIN_BACKLOG && wait > shedder.shortest / 2 + ALLOWANCE;
        if self.share >= 1.0 && !overloaded {
            return self.share;
        }
        // In slots: the group takes `part` of each slot's messages.
        let part = self.part.unwrap_or(1.0);
        if part <= 0.0 || shedder.offered <= 0.0 {
            self.share = 1.0; // holding sites back would not help it
            return self.share;
        }
        // Never allow more backlog than starts shedding: with 1 s sites,
        // 2 s of it would expire every request.
        let target_wait = TARGET_WAIT.min((shedder.shortest / 2 + ALLOWANCE).as_secs_f64());
        let excess = (b.messages as f64 - self.capacity * target_wait).max(0.0);
        let mut drain = excess / DRAIN;
        if !stage.expires {
            drain = drain.min(self.capacity * PERSISTER_DRAIN);
        }
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
    fn sample(&mut self, b: Backlog, wait: Duration, arrivals: f64) {
        if arrivals > 0.0 {
            let part = b.arrival / arrivals;
            self.part = Some(self.part.map_or(part, |p| 0.8 * p + 0.2 * part));
        }
        if b.stalled {
            // The stalled reading, then HOLD more.
            self.hold_until = b.reading + HOLD + 1;
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
            self.capacity = if b.messages >= MIN_BACKLOG && wait > SATURATED {
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
mod tests {
    use super::*;

    thread_local! {
        static READING: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    /// A figure, as the next reading (one a second).
    fn backlog(messages: i64, rate: f64) -> Option<Backlog> {
        let reading = READING.with(|r| r.replace(r.get() + 1));
        Some(Backlog {
            messages,
            rate,
            reading,
            ..Backlog::default()
        })
    }

    /// A stalled group's figure: nothing taken while `messages` wait.
    fn stalled(messages: i64) -> Option<Backlog> {
        backlog(messages, 0.0).map(|b| Backlog { stalled: true, ..b })
    }

    /// One stage of one group.
    fn one(b: Option<Backlog>) -> [Vec<Option<Backlog>>; 1] {
        [vec![b]]
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
        let first = s.observe(&one(backlog(20_000, 5_400.0)));
        assert!((0.45..0.5).contains(&first), "share {first}");
        // ... and at the allowed backlog (2 s of work) half the sites are
        // checked, though a 2 s wait alone would not have started it.
        let share = s.observe(&one(backlog(10_800, 5_400.0)));
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
        let low = s.observe(&one(backlog(300_000, 5_400.0)));
        assert!(low < 0.1, "share {low}");
        // Drained, the checkers idle: the capacity measured while they
        // were saturated, and a tenth more.
        let share = s.observe(&one(backlog(0, 100.0)));
        assert!((0.54..0.56).contains(&share), "share {share}");
        // The checkers keep up with more: the share follows.
        let more = s.observe(&one(backlog(100, 6_000.0)));
        assert!(more > share, "{more} after {share}");
        // A burst after a quiet spell reads a low rate: the capacity falls
        // by a tenth a sample, not to it (a bench run that took it whole
        // shed 94 % of the sites with the checkers idle).
        let one_reading = backlog(1_500, 600.0);
        let burst = s.observe(&one(one_reading));
        assert!((0.49..0.51).contains(&burst), "share {burst}");
        let again = s.observe(&one(one_reading));
        assert_eq!(again, burst, "one sample, counted once");
        // Under capacity with little waiting, the share ends at 1.
        let mut s = shedder(1_000, Duration::from_secs(5));
        assert!(s.observe(&one(backlog(5_000, 150.0))) < 1.0);
        assert_eq!(s.observe(&one(backlog(10, 200.0))), 1.0);
        assert_eq!(
            s.observe(&one(backlog(900, 200.0))),
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
        let share = s.observe(&one(backlog(2_000, 300.0)));
        assert!((0.35..0.42).contains(&share), "share {share}");
    }

    #[test]
    fn a_stalled_stage_is_waited_for_not_shed() {
        // 50 sites every second, never saturated: the capacity known is
        // the offered rate. The broker restarts and the groups rejoin:
        // 30 s of slots wait and nothing is taken.
        let mut s = shedder(50, Duration::from_secs(1));
        assert_eq!(s.observe(&one(backlog(10, 50.0))), 1.0);
        assert_eq!(s.observe(&one(stalled(1_500))), 1.0);
        // Running again, the stage catches up at its full rate.
        assert_eq!(s.observe(&one(backlog(1_200, 400.0))), 1.0);
        // While shedding, a stall keeps the share as it was.
        let mut s = shedder(54_000, Duration::from_secs(5));
        let share = s.observe(&one(backlog(20_000, 5_400.0)));
        assert!(share < 0.5, "share {share}");
        assert_eq!(s.observe(&one(stalled(40_000))), share);
        // Running again, the checkers pass over expired requests at ten
        // times their capacity: not read as capacity while held.
        for i in 0..HOLD as i64 {
            let catching_up = s.observe(&one(backlog(30_000 - i, 50_000.0)));
            assert_eq!(catching_up, share, "sample {i}");
        }
        // Then its figures count again, the capacity as before the stall
        // (50,000/s taken in would admit every site).
        let after = s.observe(&one(backlog(12_000, 5_400.0)));
        assert!((0.49..0.51).contains(&after), "{after} after {share}");
        // Paused (nothing taken for 2 s, the rate not yet 0): that
        // reading changes nothing, the next counts.
        let pausing = backlog(60_000, 1_000.0).map(|b| Backlog { paused: true, ..b });
        assert_eq!(s.observe(&one(pausing)), after);
        assert!(s.observe(&one(backlog(60_000, 1_000.0))) < after);
    }

    /// The persister stage: the succeeded group takes `ok` of the slots'
    /// messages, the failed group the rest.
    fn persisters(ok: (i64, f64, f64), failed: (i64, f64, f64)) -> Vec<Option<Backlog>> {
        [ok, failed]
            .map(|(messages, rate, arrival)| {
                Some(Backlog {
                    messages,
                    rate,
                    arrival,
                    ..Backlog::default()
                })
            })
            .to_vec()
    }

    #[test]
    fn a_persister_is_judged_on_its_part_of_the_slots() {
        // 54,000 sites every 5 s (10,800 slots/s), a tenth of the checks
        // fail. The succeeded persister writes 6,300 rows/s of the 9,720/s
        // that arrive: it covers 7,000 slots/s, less the drain.
        let mut s = shedder(54_000, Duration::from_secs(5));
        let share = s.observe(&[persisters(
            (30_000, 6_300.0, 9_720.0),
            (10, 1_080.0, 1_080.0),
        )]);
        let drain = (30_000.0 - 2.0 * 6_300.0) / 60.0 / 0.9;
        let want = (7_000.0 - drain) / 10_800.0;
        assert!((share - want).abs() < 0.005, "share {share}, want {want}");
    }

    #[test]
    fn a_persister_catching_up_after_an_outage_drains_with_half_its_capacity() {
        // 27,000 sites every 5 s (5,400 slots/s); the persisters write
        // 10,800 rows/s. Postgres was away for 10 minutes: 3.2M results
        // wait. Draining them within a minute would hold every check back;
        // half the capacity goes to the backlog, the rest to checks.
        let mut s = shedder(27_000, Duration::from_secs(5));
        let after_outage = [
            vec![backlog(10, 5_400.0)],
            vec![backlog(3_240_000, 10_800.0)],
        ];
        assert_eq!(s.observe(&after_outage), 1.0);
        // The checkers' requests expire: their backlog may be drained by
        // holding back more.
        let mut s = shedder(27_000, Duration::from_secs(5));
        assert_eq!(s.observe(&[vec![backlog(3_240_000, 10_800.0)]]), 0.0);
    }

    #[test]
    fn a_stuck_persister_beside_a_busy_one_sheds_nothing() {
        // The failed persister waits on something of its own; the other
        // writes what arrives. Summed as one stage, its growing backlog
        // read as overload and drove the share towards 0.
        let mut s = shedder(54_000, Duration::from_secs(5));
        for t in 1..=30i64 {
            let stuck = stalled(1_080 * t).map(|b| Backlog {
                arrival: 1_080.0,
                paused: true,
                ..b
            });
            let ok = backlog(2_000, 9_720.0).map(|b| Backlog {
                arrival: 9_720.0,
                ..b
            });
            assert_eq!(
                s.observe(&[vec![backlog(100, 10_800.0)], vec![ok, stuck]]),
                1.0
            );
        }
    }

    #[test]
    fn a_group_stalled_for_a_minute_stops_holding_sites_back() {
        let mut s = shedder(54_000, Duration::from_secs(5));
        let share = s.observe(&one(backlog(20_000, 5_400.0)));
        assert!(share < 0.5, "share {share}");
        for i in 0..RELEASE as i64 {
            assert_eq!(s.observe(&one(stalled(20_000 + i))), share, "reading {i}");
        }
        assert_eq!(s.observe(&one(stalled(30_000))), 1.0);
    }

    #[test]
    fn one_second_sites_are_allowed_less_backlog_than_they_live() {
        // 5,400 sites every second, checkers at 2,700/s: 1.5 s of backlog
        // (half the interval and the second a commit may be late) is what
        // starts shedding and what the share aims for, not 2 s.
        let mut s = shedder(5_400, Duration::from_secs(1));
        let share = s.observe(&one(backlog(8_100, 2_700.0)));
        let want = (2_700.0 - (8_100.0 - 1.5 * 2_700.0) / 60.0) / 5_400.0;
        assert!((share - want).abs() < 0.0005, "share {share}, want {want}");
    }

    #[test]
    fn the_slower_stage_sets_the_share() {
        // The checkers keep up with 10,800 slots/s; the persisters write
        // 7,000 rows/s with a growing backlog.
        let mut s = shedder(54_000, Duration::from_secs(5));
        let stages = |p: i64| [vec![backlog(10, 10_800.0)], vec![backlog(p, 7_000.0)]];
        let share = s.observe(&stages(200_000));
        assert!((0.35..0.37).contains(&share), "share {share}");
        let share = s.observe(&stages(14_000));
        assert!((0.64..0.65).contains(&share), "share {share}");
        // Without figures (the broker does not answer) the share stays.
        assert_eq!(s.observe(&[vec![None], vec![None]]), share);
        // A stage not measured yet does not shed.
        assert_eq!(
            shedder(10, Duration::from_secs(5)).observe(&[vec![None]]),
            1.0
        );
    }

    #[test]
    fn nothing_is_shed_without_overload_a_figure_or_for_rare_sites() {
        let mut s = shedder(54_000, Duration::from_secs(5));
        assert_eq!(s.observe(&one(None)), 1.0);
        // A backlog of 2 s at the shortest interval of 5 s: not yet.
        assert_eq!(s.observe(&one(backlog(10_000, 5_000.0))), 1.0);
        let toml = "[kafka]\nbrokers = \"127.0.0.1:1\"\n\
                    [[sites]]\nname = \"rare\"\nurl = \"http://rare.test/\"\ninterval = \"10m\"\n\
                    [[sites]]\nname = \"fast\"\nurl = \"http://fast.test/\"\ninterval = \"5s\"\ntimeout = \"1s\"\n";
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        std::fs::write(&path, toml).unwrap();
        let cfg = crate::config::load_with_env(&path, Default::default()).unwrap();
        let (rare, fast) = (&cfg.sites[0], &cfg.sites[1]);
        let over = backlog(300_000, 5_400.0);
        let fast_shed = (0..100).filter(|m| s.sheds(fast, *m, &one(over))).count();
        assert!(
            fast_shed > 80,
            "a 5 s site shed in {fast_shed} of 100 minutes"
        );
        assert!(
            (0..100).all(|m| !s.sheds(rare, m, &one(over))),
            "a 10-minute site shed"
        );
    }
}
