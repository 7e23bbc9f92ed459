//! Who is told what of an incident: the pairing rule, whole. An
//! incident's opening (`opened`, or `flapping` when it opened while its
//! site flapped) goes to the channels routed when it is sent
//! ([`open_to`]), once each; everything after it (reminders, `flapping`,
//! `settled`, `resolved`) goes to exactly the channels its opening went to
//! ([`pair`], [`tell`]), `resolved` once each, whatever changed in between
//! (maintenance, routes, channels, the site leaving the config, another
//! evaluator).

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;

use crate::store::StoreError;

/// The events that open an incident on a channel.
const OPENINGS: &str = "('opened', 'flapping')";

/// Queues the opening of incident `id` (`opened`, or `flapping` when
/// `flapping`) for each of `channels` that has had none.
pub(super) async fn open_to(
    tx: &tokio_postgres::Transaction<'_>,
    id: i64,
    channels: &[String],
    flapping: bool,
) -> Result<(), StoreError> {
    let event = if flapping { "flapping" } else { "opened" };
    tx.execute(
        &format!(
            "INSERT INTO alert_outbox (incident_id, event, channel)
             SELECT $1::int8, $3::text, c FROM unnest($2::text[]) AS c
             WHERE NOT EXISTS (SELECT 1 FROM alert_outbox o
                               WHERE o.incident_id = $1::int8 AND o.event IN {OPENINGS}
                                 AND o.channel = c)"
        ),
        &[&id, &channels, &event],
    )
    .await?;
    Ok(())
}

/// Queues `resolved` of each incident of `ids` for each channel its
/// opening went to, once.
pub(super) async fn pair(
    tx: &tokio_postgres::Transaction<'_>,
    ids: &[i64],
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    tx.execute(
        &format!(
            "INSERT INTO alert_outbox (incident_id, event, channel)
             SELECT DISTINCT o.incident_id, 'resolved', o.channel FROM alert_outbox o
             WHERE o.incident_id = ANY($1) AND o.event IN {OPENINGS}
               AND NOT EXISTS (SELECT 1 FROM alert_outbox r
                               WHERE r.incident_id = o.incident_id AND r.event = 'resolved'
                                 AND r.channel = o.channel)
             ORDER BY 1, 3"
        ),
        &[&ids],
    )
    .await?;
    Ok(())
}

/// Queues `event` (`flapping` or `settled`: an open incident's news) of
/// incident `id` for each channel its opening went to. An incident may
/// flap and settle more than once; the evaluator's transaction makes each
/// one queued once.
pub(super) async fn tell(
    tx: &tokio_postgres::Transaction<'_>,
    id: i64,
    event: &str,
) -> Result<(), StoreError> {
    tx.execute(
        &format!(
            "INSERT INTO alert_outbox (incident_id, event, channel)
             SELECT DISTINCT o.incident_id, $2::text, o.channel FROM alert_outbox o
             WHERE o.incident_id = $1::int8 AND o.event IN {OPENINGS}"
        ),
        &[&id, &event],
    )
    .await?;
    Ok(())
}

/// Sends the opening held back by a maintenance window (or by a route with
/// no channel then) of each incident still open once its site is out of
/// every window: the site is still down, so it is news.
pub(super) async fn send_held_openings(
    tx: &tokio_postgres::Transaction<'_>,
    sites: &HashMap<&str, &crate::config::Site>,
    alerts: &crate::config::AlertSettings,
) -> Result<(), StoreError> {
    let held = tx
        .query(
            &format!(
                "SELECT i.id, i.site, i.flapping_since IS NOT NULL FROM incidents i
                 WHERE i.resolved_at IS NULL
                   AND NOT EXISTS (SELECT 1 FROM alert_outbox o
                                   WHERE o.incident_id = i.id AND o.event IN {OPENINGS})"
            ),
            &[],
        )
        .await?;
    let now = Utc::now();
    for r in &held {
        let (id, site, flapping): (i64, &str, bool) = (r.get(0), r.get(1), r.get(2));
        let rules = sites.get(site).copied();
        if rules.is_some_and(|s| s.maintenance.iter().any(|w| w.contains(now))) {
            continue;
        }
        let channels = alerts.route(rules);
        if !channels.is_empty() {
            open_to(tx, id, channels, flapping).await?;
            tx.execute(
                "UPDATE incidents SET last_notified_at = now() WHERE id = $1",
                &[&id],
            )
            .await?;
        }
    }
    Ok(())
}

/// A reminder for each open incident not notified for `every`, unless its
/// site is in a maintenance window now or flapping (held until it
/// settles).
pub(super) async fn remind(
    tx: &tokio_postgres::Transaction<'_>,
    every: Duration,
    sites: &HashMap<&str, &crate::config::Site>,
    alerts: &crate::config::AlertSettings,
) -> Result<(), StoreError> {
    let due = tx
        .query(
            "SELECT id, site FROM incidents
             WHERE resolved_at IS NULL AND flapping_since IS NULL
               AND coalesce(last_notified_at, opened_at) < now() - make_interval(secs => $1)",
            &[&every.as_secs_f64()],
        )
        .await?;
    if due.is_empty() {
        return Ok(());
    }
    // One statement each for all due incidents: with every site failing,
    // they all fall due in the same pass.
    let now = Utc::now();
    let ids: Vec<i64> = due.iter().map(|r| r.get(0)).collect();
    tx.execute(
        "UPDATE incidents SET last_notified_at = now() WHERE id = ANY($1)",
        &[&ids],
    )
    .await?;
    let mut reminded = Vec::with_capacity(due.len());
    for r in &due {
        let (id, site): (i64, &str) = (r.get(0), r.get(1));
        let rules = sites.get(site).copied();
        if rules.is_some_and(|s| s.maintenance.iter().any(|w| w.contains(now))) {
            continue;
        }
        reminded.push(id);
    }
    if reminded.is_empty() {
        return Ok(());
    }
    // As `tell`, for many incidents: the channels each one's opening went
    // to, those still configured (a removed channel's reminders would pile
    // up, and all go at once if it came back).
    let configured: Vec<&str> = alerts.channels.iter().map(|c| c.name.as_str()).collect();
    tx.execute(
        &format!(
            "INSERT INTO alert_outbox (incident_id, event, channel)
             SELECT DISTINCT incident_id, 'reminder', channel FROM alert_outbox
             WHERE incident_id = ANY($1) AND event IN {OPENINGS} AND channel = ANY($2)"
        ),
        &[&reminded, &configured],
    )
    .await?;
    Ok(())
}
