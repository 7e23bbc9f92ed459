//! Delivering incident notifications to the webhook. The evaluator queues
//! them in `alert_outbox` in the transaction that opens or resolves the
//! incident; any instance may send them: each claims due rows with
//! `FOR UPDATE SKIP LOCKED`, so two instances never send the same one. Every
//! attempt is recorded in `alert_deliveries`; a failed one is retried with
//! backoff (1 s, 2 s, 4 s ... at most 5 min apart) up to
//! `alerts.max_attempts`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::{AlertFormat, Settings};
use crate::liveness::Beat;
use crate::store::StoreError;

/// Notifications claimed per round; the claim is held while they are sent.
const CLAIM: i64 = 5;

pub struct AlertSender {
    settings: Arc<Settings>,
    pool: Pool,
    http: reqwest::Client,
    instance: String,
    beat: Beat,
}

/// One queued notification and its incident.
struct Due {
    outbox: i64,
    event: String,
    attempts: i32,
    incident: i64,
    site: String,
    url: Option<String>,
    opened_at: DateTime<Utc>,
    resolved_at: Option<DateTime<Utc>>,
    /// `recovered`, `site removed` or `site disabled` once resolved.
    resolution: Option<String>,
    cause: String,
    failures: i32,
    first_failing_check: Uuid,
    last_failing_check: Uuid,
}

impl AlertSender {
    pub fn new(settings: Arc<Settings>, pool: Pool, instance: &str, beat: Beat) -> AlertSender {
        let http = reqwest::Client::builder()
            .user_agent(&settings.checker.user_agent)
            .timeout(settings.alerts.timeout)
            .build()
            .unwrap_or_default();
        AlertSender {
            settings,
            pool,
            http,
            instance: instance.to_owned(),
            beat,
        }
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        self.beat.running();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.beat.beat();
            // Drain what is due, a few at a time.
            loop {
                match self.round().await {
                    Ok(0) => break,
                    Ok(_) => self.beat.beat(),
                    Err(e) => {
                        tracing::warn!(error = %e, "sending alerts failed; retrying");
                        break;
                    }
                }
            }
        }
    }

    /// Claims and sends up to [`CLAIM`] due notifications; returns how many.
    pub async fn round(&self) -> Result<usize, StoreError> {
        let Some(webhook) = self.settings.alerts.webhook_url.clone() else {
            return Ok(0);
        };
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let due: Vec<Due> = tx
            .query(
                "SELECT o.id, o.event, o.attempts, i.id, i.site, s.url, i.opened_at, i.resolved_at,
                        i.cause, i.failures, i.first_failing_check, i.last_failing_check,
                        i.resolution
                 FROM alert_outbox o JOIN incidents i ON i.id = o.incident_id
                 LEFT JOIN sites s ON s.name = i.site
                 WHERE o.delivered_at IS NULL AND o.gave_up_at IS NULL AND o.due_at <= now()
                 ORDER BY o.id LIMIT $1
                 FOR UPDATE OF o SKIP LOCKED",
                &[&CLAIM],
            )
            .await?
            .iter()
            .map(|r| Due {
                outbox: r.get(0),
                event: r.get(1),
                attempts: r.get(2),
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
            })
            .collect();
        for d in &due {
            let started = Instant::now();
            let sent = self
                .http
                .post(&webhook)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(payload(d, self.settings.alerts.format, &self.instance).to_string())
                .send()
                .await;
            let took = started.elapsed().as_secs_f64() * 1e3;
            let (status, error) = match &sent {
                Ok(r) if r.status().is_success() => (Some(r.status().as_u16()), None),
                Ok(r) => (
                    Some(r.status().as_u16()),
                    Some(format!("HTTP {}", r.status())),
                ),
                Err(e) => (None, Some(crate::checker::error_chain(e))),
            };
            tx.execute(
                "INSERT INTO alert_deliveries (outbox_id, instance, status_code, error, duration_ms)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &d.outbox,
                    &self.instance,
                    &status.map(i32::from),
                    &error,
                    &took,
                ],
            )
            .await?;
            let attempts = d.attempts + 1;
            if error.is_none() {
                tx.execute(
                    "UPDATE alert_outbox SET delivered_at = now(), attempts = $2 WHERE id = $1",
                    &[&d.outbox, &attempts],
                )
                .await?;
                metrics::counter!(crate::telemetry::metrics::ALERTS, "result" => "delivered")
                    .increment(1);
            } else if attempts as u32 >= self.settings.alerts.max_attempts {
                tracing::error!(site = %d.site, event = %d.event, ?error, attempts, "alert not delivered; giving up");
                tx.execute(
                    "UPDATE alert_outbox SET gave_up_at = now(), attempts = $2 WHERE id = $1",
                    &[&d.outbox, &attempts],
                )
                .await?;
                metrics::counter!(crate::telemetry::metrics::ALERTS, "result" => "gave_up")
                    .increment(1);
            } else {
                let backoff = 2f64.powi(attempts - 1).min(300.0);
                tracing::warn!(site = %d.site, event = %d.event, ?error, attempts, retry_in_s = backoff, "alert not delivered; retrying");
                tx.execute(
                    "UPDATE alert_outbox SET attempts = $2,
                            due_at = now() + make_interval(secs => $3) WHERE id = $1",
                    &[&d.outbox, &attempts, &backoff],
                )
                .await?;
                metrics::counter!(crate::telemetry::metrics::ALERTS, "result" => "failed")
                    .increment(1);
            }
        }
        tx.commit().await?;
        Ok(due.len())
    }
}

fn payload(d: &Due, format: AlertFormat, instance: &str) -> serde_json::Value {
    match format {
        AlertFormat::Json => json!({
            "event": d.event,
            "site": d.site,
            "url": d.url,
            "incident": {
                "id": d.incident,
                "opened_at": d.opened_at,
                "resolved_at": d.resolved_at,
                "resolution": d.resolution,
                "cause": d.cause,
                "failures": d.failures,
                "first_failing_check": d.first_failing_check,
                "last_failing_check": d.last_failing_check,
            },
            "sent_by": instance,
        }),
        AlertFormat::Slack => {
            let url = d.url.as_deref().unwrap_or("");
            let text = match (d.event.as_str(), d.resolved_at) {
                ("resolved", Some(_)) if d.resolution.as_deref() != Some("recovered") => format!(
                    ":white_circle: *{}*: its incident is closed ({}); it was down since {}",
                    d.site,
                    d.resolution.as_deref().unwrap_or("closed"),
                    d.opened_at.format("%Y-%m-%d %H:%M UTC")
                ),
                ("resolved", Some(at)) => format!(
                    ":large_green_circle: *{}* is up again ({url}); it was down for {} min since {}",
                    d.site,
                    (at - d.opened_at).num_minutes(),
                    d.opened_at.format("%Y-%m-%d %H:%M UTC")
                ),
                ("reminder", _) => format!(
                    ":warning: *{}* is still down ({url}) since {}: {}",
                    d.site,
                    d.opened_at.format("%Y-%m-%d %H:%M UTC"),
                    d.cause
                ),
                _ => format!(
                    ":red_circle: *{}* is down ({url}) since {}: {}",
                    d.site,
                    d.opened_at.format("%Y-%m-%d %H:%M UTC"),
                    d.cause
                ),
            };
            json!({ "text": text })
        }
    }
}
