//! Retention: partitions ahead are created, expired ones dropped. Dropping a
//! day is one catalog change however many rows it held; a `DELETE` of the
//! same rows would bloat the table and hold locks for minutes.

use chrono::NaiveDate;
use tokio_postgres::GenericClient;

use super::migrate::PARTITION_DAYS_AHEAD;
use super::StoreError;
use crate::config::RetentionSettings;

/// Creates the partitions of the coming days and drops the expired ones, as
/// of `today` (UTC). Returns the names of the dropped partitions. Safe to run
/// from several instances at once (the functions take an advisory lock, and
/// dropping what is already gone drops nothing).
pub async fn apply_retention(
    client: &impl GenericClient,
    retention: &RetentionSettings,
    today: NaiveDate,
) -> Result<Vec<String>, StoreError> {
    let ahead = today + chrono::Days::new(PARTITION_DAYS_AHEAD as u64);
    client
        .query_one(
            "SELECT sitewatch_ensure_partitions($1, $2)",
            &[&today, &ahead],
        )
        .await?;
    let (raw_from, hours_from) = retention.keep_from(today);
    let mut dropped: Vec<String> = client
        .query("SELECT sitewatch_drop_partitions_before($1)", &[&raw_from])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    dropped.extend(
        client
            .query(
                "SELECT sitewatch_drop_rollups_before($1, $2)",
                &[&raw_from, &hours_from],
            )
            .await?
            .iter()
            .map(|r| r.get::<_, String>(0)),
    );
    Ok(dropped)
}
