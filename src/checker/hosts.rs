//! Checks at once per host. Without a limit, thousands of sites on one slow
//! host fill every check slot of the checker and starve the other sites
//! (and sitewatch hammers that host). With it, a host gets at most
//! `checker.max_per_host` checks running and as many waiting; a check
//! beyond that is not run but recorded as skipped (`host_busy`), so the
//! overload is visible and accounted for, and the other hosts' checks go on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct HostLimits {
    per_host: usize,
    hosts: Mutex<HashMap<String, Arc<Host>>>,
}

struct Host {
    running: Arc<Semaphore>,
    waiting: AtomicUsize,
}

/// Held while a check of the host runs.
pub struct HostPermit {
    _permit: OwnedSemaphorePermit,
    /// Keeps the host's entry alive while in use (see [`HostLimits::prune`]).
    _host: Arc<Host>,
}

/// The host already has `max_per_host` checks running and as many waiting.
#[derive(Debug)]
pub struct Busy {
    pub limit: usize,
}

impl HostLimits {
    pub fn new(per_host: usize) -> HostLimits {
        HostLimits {
            per_host: per_host.max(1),
            hosts: Mutex::new(HashMap::new()),
        }
    }

    /// Waits for a slot of `host`, or refuses at once when the host's
    /// queue is full.
    pub async fn acquire(&self, host: &str) -> Result<HostPermit, Busy> {
        let h = {
            let mut hosts = self.hosts.lock().expect("hosts lock");
            hosts
                .entry(host.to_owned())
                .or_insert_with(|| {
                    Arc::new(Host {
                        running: Arc::new(Semaphore::new(self.per_host)),
                        waiting: AtomicUsize::new(0),
                    })
                })
                .clone()
        };
        if let Ok(p) = h.running.clone().try_acquire_owned() {
            return Ok(HostPermit {
                _permit: p,
                _host: h,
            });
        }
        if h.waiting.fetch_add(1, Ordering::AcqRel) >= self.per_host {
            h.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Busy {
                limit: self.per_host,
            });
        }
        // Decremented on every exit, the future dropped at shutdown included.
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let _waiting = Waiting(&h.waiting);
        let p = h
            .running
            .clone()
            .acquire_owned()
            .await
            .expect("host semaphores are never closed");
        Ok(HostPermit {
            _permit: p,
            _host: h.clone(),
        })
    }

    /// Forgets hosts with no check running or waiting, so the map holds the
    /// hosts in use, not every host ever checked.
    pub fn prune(&self) {
        self.hosts
            .lock()
            .expect("hosts lock")
            .retain(|_, h| Arc::strong_count(h) > 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_host_refuses_and_other_hosts_go_on() {
        let limits = Arc::new(HostLimits::new(2));
        let a1 = limits.acquire("slow").await.unwrap();
        let a2 = limits.acquire("slow").await.unwrap();
        // Two more may wait ...
        let l = limits.clone();
        let w1 = tokio::spawn(async move { l.acquire("slow").await.map(|_| ()) });
        let l = limits.clone();
        let w2 = tokio::spawn(async move { l.acquire("slow").await.map(|_| ()) });
        let waiting = |limits: &HostLimits| {
            limits.hosts.lock().unwrap()["slow"]
                .waiting
                .load(Ordering::Acquire)
        };
        while waiting(&limits) < 2 {
            tokio::task::yield_now().await;
        }
        // ... the fifth is refused, and another host is not affected.
        assert!(limits.acquire("slow").await.is_err());
        assert!(limits.acquire("fast").await.is_ok());
        drop(a1);
        drop(a2);
        w1.await.unwrap().unwrap();
        w2.await.unwrap().unwrap();
        assert_eq!(waiting(&limits), 0);
        limits.prune();
        assert!(limits.hosts.lock().unwrap().is_empty());
    }
}
