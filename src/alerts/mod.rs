//! Delivering incident notifications to the configured channels (email,
//! Slack, Teams, Discord, PagerDuty, Opsgenie, Telegram, ntfy, signed
//! webhooks). The evaluator queues one `alert_outbox` row per event and
//! channel, in the transaction that opens or resolves the incident. Any
//! instance may send them: each runs one loop per channel, which leases that
//! channel's due rows (`FOR UPDATE SKIP LOCKED`, then `due_at` moved past
//! the round), so two instances never send the same one, and a slow or
//! failing channel never holds up another, nor a Postgres connection.
//! Every attempt is recorded in `alert_deliveries` with the channel's answer;
//! a failed one is retried with backoff (1 s, 2 s, 4 s ... at most
//! `alerts.max_backoff` apart) up to `alerts.max_attempts`.

mod deliver;
mod email;
mod notice;
mod template;
mod vendors;
pub mod webhook;

use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;

use crate::config::{Channel, Settings};
use crate::liveness::Beat;
use crate::store::StoreError;

pub use deliver::{Answer, Deliverer};
pub use notice::{Event, Notice};

/// What would make a channel fail every delivery, one message per problem
/// naming the channel (templates and content types of webhooks); checked by
/// `sitewatch validate` and at start-up.
pub fn check(alerts: &crate::config::AlertSettings) -> Vec<String> {
    let mut problems = Vec::new();
    for c in &alerts.channels {
        if let crate::config::Target::Webhook {
            template,
            content_type,
            ..
        } = &c.target
        {
            if let Err(e) = webhook::check(template.as_deref(), content_type) {
                problems.push(format!("alerts channel {}: {e}", c.name));
            }
        }
    }
    problems
}

/// Notifications of one channel claimed (leased) per round.
const CLAIM: i64 = 5;

/// The alerts stage: sends what the evaluator queued, through every
/// configured channel (built by [`AlertSender::new`], run until shutdown by
/// [`AlertSender::run`]).
pub struct AlertSender {
    settings: Arc<Settings>,
    pool: Pool,
    deliverer: Deliverer,
    instance: String,
    beat: Beat,
}

impl AlertSender {
    /// `Err` when a channel's settings cannot be used (an unreadable CA
    /// file), naming the channel.
    pub fn new(
        settings: Arc<Settings>,
        pool: Pool,
        instance: &str,
        beat: Beat,
    ) -> Result<AlertSender, String> {
        let deliverer = Deliverer::new(&settings.alerts, &settings.checker.user_agent)?;
        Ok(AlertSender {
            settings,
            pool,
            deliverer,
            instance: instance.to_owned(),
            beat,
        })
    }

    /// One loop per channel until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        self.beat.running();
        let this = Arc::new(self);
        let loops = this.settings.alerts.channels.iter().map(|c| {
            let this = Arc::clone(&this);
            let shutdown = shutdown.clone();
            let name = c.name.clone();
            async move { this.channel_loop(&name, shutdown).await }
        });
        futures::future::join_all(loops).await;
    }

    async fn channel_loop(&self, channel: &str, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.beat.beat();
            // Drain what is due, a few at a time.
            loop {
                match self.round(channel, &shutdown).await {
                    Ok(0) => break,
                    Ok(_) => self.beat.beat(),
                    Err(e) => {
                        tracing::warn!(channel, error = %e, "sending alerts failed; retrying");
                        break;
                    }
                }
                if shutdown.is_cancelled() {
                    return;
                }
            }
        }
    }

    /// Claims up to [`CLAIM`] due notifications of `channel` and sends
    /// them; returns how many were claimed. The claim is a lease, not an
    /// open transaction: the rows' `due_at` moves past the longest the
    /// round can take, so no other instance takes them meanwhile, and no
    /// Postgres connection is held while a slow channel answers (the pool
    /// is shared with the persisters). Each attempt is then recorded in a
    /// short statement of its own. If this instance dies mid-round, the
    /// rows not recorded fall due again when the lease ends (at least
    /// once); at `shutdown`, the unsent ones are handed back at once.
    pub async fn round(
        &self,
        channel: &str,
        shutdown: &CancellationToken,
    ) -> Result<usize, StoreError> {
        let Some(ch) = self.settings.alerts.channel(channel) else {
            return Ok(0);
        };
        let lease = self.deliverer.attempt_limit() * CLAIM as u32 + Duration::from_secs(30);
        let due: Vec<(Notice, i32)> = self
            .pool
            .get()
            .await?
            .query(
                "WITH claimed AS (
                     UPDATE alert_outbox SET due_at = now() + make_interval(secs => $3)
                     WHERE id IN (SELECT id FROM alert_outbox o
                                  WHERE channel = $2 AND delivered_at IS NULL
                                    AND gave_up_at IS NULL AND due_at <= now()
                                    -- An incident's events go out in order: a
                                    -- resolve that overtook its opening would
                                    -- leave a page open for good.
                                    AND NOT EXISTS (
                                        SELECT 1 FROM alert_outbox e
                                        WHERE e.channel = o.channel
                                          AND e.incident_id = o.incident_id
                                          AND e.id < o.id AND e.delivered_at IS NULL
                                          AND e.gave_up_at IS NULL)
                                  ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
                     RETURNING id, event, attempts, incident_id)
                 SELECT o.id, o.event, o.attempts, i.id, i.site, s.url, i.opened_at,
                        i.resolved_at, i.cause, i.failures, i.first_failing_check,
                        i.last_failing_check, i.resolution
                 FROM claimed o JOIN incidents i ON i.id = o.incident_id
                 LEFT JOIN sites s ON s.name = i.site
                 ORDER BY o.id",
                &[&CLAIM, &channel, &lease.as_secs_f64()],
            )
            .await?
            .iter()
            .map(|r| {
                let n = Notice {
                    outbox: r.get(0),
                    event: Event::parse(r.get(1)),
                    incident: r.get(3),
                    site: r.get(4),
                    url: r.get(5),
                    opened_at: r.get(6),
                    resolved_at: r.get(7),
                    cause: r.get(8),
                    failures: r.get(9),
                    first_failing_check: r.get(10),
                    last_failing_check: r.get(11),
                    resolution: r.get(12),
                    sent_by: self.instance.clone(),
                };
                (n, r.get(2))
            })
            .collect();
        // Incidents whose earlier event failed in this round: their later
        // events wait for it (handed back unsent, and held by the claim's
        // order rule until it is delivered or given up).
        let mut failed: Vec<i64> = Vec::new();
        let mut unsent: Vec<i64> = Vec::new();
        for (n, attempts) in &due {
            if shutdown.is_cancelled() || failed.contains(&n.incident) {
                unsent.push(n.outbox);
                continue;
            }
            let started = Instant::now();
            let a = self.deliverer.deliver(ch, n).await;
            let took = started.elapsed().as_secs_f64() * 1e3;
            if a.error.is_some() {
                failed.push(n.incident);
            }
            self.record(ch, n, attempts + 1, &a, took).await?;
        }
        if !unsent.is_empty() {
            self.pool
                .get()
                .await?
                .execute(
                    "UPDATE alert_outbox SET due_at = now() WHERE id = ANY($1)",
                    &[&unsent],
                )
                .await?;
        }
        Ok(due.len())
    }

    /// Records one attempt and what follows from it (delivered, retried
    /// after a backoff, or given up), in one statement.
    async fn record(
        &self,
        ch: &Channel,
        n: &Notice,
        attempts: i32,
        a: &Answer,
        took_ms: f64,
    ) -> Result<(), StoreError> {
        let alerts = &self.settings.alerts;
        let (channel, kind, site, event) = (&ch.name, ch.kind(), &n.site, n.event.as_str());
        let backoff = 2f64
            .powi(attempts - 1)
            .min(alerts.max_backoff.as_secs_f64());
        let result = if a.error.is_none() {
            "delivered"
        } else if attempts as u32 >= alerts.max_attempts {
            tracing::error!(channel, kind, %site, event, error = ?a.error, answer = %a.text,
                            attempts, "alert not delivered; giving up");
            "gave_up"
        } else {
            tracing::warn!(channel, kind, %site, event, error = ?a.error, answer = %a.text,
                           attempts, retry_in_s = backoff, "alert not delivered; retrying");
            "failed"
        };
        self.pool
            .get()
            .await?
            .execute(
                "WITH attempt AS (
                     INSERT INTO alert_deliveries
                         (outbox_id, instance, status_code, error, duration_ms, answer)
                     VALUES ($1, $2, $3, $4, $5, $6))
                 UPDATE alert_outbox SET attempts = $7,
                        delivered_at = CASE WHEN $8 = 'delivered' THEN now() END,
                        gave_up_at = CASE WHEN $8 = 'gave_up' THEN now() END,
                        due_at = CASE WHEN $8 = 'failed'
                                      THEN now() + make_interval(secs => $9) ELSE due_at END
                 WHERE id = $1",
                &[
                    &n.outbox,
                    &self.instance,
                    &a.status.map(i32::from),
                    &a.error,
                    &took_ms,
                    &a.text,
                    &attempts,
                    &result,
                    &backoff,
                ],
            )
            .await?;
        metrics::counter!(crate::telemetry::metrics::ALERTS,
            "result" => result, "channel" => channel.clone())
        .increment(1);
        Ok(())
    }
}
