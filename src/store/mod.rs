//! Postgres: connections, embedded migrations, the `sites` sync, and the
//! queries the other stages need. Every function here either does its work
//! durably or returns `Err`; callers decide whether to retry.

mod hours;
mod migrate;
mod progress;
mod results;
mod retention;
mod sites;

pub use hours::{roll_up_hours, HourReport, HOUR_GRACE};
pub use migrate::{migrate, MigrationReport, PARTITION_DAYS_AHEAD};
pub use progress::{
    check_ids, forget_progress_except, load_gaps_since, load_progress_of, load_watermarks,
    record_gap, record_shed, save_progress, save_watermarks, Span,
};
pub use results::{
    ensure_partitions, insert_results, insert_skipped, is_data_error, is_missing_partition,
    SkippedSlot,
};
pub use retention::apply_retention;
pub use sites::{sync_sites, SyncReport};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use openssl::ssl::{SslConnector, SslMethod};
use postgres_openssl::MakeTlsConnector;

use crate::config::{Secret, Settings};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid Postgres settings: {0}")]
    Config(String),
    #[error("Postgres: {0}{detail}", detail = db_detail(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("Postgres pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("migration failed: {0}")]
    Migration(#[from] refinery::Error),
}

/// The server's own message: tokio-postgres displays only "db error".
fn db_detail(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| format!(": {} ({})", d.message(), d.code().code()))
        .unwrap_or_default()
}

impl StoreError {
    /// True when retrying cannot help: the server's TLS certificate does not
    /// verify against `postgres.ca_path` (or the system roots), or the
    /// password is wrong. The daemon stops at start-up with this error.
    pub fn is_fatal(&self) -> bool {
        let text = error_chain(self).to_lowercase();
        text.contains("certificate verify failed")
            || text.contains("password authentication failed")
            || matches!(self, StoreError::Config(_))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// TLS for Postgres connections, used when the URL's `sslmode` asks for it
/// (`prefer`, the default, uses TLS only if the server offers it).
fn tls(settings: &Settings) -> Result<MakeTlsConnector, StoreError> {
    let mut builder = SslConnector::builder(SslMethod::tls())
        .map_err(|e| StoreError::Config(format!("TLS set-up: {e}")))?;
    if let Some(ca) = &settings.postgres.ca_path {
        builder.set_ca_file(ca).map_err(|e| {
            StoreError::Config(format!(
                "postgres.ca_path {}: not a readable PEM certificate: {e}",
                ca.display()
            ))
        })?;
    }
    Ok(MakeTlsConnector::new(builder.build()))
}

/// The driver configuration for `settings`, with the password from
/// `postgres.password` / `postgres.password_file` applied.
pub fn pg_config(settings: &Settings) -> Result<tokio_postgres::Config, StoreError> {
    build_pg_config(
        &settings.postgres.url,
        settings.postgres_password.as_ref(),
        settings.postgres.connect_timeout,
    )
}

fn build_pg_config(
    url: &str,
    password: Option<&Secret>,
    connect_timeout: std::time::Duration,
) -> Result<tokio_postgres::Config, StoreError> {
    let mut cfg: tokio_postgres::Config = url
        .parse()
        .map_err(|e: tokio_postgres::Error| StoreError::Config(e.to_string()))?;
    if let Some(pw) = password {
        cfg.password(pw.expose());
    }
    if cfg.get_application_name().is_none() {
        cfg.application_name("sitewatch");
    }
    cfg.connect_timeout(connect_timeout);
    Ok(cfg)
}

/// One connection, outside the pool (migrations hold a session lock on it).
pub async fn connect(settings: &Settings) -> Result<tokio_postgres::Client, StoreError> {
    let (client, connection) = pg_config(settings)?.connect(tls(settings)?).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "postgres connection closed");
        }
    });
    Ok(client)
}

/// The shared pool. Connections are made lazily, so this does not fail when
/// Postgres is down; the first query does.
pub fn pool(settings: &Settings) -> Result<Pool, StoreError> {
    let manager = Manager::from_config(
        pg_config(settings)?,
        tls(settings)?,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(settings.postgres.pool_size)
        .build()
        .map_err(|e| StoreError::Config(e.to_string()))
}
