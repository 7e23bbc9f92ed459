//! The public API ([`public`]: on-demand checks, results, sites), the
//! public status page and badges ([`status`]), and the
//! admin listener: `/healthz` (the process answers), `/readyz` (this
//! instance can do its work now: start-up done, its stages running and not
//! stalled, and the Kafka and Postgres it needs reachable) and `/metrics`
//! (Prometheus text format). Loopback by default (`admin.listen`).

pub mod guard;
pub mod listener;
pub mod outcomes;
pub mod public;
pub mod status;
mod stream;

pub use crate::liveness::{Beat, Health, StageReport};
pub use public::PublicApi;

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use deadpool_postgres::Pool;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::bus::Publisher;
use crate::telemetry::metrics as m;

/// How long `/readyz` waits for Kafka or Postgres to answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// A stage silent for longer than this is stalled (every stage loop ticks
/// at least every few seconds, retry back-offs included).
pub const STALL_AFTER: Duration = Duration::from_secs(30);
/// How often histograms are drained and sampled gauges refreshed.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Admin {
    pub health: Health,
    pub metrics: PrometheusHandle,
    /// Present when this instance's stages need Postgres.
    pub pool: Option<Pool>,
    /// Present once Kafka clients exist; its reachability is Kafka's.
    pub publisher: Option<Publisher>,
    /// A topic whose metadata proves the broker answers.
    pub probe_topic: String,
    /// `admin.connections`.
    pub connections: crate::config::ConnectionLimits,
}

#[derive(serde::Serialize)]
struct Readiness {
    ready: bool,
    started: bool,
    postgres: Option<String>,
    kafka: Option<String>,
    stages: Vec<StageReport>,
}

impl Admin {
    pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
        TcpListener::bind(addr).await
    }

    /// Serves until `shutdown`.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let upkeep = {
            let admin = self.clone();
            let stop = shutdown.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(UPKEEP_EVERY);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tick.tick() => admin.upkeep(),
                    }
                }
            })
        };
        let self_limits = self.connections;
        let app = Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(self);
        tracing::info!(addr = %listener.local_addr()?, "admin listener started");
        let limits = self_limits;
        listener::serve(listener, app, limits, "admin", shutdown).await;
        upkeep.abort();
        Ok(())
    }

    fn upkeep(&self) {
        self.metrics.run_upkeep();
        if let Some(p) = &self.publisher {
            metrics::gauge!(m::PRODUCER_QUEUE).set(f64::from(p.in_flight()));
        }
    }

    async fn readiness(&self) -> Readiness {
        let postgres = async {
            let pool = self.pool.as_ref()?;
            let probe = async {
                let client = pool.get().await.map_err(|e| e.to_string())?;
                client
                    .simple_query("SELECT 1")
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>(())
            };
            Some(match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
                Ok(Ok(())) => "ok".to_owned(),
                Ok(Err(e)) => e,
                Err(_) => format!("no answer within {PROBE_TIMEOUT:?}"),
            })
        };
        let kafka = async {
            let p = self.publisher.as_ref()?;
            Some(match p.reachable(&self.probe_topic, PROBE_TIMEOUT).await {
                Ok(()) => "ok".to_owned(),
                Err(e) => e.to_string(),
            })
        };
        let (postgres, kafka) = tokio::join!(postgres, kafka);
        let stages = self.health.stages();
        let started = self.health.started();
        let ready = started
            && postgres.as_deref().is_none_or(|s| s == "ok")
            && kafka.as_deref().is_none_or(|s| s == "ok")
            && stages
                .iter()
                .all(|s| s.running && s.silent_for <= STALL_AFTER.as_secs_f64());
        Readiness {
            ready,
            started,
            postgres,
            kafka,
            stages,
        }
    }
}

async fn readyz(State(admin): State<Admin>) -> Response {
    let r = admin.readiness().await;
    let code = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(r)).into_response()
}

async fn metrics(State(admin): State<Admin>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        admin.metrics.render(),
    )
        .into_response()
}
