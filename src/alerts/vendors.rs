//! The HTTP requests each vendor's public API documents for a notification:
//! pure functions from a [`Notice`] to [`Call`]s, so that the payloads are
//! unit-tested without a network and the sender stays one loop.

use serde_json::{json, Value};
use url::Url;

use super::notice::{Event, Notice};

/// One HTTP POST to make. `url` may hold a secret (a webhook token, a bot
/// token): it is never logged.
#[derive(Debug, Clone)]
pub struct Call {
    pub url: String,
    /// Extra headers (`Content-Type` is JSON unless one is given here).
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Call {
    fn json(url: impl Into<String>, body: &Value) -> Call {
        Call {
            url: url.into(),
            headers: Vec::new(),
            body: body.to_string().into_bytes(),
        }
    }

    fn header(mut self, name: &'static str, value: String) -> Call {
        self.headers.push((name, value));
        self
    }
}

/// Red while down, green once recovered, grey when closed otherwise.
fn colour(n: &Notice) -> u32 {
    match (n.event, n.resolution.as_deref()) {
        (Event::Resolved, Some("recovered")) => 0x2e_b8_72,
        (Event::Resolved, _) => 0x99_99_99,
        (Event::Test, _) => 0x36_7f_d9,
        _ => 0xd9_30_25,
    }
}

/// Slack incoming webhook: `{"text"}` in Slack's mrkdwn
/// (<https://docs.slack.dev/messaging/sending-messages-using-incoming-webhooks>).
/// Mattermost and Rocket.Chat take the same body.
/// Text from a monitored server (the cause quotes its body) is escaped as
/// Slack asks (`&`, `<`, `>`: <https://docs.slack.dev/messaging/formatting-message-text#escaping-text>),
/// so it cannot ping `<!channel>` or disguise a link.
pub fn slack(webhook_url: &str, n: &Notice) -> Call {
    let n = &Notice {
        site: slack_escape(&n.site),
        url: n.url.as_deref().map(slack_escape),
        cause: slack_escape(&n.cause),
        resolution: n.resolution.as_deref().map(slack_escape),
        ..n.clone()
    };
    let site = format!("*{}*", n.site);
    let url = n.link();
    let since = n.opened_at.format("%Y-%m-%d %H:%M UTC");
    let text = match (n.event, n.resolved_at) {
        (Event::Resolved, Some(_)) if n.resolution.as_deref() != Some("recovered") => format!(
            ":white_circle: {site}: its incident is closed ({}); it was down since {since}",
            n.resolution.as_deref().unwrap_or("closed"),
        ),
        (Event::Resolved, Some(at)) => format!(
            ":large_green_circle: {site} is up again ({url}); it was down for {} min since {since}",
            (at - n.opened_at).num_minutes(),
        ),
        (Event::Reminder, _) => {
            format!(
                ":warning: {site} is still down ({url}) since {since}: {}",
                n.cause
            )
        }
        (Event::Test, _) => format!(":large_blue_circle: {}", n.detail()),
        (Event::Flapping, _) => format!(
            ":large_orange_circle: {site} is flapping ({url}): it keeps changing between up and \
             down; nothing more is sent until it holds one state"
        ),
        (Event::Settled, _) => format!(
            ":red_circle: {site} stopped flapping and is down ({url}) since {since}: {}",
            n.cause
        ),
        _ => format!(
            ":red_circle: {site} is down ({url}) since {since}: {}",
            n.cause
        ),
    };
    Call::json(webhook_url, &json!({ "text": text }))
}

/// Microsoft Teams Workflows webhook: a message with one Adaptive Card
/// attachment (<https://learn.microsoft.com/en-us/microsoftteams/platform/webhooks-and-connectors/how-to/connectors-using#send-adaptive-cards-using-an-incoming-webhook>,
/// card schema <https://adaptivecards.io/explorer/>).
pub fn teams(webhook_url: &str, n: &Notice) -> Call {
    let mut facts = vec![
        json!({"title": "Event", "value": n.event.as_str()}),
        json!({"title": "Since", "value": n.opened_at.to_rfc3339()}),
        json!({"title": "Cause", "value": n.cause}),
    ];
    if let Some(r) = &n.resolution {
        facts.push(json!({"title": "Resolution", "value": r}));
    }
    let mut card = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {"type": "TextBlock", "text": n.headline(), "weight": "Bolder", "size": "Medium",
             "wrap": true, "color": if n.is_problem() { "Attention" } else { "Good" }},
            {"type": "TextBlock", "text": n.detail(), "wrap": true},
            {"type": "FactSet", "facts": facts},
        ],
    });
    if !n.link().is_empty() {
        card["actions"] =
            json!([{"type": "Action.OpenUrl", "title": "Open site", "url": n.link()}]);
    }
    Call::json(
        webhook_url,
        &json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": null,
                "content": card,
            }],
        }),
    )
}

/// Discord Execute Webhook with one embed, mentions disabled
/// (<https://discord.com/developers/docs/resources/webhook#execute-webhook>,
/// embed limits <https://discord.com/developers/docs/resources/message#embed-object-embed-limits>).
///
/// Markdown in the text is escaped (a cause quoting `[login](https://evil)`
/// would render as a link in the embed).
pub fn discord(webhook_url: &str, n: &Notice) -> Call {
    let mut embed = json!({
        "title": cut(&markdown_escape(&n.headline()), 256),
        "description": cut(&markdown_escape(&n.detail()), 4096),
        "color": colour(n),
        "timestamp": n.resolved_at.unwrap_or(n.opened_at).to_rfc3339(),
        "fields": [
            {"name": "Event", "value": n.event.as_str(), "inline": true},
            {"name": "Failed checks", "value": n.failures.to_string(), "inline": true},
        ],
        "footer": {"text": format!("sitewatch · {}", n.sent_by)},
    });
    if !n.link().is_empty() {
        embed["url"] = json!(n.link());
    }
    Call::json(
        webhook_url,
        &json!({
            "username": "sitewatch",
            "embeds": [embed],
            "allowed_mentions": {"parse": []},
        }),
    )
}

/// PagerDuty Events API v2: `trigger` on open and reminder (PagerDuty folds
/// a trigger with the same `dedup_key` into the open alert's log), `resolve`
/// on resolve (<https://developer.pagerduty.com/docs/events-api-v2/trigger-events/>,
/// <https://developer.pagerduty.com/docs/events-api-v2/resolve-events/>).
/// A test triggers and then resolves its own key.
pub fn pagerduty(url: &Url, routing_key: &str, severity: &str, n: &Notice) -> Vec<Call> {
    let trigger = || {
        let mut body = json!({
            "routing_key": routing_key,
            "event_action": "trigger",
            "dedup_key": n.incident_key(),
            "client": "sitewatch",
            "payload": {
                "summary": cut(&format!("{}: {}", n.headline(), n.cause), 1024),
                "source": if n.link().is_empty() { n.site.as_str() } else { n.link() },
                "severity": if n.event == Event::Test { "info" } else { severity },
                "timestamp": n.opened_at.to_rfc3339(),
                "component": n.site,
                "class": "availability",
                "custom_details": {
                    "event": n.event.as_str(),
                    "cause": n.cause,
                    "failures": n.failures,
                    "first_failing_check": n.first_failing_check,
                    "last_failing_check": n.last_failing_check,
                    "sent_by": n.sent_by,
                },
            },
        });
        if !n.link().is_empty() {
            body["links"] = json!([{"href": n.link(), "text": n.site}]);
        }
        Call::json(url.as_str(), &body)
    };
    let resolve = || {
        Call::json(
            url.as_str(),
            &json!({
                "routing_key": routing_key,
                "event_action": "resolve",
                "dedup_key": n.incident_key(),
            }),
        )
    };
    match n.event {
        // A trigger on an open dedup key adds to its incident.
        Event::Opened | Event::Reminder | Event::Flapping | Event::Settled => vec![trigger()],
        Event::Resolved => vec![resolve()],
        Event::Test => vec![trigger(), resolve()],
    }
}

/// Opsgenie Alert API: create with the incident key as `alias`, a note for a
/// reminder, close by alias on resolve; authenticated by `GenieKey`
/// (<https://docs.opsgenie.com/docs/alert-api>). `message` is cut to 130
/// characters and `description` to 15,000, the documented limits. A test
/// creates and closes its own alias.
pub fn opsgenie(base: &Url, api_key: &str, priority: &str, n: &Notice) -> Vec<Call> {
    let alias = n.incident_key();
    let auth = format!("GenieKey {api_key}");
    // Under the base's own path, so a proxy prefix is kept.
    let root = base.as_str().trim_end_matches('/');
    let at = |path: &str| format!("{root}{path}");
    let by_alias = |action: &str| format!("{root}/v2/alerts/{alias}/{action}?identifierType=alias");
    let note = json!({"user": "sitewatch", "source": n.sent_by, "note": cut(&n.detail(), 25000)});
    let create = Call::json(
        at("/v2/alerts"),
        &json!({
            "message": cut(&n.headline(), 130),
            "alias": alias,
            "description": cut(&format!("{}\n{}", n.detail(), n.link()), 15000),
            "tags": ["sitewatch", n.event.as_str()],
            "details": {"site": n.site, "url": n.link(), "cause": n.cause,
                        "failures": n.failures.to_string()},
            "entity": n.site,
            "source": n.sent_by,
            "priority": if n.event == Event::Test { "P5" } else { priority },
        }),
    )
    .header("Authorization", auth.clone());
    let close = Call::json(by_alias("close"), &note).header("Authorization", auth.clone());
    match n.event {
        // Opsgenie dedups a create on an open alias: a flapping incident
        // that opened as such gets its alert, one that was open gets a
        // count.
        Event::Opened | Event::Flapping => vec![create],
        Event::Reminder | Event::Settled => {
            vec![Call::json(by_alias("notes"), &note).header("Authorization", auth)]
        }
        Event::Resolved => vec![close],
        Event::Test => vec![create, close],
    }
}

/// Telegram Bot API `sendMessage` with HTML formatting
/// (<https://core.telegram.org/bots/api#sendmessage>; the text is 1–4096
/// characters, and `<`, `>`, `&` are escaped as the formatting options
/// require).
pub fn telegram(base: &Url, bot_token: &str, chat_id: &Value, n: &Notice) -> Call {
    let mut text = format!("<b>{}</b>\n{}", html(&n.headline()), html(&n.detail()));
    if !n.link().is_empty() {
        text.push('\n');
        text.push_str(&html(n.link()));
    }
    let url = format!(
        "{}/bot{bot_token}/sendMessage",
        base.as_str().trim_end_matches('/')
    );
    Call::json(
        url,
        &json!({
            "chat_id": chat_id,
            "text": cut(&text, 4096),
            "parse_mode": "HTML",
            "link_preview_options": {"is_disabled": true},
        }),
    )
}

/// ntfy, published as JSON to the server's root
/// (<https://docs.ntfy.sh/publish/#publish-as-json>), with an access token
/// as `Authorization: Bearer` when one is set
/// (<https://docs.ntfy.sh/publish/#access-tokens>). A recovery is sent at
/// the default priority (3).
pub fn ntfy(server: &Url, topic: &str, token: Option<&str>, priority: u8, n: &Notice) -> Call {
    let mut body = json!({
        "topic": topic,
        "title": n.headline(),
        "message": n.detail(),
        "priority": if n.is_problem() { priority } else { 3 },
        "tags": [if n.is_problem() { "rotating_light" } else { "white_check_mark" }, "sitewatch"],
    });
    if !n.link().is_empty() {
        body["click"] = json!(n.link());
    }
    let call = Call::json(server.as_str(), &body);
    match token {
        Some(t) => call.header("Authorization", format!("Bearer {t}")),
        None => call,
    }
}

/// The generic webhook's default body: the event and its incident as JSON.
pub fn event_json(n: &Notice) -> Value {
    json!({
        "event": n.event.as_str(),
        "site": n.site,
        "url": n.url,
        "summary": n.headline(),
        "detail": n.detail(),
        "incident": {
            "id": n.incident,
            "opened_at": n.opened_at,
            "resolved_at": n.resolved_at,
            "resolution": n.resolution,
            "cause": n.cause,
            "failures": n.failures,
            "first_failing_check": n.first_failing_check,
            "last_failing_check": n.last_failing_check,
        },
        "delivery": n.outbox,
        "sent_by": n.sent_by,
    })
}

/// `&`, `<`, `>` and `"` as HTML entities.
pub fn html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// `&`, `<`, `>` as Slack's entities.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Markdown's punctuation backslash-escaped (Discord's flavour).
fn markdown_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(
            c,
            '\\' | '*' | '_' | '~' | '`' | '|' | '>' | '[' | ']' | '(' | ')'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// At most `max` characters, the last one an ellipsis when cut.
pub fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever a server put in the cause (and whatever the site is called),
    /// every JSON channel's body is JSON that names the site.
    #[test]
    fn hostile_causes_make_valid_json_on_every_channel() {
        let base = Url::parse("http://127.0.0.1:9/").unwrap();
        for n in Notice::hostile_samples() {
            let mut calls = vec![
                slack("http://127.0.0.1:9/s", &n),
                teams("http://127.0.0.1:9/t", &n),
                discord("http://127.0.0.1:9/d", &n),
                telegram(&base, "1:tok", &serde_json::json!(-1), &n),
            ];
            calls.extend(pagerduty(&base, "r", "critical", &n));
            calls.extend(opsgenie(&base, "k", "P1", &n));
            calls.push(
                super::super::webhook::call(
                    "http://127.0.0.1:9/h",
                    None,
                    None,
                    "application/json",
                    &n,
                    0,
                )
                .unwrap(),
            );
            calls.push(
                super::super::webhook::call(
                    "http://127.0.0.1:9/h",
                    None,
                    Some(r#"{"text": "{{ summary }}", "detail": "{{ detail }}"}"#),
                    "application/json",
                    &n,
                    0,
                )
                .unwrap(),
            );
            for c in calls {
                let v: Value = serde_json::from_slice(&c.body)
                    .unwrap_or_else(|e| panic!("{} ({:?}): {e}", c.url, n.event));
                let text = v.to_string();
                // PagerDuty's resolve names its trigger by dedup_key only,
                // as its Events API v2 documents.
                let resolve = v["event_action"] == "resolve";
                assert!(
                    resolve || text.contains("quoted"),
                    "{}: the site is not named: {text:.300}",
                    c.url
                );
            }
        }
    }

    fn opened() -> Notice {
        Notice {
            event: Event::Opened,
            site: "shop".into(),
            url: Some("https://shop.example/".into()),
            incident: 42,
            cause: "HTTP 503 <b>".into(),
            ..Notice::test("c", "host-1")
        }
    }

    fn body(c: &Call) -> Value {
        serde_json::from_slice(&c.body).unwrap()
    }

    #[test]
    fn pagerduty_triggers_and_resolves_by_the_incident_key() {
        let url = Url::parse("https://events.pagerduty.com/v2/enqueue").unwrap();
        let t = body(&pagerduty(&url, "R0UT1NG", "critical", &opened())[0]);
        assert_eq!(t["event_action"], "trigger");
        assert_eq!(t["dedup_key"], "sitewatch-incident-42");
        assert_eq!(t["payload"]["severity"], "critical");
        assert_eq!(t["payload"]["source"], "https://shop.example/");
        let resolved = Notice {
            event: Event::Resolved,
            ..opened()
        };
        let r = body(&pagerduty(&url, "R0UT1NG", "critical", &resolved)[0]);
        assert_eq!(r["event_action"], "resolve");
        assert_eq!(r["dedup_key"], t["dedup_key"]);
        assert!(r.get("payload").is_none());
    }

    #[test]
    fn opsgenie_closes_and_notes_by_alias() {
        let base = Url::parse("https://api.opsgenie.com").unwrap();
        let c = &opsgenie(&base, "k", "P2", &opened())[0];
        assert_eq!(c.url, "https://api.opsgenie.com/v2/alerts");
        assert_eq!(c.headers, vec![("Authorization", "GenieKey k".to_owned())]);
        assert_eq!(body(c)["alias"], "sitewatch-incident-42");
        let remind = Notice {
            event: Event::Reminder,
            ..opened()
        };
        assert_eq!(
            opsgenie(&base, "k", "P2", &remind)[0].url,
            "https://api.opsgenie.com/v2/alerts/sitewatch-incident-42/notes?identifierType=alias"
        );
        let long = Notice {
            site: "x".repeat(300),
            ..opened()
        };
        let m = body(&opsgenie(&base, "k", "P2", &long)[0])["message"].clone();
        assert_eq!(m.as_str().unwrap().chars().count(), 130);
    }

    #[test]
    fn telegram_escapes_html_and_puts_the_token_in_the_path() {
        let base = Url::parse("https://api.telegram.org").unwrap();
        let c = telegram(&base, "123:ABC", &json!(-100), &opened());
        assert_eq!(c.url, "https://api.telegram.org/bot123:ABC/sendMessage");
        let b = body(&c);
        assert!(b["text"].as_str().unwrap().contains("HTTP 503 &lt;b&gt;"));
        assert_eq!(b["chat_id"], -100);
    }

    #[test]
    fn server_text_cannot_ping_or_disguise_a_link() {
        let hostile = Notice {
            cause: "got <!channel> <https://evil.example|re-login> & [x](https://evil)".into(),
            ..opened()
        };
        let text = body(&slack("http://x/", &hostile))["text"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(text.contains("&lt;!channel&gt; &lt;https://evil.example|re-login&gt; &amp;"));
        assert!(!text.contains("<!channel>"));
        let d = body(&discord("http://x/", &hostile));
        let desc = d["embeds"][0]["description"].as_str().unwrap();
        assert!(desc.contains(r"\[x\]\(https://evil\)"), "{desc}");
    }

    #[test]
    fn cut_keeps_whole_characters() {
        assert_eq!(cut("ééé", 2), "é…");
        assert_eq!(cut("ab", 2), "ab");
    }
}
