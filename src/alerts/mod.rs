//! Delivering incident notifications to the configured channels (email,
//! Slack, Teams, Discord, PagerDuty, Opsgenie, Telegram, ntfy, signed
//! webhooks). The evaluator queues one `alert_outbox` row per event and
//! channel, in the transaction that opens or resolves the incident. Any
//! instance may send them: each runs one loop per channel, which claims that
//! channel's due rows with `FOR UPDATE SKIP LOCKED`, so two instances never
//! send the same one, and a slow or failing channel never holds up another.
//! Every attempt is recorded in `alert_deliveries` with the channel's answer;
//! a failed one is retried with backoff (1 s, 2 s, 4 s ... at most
//! `alerts.max_backoff` apart) up to `alerts.max_attempts`.

mod deliver;
mod email;
mod notice;
mod vendors;
pub mod webhook;

use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::liveness::Beat;
use crate::store::StoreError;

pub use deliver::{Answer, Deliverer};
pub use notice::{Event, Notice};

/// Notifications of one channel claimed per round; the claim is held while
/// they are sent.
const CLAIM: i64 = 5;

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

    /// Claims and sends up to [`CLAIM`] due notifications of `channel`;
    /// returns how many were claimed. Stops sending (and commits what was
    /// sent) once `shutdown` is cancelled.
    pub async fn round(
        &self,
        channel: &str,
        shutdown: &CancellationToken,
    ) -> Result<usize, StoreError> {
        let Some(ch) = self.settings.alerts.channel(channel) else {
            return Ok(0);
        };
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let due: Vec<(Notice, i32)> = tx
            .query(
                "SELECT o.id, o.event, o.attempts, i.id, i.site, s.url, i.opened_at, i.resolved_at,
                        i.cause, i.failures, i.first_failing_check, i.last_failing_check,
                        i.resolution
                 FROM alert_outbox o JOIN incidents i ON i.id = o.incident_id
                 LEFT JOIN sites s ON s.name = i.site
                 WHERE o.channel = $2
                   AND o.delivered_at IS NULL AND o.gave_up_at IS NULL AND o.due_at <= now()
                 ORDER BY o.id LIMIT $1
                 FOR UPDATE OF o SKIP LOCKED",
                &[&CLAIM, &channel],
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
        let alerts = &self.settings.alerts;
        for (n, attempts) in &due {
            if shutdown.is_cancelled() {
                break;
            }
            let started = Instant::now();
            let a = self.deliverer.deliver(ch, n).await;
            let took = started.elapsed().as_secs_f64() * 1e3;
            tx.execute(
                "INSERT INTO alert_deliveries
                     (outbox_id, instance, status_code, error, duration_ms, answer)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &n.outbox,
                    &self.instance,
                    &a.status.map(i32::from),
                    &a.error,
                    &took,
                    &a.text,
                ],
            )
            .await?;
            let attempts = attempts + 1;
            let (kind, site, event) = (ch.kind(), &n.site, n.event.as_str());
            let result = if a.error.is_none() {
                tx.execute(
                    "UPDATE alert_outbox SET delivered_at = now(), attempts = $2 WHERE id = $1",
                    &[&n.outbox, &attempts],
                )
                .await?;
                "delivered"
            } else if attempts as u32 >= alerts.max_attempts {
                tracing::error!(channel, kind, %site, event, error = ?a.error, answer = %a.text,
                                attempts, "alert not delivered; giving up");
                tx.execute(
                    "UPDATE alert_outbox SET gave_up_at = now(), attempts = $2 WHERE id = $1",
                    &[&n.outbox, &attempts],
                )
                .await?;
                "gave_up"
            } else {
                let backoff = 2f64
                    .powi(attempts - 1)
                    .min(alerts.max_backoff.as_secs_f64());
                tracing::warn!(channel, kind, %site, event, error = ?a.error, answer = %a.text,
                               attempts, retry_in_s = backoff, "alert not delivered; retrying");
                tx.execute(
                    "UPDATE alert_outbox SET attempts = $2,
                            due_at = now() + make_interval(secs => $3) WHERE id = $1",
                    &[&n.outbox, &attempts, &backoff],
                )
                .await?;
                "failed"
            };
            metrics::counter!(crate::telemetry::metrics::ALERTS,
                "result" => result, "channel" => channel.to_owned())
            .increment(1);
        }
        tx.commit().await?;
        Ok(due.len())
    }
}
