//! The shedding controller's arithmetic, reading by reading.

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

/// A shedder past its warm-up (which has its own test): the first
/// figures count.
fn shedder(sites: usize, interval: Duration) -> Shedder {
    let mut s = Shedder::default();
    s.configure(std::iter::repeat_n(interval, sites));
    s.warmup = 0;
    s
}

#[test]
fn at_twice_the_capacity_about_half_the_sites_are_checked() {
    // 54,000 sites every 5 s offer 10,800 slots/s; the checkers take
    // 5,400/s. A backlog of 3.7 s starts shedding and drains within
    // 10 s (its requests expire: 920 of the 5,400/s go to draining it)...
    let mut s = shedder(54_000, Duration::from_secs(5));
    let first = s.observe(&one(backlog(20_000, 5_400.0)));
    let want = (5_400.0 - (20_000.0 - 2.0 * 5_400.0) / 10.0) / 10_800.0;
    assert!((first - want).abs() < 0.0005, "share {first}, want {want}");
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
    // each; the checkers take 300/s, 50/s of it to drain their backlog.
    // Admitting 250/200 of the 5 s sites would shed nothing; the
    // 5-minute sites' 200/s come first.
    let mut s = Shedder::default();
    s.configure(
        std::iter::repeat_n(Duration::from_secs(5), 1_000)
            .chain(std::iter::repeat_n(Duration::from_secs(300), 60_000)),
    );
    s.warmup = 0;
    let share = s.observe(&one(backlog(1_100, 300.0)));
    assert!((0.24..0.26).contains(&share), "share {share}");
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
    let after = s.observe(&one(backlog(11_000, 5_400.0)));
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
    // that arrive: it covers 7,000 slots/s, less what drains its
    // backlog (24 s of writes) to 10 s within a minute.
    let mut s = shedder(54_000, Duration::from_secs(5));
    let share = s.observe(&[
        vec![backlog(10, 10_800.0)],
        persisters((150_000, 6_300.0, 9_720.0), (10, 1_080.0, 1_080.0)),
    ]);
    let drain = (150_000.0 - 10.0 * 6_300.0) / 60.0 / 0.9;
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
    let want = (2_700.0 - (8_100.0 - 1.5 * 2_700.0) / 10.0) / 5_400.0;
    assert!((share - want).abs() < 0.0005, "share {share}, want {want}");
}

#[test]
fn the_slower_stage_sets_the_share() {
    // The checkers keep up with 10,800 slots/s; the persisters write
    // 7,000 rows/s with a growing backlog: 29 s of writes, drained to
    // 10 s within a minute.
    let mut s = shedder(54_000, Duration::from_secs(5));
    let stages = |p: i64| [vec![backlog(10, 10_800.0)], vec![backlog(p, 7_000.0)]];
    let share = s.observe(&stages(200_000));
    let want = (7_000.0 - (200_000.0 - 70_000.0) / 60.0) / 10_800.0;
    assert!((share - want).abs() < 0.001, "share {share}, want {want}");
    // Under 10 s of writes the persisters keep up: the share climbs
    // by the probe.
    let share = s.observe(&stages(14_000));
    assert!((0.71..0.72).contains(&share), "share {share}");
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

#[test]
fn a_groups_first_round_is_its_warm_up() {
    // 27,000 sites every 5 s: one round and the 5 s the rates are
    // averaged over. The checkers start cold, as in the hour-long soak:
    // 2,000 requests/s taken of 5,400/s offered, 10,000 waiting.
    let mut s = Shedder::default();
    s.configure(std::iter::repeat_n(Duration::from_secs(5), 27_000));
    assert_eq!(s.warmup, 10);
    for i in 0..10 {
        assert_eq!(
            s.observe(&one(backlog(10_000, 2_000.0))),
            1.0,
            "reading {i}"
        );
    }
    // Warm, they keep up; nothing learnt while cold holds them back.
    assert_eq!(s.observe(&one(backlog(500, 5_400.0))), 1.0);
    // The cold figures, past a warm-up, shed most sites.
    let mut cold = shedder(27_000, Duration::from_secs(5));
    assert!(cold.observe(&one(backlog(10_000, 2_000.0))) < 0.4);
    // One round is at most 30 s: rare sites do not hold shedding off
    // for minutes.
    let mut s = Shedder::default();
    s.configure([Duration::from_secs(1), Duration::from_secs(600)].into_iter());
    assert_eq!(s.warmup, 6);
    s.configure(std::iter::once(Duration::from_secs(600)));
    assert_eq!(s.warmup, 35);
}

#[test]
fn a_persister_stalled_for_seconds_near_its_capacity_sheds_nothing() {
    // 27,000 sites every 5 s; the succeeded persister writes 5,800
    // rows/s. A checkpoint stalls its writes: 9 s of backlog at the rate
    // read during the stall, for ten seconds.
    let mut s = shedder(27_000, Duration::from_secs(5));
    let stages = |messages, rate| [vec![backlog(200, 5_400.0)], vec![backlog(messages, rate)]];
    assert_eq!(s.observe(&stages(3_000, 5_800.0)), 1.0);
    for i in 0..10 {
        assert_eq!(s.observe(&stages(17_000, 1_900.0)), 1.0, "reading {i}");
    }
    // The same wait at the checkers, whose requests expire, sheds.
    let mut checkers = shedder(27_000, Duration::from_secs(5));
    assert!(checkers.observe(&one(backlog(17_000, 1_900.0))) < 1.0);
    // Past 20 s of writes the persister is overloaded, its capacity
    // falling by a tenth from what it wrote before the stall (the stall's
    // rate was not taken for it), and the share drains the backlog to
    // 10 s of writes within a minute.
    let share = s.observe(&stages(130_000, 5_000.0));
    let capacity = 0.9 * 5_800.0;
    let want = (capacity - (130_000.0 - 10.0 * capacity) / 60.0) / 5_400.0;
    assert!((share - want).abs() < 0.001, "share {share}, want {want}");
}
