//! The checker stage: consumes `status_request_created` in a consumer group,
//! runs checks concurrently (bounded) with one shared HTTP client, and
//! publishes each outcome to `status_request_succeeded` (a response came
//! back) or `status_request_failed` (none did, or skipped).
//!
//! Promise: a request's offset is committed only after its outcome (or, for
//! an undecodable message, its dead letter) is acknowledged by the broker,
//! with checks completing out of order. A request received after its
//! deadline is not checked late: it is published as `skipped`.

mod codings;
mod connect;
mod dns_query;
mod evidence;
mod handshake;
mod hosts;
mod http;
mod json;
mod json_budget;
mod judge;
mod pattern;
mod redirects;
mod resolve;
mod tcp;
mod tls;
mod verdict;

pub use connect::chain as error_chain;
pub use hosts::HostLimits;
pub use http::{ClientError, HttpChecker};

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rdkafka::consumer::CommitMode;
use rdkafka::Message;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::bus::{BusError, DeadLetter, MessageRef, Publisher, TrackedConsumer};
use crate::config::Settings;
use crate::liveness::Beat;
use crate::model::{self, CheckOutcome, CheckRequest, ErrorKind};
use crate::telemetry::metrics as m;

/// How often finished offsets are committed.
const COMMIT_EVERY: Duration = Duration::from_secs(1);
/// How long shutdown waits for checks in flight before giving up on them
/// (their requests are then redelivered after restart).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Checker {
    settings: Arc<Settings>,
    http: Arc<HttpChecker>,
    publisher: Publisher,
    /// Proves to the watchdog and `/readyz` that the loop turns.
    beat: Beat,
}

impl Checker {
    pub fn new(
        settings: Arc<Settings>,
        http: Arc<HttpChecker>,
        publisher: Publisher,
        beat: Beat,
    ) -> Self {
        Checker {
            settings,
            http,
            publisher,
            beat,
        }
    }

    pub async fn run(self, shutdown: CancellationToken) -> Result<(), BusError> {
        let topics = &self.settings.kafka.topics;
        let group = crate::bus::lag::checker_group(&self.settings);
        let consumer = TrackedConsumer::new(&self.settings, &group, &[&topics.created])?;
        let limit = Arc::new(Semaphore::new(self.settings.checker.concurrency));
        let hosts = Arc::new(HostLimits::new(self.settings.checker.max_per_host));
        let mut tasks = JoinSet::new();
        let mut commit = tokio::time::interval(COMMIT_EVERY);
        tracing::info!(%group, topic = %topics.created, concurrency = self.settings.checker.concurrency, "checker started");
        self.beat.running();

        loop {
            // A permit first, then a message: at most `concurrency` requests
            // are taken from Kafka and not finished.
            let next = async {
                let permit = limit.clone().acquire_owned().await.expect("semaphore open");
                (permit, consumer.consumer.recv().await)
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = commit.tick() => {
                    consumer.commit(CommitMode::Async);
                    hosts.prune();
                    self.beat.beat();
                }
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Err(e) = done {
                        tracing::error!(error = %e, "check task failed");
                    }
                }
                (permit, msg) = next => {
                    let msg = match msg {
                        Ok(m) => {
                            crate::bus::progress::ok();
                            m
                        }
                        Err(e) => {
                            crate::bus::progress::failed();
                            if let Some(fatal) = consumer.fatal_error() {
                                return Err(fatal);
                            }
                            tracing::warn!(error = %e, "consume error");
                            continue;
                        }
                    };
                    let done = consumer.start(&msg);
                    let work = Work {
                        http: self.http.clone(),
                        hosts: hosts.clone(),
                        publisher: self.publisher.clone(),
                        settings: self.settings.clone(),
                        shutdown: shutdown.clone(),
                    };
                    match model::decode_request(msg.payload()) {
                        Ok(req) => {
                            tasks.spawn(async move {
                                work.check_and_publish(req, done).await;
                                drop(permit);
                            });
                        }
                        Err(e) => {
                            let letter = DeadLetter::from_message(&msg, "checker", e.to_string());
                            tasks.spawn(async move {
                                work.dead_letter(letter, done).await;
                                drop(permit);
                            });
                        }
                    }
                }
            }
        }

        tracing::info!(
            in_flight = tasks.len(),
            "checker stopping: draining checks in flight"
        );
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                left = tasks.len(),
                "checks still running at shutdown; they will be redone"
            );
            tasks.abort_all();
        }
        self.publisher.flush(Duration::from_secs(10)).await;
        consumer.commit(CommitMode::Sync);
        tracing::info!(unfinished = consumer.unfinished(), "checker stopped");
        Ok(())
    }
}

/// Phase and certificate histograms of one check.
fn record_phases(outcome: &CheckOutcome) {
    if let Some(t) = &outcome.timing {
        for (phase, ms) in [
            ("dns", t.dns_ms),
            ("connect", t.connect_ms),
            ("tls", t.tls_ms),
            ("ttfb", t.ttfb_ms),
            ("transfer", t.transfer_ms),
        ] {
            if let Some(ms) = ms {
                metrics::histogram!(m::CHECK_PHASE, "phase" => phase).record(ms / 1e3);
            }
        }
    }
    if let Some(c) = &outcome.tls {
        metrics::histogram!(m::CERT_DAYS_LEFT).record(c.days_left.max(0.0));
    }
}

/// What one check task needs.
struct Work {
    http: Arc<HttpChecker>,
    hosts: Arc<HostLimits>,
    publisher: Publisher,
    settings: Arc<Settings>,
    shutdown: CancellationToken,
}

impl Work {
    #[tracing::instrument(skip_all, fields(site = %req.site, check_id = %req.check_id))]
    async fn check_and_publish(self, req: CheckRequest, done: MessageRef) {
        let late = |when: &str| {
            CheckOutcome::skipped(
                &req,
                ErrorKind::DeadlineExceeded,
                format!("{when} after its deadline {}", req.deadline),
                self.http.instance(),
            )
        };
        let host = url::Url::parse(&req.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        let permit = if Utc::now() > req.deadline {
            Err(late("request reached the checker"))
        } else {
            match self.hosts.acquire(&host).await {
                Err(busy) => Err(CheckOutcome::skipped(
                    &req,
                    ErrorKind::HostBusy,
                    format!(
                        "{host} already had {} checks running and {} waiting in this checker \
                         (checker.max_per_host)",
                        busy.limit, busy.limit
                    ),
                    self.http.instance(),
                )),
                Ok(_) if Utc::now() > req.deadline => {
                    Err(late("waited for a check slot of its host until"))
                }
                Ok(p) => Ok(p),
            }
        };
        let outcome = if let Err(skipped) = permit {
            skipped
        } else {
            let gauge = metrics::gauge!(m::CHECKS_IN_FLIGHT);
            gauge.increment(1.0);
            let delay = (Utc::now() - req.scheduled_at).to_std().unwrap_or_default();
            metrics::histogram!(m::START_DELAY).record(delay.as_secs_f64());
            let started = std::time::Instant::now();
            // Boxed: the check's state machine is about 11 KB, and spawning
            // a task that holds it inline copies it several times (a
            // measured 7 % of the daemon's CPU under load).
            let outcome = Box::pin(self.http.check(&req)).await;
            metrics::histogram!(m::CHECK_DURATION).record(started.elapsed().as_secs_f64());
            gauge.decrement(1.0);
            record_phases(&outcome);
            drop(permit);
            outcome
        };
        let kind = outcome.error_kind.map_or("none", ErrorKind::as_str);
        metrics::counter!(m::CHECKS, "outcome" => outcome.outcome.as_str(), "error_kind" => kind)
            .increment(1);
        let topics = &self.settings.kafka.topics;
        let topic = if outcome.got_response() {
            &topics.succeeded
        } else {
            &topics.failed
        };
        let payload = model::encode(&outcome);
        if self
            .retry("publish outcome", || {
                self.publisher
                    .send(topic, outcome.site.as_bytes(), &payload, None)
            })
            .await
        {
            done.finish();
        }
    }

    async fn dead_letter(self, letter: DeadLetter, done: MessageRef) {
        let dlq = &self.settings.kafka.topics.dlq;
        if self
            .retry("publish dead letter", || {
                letter.publish(&self.publisher, dlq)
            })
            .await
        {
            metrics::counter!(m::DLQ_MESSAGES, "stage" => "checker").increment(1);
            done.finish();
        }
    }

    /// Retries `op` with backoff until it succeeds (true) or shutdown (false:
    /// the offset stays uncommitted and the message is redelivered).
    async fn retry<F, Fut>(&self, what: &str, op: F) -> bool
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<(), rdkafka::error::KafkaError>>,
    {
        let mut delay = Duration::from_millis(200);
        loop {
            match op().await {
                Ok(()) => return true,
                Err(e) => tracing::warn!(error = %e, retry_in = ?delay, "{what} failed"),
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return false,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }
}

/// An outcome as `sitewatch check` prints it: the verdict, then where the
/// time went, the certificate, and every failed assertion.
/// `text` safe for a terminal: control characters (escape sequences that
/// could retitle the window or rewrite lines, carriage returns) as `\u{..}`.
fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() && c != '\t') {
        return text.into();
    }
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\t' {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

pub fn report(out: &CheckOutcome) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1} ms"));
    let _ = writeln!(s, "url:          {}", out.url);
    let reason = out
        .error_kind
        .map(|k| format!(" ({k})"))
        .unwrap_or_default();
    let _ = writeln!(s, "outcome:      {}{reason}", out.outcome.as_str());
    if let Some(code) = out.status_code {
        let _ = writeln!(
            s,
            "status:       {code} over {} from {}",
            out.http_version.as_deref().unwrap_or("?"),
            out.remote_addr.as_deref().unwrap_or("?")
        );
    }
    if let Some(t) = &out.timing {
        let _ = writeln!(
            s,
            "timing:       dns {} | connect {} | tls {} | ttfb {} | transfer {} | total {}",
            ms(t.dns_ms),
            ms(t.connect_ms),
            ms(t.tls_ms),
            ms(t.ttfb_ms),
            ms(t.transfer_ms),
            ms(out.response_time_ms)
        );
        if t.redirects > 0 {
            let _ = writeln!(s, "redirects:    {}", t.redirects);
        }
    }
    if let Some(c) = &out.tls {
        let _ = writeln!(
            s,
            "certificate:  {} (issuer {}), expires {} ({:.1} days left){}",
            c.subject,
            c.issuer,
            c.not_after.format("%Y-%m-%d %H:%M UTC"),
            c.days_left,
            c.version
                .as_deref()
                .map(|v| format!(", {v}"))
                .unwrap_or_default()
        );
    }
    if let Some(n) = out.body_bytes {
        let _ = writeln!(s, "body bytes:   {n}");
    }
    if let Some(m) = out.regex_matched {
        let _ = writeln!(
            s,
            "regex:        {}",
            if m { "matched" } else { "not matched" }
        );
    }
    for f in &out.failures {
        let _ = writeln!(
            s,
            "failed:       {}: expected {}, got {}",
            f.assertion, f.expected, f.observed
        );
    }
    if out.failures.is_empty() {
        if let (Some(kind), Some(msg)) = (out.error_kind, &out.error_message) {
            let _ = writeln!(s, "error:        {kind}: {msg}");
        }
    }
    if let Some((rcode, records)) = out.answers.split_first() {
        let _ = writeln!(s, "answer:       {rcode}");
        for r in records {
            let _ = writeln!(s, "              {}", printable(r));
        }
    }
    if let Some(e) = &out.evidence {
        let pad = "              ";
        let _ = writeln!(s, "evidence:     {}", printable(&e.status_line));
        for (name, value) in &e.headers {
            let _ = writeln!(s, "{pad}{}: {}", printable(name), printable(value));
        }
        let cut = if e.body_truncated { ", cut" } else { "" };
        let _ = writeln!(s, "{pad}body ({} bytes kept{cut}):", e.body.len());
        for line in e.body.lines() {
            let _ = writeln!(s, "{pad}| {}", printable(line));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn printed_evidence_cannot_drive_the_terminal() {
        let shown = super::printable("ok\u{1b}]0;PWNED\u{7}\u{1b}[31m red\r\tend");
        assert!(
            !shown.chars().any(|c| c.is_control() && c != '\t'),
            "{shown}"
        );
        assert!(
            shown.contains("\\u{1b}]0;PWNED") && shown.ends_with("\tend"),
            "{shown}"
        );
        assert_eq!(super::printable("plain text"), "plain text");
    }
}
