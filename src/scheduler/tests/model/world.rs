//! The world a history plays in: the instances, the config file, the
//! faults, and each site's lives in the config (what the judge reads).

use super::*;
/// One span of a site in the config: from `start` (true time), on the
/// intervals given with the time each took effect, until `end`.
#[derive(Debug, Clone)]
pub(super) struct Life {
    pub(super) start: DateTime<Utc>,
    /// (from, interval ms, slack): `slack` is how late after `from` the
    /// first slot on the new interval may come (the time the scheduler
    /// needs to take the change on).
    pub(super) intervals: Vec<(DateTime<Utc>, u64, i64)>,
    /// Until when the accounting is judged.
    pub(super) end: Option<DateTime<Utc>>,
    /// When it left the config (true time).
    pub(super) removed: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fault {
    Ledger,
    Broker,
    Jump,
    /// Shards changing hands (from the first letting go to 5 s after).
    Move,
}

/// Shards to move: half of them to a new instance, or all to the one left.
#[derive(Debug, Clone, Copy)]
pub(super) enum Move {
    Split(usize),
    All(usize),
}

pub(super) struct Running {
    pub(super) instance: Instance,
    pub(super) skew_ms: i64,
}

pub(super) struct World {
    pub(super) mono0: tokio::time::Instant,
    pub(super) jump_ms: i64,
    pub(super) ledger: Arc<TestLedger>,
    pub(super) sink: Arc<TestSink>,
    /// The config file.
    pub(super) config: Config,
    /// The config the running instances follow (the file once read).
    pub(super) live: Config,
    pub(super) running: [Option<Running>; 2],
    pub(super) clocks: [Arc<TestClock>; 2],
    pub(super) lives: BTreeMap<usize, Vec<Life>>,
    /// When the last instance went down (no scheduler since).
    pub(super) down_at: Option<DateTime<Utc>>,
    /// Outages and jumps: (kind, from, to) in true time; `to` open while on.
    pub(super) faults: Vec<(Fault, DateTime<Utc>, Option<DateTime<Utc>>)>,
    /// The last disturbance of taking sites on (shards changing hands,
    /// a jump, Postgres away or back): when, and the true time before it.
    pub(super) moved_at: Option<(tokio::time::Instant, DateTime<Utc>)>,
    /// Shards waiting to move until Postgres is back.
    pub(super) pending_move: Option<Move>,
    /// When some instance ran: (from, to).
    pub(super) runs: Vec<(DateTime<Utc>, Option<DateTime<Utc>>)>,
    pub(super) ledger_down: Option<usize>,
    pub(super) broker_down: Option<usize>,
    pub(super) max_skew_ms: i64,
    /// Each instance's run: (from, to, how far its clock was behind ours).
    pub(super) clocks_behind: Vec<(DateTime<Utc>, Option<DateTime<Utc>>, i64)>,
    /// Which of `clocks_behind` each running instance is.
    pub(super) run_of: [usize; 2],
    /// `scheduler.shards` of the instances running (or last run).
    pub(super) shards: usize,
}

impl World {
    pub(super) fn now(&self) -> DateTime<Utc> {
        wall0()
            + chrono::Duration::from_std(tokio::time::Instant::now() - self.mono0).unwrap()
            + chrono::Duration::milliseconds(self.jump_ms)
    }

    pub(super) fn any_running(&self) -> bool {
        self.running.iter().any(Option::is_some)
    }

    /// The first time at or after `t` from which a scheduler ran with
    /// Postgres up and the clock steady for 3 s: long enough to read a
    /// site's progress and write its own (`None`: never).
    pub(super) fn ready_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let span = chrono::Duration::seconds(3);
        let open = |to: &Option<DateTime<Utc>>| to.unwrap_or(DateTime::<Utc>::MAX_UTC);
        let mut candidates: Vec<DateTime<Utc>> = vec![t];
        candidates.extend(self.runs.iter().map(|r| r.0).filter(|r| *r > t));
        candidates.extend(
            self.faults
                .iter()
                .filter(|f| f.0 != Fault::Broker)
                .filter_map(|f| f.2)
                .filter(|e| *e > t),
        );
        candidates.sort();
        candidates.into_iter().find(|c| {
            let end = *c + span;
            self.runs.iter().any(|(f, to)| *f <= *c && open(to) >= end)
                && !self
                    .faults
                    .iter()
                    .any(|(k, f, to)| *k != Fault::Broker && *f < end && open(to) > *c)
        })
    }

    pub(super) async fn advance(&mut self, ms: u64) {
        run_for(Duration::from_millis(ms)).await;
    }

    pub(super) fn begin_life(&mut self, site: usize, interval: u64, at: DateTime<Utc>) {
        let slack = self.slack();
        self.lives.entry(site).or_default().push(Life {
            start: at,
            intervals: vec![(at, interval, slack)],
            end: None,
            removed: None,
        });
    }

    /// How late a change may take effect: a flush, the skew, and 1 s.
    pub(super) fn slack(&self) -> i64 {
        2_000 + self.max_skew_ms
    }

    pub(super) fn life(&mut self, site: usize) -> &mut Life {
        self.lives
            .get_mut(&site)
            .and_then(|l| l.last_mut())
            .filter(|l| l.end.is_none())
            .expect("a configured site has an open life")
    }

    /// Applies `edit` to the file; while instances run, they reload it.
    pub(super) fn edit(&mut self, edit: &Edit) {
        let mut next = self.config.clone();
        match edit {
            Edit::Add(s, i) => {
                next.entry(*s).or_insert(*i);
            }
            Edit::Remove(s) => {
                next.remove(s);
            }
            Edit::Interval(s, i) => {
                if let Some(v) = next.get_mut(s) {
                    *v = *i;
                }
            }
            Edit::Replace(c) => next = c.clone(),
        }
        if next.is_empty() {
            return; // a config needs a site
        }
        self.config = next;
        if self.any_running() {
            self.take_config(None);
            for r in self.running.iter().flatten() {
                r.instance.reload(&sites_of(&self.live));
            }
        }
    }

    /// The running config becomes the file's. `restart`: the time the
    /// deployment went down, when it is read at a start.
    pub(super) fn take_config(&mut self, restart: Option<DateTime<Utc>>) {
        let now = self.now();
        let (old, new) = (self.live.clone(), self.config.clone());
        for (s, iv) in &old {
            match new.get(s) {
                None => {
                    // A removed site's last slots are judged only as far
                    // as a watermark's age before the removal (or the stop
                    // before it), and before any fault that kept them in
                    // memory only: after it nobody knows the site.
                    let end = self.tail_end(restart.or(self.unsettled()).unwrap_or(now), *iv);
                    let life = self.life(*s);
                    life.end = Some(end);
                    life.removed = Some(now);
                }
                Some(n) if n != iv => {
                    // A site still being taken on (its shard in hand-over,
                    // Postgres away, the clock just jumped) takes the new
                    // interval from the progress on record.
                    let moved = self.unsettled();
                    let (from, slack) = match (restart, moved) {
                        (None, None) => (now, self.slack()),
                        // A shard in hand-over: its next owner takes the
                        // site on with the new interval from the progress
                        // the last one left.
                        (None, Some(m)) => {
                            let from = m - chrono::Duration::milliseconds(*iv as i64 + 7_000);
                            (from, (now - from).num_milliseconds() + self.slack())
                        }
                        // A start does not know the old interval: the new
                        // one takes over from the last progress on record,
                        // somewhere in the stop's tail.
                        (Some(down), _) => {
                            let from = self.tail_end(down, *iv);
                            (from, (now - from).num_milliseconds() + self.slack())
                        }
                    };
                    self.life(*s).intervals.push((from, *n, slack));
                }
                Some(_) => {}
            }
        }
        for (s, iv) in &new {
            if !old.contains_key(s) {
                self.begin_life(*s, *iv, now);
            }
        }
        self.live = new;
    }

    /// How far a site's slots can be judged when its scheduler went down at
    /// `down` and the next start does not know it: a watermark's age before
    /// the stop, and before any fault (outage or jump) near it.
    pub(super) fn tail_end(&self, down: DateTime<Utc>, interval: u64) -> DateTime<Utc> {
        let tail = chrono::Duration::milliseconds(interval as i64 + 7_000 + self.max_skew_ms);
        let mut end = down - tail;
        for (_, from, to) in &self.faults {
            if to.is_none_or(|to| to >= end) && *from <= down {
                end = end.min(*from - tail);
            }
        }
        end
    }

    pub(super) fn owners(&self) -> Vec<usize> {
        (0..2).filter(|w| self.running[*w].is_some()).collect()
    }

    pub(super) async fn start(&mut self, who: usize, skew_ms: i64, shards: usize) {
        if self.running[who].is_some() {
            return;
        }
        let forever = Some(std::time::Instant::now() + Duration::from_secs(365 * 86_400));
        self.max_skew_ms = self.max_skew_ms.max(skew_ms.abs());
        self.clocks[who]
            .jump_ms
            .store(self.jump_ms + skew_ms, Ordering::SeqCst);
        if !self.any_running() {
            self.shards = shards;
        }
        let ownership = Ownership::new(self.shards);
        let other = 1 - who;
        let split = self.running[other].is_some();
        if split {
            // Shards move once the other has let go (see `split`).
        } else {
            if let Some(down) = self.down_at.take() {
                self.take_config(Some(down));
                // Until the sites are taken on, a change reaches them as
                // one at the restart would.
                self.moved_at = Some((tokio::time::Instant::now(), down));
            }
            ownership.replace(&(0..self.shards).collect::<Vec<_>>(), forever);
        }
        let instance = start_on(
            &sites_of(&self.live),
            self.shards,
            &self.clocks[who],
            &self.ledger,
            ownership,
            self.sink.clone(),
        );
        if !self.any_running() {
            self.runs.push((self.now(), None));
        }
        let now = self.now();
        self.clocks_behind.push((now, None, (-skew_ms).max(0)));
        self.run_of[who] = self.clocks_behind.len() - 1;
        self.running[who] = Some(Running { instance, skew_ms });
        if split {
            self.pending_move = Some(Move::Split(who));
            self.settle_moves().await;
        }
    }

    /// Moves shards as leases do: only through Postgres, so not while it is
    /// away; the one letting go first (its hand-over is written within the
    /// flush that follows), the other taking them a moment later.
    pub(super) async fn settle_moves(&mut self) {
        if self.ledger_down.is_some() {
            return;
        }
        let forever = Some(std::time::Instant::now() + Duration::from_secs(365 * 86_400));
        match self.pending_move.take() {
            Some(Move::Split(who)) => {
                let (Some(o), Some(_)) = (&self.running[1 - who], &self.running[who]) else {
                    return;
                };
                o.instance
                    .ownership
                    .replace(&half(1 - who, self.shards), forever);
                self.disturbed();
                let from = self.now();
                // The new owner gets the shards once the old one has
                // written their hand-over (its leases stay until then).
                let moved = half(who, self.shards);
                for _ in 0..100 {
                    self.advance(100).await;
                    let o = self.running[1 - who].as_ref().expect("checked above");
                    if moved
                        .iter()
                        .all(|s| !o.instance.ownership.is_handing_over(*s))
                    {
                        break;
                    }
                }
                if let Some(n) = &self.running[who] {
                    n.instance
                        .ownership
                        .replace(&half(who, self.shards), forever);
                }
                self.moved(from);
            }
            Some(Move::All(who)) => {
                let Some(o) = &self.running[who] else { return };
                o.instance
                    .ownership
                    .replace(&(0..self.shards).collect::<Vec<_>>(), forever);
                let now = self.now();
                self.moved(now);
                self.disturbed();
            }
            None => {}
        }
    }

    /// Instance `who` goes away (crashed or stopped); the other, if any,
    /// takes its shards after the failover time.
    pub(super) async fn down(&mut self, who: usize, crash: bool) {
        let Some(r) = self.running[who].take() else {
            return;
        };
        let now = self.now();
        self.clocks_behind[self.run_of[who]].1 = Some(now);
        if crash {
            r.instance.crash().await;
            // What it knew only in memory is gone: an interval changed in
            // the crash's tail is taken on by the next owner from the
            // progress on record, as one at a restart.
            let now = self.now();
            let settle = self.slack() + 8_000;
            for s in self.live.keys().copied().collect::<Vec<_>>() {
                let Some(life) = self.lives.get(&s).and_then(|l| l.last()) else {
                    continue;
                };
                let n = life.intervals.len();
                if n < 2 {
                    continue;
                }
                let old = life.intervals[n - 2].1;
                let tail = self.tail_end(now, old);
                let life = self.life(s);
                let (from, _, slack) = &mut life.intervals[n - 1];
                if *from > tail {
                    *slack = (now - tail).num_milliseconds() + settle;
                    *from = tail;
                }
            }
        } else {
            // `stop` hands over what the (shared) sink recorded so far.
            let sent = r.instance.stop().await;
            self.sink.sent.lock().unwrap().extend(sent);
        }
        let other = 1 - who;
        if self.running[other].is_some() {
            let from = self.now();
            if crash {
                // The lease's failover time.
                self.advance(3_000).await;
            }
            self.moved(from);
            self.disturbed();
            self.pending_move = Some(Move::All(other));
            self.settle_moves().await;
        } else {
            let now = self.now();
            // Down before its sites were taken on: as if down since the
            // disturbance before.
            self.down_at = Some(self.unsettled().unwrap_or(now));
            if let Some(r) = self.runs.last_mut() {
                r.1 = Some(now);
            }
        }
    }

    /// How far behind ours the clocks of instances running from `t` to 3 s
    /// later were, at most (they take sites on then).
    pub(super) fn behind_at(&self, t: DateTime<Utc>) -> i64 {
        let end = t + chrono::Duration::seconds(3);
        self.clocks_behind
            .iter()
            .filter(|(f, to, _)| *f <= end && to.is_none_or(|to| to >= t))
            .map(|(_, _, b)| *b)
            .max()
            .unwrap_or(0)
    }

    /// Within 5 s of a disturbance: the true time before it.
    pub(super) fn moved(&mut self, from: DateTime<Utc>) {
        let to = self.now() + chrono::Duration::seconds(5);
        self.faults.push((Fault::Move, from, Some(to)));
    }

    /// While Postgres is away, sites cannot be taken on at all.
    pub(super) fn unsettled(&self) -> Option<DateTime<Utc>> {
        self.moved_at
            .filter(|(mono, _)| {
                self.ledger_down.is_some() || mono.elapsed() < Duration::from_secs(5)
            })
            .map(|(_, t)| t)
    }

    pub(super) fn disturbed(&mut self) {
        let before = self.unsettled().unwrap_or_else(|| self.now());
        self.moved_at = Some((tokio::time::Instant::now(), before));
    }

    pub(super) fn fault(
        &mut self,
        kind: Fault,
        on: bool,
        slot: fn(&mut World) -> &mut Option<usize>,
    ) {
        let now = self.now();
        if kind == Fault::Ledger {
            self.disturbed();
        }
        match (on, *slot(self)) {
            (true, None) => {
                self.faults.push((kind, now, None));
                *slot(self) = Some(self.faults.len() - 1);
            }
            (false, Some(i)) => {
                self.faults[i].2 = Some(now);
                *slot(self) = None;
            }
            _ => {}
        }
    }

    pub(super) async fn apply(&mut self, op: &Op) {
        match op {
            Op::Run(ms) => self.advance(u64::from(*ms)).await,
            Op::Edit(e) => {
                self.edit(e);
                // The instances take the reload in before anything else.
                self.advance(1).await;
            }
            Op::Crash(w) => self.down(*w, true).await,
            Op::Stop(w) => self.down(*w, false).await,
            Op::Start {
                who,
                skew_ms,
                after_ms,
                shards,
            } => {
                if self.running[*who].is_none() {
                    self.advance(u64::from(*after_ms)).await;
                    self.start(*who, *skew_ms, *shards).await;
                }
            }
            Op::Jump(ms) => {
                let now = self.now();
                self.disturbed();
                self.jump_ms += i64::from(*ms);
                self.faults.push((Fault::Jump, now, Some(self.now())));
                for (w, r) in self.running.iter().enumerate() {
                    if let Some(r) = r {
                        self.clocks[w]
                            .jump_ms
                            .store(self.jump_ms + r.skew_ms, Ordering::SeqCst);
                    }
                }
            }
            Op::Ledger(on) => {
                self.fault(Fault::Ledger, *on, |w| &mut w.ledger_down);
                self.ledger.down.store(*on, Ordering::SeqCst);
                self.settle_moves().await;
            }
            Op::Broker(on) => {
                self.fault(Fault::Broker, *on, |w| &mut w.broker_down);
                self.sink.refuse.store(*on, Ordering::SeqCst);
            }
        }
    }
}

pub(super) fn half(who: usize, shards: usize) -> Vec<usize> {
    (0..shards).filter(|s| s % 2 == who).collect()
}
