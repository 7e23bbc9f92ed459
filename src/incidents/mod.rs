//! From results to incidents: a site is `down` after `failure_threshold`
//! consecutive failed checks and `up` again after `success_threshold`
//! successes; each transition opens or resolves an incident and queues a
//! notification (see `alerts`).
//!
//! Exactly one evaluator runs at a time across all instances: each pass
//! holds a transaction-scoped advisory lock, reads the results whose slots
//! fall in (watermark, now − `incidents.settle`] in slot order, applies them
//! to the per-site state, and moves the watermark, all in one transaction.
//! So a result is evaluated once, an incident is opened once (a unique index
//! also allows one open incident per site), and a crash mid-pass changes
//! nothing. Every check keeps its row: the thresholds only decide when the
//! *state* changes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

mod flapping;
mod notify;

use crate::config::Settings;
use crate::config::SiteList;
use crate::liveness::Beat;
use crate::store::StoreError;

const EVERY: Duration = Duration::from_secs(1);

/// The sites to watch in a pass: a failure in the window ($1, $2], a streak
/// or incident going on, or a maintenance window to mark ($3); none that
/// the shared `sites` table says is disabled or removed (their incidents
/// are closed by [`close_orphaned`], and their last results, still
/// waiting out `settle`, opened new ones on the default channels). A
/// macro, so that `concat!` can build both queries from it at compile
/// time.
macro_rules! watch {
    () => {
        "WITH watch AS (
    SELECT site FROM (
        SELECT DISTINCT site FROM check_results
        WHERE scheduled_at > $1 AND scheduled_at <= $2 AND outcome <> 'up'
        UNION SELECT site FROM site_state WHERE state = 'down' OR fails > 0
        UNION SELECT unnest($3::text[])) w
    WHERE NOT EXISTS (SELECT 1 FROM sites s WHERE s.name = w.site AND NOT s.enabled))"
    };
}

/// The watched sites' results in the window, in site and slot order, read
/// as a range of the primary key: scheduled check ids lead with their
/// slot's time (migration V17; $4, $5 from `time_leading_range`), so a pass
/// reads the window's rows whatever the number of watched sites. With
/// every site failing, a join on the watched sites chose a scan of the
/// whole day's partition, whose cost grew through the day until a pass
/// took tens of seconds (BENCHMARKS.md, "Soak"); probing each site's index
/// instead cost 0.3 s a pass at 27,000 sites.
const WINDOW_BY_ID: &str = concat!(
    watch!(),
    "
SELECT r.site, r.check_id, r.scheduled_at, r.outcome,
       coalesce(r.error_kind || ': ' || r.error_message, r.error_kind, r.outcome)
FROM (SELECT site, check_id, scheduled_at, outcome, error_kind, error_message
      FROM check_results
      WHERE check_id BETWEEN $4 AND $5 AND scheduled_at > $1 AND scheduled_at <= $2
        AND outcome <> 'skipped' AND origin = 'scheduled'
      OFFSET 0) r
WHERE r.site IN (SELECT site FROM watch)
ORDER BY r.site, r.scheduled_at"
);

/// As [`WINDOW_BY_ID`], for windows with slots from before time-leading
/// ids (the hour after the V17 upgrade): each watched site's index range
/// (`OFFSET 0` keeps the planner from flattening the LATERAL into a join).
const WINDOW_BY_SITE: &str = concat!(
    watch!(),
    "
SELECT w.site, r.check_id, r.scheduled_at, r.outcome,
       coalesce(r.error_kind || ': ' || r.error_message, r.error_kind, r.outcome)
FROM watch w CROSS JOIN LATERAL (
    SELECT check_id, scheduled_at, outcome, error_kind, error_message
    FROM check_results c
    WHERE c.site = w.site AND c.scheduled_at > $1 AND c.scheduled_at <= $2
      AND c.outcome <> 'skipped' AND c.origin = 'scheduled'
    OFFSET 0) r
ORDER BY w.site, r.scheduled_at"
);

pub struct Evaluator {
    /// Follows reloads: `[incidents]` and `[alerts]` apply from the next
    /// pass.
    settings: watch::Receiver<Arc<Settings>>,
    pool: Pool,
    sites: watch::Receiver<SiteList>,
    beat: Beat,
}

/// One site's state, as stored in `site_state`.
#[derive(Debug, Clone, Default)]
struct State {
    down: bool,
    fails: i32,
    oks: i32,
    streak_first_check: Option<Uuid>,
    streak_first_at: Option<DateTime<Utc>>,
    streak_cause: Option<String>,
    open_incident: Option<i64>,
    /// The latest state changes' slot times (see [`flapping::Rule`]).
    changes: Vec<DateTime<Utc>>,
    /// The open incident's site flaps: its changes are held.
    flapping: bool,
}

/// What a pass did, for logs and tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pass {
    pub results: usize,
    pub opened: usize,
    pub resolved: usize,
}

impl Evaluator {
    pub fn new(
        settings: watch::Receiver<Arc<Settings>>,
        pool: Pool,
        sites: watch::Receiver<SiteList>,
        beat: Beat,
    ) -> Evaluator {
        Evaluator {
            settings,
            pool,
            sites,
            beat,
        }
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(EVERY);
        self.beat.running();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.beat.beat();
            match self.pass().await {
                Ok(p) if p.opened + p.resolved > 0 => {
                    tracing::info!(
                        opened = p.opened,
                        resolved = p.resolved,
                        "incidents changed"
                    )
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "incident evaluation failed; retrying"),
            }
        }
    }

    /// One evaluation pass (nothing when another instance holds the lock).
    pub async fn pass(&self) -> Result<Pass, StoreError> {
        let sites = self.sites.borrow().clone();
        let by_name: HashMap<&str, &crate::config::Site> =
            sites.iter().map(|s| (s.name.as_str(), &**s)).collect();
        let with_windows: Vec<&str> = sites
            .iter()
            .filter(|s| !s.maintenance.is_empty())
            .map(|s| s.name.as_str())
            .collect();
        let settings = self.settings.borrow().clone();
        let alerts = !settings.alerts.channels.is_empty();

        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let locked: bool = tx
            .query_one(
                "SELECT pg_try_advisory_xact_lock(hashtext('sitewatch_incidents'))",
                &[],
            )
            .await?
            .get(0);
        if !locked {
            return Ok(Pass::default());
        }
        let settle = settings.incidents.settle.as_secs_f64();
        let w = tx
            .query_one(
                "INSERT INTO incident_watermark VALUES (1, now() - make_interval(secs => $1))
                 ON CONFLICT (id) DO UPDATE SET evaluated_until = incident_watermark.evaluated_until
                 RETURNING evaluated_until, now() - make_interval(secs => $1)",
                &[&settle],
            )
            .await?;
        let (from, to): (DateTime<Utc>, DateTime<Utc>) = (w.get(0), w.get(1));
        // No window to read on the first pass (it sets the watermark), or
        // when a reload raised `settle`: the watermark stays, and the rest
        // of the pass (sites disabled, flaps settled, held openings,
        // reminders) goes on all the same.
        let window = to > from;
        let to = if window { to } else { from };
        // Only sites where something can change: a failure in the window, a
        // streak or incident going on, or a maintenance window to mark.
        let ids = crate::store::check_ids(&*tx).await?;
        let rows = if !window {
            Vec::new()
        } else if from >= ids.time_leading_from {
            let (lo, hi) = crate::model::time_leading_range(from, to);
            tx.query(WINDOW_BY_ID, &[&from, &to, &with_windows, &lo, &hi])
                .await?
        } else {
            tx.query(WINDOW_BY_SITE, &[&from, &to, &with_windows])
                .await?
        };
        let names: Vec<String> = {
            let mut n: Vec<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
            n.dedup();
            n
        };
        let mut states: HashMap<String, State> = tx
            .query(
                "SELECT s.site, s.state = 'down', s.fails, s.oks, s.streak_first_check,
                        s.streak_first_at, s.streak_cause, s.open_incident, s.changes,
                        i.flapping_since IS NOT NULL
                 FROM site_state s LEFT JOIN incidents i ON i.id = s.open_incident
                 WHERE s.site = ANY($1)",
                &[&names],
            )
            .await?
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    State {
                        down: r.get(1),
                        fails: r.get(2),
                        oks: r.get(3),
                        streak_first_check: r.get(4),
                        streak_first_at: r.get(5),
                        streak_cause: r.get(6),
                        open_incident: r.get(7),
                        changes: r.get(8),
                        flapping: r.get::<_, Option<bool>>(9).unwrap_or(false),
                    },
                )
            })
            .collect();

        let flaps = flapping::Rule::of(&settings.incidents);
        let mut pass = Pass {
            results: rows.len(),
            ..Pass::default()
        };
        let mut in_window: (Vec<Uuid>, Vec<DateTime<Utc>>) = (Vec::new(), Vec::new());
        let mut ended: Vec<i64> = Vec::new();
        // Per open incident: (last failing check, failures added).
        let mut ongoing: HashMap<i64, (Uuid, i32)> = HashMap::new();
        for r in &rows {
            let site: String = r.get(0);
            let (check, at, outcome, cause): (Uuid, DateTime<Utc>, String, String) =
                (r.get(1), r.get(2), r.get(3), r.get(4));
            let rules = by_name.get(site.as_str());
            let (fail_after, ok_after) =
                rules.map_or((2, 1), |s| (s.failure_threshold, s.success_threshold));
            let maintenance = rules.is_some_and(|s| s.maintenance.iter().any(|w| w.contains(at)));
            if maintenance {
                in_window.0.push(check);
                in_window.1.push(at);
            }
            let st = states.entry(site.clone()).or_default();
            // A flap that settled before this result ends here, as it would
            // have at a pass of its own: a backlog is evaluated as live.
            if let Some(id) = st.open_incident.filter(|_| st.flapping) {
                if flaps.settled(&st.changes, at) {
                    st.flapping = false;
                    if st.down {
                        flapping::settle_down(&tx, id).await?;
                    } else {
                        flapping::settle_up(&tx, id, st.changes.last().copied().unwrap_or(at))
                            .await?;
                        st.open_incident = None;
                        ended.push(id);
                        pass.resolved += 1;
                    }
                }
            }
            if outcome == "down" {
                if st.fails == 0 {
                    st.streak_first_check = Some(check);
                    st.streak_first_at = Some(at);
                    st.streak_cause = Some(cause);
                }
                st.fails += 1;
                st.oks = 0;
                if let Some(id) = st.open_incident {
                    let e = ongoing.entry(id).or_insert((check, 0));
                    *e = (check, e.1 + 1);
                    // Down again while flapping: a change, held.
                    if st.flapping && !st.down && st.fails >= i32::from(fail_after) {
                        st.down = true;
                        flaps.record(&mut st.changes, at);
                    }
                } else if st.fails >= i32::from(fail_after) {
                    // Down again soon after a recovery: the change that
                    // makes it flap opens the incident as flapping.
                    let flapping = flaps.record(&mut st.changes, at);
                    // The ends queued so far go first: a site's news is
                    // queued in the order it happened (delivery keeps that
                    // order within an incident; a failed send of one
                    // incident does not hold back the next).
                    notify::pair(&tx, &ended).await?;
                    ended.clear();
                    let id: i64 = tx
                        .query_one(
                            "INSERT INTO incidents (site, opened_at, cause, first_failing_check,
                                                    last_failing_check, failures, in_maintenance,
                                                    last_notified_at, flapping_since, flapped)
                             VALUES ($1, $2, $3, $4, $5, $6, $7, now(),
                                     CASE WHEN $8 THEN $2::timestamptz END, $8)
                             RETURNING id",
                            &[
                                &site,
                                &st.streak_first_at.unwrap_or(at),
                                &st.streak_cause.as_deref().unwrap_or("down"),
                                &st.streak_first_check.unwrap_or(check),
                                &check,
                                &st.fails,
                                &maintenance,
                                &flapping,
                            ],
                        )
                        .await?
                        .get(0);
                    st.open_incident = Some(id);
                    st.down = true;
                    st.flapping = flapping;
                    pass.opened += 1;
                    // Inside a maintenance window the opening is held
                    // back; `send_held_openings` sends it when the window
                    // ends and the incident is still open.
                    if alerts && !maintenance {
                        let to = settings.alerts.route(rules.copied());
                        notify::open_to(&tx, id, to, flapping).await?;
                    }
                }
            } else {
                st.oks += 1;
                st.fails = 0;
                st.streak_first_check = None;
                st.streak_first_at = None;
                st.streak_cause = None;
                if let Some(id) = st.open_incident.filter(|_| st.down) {
                    if st.oks >= i32::from(ok_after) && st.flapping {
                        // Up again while flapping: a change, held.
                        st.down = false;
                        flaps.record(&mut st.changes, at);
                    } else if st.oks >= i32::from(ok_after) && flaps.record(&mut st.changes, at) {
                        // The recovery that makes it flap: the incident
                        // stays open, and its channels are told it flaps.
                        tx.execute(
                            "UPDATE incidents SET flapping_since = $2, flapped = true,
                                    last_notified_at = now()
                             WHERE id = $1",
                            &[&id, &at],
                        )
                        .await?;
                        st.down = false;
                        st.flapping = true;
                        notify::tell(&tx, id, "flapping").await?;
                    } else if st.oks >= i32::from(ok_after) {
                        if let Some(failures) = ongoing.remove(&id) {
                            add_failures(&tx, &[(id, failures)]).await?;
                        }
                        // At once: the site may open its next incident in
                        // this pass (one open incident per site).
                        tx.execute(
                            "UPDATE incidents SET resolved_at = $2, resolution = 'recovered'
                             WHERE id = $1",
                            &[&id, &at],
                        )
                        .await?;
                        ended.push(id);
                        st.open_incident = None;
                        st.down = false;
                        pass.resolved += 1;
                    }
                }
            }
        }
        // One statement for every incident ended in the pass (a mass
        // recovery ends thousands). Whatever happened since it opened (a
        // window began, the routes changed): every channel told of the
        // opening is told of the end, and no other.
        notify::pair(&tx, &ended).await?;
        let mut ongoing: Vec<_> = ongoing.into_iter().collect();
        ongoing.sort_unstable_by_key(|f| f.0);
        add_failures(&tx, &ongoing).await?;
        save_states(&tx, &states).await?;
        pass.resolved += close_orphaned(&tx).await?;
        pass.resolved += flapping::end(&tx, flaps, to).await?;
        if alerts {
            notify::send_held_openings(&tx, &by_name, &settings.alerts).await?;
        }
        if !in_window.0.is_empty() {
            tx.execute(
                "UPDATE check_results SET in_maintenance = true
                 WHERE (check_id, scheduled_at) IN (SELECT * FROM unnest($1::uuid[], $2::timestamptz[]))",
                &[&in_window.0, &in_window.1],
            )
            .await?;
        }
        if alerts {
            if let Some(every) = settings.alerts.remind_every {
                notify::remind(&tx, every, &by_name, &settings.alerts).await?;
            }
        }
        tx.execute("UPDATE incident_watermark SET evaluated_until = $1", &[&to])
            .await?;
        tx.commit().await?;
        Ok(pass)
    }
}

/// Resolves the open incidents of sites that left the config or were
/// disabled (`sites.enabled` is false for both: the table every instance
/// shares, not this instance's possibly older config). No check will ever
/// resolve them. They are resolved now, with the reason as their
/// `resolution`, and a `resolved` notification so that a pager closes its
/// incident too. The site's state is forgotten: if it comes back, it starts
/// afresh. Returns how many were resolved.
async fn close_orphaned(tx: &tokio_postgres::Transaction<'_>) -> Result<usize, StoreError> {
    let closed = tx
        .query(
            "UPDATE incidents i SET resolved_at = now(), flapping_since = NULL,
                    resolution = CASE WHEN s.in_config THEN 'site disabled' ELSE 'site removed' END
             FROM sites s
             WHERE s.name = i.site AND i.resolved_at IS NULL AND NOT s.enabled
             RETURNING i.id, i.site",
            &[],
        )
        .await?;
    let mut gone = Vec::with_capacity(closed.len());
    let mut ids = Vec::with_capacity(closed.len());
    for r in &closed {
        let (id, site): (i64, String) = (r.get(0), r.get(1));
        tracing::info!(incident = id, %site, "incident resolved: the site is no longer checked");
        ids.push(id);
        gone.push(site);
    }
    notify::pair(tx, &ids).await?;
    if !gone.is_empty() {
        tx.execute("DELETE FROM site_state WHERE site = ANY($1)", &[&gone])
            .await?;
    }
    Ok(closed.len())
}

/// Adds failures to open incidents, `(incident, (last failing check, how
/// many))`, in one statement: with every site failing, a statement per
/// incident was thousands of round trips a pass.
async fn add_failures(
    tx: &tokio_postgres::Transaction<'_>,
    failures: &[(i64, (Uuid, i32))],
) -> Result<(), StoreError> {
    if failures.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = failures.iter().map(|f| f.0).collect();
    let last: Vec<Uuid> = failures.iter().map(|f| f.1 .0).collect();
    let n: Vec<i32> = failures.iter().map(|f| f.1 .1).collect();
    tx.execute(
        "UPDATE incidents i SET last_failing_check = x.last, failures = i.failures + x.n
         FROM unnest($1::int8[], $2::uuid[], $3::int4[]) AS x(id, last, n)
         WHERE i.id = x.id",
        &[&ids, &last, &n],
    )
    .await?;
    Ok(())
}

async fn save_states(
    tx: &tokio_postgres::Transaction<'_>,
    states: &HashMap<String, State>,
) -> Result<(), StoreError> {
    if states.is_empty() {
        return Ok(());
    }
    let n = states.len();
    let (mut sites, mut state, mut fails, mut oks) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let mut first_check: Vec<Option<Uuid>> = Vec::with_capacity(n);
    let mut first_at: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(n);
    let mut cause: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut open: Vec<Option<i64>> = Vec::with_capacity(n);
    // Postgres has no arrays of arrays of differing lengths: each site's
    // changes go as one text of ISO times, split back in SQL.
    let mut changes: Vec<String> = Vec::with_capacity(n);
    for (site, s) in states {
        sites.push(site.as_str());
        state.push(if s.down { "down" } else { "up" });
        fails.push(s.fails);
        oks.push(s.oks);
        first_check.push(s.streak_first_check);
        first_at.push(s.streak_first_at);
        cause.push(s.streak_cause.as_deref());
        open.push(s.open_incident);
        changes.push(
            s.changes
                .iter()
                .map(|t| t.to_rfc3339())
                .collect::<Vec<_>>()
                .join(","),
        );
    }
    tx.execute(
        "INSERT INTO site_state (site, state, fails, oks, streak_first_check, streak_first_at,
                                 streak_cause, open_incident, changes, updated_at)
         SELECT x.site, x.state, x.fails, x.oks, x.first_check, x.first_at, x.cause, x.open,
                string_to_array(x.changes, ',')::timestamptz[], now()
         FROM unnest($1::text[], $2::text[], $3::int4[], $4::int4[], $5::uuid[],
                     $6::timestamptz[], $7::text[], $8::int8[], $9::text[])
              AS x(site, state, fails, oks, first_check, first_at, cause, open, changes)
         ON CONFLICT (site) DO UPDATE SET state = excluded.state, fails = excluded.fails,
             oks = excluded.oks, streak_first_check = excluded.streak_first_check,
             streak_first_at = excluded.streak_first_at, streak_cause = excluded.streak_cause,
             open_incident = excluded.open_incident, changes = excluded.changes,
             updated_at = now()",
        &[
            &sites,
            &state,
            &fails,
            &oks,
            &first_check,
            &first_at,
            &cause,
            &open,
            &changes,
        ],
    )
    .await?;
    Ok(())
}
