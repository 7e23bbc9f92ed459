//! Email through SMTP with lettre: STARTTLS (RFC 3207) or implicit TLS
//! (RFC 8314), optional AUTH, and a plain-text and an HTML part
//! (`multipart/alternative`, RFC 2046 §5.1.4). Every mail of one incident
//! threads under the opening one (`In-Reply-To`/`References`, RFC 5322
//! §3.6.4).

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::notice::{Event, Notice};
use super::vendors::html;
use crate::config::{Email, SmtpTls};

/// A pooled SMTP transport for one channel.
pub type Transport = AsyncSmtpTransport<Tokio1Executor>;

/// Builds the transport (no connection yet). `Err` when the CA file cannot
/// be read or parsed.
pub fn transport(e: &Email, timeout: Duration) -> Result<Transport, String> {
    let params = || -> Result<TlsParameters, String> {
        let mut b = TlsParameters::builder(e.smtp_host.clone());
        if let Some(path) = &e.tls_ca_file {
            let pem = std::fs::read(path)
                .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
            let cert = Certificate::from_pem(&pem)
                .map_err(|err| format!("{} is not a PEM certificate: {err}", path.display()))?;
            b = b.add_root_certificate(cert);
        }
        b.build_rustls().map_err(|err| err.to_string())
    };
    let tls = match e.smtp_tls {
        SmtpTls::Starttls => Tls::Required(params()?),
        SmtpTls::Tls => Tls::Wrapper(params()?),
        SmtpTls::None => Tls::None,
    };
    let mut b = Transport::builder_dangerous(&e.smtp_host)
        .port(e.smtp_port)
        .tls(tls)
        .timeout(Some(timeout));
    if let (Some(user), Some(pass)) = (&e.username, &e.password) {
        b = b.credentials(Credentials::new(user.clone(), pass.expose().to_owned()));
    }
    Ok(b.build())
}

/// The message for `n`. `Err` only for addresses the config check let
/// through but lettre refuses.
pub fn message(e: &Email, n: &Notice) -> Result<Message, String> {
    let thread = format!("<{}@sitewatch>", n.incident_key());
    let mut b = Message::builder()
        .from(e.from.parse::<Mailbox>().map_err(|err| err.to_string())?)
        .subject(format!("[sitewatch] {}", n.headline()));
    for to in &e.to {
        b = b.to(to.parse::<Mailbox>().map_err(|err| err.to_string())?);
    }
    b = match n.event {
        Event::Opened | Event::Test => b.message_id(Some(thread)),
        _ => b
            .message_id(Some(format!(
                "<{}.{}.{}@sitewatch>",
                n.incident_key(),
                n.event.as_str(),
                n.outbox
            )))
            .in_reply_to(thread.clone())
            .references(thread),
    };
    let rows = facts(n);
    let text = format!(
        "{}\n\n{}\n\n{}\n",
        n.headline(),
        n.detail(),
        rows.iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let html_rows: String = rows
        .iter()
        .map(|(k, v)| format!("<tr><th align=\"left\">{k}</th><td>{}</td></tr>", html(v)))
        .collect();
    let colour = if n.is_problem() { "#d93025" } else { "#2eb872" };
    let body = format!(
        "<!doctype html><html><body>\
         <h2 style=\"color:{colour}\">{}</h2><p>{}</p><table>{html_rows}</table>\
         </body></html>",
        html(&n.headline()),
        html(&n.detail())
    );
    b.multipart(MultiPart::alternative_plain_html(text, body))
        .map_err(|err| err.to_string())
}

fn facts(n: &Notice) -> Vec<(&'static str, String)> {
    let mut rows = vec![
        ("Site", n.site.clone()),
        ("URL", n.link().to_owned()),
        ("Event", n.event.as_str().to_owned()),
        ("Incident", n.incident.to_string()),
        ("Opened at", n.opened_at.to_rfc3339()),
    ];
    if let Some(at) = n.resolved_at {
        rows.push(("Resolved at", at.to_rfc3339()));
    }
    rows.push(("First failing check", n.first_failing_check.to_string()));
    rows.push(("Last failing check", n.last_failing_check.to_string()));
    rows.push(("Sent by", n.sent_by.clone()));
    rows
}

/// Sends `m`; the server's final reply (`250 …`) or the failure.
pub async fn send(t: &Transport, m: Message) -> Result<String, String> {
    match t.send(m).await {
        Ok(r) => Ok(format!(
            "{} {}",
            r.code(),
            r.message().collect::<Vec<_>>().join(" ")
        )),
        Err(e) => Err(crate::checker::error_chain(&e)),
    }
}
