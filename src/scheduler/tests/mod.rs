//! The scheduler's slot accounting in paused time, through its seams: a
//! clock that follows tokio's (and can jump, as after a suspend), a sink
//! that records requests (and can refuse them), and a ledger in memory.
//! Every test checks the promise: each slot of each site ends as exactly
//! one published request or one skipped row (or a gap), none twice.

mod fakes;
mod model;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::*;
use crate::bus::lag::Backlog;
use fakes::*;

#[tokio::test(start_paused = true)]
async fn slots_are_aligned_published_once_and_on_time() {
    let (clock, ledger) = (clock(), Arc::new(TestLedger::default()));
    let sites = named(3, Duration::from_secs(10));
    let i = start(&sites, 4, &clock, &ledger, Ownership::all(4));
    run_for(Duration::from_secs(60)).await;
    // New sites: history starts at the first slot after the start.
    let (sent, f) = finish(i, &clock, &ledger, &sites).await;
    for (name, interval) in &sites {
        let c = Cadence::new(name, *interval);
        assert!(f
            .keys()
            .filter(|(s, _)| s == name)
            .all(|(_, t)| c.first_at_or_after(*t) == *t && *t >= wall0()));
    }
    assert!(
        sent.iter().all(|r| !r.late),
        "nothing late on an idle clock"
    );
    assert!(ledger.skipped.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn after_a_pause_only_the_latest_slot_is_published_and_marked_late() {
    let (clock, ledger) = (clock(), Arc::new(TestLedger::default()));
    let sites = named(1, Duration::from_secs(10));
    let i = start(&sites, 1, &clock, &ledger, Ownership::all(1));
    run_for(Duration::from_secs(25)).await;
    // The machine was suspended for 47 s: the wall clock jumps.
    clock.jump_ms.store(47_000, Ordering::SeqCst);
    run_for(Duration::from_secs(30)).await;
    let (_, f) = finish(i, &clock, &ledger, &named(1, Duration::from_secs(10))).await;
    let behind = ledger
        .skipped
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.message == "scheduler was behind")
        .count();
    assert!(
        (3..=5).contains(&behind),
        "{behind} slots recorded as behind"
    );
    assert_eq!(
        f.values().filter(|x| x.late > 0).count(),
        1,
        "the one caught-up slot is late"
    );
}

#[tokio::test(start_paused = true)]
async fn a_restart_checks_the_latest_missed_slot_late_and_records_the_rest() {
    let (clock, ledger) = (clock(), Arc::new(TestLedger::default()));
    let hour = Duration::from_secs(3600);
    let c = Cadence::new("site-0", hour);
    // The last run accounted for every slot before `due`, three hours ago;
    // the daemon comes back 5 s after `due`'s slot of now.
    let due = c.last_at_or_before(wall0());
    clock
        .jump_ms
        .store((due - wall0()).num_milliseconds() + 5_000, Ordering::SeqCst);
    let accounted = due - chrono::Duration::hours(3);
    ledger
        .stored
        .lock()
        .unwrap()
        .sites
        .insert("site-0".into(), accounted);
    let i = start(&named(1, hour), 8, &clock, &ledger, Ownership::all(8));
    run_for(Duration::from_secs(10)).await;
    let sent = i.stop().await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].scheduled_at, due, "the slot due 5 s ago is checked");
    assert!(sent[0].late);
    let skipped: Vec<DateTime<Utc>> = ledger
        .skipped
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.scheduled_at)
        .collect();
    assert_eq!(
        skipped,
        (1..=3)
            .rev()
            .map(|h| due - chrono::Duration::hours(h))
            .collect::<Vec<_>>()
    );
    // After a clean stop, the site's progress is the stop: its next slot
    // is an hour away, but progress never claims time past its clock.
    let stopped = clock.now();
    assert!(c.next(due) > stopped);
    assert_eq!(ledger.stored.lock().unwrap().sites["site-0"], stopped);
}

#[tokio::test(start_paused = true)]
async fn a_new_site_starts_at_its_next_slot_and_a_known_one_after_its_watermark() {
    let (clock, ledger) = (clock(), Arc::new(TestLedger::default()));
    let interval = Duration::from_secs(60);
    let sites = named(2, interval);
    // site-1 is known, and its shard's watermark (under another shard count,
    // as after a change of `scheduler.shards`) is later than its own row.
    let c1 = Cadence::new("site-1", interval);
    let mark = c1.last_at_or_before(wall0()) - chrono::Duration::minutes(2);
    {
        let mut s = ledger.stored.lock().unwrap();
        s.sites
            .insert("site-1".into(), mark - chrono::Duration::days(3));
        s.watermarks.push((3, shard_of("site-1", 3), mark));
    }
    let i = start(&sites, 2, &clock, &ledger, Ownership::all(2));
    run_for(Duration::from_secs(150)).await;
    let end = clock.now();
    let sent = i.stop().await;
    let f = fates(&sent, &ledger);
    let c0 = Cadence::new("site-0", interval);
    assert_eq!(
        sent.iter()
            .filter(|r| r.site == "site-0")
            .map(|r| r.scheduled_at)
            .min(),
        Some(c0.first_at_or_after(wall0())),
        "a new site's history starts at its first slot"
    );
    assert_each_slot_once(
        &f,
        "site-1",
        interval,
        mark,
        end - chrono::Duration::seconds(1),
    );
    assert_eq!(
        ledger.skipped.lock().unwrap().len(),
        2,
        "two slots after the watermark were missed"
    );
    assert!(ledger.gaps.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_long_absence_is_one_gap_row_beyond_the_backfill_limit() {
    let (clock, ledger) = (clock(), Arc::new(TestLedger::default()));
    let interval = Duration::from_secs(10);
    let from = wall0() - chrono::Duration::hours(1);
    ledger
        .stored
        .lock()
        .unwrap()
        .sites
        .insert("site-0".into(), from);
    let i = start(&named(1, interval), 1, &clock, &ledger, Ownership::all(1));
    run_for(Duration::from_secs(5)).await;
    let sent = i.stop().await;
    let gaps = ledger.gaps.lock().unwrap().clone();
    let skipped = ledger.skipped.lock().unwrap().len() as i64;
    assert_eq!(skipped, 300, "backfill_limit rows");
    assert_eq!(gaps.len(), 1);
    // 360 slots in the hour: the latest is published, the rest recorded.
    assert_eq!(
        gaps[0].slots + skipped + sent.len() as i64,
        360 + i64::from(sent.len() > 1)
    );
}

#[tokio::test(start_paused = true)]
async fn a_slot_the_broker_never_acknowledges_is_recorded_once_at_its_deadline() {
    let (clock, ledger) = (clock(), Arc::new(TestLedger::default()));
    let interval = Duration::from_secs(5);
    let i = start(&named(1, interval), 1, &clock, &ledger, Ownership::all(1));
    run_for(Duration::from_secs(12)).await;
    i.sink.refuse.store(true, Ordering::SeqCst);
    run_for(Duration::from_secs(21)).await;
    i.sink.refuse.store(false, Ordering::SeqCst);
    run_for(Duration::from_secs(12)).await;
    finish(i, &clock, &ledger, &named(1, interval)).await;
    let undelivered = ledger
        .skipped
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.message.starts_with("not delivered"))
        .count();
    // Four slots fall in the 21 s; the last may be delivered by a retry.
    assert!(
        (3..=4).contains(&undelivered),
        "{undelivered} slots recorded as undelivered"
    );
}

#[tokio::test(start_paused = true)]
async fn skipped_rows_wait_in_memory_while_the_ledger_is_down() {
    let (clock, ledger) = (clock(), Arc::new(TestLedger::default()));
    let interval = Duration::from_secs(2);
    let i = start(&named(1, interval), 1, &clock, &ledger, Ownership::all(1));
    run_for(Duration::from_secs(5)).await;
    ledger.down.store(true, Ordering::SeqCst);
    clock.jump_ms.store(9_000, Ordering::SeqCst); // some slots fall behind
    run_for(Duration::from_secs(5)).await;
    assert!(ledger.skipped.lock().unwrap().is_empty());
    ledger.down.store(false, Ordering::SeqCst);
    run_for(Duration::from_secs(5)).await;
    finish(i, &clock, &ledger, &named(1, interval)).await;
    assert!(!ledger.skipped.lock().unwrap().is_empty());
}

/// Two instances on 4 shards, both fed `backlog`: `a` holds every shard
/// for `before`, then shards 2 and 3 move to `b` (`a` lets go first, as
/// leases promise) and both run for `after`. Asserts that every slot of
/// `sites` until a second before the end ended exactly once (published,
/// skipped or in a shed run); returns the ledger.
async fn hand_over_upper_shards(
    sites: &[(String, Duration)],
    backlog: Option<Backlog>,
    before: Duration,
    after: Duration,
) -> Arc<TestLedger> {
    let (clock, ledger) = (clock(), Arc::new(TestLedger::default()));
    let forever = Some(std::time::Instant::now() + Duration::from_secs(3600));
    let (a_own, b_own) = (Ownership::new(4), Ownership::new(4));
    a_own.replace(&[0, 1, 2, 3], forever);
    let mut a = start(sites, 4, &clock, &ledger, a_own);
    let mut b = start(sites, 4, &clock, &ledger, b_own);
    a.feed(backlog);
    b.feed(backlog);
    run_for(before).await;
    a.ownership.replace(&[0, 1], forever);
    run_for(Duration::from_millis(1500)).await;
    b.ownership.replace(&[2, 3], forever);
    run_for(after).await;
    let end = clock.now();
    let mut sent = a.stop().await;
    sent.extend(b.stop().await);
    let mut f = fates(&sent, &ledger);
    account_shed(&mut f, &ledger, sites);
    for (name, interval) in sites {
        assert_each_slot_once(
            &f,
            name,
            *interval,
            wall0(),
            end - chrono::Duration::seconds(1),
        );
    }
    ledger
}

#[tokio::test(start_paused = true)]
async fn a_shard_handed_over_loses_no_slot_and_repeats_none() {
    let sites = named(40, Duration::from_secs(3));
    let twenty = Duration::from_secs(20);
    hand_over_upper_shards(&sites, None, twenty, twenty).await;
    let moved = sites.iter().filter(|(n, _)| shard_of(n, 4) >= 2).count();
    assert!(moved > 5, "{moved} sites moved");
}

#[tokio::test(start_paused = true)]
async fn progress_writes_scale_with_shards_not_checks() {
    let (clock, ledger) = (clock(), Arc::new(TestLedger::default()));
    let (n, shards) = (300, 4);
    let i = start(
        &named(n, Duration::from_secs(1)),
        shards,
        &clock,
        &ledger,
        Ownership::all(shards),
    );
    run_for(Duration::from_secs(60)).await;
    let sent = i.stop().await;
    assert!(sent.len() >= n * 58, "{} checks", sent.len());
    let (sites, marks) = (
        ledger.site_rows.load(Ordering::SeqCst),
        ledger.watermark_rows.load(Ordering::SeqCst),
    );
    assert_eq!(
        sites,
        2 * n,
        "one progress row per site taken on, one at the stop"
    );
    // Every 5 s, plus the last flush.
    assert!(marks <= shards * (60 / 5 + 2), "{marks} watermark rows");
    assert!(
        marks * 1000 < sent.len() * 5,
        "progress is {marks} rows for {} checks, not < 0.5 %",
        sent.len()
    );
}

/// A backlog that makes the share of sites checked one half for 40 sites
/// every 5 s (8 slots/s): 100/s - (1,160 - 2 s x 100/s) / 10 s = 4 slots/s,
/// waiting 11.6 s (more than half the shortest interval plus 1 s: it
/// starts).
fn half_share_backlog() -> Backlog {
    Backlog {
        messages: 1_160,
        rate: 100.0,
        ..Backlog::default()
    }
}

#[tokio::test(start_paused = true)]
async fn past_the_checkers_capacity_sites_are_shed_in_runs_recorded_once() {
    let (clock, ledger) = (clock(), Arc::new(TestLedger::default()));
    let mut sites = named(40, Duration::from_secs(5));
    sites.push(("rare".into(), Duration::from_secs(600)));
    let mut i = start(&sites, 2, &clock, &ledger, Ownership::all(2));
    run_for(Duration::from_secs(10)).await;
    i.feed(Some(half_share_backlog()));
    // Ten seconds into minute 3, so minutes 1 and 2 are shed whole; the
    // backlog drains then, and the sites held back in minute 3 are
    // checked from their next slot, not from minute 4.
    run_for(Duration::from_secs(180)).await;
    i.feed(Some(Backlog {
        messages: 0,
        rate: 1_000.0,
        ..Backlog::default()
    }));
    run_for(Duration::from_secs(70)).await;
    let (sent, _) = finish(i, &clock, &ledger, &sites).await;

    let minute = |t: DateTime<Utc>| (t - wall0()).num_minutes();
    let shed = ledger.shed.lock().unwrap().clone();
    assert!(ledger
        .skipped
        .lock()
        .unwrap()
        .iter()
        .all(|s| s.kind != "load_shed"));
    let mut runs = std::collections::BTreeSet::new();
    for g in &shed {
        assert_eq!(g.reason, "load_shed");
        assert_ne!(g.site, "rare", "a 10-minute site is never shed");
        // `to` is the slot after the last one shed.
        assert_eq!(
            minute(g.from),
            minute(g.to - chrono::Duration::seconds(5)),
            "{g:?}"
        );
        assert!(
            runs.insert((g.site.clone(), minute(g.from))),
            "one run per site-minute while the share holds: {g:?}"
        );
    }
    // In the minutes shed whole, a run is the site's whole minute, and
    // about half the sites are checked, not the same half each minute.
    let checked_in = |m: i64| -> std::collections::BTreeSet<String> {
        sent.iter()
            .filter(|r| minute(r.scheduled_at) == m && r.site != "rare")
            .map(|r| r.site.clone())
            .collect()
    };
    for m in [1, 2] {
        let checked = checked_in(m);
        assert!(
            (8..=32).contains(&checked.len()),
            "minute {m}: {} sites",
            checked.len()
        );
        for g in shed.iter().filter(|g| minute(g.from) == m) {
            assert_eq!(g.slots, 12, "{g:?}");
            assert!(!checked.contains(&g.site), "{g:?} was also checked");
        }
        assert_eq!(
            checked.len() + runs.iter().filter(|(_, x)| *x == m).count(),
            40
        );
    }
    assert_ne!(checked_in(1), checked_in(2), "the shed sites rotate");
    // Once the backlog is gone every site is checked again, those held
    // back at minute 3's start within that minute: their runs end at
    // the share's rise (10 s in), and their later slots are checked.
    let cut: Vec<&Gap> = shed.iter().filter(|g| minute(g.from) == 3).collect();
    assert!(!cut.is_empty(), "no site was held back at minute 3's start");
    for g in cut {
        assert!((1..=3).contains(&g.slots), "{g:?}");
        let after = sent
            .iter()
            .filter(|r| r.site == g.site && r.scheduled_at >= g.to && minute(r.scheduled_at) == 3)
            .count();
        assert_eq!(after as i64, 12 - g.slots, "{g:?}");
    }
    assert_eq!(checked_in(3).len(), 40);
    assert_eq!(checked_in(4).len(), 40);
}

#[tokio::test(start_paused = true)]
async fn a_shard_handed_over_while_shedding_counts_each_slot_once() {
    let sites = named(40, Duration::from_secs(5));
    // The move mid-minute, with runs open on the sites that move.
    let (before, after) = (Duration::from_secs(80), Duration::from_secs(60));
    let ledger = hand_over_upper_shards(&sites, Some(half_share_backlog()), before, after).await;
    // Runs of moved sites that the move closed (a run otherwise ends with
    // its minute, at 120 s).
    let at = |g: &Gap| {
        (
            (g.from - wall0()).num_seconds(),
            (g.to - wall0()).num_seconds(),
        )
    };
    let cut = ledger
        .shed
        .lock()
        .unwrap()
        .iter()
        .filter(|g| shard_of(&g.site, 4) >= 2 && (60..80).contains(&at(g).0) && at(g).1 <= 86)
        .count();
    assert!(cut > 0, "no run of a moved site was open at the move");
}

#[tokio::test(start_paused = true)]
async fn an_interval_shortened_by_a_reload_takes_effect_from_the_new_intervals_next_slot() {
    let (clock, ledger) = (clock(), Arc::new(TestLedger::default()));
    let hour = named(1, Duration::from_secs(3600));
    let i = start(&hour, 1, &clock, &ledger, Ownership::all(1));
    run_for(Duration::from_secs(10)).await;
    let before = i.sink.sent.lock().unwrap().len();
    // From 1 h to 1 min: the old interval's next slot may be an hour away.
    let minute = named(1, Duration::from_secs(60));
    i.reload(&minute);
    let reloaded = clock.now();
    run_for(Duration::from_secs(61)).await;
    let sent = i.stop().await;
    let first_new = Cadence::new("site-0", Duration::from_secs(60)).first_at_or_after(reloaded);
    let after: Vec<DateTime<Utc>> = sent[before..].iter().map(|r| r.scheduled_at).collect();
    assert_eq!(
        after.first(),
        Some(&first_new),
        "checked on the new interval's next slot, within the minute"
    );
}
