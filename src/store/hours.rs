//! Hour rollups, summed once from the minute rollups when the hour closes
//! (migration V18), instead of rewritten by every batch: the cost of a check
//! is then its raw row and its minute row, however full the hour is. Until
//! it is summed, an hour is read from its minute rows (the `rollup_hour`
//! view). A result written later into a closed hour marks its site-hour,
//! which is summed again here.

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;

use super::StoreError;

/// How long after its end an hour stays open: results of its last slots
/// still in flight land before it is summed, so that re-sums stay rare.
pub const HOUR_GRACE: std::time::Duration = std::time::Duration::from_secs(300);

/// Marked site-hours summed again per statement.
const RESUM_BATCH: i32 = 5_000;

/// What one call of [`roll_up_hours`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HourReport {
    /// The hours summed into `rollup_hour_closed` (their start, UTC).
    pub summed: Vec<DateTime<Utc>>,
    /// Site-hours summed again because a result arrived after their hour
    /// closed.
    pub resummed: u64,
}

/// Closes the hours that ended at least `grace` ago, sums each closed hour
/// not summed yet (one transaction per hour) and sums again the site-hours
/// marked since. Safe from several instances at once: one sums an hour while
/// the others pass, and a marked site-hour is taken by one of them.
///
/// # Errors
/// Postgres errors. Nothing is half done: each step is one transaction and
/// the next call takes up where this one stopped.
pub async fn roll_up_hours(
    client: &impl GenericClient,
    grace: std::time::Duration,
) -> Result<HourReport, StoreError> {
    let grace = format!("{} seconds", grace.as_secs());
    // Its own transaction: the sums must start after it commits, when every
    // writer that saw the hour open has committed (see migration V18).
    client
        .query_one(
            "SELECT sitewatch_close_hours($1::text::interval)",
            &[&grace],
        )
        .await?;
    let mut report = HourReport::default();
    while let Some(hour) = client
        .query_one("SELECT sitewatch_sum_hour()", &[])
        .await?
        .get::<_, Option<DateTime<Utc>>>(0)
    {
        report.summed.push(hour);
    }
    loop {
        let n: i32 = client
            .query_one("SELECT sitewatch_resum_hours($1)", &[&RESUM_BATCH])
            .await?
            .get(0);
        report.resummed += n as u64;
        if n < RESUM_BATCH {
            return Ok(report);
        }
    }
}
