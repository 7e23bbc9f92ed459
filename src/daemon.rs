//! The daemon: start-up (topics, migrations, sites) and the stages as tasks
//! of one process. `Roles` selects which stages this instance runs, so the
//! stages can be spread over machines that share the work through Kafka
//! consumer groups.

use std::sync::Arc;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::bus::{self, BusError, Publisher};
use crate::checker::{Checker, ClientError, HttpChecker};
use crate::config::Settings;
use crate::persister::{Persister, ResultTopic};
use crate::scheduler::{Scheduler, SchedulerError};
use crate::store::{self, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    Scheduler,
    Checker,
    Persister,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    #[error("stage {0} failed: {1}")]
    Stage(&'static str, String),
}

/// This instance's name in outcomes and logs: the host name.
pub fn instance_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "sitewatch".to_owned())
}

/// Runs the selected stages (all when `roles` is empty) until `shutdown`
/// fires, then waits for every stage to drain. A stage failing stops the
/// others and is returned.
pub async fn run(
    settings: Settings,
    roles: &[Role],
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    let all = roles.is_empty();
    let has = |r: Role| all || roles.contains(&r);
    let settings = Arc::new(settings);
    let topics = &settings.kafka.topics;
    tracing::info!(roles = ?if all { vec![Role::Scheduler, Role::Checker, Role::Persister] } else { roles.to_vec() },
        sites = settings.sites.len(), "sitewatch starting");

    bus::ensure_topics_with_retry(
        &settings,
        &[
            &topics.created,
            &topics.succeeded,
            &topics.failed,
            &topics.dlq,
        ],
        &shutdown,
    )
    .await?;
    let pool = store::pool(&settings)?;
    let needs_db = has(Role::Scheduler) || has(Role::Persister);
    if needs_db && !prepare_database(&settings, &shutdown).await? {
        return Ok(());
    }
    let publisher = Publisher::new(&settings)?;

    // Stages stop when `stop` fires: on shutdown, or when one of them fails.
    let stop = shutdown.child_token();
    let mut stages: JoinSet<(&'static str, Result<(), String>)> = JoinSet::new();
    if has(Role::Scheduler) {
        let s = Scheduler::new(settings.clone(), pool.clone(), publisher.clone());
        let t = stop.clone();
        stages.spawn(async move { ("scheduler", s.run(t).await.map_err(|e| e.to_string())) });
    }
    if has(Role::Checker) {
        let http = Arc::new(HttpChecker::new(&settings.checker, &instance_name())?);
        let c = Checker::new(settings.clone(), http, publisher.clone());
        let t = stop.clone();
        stages.spawn(async move { ("checker", c.run(t).await.map_err(|e| e.to_string())) });
    }
    if has(Role::Persister) {
        for which in [ResultTopic::Succeeded, ResultTopic::Failed] {
            let p = Persister::new(which, settings.clone(), pool.clone(), publisher.clone());
            let t = stop.clone();
            let name = match which {
                ResultTopic::Succeeded => "persister-succeeded",
                ResultTopic::Failed => "persister-failed",
            };
            stages.spawn(async move { (name, p.run(t).await.map_err(|e| e.to_string())) });
        }
    }

    let mut failure = None;
    while let Some(joined) = stages.join_next().await {
        let (name, result) = match joined {
            Ok(r) => r,
            Err(e) => ("task", Err(e.to_string())),
        };
        if let Err(e) = result {
            tracing::error!(stage = name, error = %e, "stage failed; stopping the others");
            failure.get_or_insert(DaemonError::Stage(name, e));
            stop.cancel();
        }
    }
    publisher.flush(std::time::Duration::from_secs(10)).await;
    tracing::info!("sitewatch stopped");
    failure.map_or(Ok(()), Err)
}

/// Applies migrations and syncs the `sites` table, retrying while Postgres
/// is unreachable. False when shut down first; `Err` when retrying cannot
/// help (bad CA, wrong password).
async fn prepare_database(
    settings: &Settings,
    shutdown: &CancellationToken,
) -> Result<bool, DaemonError> {
    let mut delay = std::time::Duration::from_millis(250);
    loop {
        let attempt = async {
            let mut client = store::connect(settings).await?;
            let report = store::migrate(&mut client).await?;
            let sync = store::sync_sites(&mut client, &settings.sites).await?;
            Ok::<_, StoreError>((report, sync))
        };
        match attempt.await {
            Ok((report, sync)) => {
                tracing::info!(migrations = ?report.applied, partitions = report.partitions_created,
                    added = sync.added, changed = sync.changed, removed = sync.removed, "database ready");
                return Ok(true);
            }
            Err(e) if e.is_fatal() => return Err(e.into()),
            Err(e) => tracing::warn!(error = %e, url = %settings.postgres_display_url(),
                retry_in = ?delay, "Postgres not ready"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(false),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(std::time::Duration::from_secs(10));
    }
}
