//! Signals: SIGINT and SIGTERM become one cancellation token that every
//! stage receives (a second signal is not needed: stages drain within
//! bounds); SIGHUP becomes a reload request.

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first SIGINT or SIGTERM.
pub fn cancel_on_signals(token: CancellationToken) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let which = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = which, "shutting down");
        token.cancel();
    });
    Ok(())
}

/// One message per SIGHUP. Signals that arrive while a reload is waiting
/// to be taken are merged into it.
pub fn reload_on_sighup() -> std::io::Result<mpsc::Receiver<()>> {
    let mut hup = signal(SignalKind::hangup())?;
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!(signal = "SIGHUP", "reload requested");
            let _ = tx.try_send(());
        }
    });
    Ok(rx)
}
