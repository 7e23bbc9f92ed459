//! One notification as every channel renders it: the event, its incident
//! and the words people read (a headline and a line of detail), so that an
//! email, a chat message and a page say the same thing.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// What happened to the incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Opened,
    /// The incident is still open (`alerts.remind_every`).
    Reminder,
    Resolved,
    /// The site keeps changing between up and down: nothing more is sent
    /// until it settles (`[incidents] flap_changes`). It opens the
    /// incident on a channel when the incident opened while flapping.
    Flapping,
    /// The site stopped flapping and is down; the incident goes on.
    Settled,
    /// `sitewatch alert test`: no incident behind it.
    Test,
}

impl Event {
    /// As stored in `alert_outbox.event`.
    pub fn parse(s: &str) -> Event {
        match s {
            "opened" => Event::Opened,
            "reminder" => Event::Reminder,
            "resolved" => Event::Resolved,
            "flapping" => Event::Flapping,
            "settled" => Event::Settled,
            _ => Event::Test,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Event::Opened => "opened",
            Event::Reminder => "reminder",
            Event::Resolved => "resolved",
            Event::Flapping => "flapping",
            Event::Settled => "settled",
            Event::Test => "test",
        }
    }
}

/// One queued notification and its incident.
#[derive(Debug, Clone)]
pub struct Notice {
    /// `alert_outbox.id` (0 for a test): also the delivery id receivers may
    /// use to drop a repeat.
    pub outbox: i64,
    pub event: Event,
    pub incident: i64,
    pub site: String,
    pub url: Option<String>,
    pub opened_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    /// `recovered`, `site removed` or `site disabled` once resolved.
    pub resolution: Option<String>,
    pub cause: String,
    pub failures: i32,
    pub first_failing_check: Uuid,
    pub last_failing_check: Uuid,
    /// The instance that sends it.
    pub sent_by: String,
}

impl Notice {
    /// The notification `sitewatch alert test` sends.
    pub fn test(channel: &str, sent_by: &str) -> Notice {
        let now = Utc::now();
        Notice {
            outbox: 0,
            event: Event::Test,
            incident: 0,
            site: format!("sitewatch test of channel {channel}"),
            url: None,
            opened_at: now,
            resolved_at: None,
            resolution: None,
            cause: "a test notification: if you read this, the channel works".into(),
            failures: 0,
            first_failing_check: Uuid::nil(),
            last_failing_check: Uuid::nil(),
            sent_by: sent_by.to_owned(),
        }
    }

    /// One notice of each event whose every text a server could have
    /// chosen: quotes, backslashes, newlines, control characters, markup,
    /// and a 10 KiB cause. Templates must render all of them.
    pub fn hostile_samples() -> Vec<Notice> {
        let nasty = "\"quoted\" \\ back\\slash\nnew line\r\ttab \u{0}\u{1}\u{1b}[31m \u{7f} \
                     <b>&amp;</b> {{ not a template }} \u{2028} é €";
        let cause = format!("{nasty} {}", "x".repeat(10 * 1024));
        let now = Utc::now();
        [
            Event::Opened,
            Event::Reminder,
            Event::Resolved,
            Event::Flapping,
            Event::Settled,
            Event::Test,
        ]
        .into_iter()
        .map(|event| Notice {
            outbox: 1,
            event,
            incident: 1,
            site: format!("site {nasty}"),
            url: Some(format!("https://example.com/{nasty}")),
            opened_at: now - chrono::Duration::minutes(5),
            resolved_at: (event == Event::Resolved).then_some(now),
            resolution: (event == Event::Resolved).then(|| "recovered".to_owned()),
            cause: cause.clone(),
            failures: 3,
            first_failing_check: Uuid::nil(),
            last_failing_check: Uuid::nil(),
            sent_by: "validate".into(),
        })
        .collect()
    }

    /// The key that ties every notification of one incident together in a
    /// paging tool (PagerDuty `dedup_key`, Opsgenie `alias`), unique per
    /// incident. A test gets its own, so it never touches a real alert.
    pub fn incident_key(&self) -> String {
        match self.event {
            Event::Test => format!("sitewatch-test-{}", self.opened_at.timestamp_millis()),
            _ => format!("sitewatch-incident-{}", self.incident),
        }
    }

    /// True for the events that report a problem (opened, reminder, test).
    pub fn is_problem(&self) -> bool {
        self.event != Event::Resolved
    }

    /// One line: who, and what state.
    pub fn headline(&self) -> String {
        let site = &self.site;
        match self.event {
            Event::Opened => format!("{site} is down"),
            Event::Reminder => format!("{site} is still down"),
            Event::Flapping => format!("{site} is flapping"),
            Event::Settled => format!("{site} stopped flapping and is down"),
            Event::Resolved if self.resolution.as_deref() == Some("recovered") => {
                format!("{site} is up again")
            }
            Event::Resolved => format!(
                "{site}: incident closed ({})",
                self.resolution.as_deref().unwrap_or("closed")
            ),
            Event::Test => "sitewatch test notification".to_owned(),
        }
    }

    /// One more line: since when, for how long, and why.
    pub fn detail(&self) -> String {
        let since = self.opened_at.format("%Y-%m-%d %H:%M:%S UTC");
        match (self.event, self.resolved_at) {
            (Event::Test, _) => format!("Channel test from {}: {}.", self.sent_by, self.cause),
            (Event::Flapping, _) => format!(
                "It keeps changing between up and down (incident open since {since}; {} \
                 failed checks, first cause: {}). Nothing more is sent until it holds one \
                 state; then one message says which.",
                self.failures, self.cause
            ),
            (Event::Resolved, Some(at)) => format!(
                "Down from {since} for {} ({} failed checks); first cause: {}",
                minutes(at - self.opened_at),
                self.failures,
                self.cause
            ),
            _ => format!(
                "Down since {since} ({} so far, {} failed checks): {}",
                minutes(Utc::now() - self.opened_at),
                self.failures,
                self.cause
            ),
        }
    }

    /// The site's URL, or "" (a removed site has none).
    pub fn link(&self) -> &str {
        self.url.as_deref().unwrap_or("")
    }
}

fn minutes(d: chrono::TimeDelta) -> String {
    let m = d.num_minutes().max(0);
    if m < 1 {
        format!("{} s", d.num_seconds().max(0))
    } else if m < 120 {
        format!("{m} min")
    } else {
        format!("{} h {} min", m / 60, m % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(event: Event) -> Notice {
        Notice {
            event,
            site: "shop".into(),
            url: Some("https://shop.example/".into()),
            incident: 7,
            resolved_at: Some(Utc::now()),
            resolution: Some("recovered".into()),
            ..Notice::test("x", "host-1")
        }
    }

    #[test]
    fn headlines_say_the_state() {
        assert_eq!(notice(Event::Opened).headline(), "shop is down");
        assert_eq!(notice(Event::Reminder).headline(), "shop is still down");
        assert_eq!(notice(Event::Resolved).headline(), "shop is up again");
        let removed = Notice {
            resolution: Some("site removed".into()),
            ..notice(Event::Resolved)
        };
        assert_eq!(removed.headline(), "shop: incident closed (site removed)");
        assert_eq!(notice(Event::Opened).incident_key(), "sitewatch-incident-7");
        assert!(Notice::test("x", "h")
            .incident_key()
            .starts_with("sitewatch-test-"));
    }
}
