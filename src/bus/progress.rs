//! Whether this process's Kafka clients make progress.
//!
//! librdkafka rides out broker outages by itself (against Apache Kafka, the
//! fault tests' 30 s cut recovers without any restart), but a client can be
//! left in a state only a new one gets out of: a fatal idempotence error, a
//! broker that refuses a reconnected client for good (Tansu 0.6 did, after
//! a 30 s cut). A process whose Kafka clients keep failing and have made no
//! progress for `kafka.stall_timeout` therefore stops with an error, and its
//! supervisor (systemd `Restart=on-failure`, Kubernetes) starts it afresh.
//! Nothing is lost by that: offsets are committed only after durable work.
//!
//! An idle process (no messages, no errors) is not stalled.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

static START: OnceLock<Instant> = OnceLock::new();
/// Milliseconds since START of the last success and the last failure
/// (0: none yet).
static LAST_OK: AtomicU64 = AtomicU64::new(0);
static LAST_ERR: AtomicU64 = AtomicU64::new(0);

fn now_ms() -> u64 {
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// A message received, or a delivery acknowledged.
pub fn ok() {
    LAST_OK.store(now_ms(), Ordering::Relaxed);
}

/// A consume or delivery error.
pub fn failed() {
    LAST_ERR.store(now_ms(), Ordering::Relaxed);
}

/// Why the clients count as stalled at `now` (ms), if they do: failing
/// within the last 10 s, and no success for `timeout`.
fn stalled(now: u64, last_ok: u64, last_err: u64, timeout: Duration) -> Option<String> {
    let timeout = timeout.as_millis() as u64;
    let failing = last_err > last_ok && now.saturating_sub(last_err) < 10_000;
    let quiet = now.saturating_sub(last_ok) > timeout;
    (failing && quiet).then(|| {
        format!(
            "Kafka clients have failed without progress for {} s (kafka.stall_timeout); \
             exiting so the supervisor restarts this process with fresh clients",
            now.saturating_sub(last_ok) / 1000
        )
    })
}

/// Returns `Err` once the clients are stalled; `Ok` at shutdown.
pub async fn watch(timeout: Duration, stop: CancellationToken) -> Result<(), String> {
    // Progress counts from now, not from process start.
    ok();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let (last_ok, last_err) = (
            LAST_OK.load(Ordering::Relaxed),
            LAST_ERR.load(Ordering::Relaxed),
        );
        if let Some(why) = stalled(now_ms(), last_ok, last_err, timeout) {
            return Err(why);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stalled_only_when_failing_and_quiet() {
        let t = Duration::from_secs(60);
        // Failing now, no success for 61 s: stalled.
        assert!(stalled(100_000, 39_000, 99_000, t).is_some());
        // Failing, but a success 30 s ago: not yet.
        assert!(stalled(100_000, 70_000, 99_000, t).is_none());
        // Quiet but not failing (an idle topic): fine.
        assert!(stalled(100_000, 1_000, 0, t).is_none());
        // The last failure is old and was followed by nothing: not failing now.
        assert!(stalled(100_000, 1_000, 50_000, t).is_none());
    }
}
