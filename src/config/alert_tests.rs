//! Channel tables: every kind parses, and each mistake names its field.

use std::collections::HashMap;

use super::super::{load_with_env, ConfigErrors, Settings};
use super::{SmtpTls, Target};

fn load(text: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigErrors> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sitewatch.toml");
    std::fs::write(&path, text).unwrap();
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    load_with_env(&path, env)
}

const EVERY_KIND: &str = r#"
[alerts]
default_channels = ["chat"]
[[alerts.channels]]
name = "mail"
kind = "email"
smtp_host = "smtp.example.com"
smtp_tls = "tls"
username = "ops"
password_env = "SMTP_PASSWORD"
from = "sitewatch <sitewatch@example.com>"
to = ["ops@example.com", "Oncall <oncall@example.com>"]
[[alerts.channels]]
name = "chat"
kind = "slack"
webhook_url = "https://hooks.slack.com/services/T/B/X"
[[alerts.channels]]
name = "teams"
kind = "teams"
webhook_url = "https://example.webhook.office.com/x"
[[alerts.channels]]
name = "discord"
kind = "discord"
webhook_url = "https://discord.com/api/webhooks/1/x"
[[alerts.channels]]
name = "pager"
kind = "pagerduty"
routing_key = "R0UTINGKEY"
severity = "error"
[[alerts.channels]]
name = "genie"
kind = "opsgenie"
api_key = "k"
url = "https://api.eu.opsgenie.com"
priority = "P2"
[[alerts.channels]]
name = "tg"
kind = "telegram"
bot_token = "123:ABC"
chat_id = -1001
[[alerts.channels]]
name = "push"
kind = "ntfy"
topic = "ops"
priority = "high"
[[alerts.channels]]
name = "hook"
kind = "webhook"
url = "https://hooks.example/in"
secret = "shared"
template = '{"text": {{ summary | tojson }}}'
[[sites]]
name = "paged"
url = "https://a.example"
alert_channels = ["pager", "mail"]
[[sites]]
name = "plain"
url = "https://b.example"
"#;

#[test]
fn every_kind_parses_and_sites_are_routed() {
    let s = load(EVERY_KIND, &[("SMTP_PASSWORD", "pw")]).unwrap();
    let kinds: Vec<&str> = s.alerts.channels.iter().map(|c| c.kind()).collect();
    assert_eq!(
        kinds,
        [
            "email",
            "slack",
            "teams",
            "discord",
            "pagerduty",
            "opsgenie",
            "telegram",
            "ntfy",
            "webhook"
        ]
    );
    let Target::Email(e) = &s.alerts.channels[0].target else {
        panic!("not email");
    };
    assert_eq!((e.smtp_port, e.smtp_tls), (465, SmtpTls::Tls));
    assert_eq!(e.password.as_ref().unwrap().expose(), "pw");
    assert_eq!(s.alerts.route(Some(&s.sites[0])), ["pager", "mail"]);
    assert_eq!(s.alerts.route(Some(&s.sites[1])), ["chat"]);
    // A removed site (not in the config) goes to the default channels.
    assert_eq!(s.alerts.route(None), ["chat"]);
    assert!(!format!("{:?}", s.alerts).contains("R0UTINGKEY"));
}

#[test]
fn without_default_channels_every_channel_is_the_default() {
    let s = load(
        "[[alerts.channels]]\nname = \"a\"\nkind = \"slack\"\nwebhook_url = \"https://x/\"\n\
         [[alerts.channels]]\nname = \"b\"\nkind = \"ntfy\"\ntopic = \"t\"\n",
        &[],
    )
    .unwrap();
    assert_eq!(s.alerts.default_channels, ["a", "b"]);
}

#[test]
fn the_webhook_url_shorthand_is_the_default_channel() {
    let s = load(
        "[alerts]\nwebhook_url = \"http://127.0.0.1:9/hook\"\nformat = \"slack\"\n",
        &[],
    )
    .unwrap();
    assert_eq!(s.alerts.channels.len(), 1);
    assert_eq!(s.alerts.channels[0].name, "default");
    assert_eq!(s.alerts.channels[0].kind(), "slack");
    assert_eq!(s.alerts.default_channels, ["default"]);
}

/// Every problem of `text`, as printed.
fn problems(text: &str, env: &[(&str, &str)]) -> String {
    load(text, env).unwrap_err().to_string()
}

#[test]
fn each_mistake_names_the_channel_and_the_key() {
    let p = problems(
        r#"
[[alerts.channels]]
name = "pager"
kind = "pagerduty"
chat_id = 5
[[alerts.channels]]
name = "mail"
kind = "email"
smtp_host = "smtp.example.com"
from = "not an address"
to = []
password_env = "NOT_SET"
username = "u"
[[alerts.channels]]
name = "x"
kind = "carrier-pigeon"
[[alerts.channels]]
name = "pager"
kind = "slack"
webhook_url = "ftp://secret-token@x"
webhook_url_file = "/nonexistent"
"#,
        &[],
    );
    for needle in [
        "field `alerts.channels[0].chat_id`: not a key of kind pagerduty",
        "field `alerts.channels[0].routing_key`: required",
        "field `alerts.channels[1].from`: \"not an address\" is not a mailbox",
        "field `alerts.channels[1].to`: required",
        "field `alerts.channels[1].password_env`: the environment variable NOT_SET is not set",
        "field `alerts.channels[2].kind`: unknown kind \"carrier-pigeon\"",
        "field `alerts.channels[3].webhook_url`: set one of",
    ] {
        assert!(p.contains(needle), "{needle:?} not in:\n{p}");
    }
    assert!(!p.contains("secret-token"), "a secret was echoed:\n{p}");
    // The password failed on its own: no second, misleading problem.
    assert!(!p.contains("go together"), "{p}");
}

#[test]
fn a_site_naming_an_unknown_channel_is_refused_with_its_name() {
    let p = problems(
        r#"
[[alerts.channels]]
name = "chat"
kind = "slack"
webhook_url = "https://x/"
[alerts]
default_channels = ["nope"]
[[sites]]
name = "shop"
url = "https://shop.example"
alert_channels = ["pager"]
"#,
        &[],
    );
    assert!(p.contains("site \"shop\""), "{p}");
    assert!(
        p.contains("field `alert_channels`: no channel named \"pager\""),
        "{p}"
    );
    assert!(p.contains("known: chat"), "{p}");
    assert!(
        p.contains("field `alerts.default_channels`: no channel named \"nope\""),
        "{p}"
    );
}

#[test]
fn a_bad_template_is_refused_at_load() {
    let p = problems(
        "[[alerts.channels]]\nname = \"h\"\nkind = \"webhook\"\nurl = \"https://x/\"\n\
         template = \"{{ unclosed\"\n",
        &[],
    );
    assert!(
        p.contains("field `alerts.channels[0].template`: not a valid template"),
        "{p}"
    );
}

#[test]
fn unsafe_or_impossible_channels_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let text = format!(
        r#"
[alerts]
max_backoff = "0s"
[[alerts.channels]]
name = "a b"
kind = "ntfy"
topic = "t"
priority_file = "/nonexistent"
[[alerts.channels]]
name = "relay"
kind = "email"
smtp_host = "smtp.example.com"
smtp_tls = "none"
username = "u"
password = "p"
from = "a@example.com"
to = "b@example.com"
[[alerts.channels]]
name = "tg"
kind = "telegram"
bot_token_file = "{}"
chat_id = 1
"#,
        empty.display()
    );
    let p = problems(&text, &[("EMPTY", "")]);
    for needle in [
        "field `alerts.max_backoff`: must be at least 1s",
        "field `alerts.channels[0].name`: at most 64 of",
        "field `alerts.channels[0].priority_file`: not a key of kind ntfy",
        "field `alerts.channels[1].smtp_tls`: \"none\" would send the password in cleartext",
        "field `alerts.channels[1].to`: expected a list of addresses",
        "field `alerts.channels[2].bot_token_file`:",
    ] {
        assert!(p.contains(needle), "{needle:?} not in:\n{p}");
    }
    assert!(p.contains("is empty"), "{p}");
}
