//! The accounting promise over generated histories (proptest), driving the
//! real scheduler through its seams in paused time.
//!
//! A history is a random sequence of config reloads (sites added, removed,
//! their interval changed, the whole list replaced by another config's),
//! crashes (SIGKILL: the task is dropped wherever it is, before or after a
//! flush, between publishing and acknowledging), clean stops, restarts
//! after a while (with the config edited meanwhile, and a clock skewed
//! against the others'), a second instance that takes shards over, forward
//! clock jumps, and Postgres or Kafka outages. At its end every fault is
//! healed and one instance runs until every slot is due and settled.
//!
//! The invariant, over every site, in every span it was configured:
//! * **never both**: no slot has a row (a published request the broker
//!   took, or a skipped row) and a gap record, nor two gap records;
//! * **never none**: for a site whose interval never changed in that span,
//!   every slot of its cadence from its first one on has a row or a gap;
//! * **no silence**: where the interval changed, the next slot after each
//!   one on record comes no later than the old interval, or the new one
//!   after the change, allows;
//! * **a prompt start**: a site's first slot on record is no later than
//!   its first slot after the scheduler could take it on.
//!
//! `cargo test` runs a short form (`SITEWATCH_MODEL_CASES`, default 32);
//! `make model` the long one. A failure shrinks to a short history and
//! prints it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use proptest::prelude::*;

use super::super::Cadence;
use super::fakes::*;
use crate::scheduler::Ownership;
use judge::judge;
use world::*;

mod judge;
mod world;

/// `scheduler.shards` at the start; a restart may change it.
const SHARDS: usize = 4;
const NAMES: usize = 6;
const INTERVALS_MS: [u64; 6] = [1_000, 2_000, 5_000, 13_000, 60_000, 3_600_000];

type Config = BTreeMap<usize, u64>;

#[derive(Debug, Clone)]
enum Edit {
    Add(usize, u64),
    Remove(usize),
    Interval(usize, u64),
    /// Another config altogether (as a long-lived database sees).
    Replace(Config),
}

#[derive(Debug, Clone)]
enum Op {
    /// Time passes (ms).
    Run(u32),
    /// A reload on the running instances; while none runs, an edit of the
    /// file that the next start reads.
    Edit(Edit),
    Crash(usize),
    Stop(usize),
    /// Starts instance `who` (if stopped) after `after_ms` more, its clock
    /// `skew_ms` off the true time; on `shards` shards if no other runs
    /// (instances agree on it).
    Start {
        who: usize,
        skew_ms: i64,
        after_ms: u32,
        shards: usize,
    },
    /// The wall clock jumps forward (a suspended machine wakes up).
    Jump(u32),
    /// Postgres away (true) or back.
    Ledger(bool),
    /// Kafka away (true) or back.
    Broker(bool),
}

fn interval() -> impl Strategy<Value = u64> {
    prop::sample::select(INTERVALS_MS.to_vec())
}

fn config() -> impl Strategy<Value = Config> {
    prop::collection::btree_map(0..NAMES, interval(), 1..=NAMES)
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => (0..NAMES, interval()).prop_map(|(s, i)| Edit::Add(s, i)),
        2 => (0..NAMES).prop_map(Edit::Remove),
        3 => (0..NAMES, interval()).prop_map(|(s, i)| Edit::Interval(s, i)),
        1 => config().prop_map(Edit::Replace),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (200u32..40_000).prop_map(Op::Run),
        4 => edit().prop_map(Op::Edit),
        2 => (0..2usize).prop_map(Op::Crash),
        1 => (0..2usize).prop_map(Op::Stop),
        3 => (0..2usize, -30_000i64..30_000, 0u32..20_000, prop::sample::select(vec![2usize, 4, 8]))
            .prop_map(|(who, skew_ms, after_ms, shards)| Op::Start { who, skew_ms, after_ms, shards }),
        1 => (1_000u32..120_000).prop_map(Op::Jump),
        1 => any::<bool>().prop_map(Op::Ledger),
        1 => any::<bool>().prop_map(Op::Broker),
    ]
}

#[derive(Debug, Clone)]
struct History {
    initial: Config,
    ack_delay_ms: u64,
    ops: Vec<Op>,
}

fn history() -> impl Strategy<Value = History> {
    (
        config(),
        prop_oneof![Just(0u64), 1u64..3_000],
        prop::collection::vec(op(), 1..24),
    )
        .prop_map(|(initial, ack_delay_ms, ops)| History {
            initial,
            ack_delay_ms,
            ops,
        })
}

fn name(i: usize) -> String {
    format!("s{i}")
}

fn sites_of(c: &Config) -> Vec<(String, Duration)> {
    c.iter()
        .map(|(i, ms)| (name(*i), Duration::from_millis(*ms)))
        .collect()
}

async fn play(h: History) -> Result<(), String> {
    let mono0 = tokio::time::Instant::now();
    let clock = || {
        Arc::new(TestClock {
            wall0: wall0(),
            mono0,
            jump_ms: AtomicI64::new(0),
        })
    };
    let sink = Arc::new(TestSink::default());
    sink.ack_delay_ms.store(h.ack_delay_ms, Ordering::SeqCst);
    let mut w = World {
        mono0,
        jump_ms: 0,
        ledger: Arc::new(TestLedger::default()),
        sink,
        config: h.initial.clone(),
        live: Config::new(),
        running: [None, None],
        clocks: [clock(), clock()],
        lives: BTreeMap::new(),
        down_at: None,
        faults: Vec::new(),
        runs: Vec::new(),
        pending_move: None,
        moved_at: None,
        ledger_down: None,
        broker_down: None,
        max_skew_ms: 0,
        clocks_behind: Vec::new(),
        run_of: [0, 0],
        shards: SHARDS,
    };
    w.take_config(None);
    w.start(0, 0, SHARDS).await;
    w.disturbed();
    for op in &h.ops {
        w.apply(op).await;
    }
    // Heal, run one instance until every slot now due is settled, stop.
    w.apply(&Op::Ledger(false)).await;
    w.apply(&Op::Broker(false)).await;
    if !w.any_running() {
        w.apply(&Op::Start {
            who: 0,
            skew_ms: 0,
            after_ms: 1_000,
            shards: w.shards,
        })
        .await;
    }
    let longest = w.live.values().max().copied().unwrap_or(1_000);
    let end = w.now();
    w.advance(longest + 15_000 + w.max_skew_ms as u64).await;
    for who in w.owners() {
        w.down(who, false).await;
    }
    for lives in w.lives.values_mut() {
        for l in lives.iter_mut().filter(|l| l.end.is_none()) {
            l.end = Some(end);
        }
    }
    judge(&w)
}

fn cases() -> u32 {
    std::env::var("SITEWATCH_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 2_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_slot_is_on_record_once_through_any_history(h in history()) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let verdict = rt.block_on(play(h.clone()));
        prop_assert!(verdict.is_ok(), "{}\n{:#?}", verdict.unwrap_err(), h);
    }
}
