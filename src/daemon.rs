//! The daemon: start-up (admin listener, topics, migrations, sites), the
//! stages as tasks of one process, reloads, and the systemd protocol.
//! `Roles` selects which stages this instance runs, so the stages can be
//! spread over machines that share the work through Kafka consumer groups.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api::status::StatusPages;
use crate::api::{Admin, Health, PublicApi};
use crate::bus::{self, BusError, Publisher};
use crate::checker::{Checker, ClientError, HttpChecker};
use crate::config::{self, Coordination, Settings};
use crate::persister::{Persister, ResultTopic};
use crate::scheduler::{Ownership, Scheduler, SchedulerError, Seams, SiteList};
use crate::store::{self, StoreError};
use crate::systemd;
use crate::telemetry::metrics as m;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    Scheduler,
    Checker,
    Persister,
    /// The public API (`[api]`; with all roles only when `api.enabled`).
    Api,
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
    #[error("listening on {0}: {1}")]
    Listen(std::net::SocketAddr, std::io::Error),
    #[error("stage {0} failed: {1}")]
    Stage(&'static str, String),
}

pub use crate::instance::instance_name;

type Stages = JoinSet<(&'static str, Result<(), String>)>;

/// Runs the selected stages (all when `roles` is empty) until `shutdown`
/// fires, then waits for every stage to drain. Each message on `reloads`
/// re-reads the config file (see [`reload`]). A stage failing stops the
/// others and is returned.
pub async fn run(
    mut settings: Settings,
    roles: &[Role],
    shutdown: CancellationToken,
    mut reloads: mpsc::Receiver<()>,
) -> Result<(), DaemonError> {
    let all = roles.is_empty();
    let api_enabled = settings.api.enabled;
    // With all roles, the API listener runs for the API or the status page.
    let listens = api_enabled || settings.status_page.enabled;
    let has = |r: Role| roles.contains(&r) || (all && (r != Role::Api || listens));
    // The sites live once, shared by the scheduler's entries; the settings
    // the stages share do not carry a second copy.
    let sites = site_list(std::mem::take(&mut settings.sites));
    let settings = Arc::new(settings);
    let topics = &settings.kafka.topics;
    tracing::info!(roles = ?if all { vec![Role::Scheduler, Role::Checker, Role::Persister] } else { roles.to_vec() },
        sites = sites.len(), "sitewatch starting");
    systemd::status("starting");
    // The recorder first: a metric set before it is installed is lost.
    let recorder = settings
        .admin
        .enabled
        .then(crate::telemetry::metrics::install);
    metrics::gauge!(m::CONFIG_SITES).set(sites.len() as f64);

    let health = Health::new();
    let needs_db = has(Role::Scheduler) || has(Role::Persister) || has(Role::Api);
    let pool = store::pool(&settings)?;
    let publisher = Publisher::new(&settings)?;
    // Stages and the admin listener stop when `stop` fires: on shutdown, or
    // when a stage fails.
    let stop = shutdown.child_token();
    let mut stages: Stages = JoinSet::new();
    if settings.admin.enabled {
        let addr = settings.admin.listen;
        let listener = Admin::bind(addr)
            .await
            .map_err(|e| DaemonError::Listen(addr, e))?;
        let admin = Admin {
            health: health.clone(),
            metrics: recorder.expect("installed when the admin listener is enabled"),
            pool: needs_db.then(|| pool.clone()),
            publisher: Some(publisher.clone()),
            probe_topic: topics.created.clone(),
            connections: settings.admin.connections,
        };
        let t = stop.clone();
        stages.spawn(async move {
            (
                "admin",
                admin.run(listener, t).await.map_err(|e| e.to_string()),
            )
        });
    }
    tokio::spawn(systemd::watchdog(health.clone(), stop.clone()));
    let (stall, t) = (settings.kafka.stall_timeout, stop.clone());
    stages.spawn(async move {
        (
            "kafka-progress",
            crate::bus::progress::watch(stall, t).await,
        )
    });
    let stopping = stop.clone();
    tokio::spawn(async move {
        stopping.cancelled().await;
        systemd::stopping();
    });

    let wanted: Vec<(&str, i32)> = topics
        .all()
        .into_iter()
        .map(|t| (t, settings.kafka.partitions))
        .collect();
    match bus::ensure_topics_with_retry(&settings, &wanted, &shutdown).await {
        Err(BusError::Cancelled) => return Ok(()),
        r => r?,
    }
    let check_ids = if needs_db {
        match prepare_database(&settings, &sites, &shutdown).await? {
            Some(ids) => ids,
            None => return Ok(()),
        }
    } else {
        crate::model::CheckIds::default()
    };
    // The sites sync built large temporary arrays: give their pages back.
    crate::config::release_free_memory();

    let (sites_tx, sites_rx) = watch::channel::<SiteList>(sites);
    let sites_for_incidents = sites_rx.clone();
    // The sections that follow reloads (`[alerts]`, `[incidents]`,
    // `[status_page]`), sent whole, sites taken out.
    let (live_tx, live_rx) = watch::channel(settings.clone());
    let (page_tx, page_rx) = watch::channel(Arc::new(settings.status_page.clone()));
    if has(Role::Scheduler) {
        let shards = settings.scheduler.shards as usize;
        let ownership = match settings.scheduler.coordination {
            Coordination::Postgres => Ownership::new(shards),
            Coordination::None => Ownership::all(shards),
        };
        // The checkers, then the persisters: shedding follows the slower.
        let backlogs = if settings.scheduler.load_shedding {
            let t = &settings.kafka.topics;
            let persisters = [("succeeded", &t.succeeded), ("failed", &t.failed)]
                .map(|(which, topic)| (bus::lag::persister_group(&settings, which), topic.clone()));
            vec![
                bus::lag::watch(
                    &settings,
                    &[(bus::lag::checker_group(&settings), t.created.clone())],
                    stop.clone(),
                )?,
                bus::lag::watch(&settings, &persisters, stop.clone())?,
            ]
        } else {
            Vec::new()
        };
        let seams = Seams::daemon(
            &settings,
            pool.clone(),
            publisher.clone(),
            backlogs,
            check_ids,
        );
        let s = Scheduler::new(
            settings.clone(),
            seams,
            pool.clone(),
            health.stage("scheduler"),
            sites_rx.clone(),
            ownership,
        );
        let t = stop.clone();
        stages.spawn(async move { ("scheduler", s.run(t).await.map_err(|e| e.to_string())) });
    }
    if has(Role::Checker) {
        let http = Arc::new(HttpChecker::new(&settings.checker, &instance_name())?);
        let c = Checker::new(
            settings.clone(),
            http,
            publisher.clone(),
            health.stage("checker"),
        );
        let t = stop.clone();
        stages.spawn(async move { ("checker", c.run(t).await.map_err(|e| e.to_string())) });
    }
    if has(Role::Persister) {
        for which in [ResultTopic::Succeeded, ResultTopic::Failed] {
            let name = match which {
                ResultTopic::Succeeded => "persister-succeeded",
                ResultTopic::Failed => "persister-failed",
            };
            let p = Persister::new(
                which,
                settings.clone(),
                pool.clone(),
                publisher.clone(),
                health.stage(name),
            );
            let t = stop.clone();
            stages.spawn(async move { (name, p.run(t).await.map_err(|e| e.to_string())) });
        }
        let evaluator = crate::incidents::Evaluator::new(
            live_rx.clone(),
            pool.clone(),
            sites_for_incidents,
            health.stage("incidents"),
        );
        let t = stop.clone();
        stages.spawn(async move {
            evaluator.run(t).await;
            ("incidents", Ok(()))
        });
        // Even with no channel: a reload may add one.
        let sender = crate::alerts::AlertSender::new(
            live_rx.clone(),
            pool.clone(),
            &instance_name(),
            health.stage("alerts"),
        )
        .map_err(|e| DaemonError::Stage("alerts", e))?;
        let t = stop.clone();
        stages.spawn(async move {
            sender.run(t).await;
            ("alerts", Ok(()))
        });
        let (s, db, beat, t) = (
            settings.clone(),
            pool.clone(),
            health.stage("retention"),
            stop.clone(),
        );
        stages.spawn(async move {
            crate::persister::maintain(s, db, beat, t).await;
            ("retention", Ok(()))
        });
    }
    if has(Role::Api) {
        let listener = tokio::net::TcpListener::bind(settings.api.listen)
            .await
            .map_err(|e| DaemonError::Listen(settings.api.listen, e))?;
        let mut app = axum::Router::new();
        // The token API only when enabled, whatever the roles: a status
        // page instance (`--role api`, `api.enabled = false`) serves no more.
        if api_enabled {
            let out = crate::api::outcomes::channel();
            let (s, o, beat, t) = (
                settings.clone(),
                out.clone(),
                health.stage("api-outcomes"),
                stop.clone(),
            );
            stages.spawn(async move {
                let r = crate::api::outcomes::follow(&s, o, beat, t).await;
                ("api-outcomes", r.map_err(|e| e.to_string()))
            });
            app = PublicApi {
                settings: settings.clone(),
                pool: pool.clone(),
                publisher: publisher.clone(),
                outcomes: out,
            }
            .router();
        }
        if settings.status_page.enabled {
            // Not rendered ahead at start: a render made before the first
            // results of this run came in was served (stale, up to three
            // refreshes old) to the first reader, every site "Unknown"
            // beside a /status.json that had the data. The first reader
            // waits for one render instead.
            let pages = StatusPages::new(page_rx, pool.clone(), sites_rx.clone());
            app = app.merge(pages.router());
        }
        let t = stop.clone();
        tracing::info!(addr = %settings.api.listen, api = api_enabled,
            status_page = settings.status_page.enabled, "API listening");
        let limits = settings.api.connections;
        stages.spawn(async move {
            crate::api::listener::serve(listener, app, limits, "api", t).await;
            ("api", Ok(()))
        });
    }
    health.set_started();
    systemd::ready("running");

    let mut failure = None;
    let mut current = settings.clone();
    loop {
        tokio::select! {
            joined = stages.join_next() => {
                let Some(joined) = joined else { break };
                let (name, result) = joined.unwrap_or_else(|e| ("task", Err(e.to_string())));
                if let Err(e) = result {
                    tracing::error!(stage = name, error = %e, "stage failed; stopping the others");
                    failure.get_or_insert(DaemonError::Stage(name, e));
                    stop.cancel();
                }
            }
            Some(()) = reloads.recv(), if !stop.is_cancelled() => {
                systemd::reloading();
                if let Some((next, sites)) = reload(&current, needs_db, &shutdown).await {
                    sites_tx.send_replace(sites);
                    if current.status_page != next.status_page {
                        page_tx.send_replace(Arc::new(next.status_page.clone()));
                    }
                    current = Arc::new(next);
                    live_tx.send_replace(current.clone());
                }
                systemd::ready("running");
            }
        }
    }
    publisher.flush(Duration::from_secs(10)).await;
    tracing::info!("sitewatch stopped");
    failure.map_or(Ok(()), Err)
}

/// Re-reads the config file. An invalid file is refused with the same
/// messages as `sitewatch validate` and the running config stays. A valid
/// one replaces the sites (the scheduler applies them from each site's next
/// slot) and the `sites` table follows; `[alerts]`, `[incidents]` and
/// `[status_page]` apply at once; changes to the other sections (and to
/// `status_page.enabled`, which decides what the listener serves) are
/// logged as needing a restart.
async fn reload(
    current: &Settings,
    needs_db: bool,
    shutdown: &CancellationToken,
) -> Option<(Settings, SiteList)> {
    let mut next = match config::load(&current.file) {
        Ok(s) => s,
        Err(errors) => {
            metrics::counter!(m::RELOADS, "result" => "rejected").increment(1);
            tracing::error!(file = %current.file.display(), problems = errors.0.len(),
                "reload refused; the running config stays:\n{errors}");
            return None;
        }
    };
    // What `validate` and the start refuse, a reload refuses whole: the
    // channels' templates, and clients that cannot be built (a CA file
    // gone). Half applied, the evaluator queued openings for a channel the
    // sender never took on.
    let problems = crate::alerts::usable(&next.alerts, &next.checker.user_agent);
    if !problems.is_empty() {
        metrics::counter!(m::RELOADS, "result" => "rejected").increment(1);
        tracing::error!(file = %current.file.display(), problems = problems.len(),
            "reload refused; the running config stays:\n  {}", problems.join("\n  "));
        return None;
    }
    for (section, changed) in [
        (
            "postgres",
            differs(&current.postgres, &next.postgres)
                || current.postgres_password != next.postgres_password,
        ),
        (
            "kafka",
            differs(&current.kafka, &next.kafka)
                || current.kafka_sasl_password != next.kafka_sasl_password
                || current.kafka_tls_key_password != next.kafka_tls_key_password,
        ),
        ("scheduler", differs(&current.scheduler, &next.scheduler)),
        ("checker", differs(&current.checker, &next.checker)),
        ("persister", differs(&current.persister, &next.persister)),
        ("retention", differs(&current.retention, &next.retention)),
        ("admin", differs(&current.admin, &next.admin)),
        ("api", differs(&current.api, &next.api)),
        ("api.tokens", current.api_tokens != next.api_tokens),
        (
            "status_page.enabled",
            current.status_page.enabled != next.status_page.enabled,
        ),
        ("log", differs(&current.log, &next.log)),
    ] {
        if changed {
            tracing::warn!(
                section = %section,
                "changed in the config file; takes effect at restart"
            );
        }
    }
    for (section, changed) in [
        ("alerts", current.alerts != next.alerts),
        ("incidents", differs(&current.incidents, &next.incidents)),
        ("status_page", current.status_page != next.status_page),
    ] {
        if changed {
            tracing::info!(section = %section, "changed in the config file; applied");
        }
    }
    if needs_db {
        let sync = async {
            let mut client = store::connect(&next).await?;
            store::sync_sites(&mut client, &next.sites).await
        };
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            r = tokio::time::timeout(Duration::from_secs(10), sync) => match r {
                Ok(Ok(s)) => tracing::info!(added = s.added, changed = s.changed, removed = s.removed, "sites table synced"),
                Ok(Err(e)) => tracing::warn!(error = %e, "sites table not synced; it follows at the next reload or start"),
                Err(_) => tracing::warn!("sites table not synced within 10s; it follows at the next reload or start"),
            },
        }
    }
    metrics::counter!(m::RELOADS, "result" => "ok").increment(1);
    metrics::gauge!(m::CONFIG_SITES).set(next.sites.len() as f64);
    tracing::info!(sites = next.sites.len(), "config reloaded");
    let sites = site_list(std::mem::take(&mut next.sites));
    Some((next, sites))
}

/// Whether two settings differ, by their debug forms (most sections have
/// no `PartialEq`). Secrets print redacted: they are compared apart.
fn differs(a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug) -> bool {
    format!("{a:?}") != format!("{b:?}")
}

/// The sites as the stages share them: each once, behind an `Arc`.
fn site_list(sites: Vec<crate::config::Site>) -> SiteList {
    let mut list: Vec<Arc<crate::config::Site>> = sites.into_iter().map(Arc::new).collect();
    // The collect reuses the `Vec<Site>`'s buffer (360 bytes a site) for
    // 8-byte pointers: without this, 36 MB at 100k sites held for nothing.
    list.shrink_to_fit();
    Arc::new(list)
}

/// Applies migrations and syncs the `sites` table, retrying while Postgres
/// is unreachable; returns the store's check id scheme. `None` when shut
/// down first; `Err` when retrying cannot help (bad CA, wrong password).
async fn prepare_database(
    settings: &Settings,
    sites: &[Arc<crate::config::Site>],
    shutdown: &CancellationToken,
) -> Result<Option<crate::model::CheckIds>, DaemonError> {
    let mut delay = Duration::from_millis(250);
    loop {
        let attempt = async {
            let mut client = store::connect(settings).await?;
            let report = store::migrate(&mut client).await?;
            let sync = store::sync_sites(&mut client, sites).await?;
            let ids = store::check_ids(&client).await?;
            Ok::<_, StoreError>((report, sync, ids))
        };
        match attempt.await {
            Ok((report, sync, ids)) => {
                tracing::info!(migrations = ?report.applied, partitions = report.partitions_created,
                    added = sync.added, changed = sync.changed, removed = sync.removed,
                    time_leading_ids_from = %ids.time_leading_from, "database ready");
                return Ok(Some(ids));
            }
            Err(e) if e.is_fatal() => return Err(e.into()),
            Err(e) => tracing::warn!(error = %e, url = %settings.postgres_display_url(),
                retry_in = ?delay, "Postgres not ready"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}
