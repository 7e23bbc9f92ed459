//! Flap damping. A site whose state (up or down, after its thresholds)
//! changes `incidents.flap_changes` times within `incidents.flap_window`
//! is flapping: the change that makes it so is told once (`flapping`), the
//! ones after it are held (the incident stays open, no reminders), and once
//! the site has held one state for a whole `flap_window` it has settled:
//! `resolved` if it settled up, `settled` if down (the incident then goes
//! on as any other). Nagios's flap detection is the model (a state-change
//! rate over recent history, a notification at its start and end), counted
//! here in changes within a window of slot time, so that it reads in the
//! units a user configures.
//!
//! Times are slot times (`scheduled_at`), not the clock: the evaluator is
//! the same on a backlog as live, and the model test can run hours of
//! history in seconds.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::notify;
use crate::store::StoreError;

/// `[incidents]`'s flap settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Changes within `window` that make a site flap; 0: never.
    pub changes: u32,
    pub window: Duration,
}

impl Rule {
    pub fn of(s: &crate::config::IncidentSettings) -> Rule {
        Rule {
            changes: s.flap_changes,
            window: s.flap_window,
        }
    }

    fn window(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.window).unwrap_or(chrono::Duration::MAX)
    }

    /// Records a state change at `at` in `changes` (the site's latest, in
    /// slot order; kept to the rule's count and window) and says whether
    /// the site flaps with it.
    pub fn record(&self, changes: &mut Vec<DateTime<Utc>>, at: DateTime<Utc>) -> bool {
        changes.push(at);
        let since = at - self.window();
        changes.retain(|t| *t > since);
        let keep = self.changes.max(1) as usize;
        if changes.len() > keep {
            changes.drain(..changes.len() - keep);
        }
        self.changes != 0 && changes.len() >= self.changes as usize
    }

    /// Whether a flapping site whose latest changes are `changes` has held
    /// its state for a whole window by slot time `now` (at once when a
    /// reload turned damping off).
    pub fn settled(&self, changes: &[DateTime<Utc>], now: DateTime<Utc>) -> bool {
        self.changes == 0
            || changes
                .last()
                .is_none_or(|last| now - *last >= self.window())
    }
}

/// Ends the flapping of the sites that held one state for a whole
/// `flap_window` by slot time `now`: one settled up is resolved (the time
/// it went up is its end) and its channels told `resolved`; one settled
/// down is told `settled`, and its incident goes on as any other. Returns
/// how many were resolved.
pub(super) async fn end(
    tx: &tokio_postgres::Transaction<'_>,
    flaps: Rule,
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let flapping = tx
        .query(
            "SELECT i.id, i.site, s.state = 'down', s.changes
             FROM incidents i JOIN site_state s ON s.open_incident = i.id
             WHERE i.flapping_since IS NOT NULL AND i.resolved_at IS NULL",
            &[],
        )
        .await?;
    let mut resolved = 0;
    for r in &flapping {
        let (id, site, down, changes): (i64, &str, bool, Vec<DateTime<Utc>>) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        if !flaps.settled(&changes, now) {
            continue;
        }
        if down {
            settle_down(tx, id).await?;
        } else {
            settle_up(tx, id, changes.last().copied().unwrap_or(now)).await?;
            tx.execute(
                "UPDATE site_state SET open_incident = NULL WHERE site = $1",
                &[&site],
            )
            .await?;
            notify::pair(tx, &[id]).await?;
            resolved += 1;
        }
        tracing::info!(incident = id, site = %site, down, "the site stopped flapping");
    }
    Ok(resolved)
}

/// Resolves incident `id`, whose site settled up at `up_at` (its end);
/// the caller pairs it.
pub(super) async fn settle_up(
    tx: &tokio_postgres::Transaction<'_>,
    id: i64,
    up_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE incidents SET flapping_since = NULL, resolved_at = $2, resolution = 'recovered'
         WHERE id = $1",
        &[&id, &up_at],
    )
    .await?;
    Ok(())
}

/// Ends the flapping of incident `id`, whose site settled down: its
/// channels are told, and it goes on as any other.
pub(super) async fn settle_down(
    tx: &tokio_postgres::Transaction<'_>,
    id: i64,
) -> Result<(), StoreError> {
    // Reminders start again from here, not from the flapping.
    tx.execute(
        "UPDATE incidents SET flapping_since = NULL, last_notified_at = now() WHERE id = $1",
        &[&id],
    )
    .await?;
    notify::tell(tx, id, "settled").await
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    proptest! {
        /// The rule against its definition: after any history of changes
        /// (increasing slot times), it flaps exactly when the last
        /// `changes` of them, the newest included, fit within `window`; and
        /// what it keeps never grows past `changes`.
        #[test]
        fn flaps_exactly_when_the_last_n_changes_fit_in_the_window(
            n in 0u32..6,
            window in 1u64..120,
            gaps in proptest::collection::vec(0i64..60, 1..40),
        ) {
            let rule = Rule { changes: n, window: Duration::from_secs(window) };
            let (mut kept, mut all, mut t) = (Vec::new(), Vec::new(), 0);
            for g in gaps {
                t += g;
                all.push(at(t));
                let flaps = rule.record(&mut kept, at(t));
                let want = n > 0 && all.len() >= n as usize
                    && at(t) - all[all.len() - n as usize]
                        < chrono::Duration::seconds(window as i64);
                prop_assert_eq!(flaps, want, "changes at {:?}", all);
                prop_assert!(kept.len() <= n.max(1) as usize);
                let w = chrono::Duration::seconds(window as i64);
                prop_assert!(rule.settled(&kept, at(t) + w));
                prop_assert_eq!(rule.settled(&kept, at(t) + w - chrono::Duration::seconds(1)), n == 0);
            }
        }
    }
}
