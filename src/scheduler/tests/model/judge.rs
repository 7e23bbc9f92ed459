//! The invariant, judged on what is on record at a history's end.

use super::world::*;
use super::*;
/// What is on record for one site: row slots, and gap spans with their
/// step (`[from, to)` every `step` ms).
#[derive(Default, Debug)]
pub(super) struct Record {
    pub(super) rows: std::collections::BTreeSet<DateTime<Utc>>,
    pub(super) gaps: Vec<(DateTime<Utc>, DateTime<Utc>, i64, &'static str)>,
}

impl Record {
    /// Whether `t` is a slot on record, and how many times.
    pub(super) fn count(&self, t: DateTime<Utc>) -> usize {
        usize::from(self.rows.contains(&t))
            + self
                .gaps
                .iter()
                .filter(|(f, to, step, _)| {
                    *f <= t && t < *to && (t - *f).num_milliseconds() % step == 0
                })
                .count()
    }

    /// The first thing on record at or after `t`, and where it ends.
    pub(super) fn next_after(&self, t: DateTime<Utc>) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let row = self.rows.range(t..).next().map(|r| (*r, *r));
        let gap = self
            .gaps
            .iter()
            .filter(|(_, to, step, _)| *to - chrono::Duration::milliseconds(*step) >= t)
            .map(|(f, to, step, _)| {
                let start = if *f >= t {
                    *f
                } else {
                    // The first slot of the gap at or after `t`.
                    let k = ((t - *f).num_milliseconds() + step - 1) / step;
                    *f + chrono::Duration::milliseconds(k * step)
                };
                (start, *to - chrono::Duration::milliseconds(*step))
            })
            .min();
        match (row, gap) {
            (Some(r), Some(g)) => Some(r.min(g)),
            (r, g) => r.or(g),
        }
    }
}

pub(super) fn records(world: &World) -> BTreeMap<String, Record> {
    let mut out: BTreeMap<String, Record> = BTreeMap::new();
    for r in world.sink.sent.lock().unwrap().iter() {
        out.entry(r.site.clone())
            .or_default()
            .rows
            .insert(r.scheduled_at);
    }
    for s in world.ledger.skipped.lock().unwrap().iter() {
        out.entry(s.site.clone())
            .or_default()
            .rows
            .insert(s.scheduled_at);
    }
    let gaps = world.ledger.gaps.lock().unwrap();
    let shed = world.ledger.shed.lock().unwrap();
    for g in gaps.iter().chain(shed.iter()) {
        let step = (g.to - g.from).num_milliseconds() / g.slots.max(1);
        out.entry(g.site.clone())
            .or_default()
            .gaps
            .push((g.from, g.to, step, g.reason));
    }
    out
}

/// Judges the records against the lives; `Err` names the first breach,
/// with what is on record for its site.
pub(super) fn judge(world: &World) -> Result<(), String> {
    verdict(world).map_err(|e| {
        let site = e.split([' ', ':']).next().unwrap_or_default().to_owned();
        let mut out = format!("{e}\non record for {site}:\n");
        for s in world
            .ledger
            .skipped
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.site == site)
        {
            out += &format!("  row {} skipped: {}\n", s.scheduled_at, s.message);
        }
        for r in world
            .sink
            .sent
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.site == site)
        {
            out += &format!(
                "  row {} published{}\n",
                r.scheduled_at,
                if r.late { " late" } else { "" }
            );
        }
        let gaps = world.ledger.gaps.lock().unwrap();
        let shed = world.ledger.shed.lock().unwrap();
        for g in gaps.iter().chain(shed.iter()).filter(|g| g.site == site) {
            out += &format!(
                "  gap [{}, {}) {} slots: {}\n",
                g.from, g.to, g.slots, g.reason
            );
        }
        out
    })
}

pub(super) fn verdict(world: &World) -> Result<(), String> {
    let records = records(world);
    let empty = Record::default();
    // Never both, never twice.
    for (site, rec) in &records {
        for (f, to, step, why) in &rec.gaps {
            let mut t = *f;
            while t < *to {
                if rec.count(t) > 1 {
                    return Err(format!(
                        "{site} slot {t} is on record twice (a gap [{f}, {to}) {why:?} covers it)"
                    ));
                }
                t += chrono::Duration::milliseconds(*step);
            }
        }
    }
    for (site, lives) in &world.lives {
        let n = name(*site);
        let rec = records.get(&n).unwrap_or(&empty);
        let mut before = None;
        for life in lives {
            judge_life(&n, rec, life, world, before)?;
            before = life.removed;
        }
    }
    Ok(())
}

/// `before`: when the site's previous life ended (its slots are not this
/// one's).
pub(super) fn judge_life(
    site: &str,
    rec: &Record,
    life: &Life,
    world: &World,
    before: Option<DateTime<Utc>>,
) -> Result<(), String> {
    let end = life.end.expect("lives are closed at the end");
    let (_, iv0, _) = life.intervals[0];
    // A prompt start: the scheduler can take a site on once Postgres
    // answers (its progress is read first).
    let Some(ready) = world.ready_after(life.start) else {
        return Ok(());
    };
    let taken_on = ready + chrono::Duration::milliseconds(world.slack());
    let latest_start = due_after(life, world, taken_on);
    if latest_start >= end {
        return Ok(()); // too short a span to judge
    }
    // A clock behind ours starts a site on a slot before its start.
    let early = life.start - chrono::Duration::milliseconds(world.max_skew_ms + 1);
    // The previous life's slots, published on a clock ahead of ours, can
    // come that much after its end.
    let skew = chrono::Duration::milliseconds(world.max_skew_ms + 1);
    let Some((first, _)) = rec.next_after(before.map_or(early, |b| early.max(b + skew))) else {
        return Err(format!(
            "{site}: nothing on record after its start at {}",
            life.start
        ));
    };
    if first > latest_start {
        return Err(format!(
            "{site}: configured from {} but its first slot on record is {first} (due by {latest_start})",
            life.start
        ));
    }
    // Judged from its first slot after the site was surely taken on (one
    // published before its own progress was on record, and then a crash,
    // starts no history).
    // (Only a clock behind ours starts it before `ready`.)
    let behind = chrono::Duration::milliseconds(world.behind_at(ready) + 1);
    let taken = rec.next_after(ready - behind).map_or(first, |r| r.0);
    if life.intervals.len() == 1 {
        // Never none: every slot of its one cadence.
        let cadence = Cadence::new(site, Duration::from_millis(iv0));
        let mut t = cadence.first_at_or_after(first.max(taken));
        while t < end {
            match rec.count(t) {
                1 => {}
                0 => return Err(format!("{site} slot {t} has no row and no gap")),
                n => return Err(format!("{site} slot {t} is on record {n} times")),
            }
            t = cadence.next(t);
        }
        return Ok(());
    }
    // No silence across interval changes.
    let mut at = first.max(taken);
    loop {
        let due = due_after(life, world, at);
        if due >= end {
            return Ok(());
        }
        let probe = at + chrono::Duration::milliseconds(1);
        match rec.next_after(probe) {
            Some((next, last)) if next <= due => at = last.max(next),
            other => {
                return Err(format!(
                    "{site}: silent after {at}: the next slot on record is {:?}, due by {due}",
                    other.map(|o| o.0)
                ))
            }
        }
    }
}

/// When the next slot after one at `at` must be on record: one interval
/// on, unless the interval changes before that (seen on an instance's
/// clock, the skew off ours): then the new interval's first slot, within
/// the change's slack. Within a change's slack either interval may be the
/// one in force.
pub(super) fn due_after(life: &Life, world: &World, at: DateTime<Utc>) -> DateTime<Utc> {
    let interval_at = |t: DateTime<Utc>| -> i64 {
        let mut iv = life.intervals[0].1;
        for w in life.intervals.windows(2) {
            let (_, old, _) = w[0];
            let (from, new, slack) = w[1];
            if from <= t {
                iv = if t < from + chrono::Duration::milliseconds(slack) {
                    old.max(new)
                } else {
                    new
                };
            }
        }
        iv as i64
    };
    let mut due = at + chrono::Duration::milliseconds(interval_at(at));
    let skew = chrono::Duration::milliseconds(world.max_skew_ms + 1);
    for (from, niv, slack) in &life.intervals {
        let settled = *from + chrono::Duration::milliseconds(*niv as i64 + slack);
        if *from > at && *from - skew < due {
            due = settled;
        } else if *from <= at && at < settled {
            // The change is being taken on: its new interval's first slot
            // may still be coming.
            due = due.max(settled);
        }
    }
    due
}
