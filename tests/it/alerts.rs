//! Alert channels end to end: a real incident (a target that fails, then
//! recovers) goes through the pipeline, and every channel kind gets its
//! opened, reminder and resolved notifications in the shape its vendor
//! documents; a failing channel retries on its own; `sitewatch alert test`
//! prints the answer and never a secret.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sitewatch::alerts::webhook;
use sitewatch::daemon;
use tokio_util::sync::CancellationToken;

use crate::incidents::flipping_target;
use crate::receivers::{loopback_certificate, Received, Smtp, Vendors};
use crate::support::{count, no_reloads, wait_for, TestConfig, TestDb};

pub const BOT_TOKEN: &str = "123456:TEST-bot-token-abc";
const ROUTING_KEY: &str = "R0UTING-KEY-32-characters-long00";
const GENIE_KEY: &str = "genie-key-0b6e4c1a";
const NTFY_TOKEN: &str = "tk_ntfy_token_secret";
const HOOK_SECRET: &str = "whsec_shared_secret";
pub const SMTP_PASSWORD: &str = "smtp-pass-word";
/// The token part of a webhook URL that a receiver echoes back.
const ECHOED: &str = "SLACKSECRETXYZ123";

/// Every secret of the channels below.
const SECRETS: [&str; 6] = [
    BOT_TOKEN,
    ROUTING_KEY,
    GENIE_KEY,
    NTFY_TOKEN,
    HOOK_SECRET,
    SMTP_PASSWORD,
];

/// One channel of each kind, all on the local receivers.
pub fn every_channel(v: &Vendors, smtp_port: u16, ca: &std::path::Path, mode: &str) -> String {
    format!(
        r#"
[[alerts.channels]]
name = "mail"
kind = "email"
smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
smtp_tls = "{mode}"
username = "alerts"
password = "{SMTP_PASSWORD}"
from = "sitewatch <sitewatch@example.test>"
to = ["ops@example.test"]
tls_ca_file = "{ca}"

[[alerts.channels]]
name = "chat"
kind = "slack"
webhook_url = "{slack}"

[[alerts.channels]]
name = "teams"
kind = "teams"
webhook_url = "{teams}"

[[alerts.channels]]
name = "discord"
kind = "discord"
webhook_url = "{discord}"

[[alerts.channels]]
name = "pager"
kind = "pagerduty"
routing_key = "{ROUTING_KEY}"
url = "{pagerduty}"

[[alerts.channels]]
name = "genie"
kind = "opsgenie"
api_key = "{GENIE_KEY}"
url = "{opsgenie}"
priority = "P2"

[[alerts.channels]]
name = "telegram"
kind = "telegram"
bot_token = "{BOT_TOKEN}"
chat_id = -1001
url = "{telegram}"

[[alerts.channels]]
name = "push"
kind = "ntfy"
url = "{ntfy}"
topic = "ops-alerts"
token = "{NTFY_TOKEN}"
priority = "high"

[[alerts.channels]]
name = "hook"
kind = "webhook"
url = "{hook}"
secret = "{HOOK_SECRET}"
"#,
        ca = ca.display(),
        slack = v.url("/slack/T000/B000/XXXX"),
        teams = v.url("/teams/workflows/1"),
        discord = v.url("/discord/1/tok"),
        pagerduty = v.url("/pagerduty/v2/enqueue"),
        opsgenie = v.url("/opsgenie"),
        telegram = v.url("/telegram"),
        ntfy = v.url("/ntfy"),
        hook = v.url("/hook"),
    )
}

/// The path each HTTP channel above posts under.
pub const PREFIXES: [(&str, &str); 8] = [
    ("chat", "/slack"),
    ("teams", "/teams"),
    ("discord", "/discord"),
    ("pager", "/pagerduty"),
    ("genie", "/opsgenie"),
    ("telegram", "/telegram"),
    ("push", "/ntfy"),
    ("hook", "/hook"),
];

/// The event a received notification tells of, read the way its reader
/// would (the text, the action, the path), checking the vendor's documented
/// shape on the way.
fn event_of(channel: &str, r: &Received) -> String {
    let b = r.json();
    let words = |t: &str| -> String {
        if t.contains("still down") {
            "reminder"
        } else if t.contains("is down") {
            "opened"
        } else if t.contains("up again") {
            "resolved"
        } else {
            panic!("{channel}: no event in {t:?}")
        }
        .into()
    };
    assert_eq!(r.header("content-type"), "application/json", "{channel}");
    match channel {
        "chat" => words(b["text"].as_str().expect("slack: text")),
        "teams" => {
            assert_eq!(b["type"], "message");
            let a = &b["attachments"][0];
            assert_eq!(a["contentType"], "application/vnd.microsoft.card.adaptive");
            assert_eq!(a["content"]["type"], "AdaptiveCard");
            assert!(a["content"]["version"].is_string());
            assert_eq!(a["content"]["body"][0]["type"], "TextBlock");
            words(a["content"]["body"][0]["text"].as_str().unwrap())
        }
        "discord" => {
            let e = &b["embeds"][0];
            assert!(e["title"].as_str().unwrap().chars().count() <= 256);
            assert!(e["color"].is_u64());
            chrono::DateTime::parse_from_rfc3339(e["timestamp"].as_str().unwrap()).unwrap();
            assert_eq!(b["allowed_mentions"]["parse"], serde_json::json!([]));
            words(e["title"].as_str().unwrap())
        }
        "pager" => {
            assert_eq!(b["routing_key"], ROUTING_KEY);
            match b["event_action"].as_str().unwrap() {
                "trigger" => {
                    let p = &b["payload"];
                    for key in ["summary", "source", "severity"] {
                        assert!(p[key].is_string(), "pagerduty payload.{key}: {b}");
                    }
                    assert_eq!(p["severity"], "critical");
                    p["custom_details"]["event"].as_str().unwrap().into()
                }
                "resolve" => "resolved".into(),
                other => panic!("pagerduty event_action {other}"),
            }
        }
        "genie" => {
            assert_eq!(r.header("authorization"), format!("GenieKey {GENIE_KEY}"));
            if r.path == "/opsgenie/v2/alerts" {
                assert!(b["message"].as_str().unwrap().chars().count() <= 130);
                assert_eq!(b["priority"], "P2");
                assert!(b["alias"]
                    .as_str()
                    .unwrap()
                    .starts_with("sitewatch-incident-"));
                return "opened".into();
            }
            assert_eq!(r.query.as_deref(), Some("identifierType=alias"));
            assert!(b["note"].is_string());
            match r.path.rsplit('/').next().unwrap() {
                "notes" => "reminder".into(),
                "close" => "resolved".into(),
                other => panic!("opsgenie action {other}"),
            }
        }
        "telegram" => {
            assert_eq!(r.path, format!("/telegram/bot{BOT_TOKEN}/sendMessage"));
            assert_eq!(b["chat_id"], -1001);
            assert_eq!(b["parse_mode"], "HTML");
            words(b["text"].as_str().unwrap())
        }
        "push" => {
            assert_eq!(r.header("authorization"), format!("Bearer {NTFY_TOKEN}"));
            assert_eq!(b["topic"], "ops-alerts");
            assert!(b["message"].is_string());
            assert!((1..=5).contains(&b["priority"].as_u64().unwrap()));
            words(b["title"].as_str().unwrap())
        }
        "hook" => b["event"].as_str().unwrap().into(),
        other => panic!("no channel {other}"),
    }
}

/// The receiver's side of the webhook signature: it verifies with the
/// shared secret, and neither a changed body nor an old timestamp passes.
fn check_signature(r: &Received) {
    let sig = r.header(webhook::SIGNATURE_HEADER);
    let now = chrono::Utc::now().timestamp();
    assert_eq!(webhook::verify(HOOK_SECRET, sig, &r.body, now, 300), Ok(()));
    // The same check written out, as a receiver in another language would.
    let (t, v1) = sig.split_once(",v1=").unwrap();
    let t = t.strip_prefix("t=").unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(HOOK_SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&r.body);
    assert_eq!(hex::encode(mac.finalize().into_bytes()), v1);
    let mut tampered = r.body.clone();
    tampered.extend_from_slice(b" ");
    assert_eq!(
        webhook::verify(HOOK_SECRET, sig, &tampered, now, 300),
        Err(webhook::SignatureError::Mismatch)
    );
    assert!(matches!(
        webhook::verify(HOOK_SECRET, sig, &r.body, now + 3_600, 300),
        Err(webhook::SignatureError::Stale(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_channel_kind_gets_the_open_reminder_and_resolve_of_a_real_incident() {
    let db = TestDb::create().await;
    let healthy = Arc::new(AtomicBool::new(true));
    let target = flipping_target(healthy.clone()).await;
    let vendors = Vendors::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = loopback_certificate(dir.path());
    let smtp = Smtp::start("starttls", &cert, &key, "alerts", SMTP_PASSWORD);
    let cfg = TestConfig::new(
        &db,
        &format!(
            r#"
[incidents]
settle = "1s"
[alerts]
remind_every = "2s"
{channels}
[[sites]]
name = "flaky"
url = "http://{target}/flip"
interval = "1s"
timeout = "500ms"
"#,
            channels = every_channel(&vendors, smtp.port, &ca, "starttls"),
        ),
    );
    let mut settings = cfg.load();
    // Nine channel loops beside the stages.
    settings.postgres.pool_size = 16;
    let stop = CancellationToken::new();
    let run = tokio::spawn(daemon::run(settings, &[], stop.clone(), no_reloads()));
    let client = db.client().await;
    first_passing_check(&client).await;
    healthy.store(false, Ordering::SeqCst);
    let delivered_to_all = |event: &'static str| {
        let client = &client;
        async move {
            let sql = format!(
                "SELECT count(DISTINCT channel) FROM alert_outbox
                 WHERE event = '{event}' AND delivered_at IS NOT NULL"
            );
            count(client, &sql).await == 9
        }
    };
    wait_for(
        "a reminder on every channel",
        Duration::from_secs(90),
        || delivered_to_all("reminder"),
    )
    .await;
    healthy.store(true, Ordering::SeqCst);
    wait_for(
        "the resolve on every channel",
        Duration::from_secs(60),
        || delivered_to_all("resolved"),
    )
    .await;
    wait_for("nothing left to send", Duration::from_secs(30), || async {
        count(
            &client,
            "SELECT count(*) FROM alert_outbox WHERE delivered_at IS NULL",
        )
        .await
            == 0
    })
    .await;
    stop.cancel();
    run.await.unwrap().unwrap();

    let incident: i64 = client
        .query_one("SELECT id FROM incidents", &[])
        .await
        .unwrap()
        .get(0);
    let rows = client
        .query(
            "SELECT channel, event, attempts FROM alert_outbox ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let sent = |channel: &str| -> Vec<String> {
        rows.iter()
            .filter(|r| r.get::<_, String>(0) == channel)
            .map(|r| {
                assert_eq!(r.get::<_, i32>(2), 1, "{channel}: one attempt each");
                r.get(1)
            })
            .collect()
    };
    for (channel, prefix) in PREFIXES {
        let expected = sent(channel);
        assert_eq!(expected.first().map(String::as_str), Some("opened"));
        assert_eq!(expected.last().map(String::as_str), Some("resolved"));
        assert!(
            expected.iter().any(|e| e == "reminder"),
            "{channel}: {expected:?}"
        );
        let got: Vec<String> = vendors
            .accepted(prefix)
            .iter()
            .map(|r| event_of(channel, r))
            .collect();
        assert_eq!(got, expected, "{channel}: once each, in order");
    }
    // PagerDuty and Opsgenie: one key for the whole incident.
    let keys: Vec<String> = vendors
        .accepted("/pagerduty")
        .iter()
        .map(|r| r.json()["dedup_key"].as_str().unwrap().to_owned())
        .collect();
    assert!(keys
        .iter()
        .all(|k| *k == format!("sitewatch-incident-{incident}")));
    let alias = format!("/opsgenie/v2/alerts/sitewatch-incident-{incident}/");
    assert!(vendors
        .accepted("/opsgenie")
        .iter()
        .skip(1)
        .all(|r| r.path.starts_with(&alias)));
    for r in vendors.accepted("/hook") {
        check_signature(&r);
    }

    let mails = smtp.mails();
    let subjects: Vec<String> = mails
        .iter()
        .map(|m| {
            assert!(m.tls, "STARTTLS before the message");
            assert_eq!(m.user.as_deref(), Some("alerts"));
            assert_eq!(m.mail_from, "sitewatch@example.test");
            assert_eq!(m.rcpt_tos, ["ops@example.test"]);
            assert!(m.data.contains("multipart/alternative"));
            assert!(m.data.contains("text/plain") && m.data.contains("text/html"));
            let subject = m.data.lines().find(|l| l.starts_with("Subject:")).unwrap();
            if !subject.contains("is down") {
                assert!(m.data.contains(&format!(
                    "In-Reply-To: <sitewatch-incident-{incident}@sitewatch>"
                )));
            }
            subject.to_owned()
        })
        .collect();
    let expected = sent("mail");
    assert_eq!(subjects.len(), expected.len(), "{subjects:?}");
    assert!(
        subjects[0].contains("[sitewatch] flaky is down"),
        "{subjects:?}"
    );
    assert!(
        subjects.last().unwrap().contains("flaky is up again"),
        "{subjects:?}"
    );

    // Nothing the channels answered, as stored, holds a secret.
    let stored: String = client
        .query_one(
            "SELECT coalesce(string_agg(coalesce(answer, '') || coalesce(error, ''), ' '), '')
             FROM alert_deliveries",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    for s in SECRETS {
        assert!(
            !stored.contains(s),
            "a secret in alert_deliveries: {stored}"
        );
    }
}

/// Waits for the first `up` row: the pipeline runs and the site is well.
async fn first_passing_check(client: &tokio_postgres::Client) {
    wait_for("a passing check", Duration::from_secs(60), || async {
        count(
            client,
            "SELECT count(*) FROM check_results WHERE outcome = 'up'",
        )
        .await
            > 0
    })
    .await;
}

/// Runs `sitewatch alert test` for `channel`; (exit code, stdout, stderr).
fn alert_test(config: &std::path::Path, channel: &str) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sitewatch"))
        .args(["alert", "test", "--channel", channel, "--config"])
        .arg(config)
        .env("TEST_SMTP_PASSWORD", SMTP_PASSWORD)
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_test_prints_the_answer_and_never_a_secret() {
    let vendors = Vendors::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = loopback_certificate(dir.path());
    // Implicit TLS this time (the pipeline test uses STARTTLS).
    let smtp = Smtp::start("tls", &cert, &key, "alerts", SMTP_PASSWORD);
    let config = dir.path().join("sitewatch.toml");
    let channels = every_channel(&vendors, smtp.port, &ca, "tls")
        // The password from the environment, as a systemd unit would give it.
        .replace(
            &format!("password = \"{SMTP_PASSWORD}\""),
            "password_env = \"TEST_SMTP_PASSWORD\"",
        );
    // Takes connections (the kernel's backlog) and never says a word.
    let stalled = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let wrong = format!(
        r#"
[alerts]
timeout = "1s"
[[alerts.channels]]
name = "wrong-token"
kind = "telegram"
bot_token = "999:{BOT_TOKEN}"
chat_id = 1
url = "{tg}"

[[alerts.channels]]
name = "echo"
kind = "slack"
webhook_url = "{echo}"

[[alerts.channels]]
name = "stalled"
kind = "email"
smtp_host = "127.0.0.1"
smtp_port = {stalled}
smtp_tls = "none"
from = "sitewatch@example.test"
to = ["ops@example.test"]

[[alerts.channels]]
name = "wrong-password"
kind = "email"
smtp_host = "127.0.0.1"
smtp_port = {port}
smtp_tls = "tls"
username = "alerts"
password = "not-the-{SMTP_PASSWORD}"
from = "sitewatch@example.test"
to = ["ops@example.test"]
tls_ca_file = "{ca}"
"#,
        tg = vendors.url("/telegram"),
        echo = vendors.url(&format!("/echo/services/T000/B000/{ECHOED}")),
        stalled = stalled.local_addr().unwrap().port(),
        port = smtp.port,
        ca = ca.display(),
    );
    std::fs::write(&config, format!("{channels}{wrong}")).unwrap();

    let (code, out, err) = alert_test(&config, "mail");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("channel mail (email): delivered"), "{out}");
    assert!(
        out.contains("250 2.0.0 accepted by the test receiver"),
        "{out}"
    );
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1);
    assert!(mails[0].tls && mails[0].user.as_deref() == Some("alerts"));
    assert!(mails[0]
        .data
        .contains("Subject: [sitewatch] sitewatch test notification"));

    let (code, out, err) = alert_test(&config, "pager");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("HTTP 202"), "{out}");
    // A trigger and its resolve, under a key of the test's own.
    let pd: Vec<serde_json::Value> = vendors
        .accepted("/pagerduty")
        .iter()
        .map(|r| r.json())
        .collect();
    assert_eq!(pd.len(), 2);
    assert_eq!(
        (
            pd[0]["event_action"].as_str(),
            pd[1]["event_action"].as_str()
        ),
        (Some("trigger"), Some("resolve"))
    );
    assert_eq!(pd[0]["dedup_key"], pd[1]["dedup_key"]);
    assert!(pd[0]["dedup_key"]
        .as_str()
        .unwrap()
        .starts_with("sitewatch-test-"));

    let (code, out, err) = alert_test(&config, "wrong-token");
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("not delivered: HTTP 401"), "{err}");
    // Telegram's answer named the URL, which holds the token: redacted.
    assert!(
        err.contains("Unauthorized: bad token in /telegram/bot[redacted]/sendMessage"),
        "{err}"
    );

    let (code, out, err) = alert_test(&config, "wrong-password");
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("535"), "the server's refusal is shown: {err}");
    // Neither the password nor the AUTH exchange that carries it (base64).
    assert_eq!(
        (base64(b"\0alerts\0x"), base64(b"ab")),
        ("AGFsZXJ0cwB4".into(), "YWI=".into())
    );
    let plain = base64(format!("\0alerts\0not-the-{SMTP_PASSWORD}").as_bytes());
    assert!(
        !err.contains(&plain) && !err.contains(SMTP_PASSWORD),
        "{err}"
    );

    let (code, out, err) = alert_test(&config, "echo");
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("HTTP 401"), "{err}");
    // Not whole, not JSON-escaped, not its first half at the 512-byte cut.
    assert!(
        !err.contains(&ECHOED[..8]),
        "a webhook token echoed back was printed: {err}"
    );

    let (code, out, err) = alert_test(&config, "stalled");
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("not delivered: no answer within 3s"), "{err}");

    let (code, _, err) = alert_test(&config, "nope");
    assert_eq!(code, 78, "no such channel is a configuration problem");
    assert!(
        err.contains("no channel named \"nope\"") && err.contains("known: mail, chat"),
        "{err}"
    );

    for (channel, _) in PREFIXES {
        let (_, out, err) = alert_test(&config, channel);
        for s in SECRETS {
            assert!(
                !out.contains(s) && !err.contains(s),
                "{channel} printed a secret:\n{out}{err}"
            );
        }
    }
}

/// RFC 4648 base64, to look for credentials as SMTP AUTH sends them.
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Two instances send through two channels; one channel answers 500 for a
/// minute. It still gets every notification exactly once after it
/// recovers, and the other channel got each at its first attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_channel_retries_on_its_own_while_the_other_delivers() {
    let db = TestDb::create().await;
    let healthy = Arc::new(AtomicBool::new(true));
    let target = flipping_target(healthy.clone()).await;
    let vendors = Vendors::start().await;
    let cfg = TestConfig::new(
        &db,
        &format!(
            r#"
[incidents]
settle = "1s"
[alerts]
remind_every = "5s"
max_backoff = "4s"
max_attempts = 1000

[[alerts.channels]]
name = "steady"
kind = "webhook"
url = "{steady}"

[[alerts.channels]]
name = "flaky"
kind = "webhook"
url = "{flaky}"

[[sites]]
name = "site"
url = "http://{target}/flip"
interval = "1s"
timeout = "500ms"
"#,
            steady = vendors.url("/steady"),
            flaky = vendors.url("/flaky"),
        ),
    );
    let stop = CancellationToken::new();
    let mut second = cfg.load();
    second.admin.listen = crate::support::free_addr();
    second.kafka.instance_id = Some("second".into());
    let a = tokio::spawn(daemon::run(cfg.load(), &[], stop.clone(), no_reloads()));
    let b = tokio::spawn(daemon::run(second, &[], stop.clone(), no_reloads()));
    let client = db.client().await;
    first_passing_check(&client).await;
    vendors.fail_for("/flaky", Duration::from_secs(60));
    healthy.store(false, Ordering::SeqCst);
    // Notifications pile up for the failing channel while the other one
    // keeps delivering: the opening and reminders, then the recovery.
    wait_for(
        "the steady channel's opening and reminders",
        Duration::from_secs(60),
        || async {
            count(
                &client,
                "SELECT count(*) FROM alert_outbox
                        WHERE channel = 'steady' AND delivered_at IS NOT NULL",
            )
            .await
                >= 4
        },
    )
    .await;
    healthy.store(true, Ordering::SeqCst);
    wait_for("every notification delivered", Duration::from_secs(150), || async {
        count(&client, "SELECT count(*) FROM alert_outbox WHERE event = 'resolved' AND delivered_at IS NOT NULL").await == 2
            && count(&client, "SELECT count(*) FROM alert_outbox WHERE delivered_at IS NULL").await == 0
    })
    .await;
    stop.cancel();
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();

    for channel in ["steady", "flaky"] {
        let ids: Vec<i64> = client
            .query(
                "SELECT id FROM alert_outbox WHERE channel = $1 ORDER BY id",
                &[&channel],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let got: Vec<i64> = vendors
            .accepted(&format!("/{channel}"))
            .iter()
            .map(|r| r.header("x-sitewatch-delivery").parse().unwrap())
            .collect();
        // Not sorted: an incident's events must also arrive in order (a
        // resolve before its opening would leave a page open).
        assert_eq!(
            got, ids,
            "{channel}: every notification exactly once, in order"
        );
    }
    let steady_retries = count(
        &client,
        "SELECT count(*) FROM alert_outbox WHERE channel = 'steady' AND attempts <> 1",
    )
    .await;
    assert_eq!(
        steady_retries, 0,
        "the steady channel never waited for the failing one"
    );
    let refused = vendors.under("/flaky").len() - vendors.accepted("/flaky").len();
    assert!(refused > 0, "the flaky channel did fail for a while");
    let late = count(
        &client,
        "SELECT count(*) FROM alert_outbox o WHERE channel = 'flaky' AND attempts > 1",
    )
    .await;
    assert!(late > 0, "the flaky channel retried");
}
