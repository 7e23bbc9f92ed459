//! The scheduler's durable progress (migration V11): per shard, and per site
//! when the site was taken on, the time before which every slot is accounted
//! for (delivered to Kafka or recorded as skipped).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;

use super::StoreError;

/// A stretch of time, `[from, to)`.
pub type Span = (DateTime<Utc>, DateTime<Utc>);
use crate::model::CheckIds;

/// The store's check id scheme (migration V17): from which slot scheduled
/// checks get time-leading ids.
pub async fn check_ids(client: &impl GenericClient) -> Result<CheckIds, StoreError> {
    let row = client
        .query_one("SELECT time_leading_from FROM check_id_scheme", &[])
        .await?;
    Ok(CheckIds {
        time_leading_from: row.get(0),
    })
}

/// Every shard watermark on record: `(shards, shard, accounted_until)`,
/// under each shard count that was ever used, and when each was written
/// (by the database's clock).
#[allow(clippy::type_complexity)]
pub async fn load_watermarks(
    client: &impl GenericClient,
) -> Result<
    (
        Vec<(usize, usize, DateTime<Utc>)>,
        HashMap<(usize, usize), DateTime<Utc>>,
    ),
    StoreError,
> {
    let rows = client
        .query(
            "SELECT shards, shard, accounted_until, updated_at FROM schedule_watermarks",
            &[],
        )
        .await?;
    let key = |r: &tokio_postgres::Row| {
        let (shards, shard): (i32, i32) = (r.get(0), r.get(1));
        (shards as usize, shard as usize)
    };
    Ok((
        rows.iter()
            .map(|r| {
                let (shards, shard) = key(r);
                (shards, shard, r.get(2))
            })
            .collect(),
        rows.iter().map(|r| (key(r), r.get(3))).collect(),
    ))
}

/// Upserts shard watermarks under `shards` shards (one statement). A
/// watermark is its writer's word on the sites it schedules now, so it is
/// replaced, not raised: kept at the greatest, a mark from a clock ahead
/// (or from sites that have left) would speak for sites taken on since.
pub async fn save_watermarks(
    client: &impl GenericClient,
    shards: usize,
    watermarks: &[(usize, DateTime<Utc>)],
) -> Result<(), StoreError> {
    if watermarks.is_empty() {
        return Ok(());
    }
    let shard: Vec<i32> = watermarks.iter().map(|(s, _)| *s as i32).collect();
    let at: Vec<DateTime<Utc>> = watermarks.iter().map(|(_, t)| *t).collect();
    client
        .execute(
            "INSERT INTO schedule_watermarks AS w (shards, shard, accounted_until)
             SELECT $1, * FROM unnest($2::int4[], $3::timestamptz[])
             ON CONFLICT (shards, shard) DO UPDATE SET
                 accounted_until = excluded.accounted_until,
                 updated_at = now()",
            &[&(shards as i32), &shard, &at],
        )
        .await?;
    Ok(())
}

/// Upserts progress for the given sites (one statement). Progress never
/// moves backwards.
pub async fn save_progress(
    client: &impl GenericClient,
    progress: &[(String, DateTime<Utc>)],
) -> Result<(), StoreError> {
    if progress.is_empty() {
        return Ok(());
    }
    let sites: Vec<&str> = progress.iter().map(|(s, _)| s.as_str()).collect();
    let at: Vec<DateTime<Utc>> = progress.iter().map(|(_, t)| *t).collect();
    client
        .execute(
            "INSERT INTO schedule_progress AS p (site, accounted_until)
             SELECT * FROM unnest($1::text[], $2::timestamptz[])
             ON CONFLICT (site) DO UPDATE SET
                 accounted_until = greatest(p.accounted_until, excluded.accounted_until),
                 updated_at = now()",
            &[&sites, &at],
        )
        .await?;
    Ok(())
}

/// Forgets the progress of sites no longer scheduled (removed or disabled):
/// when they come back, their history restarts at their next slot instead of
/// recording the time away as missed.
pub async fn forget_progress_except(
    client: &impl GenericClient,
    scheduled: &[String],
) -> Result<u64, StoreError> {
    Ok(client
        .execute(
            "DELETE FROM schedule_progress WHERE NOT (site = ANY($1))",
            &[&scheduled],
        )
        .await?)
}

/// Records a stretch of missed slots too long to write slot by slot.
pub async fn record_gap(
    client: &impl GenericClient,
    site: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    slots: i64,
    reason: &str,
) -> Result<(), StoreError> {
    client
        .execute(
            "INSERT INTO schedule_gaps (site, from_at, to_at, slots, reason)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (site, from_at) DO NOTHING",
            &[&site, &from, &to, &slots, &reason],
        )
        .await?;
    Ok(())
}

/// Records shed runs, `(site, from, to, slots)` with `[from, to)` within
/// one minute, as `schedule_gaps` rows (reason `load_shed`) and adds their
/// slots to the `skipped` counts of the minute rollups (marking a closed
/// hour to be summed again, see `hours`), in one statement. Writing a run again is a no-op: only inserted gaps count.
pub async fn record_shed(
    client: &impl GenericClient,
    runs: &[(&str, DateTime<Utc>, DateTime<Utc>, i64)],
) -> Result<(), StoreError> {
    if runs.is_empty() {
        return Ok(());
    }
    let sites: Vec<&str> = runs.iter().map(|r| r.0).collect();
    let from: Vec<DateTime<Utc>> = runs.iter().map(|r| r.1).collect();
    let to: Vec<DateTime<Utc>> = runs.iter().map(|r| r.2).collect();
    let slots: Vec<i64> = runs.iter().map(|r| r.3).collect();
    // Rollup rows in key order, as the persister's statements take them,
    // so the two never wait on each other in a cycle.
    let minute = "m AS (
    INSERT INTO rollup_minute AS r (site, bucket, checks, up, degraded, down, skipped, rt_sketch)
    SELECT site, date_trunc('minute', from_at), 0, 0, 0, 0, sum(slots), '{}'::int8[]
    FROM g GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (site, bucket) DO UPDATE SET skipped = r.skipped + excluded.skipped)";
    let sql = format!(
        "WITH g AS (
    INSERT INTO schedule_gaps (site, from_at, to_at, slots, reason)
    SELECT s, f, t, n, 'load_shed'
    FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[], $4::int8[]) AS x(s, f, t, n)
    ON CONFLICT (site, from_at) DO NOTHING
    RETURNING site, from_at, slots),
{},
{}
SELECT count(*) FROM g",
        minute,
        super::results::mark_closed_hours("h", "g", "from_at", "true")
    );
    client.execute(&sql, &[&sites, &from, &to, &slots]).await?;
    Ok(())
}

/// Saved progress of the given sites (those without any are absent), and
/// when each was written (by the database's clock).
#[allow(clippy::type_complexity)]
pub async fn load_progress_of(
    client: &impl GenericClient,
    sites: &[String],
) -> Result<
    (
        HashMap<String, DateTime<Utc>>,
        HashMap<String, DateTime<Utc>>,
    ),
    StoreError,
> {
    let rows = client
        .query(
            "SELECT site, accounted_until, updated_at FROM schedule_progress WHERE site = ANY($1)",
            &[&sites],
        )
        .await?;
    Ok((
        rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
        rows.iter().map(|r| (r.get(0), r.get(2))).collect(),
    ))
}

/// The gaps on record of the given sites that begin at or after `since`,
/// by site, in order.
pub async fn load_gaps_since(
    client: &impl GenericClient,
    sites: &[String],
    since: DateTime<Utc>,
) -> Result<HashMap<String, Vec<Span>>, StoreError> {
    let rows = client
        .query(
            "SELECT site, from_at, to_at FROM schedule_gaps
             WHERE site = ANY($1) AND from_at >= $2 ORDER BY site, from_at",
            &[&sites, &since],
        )
        .await?;
    let mut out: HashMap<String, Vec<Span>> = HashMap::new();
    for r in &rows {
        out.entry(r.get(0)).or_default().push((r.get(1), r.get(2)));
    }
    Ok(out)
}
