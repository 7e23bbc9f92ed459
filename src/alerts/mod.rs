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

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tokio::sync::watch;
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

/// [`check`], and whether the channels' clients can be built (CA and
/// client certificate files that parse): everything `validate`, the start
/// and a reload refuse, offline. One message per problem.
pub fn usable(alerts: &crate::config::AlertSettings, user_agent: &str) -> Vec<String> {
    let mut problems = check(alerts);
    if problems.is_empty() {
        // The SMTP pools start a task on the runtime they are built in:
        // outside one (`validate`, a command's config check) a runtime of
        // its own, dropped with them.
        let own = tokio::runtime::Handle::try_current().is_err().then(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        });
        let entered = match &own {
            Some(Ok(rt)) => Some(rt.enter()),
            Some(Err(e)) => {
                problems.push(format!("checking the alert channels: {e}"));
                return problems;
            }
            None => None,
        };
        match Deliverer::new(alerts, user_agent) {
            // Dropped inside the runtime too: the pools' drop starts a task.
            Ok(built) => drop(built),
            Err(e) => problems.push(e),
        }
        drop(entered);
        drop(own);
    }
    problems
}

/// Notifications of one channel claimed (leased) per round.
const CLAIM: i64 = 5;

/// The alerts stage: sends what the evaluator queued, through every
/// configured channel (built by [`AlertSender::new`], run until shutdown by
/// [`AlertSender::run`]). `[alerts]` follows reloads: a channel added gets
/// its loop, a removed one loses it (its unsent rows wait in the outbox,
/// and go if it is configured again), and a changed one is sent through
/// with its new settings from its next round.
pub struct AlertSender {
    live: watch::Receiver<Arc<Settings>>,
    current: RwLock<Arc<Current>>,
    pool: Pool,
    instance: String,
    beat: Beat,
}

/// The settings in force and the clients built from them.
struct Current {
    settings: Arc<Settings>,
    deliverer: Deliverer,
}

impl AlertSender {
    /// `Err` when a channel's settings cannot be used (an unreadable CA
    /// file), naming the channel.
    pub fn new(
        live: watch::Receiver<Arc<Settings>>,
        pool: Pool,
        instance: &str,
        beat: Beat,
    ) -> Result<AlertSender, String> {
        let settings = live.borrow().clone();
        let deliverer = Deliverer::new(&settings.alerts, &settings.checker.user_agent)?;
        Ok(AlertSender {
            live,
            current: RwLock::new(Arc::new(Current {
                settings,
                deliverer,
            })),
            pool,
            instance: instance.to_owned(),
            beat,
        })
    }

    fn current(&self) -> Arc<Current> {
        self.current.read().expect("alerts lock").clone()
    }

    /// One loop per channel until `shutdown`, the set following reloads.
    pub async fn run(self, shutdown: CancellationToken) {
        self.beat.running();
        let mut live = self.live.clone();
        // A reload that came between `new` and here is taken now.
        let now = live.borrow_and_update().clone();
        let this = Arc::new(self);
        this.apply(now).await;
        let mut loops: HashMap<String, CancellationToken> = HashMap::new();
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            let wanted: Vec<String> = this
                .current()
                .settings
                .alerts
                .channels
                .iter()
                .map(|c| c.name.clone())
                .collect();
            loops.retain(|name, stop| {
                let keep = wanted.contains(name);
                if !keep {
                    stop.cancel();
                }
                keep
            });
            for name in wanted {
                if let std::collections::hash_map::Entry::Vacant(v) = loops.entry(name) {
                    let stop = shutdown.child_token();
                    let (this, name, s) = (Arc::clone(&this), v.key().clone(), stop.clone());
                    tasks.spawn(async move { this.channel_loop(&name, s).await });
                    v.insert(stop);
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = live.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let settings = live.borrow_and_update().clone();
                    this.apply(settings).await;
                }
                Some(_) = tasks.join_next() => {}
            }
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Takes reloaded settings. Clients that cannot be built (an
    /// unreadable CA file) keep the old settings, said in the log.
    async fn apply(&self, settings: Arc<Settings>) {
        let old = self.current();
        if old.settings.alerts == settings.alerts {
            return;
        }
        match Deliverer::new(&settings.alerts, &settings.checker.user_agent) {
            Ok(deliverer) => {
                for gone in old
                    .settings
                    .alerts
                    .channels
                    .iter()
                    .filter(|c| settings.alerts.channel(&c.name).is_none())
                {
                    let (unsent, open) = self.left_on(&gone.name).await;
                    tracing::warn!(channel = %gone.name, unsent, open_incidents = open,
                        "alerts channel removed: its unsent notifications, and the end of the \
                         open incidents it was told of, wait and go if a channel of that name \
                         is configured again (a renamed channel is a removed one and a new one)");
                }
                *self.current.write().expect("alerts lock") = Arc::new(Current {
                    settings,
                    deliverer,
                });
                tracing::info!("alerts settings reloaded");
            }
            Err(e) => tracing::error!(error = %e,
                "alerts settings not reloaded; the channels keep their old settings"),
        }
    }

    /// What a removed `channel` leaves behind: its notifications not yet
    /// delivered nor given up, and the open incidents it was told of (0, 0
    /// when Postgres cannot say).
    async fn left_on(&self, channel: &str) -> (i64, i64) {
        let q = async {
            let row = self
                .pool
                .get()
                .await?
                .query_one(
                    "SELECT (SELECT count(*) FROM alert_outbox
                             WHERE channel = $1 AND delivered_at IS NULL AND gave_up_at IS NULL),
                            (SELECT count(DISTINCT o.incident_id) FROM alert_outbox o
                             JOIN incidents i ON i.id = o.incident_id
                             WHERE o.channel = $1 AND o.event IN ('opened', 'flapping')
                               AND i.resolved_at IS NULL)",
                    &[&channel],
                )
                .await?;
            Ok::<_, StoreError>((row.get(0), row.get(1)))
        };
        q.await.unwrap_or((0, 0))
    }

    /// Sends `channel`'s due notifications every second until `stop` (a
    /// shutdown, or the channel removed by a reload).
    async fn channel_loop(&self, channel: &str, stop: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.beat.beat();
            // Drain what is due, a few at a time.
            loop {
                match self.round(channel, &stop).await {
                    Ok(0) => break,
                    Ok(_) => self.beat.beat(),
                    Err(e) => {
                        tracing::warn!(channel, error = %e, "sending alerts failed; retrying");
                        break;
                    }
                }
                if stop.is_cancelled() {
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
        let cur = self.current();
        let Some(ch) = cur.settings.alerts.channel(channel) else {
            return Ok(0);
        };
        let lease = cur.deliverer.attempt_limit() * CLAIM as u32 + Duration::from_secs(30);
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
            let a = cur.deliverer.deliver(ch, n).await;
            let took = started.elapsed().as_secs_f64() * 1e3;
            if a.error.is_some() {
                failed.push(n.incident);
            }
            self.record(&cur.settings.alerts, ch, n, attempts + 1, &a, took)
                .await?;
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
        alerts: &crate::config::AlertSettings,
        ch: &Channel,
        n: &Notice,
        attempts: i32,
        a: &Answer,
        took_ms: f64,
    ) -> Result<(), StoreError> {
        let (channel, kind, site, event) = (&ch.name, ch.kind(), &n.site, n.event.as_str());
        let backoff = 2f64
            .powi(attempts - 1)
            .min(alerts.max_backoff.as_secs_f64());
        let result = if a.error.is_none() {
            "delivered"
        } else if attempts as u32 >= alerts.max_attempts {
            tracing::error!(channel, kind, %site, event, error = a.error.as_deref().unwrap_or_default(), answer = %a.text,
                            attempts, "alert not delivered; giving up");
            "gave_up"
        } else {
            tracing::warn!(channel, kind, %site, event, error = a.error.as_deref().unwrap_or_default(), answer = %a.text,
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
