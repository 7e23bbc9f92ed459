//! The systemd notify protocol (`Type=notify`): `READY=1` once start-up is
//! done, `RELOADING=1` / `READY=1` around a reload, `STOPPING=1` at
//! shutdown, and `WATCHDOG=1` only while every stage still beats — so a hung
//! daemon stops petting the watchdog and systemd restarts it. Everything is
//! a no-op outside systemd (no `NOTIFY_SOCKET`).

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use crate::liveness::Health;

pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// Start of a reload; `Type=notify-reload` also wants the monotonic time.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

pub fn status(text: &str) {
    send(&[NotifyState::Status(text)]);
}

fn send(state: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

/// Pets the watchdog at a third of `WATCHDOG_USEC` while no stage has been
/// silent for more than half of it. Returns at once when systemd does not
/// watch this process.
pub async fn watchdog(health: Health, shutdown: CancellationToken) {
    let Some(period) = sd_notify::watchdog_enabled() else {
        return;
    };
    tracing::info!(?period, "systemd watchdog enabled");
    let mut tick = tokio::time::interval(period / 3);
    let mut warned = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let stalled = health.stalled((period / 2).max(Duration::from_secs(1)));
        if stalled.is_empty() {
            send(&[NotifyState::Watchdog]);
            warned = false;
        } else if !warned {
            tracing::error!(?stalled, "stages stalled: not petting the systemd watchdog");
            warned = true;
        }
    }
}
