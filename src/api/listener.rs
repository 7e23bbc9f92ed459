//! Serving a router on a TCP listener within [`ConnectionLimits`]: at most
//! `max` connections held, `max_per_address` of them from one client
//! address (one more is accepted and closed at once), a
//! deadline for each request head (hyper's `header_read_timeout`), and a
//! connection closed once nothing has arrived on it for `idle_timeout`
//! (`tokio-io-timeout`). Both the public API and the admin listener serve
//! through here, so neither can be made to hold the process's file
//! descriptors: the checks need them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::{Extension, Router};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_io_timeout::TimeoutStream;
use tokio_util::sync::CancellationToken;

use crate::config::ConnectionLimits;
use crate::telemetry::metrics as m;

/// How long requests in progress may take to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// One connection counted against its client address; released on drop.
struct AddressSlot {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl AddressSlot {
    /// A slot for `ip`, unless it already holds `max`.
    fn take(counts: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, max: usize) -> Option<Self> {
        let mut held = counts.lock().expect("address counts");
        let n = held.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            counts: counts.clone(),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut held = self.counts.lock().expect("address counts");
        if let Some(n) = held.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.ip);
            }
        }
    }
}

/// Serves `app` on `listener` until `shutdown`, then lets the requests in
/// progress finish (up to 5 s). `name` labels the metrics (`api`, `admin`).
/// Errors accepting a connection (the process out of descriptors, say) are
/// logged and retried, never returned: the listener outlives them.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    name: &'static str,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max));
    let per_address: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            metrics::counter!(m::LISTENER_REFUSED, "listener" => name).increment(1);
            drop(stream);
            continue;
        };
        let Some(held) = AddressSlot::take(&per_address, peer.ip(), limits.max_per_address) else {
            metrics::counter!(m::LISTENER_REFUSED, "listener" => name).increment(1);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let mut timed = TimeoutStream::new(stream);
        timed.set_read_timeout(Some(limits.idle_timeout));
        let io = TokioIo::new(Box::pin(timed));
        // The peer's address, for handlers that need it (the API's limit on
        // failed authentications), as axum's `ConnectInfo`.
        let service = app.clone().layer(Extension(ConnectInfo(peer)));
        let conn = http
            .serve_connection(io, TowerToHyperService::new(service))
            .with_upgrades();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(DRAIN, conn).await;
                }
            }
            drop((permit, held));
        });
    }
    // Every permit back means every connection closed.
    let _ = tokio::time::timeout(DRAIN, slots.acquire_many(limits.max as u32)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_holds_at_most_its_share_and_gets_it_back() {
        let counts: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = AddressSlot::take(&counts, a, 2).unwrap();
        let _second = AddressSlot::take(&counts, a, 2).unwrap();
        assert!(AddressSlot::take(&counts, a, 2).is_none(), "a third from a");
        assert!(
            AddressSlot::take(&counts, b, 2).is_some(),
            "another address"
        );
        drop(first);
        assert!(AddressSlot::take(&counts, a, 2).is_some(), "a slot freed");
        drop(_second);
        assert!(counts.lock().unwrap().is_empty(), "no address left behind");
    }
}
