//! Liveness of the stages. Each stage holds a [`Beat`] and calls
//! [`Beat::beat`] from its main loop (every loop has a tick of at most a
//! second or two), so a stage that hangs — a deadlock, a blocked runtime —
//! stops beating. The systemd watchdog and `/readyz` read the beats.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

struct Inner {
    epoch: Instant,
    stages: Mutex<Vec<Arc<StageState>>>,
    /// Start-up (topics, migrations) finished.
    started: AtomicBool,
}

struct StageState {
    name: &'static str,
    /// Milliseconds after `epoch` of the last beat.
    last: AtomicU64,
    running: AtomicBool,
}

/// A stage's handle. Dropping it marks the stage as stopped.
pub struct Beat {
    state: Arc<StageState>,
    epoch: Instant,
}

/// What a stage looks like from outside.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StageReport {
    pub name: &'static str,
    pub running: bool,
    /// Seconds since the stage last showed it was alive.
    pub silent_for: f64,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            inner: Arc::new(Inner {
                epoch: Instant::now(),
                stages: Mutex::new(Vec::new()),
                started: AtomicBool::new(false),
            }),
        }
    }
}

impl Health {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a stage, not running until its first [`Beat::running`].
    pub fn stage(&self, name: &'static str) -> Beat {
        let state = Arc::new(StageState {
            name,
            last: AtomicU64::new(self.now_ms()),
            running: AtomicBool::new(false),
        });
        self.inner
            .stages
            .lock()
            .expect("health lock")
            .push(state.clone());
        Beat {
            state,
            epoch: self.inner.epoch,
        }
    }

    pub fn set_started(&self) {
        self.inner.started.store(true, Ordering::Relaxed);
    }

    pub fn started(&self) -> bool {
        self.inner.started.load(Ordering::Relaxed)
    }

    pub fn stages(&self) -> Vec<StageReport> {
        let now = self.now_ms();
        self.inner
            .stages
            .lock()
            .expect("health lock")
            .iter()
            .map(|s| StageReport {
                name: s.name,
                running: s.running.load(Ordering::Relaxed),
                silent_for: now.saturating_sub(s.last.load(Ordering::Relaxed)) as f64 / 1000.0,
            })
            .collect()
    }

    /// Names of registered stages silent for longer than `max`.
    pub fn stalled(&self, max: Duration) -> Vec<&'static str> {
        self.stages()
            .into_iter()
            .filter(|s| s.silent_for > max.as_secs_f64())
            .map(|s| s.name)
            .collect()
    }

    fn now_ms(&self) -> u64 {
        self.inner.epoch.elapsed().as_millis() as u64
    }
}

impl Beat {
    /// A beat not registered anywhere (tests, tools).
    pub fn detached(name: &'static str) -> Beat {
        Health::new().stage(name)
    }

    /// The stage is alive.
    pub fn beat(&self) {
        self.state
            .last
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// The stage finished starting up and is doing its work.
    pub fn running(&self) {
        self.beat();
        self.state.running.store(true, Ordering::Relaxed);
    }
}

impl Drop for Beat {
    fn drop(&mut self) {
        self.state.running.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_is_running_only_between_running_and_drop() {
        let h = Health::new();
        let beat = h.stage("checker");
        assert!(!h.stages()[0].running);
        beat.running();
        assert!(h.stages()[0].running);
        drop(beat);
        assert!(!h.stages()[0].running);
    }

    #[test]
    fn a_silent_stage_is_stalled() {
        // A clock that started a minute ago, so a beat can be dated back.
        let Some(epoch) = Instant::now().checked_sub(Duration::from_secs(60)) else {
            return; // the machine has been up for less than a minute
        };
        let h = Health {
            inner: Arc::new(Inner {
                epoch,
                stages: Mutex::new(Vec::new()),
                started: AtomicBool::new(false),
            }),
        };
        let beat = h.stage("persister");
        beat.running();
        assert!(h.stalled(Duration::from_secs(30)).is_empty());
        beat.state.last.store(0, Ordering::Relaxed); // last beat 60 s ago
        assert_eq!(h.stalled(Duration::from_secs(30)), vec!["persister"]);
        beat.beat();
        assert!(
            h.stalled(Duration::from_secs(30)).is_empty(),
            "a beat resets the silence"
        );
    }
}
