//! Embedded, versioned migrations (`migrations/V*.sql`), applied under a
//! Postgres advisory lock so several instances starting at once apply each
//! migration exactly once.

use tokio_postgres::Client;

use super::StoreError;

refinery::embed_migrations!("migrations");

/// Arbitrary, fixed key of the session lock serialising migrations.
const MIGRATION_LOCK: i64 = 0x7369_7465_7761_7463; // "sitewatc"

/// Daily partitions kept ready ahead of today, so a persister never meets a
/// day without one.
pub const PARTITION_DAYS_AHEAD: i32 = 7;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// Names of migrations applied by this call (`V1__initial_schema`, ...).
    pub applied: Vec<String>,
    /// Daily partitions created by this call.
    pub partitions_created: i32,
}

pub async fn migrate(client: &mut Client) -> Result<MigrationReport, StoreError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result = apply(client).await;
    // Released on disconnect anyway; unlock explicitly so a long-lived
    // connection does not hold it.
    let unlock = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    let report = result?;
    unlock?;
    Ok(report)
}

async fn apply(client: &mut Client) -> Result<MigrationReport, StoreError> {
    let report = migrations::runner().run_async(client).await?;
    let applied = report
        .applied_migrations()
        .iter()
        .map(|m| format!("V{}__{}", m.version(), m.name()))
        .collect();
    let row = client
        .query_one(
            "SELECT sitewatch_ensure_partitions(
                 (now() AT TIME ZONE 'UTC')::date - 1,
                 (now() AT TIME ZONE 'UTC')::date + $1::int)",
            &[&PARTITION_DAYS_AHEAD],
        )
        .await?;
    Ok(MigrationReport {
        applied,
        partitions_created: row.get(0),
    })
}
