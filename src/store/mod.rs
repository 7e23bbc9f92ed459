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
/// (`prefer`, the default, uses TLS only if the server offers it). The
/// server's certificate is verified against `postgres.ca_path` or the
/// URL's `sslrootcert` (else the system's roots), and its name too unless
/// `sslmode=verify-ca`; `sslcert`/`sslkey` are presented when the server
/// asks for a client certificate.
fn tls(settings: &Settings) -> Result<MakeTlsConnector, StoreError> {
    let (_, opts) = split(settings)?;
    let mut builder = SslConnector::builder(SslMethod::tls())
        .map_err(|e| StoreError::Config(format!("TLS set-up: {e}")))?;
    let ca = settings
        .postgres
        .ca_path
        .as_ref()
        .map(|p| ("postgres.ca_path", p));
    if let Some((name, ca)) = ca.or(opts.root_cert.as_ref().map(|p| ("sslrootcert", p))) {
        builder.set_ca_file(ca).map_err(|e| {
            StoreError::Config(format!(
                "{name} {}: not a readable PEM certificate: {e}",
                ca.display()
            ))
        })?;
    }
    if let (Some(cert), Some(key)) = (&opts.cert, &opts.key) {
        builder.set_certificate_chain_file(cert).map_err(|e| {
            StoreError::Config(format!(
                "sslcert {}: not a readable PEM certificate: {e}",
                cert.display()
            ))
        })?;
        builder
            .set_private_key_file(key, openssl::ssl::SslFiletype::PEM)
            .map_err(|e| {
                StoreError::Config(format!(
                    "sslkey {}: not a readable PEM key: {e}",
                    key.display()
                ))
            })?;
        builder.check_private_key().map_err(|e| {
            StoreError::Config(format!(
                "sslkey {} is not the key of sslcert {}: {e}",
                key.display(),
                cert.display()
            ))
        })?;
    }
    let mut connector = MakeTlsConnector::new(builder.build());
    if !opts.mode.verifies_host() {
        connector.set_callback(|config, _| {
            config.set_verify_hostname(false);
            Ok(())
        });
    }
    Ok(connector)
}

/// The URL's TLS options apart from what the driver reads.
fn split(settings: &Settings) -> Result<(String, crate::config::PgTls), StoreError> {
    crate::config::split_pg_url(&settings.postgres.url).map_err(StoreError::Config)
}

/// The driver configuration for `settings`, with the password from
/// `postgres.password` / `postgres.password_file` applied.
pub fn pg_config(settings: &Settings) -> Result<tokio_postgres::Config, StoreError> {
    let (url, opts) = split(settings)?;
    let mut cfg = build_pg_config(
        &url,
        settings.postgres_password.as_ref(),
        settings.postgres.connect_timeout,
    )?;
    use crate::config::SslMode;
    cfg.ssl_mode(match opts.mode {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
            tokio_postgres::config::SslMode::Require
        }
    });
    Ok(cfg)
}

fn build_pg_config(
    url: &str,
    password: Option<&Secret>,
    connect_timeout: std::time::Duration,
) -> Result<tokio_postgres::Config, StoreError> {
    let mut cfg: tokio_postgres::Config = url
        .parse()
        .map_err(|e: tokio_postgres::Error| StoreError::Config(error_chain(&e)))?;
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
