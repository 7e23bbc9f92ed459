//! One attempt to hand a notification to a channel, and what the channel
//! answered. Every text that leaves here (the answer, the error) has the
//! channel's secrets removed, because it is logged, stored in
//! `alert_deliveries` and printed by `sitewatch alert test`; request URLs,
//! which carry tokens for several vendors, are never included at all.

use std::collections::HashMap;
use std::time::Duration;

use crate::checker::error_chain;
use crate::config::{AlertSettings, Channel, Target};

use super::email;
use super::notice::Notice;
use super::vendors::{self, Call};
use super::webhook;

/// Most bytes of a channel's answer kept (status line or SMTP reply, then
/// the start of the body).
const ANSWER_BYTES: usize = 512;
/// Bytes of a response body read, so that secrets are removed from more
/// than is kept: a secret across the cut must not leave its first half.
const READ_BYTES: usize = 4096;

/// The outcome of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status of the last request made (none for SMTP, or when no
    /// response came).
    pub status: Option<u16>,
    /// What the channel said, at most [`ANSWER_BYTES`], secrets removed.
    pub text: String,
    /// Why the attempt failed; `None` when delivered.
    pub error: Option<String>,
}

/// The clients every channel shares: one HTTP client, one pooled SMTP
/// transport per email channel.
pub struct Deliverer {
    http: reqwest::Client,
    smtp: HashMap<String, email::Transport>,
    /// The most one attempt may take, whatever the client libraries do
    /// with their own timeouts: a server that accepts and then stalls must
    /// not hold the channel's loop.
    attempt_limit: Duration,
}

impl Deliverer {
    /// Builds the clients (nothing connects yet). `Err` names the channel
    /// whose settings cannot be used (an unreadable CA file).
    pub fn new(alerts: &AlertSettings, user_agent: &str) -> Result<Deliverer, String> {
        let http = reqwest::Client::builder()
            .user_agent(user_agent)
            .timeout(alerts.timeout)
            .connect_timeout(alerts.timeout.min(Duration::from_secs(5)))
            // A vendor's redirect would resend the body elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| error_chain(&e))?;
        let problems = super::check(alerts);
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        let mut smtp = HashMap::new();
        for c in &alerts.channels {
            if let Target::Email(e) = &c.target {
                let t = email::transport(e, alerts.timeout)
                    .map_err(|err| format!("alerts channel {}: {err}", c.name))?;
                smtp.insert(c.name.clone(), t);
            }
        }
        // Two requests at most per attempt (a test's trigger and resolve).
        let attempt_limit = alerts.timeout * 2 + Duration::from_secs(1);
        Ok(Deliverer {
            http,
            smtp,
            attempt_limit,
        })
    }

    /// The most one attempt may take: 2 × `alerts.timeout` + 1 s.
    pub fn attempt_limit(&self) -> Duration {
        self.attempt_limit
    }

    /// One attempt to deliver `n` through `channel`.
    pub async fn deliver(&self, channel: &Channel, n: &Notice) -> Answer {
        let attempt = async {
            match &channel.target {
                Target::Email(e) => self.email(channel, e, n).await,
                other => match calls(other, n) {
                    Ok(calls) => self.post_all(&calls).await,
                    Err(e) => Answer {
                        status: None,
                        text: String::new(),
                        error: Some(e),
                    },
                },
            }
        };
        let answer = tokio::time::timeout(self.attempt_limit, attempt)
            .await
            .unwrap_or_else(|_| Answer {
                status: None,
                text: String::new(),
                error: Some(format!(
                    "no answer within {}",
                    crate::config::show_duration(self.attempt_limit)
                )),
            });
        // The channel's own secrets (tokens in its URL, keys), in any form
        // the receiver echoes them in: the same filter as a check's.
        let secrets = crate::model::Secrets::from_values(channel.secrets());
        Answer {
            status: answer.status,
            text: bounded(secrets.redact(&answer.text).into_owned()),
            error: answer
                .error
                .map(|e| bounded(secrets.redact(&e).into_owned())),
        }
    }

    async fn email(&self, channel: &Channel, e: &crate::config::Email, n: &Notice) -> Answer {
        let failed = |error: String| Answer {
            status: None,
            text: String::new(),
            error: Some(error),
        };
        let Some(t) = self.smtp.get(&channel.name) else {
            return failed("no SMTP transport for this channel".into());
        };
        let m = match email::message(e, n) {
            Ok(m) => m,
            Err(err) => return failed(err),
        };
        match email::send(t, m).await {
            Ok(reply) => Answer {
                status: None,
                text: reply,
                error: None,
            },
            Err(err) => failed(err),
        }
    }

    /// Makes the calls in order, stopping at the first that fails.
    async fn post_all(&self, calls: &[Call]) -> Answer {
        let mut last = Answer {
            status: None,
            text: String::new(),
            error: Some("nothing to send".into()),
        };
        for c in calls {
            last = self.post(c).await;
            if last.error.is_some() {
                break;
            }
        }
        last
    }

    async fn post(&self, c: &Call) -> Answer {
        let mut req = self.http.post(&c.url).body(c.body.clone());
        if !c.headers.iter().any(|h| h.0 == "Content-Type") {
            req = req.header("Content-Type", "application/json");
        }
        for (k, v) in &c.headers {
            req = req.header(*k, v);
        }
        let mut resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                return Answer {
                    status: None,
                    text: String::new(),
                    // Without the URL: it may hold the channel's token.
                    error: Some(error_chain(&e.without_url())),
                };
            }
        };
        let status = resp.status();
        let mut text = format!("HTTP {status}");
        let mut body = Vec::new();
        while body.len() < READ_BYTES {
            match resp.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                _ => break,
            }
        }
        if status.is_redirection() {
            // Not followed (the body would go elsewhere): say where to.
            if let Some(to) = resp.headers().get("location").and_then(|v| v.to_str().ok()) {
                text.push_str(&format!(" (redirects are not followed; Location: {to})"));
            }
        }
        if !body.is_empty() {
            text.push(' ');
            text.push_str(&String::from_utf8_lossy(
                &body[..body.len().min(READ_BYTES)],
            ));
        }
        Answer {
            status: Some(status.as_u16()),
            error: (!status.is_success()).then(|| format!("HTTP {status}")),
            text,
        }
    }
}

/// The requests for an HTTP channel.
fn calls(target: &Target, n: &Notice) -> Result<Vec<Call>, String> {
    Ok(match target {
        Target::Slack { webhook_url } => vec![vendors::slack(webhook_url.expose(), n)],
        Target::Teams { webhook_url } => vec![vendors::teams(webhook_url.expose(), n)],
        Target::Discord { webhook_url } => vec![vendors::discord(webhook_url.expose(), n)],
        Target::PagerDuty {
            routing_key,
            url,
            severity,
        } => vendors::pagerduty(url, routing_key.expose(), severity, n),
        Target::Opsgenie {
            api_key,
            url,
            priority,
        } => vendors::opsgenie(url, api_key.expose(), priority, n),
        Target::Telegram {
            bot_token,
            chat_id,
            url,
        } => vec![vendors::telegram(url, bot_token.expose(), chat_id, n)],
        Target::Ntfy {
            url,
            topic,
            token,
            priority,
        } => vec![vendors::ntfy(
            url,
            topic,
            token.as_ref().map(|t| t.expose()),
            *priority,
            n,
        )],
        Target::Webhook {
            url,
            secret,
            template,
            content_type,
        } => vec![webhook::call(
            url.expose(),
            secret.as_ref().map(|s| s.expose()),
            template.as_deref(),
            content_type,
            n,
            chrono::Utc::now().timestamp(),
        )?],
        Target::Email(_) => Vec::new(),
    })
}

fn bounded(mut s: String) -> String {
    if s.len() > ANSWER_BYTES {
        let mut end = ANSWER_BYTES;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn channel_secrets_are_removed_in_their_encoded_forms() {
        let secrets = crate::model::Secrets::from_values(["123:AB/c".to_owned(), String::new()]);
        let s = secrets.redact(r"bot 123:AB/c; url 123%3AAB%2Fc; json 123:AB\/c");
        assert_eq!(s, "bot [redacted]; url [redacted]; json [redacted]");
    }
}
